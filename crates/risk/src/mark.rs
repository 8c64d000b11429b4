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

use perpcore_types::*;
use std::collections::VecDeque;

/// The moving average of `mid − index` (the basis) over the last `len` samples.
#[derive(Clone, Debug, PartialEq, Eq)]
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
