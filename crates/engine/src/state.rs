//! The canonical state: exactly what is hashed and snapshotted, and nothing derived.
//!
//! [`State`] holds the configuration, the sequence position, every account, every book
//! with its orders' engine-side meta, the prices the feed set, and the per-asset ledgers.
//! Its canonical encoding (`snapshot.rs`) is the snapshot and the input of the state
//! hash; everything an engine keeps besides it is either derived ([`crate::indexes`],
//! rebuilt from it by `Indexes::rebuild`) or scratch that is empty between commands.

use perpcore_book::Book;
use perpcore_risk::mark::{BasisWindow, PremiumAverage};
use perpcore_risk::Account;
use perpcore_types::*;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Order ids from here up are the engine's own (liquidation orders); the gateway's are
/// below.
pub const RESERVED_ORDER_ID_MIN: u64 = 1 << 63;

/// Market data per instrument from the feed.
#[derive(Clone, Debug, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct MarketData {
    pub index: Option<Price>,
    pub funding_rate: Option<Rate>,
    pub next_funding_ns: u64,
    pub best_bid: Option<Price>,
    pub best_ask: Option<Price>,
    pub last_trade: Option<Price>,
    /// The rate and time of the last funding time settled (MARGIN §9).
    pub last_funding: Option<(Rate, u64)>,
    /// The last trade on the engine's own book (the derived mark's third term).
    pub traded: Option<Price>,
    /// A derived mark's samples of `mid − index` (from its first sample time on).
    pub basis: Option<BasisWindow>,
    /// A derived mark's next sample time (0: not started).
    pub next_mark_ns: u64,
    /// A derived funding rate's premium samples in the current interval.
    pub premium: PremiumAverage,
    /// A derived funding rate's next premium sample time (0: not started).
    pub next_premium_ns: u64,
}

/// What the engine keeps per open order beyond the book's view of it.
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct OrderMeta {
    pub account: AccountId,
    pub instrument: InstrumentId,
    pub side: Side,
    pub reduce_only: bool,
    pub post_only: bool,
    /// Notional of the exposure-increasing part of the open quantity, valued at placement
    /// (a buy at max(limit, mark)); scaled pro rata as the order fills.
    pub margin_notional: Money,
    /// `margin_notional / leverage`, rounded up: the initial margin this order reserves.
    pub reserved: Money,
    /// Notional of the open quantity at the limit price.
    pub open_notional: Money,
}

/// A conditional order waiting for its trigger (`conditional.rs`).
#[derive(Clone, Debug, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Conditional {
    pub order: ConditionalOrder,
    /// The sequence number of the command that placed it: ties between equal triggers
    /// fire in placement order.
    pub placed_seq: u64,
    /// A trailing stop's activation number once it is active (`None` until then, and for
    /// the other kinds); its extreme is its segment's in `State::trails`.
    pub activation: Option<u64>,
}

/// The canonical state of the engine.
pub struct State {
    /// Shared so that handlers can hold a spec while mutating the engine, without
    /// cloning it per command.
    pub(crate) config: Arc<Config>,
    pub(crate) last_seq: u64,
    pub(crate) last_ts_ns: u64,
    /// Engine-generated order ids (liquidation orders) count up from RESERVED_ORDER_ID_MIN.
    pub(crate) next_internal_order: u64,
    /// Accounts in creation order (insurance funds first).
    pub(crate) accounts: Vec<Account>,
    pub(crate) books: Vec<Book>,
    /// The engine-side meta of every resting order. Lookup only; never iterated (the
    /// encoding walks the books in their canonical order).
    pub(crate) orders: LookupMap<OrderId, OrderMeta>,
    pub(crate) marks: Vec<Option<Price>>,
    /// Per instrument: market data from the feed (index, funding, reference prices) and
    /// what derived marks and funding rates are computed from.
    pub(crate) market: Vec<MarketData>,
    /// Per asset: fees collected (net of maker rebates).
    pub(crate) fee_income: Vec<Money>,
    /// Per asset: external deposits and withdrawals (conservation reference).
    pub(crate) deposited: Vec<Money>,
    pub(crate) withdrawn: Vec<Money>,
    /// Per asset: index against USDT and against USD (MARGIN §1).
    pub(crate) index_usdt: Vec<Option<IndexPrice>>,
    pub(crate) index_usd: Vec<Option<IndexPrice>>,
    /// Per asset: interest charged on loans.
    pub(crate) interest_income: Vec<Money>,
    /// The hour slot of sequenced time up to which interest has been processed.
    pub(crate) interest_slot: u64,
    /// Conditional orders waiting for their trigger, by id.
    pub(crate) conditionals: BTreeMap<OrderId, Conditional>,
    /// Active trailing stops' extremes: per group, the segments (`conditional.rs`).
    pub(crate) trails: BTreeMap<crate::conditional::TrailKey, crate::conditional::Segments>,
    /// The next trailing stop's activation number.
    pub(crate) next_activation: u64,
    /// Per asset: the exchange's conversion desk, the counterparty of auto-exchanges
    /// (MARGIN §8): what it bought (+) and paid out (−). It may be negative (the
    /// exchange's own treasury); the insurance funds, which never go negative, are not
    /// involved.
    pub(crate) conversion_desk: Vec<Money>,
}

impl State {
    /// The state before the first command: empty books, no accounts (the engine adds
    /// the insurance funds), no prices.
    pub(crate) fn new(config: Config) -> State {
        let assets = config.assets.len();
        let instruments = config.instruments.len();
        State {
            last_seq: 0,
            last_ts_ns: 0,
            next_internal_order: RESERVED_ORDER_ID_MIN,
            accounts: Vec::new(),
            books: (0..instruments).map(|_| Book::new()).collect(),
            orders: LookupMap::default(),
            marks: vec![None; instruments],
            market: vec![MarketData::default(); instruments],
            fee_income: vec![Money::ZERO; assets],
            deposited: vec![Money::ZERO; assets],
            withdrawn: vec![Money::ZERO; assets],
            index_usdt: vec![None; assets],
            index_usd: vec![None; assets],
            interest_income: vec![Money::ZERO; assets],
            interest_slot: 0,
            conditionals: BTreeMap::new(),
            trails: BTreeMap::new(),
            next_activation: 0,
            conversion_desk: vec![Money::ZERO; assets],
            config: Arc::new(config),
        }
    }
}
