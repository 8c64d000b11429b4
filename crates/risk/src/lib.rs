//! perpcore-risk: accounts, positions and the margin arithmetic of MARGIN.md §2–3, §5–7
//! for linear contracts in single-asset mode.
//!
//! Pure: no I/O, no clock, no matching. The engine owns the order book and calls in here
//! to value positions, check margin and settle fills. Every division names its rounding;
//! requirements round up and credits round down (against the account).

pub mod account;
pub mod collateral;
pub mod margin;

pub use account::*;
pub use collateral::*;
pub use margin::*;
