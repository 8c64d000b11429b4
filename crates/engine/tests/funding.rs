//! Funding payments through the engine (MARGIN §9; issue 15, item 3), on the testkit
//! configuration: BTCUSDT (instrument 0, lots of 0.001 BTC, tick 0.1, MM 0.4% in the
//! first bracket) and BTCUSD_PERP (instrument 3, 100 USD contracts settled in BTC). Every
//! expected number is worked in the comments.

use perpcore_engine::Engine;
use perpcore_testkit::gen::test_config;
use perpcore_types::*;

const HOUR: u64 = 3_600_000_000_000;
const USDT: AssetId = AssetId(0);
const BTC: AssetId = AssetId(2);

struct T {
    e: Engine,
    seq: u64,
    ts: u64,
}

impl T {
    fn new() -> T {
        T {
            e: Engine::new(test_config()),
            seq: 0,
            ts: 1,
        }
    }
    /// Applies `c` at time `ts` (never earlier than the previous command).
    fn at(&mut self, ts: u64, c: Command) -> Vec<Event> {
        self.seq += 1;
        self.ts = self.ts.max(ts);
        let mut out = Vec::new();
        self.e.apply(
            &Envelope {
                seq: self.seq,
                ts_ns: self.ts,
                command: c,
            },
            &mut out,
        );
        self.e.check_invariants().expect("invariants");
        out
    }
    fn run(&mut self, c: Command) -> Vec<Event> {
        self.at(self.ts, c)
    }
    /// An index update of `instrument` at `price` sequenced at `ts`: the command the
    /// tests use to let sequenced time reach a funding time.
    fn index_at(&mut self, ts: u64, instrument: u32, price: i64) -> Vec<Event> {
        self.at(
            ts,
            Command::SetIndexPrice {
                instrument: InstrumentId(instrument),
                price: Price::from_int(price),
            },
        )
    }
    fn wallet(&self, account: u64, asset: AssetId) -> Money {
        self.e.account(AccountId(account)).expect("account").wallets[asset.0 as usize]
    }
    fn fund(&self, asset: AssetId) -> Money {
        self.e.insurance_fund(asset)
    }
}

fn m(s: &str) -> Money {
    Money::parse(s).unwrap()
}

fn order(account: u64, id: u64, instrument: u32, side: Side, ticks: i64, lots: i64) -> Command {
    Command::PlaceOrder(NewOrder {
        account: AccountId(account),
        instrument: InstrumentId(instrument),
        order_id: OrderId(id),
        side,
        order_type: OrderType::Limit,
        tif: TimeInForce::Gtc,
        price: PriceTicks(ticks),
        qty: QtyLots(lots),
        reduce_only: false,
        close_position: false,
        stp: StpMode::ExpireTaker,
    })
}

/// Accounts 1 (long) and 2 (short) each funded with `deposit` of `asset`, trading `lots`
/// of `instrument` at `ticks` (the mark is set there first). Fees are paid at the trade,
/// so the wallets are read after it.
fn traded(instrument: u32, asset: AssetId, deposit: &str, mark: &str, ticks: i64, lots: i64) -> T {
    let mut t = T::new();
    t.run(Command::SetMarkPrice {
        instrument: InstrumentId(instrument),
        price: Price::parse(mark).unwrap(),
    });
    for n in 1..=2 {
        t.run(Command::CreateAccount {
            account: AccountId(n),
            parent: None,
        });
        t.run(Command::Deposit {
            account: AccountId(n),
            asset,
            amount: m(deposit),
        });
    }
    t.run(order(2, 1, instrument, Side::Sell, ticks, lots));
    let ev = t.run(order(1, 2, instrument, Side::Buy, ticks, lots));
    assert!(
        ev.iter().any(|e| matches!(e, Event::Trade { .. })),
        "{ev:?}"
    );
    t
}

fn announce(t: &mut T, instrument: u32, rate: &str, at: u64) {
    let ev = t.run(Command::SetFundingRate {
        instrument: InstrumentId(instrument),
        rate: Rate::parse(rate).unwrap(),
        next_funding_ns: at,
    });
    assert!(matches!(ev[0], Event::FundingRateSet { .. }), "{ev:?}");
}

fn settled(ev: &[Event]) -> (Money, Money) {
    ev.iter()
        .find_map(|e| match e {
            Event::FundingSettled { paid, received, .. } => Some((*paid, *received)),
            _ => None,
        })
        .expect("a funding settlement")
}

/// 0.5 BTC long and short at a mark of 28,000 with a rate of 0.01%: the long pays
/// 0.5 × 28,000 × 0.0001 = 1.4 USDT and the short receives 1.4. It happens before the
/// first command sequenced at or after the funding time (a deposit here), not before;
/// the next funding time is 8 hours later; the report shows it all.
#[test]
fn longs_pay_shorts_notional_at_mark_times_rate() {
    let mut t = traded(0, USDT, "10000", "28000", 280_000, 500);
    let (w1, w2) = (t.wallet(1, USDT), t.wallet(2, USDT));
    announce(&mut t, 0, "0.0001", 8 * HOUR);
    // Just before the funding time: nothing.
    let ev = t.index_at(8 * HOUR - 1, 0, 28_000);
    assert!(!ev.iter().any(|e| matches!(e, Event::FundingSettled { .. })));
    let ev = t.index_at(8 * HOUR, 0, 28_000);
    assert_eq!(settled(&ev), (m("1.4"), m("1.4")));
    assert_eq!(t.wallet(1, USDT), w1 - m("1.4"));
    assert_eq!(t.wallet(2, USDT), w2 + m("1.4"));
    let pos = |t: &T, a: u64| t.e.report(AccountId(a)).unwrap().positions[0].clone();
    assert_eq!(pos(&t, 1).funding, m("1.4"));
    assert_eq!(pos(&t, 2).funding, m("-1.4"));
    assert_eq!(pos(&t, 1).next_funding_ns, Some(16 * HOUR));
    assert_eq!(
        pos(&t, 1).last_funding_rate,
        Some(Rate::parse("0.0001").unwrap())
    );
    // The next command at the same time settles nothing more.
    let ev = t.index_at(t.ts, 0, 28_000);
    assert!(!ev.iter().any(|e| matches!(e, Event::FundingSettled { .. })));
}

/// A negative rate: shorts pay longs. −0.0375% on 0.5 BTC at 28,000 = 5.25.
#[test]
fn a_negative_rate_makes_shorts_pay() {
    let mut t = traded(0, USDT, "10000", "28000", 280_000, 500);
    let (w1, w2) = (t.wallet(1, USDT), t.wallet(2, USDT));
    announce(&mut t, 0, "-0.000375", 100);
    t.index_at(100, 0, 28_000);
    assert_eq!(t.wallet(1, USDT), w1 + m("5.25"));
    assert_eq!(t.wallet(2, USDT), w2 - m("5.25"));
}

/// Rounding is against both sides and the residue goes to the insurance fund: one lot
/// (0.001 BTC) at 28,000.1 with a rate of 10^-10 is 2.80001 × 10^-9 USDT exactly. The
/// long pays it rounded up to the money grid (10^-12): 0.000000002801; the short receives
/// it rounded toward zero: 0.0000000028. The fund gets the 10^-12 between them.
#[test]
fn rounding_residue_goes_to_the_insurance_fund() {
    let mut t = traded(0, USDT, "10000", "28000.1", 280_001, 1);
    let (w1, w2, f) = (t.wallet(1, USDT), t.wallet(2, USDT), t.fund(USDT));
    announce(&mut t, 0, "0.0000000001", 100);
    let ev = t.index_at(100, 0, 28_000);
    assert_eq!(settled(&ev), (m("0.000000002801"), m("0.0000000028")));
    assert_eq!(t.wallet(1, USDT), w1 - m("0.000000002801"));
    assert_eq!(t.wallet(2, USDT), w2 + m("0.0000000028"));
    assert_eq!(t.fund(USDT), f + m("0.000000000001"));
}

/// Coin-M pays in coin at the inverse notional: 10 contracts of 100 USD at a mark of
/// 25,000 are 1,000 / 25,000 = 0.04 BTC; at 0.01% the long pays 0.000004 BTC.
#[test]
fn coin_m_pays_in_coin_at_the_inverse_notional() {
    let mut t = traded(3, BTC, "1", "25000", 250_000, 10);
    let (w1, w2) = (t.wallet(1, BTC), t.wallet(2, BTC));
    announce(&mut t, 3, "0.0001", 100);
    let ev = t.index_at(100, 3, 25_000);
    assert_eq!(settled(&ev), (m("0.000004"), m("0.000004")));
    assert_eq!(t.wallet(1, BTC), w1 - m("0.000004"));
    assert_eq!(t.wallet(2, BTC), w2 + m("0.000004"));
}

/// A payment may liquidate, in the same command: an isolated 1 BTC long at 28,000 and
/// 100x holds 280 of margin against an MM of 0.4% × 28,000 = 112. A rate of 1% costs
/// 1 × 28,000 × 0.01 = 280, all of it: the margin is 0 < 112, and the command that
/// crossed the funding time also carries the liquidation.
#[test]
fn a_funding_payment_can_trigger_liquidation() {
    let mut t = T::new();
    t.run(Command::SetMarkPrice {
        instrument: InstrumentId(0),
        price: Price::from_int(28_000),
    });
    for n in 1..=2 {
        t.run(Command::CreateAccount {
            account: AccountId(n),
            parent: None,
        });
        t.run(Command::Deposit {
            account: AccountId(n),
            asset: USDT,
            amount: m("100000"),
        });
    }
    for c in [
        Command::SetMarginMode {
            account: AccountId(1),
            instrument: InstrumentId(0),
            mode: MarginMode::Isolated,
        },
        Command::SetLeverage {
            account: AccountId(1),
            instrument: InstrumentId(0),
            leverage: 100,
        },
    ] {
        let ev = t.run(c);
        assert!(!matches!(ev[0], Event::Rejected { .. }), "{ev:?}");
    }
    t.run(order(2, 1, 0, Side::Sell, 280_000, 1_000));
    t.run(order(1, 2, 0, Side::Buy, 280_000, 1_000));
    let leg =
        t.e.account(AccountId(1))
            .unwrap()
            .leg(InstrumentId(0), PositionSide::Both)
            .unwrap()
            .clone();
    assert_eq!((leg.qty, leg.isolated_margin), (QtyLots(1_000), m("280")));
    announce(&mut t, 0, "0.01", 100);
    let ev = t.index_at(100, 0, 28_000);
    assert_eq!(settled(&ev), (m("280"), m("280")));
    assert!(
        ev.iter().any(|e| matches!(
            e,
            Event::LiquidationTriggered {
                account: AccountId(1),
                ..
            }
        )),
        "{ev:?}"
    );
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's civil-from-days
/// inverse), for the funding history's timestamps.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2020-01-01 03:00:00.002` (UTC+3) in ns since the epoch, UTC.
fn utc_ns(local: &str) -> u64 {
    let n = |s: &str| s.parse::<i64>().expect("a number");
    let (date, time) = local.split_once(' ').expect("date and time");
    let d: Vec<&str> = date.split('-').collect();
    let (hms, ms) = time.split_once('.').expect("milliseconds");
    let t: Vec<&str> = hms.split(':').collect();
    let secs = days_from_civil(n(d[0]), n(d[1]), n(d[2])) * 86_400
        + n(t[0]) * 3_600
        + n(t[1]) * 60
        + n(t[2])
        - 3 * 3_600; // UTC+3 → UTC
    u64::try_from(secs * 1_000_000_000 + n(ms) * 1_000_000).expect("after 1970")
}

/// An 8-decimal rate as an integer of 10^-8, parsed here by hand (not by the types'
/// parser) so that the expected sum is worked independently of the engine's arithmetic.
fn rate_e8(s: &str) -> i128 {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    assert!(frac.len() <= 8, "{s}");
    let v = int.parse::<i128>().expect("integer part") * 100_000_000
        + format!("{frac:0<8}").parse::<i128>().expect("fraction");
    if neg {
        -v
    } else {
        v
    }
}

/// Four years of Binance's BTCUSDT funding (2020–2023, 4,383 settlements, from the
/// committed history in replay-fixtures/funding) on a 1 BTC long held against a 1 BTC
/// short at a constant mark of 30,000. Each payment is 30,000 × r with r of 8 decimals:
/// exact on the money grid (12 decimals), so no rounding, and the long's cumulative
/// funding is 30,000 × Σr. Σr is summed here from the text as integers of 10^-8; the
/// engine gets each rate through `SetFundingRate` at its settlement time (UTC) and
/// settles it at the next command. The short's is the negative, and the wallets moved
/// by exactly those amounts.
#[test]
fn four_years_of_binance_funding_on_a_held_position() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../../replay-fixtures/funding/BTC-USDT_binance_2020-01-01_2024-01-01_funding_history.csv",
    );
    let text = std::fs::read_to_string(path).expect("funding history");
    let rows: Vec<(u64, &str)> = text
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (utc_ns(f[1]), f[2])
        })
        .collect();
    assert_eq!(rows.len(), 4_383);
    let sum_e8: i128 = rows.iter().map(|(_, r)| rate_e8(r)).sum();
    // 30,000 × Σr, in money raw units (10^-12): 30,000 × sum_e8 × 10^4.
    let expected = Money(30_000 * sum_e8 * 10_000);

    let mut t = traded(0, USDT, "1000000", "30000", 300_000, 1_000);
    let (w1, w2) = (t.wallet(1, USDT), t.wallet(2, USDT));
    let first = rows[0].0;
    assert!(t.ts < first);
    let mut settlements = 0;
    for (at, rate) in &rows {
        // Announced after the previous settlement, settled by a mark update at its time.
        announce(&mut t, 0, rate, *at);
        let ev = t.at(
            *at,
            Command::SetMarkPrice {
                instrument: InstrumentId(0),
                price: Price::from_int(30_000),
            },
        );
        settlements += ev
            .iter()
            .filter(|e| matches!(e, Event::FundingSettled { .. }))
            .count();
    }
    assert_eq!(settlements, 4_383);
    let funding = |t: &T, a: u64| {
        t.e.account(AccountId(a))
            .unwrap()
            .leg(InstrumentId(0), PositionSide::Both)
            .unwrap()
            .funding
    };
    assert_eq!(funding(&t, 1), expected);
    assert_eq!(funding(&t, 2), -expected);
    assert_eq!(t.wallet(1, USDT), w1 - expected);
    assert_eq!(t.wallet(2, USDT), w2 + expected);
    println!(
        "4,383 settlements 2020-2023: Σr = {}.{:08} (×10^-8: {sum_e8}); a 1 BTC long at 30,000 paid {expected}",
        sum_e8 / 100_000_000,
        (sum_e8 % 100_000_000).abs()
    );
}

/// Binance's first mark update after a funding time still names that time (with the rate
/// it settled at: 2023-04-05 00:00:00.010 carries `T` = 00:00:00.000). Announced again
/// after it settled, it must not settle twice: the schedule stays at the next funding
/// time (8 h later) and nothing more is paid.
#[test]
fn an_announcement_for_a_settled_time_does_not_settle_it_again() {
    let mut t = traded(0, USDT, "10000", "28000", 280_000, 500);
    announce(&mut t, 0, "0.0001", 100);
    let ev = t.index_at(100, 0, 28_000);
    assert_eq!(settled(&ev), (m("1.4"), m("1.4")));
    let w1 = t.wallet(1, USDT);
    announce(&mut t, 0, "0.0002", 100);
    let ev = t.index_at(200, 0, 28_000);
    assert!(
        !ev.iter().any(|e| matches!(e, Event::FundingSettled { .. })),
        "{ev:?}"
    );
    assert_eq!(t.wallet(1, USDT), w1);
    let r = t.e.report(AccountId(1)).unwrap();
    assert_eq!(r.positions[0].next_funding_ns, Some(100 + 8 * HOUR));
    assert_eq!(
        r.positions[0].predicted_funding_rate,
        Some(Rate::parse("0.0002").unwrap())
    );
}
