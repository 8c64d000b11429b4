//! One account's cancel-all (issue 13, "one account stalls everyone"). Not a test.
//!
//! One account rests N one-lot bids on BTCUSDT (the testkit configuration with the
//! open-order limit raised to N, which a configuration file cannot do beyond 10,000),
//! then one `CancelAll` is timed through `Engine::apply`. N = 100k, 200k and 400k show
//! that the cost is linear in N (before the fix 400k took 36.8 s, quadratic in `memmove`);
//! N = 200 (the default limit) is repeated 2,000 times for the latency an exchange sees
//! at the limit. Median of 5 runs for the large N; hdrhistogram percentiles for N = 200.

// Floats only format figures for printing; nothing here feeds the engine.
#![allow(clippy::float_arithmetic)]

use hdrhistogram::Histogram;
use perpcore_engine::Engine;
use perpcore_types::*;
use std::time::{Duration, Instant};

/// An engine with account 1 holding `n` resting bids (ids 1..=n, 0.001 BTC each at
/// prices spread below a 60,000 mark, inside the ±5% band).
fn loaded(n: u64) -> (Engine, u64) {
    let mut config = perpcore_testkit::gen::test_config();
    let limit = u32::try_from(n).expect("n fits u32");
    config.instruments[0].max_open_orders = limit.max(DEFAULT_MAX_OPEN_ORDERS);
    let mut e = Engine::new(config);
    let mut out = Vec::new();
    let mut seq = 0;
    let mut apply = |e: &mut Engine, command: Command| {
        seq += 1;
        out.clear();
        e.apply(
            &Envelope {
                seq,
                ts_ns: seq,
                command,
            },
            &mut out,
        );
        assert!(
            !matches!(out.first(), Some(Event::Rejected { .. })),
            "{out:?}"
        );
    };
    apply(
        &mut e,
        Command::SetMarkPrice {
            instrument: InstrumentId(0),
            price: Price::from_int(60_000),
        },
    );
    apply(
        &mut e,
        Command::CreateAccount {
            account: AccountId(1),
            parent: None,
        },
    );
    apply(
        &mut e,
        Command::Deposit {
            account: AccountId(1),
            asset: AssetId(0),
            amount: Money::from_int(1_000_000_000),
        },
    );
    for id in 1..=n {
        apply(
            &mut e,
            Command::PlaceOrder(NewOrder {
                account: AccountId(1),
                instrument: InstrumentId(0),
                order_id: OrderId(id),
                side: Side::Buy,
                order_type: OrderType::Limit,
                tif: TimeInForce::Gtc,
                // 57,500.0 .. 59,999.9 in ticks of 0.1 (25,000 price levels).
                price: PriceTicks(575_000 + (id % 25_000) as i64),
                qty: QtyLots(1),
                reduce_only: false,
                close_position: false,
                stp: StpMode::ExpireTaker,
            }),
        );
    }
    (e, seq)
}

/// Times one cancel-all of everything account 1 has; checks it cancelled `n` orders.
fn cancel_all(e: &mut Engine, seq: u64, n: u64) -> Duration {
    let mut out = Vec::with_capacity(n as usize + 1);
    let env = Envelope {
        seq: seq + 1,
        ts_ns: seq + 1,
        command: Command::CancelAll {
            account: AccountId(1),
            instrument: None,
        },
    };
    let t = Instant::now();
    e.apply(&env, &mut out);
    let took = t.elapsed();
    assert_eq!(out.len() as u64, n, "one event per cancelled order");
    took
}

fn main() {
    println!("cancel_all of one account's N resting orders (release build)");
    for n in [100_000u64, 200_000, 400_000] {
        let mut runs: Vec<Duration> = (0..5)
            .map(|_| {
                let (mut e, seq) = loaded(n);
                cancel_all(&mut e, seq, n)
            })
            .collect();
        runs.sort();
        let median = runs[2];
        println!(
            "  N = {n:>7}: median {:>8.1} ms, {:>6.1} ns per order (runs {:?})",
            median.as_secs_f64() * 1e3,
            median.as_nanos() as f64 / n as f64,
            runs.iter().map(|d| d.as_millis()).collect::<Vec<_>>()
        );
    }
    let n = u64::from(DEFAULT_MAX_OPEN_ORDERS);
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    let (mut e, mut seq) = loaded(0);
    let mut out = Vec::new();
    for round in 0..2_000u64 {
        for k in 1..=n {
            seq += 1;
            out.clear();
            e.apply(
                &Envelope {
                    seq,
                    ts_ns: seq,
                    command: Command::PlaceOrder(NewOrder {
                        account: AccountId(1),
                        instrument: InstrumentId(0),
                        order_id: OrderId(round * n + k),
                        side: Side::Buy,
                        order_type: OrderType::Limit,
                        tif: TimeInForce::Gtc,
                        price: PriceTicks(575_000 + k as i64),
                        qty: QtyLots(1),
                        reduce_only: false,
                        close_position: false,
                        stp: StpMode::ExpireTaker,
                    }),
                },
                &mut out,
            );
        }
        let took = cancel_all(&mut e, seq, n);
        seq += 1;
        h.record(took.as_nanos() as u64).expect("record");
    }
    println!(
        "  N = {n} (the default limit), 2,000 rounds: p50 {} µs, p99 {} µs, max {} µs",
        h.value_at_quantile(0.5) / 1_000,
        h.value_at_quantile(0.99) / 1_000,
        h.max() / 1_000
    );
}
