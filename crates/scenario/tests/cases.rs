//! Conformance: every worked case of `spec/cases/CASES.md` that the engine implements,
//! reproduced through real commands in `replay-fixtures/cases/<ID>.jsonl` (orders matched
//! in the book between accounts, marks set) with `expect` lines holding the published
//! numbers. Each test is named by its case id and runs with every invariant checked after
//! every command. C3–C7, M4, M5 and R4 are pure valuation or PnL cases and are unit
//! tests in `perpcore-risk` (`c3_…`, `m4_…`, `r4_…`) under the same ids.

use perpcore_scenario::{run_scenario, RunOptions};
use std::path::{Path, PathBuf};

/// `crates/cli` → the workspace root.
fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(2).unwrap_or(here).to_path_buf()
}

fn cases_dir() -> PathBuf {
    workspace_root().join("replay-fixtures/cases")
}

/// Every case file must have a test below.
const CASES: &[&str] = &[
    "B1", "B2", "B3", "C1", "C2", "L1", "L2", "M1", "M2", "M3", "M6", "R1", "R2", "R3",
];

fn run_case(id: &str) {
    let dir = cases_dir();
    let path = dir.join(format!("{id}.jsonl"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let out = run_scenario(
        &text,
        &dir,
        RunOptions {
            check_invariants: true,
        },
    )
    .unwrap_or_else(|e| panic!("case {id}: {}:{}: {}", path.display(), e.line, e.message));
    assert!(out.commands > 0, "case {id} applied no command");
    let expects = text
        .lines()
        .filter(|l| l.contains("\"cmd\":\"expect"))
        .count();
    assert!(expects > 0, "case {id} checks nothing");
}

#[test]
fn case_m1() {
    run_case("M1");
}

#[test]
fn case_m2() {
    run_case("M2");
}

#[test]
fn case_m3() {
    run_case("M3");
}

#[test]
fn case_m6() {
    run_case("M6");
}

#[test]
fn case_l1() {
    run_case("L1");
}

#[test]
fn case_l2() {
    run_case("L2");
}

#[test]
fn case_r3() {
    run_case("R3");
}

#[test]
fn every_case_file_has_a_test() {
    let mut found: Vec<String> = std::fs::read_dir(cases_dir())
        .expect("cases dir")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".jsonl").map(str::to_string)
        })
        .collect();
    found.sort();
    assert_eq!(found, CASES, "add a #[test] for each case file");
}

#[test]
fn case_b1() {
    run_case("B1");
}

#[test]
fn case_b2() {
    run_case("B2");
}

#[test]
fn case_b3() {
    run_case("B3");
}

#[test]
fn case_c1() {
    run_case("C1");
}

#[test]
fn case_c2() {
    run_case("C2");
}

#[test]
fn case_r1() {
    run_case("R1");
}

#[test]
fn case_r2() {
    run_case("R2");
}
