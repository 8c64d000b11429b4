//! The book's vocabulary: a resting order, an incoming taker, a fill, the taker's
//! outcome, the reusable [`MatchResult`] buffer and [`BookError`].
//!
//! Owns: plain data types and their trivial helpers. Must never: hold matching logic,
//! margin or risk logic, or anything that allocates on its own behalf (the caller owns
//! and reuses the `MatchResult` buffers).

use perpcore_types::{AccountId, OrderId, PriceTicks, QtyLots, Side, StpMode};

/// Time in force of a taker. The same enum as the command's `TimeInForce`, so the engine
/// passes it through unchanged.
pub use perpcore_types::TimeInForce as Tif;

/// An order resting in the book.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestingOrder {
    pub order_id: OrderId,
    pub account: AccountId,
    pub side: Side,
    pub price: PriceTicks,
    /// Always > 0 while the order rests.
    pub open_qty: QtyLots,
    pub reduce_only: bool,
}

/// An incoming order. Risk checks happened before; the book only matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Taker {
    pub order_id: OrderId,
    pub account: AccountId,
    pub side: Side,
    /// Worst acceptable price. For market orders the engine passes the band price.
    pub limit: PriceTicks,
    /// Must be > 0.
    pub qty: QtyLots,
    pub tif: Tif,
    pub stp: StpMode,
    /// Carried onto the resting order if a remainder rests; the book does not act on it.
    pub reduce_only: bool,
}

/// One execution against a maker, always at the maker's price.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fill {
    pub maker_order: OrderId,
    pub maker_account: AccountId,
    /// The maker's price.
    pub price: PriceTicks,
    /// > 0.
    pub qty: QtyLots,
    /// The maker's open quantity after this fill (0 when `maker_done`).
    pub maker_remaining: QtyLots,
    /// The maker was fully filled and left the book.
    pub maker_done: bool,
    pub maker_reduce_only: bool,
}

/// What happened to the taker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakerOutcome {
    /// The (remaining) order now rests with `open_qty` (GTC remainder, post-only).
    Rested { open_qty: QtyLots },
    /// Completely filled.
    Filled,
    /// IOC (or market) remainder expired: no more liquidity within the limit.
    Expired { unfilled: QtyLots },
    /// Self-trade prevention (ExpireTaker or ExpireBoth) expired the remainder.
    SelfTradeExpired { unfilled: QtyLots },
    /// Post-only would have taken: nothing changed.
    PostOnlyRejected,
    /// Fill-or-kill could not fill completely: nothing changed.
    FokRejected,
}

/// The result of one submit. Reused across calls: `Book::submit` clears it first, so
/// matching does not allocate once the vectors have grown to their working size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatchResult {
    /// Fills in execution order (price-time priority).
    pub fills: Vec<Fill>,
    /// Makers removed by self-trade prevention, in the order they were met, each with
    /// the open quantity it had when it expired.
    pub expired_makers: Vec<RestingOrder>,
    pub outcome: TakerOutcome,
}

impl MatchResult {
    pub fn new() -> Self {
        Self::with_capacity(16)
    }

    pub fn with_capacity(n: usize) -> Self {
        MatchResult {
            fills: Vec::with_capacity(n),
            expired_makers: Vec::with_capacity(4),
            outcome: TakerOutcome::Expired {
                unfilled: QtyLots::ZERO,
            },
        }
    }

    /// Empties the buffers (keeping their capacity) and sets the outcome to "nothing
    /// executed": `Expired { unfilled: qty }`.
    pub fn reset(&mut self, qty: QtyLots) {
        self.fills.clear();
        self.expired_makers.clear();
        self.outcome = TakerOutcome::Expired { unfilled: qty };
    }

    /// Total quantity the taker executed.
    pub fn filled_qty(&self) -> QtyLots {
        self.fills
            .iter()
            .map(|f| f.qty)
            .fold(QtyLots::ZERO, |a, b| a + b)
    }
}

impl Default for MatchResult {
    fn default() -> Self {
        Self::new()
    }
}

/// Bad input to the book. Nothing changed when one of these is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    #[error("order {0} is not in the book")]
    UnknownOrder(OrderId),
    #[error("order {0} is already resting in the book")]
    DuplicateOrderId(OrderId),
    #[error("order {0} would cross the other side at its new price")]
    WouldCross(OrderId),
    #[error("quantity {0:?} must be > 0")]
    NonPositiveQty(QtyLots),
    #[error("new open quantity {requested:?} must be below the current {current:?}")]
    QtyNotReduced {
        current: QtyLots,
        requested: QtyLots,
    },
}
