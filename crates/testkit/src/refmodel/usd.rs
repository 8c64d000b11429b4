//! USD prices (MARGIN §1) from the asset index tables; the USD pool of a multi-asset or
//! unified account (MARGIN §4, §5: tiered collateral, liabilities at 100%); asset-mode
//! switches (rules R1, R2, coin-M in multi-asset mode, the USD pool's check).

use super::*;

/// A derived USD price back on the index price grid. ENGINE ROUNDS: down to the 10^-12
/// grid; refused outside `(0, MAX_INDEX_PRICE]`.
fn in_range(exact: Q) -> Result<Q, RejectReason> {
    let p = exact.floor_to(INDEX_PRICE);
    if p.is_positive() && p <= Q::index_price(MAX_INDEX_PRICE) {
        Ok(p)
    } else {
        Err(RejectReason::UsdPriceOutOfRange)
    }
}

impl RefModel {
    /// USD price per asset: `k/USD` if given; else `k/USDT × C`, where `C` (the USD worth
    /// of one USDT) is USDT/USD if given, else `k/USD ÷ k/USDT` of the first asset (by id)
    /// with both, else 1.
    pub(super) fn usd_prices(
        &self,
        index_usdt: &[Option<IndexPrice>],
        index_usd: &[Option<IndexPrice>],
    ) -> Result<Vec<Option<Q>>, RejectReason> {
        let usdt = self.cfg.assets.iter().position(|a| a.symbol == "USDT");
        let c = match usdt.and_then(|u| index_usd[u]) {
            Some(c) => Q::index_price(c),
            None => {
                let both = index_usd.iter().zip(index_usdt).find_map(|(usd, usdt)| {
                    Some((Q::index_price((*usd)?), Q::index_price((*usdt)?)))
                });
                match both {
                    Some((usd, usdt)) => in_range(usd / usdt)?,
                    None => Q::int(1),
                }
            }
        };
        (0..self.cfg.assets.len())
            .map(|k| {
                if let Some(p) = index_usd[k] {
                    return Ok(Some(Q::index_price(p)));
                }
                if usdt == Some(k) {
                    return Ok(Some(c));
                }
                index_usdt[k]
                    .map(|p| in_range(Q::index_price(p) * c))
                    .transpose()
            })
            .collect()
    }

    /// A new asset index: refused if a derived USD price leaves the price range.
    pub(super) fn set_asset_index(
        &mut self,
        asset: AssetId,
        quote: IndexQuote,
        price: IndexPrice,
        out: &mut Vec<Event>,
    ) -> Res {
        self.check_asset(asset)?;
        if !price.is_positive() {
            return Err(RejectReason::PriceNotPositive);
        }
        if price > MAX_INDEX_PRICE {
            return Err(RejectReason::PriceTooLarge);
        }
        let (mut usdt, mut usd) = (self.index_usdt.clone(), self.index_usd.clone());
        match quote {
            IndexQuote::Usdt => usdt[usize::from(asset.0)] = Some(price),
            IndexQuote::Usd => usd[usize::from(asset.0)] = Some(price),
        }
        self.usd_prices(&usdt, &usd)?;
        (self.index_usdt, self.index_usd) = (usdt, usd);
        out.push(Event::AssetIndexSet {
            asset,
            quote,
            price,
        });
        // Every USD pool with a position is revalued.
        let pooled: Vec<AccountId> = self
            .accounts
            .iter()
            .filter(|a| a.legs.iter().any(|l| l.lots != 0))
            .map(|a| a.id)
            .collect();
        for id in pooled {
            self.check_usd_pool(id, out);
        }
        Ok(())
    }

    /// Why a switch of a single-asset account to `mode` is refused before its USD pool is
    /// looked at: R1 (any leg in isolated mode, a flat one too), then a coin-M position or
    /// order (multi-asset mode only). `None`: the outcome depends on the USD pool.
    pub(super) fn switch_refusal(&self, a: &Acct, mode: AssetMode) -> Option<RejectReason> {
        let used = |l: &Leg| l.lots != 0 || !self.orders_of(a.id, l.instrument).is_empty();
        if a.legs.iter().any(|l| l.mode == MarginMode::Isolated) {
            return Some(RejectReason::MultiAssetHasIsolated);
        }
        let inverse = |l: &Leg| self.spec(l.instrument).is_ok_and(|s| s.is_inverse());
        if mode == AssetMode::Multi && a.legs.iter().any(|l| inverse(l) && used(l)) {
            return Some(RejectReason::CoinMInMultiAsset);
        }
        None
    }

    /// The current USD prices (the index tables were checked when set).
    pub(super) fn usd_now(&self) -> Vec<Option<Q>> {
        self.usd_prices(&self.index_usdt, &self.index_usd)
            .expect("index tables checked when set")
    }

    /// The USD pool `a` would have in `mode`, from scratch: per leg the model pools (a
    /// multi-asset pool leaves coin-M out), the order margin and each cross position's
    /// IM in USD, the position's uPnL in its asset's equity; then every asset's equity as
    /// collateral.
    pub(super) fn usd_pool(&self, a: &Acct, mode: AssetMode) -> UsdPool {
        self.usd_pool_at(a, mode, &self.marks)
    }

    /// [`RefModel::usd_pool`] at the marks given.
    pub(super) fn usd_pool_at(
        &self,
        a: &Acct,
        mode: AssetMode,
        marks: &[Option<Price>],
    ) -> UsdPool {
        let usd = self.usd_now();
        let mut p = UsdPool {
            equity: a.wallets.clone(),
            adjusted_equity: Q::ZERO,
            im: Q::ZERO,
            mm: Q::ZERO,
            order_margin: Q::ZERO,
            positions: 0,
            unpriced_liability: false,
        };
        for leg in &a.legs {
            let spec = self
                .spec(leg.instrument)
                .expect("leg of a known instrument");
            if !pooled(mode, &spec) {
                continue;
            }
            let k = usize::from(spec.settle_asset.0);
            // ENGINE ROUNDS: a requirement in USD, up.
            let to_usd = |m: Q| usd[k].map(|price| up(m * price));
            let reserved: Q = self
                .orders_of(a.id, leg.instrument)
                .iter()
                .map(|o| o.reserved)
                .sum();
            if !reserved.is_zero() {
                match to_usd(reserved) {
                    Some(v) => p.order_margin += v,
                    None => p.unpriced_liability = true,
                }
            }
            if leg.mode != MarginMode::Cross || leg.lots == 0 {
                continue;
            }
            let mark = marks[spec.id.0 as usize].expect("position without a mark");
            p.equity[k] += leg.upnl(&spec, mark);
            match (to_usd(leg.im(&spec, mark)), to_usd(leg.mm(&spec, mark))) {
                (Some(im), Some(mm)) => {
                    p.im += im;
                    p.mm += mm;
                }
                _ => p.unpriced_liability = true,
            }
            p.positions += 1;
        }
        for (k, asset) in self.cfg.assets.iter().enumerate() {
            let value = if self.perturbation == Perturbation::NoHaircut && p.equity[k].is_positive()
            {
                Some(usd[k].map_or(Q::ZERO, |price| down(p.equity[k] * price)))
            } else {
                collateral_usd(p.equity[k], asset.collateral.as_ref(), usd[k])
            };
            match value {
                Some(v) => p.adjusted_equity += v,
                None => p.unpriced_liability = true,
            }
        }
        p
    }

    /// A switch of `a` (now in `from`) to the pooled `mode`: R1, the coin-M rule, then
    /// the new USD pool must be valued and leave available margin non-negative.
    pub(super) fn check_switch_to_pool(&self, a: &Acct, mode: AssetMode) -> Res {
        if let Some(r) = self.switch_refusal(a, mode) {
            return Err(r);
        }
        let p = self.usd_pool(a, mode);
        if p.unpriced_liability || p.available().is_negative() {
            return Err(RejectReason::AssetModeUnderMargin);
        }
        Ok(())
    }

    /// R2, back to single-asset mode: each settlement asset used by cross positions or
    /// orders covers their margin, in asset order; the maintenance margin rate in USD is
    /// below 80% (`5 × MM < 4 × balance`).
    pub(super) fn check_switch_to_single(&self, a: &Acct) -> Res {
        let usd = self.usd_now();
        let mut a = a.clone();
        a.mode = AssetMode::Single;
        let (mut mm_usd, mut balance_usd) = (Q::ZERO, Q::ZERO);
        for asset in &self.cfg.assets {
            let p = self.pool_of(&a, asset.id);
            let used = p.cross_positions > 0 || !p.order_margin.is_zero();
            if used && p.available().is_negative() {
                return Err(RejectReason::SingleAssetUncovered);
            }
            if p.cross_positions > 0 {
                let price = usd[usize::from(asset.id.0)].ok_or(RejectReason::NoUsdPrice)?;
                // ENGINE ROUNDS: each USD value down.
                mm_usd += down(p.cross_mm * price);
                balance_usd += down(p.margin_balance() * price);
            }
        }
        if !mm_usd.is_zero() && Q::int(5) * mm_usd >= Q::int(4) * balance_usd {
            return Err(RejectReason::SingleAssetMmrTooHigh);
        }
        Ok(())
    }

    pub(super) fn set_asset_mode(
        &mut self,
        id: AccountId,
        mode: AssetMode,
        out: &mut Vec<Event>,
    ) -> Res {
        let a = self.user(id)?.clone();
        if a.mode != mode {
            if mode == AssetMode::Single {
                self.check_switch_to_single(&a)?;
            } else {
                self.check_switch_to_pool(&a, mode)?;
            }
            self.acct_mut(id).mode = mode;
        }
        out.push(Event::AssetModeSet { account: id, mode });
        Ok(())
    }

    /// The owner's withdrawal check (MARGIN §5), for a withdrawal or a transfer out: the
    /// single-asset pool's withdrawable amount; with a USD pool also a wallet that holds
    /// the amount, and the pool after it — valued again with every asset's unrealized
    /// profit left out when it has positions or orders — valued and not under margin.
    pub(super) fn can_withdraw(&self, id: AccountId, asset: AssetId, amount: Money) -> bool {
        let a = self.acct(id).expect("account");
        let amount = Q::money(amount);
        if self.pool_of(a, asset).withdrawable() < amount {
            return false;
        }
        if a.mode == AssetMode::Single {
            return true;
        }
        let k = usize::from(asset.0);
        if a.wallets[k] < amount {
            return false;
        }
        let mut after = a.clone();
        after.wallets[k] -= amount;
        let mut pool = self.usd_pool(&after, after.mode);
        if pool.positions == 0 && pool.order_margin.is_zero() {
            return !pool.unpriced_liability;
        }
        let usd = self.usd_now();
        pool.adjusted_equity = Q::ZERO;
        for (i, spec) in self.cfg.assets.iter().enumerate() {
            let eq = after.wallets[i] + (pool.equity[i] - after.wallets[i]).min(Q::ZERO);
            match collateral_usd(eq, spec.collateral.as_ref(), usd[i]) {
                Some(v) => pool.adjusted_equity += v,
                None => return false,
            }
        }
        !pool.unpriced_liability && !pool.available().is_negative()
    }

    /// The pre-trade check's margin: whether the available margin of the pool an order
    /// on `spec` draws on, plus `released`, covers `needed` (both in the settlement
    /// asset). ENGINE ROUNDS: with a USD pool, `needed` and `released` in USD up.
    pub(super) fn covers(
        &self,
        a: &Acct,
        spec: &InstrumentSpec,
        needed: Q,
        released: Q,
    ) -> Result<bool, RejectReason> {
        if !pooled(a.mode, spec) {
            return Ok(self.pool_of(a, spec.settle_asset).available() + released >= needed);
        }
        let pool = self.usd_pool(a, a.mode);
        if pool.unpriced_liability {
            return Err(RejectReason::NoUsdPrice);
        }
        let price = self.usd_now()[usize::from(spec.settle_asset.0)];
        let needed = price
            .map(|p| up(needed * p))
            .ok_or(RejectReason::NoUsdPrice)?;
        let released = price.map_or(Q::ZERO, |p| up(released * p));
        Ok(pool.available() + released >= needed)
    }
}

/// A multi-asset or unified account's cross pool, in USD (the part the model compares:
/// a switch's check).
pub(super) struct UsdPool {
    /// Per asset: wallet + uPnL of the pooled cross positions settling in it.
    pub(super) equity: Vec<Q>,
    /// `Σ collateral(equity_k)` in USD.
    pub(super) adjusted_equity: Q,
    pub(super) im: Q,
    pub(super) mm: Q,
    pub(super) order_margin: Q,
    /// Pooled cross positions.
    pub(super) positions: u32,
    /// A negative equity without a USD price: the pool cannot be valued.
    pub(super) unpriced_liability: bool,
}

impl UsdPool {
    pub(super) fn available(&self) -> Q {
        self.adjusted_equity - self.im - self.order_margin
    }
    pub(super) fn is_liquidatable(&self) -> bool {
        self.positions > 0 && (self.unpriced_liability || self.mm >= self.adjusted_equity)
    }
}

/// Tiers like tax brackets over a non-negative amount. ENGINE ROUNDS: each slice's part
/// down to the money grid.
fn tiered(x: Q, spec: &CollateralSpec) -> Q {
    let mut out = Q::ZERO;
    for (t, tier) in spec.tiers.iter().enumerate() {
        let floor = Q::money(tier.floor);
        if x <= floor {
            break;
        }
        let top = spec
            .tiers
            .get(t + 1)
            .map_or(x, |n| Q::money(n.floor).min(x));
        out += down((top - floor) * Q::rate(tier.ratio));
    }
    out
}

/// The USD collateral value of an equity in one asset (MARGIN §4): tiers on positive
/// equity only (by USD value or by quantity); a negative equity counts at 100% and
/// cannot be valued without a USD price; no parameters or no price count zero.
/// ENGINE ROUNDS: every USD value down (a holding worth no more, a liability no less).
pub(super) fn collateral_usd(eq: Q, spec: Option<&CollateralSpec>, price: Option<Q>) -> Option<Q> {
    if eq.is_negative() {
        return price.map(|p| down(eq * p));
    }
    let (Some(spec), Some(price)) = (spec, price) else {
        return Some(Q::ZERO);
    };
    Some(match spec.unit {
        TierUnit::Usd => tiered(down(eq * price), spec),
        TierUnit::Quantity => down(tiered(eq, spec) * price),
    })
}
