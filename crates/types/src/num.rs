//! Fixed-point numbers. Money never touches a float.
//!
//! | type | raw | scale | meaning |
//! |---|---|---|---|
//! | [`Money`] | `i128` | 10^12 | an amount of one asset (which asset is known from context) or a USD value |
//! | [`Price`] | `i64` | 10^8 | a price in quote units per base unit (mark, index, reported prices) |
//! | [`Rate`] | `i64` | 10^10 | a dimensionless ratio: fee rate, maintenance margin rate, haircut, funding rate |
//! | [`PriceTicks`] | `i64` | tick of its instrument | an order price |
//! | [`QtyLots`] | `i64` | lot of its instrument | an order or position size (signed for positions) |
//! | [`Qty`] | `i64` | 10^8 | a size in base units (linear) or contracts (inverse), for reports and events |
//! | [`IndexPrice`] | `i128` | 10^12 | an asset's index price against USDT or USD, an asset's USD price, the USDT/USD conversion rate `C` (MARGIN §1) |
//!
//! Every division names its rounding through [`Rounding`]; margin rounds against the
//! account (requirements up, credits down). Arithmetic is checked: an overflow is a bug
//! or an input the edge must refuse, and it panics rather than wraps (`overflow-checks`
//! is on in every profile). Decimal text is converted exactly or refused by
//! [`parse_decimal`]: `"0.1"` is exactly 10^11 raw money units, never `0.1f64`.

use bincode::{Decode, Encode};
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Raw units per 1 of [`Money`].
pub const MONEY_SCALE: i128 = 1_000_000_000_000;
/// Raw units per 1 of [`Price`] and [`Qty`].
pub const PRICE_SCALE: i64 = 100_000_000;
/// Decimal places of [`Money`], [`Price`], [`Rate`].
pub const MONEY_DECIMALS: u32 = 12;
pub const PRICE_DECIMALS: u32 = 8;
pub const RATE_DECIMALS: u32 = 10;
/// Raw units per 1 of [`Rate`].
pub const RATE_SCALE: i64 = 10_000_000_000;
/// Raw units per 1 of [`IndexPrice`].
pub const INDEX_PRICE_SCALE: i128 = 1_000_000_000_000;
/// Decimal places of [`IndexPrice`].
pub const INDEX_PRICE_DECIMALS: u32 = 12;
/// Largest asset index or USD price (10^10 units, the same bound as [`MAX_PRICE`]).
pub const MAX_INDEX_PRICE: IndexPrice = IndexPrice(10_000_000_000 * INDEX_PRICE_SCALE);

/// Largest amount a command may carry (10^15 units): keeps every sum the engine forms
/// far inside `i128`.
pub const MAX_AMOUNT: Money = Money(1_000_000_000_000_000 * MONEY_SCALE);
/// Largest price a command may carry (10^10 units): keeps `price × (1 + band)` inside `i64`.
pub const MAX_PRICE: Price = Price(10_000_000_000 * PRICE_SCALE);

/// How a division rounds. Named at every call site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// Toward negative infinity.
    Floor,
    /// Toward positive infinity.
    Ceil,
}

/// `a * b / d` in i128 with the named rounding. Panics on overflow or `d == 0` (a bug:
/// callers validate divisors at the edge).
#[inline]
pub fn mul_div(a: i128, b: i128, d: i128, r: Rounding) -> i128 {
    // Fast path without 128-bit division: with a = q·d + m (0 ≤ m < d),
    // a·b/d = q·b + m·b/d exactly, and q·b is an integer, so only m·b/d is rounded.
    if let (Ok(a64), Ok(b64), Ok(d64)) = (i64::try_from(a), i64::try_from(b), i64::try_from(d)) {
        if d64 > 0 {
            let q = a64.div_euclid(d64);
            let m = a64.rem_euclid(d64);
            if let Some(mb) = m.checked_mul(b64) {
                return (q as i128) * (b64 as i128) + div_round_i64(mb, d64, r) as i128;
            }
        }
    }
    if let Some(n) = a.checked_mul(b) {
        return div_round(n, d, r);
    }
    // The product does not fit, the quotient may: the same split in i128, with the
    // factor that fits 64 bits as `b`, so that m·b < 2^63·2^63 cannot overflow. (A large
    // amount times a price over a scale: 10^15 BTC valued at 60,000 USD.)
    let (x, y) = if i64::try_from(b).is_ok() {
        (a, b)
    } else {
        (b, a)
    };
    if let Some(q) = mul_div_split(x, y, d, r) {
        return q;
    }
    mul_div_wide(a, b, d, r).unwrap_or_else(|| panic!("mul_div overflow: {a} * {b} / {d}"))
}

/// `a·b/d` through a 256-bit product: exact whenever the result fits an i128. `None`
/// when it does not (or `d == 0`).
fn mul_div_wide(a: i128, b: i128, d: i128, r: Rounding) -> Option<i128> {
    use ethnum::I256;
    if d == 0 {
        return None;
    }
    let n = I256::from(a) * I256::from(b); // |a·b| < 2^254: no overflow
    let d = I256::from(d);
    let (q, rem) = (n / d, n % d); // toward zero
    let q = if rem == 0 {
        q
    } else {
        let exact_is_negative = (rem < 0) != (d < 0);
        match r {
            Rounding::Floor if exact_is_negative => q - 1,
            Rounding::Ceil if !exact_is_negative => q + 1,
            _ => q,
        }
    };
    i128::try_from(q).ok()
}

/// `x·y/d` as `q·y + m·y/d` with `x = q·d + m`, for `y` and `d > 0` of 64 bits: exact
/// whenever the result fits, whatever the size of `x·y`. `None` otherwise.
fn mul_div_split(x: i128, y: i128, d: i128, r: Rounding) -> Option<i128> {
    if i64::try_from(y).is_err() || i64::try_from(d).is_err() || d <= 0 {
        return None;
    }
    let q = x.div_euclid(d);
    let m = x.rem_euclid(d);
    // 0 ≤ m < d < 2^63 and |y| ≤ 2^63: the product is below 2^126.
    q.checked_mul(y)?.checked_add(div_round(m * y, d, r))
}

/// `n / d` with the named rounding.
#[inline]
pub fn div_round(n: i128, d: i128, r: Rounding) -> i128 {
    assert!(d != 0, "division by zero");
    // Most operands fit in 64 bits; i128 division is a slow software routine.
    if let (Ok(n64), Ok(d64)) = (i64::try_from(n), i64::try_from(d)) {
        if n64 != i64::MIN {
            return div_round_i64(n64, d64, r) as i128;
        }
    }
    let q = n / d;
    let rem = n % d;
    if rem == 0 {
        return q;
    }
    // Truncation went toward zero; fix up to the named direction.
    let exact_is_negative = (rem < 0) != (d < 0);
    match r {
        Rounding::Floor if exact_is_negative => q - 1,
        Rounding::Ceil if !exact_is_negative => q + 1,
        _ => q,
    }
}

#[inline]
fn div_round_i64(n: i64, d: i64, r: Rounding) -> i64 {
    let q = n / d;
    let rem = n % d;
    if rem == 0 {
        return q;
    }
    let exact_is_negative = (rem < 0) != (d < 0);
    match r {
        Rounding::Floor if exact_is_negative => q - 1,
        Rounding::Ceil if !exact_is_negative => q + 1,
        _ => q,
    }
}

/// Errors converting decimal text to a fixed-point number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumError {
    #[error("not a decimal number: {0:?}")]
    Syntax(String),
    #[error("{0} has more than {1} decimal places")]
    TooPrecise(String, u32),
    #[error("{0} is out of range")]
    Range(String),
    #[error("{0} must not be negative")]
    Negative(String),
    #[error("{value} is not a multiple of {step}")]
    NotMultiple { value: String, step: String },
}

/// Parse decimal text exactly into an integer with `scale` decimal places.
///
/// The text must be `-?DIGITS(.DIGITS)?` in ASCII: no sign `+`, no spaces, no exponent, no
/// `_`, no leading or trailing point. Digits past `scale` must be zeros (exchanges pad
/// prices); anything else is `TooPrecise`, a value beyond `i128` is `Range`. Checked
/// before any conversion and computed in integers, so nothing is ever rounded (a
/// `rust_decimal` round trip rounds beyond 28 significant digits).
pub fn parse_decimal(text: &str, scale: u32) -> Result<i128, NumError> {
    let syntax = || NumError::Syntax(text.to_string());
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return Err(syntax());
    }
    let frac = frac.unwrap_or("");
    let kept = usize::try_from(scale).unwrap_or(usize::MAX).min(frac.len());
    let (frac_kept, frac_rest) = frac.split_at(kept);
    if frac_rest.bytes().any(|b| b != b'0') {
        return Err(NumError::TooPrecise(text.to_string(), scale));
    }
    let range = || NumError::Range(text.to_string());
    let mut v: i128 = 0;
    for b in int.bytes().chain(frac_kept.bytes()) {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(i128::from(b - b'0')))
            .ok_or_else(range)?;
    }
    let pad = scale - u32::try_from(kept).unwrap_or(scale);
    v = 10i128
        .checked_pow(pad)
        .and_then(|p| v.checked_mul(p))
        .ok_or_else(range)?;
    Ok(if neg { -v } else { v })
}

/// Convert a `Decimal` exactly into an integer with `scale` decimal places.
pub fn decimal_to_fixed(d: Decimal, scale: u32) -> Result<i128, NumError> {
    let d = d.normalize();
    if d.scale() > scale {
        return Err(NumError::TooPrecise(d.to_string(), scale));
    }
    let mantissa = d.mantissa();
    let pow = 10i128
        .checked_pow(scale - d.scale())
        .ok_or_else(|| NumError::Range(d.to_string()))?;
    mantissa
        .checked_mul(pow)
        .ok_or_else(|| NumError::Range(d.to_string()))
}

/// Render a fixed-point integer as exact decimal text, trimming trailing zeros but
/// keeping at least `min_decimals` places.
pub fn format_fixed(raw: i128, scale: u32, min_decimals: u32) -> String {
    let neg = raw < 0;
    let abs = raw.unsigned_abs();
    let pow = 10u128.pow(scale);
    let int = abs / pow;
    let frac = abs % pow;
    let mut frac_s = format!("{:0width$}", frac, width = scale as usize);
    while frac_s.len() > min_decimals as usize && frac_s.ends_with('0') {
        frac_s.pop();
    }
    let sign = if neg { "-" } else { "" };
    if frac_s.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac_s}")
    }
}

macro_rules! fixed_type {
    ($(#[$m:meta])* $name:ident, $inner:ty, $scale:expr, $dec:expr) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Encode, Decode)]
        pub struct $name(pub $inner);

        impl $name {
            pub const ZERO: Self = Self(0);
            pub const ONE: Self = Self($scale as $inner);
            pub const DECIMALS: u32 = $dec;

            /// Exact parse of decimal text; refuses extra precision.
            pub fn parse(text: &str) -> Result<Self, NumError> {
                let raw = parse_decimal(text, $dec)?;
                <$inner>::try_from(raw)
                    .map(Self)
                    .map_err(|_| NumError::Range(text.to_string()))
            }
            /// Whole units, e.g. `from_int(5)` = 5.0.
            pub fn from_int(v: i64) -> Self {
                Self((v as $inner).checked_mul($scale as $inner).expect("overflow"))
            }
            pub fn raw(self) -> $inner {
                self.0
            }
            pub fn is_zero(self) -> bool {
                self.0 == 0
            }
            pub fn is_negative(self) -> bool {
                self.0 < 0
            }
            pub fn is_positive(self) -> bool {
                self.0 > 0
            }
            // Inlined across crates: a call costs more than the negation itself, and
            // notional and bracket code takes `abs` on every pre-trade check.
            #[inline]
            pub fn abs(self) -> Self {
                Self(self.0.checked_abs().expect("overflow"))
            }
            pub fn min(self, o: Self) -> Self {
                if self.0 <= o.0 { self } else { o }
            }
            pub fn max(self, o: Self) -> Self {
                if self.0 >= o.0 { self } else { o }
            }
            pub fn to_decimal_string(self) -> String {
                format_fixed(self.0 as i128, $dec, 0)
            }
        }

        impl std::ops::Add for $name {
            type Output = Self;
            #[inline]
            fn add(self, o: Self) -> Self {
                Self(self.0.checked_add(o.0).expect("overflow"))
            }
        }
        impl std::ops::Sub for $name {
            type Output = Self;
            #[inline]
            fn sub(self, o: Self) -> Self {
                Self(self.0.checked_sub(o.0).expect("overflow"))
            }
        }
        impl std::ops::Neg for $name {
            type Output = Self;
            #[inline]
            fn neg(self) -> Self {
                Self(self.0.checked_neg().expect("overflow"))
            }
        }
        impl std::ops::AddAssign for $name {
            #[inline]
            fn add_assign(&mut self, o: Self) {
                *self = *self + o;
            }
        }
        impl std::ops::SubAssign for $name {
            #[inline]
            fn sub_assign(&mut self, o: Self) {
                *self = *self - o;
            }
        }
        impl std::iter::Sum for $name {
            fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
                iter.fold(Self::ZERO, |a, b| a + b)
            }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.to_decimal_string())
            }
        }
        /// Serialized as exact decimal text (JSON numbers would invite floats).
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_decimal_string())
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

fixed_type!(
    /// An amount of money, scale 10^12 (see module docs).
    Money,
    i128,
    MONEY_SCALE,
    MONEY_DECIMALS
);
fixed_type!(
    /// A price, scale 10^8.
    Price,
    i64,
    PRICE_SCALE,
    PRICE_DECIMALS
);
fixed_type!(
    /// A dimensionless rate, scale 10^10 (0.0005 = 5_000_000).
    Rate,
    i64,
    RATE_SCALE,
    RATE_DECIMALS
);
fixed_type!(
    /// A size in base units or contracts, scale 10^8 (for events and reports).
    Qty,
    i64,
    PRICE_SCALE,
    PRICE_DECIMALS
);

fixed_type!(
    /// An asset's index price against USDT or USD, the USD price derived from it, and the
    /// USD worth of one USDT (`C`, MARGIN §1): scale 10^12, so that a stablecoin index
    /// such as 1.000296667 USD and a conversion rate `C = BTC/USD ÷ BTC/USDT` with more
    /// than 8 decimals are held exactly (a [`Price`] stops at 8).
    ///
    /// Range: a price is in `(0, MAX_INDEX_PRICE]` = `(0, 10^10]` units, `10^22` raw,
    /// beyond `i64` (`9.2·10^18` raw would cap a price at 9.2 million), hence `i128`. A
    /// USD value `amount × price / 10^12` has `|amount| ≤ 10^27` raw (bounded as money
    /// is) and `price ≤ 10^22` raw: the product (≤ 10^49) may leave `i128`, but
    /// [`mul_div`] is exact whenever the quotient fits, and the quotient (≤ 10^37 raw,
    /// the same bound a [`Price`] valuation has) does. Deriving `C = usd × 10^12 / usdt`
    /// gives at most `10^22 · 10^12 = 10^34` raw, and `usdt index × C / 10^12` at most
    /// `10^32` raw before the range check refuses it: both fit `i128`.
    IndexPrice,
    i128,
    INDEX_PRICE_SCALE,
    INDEX_PRICE_DECIMALS
);

impl IndexPrice {
    /// The same price on the finer grid (exact: 10^8 divides 10^12).
    pub fn from_price(p: Price) -> IndexPrice {
        IndexPrice(i128::from(p.raw()) * (INDEX_PRICE_SCALE / PRICE_SCALE as i128))
    }
}

impl Money {
    /// `self × rate` with the named rounding.
    #[inline]
    pub fn mul_rate(self, rate: Rate, rounding: Rounding) -> Money {
        // `mul_div`'s fast path with the divisor a constant, so the compiler replaces
        // both divisions by multiplications (this runs in every pre-trade check). Fees:
        // both factors non-negative, where unsigned division needs no sign fix-ups.
        if let (Ok(a), Ok(r)) = (u64::try_from(self.0), u64::try_from(rate.0)) {
            const D: u64 = RATE_SCALE as u64;
            if let Some(mb) = (a % D).checked_mul(r) {
                let frac = match rounding {
                    Rounding::Floor => mb / D,
                    Rounding::Ceil => mb.div_ceil(D),
                };
                return Money((a / D) as i128 * r as i128 + frac as i128);
            }
        }
        if let Ok(a) = i64::try_from(self.0) {
            let q = a.div_euclid(RATE_SCALE);
            let m = a.rem_euclid(RATE_SCALE);
            if let Some(mb) = m.checked_mul(rate.0) {
                return Money(
                    (q as i128) * (rate.0 as i128)
                        + div_round_i64(mb, RATE_SCALE, rounding) as i128,
                );
            }
        }
        Money(mul_div(
            self.0,
            rate.0 as i128,
            RATE_SCALE as i128,
            rounding,
        ))
    }
    /// `self / n` with the named rounding.
    #[inline]
    pub fn div_int(self, n: i64, r: Rounding) -> Money {
        Money(div_round(self.0, n as i128, r))
    }
    /// `self × a / b` with the named rounding.
    #[inline]
    pub fn mul_div(self, a: i128, b: i128, r: Rounding) -> Money {
        Money(mul_div(self.0, a, b, r))
    }
}

impl Rate {
    /// `a / b` as a rate with the named rounding; `None` when `b == 0`.
    pub fn ratio(a: Money, b: Money, r: Rounding) -> Option<Rate> {
        if b.0 == 0 {
            return None;
        }
        let v = mul_div(a.0, RATE_SCALE as i128, b.0, r);
        i64::try_from(v).ok().map(Rate)
    }
}

/// An order price in ticks of its instrument.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    Encode,
    Decode,
)]
#[serde(transparent)]
pub struct PriceTicks(pub i64);

/// A size in lots of its instrument (signed when it is a position).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    Encode,
    Decode,
)]
#[serde(transparent)]
pub struct QtyLots(pub i64);

impl QtyLots {
    pub const ZERO: Self = Self(0);
    #[inline]
    pub fn abs(self) -> Self {
        Self(self.0.checked_abs().expect("overflow"))
    }
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
    pub fn min(self, o: Self) -> Self {
        if self.0 <= o.0 {
            self
        } else {
            o
        }
    }
}

impl std::ops::Add for QtyLots {
    type Output = Self;
    #[inline]
    fn add(self, o: Self) -> Self {
        Self(self.0.checked_add(o.0).expect("overflow"))
    }
}
impl std::ops::Sub for QtyLots {
    type Output = Self;
    #[inline]
    fn sub(self, o: Self) -> Self {
        Self(self.0.checked_sub(o.0).expect("overflow"))
    }
}
impl std::ops::Neg for QtyLots {
    type Output = Self;
    #[inline]
    fn neg(self) -> Self {
        Self(self.0.checked_neg().expect("overflow"))
    }
}
impl std::ops::AddAssign for QtyLots {
    #[inline]
    fn add_assign(&mut self, o: Self) {
        *self = *self + o;
    }
}
impl std::ops::SubAssign for QtyLots {
    #[inline]
    fn sub_assign(&mut self, o: Self) {
        *self = *self - o;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Issue 13, "Decimals rounded silently": `rust_decimal`'s `from_str` rounds beyond 28
    /// significant digits (a deposit of "1.99999999999999999999999999999" credited 2) and
    /// accepts forms that are never valid money or prices. Text is now checked for digits
    /// and scale before any conversion.
    #[test]
    fn decimals_rounded_silently() {
        // 29 nines after the point at 12 decimals (money): too precise, not 2.
        assert!(matches!(
            parse_decimal("1.99999999999999999999999999999", 12),
            Err(NumError::TooPrecise(..))
        ));
        for bad in [
            "1e3",
            "+1",
            " 1",
            "1 ",
            ".5",
            "63943.",
            "6_3_9_4_5.12",
            "",
            "-",
            "1.2.3",
            "0x10",
            "--1",
            "1,5",
            "٣",
        ] {
            assert!(
                matches!(parse_decimal(bad, 8), Err(NumError::Syntax(_))),
                "{bad:?} was accepted"
            );
        }
        // A 30-decimal tiny price is refused, not read as 0.
        assert!(matches!(
            parse_decimal("0.000000000000000000000000000001", 8),
            Err(NumError::TooPrecise(..))
        ));
        // Exact forms, trailing zeros beyond the scale included (exchanges pad).
        assert_eq!(parse_decimal("84000.10", 8), Ok(8_400_010_000_000));
        assert_eq!(parse_decimal("0.10000000000", 8), Ok(10_000_000));
        assert_eq!(parse_decimal("-1.5", 1), Ok(-15));
        assert_eq!(parse_decimal("007", 0), Ok(7));
        assert_eq!(parse_decimal("-0", 8), Ok(0));
        // Out of range is refused, never wrapped.
        assert!(matches!(
            parse_decimal("999999999999999999999999999999999999999", 8),
            Err(NumError::Range(_))
        ));
    }

    #[test]
    fn parse_is_exact_and_refuses_extra_precision() {
        assert_eq!(Money::parse("0.1").unwrap().0, 100_000_000_000);
        assert_eq!(Money::parse("-5.052").unwrap().0, -5_052_000_000_000);
        assert_eq!(Price::parse("75903.61445783").unwrap().0, 7_590_361_445_783);
        assert!(matches!(
            Price::parse("1.000000001"),
            Err(NumError::TooPrecise(..))
        ));
        assert!(matches!(Money::parse("abc"), Err(NumError::Syntax(_))));
        // Trailing zeros beyond the scale are not extra precision.
        assert_eq!(Price::parse("1.0000000000").unwrap(), Price::ONE);
    }

    /// Issue 15: a stablecoin index of 1.000296667 USD (9 decimals) is held exactly as
    /// 1,000,296,667,000 raw units of 10^-12, where a `Price` refuses it; a 12-decimal
    /// value parses and prints back unchanged; a 13th decimal is refused.
    #[test]
    fn index_price_keeps_twelve_decimals() {
        assert!(matches!(
            Price::parse("1.000296667"),
            Err(NumError::TooPrecise(..))
        ));
        let p = IndexPrice::parse("1.000296667").unwrap();
        assert_eq!(p.raw(), 1_000_296_667_000);
        assert_eq!(p.to_string(), "1.000296667");
        assert_eq!(
            IndexPrice::parse("0.000000000001").unwrap().to_string(),
            "0.000000000001"
        );
        assert!(matches!(
            IndexPrice::parse("0.0000000000001"),
            Err(NumError::TooPrecise(..))
        ));
        // 60,000.12345678 as a Price is 6,000,012,345,678 raw units of 10^-8, and × 10^4
        // on the 10^-12 grid.
        assert_eq!(
            IndexPrice::from_price(Price::parse("60000.12345678").unwrap()).raw(),
            60_000_123_456_780_000
        );
        assert_eq!(MAX_INDEX_PRICE.to_string(), "10000000000");
    }

    #[test]
    fn format_round_trips() {
        assert_eq!(Money(5_052_000_000_000).to_string(), "5.052");
        assert_eq!(Money(-1).to_string(), "-0.000000000001");
        assert_eq!(Money::from_int(3).to_string(), "3");
        assert_eq!(format_fixed(7_590_361_445_783, 8, 8), "75903.61445783");
    }

    #[test]
    fn rounding_directions() {
        assert_eq!(div_round(7, 2, Rounding::Floor), 3);
        assert_eq!(div_round(7, 2, Rounding::Ceil), 4);
        assert_eq!(div_round(-7, 2, Rounding::Floor), -4);
        assert_eq!(div_round(-7, 2, Rounding::Ceil), -3);
        assert_eq!(div_round(7, -2, Rounding::Floor), -4);
        assert_eq!(div_round(-6, 2, Rounding::Ceil), -3);
    }

    proptest! {
        #![proptest_config(perpcore_testkit::prop::config(256))]
        #[test]
        fn floor_le_exact_le_ceil(n in -1_000_000_000i128..1_000_000_000, d in 1i128..10_000) {
            let f = div_round(n, d, Rounding::Floor);
            let c = div_round(n, d, Rounding::Ceil);
            prop_assert!(f * d <= n && n <= c * d);
            prop_assert!(c - f <= 1);
        }

        #[test]
        fn fast_path_agrees_with_wide(n in any::<i64>(), d in any::<i64>()) {
            prop_assume!(d != 0);
            for r in [Rounding::Floor, Rounding::Ceil] {
                // Reference: floor via euclid on i128 (no fast path possible for 2^64 + n).
                let wide = (n as i128) * (1i128 << 64);
                let got = div_round(wide, (d as i128) * (1i128 << 64), r);
                prop_assert_eq!(got, div_round(n as i128, d as i128, r));
            }
        }

        #[test]
        fn mul_div_split_is_exact(
            x in any::<i128>().prop_map(|v| v >> 40),
            y in any::<i64>(),
            d in 1i64..i64::MAX,
            ceil in any::<bool>(),
        ) {
            let r = if ceil { Rounding::Ceil } else { Rounding::Floor };
            let (x, y, d) = (x, y as i128, d as i128);
            // Where the product fits, the plain division is the reference.
            if let Some(n) = x.checked_mul(y) {
                prop_assert_eq!(mul_div_split(x, y, d, r), Some(div_round(n, d, r)));
            }
        }

        #[test]
        fn mul_div_overflow_on_a_large_collateral_ratio(ceil in any::<bool>()) {
            // Found by the hostile soak: 10^27 × 2·10^15 / 4·10^31 = 2·10^42 / 4·10^31 =
            // 5·10^10 exactly, although neither the product nor the divisor fit 64 bits.
            let r = if ceil { Rounding::Ceil } else { Rounding::Floor };
            let (a, b, d) = (10i128.pow(27), 2 * 10i128.pow(15), 4 * 10i128.pow(31));
            prop_assert_eq!(mul_div(a, b, d, r), 5 * 10i128.pow(10));
            // And one that is not exact: + 1 in the product rounds by direction.
            prop_assert_eq!(mul_div(a + 1, b, d, r), 5 * 10i128.pow(10) + i128::from(ceil));
        }

        #[test]
        fn mul_div_wide_is_exact(
            x in any::<i128>().prop_map(|v| v >> 40),
            y in any::<i128>().prop_map(|v| v >> 40),
            d in any::<i128>().prop_filter("non-zero", |d| *d != 0),
            ceil in any::<bool>(),
        ) {
            let r = if ceil { Rounding::Ceil } else { Rounding::Floor };
            if let Some(n) = x.checked_mul(y) {
                prop_assert_eq!(mul_div_wide(x, y, d, r), Some(div_round(n, d, r)));
            }
        }

        #[test]
        fn mul_div_beyond_the_product(k in -1_000_000_000_000i128..1_000_000_000_000, m in 0i128..100_000_000, y in any::<i64>()) {
            // x = k·d + m with d = 10^8 and x·y far beyond i128 when k is large: the
            // quotient k·y + m·y/d is worked exactly by hand here.
            let d = 100_000_000i128;
            let x = k * d + m;
            let y = y as i128;
            let expected = k * y + div_round(m * y, d, Rounding::Floor);
            prop_assert_eq!(mul_div(x, y, d, Rounding::Floor), expected);
            prop_assert_eq!(mul_div(y, x, d, Rounding::Floor), expected);
        }

        #[test]
        fn mul_div_fast_path_is_exact(a in any::<i64>(), b in -20_000_000_000i64..20_000_000_000, d in 1i64..100_000_000_000) {
            for r in [Rounding::Floor, Rounding::Ceil] {
                let wide = div_round((a as i128) * (b as i128), d as i128, r);
                prop_assert_eq!(mul_div(a as i128, b as i128, d as i128, r), wide);
            }
        }

        #[test]
        fn mul_rate_is_exact(a in any::<i128>(), rate in -(1i64 << 60)..(1i64 << 60)) {
            // |a| < 2^65 (past the i64 fast path) and |rate| < 2^60, so the exact product
            // fits an i128.
            let a = a >> 62;
            for r in [Rounding::Floor, Rounding::Ceil] {
                let wide = div_round(a * (rate as i128), RATE_SCALE as i128, r);
                prop_assert_eq!(Money(a).mul_rate(Rate(rate), r), Money(wide));
            }
        }

        #[test]
        fn money_text_round_trip(raw in any::<i64>()) {
            let m = Money(raw as i128);
            prop_assert_eq!(Money::parse(&m.to_string()).unwrap(), m);
        }
    }
}
