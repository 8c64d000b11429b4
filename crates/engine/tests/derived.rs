//! Marks and funding rates derived inside the engine (MARGIN §1 and §9; issue 15, items 1
//! and 2), on the testkit configuration's BTCUSDT (instrument 0: tick 0.1, lots of 0.001
//! BTC, 125x, first bracket mmr 0.4%) switched to derived methods. Every expected number
//! is worked in the comments.

use perpcore_testkit::fixtures::{limit_order, TestEngine};
use perpcore_testkit::gen::test_config;
use perpcore_types::*;

const SECOND: u64 = 1_000_000_000;
const HOUR: u64 = 3_600 * SECOND;
const BTCUSDT: InstrumentId = InstrumentId(0);

fn p(s: &str) -> Price {
    Price::parse(s).unwrap()
}
fn m(s: &str) -> Money {
    Money::parse(s).unwrap()
}
fn r(s: &str) -> Rate {
    Rate::parse(s).unwrap()
}

/// The testkit configuration with BTCUSDT's mark and/or funding rate derived.
fn engine(mark: MarkMethod, funding: FundingMethod) -> TestEngine {
    let mut c = test_config();
    c.instruments[0].mark_method = mark;
    c.instruments[0].funding_method = funding;
    TestEngine::new(c)
}

/// Binance's funding parameters for BTCUSDT: impact margin 200 USDT (at 125x an impact
/// notional of 25,000), interest 0.01% per 8 h, cap 75% × 0.4% = 0.3%, samples every 5 s.
fn derived_funding() -> FundingMethod {
    FundingMethod::Derived {
        impact_margin: Money::from_int(200),
        interest: r("0.0001"),
        cap: r("0.003"),
        step_ns: 5 * SECOND,
    }
}

fn marks(events: &[Event]) -> Vec<Price> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::MarkPriceSet { price, .. } => Some(*price),
            _ => None,
        })
        .collect()
}

fn index(price: &str) -> Command {
    Command::SetIndexPrice {
        instrument: BTCUSDT,
        price: p(price),
    }
}

fn reference(bid: &str, ask: &str, last: Option<&str>) -> Command {
    Command::SetReferencePrices {
        instrument: BTCUSDT,
        best_bid: Some(p(bid)),
        best_ask: Some(p(ask)),
        last_trade: last.map(p),
    }
}

fn order(account: u64, id: u64, side: Side, price: &str, lots: i64) -> Command {
    limit_order(
        account,
        id,
        BTCUSDT,
        side,
        PriceTicks(p(price).raw() / p("0.1").raw()),
        lots,
    )
}

/// A window of 3 one-second samples, the feed's rate 0.01% for a funding time at 8 h.
///
/// - At 1 s (the first sample): index 28,000, feed mid (28,001 + 28,003) / 2 = 28,002, so
///   the basis average is 2 and `P2 = 28,002`; `P1 = 28,000 × (1 + 0.0001 × (8 h − 1 s)
///   / 8 h) = 28,000 + 2.8 × 28,799 / 28,800 = 28,002.79990277…` (floor
///   28,002.79990277); no trade yet, so the third term is the index, 28,000. Median:
///   28,002.
/// - At 3.5 s the samples of 2 s and 3 s are taken from the unchanged state (basis 2
///   each); the feed's last trade is 28,010. At 3 s: `P1 = 28,000 + 2.8 × 28,797 / 28,800
///   = 28,002.79970833…`, `P2 = 28,002`, trade 28,010: the median is `P1`,
///   28,002.79970833.
/// - Two accounts then trade 0.001 BTC at 28,005 on the engine's own book, which empties
///   it: the own last trade, 28,005, replaces the feed's 28,010. The feed's mid moves to
///   (28,011 + 28,013) / 2 = 28,012 (basis 12). At 4 s: window 2, 2, 12 → average 16 / 3
///   = 5.33333333 (floor), `P2 = 28,005.33333333`; `P1 = 28,000 + 2.8 × 28,796 / 28,800
///   = 28,002.79961111`; median of those and 28,005: 28,005.
#[test]
fn derived_mark_is_the_median_of_funding_basis_moving_basis_and_last_trade() {
    let mut t = engine(
        MarkMethod::Derived {
            window: 3,
            step_ns: SECOND,
        },
        FundingMethod::Recorded,
    );
    let half = SECOND / 2;
    assert!(marks(&t.at(half, index("28000"))).is_empty());
    t.at(
        half,
        Command::SetFundingRate {
            instrument: BTCUSDT,
            rate: r("0.0001"),
            next_funding_ns: 8 * HOUR,
        },
    );
    t.at(half, reference("28001", "28003", None));
    assert_eq!(marks(&t.at(SECOND, index("28000"))), vec![p("28002")]);
    t.at(SECOND, reference("28001", "28003", Some("28010")));
    assert_eq!(
        marks(&t.at(3 * SECOND + half, index("28000"))),
        vec![p("28002.79970833")]
    );
    t.create_funded(1, AssetId(0), m("10000"));
    t.create_funded(2, AssetId(0), m("10000"));
    t.at(3 * SECOND + half, order(1, 1, Side::Sell, "28005", 1));
    let fills = t.at(3 * SECOND + half, order(2, 2, Side::Buy, "28005", 1));
    assert!(fills.iter().any(|e| matches!(e, Event::Trade { .. })));
    t.at(3 * SECOND + half, reference("28011", "28013", None));
    assert_eq!(marks(&t.at(4 * SECOND, index("28000"))), vec![p("28005")]);
    assert_eq!(t.engine.mark(BTCUSDT), Some(p("28005")));
}

/// A derived instrument refuses the feed's value, and the refusal changes nothing.
#[test]
fn derived_instruments_refuse_recorded_marks_and_rates() {
    let mut t = engine(
        MarkMethod::Derived {
            window: 300,
            step_ns: SECOND,
        },
        derived_funding(),
    );
    t.at(SECOND / 2, index("28000"));
    let before = t.engine.content_hash();
    assert_eq!(
        t.rejected(Command::SetMarkPrice {
            instrument: BTCUSDT,
            price: p("28000"),
        }),
        Some(RejectReason::MarkPriceDerived.code())
    );
    assert_eq!(
        t.rejected(Command::SetFundingRate {
            instrument: BTCUSDT,
            rate: r("0.0001"),
            next_funding_ns: 8 * HOUR,
        }),
        Some(RejectReason::FundingRateDerived.code())
    );
    // Nothing but the sequence position moved.
    assert_eq!(before, t.engine.content_hash());
}

/// The premium index of the engine's own book, its weighted average and the rate paid.
///
/// Book: bids 0.5 BTC at 28,010 and 1 BTC at 28,000, asks 2 BTC at 28,020. Impact
/// notional 200 × 125 = 25,000 USDT.
/// - Impact bid: 0.5 × 28,010 = 14,005 fills whole; the rest, 10,995, at 28,000: the
///   average is `N·p / (Q·p + R) = 25,000 × 28,000 / (0.5 × 28,000 + 10,995) =
///   700,000,000 / 24,995 = 28,005.601120224…` → 28,005.60112022.
/// - Impact ask: 2 × 28,020 = 56,040 covers it at one price: 28,020.
/// - Index 27,980: `P = (28,005.60112022 − 27,980) / 27,980 = 0.00091497928…` →
///   0.0009149792. Index 27,990: `(15.60112022) / 27,990 = 0.00055738193…` →
///   0.0005573819 (the ask term is 0: the index is below the impact ask).
///
/// The first command is at 8 h − 20 s, so the first funding time is 8 h and samples fall
/// at −15, −10, −5 and 0 s. The first two see index 27,980, the last two 27,990. Weights 1
/// to 4: `avg = (3 × 0.0009149792 + 7 × 0.0005573819) / 10 = 0.00066466109` →
/// 0.000664661. `F = avg + clamp(0.0001 − avg, ±0.0005) = 0.000664661 − 0.0005 =
/// 0.000164661`, inside the cap of 0.3%.
///
/// The long of 1 BTC (mark 28,000) pays `1 × 28,000 × 0.000164661 = 4.610508` USDT and the
/// short receives as much.
#[test]
fn derived_funding_rate_from_the_impact_premium_is_paid_at_the_funding_time() {
    let mut t = engine(MarkMethod::Recorded, derived_funding());
    let start = 8 * HOUR - 20 * SECOND;
    t.at(
        start,
        Command::SetMarkPrice {
            instrument: BTCUSDT,
            price: p("28000"),
        },
    );
    t.at(start, index("27980"));
    for a in 1..=4 {
        t.create_funded(a, AssetId(0), m("1000000"));
    }
    for (account, id, side, price, lots) in [
        (1, 1, Side::Buy, "28000", 1_000),
        (2, 2, Side::Sell, "28000", 1_000),
        (3, 3, Side::Buy, "28010", 500),
        (3, 4, Side::Buy, "28000", 1_000),
        (4, 5, Side::Sell, "28020", 2_000),
    ] {
        assert_eq!(t.rejected(order(account, id, side, price, lots)), None);
    }
    // Before any sample the rate is the interest alone: 0 + clamp(0.0001) = 0.0001.
    let report = t.engine.report(AccountId(1)).unwrap();
    assert_eq!(
        report.positions[0].predicted_funding_rate,
        Some(r("0.0001"))
    );
    assert_eq!(report.positions[0].next_funding_ns, Some(8 * HOUR));
    t.at(8 * HOUR - 7 * SECOND, index("27990"));
    // Two samples at P = 0.0009149792: avg 0.0009149792, F = avg − 0.0005.
    let report = t.engine.report(AccountId(1)).unwrap();
    assert_eq!(
        report.positions[0].predicted_funding_rate,
        Some(r("0.0004149792"))
    );
    let events = t.at(8 * HOUR + SECOND, index("27990"));
    let paid: Vec<(AccountId, Money)> = events
        .iter()
        .filter_map(|e| match e {
            Event::FundingPaid {
                account, amount, ..
            } => Some((*account, *amount)),
            _ => None,
        })
        .collect();
    assert_eq!(
        paid,
        vec![
            (AccountId(1), m("4.610508")),
            (AccountId(2), m("-4.610508"))
        ]
    );
    assert!(events.iter().any(|e| matches!(
        e,
        Event::FundingSettled { rate, funding_ns, .. }
            if *rate == r("0.000164661") && *funding_ns == 8 * HOUR
    )));
    // The next interval starts empty: its rate is the interest alone again.
    let report = t.engine.report(AccountId(1)).unwrap();
    assert_eq!(
        report.positions[0].predicted_funding_rate,
        Some(r("0.0001"))
    );
    assert_eq!(report.positions[0].next_funding_ns, Some(16 * HOUR));
    assert_eq!(
        report.positions[0].last_funding_rate,
        Some(r("0.000164661"))
    );
}
