//! Margin settings: leverage, cross or isolated mode, and isolated margin moves.

use crate::engine::{Engine, Res};
use crate::state::OrderMeta;
use perpcore_risk::{self as risk, Leg};
use perpcore_types::*;
use std::sync::Arc;

impl Engine {
    /// Notional of a leg's position at mark plus its open orders at their limit prices:
    /// the exposure a leverage must be allowed for (MARGIN §3).
    pub(crate) fn exposure_notional(
        &self,
        leg: &Leg,
        spec: &InstrumentSpec,
        extra: Money,
        excluded: Option<&OrderMeta>,
    ) -> Money {
        let mut n = extra + leg.order_notional;
        if let Some(m) = self.state.marks[spec.id.0 as usize] {
            n += if spec.is_inverse() || leg.qty.is_zero() {
                spec.notional(leg.qty, m)
            } else {
                // Linear: |q × M|, from the leg's valuation (shared with the margin sum).
                risk::linear_valuation(leg, spec, m).0.abs()
            };
        }
        if let Some(meta) = excluded {
            n -= meta.open_notional;
        }
        n
    }

    pub(crate) fn set_leverage(
        &mut self,
        id: AccountId,
        i: InstrumentId,
        leverage: u32,
        out: &mut Vec<Event>,
    ) -> Res {
        let k = self.user_idx(id)?;
        let cfg = Arc::clone(&self.state.config);
        let spec = cfg.instrument(i).ok_or(RejectReason::UnknownInstrument)?;
        if leverage == 0 || leverage > spec.max_leverage {
            return Err(RejectReason::LeverageOutOfRange);
        }
        // One leverage per instrument: in hedge mode both legs take it.
        let sides = position_sides(self.state.accounts[k].position_mode);
        let current = self.leverage_of(id, spec);
        for side in sides {
            let default_leg = Leg::for_side(i, spec.max_leverage, *side);
            let leg = self.state.accounts[k].leg(i, *side).unwrap_or(&default_leg);
            if spec
                .bracket_for(self.exposure_notional(leg, spec, Money::ZERO, None))
                .max_leverage
                < leverage
            {
                return Err(RejectReason::LeverageExceedsBracket);
            }
        }
        // Try it on a copy: re-reserve the legs' orders at the new leverage and re-check.
        let mut acct = self.state.accounts[k].clone();
        let mut metas: Vec<(OrderId, OrderMeta)> = Vec::new();
        for side in sides {
            let l = acct.leg_or_default(spec, *side);
            l.leverage = leverage;
            let mut total = Money::ZERO;
            for oid in &l.open_orders {
                let mut m = self.state.orders[oid].clone();
                m.reserved = m.margin_notional.div_int(leverage as i64, Rounding::Ceil);
                total += m.reserved;
                metas.push((*oid, m));
            }
            l.order_margin = total;
        }
        if leverage < current {
            let p = risk::pool(
                &acct,
                spec.settle_asset,
                &self.state.config.instruments,
                &self.state.marks,
            );
            let pooled = risk::is_pooled(acct.asset_mode, spec);
            let under = if pooled {
                let mode = acct.asset_mode;
                let up = risk::usd_pool(
                    &acct,
                    &self.state.config,
                    &self.state.marks,
                    self.usd_prices(),
                    |s| risk::is_pooled(mode, s),
                );
                up.unpriced_liability || up.available().is_negative()
            } else {
                p.available().is_negative()
            };
            if under {
                return Err(RejectReason::LeverageUnderMargin);
            }
            for l in acct.legs_of(i) {
                if l.mode == MarginMode::Isolated && !l.is_flat() {
                    let m = self.state.marks[i.0 as usize].expect("position without mark");
                    let eq = l.isolated_margin + risk::upnl(l, spec, m).min(Money::ZERO);
                    if eq < risk::position_im(l, spec, m) {
                        return Err(RejectReason::LeverageUnderMargin);
                    }
                }
            }
        }
        self.state.accounts[k] = acct;
        for (oid, m) in metas {
            self.state.orders.insert(oid, m);
        }
        out.push(Event::LeverageSet {
            account: id,
            instrument: i,
            leverage,
        });
        Ok(())
    }

    pub(crate) fn set_margin_mode(
        &mut self,
        id: AccountId,
        i: InstrumentId,
        mode: MarginMode,
        out: &mut Vec<Event>,
    ) -> Res {
        let k = self.user_idx(id)?;
        let cfg = Arc::clone(&self.state.config);
        let spec = cfg.instrument(i).ok_or(RejectReason::UnknownInstrument)?;
        if mode == MarginMode::Isolated && risk::is_pooled(self.state.accounts[k].asset_mode, spec)
        {
            return Err(RejectReason::IsolatedInMultiAsset);
        }
        let hedge = self.state.accounts[k].position_mode == PositionMode::Hedge;
        if spec.convention == MarginConvention::Binance || hedge {
            // Binance refuses to change the margin type while the account has open orders
            // (-4047) or a position (-4048) on the symbol; asking for the current mode
            // changes nothing and is accepted. A hedge account's two legs switch
            // together, under this rule whatever the convention.
            for leg in self.state.accounts[k].legs_of(i).filter(|l| l.mode != mode) {
                if !leg.open_orders.is_empty() {
                    return Err(RejectReason::MarginModeWithOpenOrders);
                }
                if !leg.is_flat() {
                    return Err(RejectReason::MarginModeWithPosition);
                }
            }
        }
        if hedge {
            let a = &mut self.state.accounts[k];
            for side in position_sides(PositionMode::Hedge) {
                a.leg_or_default(spec, *side).mode = mode;
            }
            out.push(Event::MarginModeSet {
                account: id,
                instrument: i,
                mode,
            });
            return Ok(());
        }
        // Bybit: a switch with a position is re-evaluated on a copy of the account.
        let mut acct = self.state.accounts[k].clone();
        let settle = spec.settle_asset.0 as usize;
        let mark = self.state.marks[i.0 as usize];
        let leg = acct.leg_or_default(spec, PositionSide::Both);
        if leg.mode != mode && !leg.is_flat() {
            let m = mark.expect("position without mark");
            match mode {
                MarginMode::Isolated => {
                    // The new isolated position starts at exactly its initial margin:
                    // IW + uPnL = IM.
                    let iw = (risk::position_im(leg, spec, m) - risk::upnl(leg, spec, m))
                        .max(Money::ZERO);
                    leg.isolated_margin = iw;
                    leg.mode = MarginMode::Isolated;
                    acct.wallets[settle] -= iw;
                }
                MarginMode::Cross => {
                    let iw = leg.isolated_margin;
                    leg.isolated_margin = Money::ZERO;
                    leg.mode = MarginMode::Cross;
                    acct.wallets[settle] += iw;
                }
            }
            let p = risk::pool(
                &acct,
                spec.settle_asset,
                &self.state.config.instruments,
                &self.state.marks,
            );
            if p.available().is_negative() {
                return Err(RejectReason::ModeSwitchUnderMargin);
            }
        } else {
            leg.mode = mode;
        }
        self.state.accounts[k] = acct;
        out.push(Event::MarginModeSet {
            account: id,
            instrument: i,
            mode,
        });
        Ok(())
    }

    pub(crate) fn adjust_isolated_margin(
        &mut self,
        id: AccountId,
        (i, side): (InstrumentId, PositionSide),
        delta: Money,
        out: &mut Vec<Event>,
    ) -> Res {
        let k = self.user_idx(id)?;
        let hedge = self.state.accounts[k].position_mode == PositionMode::Hedge;
        if hedge == (side == PositionSide::Both) {
            return Err(RejectReason::PositionSideMismatch);
        }
        let cfg = Arc::clone(&self.state.config);
        let spec = cfg.instrument(i).ok_or(RejectReason::UnknownInstrument)?;
        if delta.is_zero() {
            return Err(RejectReason::DeltaZero);
        }
        // Compared without `abs`, which has no answer for the most negative value.
        if delta < -MAX_AMOUNT || delta > MAX_AMOUNT {
            return Err(RejectReason::AmountTooLarge);
        }
        let leg = match self.state.accounts[k].leg(i, side) {
            Some(l) if l.mode == MarginMode::Isolated && !l.is_flat() => l,
            _ => return Err(RejectReason::NoIsolatedPosition),
        };
        let m = self.state.marks[i.0 as usize].expect("position without mark");
        if delta.is_positive() {
            if self.pool_of(k, spec.settle_asset).withdrawable() < delta {
                return Err(RejectReason::InsufficientBalance);
            }
        } else {
            let after = leg.isolated_margin + delta + risk::upnl(leg, spec, m).min(Money::ZERO);
            if after < risk::position_im(leg, spec, m) {
                return Err(RejectReason::IsolatedMarginTooLow);
            }
        }
        let a = &mut self.state.accounts[k];
        a.wallets[spec.settle_asset.0 as usize] -= delta;
        let leg = a.leg_mut(i, side).expect("leg");
        leg.isolated_margin += delta;
        let isolated_margin = leg.isolated_margin;
        out.push(Event::IsolatedMarginAdjusted {
            account: id,
            instrument: i,
            delta,
            isolated_margin,
        });
        Ok(())
    }
}

impl Engine {
    /// One-way or hedge mode (Binance `POST /fapi/v1/positionSide/dual`): refused while
    /// the account has an open order, resting or conditional (-4067), or a position
    /// (-4068) anywhere. The flat legs keep their leverage and margin mode: one-way → hedge
    /// gives each instrument's settings to its LONG and SHORT legs, hedge → one-way the
    /// LONG leg's to the one-way leg.
    pub(crate) fn set_position_mode(
        &mut self,
        id: AccountId,
        mode: PositionMode,
        out: &mut Vec<Event>,
    ) -> Res {
        let k = self.user_idx(id)?;
        let a = &self.state.accounts[k];
        if a.legs.iter().any(|l| !l.open_orders.is_empty())
            || self.ix.conditionals_by_account.get(&id).is_some()
        {
            return Err(RejectReason::PositionModeWithOpenOrders);
        }
        if a.legs.iter().any(|l| !l.is_flat()) {
            return Err(RejectReason::PositionModeWithPosition);
        }
        let cfg = Arc::clone(&self.state.config);
        let a = &mut self.state.accounts[k];
        if a.position_mode != mode {
            let old = std::mem::take(&mut a.legs);
            a.position_mode = mode;
            for leg in old {
                let keep = match mode {
                    PositionMode::Hedge => true,
                    PositionMode::OneWay => leg.side == PositionSide::Long,
                };
                if !keep {
                    continue;
                }
                let spec = &cfg.instruments[leg.instrument.0 as usize];
                for side in position_sides(mode) {
                    let l = a.leg_or_default(spec, *side);
                    l.leverage = leg.leverage;
                    l.mode = leg.mode;
                }
            }
        }
        out.push(Event::PositionModeSet { account: id, mode });
        Ok(())
    }
}

/// The position sides an account's legs on one instrument take in `mode`.
pub(crate) fn position_sides(mode: PositionMode) -> &'static [PositionSide] {
    match mode {
        PositionMode::OneWay => &[PositionSide::Both],
        PositionMode::Hedge => &[PositionSide::Long, PositionSide::Short],
    }
}
