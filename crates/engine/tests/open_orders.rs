//! Issue 13, "one account stalls everyone": 400,000 resting orders of one account made
//! one `cancel_all` take 36.8 s. The open-order limit per account and instrument bounds
//! what any one cancel-all or liquidation has to do; what still counts against it and
//! what does not is pinned here.

use perpcore_testkit::fixtures::TestEngine;
use perpcore_testkit::gen::test_config;
use perpcore_types::*;

/// Resting orders of `account` on BTCUSDT.
fn open_orders(t: &TestEngine, account: u64) -> usize {
    t.engine
        .account(AccountId(account))
        .and_then(|a| a.leg(InstrumentId(0), PositionSide::Both))
        .map_or(0, |l| l.open_orders.len())
}

const BTCUSDT: InstrumentId = InstrumentId(0);

fn order(
    account: u64,
    id: u64,
    side: Side,
    kind: OrderType,
    tif: TimeInForce,
    ticks: i64,
) -> Command {
    Command::PlaceOrder(NewOrder {
        account: AccountId(account),
        instrument: BTCUSDT,
        order_id: OrderId(id),
        side,
        order_type: kind,
        tif,
        price: PriceTicks(ticks),
        qty: QtyLots(1),
        reduce_only: false,
        close_position: false,
        stp: StpMode::ExpireTaker,
    })
}

fn bid(account: u64, id: u64, ticks: i64) -> Command {
    order(
        account,
        id,
        Side::Buy,
        OrderType::Limit,
        TimeInForce::Gtc,
        ticks,
    )
}

/// Mark 60,000 on BTCUSDT (tick 0.1, so 600,000 ticks; band ±5%), accounts 1 and 2 with
/// 1,000,000 USDT each. A bid of one lot (0.001 BTC) at 59,000 reserves 59 / 20 = 2.95 USDT
/// at the default leverage: 200 of them need 590 USDT, far below the deposit.
fn setup(config: Config) -> TestEngine {
    let mut t = TestEngine::new(config);
    t.run(Command::SetMarkPrice {
        instrument: BTCUSDT,
        price: Price::from_int(60_000),
    });
    for n in 1..=2 {
        t.create_funded(n, AssetId(0), Money::from_int(1_000_000));
    }
    t
}

#[test]
fn one_account_stalls_everyone() {
    let mut t = setup(test_config());
    let limit = DEFAULT_MAX_OPEN_ORDERS as u64;
    assert_eq!(limit, 200, "Binance's limit");
    // 200 bids at 59,000.0 .. 59,019.9: all rest.
    for n in 0..limit {
        assert_eq!(t.rejected(bid(1, 1 + n, 590_000 + n as i64)), None);
    }
    assert_eq!(open_orders(&t, 1), 200);
    // The 201st resting order is refused with its own code, and nothing changes.
    let before = t.engine.account(AccountId(1)).cloned();
    assert_eq!(
        t.rejected(bid(1, 1_000, 589_000)),
        Some(RejectReason::TooManyOpenOrders.code())
    );
    assert_eq!(RejectReason::TooManyOpenOrders.code(), 1031);
    assert_eq!(open_orders(&t, 1), 200);
    assert_eq!(t.engine.account(AccountId(1)).cloned(), before);
    // So is a post-only one.
    assert_eq!(
        t.rejected(order(
            1,
            1_001,
            Side::Buy,
            OrderType::Limit,
            TimeInForce::PostOnly,
            589_000
        )),
        Some(RejectReason::TooManyOpenOrders.code())
    );
    // The limit is per account: account 2 still places.
    assert_eq!(t.rejected(bid(2, 5_000, 589_000)), None);
    // An amend replaces an order: allowed at the limit (a new price, 58,999.9).
    assert_eq!(
        t.rejected(Command::AmendOrder {
            account: AccountId(1),
            order_id: OrderId(1),
            price: Some(PriceTicks(589_999)),
            qty: None,
        }),
        None
    );
    // Orders that never rest are not refused: an IOC sell above the best bid (59,100)
    // finds nothing and is cancelled unfilled; a market sell meets the account's own
    // bids and self-trade prevention expires it. Neither changes the count.
    for c in [
        order(
            1,
            2_000,
            Side::Sell,
            OrderType::Limit,
            TimeInForce::Ioc,
            591_000,
        ),
        order(1, 2_001, Side::Sell, OrderType::Market, TimeInForce::Gtc, 0),
    ] {
        let events = t.run(c);
        assert!(
            !events.iter().any(|e| matches!(e, Event::Rejected { .. })),
            "{events:?}"
        );
        assert_eq!(open_orders(&t, 1), 200);
    }
    // Cancelling one frees one place.
    assert_eq!(
        t.rejected(Command::CancelOrder {
            account: AccountId(1),
            order_id: OrderId(200),
        }),
        None
    );
    assert_eq!(t.rejected(bid(1, 3_000, 589_000)), None);
    assert_eq!(open_orders(&t, 1), 200);
    // One cancel-all removes all 200, in id order, one event each.
    let events = t.run(Command::CancelAll {
        account: AccountId(1),
        instrument: None,
    });
    let canceled = events
        .iter()
        .filter(|e| matches!(e, Event::OrderCanceled { .. }))
        .count();
    assert_eq!(canceled, 200);
    assert_eq!(open_orders(&t, 1), 0);
}

#[test]
fn open_order_limit_is_configured_per_instrument() {
    let mut config = test_config();
    config.instruments[0].max_open_orders = 3;
    let mut t = setup(config);
    for n in 0..3 {
        assert_eq!(t.rejected(bid(1, 1 + n, 590_000)), None);
    }
    assert_eq!(
        t.rejected(bid(1, 10, 590_000)),
        Some(RejectReason::TooManyOpenOrders.code())
    );
    // Other instruments have their own count (ETHUSDT keeps the default).
    t.run(Command::SetMarkPrice {
        instrument: InstrumentId(1),
        price: Price::from_int(3_000),
    });
    let eth = Command::PlaceOrder(NewOrder {
        instrument: InstrumentId(1),
        price: PriceTicks(295_000),
        ..match bid(1, 11, 0) {
            Command::PlaceOrder(o) => o,
            _ => unreachable!(),
        }
    });
    assert_eq!(t.rejected(eth), None);
}
