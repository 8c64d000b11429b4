//! Collateral valuation (MARGIN §1, §4): USD value of a holding, tiered collateral ratios
//! by USD value or by coin quantity, liabilities at 100%, and the USD pool of a
//! multi-asset or unified account. Pure; never mutates an account.

use crate::account::Account;
use crate::margin::{position_im, position_mm, upnl};
use perpcore_types::{
    mul_div, CollateralSpec, Config, IndexPrice, InstrumentSpec, MarginMode, Money, Price,
    Rounding, TierUnit, INDEX_PRICE_SCALE, RATE_SCALE,
};

/// `amount × price` (price in USD per unit, 10^-12), rounded down: a holding is worth no
/// more than this, a liability no less in magnitude. Exact before the one rounding (the
/// product is formed in wide integers by [`mul_div`]).
pub fn usd_value(amount: Money, usd_price: IndexPrice) -> Money {
    Money(mul_div(
        amount.raw(),
        usd_price.raw(),
        INDEX_PRICE_SCALE,
        Rounding::Floor,
    ))
}

/// `amount × price` rounded up: a requirement (margin) in USD.
pub fn usd_requirement(amount: Money, usd_price: IndexPrice) -> Money {
    Money(mul_div(
        amount.raw(),
        usd_price.raw(),
        INDEX_PRICE_SCALE,
        Rounding::Ceil,
    ))
}

/// Apply tiers to a non-negative amount: each slice counts at its own ratio (rounded
/// down per slice).
pub fn tiered(x: Money, spec: &CollateralSpec) -> Money {
    debug_assert!(!x.is_negative());
    let mut out = Money::ZERO;
    for (t, tier) in spec.tiers.iter().enumerate() {
        if x <= tier.floor {
            break;
        }
        let top = spec.tiers.get(t + 1).map(|n| n.floor.min(x)).unwrap_or(x);
        let slice = top - tier.floor;
        out += Money(mul_div(
            slice.raw(),
            i128::from(tier.ratio.raw()),
            i128::from(RATE_SCALE),
            Rounding::Floor,
        ));
    }
    out
}

/// The collateral value in USD of an equity `eq` in one asset (MARGIN §4): tiers apply to
/// positive equity only; a negative equity is a liability counted at 100%. An asset with
/// no collateral parameters counts zero when positive. An asset without a USD price
/// counts zero when positive and cannot be valued when negative (`None`).
pub fn collateral_usd(
    eq: Money,
    spec: Option<&CollateralSpec>,
    usd_price: Option<IndexPrice>,
) -> Option<Money> {
    if eq.is_negative() {
        return usd_price.map(|p| usd_value(eq, p));
    }
    let (Some(spec), Some(price)) = (spec, usd_price) else {
        return Some(Money::ZERO);
    };
    Some(match spec.unit {
        TierUnit::Usd => tiered(usd_value(eq, price), spec),
        TierUnit::Quantity => usd_value(tiered(eq, spec), price),
    })
}

/// A multi-asset or unified account's cross pool, in USD.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsdPool {
    /// Per asset: equity (wallet + uPnL of pooled cross positions settling in it).
    pub equity: Vec<Money>,
    /// Per asset: collateral value in USD after haircut (liabilities at 100%).
    pub collateral_usd: Vec<Money>,
    /// Adjusted equity `AE = Σ haircut(Eq_k × usd(k))`.
    pub adjusted_equity: Money,
    pub im: Money,
    pub mm: Money,
    pub order_margin: Money,
    pub positions: u32,
    /// Some asset with a negative equity has no USD price: the pool cannot be valued
    /// and must be treated as failing every check.
    pub unpriced_liability: bool,
}

impl UsdPool {
    pub fn available(&self) -> Money {
        self.adjusted_equity - self.im - self.order_margin
    }
    pub fn is_liquidatable(&self) -> bool {
        self.positions > 0 && (self.unpriced_liability || self.mm >= self.adjusted_equity)
    }
}

/// Value the pool of `account` over the instruments `pooled` accepts.
pub fn usd_pool(
    account: &Account,
    config: &Config,
    marks: &[Option<Price>],
    usd: &[Option<IndexPrice>],
    pooled: impl Fn(&InstrumentSpec) -> bool,
) -> UsdPool {
    let n = config.assets.len();
    let mut p = UsdPool {
        equity: account.wallets.clone(),
        collateral_usd: vec![Money::ZERO; n],
        ..UsdPool::default()
    };
    for leg in &account.legs {
        let spec = &config.instruments[crate::instrument_slot(leg.instrument)];
        if !pooled(spec) {
            continue;
        }
        let k = usize::from(spec.settle_asset.0);
        let to_usd = |m: Money| usd[k].map(|price| usd_requirement(m, price));
        if !leg.order_margin.is_zero() {
            match to_usd(leg.order_margin) {
                Some(v) => p.order_margin += v,
                None => p.unpriced_liability = true,
            }
        }
        if leg.mode != MarginMode::Cross || leg.qty.is_zero() {
            continue;
        }
        let mark = marks[crate::instrument_slot(leg.instrument)].expect("position without a mark");
        p.equity[k] += upnl(leg, spec, mark);
        match (
            to_usd(position_im(leg, spec, mark)),
            to_usd(position_mm(leg, spec, mark)),
        ) {
            (Some(im), Some(mm)) => {
                p.im += im;
                p.mm += mm;
            }
            _ => p.unpriced_liability = true,
        }
        p.positions += 1;
    }
    for (k, asset) in config.assets.iter().enumerate() {
        match collateral_usd(p.equity[k], asset.collateral.as_ref(), usd[k]) {
            Some(v) => {
                p.collateral_usd[k] = v;
                p.adjusted_equity += v;
            }
            None => p.unpriced_liability = true,
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use perpcore_types::{CollateralTier, Rate};

    fn m(s: &str) -> Money {
        Money::parse(s).unwrap()
    }
    fn p(s: &str) -> IndexPrice {
        IndexPrice::parse(s).unwrap()
    }
    fn spec(unit: TierUnit, tiers: &[(&str, &str)]) -> CollateralSpec {
        CollateralSpec {
            unit,
            tiers: tiers
                .iter()
                .map(|(f, r)| CollateralTier {
                    floor: m(f),
                    ratio: Rate::parse(r).unwrap(),
                })
                .collect(),
            individual_cap: None,
            platform_cap: None,
            daily_interest: Rate::ZERO,
            interest_free: Money::ZERO,
            auto_exchange_threshold: None,
        }
    }
    fn value(eq: &str, s: &CollateralSpec, price: &str) -> Money {
        collateral_usd(m(eq), Some(s), Some(p(price))).unwrap()
    }

    /// C1 (Bitget): 10 BTC at 60,000 = 600,000; tiers 0–100k 0.975, 100k–500k 0.97,
    /// 500k–1M 0.965, …: 97,500 + 388,000 + 96,500 = 582,000.
    #[test]
    fn c1_tiers_by_usd_value() {
        let btc = spec(
            TierUnit::Usd,
            &[
                ("0", "0.975"),
                ("100000", "0.97"),
                ("500000", "0.965"),
                ("1000000", "0.96"),
                ("5000000", "0.85"),
            ],
        );
        assert_eq!(value("10", &btc, "60000"), m("582000"));
    }

    /// C2 (unified, USD): 1,000 USDT at 0.9952 + 1,000 USDC at 1 + 0.1 BTC at 16,639.81
    /// × 98% = 995.20 + 1,000 + 1,630.70138 = 3,625.90138.
    #[test]
    fn c2_unified_in_usd() {
        let full = spec(TierUnit::Usd, &[("0", "1")]);
        let btc = spec(TierUnit::Usd, &[("0", "0.98")]);
        let total = value("1000", &full, "0.9952")
            + value("1000", &full, "1")
            + value("0.1", &btc, "16639.81");
        assert_eq!(total, m("3625.90138"));
    }

    /// C3: 1 BTC at 50,000 with ratio 1 + 60,000 APT at 1 with the first 50,000 at 0.8
    /// and the rest at 0 = 50,000 + 40,000 + 0 = 90,000.
    #[test]
    fn c3_usd_and_quantity_tiers() {
        let btc = spec(TierUnit::Usd, &[("0", "1"), ("5000000", "0")]);
        let apt = spec(TierUnit::Quantity, &[("0", "0.8"), ("50000", "0")]);
        assert_eq!(
            value("1", &btc, "50000") + value("60000", &apt, "1"),
            m("90000")
        );
    }

    /// C4: 11,000,000 USDT: 5M × 1 + 5M × 0.98 + 1M × 0.975 = 10,875,000.
    #[test]
    fn c4_stablecoin_tiers() {
        let usdt = spec(
            TierUnit::Usd,
            &[("0", "1"), ("5000000", "0.98"), ("10000000", "0.975")],
        );
        assert_eq!(value("11000000", &usdt, "1"), m("10875000"));
    }

    /// C5: 2,000,000 tokens at 0.6 = 1,200,000 USD: 300k × 1 + 200k × 0.7 + 500k × 0.3 +
    /// 200k × 0 = 590,000.
    #[test]
    fn c5_binance_tier_shape() {
        let t = spec(
            TierUnit::Usd,
            &[
                ("0", "1"),
                ("300000", "0.7"),
                ("500000", "0.3"),
                ("1000000", "0"),
            ],
        );
        assert_eq!(value("2000000", &t, "0.6"), m("590000"));
    }

    /// C6 (MEXC): 2 BTC with the first at 0.9 and the rest at 0.8 = 1.7 BTC of value.
    #[test]
    fn c6_quantity_tiers() {
        let btc = spec(TierUnit::Quantity, &[("0", "0.9"), ("1", "0.8")]);
        assert_eq!(tiered(m("2"), &btc), m("1.7"));
        assert_eq!(value("2", &btc, "30000"), m("51000")); // 1.7 × 30,000
    }

    /// C7: 0.1 BTC at 10,000 with ratio 0.9 + 1,000 USDT = 900 + 1,000 = 1,900.
    #[test]
    fn c7_equity_with_haircut() {
        let btc = spec(TierUnit::Usd, &[("0", "0.9")]);
        let usdt = spec(TierUnit::Usd, &[("0", "1")]);
        assert_eq!(
            value("0.1", &btc, "10000") + value("1000", &usdt, "1"),
            m("1900")
        );
    }

    /// R4: a negative balance is a liability at 100%, whatever the asset's ratio.
    #[test]
    fn r4_liabilities_at_full_value() {
        let btc = spec(TierUnit::Usd, &[("0", "0.5")]);
        assert_eq!(value("-0.1", &btc, "10000"), m("-1000"));
        assert_eq!(value("0.1", &btc, "10000"), m("500"));
    }
}
