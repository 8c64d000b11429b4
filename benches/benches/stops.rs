//! Mark ticks with many waiting stop orders (issue 16, item 5). Not a test.
//!
//! Two engines on the testkit configuration: one with 100,000 sell stop-market orders
//! waiting on BTCUSDT's mark (1,000 accounts × 100, triggers spread evenly over 50,000 to
//! 58,999.9), one with none. Both take the same 2,000 mark ticks of a ±0.01% random walk
//! around 60,000 that never reaches a trigger, alternating tick by tick: the cost of a
//! tick that fires nothing, with and without the waiting orders, and their ratio.
//!
//! Then the loaded engine's mark steps down from 59,000 to 50,000 by 100: each step
//! crosses ~1,111 triggers, which fire in trigger order; each fired order is reduce-only
//! without a position, so it goes through the pre-trade check and is refused with an
//! event (no matching). Printed: the time per step and per fired order.

// Floats only format figures for printing; nothing here feeds the engine.
#![allow(clippy::float_arithmetic)]

use hdrhistogram::Histogram;
use perpcore_engine::Engine;
use perpcore_types::*;
use rand::{Rng, SeedableRng};
use std::time::Instant;

const BTCUSDT: InstrumentId = InstrumentId(0);
const ACCOUNTS: u64 = 1_000;
const PER_ACCOUNT: u64 = 100;
const TICKS: usize = 2_000;

struct Driver {
    e: Engine,
    seq: u64,
    out: Vec<Event>,
}

impl Driver {
    fn new() -> Driver {
        let mut config = perpcore_testkit::gen::test_config();
        config.instruments[0].max_open_orders = 1_000;
        let mut d = Driver {
            e: Engine::new(config),
            seq: 0,
            out: Vec::new(),
        };
        d.apply(mark(Price::from_int(60_000)));
        d
    }

    fn apply(&mut self, command: Command) -> u64 {
        self.seq += 1;
        self.out.clear();
        let env = Envelope {
            seq: self.seq,
            ts_ns: self.seq,
            command,
        };
        let t = Instant::now();
        self.e.apply(&env, &mut self.out);
        (t.elapsed().as_nanos() as u64).max(1)
    }
}

fn mark(price: Price) -> Command {
    Command::SetMarkPrice {
        instrument: BTCUSDT,
        price,
    }
}

fn loaded() -> Driver {
    let mut d = Driver::new();
    for a in 1..=ACCOUNTS {
        d.apply(Command::CreateAccount {
            account: AccountId(a),
            parent: None,
        });
        for k in 0..PER_ACCOUNT {
            let n = (a - 1) * PER_ACCOUNT + k;
            // 50,000 + n × 0.09 over n < 100,000: 50,000.00 to 58,999.91.
            let trigger = Price(Price::from_int(50_000).raw() + (n as i64) * 9_000_000);
            d.apply(Command::PlaceConditional(ConditionalOrder {
                account: AccountId(a),
                instrument: BTCUSDT,
                order_id: OrderId(n + 1),
                side: Side::Sell,
                kind: ConditionalKind::StopMarket,
                trigger,
                callback_rate: Rate::ZERO,
                working: WorkingPrice::Mark,
                price: PriceTicks(0),
                tif: TimeInForce::Gtc,
                qty: QtyLots(1),
                reduce_only: true,
                close_position: false,
                stp: StpMode::ExpireTaker,
            }));
            assert!(
                matches!(d.out.first(), Some(Event::ConditionalPlaced { .. })),
                "{:?}",
                d.out
            );
        }
    }
    d
}

fn main() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let mut engines = [loaded(), Driver::new()];
    let waiting = engines[0].e.conditionals().count();
    let mut hist = [
        Histogram::<u64>::new(3).unwrap(),
        Histogram::<u64>::new(3).unwrap(),
    ];
    let mut price = 60_000_000i64; // 0.001 units
    for _ in 0..TICKS {
        price += price * rng.gen_range(-1..=1) / 10_000;
        for (k, d) in engines.iter_mut().enumerate() {
            let ns = d.apply(mark(Price(price * 100_000)));
            hist[k].record(ns).unwrap();
        }
    }
    println!("mark ticks that fire nothing, BTCUSDT, {TICKS} ticks:");
    for (k, name) in [
        format!("{waiting} waiting stops"),
        "no waiting stops".into(),
    ]
    .iter()
    .enumerate()
    {
        println!(
            "  {name:<22} p50 {:>7} ns  p99 {:>7} ns  max {:>8} ns",
            hist[k].value_at_quantile(0.5),
            hist[k].value_at_quantile(0.99),
            hist[k].max()
        );
    }
    println!(
        "  ratio loaded / empty: p50 {:.2}, p99 {:.2}",
        hist[0].value_at_quantile(0.5) as f64 / hist[1].value_at_quantile(0.5) as f64,
        hist[0].value_at_quantile(0.99) as f64 / hist[1].value_at_quantile(0.99) as f64
    );
    let d = &mut engines[0];
    let mut steps = Histogram::<u64>::new(3).unwrap();
    let (mut fired, mut total_ns) = (0usize, 0u64);
    for s in 0..90 {
        let ns = d.apply(mark(Price::from_int(59_000 - 100 * s)));
        let n = d
            .out
            .iter()
            .filter(|e| matches!(e, Event::ConditionalTriggered { .. }))
            .count();
        fired += n;
        total_ns += ns;
        steps.record(ns).unwrap();
    }
    println!(
        "mark steps of -100 from 59,000: {fired} fired in 90 steps, p50 {} ns/step, {:.0} ns per \
         fired order; {} still waiting",
        steps.value_at_quantile(0.5),
        total_ns as f64 / fired.max(1) as f64,
        d.e.conditionals().count()
    );
}
