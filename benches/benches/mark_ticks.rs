//! Mark ticks at scale (issue: market data and latency profiling, item 6). Not a test.
//!
//! 100 linear instruments; 10k, 100k and 1M accounts, each holding one position (pairs of
//! accounts trade with each other at the mark; leverage 5x–100x, so some sit close to
//! liquidation). Then 2,000 mark ticks of ±0.1% (one in twenty ±2%) on random
//! instruments, timed one by one through `Engine::apply`, with the liquidation index and
//! with the full holder scan (after one untimed tick per instrument, which bands every
//! account that traded during setup). Prints p50/p99/max per tick and the memory per account and
//! per resting order (a counting allocator around the system one).

// Floats only format figures for printing; nothing here feeds the engine.
#![allow(clippy::float_arithmetic)]

use hdrhistogram::Histogram;
use perpcore_engine::Engine;
use perpcore_types::*;
use rand::{Rng, SeedableRng};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::time::Instant;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Net bytes allocated in `region` so far.
fn net(region: &Region<'_, System>) -> i64 {
    let c = region.change();
    c.bytes_allocated as i64 - c.bytes_deallocated as i64 + c.bytes_reallocated as i64
}

const INSTRUMENTS: u32 = 100;

fn config() -> Config {
    let assets = vec![
        AssetSpec {
            id: AssetId(0),
            symbol: "USDT".into(),
            collateral: None,
        },
        AssetSpec {
            id: AssetId(1),
            symbol: "BASE".into(),
            collateral: None,
        },
    ];
    let instruments = (0..INSTRUMENTS)
        .map(|i| InstrumentSpec {
            id: InstrumentId(i),
            symbol: format!("I{i}USDT"),
            kind: ContractKind::Linear,
            base_asset: AssetId(1),
            quote_asset: AssetId(0),
            settle_asset: AssetId(0),
            tick_size: Price::parse("0.01").unwrap(),
            lot_size: Qty::parse("0.001").unwrap(),
            min_qty: QtyLots(1),
            max_qty: QtyLots(1_000_000_000),
            max_leverage: 125,
            brackets: vec![Bracket {
                notional_floor: Money::ZERO,
                notional_cap: Money::from_int(1_000_000_000),
                max_leverage: 125,
                mmr: Rate::parse("0.004").unwrap(),
                cum: Money::ZERO,
            }],
            maker_fee: Rate::ZERO,
            taker_fee: Rate::ZERO,
            price_band: Rate::parse("0.05").unwrap(),
            liquidation_fee: Rate::parse("0.01").unwrap(),
            fee_to_close: false,
            max_open_orders: DEFAULT_MAX_OPEN_ORDERS,
            funding_interval_ns: DEFAULT_FUNDING_INTERVAL_NS,
            mark_method: MarkMethod::Recorded,
            funding_method: FundingMethod::Recorded,
            convention: MarginConvention::Binance,
        })
        .collect();
    Config {
        assets,
        instruments,
    }
}

struct Run {
    e: Engine,
    seq: u64,
    out: Vec<Event>,
    trades: u64,
    liquidations: u64,
}

impl Run {
    fn apply(&mut self, command: Command) {
        self.seq += 1;
        self.out.clear();
        self.e.apply(
            &Envelope {
                seq: self.seq,
                ts_ns: self.seq,
                command,
            },
            &mut self.out,
        );
        for e in &self.out {
            match e {
                Event::Trade { .. } => self.trades += 1,
                Event::LiquidationTriggered { .. } => self.liquidations += 1,
                _ => {}
            }
        }
    }
}

fn order(
    account: u64,
    id: u64,
    i: u32,
    side: Side,
    price: i64,
    lots: i64,
    tif: TimeInForce,
) -> Command {
    Command::PlaceOrder(NewOrder {
        account: AccountId(account),
        instrument: InstrumentId(i),
        order_id: OrderId(id),
        side,
        order_type: OrderType::Limit,
        tif,
        price: PriceTicks(price),
        qty: QtyLots(lots),
        reduce_only: false,
        close_position: false,
        stp: StpMode::ExpireTaker,
    })
}

/// Build `n` accounts with positions; returns the engine and bytes allocated per account.
fn build(n: u64, full_scan: bool) -> (Run, f64) {
    let e = Engine::new(config());
    let e = if full_scan { e.with_full_scan() } else { e };
    let mut r = Run {
        e,
        seq: 0,
        out: Vec::new(),
        trades: 0,
        liquidations: 0,
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mark_ticks = 1_000_000; // 10,000.00 at a 0.01 tick
    for i in 0..INSTRUMENTS {
        r.apply(Command::SetMarkPrice {
            instrument: InstrumentId(i),
            price: Price::from_int(10_000),
        });
    }
    let region = Region::new(GLOBAL);
    // Pairs (a, a+1) on instrument (a / 2) % 100: a sells, a+1 buys at the mark. Each is
    // funded with its initial margin × 1.02–1.5 (leverage 5x–100x), so the cushion above
    // maintenance is thin for some and thick for others.
    let mut id = 1u64;
    for a in (1..n).step_by(2) {
        let i = ((a / 2) % INSTRUMENTS as u64) as u32;
        let lots: i64 = rng.gen_range(100..1_000); // 0.1–1 unit at 10,000
        let notional = lots * 10; // USDT: lots × 0.001 × 10,000
        for (acct, side, tif) in [
            (a, Side::Sell, TimeInForce::Gtc),
            (a + 1, Side::Buy, TimeInForce::Ioc),
        ] {
            let lev: i64 = rng.gen_range(5..=100);
            let pct: i64 = rng.gen_range(102..=150);
            r.apply(Command::CreateAccount {
                account: AccountId(acct),
                parent: None,
            });
            let funds =
                Money::from_int(notional).mul_div(pct as i128, (lev * 100) as i128, Rounding::Ceil);
            r.apply(Command::Deposit {
                account: AccountId(acct),
                asset: AssetId(0),
                amount: funds,
            });
            r.apply(Command::SetLeverage {
                account: AccountId(acct),
                instrument: InstrumentId(i),
                leverage: lev as u32,
            });
            r.apply(order(acct, id, i, side, mark_ticks, lots, tif));
            id += 1;
        }
    }
    let per_account = net(&region) as f64 / n as f64;
    assert!(
        r.trades * 2 >= n * 9 / 10,
        "setup: {} trades for {n} accounts",
        r.trades
    );
    (r, per_account)
}

fn ticks(r: &mut Run, count: usize) -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    // 10,000 at 10^-8.
    let mut marks = vec![1_000_000_000_000i64; INSTRUMENTS as usize];
    // Untimed: one tick per instrument at the same price, so that the index bands every
    // account that traded during setup (a one-time cost, not a tick's).
    for (i, m) in marks.iter().enumerate() {
        r.apply(Command::SetMarkPrice {
            instrument: InstrumentId(i as u32),
            price: Price(*m),
        });
    }
    for _ in 0..count {
        let i = rng.gen_range(0..INSTRUMENTS) as usize;
        let bp: i64 = if rng.gen_range(0..20) == 0 {
            rng.gen_range(-200..=200)
        } else {
            rng.gen_range(-10..=10)
        };
        marks[i] += marks[i] * bp / 10_000;
        let t = Instant::now();
        r.apply(Command::SetMarkPrice {
            instrument: InstrumentId(i as u32),
            price: Price(marks[i]),
        });
        h.record(t.elapsed().as_nanos().max(1) as u64).unwrap();
    }
    h
}

fn main() {
    let sizes: Vec<u64> = std::env::var("PERPCORE_TICK_ACCOUNTS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000, 1_000_000]);
    println!("machine: {}", perpcore_benches::machine());
    println!("{INSTRUMENTS} instruments, one position per account, 2,000 mark ticks (±0.1%, one in twenty ±2%)\n");
    println!("| accounts | index p50 µs | index p99 µs | index max µs | full scan p50 µs | full scan p99 µs | full scan max µs | bytes per account |");
    println!("|---|---|---|---|---|---|---|---|");
    for n in sizes {
        let (mut a, per_account) = build(n, false);
        let setup_liquidations = a.liquidations;
        let hi = ticks(&mut a, 2_000);
        let tick_liquidations = a.liquidations - setup_liquidations;
        drop(a);
        let (mut b, _) = build(n, true);
        let hf = ticks(&mut b, 2_000);
        assert_eq!(
            b.e.state_hash(),
            {
                let (mut c, _) = build(n, false);
                ticks(&mut c, 2_000);
                c.e.state_hash()
            },
            "index and full scan agree"
        );
        drop(b);
        let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
        println!(
            "| {n} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} |",
            us(&hi, 0.5),
            us(&hi, 0.99),
            hi.max() as f64 / 1_000.0,
            us(&hf, 0.5),
            us(&hf, 0.99),
            hf.max() as f64 / 1_000.0,
            per_account
        );
        eprintln!("  {n} accounts: {tick_liquidations} liquidations during the ticks");
    }
    // Memory per resting order: 100,000 GTC orders away from the mark.
    let (mut r, _) = build(2_000, false);
    let region = Region::new(GLOBAL);
    let orders = 100_000u64;
    for k in 0..orders {
        let a = 1 + k % 2_000;
        r.apply(order(
            a,
            10_000_000 + k,
            (k % INSTRUMENTS as u64) as u32,
            Side::Buy,
            960_000 + (k % 300) as i64,
            1,
            TimeInForce::Gtc,
        ));
    }
    let per_order = net(&region) as f64 / orders as f64;
    println!("\nmemory per resting order (book + engine order state + account leg entry): {per_order:.0} bytes");
}
