//! Issue 13, "Feed": `perpcore bench` on input it cannot use. Each case spawns the built
//! binary on files written here (nothing outside the repository is read); every expected
//! count is worked out in the comment beside it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn config() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .nth(2)
        .unwrap_or(here)
        .join("replay-fixtures/ticks/config.toml")
}

fn bench(dir: &Path, ticks: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_perpcore"))
        .arg("bench")
        .arg("--ticks")
        .arg(ticks)
        .arg("--config")
        .arg(config())
        .arg("--out")
        .arg(dir.join("out"))
        .args([
            "--accounts",
            "2",
            "--flow-rate",
            "10",
            "--quiet",
            "--no-journal",
        ])
        .args(extra)
        .output()
        .expect("run perpcore bench")
}

/// 4 KiB of fixed pseudo-random bytes (a 64-bit LCG, top byte of each step).
fn random_bytes() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..4096)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 56) as u8
        })
        .collect()
}

/// 2023-04-05 00:00:00.000 UTC in ms.
const BASE_MS: u64 = 1_680_652_800_000;

fn book_ticker(e_ms: u64, bid: &str, ask: &str) -> String {
    format!(
        r#"{} {{"stream":"btcusdt@bookTicker","data":{{"e":"bookTicker","u":1,"s":"BTCUSDT","b":"{bid}","B":"1","a":"{ask}","A":"1","T":{e_ms},"E":{e_ms}}}}}"#,
        e_ms * 1000
    )
}

fn depth(e_ms: u64, first: u64, last: u64) -> String {
    format!(
        r#"{} {{"stream":"btcusdt@depth@0ms","data":{{"e":"depthUpdate","E":{e_ms},"T":{e_ms},"s":"BTCUSDT","U":{first},"u":{last},"pu":{},"b":[["28000.00","1.000"]],"a":[]}}}}"#,
        e_ms * 1000,
        first - 1
    )
}

#[test]
fn bench_exits_zero_on_empty_random_or_foreign_input() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    };
    // (file, options, what stderr must say). Hand-counted:
    // - empty: 0 lines;
    // - a CSV: "time,price" and "1,2" have no "<integer> " prefix: bad_prefix 2;
    // - another exchange's messages, prefixed: 2 lines, valid JSON of no kind read here:
    //   unknown_event 2;
    // - the right format for a symbol the config lacks: 1 message, unknown_symbol 1.
    let cases: Vec<(PathBuf, Vec<&str>, Vec<String>)> = vec![
        (write("empty.dat", b""), vec![], vec!["0 lines".into()]),
        (
            write("random.bin", &random_bytes()),
            vec!["--stream"],
            vec!["problems:".into()],
        ),
        (
            write("foreign.csv", b"time,price\n1,2\n"),
            vec![],
            vec!["2 lines".into(), "bad_prefix 2".into()],
        ),
        (
            write(
                "other.jsonl",
                b"1 {\"topic\":\"orderbook.50.BTCUSDT\",\"ts\":1}\n2 {\"e\":\"kline\",\"E\":1}\n",
            ),
            vec!["--stream"],
            vec!["unknown_event 2".into()],
        ),
        (
            write(
                "doge.dat",
                book_ticker(BASE_MS, "0.1", "0.2")
                    .replace("BTCUSDT", "DOGEUSDT")
                    .as_bytes(),
            ),
            vec![],
            vec!["1 messages".into(), "unknown_symbol 1".into()],
        ),
    ];
    for (file, extra, says) in cases {
        let o = bench(dir.path(), &file, &extra);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{}: {stderr}", file.display());
        assert!(stderr.contains("nothing usable"), "{stderr}");
        assert!(stderr.contains("0 commands"), "{stderr}");
        assert!(
            stderr.contains(&file.display().to_string()),
            "names the file: {stderr}"
        );
        for s in says {
            assert!(
                stderr.contains(&s),
                "{}: want {s:?} in {stderr}",
                file.display()
            );
        }
        // Refused before any run: no report.
        assert!(!String::from_utf8_lossy(&o.stdout).contains("== no-journal"));
    }
}

/// A depth stream with no snapshot never syncs; the run goes on (the book ticker is
/// usable) and says so on stderr. A last line stamped in the year 2500 is a time jump:
/// the run ends.
#[test]
fn bench_warns_when_a_depth_stream_never_synced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let year_2500_ms = 16_725_225_600_000;
    let lines = [
        book_ticker(BASE_MS, "28000.00", "28000.10"),
        depth(BASE_MS + 10, 101, 105),
        book_ticker(BASE_MS + 500, "28000.10", "28000.20"),
        depth(BASE_MS + 510, 106, 110),
        book_ticker(BASE_MS + 1_000, "28000.00", "28000.20"),
        book_ticker(year_2500_ms, "28000.00", "28000.30"),
    ];
    let ticks = dir.path().join("no_snapshot.dat");
    std::fs::write(&ticks, lines.join("\n")).expect("write");
    for extra in [&[][..], &["--stream"][..]] {
        let o = bench(dir.path(), &ticks, extra);
        let stderr = String::from_utf8_lossy(&o.stderr);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{stdout}\n{stderr}");
        // Two BTCUSDT diffs (lines 2 and 4), no snapshot.
        assert!(
            stderr.contains("warning: depth stream never synced")
                && stderr.contains("BTCUSDT (2 diffs)"),
            "{stderr}"
        );
        // 6 lines: the year-2500 one is unconfirmed at the end (time_jump 1); 3 distinct
        // tops from the other book tickers.
        assert!(stdout.contains("time_jump 1"), "{stdout}");
        assert!(stdout.contains("set_reference_prices 3"), "{stdout}");
        assert!(
            stdout.contains("budget 5000000 commands not reached"),
            "{stdout}"
        );
    }
}

/// The flow's command budget: 20 commands, then generation stops and the report (and
/// stderr) say so.
#[test]
fn bench_reports_the_flow_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Book tickers every 100 ms for 10 s: ~100 actions due at 10/s, far over a budget of
    // 20 (2 accounts × (create, deposit, 2 leverages) = 8 setup commands, 12 actions).
    let lines: Vec<String> = (0..100u64)
        .map(|k| book_ticker(BASE_MS + k * 100, "28000.00", &format!("{}.10", 28_000 + k)))
        .collect();
    let ticks = dir.path().join("tickers.dat");
    std::fs::write(&ticks, lines.join("\n")).expect("write");
    let o = bench(dir.path(), &ticks, &["--max-flow-commands", "20"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("budget 20 commands reached"), "{stdout}");
    assert!(stderr.contains("stopped at its budget"), "{stderr}");
    // 100 distinct tops + 20 generated = 120 commands.
    assert!(stdout.contains("== no-journal: 120 commands"), "{stdout}");
}
