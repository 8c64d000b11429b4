//! Mark ticks with many waiting stop orders (issue 16, item 5). Not a test.
//!
//! Two engines on the testkit configuration: one with 100,000 sell stop-market orders
//! waiting on BTCUSDT's mark (1,000 accounts × 100, triggers spread evenly over 50,000 to
//! 58,999.9), one with none. Both take the same 2,000 mark ticks of a ±0.01% random walk
//! around 60,000 that never reaches a trigger, alternating tick by tick: the cost of a
//! tick that fires nothing, with and without the waiting orders, and their ratio.
//!
//! A third engine holds 100,000 active sell trailing stops (callbacks 2% to 10% in 0.1%
//! steps: 81 groups), placed 1,000 at a time between mark ticks of the same kind of
//! walk, so that they activated at many different prices (many segments). It takes the
//! same ticks, alternating with the other two.
//!
//! Then the loaded engine's mark steps down from 59,000 to 50,000 by 100: each step
//! crosses ~1,111 triggers, which fire in trigger order; each fired order is reduce-only
//! without a position, so it goes through the pre-trade check and is refused with an
//! event (no matching). Printed: the time per step and per fired order. The trailing
//! engine's mark steps down by 0.5% until every trailing stop fired: the same figures.

// Floats only format figures for printing; nothing here feeds the engine.
#![allow(clippy::float_arithmetic)]

use hdrhistogram::Histogram;
use perpcore_benches::Driver;
use perpcore_types::*;
use rand::{Rng, SeedableRng};

const BTCUSDT: InstrumentId = InstrumentId(0);
const ACCOUNTS: u64 = 1_000;
const PER_ACCOUNT: u64 = 100;
const TICKS: usize = 2_000;

fn driver() -> Driver {
    let mut config = perpcore_testkit::gen::test_config();
    config.instruments[0].max_open_orders = 1_000;
    let mut d = Driver::new(config);
    d.apply(1, mark(Price::from_int(60_000)));
    d
}

/// The next command of `d`, at a timestamp equal to its sequence number.
fn step(d: &mut Driver, command: Command) -> u64 {
    d.apply(d.seq + 1, command)
}

fn mark(price: Price) -> Command {
    Command::SetMarkPrice {
        instrument: BTCUSDT,
        price,
    }
}

/// `accounts` accounts × 100 waiting sell orders: order `n` (0-based) of kind `kind`,
/// trigger `trigger(n)` and callback `callback(n)`; `between` runs after each account.
fn place_all(
    d: &mut Driver,
    accounts: u64,
    kind: ConditionalKind,
    trigger: impl Fn(u64) -> Price,
    callback: impl Fn(u64) -> Rate,
    mut between: impl FnMut(&mut Driver),
) {
    for a in 1..=accounts {
        step(
            d,
            Command::CreateAccount {
                account: AccountId(a),
                parent: None,
            },
        );
        for k in 0..PER_ACCOUNT {
            let n = (a - 1) * PER_ACCOUNT + k;
            step(
                d,
                Command::PlaceConditional(ConditionalOrder {
                    account: AccountId(a),
                    instrument: BTCUSDT,
                    order_id: OrderId(n + 1),
                    side: Side::Sell,
                    kind,
                    trigger: trigger(n),
                    callback_rate: callback(n),
                    working: WorkingPrice::Mark,
                    price: PriceTicks(0),
                    tif: TimeInForce::Gtc,
                    qty: QtyLots(1),
                    reduce_only: true,
                    close_position: false,
                    stp: StpMode::ExpireTaker,
                }),
            );
            assert!(
                matches!(d.out.first(), Some(Event::ConditionalPlaced { .. })),
                "{:?}",
                d.out
            );
        }
        between(d);
    }
}

fn loaded() -> Driver {
    let mut d = driver();
    place_all(
        &mut d,
        ACCOUNTS,
        ConditionalKind::StopMarket,
        // 50,000 + n × 0.09 over n < 100,000: 50,000.00 to 58,999.91.
        |n| Price(Price::from_int(50_000).raw() + (n as i64) * 9_000_000),
        |_| Rate::ZERO,
        |_| {},
    );
    d
}

/// One step of the ±0.01% walk, in 0.001 units (a whole number of 0.1 ticks).
fn walk(rng: &mut rand::rngs::StdRng, price: &mut i64) -> Price {
    *price += *price * rng.gen_range(-1..=1) / 10_000;
    *price -= *price % 100;
    Price(*price * 100_000)
}

/// 100,000 active sell trailing stops placed between walk ticks (module docs);
/// `PERPCORE_BENCH_TRAILING_ACCOUNTS` (default 1,000) × 100 of them.
fn trailing(rng: &mut rand::rngs::StdRng) -> Driver {
    let accounts = std::env::var("PERPCORE_BENCH_TRAILING_ACCOUNTS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(ACCOUNTS);
    let mut d = driver();
    let mut price = 60_000_000i64;
    place_all(
        &mut d,
        accounts,
        ConditionalKind::TrailingStop,
        |_| Price(0),
        |n| Rate((20 + (n % 81) as i64) * RATE_SCALE / 1_000),
        |d| {
            let p = walk(rng, &mut price);
            step(d, mark(p));
        },
    );
    d
}

fn main() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let trailing = trailing(&mut rng);
    let mut engines = [loaded(), trailing, driver()];
    let waiting = engines[0].e.conditionals().count();
    let trailing_waiting = engines[1].e.conditionals().count();
    let mut hist: Vec<Histogram<u64>> = (0..3).map(|_| Histogram::new(3).unwrap()).collect();
    let mut fired_on_walk = 0usize;
    let mut price = 60_000_000i64; // 0.001 units
    for _ in 0..TICKS {
        let p = walk(&mut rng, &mut price);
        for (k, d) in engines.iter_mut().enumerate() {
            let ns = step(d, mark(p));
            hist[k].record(ns).unwrap();
            fired_on_walk += d
                .out
                .iter()
                .filter(|e| matches!(e, Event::ConditionalTriggered { .. }))
                .count();
        }
    }
    println!("mark ticks that fire nothing, BTCUSDT, {TICKS} ticks ({fired_on_walk} fired):");
    for (k, name) in [
        format!("{waiting} waiting stops"),
        format!("{trailing_waiting} trailing stops"),
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
    for (k, name) in [(0, "stops"), (1, "trailing")] {
        println!(
            "  ratio {name} / empty: p50 {:.2}, p99 {:.2}",
            hist[k].value_at_quantile(0.5) as f64 / hist[2].value_at_quantile(0.5) as f64,
            hist[k].value_at_quantile(0.99) as f64 / hist[2].value_at_quantile(0.99) as f64
        );
    }
    let d = &mut engines[1];
    let (mut fired, mut total_ns, mut steps_n) = (0usize, 0u64, 0u32);
    let mut p = price;
    while d.e.conditionals().count() > 0 && steps_n < 100 {
        p -= p / 200;
        p -= p % 100;
        total_ns += step(d, mark(Price(p * 100_000)));
        steps_n += 1;
        fired += d
            .out
            .iter()
            .filter(|e| matches!(e, Event::ConditionalTriggered { .. }))
            .count();
    }
    println!(
        "trailing: mark steps of -0.5%: {fired} fired in {steps_n} steps, {:.0} ns per fired \
         order; {} still waiting",
        total_ns as f64 / fired.max(1) as f64,
        d.e.conditionals().count()
    );
    let d = &mut engines[0];
    let mut steps = Histogram::<u64>::new(3).unwrap();
    let (mut fired, mut total_ns) = (0usize, 0u64);
    for s in 0..90 {
        let ns = step(d, mark(Price::from_int(59_000 - 100 * s)));
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
