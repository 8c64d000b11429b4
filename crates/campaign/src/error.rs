//! Typed errors of the campaign audit.
//!
//! Owns: the single [`CampaignError`] enum returned by every fallible function in this
//! crate.
//!
//! Must never: carry floating-point values, hide the offending input (each variant
//! names what was rejected and where), or be replaced by a panic.

use thiserror::Error;

/// Every way a campaign audit can reject its input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CampaignError {
    /// The volume window `[start_ns, end_ns)` has `start_ns > end_ns`.
    #[error("invalid window: start_ns {start_ns} is after end_ns {end_ns}")]
    InvalidWindow {
        /// Inclusive window start (ns).
        start_ns: u64,
        /// Exclusive window end (ns).
        end_ns: u64,
    },
    /// A tier threshold is negative.
    #[error("threshold {name} must be >= 0, got {value} (fixed-point, scale 1e12)")]
    NegativeThreshold {
        /// `"share_threshold"` or `"draw_threshold"`.
        name: &'static str,
        /// The rejected raw fixed-point value.
        value: i128,
    },
    /// A fill carries a negative traded notional (notional is a magnitude).
    #[error("fill #{index} (account {account}) has negative notional {notional}")]
    NegativeNotional {
        /// Zero-based position of the fill in the input.
        index: usize,
        /// Account of the fill.
        account: u64,
        /// The rejected raw fixed-point value.
        notional: i128,
    },
    /// A fill names its own account as parent.
    #[error("fill #{index}: account {account} is declared as its own parent")]
    SelfParent {
        /// Zero-based position of the fill in the input.
        index: usize,
        /// The account.
        account: u64,
    },
    /// The same account appears with two different parent declarations.
    #[error(
        "fill #{index}: account {account} declared with parent {second:?}, \
         earlier fills declared {first:?}"
    )]
    InconsistentParent {
        /// Zero-based position of the conflicting fill in the input.
        index: usize,
        /// The account.
        account: u64,
        /// Parent declared by the earlier fills.
        first: Option<u64>,
        /// Parent declared by the conflicting fill.
        second: Option<u64>,
    },
    /// Summing an account's volume overflowed `i128`.
    #[error("volume of account {account} overflows i128")]
    VolumeOverflow {
        /// The account.
        account: u64,
    },
    /// The block hash is empty (possibly after removing the `0x` prefix).
    #[error("block hash is empty")]
    EmptyHash,
    /// The block hash contains a character that is not a hexadecimal digit.
    #[error("block hash has non-hex character {ch:?} at byte offset {offset}")]
    NonHexHash {
        /// Byte offset in the string as given (prefix included).
        offset: usize,
        /// The rejected character.
        ch: char,
    },
    /// The block hash has no decimal digit, so no draw number exists.
    #[error("block hash contains no decimal digit: no draw number")]
    NoDigitsInHash,
    /// A draw-eligible account id does not fit in 10 decimal digits.
    #[error("account id {account} exceeds 10 digits (max 9999999999)")]
    AccountIdTooLarge {
        /// The account.
        account: u64,
    },
    /// A decimal amount could not be parsed exactly.
    #[error("invalid decimal amount {input:?}: {reason}")]
    InvalidAmount {
        /// The text as given.
        input: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// JSON serialisation failed (should not happen for this crate's types).
    #[error("JSON serialisation failed: {0}")]
    Json(String),
}
