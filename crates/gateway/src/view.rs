//! The gateway's read side: a replica of the engine that applies each command after it
//! is durable, and the order records Binance clients ask about (client order ids, types,
//! executed quantity) that the engine does not keep.
//!
//! Owns: [`View`] and [`OrderRecord`]. Lives on the bridge thread only (never shared), so
//! no lock exists between the HTTP side and the sequencer. Must never: apply a command
//! before the sequencer released it as durable, or apply commands out of order.

use perpcore_engine::Engine;
use perpcore_types::*;
use std::collections::{BTreeMap, VecDeque};

/// Terminal (filled, cancelled, expired) orders kept for queries; older ones are
/// forgotten (a query for them answers -2013).
pub const TERMINAL_ORDERS_KEPT: usize = 100_000;

/// Binance order status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Prepared and submitted, not yet durable (never shown).
    Pending,
    New,
    PartiallyFilled,
    Filled,
    Canceled,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending | Status::New => "NEW",
            Status::PartiallyFilled => "PARTIALLY_FILLED",
            Status::Filled => "FILLED",
            Status::Canceled => "CANCELED",
            Status::Expired => "EXPIRED",
        }
    }
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Filled | Status::Canceled | Status::Expired)
    }
}

/// What the gateway remembers of an order.
#[derive(Clone, Debug)]
pub struct OrderRecord {
    pub account: AccountId,
    pub instrument: InstrumentId,
    pub client_id: String,
    pub side: Side,
    /// Binance's `type` / `origType` (LIMIT, MARKET, STOP, STOP_MARKET, ...).
    pub order_type: &'static str,
    pub tif: &'static str,
    pub price: Price,
    pub stop_price: Price,
    /// Trailing stops: the callback rate in percent, as sent.
    pub callback_rate: Option<String>,
    pub orig_qty: Qty,
    pub executed: Qty,
    /// Σ price × qty of the fills, scale 10^16 (Price 10^8 × Qty 10^8): exact.
    pub cum_quote_raw: i128,
    pub reduce_only: bool,
    pub close_position: bool,
    /// `Both` in one-way mode; `Long` or `Short` (Binance's `positionSide`) in hedge mode.
    pub position_side: PositionSide,
    pub working_type: &'static str,
    pub stp: &'static str,
    pub status: Status,
    pub time_ms: u64,
    pub update_ms: u64,
}

impl OrderRecord {
    /// The average fill price: Σ price × qty / Σ qty (scale 10^16 / 10^8 = 10^8), rounded
    /// down; zero before the first fill.
    pub fn avg_price(&self) -> Price {
        if self.executed.is_zero() {
            return Price::ZERO;
        }
        Price(
            i64::try_from(div_round(
                self.cum_quote_raw,
                i128::from(self.executed.raw()),
                Rounding::Floor,
            ))
            .unwrap_or(i64::MAX),
        )
    }
}

/// The replica and the order records, as of `last_seq`.
pub struct View {
    pub engine: Engine,
    pub orders: BTreeMap<OrderId, OrderRecord>,
    pub by_client: BTreeMap<(AccountId, String), OrderId>,
    terminal: VecDeque<OrderId>,
    pub next_order_id: u64,
    /// Order ids this gateway allocates are `slot` modulo `slots` (1 and 0: all): in
    /// cluster mode, several gateways on one stream each allocate from their own residue
    /// class, so their ids never collide (`ServeOptions::cluster`).
    id_slots: (u64, u64),
    pub last_seq: u64,
    pub last_ts_ns: u64,
    /// Account trades and income (`crate::history`).
    pub history: crate::history::History,
}

impl View {
    /// A view of `engine` (the state after `last_seq`). Order ids start above every id
    /// that can have been used: the gateway allocates at most one per command, so the
    /// ids of earlier runs are at most the journal's last seq; live orders of other
    /// origins are also counted.
    pub fn new(engine: Engine, last_seq: u64, last_ts_ns: u64) -> View {
        let mut max_id = last_seq;
        for i in 0..engine.config().instruments.len() {
            let book = engine.book(InstrumentId(i as u32)).expect("instrument");
            for o in book.iter() {
                if o.order_id.0 < perpcore_engine::RESERVED_ORDER_ID_MIN {
                    max_id = max_id.max(o.order_id.0);
                }
            }
        }
        for c in engine.conditionals() {
            max_id = max_id.max(c.order.order_id.0);
        }
        View {
            engine,
            orders: BTreeMap::new(),
            by_client: BTreeMap::new(),
            terminal: VecDeque::new(),
            next_order_id: max_id + 1,
            id_slots: (0, 1),
            last_seq,
            last_ts_ns,
            history: crate::history::History::default(),
        }
    }

    /// Allocate order ids `slot` modulo `slots` from now on (`slot < slots`).
    pub fn set_order_id_slot(&mut self, slot: u64, slots: u64) {
        debug_assert!(slots >= 1 && slot < slots);
        self.id_slots = (slot, slots.max(1));
    }

    /// The next order id: above every id allocated or seen in an accepted order, in this
    /// gateway's residue class.
    pub fn allocate_order_id(&mut self) -> OrderId {
        let (slot, slots) = self.id_slots;
        let next = self.next_order_id;
        let id = next + (slot + slots - next % slots) % slots;
        self.next_order_id = id + 1;
        OrderId(id)
    }

    /// Give back the order id `command` allocated, when the command never reached the
    /// sequencer (or the stream) and it is the last id allocated. Ids then stay at most
    /// one per journaled command, which [`View::new`] counts on after a restart.
    pub fn release_order_id(&mut self, command: &Command) {
        let id = match command {
            Command::PlaceOrder(o) => o.order_id,
            Command::PlaceConditional(c) => c.order_id,
            _ => return,
        };
        if id.0 + 1 == self.next_order_id {
            self.next_order_id = id.0;
        }
    }

    /// Allocate no id below `floor` from now on.
    pub fn raise_next_order_id(&mut self, floor: u64) {
        self.next_order_id = self.next_order_id.max(floor);
    }

    /// Ids of other origins (other gateways or producers on the stream) move the next id
    /// past them.
    fn saw_order_id(&mut self, id: OrderId) {
        if id.0 >= self.next_order_id && id.0 < perpcore_engine::RESERVED_ORDER_ID_MIN {
            self.next_order_id = id.0 + 1;
        }
    }

    /// Register an order about to be submitted (status `Pending`).
    pub fn insert_pending(&mut self, id: OrderId, rec: OrderRecord) {
        self.by_client
            .insert((rec.account, rec.client_id.clone()), id);
        self.orders.insert(id, rec);
    }

    /// Forget an order whose command was refused (or never submitted).
    pub fn remove(&mut self, id: OrderId) {
        if let Some(rec) = self.orders.remove(&id) {
            if self.by_client.get(&(rec.account, rec.client_id.clone())) == Some(&id) {
                self.by_client.remove(&(rec.account, rec.client_id));
            }
        }
    }

    /// An order of `account` by id or client id (another account's order is not found),
    /// once its command is durable.
    pub fn find(
        &self,
        account: AccountId,
        id: Option<u64>,
        client_id: Option<&str>,
    ) -> Option<OrderId> {
        let (id, rec) = self.record_of_account(account, id, client_id)?;
        (rec.status != Status::Pending).then_some(id)
    }

    /// As [`View::find`], and also an order whose command is submitted but not yet
    /// durable: a cancel or amend of it is sequenced after it (one bridge, one FIFO), so
    /// it may be sent at once.
    pub fn find_submitted(
        &self,
        account: AccountId,
        id: Option<u64>,
        client_id: Option<&str>,
    ) -> Option<OrderId> {
        self.record_of_account(account, id, client_id)
            .map(|(id, _)| id)
    }

    /// The record of `account`'s order named by id or client id.
    fn record_of_account(
        &self,
        account: AccountId,
        id: Option<u64>,
        client_id: Option<&str>,
    ) -> Option<(OrderId, &OrderRecord)> {
        let id = match (id, client_id) {
            (Some(id), _) => OrderId(id),
            (None, Some(c)) => *self.by_client.get(&(account, c.to_string()))?,
            (None, None) => return None,
        };
        let rec = self.orders.get(&id)?;
        (rec.account == account).then_some((id, rec))
    }

    /// Whether `id`'s command is submitted and not yet durable.
    pub fn is_pending(&self, id: OrderId) -> bool {
        self.orders
            .get(&id)
            .is_some_and(|r| r.status == Status::Pending)
    }

    /// Apply one durable command to the replica and update the records from its events.
    /// The replica's events must equal the sequencer's (the engine is deterministic); a
    /// difference is a bug, and the gateway halts rather than answer from a diverged state.
    pub fn apply(
        &mut self,
        seq: u64,
        ts_ns: u64,
        cmd: &Command,
        committed: &[Event],
        scratch: &mut Vec<Event>,
    ) {
        scratch.clear();
        self.engine.apply_command(seq, ts_ns, cmd, scratch);
        assert_eq!(
            scratch.as_slice(),
            committed,
            "the gateway's replica diverged from the sequencer at seq {seq}"
        );
        self.last_seq = seq;
        self.last_ts_ns = ts_ns;
        self.history
            .on_command(seq, ts_ns, committed, &self.engine, &self.orders);
        let ms = ts_ns / 1_000_000;
        for e in committed {
            self.on_event(e, ms);
        }
        // A pending record whose command produced no acceptance stays pending only until
        // its handler's finish removes it.
    }

    fn on_event(&mut self, e: &Event, ms: u64) {
        match e {
            Event::OrderAccepted {
                account,
                instrument,
                order_id,
                side,
                price,
                qty,
            } => {
                self.saw_order_id(*order_id);
                let position_side = self.position_side_of(*account, *order_id, *side);
                let rec = self.orders.entry(*order_id).or_insert_with(|| OrderRecord {
                    account: *account,
                    instrument: *instrument,
                    client_id: format!("perpcore-{}", order_id.0),
                    side: *side,
                    order_type: "LIMIT",
                    tif: "GTC",
                    price: *price,
                    stop_price: Price::ZERO,
                    callback_rate: None,
                    orig_qty: *qty,
                    executed: Qty::ZERO,
                    cum_quote_raw: 0,
                    reduce_only: false,
                    close_position: false,
                    position_side,
                    working_type: "CONTRACT_PRICE",
                    stp: "EXPIRE_TAKER",
                    status: Status::New,
                    time_ms: ms,
                    update_ms: ms,
                });
                rec.status = Status::New;
                rec.orig_qty = rec.executed + *qty;
                rec.update_ms = ms;
            }
            Event::ConditionalPlaced { order_id, .. } => {
                self.saw_order_id(*order_id);
                if let Some(r) = self.orders.get_mut(order_id) {
                    r.status = Status::New;
                    r.update_ms = ms;
                }
            }
            Event::OrderRested { order_id, .. } => {
                if let Some(r) = self.orders.get_mut(order_id) {
                    r.status = if r.executed.is_zero() {
                        Status::New
                    } else {
                        Status::PartiallyFilled
                    };
                    r.update_ms = ms;
                }
            }
            Event::Trade {
                price,
                qty,
                taker_order,
                maker_order,
                ..
            } => {
                for id in [taker_order, maker_order] {
                    if let Some(r) = self.orders.get_mut(id) {
                        r.executed += *qty;
                        r.cum_quote_raw += price.raw() as i128 * qty.raw() as i128;
                        r.status = if r.executed >= r.orig_qty {
                            Status::Filled
                        } else {
                            Status::PartiallyFilled
                        };
                        r.update_ms = ms;
                    }
                    self.retire_if_terminal(*id);
                }
            }
            Event::OrderCanceled {
                order_id, reason, ..
            } => {
                if let Some(r) = self.orders.get_mut(order_id) {
                    r.status = match reason {
                        CancelReason::User
                        | CancelReason::Liquidation
                        | CancelReason::AutoDeleveraged
                        | CancelReason::ReduceOnlyObsolete => Status::Canceled,
                        CancelReason::Unfilled
                        | CancelReason::PriceBand
                        | CancelReason::SelfTrade => Status::Expired,
                    };
                    r.update_ms = ms;
                }
                self.retire_if_terminal(*order_id);
            }
            Event::OrderAmended {
                order_id,
                price,
                open_qty,
                ..
            } => {
                if let Some(r) = self.orders.get_mut(order_id) {
                    r.price = *price;
                    r.orig_qty = r.executed + *open_qty;
                    r.update_ms = ms;
                }
            }
            Event::OrderReduced { order_id, open_qty } => {
                if let Some(r) = self.orders.get_mut(order_id) {
                    r.orig_qty = r.executed + *open_qty;
                    r.update_ms = ms;
                }
            }
            Event::ConditionalRejected { order_id, .. } => {
                if let Some(r) = self.orders.get_mut(order_id) {
                    r.status = Status::Expired;
                    r.update_ms = ms;
                }
                self.retire_if_terminal(*order_id);
            }
            _ => {}
        }
    }

    fn retire_if_terminal(&mut self, id: OrderId) {
        if self.orders.get(&id).is_some_and(|r| r.status.is_terminal()) {
            self.terminal.push_back(id);
            while self.terminal.len() > TERMINAL_ORDERS_KEPT {
                if let Some(old) = self.terminal.pop_front() {
                    self.remove(old);
                }
            }
        }
    }

    /// The position side of an order the gateway has no record of, from the engine: its
    /// account's position mode and the open order's reduce-only flag (an order already
    /// gone is taken as reducing, as liquidation orders do).
    pub fn position_side_of(&self, account: AccountId, id: OrderId, side: Side) -> PositionSide {
        let mode = self
            .engine
            .account(account)
            .map_or(PositionMode::OneWay, |a| a.position_mode);
        let reduce_only = self.engine.order(id).is_none_or(|m| m.reduce_only);
        PositionSide::of_order(mode, side, reduce_only)
    }

    /// Whether `id` is open (resting in a book or a waiting conditional order).
    pub fn is_open(&self, id: OrderId) -> bool {
        self.engine.order(id).is_some()
            || self.engine.conditionals().any(|c| c.order.order_id == id)
    }
}
