//! Orders: the pre-trade check and reservation, placement and matching, cancel, amend.

use super::*;

impl RefModel {
    /// Every check of a new order, without changing anything: the book taker, the order's
    /// bookkeeping and the reason its unfilled rest is cancelled with. `replacing`: the
    /// amended order, whose reservation is free and whose size is left out.
    pub(super) fn prepare(
        &self,
        o: &NewOrder,
        replacing: Option<&Order>,
    ) -> Result<(Taker, Order, CancelReason), RejectReason> {
        let spec = self.spec(o.instrument)?;
        let mark = self.marks[o.instrument.0 as usize].ok_or(RejectReason::NoMarkPrice)?;
        if o.order_id.0 >= INTERNAL_ORDER_MIN {
            return Err(RejectReason::OrderIdReserved);
        }
        if self.acct(o.account).expect("account").mode == AssetMode::Multi && spec.is_inverse() {
            return Err(RejectReason::CoinMInMultiAsset);
        }
        if replacing.is_none() && self.order(o.order_id).is_some() {
            return Err(RejectReason::DuplicateOrderId);
        }
        if o.order_type == OrderType::Market && o.tif == TimeInForce::PostOnly {
            return Err(RejectReason::MarketPostOnly);
        }
        let acct = self.acct(o.account).expect("account");
        let has_leg = acct.leg(o.instrument).is_some();
        let may_rest = o.order_type == OrderType::Limit
            && matches!(o.tif, TimeInForce::Gtc | TimeInForce::PostOnly);
        if replacing.is_none()
            && may_rest
            && has_leg
            && self.orders_of(o.account, o.instrument).len() >= spec.max_open_orders as usize
        {
            return Err(RejectReason::TooManyOpenOrders);
        }
        // Size (rule R3: reduce-only never opens or flips; close-position is the position).
        let reduce_only = o.reduce_only || o.close_position;
        let position = acct.lots(o.instrument);
        let mut qty = if o.close_position {
            position.abs()
        } else {
            o.qty.0
        };
        if reduce_only {
            if position == 0 {
                return Err(RejectReason::ReduceOnlyNoPosition);
            }
            if (position > 0) == (o.side == Side::Buy) {
                return Err(RejectReason::ReduceOnlyWrongSide);
            }
        }
        if qty <= 0 {
            return Err(RejectReason::QtyNotPositive);
        }
        if !o.close_position {
            if qty < spec.min_qty.0 {
                return Err(RejectReason::QtyBelowMin);
            }
            if qty > spec.max_qty.0 {
                return Err(RejectReason::QtyAboveMax);
            }
        }
        if reduce_only {
            qty = qty.min(position.abs());
        }
        // Price: a limit inside the band; a market order at the band's far edge.
        let (low, high) = band(&spec, mark);
        let limit = match o.order_type {
            OrderType::Limit => {
                if o.price.0 <= 0 {
                    return Err(RejectReason::PriceNotPositive);
                }
                if o.price.0 < low || o.price.0 > high {
                    return Err(RejectReason::PriceOutOfBand);
                }
                o.price.0
            }
            OrderType::Market => match o.side {
                Side::Buy => high,
                Side::Sell => low,
            },
        };
        let (margin_notional, reserved) = if reduce_only {
            (Q::ZERO, Q::ZERO)
        } else {
            self.reservation(&spec, o.account, o.side, qty, limit, mark, replacing)?
        };
        if o.tif == TimeInForce::PostOnly {
            let book = &self.books[o.instrument.0 as usize];
            let takes = match o.side {
                Side::Buy => book.best_ask().is_some_and(|a| a.0 <= limit),
                Side::Sell => book.best_bid().is_some_and(|b| b.0 >= limit),
            };
            if takes {
                return Err(RejectReason::PostOnlyWouldTake);
            }
        }
        let tif = match (o.order_type, o.tif) {
            (OrderType::Market, _) | (_, TimeInForce::Ioc) => Tif::Ioc,
            (_, TimeInForce::Gtc) => Tif::Gtc,
            (_, TimeInForce::Fok) => Tif::Fok,
            (_, TimeInForce::PostOnly) => Tif::PostOnly,
        };
        let taker = Taker {
            order_id: o.order_id,
            account: o.account,
            side: o.side,
            limit: PriceTicks(limit),
            qty: QtyLots(qty),
            tif,
            stp: o.stp,
            reduce_only,
        };
        let order = Order {
            id: o.order_id,
            account: o.account,
            instrument: o.instrument,
            side: o.side,
            reduce_only,
            post_only: o.tif == TimeInForce::PostOnly,
            margin_notional,
            reserved,
            open_notional: Q::ZERO,
        };
        let unfilled = if o.order_type == OrderType::Market {
            CancelReason::PriceBand
        } else {
            CancelReason::Unfilled
        };
        Ok((taker, order, unfilled))
    }

    /// The pre-trade check (docs/MARGIN.md): the exposure-increasing part's IM plus a taker
    /// fee estimate on the whole order must be available. Returns (margin notional, IM).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reservation(
        &self,
        spec: &InstrumentSpec,
        account: AccountId,
        side: Side,
        qty: i64,
        limit: i64,
        mark: Price,
        replacing: Option<&Order>,
    ) -> Result<(Q, Q), RejectReason> {
        let limit_price = tick_price(spec, PriceTicks(limit));
        // A linear buy is valued at max(limit, mark), a linear sell at its limit; an
        // inverse order at min(limit, mark): where its coin notional is largest (MARGIN §3).
        let margin_price = match (spec.is_inverse(), side) {
            (true, _) => limit_price.min(mark_q(mark)),
            (false, Side::Buy) => limit_price.max(mark_q(mark)),
            (false, Side::Sell) => limit_price,
        };
        let leverage = self.leverage_of(account, spec);
        // Lots that increase exposure: all of them on the position's side; else what is
        // left after closing the part of the position other orders on this side have not
        // already promised to close.
        let position = self.acct(account).expect("account").lots(spec.id);
        let incr = if position == 0 || (position > 0) == (side == Side::Buy) {
            qty
        } else {
            let promised: i64 = self
                .orders_of(account, spec.id)
                .iter()
                .filter(|o| Some(o.id) != replacing.map(|r| r.id) && o.side == side)
                .map(|o| {
                    self.books[spec.id.0 as usize]
                        .get(o.id)
                        .expect("in book")
                        .open_qty
                        .0
                })
                .sum();
            let closable = (position.abs() - promised).max(0);
            (qty - closable).max(0)
        };
        if incr <= 0 {
            return Ok((Q::ZERO, Q::ZERO));
        }
        let extra = notional(spec, incr, margin_price);
        let exposure = self.exposure(account, spec, extra, replacing.map(|r| r.id));
        if bracket(spec, exposure).max_leverage < leverage {
            return Err(RejectReason::LeverageExceedsBracket);
        }
        // ENGINE ROUNDS: IM up; the fee estimate up.
        let im = up(extra / Q::int(i128::from(leverage)));
        let full = notional(spec, qty, margin_price);
        let fee_estimate = up(full * Q::rate(spec.taker_fee.max(Rate::ZERO)));
        let released = replacing.map_or(Q::ZERO, |r| r.reserved);
        let a = self.acct(account).expect("account");
        if !self.covers(a, spec, im + fee_estimate, released)? {
            return Err(RejectReason::InsufficientMargin);
        }
        Ok((extra, im))
    }

    pub(super) fn place_order(&mut self, o: &NewOrder, out: &mut Vec<Event>) -> Res {
        self.user(o.account)?;
        let (taker, order, unfilled) = self.prepare(o, None)?;
        let spec = self.spec(o.instrument)?;
        let accepted = Event::OrderAccepted {
            account: o.account,
            instrument: o.instrument,
            order_id: o.order_id,
            side: o.side,
            price: tick_price(&spec, taker.limit).to_price(),
            qty: lots_q(&spec, taker.qty.0).to_qty(),
        };
        self.execute(&spec, taker, order, Some(accepted), unfilled, None, out)
    }

    /// Match a taker in the reference book and settle everything it did.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn execute(
        &mut self,
        spec: &InstrumentSpec,
        taker: Taker,
        order: Order,
        accepted: Option<Event>,
        unfilled_reason: CancelReason,
        fee_override: Option<(Rate, AccountId)>,
        out: &mut Vec<Event>,
    ) -> Res {
        let i = spec.id.0 as usize;
        let mut res = MatchResult::new();
        self.books[i]
            .submit(&taker, &mut res)
            .expect("reference book refused a checked order");
        match res.outcome {
            TakerOutcome::PostOnlyRejected => return Err(RejectReason::PostOnlyWouldTake),
            TakerOutcome::FokRejected => return Err(RejectReason::FokCannotFill),
            _ => {}
        }
        out.extend(accepted);
        let qty = |lots: i64| lots_q(spec, lots).to_qty();
        let mut touched: Vec<AccountId> = Vec::new();
        for f in &res.fills {
            let price = tick_price(spec, f.price);
            let (taker_rate, sink) = match fee_override {
                Some((rate, fund)) => (rate, Some(fund)),
                None => (spec.taker_fee, None),
            };
            let (taker_fee, tpnl) = self.settle_side(
                spec,
                taker.account,
                taker.side,
                f.qty.0,
                price,
                taker_rate,
                sink,
            );
            let (maker_fee, mpnl) = self.settle_side(
                spec,
                f.maker_account,
                taker.side.opposite(),
                f.qty.0,
                price,
                spec.maker_fee,
                None,
            );
            out.push(Event::Trade {
                instrument: spec.id,
                price: price.to_price(),
                qty: qty(f.qty.0),
                taker_side: taker.side,
                taker_account: taker.account,
                taker_order: taker.order_id,
                maker_account: f.maker_account,
                maker_order: f.maker_order,
                taker_fee: taker_fee.to_money(),
                maker_fee: maker_fee.to_money(),
                taker_realized_pnl: tpnl.to_money(),
                maker_realized_pnl: mpnl.to_money(),
            });
            self.after_maker_fill(spec, f);
            touched.push(f.maker_account);
        }
        for m in &res.expired_makers {
            self.orders.retain(|o| o.id != m.order_id);
            out.push(Event::OrderCanceled {
                account: m.account,
                order_id: m.order_id,
                open_qty: qty(m.open_qty.0),
                reason: CancelReason::SelfTrade,
            });
        }
        match res.outcome {
            TakerOutcome::Rested { open_qty } => {
                let lev = Q::int(i128::from(self.leverage_of(taker.account, spec)));
                let mut order = order;
                // ENGINE ROUNDS: the margin notional scaled to the rested part, up; the
                // reservation, up.
                order.margin_notional =
                    up(order.margin_notional
                        * Q::new(i128::from(open_qty.0), i128::from(taker.qty.0)));
                order.reserved = up(order.margin_notional / lev);
                order.open_notional = notional(spec, open_qty.0, tick_price(spec, taker.limit));
                // The leg exists from now on (the engine creates it to hold the order).
                self.acct_mut(taker.account).leg_mut(spec);
                self.orders.push(order);
                out.push(Event::OrderRested {
                    order_id: taker.order_id,
                    open_qty: qty(open_qty.0),
                });
            }
            TakerOutcome::Filled => {}
            TakerOutcome::Expired { unfilled } => {
                if unfilled.0 > 0 && taker.order_id.0 < INTERNAL_ORDER_MIN {
                    out.push(Event::OrderCanceled {
                        account: taker.account,
                        order_id: taker.order_id,
                        open_qty: qty(unfilled.0),
                        reason: unfilled_reason,
                    });
                }
            }
            TakerOutcome::SelfTradeExpired { unfilled } => out.push(Event::OrderCanceled {
                account: taker.account,
                order_id: taker.order_id,
                open_qty: qty(unfilled.0),
                reason: CancelReason::SelfTrade,
            }),
            TakerOutcome::PostOnlyRejected | TakerOutcome::FokRejected => unreachable!(),
        }
        if !touched.is_empty() {
            touched.push(taker.account);
        }
        touched.sort();
        touched.dedup();
        for a in touched {
            self.fix_reduce_only(a, spec, out);
            // With a USD pool a negative balance is a loan, not a deficit.
            let acct = self.acct(a).expect("account");
            if !acct.system && !pooled(acct.mode, spec) {
                self.cover_deficit(a, spec.settle_asset, out);
            }
        }
        Ok(())
    }

    pub(super) fn cancel_one(
        &mut self,
        spec: &InstrumentSpec,
        id: OrderId,
        reason: CancelReason,
        out: &mut Vec<Event>,
    ) {
        let r = self.books[spec.id.0 as usize].cancel(id).expect("in book");
        self.orders.retain(|o| o.id != id);
        out.push(Event::OrderCanceled {
            account: r.account,
            order_id: id,
            open_qty: lots_q(spec, r.open_qty.0).to_qty(),
            reason,
        });
    }

    pub(super) fn cancel_order(
        &mut self,
        account: AccountId,
        id: OrderId,
        out: &mut Vec<Event>,
    ) -> Res {
        self.user(account)?;
        let o = self.order(id).ok_or(RejectReason::UnknownOrder)?;
        if o.account != account {
            return Err(RejectReason::NotOrderOwner);
        }
        let spec = self.spec(o.instrument)?;
        self.cancel_one(&spec, id, CancelReason::User, out);
        Ok(())
    }

    /// Cancel the account's orders on the instruments `filter` accepts: by instrument,
    /// then by order id.
    pub(super) fn cancel_where(
        &mut self,
        account: AccountId,
        filter: impl Fn(&InstrumentSpec) -> bool,
        reason: CancelReason,
        out: &mut Vec<Event>,
    ) {
        for spec in self.cfg.instruments.clone() {
            if filter(&spec) {
                for o in self.orders_of(account, spec.id) {
                    self.cancel_one(&spec, o.id, reason, out);
                }
            }
        }
    }

    pub(super) fn cancel_all(
        &mut self,
        account: AccountId,
        instrument: Option<InstrumentId>,
        out: &mut Vec<Event>,
    ) -> Res {
        self.user(account)?;
        if let Some(i) = instrument {
            self.spec(i)?;
        }
        self.cancel_where(
            account,
            |s| instrument.is_none_or(|i| s.id == i),
            CancelReason::User,
            out,
        );
        Ok(())
    }

    pub(super) fn amend_order(
        &mut self,
        account: AccountId,
        id: OrderId,
        price: Option<PriceTicks>,
        qty: Option<QtyLots>,
        out: &mut Vec<Event>,
    ) -> Res {
        self.user(account)?;
        let o = self.order(id).ok_or(RejectReason::UnknownOrder)?.clone();
        if o.account != account {
            return Err(RejectReason::NotOrderOwner);
        }
        let spec = self.spec(o.instrument)?;
        let r = *self.books[spec.id.0 as usize].get(id).expect("in book");
        let new_price = price.unwrap_or(r.price);
        let new_qty = qty.unwrap_or(r.open_qty);
        if new_price == r.price && new_qty == r.open_qty {
            return Err(RejectReason::AmendNoChange);
        }
        if new_qty.0 <= 0 {
            return Err(RejectReason::QtyNotPositive);
        }
        if new_price == r.price && new_qty < r.open_qty {
            // Size down at the same price keeps priority.
            self.books[spec.id.0 as usize]
                .reduce_qty(id, new_qty)
                .expect("reduce");
            self.resize(&spec, id, r.price, r.open_qty.0, new_qty.0);
            out.push(Event::OrderAmended {
                order_id: id,
                price: tick_price(&spec, new_price).to_price(),
                open_qty: lots_q(&spec, new_qty.0).to_qty(),
                priority_kept: true,
            });
            return Ok(());
        }
        if o.reduce_only {
            let pos = self.acct(account).expect("account").lots(spec.id).abs();
            if new_qty.0 > pos {
                return Err(RejectReason::AmendIncreasesReduceOnly);
            }
        }
        // Loses its place: re-checked as a new GTC (or post-only) limit order with the old
        // reservation free; cancelled and re-submitted only if the check passes.
        let amended = NewOrder {
            account,
            instrument: o.instrument,
            order_id: id,
            side: o.side,
            order_type: OrderType::Limit,
            tif: if o.post_only {
                TimeInForce::PostOnly
            } else {
                TimeInForce::Gtc
            },
            price: new_price,
            qty: new_qty,
            reduce_only: o.reduce_only,
            close_position: false,
            stp: StpMode::default(),
        };
        let (taker, order, unfilled) = self.prepare(&amended, Some(&o))?;
        self.books[spec.id.0 as usize].cancel(id).expect("in book");
        self.orders.retain(|x| x.id != id);
        out.push(Event::OrderAmended {
            order_id: id,
            price: tick_price(&spec, new_price).to_price(),
            open_qty: lots_q(&spec, new_qty.0).to_qty(),
            priority_kept: false,
        });
        let r = self.execute(&spec, taker, order, None, unfilled, None, out);
        assert!(r.is_ok(), "model: a checked amend refused by the book");
        Ok(())
    }
}
