//! The block-hash lucky draw.
//!
//! Owns: deriving the draw number from a block hash ([`DrawNumber`]), the suffix match
//! level of an account ([`match_level`]) and winner selection ([`select_winners`]).
//!
//! Rules: the hash (optional `0x`/`0X` prefix) must be non-empty hex; its letters are
//! removed and the remaining digits, in order, are the draw number. An account id is
//! written as 10 digits with leading zeros; it matches at level `k` (1..=10) when its
//! last `k` digits equal the last `k` digits of the draw number (so `k` never exceeds
//! the draw number's length). Winners are ordered by level descending, then account id
//! ascending, and the first `n` win; each account wins once, at its highest level.
//!
//! Policy choice (documented in `docs/CAMPAIGN.md`): accounts matching no level have
//! level 0 and rank after every level-1 match, ascending by id. They win only when
//! levels 10..=1 cannot fill `n` seats (in particular when there are fewer candidates
//! than `n`, everyone wins), so the winner count is always `min(n, candidates)`.
//!
//! Must never: use randomness, clocks, floats or `HashMap` iteration; accept a hash
//! with a non-hex character; or panic on bad input.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use serde::Serialize;

use crate::error::CampaignError;

/// Highest match level (an account id has 10 digits).
pub const MAX_LEVEL: u8 = 10;

/// Number of digits an account id is written with in the draw.
pub const ACCOUNT_DIGITS: usize = 10;

/// Largest account id that can take part in the draw.
pub const MAX_DRAW_ACCOUNT_ID: u64 = 9_999_999_999;

/// The draw number: the decimal digits of a block hash, in order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DrawNumber(String);

impl DrawNumber {
    /// Derives the draw number from a block hash, e.g. `"0xab12cd345" -> "12345"`.
    ///
    /// Errors: [`CampaignError::EmptyHash`] if nothing follows the optional prefix,
    /// [`CampaignError::NonHexHash`] on any non-hex character (whitespace included),
    /// [`CampaignError::NoDigitsInHash`] if the hash is all letters.
    pub fn from_block_hash(hash: &str) -> Result<Self, CampaignError> {
        let (prefix_len, body) = match hash.strip_prefix("0x").or_else(|| hash.strip_prefix("0X")) {
            Some(rest) => (2, rest),
            None => (0, hash),
        };
        if body.is_empty() {
            return Err(CampaignError::EmptyHash);
        }
        if let Some((offset, ch)) = body.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
            return Err(CampaignError::NonHexHash {
                offset: prefix_len + offset,
                ch,
            });
        }
        let digits: String = body.chars().filter(char::is_ascii_digit).collect();
        if digits.is_empty() {
            return Err(CampaignError::NoDigitsInHash);
        }
        Ok(Self(digits))
    }

    /// The digits.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Number of digits (>= 1).
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always `false`: a draw number has at least one digit.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Writes an account id as exactly 10 digits with leading zeros (`42 -> "0000000042"`).
pub fn account_digits(account: u64) -> Result<String, CampaignError> {
    if account > MAX_DRAW_ACCOUNT_ID {
        return Err(CampaignError::AccountIdTooLarge { account });
    }
    Ok(format!("{account:0width$}", width = ACCOUNT_DIGITS))
}

/// Highest level `k` at which the account's last `k` digits equal the draw number's
/// last `k` digits; 0 if even the last digit differs. Bounded by
/// `min(10, draw.len())`.
pub fn match_level(draw: &DrawNumber, account: u64) -> Result<u8, CampaignError> {
    let digits = account_digits(account)?;
    let common = digits
        .bytes()
        .rev()
        .zip(draw.as_str().bytes().rev())
        .take_while(|(a, d)| a == d)
        .count();
    // `zip` stops at the shorter side, so `common <= ACCOUNT_DIGITS == 10`.
    Ok(u8::try_from(common).unwrap_or(MAX_LEVEL).min(MAX_LEVEL))
}

/// One draw winner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Winner {
    /// 1-based position in the winner list.
    pub rank: usize,
    /// Account id.
    pub account: u64,
    /// The id as the 10 digits used for matching.
    pub account_digits: String,
    /// Highest matching level, 10..=1, or 0 for a fill-in (see module docs).
    pub level: u8,
}

/// Selects up to `n` winners among `candidates` (duplicates are ignored).
///
/// Order: level descending, then account id ascending; the first `n` win, so the
/// result has exactly `min(n, distinct candidates)` entries. Every candidate id is
/// checked (even when `n == 0`): ids above [`MAX_DRAW_ACCOUNT_ID`] are an error.
pub fn select_winners<I>(
    draw: &DrawNumber,
    candidates: I,
    n: usize,
) -> Result<Vec<Winner>, CampaignError>
where
    I: IntoIterator<Item = u64>,
{
    let unique: BTreeSet<u64> = candidates.into_iter().collect();
    let mut ranked = unique
        .into_iter()
        .map(|account| match_level(draw, account).map(|level| (level, account)))
        .collect::<Result<Vec<_>, _>>()?;
    ranked.sort_unstable_by_key(|&(level, account)| (Reverse(level), account));
    ranked
        .into_iter()
        .take(n)
        .enumerate()
        .map(|(i, (level, account))| {
            Ok(Winner {
                rank: i + 1,
                account,
                account_digits: account_digits(account)?,
                level,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draw_number_keeps_digits_in_order() {
        let d = DrawNumber::from_block_hash("0xAb12cD345").unwrap();
        assert_eq!(d.as_str(), "12345");
        let d = DrawNumber::from_block_hash("9f0").unwrap();
        assert_eq!(d.as_str(), "90");
    }

    #[test]
    fn non_hex_offset_counts_the_prefix() {
        assert_eq!(
            DrawNumber::from_block_hash("0x12g4"),
            Err(CampaignError::NonHexHash { offset: 4, ch: 'g' })
        );
    }

    #[test]
    fn level_is_common_suffix_length() {
        let d = DrawNumber::from_block_hash("12345").unwrap();
        // 0000007345 vs 12345: 5,4,3 equal, then 7 != 2 -> level 3
        assert_eq!(match_level(&d, 7345), Ok(3));
        // 0000012345 vs 12345: all 5 digits of the draw number equal -> level 5 (cap)
        assert_eq!(match_level(&d, 12345), Ok(5));
        // 0000000000 vs ...5 -> level 0
        assert_eq!(match_level(&d, 0), Ok(0));
    }
}
