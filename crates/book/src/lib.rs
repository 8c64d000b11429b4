//! perpcore-book: one price-time priority limit order book per instrument, pure
//! matching.
//!
//! Owns: resting orders, queue priority, and the matching of a taker (limit, GTC / IOC /
//! FOK / post-only, self-trade prevention). Must never: do margin, risk, fees or
//! settlement (the engine does risk before a submit and settlement after, from the
//! [`MatchResult`]), read a clock, use floats or randomness, or let hash-map iteration
//! order reach any output.
//!
//! Semantics in brief:
//! - Price-time priority; every fill is at the maker's price. A buy matches asks priced
//!   ≤ its limit, a sell matches bids ≥ its limit.
//! - GTC remainder rests at its limit; IOC remainder expires.
//! - Post-only is rejected, with nothing changed, if the best opposite price crosses
//!   its limit (own orders count, as Binance GTX).
//! - FOK is pre-checked without mutation: liquidity of other accounts within the limit;
//!   with STP ExpireTaker/ExpireBoth the walk stops at the first own order, with
//!   ExpireMaker own orders are skipped. Short: `FokRejected`, nothing changed (no
//!   maker expires).
//! - STP when the taker meets an order of its own account (only while it still has
//!   quantity): ExpireTaker stops and expires the taker's remainder (the maker stays);
//!   ExpireMaker removes the maker and continues; ExpireBoth removes the maker and
//!   expires the taker's remainder. An STP-expired remainder never rests, even for GTC.
//! - `reduce_qty` keeps queue position; a price change (or size increase) is
//!   cancel + submit and loses it.
//! - Bad input (non-positive quantity, an order id already resting, unknown id) is
//!   refused with `None`/`Err` and nothing changed; it never panics. Panics are kept for
//!   broken internal invariants only.

// Determinism by tooling: clippy.toml's bans (clock reads, unseeded randomness, hash maps
// that can be iterated) apply to this crate; see docs/DETERMINISM.md.
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

mod book;
mod order;

pub use book::{Book, Slot};
pub use order::{BookError, Fill, MatchResult, RestingOrder, Taker, TakerOutcome, Tif};

#[cfg(test)]
mod tests;
