//! Hostile input: commands with arbitrary field values (extreme amounts, prices, sizes,
//! ids, leverage) never panic the engine, and every rejection leaves the state untouched.
//! Invariants are checked after every command.

use perpcore_engine::Engine;
use perpcore_types::*;
use proptest::prelude::*;

fn money() -> impl Strategy<Value = Money> {
    prop_oneof![
        any::<i128>().prop_map(Money),
        (-1_000_000i64..1_000_000).prop_map(Money::from_int),
        Just(MAX_AMOUNT),
        Just(Money(MAX_AMOUNT.0 + 1)),
    ]
}

fn account() -> impl Strategy<Value = AccountId> {
    prop_oneof![
        (0u64..5).prop_map(AccountId),
        any::<u64>().prop_map(AccountId)
    ]
}

fn small_or_any_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        -10i64..2_000_000,
        Just(i64::MAX),
        Just(i64::MIN)
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (account(), proptest::option::of(account()))
            .prop_map(|(account, parent)| Command::CreateAccount { account, parent }),
        (account(), any::<u16>(), money()).prop_map(|(account, a, amount)| Command::Deposit {
            account,
            asset: AssetId(a % 6),
            amount
        }),
        (account(), any::<u16>(), money()).prop_map(|(account, a, amount)| Command::Withdraw {
            account,
            asset: AssetId(a % 6),
            amount
        }),
        (account(), account(), money()).prop_map(|(from, to, amount)| Command::Transfer {
            from,
            to,
            asset: AssetId(0),
            amount
        }),
        (account(), any::<u32>(), any::<u32>()).prop_map(|(account, i, leverage)| {
            Command::SetLeverage {
                account,
                instrument: InstrumentId(i % 4),
                leverage,
            }
        }),
        (account(), any::<u32>(), any::<bool>()).prop_map(|(account, i, iso)| {
            Command::SetMarginMode {
                account,
                instrument: InstrumentId(i % 4),
                mode: if iso {
                    MarginMode::Isolated
                } else {
                    MarginMode::Cross
                },
            }
        }),
        (account(), any::<u32>(), money()).prop_map(|(account, i, delta)| {
            Command::AdjustIsolatedMargin {
                account,
                instrument: InstrumentId(i % 4),
                delta,
            }
        }),
        (
            account(),
            any::<u32>(),
            any::<u64>(),
            any::<bool>(),
            small_or_any_i64(),
            small_or_any_i64(),
            0u8..4,
            any::<(bool, bool, bool)>()
        )
            .prop_map(|(account, i, id, buy, price, qty, tif, (market, ro, cp))| {
                Command::PlaceOrder(NewOrder {
                    account,
                    instrument: InstrumentId(i % 4),
                    order_id: OrderId(id % 64 + if id % 97 == 0 { u64::MAX - 70 } else { 0 }),
                    side: if buy { Side::Buy } else { Side::Sell },
                    order_type: if market {
                        OrderType::Market
                    } else {
                        OrderType::Limit
                    },
                    tif: [
                        TimeInForce::Gtc,
                        TimeInForce::Ioc,
                        TimeInForce::Fok,
                        TimeInForce::PostOnly,
                    ][tif as usize],
                    price: PriceTicks(price),
                    qty: QtyLots(qty),
                    reduce_only: ro,
                    close_position: cp,
                    stp: StpMode::ExpireTaker,
                })
            }),
        (account(), any::<u64>()).prop_map(|(account, id)| Command::CancelOrder {
            account,
            order_id: OrderId(id % 64)
        }),
        (account(), proptest::option::of(any::<u32>())).prop_map(|(account, i)| {
            Command::CancelAll {
                account,
                instrument: i.map(|i| InstrumentId(i % 4)),
            }
        }),
        (
            account(),
            any::<u64>(),
            proptest::option::of(small_or_any_i64()),
            proptest::option::of(small_or_any_i64())
        )
            .prop_map(|(account, id, p, q)| Command::AmendOrder {
                account,
                order_id: OrderId(id % 64),
                price: p.map(PriceTicks),
                qty: q.map(QtyLots),
            }),
        (any::<u32>(), small_or_any_i64()).prop_map(|(i, p)| Command::SetMarkPrice {
            instrument: InstrumentId(i % 4),
            price: Price(p)
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]
    #[test]
    fn arbitrary_commands_never_panic_or_half_apply(cmds in proptest::collection::vec(command(), 1..60)) {
        let mut e = Engine::new(perpcore_testkit::gen::test_config());
        let mut out = Vec::new();
        // A sane base so that hostile values reach the deep paths too.
        let setup = [
            Command::CreateAccount { account: AccountId(1), parent: None },
            Command::CreateAccount { account: AccountId(2), parent: Some(AccountId(1)) },
            Command::CreateAccount { account: AccountId(3), parent: None },
            Command::Deposit { account: AccountId(1), asset: AssetId(0), amount: Money::from_int(1_000_000) },
            Command::Deposit { account: AccountId(3), asset: AssetId(0), amount: Money::from_int(1_000_000) },
            Command::SetMarkPrice { instrument: InstrumentId(0), price: Price::from_int(60_000) },
            Command::SetMarkPrice { instrument: InstrumentId(1), price: Price::from_int(3_000) },
        ];
        for (n, cmd) in setup.iter().cloned().chain(cmds).enumerate() {
            let seq = n as u64 + 1;
            let before = e.content_hash();
            out.clear();
            e.apply(&Envelope { seq, ts_ns: seq, command: cmd.clone() }, &mut out);
            if let Err(m) = e.check_invariants() {
                panic!("{cmd:?}: {m}");
            }
            if matches!(out.first(), Some(Event::Rejected { .. })) {
                prop_assert_eq!(out.len(), 1);
                prop_assert_eq!(e.content_hash(), before);
            }
        }
    }
}

/// Issue 13, "Engine panic, two commands": an account with a deposit, a mark of one raw
/// unit (0.00000001) on the coin-M inverse instrument, then a market buy of one lot
/// panicked (`inverse value at non-positive price`): `band`'s low end was clamped to one
/// tick but its high end (floor of 0.00000001 + 5% in ticks of 0.1) was 0, and the market
/// order's limit was priced there. A mark below one tick is now refused with its own
/// code, so no band can end below one tick.
#[test]
fn engine_panic_sub_tick_mark_on_coin_m_then_market_buy() {
    let mut e = Engine::new(perpcore_testkit::gen::test_config());
    let coin_m = InstrumentId(3);
    let cmds = [
        Command::CreateAccount {
            account: AccountId(1),
            parent: None,
        },
        Command::Deposit {
            account: AccountId(1),
            asset: AssetId(2),
            amount: Money::from_int(10),
        },
        Command::SetMarkPrice {
            instrument: coin_m,
            price: Price(1),
        },
        Command::SetIndexPrice {
            instrument: coin_m,
            price: Price(1),
        },
        Command::PlaceOrder(NewOrder {
            account: AccountId(1),
            instrument: coin_m,
            order_id: OrderId(1),
            side: Side::Buy,
            order_type: OrderType::Market,
            tif: TimeInForce::Ioc,
            price: PriceTicks(0),
            qty: QtyLots(1),
            reduce_only: false,
            close_position: false,
            stp: StpMode::ExpireTaker,
        }),
    ];
    let mut rejected = Vec::new();
    for (n, command) in cmds.into_iter().enumerate() {
        let seq = n as u64 + 1;
        let mut out = Vec::new();
        e.apply(
            &Envelope {
                seq,
                ts_ns: seq,
                command,
            },
            &mut out,
        );
        e.check_invariants().expect("invariants");
        if let Some(Event::Rejected { reason, .. }) = out.first() {
            rejected.push((seq, *reason));
        }
    }
    assert_eq!(
        rejected,
        vec![
            (3, RejectReason::PriceBelowTick),
            (4, RejectReason::PriceBelowTick),
            (5, RejectReason::NoMarkPrice),
        ]
    );
    // One tick is a valid mark, and the same order then meets a band of at least one
    // tick on both ends (it is refused or fills, but does not panic).
    let mut out = Vec::new();
    e.apply(
        &Envelope {
            seq: 6,
            ts_ns: 6,
            command: Command::SetMarkPrice {
                instrument: coin_m,
                price: Price::parse("0.1").expect("price"),
            },
        },
        &mut out,
    );
    assert!(
        matches!(out.first(), Some(Event::MarkPriceSet { .. })),
        "{out:?}"
    );
}
