//! The derived mark price (MARGIN §1; issue 15, item 1): the median of
//!
//! - `P1 = index × (1 + funding rate × time to funding / funding interval)`,
//! - `P2 = index + moving average of (mid − index)` over a window of samples taken at
//!   fixed steps of sequenced time,
//! - the last trade price,
//!
//! as Binance describes its USDⓈ-M mark price. Pure and exact: integers only, one
//! rounding per term (toward negative infinity, at 10^-8). The window is plain data
//! ([`BasisWindow`]) so that an engine can keep it as state and a replay derives the same
//! marks.
//!
//! The funding rate derived from the engine's own book (MARGIN §9; issue 15, item 2)
//! lives here too: the impact bid and ask ([`impact_price`]), the premium index
//! ([`premium_index`]), its time-weighted average over a funding interval
//! ([`PremiumAverage`]) and the rate ([`funding_rate`]).

use perpcore_types::*;
use std::collections::VecDeque;

/// The moving average of `mid − index` (the basis) over the last `len` samples.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct BasisWindow {
    len: usize,
    samples: VecDeque<i64>,
    sum: i128,
}

impl BasisWindow {
    /// A window of `len ≥ 1` samples (Binance: 300, one per second over 5 minutes).
    pub fn new(len: usize) -> BasisWindow {
        assert!(len >= 1, "a moving average needs a window");
        BasisWindow {
            len,
            samples: VecDeque::with_capacity(len),
            sum: 0,
        }
    }

    /// Adds the sample `mid − index`, dropping the oldest beyond the window.
    pub fn push(&mut self, mid: Price, index: Price) {
        let basis = mid.raw() - index.raw();
        if self.samples.len() == self.len {
            let old = self
                .samples
                .pop_front()
                .expect("a full window has a sample");
            self.sum -= i128::from(old);
        }
        self.samples.push_back(basis);
        self.sum += i128::from(basis);
    }

    /// Adds the same sample `n` times (a stretch of sequenced time in which nothing
    /// changed the book or the index): O(min(n, len)).
    pub fn push_n(&mut self, mid: Price, index: Price, n: u64) {
        let keep = usize::try_from(n).unwrap_or(usize::MAX).min(self.len);
        for _ in 0..keep {
            self.push(mid, index);
        }
    }

    /// Samples held (at most the window's length).
    pub fn count(&self) -> usize {
        self.samples.len()
    }

    /// Whether the window holds its full length of samples.
    pub fn is_full(&self) -> bool {
        self.samples.len() == self.len
    }

    /// The average basis (raw price units, rounded down), `None` before the first sample.
    pub fn average(&self) -> Option<i64> {
        let n = i128::try_from(self.samples.len()).ok().filter(|n| *n > 0)?;
        i64::try_from(div_round(self.sum, n, Rounding::Floor)).ok()
    }
}

/// What a derived mark is computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkInputs {
    pub index: Price,
    /// The funding rate the feed announces (Binance's `r`).
    pub funding_rate: Rate,
    /// Sequenced time until the next funding time, at most one interval.
    pub ns_to_funding: u64,
    /// The instrument's funding interval (8 h, 4 h or 1 h).
    pub interval_ns: u64,
    /// The moving average of `mid − index` (see [`BasisWindow::average`]).
    pub basis_average: i64,
    pub last_trade: Price,
}

/// `P1`: the index carried by the share of the funding rate still to come. `None` on a
/// zero interval or a result outside the price range.
pub fn funding_basis_price(i: &MarkInputs) -> Option<Price> {
    if i.interval_ns == 0 {
        return None;
    }
    let t = i128::from(i.ns_to_funding.min(i.interval_ns));
    let interval = i128::from(i.interval_ns);
    // index × (1 + r × t / T) = index × (RATE_SCALE·T + r·t) / (RATE_SCALE·T)
    let scale = i128::from(RATE_SCALE) * interval;
    let factor = scale + i128::from(i.funding_rate.raw()) * t;
    let p = mul_div(i128::from(i.index.raw()), factor, scale, Rounding::Floor);
    i64::try_from(p).ok().map(Price)
}

/// `P2`: the index plus the average basis.
pub fn moving_basis_price(i: &MarkInputs) -> Option<Price> {
    i.index.raw().checked_add(i.basis_average).map(Price)
}

/// The median of `P1`, `P2` and the last trade price. `None` when `P1` or `P2` cannot
/// be formed (see their functions).
pub fn derived_mark(i: &MarkInputs) -> Option<Price> {
    let mut v = [
        funding_basis_price(i)?,
        moving_basis_price(i)?,
        i.last_trade,
    ];
    v.sort_unstable();
    Some(v[1])
}

/// The average fill price of a market order for `notional` against `levels` (one side of
/// a book, best level first, as (price, lots)): `notional / quantity filled`. Linear
/// contracts measure the notional in the settlement asset (`q × p`); inverse ones in USD
/// (`contracts × contract value`, whatever the price) with the quantity in coin, so the
/// average is the harmonic one an inverse fill has. `None` when the side holds less than
/// `notional` (or `notional` is not positive). Rounded down; exact but for that one
/// division (an inverse level's coin value is rounded down at 10^-12 first).
pub fn impact_price(
    spec: &InstrumentSpec,
    levels: impl Iterator<Item = (PriceTicks, QtyLots)>,
    notional: Money,
) -> Option<Price> {
    if !notional.is_positive() {
        return None;
    }
    // `filled`: notional of the whole levels taken; `qty`: their quantity, linear in
    // lots, inverse in coin (raw money units).
    let (mut filled, mut lots, mut coin) = (Money::ZERO, 0i64, Money::ZERO);
    for (ticks, level_lots) in levels {
        let p = spec.price_of(ticks);
        let level = match spec.kind {
            ContractKind::Linear => spec.linear_value(level_lots, p),
            ContractKind::Inverse { .. } => usd_value(spec, level_lots),
        };
        let rest = notional - filled;
        if level < rest {
            filled += level;
            lots = lots.checked_add(level_lots.0)?;
            if spec.is_inverse() {
                coin += spec.inverse_value(level_lots, p, Rounding::Floor);
            }
            continue;
        }
        // The last level fills `rest`: the average is notional / (qty + rest / p).
        let avg = match spec.kind {
            // N / (Q + R/p) = N·p / (Q·p + R), with Q·p the value of the whole levels'
            // lots at this level's price.
            ContractKind::Linear => {
                let denom = spec.linear_value(QtyLots(lots), p) + rest;
                mul_div(
                    notional.raw(),
                    i128::from(p.raw()),
                    denom.raw(),
                    Rounding::Floor,
                )
            }
            // N / (C + R/p) with C the coin of the whole levels: R/p in coin is
            // R·10^8 / p (USD raw 10^-12 over price raw 10^-8 gives coin raw 10^-12).
            ContractKind::Inverse { .. } => {
                let part = mul_div(
                    rest.raw(),
                    i128::from(PRICE_SCALE),
                    i128::from(p.raw()),
                    Rounding::Floor,
                );
                let denom = coin.raw() + part;
                mul_div(
                    notional.raw(),
                    i128::from(PRICE_SCALE),
                    denom,
                    Rounding::Floor,
                )
            }
        };
        return i64::try_from(avg).ok().map(Price);
    }
    None
}

/// USD value `lots × lot × contract value` of inverse contracts (raw money).
fn usd_value(spec: &InstrumentSpec, lots: QtyLots) -> Money {
    // lots × lot_raw × CV_raw is 10^-8 × 10^-12 scaled: divide by 10^8 for money.
    Money(div_round(
        spec.inverse_numerator(lots),
        i128::from(PRICE_SCALE),
        Rounding::Floor,
    ))
}

/// The premium index `P = (max(0, impact bid − index) − max(0, index − impact ask)) /
/// index` (MARGIN §9), rounded down at 10^-10. A side without the impact depth adds
/// nothing.
pub fn premium_index(index: Price, impact_bid: Option<Price>, impact_ask: Option<Price>) -> Rate {
    let over = impact_bid.map_or(0, |b| (b.raw() - index.raw()).max(0));
    let under = impact_ask.map_or(0, |a| (index.raw() - a.raw()).max(0));
    let p = mul_div(
        i128::from(over - under),
        i128::from(RATE_SCALE),
        i128::from(index.raw()),
        Rounding::Floor,
    );
    // |over − under| < index, so |p| < 1 (a rate).
    Rate(i64::try_from(p).expect("a premium below 100% is a rate"))
}

/// The time-weighted average of a funding interval's premium samples, as Binance weighs
/// them: the k-th sample of the interval counts k times, so
/// `avg = Σ k·P_k / Σ k`.
#[derive(Clone, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct PremiumAverage {
    /// Samples taken in this interval.
    pub count: u64,
    /// `Σ k·P_k` (raw rate units).
    pub weighted: i128,
}

impl PremiumAverage {
    /// Adds the same sample `n` times (samples `count + 1 … count + n`): O(1).
    pub fn push_n(&mut self, p: Rate, n: u64) {
        let (a, n) = (i128::from(self.count), i128::from(n));
        // Σ_{k=a+1}^{a+n} k = n(2a + n + 1) / 2; one of n and 2a + n + 1 is even.
        let weights = n * (2 * a + n + 1) / 2;
        self.weighted += i128::from(p.raw()) * weights;
        self.count = self
            .count
            .saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// The weighted average, rounded down; zero before the first sample.
    pub fn average(&self) -> Rate {
        let n = i128::from(self.count);
        if n == 0 {
            return Rate::ZERO;
        }
        let avg = div_round(self.weighted, n * (n + 1) / 2, Rounding::Floor);
        // An average of rates below 100% in magnitude is one.
        Rate(i64::try_from(avg).expect("an average of rates is a rate"))
    }
}

/// The funding rate of an interval: `F = P + clamp(I − P, −0.05%, +0.05%)`, then clamped
/// to `±cap` (MARGIN §9). `interest` is the interest rate per interval.
pub fn funding_rate(average_premium: Rate, interest: Rate, cap: Rate) -> Rate {
    let band = Rate(RATE_SCALE / 2_000); // 0.05%
    let p = average_premium;
    let f = p + (interest - p).max(-band).min(band);
    f.max(-cap).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Price {
        Price::parse(s).unwrap()
    }

    /// P1 with index 28,000, rate 0.01% and 2 h of an 8 h interval left:
    /// 28,000 × (1 + 0.0001 × 2/8) = 28,000 × 1.000025 = 28,000.7.
    /// P2 with an average basis of +1.5: 28,001.5. Last trade 28,001.0: the median is the
    /// trade, 28,001.0. With the trade at 28,010, the median is P2, 28,001.5.
    #[test]
    fn median_of_funding_basis_moving_basis_and_last_trade() {
        let hour = 3_600_000_000_000u64;
        let mut i = MarkInputs {
            index: p("28000"),
            funding_rate: Rate::parse("0.0001").unwrap(),
            ns_to_funding: 2 * hour,
            interval_ns: 8 * hour,
            basis_average: p("1.5").raw(),
            last_trade: p("28001"),
        };
        assert_eq!(funding_basis_price(&i), Some(p("28000.7")));
        assert_eq!(moving_basis_price(&i), Some(p("28001.5")));
        assert_eq!(derived_mark(&i), Some(p("28001")));
        i.last_trade = p("28010");
        assert_eq!(derived_mark(&i), Some(p("28001.5")));
    }

    /// A window of 3: samples 1, 2, 3 average 2; a fourth sample 7 drops the 1: (2 + 3 +
    /// 7) / 3 = 4. Negative bases round down: (−1 − 2) / 2 = −1.5 → −1.5 exactly, and
    /// (−1 − 2 − 2) / 3 = −1.666… → −1.66666667 in raw units (floor).
    #[test]
    fn the_basis_window_averages_the_last_samples() {
        let idx = p("100");
        let mut w = BasisWindow::new(3);
        assert_eq!(w.average(), None);
        for b in ["101", "102", "103"] {
            w.push(p(b), idx);
        }
        assert_eq!(w.average(), Some(p("2").raw()));
        w.push(p("107"), idx);
        assert_eq!((w.count(), w.average()), (3, Some(p("4").raw())));
        let mut w = BasisWindow::new(3);
        w.push(p("99"), idx);
        w.push(p("98"), idx);
        assert_eq!(w.average(), Some(-p("1.5").raw()));
        w.push(p("98"), idx);
        assert_eq!(w.average(), Some(-166_666_667));
    }
}
