//! The account report's liquidation price against the engine itself (issue 13, item 3):
//! positions opened through the book (linear BTCUSDT and coin-M BTCUSD_PERP of the test
//! configuration; long and short; 1 to 20,000 lots; leverage 1 to 100; isolated, single-
//! asset cross and the USD pool of multi-asset / unified accounts; fee to close on or off
//! on either instrument; the binance or the bybit convention, which reckons MM and the
//! fee to close on the value at entry and gives isolated positions their fee to close as
//! margin). Invariants checked:
//!
//! 1. a mark at the reported liquidation price makes the engine emit
//!    `LiquidationTriggered` for the account;
//! 2. a mark one raw unit on the safe side (above for a long, below for a short) does not.
//!
//! Each probe replays the same commands into a fresh engine, then sets the mark. Probes
//! outside the marks the engine accepts (below one tick, above `MAX_PRICE`) are skipped.
//!
//! Seeds: `perpcore_testkit::prop::config` (fixed in CI, failures persisted next to this
//! file; `PERPCORE_SOAK=N` runs N times the cases with a fresh printed seed).

use perpcore_engine::Engine;
use perpcore_testkit::gen::test_config;
use perpcore_types::*;
use proptest::prelude::*;

fn config(ci_cases: u32) -> ProptestConfig {
    perpcore_testkit::prop::config(ci_cases)
}

const USDT: AssetId = AssetId(0);
const BTC: AssetId = AssetId(2);
const SUBJECT: AccountId = AccountId(1);
const MAKER: AccountId = AccountId(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pool {
    Isolated,
    Cross,
    Usd,
}

#[derive(Clone, Debug)]
struct Case {
    inverse: bool,
    long: bool,
    lots: i64,
    /// Entry (and mark) in ticks of 0.1.
    entry_ticks: i64,
    leverage: u32,
    pool: Pool,
    fee_to_close: bool,
    /// The bybit convention (implies the fee to close).
    bybit: bool,
    /// Deposit as a multiple of the initial margin, in percent.
    deposit_pct: i64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        any::<bool>(),
        any::<bool>(),
        prop_oneof![1i64..10, 10i64..20_000],
        prop_oneof![10i64..1_000, 100_000i64..1_000_000],
        1u32..=100,
        prop_oneof![Just(Pool::Isolated), Just(Pool::Cross), Just(Pool::Usd)],
        any::<bool>(),
        105i64..400,
        any::<bool>(),
    )
        .prop_map(
            |(inverse, long, lots, entry_ticks, leverage, pool, ftc, deposit_pct, bybit)| Case {
                inverse,
                long,
                lots,
                entry_ticks,
                leverage,
                pool,
                fee_to_close: ftc || bybit,
                bybit,
                deposit_pct,
            },
        )
}

fn commands(c: &Case) -> Vec<Command> {
    let instrument = InstrumentId(if c.inverse { 3 } else { 0 });
    let entry = Price(c.entry_ticks * 10_000_000);
    let (settle, tick_price) = if c.inverse {
        (BTC, entry)
    } else {
        (USDT, entry)
    };
    // Initial margin of the position, in the settlement asset, rounded up generously.
    let im = if c.inverse {
        // lots × 100 USD / entry / L  BTC
        Money(
            i128::from(c.lots) * 100 * MONEY_SCALE * i128::from(PRICE_SCALE)
                / i128::from(entry.raw())
                / i128::from(c.leverage)
                + 1,
        )
    } else {
        // lots × 0.001 × entry / L  USDT
        Money(i128::from(c.lots) * i128::from(entry.raw()) * 10_000 / i128::from(c.leverage) + 1)
    };
    let deposit = Money(im.raw() * i128::from(c.deposit_pct) / 100 + MONEY_SCALE / 100);
    let side = if c.long { Side::Buy } else { Side::Sell };
    let order = |account, id, side, tif| {
        Command::PlaceOrder(NewOrder {
            account,
            instrument,
            order_id: OrderId(id),
            side,
            order_type: OrderType::Limit,
            tif,
            price: PriceTicks(c.entry_ticks),
            qty: QtyLots(c.lots),
            reduce_only: false,
            close_position: false,
            stp: StpMode::ExpireTaker,
        })
    };
    let mut v = vec![
        Command::SetMarkPrice {
            instrument,
            price: tick_price,
        },
        Command::SetAssetIndex {
            asset: BTC,
            quote: IndexQuote::Usdt,
            price: IndexPrice::from_price(entry),
        },
        Command::CreateAccount {
            account: SUBJECT,
            parent: None,
        },
        Command::CreateAccount {
            account: MAKER,
            parent: None,
        },
        Command::Deposit {
            account: MAKER,
            asset: USDT,
            amount: Money::from_int(1_000_000_000),
        },
        Command::Deposit {
            account: MAKER,
            asset: BTC,
            amount: Money::from_int(1_000_000),
        },
    ];
    if c.pool == Pool::Usd {
        v.push(Command::SetAssetMode {
            account: SUBJECT,
            mode: if c.inverse {
                AssetMode::Unified
            } else {
                AssetMode::Multi
            },
        });
    }
    v.push(Command::Deposit {
        account: SUBJECT,
        asset: settle,
        amount: deposit,
    });
    v.push(Command::SetLeverage {
        account: SUBJECT,
        instrument,
        leverage: c.leverage,
    });
    if c.pool == Pool::Isolated {
        v.push(Command::SetMarginMode {
            account: SUBJECT,
            instrument,
            mode: MarginMode::Isolated,
        });
    }
    v.push(order(MAKER, 1, side.opposite(), TimeInForce::Gtc));
    v.push(order(SUBJECT, 2, side, TimeInForce::Ioc));
    v
}

fn engine(c: &Case) -> Engine {
    let mut config = test_config();
    for i in [0, 3] {
        config.instruments[i].fee_to_close = c.fee_to_close;
        if c.bybit {
            config.instruments[i].convention = MarginConvention::Bybit;
        }
    }
    let mut e = Engine::new(config);
    let mut out = Vec::new();
    for (i, command) in commands(c).into_iter().enumerate() {
        let seq = u64::try_from(i).expect("few commands") + 1;
        e.apply(
            &Envelope {
                seq,
                ts_ns: seq,
                command,
            },
            &mut out,
        );
    }
    e
}

/// Whether a mark at `price` makes the engine start liquidating the subject.
fn liquidates(c: &Case, price: i64) -> bool {
    let mut e = engine(c);
    let mut out = Vec::new();
    let instrument = InstrumentId(if c.inverse { 3 } else { 0 });
    e.apply(
        &Envelope {
            seq: 1_000,
            ts_ns: 1_000,
            command: Command::SetMarkPrice {
                instrument,
                price: Price(price),
            },
        },
        &mut out,
    );
    assert!(
        !matches!(out.first(), Some(Event::Rejected { .. })),
        "mark {price} refused"
    );
    out.iter()
        .any(|e| matches!(e, Event::LiquidationTriggered { account, .. } if *account == SUBJECT))
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn report_liquidation_price_is_where_the_engine_liquidates(c in case()) {
        let e = engine(&c);
        let r = e.report(SUBJECT).unwrap();
        let symbol = if c.inverse { "BTCUSD_PERP" } else { "BTCUSDT" };
        let pos = r.positions.iter().find(|p| p.instrument == symbol);
        // The taker order may be refused (margin): nothing to check then.
        prop_assume!(pos.is_some_and(|p| !p.size.is_zero()));
        let pos = pos.unwrap();
        let Some(lp) = pos.liquidation_price else {
            return Ok(());
        };
        let lp = lp.raw();
        let tick = 10_000_000; // 0.1
        let safe = if c.long { lp + 1 } else { lp - 1 };
        if (tick..=MAX_PRICE.raw()).contains(&lp) {
            prop_assert!(liquidates(&c, lp), "no liquidation at the reported {lp}");
        }
        if (tick..=MAX_PRICE.raw()).contains(&safe) {
            prop_assert!(!liquidates(&c, safe), "liquidated at {safe}, past the reported {lp}");
        }
    }
}
