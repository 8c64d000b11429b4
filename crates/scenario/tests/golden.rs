//! Golden replay: every `replay-fixtures/golden/<name>/input.jsonl` is replayed with
//! invariants checked, and its event lines and final state hash are compared with
//! `expected_events.jsonl` and `expected_hash.txt`. With `PERPCORE_BLESS=1` the expected
//! files are rewritten and a diff summary of what changed is printed (see
//! `replay-fixtures/golden/README.md`). Also replays the demo scenario.

use perpcore_scenario::golden::{case_dirs, check_case, Outcome, BLESS_ENV};
use perpcore_scenario::{run_scenario, RunOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// `crates/cli` → the workspace root.
fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(2).unwrap_or(here).to_path_buf()
}

fn fixtures() -> PathBuf {
    workspace_root().join("replay-fixtures")
}

#[test]
fn golden_replays_match() {
    let bless = std::env::var(BLESS_ENV).is_ok_and(|v| v == "1");
    let dirs = case_dirs(&fixtures().join("golden")).expect("golden dir");
    let names: Vec<String> = dirs
        .iter()
        .filter_map(|d| d.file_name()?.to_str().map(str::to_string))
        .collect();
    for required in [
        "accounts",
        "cross_liquidation",
        "isolated_liquidation",
        "matching",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "golden case {required} missing (found {names:?})"
        );
    }
    let mut failures = Vec::new();
    for dir in &dirs {
        match check_case(dir, bless) {
            Ok(Outcome::Unchanged) => {}
            Ok(Outcome::Blessed(summary)) => {
                // Straight to stderr: the test harness captures `eprintln!`, and a bless
                // must always show what it changed.
                let _ = writeln!(std::io::stderr(), "blessed {}:\n{summary}", dir.display());
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn golden_replays_are_deterministic() {
    for dir in case_dirs(&fixtures().join("golden")).expect("golden dir") {
        let text = std::fs::read_to_string(dir.join("input.jsonl")).expect("input");
        let opts = RunOptions::default();
        let a = run_scenario(&text, &dir, opts).expect("first run");
        let b = run_scenario(&text, &dir, opts).expect("second run");
        assert_eq!(a, b, "{} differs between two runs", dir.display());
    }
}

/// The README's first command runs this file.
#[test]
fn demo_scenario_runs() {
    let dir = fixtures();
    let text = std::fs::read_to_string(dir.join("demo.jsonl")).expect("demo.jsonl");
    let out = run_scenario(
        &text,
        &dir,
        RunOptions {
            check_invariants: true,
        },
    )
    .unwrap_or_else(|e| panic!("demo.jsonl:{}: {}", e.line, e.message));
    assert!(out
        .events
        .iter()
        .any(|l| l.contains("\"liquidation_triggered\"")));
    assert!(out.lines.iter().any(|l| l.starts_with("{\"report\":")));
}
