//! Liquidation of a USD pool (MARGIN §7 over the pool of a multi-asset or unified
//! account): the trigger, order cancellation, the partial step and takeovers of the
//! largest pooled position, the bankruptcy price where adjusted equity reaches zero, and
//! with no position left, the auto-exchange of every loan and the funds' deficit cover.

use super::*;

impl RefModel {
    /// A mark tick or an index update reached a USD pool: liquidate it if its MM reaches
    /// its adjusted equity (or it cannot be valued).
    pub(super) fn check_usd_pool(&mut self, id: AccountId, out: &mut Vec<Event>) {
        let a = self.acct(id).expect("account");
        if !a.system && a.mode != AssetMode::Single && self.usd_pool(a, a.mode).is_liquidatable() {
            self.liquidate_usd_pool(id, out);
        }
    }

    fn liquidate_usd_pool(&mut self, id: AccountId, out: &mut Vec<Event>) {
        let a = self.acct(id).expect("account");
        let mode = a.mode;
        let p = self.usd_pool(a, mode);
        let usdt = self.cfg.assets.iter().position(|s| s.symbol == "USDT");
        out.push(Event::LiquidationTriggered {
            account: id,
            instrument: None,
            settle_asset: usdt.map_or(AssetId(0), AssetId::at),
            margin_balance: p.adjusted_equity.to_money(),
            maintenance_margin: p.mm.to_money(),
        });
        self.cancel_where(id, |s| pooled(mode, s), CancelReason::Liquidation, out);
        let liquidatable = |m: &RefModel| {
            let a = m.acct(id).expect("account");
            m.usd_pool(a, a.mode).is_liquidatable()
        };
        if !liquidatable(self) {
            return;
        }
        if let Some(spec) = self.largest_pooled_position(id) {
            self.partial_liquidation(id, &spec, out);
        }
        while liquidatable(self) {
            let Some(spec) = self.largest_pooled_position(id) else {
                break;
            };
            self.take_over(id, &spec, out);
        }
        let a = self.acct(id).expect("account");
        if self.usd_pool(a, a.mode).positions == 0 {
            self.auto_exchange(id, false, out);
            for k in 0..self.cfg.assets.len() {
                self.cover_deficit_asset(id, AssetId::at(k), out);
            }
        }
    }

    /// The pooled cross position with the largest MM in USD (ties: lowest instrument).
    /// ENGINE ROUNDS: the MM's USD value down (the MM itself without a USD price).
    fn largest_pooled_position(&self, id: AccountId) -> Option<InstrumentSpec> {
        let a = self.acct(id).expect("account");
        let usd = self.usd_now();
        let mut best: Option<(Q, &InstrumentSpec)> = None;
        for spec in &self.cfg.instruments {
            let Some(leg) = a.leg(spec.id) else { continue };
            if !pooled(a.mode, spec) || leg.mode != MarginMode::Cross || leg.lots == 0 {
                continue;
            }
            let mm = leg.mm(spec, self.marks[spec.id.0 as usize].expect("mark"));
            let mm = usd[usize::from(spec.settle_asset.0)].map_or(mm, |p| down(mm * p));
            if best.is_none_or(|(b, _)| mm > b) {
                best = Some((mm, spec));
            }
        }
        best.map(|(_, s)| s.clone())
    }

    /// The bankruptcy price of a pooled position: the first raw price of its mark, coming
    /// from the unhealthy side, at which the pool's adjusted equity is not negative, every
    /// other price fixed — searched by bisection between mark / 1000 and mark × 1000
    /// (`None` if the pool never reaches zero there).
    pub(super) fn usd_pool_root(&self, id: AccountId, spec: &InstrumentSpec) -> Option<Price> {
        let a = self.acct(id).expect("account");
        let leg = a.leg(spec.id)?;
        if leg.lots == 0 {
            return None;
        }
        let long = leg.lots > 0;
        let mut marks = self.marks.clone();
        let mut healthy = |p: i64| {
            marks[spec.id.0 as usize] = Some(Price(p));
            !self
                .usd_pool_at(a, a.mode, &marks)
                .adjusted_equity
                .is_negative()
        };
        let mark = self.marks[spec.id.0 as usize]?.0;
        let (mut lo, mut hi) = (
            (mark / 1_000).max(1),
            mark.saturating_mul(1_000).min(MAX_PRICE.0),
        );
        // Healthy above the root for a long, below it for a short.
        let (start, end) = if long { (hi, lo) } else { (lo, hi) };
        if !healthy(start) || healthy(end) {
            return None;
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if healthy(mid) == long {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let off = i64::from(self.perturbation == Perturbation::PoolRootOffByOne);
        Some(Price(if long { hi - off } else { lo + off }))
    }

    /// A pooled position's equity for the takeover's fee cap: the pool's adjusted equity
    /// in the settlement asset (zero without a positive USD price). ENGINE ROUNDS: down.
    pub(super) fn pooled_equity(&self, id: AccountId, spec: &InstrumentSpec) -> Q {
        let a = self.acct(id).expect("account");
        let ae = self.usd_pool(a, a.mode).adjusted_equity;
        match self.usd_now()[usize::from(spec.settle_asset.0)] {
            Some(p) if p.is_positive() => (ae / p).floor_to(MONEY),
            _ => Q::ZERO,
        }
    }

    /// A negative balance of a bankrupt account is covered by the fund of that asset.
    pub(super) fn cover_deficit_asset(
        &mut self,
        id: AccountId,
        asset: AssetId,
        out: &mut Vec<Event>,
    ) {
        let k = usize::from(asset.0);
        let wallet = self.acct(id).expect("account").wallets[k];
        if !wallet.is_negative() {
            return;
        }
        // As far as the fund's balance goes: the fund never goes negative.
        let fund = self.acct(fund_id(asset)).expect("fund").wallets[k].max(Q::ZERO);
        let amount = (-wallet).min(fund);
        if amount.is_zero() {
            return;
        }
        self.acct_mut(fund_id(asset)).wallets[k] -= amount;
        let a = self.acct_mut(id);
        a.wallets[k] += amount;
        if !a.wallets[k].is_negative() {
            a.interest_owed[k] = Q::ZERO;
        }
        out.push(Event::DeficitCovered {
            account: id,
            asset,
            amount: amount.to_money(),
        });
    }
}
