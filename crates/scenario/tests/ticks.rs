//! Recorded-tick fixtures (`replay-fixtures/ticks/`): each case replays its files merged by
//! exchange time (and, for the flow case, the seeded order flow) straight into the engine,
//! with invariants checked every 10,000 commands and at the end, and compares the outcome
//! — state hash, commands by kind, feed counters by kind, event counts — with
//! `replay-fixtures/ticks/golden/<case>.json`. `PERPCORE_BLESS=1` rewrites the golden files
//! and prints what changed. Each file's line count must equal the one in `meta.json`.
//!
//! Commands are stamped `seq = 1, 2, …` and `ts_ns = max(previous ts, exchange time)`.

use perpcore_engine::Engine;
use perpcore_feed::{ConvertOptions, ReaderOptions, Replay};
use perpcore_flow::{Flow, FlowOptions};
use perpcore_scenario::golden::{diff_summary, BLESS_ENV};
use perpcore_types::{Command, Config, Envelope, Event};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

fn ticks_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .nth(2)
        .unwrap_or(here)
        .join("replay-fixtures/ticks")
}

fn config() -> Config {
    perpcore_config::load_path(&ticks_dir().join("config.toml")).expect("ticks config")
}

const SET_2024: [&str; 4] = [
    "usdm_btcusdt_20240808.gz",
    "usdm_ethusdt_20240808.gz",
    "cm_btcusd_perp_20240808.gz",
    "cm_ethusd_perp_20240808.gz",
];
const SET_2023: [&str; 2] = [
    "usdm_btcusdt_20230404.dat.gz",
    "usdm_btcusdt_20230405.dat.gz",
];

fn flow_options() -> FlowOptions {
    FlowOptions {
        seed: 1,
        accounts: 100,
        actions_per_sec: 200,
        ..FlowOptions::default()
    }
}

#[derive(Default)]
struct Counts {
    trades: u64,
    liquidations: u64,
    takeovers: u64,
    auto_deleveraged: u64,
    rejected: BTreeMap<String, u64>,
}

impl Counts {
    fn add(&mut self, events: &[Event]) {
        for e in events {
            match e {
                Event::Trade { .. } => self.trades += 1,
                Event::LiquidationTriggered { .. } => self.liquidations += 1,
                Event::PositionTakenOver { .. } => self.takeovers += 1,
                Event::AutoDeleveraged { .. } => self.auto_deleveraged += 1,
                Event::Rejected { reason, .. } => {
                    let name = serde_json::to_value(reason)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    *self.rejected.entry(name).or_default() += 1;
                }
                _ => {}
            }
        }
    }
}

/// Replays a case and returns its outcome as the golden JSON value.
fn replay_case(files: &[&str], flow: Option<FlowOptions>) -> Value {
    let config = config();
    let paths: Vec<PathBuf> = files.iter().map(|f| ticks_dir().join(f)).collect();
    let replay = Replay::open(
        &paths,
        &config,
        ReaderOptions::default(),
        ConvertOptions::default(),
    )
    .expect("open ticks");
    let mut engine = Engine::new(config.clone());
    let mut events = Vec::new();
    let mut counts = Counts::default();
    let (mut seq, mut ts) = (0u64, 0u64);
    let mut apply = |engine: &mut Engine, at: u64, command: Command| {
        seq += 1;
        ts = ts.max(at);
        events.clear();
        engine.apply(
            &Envelope {
                seq,
                ts_ns: ts,
                command,
            },
            &mut events,
        );
        counts.add(&events);
        if seq % 10_000 == 0 {
            engine
                .check_invariants()
                .unwrap_or_else(|e| panic!("invariants after seq {seq}: {e}"));
        }
    };
    let (feed, flow_stats, sources) = match flow.clone() {
        None => {
            let mut r = replay;
            for item in r.by_ref() {
                apply(&mut engine, item.exchange_ns, item.command);
            }
            (r.stats().report(), None, r.source_stats())
        }
        Some(opts) => {
            let mut f = Flow::new(replay, &config, opts);
            for item in f.by_ref() {
                apply(&mut engine, item.exchange_ns, item.command);
            }
            (
                f.inner().stats().report(),
                Some(f.stats().clone()),
                f.inner().source_stats(),
            )
        }
    };
    engine
        .check_invariants()
        .unwrap_or_else(|e| panic!("invariants at the end: {e}"));

    // Every file was read whole: its line count is the one meta.json records.
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(ticks_dir().join("meta.json")).expect("meta.json"),
    )
    .expect("meta.json is JSON");
    for ((name, st), file) in sources.iter().zip(files) {
        let want = meta["files"][file]["lines"].as_u64().expect("meta lines");
        assert_eq!(st.lines, want, "{name}: lines read vs meta.json");
    }

    json!({
        "files": files,
        "flow": flow.map(|o| json!({"seed": o.seed, "accounts": o.accounts, "actions_per_sec": o.actions_per_sec})),
        "commands": seq,
        "last_ts_ns": ts,
        "state_hash": engine.state_hash_hex(),
        "feed": feed,
        "flow_commands": flow_stats.as_ref().map(|s| json!(s.commands)),
        "synthetic_marks": flow_stats.as_ref().map(|s| s.synthetic_marks),
        "events": {
            "trades": counts.trades,
            "liquidations": counts.liquidations,
            "takeovers": counts.takeovers,
            "auto_deleveraged": counts.auto_deleveraged,
            "rejected": counts.rejected,
        },
    })
}

fn check(case: &str, got: &Value) {
    let bless = std::env::var(BLESS_ENV).is_ok_and(|v| v == "1");
    let path = ticks_dir().join("golden").join(format!("{case}.json"));
    let new = serde_json::to_string_pretty(got).expect("json") + "\n";
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    if old == new {
        return;
    }
    let old_lines: Vec<&str> = old.lines().collect();
    let new_lines: Vec<&str> = new.lines().collect();
    let summary = diff_summary(&old_lines, &new_lines, 40);
    if bless {
        std::fs::create_dir_all(path.parent().expect("golden dir")).expect("mkdir golden");
        std::fs::write(&path, &new).expect("write golden");
        let _ = writeln!(std::io::stderr(), "blessed {}:\n{summary}", path.display());
        return;
    }
    panic!(
        "tick fixture {case} differs from {}:\n{summary}If intended, rewrite it with \
         {BLESS_ENV}=1 cargo test -p perpcore-scenario --test ticks",
        path.display()
    );
}

#[test]
fn ticks_2024_08_08_market_data() {
    let got = replay_case(&SET_2024, None);
    assert_eq!(got["feed"]["problems"], json!({}), "{}", got["feed"]);
    check("2024-08-08", &got);
}

#[test]
fn ticks_2023_04_04_05_mark_prices() {
    let got = replay_case(&SET_2023, None);
    // The diff chain runs across the two files: one snapshot, no gap.
    assert_eq!(got["feed"]["depth"]["snapshots"], json!(1));
    assert_eq!(got["feed"]["depth"]["gaps"], json!(0));
    assert!(got["feed"]["commands"]["set_funding_rate"].as_u64() > Some(500));
    check("2023-04-04_05", &got);
}

#[test]
fn ticks_2024_08_08_with_order_flow() {
    let got = replay_case(&SET_2024, Some(flow_options()));
    assert!(got["events"]["trades"].as_u64() > Some(1000), "{got}");
    assert!(got["events"]["liquidations"].as_u64() > Some(0), "{got}");
    check("2024-08-08_flow", &got);
}
