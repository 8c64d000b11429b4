//! Hedge mode (issue 16, item 3) on the testkit configuration's BTCUSDT (instrument 0:
//! tick 0.1, lots of 0.001 BTC, first bracket up to 50,000 at mmr 0.4% and cum 0), with
//! fees set to zero so that every number below is worked by hand.
//!
//! In hedge mode an account holds a LONG and a SHORT position per instrument. As on
//! Binance, an order's position follows from its side and reduce-only flag: a buy opens
//! LONG and a reduce-only sell closes it; a sell opens SHORT and a reduce-only buy closes
//! it.

use perpcore_testkit::fixtures::{limit_order, TestEngine};
use perpcore_testkit::gen::test_config;
use perpcore_types::*;

const BTCUSDT: InstrumentId = InstrumentId(0);
const USDT: AssetId = AssetId(0);
const HEDGER: u64 = 1;
const MAKER: u64 = 2;

fn p(s: &str) -> Price {
    Price::parse(s).unwrap()
}

fn engine() -> TestEngine {
    let mut c = test_config();
    c.instruments[0].maker_fee = Rate::ZERO;
    c.instruments[0].taker_fee = Rate::ZERO;
    let mut t = TestEngine::new(c);
    t.run(Command::SetMarkPrice {
        instrument: BTCUSDT,
        price: Price::from_int(60_000),
    });
    t.create_funded(HEDGER, USDT, Money::from_int(1_000));
    t.create_funded(MAKER, USDT, Money::from_int(10_000_000));
    // 100x: the pair below needs 300 + 120 of initial margin out of 1,000.
    let lev = Command::SetLeverage {
        account: AccountId(HEDGER),
        instrument: BTCUSDT,
        leverage: 100,
    };
    assert_eq!(t.rejected(lev), None);
    t
}

fn hedge(t: &mut TestEngine, account: u64) -> Option<u16> {
    t.rejected(Command::SetPositionMode {
        account: AccountId(account),
        mode: PositionMode::Hedge,
    })
}

/// `account` trades `lots` on `side` at 60,000 with the maker (who rests the other side
/// first); `reduce_only` as given.
fn trade(t: &mut TestEngine, id: u64, side: Side, lots: i64, reduce_only: bool) -> Vec<Event> {
    let maker = limit_order(
        MAKER,
        1_000 + id,
        BTCUSDT,
        side.opposite(),
        PriceTicks(600_000),
        lots,
    );
    assert_eq!(t.rejected(maker), None);
    let mut taker = limit_order(HEDGER, id, BTCUSDT, side, PriceTicks(600_000), lots);
    if let Command::PlaceOrder(o) = &mut taker {
        o.reduce_only = reduce_only;
    }
    t.run(taker)
}

fn leg(t: &TestEngine, side: PositionSide) -> i64 {
    t.engine
        .account(AccountId(HEDGER))
        .and_then(|a| a.leg(BTCUSDT, side))
        .map_or(0, |l| l.qty.0)
}

/// Switching is refused with an open order (2019, Binance -4067) or a position (2020,
/// -4068), accepted when flat; each refusal changes nothing.
#[test]
fn position_mode_switch_needs_no_orders_and_no_position() {
    let mut t = engine();
    let rest = limit_order(HEDGER, 1, BTCUSDT, Side::Buy, PriceTicks(590_000), 1);
    assert_eq!(t.rejected(rest), None);
    let before = t.engine.content_hash();
    assert_eq!(
        hedge(&mut t, HEDGER),
        Some(RejectReason::PositionModeWithOpenOrders.code())
    );
    assert_eq!(t.engine.content_hash(), before);
    t.run(Command::CancelOrder {
        account: AccountId(HEDGER),
        order_id: OrderId(1),
    });
    trade(&mut t, 2, Side::Buy, 1, false);
    assert_eq!(
        hedge(&mut t, HEDGER),
        Some(RejectReason::PositionModeWithPosition.code())
    );
    trade(&mut t, 3, Side::Sell, 1, false);
    assert_eq!(hedge(&mut t, HEDGER), None);
}

/// Hedge legs: buy 0.5 (LONG +0.5), sell 0.2 (SHORT −0.2, the long untouched), a
/// reduce-only sell of 0.1 closes part of the LONG (+0.4), a reduce-only buy of 0.3 is
/// cut to the SHORT's 0.2 and closes it. A reduce-only buy with no SHORT left is refused
/// (3003). Both positions are reported, each with its side.
#[test]
fn orders_work_on_the_leg_their_side_and_flag_name() {
    let mut t = engine();
    assert_eq!(hedge(&mut t, HEDGER), None);
    trade(&mut t, 1, Side::Buy, 500, false);
    trade(&mut t, 2, Side::Sell, 200, false);
    assert_eq!(
        (leg(&t, PositionSide::Long), leg(&t, PositionSide::Short)),
        (500, -200)
    );
    let r = t.engine.report(AccountId(HEDGER)).unwrap();
    let sides: Vec<(PositionSide, Qty)> = r
        .positions
        .iter()
        .map(|p| (p.position_side, p.size))
        .collect();
    assert_eq!(
        sides,
        vec![
            (PositionSide::Long, Qty::parse("0.5").unwrap()),
            (PositionSide::Short, Qty::parse("-0.2").unwrap())
        ]
    );
    trade(&mut t, 3, Side::Sell, 100, true);
    assert_eq!(leg(&t, PositionSide::Long), 400);
    trade(&mut t, 4, Side::Buy, 300, true);
    assert_eq!(
        (leg(&t, PositionSide::Long), leg(&t, PositionSide::Short)),
        (400, 0)
    );
    let ro = limit_order(HEDGER, 5, BTCUSDT, Side::Buy, PriceTicks(600_000), 1);
    let ro = match ro {
        Command::PlaceOrder(mut o) => {
            o.reduce_only = true;
            Command::PlaceOrder(o)
        }
        c => c,
    };
    assert_eq!(
        t.rejected(ro),
        Some(RejectReason::ReduceOnlyNoPosition.code())
    );
    // Isolated margin moves name the leg: `Both` is refused in hedge mode (2021).
    assert_eq!(
        t.rejected(Command::AdjustIsolatedMargin {
            account: AccountId(HEDGER),
            instrument: BTCUSDT,
            delta: Money::from_int(1),
            position_side: PositionSide::Both,
        }),
        Some(RejectReason::PositionSideMismatch.code())
    );
}

/// The cross liquidation price of a hedged pair, worked with Binance's cross formula
/// (its LONG and SHORT terms; https://www.binance.com/en/support/faq/b3c689c1f50a44cabb3a84e663b81d93):
/// wallet 1,000, LONG 0.5 at 60,000, SHORT 0.2 at 60,000, both in the first bracket
/// (mmr 0.4%, cum 0):
///
/// `LP = (WB + cum_L + cum_S − q_L·E_L + q_S·E_S) / (q_L·mmr + q_S·mmr − q_L + q_S)
///     = (1,000 − 30,000 + 12,000) / (0.002 + 0.0008 − 0.5 + 0.2)
///     = −17,000 / −0.2972 = 57,200.538358008…`
///
/// (check: at it, equity 1,000 + 0.3 × (LP − 60,000) = 160.16 = MM 0.0028 × LP). The
/// report gives the first raw price at which the engine's own check liquidates, within
/// one raw unit of it; a mark there liquidates, two units above does not.
#[test]
fn hedged_pair_liquidation_price_uses_both_legs() {
    let mut t = engine();
    assert_eq!(hedge(&mut t, HEDGER), None);
    trade(&mut t, 1, Side::Buy, 500, false);
    trade(&mut t, 2, Side::Sell, 200, false);
    let r = t.engine.report(AccountId(HEDGER)).unwrap();
    let lp = r.positions[0]
        .liquidation_price
        .expect("a liquidation price");
    assert_eq!(r.positions[1].liquidation_price, Some(lp));
    let hand = p("57200.53835800");
    assert!(
        (lp.raw() - hand.raw()).abs() <= 1,
        "reported {lp}, worked {hand}"
    );
    let healthy = t.engine.content_hash();
    let above = t.run(Command::SetMarkPrice {
        instrument: BTCUSDT,
        price: Price(lp.raw() + 2),
    });
    assert!(!above
        .iter()
        .any(|e| matches!(e, Event::LiquidationTriggered { .. })));
    assert_ne!(healthy, t.engine.content_hash());
    let at = t.run(Command::SetMarkPrice {
        instrument: BTCUSDT,
        price: lp,
    });
    assert!(at.iter().any(|e| matches!(
        e,
        Event::LiquidationTriggered {
            account: AccountId(HEDGER),
            ..
        }
    )));
}
