//! perpcore-engine: the deterministic state machine `apply(envelope) -> events`.
//!
//! It composes one `perpcore_book::Book` per instrument with the accounts and margin
//! arithmetic of `perpcore_risk`. Every command either applies fully or is rejected with
//! a stable `RejectReason` and leaves no trace in the state (checks come before the first
//! mutation; rare multi-step commands mutate a copy and swap it in).
//!
//! It must never read a clock, draw a random number, use a float, or let the iteration
//! order of a hash map reach state, events or the state hash: hash maps here are lookup
//! indexes only; iteration goes over `Vec`s in creation order, sorted `Vec`s and the
//! books' canonical order.

// A narrowing `as` cast silently wraps: every one here is checked (`try_from`) or
// widening, and clippy keeps it so.
#![warn(clippy::cast_possible_truncation)]
// Determinism by tooling: clippy.toml's bans (clock reads, unseeded randomness, hash maps
// that can be iterated) apply to this crate; see docs/DETERMINISM.md.
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

mod adl;
mod amend;
mod conditional;
mod derive;
mod engine;
mod error;
mod execute;
mod funding;
mod indexes;
mod ledger;
mod liqindex;
mod liquidation;
mod loans;
mod margin;
mod multi;
mod orders;
mod prices;
mod report;
mod settle;
mod snapshot;
mod state;

pub use engine::Engine;
pub use error::{InvariantViolation, RestoreError};
pub use indexes::Indexes;
pub use report::{AccountReport, AssetReport, OrderPreview, PositionReport, UsdPoolReport};
pub use state::{Conditional, MarketData, OrderMeta, State, RESERVED_ORDER_ID_MIN};
