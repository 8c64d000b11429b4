//! Events: the engine's only output. Past tense. Prices and sizes are carried as exact
//! decimals ([`Price`], [`Qty`]) so that an event reads the same to a person and a program.

use crate::command::{AssetMode, IndexQuote, MarginMode, Side};
use crate::ids::{AccountId, AssetId, InstrumentId, OrderId};
use crate::num::{Money, Price, Qty, Rate};
use crate::reject::RejectReason;
use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// Cancelled by its owner (cancel, cancel-all).
    User,
    /// IOC / market remainder.
    Unfilled,
    /// Market order stopped by the price band.
    PriceBand,
    /// Self-trade prevention.
    SelfTrade,
    /// Cancelled by the liquidation process (MARGIN §7 step 1).
    Liquidation,
    /// Reduce-only order no longer reduces anything.
    ReduceOnlyObsolete,
}

/// Engine output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Rejected {
        reason: RejectReason,
        code: u16,
    },
    AccountCreated {
        account: AccountId,
        parent: Option<AccountId>,
    },
    Deposited {
        account: AccountId,
        asset: AssetId,
        amount: Money,
        balance: Money,
    },
    Withdrawn {
        account: AccountId,
        asset: AssetId,
        amount: Money,
        balance: Money,
    },
    Transferred {
        from: AccountId,
        to: AccountId,
        asset: AssetId,
        amount: Money,
    },
    LeverageSet {
        account: AccountId,
        instrument: InstrumentId,
        leverage: u32,
    },
    MarginModeSet {
        account: AccountId,
        instrument: InstrumentId,
        mode: MarginMode,
    },
    IsolatedMarginAdjusted {
        account: AccountId,
        instrument: InstrumentId,
        delta: Money,
        isolated_margin: Money,
    },
    OrderAccepted {
        account: AccountId,
        instrument: InstrumentId,
        order_id: OrderId,
        side: Side,
        price: Price,
        qty: Qty,
    },
    /// The order now rests in the book with `open_qty`.
    OrderRested {
        order_id: OrderId,
        open_qty: Qty,
    },
    OrderCanceled {
        account: AccountId,
        order_id: OrderId,
        open_qty: Qty,
        reason: CancelReason,
    },
    OrderAmended {
        order_id: OrderId,
        price: Price,
        open_qty: Qty,
        priority_kept: bool,
    },
    /// A reduce-only order cut to the position size.
    OrderReduced {
        order_id: OrderId,
        open_qty: Qty,
    },
    Trade {
        instrument: InstrumentId,
        price: Price,
        qty: Qty,
        taker_side: Side,
        taker_account: AccountId,
        taker_order: OrderId,
        maker_account: AccountId,
        maker_order: OrderId,
        taker_fee: Money,
        maker_fee: Money,
        taker_realized_pnl: Money,
        maker_realized_pnl: Money,
    },
    MarkPriceSet {
        instrument: InstrumentId,
        price: Price,
    },
    IndexPriceSet {
        instrument: InstrumentId,
        price: Price,
    },
    AssetIndexSet {
        asset: AssetId,
        quote: IndexQuote,
        price: Price,
    },
    AssetModeSet {
        account: AccountId,
        mode: AssetMode,
    },
    /// Hourly interest on a loan (MARGIN §8), taken from the asset's balance.
    InterestCharged {
        account: AccountId,
        asset: AssetId,
        amount: Money,
        interest_base: Money,
    },
    /// Other collateral sold at index, grossed up by its ratio, to repay a loan.
    AutoExchanged {
        account: AccountId,
        sold_asset: AssetId,
        sold: Money,
        repaid_asset: AssetId,
        repaid: Money,
    },
    FundingRateSet {
        instrument: InstrumentId,
        rate: Rate,
        next_funding_ns: u64,
    },
    ReferencePricesSet {
        instrument: InstrumentId,
        best_bid: Option<Price>,
        best_ask: Option<Price>,
        last_trade: Option<Price>,
    },
    /// Liquidation started for a cross pool (`instrument` None) or an isolated position.
    LiquidationTriggered {
        account: AccountId,
        instrument: Option<InstrumentId>,
        settle_asset: AssetId,
        margin_balance: Money,
        maintenance_margin: Money,
    },
    /// MARGIN §7 step 3: the insurance fund took the position over at the bankruptcy price.
    PositionTakenOver {
        account: AccountId,
        instrument: InstrumentId,
        qty: Qty,
        bankruptcy_price: Price,
        liquidation_fee: Money,
    },
    /// The insurance fund covered a negative wallet left by a liquidation.
    DeficitCovered {
        account: AccountId,
        asset: AssetId,
        amount: Money,
    },
}

impl Event {
    pub fn rejected(reason: RejectReason) -> Event {
        Event::Rejected {
            reason,
            code: reason.code(),
        }
    }
}
