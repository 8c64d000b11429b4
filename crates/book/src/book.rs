//! [`Book`]: one price-time priority limit order book (one instrument).
//!
//! Owns: the resting orders of one instrument, their queue positions and the matching
//! of an incoming taker against them (limit, TIF, post-only, fill-or-kill, self-trade
//! prevention). Must never: look at margin, positions, fees or balances (the engine does
//! risk before and settlement after), read a clock, use floats or randomness, let
//! `HashMap` iteration order reach any output, or panic on bad input (unknown ids and
//! bad quantities come back as `None`/`Err` with nothing changed).
//!
//! Layout (no allocation per match in steady state):
//! - orders live in an arena (`Vec<Node>` + free list, `u32` slot indices); each node
//!   knows its level slot, so cancel and reduce never search;
//! - levels live in a second slab (`Vec<Level>` + free list); each level is an
//!   intrusive doubly linked FIFO over the order arena;
//! - per side, a `BTreeMap<PriceTicks, level slot>` gives price order (touched only
//!   when a level appears or disappears, and for ordered walks), a `LookupMap` gives
//!   O(1) price → level lookup when resting, and the best level is cached;
//! - a `LookupMap<OrderId, slot>` finds orders. Hash maps are lookup only
//!   (`perpcore_types::LookupMap` has no iteration): nothing iterates them into an output.
//!
//! Canonical state encoding ([`Book::hash_into`]), identical for any two books holding
//! the same orders in the same queue positions, whatever their history:
//!
//! ```text
//! for side in [bids, asks]:
//!     u64 LE  number of orders on the side
//!     for each level, best first (bids high→low, asks low→high), each level FIFO:
//!         u64 LE order_id | u64 LE account | i64 LE price | i64 LE open_qty | u8 reduce_only (0/1)
//! ```

use crate::order::{BookError, Fill, MatchResult, RestingOrder, Taker, TakerOutcome, Tif};
use perpcore_types::{LookupMap, OrderId, PriceTicks, QtyLots, Side, StpMode};
use std::collections::BTreeMap;

/// "No slot" link value.
const NIL: u32 = u32::MAX;

/// Where a resting order sits in a book's arena (see `Book::find`). Opaque; valid until
/// the book next changes, and checked against the order id when used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(u32);

#[derive(Clone, Debug)]
struct Node {
    order: RestingOrder,
    prev: u32,
    next: u32,
    /// Level slot holding this order (meaningless while the node is free).
    level: u32,
}

/// One price level: a FIFO of arena slots and its total open quantity. A free level
/// slot has `head == NIL`.
#[derive(Clone, Copy, Debug)]
struct Level {
    price: PriceTicks,
    head: u32,
    tail: u32,
    total: QtyLots,
}

/// One side of the book.
#[derive(Clone, Debug, Default)]
struct Half {
    /// Price order of the live levels of this side.
    prices: BTreeMap<PriceTicks, u32>,
    /// Same content as `prices`, for O(1) lookup. Never iterated.
    lookup: LookupMap<PriceTicks, u32>,
    /// Best level (highest bid / lowest ask): price and level slot.
    best: Option<(PriceTicks, u32)>,
    orders: u64,
}

impl Half {
    fn recompute_best(&mut self, is_bid: bool) {
        let e = if is_bid {
            self.prices.last_key_value()
        } else {
            self.prices.first_key_value()
        };
        self.best = e.map(|(p, l)| (*p, *l));
    }

    fn best_price(&self) -> Option<PriceTicks> {
        self.best.map(|(p, _)| p)
    }
}

/// Does a maker at `maker_price` satisfy a taker on `taker_side` limited at `limit`?
#[inline]
fn crosses(taker_side: Side, limit: PriceTicks, maker_price: PriceTicks) -> bool {
    match taker_side {
        Side::Buy => maker_price <= limit,
        Side::Sell => maker_price >= limit,
    }
}

/// The slabs, split from the per-side maps so both can be borrowed mutably at once.
#[derive(Clone, Debug, Default)]
struct Store {
    arena: Vec<Node>,
    free: Vec<u32>,
    levels: Vec<Level>,
    free_levels: Vec<u32>,
}

impl Store {
    /// Unlinks order slot `idx` from its level, subtracts its open quantity from the
    /// level total, and frees the slot. Returns (the order, its level is now empty).
    #[inline]
    fn remove_order(&mut self, idx: u32) -> (RestingOrder, bool) {
        let (order, emptied) = self.unlink(idx);
        let n = &mut self.arena[idx as usize];
        n.order.open_qty = QtyLots::ZERO; // marks the slot free
        self.free.push(idx);
        (order, emptied)
    }

    /// Unlinks order slot `idx` from its level and subtracts its open quantity from the
    /// level total; the slot stays allocated. Returns (the order, its level is now empty).
    /// Always inlined: it is most of `remove_order` and of `requeue_at` (every amend).
    #[inline(always)]
    fn unlink(&mut self, idx: u32) -> (RestingOrder, bool) {
        let (order, prev, next, li) = {
            let n = &self.arena[idx as usize];
            (n.order, n.prev, n.next, n.level)
        };
        assert!(order.open_qty.0 > 0, "remove_order: slot {idx} is not live");
        let level = &mut self.levels[li as usize];
        if prev == NIL {
            assert!(
                level.head == idx,
                "remove_order: slot {idx} has no prev but is not the head"
            );
            level.head = next;
        } else {
            self.arena[prev as usize].next = next;
        }
        if next == NIL {
            assert!(
                level.tail == idx,
                "remove_order: slot {idx} has no next but is not the tail"
            );
            level.tail = prev;
        } else {
            self.arena[next as usize].prev = prev;
        }
        level.total -= order.open_qty;
        let emptied = level.head == NIL;
        if emptied {
            assert!(
                level.total.is_zero(),
                "remove_order: emptied level keeps quantity"
            );
        } else {
            assert!(
                level.total.0 > 0,
                "remove_order: live level has no quantity"
            );
        }
        let n = &mut self.arena[idx as usize];
        n.prev = NIL;
        n.next = NIL;
        (order, emptied)
    }

    /// A fresh order slot holding `order`, unlinked.
    #[inline]
    fn alloc_order(&mut self, order: RestingOrder) -> u32 {
        let node = Node {
            order,
            prev: NIL,
            next: NIL,
            level: NIL,
        };
        match self.free.pop() {
            Some(i) => {
                debug_assert!(
                    self.arena[i as usize].order.open_qty.is_zero(),
                    "alloc_order: free slot is live"
                );
                self.arena[i as usize] = node;
                i
            }
            None => {
                let i = u32::try_from(self.arena.len())
                    .ok()
                    .filter(|&i| i != NIL)
                    .expect("alloc_order: arena is full (u32 slots)");
                self.arena.push(node);
                i
            }
        }
    }

    /// A fresh, empty level slot at `price`.
    #[inline]
    fn alloc_level(&mut self, price: PriceTicks) -> u32 {
        let level = Level {
            price,
            head: NIL,
            tail: NIL,
            total: QtyLots::ZERO,
        };
        match self.free_levels.pop() {
            Some(i) => {
                self.levels[i as usize] = level;
                i
            }
            None => {
                let i = u32::try_from(self.levels.len())
                    .ok()
                    .filter(|&i| i != NIL)
                    .expect("alloc_level: level slab is full (u32 slots)");
                self.levels.push(level);
                i
            }
        }
    }
}

/// Removes the (empty) level `li` at `price` from `half` and frees its slot.
#[inline]
fn drop_level(half: &mut Half, store: &mut Store, is_bid: bool, price: PriceTicks, li: u32) {
    let removed = half.prices.remove(&price);
    let looked = half.lookup.remove(&price);
    assert!(
        removed == Some(li) && looked == Some(li),
        "drop_level: maps disagree at {price:?}"
    );
    store.free_levels.push(li);
    if half.best.is_some_and(|(p, _)| p == price) {
        half.recompute_best(is_bid);
    }
}

/// A price-time priority limit order book. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct Book {
    store: Store,
    index: LookupMap<OrderId, u32>,
    bids: Half,
    asks: Half,
}

impl Book {
    pub fn new() -> Self {
        Self::default()
    }

    /// A book with room for `orders` resting orders before it reallocates.
    pub fn with_capacity(orders: usize) -> Self {
        let mut index = LookupMap::default();
        index.reserve(orders);
        Book {
            store: Store {
                arena: Vec::with_capacity(orders),
                free: Vec::with_capacity(orders),
                levels: Vec::with_capacity(orders),
                free_levels: Vec::with_capacity(orders),
            },
            index,
            bids: Half::default(),
            asks: Half::default(),
        }
    }

    #[inline]
    fn half(&self, side: Side) -> &Half {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    /// Matches `taker` and, for a GTC or post-only remainder, rests it. Clears `out`
    /// first and writes fills, STP-expired makers and the outcome into it.
    ///
    /// Errors (nothing changed; `out` holds no fills and outcome
    /// `Expired { unfilled: taker.qty }`): `NonPositiveQty` if `taker.qty <= 0`, then
    /// `DuplicateOrderId` if an order with `taker.order_id` is resting (whatever the TIF).
    /// The engine checks both first, so either is a bug upstream; the book refuses rather
    /// than corrupt its index.
    pub fn submit(&mut self, taker: &Taker, out: &mut MatchResult) -> Result<(), BookError> {
        out.reset(taker.qty);
        if taker.qty.0 <= 0 {
            return Err(BookError::NonPositiveQty(taker.qty));
        }
        if self.index.contains_key(&taker.order_id) {
            return Err(BookError::DuplicateOrderId(taker.order_id));
        }
        let count_before = self.orders_count();

        let opposite_best = self.half(taker.side.opposite()).best_price();
        let takes = opposite_best.is_some_and(|p| crosses(taker.side, taker.limit, p));
        match taker.tif {
            Tif::PostOnly if takes => {
                out.outcome = TakerOutcome::PostOnlyRejected;
                return Ok(());
            }
            Tif::Fok if !takes || !self.fok_fillable(taker) => {
                out.outcome = TakerOutcome::FokRejected;
                return Ok(());
            }
            _ => {}
        }

        let (remaining, stp_stopped) = if takes {
            self.match_taker(taker, out)
        } else {
            (taker.qty, false)
        };
        assert!(remaining.0 >= 0, "submit: taker overfilled");

        out.outcome = if remaining.is_zero() {
            TakerOutcome::Filled
        } else if stp_stopped {
            TakerOutcome::SelfTradeExpired {
                unfilled: remaining,
            }
        } else {
            match taker.tif {
                Tif::Gtc | Tif::PostOnly => {
                    self.rest(RestingOrder {
                        order_id: taker.order_id,
                        account: taker.account,
                        side: taker.side,
                        price: taker.limit,
                        open_qty: remaining,
                        reduce_only: taker.reduce_only,
                    });
                    TakerOutcome::Rested {
                        open_qty: remaining,
                    }
                }
                Tif::Ioc => TakerOutcome::Expired {
                    unfilled: remaining,
                },
                Tif::Fok => panic!(
                    "submit: FOK {} passed its pre-check but left {remaining:?}",
                    taker.order_id
                ),
            }
        };

        // Postconditions (O(1), or O(fills) in debug builds).
        debug_assert_eq!(
            out.filled_qty(),
            taker.qty - remaining,
            "submit: fills do not add up"
        );
        if taker.tif == Tif::PostOnly {
            assert!(out.fills.is_empty(), "submit: post-only took liquidity");
        }
        let rested = u64::from(matches!(out.outcome, TakerOutcome::Rested { .. }));
        let removed = out.fills.iter().filter(|f| f.maker_done).count() + out.expired_makers.len();
        assert_eq!(
            self.orders_count(),
            count_before + rested - removed as u64,
            "submit: order count drifted"
        );
        if let (Some(b), Some(a)) = (self.best_bid(), self.best_ask()) {
            assert!(b < a, "submit: book crossed (bid {b:?} >= ask {a:?})");
        }
        Ok(())
    }

    /// Fill-or-kill pre-check, read-only: is there enough liquidity of other accounts
    /// within the limit, reached before STP would stop the taker?
    fn fok_fillable(&self, taker: &Taker) -> bool {
        let need = taker.qty.0;
        let mut have: i64 = 0;
        // Some(verdict) ends the walk.
        let mut visit = |li: u32| -> Option<bool> {
            let mut idx = self.store.levels[li as usize].head;
            while idx != NIL {
                let n = &self.store.arena[idx as usize];
                if n.order.account == taker.account {
                    match taker.stp {
                        StpMode::ExpireTaker | StpMode::ExpireBoth => return Some(false),
                        StpMode::ExpireMaker => {}
                    }
                } else {
                    have = have.saturating_add(n.order.open_qty.0);
                    if have >= need {
                        return Some(true);
                    }
                }
                idx = n.next;
            }
            None
        };
        match taker.side {
            Side::Buy => {
                for (_, &li) in self.asks.prices.range(..=taker.limit) {
                    if let Some(v) = visit(li) {
                        return v;
                    }
                }
            }
            Side::Sell => {
                for (_, &li) in self.bids.prices.range(taker.limit..).rev() {
                    if let Some(v) = visit(li) {
                        return v;
                    }
                }
            }
        }
        false
    }

    /// Walks the opposite side while it crosses and the taker has quantity left.
    /// Returns (remaining, stopped by self-trade prevention).
    fn match_taker(&mut self, taker: &Taker, out: &mut MatchResult) -> (QtyLots, bool) {
        let Book {
            store,
            index,
            bids,
            asks,
        } = self;
        let (opp, opp_is_bid) = match taker.side {
            Side::Buy => (asks, false),
            Side::Sell => (bids, true),
        };
        let mut remaining = taker.qty.0;
        let mut stp_stopped = false;

        while remaining > 0 && !stp_stopped {
            let Some((best, li)) = opp.best else { break };
            if !crosses(taker.side, taker.limit, best) {
                break;
            }
            let mut emptied = false;
            while remaining > 0 && !emptied && !stp_stopped {
                let idx = store.levels[li as usize].head;
                assert!(idx != NIL, "match: best level {best:?} is empty");
                let node = &mut store.arena[idx as usize];
                if node.order.account == taker.account {
                    if taker.stp == StpMode::ExpireTaker {
                        stp_stopped = true;
                        break;
                    }
                    // ExpireMaker / ExpireBoth: the maker leaves the book.
                    let (maker, e) = store.remove_order(idx);
                    emptied = e;
                    index.remove(&maker.order_id);
                    opp.orders -= 1;
                    out.expired_makers.push(maker);
                    if taker.stp == StpMode::ExpireBoth {
                        stp_stopped = true;
                    }
                    continue;
                }
                let maker_open = node.order.open_qty.0;
                let q = remaining.min(maker_open);
                assert!(q > 0, "match: empty maker {}", node.order.order_id);
                remaining -= q;
                let done = maker_open == q;
                out.fills.push(Fill {
                    maker_order: node.order.order_id,
                    maker_account: node.order.account,
                    price: best,
                    qty: QtyLots(q),
                    maker_remaining: QtyLots(maker_open - q),
                    maker_done: done,
                    maker_reduce_only: node.order.reduce_only,
                });
                if done {
                    let id = node.order.order_id;
                    let (_, e) = store.remove_order(idx);
                    emptied = e;
                    index.remove(&id);
                    opp.orders -= 1;
                } else {
                    node.order.open_qty.0 = maker_open - q;
                    store.levels[li as usize].total.0 -= q;
                }
            }
            if emptied {
                drop_level(opp, store, opp_is_bid, best, li);
            }
        }
        (QtyLots(remaining), stp_stopped)
    }

    /// Puts `order` at the back of its level. Caller guarantees a fresh id, open_qty > 0
    /// and that it does not cross.
    fn rest(&mut self, order: RestingOrder) {
        assert!(order.open_qty.0 > 0, "rest: open_qty must be > 0");
        let idx = self.store.alloc_order(order);
        let prior = self.index.insert(order.order_id, idx);
        assert!(
            prior.is_none(),
            "rest: duplicate order id {}",
            order.order_id
        );
        self.link(idx);
    }

    /// Links the unlinked, allocated slot `idx` at the back of the level at its order's
    /// price, creating the level if needed. Caller guarantees it does not cross.
    /// Always inlined: it is half of `rest` and of `requeue_at` (every amend).
    #[inline(always)]
    fn link(&mut self, idx: u32) {
        let order = self.store.arena[idx as usize].order;
        let (half, is_bid) = match order.side {
            Side::Buy => (&mut self.bids, true),
            Side::Sell => (&mut self.asks, false),
        };
        let store = &mut self.store;
        let li = match half.lookup.get(&order.price) {
            Some(&li) => li,
            None => {
                let li = store.alloc_level(order.price);
                half.lookup.insert(order.price, li);
                let prior = half.prices.insert(order.price, li);
                assert!(
                    prior.is_none(),
                    "rest: level maps disagree at {:?}",
                    order.price
                );
                let better = match half.best {
                    None => true,
                    Some((b, _)) if is_bid => order.price > b,
                    Some((b, _)) => order.price < b,
                };
                if better {
                    half.best = Some((order.price, li));
                }
                li
            }
        };
        let level = &mut store.levels[li as usize];
        assert!(
            level.price == order.price,
            "rest: level slot holds another price"
        );
        let tail = level.tail;
        if tail == NIL {
            level.head = idx;
        } else {
            store.arena[tail as usize].next = idx;
            store.arena[idx as usize].prev = tail;
        }
        level.tail = idx;
        level.total += order.open_qty;
        store.arena[idx as usize].level = li;
        half.orders += 1;
    }

    /// Removes a resting order. `None` (nothing changed) for an unknown id.
    pub fn cancel(&mut self, id: OrderId) -> Option<RestingOrder> {
        let idx = self.index.remove(&id)?;
        let li = self.store.arena[idx as usize].level;
        let (order, emptied) = self.store.remove_order(idx);
        assert!(
            order.order_id == id,
            "cancel: index points at a stale slot for {id}"
        );
        let (half, is_bid) = match order.side {
            Side::Buy => (&mut self.bids, true),
            Side::Sell => (&mut self.asks, false),
        };
        if emptied {
            drop_level(half, &mut self.store, is_bid, order.price, li);
        }
        half.orders -= 1;
        Some(order)
    }

    /// Moves a resting order to the back of the queue at `price` with `open_qty`: an
    /// amend that loses priority, without a match. Equivalent to `cancel` followed by a
    /// GTC `submit` of the same order that rests without trading, but keeps the order's
    /// slot and index entry. Returns the order as it now rests. Errors (nothing changed):
    /// `UnknownOrder`, `NonPositiveQty`, `WouldCross` (the new price reaches the other
    /// side: the caller cancels and submits, so the order can match).
    pub fn requeue(
        &mut self,
        id: OrderId,
        price: PriceTicks,
        open_qty: QtyLots,
    ) -> Result<RestingOrder, BookError> {
        let slot = self.find(id).ok_or(BookError::UnknownOrder(id))?.0;
        self.requeue_at(slot, id, price, open_qty)
    }

    /// A resting order and its place in the book, for a following `requeue_at`
    /// without a second lookup. The place is valid until the book next changes.
    #[inline]
    pub fn find(&self, id: OrderId) -> Option<(Slot, &RestingOrder)> {
        self.index
            .get(&id)
            .map(|&i| (Slot(i), &self.store.arena[i as usize].order))
    }

    /// `requeue` of the order `find` placed at `slot`. `UnknownOrder` (nothing changed)
    /// if that place no longer holds a live order `id`.
    pub fn requeue_at(
        &mut self,
        slot: Slot,
        id: OrderId,
        price: PriceTicks,
        open_qty: QtyLots,
    ) -> Result<RestingOrder, BookError> {
        let idx = slot.0;
        match self.store.arena.get(idx as usize) {
            Some(n) if n.order.order_id == id && n.order.open_qty.0 > 0 => {}
            _ => return Err(BookError::UnknownOrder(id)),
        }
        if open_qty.0 <= 0 {
            return Err(BookError::NonPositiveQty(open_qty));
        }
        let side = self.store.arena[idx as usize].order.side;
        if self
            .half(side.opposite())
            .best_price()
            .is_some_and(|p| crosses(side, price, p))
        {
            return Err(BookError::WouldCross(id));
        }
        let li = self.store.arena[idx as usize].level;
        let (old, emptied) = self.store.unlink(idx);
        let (half, is_bid) = match side {
            Side::Buy => (&mut self.bids, true),
            Side::Sell => (&mut self.asks, false),
        };
        if emptied {
            drop_level(half, &mut self.store, is_bid, old.price, li);
        }
        // `link` counts the order in again.
        half.orders -= 1;
        let n = &mut self.store.arena[idx as usize];
        n.order.price = price;
        n.order.open_qty = open_qty;
        let order = n.order;
        self.link(idx);
        Ok(order)
    }

    /// Lowers a resting order's open quantity in place, keeping its queue position.
    /// Returns the order as it now rests. Errors (nothing changed): `UnknownOrder`,
    /// `NonPositiveQty` (new ≤ 0: cancel instead), `QtyNotReduced` (new ≥ current: an
    /// increase loses priority, so the caller does cancel + submit).
    pub fn reduce_qty(
        &mut self,
        id: OrderId,
        new_open_qty: QtyLots,
    ) -> Result<RestingOrder, BookError> {
        let idx = *self.index.get(&id).ok_or(BookError::UnknownOrder(id))?;
        if new_open_qty.0 <= 0 {
            return Err(BookError::NonPositiveQty(new_open_qty));
        }
        let node = &mut self.store.arena[idx as usize];
        let current = node.order.open_qty;
        if new_open_qty >= current {
            return Err(BookError::QtyNotReduced {
                current,
                requested: new_open_qty,
            });
        }
        node.order.open_qty = new_open_qty;
        let order = node.order;
        let level = &mut self.store.levels[node.level as usize];
        level.total -= current - new_open_qty;
        assert!(
            level.total >= new_open_qty,
            "reduce_qty: level total below its order"
        );
        Ok(order)
    }

    /// The resting order with this id, if any.
    pub fn get(&self, id: OrderId) -> Option<&RestingOrder> {
        self.index
            .get(&id)
            .map(|&i| &self.store.arena[i as usize].order)
    }

    pub fn best_bid(&self) -> Option<PriceTicks> {
        self.bids.best_price()
    }

    pub fn best_ask(&self) -> Option<PriceTicks> {
        self.asks.best_price()
    }

    /// The total open quantity resting at `price` on `side` (zero when no order rests
    /// there): one lookup, for consumers that follow single levels (the gateway's depth
    /// stream).
    pub fn level_qty(&self, side: Side, price: PriceTicks) -> QtyLots {
        self.half(side)
            .lookup
            .get(&price)
            .map_or(QtyLots::ZERO, |&li| self.store.levels[li as usize].total)
    }

    /// Up to `levels` (price, total open qty) pairs of `side`, best first.
    pub fn depth(&self, side: Side, levels: usize) -> Vec<(PriceTicks, QtyLots)> {
        let h = self.half(side);
        let mut v = Vec::with_capacity(levels.min(h.prices.len()));
        v.extend(self.levels(side).take(levels));
        v
    }

    /// `side`'s (price, total open qty) pairs, best first, without allocating.
    pub fn levels(&self, side: Side) -> impl Iterator<Item = (PriceTicks, QtyLots)> + '_ {
        self.level_slots(side).map(|li| {
            let l = &self.store.levels[li as usize];
            (l.price, l.total)
        })
    }

    pub fn orders_count(&self) -> u64 {
        self.bids.orders + self.asks.orders
    }

    pub fn is_empty(&self) -> bool {
        self.orders_count() == 0
    }

    /// Level slots of `side`, best first.
    fn level_slots(&self, side: Side) -> impl Iterator<Item = u32> + '_ {
        let h = self.half(side);
        let (desc, asc) = match side {
            Side::Buy => (Some(h.prices.values().rev()), None),
            Side::Sell => (None, Some(h.prices.values())),
        };
        desc.into_iter()
            .flatten()
            .chain(asc.into_iter().flatten())
            .copied()
    }

    /// Orders in canonical order: bids best→worst, each level FIFO; then asks best→worst.
    pub fn iter(&self) -> impl Iterator<Item = &RestingOrder> + '_ {
        self.side_iter(Side::Buy).chain(self.side_iter(Side::Sell))
    }

    /// One side's orders, best level first, each level FIFO.
    pub fn side_iter(&self, side: Side) -> impl Iterator<Item = &RestingOrder> + '_ {
        self.level_slots(side).flat_map(move |li| FifoIter {
            arena: &self.store.arena,
            cur: self.store.levels[li as usize].head,
        })
    }

    /// Feeds the canonical encoding (module docs) into `h`.
    pub fn hash_into(&self, h: &mut blake3::Hasher) {
        for side in [Side::Buy, Side::Sell] {
            h.update(&self.half(side).orders.to_le_bytes());
            for o in self.side_iter(side) {
                let mut b = [0u8; 33];
                b[0..8].copy_from_slice(&o.order_id.0.to_le_bytes());
                b[8..16].copy_from_slice(&o.account.0.to_le_bytes());
                b[16..24].copy_from_slice(&o.price.0.to_le_bytes());
                b[24..32].copy_from_slice(&o.open_qty.0.to_le_bytes());
                b[32] = u8::from(o.reduce_only);
                h.update(&b);
            }
        }
    }

    /// blake3 of the canonical encoding.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        self.hash_into(&mut h);
        *h.finalize().as_bytes()
    }

    /// Full structural check, O(orders + levels). Panics with a message naming the
    /// broken rule: not crossed, best caches, price maps agree, no empty level, level
    /// totals, FIFO links, open_qty > 0, side/price/level of each order, index ↔ arena,
    /// free lists.
    pub fn check_invariants(&self) {
        let s = &self.store;
        let mut seen = vec![false; s.arena.len()];
        let mut seen_levels = vec![false; s.levels.len()];
        for (side, h) in [(Side::Buy, &self.bids), (Side::Sell, &self.asks)] {
            let want_best = match side {
                Side::Buy => h.prices.last_key_value(),
                Side::Sell => h.prices.first_key_value(),
            }
            .map(|(p, l)| (*p, *l));
            assert_eq!(h.best, want_best, "invariant: {side:?} best cache is stale");
            assert_eq!(
                h.lookup.len(),
                h.prices.len(),
                "invariant: {side:?} price maps differ in size"
            );
            let mut count = 0u64;
            for (&price, &li) in &h.prices {
                assert_eq!(
                    h.lookup.get(&price),
                    Some(&li),
                    "invariant: {side:?} lookup disagrees at {price:?}"
                );
                let l = li as usize;
                assert!(
                    l < s.levels.len(),
                    "invariant: level slot {li} out of the slab"
                );
                assert!(!seen_levels[l], "invariant: level slot {li} used twice");
                seen_levels[l] = true;
                let level = &s.levels[l];
                assert_eq!(
                    level.price, price,
                    "invariant: level slot {li} holds another price"
                );
                assert!(
                    level.head != NIL,
                    "invariant: empty {side:?} level at {price:?}"
                );
                let mut sum = QtyLots::ZERO;
                let mut prev = NIL;
                let mut idx = level.head;
                while idx != NIL {
                    let i = idx as usize;
                    assert!(i < s.arena.len(), "invariant: link {idx} out of the arena");
                    assert!(
                        !seen[i],
                        "invariant: slot {idx} linked twice (cycle or shared)"
                    );
                    seen[i] = true;
                    let n = &s.arena[i];
                    let o = &n.order;
                    assert_eq!(n.prev, prev, "invariant: broken prev link at slot {idx}");
                    assert_eq!(
                        n.level, li,
                        "invariant: order {} names the wrong level",
                        o.order_id
                    );
                    assert!(
                        o.open_qty.0 > 0,
                        "invariant: order {} has open_qty {:?}",
                        o.order_id,
                        o.open_qty
                    );
                    assert_eq!(
                        o.side, side,
                        "invariant: order {} on the wrong side",
                        o.order_id
                    );
                    assert_eq!(
                        o.price, price,
                        "invariant: order {} in the wrong level",
                        o.order_id
                    );
                    assert_eq!(
                        self.index.get(&o.order_id),
                        Some(&idx),
                        "invariant: index does not point at order {}",
                        o.order_id
                    );
                    sum += o.open_qty;
                    count += 1;
                    prev = idx;
                    idx = n.next;
                }
                assert_eq!(
                    level.tail, prev,
                    "invariant: {side:?} level {price:?} tail is wrong"
                );
                assert_eq!(
                    level.total, sum,
                    "invariant: {side:?} level {price:?} total is wrong"
                );
            }
            assert_eq!(h.orders, count, "invariant: {side:?} order count is wrong");
        }
        if let (Some(b), Some(a)) = (self.best_bid(), self.best_ask()) {
            assert!(b < a, "invariant: book crossed (bid {b:?} >= ask {a:?})");
        }
        assert_eq!(
            self.index.len() as u64,
            self.orders_count(),
            "invariant: index size != order count"
        );
        assert_eq!(
            s.arena.len(),
            self.index.len() + s.free.len(),
            "invariant: arena slots != live + free"
        );
        for &f in &s.free {
            let i = f as usize;
            assert!(
                i < s.arena.len(),
                "invariant: free slot {f} out of the arena"
            );
            assert!(!seen[i], "invariant: slot {f} is both live and free");
            seen[i] = true;
            assert!(
                s.arena[i].order.open_qty.is_zero(),
                "invariant: free slot {f} looks live"
            );
        }
        assert!(seen.iter().all(|&x| x), "invariant: leaked arena slot");
        for &f in &s.free_levels {
            let i = f as usize;
            assert!(
                i < s.levels.len(),
                "invariant: free level {f} out of the slab"
            );
            assert!(
                !seen_levels[i],
                "invariant: level {f} is both live and free"
            );
            seen_levels[i] = true;
        }
        assert!(
            seen_levels.iter().all(|&x| x),
            "invariant: leaked level slot"
        );
    }
}

/// Walks one level's FIFO.
struct FifoIter<'a> {
    arena: &'a [Node],
    cur: u32,
}

impl<'a> Iterator for FifoIter<'a> {
    type Item = &'a RestingOrder;

    fn next(&mut self) -> Option<&'a RestingOrder> {
        if self.cur == NIL {
            return None;
        }
        let n = &self.arena[self.cur as usize];
        self.cur = n.next;
        Some(&n.order)
    }
}
