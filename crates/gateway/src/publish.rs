//! The bridge's side of the websocket streams: what a durable command changed, taken
//! from the replica right after the command is applied to it, and handed to the stream
//! hub ([`crate::stream`]) without ever blocking the bridge.
//!
//! Per command (`before` runs before the replica applies it, `after` right after):
//!
//! - **price levels** whose open quantity may have changed: the levels of resting orders
//!   the events cancel, amend or reduce (their price read from the book *before* the
//!   command), the makers' levels of its trades (the trade price), and the levels of
//!   orders it rested or amended (read *after*). Each is reported with its quantity after
//!   the command (`Book::level_qty`, zero when empty): a depth diff holds absolute
//!   quantities, so a level reported unchanged is harmless and a level missed would be a
//!   bug (`tests::levels_rebuild_the_book` replays a seeded order flow and checks the
//!   rebuilt books against the engine's after every command).
//! - **top of book** of every instrument whose best bid or ask (price or quantity)
//!   differs from the last one sent (`bookTicker`);
//! - **aggregate trades**: consecutive fills of one taker order at one price;
//! - **market data** (mark, index, funding rate, next funding time) of every instrument
//!   whose values differ from the last ones sent (the hub repeats them every 1 s / 3 s);
//! - **user data** for accounts that have a user stream open (and only for those):
//!   `ORDER_TRADE_UPDATE` per order event, one `ACCOUNT_UPDATE` per account whose
//!   balances or positions the command changed, and `MARGIN_CALL` (`user_data.rs`, with
//!   the margin call rule, `MARGIN_CALL_RATIO`).
//!
//! Updates are collected per output group of the sequencer (one fsync round) and sent as
//! one [`Batch`] with `try_send`: a full hub queue drops the batch and marks the next one
//! `lost_before`, and the hub then closes every stream connection (their clients resync)
//! rather than let a depth chain or a user stream skip an event silently.
//!
//! Trade ids: the engine has none, so the gateway numbers a command's trades
//! `seq × 1,000,000 + k` (k = 0, 1, … in event order; see [`trade_id`]): unique and
//! stable across restarts as long as no command fills a million trades.
//!
//! Must never: block (the only send is `try_send`), read the sequencer's engine, or
//! change the view.

use crate::stream::Shared;
use crate::user_data::UserData;
use crate::view::View;
use perpcore_types::*;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Trades of one command are numbered `seq × TRADE_ID_STRIDE + k`.
pub const TRADE_ID_STRIDE: u64 = 1_000_000;

/// The id of the `k`-th trade (0-based, in event order) of the command at `seq`.
pub fn trade_id(seq: u64, k: u64) -> u64 {
    seq.saturating_mul(TRADE_ID_STRIDE).saturating_add(k)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelChange {
    pub instrument: InstrumentId,
    pub side: Side,
    pub price: PriceTicks,
    /// The level's open quantity after the command (zero: the level is gone).
    pub qty: QtyLots,
}

/// Best bid and ask (price, quantity) of one book.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Top {
    pub bid: Option<(PriceTicks, QtyLots)>,
    pub ask: Option<(PriceTicks, QtyLots)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AggTrade {
    pub instrument: InstrumentId,
    pub price: Price,
    pub qty: Qty,
    pub first_id: u64,
    pub last_id: u64,
    /// Binance `m`: the buyer was the maker (the taker sold).
    pub buyer_maker: bool,
}

/// An instrument's market data as the engine holds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MarkState {
    pub mark: Option<Price>,
    pub index: Option<Price>,
    pub funding_rate: Option<Rate>,
    /// 0: none announced.
    pub next_funding_ms: u64,
}

/// What one durable command changed, for the streams.
#[derive(Clone, Debug, Default)]
pub struct Update {
    pub seq: u64,
    /// The command's sequenced timestamp (ms): Binance's transaction time `T`.
    pub ts_ms: u64,
    pub levels: Vec<LevelChange>,
    pub tops: Vec<(InstrumentId, Top)>,
    pub trades: Vec<AggTrade>,
    pub marks: Vec<(InstrumentId, MarkState)>,
    /// Private frames (JSON text), in order, by account.
    pub user: Vec<(AccountId, String)>,
}

/// The updates of one output group.
#[derive(Debug, Default)]
pub struct Batch {
    /// Earlier updates were dropped (the hub's queue was full).
    pub lost_before: bool,
    pub updates: Vec<Update>,
}

/// Lives on the bridge thread.
pub struct Publisher {
    tx: tokio::sync::mpsc::Sender<Batch>,
    shared: Arc<Shared>,
    watched_generation: u64,
    /// Whether any account is watched (`user` holds which).
    any_watched: bool,
    tops: Vec<Top>,
    marks: Vec<MarkState>,
    pending: Vec<Update>,
    lost: bool,
    dirty: Vec<(InstrumentId, Side, PriceTicks)>,
    /// The sequenced time (ms) of the last scan of every instrument's market data.
    marks_scanned_ms: u64,
    user: UserData,
}

fn top_of(view: &View, i: InstrumentId) -> Top {
    let Some(book) = view.engine.book(i) else {
        return Top::default();
    };
    let level = |side: Side, p: Option<PriceTicks>| p.map(|p| (p, book.level_qty(side, p)));
    Top {
        bid: level(Side::Buy, book.best_bid()),
        ask: level(Side::Sell, book.best_ask()),
    }
}

fn mark_of(view: &View, i: InstrumentId) -> MarkState {
    let m = view.engine.market(i);
    MarkState {
        mark: view.engine.mark(i),
        index: m.and_then(|m| m.index),
        funding_rate: m.and_then(|m| m.funding_rate),
        next_funding_ms: m.map_or(0, |m| m.next_funding_ns / 1_000_000),
    }
}

fn instruments(view: &View) -> impl Iterator<Item = InstrumentId> {
    (0..view.engine.config().instruments.len()).map(|i| InstrumentId(i as u32))
}

impl Publisher {
    /// A publisher starting from `view`'s state; the hub gets every instrument's market
    /// data at once (the first batch), so periodic mark price frames start right away.
    pub fn new(
        tx: tokio::sync::mpsc::Sender<Batch>,
        shared: Arc<Shared>,
        view: &View,
    ) -> Publisher {
        let tops = instruments(view).map(|i| top_of(view, i)).collect();
        let marks: Vec<MarkState> = instruments(view).map(|i| mark_of(view, i)).collect();
        let mut p = Publisher {
            tx,
            shared,
            watched_generation: u64::MAX,
            any_watched: false,
            tops,
            marks: marks.clone(),
            pending: Vec::new(),
            lost: false,
            dirty: Vec::new(),
            marks_scanned_ms: view.last_ts_ns / 1_000_000,
            user: UserData::default(),
        };
        p.pending.push(Update {
            seq: view.last_seq,
            ts_ms: view.last_ts_ns / 1_000_000,
            marks: instruments(view).zip(marks).collect(),
            ..Update::default()
        });
        p.flush();
        p
    }

    fn refresh_watched(&mut self) {
        let generation = self.shared.watched_generation.load(Ordering::Acquire);
        if generation != self.watched_generation {
            let watched: BTreeSet<AccountId> = self
                .shared
                .watched
                .read()
                .map(|w| w.keys().copied().collect())
                .unwrap_or_default();
            self.any_watched = !watched.is_empty();
            self.user.set_watched(watched);
            self.watched_generation = generation;
        }
    }

    /// The level of the resting order `id`, if it rests.
    fn mark_resting(&mut self, view: &View, id: OrderId) {
        if let Some(meta) = view.engine.order(id) {
            if let Some(o) = view.engine.book(meta.instrument).and_then(|b| b.get(id)) {
                self.dirty.push((meta.instrument, o.side, o.price));
            }
        }
    }

    /// Before the replica applies the command whose committed events are `events`.
    pub fn before(&mut self, view: &View, events: &[Event]) {
        self.dirty.clear();
        self.refresh_watched();
        self.user.before(view, events);
        for e in events {
            match e {
                Event::OrderCanceled { order_id, .. }
                | Event::OrderAmended { order_id, .. }
                | Event::OrderReduced { order_id, .. } => self.mark_resting(view, *order_id),
                Event::Trade {
                    instrument,
                    price,
                    taker_side,
                    ..
                } => {
                    let spec = &view.engine.config().instruments[instrument.0 as usize];
                    let ticks = PriceTicks(price.raw() / spec.tick_size.raw());
                    self.dirty.push((*instrument, taker_side.opposite(), ticks));
                }
                _ => {}
            }
        }
    }

    /// Right after the replica applied the command (`events` are its events).
    pub fn after(&mut self, view: &View, seq: u64, ts_ns: u64, events: &[Event]) {
        for e in events {
            if let Event::OrderRested { order_id, .. } | Event::OrderAmended { order_id, .. } = e {
                self.mark_resting(view, *order_id);
            }
        }
        self.dirty
            .sort_unstable_by_key(|(i, s, p)| (*i, *s as u8, *p));
        self.dirty.dedup();
        let levels = self
            .dirty
            .iter()
            .map(|&(instrument, side, price)| LevelChange {
                instrument,
                side,
                price,
                qty: view
                    .engine
                    .book(instrument)
                    .map_or(QtyLots::ZERO, |b| b.level_qty(side, price)),
            })
            .collect();
        // A best bid or ask can only move where a level changed.
        let mut tops = Vec::new();
        let mut last = None;
        for &(i, _, _) in &self.dirty {
            if last == Some(i) {
                continue;
            }
            last = Some(i);
            let t = top_of(view, i);
            if t != self.tops[i.0 as usize] {
                self.tops[i.0 as usize] = t;
                tops.push((i, t));
            }
        }
        // Market data: the instruments a price event names at once, and every instrument
        // once per 100 ms of sequenced time (a derived funding rate moves with its premium
        // samples, without an event).
        let ts_ms = ts_ns / 1_000_000;
        let mut marks = Vec::new();
        let mut check = |p: &mut Publisher, i: InstrumentId| {
            let m = mark_of(view, i);
            if m != p.marks[i.0 as usize] {
                p.marks[i.0 as usize] = m;
                marks.push((i, m));
            }
        };
        if ts_ms >= self.marks_scanned_ms.saturating_add(100) {
            self.marks_scanned_ms = ts_ms;
            for i in instruments(view) {
                check(self, i);
            }
        } else {
            for e in events {
                match e {
                    Event::MarkPriceSet { instrument, .. }
                    | Event::IndexPriceSet { instrument, .. }
                    | Event::FundingRateSet { instrument, .. }
                    | Event::FundingSettled { instrument, .. } => check(self, *instrument),
                    _ => {}
                }
            }
        }
        let user = if self.any_watched {
            self.user.frames(view, seq, ts_ms, events)
        } else {
            Vec::new()
        };
        self.pending.push(Update {
            seq,
            ts_ms,
            levels,
            tops,
            trades: agg_trades(seq, events),
            marks,
            user,
        });
    }

    /// Send what the output group produced (never blocks; a full queue drops it and
    /// flags the next batch).
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = Batch {
            lost_before: self.lost,
            updates: std::mem::take(&mut self.pending),
        };
        match self.tx.try_send(batch) {
            Ok(()) => self.lost = false,
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                self.lost = true;
                self.shared.batches_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// A price with 8 decimals, as Binance's mark price stream writes them.
pub fn fixed8(p: Price) -> String {
    format_fixed(p.raw() as i128, Price::DECIMALS, 8)
}

/// Consecutive fills of one taker order at one price, with their trade ids.
fn agg_trades(seq: u64, events: &[Event]) -> Vec<AggTrade> {
    let mut out: Vec<AggTrade> = Vec::new();
    let mut last_taker: Option<OrderId> = None;
    let mut k = 0u64;
    for e in events {
        if let Event::Trade {
            instrument,
            price,
            qty,
            taker_side,
            taker_order,
            ..
        } = e
        {
            let id = trade_id(seq, k);
            k += 1;
            match out.last_mut() {
                Some(a)
                    if last_taker == Some(*taker_order)
                        && a.instrument == *instrument
                        && a.price == *price
                        && a.last_id + 1 == id =>
                {
                    a.qty += *qty;
                    a.last_id = id;
                }
                _ => out.push(AggTrade {
                    instrument: *instrument,
                    price: *price,
                    qty: *qty,
                    first_id: id,
                    last_id: id,
                    buyer_maker: *taker_side == Side::Sell,
                }),
            }
            last_taker = Some(*taker_order);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{Shared, StreamOptions};
    use perpcore_engine::Engine;
    use serde_json::Value;
    use std::collections::BTreeMap;

    /// A deterministic 64-bit LCG (Knuth's MMIX constants): the flow below is the same on
    /// every run.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    struct Rig {
        seq_engine: Engine,
        view: View,
        publisher: Publisher,
        rx: tokio::sync::mpsc::Receiver<Batch>,
        seq: u64,
        scratch: Vec<Event>,
        /// The books as the depth diffs rebuild them: (instrument, side) → price → qty.
        shadow: BTreeMap<(u32, bool), BTreeMap<PriceTicks, QtyLots>>,
        /// The last published top of book and market data per instrument.
        tops: BTreeMap<u32, Top>,
        marks: BTreeMap<u32, MarkState>,
        updates: Vec<Update>,
    }

    impl Rig {
        fn new(watch: &[u64]) -> Rig {
            let config = perpcore_config::default_config();
            let shared = Arc::new(Shared::new(&StreamOptions::default()));
            if let Ok(mut w) = shared.watched.write() {
                for a in watch {
                    w.insert(AccountId(*a), 1);
                }
            }
            shared.watched_generation.fetch_add(1, Ordering::AcqRel);
            let (tx, rx) = tokio::sync::mpsc::channel(1 << 16);
            let view = View::new(Engine::new(config.clone()), 0, 0);
            let publisher = Publisher::new(tx, shared, &view);
            Rig {
                seq_engine: Engine::new(config),
                view,
                publisher,
                rx,
                seq: 0,
                scratch: Vec::new(),
                shadow: BTreeMap::new(),
                tops: BTreeMap::new(),
                marks: BTreeMap::new(),
                updates: Vec::new(),
            }
        }

        /// One command through "sequencer" engine, publisher and replica, as the bridge
        /// does it; the depth diffs applied to the shadow books, which must then equal
        /// the engine's books.
        fn run(&mut self, cmd: Command) -> Vec<Event> {
            self.seq += 1;
            let ts = 1_700_000_000_000_000_000 + self.seq * 1_000_000;
            let mut events = Vec::new();
            self.seq_engine
                .apply_command(self.seq, ts, &cmd, &mut events);
            self.publisher.before(&self.view, &events);
            self.view
                .apply(self.seq, ts, &cmd, &events, &mut self.scratch);
            self.publisher.after(&self.view, self.seq, ts, &events);
            self.publisher.flush();
            while let Ok(batch) = self.rx.try_recv() {
                assert!(!batch.lost_before);
                for u in batch.updates {
                    for l in &u.levels {
                        let side = self
                            .shadow
                            .entry((l.instrument.0, l.side == Side::Buy))
                            .or_default();
                        if l.qty.0 == 0 {
                            side.remove(&l.price);
                        } else {
                            side.insert(l.price, l.qty);
                        }
                    }
                    for (i, t) in &u.tops {
                        self.tops.insert(i.0, *t);
                    }
                    for (i, m) in &u.marks {
                        self.marks.insert(i.0, *m);
                    }
                    self.updates.push(u);
                }
            }
            for i in 0..self.view.engine.config().instruments.len() {
                let book = self.view.engine.book(InstrumentId(i as u32)).unwrap();
                for (side, bid) in [(Side::Buy, true), (Side::Sell, false)] {
                    let engine: Vec<_> = book.levels(side).collect();
                    let mut shadow: Vec<_> = self
                        .shadow
                        .get(&(i as u32, bid))
                        .map(|m| m.iter().map(|(p, q)| (*p, *q)).collect())
                        .unwrap_or_default();
                    if bid {
                        shadow.reverse();
                    }
                    assert_eq!(
                        shadow, engine,
                        "instrument {i} {side:?} after seq {}",
                        self.seq
                    );
                }
                // The last bookTicker and market data published are the engine's.
                let id = InstrumentId(i as u32);
                let top = self.tops.get(&(i as u32)).copied().unwrap_or_default();
                assert_eq!(
                    top,
                    top_of(&self.view, id),
                    "top of {i} after seq {}",
                    self.seq
                );
                let mark = self.marks.get(&(i as u32)).copied().unwrap_or_default();
                assert_eq!(
                    mark,
                    mark_of(&self.view, id),
                    "market of {i} after seq {}",
                    self.seq
                );
            }
            events
        }
    }

    fn order(
        id: u64,
        account: u64,
        side: Side,
        ticks: i64,
        lots: i64,
        tif: TimeInForce,
    ) -> Command {
        Command::PlaceOrder(NewOrder {
            account: AccountId(account),
            instrument: InstrumentId(0),
            order_id: OrderId(id),
            side,
            order_type: OrderType::Limit,
            tif,
            price: PriceTicks(ticks),
            qty: QtyLots(lots),
            reduce_only: false,
            close_position: false,
            stp: StpMode::ExpireTaker,
        })
    }

    fn setup(rig: &mut Rig, accounts: u64) {
        for a in 1..=accounts {
            rig.run(Command::CreateAccount {
                account: AccountId(a),
                parent: None,
            });
            rig.run(Command::Deposit {
                account: AccountId(a),
                asset: AssetId(0),
                amount: Money::parse("1000000").unwrap(),
            });
        }
        rig.run(Command::SetMarkPrice {
            instrument: InstrumentId(0),
            price: Price::parse("30000").unwrap(),
        });
    }

    /// A seeded flow of limit (GTC, IOC, FOK, post-only) and market orders from four
    /// accounts around a 30000 mark (BTCUSDT: tick 0.1, so 300,000 ticks; lots of 0.001),
    /// cancels, amends of price and quantity, reduce-only orders, stop-market orders on
    /// the last trade, cancel-alls and mark moves: after every one of its 3,000
    /// commands, the books rebuilt from the published level changes alone equal the
    /// engine's, level for level.
    #[test]
    fn levels_rebuild_the_book() {
        let mut rig = Rig::new(&[1]);
        setup(&mut rig, 4);
        let mut rng = Lcg(17);
        let mut next_id = 1000u64;
        let (mut canceled, mut amended, mut triggered) = (0, 0, 0);
        for _ in 0..3_000 {
            let account = 1 + rng.below(4);
            let side = if rng.below(2) == 0 {
                Side::Buy
            } else {
                Side::Sell
            };
            let ticks = 299_900 + rng.below(200) as i64;
            let lots = 1 + rng.below(20) as i64;
            next_id += 1;
            // One of the account's resting orders (or a finished one's id).
            let open: Vec<OrderId> = rig
                .view
                .engine
                .account(AccountId(account))
                .map(|a| {
                    a.legs
                        .iter()
                        .flat_map(|l| l.open_orders.iter().copied())
                        .collect()
                })
                .unwrap_or_default();
            let target = if open.is_empty() {
                OrderId(1001 + rng.below(next_id - 1000))
            } else {
                open[rng.below(open.len() as u64) as usize]
            };
            let cmd = match rng.below(20) {
                0..=7 => order(next_id, account, side, ticks, lots, TimeInForce::Gtc),
                8 => order(next_id, account, side, ticks, lots, TimeInForce::Ioc),
                9 => order(next_id, account, side, ticks, lots, TimeInForce::Fok),
                10 => order(next_id, account, side, ticks, lots, TimeInForce::PostOnly),
                11 => {
                    let Command::PlaceOrder(mut o) =
                        order(next_id, account, side, ticks, lots, TimeInForce::Ioc)
                    else {
                        unreachable!()
                    };
                    o.order_type = OrderType::Market;
                    Command::PlaceOrder(o)
                }
                12 => {
                    let Command::PlaceOrder(mut o) =
                        order(next_id, account, side, ticks, lots, TimeInForce::Gtc)
                    else {
                        unreachable!()
                    };
                    o.reduce_only = true;
                    Command::PlaceOrder(o)
                }
                13 | 14 => Command::CancelOrder {
                    account: AccountId(account),
                    order_id: target,
                },
                15 | 16 => Command::AmendOrder {
                    account: AccountId(account),
                    order_id: target,
                    price: (rng.below(2) == 0).then_some(PriceTicks(ticks)),
                    qty: Some(QtyLots(lots)),
                },
                17 => Command::PlaceConditional(ConditionalOrder {
                    account: AccountId(account),
                    instrument: InstrumentId(0),
                    order_id: OrderId(next_id),
                    side,
                    kind: ConditionalKind::StopMarket,
                    trigger: Price(
                        ticks * 10_000_000
                            + if side == Side::Buy {
                                200_000_000
                            } else {
                                -200_000_000
                            },
                    ),
                    callback_rate: Rate::ZERO,
                    working: WorkingPrice::LastTrade,
                    price: PriceTicks(0),
                    tif: TimeInForce::Gtc,
                    qty: QtyLots(lots),
                    reduce_only: false,
                    close_position: false,
                    stp: StpMode::ExpireTaker,
                }),
                18 => Command::CancelAll {
                    account: AccountId(account),
                    instrument: Some(InstrumentId(0)),
                },
                _ => Command::SetMarkPrice {
                    instrument: InstrumentId(0),
                    price: Price((29_950 + rng.below(100) as i64) * 100_000_000),
                },
            };
            for e in rig.run(cmd) {
                match e {
                    Event::OrderCanceled { .. } => canceled += 1,
                    Event::OrderAmended { .. } => amended += 1,
                    Event::ConditionalTriggered { .. } => triggered += 1,
                    _ => {}
                }
            }
        }
        // The flow exercises what moves levels besides trades.
        assert!(
            canceled > 100 && amended > 50 && triggered > 10,
            "{canceled} cancels, {amended} amends, {triggered} triggers"
        );
        let trades: u64 = rig
            .updates
            .iter()
            .map(|u| {
                u.trades
                    .iter()
                    .map(|t| t.last_id - t.first_id + 1)
                    .sum::<u64>()
            })
            .sum();
        assert!(trades > 100, "the flow trades ({trades} trades)");
        // Only the watched account got private frames, and every one is valid JSON.
        let mut frames = 0;
        for u in &rig.updates {
            for (account, text) in &u.user {
                assert_eq!(*account, AccountId(1));
                let v: Value = serde_json::from_str(text).unwrap();
                assert!(v["e"].is_string());
                frames += 1;
            }
        }
        assert!(frames > 100, "account 1 got {frames} frames");
    }

    /// A taker buy of 7 lots sweeping two asks at one price and one at the next: one
    /// aggregate per (taker, price) with consecutive trade ids (`seq × 10^6 + k`), and the
    /// running order state of the maker in its ORDER_TRADE_UPDATE frames.
    #[test]
    fn aggregate_trades_and_order_updates_by_hand() {
        let mut rig = Rig::new(&[2]);
        setup(&mut rig, 2);
        // Account 2 rests asks: 5 lots and 3 lots at 30001.0, 4 lots at 30002.0.
        rig.run(order(11, 2, Side::Sell, 300_010, 5, TimeInForce::Gtc));
        rig.run(order(12, 2, Side::Sell, 300_010, 3, TimeInForce::Gtc));
        rig.run(order(13, 2, Side::Sell, 300_020, 4, TimeInForce::Gtc));
        // Account 1 buys 10 lots at up to 30002.0: 5 + 3 at 30001.0, then 2 of 4 at 30002.0.
        let events = rig.run(order(14, 1, Side::Buy, 300_020, 10, TimeInForce::Gtc));
        let seq = rig.seq;
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, Event::Trade { .. }))
                .count(),
            3
        );
        let last = rig.updates.last().unwrap();
        let p = |s: &str| Price::parse(s).unwrap();
        let q = |s: &str| Qty::parse(s).unwrap();
        assert_eq!(
            last.trades,
            vec![
                AggTrade {
                    instrument: InstrumentId(0),
                    price: p("30001"),
                    qty: q("0.008"),
                    first_id: seq * 1_000_000,
                    last_id: seq * 1_000_000 + 1,
                    buyer_maker: false,
                },
                AggTrade {
                    instrument: InstrumentId(0),
                    price: p("30002"),
                    qty: q("0.002"),
                    first_id: seq * 1_000_000 + 2,
                    last_id: seq * 1_000_000 + 2,
                    buyer_maker: false,
                },
            ]
        );
        // Levels after: 30001.0 empty, 30002.0 with 4 − 2 = 2 lots.
        assert_eq!(
            last.levels,
            vec![
                LevelChange {
                    instrument: InstrumentId(0),
                    side: Side::Sell,
                    price: PriceTicks(300_010),
                    qty: QtyLots(0)
                },
                LevelChange {
                    instrument: InstrumentId(0),
                    side: Side::Sell,
                    price: PriceTicks(300_020),
                    qty: QtyLots(2)
                },
            ]
        );
        // Account 2's frames for the trade command: orders 11 and 12 filled, 13 partly
        // (2 of 4 lots), then one ACCOUNT_UPDATE. Account 1 (not watched) gets nothing.
        let frames: Vec<Value> = last
            .user
            .iter()
            .map(|(a, t)| {
                assert_eq!(*a, AccountId(2));
                serde_json::from_str(t).unwrap()
            })
            .collect();
        let summary: Vec<(u64, &str, &str, &str, bool)> = frames
            .iter()
            .filter(|f| f["e"] == "ORDER_TRADE_UPDATE")
            .map(|f| {
                let o = &f["o"];
                (
                    o["i"].as_u64().unwrap(),
                    o["X"].as_str().unwrap(),
                    o["z"].as_str().unwrap(),
                    o["L"].as_str().unwrap(),
                    o["m"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (11, "FILLED", "0.005", "30001.0", true),
                (12, "FILLED", "0.003", "30001.0", true),
                (13, "PARTIALLY_FILLED", "0.002", "30002.0", true),
            ]
        );
        // Maker fee of order 13's fill: 0.002 × 30002 × 0.0002 = 0.0120008 USDT.
        assert_eq!(frames[2]["o"]["n"], "0.01200080");
        assert_eq!(frames[2]["o"]["t"], seq * 1_000_000 + 2);
        let account = frames.iter().find(|f| f["e"] == "ACCOUNT_UPDATE").unwrap();
        assert_eq!(account["a"]["m"], "ORDER");
        // Account 2 sold 0.010 BTC: 0.008 at 30001 and 0.002 at 30002, entry
        // (240.008 + 60.004) / 0.010 = 30001.2.
        assert_eq!(account["a"]["P"][0]["pa"], "-0.010");
        assert_eq!(account["a"]["P"][0]["ep"], "30001.2");
    }
}
