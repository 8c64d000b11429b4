//! Auto-deleveraging (MARGIN §7 step 4; issue 16, item 2) through the engine, worked by
//! hand. The ranking is Binance's published rule ("What Is Auto-Deleveraging (ADL) and
//! How Does It Work", https://www.binance.com/en/support/faq/360033525471):
//! `PnL% = uPnL / |entry value|`, `effective leverage = |mark value| / (mark value −
//! bankruptcy value)` = notional / the position's equity; profitable positions ranked by
//! `PnL% × effective leverage`, then losing ones by `PnL% / effective leverage`, higher
//! first; ties by account id. The quantile is `ceil(5 × j / n)` for the `j`-th of the `n`
//! positions on a side counted from the last to be deleveraged (Binance's 5 lights).
//!
//! Configuration: the testkit's, with BTCUSDT (instrument 0: tick 0.1, lot 0.001 BTC,
//! MM 0.4% below 50,000 USDT notional, liquidation fee 1.25%) and BTCUSD_PERP
//! (instrument 3: 100 USD contracts settled in BTC, lot 1 contract, tick 0.1) trading
//! without maker and taker fees, so that every wallet below is a sum worked by hand. The
//! insurance funds start empty.

use perpcore_engine::Engine;
use perpcore_testkit::fixtures::TestEngine;
use perpcore_testkit::gen::test_config;
use perpcore_types::*;

const USDT: AssetId = AssetId(0);
const BTC: AssetId = AssetId(2);
const BTCUSDT: InstrumentId = InstrumentId(0);
const BTCUSD_PERP: InstrumentId = InstrumentId(3);
const USDT_FUND: AccountId = AccountId(u64::MAX);
const BTC_FUND: AccountId = AccountId(u64::MAX - 2);

fn config() -> Config {
    let mut c = test_config();
    for i in [0, 3] {
        c.instruments[i].maker_fee = Rate::ZERO;
        c.instruments[i].taker_fee = Rate::ZERO;
    }
    c
}

fn usdt(s: &str) -> Money {
    Money::parse(s).unwrap()
}

fn mark(t: &mut TestEngine, i: InstrumentId, p: &str) -> Vec<Event> {
    t.run(Command::SetMarkPrice {
        instrument: i,
        price: Price::parse(p).unwrap(),
    })
}

/// A GTC limit order of `lots` at `ticks`; panics if refused.
fn limit(
    t: &mut TestEngine,
    account: u64,
    i: InstrumentId,
    id: u64,
    side: Side,
    ticks: i64,
    lots: i64,
) {
    let out = t.run(Command::PlaceOrder(NewOrder {
        account: AccountId(account),
        instrument: i,
        order_id: OrderId(id),
        side,
        order_type: OrderType::Limit,
        tif: TimeInForce::Gtc,
        price: PriceTicks(ticks),
        qty: QtyLots(lots),
        reduce_only: false,
        close_position: false,
        stp: StpMode::ExpireTaker,
    }));
    assert!(
        !out.iter().any(|e| matches!(e, Event::Rejected { .. })),
        "order {id} refused: {out:?}"
    );
}

fn leverage(t: &mut TestEngine, account: u64, i: InstrumentId, leverage: u32) {
    assert_eq!(
        t.rejected(Command::SetLeverage {
            account: AccountId(account),
            instrument: i,
            leverage,
        }),
        None
    );
}

fn wallet(e: &Engine, account: AccountId, asset: AssetId) -> Money {
    e.account(account).unwrap().wallets[asset.0 as usize]
}

fn lots(e: &Engine, account: u64, i: InstrumentId) -> i64 {
    e.account(AccountId(account))
        .unwrap()
        .leg(i, PositionSide::Both)
        .map(|l| l.qty.0)
        .unwrap_or(0)
}

fn quantile(e: &Engine, account: u64) -> Option<u8> {
    let r = e.report(AccountId(account)).unwrap();
    assert_eq!(r.positions.len(), 1);
    r.positions[0].adl_quantile
}

fn adl_events(out: &[Event]) -> Vec<Event> {
    out.iter()
        .filter(|e| matches!(e, Event::AutoDeleveraged { .. }))
        .cloned()
        .collect()
}

/// BTCUSDT, all cross, single-asset. Account 1 goes long 1 BTC against three shorts:
///
/// | account | wallet | position (entry) | leverage |
/// |---|---|---|---|
/// | 1 | 1,000 | long 1.0 (basis 2,610 + 4,160 + 3,000 = 9,770) | 50 |
/// | 2 | 2,000 | short 0.4 @ 10,400 (basis 4,160), and a resting sell | 20 |
/// | 3 | 500 | short 0.3 @ 10,000 (basis 3,000) | 20 |
/// | 4 | 1,000 | short 0.3 @ 8,700 (basis 2,610) | 20 |
/// | 5 | 1,000 | a bid of 0.2 @ 8,780 | 20 |
///
/// **Quantiles at mark 10,000** (shorts; equity = wallet + uPnL, notional 0.4 × 10,000
/// = 4,000 or 0.3 × 10,000 = 3,000):
/// - 2: uPnL 0.4 × (10,400 − 10,000) = 160, equity 2,160: 160/4,160 × 4,000/2,160 =
///   0.0712…, profitable;
/// - 3: uPnL 0, profitable with ranking 0;
/// - 4: uPnL 0.3 × (8,700 − 10,000) = −390, equity 610: −390/2,610 ÷ (3,000/610) =
///   −0.0303…, losing.
///
/// Queue 2, 3, 4: from the last, 4 is j = 1 of 3 → ceil(5/3) = 2, 3 → ceil(10/3) = 4,
/// 2 → 5. Account 1 is the only long: 5.
///
/// **The crash to 8,750**: account 1's equity 1,000 + 8,750 − 9,770 = −20 < MM 0.4% ×
/// 8,750 = 35: liquidated (no partial step in the first bracket). Bankruptcy price
/// (9,770 − 1,000) / 1 = 8,770; liquidation fee min(1.25% × 8,750, max(−20, 0)) = 0. The
/// empty fund takes the long over at 8,770 (account 1: 1,000 + 8,770 − 9,770 = 0) and
/// sells no lower than 8,770: 0.2 to account 5's bid at 8,780 (the fund realizes
/// 0.2 × 10 = 2). It cannot carry the 0.8 left: 2 + 0.8 × (8,750 − 8,770) = −14 < 0, so
/// the 0.8 is deleveraged at 8,770. Ranking at 8,750:
/// - 3: uPnL 0.3 × 1,250 = 375, equity 875, notional 2,625: 375/3,000 × 2,625/875 =
///   0.375;
/// - 2: uPnL 0.4 × 1,650 = 660, equity 2,660, notional 3,500: 660/4,160 × 3,500/2,660 =
///   0.208755…;
/// - 4: uPnL 0.3 × (8,700 − 8,750) = −15, losing: last.
///
/// So 3 closes all 0.3 (realized 0.3 × (10,000 − 8,770) = 369), 2 all 0.4 (0.4 × 1,630 =
/// 652; its resting sell is cancelled first), 4 closes 0.1 (0.1 × (8,700 − 8,770) = −7)
/// and keeps 0.2. The fund closes at its entry (realized 0) and keeps its 2.
#[test]
fn ranking_and_execution_worked_by_hand() {
    let mut t = TestEngine::new(config());
    for (a, w) in [
        (1, "1000"),
        (2, "2000"),
        (3, "500"),
        (4, "1000"),
        (5, "1000"),
    ] {
        t.create_funded(a, USDT, usdt(w));
    }
    leverage(&mut t, 1, BTCUSDT, 50);
    mark(&mut t, BTCUSDT, "9000");
    limit(&mut t, 4, BTCUSDT, 40, Side::Sell, 87_000, 300);
    limit(&mut t, 1, BTCUSDT, 10, Side::Buy, 87_000, 300);
    limit(&mut t, 5, BTCUSDT, 50, Side::Buy, 87_800, 200);
    mark(&mut t, BTCUSDT, "10000");
    limit(&mut t, 2, BTCUSDT, 20, Side::Sell, 104_000, 400);
    limit(&mut t, 1, BTCUSDT, 11, Side::Buy, 104_000, 400);
    limit(&mut t, 3, BTCUSDT, 30, Side::Sell, 100_000, 300);
    limit(&mut t, 1, BTCUSDT, 12, Side::Buy, 100_000, 300);
    limit(&mut t, 2, BTCUSDT, 21, Side::Sell, 105_000, 100);
    let e = &t.engine;
    assert_eq!(lots(e, 1, BTCUSDT), 1_000);
    assert_eq!(
        [2, 3, 4, 1].map(|a| quantile(e, a)),
        [Some(5), Some(4), Some(2), Some(5)]
    );

    let out = mark(&mut t, BTCUSDT, "8750");
    assert!(out.iter().any(|e| matches!(
        e,
        Event::LiquidationTriggered { account: AccountId(1), margin_balance, maintenance_margin, .. }
            if *margin_balance == usdt("-20") && *maintenance_margin == usdt("35")
    )));
    assert!(out.contains(&Event::PositionTakenOver {
        account: AccountId(1),
        instrument: BTCUSDT,
        qty: Qty::from_int(1),
        bankruptcy_price: Price::from_int(8_770),
        liquidation_fee: Money::ZERO,
    }));
    // The book first: the fund sells 0.2 to account 5 at 8,780.
    assert!(out.iter().any(|e| matches!(
        e,
        Event::Trade { price, qty, taker_account, maker_account: AccountId(5), taker_realized_pnl, .. }
            if *price == Price::from_int(8_780) && *qty == Qty::parse("0.2").unwrap()
                && *taker_account == USDT_FUND && *taker_realized_pnl == usdt("2")
    )));
    let bp = Price::from_int(8_770);
    let adl = |account: u64, qty: &str, pnl: &str| Event::AutoDeleveraged {
        account: AccountId(account),
        liquidated: AccountId(1),
        instrument: BTCUSDT,
        qty: Qty::parse(qty).unwrap(),
        price: bp,
        realized_pnl: usdt(pnl),
    };
    assert_eq!(
        adl_events(&out),
        vec![
            adl(3, "0.3", "369"),
            adl(2, "0.4", "652"),
            adl(4, "0.1", "-7")
        ]
    );
    // Account 2's resting sell is cancelled before its position is closed.
    let cancel = out
        .iter()
        .position(|e| {
            matches!(
                e,
                Event::OrderCanceled {
                    account: AccountId(2),
                    order_id: OrderId(21),
                    reason: CancelReason::AutoDeleveraged,
                    ..
                }
            )
        })
        .expect("account 2's order cancelled");
    let closed = out
        .iter()
        .position(|e| {
            matches!(
                e,
                Event::AutoDeleveraged {
                    account: AccountId(2),
                    ..
                }
            )
        })
        .unwrap();
    assert!(cancel < closed);

    let e = &t.engine;
    assert_eq!(lots(e, 1, BTCUSDT), 0);
    assert_eq!(lots(e, 2, BTCUSDT), 0);
    assert_eq!(lots(e, 3, BTCUSDT), 0);
    assert_eq!(lots(e, 4, BTCUSDT), -200);
    assert_eq!(lots(e, 5, BTCUSDT), 200);
    assert_eq!(wallet(e, AccountId(1), USDT), Money::ZERO);
    assert_eq!(wallet(e, AccountId(2), USDT), usdt("2652"));
    assert_eq!(wallet(e, AccountId(3), USDT), usdt("869"));
    assert_eq!(wallet(e, AccountId(4), USDT), usdt("993"));
    assert_eq!(wallet(e, USDT_FUND, USDT), usdt("2"));
    assert!(e
        .account(USDT_FUND)
        .unwrap()
        .legs
        .iter()
        .all(|l| l.is_flat()));
}

/// BTCUSD_PERP (coin-M: value of q contracts at P = q × 100 / P BTC), a cross and an
/// isolated counterparty. Everything trades at 10,000:
///
/// | account | BTC wallet | position | mode |
/// |---|---|---|---|
/// | 1 | 0.2 | short 100 contracts (basis −1 BTC) | cross |
/// | 2 | 1 | long 60 (basis 0.6) | cross |
/// | 3 | 0.1 | long 40 (basis 0.4), isolated margin 0.4 / 10 = 0.04 | isolated, 10x |
///
/// At mark 10,000 both longs have uPnL 0, so ranking 0: the tie goes to the lower id,
/// 2 before 3, so 3 is j = 1 of 2 (quantile ceil(5/2) = 3) and 2 is 5.
///
/// The mark gaps to 12,800: account 1's margin balance 0.2 − 1 + 10,000/12,800 =
/// −0.01875 < MM 0.4% × 0.78125 = 0.003125. Bankruptcy price: 0.2 − 1 + 10,000/P = 0 →
/// P = 12,500. The empty BTC fund takes the short over at 12,500; no asks; short at
/// 12,500 it stands at −0.8 + 0.78125 = −0.01875 < 0, so the 100 contracts are
/// deleveraged at 12,500. Ranking at 12,800:
/// - 3: uPnL 0.4 − 4,000/12,800 = 0.0875, equity 0.04 + 0.0875 = 0.1275, notional
///   0.3125: 0.0875/0.4 × 0.3125/0.1275 = 0.53615…;
/// - 2: uPnL 0.6 − 0.46875 = 0.13125, equity 1.13125, notional 0.46875:
///   0.13125/0.6 × 0.46875/1.13125 = 0.09064….
///
/// So 3 sells its 40 first (realized 0.4 − 4,000/12,500 = 0.08; wallet 0.06 + its
/// isolated margin 0.04 + 0.08 = 0.18), then 2 its 60 (0.6 − 0.48 = 0.12; wallet 1.12).
/// Account 1 is closed at 12,500: realized −1 + 0.8 = −0.2, wallet 0. Fund: 0.
#[test]
fn coin_m_with_an_isolated_counterparty() {
    let mut t = TestEngine::new(config());
    for (a, w) in [(1, "0.2"), (2, "1"), (3, "0.1")] {
        t.create_funded(a, BTC, usdt(w));
    }
    assert_eq!(
        t.rejected(Command::SetMarginMode {
            account: AccountId(3),
            instrument: BTCUSD_PERP,
            mode: MarginMode::Isolated,
        }),
        None
    );
    leverage(&mut t, 3, BTCUSD_PERP, 10);
    mark(&mut t, BTCUSD_PERP, "10000");
    limit(&mut t, 1, BTCUSD_PERP, 10, Side::Sell, 100_000, 100);
    limit(&mut t, 2, BTCUSD_PERP, 20, Side::Buy, 100_000, 60);
    limit(&mut t, 3, BTCUSD_PERP, 30, Side::Buy, 100_000, 40);
    let e = &t.engine;
    assert_eq!(
        e.account(AccountId(3))
            .unwrap()
            .leg(BTCUSD_PERP, PositionSide::Both)
            .unwrap()
            .isolated_margin,
        usdt("0.04")
    );
    assert_eq!([2, 3].map(|a| quantile(e, a)), [Some(5), Some(3)]);

    let out = mark(&mut t, BTCUSD_PERP, "12800");
    let adl = |account: u64, qty: i64, pnl: &str| Event::AutoDeleveraged {
        account: AccountId(account),
        liquidated: AccountId(1),
        instrument: BTCUSD_PERP,
        qty: Qty::from_int(qty),
        price: Price::from_int(12_500),
        realized_pnl: usdt(pnl),
    };
    assert_eq!(
        adl_events(&out),
        vec![adl(3, -40, "0.08"), adl(2, -60, "0.12")]
    );
    let e = &t.engine;
    for a in [1, 2, 3] {
        assert_eq!(lots(e, a, BTCUSD_PERP), 0);
    }
    assert_eq!(wallet(e, AccountId(1), BTC), Money::ZERO);
    assert_eq!(wallet(e, AccountId(2), BTC), usdt("1.12"));
    assert_eq!(wallet(e, AccountId(3), BTC), usdt("0.18"));
    assert_eq!(wallet(e, BTC_FUND, BTC), Money::ZERO);
}

/// A fund that can carry a takeover, until funding leaves it negative. BTCUSDT: account
/// 1 (wallet 600, 20x) long 1 BTC at 10,000 from account 2 (wallet 1,000). At mark 9,420
/// its equity 600 − 580 = 20 < MM 0.4% × 9,420 = 37.68: the liquidation fee
/// min(1.25% × 9,420 = 117.75, 20) = 20 goes to the fund, the bankruptcy price is
/// (10,000 − 580) / 1 = 9,420 = the mark, so the fund (20 + uPnL 0 ≥ 0) takes the long
/// over; no bids: it keeps it. A funding rate of 0.3% settles at 8 h: the fund pays
/// 1 × 9,420 × 0.003 = 28.26 (account 2 receives it) and stands at −8.26 with uPnL 0 at
/// the mark, so its long is deleveraged at its own bankruptcy price 9,420 + 8.26 =
/// 9,428.26 against account 2's short: the fund realizes 8.26 (back to 0), account 2
/// 10,000 − 9,428.26 = 571.74, ending at 1,000 + 28.26 + 571.74 = 1,600.
#[test]
fn a_fund_left_negative_by_funding_is_deleveraged() {
    let mut t = TestEngine::new(config());
    t.create_funded(1, USDT, usdt("600"));
    t.create_funded(2, USDT, usdt("1000"));
    mark(&mut t, BTCUSDT, "10000");
    limit(&mut t, 2, BTCUSDT, 20, Side::Sell, 100_000, 1_000);
    limit(&mut t, 1, BTCUSDT, 10, Side::Buy, 100_000, 1_000);
    let out = mark(&mut t, BTCUSDT, "9420");
    assert!(out.contains(&Event::PositionTakenOver {
        account: AccountId(1),
        instrument: BTCUSDT,
        qty: Qty::from_int(1),
        bankruptcy_price: Price::from_int(9_420),
        liquidation_fee: usdt("20"),
    }));
    assert!(adl_events(&out).is_empty());
    assert_eq!(wallet(&t.engine, USDT_FUND, USDT), usdt("20"));

    let hour = 3_600_000_000_000;
    t.run(Command::SetFundingRate {
        instrument: BTCUSDT,
        rate: Rate::parse("0.003").unwrap(),
        next_funding_ns: 8 * hour,
    });
    let out = t.at(
        8 * hour,
        Command::SetIndexPrice {
            instrument: BTCUSDT,
            price: Price::from_int(9_420),
        },
    );
    assert!(out.contains(&Event::FundingPaid {
        account: USDT_FUND,
        instrument: BTCUSDT,
        rate: Rate::parse("0.003").unwrap(),
        amount: usdt("28.26"),
    }));
    assert_eq!(
        adl_events(&out),
        vec![Event::AutoDeleveraged {
            account: AccountId(2),
            liquidated: USDT_FUND,
            instrument: BTCUSDT,
            qty: Qty::from_int(1),
            price: Price::parse("9428.26").unwrap(),
            realized_pnl: usdt("571.74"),
        }]
    );
    let e = &t.engine;
    assert_eq!(wallet(e, USDT_FUND, USDT), Money::ZERO);
    assert_eq!(wallet(e, AccountId(2), USDT), usdt("1600"));
    assert_eq!(lots(e, 2, BTCUSDT), 0);
}
