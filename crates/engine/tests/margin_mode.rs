//! The margin-mode switch rule of each convention profile (issue 15, item 5):
//!
//! - `binance`: SetMarginMode is refused while the account has an open order (Binance
//!   -4047, code 2017) or a position (Binance -4048, code 2018) on the instrument; asking
//!   for the mode it already has is accepted; exposure on another instrument does not
//!   matter.
//! - `bybit`: a switch with a position is allowed and re-evaluated: refused with
//!   `ModeSwitchUnderMargin` (2006), changing nothing, when the account would not have
//!   enough margin afterwards.
//!
//! And the bybit profile end to end: the report's liquidation and bankruptcy prices of an
//! isolated position are where the engine liquidates it, with every invariant checked
//! through the takeover.
//!
//! Test configuration: BTCUSDT (instrument 0; tick 0.1, lot 0.001, brackets 0.4% to
//! 50,000 then 0.5%, maker 0.02%, taker 0.05%, default leverage 20) and ETHUSDT
//! (instrument 1, tick 0.01).

use perpcore_testkit::fixtures::TestEngine;
use perpcore_testkit::gen::test_config;
use perpcore_types::*;

const BTCUSDT: InstrumentId = InstrumentId(0);
const ETHUSDT: InstrumentId = InstrumentId(1);
const USDT: AssetId = AssetId(0);
const SUBJECT: u64 = 1;
const MAKER: u64 = 2;

fn order(account: u64, instrument: InstrumentId, id: u64, side: Side, ticks: i64) -> Command {
    Command::PlaceOrder(NewOrder {
        account: AccountId(account),
        instrument,
        order_id: OrderId(id),
        side,
        order_type: OrderType::Limit,
        tif: if account == MAKER {
            TimeInForce::Gtc
        } else {
            TimeInForce::Ioc
        },
        price: PriceTicks(ticks),
        qty: QtyLots(100), // 0.1 BTC
        reduce_only: false,
        close_position: false,
        stp: StpMode::ExpireTaker,
    })
}

fn switch(mode: MarginMode) -> Command {
    Command::SetMarginMode {
        account: AccountId(SUBJECT),
        instrument: BTCUSDT,
        mode,
    }
}

fn mark(price: i64) -> Command {
    Command::SetMarkPrice {
        instrument: BTCUSDT,
        price: Price::from_int(price),
    }
}

/// Marks BTCUSDT 60,000 and ETHUSDT 3,000; the subject holds `deposit` USDT, the maker
/// 10^6.
fn setup(config: Config, deposit: i64) -> TestEngine {
    let mut t = TestEngine::new(config);
    t.run(mark(60_000));
    t.run(Command::SetMarkPrice {
        instrument: ETHUSDT,
        price: Price::from_int(3_000),
    });
    t.create_funded(SUBJECT, USDT, Money::from_int(deposit));
    t.create_funded(MAKER, USDT, Money::from_int(1_000_000));
    t
}

/// The subject buys 0.1 BTC at 60,000 from the maker.
fn open_long(t: &mut TestEngine) {
    assert_eq!(
        t.rejected(order(MAKER, BTCUSDT, 1, Side::Sell, 600_000)),
        None
    );
    assert_eq!(
        t.rejected(order(SUBJECT, BTCUSDT, 2, Side::Buy, 600_000)),
        None
    );
    assert_eq!(leg(t).qty, QtyLots(100));
}

fn leg(t: &TestEngine) -> perpcore_risk::Leg {
    t.engine
        .account(AccountId(SUBJECT))
        .and_then(|a| a.leg(BTCUSDT, PositionSide::Both))
        .cloned()
        .expect("leg")
}

fn bybit_config() -> Config {
    let mut c = test_config();
    c.instruments[0].convention = MarginConvention::Bybit;
    c.instruments[0].fee_to_close = true;
    c
}

/// Binance: an open order blocks the switch (2017) and so does a position (2018); the
/// refusals change nothing; an order on another instrument does not block; the current
/// mode is accepted with a position; flat and without orders the switch goes through.
#[test]
fn binance_refuses_a_switch_with_open_orders_or_a_position() {
    let mut t = setup(test_config(), 10_000);
    // An ETHUSDT bid (2,900.00 = 290,000 ticks) rests: BTCUSDT is unaffected.
    let eth_bid = Command::PlaceOrder(NewOrder {
        account: AccountId(SUBJECT),
        instrument: ETHUSDT,
        order_id: OrderId(10),
        side: Side::Buy,
        order_type: OrderType::Limit,
        tif: TimeInForce::Gtc,
        price: PriceTicks(290_000),
        qty: QtyLots(1),
        reduce_only: false,
        close_position: false,
        stp: StpMode::ExpireTaker,
    });
    assert_eq!(t.rejected(eth_bid), None);
    assert_eq!(t.rejected(switch(MarginMode::Isolated)), None);
    assert_eq!(t.rejected(switch(MarginMode::Cross)), None);

    // A resting BTCUSDT bid at 59,000.
    let bid = Command::PlaceOrder(NewOrder {
        tif: TimeInForce::Gtc,
        ..match order(SUBJECT, BTCUSDT, 3, Side::Buy, 590_000) {
            Command::PlaceOrder(o) => o,
            _ => unreachable!(),
        }
    });
    assert_eq!(t.rejected(bid), None);
    let before = t.engine.account(AccountId(SUBJECT)).cloned();
    assert_eq!(
        t.rejected(switch(MarginMode::Isolated)),
        Some(RejectReason::MarginModeWithOpenOrders.code())
    );
    assert_eq!(t.engine.account(AccountId(SUBJECT)).cloned(), before);
    assert_eq!(
        t.rejected(Command::CancelOrder {
            account: AccountId(SUBJECT),
            order_id: OrderId(3),
        }),
        None
    );

    open_long(&mut t);
    let before = t.engine.account(AccountId(SUBJECT)).cloned();
    assert_eq!(
        t.rejected(switch(MarginMode::Isolated)),
        Some(RejectReason::MarginModeWithPosition.code())
    );
    assert_eq!(t.engine.account(AccountId(SUBJECT)).cloned(), before);
    // Asking for the mode it has is no change, and accepted.
    assert_eq!(t.rejected(switch(MarginMode::Cross)), None);
    assert_eq!(t.engine.account(AccountId(SUBJECT)).cloned(), before);

    // Closed (sold back to a maker bid), the switch goes through.
    assert_eq!(
        t.rejected(order(MAKER, BTCUSDT, 4, Side::Buy, 600_000)),
        None
    );
    assert_eq!(
        t.rejected(order(SUBJECT, BTCUSDT, 5, Side::Sell, 600_000)),
        None
    );
    assert!(leg(&t).is_flat());
    assert_eq!(t.rejected(switch(MarginMode::Isolated)), None);
    assert_eq!(leg(&t).mode, MarginMode::Isolated);
}

/// Bybit: cross → isolated with a position moves exactly the position margin out of the
/// wallet. Long 0.1 BTC at 60,000, leverage 20, mark 60,000 (uPnL 0): IM 6,000 / 20 =
/// 300, fee to close 6,000 × (1 − 1/20) × 0.05% = 2.85, so IW = 302.85 and the wallet
/// falls by 302.85. With an open order too, the switch is still allowed.
#[test]
fn bybit_switches_with_a_position_and_moves_its_margin() {
    let mut t = setup(bybit_config(), 10_000);
    open_long(&mut t);
    let bid = Command::PlaceOrder(NewOrder {
        tif: TimeInForce::Gtc,
        ..match order(SUBJECT, BTCUSDT, 3, Side::Buy, 590_000) {
            Command::PlaceOrder(o) => o,
            _ => unreachable!(),
        }
    });
    assert_eq!(t.rejected(bid), None);
    let wallet = |t: &TestEngine| t.engine.account(AccountId(SUBJECT)).unwrap().wallets[0];
    let before = wallet(&t);
    assert_eq!(t.rejected(switch(MarginMode::Isolated)), None);
    let l = leg(&t);
    assert_eq!(l.mode, MarginMode::Isolated);
    assert_eq!(l.isolated_margin, Money::parse("302.85").unwrap());
    assert_eq!(before - wallet(&t), Money::parse("302.85").unwrap());
    // And back: the margin returns in full.
    assert_eq!(t.rejected(switch(MarginMode::Cross)), None);
    assert_eq!(wallet(&t), before);
    assert_eq!(leg(&t).isolated_margin, Money::ZERO);
}

/// Bybit: isolated → cross is re-evaluated. Isolated long 0.1 BTC at 60,000, leverage
/// 20: the fill moves IW = 300 + 2.85 = 302.85 out of the wallet and the taker fee
/// 6,000 × 0.05% = 3 is paid from it. Mark 58,000: uPnL −200; IW + uPnL = 102.85 above
/// MM (6,000 × 0.4% + 2.85 = 26.85 on the value at entry): not liquidated. In cross the
/// position would need IM 5,800 / 20 + 2.85 = 292.85 from wallet + IW + uPnL =
/// wallet + 102.85, i.e. a wallet of at least 190. Deposit 400: wallet 400 − 302.85 − 3
/// = 94.15 → refused (2006), nothing changed. Deposit 500: wallet 194.15 → allowed
/// (available 194.15 + 102.85 − 292.85 = 4.15).
#[test]
fn bybit_refuses_a_switch_that_leaves_too_little_margin() {
    for (deposit, wallet_after_open, refused) in [(400, "94.15", true), (500, "194.15", false)] {
        let mut t = setup(bybit_config(), deposit);
        assert_eq!(t.rejected(switch(MarginMode::Isolated)), None);
        open_long(&mut t);
        let a = t.engine.account(AccountId(SUBJECT)).unwrap();
        assert_eq!(a.wallets[0], Money::parse(wallet_after_open).unwrap());
        assert_eq!(leg(&t).isolated_margin, Money::parse("302.85").unwrap());
        let events = t.run(mark(58_000));
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, Event::LiquidationTriggered { .. })),
            "{events:?}"
        );
        let before = t.engine.account(AccountId(SUBJECT)).cloned();
        let got = t.rejected(switch(MarginMode::Cross));
        if refused {
            assert_eq!(got, Some(RejectReason::ModeSwitchUnderMargin.code()));
            assert_eq!(t.engine.account(AccountId(SUBJECT)).cloned(), before);
        } else {
            assert_eq!(got, None);
            let a = t.engine.account(AccountId(SUBJECT)).unwrap();
            // The wallet takes the margin back: 194.15 + 302.85 = 497.
            assert_eq!(a.wallets[0], Money::from_int(497));
            assert_eq!(leg(&t).mode, MarginMode::Cross);
        }
    }
}

/// Bybit isolated long 0.1 BTC at 60,000, leverage 20: IW = 300 + 2.85 = 302.85; MM on
/// the value at entry 6,000 × 0.4% + 2.85 = 26.85. Liquidated when
/// 302.85 + 0.1 × (M − 60,000) ≤ 26.85 ⟺ M ≤ 57,240 (Bybit's
/// `LP = E − (IM − MM) / size` = 60,000 − (302.85 − 26.85) / 0.1). Bankruptcy where
/// 302.85 + 0.1 × (M − 60,000) − 0.1 × M × 0.05% = 0 ⟺ M = 5,697.15 / 0.09995 = 57,000
/// = 60,000 × (1 − 1/20). The engine does not liquidate at 57,240.00000001 and does at
/// 57,240.
#[test]
fn bybit_isolated_report_prices_are_where_the_engine_liquidates() {
    let mut t = setup(bybit_config(), 10_000);
    assert_eq!(t.rejected(switch(MarginMode::Isolated)), None);
    open_long(&mut t);
    let r = t.engine.report(AccountId(SUBJECT)).unwrap();
    let pos = r
        .positions
        .iter()
        .find(|p| p.instrument == "BTCUSDT")
        .unwrap();
    assert_eq!(pos.isolated_margin, Money::parse("302.85").unwrap());
    assert_eq!(pos.maintenance_margin, Money::parse("26.85").unwrap());
    assert_eq!(pos.liquidation_price, Some(Price::from_int(57_240)));
    assert_eq!(pos.bankruptcy_price, Some(Price::from_int(57_000)));
    let liquidated = |events: &[Event]| {
        events
            .iter()
            .any(|e| matches!(e, Event::LiquidationTriggered { account, .. } if *account == AccountId(SUBJECT)))
    };
    let events = t.run(Command::SetMarkPrice {
        instrument: BTCUSDT,
        price: Price::parse("57240.00000001").unwrap(),
    });
    assert!(!liquidated(&events), "{events:?}");
    let events = t.run(mark(57_240));
    assert!(liquidated(&events), "{events:?}");
    assert!(leg(&t).is_flat(), "taken over");
}
