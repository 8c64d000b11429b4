//! Funding on real data (issue 15, item 4, second point): the BTCUSDT captures of
//! 2023-04-04/05 (replay-fixtures/ticks) cross the 00:00 UTC funding time. Replayed
//! through the engine with a 1 BTC long and a 1 BTC short held through it, the positions
//! pay and receive exactly `1 × mark × rate`, with the rate Binance published for that
//! settlement in its funding history (replay-fixtures/funding: `2023-04-05 03:00` in
//! UTC+3, 0.00002760). The capture's first update after the funding time carries that
//! rate with the funding time it settles (`T` unchanged); the engine settles at it.

use perpcore_engine::Engine;
use perpcore_feed::{ConvertOptions, ReaderOptions, Replay};
use perpcore_testkit::fixtures::replay_fixtures as fixtures;
use perpcore_types::*;
use std::path::PathBuf;

/// The rate of the settlement at `utc3` (the history's UTC+3 stamp), as text.
fn published_rate(utc3: &str) -> String {
    let csv = std::fs::read_to_string(
        fixtures().join("funding/BTC-USDT_binance_2020-01-01_2024-01-01_funding_history.csv"),
    )
    .expect("funding history");
    csv.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            f[1].starts_with(utc3).then(|| f[2].to_string())
        })
        .expect("a row for that settlement")
}

#[test]
fn positions_held_through_2023_04_05_pay_binance_published_rate() {
    let ticks = fixtures().join("ticks");
    let config = perpcore_config::load_path(&ticks.join("config.toml")).expect("config");
    let btc = config
        .instrument_by_symbol("BTCUSDT")
        .expect("BTCUSDT")
        .clone();
    let usdt = config.asset_by_symbol("USDT").expect("USDT").id;
    let files = [
        "usdm_btcusdt_20230404.dat.gz",
        "usdm_btcusdt_20230405.dat.gz",
    ];
    let paths: Vec<PathBuf> = files.iter().map(|f| ticks.join(f)).collect();
    let replay = Replay::open(
        &paths,
        &config,
        ReaderOptions::default(),
        ConvertOptions::default(),
    )
    .expect("open ticks");
    let mut e = Engine::new(config.clone());
    let (mut seq, mut ts) = (0u64, 0u64);
    let mut events = Vec::new();
    let mut apply = |e: &mut Engine, at: u64, command: Command, events: &mut Vec<Event>| {
        seq += 1;
        ts = ts.max(at);
        events.clear();
        e.apply(
            &Envelope {
                seq,
                ts_ns: ts,
                command,
            },
            events,
        );
    };
    let mut opened = false;
    let mut settlement = None;
    for item in replay {
        let at = item.exchange_ns;
        apply(&mut e, at, item.command, &mut events);
        if let Some(s) = events.iter().find_map(|ev| match ev {
            Event::FundingSettled {
                rate,
                mark,
                funding_ns,
                paid,
                received,
                ..
            } => Some((*rate, *mark, *funding_ns, *paid, *received)),
            _ => None,
        }) {
            assert!(settlement.is_none(), "settled twice: {s:?}");
            settlement = Some(s);
        }
        // At the first mark, accounts 1 (long) and 2 (short) trade 1 BTC at it.
        if let (false, Some(mark)) = (opened, e.mark(btc.id)) {
            opened = true;
            let price = btc.ticks_of(mark, Rounding::Floor);
            for (n, side) in [(2u64, Side::Sell), (1, Side::Buy)] {
                let account = AccountId(n);
                for command in [
                    Command::CreateAccount {
                        account,
                        parent: None,
                    },
                    Command::Deposit {
                        account,
                        asset: usdt,
                        amount: Money::from_int(100_000),
                    },
                    Command::PlaceOrder(NewOrder {
                        account,
                        instrument: btc.id,
                        order_id: OrderId(n),
                        side,
                        order_type: OrderType::Limit,
                        tif: TimeInForce::Gtc,
                        price,
                        qty: QtyLots(1_000), // 1 BTC in lots of 0.001
                        reduce_only: false,
                        close_position: false,
                        stp: StpMode::ExpireTaker,
                    }),
                ] {
                    apply(&mut e, at, command, &mut events);
                    assert!(
                        !matches!(events.first(), Some(Event::Rejected { .. })),
                        "{events:?}"
                    );
                }
            }
        }
    }
    e.check_invariants().expect("invariants");
    let (rate, mark, funding_ns, paid, received) = settlement.expect("the 00:00 UTC settlement");
    // 2023-04-05 00:00:00 UTC.
    assert_eq!(funding_ns, 1_680_652_800_000_000_000);
    let published = published_rate("2023-04-05 03:00");
    assert_eq!(published, "0.00002760");
    assert_eq!(rate, Rate::parse(&published).unwrap());
    // 1 BTC × mark × rate: mark_raw (10^-8) × 2,760 (10^-8) = 10^-16 units, / 10^4 into
    // money raw (10^-12); the mark at the settlement was 28,157.1 (the last update before
    // 00:00: 28,157.1 × 0.0000276 = 0.77713596).
    assert_eq!(mark, Price::parse("28157.1").unwrap());
    let exact = i128::from(mark.raw()) * 2_760;
    assert_eq!(exact % 10_000, 0, "exact on the money grid");
    let expected = Money(exact / 10_000);
    assert_eq!(expected, Money::parse("0.77713596").unwrap());
    assert_eq!((paid, received), (expected, expected));
    let funding = |n: u64| {
        e.account(AccountId(n))
            .and_then(|a| a.leg(btc.id, PositionSide::Both))
            .map(|l| l.funding)
            .unwrap()
    };
    assert_eq!((funding(1), funding(2)), (expected, -expected));
}
