//! The `perpcore scenario` subcommand: the events printed before an error, the exit code
//! (0 success, 1 failure) and the `error: FILE:LINE: message` format. The scenario format
//! itself is tested in `perpcore-scenario` (`crates/scenario/tests/scenario_errors.rs`,
//! where these two constants come from).

use std::process::Command;

const CONFIG: &str = r#"{"cmd":"config","inline":{"assets":[{"symbol":"USDT"},{"symbol":"BTC"}],"instruments":[{"symbol":"BTCUSDT","kind":"linear","base":"BTC","quote":"USDT","tick_size":"0.1","lot_size":"0.001","min_qty":"0.001","max_qty":"1000","max_leverage":125,"maker_fee":"0","taker_fee":"0","price_band":"0.05","liquidation_fee":"0","brackets":[{"floor":"0","cap":"10000000","max_leverage":125,"mmr":"0.004"}]}]}}"#;

const SETUP: &str = r#"{"cmd":"create_account","ts":1,"account":1}
{"cmd":"deposit","ts":2,"account":1,"asset":"USDT","amount":"1000"}
{"cmd":"mark","ts":3,"symbol":"BTCUSDT","price":"50000"}"#;

#[test]
fn binary_prints_output_then_the_error_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.jsonl");
    std::fs::write(
        &path,
        format!("{CONFIG}\n{SETUP}\n{{\"cmd\":\"expect\",\"account\":1,\"field\":\"assets.USDT.wallet\",\"equals\":\"1\"}}\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_perpcore"))
        .args(["scenario", "--check-invariants"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(
        stderr.starts_with(&format!("error: {}:5: expectation failed", path.display())),
        "{stderr}"
    );

    std::fs::write(&path, format!("{CONFIG}\n{SETUP}\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_perpcore"))
        .arg("scenario")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout
        .lines()
        .last()
        .unwrap()
        .starts_with("{\"final_hash\":\""));

    let out = Command::new(env!("CARGO_BIN_EXE_perpcore"))
        .args(["scenario", "/nonexistent/x.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("cannot read"));
}
