//! Campaign eligibility from a journal (issue: promotions audit). Volumes are worked by
//! hand in the comments.

use perpcore_campaign::{run_campaign, CampaignParams, ContractFamily, VolumeParams, SCALE};
use perpcore_node::{self as node, RunOptions};
use perpcore_testkit::gen::test_config;
use perpcore_types::*;

fn order(account: u64, id: u64, side: Side, tif: TimeInForce, lots: i64) -> Command {
    Command::PlaceOrder(NewOrder {
        account: AccountId(account),
        instrument: InstrumentId(0), // BTCUSDT: tick 0.1, lot 0.001
        order_id: OrderId(id),
        side,
        order_type: OrderType::Limit,
        tif,
        price: PriceTicks(600_000), // 60,000.0
        qty: QtyLots(lots),
        reduce_only: false,
        close_position: false,
        stp: StpMode::ExpireTaker,
    })
}

#[test]
fn volume_counts_main_accounts_in_cross_usdt_m_only() {
    let dir = tempfile::tempdir().unwrap();
    let a = |n| AccountId(n);
    let mut cmds = vec![
        Command::CreateAccount {
            account: a(1),
            parent: None,
        },
        Command::CreateAccount {
            account: a(2),
            parent: Some(a(1)),
        },
        Command::CreateAccount {
            account: a(3),
            parent: None,
        },
        Command::CreateAccount {
            account: a(4),
            parent: None,
        },
    ];
    for n in 1..=4 {
        cmds.push(Command::Deposit {
            account: a(n),
            asset: AssetId(0),
            amount: Money::from_int(100_000),
        });
    }
    cmds.push(Command::SetMarkPrice {
        instrument: InstrumentId(0),
        price: Price::from_int(60_000),
    });
    cmds.push(Command::SetMarginMode {
        account: a(3),
        instrument: InstrumentId(0),
        mode: MarginMode::Isolated,
    });
    // Trade 1: 3 (isolated) sells 0.020 BTC to 1 (cross) at 60,000: notional 1,200.
    cmds.push(order(3, 1, Side::Sell, TimeInForce::Gtc, 20));
    cmds.push(order(1, 2, Side::Buy, TimeInForce::Ioc, 20));
    // Trade 2: 4 (cross) sells 0.010 BTC to 2 (sub-account of 1) at 60,000: notional 600.
    cmds.push(order(4, 3, Side::Sell, TimeInForce::Gtc, 10));
    cmds.push(order(2, 4, Side::Buy, TimeInForce::Ioc, 10));
    let s = node::run(
        dir.path(),
        &test_config(),
        cmds,
        &RunOptions::default(),
        |_| {},
    )
    .unwrap();
    assert_eq!(s.trades, 2);

    let fills = node::campaign_fills(dir.path()).unwrap();
    assert_eq!(fills.len(), 4, "two sides of two trades");
    assert!(fills.iter().all(|f| f.contract == ContractFamily::UsdtM));
    let params = CampaignParams {
        volume: VolumeParams {
            start_ns: 0,
            end_ns: u64::MAX,
            share_threshold: 500 * SCALE,
            draw_threshold: 1_000 * SCALE,
        },
        // Digits of the hash: "1" … the draw number ends in 1: account 1 matches level 1.
        block_hash: "ab1".into(),
        winners: 3,
    };
    let r = run_campaign(&fills, &params).unwrap();
    // Account 1: 1,200 (cross, main). Account 3: isolated → 0 (not listed). Account 4:
    // 600 (cross, main). Account 2 is a sub-account: excluded, and its 600 does not
    // count for its parent.
    let vols: Vec<(u64, i128)> = r.accounts.iter().map(|v| (v.account, v.volume)).collect();
    assert_eq!(vols, vec![(1, 1_200 * SCALE), (4, 600 * SCALE)]);
    assert!(
        r.accounts[0].reached_draw && r.accounts[1].reached_share && !r.accounts[1].reached_draw
    );
    // Only account 1 reached the draw: it wins, at level 1 (…0000000001 vs draw "1").
    assert_eq!(r.winners.len(), 1);
    assert_eq!((r.winners[0].account, r.winners[0].level), (1, 1));
}
