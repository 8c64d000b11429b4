//! Stable numeric reason codes for rejected commands, grouped by subsystem:
//! 1xxx validation, 2xxx risk, 3xxx book, 4xxx account. A code is never reused and
//! two reasons are never folded into one: a user must be able to tell why.

use serde::{Deserialize, Serialize};

macro_rules! reasons {
    ($($name:ident = $code:literal, $text:expr;)*) => {
        /// Why a command was rejected. The discriminant is the stable code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[repr(u16)]
        pub enum RejectReason { $($name = $code,)* }

        impl RejectReason {
            pub const ALL: &'static [RejectReason] = &[$(RejectReason::$name,)*];
            pub fn code(self) -> u16 { self as u16 }
            pub fn text(self) -> &'static str {
                match self { $(RejectReason::$name => $text,)* }
            }
        }
    };
}

reasons! {
    // 1xxx validation
    UnknownAccount = 1001, "account does not exist";
    UnknownInstrument = 1002, "instrument does not exist";
    UnknownAsset = 1003, "asset does not exist";
    AccountExists = 1004, "account already exists";
    UnknownParent = 1005, "parent account does not exist";
    ParentIsSubAccount = 1006, "a sub-account cannot have sub-accounts";
    AmountNotPositive = 1007, "amount must be positive";
    QtyNotPositive = 1008, "quantity must be positive";
    QtyBelowMin = 1009, "quantity below the instrument minimum";
    QtyAboveMax = 1010, "quantity above the instrument maximum";
    PriceNotPositive = 1011, "price must be positive";
    PriceOutOfBand = 1012, "limit price outside the mark price band";
    NoMarkPrice = 1013, "instrument has no mark price yet";
    LeverageOutOfRange = 1014, "leverage must be between 1 and the instrument maximum";
    DuplicateOrderId = 1015, "an open order already has this id";
    UnknownOrder = 1016, "no open order with this id";
    NotOrderOwner = 1017, "order belongs to another account";
    AmendNoChange = 1018, "amend changes neither price nor quantity";
    TransferToSelf = 1019, "transfer source and destination are the same";
    TransferNotRelated = 1020, "transfers go between a main account and its sub-accounts";
    MarketPostOnly = 1021, "a market order cannot be post-only";
    AmendIncreasesReduceOnly = 1022, "a reduce-only order cannot be amended above the position";
    DeltaZero = 1023, "margin adjustment must not be zero";
    OrderIdReserved = 1024, "order ids from 2^63 up are reserved for the engine";
    AmountTooLarge = 1025, "amount above the engine's limit (10^15 units)";
    PriceTooLarge = 1026, "price above the engine's limit (10^10 units)";
    RateOutOfRange = 1027, "rate must lie within ±100%";
    CrossedReferencePrices = 1028, "reference best bid is not below best ask";
    NoUsdPrice = 1029, "an asset involved has no USD index price yet";
    PriceBelowTick = 1030, "mark or index price below one tick of the instrument";
    TooManyOpenOrders = 1031, "the account has the instrument's maximum number of open orders";
    UsdPriceOutOfRange = 1032, "an asset's USD price derived from this index would be zero or above the engine's limit";
    MarkPriceDerived = 1033, "the instrument's mark price is derived by the engine, not set";
    FundingRateDerived = 1034, "the instrument's funding rate is derived by the engine, not set";
    WouldTriggerImmediately = 1035, "the conditional order's working price is already at or past its trigger";
    CallbackRateOutOfRange = 1036, "a trailing stop's callback rate must be 0.1% to 10% in steps of 0.1%";
    NoLastTradePrice = 1037, "the instrument has no trade yet to trigger on";
    // 2xxx risk
    InsufficientMargin = 2001, "available balance does not cover the order's initial margin";
    InsufficientBalance = 2002, "wallet balance too low";
    LeverageExceedsBracket = 2003, "leverage above the bracket maximum for this notional";
    WithdrawExceedsAvailable = 2004, "amount exceeds the withdrawable balance";
    IsolatedMarginTooLow = 2005, "removal would leave the isolated position under its initial margin";
    ModeSwitchUnderMargin = 2006, "margin mode switch would leave a side under its requirement";
    NoIsolatedPosition = 2007, "no isolated position on this instrument";
    LeverageUnderMargin = 2008, "new leverage would leave the account under its initial margin";
    IndividualCapExceeded = 2009, "the account would hold more of this asset than its individual cap";
    PlatformCapExceeded = 2010, "all accounts together would hold more of this asset than its platform cap";
    MultiAssetHasIsolated = 2011, "multi-asset mode needs every position cross (rule R1)";
    SingleAssetUncovered = 2012, "the settlement asset does not cover position and order margin (rule R2)";
    SingleAssetMmrTooHigh = 2013, "account maintenance margin rate is not below 80% (rule R2)";
    IsolatedInMultiAsset = 2014, "isolated margin is not available in multi-asset mode or the unified account";
    AssetModeUnderMargin = 2015, "the new asset mode would leave the pool under its initial margin";
    CoinMInMultiAsset = 2016, "coin-M positions need single-asset mode or the unified account";
    MarginModeWithOpenOrders = 2017, "margin mode cannot change while the account has open orders on the instrument (binance convention)";
    MarginModeWithPosition = 2018, "margin mode cannot change while the account has a position on the instrument (binance convention)";
    PositionModeWithOpenOrders = 2019, "position mode cannot change while the account has open orders";
    PositionModeWithPosition = 2020, "position mode cannot change while the account has a position";
    PositionSideMismatch = 2021, "the position side does not match the account's position mode";
    // 3xxx book
    PostOnlyWouldTake = 3001, "post-only order would take liquidity";
    FokCannotFill = 3002, "fill-or-kill order cannot fill completely";
    ReduceOnlyNoPosition = 3003, "reduce-only order with no position to reduce";
    ReduceOnlyWrongSide = 3004, "reduce-only order on the side that would increase the position";
    // 4xxx account
    AccountHasExposure = 4001, "account has positions or orders on this instrument";
}

impl RejectReason {
    pub fn from_code(code: u16) -> Option<RejectReason> {
        Self::ALL.iter().copied().find(|r| r.code() == code)
    }
}

/// Journaled as its stable `u16` code.
impl bincode::Encode for RejectReason {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        e: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        bincode::Encode::encode(&self.code(), e)
    }
}

impl<C> bincode::Decode<C> for RejectReason {
    fn decode<D: bincode::de::Decoder<Context = C>>(
        d: &mut D,
    ) -> Result<Self, bincode::error::DecodeError> {
        let code: u16 = bincode::Decode::decode(d)?;
        RejectReason::from_code(code)
            .ok_or(bincode::error::DecodeError::Other("unknown reject code"))
    }
}
bincode::impl_borrow_decode!(RejectReason);

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.text(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn codes_are_unique_and_grouped() {
        let mut seen = BTreeSet::new();
        for r in RejectReason::ALL {
            assert!(seen.insert(r.code()), "duplicate code {}", r.code());
            assert!((1000..5000).contains(&r.code()));
        }
        assert_eq!(RejectReason::InsufficientMargin.code(), 2001);
    }
}
