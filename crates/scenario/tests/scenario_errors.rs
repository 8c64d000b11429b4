//! The scenario format's edges: output line shapes, and for each kind of bad input an
//! error (never a panic) naming the 1-based line. (The `perpcore scenario` binary's exit
//! code and `error: FILE:LINE: message` format: `crates/cli/tests/scenario_cmd.rs`.)

use perpcore_scenario::{run_scenario, RunOptions, ScenarioError};
use std::path::Path;

const CONFIG: &str = r#"{"cmd":"config","inline":{"assets":[{"symbol":"USDT"},{"symbol":"BTC"}],"instruments":[{"symbol":"BTCUSDT","kind":"linear","base":"BTC","quote":"USDT","tick_size":"0.1","lot_size":"0.001","min_qty":"0.001","max_qty":"1000","max_leverage":125,"maker_fee":"0","taker_fee":"0","price_band":"0.05","liquidation_fee":"0","brackets":[{"floor":"0","cap":"10000000","max_leverage":125,"mmr":"0.004"}]}]}}"#;

const SETUP: &str = r#"{"cmd":"create_account","ts":1,"account":1}
{"cmd":"deposit","ts":2,"account":1,"asset":"USDT","amount":"1000"}
{"cmd":"mark","ts":3,"symbol":"BTCUSDT","price":"50000"}"#;

fn run(body: &str) -> Result<perpcore_scenario::ScenarioOutput, ScenarioError> {
    let text = format!("{CONFIG}\n{SETUP}\n{body}\n");
    run_scenario(
        &text,
        Path::new("."),
        RunOptions {
            check_invariants: true,
        },
    )
}

/// The body starts at line 5 (config + 3 setup lines).
fn err_at(body: &str, line: usize, needle: &str) {
    let e = run(body).expect_err("should fail");
    assert_eq!(e.line, line, "wrong line for {body:?}: {e}");
    assert!(
        e.message.contains(needle),
        "message for {body:?} lacks {needle:?}: {}",
        e.message
    );
    assert!(e.to_string().starts_with(&format!("line {line}: ")));
}

#[test]
fn output_lines_have_their_documented_shape() {
    let out = run(r#"{"cmd":"report","account":1}
{"cmd":"hash"}"#)
    .unwrap();
    assert_eq!(
        out.lines[0],
        r#"{"seq":1,"ts":1,"event":{"event":"account_created","account":1,"parent":null}}"#
    );
    assert_eq!(out.events.len(), 3);
    assert!(out.lines[3].starts_with(
        r#"{"report":{"account":1,"parent":null,"asset_mode":"single","assets":[{"asset":"USDT","wallet":"1000""#
    ));
    assert_eq!(
        out.lines[4],
        format!(r#"{{"seq":3,"hash":"{}"}}"#, out.final_hash)
    );
    assert_eq!(
        out.lines.last().unwrap(),
        &format!(r#"{{"final_hash":"{}"}}"#, out.final_hash)
    );
    assert_eq!(out.commands, 3);
    assert_eq!(out.final_hash.len(), 64);
}

#[test]
fn rejections_are_events_not_errors() {
    let out = run(
        r#"{"cmd":"withdraw","ts":4,"account":1,"asset":"USDT","amount":"5000"}
{"cmd":"expect_event","event":"rejected","code":2004}
{"cmd":"expect_event","event":"rejected","field":"reason","equals":"withdraw_exceeds_available"}"#,
    )
    .unwrap();
    assert!(out.events[3].contains(r#""code":2004"#));
}

#[test]
fn malformed_lines_name_their_line() {
    err_at("{not json", 5, "not valid JSON");
    err_at("[1,2]", 5, "JSON object");
    err_at(r#"{"ts":4}"#, 5, "missing \"cmd\"");
    err_at(r#"{"cmd":"fly","ts":4}"#, 5, "unknown cmd \"fly\"");
    err_at(
        r#"{"cmd":"deposit","ts":4,"account":1,"asset":"USDT","amount":"1","memo":"x"}"#,
        5,
        "unknown field \"memo\"",
    );
    err_at(
        r#"{"cmd":"deposit","ts":4,"account":1,"asset":"USDT"}"#,
        5,
        "missing field \"amount\"",
    );
    err_at(
        r#"{"cmd":"deposit","ts":4,"account":1,"asset":"DOGE","amount":"1"}"#,
        5,
        "unknown asset \"DOGE\"",
    );
    err_at(
        r#"{"cmd":"deposit","ts":4,"account":-1,"asset":"USDT","amount":"1"}"#,
        5,
        "non-negative integer",
    );
    err_at(
        r#"{"cmd":"deposit","ts":4,"account":1,"asset":"USDT","amount":"12abc"}"#,
        5,
        "not a decimal number",
    );
    err_at(
        r#"{"cmd":"deposit","ts":4,"account":1,"asset":"USDT","amount":"0.0000000000001"}"#,
        5,
        "more than 12 decimal places",
    );
}

#[test]
fn floats_are_refused() {
    err_at(
        r#"{"cmd":"order","ts":4,"account":1,"symbol":"BTCUSDT","id":1,"side":"buy","price":50000.5,"qty":"1"}"#,
        5,
        "decimals are written as strings",
    );
    err_at(
        r#"{"cmd":"deposit","ts":4.5,"account":1,"asset":"USDT","amount":"1"}"#,
        5,
        "non-negative integer",
    );
}

#[test]
fn prices_and_sizes_must_be_on_the_grid() {
    err_at(
        r#"{"cmd":"order","ts":4,"account":1,"symbol":"BTCUSDT","id":1,"side":"buy","price":"50000.05","qty":"1"}"#,
        5,
        "not a multiple of BTCUSDT tick_size 0.1",
    );
    err_at(
        r#"{"cmd":"order","ts":4,"account":1,"symbol":"BTCUSDT","id":1,"side":"buy","price":"50000","qty":"0.0005"}"#,
        5,
        "not a multiple of BTCUSDT lot_size 0.001",
    );
    err_at(
        r#"{"cmd":"order","ts":4,"account":1,"symbol":"ETHUSDT","id":1,"side":"buy","price":"50000","qty":"1"}"#,
        5,
        "unknown symbol \"ETHUSDT\"",
    );
    err_at(
        r#"{"cmd":"order","ts":4,"account":1,"symbol":"BTCUSDT","id":1,"side":"buy","type":"market","price":"50000","qty":"1"}"#,
        5,
        "market order takes no \"price\"",
    );
    err_at(
        r#"{"cmd":"order","ts":4,"account":1,"symbol":"BTCUSDT","id":1,"side":"up","price":"50000","qty":"1"}"#,
        5,
        "\"up\" is not one of buy, sell",
    );
    err_at(
        r#"{"cmd":"amend","ts":4,"account":1,"symbol":"BTCUSDT","id":1}"#,
        5,
        "amend needs",
    );
}

#[test]
fn timestamps_must_not_decrease() {
    err_at(
        r#"{"cmd":"mark","ts":3,"symbol":"BTCUSDT","price":"50001"}
{"cmd":"mark","ts":2,"symbol":"BTCUSDT","price":"50002"}"#,
        6,
        "ts 2 is before the previous command's ts 3",
    );
    err_at(
        r#"{"cmd":"mark","symbol":"BTCUSDT","price":"50001"}"#,
        5,
        "missing field \"ts\"",
    );
}

#[test]
fn failed_expectations_name_the_line_and_both_values() {
    err_at(
        r#"{"cmd":"expect","account":1,"field":"assets.USDT.wallet","equals":"999"}"#,
        5,
        "expected \"999\", got \"1000\"",
    );
    err_at(
        r#"{"cmd":"expect","account":1,"field":"assets.USDC.wallet","equals":"0"}"#,
        5,
        "not found",
    );
    err_at(
        r#"{"cmd":"expect","account":9,"field":"assets.USDT.wallet","equals":"0"}"#,
        5,
        "account 9 does not exist",
    );
    err_at(
        r#"{"cmd":"expect_event","event":"rejected"}"#,
        5,
        "the last command emitted: mark_price_set",
    );
    err_at(
        r#"{"cmd":"expect_event","event":"mark_price_set","count":2}"#,
        5,
        "2 × \"mark_price_set\" event expected, found 1",
    );
    err_at(
        r#"{"cmd":"expect_event","event":"mark_price_set","field":"price","equals":"1"}"#,
        5,
        "expected \"1\", got \"50000\"",
    );
    err_at(
        r#"{"cmd":"report","account":2}"#,
        5,
        "account 2 does not exist",
    );
    err_at(
        r#"{"cmd":"expect","account":1,"field":"assets.USDT.wallet","equals":1000.5}"#,
        5,
        "float",
    );
}

#[test]
fn config_errors() {
    let e = run_scenario("", Path::new("."), RunOptions::default()).unwrap_err();
    assert_eq!(e.line, 1);
    assert!(e.message.contains("no config line"), "{e}");
    let e = run_scenario(
        "{\"cmd\":\"comment\",\"text\":\"hi\"}\n{\"cmd\":\"hash\"}",
        Path::new("."),
        RunOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("first line must be"), "{e}");
    let e = run_scenario(
        "{\"cmd\":\"config\",\"path\":\"does-not-exist.toml\"}",
        Path::new("."),
        RunOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.line, 1);
    assert!(e.message.contains("does-not-exist.toml"), "{e}");
    let e = run_scenario(
        "{\"cmd\":\"config\",\"default\":true,\"path\":\"x.toml\"}",
        Path::new("."),
        RunOptions::default(),
    )
    .unwrap_err();
    assert!(e.message.contains("exactly one"), "{e}");
    let e = run_scenario(
        "{\"cmd\":\"config\",\"inline\":{\"assets\":[{\"symbol\":\"USDT\"}],\"instruments\":[{\"symbol\":\"X\"}]}}",
        Path::new("."),
        RunOptions::default(),
    )
    .unwrap_err();
    assert!(e.message.starts_with("inline config:"), "{e}");
    err_at(
        r#"{"cmd":"config","default":true}"#,
        5,
        "only the first line",
    );
}

#[test]
fn config_from_a_file_relative_to_the_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = CONFIG
        .strip_prefix(r#"{"cmd":"config","inline":"#)
        .and_then(|c| c.strip_suffix('}'))
        .unwrap();
    std::fs::write(dir.path().join("c.json"), cfg).unwrap();
    let out = run_scenario(
        "{\"cmd\":\"config\",\"path\":\"c.json\"}\n{\"cmd\":\"create_account\",\"ts\":1,\"account\":1}",
        dir.path(),
        RunOptions::default(),
    )
    .unwrap();
    assert_eq!(out.commands, 1);
    let default = run_scenario(
        "{\"cmd\":\"config\",\"default\":true}\n{\"cmd\":\"mark\",\"ts\":1,\"symbol\":\"SOLUSDT\",\"price\":\"150\"}",
        dir.path(),
        RunOptions::default(),
    )
    .unwrap();
    assert_eq!(default.events.len(), 1);
}

#[test]
fn blank_lines_and_comments_are_ignored() {
    let out = run("\n   \n{\"cmd\":\"comment\",\"text\":\"x\"}\n").unwrap();
    assert_eq!(out.commands, 3);
}
