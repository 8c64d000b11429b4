//! Marks and liquidation (MARGIN §7): trigger, partial step, takeover, work-off.

use super::*;

impl RefModel {
    pub(super) fn set_mark_price(
        &mut self,
        i: InstrumentId,
        price: Price,
        out: &mut Vec<Event>,
    ) -> Res {
        let spec = self.spec(i)?;
        check_price(price)?;
        if price < spec.tick_size {
            return Err(RejectReason::PriceBelowTick);
        }
        self.marks[i.0 as usize] = Some(price);
        out.push(Event::MarkPriceSet {
            instrument: i,
            price,
        });
        // The holders when the tick arrived, by account id (MARGIN §7).
        let mut holders: Vec<AccountId> = self
            .accounts
            .iter()
            .filter(|a| a.lots(i) != 0)
            .map(|a| a.id)
            .collect();
        holders.sort();
        for id in holders {
            self.check_holder(&spec, id, out);
        }
        Ok(())
    }

    pub(super) fn check_holder(
        &mut self,
        spec: &InstrumentSpec,
        id: AccountId,
        out: &mut Vec<Event>,
    ) {
        let a = self.acct(id).expect("account");
        let Some(leg) = a.leg(spec.id) else { return };
        if a.system || leg.lots == 0 {
            return;
        }
        let mark = self.marks[spec.id.0 as usize].expect("mark");
        if leg.mode == MarginMode::Isolated {
            if leg.isolated_liquidatable(spec, mark) {
                self.liquidate_isolated(id, spec, out);
            }
        } else if pooled(a.mode, spec) {
            self.check_usd_pool(id, out);
        } else if self.pool(id, spec.settle_asset).liquidatable() {
            self.liquidate_cross(id, spec.settle_asset, out);
        }
    }

    pub(super) fn liquidate_isolated(
        &mut self,
        id: AccountId,
        spec: &InstrumentSpec,
        out: &mut Vec<Event>,
    ) {
        let mark = self.marks[spec.id.0 as usize].expect("mark");
        let leg = self
            .acct(id)
            .expect("account")
            .leg(spec.id)
            .expect("leg")
            .clone();
        out.push(Event::LiquidationTriggered {
            account: id,
            instrument: Some(spec.id),
            settle_asset: spec.settle_asset,
            margin_balance: (leg.isolated_margin + leg.upnl(spec, mark)).to_money(),
            maintenance_margin: leg.mm(spec, mark).to_money(),
        });
        self.cancel_where(id, |s| s.id == spec.id, CancelReason::Liquidation, out);
        self.partial_liquidation(id, spec, out);
        let leg = self.acct(id).expect("account").leg(spec.id).expect("leg");
        if leg.isolated_liquidatable(spec, mark) {
            self.take_over(id, spec, out);
        }
    }

    pub(super) fn liquidate_cross(&mut self, id: AccountId, asset: AssetId, out: &mut Vec<Event>) {
        let p = self.pool(id, asset);
        out.push(Event::LiquidationTriggered {
            account: id,
            instrument: None,
            settle_asset: asset,
            margin_balance: p.margin_balance().to_money(),
            maintenance_margin: p.cross_mm.to_money(),
        });
        self.cancel_where(
            id,
            |s| s.settle_asset == asset,
            CancelReason::Liquidation,
            out,
        );
        if !self.pool(id, asset).liquidatable() {
            return;
        }
        if let Some(spec) = self.largest_cross_position(id, asset) {
            self.partial_liquidation(id, &spec, out);
        }
        while self.pool(id, asset).liquidatable() {
            let Some(spec) = self.largest_cross_position(id, asset) else {
                break;
            };
            self.take_over(id, &spec, out);
        }
        self.cover_deficit(id, asset, out);
    }

    /// The cross position with the largest maintenance margin (ties: lowest instrument).
    pub(super) fn largest_cross_position(
        &self,
        id: AccountId,
        asset: AssetId,
    ) -> Option<InstrumentSpec> {
        let a = self.acct(id).expect("account");
        let mut best: Option<(Q, &InstrumentSpec)> = None;
        for spec in self
            .cfg
            .instruments
            .iter()
            .filter(|s| s.settle_asset == asset)
        {
            let Some(leg) = a.leg(spec.id) else { continue };
            if leg.mode != MarginMode::Cross || leg.lots == 0 {
                continue;
            }
            let mm = leg.mm(spec, self.marks[spec.id.0 as usize].expect("mark"));
            if best.is_none_or(|(b, _)| mm > b) {
                best = Some((mm, spec));
            }
        }
        best.map(|(_, s)| s.clone())
    }

    /// `WB + uPnL of the other cross positions` (cross) or `IW` (isolated): the equity the
    /// position has besides its own uPnL (MARGIN §6).
    pub(super) fn equity_besides(&self, id: AccountId, spec: &InstrumentSpec) -> Q {
        let leg = self.acct(id).expect("account").leg(spec.id).expect("leg");
        if leg.mode == MarginMode::Isolated {
            return leg.isolated_margin;
        }
        let mark = self.marks[spec.id.0 as usize].expect("mark");
        self.pool(id, spec.settle_asset).margin_balance() - leg.upnl(spec, mark)
    }

    /// Bankruptcy price (where equity reaches zero, `(basis − C) / q`) and the worst tick
    /// a closing order may trade at. ENGINE ROUNDS: the price against the account (a
    /// long's up, a short's down) to the price grid, the tick the same way; with no
    /// positive bankruptcy price, the mark.
    ///
    /// Inverse (coin-M): `C + basis − q × CV / M = 0`, so `M = q × CV / (C + basis)`, only
    /// where `C + basis` is non-zero and has the position's sign.
    pub(super) fn bankruptcy(&self, id: AccountId, spec: &InstrumentSpec) -> (Q, PriceTicks) {
        let leg = self.acct(id).expect("account").leg(spec.id).expect("leg");
        let mark = self.marks[spec.id.0 as usize].expect("mark");
        let long = leg.lots > 0;
        let pooled_cross =
            leg.mode == MarginMode::Cross && pooled(self.acct(id).expect("account").mode, spec);
        let exact = if pooled_cross {
            // USD pool: where adjusted equity reaches zero, found by search (tiers make
            // it piecewise); already on the price grid.
            Some(mark_q(self.usd_pool_root(id, spec).unwrap_or(mark)))
        } else if spec.is_inverse() {
            let x = self.equity_besides(id, spec) + leg.basis;
            if x.is_zero() || x.is_positive() != long {
                None
            } else {
                Some(coin_value(spec, leg.lots, Q::int(1)) / x)
            }
        } else {
            Some((leg.basis - self.equity_besides(id, spec)) / lots_q(spec, leg.lots))
        };
        let on_grid = exact.map_or(Q::ZERO, |exact| {
            if long {
                exact.ceil_to(PRICE)
            } else {
                exact.floor_to(PRICE)
            }
        });
        let bp = if on_grid.is_positive() {
            on_grid
        } else {
            mark_q(mark)
        };
        let in_ticks = bp / Q::price(spec.tick_size);
        let ticks = if long {
            in_ticks.ceil_units(1)
        } else {
            in_ticks.floor_units(1)
        };
        (bp, PriceTicks(i64::try_from(ticks.max(1)).expect("ticks")))
    }

    /// MARGIN §7 step 2: a position above the lowest bracket is cut to the next lower
    /// bracket's cap by an IOC order no worse than bankruptcy, paying the liquidation fee.
    pub(super) fn partial_liquidation(
        &mut self,
        id: AccountId,
        spec: &InstrumentSpec,
        out: &mut Vec<Event>,
    ) {
        let mark = self.marks[spec.id.0 as usize].expect("mark");
        let leg = self
            .acct(id)
            .expect("account")
            .leg(spec.id)
            .expect("leg")
            .clone();
        let n = notional(spec, leg.lots, mark_q(mark));
        let b = spec
            .brackets
            .iter()
            .position(|b| n <= Q::money(b.notional_cap))
            .unwrap_or(spec.brackets.len() - 1);
        if b == 0 {
            return;
        }
        let target = Q::money(spec.brackets[b - 1].notional_cap);
        let per_lot = notional(spec, 1, mark_q(mark));
        let whole = leg.lots.abs();
        // ENGINE ROUNDS: the lots kept, down.
        let keep = if per_lot.is_zero() {
            0
        } else {
            i64::try_from((target / per_lot).floor_units(1).min(i128::from(whole))).expect("lots")
        };
        let reduce = (whole - keep).max(1).min(whole);
        let side = if leg.lots > 0 { Side::Sell } else { Side::Buy };
        let (_, limit) = self.bankruptcy(id, spec);
        if leg.mode == MarginMode::Isolated {
            self.holding_isolated = Some((id, spec.id));
        }
        self.liquidation_order(id, spec, side, reduce, limit, spec.liquidation_fee, out);
        self.holding_isolated = None;
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn liquidation_order(
        &mut self,
        id: AccountId,
        spec: &InstrumentSpec,
        side: Side,
        lots: i64,
        limit: PriceTicks,
        fee_rate: Rate,
        out: &mut Vec<Event>,
    ) {
        let order_id = OrderId(self.next_internal_order);
        self.next_internal_order += 1;
        let taker = Taker {
            order_id,
            account: id,
            side,
            limit,
            qty: QtyLots(lots),
            tif: Tif::Ioc,
            stp: StpMode::ExpireMaker,
            reduce_only: true,
        };
        let order = Order {
            id: order_id,
            account: id,
            instrument: spec.id,
            side,
            reduce_only: true,
            post_only: false,
            margin_notional: Q::ZERO,
            reserved: Q::ZERO,
            open_notional: Q::ZERO,
        };
        let fund = fund_id(spec.settle_asset);
        let r = self.execute(
            spec,
            taker,
            order,
            None,
            CancelReason::Unfilled,
            Some((fee_rate, fund)),
            out,
        );
        assert!(r.is_ok(), "model: an IOC liquidation order refused");
    }

    /// MARGIN §7 step 3: the fund takes the position over at the bankruptcy price after
    /// the liquidation fee (capped by the equity left), then offers what it holds on that
    /// side in the book no worse than bankruptcy.
    pub(super) fn take_over(&mut self, id: AccountId, spec: &InstrumentSpec, out: &mut Vec<Event>) {
        let settle = usize::from(spec.settle_asset.0);
        let fund = fund_id(spec.settle_asset);
        let mark = self.marks[spec.id.0 as usize].expect("mark");
        let leg = self
            .acct(id)
            .expect("account")
            .leg(spec.id)
            .expect("leg")
            .clone();
        let is_pooled = pooled(self.acct(id).expect("account").mode, spec);
        let equity = if is_pooled && leg.mode == MarginMode::Cross {
            self.pooled_equity(id, spec)
        } else {
            self.equity_besides(id, spec) + leg.upnl(spec, mark)
        };
        // ENGINE ROUNDS: the liquidation fee, up.
        let fee = up(notional(spec, leg.lots, mark_q(mark)) * Q::rate(spec.liquidation_fee))
            .min(equity.max(Q::ZERO));
        if fee.is_positive() {
            let a = self.acct_mut(id);
            if leg.mode == MarginMode::Isolated {
                a.leg_mut(spec).isolated_margin -= fee;
            } else {
                a.wallets[settle] -= fee;
            }
            self.acct_mut(fund).wallets[settle] += fee;
        }
        let (bp, limit) = self.bankruptcy(id, spec);
        let lots = leg.lots;
        let close = if lots > 0 { Side::Sell } else { Side::Buy };
        self.move_position(id, spec, close, lots.abs(), bp, Q::ZERO);
        self.move_position(fund, spec, close.opposite(), lots.abs(), bp, Q::ZERO);
        out.push(Event::PositionTakenOver {
            account: id,
            instrument: spec.id,
            qty: lots_q(spec, lots).to_qty(),
            bankruptcy_price: bp.to_price(),
            liquidation_fee: fee.to_money(),
        });
        // (With a USD pool negative balances are loans until the pool is closed out.)
        if !is_pooled {
            self.cover_deficit(id, spec.settle_asset, out);
        }
        let fund_lots = self.acct(fund).expect("fund").lots(spec.id);
        let reducible = if close == Side::Sell {
            fund_lots.max(0)
        } else {
            (-fund_lots).max(0)
        };
        let work_off = reducible.min(lots.abs());
        if work_off > 0 {
            self.liquidation_order(fund, spec, close, work_off, limit, Rate::ZERO, out);
        }
    }
}
