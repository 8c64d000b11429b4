//! Reporting for `perpcore bench`: the per-kind histograms, the percentile table printed
//! to stdout, `summary.json`, and the SVG plot of the latency percentile distribution.
//!
//! Owns presentation only. Must never feed anything back into a run. This is the one
//! place in the CLI where floats appear, and only to place points on the plot (log
//! scales) and to pass quantiles to hdrhistogram; every printed figure is computed in
//! integers.
#![allow(clippy::float_arithmetic)] // Plot coordinates and quantiles only (see above).

use crate::bench::{BenchOptions, RunResult};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::fmt::Write as _;

/// Latencies in ns, 3 significant digits, up to 60 s.
pub type Hist = Histogram<u64>;

/// Command kinds in report order (`Command::kind()` names); "other" catches kinds added
/// after this list.
pub const KINDS: [&str; 16] = [
    "set_reference_prices",
    "set_mark_price",
    "set_index_price",
    "set_funding_rate",
    "place_order",
    "cancel_order",
    "amend_order",
    "cancel_all",
    "create_account",
    "deposit",
    "withdraw",
    "transfer",
    "set_leverage",
    "set_margin_mode",
    "adjust_isolated_margin",
    "other",
];

pub fn new_hist() -> Hist {
    match Histogram::new_with_bounds(1, 60_000_000_000, 3) {
        Ok(h) => h,
        // The bounds are constants that hdrhistogram accepts.
        Err(e) => unreachable!("histogram bounds: {e}"),
    }
}

pub fn new_hists() -> Vec<Hist> {
    (0..KINDS.len()).map(|_| new_hist()).collect()
}

fn merged(hists: &[Hist]) -> Hist {
    let mut all = new_hist();
    for h in hists {
        let _ = all.add(h);
    }
    all
}

const QUANTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)];

/// p50, p90, p99, p99.9, max in ns.
fn percentiles(h: &Hist) -> [u64; 5] {
    [
        h.value_at_quantile(QUANTILES[0].1),
        h.value_at_quantile(QUANTILES[1].1),
        h.value_at_quantile(QUANTILES[2].1),
        h.value_at_quantile(QUANTILES[3].1),
        h.max(),
    ]
}

/// ns as µs with one decimal, in integers.
fn us(ns: u64) -> String {
    format!("{}.{}", ns / 1000, (ns % 1000) / 100)
}

fn per_second(n: u64, wall_ns: u128) -> u128 {
    u128::from(n) * 1_000_000_000 / wall_ns.max(1)
}

fn file_names(opts: &BenchOptions) -> Vec<String> {
    opts.ticks.iter().map(|p| p.display().to_string()).collect()
}

/// The depth streams that never synced (also warned on stderr).
pub fn never_synced_line(never: &[(String, u64)]) -> String {
    let list: Vec<String> = never
        .iter()
        .map(|(sym, n)| format!("{sym} ({n} diffs)"))
        .collect();
    format!(
        "depth stream never synced (no usable snapshot; its book gave no prices): {}",
        list.join(", ")
    )
}

/// The flow's budget and the tick gaps it did not trade through.
pub fn flow_bounds_line(opts: &BenchOptions, f: &perpcore_flow::FlowStats) -> String {
    let budget = match f.budget_reached_ns {
        Some(at) => format!(
            "budget {} commands reached at exchange time {at} ns, {} more not generated",
            opts.flow.max_commands, f.over_budget
        ),
        None => format!("budget {} commands not reached", opts.flow.max_commands),
    };
    format!(
        "{budget}; tick gaps over {} s skipped: {} ({} s)",
        opts.flow.max_tick_gap_ns / 1_000_000_000,
        f.gaps_skipped,
        f.gap_ns_skipped / 1_000_000_000
    )
}

/// The stdout report.
pub fn text(opts: &BenchOptions, results: &[RunResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "perpcore bench: {} tick file(s) merged by exchange time: {}",
        opts.ticks.len(),
        file_names(opts).join(" ")
    );
    let _ = writeln!(
        s,
        "config {}; flow: seed {}, {} accounts, {} actions/s of exchange time; max in flight {}; {}",
        opts.config.display(),
        opts.flow.seed,
        opts.flow.accounts,
        opts.flow.actions_per_sec,
        if opts.max_in_flight == 0 {
            "unbounded".to_string()
        } else {
            opts.max_in_flight.to_string()
        },
        if opts.stream {
            "streaming (parsing while submitting)"
        } else {
            "commands built before each run"
        }
    );
    if let Some(r) = results.first() {
        let _ = writeln!(s, "feed: {}", r.feed.report);
        if !r.feed.never_synced.is_empty() {
            let _ = writeln!(s, "{}", never_synced_line(&r.feed.never_synced));
        }
        let _ = writeln!(
            s,
            "flow: {} (synthetic marks {}); {}",
            r.flow
                .commands
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            r.flow.synthetic_marks,
            flow_bounds_line(opts, &r.flow)
        );
    }
    for r in results {
        let wall_ns = r.wall.as_nanos();
        if let Some((commands, lines, wall)) = r.prepared {
            let _ = writeln!(
                s,
                "\n   prepared before the run: {commands} commands from {lines} tick lines in {}.{:03} s ({} lines/s parsed, merged, converted, with the flow)",
                wall.as_secs(),
                wall.subsec_millis(),
                per_second(lines, wall.as_nanos())
            );
        }
        let _ = writeln!(
            s,
            "== {}: {} commands in {}.{:03} s = {} commands/s; {} batches (largest {}); state hash {}",
            r.mode,
            r.commands,
            r.wall.as_secs(),
            r.wall.subsec_millis(),
            per_second(r.commands, wall_ns),
            r.batches,
            r.largest_batch,
            r.state_hash
        );
        let mut rejected: Vec<(&String, &u64)> = r.events.rejected.iter().collect();
        rejected.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let _ = writeln!(
            s,
            "   events {}: trades {}, liquidations {}, fund takeovers {}, deficits covered {}, rejected {} ({})",
            r.events.events,
            r.events.trades,
            r.events.liquidations,
            r.events.takeovers,
            r.events.deficits_covered,
            r.events.rejected.values().sum::<u64>(),
            rejected
                .iter()
                .take(5)
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(
            s,
            "   {:<22} {:>9} | {:>48} | {:>48}",
            "kind (µs)",
            "count",
            "submit → committed: p50 p90 p99 p99.9 max",
            "engine apply: p50 p90 p99 p99.9 max"
        );
        let all_e2e = merged(&r.e2e);
        let all_apply = merged(&r.apply);
        let mut rows = vec![("all", &all_e2e, &all_apply)];
        for (k, name) in KINDS.iter().enumerate() {
            if !r.e2e[k].is_empty() {
                rows.push((name, &r.e2e[k], &r.apply[k]));
            }
        }
        for (name, e, a) in rows {
            let fmt = |h: &Hist| {
                percentiles(h)
                    .iter()
                    .map(|v| format!("{:>9}", us(*v)))
                    .collect::<String>()
            };
            let _ = writeln!(
                s,
                "   {:<22} {:>9} | {:>48} | {:>48}",
                name,
                e.len(),
                fmt(e),
                fmt(a)
            );
        }
    }
    if results.len() > 1 {
        let _ = writeln!(
            s,
            "\n(state hashes differ between runs: the sequencer stamps each command with the wall clock)"
        );
    }
    s
}

fn pct_json(h: &Hist) -> Value {
    let p = percentiles(h);
    json!({"count": h.len(), "p50_ns": p[0], "p90_ns": p[1], "p99_ns": p[2], "p99_9_ns": p[3], "max_ns": p[4]})
}

/// `summary.json`.
pub fn summary_json(opts: &BenchOptions, results: &[RunResult]) -> Value {
    let runs: Vec<Value> = results
        .iter()
        .map(|r| {
            let mut kinds = serde_json::Map::new();
            for (k, name) in KINDS.iter().enumerate() {
                if !r.e2e[k].is_empty() {
                    kinds.insert(
                        (*name).to_string(),
                        json!({"submit_to_committed": pct_json(&r.e2e[k]), "apply": pct_json(&r.apply[k])}),
                    );
                }
            }
            json!({
                "mode": r.mode,
                "commands": r.commands,
                "wall_ms": r.wall.as_millis(),
                "commands_per_s": per_second(r.commands, r.wall.as_nanos()),
                "batches": r.batches,
                "largest_batch": r.largest_batch,
                "state_hash": r.state_hash,
                "events": r.events,
                "all": {"submit_to_committed": pct_json(&merged(&r.e2e)), "apply": pct_json(&merged(&r.apply))},
                "kinds": kinds,
                "interval_log": r.hlog.display().to_string(),
                "prepared": r.prepared.map(|(c, l, w)| json!({"commands": c, "tick_lines": l, "wall_ms": w.as_millis()})),
            })
        })
        .collect();
    let feed = results
        .first()
        .map(|r| {
            let mut v = json!(r.feed.report);
            v["never_synced"] = json!(r.feed.never_synced);
            v
        })
        .unwrap_or(Value::Null);
    let flow = results
        .first()
        .map(|r| {
            json!({
                "commands": r.flow.commands,
                "synthetic_marks": r.flow.synthetic_marks,
                "budget_reached_ns": r.flow.budget_reached_ns,
                "over_budget": r.flow.over_budget,
                "gaps_skipped": r.flow.gaps_skipped,
                "gap_ns_skipped": r.flow.gap_ns_skipped,
            })
        })
        .unwrap_or(Value::Null);
    json!({
        "ticks": file_names(opts),
        "config": opts.config.display().to_string(),
        "flow_options": {
            "seed": opts.flow.seed,
            "accounts": opts.flow.accounts,
            "actions_per_sec": opts.flow.actions_per_sec,
            "max_commands": opts.flow.max_commands,
            "max_tick_gap_ns": opts.flow.max_tick_gap_ns,
        },
        "max_in_flight": opts.max_in_flight,
        "stream": opts.stream,
        "feed": feed,
        "flow": flow,
        "runs": runs,
    })
}

const COLORS: [&str; 16] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
];

/// Highest percentile plotted: 99.999% (x = 5 decades of 1 / (1 − q)).
const X_DECADES: f64 = 5.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn ns_label(ns: f64) -> String {
    match ns {
        v if v >= 1e9 => format!("{} s", v / 1e9),
        v if v >= 1e6 => format!("{} ms", v / 1e6),
        v if v >= 1e3 => format!("{} µs", v / 1e3),
        v => format!("{v} ns"),
    }
}

/// One panel: percentile (log of 1 / (1 − q)) against latency (log), a line per kind
/// with at least 100 samples and a bold line for all kinds together.
fn panel(out: &mut String, x0: f64, y0: f64, w: f64, h: f64, title: &str, hists: &[Hist]) {
    let all = merged(hists);
    let _ = writeln!(
        out,
        r##"<g><rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="white" stroke="#444"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="14" text-anchor="middle" font-weight="bold">{}</text>"#,
        x0 + w / 2.0,
        y0 - 8.0,
        esc(title)
    );
    if all.is_empty() {
        let _ = writeln!(out, "</g>");
        return;
    }
    let lo = (all.min().max(1) as f64).log10().floor();
    let hi = (all.max().max(10) as f64).log10().ceil().max(lo + 1.0);
    let px = |xd: f64| x0 + xd / X_DECADES * w;
    let py = |ns: f64| y0 + h - (ns.max(1.0).log10() - lo) / (hi - lo) * h;
    // Grid and labels.
    for (d, label) in [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
        (5.0, "99.999%"),
    ] {
        let x = px(d);
        let _ = writeln!(
            out,
            r##"<line x1="{x}" y1="{y0}" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" font-size="11" text-anchor="middle">{label}</text>"##,
            y0 + h,
            y0 + h + 14.0
        );
    }
    let mut e = lo;
    while e <= hi {
        let v = 10f64.powf(e);
        let y = py(v);
        let _ = writeln!(
            out,
            r##"<line x1="{x0}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" font-size="11" text-anchor="end">{}</text>"##,
            x0 + w,
            x0 - 4.0,
            y + 4.0,
            esc(&ns_label(v))
        );
        e += 1.0;
    }
    let line = |out: &mut String, h: &Hist, color: &str, width: f64| {
        let mut pts = String::new();
        let steps = 200;
        for i in 0..=steps {
            let xd = X_DECADES * f64::from(i) / f64::from(steps);
            let q = 1.0 - 10f64.powf(-xd);
            let v = h.value_at_quantile(q) as f64;
            let _ = write!(pts, "{:.1},{:.1} ", px(xd), py(v));
        }
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="{width}" points="{pts}"/>"#
        );
    };
    let mut legend = Vec::new();
    for (k, hk) in hists.iter().enumerate() {
        if hk.len() >= 100 {
            line(out, hk, COLORS[k], 1.2);
            legend.push((KINDS[k], COLORS[k]));
        }
    }
    line(out, &all, "#000", 2.5);
    legend.insert(0, ("all", "#000"));
    for (i, (name, color)) in legend.iter().enumerate() {
        let y = y0 + 14.0 + 14.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{color}"/><text x="{}" y="{}" font-size="11">{}</text>"#,
            x0 + w + 8.0,
            y - 9.0,
            x0 + w + 22.0,
            y,
            esc(name)
        );
    }
    let _ = writeln!(out, "</g>");
}

/// The latency percentile distribution plot: one row per run, submit → committed on the
/// left, engine apply on the right.
pub fn svg(results: &[RunResult]) -> String {
    let (w, h) = (520.0, 300.0);
    let (left, top, gap_x, gap_y, legend) = (80.0, 60.0, 60.0, 80.0, 160.0);
    let width = left + 2.0 * (w + legend) + gap_x;
    let rows = results.len().max(1) as f64;
    let height = top + rows * (h + gap_y);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        s,
        r##"<rect width="100%" height="100%" fill="#fafafa"/><text x="{}" y="26" font-size="16" text-anchor="middle">perpcore bench: latency by percentile (x: percentile, log scale of 1/(1−q); y: latency, log scale)</text>"##,
        width / 2.0
    );
    for (i, r) in results.iter().enumerate() {
        let y0 = top + i as f64 * (h + gap_y);
        panel(
            &mut s,
            left,
            y0,
            w,
            h,
            &format!("{}: submit → committed", r.mode),
            &r.e2e,
        );
        panel(
            &mut s,
            left + w + legend + gap_x,
            y0,
            w,
            h,
            &format!("{}: engine apply", r.mode),
            &r.apply,
        );
    }
    let _ = writeln!(s, "</svg>");
    s
}
