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
//!   ones that fire when it falls), and O(g·log n + activated + fired) amortized in the
//!   waiting trailing stops, g being the callback rates in use on that price (at most
//!   100 per side: callbacks are multiples of 0.1%, as Binance's one-decimal percent).
//!
//! # Trailing stops without visiting each one
//!
//! An active sell trailing stop's extreme is the highest working price since it
//! activated, so orders activated earlier have extremes at least as high: within one
//! (instrument, working price, side, callback) *group*, the active orders sorted by
//! activation number fall into *segments* of equal extreme, the extremes strictly
//! decreasing from the oldest segment to the newest (for buys, lowest prices, strictly
//! increasing). The state keeps per group only the segments (`State::trails`: first
//! activation number → extreme) and per order its activation number. A price `p`:
//!
//! 1. *merges* the newest segments whose extreme `p` passes into one at `p` (each
//!    segment merged away was pushed by an earlier step: amortized O(1));
//! 2. *activates* the trailing stops whose activation price `p` reached (sorted like the
//!    stops), each joining the newest segment if its extreme is `p`, else starting one;
//! 3. *fires*, per group, the oldest segments whose trigger `p` reached (a trigger is
//!    monotone in the extreme): the orders with activation numbers below the first
//!    segment left, a range of the group's index. Fired trailing stops go in placement
//!    order.
//!
//! A segment with no order left is removed when its last order goes (cancel, fire,
//! liquidation), so segments never outnumber orders; the restore refuses a state whose
//! segments are empty, out of order or missing.

use crate::engine::{Engine, Res};
use crate::state::Conditional;
use perpcore_types::*;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// A group of trailing stops sharing segments: (instrument, working price slot, sell,
/// callback rate). See the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, bincode::Encode, bincode::Decode)]
pub struct TrailKey {
    pub instrument: InstrumentId,
    pub working: u8,
    pub sell: bool,
    pub callback: Rate,
}

impl TrailKey {
    fn of(o: &ConditionalOrder) -> TrailKey {
        TrailKey {
            instrument: o.instrument,
            working: slot_u8(o.working),
            sell: o.side == Side::Sell,
            callback: o.callback_rate,
        }
    }

    /// Every group of `(i, w)`.
    fn range(i: InstrumentId, w: WorkingPrice) -> std::ops::RangeInclusive<TrailKey> {
        let k = |sell, callback| TrailKey {
            instrument: i,
            working: slot_u8(w),
            sell,
            callback,
        };
        k(false, Rate(i64::MIN))..=k(true, Rate(i64::MAX))
    }
}

/// A group's segments: first activation number → extreme (module docs).
pub type Segments = BTreeMap<u64, Price>;

/// Whether `p` passes extreme `e` (a new high for sells, a new low for buys).
fn passes(sell: bool, p: Price, e: Price) -> bool {
    if sell {
        p > e
    } else {
        p < e
    }
}

/// Step 1: merges the newest segments `p` passes into one at `p`.
fn merge(segs: &mut Segments, sell: bool, p: Price) {
    let mut first = None;
    while let Some(entry) = segs.last_entry() {
        if !passes(sell, p, *entry.get()) {
            break;
        }
        first = Some(entry.remove_entry().0);
    }
    if let Some(start) = first {
        segs.insert(start, p);
    }
}

/// The waiting conditional orders of one instrument and working price, by how they fire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Triggers {
    /// Fire when the price rises to the trigger: buy stops, sell take-profits.
    rising: BTreeSet<(Price, u64, OrderId)>,
    /// Fire when the price falls to the trigger: sell stops, buy take-profits.
    falling: BTreeSet<(Reverse<Price>, u64, OrderId)>,
    /// Trailing stops waiting for their activation price: sells activate when the price
    /// rises to it, buys when it falls to it.
    activate_rising: BTreeSet<(Price, u64, OrderId)>,
    activate_falling: BTreeSet<(Reverse<Price>, u64, OrderId)>,
    /// Active trailing stops per (sell, callback), by activation number.
    active: BTreeMap<(bool, Rate), BTreeSet<(u64, OrderId)>>,
}

impl Triggers {
    pub(crate) fn is_empty(&self) -> bool {
        self.rising.is_empty()
            && self.falling.is_empty()
            && self.activate_rising.is_empty()
            && self.activate_falling.is_empty()
            && self.active.is_empty()
    }

    fn insert(&mut self, c: &Conditional) {
        let o = &c.order;
        let (t, seq, id) = (o.trigger, c.placed_seq, o.order_id);
        let sell = o.side == Side::Sell;
        match (direction(o.kind, o.side), c.activation) {
            (Some(Direction::Rising), _) => self.rising.insert((t, seq, id)),
            (Some(Direction::Falling), _) => self.falling.insert((Reverse(t), seq, id)),
            (None, None) if sell => self.activate_rising.insert((t, seq, id)),
            (None, None) => self.activate_falling.insert((Reverse(t), seq, id)),
            (None, Some(a)) => self
                .active
                .entry((sell, o.callback_rate))
                .or_default()
                .insert((a, id)),
        };
    }

    fn remove(&mut self, c: &Conditional) {
        let o = &c.order;
        let (t, seq, id) = (o.trigger, c.placed_seq, o.order_id);
        let sell = o.side == Side::Sell;
        match (direction(o.kind, o.side), c.activation) {
            (Some(Direction::Rising), _) => self.rising.remove(&(t, seq, id)),
            (Some(Direction::Falling), _) => self.falling.remove(&(Reverse(t), seq, id)),
            (None, None) if sell => self.activate_rising.remove(&(t, seq, id)),
            (None, None) => self.activate_falling.remove(&(Reverse(t), seq, id)),
            (None, Some(a)) => {
                let group = (sell, o.callback_rate);
                let set = self.active.get_mut(&group);
                let removed = set.is_some_and(|s| s.remove(&(a, id)));
                if self.active.get(&group).is_some_and(BTreeSet::is_empty) {
                    self.active.remove(&group);
                }
                removed
            }
        };
    }

    /// Whether an active trailing stop of `group` has an activation number in `range`.
    fn any_active(&self, group: (bool, Rate), range: std::ops::Range<u64>) -> bool {
        self.active.get(&group).is_some_and(|s| {
            s.range((range.start, OrderId(0))..(range.end, OrderId(0)))
                .next()
                .is_some()
        })
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
/// counts per account and instrument; the ids per account. Refuses trailing-stop
/// segments that are empty, not strictly ordered by extreme, or missing for an active
/// order, and activation numbers not below the state's next one.
pub(crate) fn rebuild_triggers(
    state: &crate::state::State,
) -> Result<(Vec<[Triggers; 2]>, ConditionalCounts, ConditionalsByAccount), crate::RestoreError> {
    use crate::RestoreError::{ShapeMismatch, UnknownInstrument};
    let mut triggers = vec![<[Triggers; 2]>::default(); state.config.instruments.len()];
    let mut counts = LookupMap::default();
    let mut by_account = LookupMap::default();
    for c in state.conditionals.values() {
        let o = &c.order;
        let trailing = o.kind == ConditionalKind::TrailingStop;
        match c.activation {
            Some(a) if !trailing || a >= state.next_activation => {
                return Err(ShapeMismatch("trailing-stop activation numbers"))
            }
            Some(a) => {
                let segs = state.trails.get(&TrailKey::of(o));
                if segs.is_none_or(|s| s.range(..=a).next().is_none()) {
                    return Err(ShapeMismatch("trailing-stop segments"));
                }
            }
            None => {}
        }
        triggers
            .get_mut(o.instrument.0 as usize)
            .ok_or(UnknownInstrument(o.instrument))?[slot(o.working)]
        .insert(c);
        *counts.get_or_insert_with((o.account, o.instrument), || 0) += 1;
        by_account
            .get_or_insert_with(o.account, BTreeSet::new)
            .insert(o.order_id);
    }
    for (key, segs) in &state.trails {
        let t = triggers
            .get(key.instrument.0 as usize)
            .ok_or(UnknownInstrument(key.instrument))?;
        let t = t
            .get(usize::from(key.working))
            .ok_or(ShapeMismatch("trailing-stop segments"))?;
        let bounds: Vec<u64> = segs.keys().copied().chain([u64::MAX]).collect();
        let ordered = segs
            .values()
            .zip(segs.values().skip(1))
            .all(|(older, newer)| passes(key.sell, *older, *newer));
        let full = bounds
            .windows(2)
            .all(|w| t.any_active((key.sell, key.callback), w[0]..w[1]));
        if segs.is_empty() || !ordered || !full {
            return Err(ShapeMismatch("trailing-stop segments"));
        }
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

fn slot_u8(w: WorkingPrice) -> u8 {
    match w {
        WorkingPrice::Mark => 0,
        WorkingPrice::LastTrade => 1,
    }
}

fn slot(w: WorkingPrice) -> usize {
    usize::from(slot_u8(w))
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

/// Binance's callback rates for trailing stops: 0.1% to 10% in steps of 0.1% (its
/// `callbackRate` is a percent with one decimal). The steps bound the groups a price
/// move visits (module docs).
fn callback_in_range(r: Rate) -> bool {
    let step = RATE_SCALE / 1_000;
    Rate(step) <= r && r <= Rate(RATE_SCALE / 10) && r.raw() % step == 0
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
        let active_now = match direction(o.kind, o.side) {
            Some(d) if reached(&d, now, o.trigger) => {
                return Err(RejectReason::WouldTriggerImmediately)
            }
            Some(_) => false,
            // Active now unless an activation price is still ahead.
            None => match o.side {
                Side::Sell => o.trigger <= now,
                Side::Buy => !(o.trigger.is_positive() && o.trigger < now),
            },
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
        let activation = active_now.then(|| self.join_trail(TrailKey::of(o), now));
        let c = Conditional {
            order,
            placed_seq: self.state.last_seq,
            activation,
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
        let t = &mut self.ix.triggers[o.instrument.0 as usize][slot(o.working)];
        t.remove(&c);
        if let Some(a) = c.activation {
            // Drop its segment if it was the segment's last order (module docs).
            let key = TrailKey::of(o);
            if let Some(segs) = self.state.trails.get_mut(&key) {
                if let Some((&start, _)) = segs.range(..=a).next_back() {
                    let end = segs.range(start + 1..).next().map_or(u64::MAX, |(k, _)| *k);
                    if !t.any_active((key.sell, key.callback), start..end) {
                        segs.remove(&start);
                        if segs.is_empty() {
                            self.state.trails.remove(&key);
                        }
                    }
                }
            }
        }
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

    /// Gives a trailing stop of group `key` becoming active at price `p` its activation
    /// number, in the group's newest segment (merged to `p` first) if that segment's
    /// extreme is `p`, else in a new one.
    fn join_trail(&mut self, key: TrailKey, p: Price) -> u64 {
        let a = self.state.next_activation;
        self.state.next_activation += 1;
        let segs = self.state.trails.entry(key).or_default();
        merge(segs, key.sell, p);
        if segs.last_key_value().is_none_or(|(_, e)| *e != p) {
            segs.insert(a, p);
        }
        a
    }

    /// Moves the trailing stops of `(i, w)` with the price `p` (module docs: merge,
    /// activate, fire); returns the fired ones in placement order.
    fn trailing_fired(&mut self, i: InstrumentId, w: WorkingPrice, p: Price) -> Vec<OrderId> {
        for (key, segs) in self.state.trails.range_mut(TrailKey::range(i, w)) {
            merge(segs, key.sell, p);
        }
        let t = &mut self.ix.triggers[i.0 as usize][slot(w)];
        let mut due: Vec<(u64, OrderId)> = Vec::new();
        while let Some(&(a, seq, id)) = t.activate_rising.first() {
            if a > p {
                break;
            }
            t.activate_rising.remove(&(a, seq, id));
            due.push((seq, id));
        }
        while let Some(&(Reverse(a), seq, id)) = t.activate_falling.first() {
            if a < p {
                break;
            }
            t.activate_falling.remove(&(Reverse(a), seq, id));
            due.push((seq, id));
        }
        due.sort_unstable();
        for (_, id) in due {
            let key = TrailKey::of(&self.state.conditionals[&id].order);
            let a = self.join_trail(key, p);
            let c = self.state.conditionals.get_mut(&id).expect("indexed");
            c.activation = Some(a);
            self.ix.triggers[i.0 as usize][slot(w)].insert(c);
        }
        let t = &self.ix.triggers[i.0 as usize][slot(w)];
        let mut fired: Vec<(u64, OrderId)> = Vec::new();
        let mut emptied = Vec::new();
        for (key, segs) in self.state.trails.range_mut(TrailKey::range(i, w)) {
            let side = if key.sell { Side::Sell } else { Side::Buy };
            let d = if key.sell {
                Direction::Falling
            } else {
                Direction::Rising
            };
            let mut any = false;
            while let Some(entry) = segs.first_entry() {
                if !reached(&d, p, trailing_trigger(side, *entry.get(), key.callback)) {
                    break;
                }
                entry.remove();
                any = true;
            }
            if !any {
                continue;
            }
            let end = segs.first_key_value().map_or(u64::MAX, |(k, _)| *k);
            if let Some(set) = t.active.get(&(key.sell, key.callback)) {
                let below = set.range(..(end, OrderId(0)));
                fired.extend(below.map(|&(_, id)| (self.state.conditionals[&id].placed_seq, id)));
            }
            if segs.is_empty() {
                emptied.push(*key);
            }
        }
        for key in emptied {
            self.state.trails.remove(&key);
        }
        fired.sort_unstable();
        fired.into_iter().map(|(_, id)| id).collect()
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
