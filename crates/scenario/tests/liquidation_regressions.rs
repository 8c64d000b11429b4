//! Regression tests for two liquidation bugs found while writing the case and golden
//! scenarios (both fixed in the engine: isolated partial liquidation kept paying released
//! margin to the wallet; the fund's work-off order could open a new position).

use perpcore_scenario::{run_scenario, RunOptions};
use std::path::Path;

fn run(text: &str) {
    if let Err(e) = run_scenario(
        text,
        Path::new("."),
        RunOptions {
            check_invariants: true,
        },
    ) {
        panic!("{e}");
    }
}

/// Partial liquidation of an ISOLATED position must keep the margin with the position.
/// Before the fix the closed share of the margin went home on every closing fill, so a
/// liquidated position's margin escaped to the wallet and the insurance fund absorbed the
/// hole. Long 2 BTC at 50,000 isolated
/// (IW 5,000, wallet 950), mark 48,300 (bracket 2, partial step): the two partial fills
/// release 1,025 + 604.655 to the wallet, the rest is taken over at 48,915.77 (above the
/// mark) and the account ends with 2,579.655 instead of 950; the fund is down 637.32
/// on the takeover.
#[test]
fn isolated_partial_liquidation_keeps_margin_with_the_position() {
    run(
        r#"{"cmd":"config","inline":{"assets":[{"symbol":"USDT"},{"symbol":"BTC"}],"instruments":[{"symbol":"BTCUSDT","kind":"linear","base":"BTC","quote":"USDT","tick_size":"0.1","lot_size":"0.001","min_qty":"0.001","max_qty":"1000","max_leverage":50,"maker_fee":"0.0002","taker_fee":"0.0005","price_band":"0.05","liquidation_fee":"0.01","fee_to_close":false,"brackets":[{"floor":"0","cap":"50000","max_leverage":50,"mmr":"0.01","cum":"0"},{"floor":"50000","cap":"250000","max_leverage":20,"mmr":"0.025","cum":"750"},{"floor":"250000","cap":"1000000","max_leverage":10,"mmr":"0.05","cum":"7000"}]}]}}
{"cmd":"create_account","ts":1000,"account":1}
{"cmd":"create_account","ts":1000,"account":2}
{"cmd":"create_account","ts":1000,"account":3}
{"cmd":"deposit","ts":2000,"account":1,"asset":"USDT","amount":"6000"}
{"cmd":"deposit","ts":2000,"account":2,"asset":"USDT","amount":"100000"}
{"cmd":"deposit","ts":2000,"account":3,"asset":"USDT","amount":"100000"}
{"cmd":"margin_mode","ts":2500,"account":1,"symbol":"BTCUSDT","mode":"isolated"}
{"cmd":"mark","ts":3000,"symbol":"BTCUSDT","price":"50000"}
{"cmd":"order","ts":4000,"account":2,"symbol":"BTCUSDT","id":21,"side":"sell","price":"50000","qty":"2"}
{"cmd":"order","ts":4001,"account":1,"symbol":"BTCUSDT","id":11,"side":"buy","price":"50000","qty":"2"}
{"cmd":"expect","account":1,"field":"assets.USDT.wallet","equals":"950"}
{"cmd":"mark","ts":5000,"symbol":"BTCUSDT","price":"48400"}
{"cmd":"order","ts":5001,"account":3,"symbol":"BTCUSDT","id":31,"side":"buy","price":"48200","qty":"0.5"}
{"cmd":"order","ts":5002,"account":3,"symbol":"BTCUSDT","id":32,"side":"buy","price":"48100","qty":"1"}
{"cmd":"mark","ts":6000,"symbol":"BTCUSDT","price":"48300"}
{"cmd":"expect_event","event":"liquidation_triggered","count":1}
{"cmd":"comment","text":"Partial step: notional 2 × 48,300 = 96,600 is in bracket 2; keep floor(50,000 / 48.3) = 1,035 lots, sell 0.965: 0.5 @ 48,200 and 0.465 @ 48,100. Realized 0.5 × −1,800 + 0.465 × −1,900 = −1,783.5; liquidation fee 1% × (24,100 + 22,366.5) = 464.665. IW = 5,000 − 1,783.5 − 464.665 = 2,751.835, kept with the position."}
{"cmd":"expect","account":1,"field":"positions.BTCUSDT.size","equals":"1.035"}
{"cmd":"expect","account":1,"field":"positions.BTCUSDT.isolated_margin","equals":"2751.835"}
{"cmd":"comment","text":"Re-check: equity 2,751.835 + 1.035 × (48,300 − 50,000) = 992.335 ≥ MM 49,990.5 × 1% = 499.905: healthy, no takeover. The wallet is untouched."}
{"cmd":"expect","account":1,"field":"positions.BTCUSDT.maintenance_margin","equals":"499.905"}
{"cmd":"expect_event","event":"position_taken_over","count":0}
{"cmd":"expect","account":1,"field":"assets.USDT.wallet","equals":"950"}"#,
    );
}

/// After a takeover the fund works off only what it holds on that side. Before the fix it
/// sent an IOC for the whole taken-over size even when the takeover netted against a
/// position the fund already held. Here the fund holds
/// long 1 (from account 1's isolated long), takes over account 2's short 1 (now flat),
/// then BUYS 1 BTC from account 3's ask at 91,000: it opens a new long instead of doing
/// nothing. The `reduce_only` flag on the fund's Taker is not enforced.
#[test]
fn fund_work_off_order_never_opens_a_position() {
    run(
        r#"{"cmd":"config","inline":{"assets":[{"symbol":"USDT"},{"symbol":"BTC"}],"instruments":[{"symbol":"BTCUSDT","kind":"linear","base":"BTC","quote":"USDT","tick_size":"0.1","lot_size":"0.001","min_qty":"0.001","max_qty":"1000","max_leverage":125,"maker_fee":"0","taker_fee":"0","price_band":"0.05","liquidation_fee":"0","fee_to_close":false,"brackets":[{"floor":"0","cap":"1000000000","max_leverage":125,"mmr":"0.004","cum":"0"}]}]}}
{"cmd":"create_account","ts":1,"account":1}
{"cmd":"create_account","ts":1,"account":2}
{"cmd":"create_account","ts":1,"account":3}
{"cmd":"deposit","ts":2,"account":1,"asset":"USDT","amount":"10000"}
{"cmd":"deposit","ts":2,"account":2,"asset":"USDT","amount":"10000"}
{"cmd":"deposit","ts":2,"account":3,"asset":"USDT","amount":"1000000"}
{"cmd":"leverage","ts":3,"account":1,"symbol":"BTCUSDT","leverage":10}
{"cmd":"margin_mode","ts":3,"account":1,"symbol":"BTCUSDT","mode":"isolated"}
{"cmd":"leverage","ts":3,"account":2,"symbol":"BTCUSDT","leverage":10}
{"cmd":"margin_mode","ts":3,"account":2,"symbol":"BTCUSDT","mode":"isolated"}
{"cmd":"mark","ts":4,"symbol":"BTCUSDT","price":"84000"}
{"cmd":"order","ts":5,"account":2,"symbol":"BTCUSDT","id":21,"side":"sell","price":"84000","qty":"1"}
{"cmd":"order","ts":6,"account":1,"symbol":"BTCUSDT","id":11,"side":"buy","price":"84000","qty":"1"}
{"cmd":"mark","ts":8,"symbol":"BTCUSDT","price":"75903.61"}
{"cmd":"expect","account":18446744073709551615,"field":"positions.BTCUSDT.size","equals":"1"}
{"cmd":"mark","ts":9,"symbol":"BTCUSDT","price":"90000"}
{"cmd":"order","ts":10,"account":3,"symbol":"BTCUSDT","id":31,"side":"sell","price":"91000","qty":"1"}
{"cmd":"mark","ts":11,"symbol":"BTCUSDT","price":"92100"}
{"cmd":"expect_event","event":"position_taken_over","count":1}
{"cmd":"expect_event","event":"trade","count":0}
{"cmd":"expect","account":18446744073709551615,"field":"positions.BTCUSDT","absent":true}"#,
    );
}
