//! Amends: in place when priority allows, otherwise re-checked as the order the amend
//! re-submits.

use crate::engine::{Engine, Res};
use crate::orders::{order_qty, Terms};
use crate::state::OrderMeta;
use perpcore_types::*;
use std::sync::Arc;

/// What `Engine::check_amend` decides: where and how much the amended order rests, and
/// what it reserves (`Prepared`'s `taker.limit`, `taker.qty`, `meta.margin_notional`
/// and `meta.reserved`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AmendCheck {
    pub(crate) limit: PriceTicks,
    pub(crate) qty: QtyLots,
    pub(crate) margin_notional: Money,
    pub(crate) reserved: Money,
}

/// The new order an amend of `id` to `price` × `qty` re-submits: the same side and flags,
/// a GTC (or post-only) limit order.
pub(crate) fn amended_order(
    meta: &OrderMeta,
    id: OrderId,
    price: PriceTicks,
    qty: QtyLots,
) -> NewOrder {
    NewOrder {
        account: meta.account,
        instrument: meta.instrument,
        order_id: id,
        side: meta.side,
        order_type: OrderType::Limit,
        tif: if meta.post_only {
            TimeInForce::PostOnly
        } else {
            TimeInForce::Gtc
        },
        price,
        qty,
        reduce_only: meta.reduce_only,
        close_position: false,
        stp: StpMode::default(),
    }
}

impl Engine {
    /// The re-check of an amend that loses priority (new price or larger size), for the
    /// in-place path: `prepare_order` of the order the amend re-submits (`amended_order`:
    /// same id, side and flags, a GTC or post-only limit order, replacing the old one),
    /// with the fields an amend fixes folded in and nothing built that the book does not
    /// need. The same steps in the same order, so the same rejection and the same
    /// reservation; `amend_order` asserts that in debug builds.
    #[inline]
    pub(crate) fn check_amend(
        &self,
        k: usize,
        spec: &InstrumentSpec,
        id: OrderId,
        meta: &OrderMeta,
        price: PriceTicks,
        qty: QtyLots,
    ) -> Result<AmendCheck, RejectReason> {
        let mark = self.state.marks[spec.id.0 as usize].ok_or(RejectReason::NoMarkPrice)?;
        self.check_order_account(k, spec, id)?;
        // No duplicate-id check (the id is the order's own) and no market post-only
        // check (an amend is a limit order).
        let leg = self.meta_leg(k, meta);
        let qty = order_qty(spec, leg, meta.side, qty, meta.reduce_only, false)?;
        let limit = self.order_limit(spec, mark, OrderType::Limit, meta.side, price)?;
        let (margin_notional, reserved) = self.order_reservation(
            k,
            spec,
            mark,
            leg,
            Terms {
                side: meta.side,
                qty,
                limit,
                reduce_only: meta.reduce_only,
            },
            Some((id, meta)),
        )?;
        if meta.post_only && self.post_only_takes(spec, meta.side, limit) {
            return Err(RejectReason::PostOnlyWouldTake);
        }
        Ok(AmendCheck {
            limit,
            qty,
            margin_notional,
            reserved,
        })
    }

    /// Amend an order's price and/or size: size down at the same price keeps priority;
    /// anything else re-checks the order as the one the amend re-submits (its old
    /// reservation released) and, if accepted, moves it to the back of its new level —
    /// in place when it does not cross, else by cancel + submit, which may trade.
    pub(crate) fn amend_order(
        &mut self,
        account: AccountId,
        id: OrderId,
        price: Option<PriceTicks>,
        qty: Option<QtyLots>,
        out: &mut Vec<Event>,
    ) -> Res {
        let k = self.user_idx(account)?;
        if let Some(r) = self.amend_conditional(account, id, price, qty, out) {
            return r;
        }
        let meta = self
            .state
            .orders
            .get(&id)
            .ok_or(RejectReason::UnknownOrder)?
            .clone();
        if meta.account != account {
            return Err(RejectReason::NotOrderOwner);
        }
        let i = meta.instrument.0 as usize;
        let (slot, resting) = self.state.books[i]
            .find(id)
            .map(|(slot, o)| (slot, *o))
            .expect("order in book");
        let new_price = price.unwrap_or(resting.price);
        let new_qty = qty.unwrap_or(resting.open_qty);
        if new_price == resting.price && new_qty == resting.open_qty {
            return Err(RejectReason::AmendNoChange);
        }
        if new_qty.0 <= 0 {
            return Err(RejectReason::QtyNotPositive);
        }
        if new_price == resting.price && new_qty < resting.open_qty {
            self.amend_size_down(&meta, id, resting, new_qty, out);
            return Ok(());
        }
        if meta.reduce_only {
            let pos = self.meta_leg(k, &meta).map(|l| l.qty.0.abs()).unwrap_or(0);
            if new_qty.0 > pos {
                return Err(RejectReason::AmendIncreasesReduceOnly);
            }
        }
        // Price change or size up: the order loses its place. If the new one is refused
        // the old one stays untouched.
        if self.amend_in_place()
            && self.amend_requeue(k, &meta, id, slot, new_price, new_qty, out)?
        {
            return Ok(());
        }
        self.amend_by_resubmit(k, &meta, id, new_price, new_qty, out)
    }

    /// Size down at the same price: the order keeps its place, its reservation shrinks
    /// pro rata.
    fn amend_size_down(
        &mut self,
        meta: &OrderMeta,
        id: OrderId,
        resting: perpcore_book::RestingOrder,
        new_qty: QtyLots,
        out: &mut Vec<Event>,
    ) {
        let cfg = Arc::clone(&self.state.config);
        let spec = &cfg.instruments[meta.instrument.0 as usize];
        self.state.books[spec.id.0 as usize]
            .reduce_qty(id, new_qty)
            .expect("reduce");
        self.resize_order(
            spec,
            meta.account,
            id,
            resting.price,
            resting.open_qty,
            new_qty,
        );
        out.push(Event::OrderAmended {
            order_id: id,
            price: spec.price_of(resting.price),
            open_qty: spec.qty_of(new_qty),
            priority_kept: true,
        });
    }

    /// The in-place path: `check_amend` (the same decision `prepare_order` makes, asserted
    /// in debug builds) and, when the new price does not reach the other side, a re-queue
    /// at the back of the new level — the state and events cancel + submit would give
    /// (execute's `Rested` branch with nothing filled). `Ok(false)` when it would cross:
    /// nothing changed, and the caller takes the general path.
    #[allow(clippy::too_many_arguments)]
    fn amend_requeue(
        &mut self,
        k: usize,
        meta: &OrderMeta,
        id: OrderId,
        slot: perpcore_book::Slot,
        new_price: PriceTicks,
        new_qty: QtyLots,
        out: &mut Vec<Event>,
    ) -> Result<bool, RejectReason> {
        // Borrowed from the field, not through an `Arc` clone (an atomic increment and
        // decrement per amend).
        let spec = &self.state.config.instruments[meta.instrument.0 as usize];
        let checked = self.check_amend(k, spec, id, meta, new_price, new_qty);
        debug_assert_eq!(
            checked,
            self.prepare_order(k, &amended_order(meta, id, new_price, new_qty), Some(meta))
                .map(|p| AmendCheck {
                    limit: p.taker.limit,
                    qty: p.taker.qty,
                    margin_notional: p.meta.margin_notional,
                    reserved: p.meta.reserved,
                }),
            "check_amend disagrees with prepare_order"
        );
        let c = checked?;
        match self.state.books[spec.id.0 as usize].requeue_at(slot, id, c.limit, c.qty) {
            Ok(_) => {}
            // It would trade: nothing changed; the general path repeats the check.
            Err(perpcore_book::BookError::WouldCross(_)) => return Ok(false),
            Err(e) => panic!("requeue of a checked amend failed: {e}"),
        }
        // execute's `Rested` formula with nothing filled is margin_notional / leverage,
        // rounded up: what the check reserved.
        debug_assert_eq!(
            c.reserved,
            c.margin_notional
                .div_int(self.leverage_of(meta.account, spec) as i64, Rounding::Ceil)
        );
        let open_notional = spec.notional(c.qty, spec.price_of(c.limit));
        let m = self.state.orders.get_mut(&id).expect("order meta");
        let old = (m.reserved, m.open_notional);
        // Account, instrument, side and flags are the amended order's own.
        m.margin_notional = c.margin_notional;
        m.reserved = c.reserved;
        m.open_notional = open_notional;
        let (side, reduce_only) = (m.side, m.reduce_only);
        let a = &mut self.state.accounts[k];
        let position = a.order_side(side, reduce_only);
        let leg = a.leg_mut(spec.id, position).expect("order leg");
        leg.replace_order_sums(old, (c.reserved, open_notional));
        assert!(!leg.order_margin.is_negative(), "order margin below zero");
        out.push(Event::OrderAmended {
            order_id: id,
            price: spec.price_of(new_price),
            open_qty: spec.qty_of(new_qty),
            priority_kept: false,
        });
        out.push(Event::OrderRested {
            order_id: id,
            open_qty: spec.qty_of(c.qty),
        });
        Ok(true)
    }

    /// The general path: the amended order prepared as a new one (old reservation left
    /// out), the old one cancelled, the new one executed (it may trade).
    fn amend_by_resubmit(
        &mut self,
        k: usize,
        meta: &OrderMeta,
        id: OrderId,
        new_price: PriceTicks,
        new_qty: QtyLots,
        out: &mut Vec<Event>,
    ) -> Res {
        let prepared =
            self.prepare_order(k, &amended_order(meta, id, new_price, new_qty), Some(meta))?;
        let cfg = Arc::clone(&self.state.config);
        let spec = &cfg.instruments[meta.instrument.0 as usize];
        self.state.books[spec.id.0 as usize]
            .cancel(id)
            .expect("order in book");
        self.forget_order(id, spec);
        out.push(Event::OrderAmended {
            order_id: id,
            price: spec.price_of(new_price),
            open_qty: spec.qty_of(new_qty),
            priority_kept: false,
        });
        let r = self.execute(
            spec,
            prepared.taker,
            prepared.meta,
            None,
            prepared.unfilled_reason,
            None,
            out,
        );
        assert!(
            r.is_ok(),
            "a prepared amend cannot be refused by the book: {r:?}"
        );
        Ok(())
    }
}
