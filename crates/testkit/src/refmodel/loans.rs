//! Loans of multi-asset and unified accounts (MARGIN §8): hourly interest on the
//! principal beyond the interest-free quota, repayment (interest first), and the hourly
//! auto-exchange of loans above their threshold.

use super::usd::{collateral_usd, UsdPool};
use super::*;

/// Nanoseconds per interest slot (one hour of sequenced time).
const HOUR_NS: u64 = 3_600_000_000_000;

impl RefModel {
    /// The interest-bearing part of account `id`'s loan in asset `k`: the loan principal
    /// (negative pool equity less unpaid interest) less the part caused by unrealized
    /// losses, up to the interest-free quota.
    fn interest_base(&self, a: &Acct, k: usize, pool: &UsdPool) -> Q {
        let owed = a.interest_owed[k];
        let loan = ((-pool.equity[k]).max(Q::ZERO) - owed).max(Q::ZERO);
        if loan.is_zero() {
            return Q::ZERO;
        }
        let w = a.wallets[k] + owed;
        let realized_loan = (-w).max(Q::ZERO).min(loan);
        let unrealized_part = loan - realized_loan;
        let quota = self.cfg.assets[k]
            .collateral
            .as_ref()
            .map_or(Q::ZERO, |c| Q::money(c.interest_free));
        loan - unrealized_part.min(quota)
    }

    /// Charge the slots `first..=last` not yet charged on the loans of account `id` (in
    /// `only`, or every asset), on the loan outstanding now: `base × daily / 24` per
    /// slot. ENGINE ROUNDS: the charge, up.
    fn charge_slots(
        &mut self,
        id: AccountId,
        first: u64,
        last: u64,
        only: Option<AssetId>,
        out: &mut Vec<Event>,
    ) {
        let a = self.acct(id).expect("account");
        if a.mode == AssetMode::Single || a.system {
            return;
        }
        let pool = self.usd_pool(a, a.mode);
        for k in 0..self.cfg.assets.len() {
            if only.is_some_and(|o| usize::from(o.0) != k) {
                continue;
            }
            let a = self.acct(id).expect("account");
            let from = a.next_slot[k].max(first);
            if from > last {
                continue;
            }
            let base = self.interest_base(a, k, &pool);
            let rate = self.cfg.assets[k]
                .collateral
                .as_ref()
                .map_or(Q::ZERO, |c| Q::rate(c.daily_interest));
            if base.is_zero() || rate.is_zero() {
                continue;
            }
            let slots = Q::int(i128::from(last - from + 1));
            let amount = if self.perturbation == Perturbation::InterestShort {
                down(base * rate * (slots - Q::new(1, 2)) / Q::int(24))
            } else {
                up(base * rate * slots / Q::int(24))
            };
            let a = self.acct_mut(id);
            a.next_slot[k] = last + 1;
            a.wallets[k] -= amount;
            a.interest_owed[k] += amount;
            out.push(Event::InterestCharged {
                account: id,
                asset: AssetId::at(k),
                amount: amount.to_money(),
                interest_base: base.to_money(),
            });
        }
    }

    /// Time passing: at each hour boundary, every account in creation order has the
    /// slots that ended charged, then (multi-asset or unified) its loans above their
    /// threshold auto-exchanged.
    pub(super) fn accrue_interest(&mut self, ts_ns: u64, out: &mut Vec<Event>) {
        self.now_ns = ts_ns;
        let slot = ts_ns / HOUR_NS;
        if slot <= self.interest_slot {
            return;
        }
        let (first, last) = (self.interest_slot, slot - 1);
        self.interest_slot = slot;
        let ids: Vec<AccountId> = self.accounts.iter().map(|a| a.id).collect();
        for id in ids {
            self.charge_slots(id, first, last, None, out);
            let a = self.acct(id).expect("account");
            if a.mode != AssetMode::Single && !a.system {
                self.auto_exchange(id, true, out);
            }
        }
    }

    /// Before a credit to `asset` (deposit, transfer in): the current slot's interest
    /// on that loan (a partial hour counts whole).
    pub(super) fn before_credit(&mut self, id: AccountId, asset: AssetId, out: &mut Vec<Event>) {
        let slot = self.now_ns / HOUR_NS;
        self.charge_slots(id, slot, slot, Some(asset), out);
    }

    /// After a credit of `amount` to `asset`: unpaid interest is repaid first.
    pub(super) fn after_credit(&mut self, id: AccountId, asset: AssetId, amount: Q) {
        let owed = &mut self.acct_mut(id).interest_owed[usize::from(asset.0)];
        *owed -= (*owed).min(amount);
    }

    /// Loans (`only_above_threshold`: those above their threshold, hourly; else every
    /// loan, after a USD pool's liquidation) are repaid by selling other collateral (ascending
    /// asset id) to the insurance funds at the USD prices, grossed up by the holding's
    /// own collateral ratio. ENGINE ROUNDS: the USD needed up; the coin sold up (capped by
    /// the holding); a whole holding's repayment down.
    pub(super) fn auto_exchange(
        &mut self,
        id: AccountId,
        only_above_threshold: bool,
        out: &mut Vec<Event>,
    ) {
        let usd = self.usd_now();
        let n = self.cfg.assets.len();
        for debt in 0..n {
            let loan = (-self.acct(id).expect("account").wallets[debt]).max(Q::ZERO);
            if loan.is_zero() {
                continue;
            }
            let threshold = self.cfg.assets[debt]
                .collateral
                .as_ref()
                .and_then(|c| c.auto_exchange_threshold);
            if only_above_threshold && threshold.is_none_or(|t| loan <= Q::money(t)) {
                continue;
            }
            let Some(debt_price) = usd[debt] else {
                continue;
            };
            for (src, src_price) in usd.iter().enumerate() {
                let a = self.acct(id).expect("account");
                let remaining = (-a.wallets[debt]).max(Q::ZERO);
                if src == debt || remaining.is_zero() {
                    continue;
                }
                let have = a.wallets[src];
                let (Some(src_price), Some(c)) =
                    (*src_price, self.cfg.assets[src].collateral.as_ref())
                else {
                    continue;
                };
                let collateral = collateral_usd(have, Some(c), Some(src_price)).unwrap_or(Q::ZERO);
                if !have.is_positive() || !collateral.is_positive() {
                    continue;
                }
                let need_usd = up(remaining * debt_price);
                let (sold, repaid) = if need_usd < collateral {
                    // `have × need / collateral`, on raw money units (the product of the
                    // three as fractions would leave i128).
                    let raw = |q: Q| q.floor_units(MONEY);
                    let sold = Q::new(raw(have) * raw(need_usd), raw(collateral)).ceil_units(1);
                    (Q::new(sold, MONEY).min(have), remaining)
                } else {
                    let repaid = (collateral / debt_price).floor_to(MONEY);
                    (have, repaid.min(remaining))
                };
                // The exchange's conversion desk is the counterparty.
                self.acct_mut(id).wallets[src] -= sold;
                self.conversion_desk[src] += sold;
                self.conversion_desk[debt] -= repaid;
                self.acct_mut(id).wallets[debt] += repaid;
                self.after_credit(id, AssetId::at(debt), repaid);
                out.push(Event::AutoExchanged {
                    account: id,
                    sold_asset: AssetId::at(src),
                    sold: sold.to_money(),
                    repaid_asset: AssetId::at(debt),
                    repaid: repaid.to_money(),
                    // ENGINE ROUNDS: each USD value down.
                    sold_usd: down(sold * src_price).to_money(),
                    repaid_usd: down(repaid * debt_price).to_money(),
                });
            }
        }
    }
}
