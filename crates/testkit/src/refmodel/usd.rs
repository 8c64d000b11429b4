//! USD prices (MARGIN §1) from the asset index tables, and the refusals of asset-mode
//! switches that do not need a USD pool (rule R1, coin-M in multi-asset mode).

use super::*;

/// A derived USD price back on the price grid. ENGINE ROUNDS: down to the price grid;
/// refused outside `(0, MAX_PRICE]`.
fn in_range(exact: Q) -> Result<Q, RejectReason> {
    let p = exact.floor_to(PRICE);
    if p.is_positive() && p <= Q::price(MAX_PRICE) {
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
        index_usdt: &[Option<Price>],
        index_usd: &[Option<Price>],
    ) -> Result<Vec<Option<Q>>, RejectReason> {
        let usdt = self.cfg.assets.iter().position(|a| a.symbol == "USDT");
        let c = match usdt.and_then(|u| index_usd[u]) {
            Some(c) => Q::price(c),
            None => {
                let both = index_usd
                    .iter()
                    .zip(index_usdt)
                    .find_map(|(usd, usdt)| Some((Q::price((*usd)?), Q::price((*usdt)?))));
                match both {
                    Some((usd, usdt)) => in_range(usd / usdt)?,
                    None => Q::int(1),
                }
            }
        };
        (0..self.cfg.assets.len())
            .map(|k| {
                if let Some(p) = index_usd[k] {
                    return Ok(Some(Q::price(p)));
                }
                if usdt == Some(k) {
                    return Ok(Some(c));
                }
                index_usdt[k].map(|p| in_range(Q::price(p) * c)).transpose()
            })
            .collect()
    }

    /// A new asset index: refused if a derived USD price leaves the price range. (With no
    /// USD pool in the model, nothing is revalued.)
    pub(super) fn set_asset_index(
        &mut self,
        asset: AssetId,
        quote: IndexQuote,
        price: Price,
        out: &mut Vec<Event>,
    ) -> Res {
        self.check_asset(asset)?;
        check_price(price)?;
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
        Ok(())
    }

    /// Why a switch of a single-asset account to `mode` is refused before its USD pool is
    /// looked at: R1 (an isolated position or order), then a coin-M position or order
    /// (multi-asset mode only). `None`: the outcome depends on the USD pool.
    pub(super) fn switch_refusal(&self, a: &Acct, mode: AssetMode) -> Option<RejectReason> {
        let used = |l: &Leg| l.lots != 0 || !self.orders_of(a.id, l.instrument).is_empty();
        if a.legs
            .iter()
            .any(|l| l.mode == MarginMode::Isolated && used(l))
        {
            return Some(RejectReason::MultiAssetHasIsolated);
        }
        let inverse = |l: &Leg| self.spec(l.instrument).is_ok_and(|s| s.is_inverse());
        if mode == AssetMode::Multi && a.legs.iter().any(|l| inverse(l) && used(l)) {
            return Some(RejectReason::CoinMInMultiAsset);
        }
        None
    }
}
