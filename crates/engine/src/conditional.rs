//! Conditional orders (SPEC §4; issue 16, item 1): stop and take-profit orders, market or
//! limit, and trailing stops, each watching the mark or the last trade of the engine's own
//! book.
//!
//! - **Waiting** orders are state (`State::conditionals`) and reserve no margin (as on
//!   Binance); they count against the instrument's open-order limit. Cancel, cancel-all
//!   and amend (quantity, and the limit price of the `*Limit` kinds) reach them, and a
//!   liquidation's first step cancels them with the account's resting orders.
//! - **Placement** refuses an order whose working price is already at or past its trigger
//!   (`WouldTriggerImmediately`, Binance's -2021), a trailing stop's callback outside 0.1%
//!   to 10%, and a last-trade order before the first trade.
//! - **Triggering** is deterministic: whenever a command moves a working price (a mark,
//!   recorded or derived, or a trade), after the command's own work, the orders it crossed
//!   fire in trigger-price order (the trigger nearest the old price first) and then
//!   placement order; trailing stops after them, in placement order. A fired order goes
//!   through the normal pre-trade check as a market or limit order with the conditional's
//!   id (`ConditionalTriggered`, then the order's events) or is refused
//!   (`ConditionalRejected`). Its trades move the last price, which may fire more, until
//!   none is left.
//! - **Cost** of a price move: O(log n + fired) in the waiting stops and take-profits
//!   ([`Triggers`]: the ones that fire when the price rises, sorted by trigger, and the
//!   ones that fire when it falls), plus one step per waiting trailing stop of the
//!   instrument (a trailing stop's trigger follows the price, so each is visited).

use crate::engine::{Engine, Res};
use crate::state::Conditional;
use perpcore_types::*;
use std::cmp::Reverse;
use std::collections::BTreeSet;

/// The waiting conditional orders of one instrument and working price, by how they fire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Triggers {
    /// Fire when the price rises to the trigger: buy stops, sell take-profits.
    rising: BTreeSet<(Price, u64, OrderId)>,
    /// Fire when the price falls to the trigger: sell stops, buy take-profits.
    falling: BTreeSet<(Reverse<Price>, u64, OrderId)>,
    /// Trailing stops, in placement order.
    trailing: BTreeSet<(u64, OrderId)>,
}

impl Triggers {
    pub(crate) fn is_empty(&self) -> bool {
        self.rising.is_empty() && self.falling.is_empty() && self.trailing.is_empty()
    }

    fn insert(&mut self, c: &Conditional) {
        let o = &c.order;
        let key = (c.placed_seq, o.order_id);
        match direction(o.kind, o.side) {
            Some(Direction::Rising) => self.rising.insert((o.trigger, key.0, key.1)),
            Some(Direction::Falling) => self.falling.insert((Reverse(o.trigger), key.0, key.1)),
            None => self.trailing.insert(key),
        };
    }

    fn remove(&mut self, c: &Conditional) {
        let o = &c.order;
        let key = (c.placed_seq, o.order_id);
        match direction(o.kind, o.side) {
            Some(Direction::Rising) => self.rising.remove(&(o.trigger, key.0, key.1)),
            Some(Direction::Falling) => self.falling.remove(&(Reverse(o.trigger), key.0, key.1)),
            None => self.trailing.remove(&key),
        };
    }

    /// The stops and take-profits a working price of `p` has reached, in firing order.
    fn reached(&self, p: Price) -> Vec<OrderId> {
        let rising = self
            .rising
            .range(..=(p, u64::MAX, OrderId(u64::MAX)))
            .map(|k| k.2);
        let falling = self
            .falling
            .range(..=(Reverse(p), u64::MAX, OrderId(u64::MAX)))
            .map(|k| k.2);
        rising.chain(falling).collect()
    }
}

/// Waiting conditional orders per (account, instrument).
pub(crate) type ConditionalCounts = LookupMap<(AccountId, InstrumentId), u32>;

/// Waiting conditional orders per account, by id.
pub(crate) type ConditionalsByAccount = LookupMap<AccountId, BTreeSet<OrderId>>;

/// The conditional-order indexes of a state: per instrument, [mark, last trade]; the
/// counts per account and instrument; the ids per account.
pub(crate) fn rebuild_triggers(
    state: &crate::state::State,
) -> Result<(Vec<[Triggers; 2]>, ConditionalCounts, ConditionalsByAccount), crate::RestoreError> {
    let mut triggers = vec![<[Triggers; 2]>::default(); state.config.instruments.len()];
    let mut counts = LookupMap::default();
    let mut by_account = LookupMap::default();
    for c in state.conditionals.values() {
        let o = &c.order;
        triggers
            .get_mut(o.instrument.0 as usize)
            .ok_or(crate::RestoreError::UnknownInstrument(o.instrument))?[slot(o.working)]
        .insert(c);
        *counts.get_or_insert_with((o.account, o.instrument), || 0) += 1;
        by_account
            .get_or_insert_with(o.account, BTreeSet::new)
            .insert(o.order_id);
    }
    Ok((triggers, counts, by_account))
}

enum Direction {
    Rising,
    Falling,
}

/// Which way the price must move for a stop or take-profit to fire (`None`: trailing).
fn direction(kind: ConditionalKind, side: Side) -> Option<Direction> {
    use ConditionalKind::*;
    match (kind, side) {
        (StopMarket | StopLimit, Side::Buy) | (TakeProfitMarket | TakeProfitLimit, Side::Sell) => {
            Some(Direction::Rising)
        }
        (StopMarket | StopLimit, Side::Sell) | (TakeProfitMarket | TakeProfitLimit, Side::Buy) => {
            Some(Direction::Falling)
        }
        (TrailingStop, _) => None,
    }
}

fn slot(w: WorkingPrice) -> usize {
    match w {
        WorkingPrice::Mark => 0,
        WorkingPrice::LastTrade => 1,
    }
}

fn is_limit(kind: ConditionalKind) -> bool {
    matches!(
        kind,
        ConditionalKind::StopLimit | ConditionalKind::TakeProfitLimit
    )
}

/// A limit price in ticks: positive, and a price within the engine's limit.
fn check_ticks(spec: &InstrumentSpec, ticks: PriceTicks) -> Res {
    if ticks.0 <= 0 {
        return Err(RejectReason::PriceNotPositive);
    }
    if ticks.0 > MAX_PRICE.raw() / spec.tick_size.raw() {
        return Err(RejectReason::PriceTooLarge);
    }
    Ok(())
}

/// Binance's callback range for trailing stops: 0.1% to 10%.
fn callback_in_range(r: Rate) -> bool {
    Rate(RATE_SCALE / 1_000) <= r && r <= Rate(RATE_SCALE / 10)
}

/// A trailing stop's trigger from its extreme: a sell `extreme × (1 − cb)` (rounded up:
/// it fires no later), a buy `extreme × (1 + cb)` (rounded down).
fn trailing_trigger(side: Side, extreme: Price, callback: Rate) -> Price {
    let (factor, rounding) = match side {
        Side::Sell => (RATE_SCALE - callback.raw(), Rounding::Ceil),
        Side::Buy => (RATE_SCALE + callback.raw(), Rounding::Floor),
    };
    let t = mul_div(
        i128::from(extreme.raw()),
        i128::from(factor),
        i128::from(RATE_SCALE),
        rounding,
    );
    // |cb| ≤ 10%, so the result is within 1.1 × a price: it fits.
    Price(i64::try_from(t).expect("a trailing trigger is a price"))
}

/// Whether `p` has reached `trigger` in `direction`.
fn reached(direction: &Direction, p: Price, trigger: Price) -> bool {
    match direction {
        Direction::Rising => p >= trigger,
        Direction::Falling => p <= trigger,
    }
}

impl Engine {
    /// The working price of `i` (`None`: no mark / no trade yet).
    fn working_price(&self, i: InstrumentId, w: WorkingPrice) -> Option<Price> {
        match w {
            WorkingPrice::Mark => self.state.marks[i.0 as usize],
            WorkingPrice::LastTrade => self.state.market[i.0 as usize].traded,
        }
    }

    /// Waiting conditional orders of `account` on `instrument`.
    pub(crate) fn conditional_count(&self, account: AccountId, instrument: InstrumentId) -> usize {
        self.ix
            .conditional_counts
            .get(&(account, instrument))
            .map_or(0, |n| *n as usize)
    }

    pub(crate) fn place_conditional(&mut self, o: &ConditionalOrder, out: &mut Vec<Event>) -> Res {
        let k = self.user_idx(o.account)?;
        let spec = self.spec(o.instrument)?;
        self.check_order_account(k, spec, o.order_id)?;
        if self.state.orders.contains_key(&o.order_id)
            || self.state.conditionals.contains_key(&o.order_id)
        {
            return Err(RejectReason::DuplicateOrderId);
        }
        let trailing = o.kind == ConditionalKind::TrailingStop;
        if trailing {
            if !callback_in_range(o.callback_rate) {
                return Err(RejectReason::CallbackRateOutOfRange);
            }
            if o.trigger.is_negative() || o.trigger > MAX_PRICE {
                return Err(RejectReason::PriceTooLarge);
            }
        } else {
            crate::prices::check_price(o.trigger)?;
        }
        if is_limit(o.kind) {
            check_ticks(spec, o.price)?;
        }
        if !o.close_position {
            if o.qty.0 <= 0 {
                return Err(RejectReason::QtyNotPositive);
            }
            if o.qty < spec.min_qty {
                return Err(RejectReason::QtyBelowMin);
            }
            if o.qty > spec.max_qty {
                return Err(RejectReason::QtyAboveMax);
            }
        }
        if self.open_orders_on(k, o.instrument) >= spec.max_open_orders as usize {
            return Err(RejectReason::TooManyOpenOrders);
        }
        let now = self
            .working_price(o.instrument, o.working)
            .ok_or(match o.working {
                WorkingPrice::Mark => RejectReason::NoMarkPrice,
                WorkingPrice::LastTrade => RejectReason::NoLastTradePrice,
            })?;
        let extreme = match direction(o.kind, o.side) {
            Some(d) if reached(&d, now, o.trigger) => {
                return Err(RejectReason::WouldTriggerImmediately)
            }
            Some(_) => None,
            // Active now unless an activation price is still ahead.
            None => {
                let ahead = match o.side {
                    Side::Sell => o.trigger > now,
                    Side::Buy => o.trigger.is_positive() && o.trigger < now,
                };
                (!ahead).then_some(now)
            }
        };
        // What the kind ignores is stored as zero: the limit price of a market kind, the
        // quantity of a close-position order (taken from the position at the trigger).
        let mut order = o.clone();
        if !is_limit(o.kind) {
            order.price = PriceTicks(0);
        }
        if o.close_position {
            order.qty = QtyLots(0);
        }
        let qty = spec.qty_of(order.qty);
        let c = Conditional {
            order,
            placed_seq: self.state.last_seq,
            extreme,
        };
        self.ix.triggers[o.instrument.0 as usize][slot(o.working)].insert(&c);
        *self
            .ix
            .conditional_counts
            .get_or_insert_with((o.account, o.instrument), || 0) += 1;
        self.ix
            .conditionals_by_account
            .get_or_insert_with(o.account, BTreeSet::new)
            .insert(o.order_id);
        self.state.conditionals.insert(o.order_id, c);
        out.push(Event::ConditionalPlaced {
            account: o.account,
            instrument: o.instrument,
            order_id: o.order_id,
            side: o.side,
            kind: o.kind,
            trigger: o.trigger,
            qty,
        });
        Ok(())
    }

    /// Takes a waiting conditional order out of the state and the indexes.
    fn take_conditional(&mut self, id: OrderId) -> Option<Conditional> {
        let c = self.state.conditionals.remove(&id)?;
        let o = &c.order;
        self.ix.triggers[o.instrument.0 as usize][slot(o.working)].remove(&c);
        let key = (o.account, o.instrument);
        if let Some(n) = self.ix.conditional_counts.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.ix.conditional_counts.remove(&key);
            }
        }
        if let Some(ids) = self.ix.conditionals_by_account.get_mut(&o.account) {
            ids.remove(&id);
            if ids.is_empty() {
                self.ix.conditionals_by_account.remove(&o.account);
            }
        }
        Some(c)
    }

    /// Cancels waiting conditional order `id` of `account`, if it is one: `None` when no
    /// conditional order has that id.
    pub(crate) fn cancel_conditional(
        &mut self,
        account: AccountId,
        id: OrderId,
        out: &mut Vec<Event>,
    ) -> Option<Res> {
        let c = self.state.conditionals.get(&id)?;
        if c.order.account != account {
            return Some(Err(RejectReason::NotOrderOwner));
        }
        self.drop_conditional(id, CancelReason::User, out);
        Some(Ok(()))
    }

    fn drop_conditional(&mut self, id: OrderId, reason: CancelReason, out: &mut Vec<Event>) {
        let c = self.take_conditional(id).expect("present");
        let spec = &self.state.config.instruments[c.order.instrument.0 as usize];
        out.push(Event::OrderCanceled {
            account: c.order.account,
            order_id: id,
            open_qty: spec.qty_of(c.order.qty),
            reason,
        });
    }

    /// Cancels every waiting conditional order of `account` on the instruments `filter`
    /// selects, in ascending id (cancel-all and the liquidation's first step, through
    /// `cancel_where`): O(the account's waiting orders).
    pub(crate) fn cancel_conditionals_where(
        &mut self,
        account: AccountId,
        filter: impl Fn(&InstrumentSpec) -> bool,
        reason: CancelReason,
        out: &mut Vec<Event>,
    ) {
        let Some(mine) = self.ix.conditionals_by_account.get(&account) else {
            return;
        };
        let cfg = &self.state.config;
        let ids: Vec<OrderId> = mine
            .iter()
            .filter(|id| {
                let i = self.state.conditionals[id].order.instrument;
                filter(&cfg.instruments[i.0 as usize])
            })
            .copied()
            .collect();
        for id in ids {
            self.drop_conditional(id, reason, out);
        }
    }

    /// Amends waiting conditional order `id`: its quantity, and the limit price of the
    /// `*Limit` kinds. `None` when no conditional order has that id.
    pub(crate) fn amend_conditional(
        &mut self,
        account: AccountId,
        id: OrderId,
        price: Option<PriceTicks>,
        qty: Option<QtyLots>,
        out: &mut Vec<Event>,
    ) -> Option<Res> {
        let o = self.state.conditionals.get(&id)?.order.clone();
        Some(self.amend_waiting(account, &o, price, qty, out))
    }

    fn amend_waiting(
        &mut self,
        account: AccountId,
        o: &ConditionalOrder,
        price: Option<PriceTicks>,
        qty: Option<QtyLots>,
        out: &mut Vec<Event>,
    ) -> Res {
        if o.account != account {
            return Err(RejectReason::NotOrderOwner);
        }
        let spec = &self.state.config.instruments[o.instrument.0 as usize];
        // A market kind has no limit price and a close-position order no quantity.
        let new_price = match price {
            Some(p) if is_limit(o.kind) => p,
            _ => o.price,
        };
        let new_qty = match qty {
            Some(q) if !o.close_position => q,
            _ => o.qty,
        };
        if new_price == o.price && new_qty == o.qty {
            return Err(RejectReason::AmendNoChange);
        }
        if is_limit(o.kind) {
            check_ticks(spec, new_price)?;
        }
        if !o.close_position {
            if new_qty.0 <= 0 {
                return Err(RejectReason::QtyNotPositive);
            }
            if new_qty < spec.min_qty {
                return Err(RejectReason::QtyBelowMin);
            }
            if new_qty > spec.max_qty {
                return Err(RejectReason::QtyAboveMax);
            }
        }
        out.push(Event::OrderAmended {
            order_id: o.order_id,
            price: spec.price_of(new_price),
            open_qty: spec.qty_of(new_qty),
            priority_kept: true,
        });
        let c = self
            .state
            .conditionals
            .get_mut(&o.order_id)
            .expect("present");
        c.order.price = new_price;
        c.order.qty = new_qty;
        Ok(())
    }

    /// Notes that a working price of `i` moved, if anything waits on it.
    #[inline]
    pub(crate) fn price_moved(&mut self, i: InstrumentId, w: WorkingPrice) {
        if !self.ix.triggers[i.0 as usize][slot(w)].is_empty() {
            self.tmp.moved.push((i, w));
        }
    }

    /// Fires every conditional order the moved working prices reached (module docs).
    pub(crate) fn run_triggers(&mut self, out: &mut Vec<Event>) {
        while let Some((i, w)) = self.tmp.moved.pop() {
            let Some(p) = self.working_price(i, w) else {
                continue;
            };
            let mut fired = self.ix.triggers[i.0 as usize][slot(w)].reached(p);
            fired.extend(self.trailing_fired(i, w, p));
            for id in fired {
                self.fire(id, p, out);
            }
        }
    }

    /// Moves every trailing stop of `(i, w)` with the price `p`: activation, the new
    /// extreme; returns those whose trigger `p` reached, in placement order.
    fn trailing_fired(&mut self, i: InstrumentId, w: WorkingPrice, p: Price) -> Vec<OrderId> {
        let ids: Vec<OrderId> = self.ix.triggers[i.0 as usize][slot(w)]
            .trailing
            .iter()
            .map(|k| k.1)
            .collect();
        let mut fired = Vec::new();
        for id in ids {
            let c = self.state.conditionals.get_mut(&id).expect("indexed");
            let o = &c.order;
            let extreme = match (c.extreme, o.side) {
                (None, Side::Sell) if p >= o.trigger => Some(p),
                (None, Side::Buy) if p <= o.trigger => Some(p),
                (None, _) => None,
                (Some(e), Side::Sell) => Some(e.max(p)),
                (Some(e), Side::Buy) => Some(e.min(p)),
            };
            c.extreme = extreme;
            if let Some(e) = extreme {
                let t = trailing_trigger(o.side, e, o.callback_rate);
                let d = match o.side {
                    Side::Sell => Direction::Falling,
                    Side::Buy => Direction::Rising,
                };
                if reached(&d, p, t) {
                    fired.push(id);
                }
            }
        }
        fired
    }

    /// Fires waiting order `id` at working price `p`: its order through the normal
    /// checks, or `ConditionalRejected`.
    fn fire(&mut self, id: OrderId, p: Price, out: &mut Vec<Event>) {
        let Some(c) = self.take_conditional(id) else {
            return;
        };
        let o = c.order;
        out.push(Event::ConditionalTriggered {
            account: o.account,
            order_id: id,
            price: p,
        });
        let limit = is_limit(o.kind);
        let order = NewOrder {
            account: o.account,
            instrument: o.instrument,
            order_id: id,
            side: o.side,
            order_type: if limit {
                OrderType::Limit
            } else {
                OrderType::Market
            },
            tif: if limit { o.tif } else { TimeInForce::Ioc },
            price: o.price,
            qty: o.qty,
            reduce_only: o.reduce_only,
            close_position: o.close_position,
            stp: o.stp,
        };
        let start = out.len();
        if let Err(reason) = self.place_order(&order, out) {
            debug_assert_eq!(out.len(), start, "a refused order emitted events");
            out.push(Event::ConditionalRejected {
                account: o.account,
                order_id: id,
                reason,
                code: reason.code(),
            });
        }
    }
}
