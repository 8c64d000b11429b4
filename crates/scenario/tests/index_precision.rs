//! Issue 15: asset index prices with 12 decimals, and the USD value in auto-exchange
//! events, through the scenario format (the `asset_index` line's parser and the
//! `auto_exchanged` event's JSON). Every number is worked in the comments.

use perpcore_scenario::{run_scenario, RunOptions};
use std::path::Path;

/// USDT (ratio 1, auto-exchange above a 1,000 USDT loan, no interest), USDC (ratio 0.95),
/// BTC; BTCUSDT without fees.
const CONFIG: &str = r#"{"cmd":"config","inline":{"assets":[{"symbol":"USDT","collateral":{"unit":"usd","tiers":[{"floor":"0","ratio":"1"}],"auto_exchange_threshold":"1000"}},{"symbol":"USDC","collateral":{"unit":"usd","tiers":[{"floor":"0","ratio":"0.95"}]}},{"symbol":"BTC","collateral":{"unit":"usd","tiers":[{"floor":"0","ratio":"0.95"}]}}],"instruments":[{"symbol":"BTCUSDT","kind":"linear","base":"BTC","quote":"USDT","tick_size":"0.1","lot_size":"0.001","min_qty":"0.001","max_qty":"1000","max_leverage":125,"maker_fee":"0","taker_fee":"0","price_band":"0.05","liquidation_fee":"0","fee_to_close":false,"brackets":[{"floor":"0","cap":"100000000","max_leverage":125,"mmr":"0.004","cum":"0"}]}]}}"#;

/// The stablecoin index and the conversion rate, both with 9 decimals:
///
/// - USDC/USD = 1.000296667 (the issue's stablecoin example; a `Price` stops at 8
///   decimals and refused it as too precise);
/// - BTC/USDT = 60,000 and BTC/USD = 60,017.80002, so with no USDT/USD index
///   `C = 60,017.80002 / 60,000 = 1.000296667` exactly (`60,000 × 1.000296667 =
///   60,017.80002`). The old 8-decimal floor made it 1.00029666.
///
/// Account 1 (multi-asset) holds 10,000 USDC: worth 10,000 × 1.000296667 = 10,002.96667
/// USD, counted at 95%: 9,502.8183365 USD of collateral. It buys 1 BTC at 60,000 from
/// account 2 and sells it back at 58,500: realized −1,500 USDT, a USDT loan of 1,500
/// (worth −1,500 × C = −1,500.4450005 USD; with the old C, −1,500.44499).
/// Adjusted equity 9,502.8183365 − 1,500.4450005 = 8,002.373336.
///
/// At the next hour boundary the loan (1,500) is above its threshold (1,000) and is
/// auto-exchanged (MARGIN §8): the USD needed is 1,500 × C = 1,500.4450005 (up: exact);
/// less than the USDC's collateral value 9,502.8183365, so USDC sold = have × need /
/// collateral = 10,000 × 1,500.4450005 / 9,502.8183365 = 1,500 / 0.95 (the two USD prices
/// are equal) = 30,000 / 19 = 1,578.947368421052631… rounded up to 12 decimals:
/// 1,578.947368421053. Repaid: the whole loan, 1,500 USDT.
///
/// The event's USD values, each rounded down:
/// - sold_usd = 1,578.947368421053 × 1.000296667. With 30,000/19 × 1.000296667 =
///   30,008.90001 / 19 = 1,579.41579 exactly (19 × 1,579.41579 = 30,008.90001), the
///   extra 0.000000000000368… (30,000/19 rounded up) × 1.000296667 < 10^-12: 1,579.41579.
/// - repaid_usd = 1,500 × 1.000296667 = 1,500.4450005 (old C: 1,500.44499).
///
/// Their difference, 78.9707895 USD, is what USDC's 95% ratio cost the account.
/// Afterwards: USDT 0; USDC 10,000 − 1,578.947368421053 = 8,421.052631578947.
const SCENARIO: &str = r#"{"cmd":"asset_index","ts":1000,"asset":"BTC","quote":"usdt","price":"60000"}
{"cmd":"asset_index","ts":1000,"asset":"BTC","quote":"usd","price":"60017.80002"}
{"cmd":"asset_index","ts":1000,"asset":"USDC","quote":"usd","price":"1.000296667"}
{"cmd":"mark","ts":1000,"symbol":"BTCUSDT","price":"60000"}
{"cmd":"create_account","ts":1000,"account":1}
{"cmd":"create_account","ts":1000,"account":2}
{"cmd":"deposit","ts":1000,"account":2,"asset":"USDT","amount":"1000000"}
{"cmd":"asset_mode","ts":1000,"account":1,"mode":"multi"}
{"cmd":"deposit","ts":1000,"account":1,"asset":"USDC","amount":"10000"}
{"cmd":"expect","account":1,"field":"assets.USDC.usd_value","equals":"10002.96667"}
{"cmd":"expect","account":1,"field":"assets.USDC.collateral_value","equals":"9502.8183365"}
{"cmd":"leverage","ts":1000,"account":1,"symbol":"BTCUSDT","leverage":20}
{"cmd":"order","ts":1000,"account":2,"symbol":"BTCUSDT","id":1,"side":"sell","price":"60000","qty":"1"}
{"cmd":"order","ts":1000,"account":1,"symbol":"BTCUSDT","id":2,"side":"buy","price":"60000","qty":"1","tif":"ioc"}
{"cmd":"order","ts":1000,"account":2,"symbol":"BTCUSDT","id":3,"side":"buy","price":"58500","qty":"1"}
{"cmd":"order","ts":1000,"account":1,"symbol":"BTCUSDT","id":4,"side":"sell","price":"58500","qty":"1","tif":"ioc"}
{"cmd":"expect","account":1,"field":"assets.USDT.loan","equals":"1500"}
{"cmd":"expect","account":1,"field":"assets.USDT.usd_value","equals":"-1500.4450005"}
{"cmd":"expect","account":1,"field":"usd_pool.adjusted_equity","equals":"8002.373336"}
{"cmd":"mark","ts":3600000000000,"symbol":"BTCUSDT","price":"60000"}
{"cmd":"expect_event","event":"auto_exchanged","count":1}
{"cmd":"expect_event","event":"auto_exchanged","field":"sold_asset","equals":1}
{"cmd":"expect_event","event":"auto_exchanged","field":"sold","equals":"1578.947368421053"}
{"cmd":"expect_event","event":"auto_exchanged","field":"repaid","equals":"1500"}
{"cmd":"expect_event","event":"auto_exchanged","field":"sold_usd","equals":"1579.41579"}
{"cmd":"expect_event","event":"auto_exchanged","field":"repaid_usd","equals":"1500.4450005"}
{"cmd":"expect","account":1,"field":"assets.USDT.wallet","equals":"0"}
{"cmd":"expect","account":1,"field":"assets.USDC.wallet","equals":"8421.052631578947"}"#;

#[test]
fn stablecoin_index_and_auto_exchange_usd_values_are_exact() {
    let text = format!("{CONFIG}\n{SCENARIO}\n");
    let out = run_scenario(
        &text,
        Path::new("."),
        RunOptions {
            check_invariants: true,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The asset index events print the 9-decimal prices as given.
    assert!(
        out.events.iter().any(|l| l.contains(
            r#""event":"asset_index_set","asset":1,"quote":"usd","price":"1.000296667""#
        )),
        "{:#?}",
        out.events
    );
    // The auto-exchange line carries both USD values (the JSON form analysts read).
    assert!(
        out.events
            .iter()
            .any(|l| l.contains(r#""sold_usd":"1579.41579","repaid_usd":"1500.4450005""#)),
        "{:#?}",
        out.events
    );
}

/// A 13th decimal is refused with the line named, never rounded.
#[test]
fn asset_index_with_thirteen_decimals_is_refused() {
    let text = format!(
        "{CONFIG}\n{}\n",
        r#"{"cmd":"asset_index","ts":1,"asset":"USDC","quote":"usd","price":"1.0000000000001"}"#
    );
    let e = run_scenario(
        &text,
        Path::new("."),
        RunOptions {
            check_invariants: true,
        },
    )
    .expect_err("too precise");
    assert_eq!(e.line, 2);
    assert!(e.message.contains("more than 12 decimal places"), "{e}");
}
