//! The engine's typed errors: why a snapshot cannot be restored, and which invariant a
//! state violates.

use perpcore_types::{AccountId, InstrumentId, OrderId};

/// Why `Engine::restore` refused a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("snapshot decode: {0}")]
    Decode(String),
    #[error("snapshot has {0} trailing bytes")]
    TrailingBytes(usize),
    #[error("snapshot {0} do not match its configuration")]
    ShapeMismatch(&'static str),
    #[error("snapshot mark of instrument {0} is out of range")]
    MarkOutOfRange(InstrumentId),
    #[error("snapshot index prices give a USD price out of range")]
    UsdPriceOutOfRange,
    #[error("account {0} twice in snapshot")]
    DuplicateAccount(AccountId),
    #[error("snapshot has more accounts than slots")]
    TooManyAccounts,
    #[error("snapshot leg on unknown instrument {0}")]
    UnknownInstrument(InstrumentId),
    #[error("snapshot book: {0}")]
    Book(String),
    #[error("snapshot order {0} crosses the book")]
    OrderCrosses(OrderId),
    #[error("order {0} twice in snapshot")]
    DuplicateOrder(OrderId),
    #[error("snapshot state violates an invariant: {0}")]
    Invariant(#[from] InvariantViolation),
}

/// The first invariant `Engine::check_invariants` found broken, described.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvariantViolation(pub String);
