//! Issue 13, the order-flow finding (the feed findings are in
//! `crates/feed/tests/hostile.rs`): the test is named after the finding it reproduces and
//! every expected number is worked out by hand in the comment beside it. The ticks are
//! built here; nothing outside the repository is read.

use perpcore_feed::{FeedItem, Origin};
use perpcore_flow::{Flow, FlowOptions};
use perpcore_types::{Command, Config, InstrumentId, Price};
use std::path::{Path, PathBuf};

fn config() -> Config {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root: PathBuf = here.ancestors().nth(2).unwrap_or(here).to_path_buf();
    perpcore_config::load_path(&root.join("replay-fixtures/ticks/config.toml")).expect("config")
}

fn p(s: &str) -> Price {
    Price::parse(s).expect("price")
}

/// 2023-04-05 00:00:00.000 UTC in ms (1,680,652,800,000 = 19,452 days × 86,400,000).
const BASE_MS: u64 = 1_680_652_800_000;

/// Ticks for the flow tests: BTCUSDT quotes and a recorded mark at `t`.
fn quote(t_ns: u64) -> Vec<FeedItem> {
    let feed = |command| FeedItem {
        exchange_ns: t_ns,
        origin: Origin::Feed,
        command,
    };
    vec![
        feed(Command::SetReferencePrices {
            instrument: InstrumentId(0),
            best_bid: Some(p("28000")),
            best_ask: Some(p("28000.1")),
            last_trade: None,
        }),
        feed(Command::SetMarkPrice {
            instrument: InstrumentId(0),
            price: p("28000"),
        }),
    ]
}

const SEC: u64 = 1_000_000_000;

fn flow_opts() -> FlowOptions {
    FlowOptions {
        seed: 3,
        accounts: 2,
        actions_per_sec: 10,
        maker_pct: 50,
        isolated_pct: 0,
        ..FlowOptions::default()
    }
}

/// Issue 13, "Feed": the order flow ran until the last tick's time, so a trade stamped
/// in the year 2500 grew `perpcore bench` to 23.8 GB (and `--stream` never ended).
#[test]
fn flow_runs_until_a_far_future_tick() {
    let config = config();
    let t0 = BASE_MS * 1_000_000;
    // Ticks at t0, t0 + 1 s, then (a confirmed gap) the year 2500 and 1 s after it.
    let far = 16_725_225_600 * SEC; // 2500-01-01 00:00:00 UTC
    let mut ticks = quote(t0);
    ticks.extend(quote(t0 + SEC));
    ticks.extend(quote(far));
    ticks.extend(quote(far + SEC));
    // Bounded: before the fix this flow would fill 477 years at 10 actions/s.
    let limit = 100_000;
    let mut flow = Flow::new(ticks.into_iter(), &config, flow_opts());
    let items: Vec<FeedItem> = flow.by_ref().take(limit).collect();
    assert!(items.len() < limit, "the flow did not end");
    // Nothing is generated inside the 477-year gap between the ticks at t0 + 1 s and
    // `far` (beyond the 60 s default pause): zero commands stamped strictly inside it.
    let inside = items
        .iter()
        .filter(|i| i.exchange_ns > t0 + SEC && i.exchange_ns < far)
        .count();
    assert_eq!(inside, 0);
    assert_eq!(flow.stats().gaps_skipped, 1);
    // The 8 recorded ticks pass through.
    assert_eq!(items.iter().filter(|i| i.origin == Origin::Feed).count(), 8);

    // The command budget: 20 generated commands at most. Setup is 2 accounts × (create,
    // one USDT deposit, leverage on BTCUSDT and ETHUSDT) = 8, then 12 actions, then
    // generation stops (ticks every second for 10 s: ~100 actions due at 10/s).
    let ticks: Vec<FeedItem> = (0..=10).flat_map(|k| quote(t0 + k * SEC)).collect();
    let mut flow = Flow::new(
        ticks.into_iter(),
        &config,
        FlowOptions {
            max_commands: 20,
            ..flow_opts()
        },
    );
    let items: Vec<FeedItem> = flow.by_ref().take(limit).collect();
    let generated = items.iter().filter(|i| i.origin != Origin::Feed).count();
    assert_eq!(generated, 20);
    // 11 seconds of quotes, 2 commands each: 22 ticks, all passed through.
    assert_eq!(items.len(), 20 + 22);
    let s = flow.stats();
    assert_eq!(s.commands.values().sum::<u64>(), 20);
    assert!(s.budget_reached_ns.is_some());
    assert!(s.over_budget > 0);
}
