//! The risk decisions (`perpcore_risk::decide`) against numbers worked by hand in each
//! test's comment, on the testkit configuration: BTCUSDT (instrument 0) with a tick of 0.1,
//! lots of 0.001 BTC, taker fee 0.05%, brackets 0–50,000 (125x, mmr 0.4%), 50,000–250,000
//! (100x, 0.5%), 250,000–1,000,000,000 (50x, 1%).

use perpcore_risk::*;
use perpcore_testkit::gen::test_config;
use perpcore_types::*;

const USDT: AssetId = AssetId(0);

fn m(s: &str) -> Money {
    Money::parse(s).unwrap()
}
fn p(n: i64) -> Price {
    Price::from_int(n)
}

/// An account holding `usdt` in its USDT wallet and nothing else.
fn funded(config: &Config, usdt: &str) -> Account {
    let mut a = Account::new(AccountId(1), None, config.assets.len());
    a.wallets[0] = m(usdt);
    a
}

fn view<'a>(
    account: &'a Account,
    config: &'a Config,
    marks: &'a [Option<Price>],
    usd: &'a [Option<IndexPrice>],
) -> AccountView<'a> {
    AccountView {
        account,
        config,
        marks,
        usd,
    }
}

/// A buy of 1 BTC (1,000 lots) limited at 50,000 with the mark at 50,500, leverage 10:
/// margined at max(limit, mark) = 50,500, so IM = 50,500 / 10 = 5,050 and the taker fee
/// estimate 50,500 × 0.0005 = 25.25: 5,075.25 needed. A wallet of exactly that is enough,
/// one raw unit (10^-12) less is not.
#[test]
fn reserve_a_linear_buy_at_the_higher_of_limit_and_mark() {
    let config = test_config();
    let spec = &config.instruments[0];
    let marks = vec![Some(p(50_500)), None, None, None];
    let terms = OrderTerms {
        side: Side::Buy,
        lots: QtyLots(1_000),
        increasing: 1_000,
        limit: p(50_000),
        exposure_before: Money::ZERO,
        leverage: 10,
    };
    let a = funded(&config, "5075.25");
    let r = view(&a, &config, &marks, &[]).reserve(spec, p(50_500), terms, Money::ZERO);
    assert_eq!(
        r,
        Ok(Reservation {
            margin_notional: m("50500"),
            reserved: m("5050"),
        })
    );
    let mut short = a.clone();
    short.wallets[0] = m("5075.25") - Money(1);
    let r = view(&short, &config, &marks, &[]).reserve(spec, p(50_500), terms, Money::ZERO);
    assert_eq!(r, Err(RejectReason::InsufficientMargin));
    // The reservation of an order being replaced counts as available: 1 raw unit is enough.
    let r = view(&short, &config, &marks, &[]).reserve(spec, p(50_500), terms, Money(1));
    assert!(r.is_ok(), "{r:?}");
}

/// A sell is margined at its own limit: 1 BTC sold at 51,000 with the mark at 50,500
/// reserves 51,000 / 10 = 5,100. Only the increasing part is margined: with 400 of the
/// 1,000 lots increasing, 0.4 × 51,000 = 20,400 and IM 2,040, but the fee estimate is on
/// the whole order (51,000 × 0.0005 = 25.5): 2,065.5 needed.
#[test]
fn reserve_a_sell_at_its_limit_and_only_the_increasing_part() {
    let config = test_config();
    let spec = &config.instruments[0];
    let marks = vec![Some(p(50_500)), None, None, None];
    let a = funded(&config, "2065.5");
    let v = view(&a, &config, &marks, &[]);
    let terms = OrderTerms {
        side: Side::Sell,
        lots: QtyLots(1_000),
        increasing: 400,
        limit: p(51_000),
        exposure_before: Money::ZERO,
        leverage: 10,
    };
    assert_eq!(
        v.reserve(spec, p(50_500), terms, Money::ZERO),
        Ok(Reservation {
            margin_notional: m("20400"),
            reserved: m("2040"),
        })
    );
    let poorer = funded(&config, "2065.49");
    let v = view(&poorer, &config, &marks, &[]);
    assert_eq!(
        v.reserve(spec, p(50_500), terms, Money::ZERO),
        Err(RejectReason::InsufficientMargin)
    );
}

/// The bracket of the exposure after the order must allow the leverage: 240,000 of
/// exposure plus 1 BTC at 50,500 is 290,500, in the third bracket (50x), so leverage 100
/// is refused and 50 is accepted, reserving the new 50,500 / 50 = 1,010.
#[test]
fn reserve_checks_the_bracket_of_the_exposure_after_the_order() {
    let config = test_config();
    let spec = &config.instruments[0];
    let marks = vec![Some(p(50_500)), None, None, None];
    let a = funded(&config, "100000");
    let v = view(&a, &config, &marks, &[]);
    let terms = |leverage| OrderTerms {
        side: Side::Buy,
        lots: QtyLots(1_000),
        increasing: 1_000,
        limit: p(50_500),
        exposure_before: m("240000"),
        leverage,
    };
    assert_eq!(
        v.reserve(spec, p(50_500), terms(100), Money::ZERO),
        Err(RejectReason::LeverageExceedsBracket)
    );
    assert_eq!(
        v.reserve(spec, p(50_500), terms(50), Money::ZERO),
        Ok(Reservation {
            margin_notional: m("50500"),
            reserved: m("1010"),
        })
    );
}

/// An isolated long: open 1 BTC at 50,000 at 10x paying a 25 fee: 5,000 moves into the
/// position's margin and 5,025 leaves the wallet. Close half at 51,000 paying 12.75:
/// realized 0.5 × 1,000 = 500 joins the margin (5,500), half of it (2,750) returns to the
/// wallet, the fee comes out of the margin: 2,737.25 stays. Each step conserves money:
/// −5,025 + 5,000 = −25 (the fee); 2,750 + (2,737.25 − 5,000) = 487.25 = 500 − 12.75.
/// Closing the rest at 49,000 paying 12.25: realized −500 leaves 2,237.25 of margin, all of
/// it released, less the fee: 2,237.25 − 12.25 = 2,225 returns to the wallet.
#[test]
fn settle_an_isolated_position_open_partial_close_close() {
    let config = test_config();
    let spec = &config.instruments[0];
    let mut leg = Leg::new(spec.id, spec.max_leverage);
    leg.mode = MarginMode::Isolated;
    leg.leverage = 10;
    let s = settle_fill(
        &mut leg,
        spec,
        Side::Buy,
        QtyLots(1_000),
        p(50_000),
        m("25"),
        false,
    );
    assert_eq!((s.realized_pnl, s.wallet_delta), (Money::ZERO, m("-5025")));
    assert_eq!(leg.isolated_margin, m("5000"));
    let s = settle_fill(
        &mut leg,
        spec,
        Side::Sell,
        QtyLots(500),
        p(51_000),
        m("12.75"),
        false,
    );
    assert_eq!((s.realized_pnl, s.wallet_delta), (m("500"), m("2750")));
    assert_eq!(leg.isolated_margin, m("2737.25"));
    let s = settle_fill(
        &mut leg,
        spec,
        Side::Sell,
        QtyLots(500),
        p(49_000),
        m("12.25"),
        false,
    );
    assert_eq!((s.realized_pnl, s.wallet_delta), (m("-500"), m("2225")));
    assert_eq!((leg.qty, leg.isolated_margin), (QtyLots(0), Money::ZERO));
}

/// A liquidation order's closing fill keeps the released margin with the position
/// (`hold_margin`): closing half of the 1 BTC isolated long at 51,000 with no fee moves
/// nothing to the wallet; the margin grows by the realized 500.
#[test]
fn settle_holds_the_margin_of_a_liquidation() {
    let config = test_config();
    let spec = &config.instruments[0];
    let mut leg = Leg::new(spec.id, spec.max_leverage);
    leg.mode = MarginMode::Isolated;
    leg.leverage = 10;
    settle_fill(
        &mut leg,
        spec,
        Side::Buy,
        QtyLots(1_000),
        p(50_000),
        Money::ZERO,
        false,
    );
    let s = settle_fill(
        &mut leg,
        spec,
        Side::Sell,
        QtyLots(500),
        p(51_000),
        Money::ZERO,
        true,
    );
    assert_eq!((s.realized_pnl, s.wallet_delta), (m("500"), Money::ZERO));
    assert_eq!(leg.isolated_margin, m("5500"));
}

/// A cross fill pays realized PnL less the fee straight to the wallet: a 2 BTC short at
/// 60,000 covered at 59,000 realizes 2 × 1,000 = 2,000; with a 29.5 fee the wallet gets
/// 1,970.5.
#[test]
fn settle_a_cross_fill_to_the_wallet() {
    let config = test_config();
    let spec = &config.instruments[0];
    let mut leg = Leg::new(spec.id, spec.max_leverage);
    settle_fill(
        &mut leg,
        spec,
        Side::Sell,
        QtyLots(2_000),
        p(60_000),
        Money::ZERO,
        false,
    );
    let s = settle_fill(
        &mut leg,
        spec,
        Side::Buy,
        QtyLots(2_000),
        p(59_000),
        m("29.5"),
        false,
    );
    assert_eq!((s.realized_pnl, s.wallet_delta), (m("2000"), m("1970.5")));
}

/// Partial liquidation (MARGIN §7 step 2): 5 BTC at a mark of 60,000 is 300,000 of
/// notional, in the third bracket; the bracket below ends at 250,000, i.e. 250,000 / 60 =
/// 4,166 lots of 0.001 BTC kept (rounded down), so 5,000 − 4,166 = 834 lots are closed.
/// 0.5 BTC (30,000) is in the first bracket: no partial step.
#[test]
fn partial_liquidation_steps_down_one_bracket() {
    let config = test_config();
    let spec = &config.instruments[0];
    let mut leg = Leg::new(spec.id, spec.max_leverage);
    leg.qty = QtyLots(5_000);
    assert_eq!(bracket_step_lots(&leg, spec, p(60_000)), Some(834));
    leg.qty = QtyLots(-5_000);
    assert_eq!(bracket_step_lots(&leg, spec, p(60_000)), Some(834));
    leg.qty = QtyLots(500);
    assert_eq!(bracket_step_lots(&leg, spec, p(60_000)), None);
}

/// A single-asset account with 1,000 USDT and nothing else may take out exactly 1,000;
/// one raw unit more is refused.
#[test]
fn withdraw_up_to_the_withdrawable_amount() {
    let config = test_config();
    let a = funded(&config, "1000");
    let marks = vec![None; 4];
    let v = view(&a, &config, &marks, &[]);
    assert!(v.can_withdraw(USDT, m("1000")));
    assert!(!v.can_withdraw(USDT, m("1000") + Money(1)));
}

/// A cross leg of `lots` (sign = side) opened at `price` on `instrument`.
fn open_cross(a: &mut Account, config: &Config, instrument: usize, lots: i64, price: i64) {
    let spec = &config.instruments[instrument];
    let side = if lots > 0 { Side::Buy } else { Side::Sell };
    let leg = a.leg_or_default(spec, PositionSide::Both);
    settle_fill(
        leg,
        spec,
        side,
        QtyLots(lots.abs()),
        p(price),
        Money::ZERO,
        false,
    );
}

/// MARGIN §7's order in a cross pool: the largest maintenance margin first. 0.5 BTC at a
/// mark of 60,000 and 10 ETH at 3,000 are both 30,000 of notional in the first bracket
/// (mmr 0.4%, no maintenance amount): MM 120 each, a tie, so BTCUSDT (the lower id) goes
/// first. With 11 ETH (33,000: MM 132) ETHUSDT goes first.
#[test]
fn liquidation_order_largest_maintenance_margin_then_lowest_id() {
    let config = test_config();
    let marks = vec![Some(p(60_000)), Some(p(3_000)), Some(p(60_000)), None];
    let mut a = funded(&config, "100000");
    open_cross(&mut a, &config, 0, 500, 60_000);
    open_cross(&mut a, &config, 1, 10_000, 3_000);
    let v = view(&a, &config, &marks, &[]);
    assert_eq!(
        v.largest_cross_position(USDT),
        Some((InstrumentId(0), PositionSide::Both))
    );
    let mut b = funded(&config, "100000");
    open_cross(&mut b, &config, 0, -500, 60_000);
    open_cross(&mut b, &config, 1, -11_000, 3_000);
    let v = view(&b, &config, &marks, &[]);
    assert_eq!(
        v.largest_cross_position(USDT),
        Some((InstrumentId(1), PositionSide::Both))
    );
    // Nothing settles in USDC.
    assert_eq!(v.largest_cross_position(AssetId(1)), None);
}

/// In a USD pool the maintenance margins compare in USD: 0.5 BTC on BTCUSDT and on
/// BTCUSDC (both MM 120 in their settlement asset), with USDT worth 0.999 USD and USDC
/// 1 USD: 119.88 against 120, so BTCUSDC goes first although its id is higher.
#[test]
fn liquidation_order_in_a_usd_pool_compares_in_usd() {
    let config = test_config();
    let marks = vec![Some(p(60_000)), None, Some(p(60_000)), None];
    let usd = vec![
        Some(IndexPrice::parse("0.999").unwrap()),
        Some(IndexPrice::ONE),
        Some(IndexPrice::from_int(60_000)),
        None,
        Some(IndexPrice::ONE),
    ];
    let mut a = funded(&config, "100000");
    a.asset_mode = AssetMode::Multi;
    open_cross(&mut a, &config, 0, 500, 60_000);
    open_cross(&mut a, &config, 2, 500, 60_000);
    let v = view(&a, &config, &marks, &usd);
    assert_eq!(
        v.largest_pooled_position(),
        Some((InstrumentId(2), PositionSide::Both))
    );
    // At equal USD prices the tie keeps the lower id.
    let par = vec![
        Some(IndexPrice::ONE),
        Some(IndexPrice::ONE),
        Some(IndexPrice::from_int(60_000)),
        None,
        None,
    ];
    let v = view(&a, &config, &marks, &par);
    assert_eq!(
        v.largest_pooled_position(),
        Some((InstrumentId(0), PositionSide::Both))
    );
}
