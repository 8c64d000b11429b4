//! The report fields analysts ask for (issue 15, item 6) and the order-cost preview, on
//! the testkit configuration: BTCUSDT brackets 0–50,000 (125x, mmr 0.4%, cum 0),
//! 50,000–250,000 (100x, 0.5%, cum 50), tick 0.1, lots of 0.001 BTC, taker fee 0.05%.

use perpcore_testkit::fixtures::TestEngine;
use perpcore_testkit::gen::test_config;
use perpcore_types::*;

fn m(s: &str) -> Money {
    Money::parse(s).unwrap()
}
fn p(s: &str) -> Price {
    Price::parse(s).unwrap()
}

fn order(account: u64, id: u64, side: Side, lots: i64) -> NewOrder {
    NewOrder {
        account: AccountId(account),
        instrument: InstrumentId(0),
        order_id: OrderId(id),
        side,
        order_type: OrderType::Limit,
        tif: TimeInForce::Gtc,
        price: PriceTicks(600_000),
        qty: QtyLots(lots),
        reduce_only: false,
        close_position: false,
        stp: StpMode::ExpireTaker,
    }
}

/// An isolated 1 BTC long at 60,000 and 10x: margin 6,000; notional 60,000 is in the
/// second bracket (mmr 0.5%, cum 50, 100x): MM = 300 − 50 = 250; margin ratio
/// 250 / 6,000 = 0.041666… → 0.0416666667 (rounded up at 10^-10).
/// Liquidation: 6,000 + (P − 60,000) = 0.005·P − 50 ⇒ 0.995·P = 53,950 ⇒ P =
/// 54,221.105527638…: reported 54,221.10552763 (the last raw price that liquidates),
/// shown on the tick 54,221.2 (a long's rounded up). Bankruptcy: 6,000 + (P − 60,000) = 0
/// ⇒ 54,000, on the tick as it is.
#[test]
fn report_shows_bracket_isolated_ratio_and_tick_prices() {
    let mut t = TestEngine::new(test_config());
    t.run(Command::SetMarkPrice {
        instrument: InstrumentId(0),
        price: Price::from_int(60_000),
    });
    t.create_funded(1, AssetId(0), m("100000"));
    t.create_funded(2, AssetId(0), m("100000"));
    for c in [
        Command::SetMarginMode {
            account: AccountId(1),
            instrument: InstrumentId(0),
            mode: MarginMode::Isolated,
        },
        Command::SetLeverage {
            account: AccountId(1),
            instrument: InstrumentId(0),
            leverage: 10,
        },
        Command::PlaceOrder(order(2, 1, Side::Sell, 1_000)),
        Command::PlaceOrder(order(1, 2, Side::Buy, 1_000)),
    ] {
        assert_eq!(t.rejected(c), None);
    }
    let r = t.engine.report(AccountId(1)).unwrap();
    let pos = &r.positions[0];
    assert_eq!(pos.isolated_margin, m("6000"));
    assert_eq!(pos.maintenance_margin, m("250"));
    assert_eq!(
        (pos.bracket_mmr, pos.bracket_cum, pos.bracket_max_leverage),
        (
            Some(Rate::parse("0.005").unwrap()),
            Some(m("50")),
            Some(100)
        )
    );
    assert_eq!(
        pos.isolated_margin_ratio,
        Some(Rate::parse("0.0416666667").unwrap())
    );
    assert_eq!(pos.liquidation_price, Some(p("54221.10552763")));
    assert_eq!(pos.liquidation_price_tick, Some(p("54221.2")));
    assert_eq!(pos.bankruptcy_price, Some(p("54000")));
    assert_eq!(pos.bankruptcy_price_tick, Some(p("54000")));
    // The cross short of account 2 has no isolated ratio; a short's tick price rounds down.
    let r = t.engine.report(AccountId(2)).unwrap();
    let pos = &r.positions[0];
    assert_eq!(pos.isolated_margin_ratio, None);
    let (lp, lp_tick) = (
        pos.liquidation_price.unwrap(),
        pos.liquidation_price_tick.unwrap(),
    );
    assert!(
        lp_tick <= lp && lp.raw() - lp_tick.raw() < 10_000_000,
        "{lp} {lp_tick}"
    );
}

/// A 0.5 BTC buy limited at 60,000 with the mark at 60,000 and the default leverage 20:
/// margined on 30,000, initial margin 30,000 / 20 = 1,500. The preview changes nothing
/// (the state hash is the same) and refuses what placing would refuse.
#[test]
fn order_cost_preview_changes_nothing() {
    let mut t = TestEngine::new(test_config());
    t.run(Command::SetMarkPrice {
        instrument: InstrumentId(0),
        price: Price::from_int(60_000),
    });
    t.create_funded(1, AssetId(0), m("2000"));
    let before = t.engine.state_hash();
    let preview = t
        .engine
        .preview_order(&order(1, 7, Side::Buy, 500))
        .unwrap();
    assert_eq!(
        (
            preview.limit,
            preview.qty,
            preview.margin_notional,
            preview.initial_margin
        ),
        (
            p("60000"),
            Qty::parse("0.5").unwrap(),
            m("30000"),
            m("1500")
        )
    );
    assert_eq!(t.engine.state_hash(), before);
    // 1 BTC needs 3,000 + 30 of fee estimate: more than the 2,000 deposited.
    assert_eq!(
        t.engine.preview_order(&order(1, 8, Side::Buy, 1_000)),
        Err(RejectReason::InsufficientMargin)
    );
}
