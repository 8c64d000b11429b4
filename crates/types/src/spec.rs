//! Asset and instrument specifications: the static parameters the engine is built from.
//! Loaded and validated by `perpcore-config`; journaled at genesis so that a journal alone
//! is enough to replay. Conversions between ticks/lots and prices/money live here, in one
//! place, so that every crate converts the same way.

use crate::ids::{AssetId, InstrumentId};
use crate::num::{Money, Price, PriceTicks, Qty, QtyLots, Rate, Rounding};
use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// A settlement or collateral asset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct AssetSpec {
    pub id: AssetId,
    pub symbol: String,
    /// How the asset counts as collateral in multi-asset mode and the unified account,
    /// and how it is lent. `None`: it counts zero and cannot be borrowed.
    pub collateral: Option<CollateralSpec>,
}

/// What a collateral tier's floor is measured in (MARGIN §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "snake_case")]
pub enum TierUnit {
    /// USD value of the holding.
    Usd,
    /// Quantity of the coin.
    Quantity,
}

/// One slice of a tiered collateral ratio: from `floor` up to the next tier's floor each
/// unit counts at `ratio` (like a tax bracket).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct CollateralTier {
    pub floor: Money,
    pub ratio: Rate,
}

/// Collateral and lending parameters of an asset (MARGIN §4, §8).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct CollateralSpec {
    pub unit: TierUnit,
    /// Ascending floors, the first at zero; the last tier is unbounded.
    pub tiers: Vec<CollateralTier>,
    /// Most of this asset one account may hold (quantity).
    pub individual_cap: Option<Money>,
    /// Most of this asset all accounts together may hold (quantity).
    pub platform_cap: Option<Money>,
    /// Borrowing rate per day; interest is charged hourly at `daily / 24`.
    pub daily_interest: Rate,
    /// Interest-free quota (quantity) for loans caused by unrealized losses.
    pub interest_free: Money,
    /// A loan above this quantity is repaid by auto-exchanging other collateral.
    pub auto_exchange_threshold: Option<Money>,
}

/// Contract family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "snake_case")]
pub enum ContractKind {
    /// USDT-M / USDC-M: size in base coin, PnL and margin in the quote stablecoin.
    Linear,
    /// Coin-M: size in contracts of `contract_value` USD, PnL and margin in the base coin.
    Inverse { contract_value: Money },
}

/// One risk-limit bracket (MARGIN §3). `cum` is the maintenance amount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct Bracket {
    pub notional_floor: Money,
    pub notional_cap: Money,
    pub max_leverage: u32,
    pub mmr: Rate,
    pub cum: Money,
}

/// A perpetual contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct InstrumentSpec {
    pub id: InstrumentId,
    pub symbol: String,
    pub kind: ContractKind,
    pub base_asset: AssetId,
    pub quote_asset: AssetId,
    /// The asset margin, PnL and fees are booked in.
    pub settle_asset: AssetId,
    /// Price of one tick (scale 10^8).
    pub tick_size: Price,
    /// Size of one lot in base units or contracts (scale 10^8; a multiple of 0.0001).
    pub lot_size: Qty,
    pub min_qty: QtyLots,
    pub max_qty: QtyLots,
    pub max_leverage: u32,
    pub brackets: Vec<Bracket>,
    /// Negative maker fee = rebate.
    pub maker_fee: Rate,
    pub taker_fee: Rate,
    /// Limit orders must lie within mark × (1 ± band); market orders fill no further.
    pub price_band: Rate,
    /// Charged on the notional taken over in liquidation, paid to the insurance fund.
    pub liquidation_fee: Rate,
    /// Bybit's order cost (case M6): add the estimated fee to close (the taker fee on the
    /// position's value at its bankruptcy price estimated from entry and leverage; linear
    /// or inverse) to IM and MM. Implied by [`MarginConvention::Bybit`].
    pub fee_to_close: bool,
    /// Most open orders one account may rest on this instrument (Binance: 200). A new
    /// order that could rest (GTC or post-only limit) is refused at the limit with
    /// `TooManyOpenOrders`; market, IOC and FOK orders and amends are not counted against
    /// it, so a trader at the limit can still reduce a position or reprice.
    pub max_open_orders: u32,
    /// Time between funding times (Binance: 8 h for most, 4 h or 1 h for some). A
    /// funding time the feed announced is settled by the first command sequenced at or
    /// after it; the next one is this interval later unless the feed announces another.
    pub funding_interval_ns: u64,
    /// Where the mark comes from: the feed's (`SetMarkPrice`) or derived in the engine.
    pub mark_method: MarkMethod,
    /// Where the funding rate comes from: the feed's (`SetFundingRate`) or derived from
    /// the engine's own book.
    pub funding_method: FundingMethod,
    /// Which exchange's margin conventions the instrument follows (docs/MARGIN.md,
    /// "Conventions"). Last field, so other additions merge cleanly above it.
    pub convention: MarginConvention,
}

/// A per-instrument convention profile: where the two exchanges whose worked examples
/// perpcore reproduces compute margin differently.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "snake_case")]
pub enum MarginConvention {
    /// Binance: maintenance margin on the notional at mark; the fee to close only if
    /// `fee_to_close` is set; a margin-mode switch is refused while the account has an
    /// open position or open order on the instrument (Binance -4048 / -4047).
    #[default]
    Binance,
    /// Bybit: maintenance margin (bracket, `mmr`, `cum`) on the position value at entry,
    /// plus the fee to close (implied: `fee_to_close` must be set); an isolated
    /// position's margin includes its fee to close; the bankruptcy price is where equity
    /// less the taker fee of closing there reaches zero; a margin-mode switch with a
    /// position is re-evaluated (refused, changing nothing, if margin would not cover).
    Bybit,
}

/// How an instrument's mark price is set (MARGIN §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub enum MarkMethod {
    /// `SetMarkPrice` from a feed, applied as is.
    Recorded,
    /// The median of the funding-basis price, the moving-basis price and the last trade
    /// (`perpcore_risk::mark`), recomputed at every step of sequenced time.
    Derived {
        /// Samples of `mid − index` in the moving average (Binance: 300).
        window: u32,
        /// Time between samples (Binance: 1 s); divides the funding interval.
        step_ns: u64,
    },
}

/// How an instrument's funding rate is set (MARGIN §9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub enum FundingMethod {
    /// `SetFundingRate` from a feed, applied as is.
    Recorded,
    /// From the premium index of the engine's own book, sampled every `step_ns`.
    Derived {
        /// Margin whose notional at the instrument's maximum leverage sets the impact
        /// bid and ask (Binance: 200 USDT), in the quote currency (USD for inverse).
        impact_margin: Money,
        /// Interest rate per funding interval (Binance: 0.01% per 8 h).
        interest: Rate,
        /// The rate is clamped to ±cap (Binance: 75% of the first bracket's mmr).
        cap: Rate,
        /// Time between premium samples (Binance: 5 s); divides the funding interval.
        step_ns: u64,
    },
}

/// Binance's moving-average window of the derived mark: 5 minutes of 1-second samples.
pub const DEFAULT_MARK_WINDOW: u32 = 300;
/// Binance's mark sample step: 1 s.
pub const DEFAULT_MARK_STEP_NS: u64 = 1_000_000_000;
/// Binance's premium sample step: 5 s.
pub const DEFAULT_PREMIUM_STEP_NS: u64 = 5_000_000_000;

/// The open-order limit per account and instrument when a configuration names none.
pub const DEFAULT_MAX_OPEN_ORDERS: u32 = 200;

/// One hour in nanoseconds.
pub const HOUR_NS: u64 = 3_600_000_000_000;

/// The funding interval when a configuration names none: 8 hours.
pub const DEFAULT_FUNDING_INTERVAL_NS: u64 = 8 * HOUR_NS;

/// Raw Qty units per lot-factor unit: notional (10^-12) = lots × (lot_raw / 10^4) × price_raw.
const LOT_FACTOR_DIVISOR: i64 = 10_000;

impl InstrumentSpec {
    #[inline]
    pub fn price_of(&self, ticks: PriceTicks) -> Price {
        Price(ticks.0.checked_mul(self.tick_size.0).expect("overflow"))
    }
    /// The tick at or beyond `price` in the named direction.
    #[inline]
    pub fn ticks_of(&self, price: Price, r: Rounding) -> PriceTicks {
        // A tick is at least one raw unit (the configuration check), so the quotient is no
        // larger than the price in magnitude (rounding away from zero adds one at most
        // where the division was inexact, i.e. where the tick is above one unit).
        PriceTicks(
            i64::try_from(crate::num::div_round(
                price.0 as i128,
                self.tick_size.0 as i128,
                r,
            ))
            .expect("a price in ticks fits"),
        )
    }
    #[inline]
    pub fn qty_of(&self, lots: QtyLots) -> Qty {
        Qty(lots.0.checked_mul(self.lot_size.0).expect("overflow"))
    }
    #[inline(always)]
    fn lot_factor(&self) -> i128 {
        (self.lot_size.0 / LOT_FACTOR_DIVISOR) as i128
    }
    #[inline]
    pub fn is_inverse(&self) -> bool {
        matches!(self.kind, ContractKind::Inverse { .. })
    }

    /// Signed position value `q × p` of a linear contract in the settlement asset. Exact.
    #[inline]
    pub fn linear_value(&self, lots: QtyLots, price: Price) -> Money {
        debug_assert!(!self.is_inverse());
        // Two i64 factors cannot overflow an i128 (|a·b| < 2^126), so the first product
        // needs no check; when it fits in an i64 so does the second one.
        let a = (lots.0 as i128).wrapping_mul(self.lot_factor());
        let v = match i64::try_from(a) {
            Ok(a64) => (a64 as i128).wrapping_mul(price.0 as i128),
            Err(_) => a.checked_mul(price.0 as i128).expect("overflow"),
        };
        Money(v)
    }

    /// Signed coin value `q × CV / p` of an inverse contract, rounded as named.
    #[inline]
    pub fn inverse_value(&self, lots: QtyLots, price: Price, r: Rounding) -> Money {
        let ContractKind::Inverse { contract_value } = self.kind else {
            panic!("inverse_value on a linear instrument");
        };
        assert!(price.0 > 0, "inverse value at non-positive price");
        // contracts = lots × lot_raw / 10^8; value = contracts × CV / price.
        // raw money = lots × lot_raw × CV_raw / price_raw (the 10^8 scales cancel).
        let n = (lots.0 as i128)
            .checked_mul(self.lot_size.0 as i128)
            .and_then(|v| v.checked_mul(contract_value.0))
            .expect("overflow");
        Money(crate::num::div_round(n, price.0 as i128, r))
    }

    /// Signed `lots × lot × contract value` in raw units: the numerator of an inverse
    /// position's coin value (`value_raw = this / price_raw`).
    #[inline]
    pub fn inverse_numerator(&self, lots: QtyLots) -> i128 {
        let ContractKind::Inverse { contract_value } = self.kind else {
            panic!("inverse_numerator on a linear instrument");
        };
        (lots.0 as i128)
            .checked_mul(self.lot_size.0 as i128)
            .and_then(|v| v.checked_mul(contract_value.0))
            .expect("overflow")
    }

    /// Absolute notional at `price` in the settlement asset (linear exact; inverse rounded
    /// up, as notional drives requirements).
    #[inline(always)]
    pub fn notional(&self, lots: QtyLots, price: Price) -> Money {
        match self.kind {
            ContractKind::Linear => self.linear_value(lots.abs(), price),
            ContractKind::Inverse { .. } => self.inverse_value(lots.abs(), price, Rounding::Ceil),
        }
    }

    /// The bracket holding `notional` (the last one if above every cap).
    #[inline]
    pub fn bracket_for(&self, notional: Money) -> &Bracket {
        let n = notional.abs();
        self.brackets
            .iter()
            .find(|b| n <= b.notional_cap)
            .unwrap_or_else(|| {
                self.brackets
                    .last()
                    .expect("validated: at least one bracket")
            })
    }

    /// The notional of the impact bid and ask: `impact_margin × max leverage` (derived
    /// funding only).
    pub fn impact_notional(&self) -> Option<Money> {
        match self.funding_method {
            FundingMethod::Derived { impact_margin, .. } => Some(Money(
                impact_margin
                    .raw()
                    .saturating_mul(i128::from(self.max_leverage)),
            )),
            FundingMethod::Recorded => None,
        }
    }

    /// Maintenance margin of a position with `notional` (MARGIN §3: `N × mmr − cum`),
    /// rounded up (against the account).
    pub fn maintenance_margin(&self, notional: Money) -> Money {
        let b = self.bracket_for(notional);
        notional.abs().mul_rate(b.mmr, Rounding::Ceil) - b.cum
    }
}

/// `cum_n = floor_n × (mmr_n − mmr_{n−1}) + cum_{n−1}` (MARGIN §3, case M1). Exact when
/// floors are whole units; otherwise rounded down (a smaller `cum` means a larger MM,
/// which is against the account).
pub fn bracket_cums(floors_and_mmrs: &[(Money, Rate)]) -> Vec<Money> {
    let mut out = Vec::with_capacity(floors_and_mmrs.len());
    let mut prev_mmr = Rate::ZERO;
    let mut cum = Money::ZERO;
    for (i, (floor, mmr)) in floors_and_mmrs.iter().enumerate() {
        if i > 0 {
            cum += floor.mul_rate(*mmr - prev_mmr, Rounding::Floor);
        }
        out.push(cum);
        prev_mmr = *mmr;
    }
    out
}

/// The full static configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct Config {
    pub assets: Vec<AssetSpec>,
    pub instruments: Vec<InstrumentSpec>,
}

impl Config {
    #[inline]
    pub fn instrument(&self, id: InstrumentId) -> Option<&InstrumentSpec> {
        self.instruments.get(id.0 as usize)
    }
    #[inline]
    pub fn asset(&self, id: AssetId) -> Option<&AssetSpec> {
        self.assets.get(id.0 as usize)
    }
    pub fn instrument_by_symbol(&self, symbol: &str) -> Option<&InstrumentSpec> {
        self.instruments.iter().find(|i| i.symbol == symbol)
    }
    pub fn asset_by_symbol(&self, symbol: &str) -> Option<&AssetSpec> {
        self.assets.iter().find(|a| a.symbol == symbol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Money {
        Money::parse(s).unwrap()
    }
    fn r(s: &str) -> Rate {
        Rate::parse(s).unwrap()
    }

    /// Case M1: brackets ≤50k at 0.4%, 50k–250k at 0.5%, 250k–1M at 1%.
    /// cum_2 = 50,000 × (0.5% − 0.4%) = 50; cum_3 = 250,000 × (1% − 0.5%) + 50 = 1,300.
    #[test]
    fn m1_cum_amounts() {
        let cums = bracket_cums(&[
            (m("0"), r("0.004")),
            (m("50000"), r("0.005")),
            (m("250000"), r("0.01")),
        ]);
        assert_eq!(cums, vec![m("0"), m("50"), m("1300")]);
    }
}
