//! Fixed-point money for the campaign audit.
//!
//! Owns: the money representation and its exact decimal text form. Money is an `i128`
//! count of 10^-12 units of the quote currency: `1 USDT = 1_000_000_000_000`
//! ([`SCALE`]), so `0.5 USDT = 500_000_000_000`.
//!
//! Must never: use floating point, round, or silently drop digits. Formatting is exact;
//! parsing rejects anything that cannot be represented exactly.

use serde::Serializer;

use crate::error::CampaignError;

/// Fixed-point scale: raw units per 1 unit of quote currency (1 USDT).
pub const SCALE: i128 = 1_000_000_000_000;

/// Number of decimal fraction digits represented by [`SCALE`].
pub const SCALE_DIGITS: usize = 12;

const SCALE_U: u128 = 1_000_000_000_000;

/// Formats a fixed-point amount as exact decimal text with no trailing fraction zeros
/// and no decimal point for whole amounts: `1_234_500_000_000_000 -> "1234.5"`,
/// `500 * SCALE -> "500"`, `-SCALE / 2 -> "-0.5"`, `0 -> "0"`.
#[must_use]
pub fn format_amount(value: i128) -> String {
    let magnitude = value.unsigned_abs();
    let int_part = magnitude / SCALE_U;
    let frac_part = magnitude % SCALE_U;
    let sign = if value < 0 { "-" } else { "" };
    if frac_part == 0 {
        return format!("{sign}{int_part}");
    }
    let frac = format!("{frac_part:0width$}", width = SCALE_DIGITS);
    let frac = frac.trim_end_matches('0');
    format!("{sign}{int_part}.{frac}")
}

/// Parses exact decimal text (`"500"`, `"1234.5"`, `"-0.000000000001"`) into fixed
/// point. Accepts an optional leading `-`, at least one integer digit, and an optional
/// `.` followed by 1..=12 fraction digits. Anything else (exponents, `+`, `_`,
/// whitespace, more than 12 fraction digits, overflow) is an error.
pub fn parse_amount(input: &str) -> Result<i128, CampaignError> {
    let err = |reason: &'static str| CampaignError::InvalidAmount {
        input: input.to_owned(),
        reason,
    };
    let (negative, body) = match input.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, input),
    };
    let (int_text, frac_text) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    if int_text.is_empty() {
        return Err(err("missing integer digits"));
    }
    if !int_text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("integer part must be decimal digits"));
    }
    let mut magnitude: i128 = 0;
    for b in int_text.bytes() {
        magnitude = magnitude
            .checked_mul(10)
            .and_then(|m| m.checked_add(i128::from(b - b'0')))
            .ok_or_else(|| err("amount overflows i128"))?;
    }
    magnitude = magnitude
        .checked_mul(SCALE)
        .ok_or_else(|| err("amount overflows i128"))?;
    if let Some(frac) = frac_text {
        if frac.is_empty() {
            return Err(err("missing fraction digits after '.'"));
        }
        if frac.len() > SCALE_DIGITS {
            return Err(err("more than 12 fraction digits"));
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("fraction part must be decimal digits"));
        }
        let mut frac_value: i128 = 0;
        for b in frac.bytes() {
            frac_value = frac_value * 10 + i128::from(b - b'0');
        }
        for _ in frac.len()..SCALE_DIGITS {
            frac_value *= 10;
        }
        magnitude = magnitude
            .checked_add(frac_value)
            .ok_or_else(|| err("amount overflows i128"))?;
    }
    Ok(if negative { -magnitude } else { magnitude })
}

/// Serde helper: serialises a fixed-point amount as its exact decimal string.
pub(crate) fn serialize_amount<S: Serializer>(value: &i128, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_amount(*value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_exact_decimals() {
        assert_eq!(format_amount(0), "0");
        assert_eq!(format_amount(500 * SCALE), "500");
        // 1234.5 USDT = 1234 * 10^12 + 5 * 10^11
        assert_eq!(format_amount(1_234_500_000_000_000), "1234.5");
        assert_eq!(format_amount(1), "0.000000000001");
        assert_eq!(format_amount(-SCALE / 2), "-0.5");
        assert_eq!(
            format_amount(i128::MIN),
            "-170141183460469231731687303.715884105728"
        );
        assert_eq!(
            format_amount(i128::MAX),
            "170141183460469231731687303.715884105727"
        );
    }

    #[test]
    fn parses_exact_decimals() {
        assert_eq!(parse_amount("500"), Ok(500 * SCALE));
        assert_eq!(parse_amount("1234.5"), Ok(1_234_500_000_000_000));
        assert_eq!(parse_amount("0.000000000001"), Ok(1));
        assert_eq!(parse_amount("-0.5"), Ok(-SCALE / 2));
        assert_eq!(parse_amount("007.10"), Ok(7 * SCALE + SCALE / 10));
    }

    #[test]
    fn rejects_inexact_or_malformed_amounts() {
        for bad in [
            "",
            "-",
            ".5",
            "5.",
            "1e3",
            "+5",
            " 5",
            "5 ",
            "1_000",
            "0.0000000000001",
            "1.2.3",
            "abc",
            "170141183460469231731687304",
        ] {
            assert!(
                matches!(parse_amount(bad), Err(CampaignError::InvalidAmount { .. })),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn round_trips() {
        for v in [
            0,
            1,
            -1,
            SCALE,
            123_456_789_012_345,
            i128::MAX,
            i128::MIN + 1,
        ] {
            assert_eq!(parse_amount(&format_amount(v)), Ok(v));
        }
    }
}
