//! Events: the engine's only output. Past tense. Prices and sizes are carried as exact
//! decimals ([`Price`], [`Qty`]) so that an event reads the same to a person and a program.

use crate::command::{AssetMode, ConditionalKind, IndexQuote, MarginMode, PositionMode, Side};
use crate::ids::{AccountId, AssetId, InstrumentId, OrderId};
use crate::num::{IndexPrice, Money, Price, Qty, Rate};
use crate::reject::RejectReason;
use crate::tags::{stable_codes, stable_tags};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The account's position was auto-deleveraged (MARGIN §7 step 4): its open orders
    /// in that instrument are cancelled, as Binance does.
    AutoDeleveraged,
}

/// Engine output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
        price: IndexPrice,
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
        /// USD value of `sold` at the sold asset's USD price, rounded down (MARGIN §8):
        /// what the exchange cost the account at index.
        sold_usd: Money,
        /// USD value of `repaid` at the repaid asset's USD price, rounded down: what the
        /// exchange bought. `sold_usd − repaid_usd` is what the sold asset's collateral
        /// ratio (haircut) cost.
        repaid_usd: Money,
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
    /// One position's funding at a funding time: `amount > 0` paid, `< 0` received, in
    /// the settlement asset (MARGIN §9).
    FundingPaid {
        account: AccountId,
        instrument: InstrumentId,
        rate: Rate,
        amount: Money,
    },
    /// A funding time of an instrument settled at `mark` and `rate`: payers paid `paid`,
    /// receivers got `received`; the rounding residue `paid − received` (never negative:
    /// payments round up, receipts down) went to the settlement asset's insurance fund.
    FundingSettled {
        instrument: InstrumentId,
        rate: Rate,
        mark: Price,
        funding_ns: u64,
        paid: Money,
        received: Money,
    },
    /// A conditional order accepted: it waits for its trigger, reserving no margin.
    ConditionalPlaced {
        account: AccountId,
        instrument: InstrumentId,
        order_id: OrderId,
        side: Side,
        kind: ConditionalKind,
        trigger: Price,
        qty: Qty,
    },
    /// A conditional order's working price crossed its trigger at `price`: its order
    /// follows (`OrderAccepted` …) or is refused (`ConditionalRejected`).
    ConditionalTriggered {
        account: AccountId,
        order_id: OrderId,
        price: Price,
    },
    /// A triggered order refused by the pre-trade check (the code as for a command).
    ConditionalRejected {
        account: AccountId,
        order_id: OrderId,
        reason: RejectReason,
        code: u16,
    },
    PositionModeSet {
        account: AccountId,
        mode: PositionMode,
    },
    /// MARGIN §7 step 4: a liquidation the book and the insurance fund could not absorb
    /// closed `qty` (signed: the counterparty's position change) of the counterparty
    /// `account`'s opposite position at `price` (the bankrupt position's bankruptcy
    /// price), no fee; `liquidated` is the bankrupt account (or an insurance fund that
    /// cannot carry its position). One event per counterparty, in ranking order.
    AutoDeleveraged {
        account: AccountId,
        liquidated: AccountId,
        instrument: InstrumentId,
        qty: Qty,
        price: Price,
        realized_pnl: Money,
    },
}

stable_codes!(CancelReason {
    User = 0,
    Unfilled = 1,
    PriceBand = 2,
    SelfTrade = 3,
    Liquidation = 4,
    ReduceOnlyObsolete = 5,
    AutoDeleveraged = 6,
});

// The event tag table (docs/JOURNAL_FORMAT.md, "Event tags"). Fields are written in the
// order listed here.
stable_tags!(Event, retired: [], {
    Rejected = 1 { reason, code },
    AccountCreated = 2 { account, parent },
    Deposited = 3 { account, asset, amount, balance },
    Withdrawn = 4 { account, asset, amount, balance },
    Transferred = 5 { from, to, asset, amount },
    LeverageSet = 6 { account, instrument, leverage },
    MarginModeSet = 7 { account, instrument, mode },
    IsolatedMarginAdjusted = 8 { account, instrument, delta, isolated_margin },
    OrderAccepted = 9 { account, instrument, order_id, side, price, qty },
    OrderRested = 10 { order_id, open_qty },
    OrderCanceled = 11 { account, order_id, open_qty, reason },
    OrderAmended = 12 { order_id, price, open_qty, priority_kept },
    OrderReduced = 13 { order_id, open_qty },
    Trade = 14 {
        instrument,
        price,
        qty,
        taker_side,
        taker_account,
        taker_order,
        maker_account,
        maker_order,
        taker_fee,
        maker_fee,
        taker_realized_pnl,
        maker_realized_pnl
    },
    MarkPriceSet = 15 { instrument, price },
    IndexPriceSet = 16 { instrument, price },
    AssetIndexSet = 17 { asset, quote, price },
    AssetModeSet = 18 { account, mode },
    InterestCharged = 19 { account, asset, amount, interest_base },
    AutoExchanged = 20 { account, sold_asset, sold, repaid_asset, repaid, sold_usd, repaid_usd },
    FundingRateSet = 21 { instrument, rate, next_funding_ns },
    ReferencePricesSet = 22 { instrument, best_bid, best_ask, last_trade },
    LiquidationTriggered = 23 { account, instrument, settle_asset, margin_balance, maintenance_margin },
    PositionTakenOver = 24 { account, instrument, qty, bankruptcy_price, liquidation_fee },
    DeficitCovered = 25 { account, asset, amount },
    FundingPaid = 26 { account, instrument, rate, amount },
    FundingSettled = 27 { instrument, rate, mark, funding_ns, paid, received },
    ConditionalPlaced = 28 { account, instrument, order_id, side, kind, trigger, qty },
    ConditionalTriggered = 29 { account, order_id, price },
    ConditionalRejected = 30 { account, order_id, reason, code },
    AutoDeleveraged = 31 { account, liquidated, instrument, qty, price, realized_pnl },
    PositionModeSet = 32 { account, mode },
});

impl Event {
    pub fn rejected(reason: RejectReason) -> Event {
        Event::Rejected {
            reason,
            code: reason.code(),
        }
    }
}
