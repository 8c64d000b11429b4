//! perpcore-risk: accounts, positions and the margin arithmetic of MARGIN.md §2–8 for
//! linear and inverse contracts: single-asset pools, the USD pool of multi-asset and
//! unified accounts (collateral haircuts in `collateral`), and the exact liquidation and
//! bankruptcy prices the report shows.
//!
//! Pure: no I/O, no clock, no matching. The engine owns the order book and calls in here
//! to value positions, check margin and settle fills. Every division names its rounding;
//! requirements round up and credits round down (against the account).

// A narrowing `as` cast silently wraps: every one here is checked (`try_from`) or
// widening, and clippy keeps it so.
#![warn(clippy::cast_possible_truncation)]
// Determinism by tooling: clippy.toml's bans (clock reads, unseeded randomness, hash maps
// that can be iterated) apply to this crate; see docs/DETERMINISM.md.
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod account;
pub mod collateral;
pub mod decide;
pub mod margin;
pub mod mark;

pub use account::*;
pub use collateral::*;
pub use decide::*;
pub use margin::*;

// Table indexes: a `u32` instrument id always fits a `usize` on the targets perpcore
// builds for, which this assertion checks at compile time, so the conversion below
// cannot fail (an id beyond the table is then caught by the slice's bounds check).
const _: () = assert!(usize::BITS >= u32::BITS);

/// The table index of an instrument id.
#[inline]
pub(crate) fn instrument_slot(id: perpcore_types::InstrumentId) -> usize {
    usize::try_from(id.0).expect("usize holds every u32 (asserted at compile time)")
}
