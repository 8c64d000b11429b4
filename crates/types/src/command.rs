//! Commands: the engine's only input. Every command is journaled before its events are
//! released, so every field is fixed-width and deterministic.

use crate::ids::{AccountId, AssetId, InstrumentId, OrderId};
use crate::num::{IndexPrice, Money, Price, PriceTicks, QtyLots, Rate};
use crate::tags::{stable_codes, stable_tags};
use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
    /// +1 for buy, −1 for sell.
    pub fn sign(self) -> i64 {
        match self {
            Side::Buy => 1,
            Side::Sell => -1,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeInForce {
    /// Good till cancel: the remainder rests.
    Gtc,
    /// Immediate or cancel: the remainder is cancelled.
    Ioc,
    /// Fill or kill: all at once or nothing.
    Fok,
    /// Post-only (Binance GTX): rejected if any part would take.
    PostOnly,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderType {
    /// Limit order at `price`.
    Limit,
    /// Market order: fills no further than mark × (1 ± price band); the rest expires.
    Market,
}

/// Self-trade prevention: what expires when an order would match its own account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StpMode {
    #[default]
    ExpireTaker,
    ExpireMaker,
    ExpireBoth,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarginMode {
    #[default]
    Cross,
    Isolated,
}

/// Which collateral backs an account's cross positions (MARGIN §4, §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetMode {
    /// Each settlement asset is its own pool: USDT for USDT-M, USDC for USDC-M, the coin for
    /// coin-M.
    #[default]
    Single,
    /// USDT-M and USDC-M cross positions share one USD pool of every collateral asset
    /// after haircuts; coin-M positions stay in their coin's pool.
    Multi,
    /// One USD pool for USDT-M, USDC-M and coin-M cross positions.
    Unified,
}

/// One-way (one position per instrument) or hedge mode (a LONG and a SHORT position per
/// instrument), per account (Binance's `dualSidePosition`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PositionMode {
    #[default]
    OneWay,
    Hedge,
}

/// Which position of an instrument: the one-way position (`Both`), or in hedge mode the
/// LONG or the SHORT one. In hedge mode an order's position follows from its side and its
/// reduce-only flag, as Binance's `positionSide`: a buy opens LONG and a reduce-only sell
/// closes it; a sell opens SHORT and a reduce-only buy closes it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum PositionSide {
    #[default]
    Both,
    Long,
    Short,
}

impl PositionSide {
    /// The position an order of `side` works on in `mode` (see the type's docs).
    pub fn of_order(mode: PositionMode, side: Side, reduce_only: bool) -> PositionSide {
        match (mode, side, reduce_only) {
            (PositionMode::OneWay, _, _) => PositionSide::Both,
            (PositionMode::Hedge, Side::Buy, false) | (PositionMode::Hedge, Side::Sell, true) => {
                PositionSide::Long
            }
            (PositionMode::Hedge, Side::Sell, false) | (PositionMode::Hedge, Side::Buy, true) => {
                PositionSide::Short
            }
        }
    }
}

/// The quote of an index price.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexQuote {
    Usdt,
    Usd,
}

/// A new order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    pub account: AccountId,
    pub instrument: InstrumentId,
    pub order_id: OrderId,
    pub side: Side,
    pub order_type: OrderType,
    pub tif: TimeInForce,
    /// Ignored for market orders.
    pub price: PriceTicks,
    /// Ignored (taken from the position) for close-position orders.
    pub qty: QtyLots,
    pub reduce_only: bool,
    /// Closes the whole position (Binance closePosition): implies reduce-only.
    pub close_position: bool,
    pub stp: StpMode,
}

/// The kind of a conditional order (SPEC §4; Binance's STOP, STOP_MARKET, TAKE_PROFIT,
/// TAKE_PROFIT_MARKET and TRAILING_STOP_MARKET).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionalKind {
    /// A buy triggers when the price rises to the trigger, a sell when it falls to it;
    /// then a market order.
    StopMarket,
    /// As `StopMarket`, then a limit order at `price`.
    StopLimit,
    /// A buy triggers when the price falls to the trigger, a sell when it rises to it;
    /// then a market order.
    TakeProfitMarket,
    /// As `TakeProfitMarket`, then a limit order at `price`.
    TakeProfitLimit,
    /// Follows the price: a sell triggers when the price falls `callback_rate` below the
    /// highest price since activation, a buy when it rises `callback_rate` above the
    /// lowest; then a market order. Active from placement, or once the price reaches
    /// `trigger` (the activation price) when one is given.
    TrailingStop,
}

/// The price a conditional order watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkingPrice {
    #[default]
    Mark,
    /// The last trade on the engine's own book.
    LastTrade,
}

/// A conditional order: it waits (reserving no margin) until its working price crosses
/// its trigger, then goes through the normal pre-trade check as a market or limit order.
/// Encoded field by field in declaration order (part of command tag 18): reordering the
/// fields changes the journal format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct ConditionalOrder {
    pub account: AccountId,
    pub instrument: InstrumentId,
    pub order_id: OrderId,
    pub side: Side,
    pub kind: ConditionalKind,
    /// The trigger (stop) price; for a trailing stop the activation price, zero for none.
    pub trigger: Price,
    /// Trailing stops only: 0.1% to 10% (Binance's range).
    pub callback_rate: Rate,
    pub working: WorkingPrice,
    /// The limit price of the `*Limit` kinds; ignored otherwise.
    pub price: PriceTicks,
    /// The time in force of the `*Limit` kinds' order.
    pub tif: TimeInForce,
    /// Ignored (taken from the position at the trigger) for close-position orders.
    pub qty: QtyLots,
    pub reduce_only: bool,
    /// Closes the whole position at the trigger (a TP/SL attached to the position);
    /// implies reduce-only.
    pub close_position: bool,
    pub stp: StpMode,
}

/// Engine input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    /// Open an account; `parent` makes it a sub-account of that main account.
    CreateAccount {
        account: AccountId,
        parent: Option<AccountId>,
    },
    Deposit {
        account: AccountId,
        asset: AssetId,
        amount: Money,
    },
    Withdraw {
        account: AccountId,
        asset: AssetId,
        amount: Money,
    },
    /// Between a main account and its sub-accounts, or between two sub-accounts of one
    /// main account.
    Transfer {
        from: AccountId,
        to: AccountId,
        asset: AssetId,
        amount: Money,
    },
    SetLeverage {
        account: AccountId,
        instrument: InstrumentId,
        leverage: u32,
    },
    SetMarginMode {
        account: AccountId,
        instrument: InstrumentId,
        mode: MarginMode,
    },
    /// Positive adds margin to an isolated position, negative removes it.
    AdjustIsolatedMargin {
        account: AccountId,
        instrument: InstrumentId,
        delta: Money,
        /// `Both` in one-way mode; `Long` or `Short` in hedge mode.
        position_side: PositionSide,
    },
    PlaceOrder(NewOrder),
    CancelOrder {
        account: AccountId,
        order_id: OrderId,
    },
    /// Cancel every open order of the account, or only those of one instrument.
    CancelAll {
        account: AccountId,
        instrument: Option<InstrumentId>,
    },
    /// Change price and/or size. Size down at the same price keeps priority; a price
    /// change or a size increase loses it.
    AmendOrder {
        account: AccountId,
        order_id: OrderId,
        price: Option<PriceTicks>,
        qty: Option<QtyLots>,
    },
    /// A mark price from the feed; triggers liquidation checks.
    SetMarkPrice {
        instrument: InstrumentId,
        price: Price,
    },
    /// The index price of the instrument's underlying pair (Binance `i`: BTCUSDT → the
    /// BTC/USDT index, BTCUSD_PERP → the BTC/USD index).
    SetIndexPrice {
        instrument: InstrumentId,
        price: Price,
    },
    /// The index price of an asset against USDT or USD (MARGIN §1: `usd(k) = k/USDT × C`,
    /// `C = BTC/USD ÷ BTC/USDT`; a USD index given for an asset is used directly).
    SetAssetIndex {
        asset: AssetId,
        quote: IndexQuote,
        /// 12 decimals ([`IndexPrice`]): a stablecoin index is exact.
        price: IndexPrice,
    },
    /// Switch between single-asset, multi-asset and unified modes (rules R1, R2).
    SetAssetMode {
        account: AccountId,
        mode: AssetMode,
    },
    /// The funding rate the feed announces for the next funding time.
    SetFundingRate {
        instrument: InstrumentId,
        rate: Rate,
        next_funding_ns: u64,
    },
    /// Reference prices from the market: best bid/ask and the last trade. Informational
    /// state (kept for mark derivation and audits); never matched against. An absent field
    /// keeps its previous value.
    SetReferencePrices {
        instrument: InstrumentId,
        best_bid: Option<Price>,
        best_ask: Option<Price>,
        last_trade: Option<Price>,
    },
    /// A stop, take-profit or trailing-stop order (see [`ConditionalOrder`]).
    PlaceConditional(ConditionalOrder),
    /// One-way or hedge mode; only with no position and no open order (resting or
    /// conditional) on any instrument.
    SetPositionMode {
        account: AccountId,
        mode: PositionMode,
    },
}

impl Command {
    /// A short stable name for logs and per-kind statistics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::CreateAccount { .. } => "create_account",
            Command::Deposit { .. } => "deposit",
            Command::Withdraw { .. } => "withdraw",
            Command::Transfer { .. } => "transfer",
            Command::SetLeverage { .. } => "set_leverage",
            Command::SetMarginMode { .. } => "set_margin_mode",
            Command::AdjustIsolatedMargin { .. } => "adjust_isolated_margin",
            Command::PlaceOrder(_) => "place_order",
            Command::CancelOrder { .. } => "cancel_order",
            Command::CancelAll { .. } => "cancel_all",
            Command::AmendOrder { .. } => "amend_order",
            Command::SetMarkPrice { .. } => "set_mark_price",
            Command::SetIndexPrice { .. } => "set_index_price",
            Command::SetAssetIndex { .. } => "set_asset_index",
            Command::SetAssetMode { .. } => "set_asset_mode",
            Command::SetFundingRate { .. } => "set_funding_rate",
            Command::SetReferencePrices { .. } => "set_reference_prices",
            Command::PlaceConditional(_) => "place_conditional",
            Command::SetPositionMode { .. } => "set_position_mode",
        }
    }
}

stable_codes!(Side { Buy = 0, Sell = 1, });
stable_codes!(TimeInForce { Gtc = 0, Ioc = 1, Fok = 2, PostOnly = 3, });
stable_codes!(OrderType { Limit = 0, Market = 1, });
stable_codes!(StpMode { ExpireTaker = 0, ExpireMaker = 1, ExpireBoth = 2, });
stable_codes!(MarginMode { Cross = 0, Isolated = 1, });
stable_codes!(AssetMode { Single = 0, Multi = 1, Unified = 2, });
stable_codes!(IndexQuote { Usdt = 0, Usd = 1, });
stable_codes!(ConditionalKind {
    StopMarket = 0,
    StopLimit = 1,
    TakeProfitMarket = 2,
    TakeProfitLimit = 3,
    TrailingStop = 4,
});
stable_codes!(WorkingPrice { Mark = 0, LastTrade = 1, });
stable_codes!(PositionMode { OneWay = 0, Hedge = 1, });
stable_codes!(PositionSide { Both = 0, Long = 1, Short = 2, });

// The command tag table (docs/JOURNAL_FORMAT.md, "Command tags"). Fields are written in
// the order listed here.
stable_tags!(Command, retired: [], {
    CreateAccount = 1 { account, parent },
    Deposit = 2 { account, asset, amount },
    Withdraw = 3 { account, asset, amount },
    Transfer = 4 { from, to, asset, amount },
    SetLeverage = 5 { account, instrument, leverage },
    SetMarginMode = 6 { account, instrument, mode },
    AdjustIsolatedMargin = 7 { account, instrument, delta, position_side },
    PlaceOrder = 8 (order),
    CancelOrder = 9 { account, order_id },
    CancelAll = 10 { account, instrument },
    AmendOrder = 11 { account, order_id, price, qty },
    SetMarkPrice = 12 { instrument, price },
    SetIndexPrice = 13 { instrument, price },
    SetAssetIndex = 14 { asset, quote, price },
    SetAssetMode = 15 { account, mode },
    SetFundingRate = 16 { instrument, rate, next_funding_ns },
    SetReferencePrices = 17 { instrument, best_bid, best_ask, last_trade },
    PlaceConditional = 18 (order),
    SetPositionMode = 19 { account, mode },
});

/// Written field by field in this order (the order of the struct's declaration does not
/// matter): part of command tag 8.
impl Encode for NewOrder {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        e: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        let NewOrder {
            account,
            instrument,
            order_id,
            side,
            order_type,
            tif,
            price,
            qty,
            reduce_only,
            close_position,
            stp,
        } = self;
        account.encode(e)?;
        instrument.encode(e)?;
        order_id.encode(e)?;
        side.encode(e)?;
        order_type.encode(e)?;
        tif.encode(e)?;
        price.encode(e)?;
        qty.encode(e)?;
        reduce_only.encode(e)?;
        close_position.encode(e)?;
        stp.encode(e)
    }
}

impl<C> Decode<C> for NewOrder {
    fn decode<D: bincode::de::Decoder<Context = C>>(
        d: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        Ok(NewOrder {
            account: Decode::decode(d)?,
            instrument: Decode::decode(d)?,
            order_id: Decode::decode(d)?,
            side: Decode::decode(d)?,
            order_type: Decode::decode(d)?,
            tif: Decode::decode(d)?,
            price: Decode::decode(d)?,
            qty: Decode::decode(d)?,
            reduce_only: Decode::decode(d)?,
            close_position: Decode::decode(d)?,
            stp: Decode::decode(d)?,
        })
    }
}
bincode::impl_borrow_decode!(NewOrder);

/// A sequenced command: what the journal stores and the engine applies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct Envelope {
    pub seq: u64,
    pub ts_ns: u64,
    pub command: Command,
}

/// The bincode configuration used everywhere something is journaled or hashed:
/// fixed-width little-endian integers.
pub fn bincode_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::NoLimit,
> {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
}
