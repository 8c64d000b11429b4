//! One funding settlement (issue 15, item 8). Not a test.
//!
//! N one-lot BTCUSDT positions (N/2 accounts long, N/2 short, paired by trades at the
//! mark of 60,000; the testkit configuration), then funding times settled one by one:
//! a `SetFundingRate` for the next funding time, then the command sequenced at it (an
//! index update), which pays every position and runs the instrument's liquidation check.
//! That command is timed through `Engine::apply`; hdrhistogram p50/p99/max per N.

// Floats only format figures for printing; nothing here feeds the engine.
#![allow(clippy::float_arithmetic)]

use hdrhistogram::Histogram;
use perpcore_benches::Driver;
use perpcore_types::*;
use std::time::Instant;

const HOUR: u64 = 3_600_000_000_000;

fn order(account: u64, id: u64, side: Side, tif: TimeInForce) -> Command {
    Command::PlaceOrder(NewOrder {
        account: AccountId(account),
        instrument: InstrumentId(0),
        order_id: OrderId(id),
        side,
        order_type: OrderType::Limit,
        tif,
        price: PriceTicks(600_000),
        qty: QtyLots(1),
        reduce_only: false,
        close_position: false,
        stp: StpMode::ExpireTaker,
    })
}

fn loaded(positions: u64) -> Driver {
    let mut d = Driver::new(perpcore_testkit::gen::test_config());
    d.apply(
        1,
        Command::SetMarkPrice {
            instrument: InstrumentId(0),
            price: Price::from_int(60_000),
        },
    );
    for a in 1..=positions {
        d.apply(
            1,
            Command::CreateAccount {
                account: AccountId(a),
                parent: None,
            },
        );
        d.apply(
            1,
            Command::Deposit {
                account: AccountId(a),
                asset: AssetId(0),
                amount: Money::from_int(1_000),
            },
        );
    }
    for pair in 0..positions / 2 {
        let (long, short) = (2 * pair + 1, 2 * pair + 2);
        d.apply(1, order(short, short, Side::Sell, TimeInForce::Gtc));
        d.apply(1, order(long, long, Side::Buy, TimeInForce::Ioc));
    }
    d
}

fn main() {
    println!("one funding settlement of N one-lot positions (release build)");
    for (n, rounds) in [(10_000u64, 20u64), (100_000, 10), (1_000_000, 5)] {
        let t0 = Instant::now();
        let mut d = loaded(n);
        let setup = t0.elapsed();
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        let mut paid_events = 0;
        for r in 1..=rounds {
            let due = r * 8 * HOUR;
            d.apply(
                due - 1,
                Command::SetFundingRate {
                    instrument: InstrumentId(0),
                    rate: Rate::parse("0.0001").expect("rate"),
                    next_funding_ns: due,
                },
            );
            let ns = d.apply(
                due,
                Command::SetIndexPrice {
                    instrument: InstrumentId(0),
                    price: Price::from_int(60_000),
                },
            );
            h.record(ns).expect("record");
            paid_events = d
                .out
                .iter()
                .filter(|e| matches!(e, Event::FundingPaid { .. }))
                .count();
        }
        assert_eq!(paid_events as u64, n, "every position pays or receives");
        println!(
            "  N = {n:>9}: p50 {:>9.2} ms, p99 {:>9.2} ms, max {:>9.2} ms, {:.0} ns per position ({rounds} settlements; setup {:.1} s)",
            h.value_at_quantile(0.5) as f64 / 1e6,
            h.value_at_quantile(0.99) as f64 / 1e6,
            h.max() as f64 / 1e6,
            h.value_at_quantile(0.5) as f64 / n as f64,
            setup.as_secs_f64()
        );
    }
}
