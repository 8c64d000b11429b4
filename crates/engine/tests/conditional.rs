//! Conditional orders (issue 16, item 1) on the testkit configuration's BTCUSDT
//! (instrument 0: tick 0.1, lots of 0.001 BTC, band 5%). Each trigger rule is worked in
//! the test's comment.

use perpcore_testkit::fixtures::{limit_order, TestEngine};
use perpcore_testkit::gen::test_config;
use perpcore_types::*;

const BTCUSDT: InstrumentId = InstrumentId(0);

fn p(s: &str) -> Price {
    Price::parse(s).unwrap()
}
fn ticks(s: &str) -> PriceTicks {
    PriceTicks(p(s).raw() / p("0.1").raw())
}

fn mark(price: &str) -> Command {
    Command::SetMarkPrice {
        instrument: BTCUSDT,
        price: p(price),
    }
}

fn limit(account: u64, id: u64, side: Side, price: &str, lots: i64) -> Command {
    limit_order(account, id, BTCUSDT, side, ticks(price), lots)
}

fn conditional(
    account: u64,
    id: u64,
    side: Side,
    kind: ConditionalKind,
    trigger: &str,
) -> ConditionalOrder {
    ConditionalOrder {
        account: AccountId(account),
        instrument: BTCUSDT,
        order_id: OrderId(id),
        side,
        kind,
        trigger: p(trigger),
        callback_rate: Rate::ZERO,
        working: WorkingPrice::Mark,
        price: PriceTicks(0),
        tif: TimeInForce::Gtc,
        qty: QtyLots(1_000),
        reduce_only: false,
        close_position: false,
        stp: StpMode::ExpireTaker,
    }
}

fn place(t: &mut TestEngine, o: ConditionalOrder) -> Option<u16> {
    t.rejected(Command::PlaceConditional(o))
}

/// Accounts 1 (long 1 BTC at 60,000) and 2 (short 1 BTC), 3 a market maker; mark 60,000.
fn setup() -> TestEngine {
    let mut t = TestEngine::new(test_config());
    t.run(mark("60000"));
    for a in 1..=3 {
        t.create_funded(a, AssetId(0), Money::from_int(1_000_000));
    }
    assert_eq!(t.rejected(limit(2, 1, Side::Sell, "60000", 1_000)), None);
    assert_eq!(t.rejected(limit(1, 2, Side::Buy, "60000", 1_000)), None);
    t
}

fn triggered(events: &[Event]) -> Vec<(u64, Price)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ConditionalTriggered {
                order_id, price, ..
            } => Some((order_id.0, *price)),
            _ => None,
        })
        .collect()
}

fn position(t: &TestEngine, account: u64) -> i64 {
    t.engine
        .account(AccountId(account))
        .and_then(|a| a.leg(BTCUSDT, PositionSide::Both))
        .map_or(0, |l| l.qty.0)
}

/// A sell stop-market closing the long (a stop-loss attached to the position) at
/// 59,000 on the mark: a sell stop fires when the price falls to its trigger. At 59,500
/// nothing fires; at 58,900 it fires, and its market order sells 1 BTC into the maker's
/// bid at 58,800 (inside the band 58,900 × 0.95 = 55,955). It reserved nothing while
/// waiting.
#[test]
fn stop_loss_closes_the_position_when_the_mark_falls_to_it() {
    let mut t = setup();
    let mut sl = conditional(1, 10, Side::Sell, ConditionalKind::StopMarket, "59000");
    sl.close_position = true;
    assert_eq!(place(&mut t, sl), None);
    let r = t.engine.report(AccountId(1)).unwrap();
    assert_eq!(r.assets[0].order_margin, Money::ZERO);
    assert_eq!(t.rejected(limit(3, 20, Side::Buy, "58800", 2_000)), None);
    assert!(triggered(&t.run(mark("59500"))).is_empty());
    let events = t.run(mark("58900"));
    assert_eq!(triggered(&events), vec![(10, p("58900"))]);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Trade { price, taker_order: OrderId(10), .. } if *price == p("58800")
    )));
    assert_eq!(position(&t, 1), 0);
}

/// Firing order: sell stops at 59,000 (placed second), 59,500 (first) and 59,000
/// (third). The mark falls from 60,000 to 58,000, crossing all three: the trigger
/// nearest the old price fires first (59,500), then the two at 59,000 in placement
/// order. Account 2 is short, so each sell of 0.1 BTC adds to the short, filling
/// against the maker's bid at 57,500 (inside the band 58,000 × 0.95 = 55,100).
#[test]
fn crossed_triggers_fire_in_trigger_price_then_placement_order() {
    let mut t = setup();
    assert_eq!(t.rejected(limit(3, 20, Side::Buy, "57500", 3_000)), None);
    for (id, trigger) in [(11, "59500"), (12, "59000"), (13, "59000")] {
        let mut o = conditional(2, id, Side::Sell, ConditionalKind::StopMarket, trigger);
        o.qty = QtyLots(100);
        assert_eq!(place(&mut t, o), None);
    }
    let fired = triggered(&t.run(mark("58000")));
    assert_eq!(
        fired.iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![11, 12, 13]
    );
    assert_eq!(position(&t, 2), -1_300);
}

/// A buy take-profit-limit on the last trade: a buy take-profit fires when the price
/// falls to its trigger (59,000), then rests a limit buy at 58,950. Trades at 59,500 do
/// not fire it; a trade at 59,000 does, and the order rests (no ask at or below 58,950).
#[test]
fn take_profit_limit_on_the_last_trade_rests_its_order() {
    let mut t = setup();
    let mut tp = conditional(2, 10, Side::Buy, ConditionalKind::TakeProfitLimit, "59000");
    tp.working = WorkingPrice::LastTrade;
    tp.price = ticks("58950");
    tp.reduce_only = true;
    assert_eq!(place(&mut t, tp), None);
    assert_eq!(t.rejected(limit(3, 20, Side::Sell, "59500", 1)), None);
    assert_eq!(t.rejected(limit(1, 21, Side::Buy, "59500", 1)), None);
    assert_eq!(t.engine.order(OrderId(10)), None);
    assert_eq!(t.rejected(limit(3, 22, Side::Sell, "59000", 1)), None);
    let events = t.run(limit(1, 23, Side::Buy, "59000", 1));
    assert_eq!(triggered(&events), vec![(10, p("59000"))]);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::OrderRested {
            order_id: OrderId(10),
            ..
        }
    )));
    assert!(t.engine.order(OrderId(10)).is_some());
}

/// A sell trailing stop with a 1% callback and activation at 61,000:
/// - mark 60,500: not active (below the activation price);
/// - 61,500: active, highest 61,500, trigger 61,500 × 0.99 = 60,885;
/// - 62,000: highest 62,000, trigger 61,380;
/// - 61,400: above 61,380, waits;
/// - 61,380: reaches it and fires.
#[test]
fn trailing_stop_follows_the_price_then_fires() {
    let mut t = setup();
    let mut ts = conditional(1, 10, Side::Sell, ConditionalKind::TrailingStop, "61000");
    ts.callback_rate = Rate::parse("0.01").unwrap();
    ts.reduce_only = true;
    assert_eq!(place(&mut t, ts), None);
    assert_eq!(t.rejected(limit(3, 20, Side::Buy, "60000", 1_000)), None);
    for m in ["60500", "61500", "62000", "61400"] {
        assert!(triggered(&t.run(mark(m))).is_empty(), "fired at {m}");
    }
    let events = t.run(mark("61380"));
    assert_eq!(triggered(&events), vec![(10, p("61380"))]);
    // Its market sell closed the long into the maker's bid at 60,000 (inside the band
    // 61,380 × 0.95 = 58,311).
    assert_eq!(position(&t, 1), 0);
}

/// Placement refusals: a sell stop at 61,000 with the mark at 60,000 is already past its
/// trigger (a sell stop fires at or below it) — 1035, as Binance's -2021; a callback of
/// 0.05% or 11%, or 0.15% (not a 0.1% step) — 1036; a last-trade order before any trade — 1037. Each changes
/// nothing.
#[test]
fn refused_placements_change_nothing() {
    let mut t = TestEngine::new(test_config());
    t.run(mark("60000"));
    t.create_funded(1, AssetId(0), Money::from_int(1_000_000));
    let before = t.engine.content_hash();
    let stop = conditional(1, 10, Side::Sell, ConditionalKind::StopMarket, "61000");
    assert_eq!(
        place(&mut t, stop),
        Some(RejectReason::WouldTriggerImmediately.code())
    );
    for cb in ["0.0005", "0.11", "0.0015"] {
        let mut ts = conditional(1, 11, Side::Sell, ConditionalKind::TrailingStop, "0");
        ts.callback_rate = Rate::parse(cb).unwrap();
        assert_eq!(
            place(&mut t, ts),
            Some(RejectReason::CallbackRateOutOfRange.code())
        );
    }
    let mut last = conditional(1, 12, Side::Sell, ConditionalKind::StopMarket, "59000");
    last.working = WorkingPrice::LastTrade;
    assert_eq!(
        place(&mut t, last),
        Some(RejectReason::NoLastTradePrice.code())
    );
    assert_eq!(t.engine.content_hash(), before);
}

/// Waiting orders count against the open-order limit (2 here), and cancel, cancel-all
/// and amend reach them; a triggered reduce-only order without a position is refused at
/// the trigger with an event, and the conditional is gone.
#[test]
fn waiting_orders_are_counted_cancelled_amended_and_refused_at_the_trigger() {
    let mut c = test_config();
    c.instruments[0].max_open_orders = 2;
    let mut t = TestEngine::new(c);
    t.run(mark("60000"));
    t.create_funded(1, AssetId(0), Money::from_int(1_000_000));
    let stop = |id, trigger| conditional(1, id, Side::Sell, ConditionalKind::StopMarket, trigger);
    assert_eq!(place(&mut t, stop(10, "59000")), None);
    assert_eq!(place(&mut t, stop(11, "58000")), None);
    assert_eq!(
        place(&mut t, stop(12, "57000")),
        Some(RejectReason::TooManyOpenOrders.code())
    );
    assert_eq!(
        t.rejected(limit(1, 13, Side::Buy, "59000", 1)),
        Some(RejectReason::TooManyOpenOrders.code())
    );
    let amended = t.run(Command::AmendOrder {
        account: AccountId(1),
        order_id: OrderId(11),
        price: None,
        qty: Some(QtyLots(500)),
    });
    assert!(matches!(
        amended[..],
        [Event::OrderAmended { order_id: OrderId(11), open_qty, .. }] if open_qty == Qty::parse("0.5").unwrap()
    ));
    let canceled = t.run(Command::CancelOrder {
        account: AccountId(1),
        order_id: OrderId(10),
    });
    assert!(matches!(
        canceled[..],
        [Event::OrderCanceled {
            order_id: OrderId(10),
            reason: CancelReason::User,
            ..
        }]
    ));
    let mut ro = stop(14, "59500");
    ro.reduce_only = true;
    assert_eq!(place(&mut t, ro), None);
    let events = t.run(mark("59400"));
    assert_eq!(triggered(&events), vec![(14, p("59400"))]);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::ConditionalRejected {
            order_id: OrderId(14),
            reason: RejectReason::ReduceOnlyNoPosition,
            ..
        }
    )));
    let all = t.run(Command::CancelAll {
        account: AccountId(1),
        instrument: None,
    });
    assert!(matches!(
        all[..],
        [Event::OrderCanceled {
            order_id: OrderId(11),
            ..
        }]
    ));
    assert_eq!(t.engine.conditionals().count(), 0);
}

/// Waiting orders are state: a snapshot restores them (same hash, same indexes), and
/// the restored engine fires them as the original does.
#[test]
fn waiting_orders_survive_snapshot_and_restore() {
    let mut t = setup();
    assert_eq!(t.rejected(limit(3, 20, Side::Buy, "58800", 2_000)), None);
    let mut sl = conditional(1, 10, Side::Sell, ConditionalKind::StopMarket, "59000");
    sl.close_position = true;
    assert_eq!(place(&mut t, sl), None);
    let restored = perpcore_engine::Engine::restore(&t.engine.snapshot()).expect("restore");
    assert_eq!(restored.state_hash(), t.engine.state_hash());
    let mut a = t.engine;
    let mut b = restored;
    let env = Envelope {
        seq: a.last_seq() + 1,
        ts_ns: a.last_ts_ns() + 1,
        command: mark("58900"),
    };
    let (mut ea, mut eb) = (Vec::new(), Vec::new());
    a.apply(&env, &mut ea);
    b.apply(&env, &mut eb);
    assert_eq!(ea, eb);
    assert_eq!(triggered(&ea), vec![(10, p("58900"))]);
    assert_eq!(a.state_hash(), b.state_hash());
}

/// The liquidation's first step cancels the liquidated account's waiting conditional
/// orders with its resting ones. Account 4 (cross, 100x) buys 1 BTC at 60,000 with 700
/// USDT: MM at 59,500 is 59,500 × 0.4% = 238 and its margin balance 700 − 500 = 200 (fees
/// aside, below it either way): liquidated, and its take-profit at 61,000 is cancelled
/// with reason `Liquidation`.
#[test]
fn liquidation_cancels_waiting_orders() {
    let mut t = setup();
    t.create_funded(4, AssetId(0), Money::from_int(700));
    assert_eq!(
        t.rejected(Command::SetLeverage {
            account: AccountId(4),
            instrument: BTCUSDT,
            leverage: 100,
        }),
        None
    );
    assert_eq!(t.rejected(limit(3, 20, Side::Sell, "60000", 1_000)), None);
    assert_eq!(t.rejected(limit(4, 21, Side::Buy, "60000", 1_000)), None);
    let tp = conditional(
        4,
        22,
        Side::Sell,
        ConditionalKind::TakeProfitMarket,
        "61000",
    );
    assert_eq!(place(&mut t, tp), None);
    let events = t.run(mark("59500"));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::LiquidationTriggered {
            account: AccountId(4),
            ..
        }
    )));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::OrderCanceled {
            order_id: OrderId(22),
            reason: CancelReason::Liquidation,
            ..
        }
    )));
    assert_eq!(t.engine.conditionals().count(), 0);
}
