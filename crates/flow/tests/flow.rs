//! The order-flow generator over recorded ticks: deterministic for a seed, trades only
//! the linear instruments, opens cross and isolated accounts with 5x–100x leverage, marks
//! instruments without a recorded mark, and keeps the ticks in their order.

use perpcore_feed::{ConvertOptions, FeedItem, Origin, ReaderOptions, Replay};
use perpcore_flow::{Flow, FlowOptions};
use perpcore_types::{Command, Config, ContractKind, MarginMode};
use std::path::{Path, PathBuf};

fn ticks_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .nth(2)
        .unwrap_or(here)
        .join("replay-fixtures/ticks")
}

fn config() -> Config {
    perpcore_config::load_path(&ticks_dir().join("config.toml")).expect("config")
}

fn run(files: &[&str], seed: u64) -> Vec<FeedItem> {
    let config = config();
    let paths: Vec<PathBuf> = files.iter().map(|f| ticks_dir().join(f)).collect();
    let replay = Replay::open(
        &paths,
        &config,
        ReaderOptions::default(),
        ConvertOptions::default(),
    )
    .expect("replay");
    Flow::new(
        replay,
        &config,
        FlowOptions {
            seed,
            accounts: 40,
            actions_per_sec: 300,
            ..FlowOptions::default()
        },
    )
    .collect()
}

const FILES: [&str; 2] = ["usdm_btcusdt_20240808.gz", "cm_btcusd_perp_20240808.gz"];

#[test]
fn flow_is_deterministic_and_trades_only_linear_instruments() {
    let config = config();
    let a = run(&FILES, 7);
    let b = run(&FILES, 7);
    assert_eq!(a, b, "same seed, same commands");
    let c = run(&FILES, 8);
    assert_ne!(a, c, "another seed, other commands");

    let orders: Vec<_> = a
        .iter()
        .filter_map(|i| match &i.command {
            Command::PlaceOrder(o) => Some(o),
            _ => None,
        })
        .collect();
    assert!(orders.len() > 10_000, "{}", orders.len());
    for o in &orders {
        let spec = config.instrument(o.instrument).expect("instrument");
        assert_eq!(spec.kind, ContractKind::Linear, "{}", spec.symbol);
    }
    let leverages: Vec<u32> = a
        .iter()
        .filter_map(|i| match i.command {
            Command::SetLeverage { leverage, .. } => Some(leverage),
            _ => None,
        })
        .collect();
    assert!(leverages.iter().all(|l| (5..=100).contains(l)));
    assert!(leverages.contains(&100) && leverages.contains(&5));
    let isolated = a
        .iter()
        .filter(|i| {
            matches!(
                i.command,
                Command::SetMarginMode {
                    mode: MarginMode::Isolated,
                    ..
                }
            )
        })
        .count();
    assert!(isolated > 0 && isolated < 80, "{isolated}");

    // The capture has no mark stream: the flow marks BTCUSDT at the mid about once a
    // second (the window is about 345 s), and never the inverse instrument.
    let marks: Vec<&FeedItem> = a
        .iter()
        .filter(|i| i.origin == Origin::SyntheticMark)
        .collect();
    assert!((300..=400).contains(&marks.len()), "{}", marks.len());
    assert!(marks.iter().all(|m| matches!(
        m.command,
        Command::SetMarkPrice { instrument, .. } if instrument.0 == 0
    )));

    // The recorded ticks pass through unchanged and in order.
    let ticks_alone: Vec<FeedItem> = Replay::open(
        &FILES.map(|f| ticks_dir().join(f)),
        &config,
        ReaderOptions::default(),
        ConvertOptions::default(),
    )
    .expect("replay")
    .collect();
    let ticks_in_flow: Vec<FeedItem> = a.into_iter().filter(|i| i.origin == Origin::Feed).collect();
    assert_eq!(ticks_in_flow, ticks_alone);
}

#[test]
fn recorded_marks_suppress_synthetic_ones() {
    let items = run(&["usdm_btcusdt_20230404.dat.gz"], 1);
    let synthetic = items
        .iter()
        .filter(|i| i.origin == Origin::SyntheticMark)
        .count();
    // Marks arrive every second from the stream; at most the very first tick precedes
    // the first recorded mark.
    assert!(synthetic <= 2, "{synthetic}");
    assert!(items
        .iter()
        .any(|i| matches!(i.command, Command::PlaceOrder(_))));
}

/// Issue 13, "Flow panic": a best bid/ask of 92233720368.54775806 (in range for `Price`,
/// accepted by the feed parser) overflowed in `InstrumentSpec::price_of` when the flow
/// quoted around it. Prices the engine would refuse (above `MAX_PRICE`) are no longer
/// quoted around; they are counted.
#[test]
fn flow_panic_reference_prices_near_i64_max() {
    use perpcore_feed::Origin;
    use perpcore_types::{InstrumentId, Price};
    let config = config();
    let instrument = InstrumentId(0);
    let huge = Price::parse("92233720368.54775806").expect("in range for Price");
    let items: Vec<FeedItem> = (1..=20u64)
        .flat_map(|s| {
            let exchange_ns = s * 1_000_000_000;
            [
                FeedItem {
                    exchange_ns,
                    origin: Origin::Feed,
                    command: Command::SetReferencePrices {
                        instrument,
                        best_bid: Some(huge),
                        best_ask: Some(huge),
                        last_trade: None,
                    },
                },
                FeedItem {
                    exchange_ns,
                    origin: Origin::Feed,
                    command: Command::SetMarkPrice {
                        instrument,
                        price: huge,
                    },
                },
            ]
        })
        .collect();
    let mut flow = Flow::new(
        items.into_iter(),
        &config,
        FlowOptions {
            seed: 1,
            accounts: 10,
            actions_per_sec: 1_000,
            ..FlowOptions::default()
        },
    );
    let out: Vec<FeedItem> = flow.by_ref().collect();
    assert!(!out
        .iter()
        .any(|i| matches!(i.command, Command::PlaceOrder(_))));
    assert_eq!(flow.stats().prices_out_of_range, 40);
}
