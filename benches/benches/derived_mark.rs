//! The mark tick with derived marks (issue 15, item 8). Not a test.
//!
//! Two engines on the testkit configuration, identical but for BTCUSDT's mark and funding
//! rate: recorded in one, derived in the other (Binance's parameters: a 300-sample window
//! of 1 s, premium samples every 5 s at an impact notional of 200 × 125 = 25,000 USDT).
//! Each holds N one-lot positions (N/2 accounts long, N/2 short, paired at 60,000) and a
//! book of 1,000 one-lot levels a side around 60,000 (60 USDT a level, so an impact
//! price walks ~417 levels).
//!
//! A tick is one command per second of sequenced time: in the recorded engine a
//! `SetMarkPrice`, in the derived one a `SetIndexPrice` whose second sets off the mark
//! sample and derivation (and on every fifth the premium sample that walks the book),
//! then the band and the liquidation check. Index and mark follow the same random walk
//! of ±0.01%. Rounds alternate between the engines; hdrhistogram p50/p99/max per engine
//! and their ratio.

// Floats only format figures for printing; nothing here feeds the engine.
#![allow(clippy::float_arithmetic)]

use hdrhistogram::Histogram;
use perpcore_benches::Driver;
use perpcore_types::*;
use rand::{Rng, SeedableRng};

const SECOND: u64 = 1_000_000_000;
const BTCUSDT: InstrumentId = InstrumentId(0);
const LEVELS: i64 = 1_000;
const TICKS: u64 = 2_000;

fn order(account: u64, id: u64, side: Side, ticks: i64) -> Command {
    perpcore_testkit::fixtures::limit_order(account, id, BTCUSDT, side, PriceTicks(ticks), 1)
}

fn loaded(positions: u64, derived: bool) -> Driver {
    let mut config = perpcore_testkit::gen::test_config();
    // One market maker rests every level.
    config.instruments[0].max_open_orders = 10_000;
    if derived {
        config.instruments[0].mark_method = MarkMethod::Derived {
            window: 300,
            step_ns: SECOND,
        };
        config.instruments[0].funding_method = FundingMethod::Derived {
            impact_margin: Money::from_int(200),
            interest: Rate::parse("0.0001").unwrap(),
            cap: Rate::parse("0.003").unwrap(),
            step_ns: 5 * SECOND,
        };
    }
    let mut d = Driver::new(config);
    let setup = |d: &mut Driver, ts: u64, c: Command| {
        d.apply(ts, c);
        assert_eq!(d.refused(), None, "setup command refused");
    };
    let index = Command::SetIndexPrice {
        instrument: BTCUSDT,
        price: Price::from_int(60_000),
    };
    setup(&mut d, 1, index.clone());
    if derived {
        // The first sample (1 s): no mid, no trade, so the median is the index.
        setup(&mut d, SECOND, index);
    } else {
        setup(
            &mut d,
            SECOND,
            Command::SetMarkPrice {
                instrument: BTCUSDT,
                price: Price::from_int(60_000),
            },
        );
    }
    let maker = positions + 1;
    for a in 1..=maker {
        setup(
            &mut d,
            SECOND,
            Command::CreateAccount {
                account: AccountId(a),
                parent: None,
            },
        );
        setup(
            &mut d,
            SECOND,
            Command::Deposit {
                account: AccountId(a),
                asset: AssetId(0),
                amount: Money::from_int(if a == maker { 100_000_000 } else { 1_000 }),
            },
        );
    }
    for a in (1..=positions).step_by(2) {
        setup(&mut d, SECOND, order(a, a, Side::Sell, 600_000));
        setup(&mut d, SECOND, order(a + 1, a + 1, Side::Buy, 600_000));
    }
    for k in 0..LEVELS {
        let id = positions + 10 + 2 * k as u64;
        setup(&mut d, SECOND, order(maker, id, Side::Buy, 599_999 - k));
        setup(
            &mut d,
            SECOND,
            order(maker, id + 1, Side::Sell, 600_001 + k),
        );
    }
    d
}

/// One tick at second `s` with `price`; its time through `apply` in ns.
fn tick(d: &mut Driver, derived: bool, s: u64, price: Price) -> u64 {
    let command = if derived {
        Command::SetIndexPrice {
            instrument: BTCUSDT,
            price,
        }
    } else {
        Command::SetMarkPrice {
            instrument: BTCUSDT,
            price,
        }
    };
    let ns = d.apply(s * SECOND + 1, command);
    assert_eq!(d.refused(), None, "tick refused");
    ns
}

fn main() {
    let positions: u64 = std::env::var("PERPCORE_BENCH_POSITIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    let mut engines = [
        (loaded(positions, false), false),
        (loaded(positions, true), true),
    ];
    let mut hist = [
        Histogram::<u64>::new(3).unwrap(),
        Histogram::<u64>::new(3).unwrap(),
    ];
    let mut price = 60_000_000i64; // in 0.001 units (60,000.000)
    for s in 2..2 + TICKS {
        price += price * rng.gen_range(-1..=1) / 10_000;
        let p = Price(price * 100_000);
        for (k, (d, derived)) in engines.iter_mut().enumerate() {
            let ns = tick(d, *derived, s, p);
            hist[k].record(ns).unwrap();
        }
    }
    println!(
        "mark tick, BTCUSDT with {positions} positions and {LEVELS} levels a side, {TICKS} ticks \
         (1 per second of sequenced time):"
    );
    for (k, name) in ["recorded (SetMarkPrice)", "derived (index at a new second)"]
        .iter()
        .enumerate()
    {
        let h = &hist[k];
        println!(
            "  {name:<32} p50 {:>8} ns  p99 {:>8} ns  max {:>9} ns",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max()
        );
    }
    println!(
        "  ratio derived / recorded: p50 {:.2}, p99 {:.2}",
        hist[1].value_at_quantile(0.5) as f64 / hist[0].value_at_quantile(0.5) as f64,
        hist[1].value_at_quantile(0.99) as f64 / hist[0].value_at_quantile(0.99) as f64
    );
    let marks = engines[1].0.e.mark(BTCUSDT).expect("a derived mark");
    println!("  last derived mark {marks}");
}
