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
//!   balances or positions the command changed, and `MARGIN_CALL` by the rule in
//!   [`MARGIN_CALL_RATIO`].
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

use crate::shape::{money_str, price_str, qty_str};
use crate::stream::Shared;
use crate::view::{OrderRecord, Status, View};
use perpcore_types::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Trades of one command are numbered `seq × TRADE_ID_STRIDE + k`.
pub const TRADE_ID_STRIDE: u64 = 1_000_000;

/// The id of the `k`-th trade (0-based, in event order) of the command at `seq`.
pub fn trade_id(seq: u64, k: u64) -> u64 {
    seq.saturating_mul(TRADE_ID_STRIDE).saturating_add(k)
}

/// `MARGIN_CALL` is pushed when a margin pool's margin ratio (maintenance margin ÷ margin
/// balance, the engine report's `margin_ratio` of a cross pool or the USD pool, or an
/// isolated position's `isolated_margin_ratio`) is at or above 80% after a durable
/// command, and was below 80% (or not evaluated) after the previous command the stream
/// evaluated for that account: one push per crossing, re-armed when the ratio falls back
/// below 80%. Liquidation starts at 100%. (Rate has 10 decimals: 0.8 = 8 × 10^9.)
pub const MARGIN_CALL_RATIO: Rate = Rate(8_000_000_000);

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

/// A margin pool a margin call is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Pool {
    Cross(AssetId),
    Usd,
    Isolated(InstrumentId),
}

/// Why a balance changed (Binance's `ACCOUNT_UPDATE` reason `m`).
#[derive(Default)]
struct AccountChange {
    reason: &'static str,
    /// Per asset: the balance change other than PnL and fees (`bc`).
    assets: BTreeMap<AssetId, Money>,
    instruments: BTreeSet<InstrumentId>,
}

impl AccountChange {
    fn reason(&mut self, r: &'static str) {
        if self.reason.is_empty() {
            self.reason = r;
        }
    }
}

/// Lives on the bridge thread.
pub struct Publisher {
    tx: tokio::sync::mpsc::Sender<Batch>,
    shared: Arc<Shared>,
    watched_generation: u64,
    watched: BTreeSet<AccountId>,
    tops: Vec<Top>,
    marks: Vec<MarkState>,
    pending: Vec<Update>,
    lost: bool,
    dirty: Vec<(InstrumentId, Side, PriceTicks)>,
    /// Records, before the command, of the watched accounts' orders its events name.
    before: BTreeMap<OrderId, OrderRecord>,
    margin_called: BTreeSet<(AccountId, Pool)>,
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
            watched: BTreeSet::new(),
            tops,
            marks: marks.clone(),
            pending: Vec::new(),
            lost: false,
            dirty: Vec::new(),
            before: BTreeMap::new(),
            margin_called: BTreeSet::new(),
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
            self.watched = self
                .shared
                .watched
                .read()
                .map(|w| w.keys().copied().collect())
                .unwrap_or_default();
            self.watched_generation = generation;
            self.margin_called.retain(|(a, _)| self.watched.contains(a));
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
        self.before.clear();
        self.refresh_watched();
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
            if !self.watched.is_empty() {
                for (account, id) in order_refs(view, e) {
                    if self.watched.contains(&account) && !self.before.contains_key(&id) {
                        if let Some(r) = crate::shape::record_of(view, id) {
                            self.before.insert(id, r);
                        }
                    }
                }
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
        let mut tops = Vec::new();
        let mut marks = Vec::new();
        for i in instruments(view) {
            let t = top_of(view, i);
            if t != self.tops[i.0 as usize] {
                self.tops[i.0 as usize] = t;
                tops.push((i, t));
            }
            let m = mark_of(view, i);
            if m != self.marks[i.0 as usize] {
                self.marks[i.0 as usize] = m;
                marks.push((i, m));
            }
        }
        let ts_ms = ts_ns / 1_000_000;
        let user = if self.watched.is_empty() {
            Vec::new()
        } else {
            self.user_frames(view, seq, ts_ms, events)
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

    /// The private frames of the watched accounts this command touched.
    fn user_frames(
        &mut self,
        view: &View,
        seq: u64,
        ts_ms: u64,
        events: &[Event],
    ) -> Vec<(AccountId, String)> {
        let config = view.engine.config();
        let mut out = Vec::new();
        let mut running: BTreeMap<OrderId, OrderRecord> = BTreeMap::new();
        let mut changes: BTreeMap<AccountId, AccountChange> = BTreeMap::new();
        let mut named: BTreeSet<AccountId> = BTreeSet::new();
        let mut marks_moved: BTreeSet<InstrumentId> = BTreeSet::new();
        fn entry<'a>(
            changes: &'a mut BTreeMap<AccountId, AccountChange>,
            watched: &BTreeSet<AccountId>,
            a: AccountId,
            reason: &'static str,
        ) -> Option<&'a mut AccountChange> {
            if !watched.contains(&a) {
                return None;
            }
            let c = changes.entry(a).or_default();
            c.reason(reason);
            Some(c)
        }
        macro_rules! change {
            ($a:expr, $reason:expr) => {
                entry(&mut changes, &self.watched, $a, $reason)
            };
        }
        let settle = |i: InstrumentId| config.instruments[i.0 as usize].settle_asset;
        let mut trade_k = 0u64;
        for e in events {
            for (a, _) in order_refs(view, e) {
                named.insert(a);
            }
            // Balances and positions.
            match e {
                Event::Deposited {
                    account,
                    asset,
                    amount,
                    ..
                } => {
                    if let Some(c) = change!(*account, "DEPOSIT") {
                        *c.assets.entry(*asset).or_default() += *amount;
                    }
                }
                Event::Withdrawn {
                    account,
                    asset,
                    amount,
                    ..
                } => {
                    if let Some(c) = change!(*account, "WITHDRAW") {
                        *c.assets.entry(*asset).or_default() -= *amount;
                    }
                }
                Event::Transferred {
                    from,
                    to,
                    asset,
                    amount,
                } => {
                    if let Some(c) = change!(*from, "WITHDRAW") {
                        *c.assets.entry(*asset).or_default() -= *amount;
                    }
                    if let Some(c) = change!(*to, "DEPOSIT") {
                        *c.assets.entry(*asset).or_default() += *amount;
                    }
                }
                Event::Trade {
                    instrument,
                    taker_account,
                    maker_account,
                    ..
                } => {
                    for a in [taker_account, maker_account] {
                        if let Some(c) = change!(*a, "ORDER") {
                            c.assets.entry(settle(*instrument)).or_default();
                            c.instruments.insert(*instrument);
                        }
                    }
                }
                Event::PositionTakenOver {
                    account,
                    instrument,
                    ..
                } => {
                    if let Some(c) = change!(*account, "ORDER") {
                        c.assets.entry(settle(*instrument)).or_default();
                        c.instruments.insert(*instrument);
                    }
                }
                Event::AutoDeleveraged {
                    account,
                    liquidated,
                    instrument,
                    ..
                } => {
                    for a in [account, liquidated] {
                        if let Some(c) = change!(*a, "ORDER") {
                            c.assets.entry(settle(*instrument)).or_default();
                            c.instruments.insert(*instrument);
                        }
                    }
                }
                Event::FundingPaid {
                    account,
                    instrument,
                    ..
                } => {
                    let isolated = view
                        .engine
                        .account(*account)
                        .and_then(|a| a.legs_of(*instrument).next())
                        .is_some_and(|l| l.mode == MarginMode::Isolated);
                    if let Some(c) = change!(*account, "FUNDING_FEE") {
                        c.assets.entry(settle(*instrument)).or_default();
                        // Binance: a cross position's funding pushes only the balance.
                        if isolated {
                            c.instruments.insert(*instrument);
                        }
                    }
                }
                Event::MarginModeSet {
                    account,
                    instrument,
                    ..
                } => {
                    if let Some(c) = change!(*account, "MARGIN_TYPE_CHANGE") {
                        c.instruments.insert(*instrument);
                    }
                }
                Event::IsolatedMarginAdjusted {
                    account,
                    instrument,
                    ..
                } => {
                    if let Some(c) = change!(*account, "MARGIN_TRANSFER") {
                        c.assets.entry(settle(*instrument)).or_default();
                        c.instruments.insert(*instrument);
                    }
                }
                Event::DeficitCovered { account, asset, .. } => {
                    if let Some(c) = change!(*account, "INSURANCE_CLEAR") {
                        c.assets.entry(*asset).or_default();
                    }
                }
                Event::InterestCharged { account, asset, .. } => {
                    if let Some(c) = change!(*account, "ADJUSTMENT") {
                        c.assets.entry(*asset).or_default();
                    }
                }
                Event::AutoExchanged {
                    account,
                    sold_asset,
                    repaid_asset,
                    ..
                } => {
                    if let Some(c) = change!(*account, "AUTO_EXCHANGE") {
                        c.assets.entry(*sold_asset).or_default();
                        c.assets.entry(*repaid_asset).or_default();
                    }
                }
                Event::MarkPriceSet { instrument, .. } => {
                    marks_moved.insert(*instrument);
                }
                _ => {}
            }
            // Orders.
            let is_trade = matches!(e, Event::Trade { .. });
            for (account, id) in order_refs(view, e) {
                if !self.watched.contains(&account) {
                    continue;
                }
                let rec = running.entry(id).or_insert_with(|| {
                    self.before
                        .get(&id)
                        .cloned()
                        .unwrap_or_else(|| synthetic_record(view, id, account, e))
                });
                if let Some(frame) = order_update(view, rec, id, e, seq, trade_k, ts_ms) {
                    out.push((account, frame));
                }
            }
            if is_trade {
                trade_k += 1;
            }
        }
        for (account, c) in &changes {
            if let Some(frame) = account_update(view, *account, c, ts_ms) {
                out.push((*account, frame));
            }
        }
        // Margin calls: accounts the command named or whose instruments' marks moved.
        for account in self.watched.clone() {
            let touched = named.contains(&account)
                || changes.contains_key(&account)
                || (!marks_moved.is_empty()
                    && view.engine.account(account).is_some_and(|a| {
                        a.legs
                            .iter()
                            .any(|l| marks_moved.contains(&l.instrument) && !l.is_flat())
                    }));
            if touched {
                if let Some(frame) = self.margin_call(view, account, ts_ms) {
                    out.push((account, frame));
                }
            }
        }
        out
    }

    /// The margin-call frame for `account` if one of its pools crossed the threshold.
    fn margin_call(&mut self, view: &View, account: AccountId, ts_ms: u64) -> Option<String> {
        let report = view.engine.report(account)?;
        let config = view.engine.config();
        let mut over: Vec<Pool> = Vec::new();
        for a in &report.assets {
            if a.margin_ratio.is_some_and(|r| r >= MARGIN_CALL_RATIO) {
                if let Some(asset) = config.asset_by_symbol(&a.asset) {
                    over.push(Pool::Cross(asset.id));
                }
            }
        }
        if report
            .usd_pool
            .as_ref()
            .and_then(|u| u.margin_ratio)
            .is_some_and(|r| r >= MARGIN_CALL_RATIO)
        {
            over.push(Pool::Usd);
        }
        for p in &report.positions {
            if p.isolated_margin_ratio
                .is_some_and(|r| r >= MARGIN_CALL_RATIO)
            {
                if let Some(spec) = config.instrument_by_symbol(&p.instrument) {
                    over.push(Pool::Isolated(spec.id));
                }
            }
        }
        let newly: Vec<Pool> = over
            .iter()
            .copied()
            .filter(|p| !self.margin_called.contains(&(account, *p)))
            .collect();
        self.margin_called
            .retain(|(a, p)| *a != account || over.contains(p));
        for p in &over {
            self.margin_called.insert((account, *p));
        }
        if newly.is_empty() {
            return None;
        }
        // The positions of the pools that crossed.
        let mut positions = Vec::new();
        let mut cross_wallet: Option<Money> = None;
        for p in &report.positions {
            let Some(spec) = config.instrument_by_symbol(&p.instrument) else {
                continue;
            };
            if p.size.is_zero() {
                continue;
            }
            let in_pool = newly.iter().any(|pool| match pool {
                Pool::Cross(asset) => p.mode == MarginMode::Cross && spec.settle_asset == *asset,
                Pool::Usd => p.mode == MarginMode::Cross,
                Pool::Isolated(i) => p.mode == MarginMode::Isolated && spec.id == *i,
            });
            if !in_pool {
                continue;
            }
            if p.mode == MarginMode::Cross {
                let asset = &config.assets[spec.settle_asset.0 as usize].symbol;
                cross_wallet = report
                    .assets
                    .iter()
                    .find(|a| &a.asset == asset)
                    .map(|a| a.wallet);
            }
            positions.push(json!({
                "s": p.instrument,
                "ps": "BOTH",
                "pa": qty_str(spec, p.size),
                "mt": if p.mode == MarginMode::Cross { "CROSSED" } else { "ISOLATED" },
                "iw": money_str(p.isolated_margin),
                "mp": p.mark_price.map_or(String::new(), fixed8),
                "up": money_str(p.unrealized_pnl),
                "mm": money_str(p.maintenance_margin),
            }));
        }
        let mut v = json!({
            "e": "MARGIN_CALL",
            "E": crate::http::now_ms(),
            "T": ts_ms,
            "p": positions,
        });
        if let Some(cw) = cross_wallet {
            v["cw"] = json!(money_str(cw));
        }
        Some(v.to_string())
    }
}

/// A price with 8 decimals, as Binance's mark price stream writes them.
pub fn fixed8(p: Price) -> String {
    format_fixed(p.raw() as i128, Price::DECIMALS, 8)
}

/// (account, order id) of the orders an event is about.
fn order_refs(view: &View, e: &Event) -> Vec<(AccountId, OrderId)> {
    let owner = |id: OrderId| -> Option<AccountId> {
        view.orders
            .get(&id)
            .map(|r| r.account)
            .or_else(|| view.engine.order(id).map(|m| m.account))
            .or_else(|| {
                view.engine
                    .conditionals()
                    .find(|c| c.order.order_id == id)
                    .map(|c| c.order.account)
            })
    };
    match e {
        Event::OrderAccepted {
            account, order_id, ..
        }
        | Event::OrderCanceled {
            account, order_id, ..
        }
        | Event::ConditionalPlaced {
            account, order_id, ..
        }
        | Event::ConditionalRejected {
            account, order_id, ..
        } => vec![(*account, *order_id)],
        Event::Trade {
            taker_account,
            taker_order,
            maker_account,
            maker_order,
            ..
        } => vec![
            (*taker_account, *taker_order),
            (*maker_account, *maker_order),
        ],
        Event::OrderAmended { order_id, .. } | Event::OrderReduced { order_id, .. } => {
            owner(*order_id)
                .map(|a| vec![(a, *order_id)])
                .unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// A record for an order the gateway did not place (a liquidation order, or one whose
/// record is gone), from the event that names it.
fn synthetic_record(view: &View, id: OrderId, account: AccountId, e: &Event) -> OrderRecord {
    let ms = view.last_ts_ns / 1_000_000;
    let (instrument, side, price, qty) = match e {
        Event::OrderAccepted {
            instrument,
            side,
            price,
            qty,
            ..
        } => (*instrument, *side, *price, *qty),
        Event::Trade {
            instrument,
            price,
            taker_side,
            taker_order,
            qty,
            ..
        } => {
            let side = if *taker_order == id {
                *taker_side
            } else {
                taker_side.opposite()
            };
            (*instrument, side, *price, *qty)
        }
        _ => (InstrumentId(0), Side::Buy, Price::ZERO, Qty::ZERO),
    };
    let liquidation = id.0 >= perpcore_engine::RESERVED_ORDER_ID_MIN;
    OrderRecord {
        account,
        instrument,
        client_id: if liquidation {
            format!("autoclose-{}", id.0)
        } else {
            format!("perpcore-{}", id.0)
        },
        side,
        order_type: if liquidation { "LIQUIDATION" } else { "LIMIT" },
        tif: if liquidation { "IOC" } else { "GTC" },
        price,
        stop_price: Price::ZERO,
        callback_rate: None,
        orig_qty: qty,
        executed: Qty::ZERO,
        cum_quote_raw: 0,
        reduce_only: liquidation,
        close_position: false,
        working_type: "CONTRACT_PRICE",
        stp: "EXPIRE_TAKER",
        status: Status::Pending,
        time_ms: ms,
        update_ms: ms,
    }
}

/// Σ price × open quantity of `account`'s resting orders on `instrument`, per side
/// (Binance's `b` and `a`), scale 10^16.
fn open_notional(view: &View, account: AccountId, instrument: InstrumentId) -> (i128, i128) {
    let (mut bids, mut asks) = (0i128, 0i128);
    let Some(a) = view.engine.account(account) else {
        return (0, 0);
    };
    let spec = &view.engine.config().instruments[instrument.0 as usize];
    let Some(book) = view.engine.book(instrument) else {
        return (0, 0);
    };
    for leg in a.legs_of(instrument) {
        for id in &leg.open_orders {
            if let Some(o) = book.get(*id) {
                let n =
                    spec.price_of(o.price).raw() as i128 * spec.qty_of(o.open_qty).raw() as i128;
                match o.side {
                    Side::Buy => bids += n,
                    Side::Sell => asks += n,
                }
            }
        }
    }
    (bids, asks)
}

/// One `ORDER_TRADE_UPDATE` for `e`, advancing `rec` (the order as of the previous
/// event) to the state after it; `None` for events that do not change what Binance
/// reports (an order coming to rest).
fn order_update(
    view: &View,
    rec: &mut OrderRecord,
    id: OrderId,
    e: &Event,
    seq: u64,
    trade_k: u64,
    ts_ms: u64,
) -> Option<String> {
    let config = view.engine.config();
    let spec = &config.instruments[rec.instrument.0 as usize];
    let liquidation = id.0 >= perpcore_engine::RESERVED_ORDER_ID_MIN;
    let mut last = (Qty::ZERO, Price::ZERO);
    let mut fee: Option<Money> = None;
    let mut realized = Money::ZERO;
    let mut trade = 0u64;
    let mut maker = false;
    let exec: &'static str = match e {
        Event::OrderAccepted { qty, .. } => {
            rec.status = Status::New;
            rec.orig_qty = rec.executed + *qty;
            "NEW"
        }
        Event::ConditionalPlaced { .. } => {
            rec.status = Status::New;
            "NEW"
        }
        Event::Trade {
            price,
            qty,
            taker_order,
            taker_fee,
            maker_fee,
            taker_realized_pnl,
            maker_realized_pnl,
            ..
        } => {
            maker = *taker_order != id;
            rec.executed += *qty;
            rec.cum_quote_raw += price.raw() as i128 * qty.raw() as i128;
            rec.status = if rec.executed >= rec.orig_qty {
                Status::Filled
            } else {
                Status::PartiallyFilled
            };
            last = (*qty, *price);
            fee = Some(if maker { *maker_fee } else { *taker_fee });
            realized = if maker {
                *maker_realized_pnl
            } else {
                *taker_realized_pnl
            };
            trade = trade_id(seq, trade_k);
            if liquidation {
                "CALCULATED"
            } else {
                "TRADE"
            }
        }
        Event::OrderCanceled { reason, .. } => {
            let (status, x) = match reason {
                CancelReason::User
                | CancelReason::Liquidation
                | CancelReason::AutoDeleveraged
                | CancelReason::ReduceOnlyObsolete => (Status::Canceled, "CANCELED"),
                CancelReason::Unfilled | CancelReason::PriceBand | CancelReason::SelfTrade => {
                    (Status::Expired, "EXPIRED")
                }
            };
            rec.status = status;
            x
        }
        Event::OrderAmended {
            price, open_qty, ..
        } => {
            rec.price = *price;
            rec.orig_qty = rec.executed + *open_qty;
            "AMENDMENT"
        }
        Event::OrderReduced { open_qty, .. } => {
            rec.orig_qty = rec.executed + *open_qty;
            "AMENDMENT"
        }
        Event::ConditionalRejected { .. } => {
            rec.status = Status::Expired;
            "EXPIRED"
        }
        _ => return None,
    };
    let avg = if rec.executed.is_zero() {
        Price::ZERO
    } else {
        Price(
            i64::try_from(div_round(
                rec.cum_quote_raw,
                rec.executed.raw() as i128,
                Rounding::Floor,
            ))
            .unwrap_or(i64::MAX),
        )
    };
    let (bids, asks) = open_notional(view, rec.account, rec.instrument);
    let status = match rec.status {
        Status::Pending => Status::New,
        s => s,
    };
    let mut o = json!({
        "s": spec.symbol,
        "c": rec.client_id,
        "S": match rec.side { Side::Buy => "BUY", Side::Sell => "SELL" },
        "o": rec.order_type,
        "f": rec.tif,
        "q": qty_str(spec, rec.orig_qty),
        "p": price_str(spec, rec.price),
        "ap": price_str(spec, avg),
        "sp": price_str(spec, rec.stop_price),
        "x": exec,
        "X": status.as_str(),
        "i": id.0,
        "l": qty_str(spec, last.0),
        "z": qty_str(spec, rec.executed),
        "L": price_str(spec, last.1),
        "T": ts_ms,
        "t": trade,
        "b": format_fixed(bids, 16, 0),
        "a": format_fixed(asks, 16, 0),
        "m": maker,
        "R": rec.reduce_only,
        "wt": rec.working_type,
        "ot": rec.order_type,
        "ps": "BOTH",
        "cp": rec.close_position,
        "rp": money_str(realized),
        "pP": false,
        "si": 0,
        "ss": 0,
        "V": rec.stp,
        "pm": "NONE",
        "gtd": 0,
    });
    if let Some(fee) = fee {
        o["N"] = json!(config.assets[spec.settle_asset.0 as usize].symbol);
        o["n"] = json!(money_str(fee));
    }
    if let Some(rate) = &rec.callback_rate {
        o["AP"] = json!(price_str(spec, rec.stop_price));
        o["cr"] = json!(rate);
    }
    rec.update_ms = ts_ms;
    Some(
        json!({
            "e": "ORDER_TRADE_UPDATE",
            "E": crate::http::now_ms(),
            "T": ts_ms,
            "o": o,
        })
        .to_string(),
    )
}

/// One `ACCOUNT_UPDATE`: the changed assets' balances and the changed positions, after
/// the command (Binance pushes only what changed).
fn account_update(
    view: &View,
    account: AccountId,
    c: &AccountChange,
    ts_ms: u64,
) -> Option<String> {
    let report = view.engine.report(account)?;
    let config = view.engine.config();
    let balances: Vec<Value> = c
        .assets
        .iter()
        .map(|(asset, bc)| {
            let symbol = &config.assets[asset.0 as usize].symbol;
            let wallet = report
                .assets
                .iter()
                .find(|a| &a.asset == symbol)
                .map_or(Money::ZERO, |a| a.wallet);
            // Binance's wallet balance includes isolated margin; `cw` is the cross part.
            let isolated: Money = report
                .positions
                .iter()
                .filter(|p| {
                    config
                        .instrument_by_symbol(&p.instrument)
                        .is_some_and(|s| s.settle_asset == *asset)
                })
                .map(|p| p.isolated_margin)
                .fold(Money::ZERO, |a, b| a + b);
            json!({
                "a": symbol,
                "wb": money_str(wallet + isolated),
                "cw": money_str(wallet),
                "bc": money_str(*bc),
            })
        })
        .collect();
    let positions: Vec<Value> = c
        .instruments
        .iter()
        .map(|i| {
            let spec = &config.instruments[i.0 as usize];
            let p = report.positions.iter().find(|p| p.instrument == spec.symbol);
            let mode = p.map(|p| p.mode).or_else(|| {
                view.engine
                    .account(account)
                    .and_then(|a| a.legs_of(*i).next())
                    .map(|l| l.mode)
            });
            let entry = p.and_then(|p| p.entry_price).unwrap_or(Price::ZERO);
            json!({
                "s": spec.symbol,
                "pa": qty_str(spec, p.map_or(Qty::ZERO, |p| p.size)),
                "ep": price_str(spec, entry),
                "bep": price_str(spec, entry),
                "up": money_str(p.map_or(Money::ZERO, |p| p.unrealized_pnl)),
                "mt": match mode.unwrap_or_default() { MarginMode::Cross => "cross", MarginMode::Isolated => "isolated" },
                "iw": money_str(p.map_or(Money::ZERO, |p| p.isolated_margin)),
                "ps": "BOTH",
            })
        })
        .collect();
    Some(
        json!({
            "e": "ACCOUNT_UPDATE",
            "E": crate::http::now_ms(),
            "T": ts_ms,
            "a": { "m": c.reason, "B": balances, "P": positions },
        })
        .to_string(),
    )
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
