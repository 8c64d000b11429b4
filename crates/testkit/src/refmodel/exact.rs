//! Exact rational numbers for the reference model: `num / den` in `i128`, always reduced,
//! `den > 0`. Every operation is exact or panics (checked arithmetic): nothing here ever
//! rounds. Rounding happens only where the model calls [`Q::floor_to`] / [`Q::ceil_to`]
//! to put a value on the engine's fixed-point grid, at the point the engine rounds.
//!
//! Must never: round implicitly, use floats, or borrow the engine's fixed-point helpers.

use perpcore_types::{IndexPrice, Money, Price, Qty, Rate};
use std::cmp::Ordering;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Q {
    num: i128,
    den: i128,
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    a = a.abs();
    b = b.abs();
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn ck(v: Option<i128>) -> i128 {
    v.expect("reference model: exact arithmetic left i128")
}

impl Q {
    pub const ZERO: Q = Q { num: 0, den: 1 };

    pub fn new(num: i128, den: i128) -> Q {
        assert!(den != 0, "reference model: division by zero");
        let g = gcd(num, den).max(1);
        let s = if den < 0 { -1 } else { 1 };
        Q {
            num: num / g * s,
            den: den / g * s,
        }
    }
    pub fn int(v: i128) -> Q {
        Q { num: v, den: 1 }
    }
    pub fn money(m: Money) -> Q {
        Q::new(m.raw(), 1_000_000_000_000)
    }
    pub fn price(p: Price) -> Q {
        Q::new(i128::from(p.raw()), 100_000_000)
    }
    pub fn index_price(p: IndexPrice) -> Q {
        Q::new(p.raw(), 1_000_000_000_000)
    }
    pub fn qty(q: Qty) -> Q {
        Q::new(i128::from(q.raw()), 100_000_000)
    }
    pub fn rate(r: Rate) -> Q {
        Q::new(i128::from(r.raw()), 10_000_000_000)
    }
    pub fn is_zero(self) -> bool {
        self.num == 0
    }
    pub fn is_negative(self) -> bool {
        self.num < 0
    }
    pub fn is_positive(self) -> bool {
        self.num > 0
    }
    pub fn abs(self) -> Q {
        Q {
            num: ck(self.num.checked_abs()),
            den: self.den,
        }
    }
    pub fn min(self, o: Q) -> Q {
        if self <= o {
            self
        } else {
            o
        }
    }
    pub fn max(self, o: Q) -> Q {
        if self >= o {
            self
        } else {
            o
        }
    }

    /// The largest multiple of `1 / per_unit` at or below `self` (toward −∞), as an
    /// integer count of grid units.
    pub fn floor_units(self, per_unit: i128) -> i128 {
        // `num = q·den + r` (0 ≤ r < den): `num·per_unit / den = q·per_unit +
        // r·per_unit / den` exactly, without forming `num·per_unit` (a USD value on the
        // 10^-12 grid of a 10^-12 index price has a numerator past i128 once multiplied).
        let (q, r) = (self.num.div_euclid(self.den), self.num.rem_euclid(self.den));
        ck(ck(q.checked_mul(per_unit))
            .checked_add(ck(r.checked_mul(per_unit)).div_euclid(self.den)))
    }
    /// The smallest multiple of `1 / per_unit` at or above `self` (toward +∞).
    pub fn ceil_units(self, per_unit: i128) -> i128 {
        -(-self).floor_units(per_unit)
    }
    /// Rounded down to the grid `1 / per_unit`.
    pub fn floor_to(self, per_unit: i128) -> Q {
        Q::new(self.floor_units(per_unit), per_unit)
    }
    /// Rounded up to the grid `1 / per_unit`.
    pub fn ceil_to(self, per_unit: i128) -> Q {
        Q::new(self.ceil_units(per_unit), per_unit)
    }
    /// Exactly this amount as engine money; panics if it is not on the 10^-12 grid (the
    /// model must have rounded it where the engine does).
    pub fn to_money(self) -> Money {
        let raw = self.floor_units(1_000_000_000_000);
        assert_eq!(
            Q::new(raw, 1_000_000_000_000),
            self,
            "reference model: {self:?} is not on the money grid"
        );
        Money(raw)
    }
    /// Exactly this price; panics if it is not on the 10^-8 grid.
    pub fn to_price(self) -> Price {
        let raw = self.floor_units(100_000_000);
        assert_eq!(Q::new(raw, 100_000_000), self, "{self:?} is not a price");
        Price(i64::try_from(raw).expect("price fits"))
    }
    /// Exactly this size; panics if it is not on the 10^-8 grid.
    pub fn to_qty(self) -> Qty {
        let raw = self.floor_units(100_000_000);
        assert_eq!(Q::new(raw, 100_000_000), self, "{self:?} is not a size");
        Qty(i64::try_from(raw).expect("size fits"))
    }
}

impl std::ops::Add for Q {
    type Output = Q;
    fn add(self, o: Q) -> Q {
        let g = gcd(self.den, o.den);
        let den = ck((self.den / g).checked_mul(o.den));
        let a = ck(self.num.checked_mul(o.den / g));
        let b = ck(o.num.checked_mul(self.den / g));
        Q::new(ck(a.checked_add(b)), den)
    }
}
impl std::ops::Neg for Q {
    type Output = Q;
    fn neg(self) -> Q {
        Q {
            num: ck(self.num.checked_neg()),
            den: self.den,
        }
    }
}
impl std::ops::Sub for Q {
    type Output = Q;
    fn sub(self, o: Q) -> Q {
        self + (-o)
    }
}
impl std::ops::Mul for Q {
    type Output = Q;
    fn mul(self, o: Q) -> Q {
        // Cross-reduce first so that the products stay small.
        let g1 = gcd(self.num, o.den).max(1);
        let g2 = gcd(o.num, self.den).max(1);
        Q::new(
            ck((self.num / g1).checked_mul(o.num / g2)),
            ck((self.den / g2).checked_mul(o.den / g1)),
        )
    }
}
impl std::ops::Div for Q {
    type Output = Q;
    fn div(self, o: Q) -> Q {
        assert!(!o.is_zero(), "reference model: division by zero");
        self * Q::new(o.den, o.num)
    }
}
impl std::ops::AddAssign for Q {
    fn add_assign(&mut self, o: Q) {
        *self = *self + o;
    }
}
impl std::ops::SubAssign for Q {
    fn sub_assign(&mut self, o: Q) {
        *self = *self - o;
    }
}
impl PartialOrd for Q {
    fn partial_cmp(&self, o: &Q) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Q {
    fn cmp(&self, o: &Q) -> Ordering {
        (*self - *o).num.cmp(&0)
    }
}
impl std::iter::Sum for Q {
    fn sum<I: Iterator<Item = Q>>(it: I) -> Q {
        it.fold(Q::ZERO, |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_only_when_asked() {
        let third = Q::new(1, 3);
        assert_eq!(third + third + third, Q::int(1));
        assert_eq!(third.floor_units(100), 33);
        assert_eq!(third.ceil_units(100), 34);
        assert_eq!((-third).floor_units(100), -34);
        assert_eq!((-third).ceil_units(100), -33);
        assert_eq!(Q::money(Money::parse("1.5").unwrap()), Q::new(3, 2));
        // The split form: (10^30 + 1) / (3·10^12) on the 10^-12 grid is (10^30 + 1) / 3
        // raw units, where num·10^12 ≈ 10^42 would leave i128. 10^30 + 1 ≡ 2 (mod 3), so
        // the floor is (10^30 − 1) / 3 and the ceiling one more.
        let big = Q::new(10i128.pow(30) + 1, 3 * 10i128.pow(12));
        assert_eq!(big.floor_units(10i128.pow(12)), (10i128.pow(30) - 1) / 3);
        assert_eq!(big.ceil_units(10i128.pow(12)), (10i128.pow(30) - 1) / 3 + 1);
    }
}
