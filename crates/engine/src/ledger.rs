//! Ledger commands: accounts, deposits, withdrawals and transfers between a main
//! account and its sub-accounts.

use crate::engine::{Engine, Res};
use perpcore_risk::Account;
use perpcore_types::*;

pub(crate) fn check_amount(amount: Money) -> Result<(), RejectReason> {
    if !amount.is_positive() {
        return Err(RejectReason::AmountNotPositive);
    }
    if amount > MAX_AMOUNT {
        return Err(RejectReason::AmountTooLarge);
    }
    Ok(())
}

impl Engine {
    pub(crate) fn create_account(
        &mut self,
        id: AccountId,
        parent: Option<AccountId>,
        out: &mut Vec<Event>,
    ) -> Res {
        if self.idx(id).is_some() {
            return Err(RejectReason::AccountExists);
        }
        if let Some(p) = parent {
            let pk = self.user_idx(p).map_err(|_| RejectReason::UnknownParent)?;
            if self.state.accounts[pk].parent.is_some() {
                return Err(RejectReason::ParentIsSubAccount);
            }
        }
        self.insert_account(Account::new(id, parent, self.state.config.assets.len()));
        out.push(Event::AccountCreated {
            account: id,
            parent,
        });
        Ok(())
    }

    pub(crate) fn deposit(
        &mut self,
        id: AccountId,
        asset: AssetId,
        amount: Money,
        out: &mut Vec<Event>,
    ) -> Res {
        let k = self.user_idx(id)?;
        self.check_asset(asset)?;
        check_amount(amount)?;
        self.check_caps(k, asset, amount)?;
        self.before_credit(k, asset, out);
        let w = &mut self.state.accounts[k].wallets[asset.0 as usize];
        *w += amount;
        let balance = *w;
        self.state.deposited[asset.0 as usize] += amount;
        self.after_credit(k, asset, amount);
        out.push(Event::Deposited {
            account: id,
            asset,
            amount,
            balance,
        });
        Ok(())
    }

    pub(crate) fn withdraw(
        &mut self,
        id: AccountId,
        asset: AssetId,
        amount: Money,
        out: &mut Vec<Event>,
    ) -> Res {
        let k = self.user_idx(id)?;
        self.check_asset(asset)?;
        check_amount(amount)?;
        if !self.view(k).can_withdraw(asset, amount) {
            return Err(RejectReason::WithdrawExceedsAvailable);
        }
        let w = &mut self.state.accounts[k].wallets[asset.0 as usize];
        *w -= amount;
        let balance = *w;
        self.state.withdrawn[asset.0 as usize] += amount;
        out.push(Event::Withdrawn {
            account: id,
            asset,
            amount,
            balance,
        });
        Ok(())
    }

    pub(crate) fn transfer(
        &mut self,
        from: AccountId,
        to: AccountId,
        asset: AssetId,
        amount: Money,
        out: &mut Vec<Event>,
    ) -> Res {
        let fk = self.user_idx(from)?;
        let tk = self.user_idx(to)?;
        self.check_asset(asset)?;
        if fk == tk {
            return Err(RejectReason::TransferToSelf);
        }
        check_amount(amount)?;
        let (fp, tp) = (
            self.state.accounts[fk].parent,
            self.state.accounts[tk].parent,
        );
        let related = tp == Some(from) || fp == Some(to) || (fp.is_some() && fp == tp);
        if !related {
            return Err(RejectReason::TransferNotRelated);
        }
        if !self.view(fk).can_withdraw(asset, amount) {
            return Err(RejectReason::WithdrawExceedsAvailable);
        }
        self.check_caps(tk, asset, amount)?;
        self.before_credit(tk, asset, out);
        self.state.accounts[fk].wallets[asset.0 as usize] -= amount;
        self.state.accounts[tk].wallets[asset.0 as usize] += amount;
        self.after_credit(tk, asset, amount);
        out.push(Event::Transferred {
            from,
            to,
            asset,
            amount,
        });
        Ok(())
    }
}
