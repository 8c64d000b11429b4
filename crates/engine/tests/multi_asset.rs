//! Multi-asset mode and the unified account through the engine, beyond the published
//! cases (those are scenario files: replay-fixtures/cases/B*.jsonl, C*.jsonl, R*.jsonl).
//! Every number is worked in the comments.

use perpcore_testkit::fixtures::TestEngine;
use perpcore_testkit::gen::test_config;
use perpcore_types::*;

const USDT: AssetId = AssetId(0);
const BTC: AssetId = AssetId(2);
fn a(n: u64) -> AccountId {
    AccountId(n)
}
fn order(account: u64, id: u64, instrument: u32, side: Side, price: i64, qty: i64) -> Command {
    Command::PlaceOrder(NewOrder {
        account: a(account),
        instrument: InstrumentId(instrument),
        order_id: OrderId(id),
        side,
        order_type: OrderType::Limit,
        tif: TimeInForce::Gtc,
        price: PriceTicks(price),
        qty: QtyLots(qty),
        reduce_only: false,
        close_position: false,
        stp: StpMode::ExpireTaker,
    })
}

fn setup() -> TestEngine {
    let mut t = TestEngine::new(test_config());
    t.run(Command::SetMarkPrice {
        instrument: InstrumentId(0),
        price: Price::from_int(60_000),
    });
    t.run(Command::SetMarkPrice {
        instrument: InstrumentId(3),
        price: Price::from_int(60_000),
    });
    t.run(Command::SetAssetIndex {
        asset: BTC,
        quote: IndexQuote::Usdt,
        price: IndexPrice::from_int(60_000),
    });
    for n in 1..=2 {
        t.run(Command::CreateAccount {
            account: a(n),
            parent: None,
        });
    }
    t.run(Command::Deposit {
        account: a(2),
        asset: USDT,
        amount: Money::from_int(1_000_000),
    });
    t.run(Command::Deposit {
        account: a(2),
        asset: BTC,
        amount: Money::from_int(100),
    });
    t
}

/// MARGIN §1: with no USD index for USDT, `C = BTC/USD ÷ BTC/USDT`; USDT is worth C.
/// BTC/USD 59,940 and BTC/USDT 60,000: C = 0.999; 1,000 USDT count 999 USD.
#[test]
fn usd_price_through_conversion_rate() {
    let mut t = setup();
    t.run(Command::SetAssetMode {
        account: a(1),
        mode: AssetMode::Multi,
    });
    t.run(Command::Deposit {
        account: a(1),
        asset: USDT,
        amount: Money::from_int(1_000),
    });
    t.run(Command::SetAssetIndex {
        asset: BTC,
        quote: IndexQuote::Usd,
        price: IndexPrice::from_int(59_940),
    });
    let r = t.engine.report(a(1)).unwrap();
    let usdt = r.assets.iter().find(|x| x.asset == "USDT").unwrap();
    assert_eq!(usdt.usd_value, Some(Money::from_int(999)));
    assert_eq!(r.usd_pool.unwrap().adjusted_equity, Money::from_int(999));
}

/// Unrealized profit is never withdrawn. Multi-asset account with 1,000 USDT buys 1 BTC at
/// 60,000 as taker (fee 0.05% = 30: wallet 970; leverage 100), mark 61,000: uPnL +1,000,
/// IM 610. Without the profit the pool holds 970 against IM 610 → at most 360 USDT can
/// leave; 361 is refused although the pool with profit (1,970) would cover it.
#[test]
fn withdrawals_never_take_unrealized_profit() {
    let mut t = setup();
    t.run(Command::SetAssetMode {
        account: a(1),
        mode: AssetMode::Multi,
    });
    t.run(Command::Deposit {
        account: a(1),
        asset: USDT,
        amount: Money::from_int(1_000),
    });
    t.run(Command::SetLeverage {
        account: a(1),
        instrument: InstrumentId(0),
        leverage: 100,
    });
    t.run(order(2, 1, 0, Side::Sell, 600_000, 1_000));
    t.run(order(1, 2, 0, Side::Buy, 600_000, 1_000));
    t.run(Command::SetMarkPrice {
        instrument: InstrumentId(0),
        price: Price::from_int(61_000),
    });
    let w = |amount: i64| Command::Withdraw {
        account: a(1),
        asset: USDT,
        amount: Money::from_int(amount),
    };
    assert_eq!(
        t.rejected(w(361)),
        Some(RejectReason::WithdrawExceedsAvailable.code())
    );
    assert_eq!(t.rejected(w(360)), None);
}

/// Multi-asset mode pools USDT-M and USDC-M only: a coin-M order is refused (2016); the
/// unified account takes it into the USD pool, where the BTC wallet backs it.
#[test]
fn coin_m_needs_single_asset_or_unified() {
    let mut t = setup();
    t.run(Command::SetAssetMode {
        account: a(1),
        mode: AssetMode::Multi,
    });
    t.run(Command::Deposit {
        account: a(1),
        asset: BTC,
        amount: Money::from_int(1),
    });
    t.run(order(2, 1, 3, Side::Sell, 600_000, 100));
    assert_eq!(
        t.rejected(order(1, 2, 3, Side::Buy, 600_000, 100)),
        Some(RejectReason::CoinMInMultiAsset.code())
    );
    t.run(Command::SetAssetMode {
        account: a(1),
        mode: AssetMode::Unified,
    });
    assert_eq!(t.rejected(order(1, 3, 3, Side::Buy, 600_000, 100)), None);
    // 100 contracts of 100 USD at 60,000 = 0.166666666666 BTC of notional (rounded
    // down once per fill); at leverage 20 the IM is 0.008333333334 BTC (rounded up), i.e.
    // 500.00000004 USD at 60,000 (rounded up).
    let r = t.engine.report(a(1)).unwrap();
    assert_eq!(r.positions[0].size, Qty::from_int(100));
    assert_eq!(
        r.usd_pool.unwrap().initial_margin,
        Money::parse("500.00000004").unwrap()
    );
}

/// Issue 13 (checked narrowing casts): the USD prices derived from index prices were
/// computed in i128 and cast back with `as i64`. BTC/USD 10,000,000,000 (the price limit)
/// and BTC/USDT 0.000000000001 (one raw unit of the 10^-12 index grid) give
/// `C = 10^10 ÷ 10^-12 = 10^22` USD per USDT: it must not wrap. The index that would do it
/// is refused with its own code, and so is one that would derive a USD price of zero
/// (ETH/USDT 0.000000000001 × C = 0.999 rounds down to 0, which would value ETH at nothing
/// and divide auto-exchange by zero).
#[test]
fn usd_price_overflow_wraps_silently() {
    let mut t = setup();
    let index = |asset, quote, price| Command::SetAssetIndex {
        asset,
        quote,
        price,
    };
    // C = 10^10 ÷ 60,000 = 166,666.666666666666 (floored to 12 decimals): in range.
    assert_eq!(
        t.rejected(index(BTC, IndexQuote::Usd, MAX_INDEX_PRICE)),
        None
    );
    let usdt_usd = |t: &TestEngine| {
        let r = t.engine.report(a(2)).unwrap();
        let usdt = r.assets.iter().find(|x| x.asset == "USDT").unwrap().clone();
        usdt.usd_value
    };
    // Account 2 holds 1,000,000 USDT: worth 166,666.666666666666 × 10^6 USD.
    let before = usdt_usd(&t);
    assert_eq!(before, Some(Money::parse("166666666666.666666").unwrap()));
    assert_eq!(
        t.rejected(index(BTC, IndexQuote::Usdt, IndexPrice(1))),
        Some(RejectReason::UsdPriceOutOfRange.code())
    );
    assert_eq!(usdt_usd(&t), before, "nothing changed");

    // Zero: BTC/USD 59,940 makes C = 0.999; ETH/USDT of one raw unit × 0.999 floors to 0.
    assert_eq!(
        t.rejected(index(BTC, IndexQuote::Usd, IndexPrice::from_int(59_940))),
        None
    );
    assert_eq!(
        t.rejected(index(AssetId(3), IndexQuote::Usdt, IndexPrice(1))),
        Some(RejectReason::UsdPriceOutOfRange.code())
    );
    // Two raw units × 0.999 = 1.998 raw, floored to one raw unit: accepted.
    assert_eq!(
        t.rejected(index(AssetId(3), IndexQuote::Usdt, IndexPrice(2))),
        None
    );
}

/// Issue 15: asset index prices and the conversion rate `C` with 12 decimals (MARGIN §1).
/// Account 1 (multi-asset) holds 10,000 USDT and 10,000 USDC.
///
/// - USDC/USD = 1.000296667: 10,000 USDC are worth 10,002.96667 USD (ratio 1).
/// - BTC/USDT = 60,000 (setup) and BTC/USD = 60,017.80002: `C = 60,017.80002 / 60,000 =
///   1.000296667` exactly, so 10,000 USDT are worth 10,002.96667 USD too. The old
///   8-decimal floor gave C = 1.00029666 and 10,002.9666 USD.
/// - Adjusted equity 10,002.96667 + 10,002.96667 = 20,005.93334.
///
/// Then BTC/USD = 60,000.0001: `C = 1 + 0.0001 / 60,000 = 1.0000000016666…`, rounded
/// down to the 12-decimal grid: 1.000000001666; 10,000 USDT = 10,000.00001666 USD (the old
/// grid: 1.00000000, 10,000 USD).
#[test]
fn stablecoin_index_and_conversion_rate_keep_twelve_decimals() {
    let mut t = setup();
    t.run(Command::SetAssetMode {
        account: a(1),
        mode: AssetMode::Multi,
    });
    for asset in [USDT, AssetId(1)] {
        t.run(Command::Deposit {
            account: a(1),
            asset,
            amount: Money::from_int(10_000),
        });
    }
    let index = |asset, quote, price: &str| Command::SetAssetIndex {
        asset,
        quote,
        price: IndexPrice::parse(price).unwrap(),
    };
    assert_eq!(
        t.rejected(index(AssetId(1), IndexQuote::Usd, "1.000296667")),
        None
    );
    assert_eq!(t.rejected(index(BTC, IndexQuote::Usd, "60017.80002")), None);
    let usd_value = |t: &TestEngine, sym: &str| {
        let r = t.engine.report(a(1)).unwrap();
        r.assets.iter().find(|x| x.asset == sym).unwrap().usd_value
    };
    let m = |s: &str| Some(Money::parse(s).unwrap());
    assert_eq!(usd_value(&t, "USDC"), m("10002.96667"));
    assert_eq!(usd_value(&t, "USDT"), m("10002.96667"));
    assert_ne!(
        usd_value(&t, "USDT"),
        m("10002.9666"),
        "the 8-decimal floor"
    );
    let r = t.engine.report(a(1)).unwrap();
    assert_eq!(
        r.usd_pool.unwrap().adjusted_equity,
        Money::parse("20005.93334").unwrap()
    );

    assert_eq!(t.rejected(index(BTC, IndexQuote::Usd, "60000.0001")), None);
    assert_eq!(usd_value(&t, "USDT"), m("10000.00001666"));
}
