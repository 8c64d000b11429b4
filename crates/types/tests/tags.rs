//! Stable wire tags of `Command` and `Event` (docs/JOURNAL_FORMAT.md, "Payload
//! encoding"). Checks:
//! - tags are non-zero and unique, and none is a retired tag;
//! - the generators below produce every variant (so the round trips cover all of them);
//! - every generated command and event round-trips through bincode, its first two bytes
//!   are its tag, and every prefix of its encoding is refused (never a panic);
//! - unknown and retired tags, and arbitrary bytes, decode to an error, never a panic;
//! - a few encodings are pinned byte for byte, so a change to what journals mean fails
//!   here and not silently;
//! - the JSON (serde) form is the one the scenario files use.

use perpcore_types::{
    bincode_config, AccountId, AssetId, AssetMode, CancelReason, Command, ConditionalKind,
    ConditionalOrder, Event, IndexPrice, IndexQuote, InstrumentId, MarginMode, Money, NewOrder,
    OrderId, OrderType, PositionMode, PositionSide, Price, PriceTicks, Qty, QtyLots, Rate,
    RejectReason, Side, StpMode, TimeInForce, WorkingPrice,
};
use proptest::prelude::*;
use proptest::strategy::{Union, ValueTree};
use proptest::test_runner::TestRunner;
use std::collections::BTreeSet;

fn account() -> impl Strategy<Value = AccountId> {
    any::<u64>().prop_map(AccountId)
}
fn asset() -> impl Strategy<Value = AssetId> {
    any::<u16>().prop_map(AssetId)
}
fn instrument() -> impl Strategy<Value = InstrumentId> {
    any::<u32>().prop_map(InstrumentId)
}
fn order_id() -> impl Strategy<Value = OrderId> {
    any::<u64>().prop_map(OrderId)
}
fn money() -> impl Strategy<Value = Money> {
    any::<i128>().prop_map(Money)
}
fn price() -> impl Strategy<Value = Price> {
    any::<i64>().prop_map(Price)
}
fn index_price() -> impl Strategy<Value = IndexPrice> {
    any::<i128>().prop_map(IndexPrice)
}
fn qty() -> impl Strategy<Value = Qty> {
    any::<i64>().prop_map(Qty)
}
fn rate() -> impl Strategy<Value = Rate> {
    any::<i64>().prop_map(Rate)
}
fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::Buy), Just(Side::Sell)]
}
fn margin_mode() -> impl Strategy<Value = MarginMode> {
    prop_oneof![Just(MarginMode::Cross), Just(MarginMode::Isolated)]
}
fn asset_mode() -> impl Strategy<Value = AssetMode> {
    prop_oneof![
        Just(AssetMode::Single),
        Just(AssetMode::Multi),
        Just(AssetMode::Unified)
    ]
}
fn quote() -> impl Strategy<Value = IndexQuote> {
    prop_oneof![Just(IndexQuote::Usdt), Just(IndexQuote::Usd)]
}
fn reject() -> impl Strategy<Value = RejectReason> {
    proptest::sample::select(RejectReason::ALL)
}
fn cancel_reason() -> impl Strategy<Value = CancelReason> {
    proptest::sample::select(
        CancelReason::CODES
            .iter()
            .map(|(r, _)| *r)
            .collect::<Vec<_>>(),
    )
}

fn new_order() -> impl Strategy<Value = NewOrder> {
    (
        (account(), instrument(), order_id(), side()),
        proptest::sample::select(OrderType::CODES.iter().map(|(t, _)| *t).collect::<Vec<_>>()),
        proptest::sample::select(
            TimeInForce::CODES
                .iter()
                .map(|(t, _)| *t)
                .collect::<Vec<_>>(),
        ),
        (any::<i64>(), any::<i64>(), any::<bool>(), any::<bool>()),
        proptest::sample::select(StpMode::CODES.iter().map(|(s, _)| *s).collect::<Vec<_>>()),
    )
        .prop_map(
            |(
                (account, instrument, order_id, side),
                order_type,
                tif,
                (price, qty, reduce_only, close_position),
                stp,
            )| NewOrder {
                account,
                instrument,
                order_id,
                side,
                order_type,
                tif,
                price: PriceTicks(price),
                qty: QtyLots(qty),
                reduce_only,
                close_position,
                stp,
            },
        )
}

fn conditional_order() -> impl Strategy<Value = ConditionalOrder> {
    let codes = |c: &[(ConditionalKind, u32)]| c.iter().map(|(k, _)| *k).collect::<Vec<_>>();
    (
        (
            new_order(),
            proptest::sample::select(codes(ConditionalKind::CODES)),
        ),
        (price(), rate(), any::<bool>()),
    )
        .prop_map(
            |((o, kind), (trigger, callback_rate, last))| ConditionalOrder {
                account: o.account,
                instrument: o.instrument,
                order_id: o.order_id,
                side: o.side,
                kind,
                trigger,
                callback_rate,
                working: if last {
                    WorkingPrice::LastTrade
                } else {
                    WorkingPrice::Mark
                },
                price: o.price,
                tif: o.tif,
                qty: o.qty,
                reduce_only: o.reduce_only,
                close_position: o.close_position,
                stp: o.stp,
            },
        )
}

/// One strategy per command variant.
fn command_arms() -> Vec<BoxedStrategy<Command>> {
    vec![
        (account(), proptest::option::of(account()))
            .prop_map(|(account, parent)| Command::CreateAccount { account, parent })
            .boxed(),
        (account(), asset(), money())
            .prop_map(|(account, asset, amount)| Command::Deposit {
                account,
                asset,
                amount,
            })
            .boxed(),
        (account(), asset(), money())
            .prop_map(|(account, asset, amount)| Command::Withdraw {
                account,
                asset,
                amount,
            })
            .boxed(),
        (account(), account(), asset(), money())
            .prop_map(|(from, to, asset, amount)| Command::Transfer {
                from,
                to,
                asset,
                amount,
            })
            .boxed(),
        (account(), instrument(), any::<u32>())
            .prop_map(|(account, instrument, leverage)| Command::SetLeverage {
                account,
                instrument,
                leverage,
            })
            .boxed(),
        (account(), instrument(), margin_mode())
            .prop_map(|(account, instrument, mode)| Command::SetMarginMode {
                account,
                instrument,
                mode,
            })
            .boxed(),
        (account(), instrument(), money(), position_side())
            .prop_map(
                |(account, instrument, delta, position_side)| Command::AdjustIsolatedMargin {
                    account,
                    instrument,
                    delta,
                    position_side,
                },
            )
            .boxed(),
        new_order().prop_map(Command::PlaceOrder).boxed(),
        (account(), order_id())
            .prop_map(|(account, order_id)| Command::CancelOrder { account, order_id })
            .boxed(),
        (account(), proptest::option::of(instrument()))
            .prop_map(|(account, instrument)| Command::CancelAll {
                account,
                instrument,
            })
            .boxed(),
        (
            account(),
            order_id(),
            proptest::option::of(any::<i64>().prop_map(PriceTicks)),
            proptest::option::of(any::<i64>().prop_map(QtyLots)),
        )
            .prop_map(|(account, order_id, price, qty)| Command::AmendOrder {
                account,
                order_id,
                price,
                qty,
            })
            .boxed(),
        (instrument(), price())
            .prop_map(|(instrument, price)| Command::SetMarkPrice { instrument, price })
            .boxed(),
        (instrument(), price())
            .prop_map(|(instrument, price)| Command::SetIndexPrice { instrument, price })
            .boxed(),
        (asset(), quote(), index_price())
            .prop_map(|(asset, quote, price)| Command::SetAssetIndex {
                asset,
                quote,
                price,
            })
            .boxed(),
        (account(), asset_mode())
            .prop_map(|(account, mode)| Command::SetAssetMode { account, mode })
            .boxed(),
        (instrument(), rate(), any::<u64>())
            .prop_map(
                |(instrument, rate, next_funding_ns)| Command::SetFundingRate {
                    instrument,
                    rate,
                    next_funding_ns,
                },
            )
            .boxed(),
        (
            instrument(),
            proptest::option::of(price()),
            proptest::option::of(price()),
            proptest::option::of(price()),
        )
            .prop_map(
                |(instrument, best_bid, best_ask, last_trade)| Command::SetReferencePrices {
                    instrument,
                    best_bid,
                    best_ask,
                    last_trade,
                },
            )
            .boxed(),
        conditional_order()
            .prop_map(Command::PlaceConditional)
            .boxed(),
        (account(), position_mode())
            .prop_map(|(account, mode)| Command::SetPositionMode { account, mode })
            .boxed(),
    ]
}

fn position_side() -> impl Strategy<Value = PositionSide> {
    proptest::sample::select(
        PositionSide::CODES
            .iter()
            .map(|(s, _)| *s)
            .collect::<Vec<_>>(),
    )
}

fn position_mode() -> impl Strategy<Value = PositionMode> {
    proptest::sample::select(
        PositionMode::CODES
            .iter()
            .map(|(s, _)| *s)
            .collect::<Vec<_>>(),
    )
}

/// One strategy per event variant.
fn event_arms() -> Vec<BoxedStrategy<Event>> {
    vec![
        (reject(), any::<u16>())
            .prop_map(|(reason, code)| Event::Rejected { reason, code })
            .boxed(),
        (account(), proptest::option::of(account()))
            .prop_map(|(account, parent)| Event::AccountCreated { account, parent })
            .boxed(),
        (account(), asset(), money(), money())
            .prop_map(|(account, asset, amount, balance)| Event::Deposited {
                account,
                asset,
                amount,
                balance,
            })
            .boxed(),
        (account(), asset(), money(), money())
            .prop_map(|(account, asset, amount, balance)| Event::Withdrawn {
                account,
                asset,
                amount,
                balance,
            })
            .boxed(),
        (account(), account(), asset(), money())
            .prop_map(|(from, to, asset, amount)| Event::Transferred {
                from,
                to,
                asset,
                amount,
            })
            .boxed(),
        (account(), instrument(), any::<u32>())
            .prop_map(|(account, instrument, leverage)| Event::LeverageSet {
                account,
                instrument,
                leverage,
            })
            .boxed(),
        (account(), instrument(), margin_mode())
            .prop_map(|(account, instrument, mode)| Event::MarginModeSet {
                account,
                instrument,
                mode,
            })
            .boxed(),
        (account(), instrument(), money(), money())
            .prop_map(|(account, instrument, delta, isolated_margin)| {
                Event::IsolatedMarginAdjusted {
                    account,
                    instrument,
                    delta,
                    isolated_margin,
                }
            })
            .boxed(),
        (account(), instrument(), order_id(), side(), price(), qty())
            .prop_map(
                |(account, instrument, order_id, side, price, qty)| Event::OrderAccepted {
                    account,
                    instrument,
                    order_id,
                    side,
                    price,
                    qty,
                },
            )
            .boxed(),
        (order_id(), qty())
            .prop_map(|(order_id, open_qty)| Event::OrderRested { order_id, open_qty })
            .boxed(),
        (account(), order_id(), qty(), cancel_reason())
            .prop_map(
                |(account, order_id, open_qty, reason)| Event::OrderCanceled {
                    account,
                    order_id,
                    open_qty,
                    reason,
                },
            )
            .boxed(),
        (order_id(), price(), qty(), any::<bool>())
            .prop_map(
                |(order_id, price, open_qty, priority_kept)| Event::OrderAmended {
                    order_id,
                    price,
                    open_qty,
                    priority_kept,
                },
            )
            .boxed(),
        (order_id(), qty())
            .prop_map(|(order_id, open_qty)| Event::OrderReduced { order_id, open_qty })
            .boxed(),
        (
            (instrument(), price(), qty(), side()),
            (account(), order_id(), account(), order_id()),
            (money(), money(), money(), money()),
        )
            .prop_map(
                |(
                    (instrument, price, qty, taker_side),
                    (taker_account, taker_order, maker_account, maker_order),
                    (taker_fee, maker_fee, taker_realized_pnl, maker_realized_pnl),
                )| Event::Trade {
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
                    maker_realized_pnl,
                },
            )
            .boxed(),
        (instrument(), price())
            .prop_map(|(instrument, price)| Event::MarkPriceSet { instrument, price })
            .boxed(),
        (instrument(), price())
            .prop_map(|(instrument, price)| Event::IndexPriceSet { instrument, price })
            .boxed(),
        (asset(), quote(), index_price())
            .prop_map(|(asset, quote, price)| Event::AssetIndexSet {
                asset,
                quote,
                price,
            })
            .boxed(),
        (account(), asset_mode())
            .prop_map(|(account, mode)| Event::AssetModeSet { account, mode })
            .boxed(),
        (account(), asset(), money(), money())
            .prop_map(
                |(account, asset, amount, interest_base)| Event::InterestCharged {
                    account,
                    asset,
                    amount,
                    interest_base,
                },
            )
            .boxed(),
        (
            account(),
            asset(),
            money(),
            asset(),
            money(),
            money(),
            money(),
        )
            .prop_map(
                |(account, sold_asset, sold, repaid_asset, repaid, sold_usd, repaid_usd)| {
                    Event::AutoExchanged {
                        account,
                        sold_asset,
                        sold,
                        repaid_asset,
                        repaid,
                        sold_usd,
                        repaid_usd,
                    }
                },
            )
            .boxed(),
        (instrument(), rate(), any::<u64>())
            .prop_map(
                |(instrument, rate, next_funding_ns)| Event::FundingRateSet {
                    instrument,
                    rate,
                    next_funding_ns,
                },
            )
            .boxed(),
        (
            instrument(),
            proptest::option::of(price()),
            proptest::option::of(price()),
            proptest::option::of(price()),
        )
            .prop_map(
                |(instrument, best_bid, best_ask, last_trade)| Event::ReferencePricesSet {
                    instrument,
                    best_bid,
                    best_ask,
                    last_trade,
                },
            )
            .boxed(),
        (
            account(),
            proptest::option::of(instrument()),
            asset(),
            money(),
            money(),
        )
            .prop_map(
                |(account, instrument, settle_asset, margin_balance, maintenance_margin)| {
                    Event::LiquidationTriggered {
                        account,
                        instrument,
                        settle_asset,
                        margin_balance,
                        maintenance_margin,
                    }
                },
            )
            .boxed(),
        (account(), instrument(), qty(), price(), money())
            .prop_map(
                |(account, instrument, qty, bankruptcy_price, liquidation_fee)| {
                    Event::PositionTakenOver {
                        account,
                        instrument,
                        qty,
                        bankruptcy_price,
                        liquidation_fee,
                    }
                },
            )
            .boxed(),
        (account(), asset(), money())
            .prop_map(|(account, asset, amount)| Event::DeficitCovered {
                account,
                asset,
                amount,
            })
            .boxed(),
        (account(), instrument(), rate(), money())
            .prop_map(|(account, instrument, rate, amount)| Event::FundingPaid {
                account,
                instrument,
                rate,
                amount,
            })
            .boxed(),
        (
            instrument(),
            rate(),
            price(),
            any::<u64>(),
            money(),
            money(),
        )
            .prop_map(|(instrument, rate, mark, funding_ns, paid, received)| {
                Event::FundingSettled {
                    instrument,
                    rate,
                    mark,
                    funding_ns,
                    paid,
                    received,
                }
            })
            .boxed(),
        (
            (account(), instrument(), order_id(), side()),
            proptest::sample::select(
                ConditionalKind::CODES
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>(),
            ),
            (price(), qty()),
        )
            .prop_map(
                |((account, instrument, order_id, side), kind, (trigger, qty))| {
                    Event::ConditionalPlaced {
                        account,
                        instrument,
                        order_id,
                        side,
                        kind,
                        trigger,
                        qty,
                    }
                },
            )
            .boxed(),
        (account(), order_id(), price())
            .prop_map(|(account, order_id, price)| Event::ConditionalTriggered {
                account,
                order_id,
                price,
            })
            .boxed(),
        (account(), order_id(), reject(), any::<u16>())
            .prop_map(
                |(account, order_id, reason, code)| Event::ConditionalRejected {
                    account,
                    order_id,
                    reason,
                    code,
                },
            )
            .boxed(),
        (account(), position_mode())
            .prop_map(|(account, mode)| Event::PositionModeSet { account, mode })
            .boxed(),
        (account(), account(), instrument(), qty(), price(), money())
            .prop_map(
                |(account, liquidated, instrument, qty, price, realized_pnl)| {
                    Event::AutoDeleveraged {
                        account,
                        liquidated,
                        instrument,
                        qty,
                        price,
                        realized_pnl,
                    }
                },
            )
            .boxed(),
    ]
}

fn encode<T: bincode::Encode>(v: &T) -> Vec<u8> {
    bincode::encode_to_vec(v, bincode_config()).expect("encode into a Vec")
}

fn decode<T: bincode::Decode<()>>(bytes: &[u8]) -> Result<(T, usize), bincode::error::DecodeError> {
    bincode::decode_from_slice(bytes, bincode_config().with_limit::<4096>())
}

/// The tag of one value drawn from each arm (deterministic runner).
fn arm_tags<T: std::fmt::Debug>(arms: Vec<BoxedStrategy<T>>, tag: impl Fn(&T) -> u16) -> Vec<u16> {
    let mut runner = TestRunner::deterministic();
    arms.into_iter()
        .map(|s| tag(&s.new_tree(&mut runner).expect("value").current()))
        .collect()
}

fn check_table(tags: &[(u16, &str)], retired: &[u16], what: &str) {
    let mut seen = BTreeSet::new();
    for (tag, name) in tags {
        assert_ne!(*tag, 0, "{what} {name}: tag 0 is never used");
        assert!(seen.insert(*tag), "{what} {name}: tag {tag} is used twice");
        assert!(
            !retired.contains(tag),
            "{what} {name}: tag {tag} is retired and must not be reused"
        );
    }
    let mut retired_seen = BTreeSet::new();
    for r in retired {
        assert!(
            retired_seen.insert(*r),
            "{what}: retired tag {r} listed twice"
        );
    }
}

#[test]
fn tags_are_unique_and_never_retired() {
    check_table(Command::TAGS, Command::RETIRED_TAGS, "command");
    check_table(Event::TAGS, Event::RETIRED_TAGS, "event");
}

#[test]
fn generators_cover_every_variant() {
    let all = |t: &[(u16, &str)]| t.iter().map(|(tag, _)| *tag).collect::<BTreeSet<_>>();
    let commands = arm_tags(command_arms(), Command::tag);
    assert_eq!(commands.len(), Command::TAGS.len());
    assert_eq!(
        commands.into_iter().collect::<BTreeSet<_>>(),
        all(Command::TAGS)
    );
    let events = arm_tags(event_arms(), Event::tag);
    assert_eq!(events.len(), Event::TAGS.len());
    assert_eq!(
        events.into_iter().collect::<BTreeSet<_>>(),
        all(Event::TAGS)
    );
}

/// Encodes, checks the tag prefix, decodes back and refuses every strict prefix.
fn round_trip<T>(v: &T, tag: u16) -> Result<(), TestCaseError>
where
    T: bincode::Encode + bincode::Decode<()> + PartialEq + std::fmt::Debug,
{
    let bytes = encode(v);
    prop_assert_eq!(bytes.get(..2), Some(&tag.to_le_bytes()[..]));
    let (back, used): (T, usize) =
        decode(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(used, bytes.len());
    prop_assert_eq!(&back, v);
    for cut in 0..bytes.len() {
        prop_assert!(
            decode::<T>(&bytes[..cut]).is_err(),
            "prefix of {} bytes decoded",
            cut
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(perpcore_testkit::prop::config(512))]

    #[test]
    fn every_command_round_trips(cmd in Union::new(command_arms())) {
        round_trip(&cmd, cmd.tag())?;
    }

    #[test]
    fn every_event_round_trips(ev in Union::new(event_arms())) {
        round_trip(&ev, ev.tag())?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
        let _ = decode::<Command>(&bytes);
        let _ = decode::<Event>(&bytes);
    }
}

#[test]
fn unknown_and_zero_tags_are_errors() {
    let known: BTreeSet<u16> = Command::TAGS.iter().map(|(t, _)| *t).collect();
    for tag in [0u16, 20, 999, u16::MAX] {
        assert!(!known.contains(&tag));
        let mut bytes = tag.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 64]);
        let err = decode::<Command>(&bytes).expect_err("unknown tag");
        let text = err.to_string();
        assert!(
            text.contains("Command") && text.contains(&tag.to_string()),
            "{text}"
        );
    }
    let known: BTreeSet<u16> = Event::TAGS.iter().map(|(t, _)| *t).collect();
    for tag in [0u16, 33, u16::MAX] {
        assert!(!known.contains(&tag));
        let mut bytes = tag.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 64]);
        assert!(decode::<Event>(&bytes).is_err());
    }
    // A nested code out of range (side = 7) inside a known tag.
    let mut bytes = encode(&Event::OrderAccepted {
        account: AccountId(1),
        instrument: InstrumentId(1),
        order_id: OrderId(1),
        side: Side::Sell,
        price: Price(1),
        qty: Qty(1),
    });
    bytes[2 + 8 + 4 + 8] = 7;
    assert!(decode::<Event>(&bytes).is_err());
}

/// What these bytes mean is fixed forever (journals hold them); a change here is a
/// change of the payload format.
#[test]
fn encodings_are_pinned() {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let deposit = Command::Deposit {
        account: AccountId(7),
        asset: AssetId(2),
        amount: Money(5),
    };
    assert_eq!(
        hex(&encode(&deposit)),
        "0200\
         0700000000000000\
         0200\
         05000000000000000000000000000000"
    );
    let place = Command::PlaceOrder(NewOrder {
        account: AccountId(1),
        instrument: InstrumentId(3),
        order_id: OrderId(9),
        side: Side::Sell,
        order_type: OrderType::Limit,
        tif: TimeInForce::PostOnly,
        price: PriceTicks(100),
        qty: QtyLots(2),
        reduce_only: true,
        close_position: false,
        stp: StpMode::ExpireBoth,
    });
    assert_eq!(
        hex(&encode(&place)),
        "0800\
         0100000000000000\
         03000000\
         0900000000000000\
         01000000\
         00000000\
         03000000\
         6400000000000000\
         0200000000000000\
         01\
         00\
         02000000"
    );
    let amend = Command::AmendOrder {
        account: AccountId(1),
        order_id: OrderId(2),
        price: None,
        qty: Some(QtyLots(4)),
    };
    assert_eq!(
        hex(&encode(&amend)),
        "0b00\
         0100000000000000\
         0200000000000000\
         00\
         010400000000000000"
    );
    let rejected = Event::rejected(RejectReason::InsufficientMargin);
    assert_eq!(hex(&encode(&rejected)), "0100d107d107");
}

/// Payload version 3: `SetAssetIndex`'s price is an `IndexPrice`, an i128 of 10^-12 units
/// (16 bytes, little-endian). USDC/USD 1.000296667 = 1,000,296,667,000 raw =
/// 0xE8_E653_D778: tag 14 (`0e00`), asset 1 (`0100`), quote usd code 1 (`01000000`), then
/// `78d753e6e8` and eleven zero bytes. Its JSON form keeps the nine decimals as text.
#[test]
fn asset_index_price_has_twelve_decimals_on_the_wire() {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let cmd = Command::SetAssetIndex {
        asset: AssetId(1),
        quote: IndexQuote::Usd,
        price: IndexPrice::parse("1.000296667").expect("price"),
    };
    assert_eq!(
        hex(&encode(&cmd)),
        "0e0001000100000078d753e6e80000000000000000000000"
    );
    let text = serde_json::to_string(&cmd).expect("json");
    assert_eq!(
        text,
        r#"{"type":"set_asset_index","asset":1,"quote":"usd","price":"1.000296667"}"#
    );
    assert_eq!(serde_json::from_str::<Command>(&text).expect("parse"), cmd);
}

#[test]
fn json_form_is_unchanged() {
    let cmd = Command::SetAssetIndex {
        asset: AssetId(1),
        quote: IndexQuote::Usd,
        price: IndexPrice::parse("2.5").expect("price"),
    };
    let text = serde_json::to_string(&cmd).expect("json");
    assert_eq!(
        text,
        r#"{"type":"set_asset_index","asset":1,"quote":"usd","price":"2.5"}"#
    );
    assert_eq!(serde_json::from_str::<Command>(&text).expect("parse"), cmd);
    let ev = Event::OrderCanceled {
        account: AccountId(2),
        order_id: OrderId(3),
        open_qty: Qty::parse("1").expect("qty"),
        reason: CancelReason::SelfTrade,
    };
    let text = serde_json::to_string(&ev).expect("json");
    assert_eq!(
        text,
        r#"{"event":"order_canceled","account":2,"order_id":3,"open_qty":"1","reason":"self_trade"}"#
    );
}

/// The rows `| tag | `Name` | ... |` of the table under `heading` in
/// docs/JOURNAL_FORMAT.md.
fn doc_table(doc: &str, heading: &str) -> Vec<(u16, String)> {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("{heading} missing from docs/JOURNAL_FORMAT.md"));
    doc[start..]
        .lines()
        .skip(1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let tag = cells.get(1)?.parse::<u16>().ok()?;
            Some((tag, cells.get(2)?.trim_matches('`').to_string()))
        })
        .collect()
}

#[test]
fn the_documented_tag_tables_are_the_code_tables() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/JOURNAL_FORMAT.md");
    let doc = std::fs::read_to_string(&path).expect("docs/JOURNAL_FORMAT.md");
    let code = |t: &[(u16, &str)]| {
        t.iter()
            .map(|(tag, name)| (*tag, (*name).to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(doc_table(&doc, "### Command tags"), code(Command::TAGS));
    assert_eq!(doc_table(&doc, "### Event tags"), code(Event::TAGS));
}
