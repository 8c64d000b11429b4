//! perpcore-types: the vocabulary shared by every crate — ids, fixed-point numbers,
//! instrument and asset specifications, the `Command` (input) and `Event` (output)
//! enums and the stable `RejectReason` codes.
//!
//! This crate does no I/O and never reads a clock. It holds no floats: every number is
//! an integer newtype with a documented scale, and decimal text is converted exactly
//! (or refused) at the edge by [`num::parse_decimal`].

// A narrowing `as` cast silently wraps: every one here is checked (`try_from`) or
// widening, and clippy keeps it so.
#![warn(clippy::cast_possible_truncation)]
// Determinism by tooling: clippy.toml's bans (clock reads, unseeded randomness, hash maps
// that can be iterated) apply to this crate; see docs/DETERMINISM.md.
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod command;
pub mod event;
pub mod ids;
#[cfg(perpcore_lint_canary)]
pub mod lint_canary;
pub mod lookup;
pub mod num;
pub mod reject;
pub mod spec;
pub mod tags;

pub use command::*;
pub use event::*;
pub use ids::*;
pub use lookup::{LookupMap, LookupSet};
pub use num::*;
pub use reject::*;
pub use spec::*;
