//! Order execution and the engine side of the book: fills against resting orders,
//! reservations kept in step with open quantities, reduce-only upkeep, cancels.

use crate::engine::{Engine, Res};
use crate::state::{OrderMeta, RESERVED_ORDER_ID_MIN};
use perpcore_book::{MatchResult, Taker, TakerOutcome};
use perpcore_risk::{self as risk};
use perpcore_types::*;
use std::sync::Arc;

impl Engine {
    /// Submit a taker to the book and settle everything it did. `fee_override` replaces
    /// the taker fee (liquidation orders). Returns a rejection only for post-only and
    /// fill-or-kill outcomes, in which case nothing changed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn execute(
        &mut self,
        spec: &InstrumentSpec,
        taker: Taker,
        meta: OrderMeta,
        accepted: Option<Event>,
        unfilled_reason: CancelReason,
        fee_override: Option<(Rate, AccountId)>,
        out: &mut Vec<Event>,
    ) -> Res {
        let i = spec.id.0 as usize;
        // Swap the reusable buffer out without allocating a replacement.
        let mut res = std::mem::replace(
            &mut self.tmp.scratch,
            MatchResult {
                fills: Vec::new(),
                expired_makers: Vec::new(),
                outcome: TakerOutcome::Filled,
            },
        );
        let r = self.state.books[i].submit(&taker, &mut res);
        assert!(r.is_ok(), "book refused a checked order: {r:?}");
        match res.outcome {
            TakerOutcome::PostOnlyRejected => {
                self.tmp.scratch = res;
                return Err(RejectReason::PostOnlyWouldTake);
            }
            TakerOutcome::FokRejected => {
                self.tmp.scratch = res;
                return Err(RejectReason::FokCannotFill);
            }
            _ => {}
        }
        if let Some(ev) = accepted {
            out.push(ev);
        }
        let touched = self.settle_fills(spec, &taker, &res, fee_override, out);
        self.taker_outcome(spec, &taker, meta, res.outcome, unfilled_reason, out);
        self.after_fills(spec, taker.account, touched, out);
        self.tmp.scratch = res;
        Ok(())
    }

    /// Settles every fill of `res` (both sides, fees, PnL; one `Trade` event each) and
    /// forgets the makers self-trade prevention expired. Returns the makers that traded.
    fn settle_fills(
        &mut self,
        spec: &InstrumentSpec,
        taker: &Taker,
        res: &MatchResult,
        fee_override: Option<(Rate, AccountId)>,
        out: &mut Vec<Event>,
    ) -> Vec<(AccountId, InstrumentId)> {
        let mut touched: Vec<(AccountId, InstrumentId)> = Vec::new();
        for f in &res.fills {
            let (taker_fee, maker_fee, tpnl, mpnl) = self.settle_fill(spec, taker, f, fee_override);
            out.push(Event::Trade {
                instrument: spec.id,
                price: spec.price_of(f.price),
                qty: spec.qty_of(f.qty),
                taker_side: taker.side,
                taker_account: taker.account,
                taker_order: taker.order_id,
                maker_account: f.maker_account,
                maker_order: f.maker_order,
                taker_fee,
                maker_fee,
                taker_realized_pnl: tpnl,
                maker_realized_pnl: mpnl,
            });
            self.after_maker_fill(spec, f);
            touched.push((f.maker_account, spec.id));
        }
        if let Some(f) = res.fills.last() {
            self.state.market[spec.id.0 as usize].traded = Some(spec.price_of(f.price));
            self.price_moved(spec.id, WorkingPrice::LastTrade);
        }
        for m in &res.expired_makers {
            self.forget_order(m.order_id, spec);
            out.push(Event::OrderCanceled {
                account: m.account,
                order_id: m.order_id,
                open_qty: spec.qty_of(m.open_qty),
                reason: CancelReason::SelfTrade,
            });
        }
        touched
    }

    /// What happens to the taker's unfilled rest: it rests (with its reservation scaled
    /// to the open quantity) or is cancelled with the reason that applies.
    fn taker_outcome(
        &mut self,
        spec: &InstrumentSpec,
        taker: &Taker,
        meta: OrderMeta,
        outcome: TakerOutcome,
        unfilled_reason: CancelReason,
        out: &mut Vec<Event>,
    ) {
        match outcome {
            TakerOutcome::Rested { open_qty } => {
                let mut meta = meta;
                let lev = self.leverage_of(taker.account, spec);
                meta.margin_notional = meta.margin_notional.mul_div(
                    open_qty.0 as i128,
                    taker.qty.0 as i128,
                    Rounding::Ceil,
                );
                meta.reserved = meta.margin_notional.div_int(lev as i64, Rounding::Ceil);
                meta.open_notional = spec.notional(open_qty, spec.price_of(taker.limit));
                let k = self.idx(taker.account).expect("taker account");
                let a = &mut self.state.accounts[k];
                let position = a.order_side(taker.side, taker.reduce_only);
                let leg = a.leg_or_default(spec, position);
                leg.order_margin += meta.reserved;
                leg.order_notional += meta.open_notional;
                leg.add_order(taker.order_id);
                self.state.orders.insert(taker.order_id, meta);
                out.push(Event::OrderRested {
                    order_id: taker.order_id,
                    open_qty: spec.qty_of(open_qty),
                });
            }
            TakerOutcome::Filled => {}
            TakerOutcome::Expired { unfilled } => {
                if unfilled.0 > 0 && taker.order_id.0 < RESERVED_ORDER_ID_MIN {
                    out.push(Event::OrderCanceled {
                        account: taker.account,
                        order_id: taker.order_id,
                        open_qty: spec.qty_of(unfilled),
                        reason: unfilled_reason,
                    });
                }
            }
            TakerOutcome::SelfTradeExpired { unfilled } => out.push(Event::OrderCanceled {
                account: taker.account,
                order_id: taker.order_id,
                open_qty: spec.qty_of(unfilled),
                reason: CancelReason::SelfTrade,
            }),
            TakerOutcome::PostOnlyRejected | TakerOutcome::FokRejected => unreachable!(),
        }
    }

    /// After fills: reduce-only orders of every account whose position changed are cut to
    /// it (rule R3), and a single-asset wallet a fill left negative is covered.
    fn after_fills(
        &mut self,
        spec: &InstrumentSpec,
        taker: AccountId,
        mut touched: Vec<(AccountId, InstrumentId)>,
        out: &mut Vec<Event>,
    ) {
        if !touched.is_empty() {
            // Positions changed only if something filled.
            touched.push((taker, spec.id));
        }
        touched.sort();
        touched.dedup();
        for (a, _) in touched {
            self.fix_reduce_only(a, spec, out);
            if let Some(k) = self.idx(a) {
                // With a USD pool a negative balance is a loan, not a deficit.
                if !self.state.accounts[k].system
                    && !risk::is_pooled(self.state.accounts[k].asset_mode, spec)
                {
                    self.cover_deficit(k, spec.settle_asset, out);
                }
            }
        }
    }

    pub(crate) fn leverage_of(&self, account: AccountId, spec: &InstrumentSpec) -> u32 {
        self.account(account)
            .and_then(|a| a.legs_of(spec.id).next())
            .map(|l| l.leverage)
            .unwrap_or(risk::DEFAULT_LEVERAGE.min(spec.max_leverage))
    }

    /// Remove an order's engine-side state (the book has already dropped it).
    pub(crate) fn forget_order(&mut self, id: OrderId, spec: &InstrumentSpec) {
        let meta = self.state.orders.remove(&id).expect("order meta");
        let k = self.idx(meta.account).expect("order account");
        let a = &mut self.state.accounts[k];
        let position = a.order_side(meta.side, meta.reduce_only);
        let leg = a.leg_mut(spec.id, position).expect("order leg");
        leg.order_margin -= meta.reserved;
        leg.order_notional -= meta.open_notional;
        leg.remove_order(id);
        assert!(!leg.order_margin.is_negative(), "order margin below zero");
    }

    /// A maker's open quantity went down by a fill: scale its reservation pro rata.
    pub(crate) fn after_maker_fill(&mut self, spec: &InstrumentSpec, f: &perpcore_book::Fill) {
        if f.maker_done {
            self.forget_order(f.maker_order, spec);
            return;
        }
        let before = f.maker_remaining + f.qty;
        self.resize_order(
            spec,
            f.maker_account,
            f.maker_order,
            f.price,
            before,
            f.maker_remaining,
        );
    }

    /// An order's open quantity went from `before` to `after` (> 0) at `price`, keeping
    /// its place: scale its reservation pro rata and update the leg's sums.
    pub(crate) fn resize_order(
        &mut self,
        spec: &InstrumentSpec,
        account: AccountId,
        id: OrderId,
        price: PriceTicks,
        before: QtyLots,
        after: QtyLots,
    ) {
        assert!(after.0 > 0 && after < before, "resize must shrink an order");
        let lev = self.leverage_of(account, spec);
        let meta = self.state.orders.get_mut(&id).expect("order meta");
        let (old_reserved, old_notional) = (meta.reserved, meta.open_notional);
        meta.margin_notional =
            meta.margin_notional
                .mul_div(after.0 as i128, before.0 as i128, Rounding::Ceil);
        meta.reserved = meta.margin_notional.div_int(lev as i64, Rounding::Ceil);
        meta.open_notional = spec.notional(after, spec.price_of(price));
        let (reserved, notional) = (meta.reserved, meta.open_notional);
        let (side, reduce_only) = (meta.side, meta.reduce_only);
        let k = self.idx(account).expect("order account");
        let a = &mut self.state.accounts[k];
        let position = a.order_side(side, reduce_only);
        a.leg_mut(spec.id, position)
            .expect("order leg")
            .replace_order_sums((old_reserved, old_notional), (reserved, notional));
    }

    /// Reduce-only orders may never exceed the position or sit on its side: cut or cancel
    /// them after the position changed (rule R3).
    pub(crate) fn fix_reduce_only(
        &mut self,
        account: AccountId,
        spec: &InstrumentSpec,
        out: &mut Vec<Event>,
    ) {
        let Some(k) = self.idx(account) else { return };
        // Each leg on its own (two in hedge mode: a LONG leg's reduce-only orders are
        // sells, a SHORT leg's buys).
        let legs: Vec<(i64, Vec<OrderId>)> = self.state.accounts[k]
            .legs_of(spec.id)
            .filter(|leg| {
                // Most legs have no reduce-only order: look before allocating.
                leg.open_orders
                    .iter()
                    .any(|id| self.state.orders.get(id).is_some_and(|m| m.reduce_only))
            })
            .map(|leg| {
                let ids = leg
                    .open_orders
                    .iter()
                    .copied()
                    .filter(|id| self.state.orders.get(id).is_some_and(|m| m.reduce_only))
                    .collect();
                (leg.qty.0, ids)
            })
            .collect();
        for (pos, ids) in legs {
            for id in ids {
                let book = &mut self.state.books[spec.id.0 as usize];
                let o = *book.get(id).expect("reduce-only order in book");
                let wrong_side = pos == 0 || (pos > 0) == (o.side == Side::Buy);
                if wrong_side {
                    book.cancel(id).expect("cancel");
                    self.forget_order(id, spec);
                    out.push(Event::OrderCanceled {
                        account,
                        order_id: id,
                        open_qty: spec.qty_of(o.open_qty),
                        reason: CancelReason::ReduceOnlyObsolete,
                    });
                } else if o.open_qty.0 > pos.abs() {
                    book.reduce_qty(id, QtyLots(pos.abs())).expect("reduce");
                    self.resize_order(spec, account, id, o.price, o.open_qty, QtyLots(pos.abs()));
                    out.push(Event::OrderReduced {
                        order_id: id,
                        open_qty: spec.qty_of(QtyLots(pos.abs())),
                    });
                }
            }
        }
    }

    pub(crate) fn cancel_order(
        &mut self,
        account: AccountId,
        id: OrderId,
        out: &mut Vec<Event>,
    ) -> Res {
        self.user_idx(account)?;
        if let Some(r) = self.cancel_conditional(account, id, out) {
            return r;
        }
        let meta = self
            .state
            .orders
            .get(&id)
            .ok_or(RejectReason::UnknownOrder)?;
        if meta.account != account {
            return Err(RejectReason::NotOrderOwner);
        }
        let cfg = Arc::clone(&self.state.config);
        let spec = &cfg.instruments[meta.instrument.0 as usize];
        self.cancel_one(spec, id, CancelReason::User, out);
        Ok(())
    }

    pub(crate) fn cancel_one(
        &mut self,
        spec: &InstrumentSpec,
        id: OrderId,
        reason: CancelReason,
        out: &mut Vec<Event>,
    ) {
        let o = self.state.books[spec.id.0 as usize]
            .cancel(id)
            .expect("order in book");
        self.forget_order(id, spec);
        out.push(Event::OrderCanceled {
            account: o.account,
            order_id: id,
            open_qty: spec.qty_of(o.open_qty),
            reason,
        });
    }

    /// Cancel every order of the account on the instruments `filter` accepts.
    pub(crate) fn cancel_where(
        &mut self,
        k: usize,
        filter: impl Fn(&InstrumentSpec) -> bool,
        reason: CancelReason,
        out: &mut Vec<Event>,
    ) {
        let mut victims: Vec<(InstrumentId, OrderId)> = Vec::new();
        for leg in &self.state.accounts[k].legs {
            if filter(&self.state.config.instruments[leg.instrument.0 as usize]) {
                victims.extend(leg.open_orders.iter().map(|id| (leg.instrument, *id)));
            }
        }
        let cfg = Arc::clone(&self.state.config);
        for (i, id) in victims {
            self.cancel_one(&cfg.instruments[i.0 as usize], id, reason, out);
        }
        // Waiting conditional orders too: none may fire for a position the user or the
        // liquidation has just cleared of orders.
        let account = self.state.accounts[k].id;
        self.cancel_conditionals_where(account, |s| filter(s), reason, out);
    }

    pub(crate) fn cancel_all(
        &mut self,
        account: AccountId,
        instrument: Option<InstrumentId>,
        out: &mut Vec<Event>,
    ) -> Res {
        let k = self.user_idx(account)?;
        if let Some(i) = instrument {
            self.spec(i)?;
        }
        self.cancel_where(
            k,
            |s| instrument.is_none_or(|i| s.id == i),
            CancelReason::User,
            out,
        );
        Ok(())
    }
}
