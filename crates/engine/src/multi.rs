//! Multi-asset mode and the unified account (MARGIN §1, §4, §5, §8): USD prices, the USD
//! pool, asset-mode switches (rules R1, R2), collateral caps, and the USD pool's part of
//! liquidation. Loans (interest, auto-exchange) are in `loans`.
//!
//! Must never: net one asset's loan against another's balance (loans are per asset), or
//! value a liability below 100%.

use crate::engine::Engine;
use perpcore_risk::{self as risk, UsdPool};
use perpcore_types::*;

/// A price computed in wide integers, back in the engine's range `(0, MAX_INDEX_PRICE]`.
fn price_in_range(raw: i128) -> Result<IndexPrice, RejectReason> {
    let p = IndexPrice(raw);
    if p.is_positive() && p <= MAX_INDEX_PRICE {
        Ok(p)
    } else {
        Err(RejectReason::UsdPriceOutOfRange)
    }
}

/// USD price per asset (MARGIN §1) from the two index tables: a USD index if the feed
/// gave one; else the USDT index × `C`, where `C` (the USD worth of 1 USDT) is the
/// USDT/USD index if given, else `k/USD ÷ k/USDT` of the first asset (by id) with both,
/// else 1. `C` and each USDT index × `C` are rounded down to the 10^-12 grid of
/// [`IndexPrice`] (exact whenever they have at most 12 decimals). Refused when a derived
/// price (`C` or a USDT index × `C`) falls outside `(0, MAX_INDEX_PRICE]`: a zero would
/// value collateral at nothing and divide auto-exchange by zero, and a larger one does
/// not fit a price.
pub(crate) fn usd_prices(
    usdt: Option<AssetId>,
    index_usdt: &[Option<IndexPrice>],
    index_usd: &[Option<IndexPrice>],
) -> Result<Vec<Option<IndexPrice>>, RejectReason> {
    let c = match usdt.and_then(|u| index_usd[u.0 as usize]) {
        Some(c) => Some(c),
        None => index_usd
            .iter()
            .zip(index_usdt)
            .find_map(|pair| match pair {
                (Some(usd), Some(usdt)) => Some((*usd, *usdt)),
                _ => None,
            })
            .map(|(usd, usdt)| {
                price_in_range(mul_div(
                    usd.raw(),
                    INDEX_PRICE_SCALE,
                    usdt.raw(),
                    Rounding::Floor,
                ))
            })
            .transpose()?,
    };
    let c = c.unwrap_or(IndexPrice::ONE);
    index_usd
        .iter()
        .zip(index_usdt)
        .enumerate()
        .map(|(k, (usd, usdt_index))| {
            if usd.is_some() {
                return Ok(*usd);
            }
            if usdt.is_some_and(|u| u.0 as usize == k) {
                return Ok(Some(c));
            }
            usdt_index
                .map(|p| {
                    price_in_range(mul_div(
                        p.raw(),
                        c.raw(),
                        INDEX_PRICE_SCALE,
                        Rounding::Floor,
                    ))
                })
                .transpose()
        })
        .collect()
}

impl Engine {
    /// USD price per asset, derived from the index prices ([`usd_prices`], kept current
    /// by `set_asset_index` and on restore).
    pub(crate) fn usd_prices(&self) -> &[Option<IndexPrice>] {
        &self.ix.usd_cache
    }

    /// The USD pool of account `k` (its mode decides which instruments are in it).
    pub(crate) fn usd_pool_of(&self, k: usize) -> UsdPool {
        let a = &self.state.accounts[k];
        let mode = a.asset_mode;
        risk::usd_pool(
            a,
            &self.state.config,
            &self.state.marks,
            self.usd_prices(),
            |s| risk::is_pooled(mode, s),
        )
    }

    pub(crate) fn set_asset_index(
        &mut self,
        asset: AssetId,
        quote: IndexQuote,
        price: IndexPrice,
        out: &mut Vec<Event>,
    ) -> Result<(), RejectReason> {
        self.state
            .config
            .asset(asset)
            .ok_or(RejectReason::UnknownAsset)?;
        // The same refusals as any other price (`prices::check_price`), on the finer grid.
        if !price.is_positive() {
            return Err(RejectReason::PriceNotPositive);
        }
        if price > MAX_INDEX_PRICE {
            return Err(RejectReason::PriceTooLarge);
        }
        // Derive the USD prices the new index gives before changing anything.
        let (mut index_usdt, mut index_usd) =
            (self.state.index_usdt.clone(), self.state.index_usd.clone());
        match quote {
            IndexQuote::Usdt => index_usdt[asset.0 as usize] = Some(price),
            IndexQuote::Usd => index_usd[asset.0 as usize] = Some(price),
        }
        self.ix.usd_cache = usd_prices(self.ix.usdt, &index_usdt, &index_usd)?;
        (self.state.index_usdt, self.state.index_usd) = (index_usdt, index_usd);
        out.push(Event::AssetIndexSet {
            asset,
            quote,
            price,
        });
        // Every USD pool is revalued: check the accounts that have one.
        self.check_usd_pools(out);
        Ok(())
    }

    /// Deposits and transfers in may not take an account above an asset's individual cap,
    /// or all accounts together above its platform cap (case C1).
    pub(crate) fn check_caps(
        &self,
        k: usize,
        asset: AssetId,
        amount: Money,
    ) -> Result<(), RejectReason> {
        let Some(c) = self.state.config.assets[asset.0 as usize]
            .collateral
            .as_ref()
        else {
            return Ok(());
        };
        if let Some(cap) = c.individual_cap {
            if self.state.accounts[k].wallets[asset.0 as usize] + amount > cap {
                return Err(RejectReason::IndividualCapExceeded);
            }
        }
        if let Some(cap) = c.platform_cap {
            // What the platform holds of the asset: net deposits (every balance, fee,
            // interest and fund included).
            let held =
                self.state.deposited[asset.0 as usize] - self.state.withdrawn[asset.0 as usize];
            if held + amount > cap {
                return Err(RejectReason::PlatformCapExceeded);
            }
        }
        Ok(())
    }

    pub(crate) fn set_asset_mode(
        &mut self,
        id: AccountId,
        mode: AssetMode,
        out: &mut Vec<Event>,
    ) -> Result<(), RejectReason> {
        let k = self.user_idx(id)?;
        let from = self.state.accounts[k].asset_mode;
        if from == mode {
            out.push(Event::AssetModeSet { account: id, mode });
            return Ok(());
        }
        let specs = &self.state.config.instruments;
        let a = &self.state.accounts[k];
        if mode != AssetMode::Single {
            // R1: every leg cross, a flat one too (Binance -4168: no multi-assets mode with
            // symbols in isolated-margin mode). A flat isolated leg that survived the switch
            // would open an isolated position inside a USD pool.
            if a.legs.iter().any(|l| l.mode == MarginMode::Isolated) {
                return Err(RejectReason::MultiAssetHasIsolated);
            }
            if mode == AssetMode::Multi
                && a.legs.iter().any(|l| {
                    specs[l.instrument.0 as usize].is_inverse()
                        && (!l.is_flat() || !l.open_orders.is_empty())
                })
            {
                return Err(RejectReason::CoinMInMultiAsset);
            }
        }
        let mut acct = a.clone();
        acct.asset_mode = mode;
        if mode == AssetMode::Single {
            // R2: each settlement asset covers its positions' and orders' margin, and the
            // account's maintenance margin rate is below 80%.
            let usd = self.usd_prices();
            let mut mm_usd = Money::ZERO;
            let mut balance_usd = Money::ZERO;
            for asset in &self.state.config.assets {
                let p = risk::pool(&acct, asset.id, specs, &self.state.marks);
                let used = p.cross_positions > 0 || !p.order_margin.is_zero();
                if used && p.available().is_negative() {
                    return Err(RejectReason::SingleAssetUncovered);
                }
                if p.cross_positions > 0 {
                    let price = usd[asset.id.0 as usize].ok_or(RejectReason::NoUsdPrice)?;
                    mm_usd += risk::usd_value(p.cross_mm, price);
                    balance_usd += risk::usd_value(p.margin_balance(), price);
                }
            }
            // MMR < 80%  ⇔  5·MM < 4·balance.
            if !mm_usd.is_zero()
                && mm_usd.mul_div(5, 1, Rounding::Ceil)
                    >= balance_usd.mul_div(4, 1, Rounding::Floor)
            {
                return Err(RejectReason::SingleAssetMmrTooHigh);
            }
        } else {
            let mode_pool = risk::usd_pool(
                &acct,
                &self.state.config,
                &self.state.marks,
                self.usd_prices(),
                |s| risk::is_pooled(mode, s),
            );
            if mode_pool.unpriced_liability || mode_pool.available().is_negative() {
                return Err(RejectReason::AssetModeUnderMargin);
            }
        }
        self.state.accounts[k] = acct;
        out.push(Event::AssetModeSet { account: id, mode });
        Ok(())
    }

    /// Liquidation checks for every account with a USD pool (after an index move).
    pub(crate) fn check_usd_pools(&mut self, out: &mut Vec<Event>) {
        for k in 0..self.state.accounts.len() {
            let a = &self.state.accounts[k];
            // Only a pool with a position can be liquidated.
            if a.system || a.asset_mode == AssetMode::Single || a.legs.iter().all(|l| l.is_flat()) {
                continue;
            }
            if self.usd_pool_of(k).is_liquidatable() {
                self.liquidate_usd_pool(k, out);
            }
        }
    }

    /// The first raw price of `spec`'s mark, coming from the unhealthy side, at which
    /// `healthy(pool)` holds, every other price fixed, by bisection over the exact USD
    /// pool (no rounding of its own); see [`Engine::mark_root`].
    pub(crate) fn usd_pool_root(
        &self,
        k: usize,
        position: (&InstrumentSpec, PositionSide),
        healthy: impl Fn(&UsdPool) -> bool,
    ) -> Option<Price> {
        let usd = self.usd_prices();
        let mode = self.state.accounts[k].asset_mode;
        self.mark_root(k, position, |marks| {
            healthy(&risk::usd_pool(
                &self.state.accounts[k],
                &self.state.config,
                marks,
                usd,
                |s| risk::is_pooled(mode, s),
            ))
        })
    }

    /// As [`Engine::usd_pool_root`] over the single-asset cross pool of `spec`'s
    /// settlement asset: a hedge account's cross legs on one instrument both move with
    /// its mark, which the one-leg formula of MARGIN §6 does not cover.
    pub(crate) fn cross_pool_root(
        &self,
        k: usize,
        position: (&InstrumentSpec, PositionSide),
        healthy: impl Fn(&risk::Pool) -> bool,
    ) -> Option<Price> {
        let asset = position.0.settle_asset;
        self.mark_root(k, position, |marks| {
            healthy(&risk::pool(
                &self.state.accounts[k],
                asset,
                &self.state.config.instruments,
                marks,
            ))
        })
    }

    /// Whether `leg` is a cross leg of a hedge account whose other leg on the instrument is
    /// open too: both move with one mark, which the one-leg formula of MARGIN §6 does not
    /// cover (the liquidation and bankruptcy prices search the pool instead).
    pub(crate) fn hedged_cross_pair(&self, k: usize, leg: &risk::Leg) -> bool {
        leg.mode == MarginMode::Cross
            && self.state.accounts[k]
                .legs_of(leg.instrument)
                .filter(|l| !l.is_flat())
                .count()
                > 1
    }

    /// The first raw price of `spec`'s mark, coming from the unhealthy side, at which
    /// `healthy(marks)` holds, every other price fixed, by bisection; `healthy` must hold
    /// above the boundary for a long and below it for a short (the net of the account's
    /// legs on `spec`, or this leg's side when they cancel). `None` if there is no change
    /// between mark / 1000 and mark × 1000.
    pub(crate) fn mark_root(
        &self,
        k: usize,
        (spec, side): (&InstrumentSpec, PositionSide),
        healthy: impl Fn(&[Option<Price>]) -> bool,
    ) -> Option<Price> {
        let leg = self.state.accounts[k].leg(spec.id, side)?;
        if leg.is_flat() {
            return None;
        }
        // Both legs of a hedge account move with the mark: the healthy side is the net
        // position's (the leg's own when the two cancel).
        let net: i64 = self.state.accounts[k]
            .legs_of(spec.id)
            .map(|l| l.qty.0)
            .sum();
        let long = if net != 0 { net > 0 } else { leg.qty.0 > 0 };
        let mut marks = self.state.marks.clone();
        let mut ok = |p: i64| {
            marks[spec.id.0 as usize] = Some(Price(p));
            healthy(&marks)
        };
        // Healthy side: above the root for a long, below it for a short. The search stays
        // within three orders of magnitude of the mark: far outside it a coin-M value
        // `q·CV/P` leaves any meaningful range (and the arithmetic's), and a root there
        // is reported as none.
        let mark = self.state.marks[spec.id.0 as usize]?.raw();
        let (mut lo, mut hi) = (
            (mark / 1_000).max(1),
            mark.saturating_mul(1_000).min(MAX_PRICE.raw()),
        );
        if long {
            if !ok(hi) {
                return None;
            }
            if ok(lo) {
                return None; // never reaches zero
            }
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if ok(mid) {
                    hi = mid
                } else {
                    lo = mid
                }
            }
            Some(Price(hi))
        } else {
            if !ok(lo) {
                return None;
            }
            if ok(hi) {
                return None;
            }
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if ok(mid) {
                    lo = mid
                } else {
                    hi = mid
                }
            }
            Some(Price(lo))
        }
    }

    /// Liquidation of a USD pool (MARGIN §7 over the pool): cancel the pool's orders;
    /// partial by bracket on the largest position; take positions over at their
    /// bankruptcy price; then, with no position left, auto-exchange every loan and let the
    /// funds cover what remains negative.
    pub(crate) fn liquidate_usd_pool(&mut self, k: usize, out: &mut Vec<Event>) {
        let p = self.usd_pool_of(k);
        let mode = self.state.accounts[k].asset_mode;
        out.push(Event::LiquidationTriggered {
            account: self.state.accounts[k].id,
            instrument: None,
            settle_asset: self.ix.usdt.unwrap_or(AssetId(0)),
            margin_balance: p.adjusted_equity,
            maintenance_margin: p.mm,
        });
        self.cancel_where(
            k,
            |s| risk::is_pooled(mode, s),
            CancelReason::Liquidation,
            out,
        );
        if !self.usd_pool_of(k).is_liquidatable() {
            return;
        }
        if let Some((spec, side)) = self.largest_pooled_position(k) {
            self.partial_liquidation(k, &spec, side, out);
        }
        while self.usd_pool_of(k).is_liquidatable() {
            let Some((spec, side)) = self.largest_pooled_position(k) else {
                break;
            };
            self.take_over(k, &spec, side, out);
        }
        if self.usd_pool_of(k).positions == 0 {
            self.auto_exchange(k, false, out);
            for asset in 0..self.state.config.assets.len() {
                self.cover_deficit_asset(k, AssetId::at(asset), out);
            }
        }
    }

    fn largest_pooled_position(&self, k: usize) -> Option<(InstrumentSpec, PositionSide)> {
        let (i, side) = self.view(k).largest_pooled_position()?;
        Some((self.state.config.instruments[i.0 as usize].clone(), side))
    }
}
