//! Liquidation (MARGIN §7 steps 1–4), run after every mark price update for the accounts
//! holding a position in that instrument, in ascending account id order.
//!
//! 1. cancel the account's open orders (isolated: that position's) and re-check;
//! 2. partial: a position above the lowest bracket is reduced to the next lower
//!    bracket's notional cap by an IOC order no worse than its bankruptcy price, paying
//!    the liquidation fee to the insurance fund; re-check;
//! 3. full: the insurance fund of the settlement asset takes the position over at the
//!    bankruptcy price (after the liquidation fee, capped by the remaining equity) and
//!    sends an IOC order into the book no worse than that price; what does not fill stays
//!    with the fund. A wallet left negative is covered by the fund, as far as its balance
//!    goes.
//! 4. auto-deleveraging (`adl.rs`): what the fund still holds of the takeover after the
//!    book, when the fund cannot carry it (its balance, or its balance with its uPnL in
//!    the instrument at the mark, is negative), is closed against the opposite positions
//!    in ADL order at the bankruptcy price; a fund left with a negative balance by the
//!    position it carries (funding, a work-off below its average entry) is deleveraged
//!    too.
//!
//! The insurance funds' balances never go negative (`check_invariants`).

use crate::engine::{fund_account_id, Engine};
use crate::state::OrderMeta;
use perpcore_book::{Taker, Tif};
use perpcore_risk::{self as risk};
use perpcore_types::*;
use std::sync::Arc;

impl Engine {
    pub(crate) fn check_liquidations(&mut self, i: InstrumentId, out: &mut Vec<Event>) {
        let cfg = Arc::clone(&self.state.config);
        let spec = &cfg.instruments[i.0 as usize];
        if self.full_scan() {
            let holders = self.ix.holders[i.0 as usize].clone();
            for id in holders {
                self.check_holder(spec, id, out);
            }
            self.check_fund(spec, out);
            return;
        }
        // The index names the accounts whose band this tick crosses. A liquidation's
        // fills can change other holders later in the sweep; those (holders at the start
        // of the tick, after the current account in id order) join the candidates, so
        // the result is exactly the full scan's.
        let mark = self.state.marks[i.0 as usize].expect("mark");
        self.mark_dirty(out);
        self.flush_dirty();
        let mut candidates = self.ix.liq_index.candidates(i, mark);
        // "A holder when the tick started" without copying the holder list: a holder now
        // that did not become one during this tick (one that stopped being a holder is
        // flat, and the check passes over it either way).
        self.tmp.tick_new_holders = Some(Vec::new());
        while let Some(id) = candidates.pop_first() {
            let was_holder = self.ix.holders[i.0 as usize].binary_search(&id).is_ok()
                && !self
                    .tmp
                    .tick_new_holders
                    .as_ref()
                    .is_some_and(|v| v.contains(&(i, id)));
            if !was_holder {
                continue;
            }
            let before = out.len();
            self.check_holder(spec, id, out);
            // Checked at this mark: its band starts from here.
            if let Some(k) = self.idx(id) {
                self.reindex(k);
            }
            let mut touched = Vec::new();
            for e in &out[before..] {
                crate::engine::event_accounts(e, |a| touched.push(a));
            }
            candidates.extend(touched.into_iter().filter(|t| *t > id));
        }
        self.tmp.tick_new_holders = None;
        self.check_fund(spec, out);
    }

    /// The liquidation check of one holder of `spec` at the current marks: each isolated
    /// leg on its own, the cross pool once.
    fn check_holder(&mut self, spec: &InstrumentSpec, id: AccountId, out: &mut Vec<Event>) {
        let i = spec.id;
        let Some(k) = self.idx(id) else { return };
        if self.state.accounts[k].system {
            return;
        }
        let legs: Vec<(PositionSide, MarginMode)> = self.state.accounts[k]
            .legs_of(i)
            .filter(|l| !l.is_flat())
            .map(|l| (l.side, l.mode))
            .collect();
        let mut cross_checked = false;
        for (side, mode) in legs {
            if mode == MarginMode::Isolated {
                let mark = self.state.marks[i.0 as usize].expect("mark");
                let liquidatable = self.state.accounts[k].leg(i, side).is_some_and(|leg| {
                    !leg.is_flat() && risk::isolated_liquidatable(leg, spec, mark)
                });
                if liquidatable {
                    self.liquidate_isolated(k, spec, side, out);
                }
            } else if !cross_checked {
                cross_checked = true;
                if risk::is_pooled(self.state.accounts[k].asset_mode, spec) {
                    if self.usd_pool_of(k).is_liquidatable() {
                        self.liquidate_usd_pool(k, out);
                    }
                } else if self.pool_of(k, spec.settle_asset).is_liquidatable() {
                    self.liquidate_cross(k, spec.settle_asset, out);
                }
            }
        }
    }

    fn liquidate_isolated(
        &mut self,
        k: usize,
        spec: &InstrumentSpec,
        side: PositionSide,
        out: &mut Vec<Event>,
    ) {
        let account = self.state.accounts[k].id;
        let mark = self.state.marks[spec.id.0 as usize].expect("mark");
        let leg = self.state.accounts[k].leg(spec.id, side).expect("leg");
        out.push(Event::LiquidationTriggered {
            account,
            instrument: Some(spec.id),
            settle_asset: spec.settle_asset,
            margin_balance: leg.isolated_margin + risk::upnl(leg, spec, mark),
            maintenance_margin: risk::position_mm(leg, spec, mark),
        });
        // Step 1: cancelling this position's orders frees no isolated margin, but they
        // must not trade against the liquidation.
        self.cancel_where(k, |s| s.id == spec.id, CancelReason::Liquidation, out);
        // Step 2.
        self.partial_liquidation(k, spec, side, out);
        let still = {
            let leg = self.state.accounts[k].leg(spec.id, side).expect("leg");
            risk::isolated_liquidatable(leg, spec, mark)
        };
        if still {
            self.take_over(k, spec, side, out);
        }
    }

    fn liquidate_cross(&mut self, k: usize, asset: AssetId, out: &mut Vec<Event>) {
        let account = self.state.accounts[k].id;
        let p = self.pool_of(k, asset);
        out.push(Event::LiquidationTriggered {
            account,
            instrument: None,
            settle_asset: asset,
            margin_balance: p.margin_balance(),
            maintenance_margin: p.cross_mm,
        });
        // Step 1.
        self.cancel_where(
            k,
            |s| s.settle_asset == asset,
            CancelReason::Liquidation,
            out,
        );
        if !self.pool_of(k, asset).is_liquidatable() {
            return;
        }
        // Step 2: the position with the largest maintenance margin first.
        if let Some((spec, side)) = self.largest_cross_position(k, asset) {
            self.partial_liquidation(k, &spec, side, out);
        }
        // Step 3: take positions over until the pool is healthy or empty.
        while self.pool_of(k, asset).is_liquidatable() {
            let Some((spec, side)) = self.largest_cross_position(k, asset) else {
                break;
            };
            self.take_over(k, &spec, side, out);
        }
        self.cover_deficit(k, asset, out);
    }

    fn largest_cross_position(
        &self,
        k: usize,
        asset: AssetId,
    ) -> Option<(InstrumentSpec, PositionSide)> {
        let (i, side) = self.view(k).largest_cross_position(asset)?;
        Some((self.state.config.instruments[i.0 as usize].clone(), side))
    }

    /// Wallet + uPnL of the pool's other cross positions (cross) or the isolated margin:
    /// the `WB + UPNL_other` term of the bankruptcy price (MARGIN §6).
    pub(crate) fn equity_besides(
        &self,
        k: usize,
        spec: &InstrumentSpec,
        side: PositionSide,
    ) -> Money {
        let a = &self.state.accounts[k];
        let leg = a.leg(spec.id, side).expect("leg");
        if leg.mode == MarginMode::Isolated {
            return leg.isolated_margin;
        }
        let p = self.pool_of(k, spec.settle_asset);
        let mark = self.state.marks[spec.id.0 as usize].expect("mark");
        p.margin_balance() - risk::upnl(leg, spec, mark)
    }

    fn bankruptcy_ticks(
        &self,
        k: usize,
        spec: &InstrumentSpec,
        side: PositionSide,
    ) -> (Price, PriceTicks) {
        let leg = self.state.accounts[k].leg(spec.id, side).expect("leg");
        let mark = self.state.marks[spec.id.0 as usize].expect("mark");
        if leg.mode == MarginMode::Cross && risk::is_pooled(self.state.accounts[k].asset_mode, spec)
        {
            // USD pool: the price of this instrument at which adjusted equity reaches zero,
            // found numerically (tiers make it piecewise).
            let bp = self
                .usd_pool_root(k, (spec, side), |p| !p.adjusted_equity.is_negative())
                .unwrap_or(mark);
            let ticks = if leg.qty.0 > 0 {
                spec.ticks_of(bp, Rounding::Ceil)
            } else {
                spec.ticks_of(bp, Rounding::Floor)
            };
            return (bp, PriceTicks(ticks.0.max(1)));
        }
        // No positive bankruptcy price: the equity cannot reach zero; use the mark. A hedge
        // account's two cross legs both move with the mark: the pool's own zero instead.
        let bp = if self.hedged_cross_pair(k, leg) {
            self.cross_pool_root(k, (spec, side), |p| !p.margin_balance().is_negative())
        } else {
            risk::bankruptcy_price(leg, spec, self.equity_besides(k, spec, side))
        }
        .unwrap_or(mark);
        // The closing order may not trade worse than bankruptcy: a long sells at or above
        // it (ticks rounded up), a short buys at or below it (rounded down).
        let ticks = if leg.qty.0 > 0 {
            spec.ticks_of(bp, Rounding::Ceil)
        } else {
            spec.ticks_of(bp, Rounding::Floor)
        };
        (bp, PriceTicks(ticks.0.max(1)))
    }

    /// MARGIN §7 step 2.
    pub(crate) fn partial_liquidation(
        &mut self,
        k: usize,
        spec: &InstrumentSpec,
        position: PositionSide,
        out: &mut Vec<Event>,
    ) {
        let mark = self.state.marks[spec.id.0 as usize].expect("mark");
        let leg = self.state.accounts[k].leg(spec.id, position).expect("leg");
        let Some(reduce) = risk::bracket_step_lots(leg, spec, mark) else {
            return;
        };
        let side = if leg.qty.0 > 0 { Side::Sell } else { Side::Buy };
        let isolated = leg.mode == MarginMode::Isolated;
        let (_, limit) = self.bankruptcy_ticks(k, spec, position);
        if isolated {
            self.tmp.holding_isolated = Some((self.state.accounts[k].id, spec.id));
        }
        self.liquidation_order(
            k,
            spec,
            side,
            QtyLots(reduce),
            limit,
            spec.liquidation_fee,
            out,
        );
        self.tmp.holding_isolated = None;
    }

    /// Send an IOC order for account `k` that pays `fee_rate` to the insurance fund.
    #[allow(clippy::too_many_arguments)]
    fn liquidation_order(
        &mut self,
        k: usize,
        spec: &InstrumentSpec,
        side: Side,
        qty: QtyLots,
        limit: PriceTicks,
        fee_rate: Rate,
        out: &mut Vec<Event>,
    ) {
        let account = self.state.accounts[k].id;
        let order_id = self.next_internal_order_id();
        let taker = Taker {
            order_id,
            account,
            side,
            limit,
            qty,
            tif: Tif::Ioc,
            // The account's own orders are cancelled before liquidation; the fund never
            // rests orders. Expiring a maker is the safe choice should one remain.
            stp: StpMode::ExpireMaker,
            reduce_only: true,
        };
        let meta = OrderMeta {
            account,
            instrument: spec.id,
            side,
            reduce_only: true,
            post_only: false,
            margin_notional: Money::ZERO,
            reserved: Money::ZERO,
            open_notional: Money::ZERO,
        };
        let fund = fund_account_id(spec.settle_asset);
        let r = self.execute(
            spec,
            taker,
            meta,
            None,
            CancelReason::Unfilled,
            Some((fee_rate, fund)),
            out,
        );
        assert!(r.is_ok(), "an IOC liquidation order cannot be refused");
    }

    /// MARGIN §7 step 3: the fund takes the position over at the bankruptcy price.
    pub(crate) fn take_over(
        &mut self,
        k: usize,
        spec: &InstrumentSpec,
        position: PositionSide,
        out: &mut Vec<Event>,
    ) {
        let settle = spec.settle_asset.0 as usize;
        let account = self.state.accounts[k].id;
        let fund = fund_account_id(spec.settle_asset);
        let fk = self.idx(fund).expect("fund account");
        let mark = self.state.marks[spec.id.0 as usize].expect("mark");
        // Liquidation fee, capped by what equity is left, paid to the fund first.
        let pooled = risk::is_pooled(self.state.accounts[k].asset_mode, spec);
        let (equity, notional) = {
            let leg = self.state.accounts[k].leg(spec.id, position).expect("leg");
            (
                self.position_equity(k, spec, position),
                spec.notional(leg.qty, mark),
            )
        };
        let fee = notional
            .mul_rate(spec.liquidation_fee, Rounding::Ceil)
            .min(equity.max(Money::ZERO));
        if fee.is_positive() {
            let a = &mut self.state.accounts[k];
            let leg = a.leg_mut(spec.id, position).expect("leg");
            if leg.mode == MarginMode::Isolated {
                leg.isolated_margin -= fee;
            } else {
                a.wallets[settle] -= fee;
            }
            self.state.accounts[fk].wallets[settle] += fee;
        }
        let (bp, limit) = self.bankruptcy_ticks(k, spec, position);
        let qty = self.state.accounts[k]
            .leg(spec.id, position)
            .expect("leg")
            .qty;
        let close_side = if qty.0 > 0 { Side::Sell } else { Side::Buy };
        self.move_position(k, (spec, position), close_side, qty.abs(), bp, Money::ZERO);
        // The insurance funds are one-way accounts.
        let fund_leg = (spec, PositionSide::Both);
        self.move_position(
            fk,
            fund_leg,
            close_side.opposite(),
            qty.abs(),
            bp,
            Money::ZERO,
        );
        out.push(Event::PositionTakenOver {
            account,
            instrument: spec.id,
            qty: spec.qty_of(qty),
            bankruptcy_price: bp,
            liquidation_fee: fee,
        });
        // An isolated position's margin came home in move_position; a negative remainder
        // is covered by the fund. (With a USD pool negative balances are loans until the
        // pool is closed out.)
        if !pooled {
            self.cover_deficit(k, spec.settle_asset, out);
        }
        // The fund works the position off in the book, no worse than bankruptcy — only
        // as much as it holds on that side (a takeover can net against an earlier one
        // and leave the fund flat: then there is nothing to sell).
        let fund_qty = self.state.accounts[fk]
            .leg(spec.id, PositionSide::Both)
            .map(|l| l.qty.0)
            .unwrap_or(0);
        let reducible = if close_side == Side::Sell {
            fund_qty.max(0)
        } else {
            (-fund_qty).max(0)
        };
        let work_off = reducible.min(qty.0.abs());
        if work_off > 0 {
            self.liquidation_order(
                fk,
                spec,
                close_side,
                QtyLots(work_off),
                limit,
                Rate::ZERO,
                out,
            );
        }
        // Step 4: what the book did not take and the fund cannot carry.
        if self.auto_deleveraging() {
            self.deleverage_takeover(account, spec, close_side.opposite(), qty.abs(), bp, out);
            self.check_fund(spec, out);
        }
    }

    /// A negative balance of a bankrupt account (no position left to carry it) is covered
    /// by the fund of that asset, as far as the fund's balance goes: the fund never goes
    /// negative; what it cannot cover stays on the account as a negative balance.
    pub(crate) fn cover_deficit_asset(&mut self, k: usize, asset: AssetId, out: &mut Vec<Event>) {
        let wallet = self.state.accounts[k].wallets[asset.0 as usize];
        if !wallet.is_negative() {
            return;
        }
        let fk = self.idx(fund_account_id(asset)).expect("fund account");
        let amount =
            (-wallet).min(self.state.accounts[fk].wallets[asset.0 as usize].max(Money::ZERO));
        if amount.is_zero() {
            return;
        }
        self.state.accounts[fk].wallets[asset.0 as usize] -= amount;
        self.state.accounts[k].wallets[asset.0 as usize] += amount;
        if !self.state.accounts[k].wallets[asset.0 as usize].is_negative() {
            self.state.accounts[k].interest_owed[asset.0 as usize] = Money::ZERO;
        }
        out.push(Event::DeficitCovered {
            account: self.state.accounts[k].id,
            asset,
            amount,
        });
    }

    /// A wallet left negative with no cross position to carry it is covered by the fund.
    pub(crate) fn cover_deficit(&mut self, k: usize, asset: AssetId, out: &mut Vec<Event>) {
        if self.pool_of(k, asset).cross_positions == 0 {
            self.cover_deficit_asset(k, asset, out);
        }
    }
}
