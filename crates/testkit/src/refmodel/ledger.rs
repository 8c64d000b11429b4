//! Ledger: accounts, deposits, withdrawals, transfers, caps; leverage, margin mode and
//! isolated margin.

use super::*;

impl RefModel {
    pub(super) fn create_account(
        &mut self,
        id: AccountId,
        parent: Option<AccountId>,
        out: &mut Vec<Event>,
    ) -> Res {
        if self.acct(id).is_some() {
            return Err(RejectReason::AccountExists);
        }
        if let Some(p) = parent {
            let pa = self.user(p).map_err(|_| RejectReason::UnknownParent)?;
            if pa.parent.is_some() {
                return Err(RejectReason::ParentIsSubAccount);
            }
        }
        self.accounts.push(Acct {
            id,
            parent,
            system: false,
            mode: AssetMode::Single,
            interest_owed: vec![Q::ZERO; self.cfg.assets.len()],
            next_slot: vec![0; self.cfg.assets.len()],
            wallets: vec![Q::ZERO; self.cfg.assets.len()],
            legs: Vec::new(),
        });
        out.push(Event::AccountCreated {
            account: id,
            parent,
        });
        Ok(())
    }

    pub(super) fn check_asset(&self, asset: AssetId) -> Res {
        if usize::from(asset.0) < self.cfg.assets.len() {
            Ok(())
        } else {
            Err(RejectReason::UnknownAsset)
        }
    }

    /// Individual and platform caps (MARGIN §4) on an amount coming in.
    pub(super) fn check_caps(&self, id: AccountId, asset: AssetId, amount: Money) -> Res {
        let k = usize::from(asset.0);
        let Some(c) = self.cfg.assets[k].collateral.as_ref() else {
            return Ok(());
        };
        let amount = Q::money(amount);
        if let Some(cap) = c.individual_cap {
            if self.acct(id).expect("account").wallets[k] + amount > Q::money(cap) {
                return Err(RejectReason::IndividualCapExceeded);
            }
        }
        if let Some(cap) = c.platform_cap {
            if self.net_deposits[k] + amount > Q::money(cap) {
                return Err(RejectReason::PlatformCapExceeded);
            }
        }
        Ok(())
    }

    pub(super) fn deposit(
        &mut self,
        id: AccountId,
        asset: AssetId,
        amount: Money,
        out: &mut Vec<Event>,
    ) -> Res {
        self.user(id)?;
        self.check_asset(asset)?;
        check_amount(amount)?;
        self.check_caps(id, asset, amount)?;
        self.before_credit(id, asset, out);
        let k = usize::from(asset.0);
        let w = &mut self.acct_mut(id).wallets[k];
        *w += Q::money(amount);
        let balance = w.to_money();
        self.net_deposits[k] += Q::money(amount);
        self.after_credit(id, asset, Q::money(amount));
        out.push(Event::Deposited {
            account: id,
            asset,
            amount,
            balance,
        });
        Ok(())
    }

    /// The withdrawal check (MARGIN §5): [`RefModel::can_withdraw`].
    pub(super) fn can_take_out(&self, id: AccountId, asset: AssetId, amount: Money) -> bool {
        self.can_withdraw(id, asset, amount)
    }

    pub(super) fn withdraw(
        &mut self,
        id: AccountId,
        asset: AssetId,
        amount: Money,
        out: &mut Vec<Event>,
    ) -> Res {
        self.user(id)?;
        self.check_asset(asset)?;
        check_amount(amount)?;
        if !self.can_take_out(id, asset, amount) {
            return Err(RejectReason::WithdrawExceedsAvailable);
        }
        let k = usize::from(asset.0);
        let w = &mut self.acct_mut(id).wallets[k];
        *w -= Q::money(amount);
        let balance = w.to_money();
        self.net_deposits[k] -= Q::money(amount);
        out.push(Event::Withdrawn {
            account: id,
            asset,
            amount,
            balance,
        });
        Ok(())
    }

    pub(super) fn transfer(
        &mut self,
        from: AccountId,
        to: AccountId,
        asset: AssetId,
        amount: Money,
        out: &mut Vec<Event>,
    ) -> Res {
        let fp = self.user(from)?.parent;
        let tp = self.user(to)?.parent;
        self.check_asset(asset)?;
        if from == to {
            return Err(RejectReason::TransferToSelf);
        }
        check_amount(amount)?;
        // Main ↔ its sub-account, or two sub-accounts of one main account.
        let related = tp == Some(from) || fp == Some(to) || (fp.is_some() && fp == tp);
        if !related {
            return Err(RejectReason::TransferNotRelated);
        }
        if !self.can_take_out(from, asset, amount) {
            return Err(RejectReason::WithdrawExceedsAvailable);
        }
        self.check_caps(to, asset, amount)?;
        self.before_credit(to, asset, out);
        let k = usize::from(asset.0);
        self.acct_mut(from).wallets[k] -= Q::money(amount);
        self.acct_mut(to).wallets[k] += Q::money(amount);
        self.after_credit(to, asset, Q::money(amount));
        out.push(Event::Transferred {
            from,
            to,
            asset,
            amount,
        });
        Ok(())
    }

    // ---- leverage and margin mode ----

    /// Position notional at mark + open orders' notional (+ `extra`), without the order
    /// `excluded`: the exposure a leverage must be allowed for (MARGIN §3).
    pub(super) fn exposure(
        &self,
        id: AccountId,
        spec: &InstrumentSpec,
        extra: Q,
        excluded: Option<OrderId>,
    ) -> Q {
        let mut n = extra
            + self
                .orders_of(id, spec.id)
                .iter()
                .filter(|o| Some(o.id) != excluded)
                .map(|o| o.open_notional)
                .sum::<Q>();
        if let Some(m) = self.marks[spec.id.0 as usize] {
            let lots = self.acct(id).map_or(0, |a| a.lots(spec.id));
            n += notional(spec, lots, mark_q(m));
        }
        n
    }

    pub(super) fn set_leverage(
        &mut self,
        id: AccountId,
        i: InstrumentId,
        leverage: u32,
        out: &mut Vec<Event>,
    ) -> Res {
        self.user(id)?;
        let spec = self.spec(i)?;
        if leverage == 0 || leverage > spec.max_leverage {
            return Err(RejectReason::LeverageOutOfRange);
        }
        if bracket(&spec, self.exposure(id, &spec, Q::ZERO, None)).max_leverage < leverage {
            return Err(RejectReason::LeverageExceedsBracket);
        }
        let old = self.leverage_of(id, &spec);
        // Try it on copies: the leg at the new leverage, its orders re-reserved.
        let mut acct = self.acct(id).expect("account").clone();
        acct.leg_mut(&spec).leverage = leverage;
        let saved_orders = self.orders.clone();
        for o in self
            .orders
            .iter_mut()
            .filter(|o| o.account == id && o.instrument == i)
        {
            // ENGINE ROUNDS: a reservation, up.
            o.reserved = up(o.margin_notional / Q::int(i128::from(leverage)));
        }
        if leverage < old {
            let under = if pooled(acct.mode, &spec) {
                let p = self.usd_pool(&acct, acct.mode);
                p.unpriced_liability || p.available().is_negative()
            } else {
                self.pool_of(&acct, spec.settle_asset)
                    .available()
                    .is_negative()
            };
            let leg = acct.leg(i).expect("leg");
            let isolated_under = leg.mode == MarginMode::Isolated && leg.lots != 0 && {
                let m = self.marks[i.0 as usize].expect("mark");
                leg.isolated_margin + leg.upnl(&spec, m).min(Q::ZERO) < leg.im(&spec, m)
            };
            if under || isolated_under {
                self.orders = saved_orders;
                return Err(RejectReason::LeverageUnderMargin);
            }
        }
        *self.acct_mut(id) = acct;
        out.push(Event::LeverageSet {
            account: id,
            instrument: i,
            leverage,
        });
        Ok(())
    }

    pub(super) fn set_margin_mode(
        &mut self,
        id: AccountId,
        i: InstrumentId,
        mode: MarginMode,
        out: &mut Vec<Event>,
    ) -> Res {
        let asset_mode = self.user(id)?.mode;
        let spec = self.spec(i)?;
        if mode == MarginMode::Isolated && pooled(asset_mode, &spec) {
            return Err(RejectReason::IsolatedInMultiAsset);
        }
        let mut acct = self.acct(id).expect("account").clone();
        let leg = acct.leg_mut(&spec);
        // Binance convention (the only one the model covers): no switch with open orders
        // (-4047) or a position (-4048) on the instrument; the same mode is accepted.
        if leg.mode != mode {
            if !self.orders_of(id, i).is_empty() {
                return Err(RejectReason::MarginModeWithOpenOrders);
            }
            if leg.lots != 0 {
                return Err(RejectReason::MarginModeWithPosition);
            }
        }
        leg.mode = mode;
        *self.acct_mut(id) = acct;
        out.push(Event::MarginModeSet {
            account: id,
            instrument: i,
            mode,
        });
        Ok(())
    }

    pub(super) fn adjust_isolated_margin(
        &mut self,
        id: AccountId,
        i: InstrumentId,
        delta: Money,
        out: &mut Vec<Event>,
    ) -> Res {
        self.user(id)?;
        let spec = self.spec(i)?;
        if delta.is_zero() {
            return Err(RejectReason::DeltaZero);
        }
        if delta < -MAX_AMOUNT || delta > MAX_AMOUNT {
            return Err(RejectReason::AmountTooLarge);
        }
        let leg = match self.acct(id).expect("account").leg(i) {
            Some(l) if l.mode == MarginMode::Isolated && l.lots != 0 => l.clone(),
            _ => return Err(RejectReason::NoIsolatedPosition),
        };
        let m = self.marks[i.0 as usize].expect("mark");
        let d = Q::money(delta);
        if d.is_positive() {
            if self.pool(id, spec.settle_asset).withdrawable() < d {
                return Err(RejectReason::InsufficientBalance);
            }
        } else if leg.isolated_margin + d + leg.upnl(&spec, m).min(Q::ZERO) < leg.im(&spec, m) {
            return Err(RejectReason::IsolatedMarginTooLow);
        }
        let a = self.acct_mut(id);
        a.wallets[usize::from(spec.settle_asset.0)] -= d;
        let l = a.leg_mut(&spec);
        l.isolated_margin += d;
        let isolated_margin = l.isolated_margin.to_money();
        out.push(Event::IsolatedMarginAdjusted {
            account: id,
            instrument: i,
            delta,
            isolated_margin,
        });
        Ok(())
    }
}
