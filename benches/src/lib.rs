//! perpcore-benches: the workload and measuring helpers behind `benches/exchange_mix.rs`.
//!
//! The workload is the exchange-core published order mix for one instrument: 82% amend
//! (move a resting order to a new price), 9% GTC limit place, 6% cancel, 3% IOC, over
//! 1,000 accounts with about 1,000 resting orders kept steady. It is generated from a
//! fixed seed before anything is timed, by driving a reference `perpcore_book::Book`, so
//! every cancel and amend names an order that is really resting at that point; every
//! library under test then replays exactly the same operations.
//!
//! Layout of the flow (no self-trade can occur, so the libraries without self-trade
//! prevention and the engine with it see the same matches):
//! - bids are placed by accounts 1..=500 at `mid - 1 - off`, asks by accounts
//!   501..=1000 at `mid + 1 + off`, `off` uniform in `0..BAND_TICKS`: resting orders never
//!   cross each other, and an amend moves an order to another price on its own side;
//! - an IOC is placed by an account of its side's half and crosses up to 3 ticks past
//!   the opposite best; its size follows the book size (a larger IOC when the book holds
//!   more than the target) so that the book stays near [`Params::target_orders`].
#![allow(clippy::float_arithmetic)] // reporting only: rates and percentages

use perpcore_book::{Book, MatchResult, Taker, Tif};
use perpcore_types::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;

/// One book operation, in the vocabulary every library can express.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A new limit order; `ioc` false = GTC.
    Place {
        id: u64,
        account: u64,
        side: Side,
        price: i64,
        qty: i64,
        ioc: bool,
    },
    /// Move resting order `id` to `new_price` (loses priority). `side` and `qty` (its
    /// open quantity at this point) are carried for libraries that need them to re-add.
    Amend {
        id: u64,
        account: u64,
        side: Side,
        new_price: i64,
        qty: i64,
    },
    Cancel {
        id: u64,
        account: u64,
    },
}

/// Workload parameters.
#[derive(Clone, Debug)]
pub struct Params {
    pub seed: u64,
    pub accounts: u64,
    pub target_orders: u64,
    /// Mid price in ticks.
    pub mid: i64,
    /// Resting orders lie within this many ticks of the mid on their side.
    pub band_ticks: i64,
    pub warmup: usize,
    pub timed: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            seed: 0x5EED_2024,
            accounts: 1_000,
            target_orders: 1_000,
            mid: 600_000, // 60,000.0 at a 0.1 tick
            band_ticks: 50,
            warmup: 200_000,
            timed: 2_000_000,
        }
    }
}

/// What the generator saw while producing the timed part.
#[derive(Clone, Debug, Default)]
pub struct FlowStats {
    pub amends: u64,
    pub places: u64,
    pub cancels: u64,
    pub iocs: u64,
    /// Resting orders after the prefill, and min / mean / max over the timed part.
    pub orders_after_prefill: u64,
    pub orders_min: u64,
    pub orders_mean: f64,
    pub orders_max: u64,
    /// Fills produced by the timed part (IOC fills).
    pub fills: u64,
    pub ioc_filled_lots: i64,
}

/// The pre-generated workload.
pub struct Workload {
    pub params: Params,
    /// Builds the initial book (about `target_orders` GTCs). Untimed.
    pub prefill: Vec<Op>,
    /// Untimed warm-up, same mix as `timed`.
    pub warmup: Vec<Op>,
    pub timed: Vec<Op>,
    pub stats: FlowStats,
    /// Reference state after the whole flow: (orders, best bid, best ask, bid lots,
    /// ask lots).
    pub final_state: BookState,
}

/// A compact summary of a book, to check that every library ended in the same state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BookState {
    pub orders: Option<u64>,
    pub best_bid: Option<i64>,
    pub best_ask: Option<i64>,
    pub bid_lots: Option<i64>,
    pub ask_lots: Option<i64>,
}

impl BookState {
    /// Fields both sides know agree (a library that cannot report one leaves it `None`).
    pub fn agrees_with(&self, o: &BookState) -> bool {
        fn eq<T: PartialEq>(a: Option<T>, b: Option<T>) -> bool {
            match (a, b) {
                (Some(x), Some(y)) => x == y,
                _ => true,
            }
        }
        eq(self.orders, o.orders)
            && self.best_bid == o.best_bid
            && self.best_ask == o.best_ask
            && eq(self.bid_lots, o.bid_lots)
            && eq(self.ask_lots, o.ask_lots)
    }
}

/// Summary of a perpcore book.
pub fn perpcore_state(b: &Book) -> BookState {
    let lots = |s: Side| b.depth(s, usize::MAX).iter().map(|(_, q)| q.0).sum::<i64>();
    BookState {
        orders: Some(b.orders_count()),
        best_bid: b.best_bid().map(|p| p.0),
        best_ask: b.best_ask().map(|p| p.0),
        bid_lots: Some(lots(Side::Buy)),
        ask_lots: Some(lots(Side::Sell)),
    }
}

/// The taker for a placement (perpcore vocabulary).
#[inline]
pub fn taker_of(id: u64, account: u64, side: Side, price: i64, qty: i64, ioc: bool) -> Taker {
    Taker {
        order_id: OrderId(id),
        account: AccountId(account),
        side,
        limit: PriceTicks(price),
        qty: QtyLots(qty),
        tif: if ioc { Tif::Ioc } else { Tif::Gtc },
        stp: StpMode::ExpireTaker,
        reduce_only: false,
    }
}

/// As [`perpcore_apply`], but an amend uses the book's own amend, `Book::requeue` (the
/// order moves to the back of its new level in place), falling back to cancel + submit
/// if the new price would cross (it never does in this flow: amends stay on their side).
#[inline]
pub fn perpcore_apply_native(book: &mut Book, op: &Op, mr: &mut MatchResult) {
    match *op {
        Op::Amend {
            id, new_price, qty, ..
        } => match book.requeue(OrderId(id), PriceTicks(new_price), QtyLots(qty)) {
            Ok(_) => {}
            Err(perpcore_book::BookError::WouldCross(_)) => perpcore_apply(book, op, mr),
            Err(e) => panic!("amend {id}: {e}"),
        },
        _ => perpcore_apply(book, op, mr),
    }
}

/// Applies one op to a perpcore book (amend = cancel + submit). Panics if the op does
/// not fit the book (the flow is generated against the same book, so it always fits).
#[inline]
pub fn perpcore_apply(book: &mut Book, op: &Op, mr: &mut MatchResult) {
    match *op {
        Op::Place {
            id,
            account,
            side,
            price,
            qty,
            ioc,
        } => {
            let r = book.submit(&taker_of(id, account, side, price, qty, ioc), mr);
            debug_assert!(r.is_ok());
        }
        Op::Amend {
            id,
            account,
            side,
            new_price,
            ..
        } => {
            let old = book.cancel(OrderId(id)).expect("amend: order not resting");
            let r = book.submit(
                &taker_of(id, account, side, new_price, old.open_qty.0, false),
                mr,
            );
            debug_assert!(r.is_ok());
        }
        Op::Cancel { id, .. } => {
            let r = book.cancel(OrderId(id));
            debug_assert!(r.is_some());
        }
    }
}

struct Gen {
    p: Params,
    rng: ChaCha8Rng,
    book: Book,
    mr: MatchResult,
    next_id: u64,
    /// Live order ids (for uniform picks) and each one's slot in `live` + account.
    live: Vec<u64>,
    pos: HashMap<u64, (usize, u64)>,
}

impl Gen {
    fn add_live(&mut self, id: u64, account: u64) {
        self.pos.insert(id, (self.live.len(), account));
        self.live.push(id);
    }

    fn remove_live(&mut self, id: u64) {
        let (i, _) = self.pos.remove(&id).expect("remove_live: unknown id");
        self.live.swap_remove(i);
        if let Some(&moved) = self.live.get(i) {
            self.pos.get_mut(&moved).expect("moved id").0 = i;
        }
    }

    fn side_account(&mut self, side: Side) -> u64 {
        let half = self.p.accounts / 2;
        match side {
            Side::Buy => self.rng.gen_range(1..=half),
            Side::Sell => self.rng.gen_range(half + 1..=self.p.accounts),
        }
    }

    fn passive_price(&mut self, side: Side) -> i64 {
        let off = self.rng.gen_range(0..self.p.band_ticks);
        match side {
            Side::Buy => self.p.mid - 1 - off,
            Side::Sell => self.p.mid + 1 + off,
        }
    }

    fn side(&mut self) -> Side {
        if self.rng.gen_bool(0.5) {
            Side::Buy
        } else {
            Side::Sell
        }
    }

    /// Applies `op` to the reference book and keeps the live set in step.
    fn apply(&mut self, op: Op, stats: Option<&mut FlowStats>) {
        perpcore_apply(&mut self.book, &op, &mut self.mr);
        match op {
            Op::Place {
                id, account, ioc, ..
            } => {
                let mut done = Vec::new();
                for f in &self.mr.fills {
                    if f.maker_done {
                        done.push(f.maker_order.0);
                    }
                }
                for d in done {
                    self.remove_live(d);
                }
                if let Some(s) = stats {
                    s.fills += self.mr.fills.len() as u64;
                    s.ioc_filled_lots += self.mr.filled_qty().0;
                }
                if !ioc && self.book.get(OrderId(id)).is_some() {
                    self.add_live(id, account);
                }
            }
            Op::Amend { .. } => {
                assert!(self.mr.fills.is_empty(), "an amend crossed the book");
            }
            Op::Cancel { id, .. } => self.remove_live(id),
        }
    }

    fn place_gtc(&mut self) -> Op {
        let side = self.side();
        let account = self.side_account(side);
        let price = self.passive_price(side);
        let qty = self.rng.gen_range(1..=10);
        let id = self.next_id;
        self.next_id += 1;
        Op::Place {
            id,
            account,
            side,
            price,
            qty,
            ioc: false,
        }
    }

    fn next_op(&mut self, stats: Option<&mut FlowStats>) -> Op {
        let r = self.rng.gen_range(0..100u32);
        let op = if self.live.is_empty() || (82..91).contains(&r) {
            if let Some(s) = stats {
                s.places += 1;
            }
            self.place_gtc()
        } else if r < 82 {
            if let Some(s) = stats {
                s.amends += 1;
            }
            let id = self.live[self.rng.gen_range(0..self.live.len())];
            let account = self.pos[&id].1;
            let o = *self.book.get(OrderId(id)).expect("live order");
            let mut new_price = o.price.0;
            while new_price == o.price.0 {
                new_price = self.passive_price(o.side);
            }
            Op::Amend {
                id,
                account,
                side: o.side,
                new_price,
                qty: o.open_qty.0,
            }
        } else if r < 97 {
            if let Some(s) = stats {
                s.cancels += 1;
            }
            let id = self.live[self.rng.gen_range(0..self.live.len())];
            Op::Cancel {
                id,
                account: self.pos[&id].1,
            }
        } else {
            if let Some(s) = stats {
                s.iocs += 1;
            }
            let side = self.side();
            let account = self.side_account(side);
            let opp = match side {
                Side::Buy => self.book.best_ask(),
                Side::Sell => self.book.best_bid(),
            };
            let deep = self.rng.gen_range(0..=3);
            let price = match (side, opp) {
                (Side::Buy, Some(a)) => a.0 + deep,
                (Side::Sell, Some(b)) => b.0 - deep,
                (Side::Buy, None) => self.p.mid + 1,
                (Side::Sell, None) => self.p.mid - 1,
            };
            // Size follows the book: about one order's worth at the target, more when
            // the book is above it, less below.
            let excess = self.book.orders_count() as i64 - self.p.target_orders as i64;
            let base = self.rng.gen_range(1..=10i64);
            let qty = if excess > 0 {
                base * (1 + excess / 8).min(20)
            } else {
                (base / 2).max(1)
            };
            let id = self.next_id;
            self.next_id += 1;
            Op::Place {
                id,
                account,
                side,
                price,
                qty,
                ioc: true,
            }
        };
        op
    }
}

/// Generates the whole workload (deterministic for a seed).
pub fn generate(p: Params) -> Workload {
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(p.seed),
        book: Book::new(),
        mr: MatchResult::new(),
        next_id: 1,
        live: Vec::new(),
        pos: HashMap::new(),
        p: p.clone(),
    };
    let mut prefill = Vec::with_capacity(p.target_orders as usize);
    while g.book.orders_count() < p.target_orders {
        let op = g.place_gtc();
        g.apply(op, None);
        prefill.push(op);
    }
    let mut warmup = Vec::with_capacity(p.warmup);
    for _ in 0..p.warmup {
        let op = g.next_op(None);
        g.apply(op, None);
        warmup.push(op);
    }
    let mut stats = FlowStats {
        orders_after_prefill: prefill.len() as u64,
        orders_min: u64::MAX,
        ..FlowStats::default()
    };
    let mut timed = Vec::with_capacity(p.timed);
    let mut sum: u128 = 0;
    for _ in 0..p.timed {
        let op = g.next_op(Some(&mut stats));
        g.apply(op, Some(&mut stats));
        timed.push(op);
        let n = g.book.orders_count();
        stats.orders_min = stats.orders_min.min(n);
        stats.orders_max = stats.orders_max.max(n);
        sum += n as u128;
    }
    stats.orders_mean = sum as f64 / p.timed.max(1) as f64;
    g.book.check_invariants();
    Workload {
        final_state: perpcore_state(&g.book),
        params: p,
        prefill,
        warmup,
        timed,
        stats,
    }
}

// ----------------------------------------------------------------------------------
// Engine side.

pub const INSTRUMENT: InstrumentId = InstrumentId(0);
pub const USDT: AssetId = AssetId(0);

/// One linear BTCUSDT-like perpetual (`perpcore_testkit::fixtures::btcusdt`): tick 0.1,
/// lot 0.001, three brackets, maker 2 bp, taker 5 bp, 5% price band.
pub fn bench_config() -> Config {
    Config {
        assets: vec![
            AssetSpec {
                collateral: None,
                id: USDT,
                symbol: "USDT".into(),
            },
            AssetSpec {
                collateral: None,
                id: AssetId(1),
                symbol: "BTC".into(),
            },
        ],
        // Instrument 0 on assets 1 (BTC) / 0 (USDT): INSTRUMENT and USDT above.
        instruments: vec![perpcore_testkit::fixtures::btcusdt()],
    }
}

/// The engine command for a book op (limit orders on [`INSTRUMENT`]; an amend changes
/// the price only).
pub fn command_of(op: &Op) -> Command {
    match *op {
        Op::Place {
            id,
            account,
            side,
            price,
            qty,
            ioc,
        } => Command::PlaceOrder(NewOrder {
            account: AccountId(account),
            instrument: INSTRUMENT,
            order_id: OrderId(id),
            side,
            order_type: OrderType::Limit,
            tif: if ioc {
                TimeInForce::Ioc
            } else {
                TimeInForce::Gtc
            },
            price: PriceTicks(price),
            qty: QtyLots(qty),
            reduce_only: false,
            close_position: false,
            stp: StpMode::ExpireTaker,
        }),
        Op::Amend {
            id,
            account,
            new_price,
            ..
        } => Command::AmendOrder {
            account: AccountId(account),
            order_id: OrderId(id),
            price: Some(PriceTicks(new_price)),
            qty: None,
        },
        Op::Cancel { id, account } => Command::CancelOrder {
            account: AccountId(account),
            order_id: OrderId(id),
        },
    }
}

/// The engine's input for a workload: setup (accounts created and funded with
/// 10,000,000 USDT each, the mark price set at the mid; leverage stays at the default),
/// then the prefill and warm-up, and separately the timed part. Sequence numbers and
/// timestamps increase across both.
pub struct EngineStream {
    pub untimed: Vec<Envelope>,
    pub timed: Vec<Envelope>,
}

pub fn engine_stream(w: &Workload) -> EngineStream {
    let mut seq = 0u64;
    let mut env = |command: Command| {
        seq += 1;
        Envelope {
            seq,
            ts_ns: 1_700_000_000_000_000_000 + seq * 1_000,
            command,
        }
    };
    let mut untimed =
        Vec::with_capacity(3 * w.params.accounts as usize + 1 + w.prefill.len() + w.warmup.len());
    for a in 1..=w.params.accounts {
        untimed.push(env(Command::CreateAccount {
            account: AccountId(a),
            parent: None,
        }));
        untimed.push(env(Command::Deposit {
            account: AccountId(a),
            asset: USDT,
            amount: Money::from_int(10_000_000),
        }));
    }
    let spec = &bench_config().instruments[0];
    untimed.push(env(Command::SetMarkPrice {
        instrument: INSTRUMENT,
        price: spec.price_of(PriceTicks(w.params.mid)),
    }));
    for op in w.prefill.iter().chain(&w.warmup) {
        untimed.push(env(command_of(op)));
    }
    let timed = w.timed.iter().map(|op| env(command_of(op))).collect();
    EngineStream { untimed, timed }
}

/// An engine fed one command at a time with increasing sequence numbers, as the
/// per-command benchmarks drive it.
pub struct Driver {
    pub e: perpcore_engine::Engine,
    pub seq: u64,
    /// The events of the last command.
    pub out: Vec<Event>,
}

impl Driver {
    pub fn new(config: Config) -> Driver {
        Driver {
            e: perpcore_engine::Engine::new(config),
            seq: 0,
            out: Vec::new(),
        }
    }

    /// Applies `command` at `ts_ns`; the nanoseconds `Engine::apply` took (at least 1).
    pub fn apply(&mut self, ts_ns: u64, command: Command) -> u64 {
        self.seq += 1;
        self.out.clear();
        let env = Envelope {
            seq: self.seq,
            ts_ns,
            command,
        };
        let t = std::time::Instant::now();
        self.e.apply(&env, &mut self.out);
        u64::try_from(t.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// The reject reason of the last command, if it was refused.
    pub fn refused(&self) -> Option<RejectReason> {
        match self.out.first() {
            Some(Event::Rejected { reason, .. }) => Some(*reason),
            _ => None,
        }
    }
}

// ----------------------------------------------------------------------------------
// Reporting helpers.

/// The CPU model from /proc/cpuinfo and the number of CPUs available to this process.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{model}, nproc = {n}")
}

/// Median of a non-empty list.
pub fn median(mut v: Vec<f64>) -> f64 {
    assert!(!v.is_empty(), "median of nothing");
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `12345678.9` → `"12.35 M"`.
pub fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_workload_is_deterministic_and_replays() {
        let p = Params {
            warmup: 2_000,
            timed: 20_000,
            ..Params::default()
        };
        let a = generate(p.clone());
        let b = generate(p);
        assert_eq!(a.timed, b.timed);
        let mut book = Book::new();
        let mut mr = MatchResult::new();
        for op in a.prefill.iter().chain(&a.warmup).chain(&a.timed) {
            perpcore_apply(&mut book, op, &mut mr);
        }
        assert_eq!(perpcore_state(&book), a.final_state);
        let s = &a.stats;
        let n = (s.amends + s.places + s.cancels + s.iocs) as f64;
        assert!((s.amends as f64 / n - 0.82).abs() < 0.02);
        assert!(s.orders_mean > 800.0 && s.orders_mean < 1_200.0, "{s:?}");
    }
}
