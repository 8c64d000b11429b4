//! perpcore-feed: market data into engine commands.
//!
//! Owns the Binance futures websocket format as recorded (`<local timestamp> <json>` per
//! line, plain or gzip) and as received live; the conversion of `markPriceUpdate`,
//! `bookTicker`, `trade`/`aggTrade` and `depthUpdate` (kept as a local L2 book from a REST
//! snapshot) into `SetMarkPrice`, `SetIndexPrice`, `SetFundingRate` and
//! `SetReferencePrices`; the k-way merge of several recordings by exchange time; a live
//! websocket client with timeouts, reconnects, REST depth snapshots and a bounded hand-off
//! (feature `live`, default); and a plausibility guard on mark and index prices
//! ([`guard`]). The seeded order flow that trades around the recorded market is
//! `perpcore-flow` (`crates/flow`), a consumer of the [`FeedItem`]s made here.
//!
//! Must never: go through a float or round a decimal (extra precision is counted as a
//! problem), panic or stop on bad input (every unusable line is counted by
//! [`Problem`] kind; one bad timestamp costs one line, see [`reader`]), hold a whole file in memory, read a clock into a command (command
//! times are exchange times), or touch engine state (it only produces commands).
//!
//! ```text
//! file ─▶ LineReader ─▶ parse_line ─▶ Reader (order, counts) ─┐
//! file ─▶ …                                                   ├─▶ Merge ─▶ Converter ─▶ FeedItem ─▶ Flow ─▶ sequencer
//! file ─▶ …                                                   ┘   (by E)   (books, refs)  (exchange ns)  (+ orders)
//! ```

pub mod book;
pub mod convert;
pub mod guard;
pub mod lines;
#[cfg(feature = "live")]
pub mod live;
pub mod merge;
pub mod message;
pub mod reader;
pub mod replay;
pub mod stats;

pub use book::{BookOptions, DepthBook};
pub use convert::{ConvertOptions, Converter, FeedItem, Origin};
pub use guard::{GuardOptions, GuardStats, Guarded, MarkGuard, PriceGuard};
pub use merge::Merge;
pub use message::{parse_json, parse_line, Body, DepthSnapshot, DepthUpdate, Parsed};
pub use reader::{Message, Reader, ReaderOptions, DEFAULT_MAX_JUMP_NS, DEFAULT_TOLERANCE_NS};
pub use replay::Replay;
pub use stats::{DepthStats, FeedStats, MessageKind, Problem, StatsReport};

/// Errors that stop a replay before it starts (bad input inside a file never does).
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} files: at most 65536 sources can be merged")]
    TooManySources(usize),
}
