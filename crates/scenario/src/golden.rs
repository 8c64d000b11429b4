//! Golden replay files: `replay-fixtures/golden/<name>/{input.jsonl, expected_events.jsonl,
//! expected_hash.txt}`. Replays a case, compares its event lines and final state hash with
//! the expected files, and (when blessing) rewrites them and summarises what changed.
//!
//! Owns the file layout, the comparison and the line diff. It must never bless silently:
//! a rewrite always returns a summary of the changes, and it never writes anything unless
//! asked to bless. It does no floating-point work and reads no clock.

use crate::{run_scenario, RunOptions};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub const INPUT: &str = "input.jsonl";
pub const EXPECTED_EVENTS: &str = "expected_events.jsonl";
pub const EXPECTED_HASH: &str = "expected_hash.txt";
/// Environment variable that switches the golden test to rewriting the expected files.
pub const BLESS_ENV: &str = "PERPCORE_BLESS";

/// What checking one case found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Events and hash match the expected files.
    Unchanged,
    /// Blessing rewrote the expected files; the summary says what changed.
    Blessed(String),
}

/// Every case directory (one holding `input.jsonl`) under `root`, sorted by name.
pub fn case_dirs(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let path = entry?.path();
        if path.join(INPUT).is_file() {
            dirs.push(path);
        }
    }
    dirs.sort();
    Ok(dirs)
}

fn read_or_empty(path: &Path) -> Result<String, String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Replay the case in `dir` (invariants checked after every command) and compare it with
/// its expected files; with `bless`, rewrite them instead of failing.
pub fn check_case(dir: &Path, bless: bool) -> Result<Outcome, String> {
    let input_path = dir.join(INPUT);
    let input = std::fs::read_to_string(&input_path)
        .map_err(|e| format!("{}: {e}", input_path.display()))?;
    let out = run_scenario(
        &input,
        dir,
        RunOptions {
            check_invariants: true,
        },
    )
    .map_err(|e| format!("{}:{}: {}", input_path.display(), e.line, e.message))?;

    let events_path = dir.join(EXPECTED_EVENTS);
    let hash_path = dir.join(EXPECTED_HASH);
    let old_events = read_or_empty(&events_path)?;
    let old_hash = read_or_empty(&hash_path)?.trim().to_string();
    let old: Vec<&str> = old_events.lines().collect();
    let new: Vec<&str> = out.events.iter().map(String::as_str).collect();
    let same = old == new && old_hash == out.final_hash;
    if same {
        return Ok(Outcome::Unchanged);
    }
    let mut summary = diff_summary(&old, &new, 20);
    if old_hash != out.final_hash {
        let _ = writeln!(
            summary,
            "state hash: {} -> {}",
            if old_hash.is_empty() {
                "(none)"
            } else {
                &old_hash
            },
            out.final_hash
        );
    }
    if !bless {
        return Err(format!(
            "golden case {} differs from its expected files:\n{summary}\
             If the change is intended, rewrite them with \
             {BLESS_ENV}=1 cargo test -p perpcore-scenario --test golden",
            dir.display()
        ));
    }
    let mut text = out.events.join("\n");
    text.push('\n');
    std::fs::write(&events_path, text).map_err(|e| format!("{}: {e}", events_path.display()))?;
    std::fs::write(&hash_path, format!("{}\n", out.final_hash))
        .map_err(|e| format!("{}: {e}", hash_path.display()))?;
    Ok(Outcome::Blessed(summary))
}

/// A line diff of `old` → `new`: counts, then up to `shown` changed lines as `-`/`+` with
/// their line numbers (old numbering for `-`, new for `+`).
pub fn diff_summary(old: &[&str], new: &[&str], shown: usize) -> String {
    let ops = diff(old, new);
    let removed = ops.iter().filter(|o| matches!(o, Op::Del(_))).count();
    let added = ops.iter().filter(|o| matches!(o, Op::Add(_))).count();
    let mut s = format!(
        "events: {} -> {} lines, {removed} removed, {added} added\n",
        old.len(),
        new.len()
    );
    let mut printed = 0;
    for op in &ops {
        let line = match op {
            Op::Keep => continue,
            Op::Del(i) => format!("  -{:>5}: {}", i + 1, old[*i]),
            Op::Add(j) => format!("  +{:>5}: {}", j + 1, new[*j]),
        };
        if printed == shown {
            let _ = writeln!(s, "  … {} more changed lines", removed + added - shown);
            break;
        }
        let _ = writeln!(s, "{line}");
        printed += 1;
    }
    s
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Keep,
    /// Index into old.
    Del(usize),
    /// Index into new.
    Add(usize),
}

/// Longest-common-subsequence diff; falls back to a positional comparison for inputs too
/// large for the quadratic table (golden files are small).
fn diff(old: &[&str], new: &[&str]) -> Vec<Op> {
    let (n, m) = (old.len(), new.len());
    if n.saturating_mul(m) > 16_000_000 {
        let mut ops = Vec::new();
        for k in 0..n.max(m) {
            match (old.get(k), new.get(k)) {
                (Some(a), Some(b)) if a == b => ops.push(Op::Keep),
                (a, b) => {
                    if a.is_some() {
                        ops.push(Op::Del(k));
                    }
                    if b.is_some() {
                        ops.push(Op::Add(k));
                    }
                }
            }
        }
        return ops;
    }
    // lcs[i][j] = LCS length of old[i..] and new[j..].
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[at(i, j)] = if old[i] == new[j] {
                lcs[at(i + 1, j + 1)] + 1
            } else {
                lcs[at(i + 1, j)].max(lcs[at(i, j + 1)])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut ops = Vec::with_capacity(n + m);
    while i < n || j < m {
        if i < n && j < m && old[i] == new[j] {
            ops.push(Op::Keep);
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[at(i, j + 1)] >= lcs[at(i + 1, j)]) {
            ops.push(Op::Add(j));
            j += 1;
        } else {
            ops.push(Op::Del(i));
            i += 1;
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_reports_changed_lines() {
        let old = ["a", "b", "c", "d"];
        let new = ["a", "x", "c", "d", "e"];
        let s = diff_summary(&old, &new, 10);
        assert!(
            s.starts_with("events: 4 -> 5 lines, 1 removed, 2 added"),
            "{s}"
        );
        assert!(s.contains("-    2: b"), "{s}");
        assert!(s.contains("+    2: x"), "{s}");
        assert!(s.contains("+    5: e"), "{s}");
    }

    #[test]
    fn identical_inputs_have_no_changes() {
        let a = ["x", "y"];
        let s = diff_summary(&a, &a, 10);
        assert_eq!(s, "events: 2 -> 2 lines, 0 removed, 0 added\n");
    }

    #[test]
    fn long_diffs_are_truncated() {
        let old: Vec<String> = (0..30).map(|i| i.to_string()).collect();
        let old: Vec<&str> = old.iter().map(String::as_str).collect();
        let s = diff_summary(&old, &[], 5);
        assert!(s.contains("… 25 more changed lines"), "{s}");
    }
}
