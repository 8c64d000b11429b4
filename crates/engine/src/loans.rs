//! Loans of multi-asset and unified accounts (MARGIN §8): hourly interest on negative
//! balances, charged at hour boundaries of sequenced time, and auto-exchange of
//! collateral to repay a loan past its threshold.
//!
//! Must never: net one asset's loan against another's balance (loans are per asset).

use crate::engine::Engine;
use perpcore_risk::{self as risk, UsdPool};
use perpcore_types::*;

impl Engine {
    /// Interest-bearing part of an account's loan in `asset`: the loan principal (negative
    /// equity less unpaid interest) less the part caused by unrealized losses, up to the
    /// interest-free quota.
    pub(crate) fn interest_base(&self, k: usize, asset: AssetId, pool: &UsdPool) -> Money {
        let w = self.state.accounts[k].wallets[asset.0 as usize];
        let eq = pool.equity[asset.0 as usize];
        // Interest is charged on the principal only (no compounding, case B3): the unpaid
        // interest already in the loan is left out.
        let owed = self.state.accounts[k].interest_owed[asset.0 as usize];
        let loan = ((-eq).max(Money::ZERO) - owed).max(Money::ZERO);
        let w = w + owed;
        if loan.is_zero() {
            return Money::ZERO;
        }
        let realized_loan = (-w).max(Money::ZERO).min(loan);
        let unrealized_part = loan - realized_loan;
        let quota = self.state.config.assets[asset.0 as usize]
            .collateral
            .as_ref()
            .map(|c| c.interest_free)
            .unwrap_or_default();
        loan - unrealized_part.min(quota)
    }

    /// Charge interest for the hour slots `first_slot..=last_slot` not yet charged, on every
    /// loan of account `k` (or only on `only`'s). A slot is charged on the loan outstanding
    /// when it is processed — at the hour boundary that ends it, or at a repayment by
    /// deposit inside it (partial hours count whole) — and never twice.
    fn charge_slots(
        &mut self,
        k: usize,
        first_slot: u64,
        last_slot: u64,
        only: Option<AssetId>,
        out: &mut Vec<Event>,
    ) {
        if self.state.accounts[k].asset_mode == AssetMode::Single || self.state.accounts[k].system {
            return;
        }
        let pool = self.usd_pool_of(k);
        for asset in 0..self.state.config.assets.len() {
            let id = AssetId::at(asset);
            if only.is_some_and(|o| o != id) {
                continue;
            }
            let from = self.state.accounts[k].next_interest_slot[asset].max(first_slot);
            if from > last_slot {
                continue;
            }
            let base = self.interest_base(k, id, &pool);
            let rate = self.state.config.assets[asset]
                .collateral
                .as_ref()
                .map(|c| c.daily_interest)
                .unwrap_or_default();
            if base.is_zero() || rate.is_zero() {
                continue;
            }
            self.state.accounts[k].next_interest_slot[asset] = last_slot + 1;
            // base × daily / 24 per slot, rounded up (a charge), for each slot (case B3).
            let slots = (last_slot - from + 1) as i128;
            let amount = Money(mul_div(
                base.raw(),
                rate.raw() as i128 * slots,
                RATE_SCALE as i128 * 24,
                Rounding::Ceil,
            ));
            let a = &mut self.state.accounts[k];
            a.wallets[asset] -= amount;
            a.interest_owed[asset] += amount;
            self.state.interest_income[asset] += amount;
            out.push(Event::InterestCharged {
                account: a.id,
                asset: id,
                amount,
                interest_base: base,
            });
        }
    }

    /// At each hour boundary of the sequenced time, charge the slots that ended on every
    /// loan, then auto-exchange loans above their threshold (MARGIN §8). The scan walks
    /// every account once per hour of sequenced time.
    pub(crate) fn accrue_interest(&mut self, ts_ns: u64, out: &mut Vec<Event>) {
        let slot = ts_ns / HOUR_NS;
        if slot <= self.state.interest_slot {
            return;
        }
        let (first, last) = (self.state.interest_slot, slot - 1);
        self.state.interest_slot = slot;
        for k in 0..self.state.accounts.len() {
            self.charge_slots(k, first, last, None, out);
            if self.state.accounts[k].asset_mode != AssetMode::Single
                && !self.state.accounts[k].system
            {
                self.auto_exchange(k, true, out);
            }
        }
    }

    /// A deposit into an asset with a loan first pays the current (partial) hour's
    /// interest — partial hours count whole — and then interest before principal.
    pub(crate) fn before_credit(&mut self, k: usize, asset: AssetId, out: &mut Vec<Event>) {
        let slot = self.state.last_ts_ns / HOUR_NS;
        self.charge_slots(k, slot, slot, Some(asset), out);
    }

    /// After `amount` was credited to `asset`: interest is repaid first.
    pub(crate) fn after_credit(&mut self, k: usize, asset: AssetId, amount: Money) {
        let owed = &mut self.state.accounts[k].interest_owed[asset.0 as usize];
        *owed -= (*owed).min(amount);
    }

    /// Repay loans by selling other collateral at index, grossed up by its ratio
    /// (`needed / ratio`), to the exchange's conversion desk (`State::conversion_desk`,
    /// whose balances move in both assets; not the insurance funds, which never go
    /// negative). Each exchange's event carries the USD
    /// value of what was sold and of what was repaid, each rounded down.
    /// `only_above_threshold`: just the loans above their threshold (hourly); otherwise
    /// every loan (liquidation).
    pub(crate) fn auto_exchange(
        &mut self,
        k: usize,
        only_above_threshold: bool,
        out: &mut Vec<Event>,
    ) {
        let usd = self.usd_prices().to_vec();
        let n = self.state.config.assets.len();
        for debt in 0..n {
            let loan = (-self.state.accounts[k].wallets[debt]).max(Money::ZERO);
            if loan.is_zero() {
                continue;
            }
            if only_above_threshold {
                let t = self.state.config.assets[debt]
                    .collateral
                    .as_ref()
                    .and_then(|c| c.auto_exchange_threshold);
                if t.is_none_or(|t| loan <= t) {
                    continue;
                }
            }
            let Some(debt_price) = usd[debt] else {
                continue;
            };
            for (src, src_usd) in usd.iter().enumerate() {
                let remaining = (-self.state.accounts[k].wallets[debt]).max(Money::ZERO);
                if src == debt || remaining.is_zero() {
                    continue;
                }
                let have = self.state.accounts[k].wallets[src];
                let (Some(src_price), Some(c)) =
                    (*src_usd, self.state.config.assets[src].collateral.as_ref())
                else {
                    continue;
                };
                // Grossed up by the holding's own ratio: what the whole holding counts as
                // collateral (tiers included) against its USD value, so that selling all of
                // it repays exactly its collateral value.
                let collateral =
                    risk::collateral_usd(have, Some(c), Some(src_price)).unwrap_or_default();
                if !have.is_positive() || !collateral.is_positive() {
                    continue;
                }
                let need_usd = risk::usd_requirement(remaining, debt_price);
                // Coin to sell: have × need / collateral, rounded up; capped by the holding,
                // in which case the repayment is the holding's collateral value.
                let (sold, repaid) = if need_usd < collateral {
                    let sold = Money(mul_div(
                        have.raw(),
                        need_usd.raw(),
                        collateral.raw(),
                        Rounding::Ceil,
                    ));
                    (sold.min(have), remaining)
                } else {
                    let repaid = Money(mul_div(
                        collateral.raw(),
                        INDEX_PRICE_SCALE,
                        debt_price.raw(),
                        Rounding::Floor,
                    ));
                    (have, repaid.min(remaining))
                };
                self.state.accounts[k].wallets[src] -= sold;
                self.state.conversion_desk[src] += sold;
                self.state.conversion_desk[debt] -= repaid;
                self.state.accounts[k].wallets[debt] += repaid;
                self.after_credit(k, AssetId::at(debt), repaid);
                out.push(Event::AutoExchanged {
                    account: self.state.accounts[k].id,
                    sold_asset: AssetId::at(src),
                    sold,
                    repaid_asset: AssetId::at(debt),
                    repaid,
                    sold_usd: risk::usd_value(sold, src_price),
                    repaid_usd: risk::usd_value(repaid, debt_price),
                });
            }
        }
    }
}
