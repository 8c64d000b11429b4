//! The exchange-core order mix (82% amend, 9% GTC, 6% cancel, 3% IOC; one instrument,
//! 1,000 accounts, ~1,000 resting orders), run through
//! 1. `perpcore_engine::Engine::apply` with risk on (margin checks, reservations, fees,
//!    settlement), and
//! 2. three order books on the identical operation stream: perpcore-book, lobster 0.7.0
//!    and orderbook-rs 0.15.3.
//!
//! Run: `cargo bench -p perpcore-benches` (the bench profile inherits release, with
//! overflow-checks = true). Sizes: `PERPCORE_BENCH_OPS` (timed commands per run, default
//! 2,000,000), `PERPCORE_BENCH_RUNS` (runs per measurement, default 5),
//! `PERPCORE_BENCH_ONLY` (`engine` or `books` to run one half; `perpcore`, `lobster` or
//! `orderbook` to run one library alone, e.g. under `perf record`).
#![allow(clippy::float_arithmetic)]

use hdrhistogram::Histogram;
use perpcore_benches::*;
use perpcore_book::{Book, MatchResult};
use perpcore_engine::Engine;
use perpcore_types::{Event, Side};
use std::hint::black_box;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------
// The libraries, each behind the same three operations.

trait Lib {
    const NAME: &'static str;
    fn new() -> Self;
    fn apply(&mut self, op: &Op);
    fn state(&self) -> BookState;
}

/// perpcore-book. `NATIVE_AMEND`: amends with its own `Book::requeue`; otherwise as
/// cancel + submit, the way lobster is driven.
struct PerpcoreBook<const NATIVE_AMEND: bool> {
    book: Book,
    mr: MatchResult,
}

type Perpcore = PerpcoreBook<true>;
type PerpcoreResubmit = PerpcoreBook<false>;

impl<const NATIVE_AMEND: bool> Lib for PerpcoreBook<NATIVE_AMEND> {
    const NAME: &'static str = if NATIVE_AMEND {
        "perpcore-book"
    } else {
        "perpcore-book, amend = cancel + submit"
    };
    fn new() -> Self {
        PerpcoreBook {
            book: Book::new(),
            mr: MatchResult::new(),
        }
    }
    #[inline]
    fn apply(&mut self, op: &Op) {
        if NATIVE_AMEND {
            perpcore_apply_native(&mut self.book, op, &mut self.mr);
        } else {
            perpcore_apply(&mut self.book, op, &mut self.mr);
        }
        black_box(&self.mr);
    }
    fn state(&self) -> BookState {
        perpcore_state(&self.book)
    }
}

/// lobster 0.7.0: `execute(OrderType::Limit/Cancel)`. It has no IOC, so an IOC is a
/// limit order followed by a cancel of whatever rested; an amend is cancel + limit.
struct Lobster {
    book: lobster::OrderBook,
}

fn lob_side(s: Side) -> lobster::Side {
    match s {
        Side::Buy => lobster::Side::Bid,
        Side::Sell => lobster::Side::Ask,
    }
}

impl Lib for Lobster {
    const NAME: &'static str = "lobster 0.7.0";
    fn new() -> Self {
        Lobster {
            book: lobster::OrderBook::default(),
        }
    }
    #[inline]
    fn apply(&mut self, op: &Op) {
        use lobster::{OrderEvent, OrderType};
        match *op {
            Op::Place {
                id,
                side,
                price,
                qty,
                ioc,
                ..
            } => {
                let ev = self.book.execute(OrderType::Limit {
                    id: id as u128,
                    side: lob_side(side),
                    qty: qty as u64,
                    price: price as u64,
                });
                if ioc
                    && matches!(
                        ev,
                        OrderEvent::Placed { .. } | OrderEvent::PartiallyFilled { .. }
                    )
                {
                    black_box(self.book.execute(OrderType::Cancel { id: id as u128 }));
                }
                black_box(ev);
            }
            Op::Amend {
                id,
                side,
                new_price,
                qty,
                ..
            } => {
                black_box(self.book.execute(OrderType::Cancel { id: id as u128 }));
                black_box(self.book.execute(OrderType::Limit {
                    id: id as u128,
                    side: lob_side(side),
                    qty: qty as u64,
                    price: new_price as u64,
                }));
            }
            Op::Cancel { id, .. } => {
                black_box(self.book.execute(OrderType::Cancel { id: id as u128 }));
            }
        }
    }
    fn state(&self) -> BookState {
        let d = self.book.depth(100_000);
        BookState {
            orders: None,
            best_bid: self.book.max_bid().map(|p| p as i64),
            best_ask: self.book.min_ask().map(|p| p as i64),
            bid_lots: Some(d.bids.iter().map(|l| l.qty as i64).sum()),
            ask_lots: Some(d.asks.iter().map(|l| l.qty as i64).sum()),
        }
    }
}

/// orderbook-rs 0.15.3: `add_limit_order` (GTC / IOC), `update_order(UpdatePrice)`,
/// `cancel_order`. Default book (`OrderBook::new`): no STP, no risk layer, no listeners.
struct OrderbookRs {
    book: orderbook_rs::OrderBook<()>,
}

fn obr_side(s: Side) -> orderbook_rs::Side {
    match s {
        Side::Buy => orderbook_rs::Side::Buy,
        Side::Sell => orderbook_rs::Side::Sell,
    }
}

impl Lib for OrderbookRs {
    const NAME: &'static str = "orderbook-rs 0.15.3";
    fn new() -> Self {
        OrderbookRs {
            book: orderbook_rs::OrderBook::new("BTCUSDT"),
        }
    }
    #[inline]
    fn apply(&mut self, op: &Op) {
        use orderbook_rs::{Id, TimeInForce};
        match *op {
            Op::Place {
                id,
                side,
                price,
                qty,
                ioc,
                ..
            } => {
                // An IOC with an unfilled remainder comes back as Err(InsufficientLiquidity)
                // after its fills: expected, not a failure.
                let r = self.book.add_limit_order(
                    Id::from_u64(id),
                    price as u128,
                    qty as u64,
                    obr_side(side),
                    if ioc {
                        TimeInForce::Ioc
                    } else {
                        TimeInForce::Gtc
                    },
                    None,
                );
                black_box(r.is_ok());
            }
            Op::Amend { id, new_price, .. } => {
                let r = self
                    .book
                    .update_order(pricelevel::OrderUpdate::UpdatePrice {
                        order_id: Id::from_u64(id),
                        new_price: pricelevel::Price::new(new_price as u128),
                    });
                debug_assert!(matches!(r, Ok(Some(_))), "orderbook-rs amend: {r:?}");
                black_box(r.is_ok());
            }
            Op::Cancel { id, .. } => {
                let r = self.book.cancel_order(Id::from_u64(id));
                debug_assert!(matches!(r, Ok(Some(_))), "orderbook-rs cancel: {r:?}");
                black_box(r.is_ok());
            }
        }
    }
    fn state(&self) -> BookState {
        BookState {
            orders: Some(self.book.get_all_orders().len() as u64),
            best_bid: self.book.best_bid().map(|p| p as i64),
            best_ask: self.book.best_ask().map(|p| p as i64),
            bid_lots: None,
            ask_lots: None,
        }
    }
}

// ---------------------------------------------------------------------------------
// Measuring.

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

struct Run {
    elapsed: Duration,
    ok: bool,
}

/// One run of a library: build, replay prefill + warm-up untimed, then the timed part,
/// per-op timed into `hist` when given, else one clock around the loop.
fn run_lib<L: Lib>(w: &Workload, hist: Option<&mut Histogram<u64>>) -> Run {
    let mut lib = L::new();
    for op in w.prefill.iter().chain(&w.warmup) {
        lib.apply(op);
    }
    let elapsed = match hist {
        None => {
            let t0 = Instant::now();
            for op in &w.timed {
                lib.apply(op);
            }
            t0.elapsed()
        }
        Some(h) => {
            let t0 = Instant::now();
            for op in &w.timed {
                let t = Instant::now();
                lib.apply(op);
                h.saturating_record(t.elapsed().as_nanos() as u64);
            }
            t0.elapsed()
        }
    };
    let st = lib.state();
    let ok = st.agrees_with(&w.final_state);
    if !ok {
        eprintln!(
            "WARNING: {} ended in a different state:\n  got  {st:?}\n  want {:?}",
            L::NAME,
            w.final_state
        );
    }
    drop(black_box(lib));
    Run { elapsed, ok }
}

struct EngineRun {
    elapsed: Duration,
    rejects: u64,
    events: u64,
    ok: bool,
}

fn run_engine(s: &EngineStream, w: &Workload, hist: Option<&mut Histogram<u64>>) -> EngineRun {
    let mut e = Engine::new(bench_config());
    let mut out: Vec<Event> = Vec::with_capacity(64);
    for env in &s.untimed {
        e.apply(env, &mut out);
        assert!(
            !out.iter().any(|ev| matches!(ev, Event::Rejected { .. })),
            "setup/warm-up command {} rejected: {out:?}",
            env.seq
        );
        out.clear();
    }
    let mut rejects = 0u64;
    let mut events = 0u64;
    let elapsed = match hist {
        None => {
            let t0 = Instant::now();
            for env in &s.timed {
                e.apply(env, &mut out);
                out.clear();
            }
            t0.elapsed()
        }
        Some(h) => {
            let t0 = Instant::now();
            for env in &s.timed {
                let t = Instant::now();
                e.apply(env, &mut out);
                h.saturating_record(t.elapsed().as_nanos() as u64);
                events += out.len() as u64;
                rejects += out
                    .iter()
                    .filter(|ev| matches!(ev, Event::Rejected { .. }))
                    .count() as u64;
                out.clear();
            }
            t0.elapsed()
        }
    };
    let st = perpcore_state(e.book(INSTRUMENT).expect("instrument"));
    let ok = st == w.final_state;
    if !ok {
        eprintln!(
            "WARNING: the engine's book ended in a different state:\n  got  {st:?}\n  want {:?}",
            w.final_state
        );
    }
    drop(black_box(e));
    EngineRun {
        elapsed,
        rejects,
        events,
        ok,
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn pcts(h: &Histogram<u64>) -> [u64; 5] {
    [
        h.value_at_quantile(0.50),
        h.value_at_quantile(0.90),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
    ]
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// Whether this build traps integer overflow (the release/bench profile sets it on).
fn overflow_checks_on() -> bool {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let x: u8 = black_box(255);
    let trapped = std::panic::catch_unwind(|| black_box(x + black_box(1))).is_err();
    std::panic::set_hook(prev);
    trapped
}

/// What the per-op clock itself costs: `Instant::now` + `elapsed` + a histogram record
/// around nothing. Every per-op latency below includes it.
fn timer_overhead() -> (u64, u64) {
    let mut h = new_hist();
    for _ in 0..1_000_000 {
        let t = Instant::now();
        black_box(());
        h.saturating_record(t.elapsed().as_nanos() as u64);
    }
    (h.value_at_quantile(0.5), h.value_at_quantile(0.99))
}

struct BookRow {
    name: &'static str,
    plain: Vec<f64>,
    timed: Vec<f64>,
    hist: Histogram<u64>,
    ok: bool,
}

impl BookRow {
    fn new(name: &'static str) -> Self {
        BookRow {
            name,
            plain: Vec::new(),
            timed: Vec::new(),
            hist: new_hist(),
            ok: true,
        }
    }
    fn run<L: Lib>(&mut self, w: &Workload) {
        let r = run_lib::<L>(w, None);
        self.plain.push(rate(w.timed.len(), r.elapsed));
        self.ok &= r.ok;
        let r = run_lib::<L>(w, Some(&mut self.hist));
        self.timed.push(rate(w.timed.len(), r.elapsed));
        self.ok &= r.ok;
    }
}

fn main() {
    let ops = env_usize("PERPCORE_BENCH_OPS", 2_000_000);
    let runs = env_usize("PERPCORE_BENCH_RUNS", 5).max(1);
    let only = std::env::var("PERPCORE_BENCH_ONLY").unwrap_or_default();
    let params = Params {
        timed: ops,
        warmup: (ops / 10).max(10_000),
        ..Params::default()
    };

    println!("# perpcore exchange-mix benchmark");
    println!("machine : {}", machine());
    println!(
        "profile : {} (debug_assertions = {}, overflow-checks = {})",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "bench (inherits release)"
        },
        cfg!(debug_assertions),
        overflow_checks_on()
    );
    let (t50, t99) = timer_overhead();
    println!("timer   : Instant::now + elapsed around nothing: p50 {t50} ns, p99 {t99} ns (inside every per-op figure)");
    let t_gen = Instant::now();
    let w = generate(params.clone());
    let s = &w.stats;
    let n = (s.amends + s.places + s.cancels + s.iocs) as f64;
    println!(
        "workload: seed {:#x}, {} accounts, prefill {} GTC, warm-up {} ops, timed {} ops per run, {} runs",
        params.seed, params.accounts, s.orders_after_prefill, params.warmup, params.timed, runs
    );
    println!(
        "mix     : amend {:.1}%, GTC {:.1}%, cancel {:.1}%, IOC {:.1}%; resting orders min/mean/max {}/{:.0}/{}; {} fills ({:.3} per op)",
        100.0 * s.amends as f64 / n,
        100.0 * s.places as f64 / n,
        100.0 * s.cancels as f64 / n,
        100.0 * s.iocs as f64 / n,
        s.orders_min,
        s.orders_mean,
        s.orders_max,
        s.fills,
        s.fills as f64 / n,
    );
    println!(
        "generated in {:.2} s (not timed)\n",
        t_gen.elapsed().as_secs_f64()
    );

    let mut engine_median = None;
    if only.is_empty() || only == "engine" {
        let stream = engine_stream(&w);
        let mut plain = Vec::new();
        let mut timed = Vec::new();
        let mut hist = new_hist();
        let mut rejects = 0;
        let mut events = 0;
        let mut ok = true;
        for _ in 0..runs {
            let r = run_engine(&stream, &w, None);
            plain.push(rate(stream.timed.len(), r.elapsed));
            ok &= r.ok;
            let r = run_engine(&stream, &w, Some(&mut hist));
            timed.push(rate(stream.timed.len(), r.elapsed));
            rejects += r.rejects;
            events += r.events;
            ok &= r.ok;
        }
        let p = pcts(&hist);
        let med = median(plain.clone());
        engine_median = Some((med, p));
        println!(
            "## Engine::apply, risk on ({} runs of {} commands)",
            runs, ops
        );
        println!(
            "| mode | cmds/s median | min | max | p50 ns | p90 ns | p99 ns | p99.9 ns | max ns |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        println!(
            "| one clock around the loop | {} | {} | {} | | | | | |",
            si(med),
            si(plain.iter().cloned().fold(f64::INFINITY, f64::min)),
            si(plain.iter().cloned().fold(0.0, f64::max)),
        );
        println!(
            "| clock around each apply | {} | {} | {} | {} | {} | {} | {} | {} |",
            si(median(timed.clone())),
            si(timed.iter().cloned().fold(f64::INFINITY, f64::min)),
            si(timed.iter().cloned().fold(0.0, f64::max)),
            p[0],
            p[1],
            p[2],
            p[3],
            p[4]
        );
        println!(
            "events per command {:.2}; rejected commands {} of {}; final book = reference: {}\n",
            events as f64 / (runs * ops) as f64,
            rejects,
            runs * ops,
            if ok { "yes" } else { "NO" }
        );
    }

    // `books` runs all three; a library name prefix (`perpcore`, `lobster`, `orderbook`)
    // runs that one alone (for profiling).
    let want = |name: &str| only.is_empty() || only == "books" || name.starts_with(&only);
    if only != "engine" {
        let mut rows = [
            BookRow::new(Perpcore::NAME),
            BookRow::new(Lobster::NAME),
            BookRow::new(OrderbookRs::NAME),
            BookRow::new(PerpcoreResubmit::NAME),
        ];
        // Interleaved rounds, so slow drift of the shared machine hits every library.
        for _ in 0..runs {
            if want(Perpcore::NAME) {
                rows[0].run::<Perpcore>(&w);
            }
            if want(Lobster::NAME) {
                rows[1].run::<Lobster>(&w);
            }
            if want(OrderbookRs::NAME) {
                rows[2].run::<OrderbookRs>(&w);
            }
            if want(PerpcoreResubmit::NAME) {
                rows[3].run::<PerpcoreResubmit>(&w);
            }
        }
        if !rows.iter().all(|r| !r.plain.is_empty()) {
            for r in rows.iter().filter(|r| !r.plain.is_empty()) {
                println!("{}: {} ops/s median", r.name, si(median(r.plain.clone())));
            }
            return;
        }
        let ours = median(rows[0].plain.clone());
        println!(
            "## Book only, identical stream ({} runs of {} ops; amend = each library's own amend: perpcore Book::requeue, orderbook-rs update_order; lobster has none: cancel + re-add)",
            runs, ops
        );
        println!(
            "| library | ops/s median | ops/s median (per-op clock) | p50 ns | p90 ns | p99 ns | p99.9 ns | max ns | perpcore-book ÷ this | same final book |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for r in &rows {
            let m = median(r.plain.clone());
            let p = pcts(&r.hist);
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {:.2}× | {} |",
                r.name,
                si(m),
                si(median(r.timed.clone())),
                p[0],
                p[1],
                p[2],
                p[3],
                p[4],
                ours / m,
                if r.ok { "yes" } else { "NO" }
            );
        }
        println!();
        let lob = median(rows[1].plain.clone());
        println!("## Targets");
        if let Some((med, p)) = engine_median {
            println!(
                "- engine ≥ 5 M cmds/s with risk on: {} ({} cmds/s, {:.0}% of target)",
                if med >= 5e6 { "MET" } else { "MISSED" },
                si(med),
                100.0 * med / 5e6
            );
            println!(
                "- engine p99 < 2 µs: {} (p99 = {} ns)",
                if p[2] < 2_000 { "MET" } else { "MISSED" },
                p[2]
            );
        }
        println!(
            "- book-only ≥ 3× lobster: {} ({:.2}×; with perpcore's amend done as cancel + submit too: {:.2}×)",
            if ours >= 3.0 * lob { "MET" } else { "MISSED" },
            ours / lob,
            median(rows[3].plain.clone()) / lob
        );
    }
}
