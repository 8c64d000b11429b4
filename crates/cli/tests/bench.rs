//! `perpcore bench` end to end on the smallest recorded file: both runs, the printed
//! table, a parseable HdrHistogram interval log per run, the SVG plot and summary.json;
//! and the refusal to clear a folder that is not a bench journal.

use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use std::path::{Path, PathBuf};
use std::process::Command;

fn ticks_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .nth(2)
        .unwrap_or(here)
        .join("replay-fixtures/ticks")
}

fn bench(out: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_perpcore"))
        .arg("bench")
        .arg("--ticks")
        .arg(ticks_dir().join("usdm_btcusdt_20230404.dat.gz"))
        .arg("--config")
        .arg(ticks_dir().join("config.toml"))
        .arg("--out")
        .arg(out)
        .args(["--accounts", "20", "--flow-rate", "300", "--quiet"])
        .args(extra)
        .output()
        .expect("run perpcore bench")
}

#[test]
fn bench_writes_its_report_logs_and_plot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let o = bench(&out, &[]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("== no-journal:"), "{stdout}");
    assert!(stdout.contains("== journal:"), "{stdout}");
    assert!(stdout.contains("commands/s"), "{stdout}");
    assert!(stdout.contains("set_mark_price"), "{stdout}");
    assert!(stdout.contains("problems: none"), "{stdout}");

    for mode in ["no-journal", "journal"] {
        let log = std::fs::read(out.join(format!("latency-{mode}.hlog"))).expect("hlog");
        let intervals: Vec<_> = IntervalLogIterator::new(&log)
            .map(|e| e.expect("interval log entry parses"))
            .filter_map(|e| match e {
                LogEntry::Interval(i) => Some(i.tag().map(|t| t.as_str().to_string())),
                _ => None,
            })
            .collect();
        assert!(!intervals.is_empty(), "{mode}: no intervals");
        assert!(intervals
            .iter()
            .any(|t| t.as_deref() == Some("place_order")));
    }
    let svg = std::fs::read_to_string(out.join("latency.svg")).expect("svg");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("journal: submit → committed"));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).expect("json"))
            .expect("summary.json parses");
    let runs = summary["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["commands"], runs[1]["commands"]);
    assert!(runs[1]["kinds"]["place_order"]["submit_to_committed"]["p99_ns"].as_u64() > Some(0));
    // The journal is kept and marked as the bench's; a second run may clear it.
    assert!(out.join("journal").join(".perpcore-bench").exists());
    let again = bench(&out, &["--journal-only", "--stream"]);
    assert!(again.status.success());
    let again = String::from_utf8_lossy(&again.stdout);
    assert!(again.contains("streaming"), "{again}");
    assert!(stdout.contains("prepared before the run"), "{stdout}");
}

#[test]
fn bench_refuses_to_clear_a_folder_it_did_not_make() {
    let dir = tempfile::tempdir().expect("tempdir");
    let precious = dir.path().join("precious");
    std::fs::create_dir_all(&precious).expect("mkdir");
    std::fs::write(precious.join("keep.txt"), "x").expect("write");
    let o = bench(
        &dir.path().join("out"),
        &[
            "--journal-only",
            "--journal",
            precious.to_str().expect("utf-8 path"),
        ],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a bench journal"));
    assert!(precious.join("keep.txt").exists());
}
