//! New orders: the order-level checks, the limit price inside the mark band, and the
//! margin reservation (the pre-trade check).

use crate::engine::{Engine, Res};
use crate::state::{OrderMeta, RESERVED_ORDER_ID_MIN};
use perpcore_book::{Taker, Tif};
use perpcore_risk::{self as risk, Leg};
use perpcore_types::*;
use std::sync::Arc;

/// A checked order, ready for the book.
pub(crate) struct Prepared {
    pub(crate) instrument: InstrumentId,
    pub(crate) taker: Taker,
    pub(crate) meta: OrderMeta,
    pub(crate) unfilled_reason: CancelReason,
}

/// A sized and priced order, as the margin check sees it.
#[derive(Clone, Copy)]
pub(crate) struct Terms {
    pub(crate) side: Side,
    pub(crate) qty: QtyLots,
    pub(crate) limit: PriceTicks,
    pub(crate) reduce_only: bool,
}

/// Rule R3 and the size limits: the quantity an order of `side` for `qty` lots may rest
/// or trade with (`close_position`: the whole position), given the account's `leg`.
#[inline]
pub(crate) fn order_qty(
    spec: &InstrumentSpec,
    leg: Option<&Leg>,
    side: Side,
    qty: QtyLots,
    reduce_only: bool,
    close_position: bool,
) -> Result<QtyLots, RejectReason> {
    let position = leg.map(|l| l.qty).unwrap_or_default();
    let mut qty = if close_position { position.abs() } else { qty };
    if reduce_only {
        // Rule R3: never opens or flips; cut to the position.
        if position.is_zero() {
            return Err(RejectReason::ReduceOnlyNoPosition);
        }
        if (position.0 > 0) == (side == Side::Buy) {
            return Err(RejectReason::ReduceOnlyWrongSide);
        }
    }
    if qty.0 <= 0 {
        return Err(RejectReason::QtyNotPositive);
    }
    if !close_position {
        if qty < spec.min_qty {
            return Err(RejectReason::QtyBelowMin);
        }
        if qty > spec.max_qty {
            return Err(RejectReason::QtyAboveMax);
        }
    }
    if reduce_only {
        qty = qty.min(position.abs());
    }
    Ok(qty)
}

impl Engine {
    /// Lots of an order that would increase exposure: all of it on the position's side;
    /// on the other side, what is left after closing the part of the position not
    /// already promised to other orders on that side.
    pub(crate) fn increasing_lots(
        &self,
        leg: Option<&Leg>,
        side: Side,
        qty: QtyLots,
        instrument: InstrumentId,
        excluded: Option<OrderId>,
    ) -> i64 {
        let Some(leg) = leg else { return qty.0 };
        let q = leg.qty.0;
        if q == 0 || (q > 0) == (side == Side::Buy) {
            return qty.0;
        }
        let book = &self.state.books[instrument.0 as usize];
        let promised: i64 = leg
            .open_orders
            .iter()
            .filter(|id| Some(**id) != excluded)
            .filter_map(|id| book.get(*id))
            .filter(|o| o.side == side)
            .map(|o| o.open_qty.0)
            .sum();
        let closable = (q.abs() - promised).max(0);
        (qty.0 - closable).max(0)
    }

    /// Open orders of account `k` on instrument `i`: resting on any of its legs, and
    /// waiting conditional ones (the open-order limit counts both).
    pub(crate) fn open_orders_on(&self, k: usize, i: InstrumentId) -> usize {
        let a = &self.state.accounts[k];
        a.legs_of(i).map(|l| l.open_orders.len()).sum::<usize>() + self.conditional_count(a.id, i)
    }

    /// The leg an order's meta works on.
    pub(crate) fn meta_leg(&self, k: usize, meta: &OrderMeta) -> Option<&Leg> {
        let a = &self.state.accounts[k];
        a.leg(meta.instrument, a.order_side(meta.side, meta.reduce_only))
    }

    pub(crate) fn next_internal_order_id(&mut self) -> OrderId {
        let id = OrderId(self.state.next_internal_order);
        self.state.next_internal_order = self
            .state
            .next_internal_order
            .checked_add(1)
            .expect("order ids exhausted");
        id
    }

    pub(crate) fn place_order(&mut self, o: &NewOrder, out: &mut Vec<Event>) -> Res {
        let k = self.user_idx(o.account)?;
        let p = self.prepare_order(k, o, None)?;
        let cfg = Arc::clone(&self.state.config);
        let spec = &cfg.instruments[p.instrument.0 as usize];
        let accepted = Event::OrderAccepted {
            account: o.account,
            instrument: o.instrument,
            order_id: o.order_id,
            side: o.side,
            price: spec.price_of(p.taker.limit),
            qty: spec.qty_of(p.taker.qty),
        };
        self.execute(
            spec,
            p.taker,
            p.meta,
            Some(accepted),
            p.unfilled_reason,
            None,
            out,
        )
    }

    /// Every check of a new order, without touching state. `replacing` is an order of the
    /// same account being amended: its reservation and quantity are left out of the
    /// checks, as it will be gone when the new one is placed. `k` indexes `o.account`.
    ///
    /// The steps after the order-level checks are shared with `check_amend` (the in-place
    /// amend's re-check), so the two cannot drift apart.
    pub(crate) fn prepare_order(
        &self,
        k: usize,
        o: &NewOrder,
        replacing: Option<&OrderMeta>,
    ) -> Result<Prepared, RejectReason> {
        debug_assert_eq!(self.user_idx(o.account), Ok(k));
        let spec = self.spec(o.instrument)?;
        let mark = self.state.marks[o.instrument.0 as usize].ok_or(RejectReason::NoMarkPrice)?;
        self.check_order_account(k, spec, o.order_id)?;
        if replacing.is_none()
            && (self.state.orders.contains_key(&o.order_id)
                || self.state.conditionals.contains_key(&o.order_id))
        {
            return Err(RejectReason::DuplicateOrderId);
        }
        if o.order_type == OrderType::Market && o.tif == TimeInForce::PostOnly {
            return Err(RejectReason::MarketPostOnly);
        }
        let reduce_only = o.reduce_only || o.close_position;
        let account = &self.state.accounts[k];
        let leg = account.leg(o.instrument, account.order_side(o.side, reduce_only));
        // Only an order that may rest counts against the limit, and an amend replaces
        // one: a trader at the limit can still close, reduce and reprice.
        let may_rest = o.order_type == OrderType::Limit
            && matches!(o.tif, TimeInForce::Gtc | TimeInForce::PostOnly);
        if replacing.is_none()
            && may_rest
            && self.open_orders_on(k, o.instrument) >= spec.max_open_orders as usize
        {
            return Err(RejectReason::TooManyOpenOrders);
        }
        let qty = order_qty(spec, leg, o.side, o.qty, reduce_only, o.close_position)?;
        let limit = self.order_limit(spec, mark, o.order_type, o.side, o.price)?;
        let (margin_notional, reserved) = self.order_reservation(
            k,
            spec,
            mark,
            leg,
            Terms {
                side: o.side,
                qty,
                limit,
                reduce_only,
            },
            replacing.map(|m| (o.order_id, m)),
        )?;
        if o.tif == TimeInForce::PostOnly && self.post_only_takes(spec, o.side, limit) {
            return Err(RejectReason::PostOnlyWouldTake);
        }
        let tif = match (o.order_type, o.tif) {
            (OrderType::Market, _) => Tif::Ioc,
            (_, TimeInForce::Gtc) => Tif::Gtc,
            (_, TimeInForce::Ioc) => Tif::Ioc,
            (_, TimeInForce::Fok) => Tif::Fok,
            (_, TimeInForce::PostOnly) => Tif::PostOnly,
        };
        let taker = Taker {
            order_id: o.order_id,
            account: o.account,
            side: o.side,
            limit,
            qty,
            tif,
            stp: o.stp,
            reduce_only,
        };
        let meta = OrderMeta {
            account: o.account,
            instrument: o.instrument,
            side: o.side,
            reduce_only,
            post_only: o.tif == TimeInForce::PostOnly,
            margin_notional,
            reserved,
            open_notional: Money::ZERO,
        };
        let unfilled_reason = if o.order_type == OrderType::Market {
            CancelReason::PriceBand
        } else {
            CancelReason::Unfilled
        };
        Ok(Prepared {
            instrument: spec.id,
            taker,
            meta,
            unfilled_reason,
        })
    }

    /// Order checks that depend on the account and the order id only.
    #[inline]
    pub(crate) fn check_order_account(
        &self,
        k: usize,
        spec: &InstrumentSpec,
        id: OrderId,
    ) -> Result<(), RejectReason> {
        if id.0 >= RESERVED_ORDER_ID_MIN {
            return Err(RejectReason::OrderIdReserved);
        }
        if self.state.accounts[k].asset_mode == AssetMode::Multi && spec.is_inverse() {
            return Err(RejectReason::CoinMInMultiAsset);
        }
        Ok(())
    }

    /// The limit price of an order: a limit order's own, inside the mark's band; a market
    /// order's, the band's far edge.
    #[inline]
    pub(crate) fn order_limit(
        &self,
        spec: &InstrumentSpec,
        mark: Price,
        order_type: OrderType,
        side: Side,
        price: PriceTicks,
    ) -> Result<PriceTicks, RejectReason> {
        let (band_low, band_high) = self.ix.bands[spec.id.0 as usize];
        debug_assert_eq!((band_low, band_high), crate::prices::band(spec, mark));
        match order_type {
            OrderType::Limit => {
                if price.0 <= 0 {
                    return Err(RejectReason::PriceNotPositive);
                }
                if price < band_low || price > band_high {
                    return Err(RejectReason::PriceOutOfBand);
                }
                Ok(price)
            }
            OrderType::Market => Ok(match side {
                Side::Buy => band_high,
                Side::Sell => band_low,
            }),
        }
    }

    /// Whether a post-only order at `limit` would take liquidity.
    #[inline]
    pub(crate) fn post_only_takes(
        &self,
        spec: &InstrumentSpec,
        side: Side,
        limit: PriceTicks,
    ) -> bool {
        let book = &self.state.books[spec.id.0 as usize];
        match side {
            Side::Buy => book.best_ask().is_some_and(|a| a <= limit),
            Side::Sell => book.best_bid().is_some_and(|b| b >= limit),
        }
    }

    /// The margin check of a sized and priced order: `(margin_notional, reserved)` of its
    /// exposure-increasing part, or the rejection (bracket, margin). `replacing`: the
    /// amended order (id and meta), whose reservation counts as free and whose quantity
    /// and notional are left out. `leg` is the account's leg on `spec`, if any.
    #[inline]
    pub(crate) fn order_reservation(
        &self,
        k: usize,
        spec: &InstrumentSpec,
        mark: Price,
        leg: Option<&Leg>,
        t: Terms,
        replacing: Option<(OrderId, &OrderMeta)>,
    ) -> Result<(Money, Money), RejectReason> {
        if t.reduce_only {
            return Ok((Money::ZERO, Money::ZERO));
        }
        let excluded = replacing.map(|(id, _)| id);
        let released = replacing.map(|(_, m)| m.reserved).unwrap_or_default();
        let leverage = leg
            .map(|l| l.leverage)
            .unwrap_or(risk::DEFAULT_LEVERAGE.min(spec.max_leverage));
        let increasing = self.increasing_lots(leg, t.side, t.qty, spec.id, excluded);
        if increasing <= 0 {
            return Ok((Money::ZERO, Money::ZERO));
        }
        let exposure_before = match leg {
            Some(l) => self.exposure_notional(l, spec, Money::ZERO, replacing.map(|(_, m)| m)),
            None => Money::ZERO,
        };
        let r = self.view(k).reserve(
            spec,
            mark,
            risk::OrderTerms {
                side: t.side,
                lots: t.qty,
                increasing,
                limit: spec.price_of(t.limit),
                exposure_before,
                leverage,
            },
            released,
        )?;
        Ok((r.margin_notional, r.reserved))
    }
}
