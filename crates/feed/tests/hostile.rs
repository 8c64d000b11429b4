//! Issue 13, the feed findings: each test is named after the finding it reproduces and
//! every expected number is worked out by hand in the comment beside it. The lines are
//! built here (the shapes of the bundled captures' lines); nothing outside the repository
//! is read. (The order-flow finding is in `crates/flow/tests/hostile.rs`.)

use perpcore_feed::{ConvertOptions, FeedItem, FeedStats, Problem, Reader, ReaderOptions, Replay};
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
/// One flipped digit in the 10^9 ms place: +7,000,000,000 ms = 81 days 0 h 26 min 40 s.
const FLIP_MS: u64 = 7_000_000_000;

fn trade(e_ms: u64, symbol: &str, price: &str) -> String {
    // The local stamp (µs, as the 2023 recorder wrote) is not used for time.
    format!(
        r#"{} {{"stream":"x@trade","data":{{"e":"trade","E":{e_ms},"T":{e_ms},"s":"{symbol}","t":1,"p":"{price}","q":"0.001","X":"MARKET","m":true}}}}"#,
        e_ms * 1000
    )
}

fn run(lines: &[String], opts: ReaderOptions) -> (Vec<FeedItem>, FeedStats) {
    let config = config();
    let reader = Reader::from_text("t", lines.join("\n"), 0, opts);
    let mut replay = Replay::from_readers(vec![reader], &config, ConvertOptions::default());
    let items: Vec<FeedItem> = replay.by_ref().collect();
    (items, replay.stats())
}

/// Ten BTCUSDT trades 100 ms apart at distinct prices 28001..28010, so each one is a
/// `SetReferencePrices` (last trade).
fn ten_trades() -> Vec<String> {
    (0..10u64)
        .map(|k| trade(BASE_MS + k * 100, "BTCUSDT", &format!("{}", 28_001 + k)))
        .collect()
}

/// Issue 13, "Feed": one future exchange timestamp (a single flipped digit, +81 days)
/// raised the watermark, so every later line was "out of order" (71% of a file dropped).
#[test]
fn feed_one_future_timestamp_drops_the_rest_of_the_file() {
    // Line 3 (E = base + 200 ms) gets the flipped digit: base + 200 ms + 81 days.
    let mut lines = ten_trades();
    lines[2] = trade(BASE_MS + 200 + FLIP_MS, "BTCUSDT", "28003");
    let (items, stats) = run(&lines, ReaderOptions::default());
    // Line 3 jumps 81 days past the watermark (base + 100 ms), far beyond the 5 s bound;
    // line 4 (base + 300 ms) is 81 days behind it, so nothing confirms the jump: line 3
    // is counted as a time jump and skipped, the watermark stays at base + 100 ms, and
    // lines 4..10 follow it normally. Before the fix: 7 of 10 lines out of order.
    assert_eq!(stats.problems(Problem::TimeJump), 1);
    assert_eq!(stats.first_line(Problem::TimeJump), Some(3));
    assert_eq!(stats.problems(Problem::OutOfOrder), 0);
    assert_eq!(stats.total_problems(), 1);
    // 10 lines − 1 skipped = 9 trades, 9 commands, all at their own (sane) times.
    assert_eq!(items.len(), 9);
    assert!(items
        .iter()
        .all(|i| i.exchange_ns < (BASE_MS + 1_000) * 1_000_000));

    // The same jump on the first line: nothing is before it, so it waits for the second
    // line, which is 81 days behind it: line 1 is the time jump, lines 2..10 are kept.
    let mut lines = ten_trades();
    lines[0] = trade(BASE_MS + FLIP_MS, "BTCUSDT", "28001");
    let (items, stats) = run(&lines, ReaderOptions::default());
    assert_eq!(stats.problems(Problem::TimeJump), 1);
    assert_eq!(stats.first_line(Problem::TimeJump), Some(1));
    assert_eq!(stats.total_problems(), 1);
    assert_eq!(items.len(), 9);

    // On the last line nothing can confirm it: counted and skipped, 9 kept.
    let mut lines = ten_trades();
    lines[9] = trade(BASE_MS + 900 + FLIP_MS, "BTCUSDT", "28010");
    let (items, stats) = run(&lines, ReaderOptions::default());
    assert_eq!(stats.problems(Problem::TimeJump), 1);
    assert_eq!(stats.first_line(Problem::TimeJump), Some(10));
    assert_eq!(items.len(), 9);
}

/// A real gap (a recorder reconnecting after 10 minutes) is not a bad timestamp: the
/// line after the jump agrees with it, so the jump is confirmed and nothing is lost.
#[test]
fn feed_a_real_gap_is_confirmed_by_the_next_line() {
    // Times: base, +100 ms, +600 s, +600.1 s, +600.2 s. Line 3 jumps 600 s (> 5 s) and is
    // held; line 4 is 100 ms after it (within the 5 s bound of the held time): confirmed.
    let times = [0, 100, 600_000, 600_100, 600_200];
    let lines: Vec<String> = times
        .iter()
        .enumerate()
        .map(|(k, dt)| trade(BASE_MS + dt, "BTCUSDT", &format!("{}", 28_001 + k)))
        .collect();
    let (items, stats) = run(&lines, ReaderOptions::default());
    assert_eq!(stats.total_problems(), 0);
    // 5 lines, 5 distinct prices: 5 commands, in file order.
    let got: Vec<u64> = items.iter().map(|i| i.exchange_ns / 1_000_000).collect();
    let want: Vec<u64> = times.iter().map(|dt| BASE_MS + dt).collect();
    assert_eq!(got, want);

    // A bound set wider than the gap (20 minutes) holds nothing: the same 5 commands.
    let (items, stats) = run(
        &lines,
        ReaderOptions {
            max_jump_ns: 1_200_000_000_000,
            ..ReaderOptions::default()
        },
    );
    assert_eq!((items.len(), stats.total_problems()), (5, 0));
}

/// Issue 13, "Feed": in a file holding two symbols, a REST depth snapshot without a
/// symbol was given to the wrong one (the symbol of the line before it) and the run still
/// reported no problems.
#[test]
fn snapshot_without_symbol_given_to_the_wrong_symbol() {
    // A BTCUSDT snapshot (BTC prices, no symbol), written after an ETHUSDT line.
    let snapshot = format!(
        r#"{} {{"lastUpdateId":5123107852948,"E":{e},"T":{e},"bids":[["28145.10","3.818"]],"asks":[["28145.20","6.880"]]}}"#,
        (BASE_MS + 20) * 1000,
        e = BASE_MS + 20
    );
    let lines = vec![
        trade(BASE_MS, "BTCUSDT", "28145.10"),
        trade(BASE_MS + 10, "ETHUSDT", "1800.10"),
        snapshot.clone(),
        trade(BASE_MS + 30, "ETHUSDT", "1800.20"),
    ];
    let (items, stats) = run(&lines, ReaderOptions::default());
    // The source has named two symbols before the snapshot: it cannot be attributed. It
    // is counted and dropped; the three trades give three commands.
    assert_eq!(stats.problems(Problem::SnapshotWithoutSymbol), 1);
    assert_eq!(stats.first_line(Problem::SnapshotWithoutSymbol), Some(3));
    assert_eq!(stats.total_problems(), 1);
    assert_eq!(stats.depth.snapshots, 0);
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|i| !matches!(
        i.command,
        Command::SetReferencePrices {
            best_bid: Some(_),
            ..
        }
    )));

    // With the operator's hint the snapshot is BTCUSDT's: its top (28145.10 / 28145.20)
    // is emitted for instrument 0, the fourth of 4 commands (trade, trade, top, trade).
    let (items, stats) = run(
        &lines,
        ReaderOptions {
            symbol_hint: Some("BTCUSDT".into()),
            ..ReaderOptions::default()
        },
    );
    assert_eq!(stats.total_problems(), 0);
    assert_eq!(stats.depth.snapshots, 1);
    assert_eq!(items.len(), 4);
    assert_eq!(
        items[2].command,
        Command::SetReferencePrices {
            instrument: InstrumentId(0),
            best_bid: Some(p("28145.1")),
            best_ask: Some(p("28145.2")),
            last_trade: None,
        }
    );

    // A source that has named only BTCUSDT (the bundled USDⓈ-M captures): unambiguous.
    let lines = vec![trade(BASE_MS, "BTCUSDT", "28145.10"), snapshot];
    let (items, stats) = run(&lines, ReaderOptions::default());
    assert_eq!((stats.total_problems(), stats.depth.snapshots), (0, 1));
    assert_eq!(items.len(), 2);
    assert!(matches!(
        items[1].command,
        Command::SetReferencePrices {
            instrument: InstrumentId(0),
            best_bid: Some(_),
            ..
        }
    ));
}

/// Issue 13, "Decimals rounded silently": `"6_3_9_4_5.12"` was accepted by the feed
/// parser, and so were `1e3`, `+1`, ` 1`, `.5`, `63943.`; more than 28 significant
/// digits were rounded. Every such field is a counted problem, never a number.
#[test]
fn feed_underscored_number_accepted() {
    let mut lines: Vec<String> = Vec::new();
    // Trade prices, one form per line (9 lines).
    let bad_prices = [
        ("6_3_9_4_5.12", Problem::BadNumber),
        ("1e3", Problem::BadNumber),
        ("+1", Problem::BadNumber),
        (" 1", Problem::BadNumber),
        (".5", Problem::BadNumber),
        ("63943.", Problem::BadNumber),
        // 30 digits: 10^29 × 10^8 raw does not fit a Price (i64).
        ("123456789012345678901234567890", Problem::BadNumber),
        // 29 significant digits, 29 decimals: past the 8 a price holds, not zeros.
        ("1.99999999999999999999999999999", Problem::TooPrecise),
        // 30 decimals, a tiny price that must not become 0.
        ("0.000000000000000000000000000001", Problem::TooPrecise),
    ];
    for (k, (text, _)) in bad_prices.iter().enumerate() {
        lines.push(trade(BASE_MS + k as u64, "BTCUSDT", text));
    }
    // A book ticker bid, a depth size and a funding rate with the same faults (3 lines).
    lines.push(format!(
        r#"1 {{"e":"bookTicker","E":{e},"T":{e},"s":"BTCUSDT","u":1,"b":"1_000","B":"1","a":"1001","A":"1"}}"#,
        e = BASE_MS + 10
    ));
    lines.push(format!(
        r#"1 {{"e":"depthUpdate","E":{e},"T":{e},"s":"BTCUSDT","U":1,"u":2,"pu":0,"b":[["28000.0",".5"]],"a":[]}}"#,
        e = BASE_MS + 11
    ));
    lines.push(format!(
        r#"1 {{"e":"markPriceUpdate","E":{e},"s":"BTCUSDT","p":"28000","P":"28000","i":"28000","r":"1e-4","T":{e}}}"#,
        e = BASE_MS + 12
    ));
    // The control: zeros past the scale are exact (exchanges pad), accepted as 63943.12.
    lines.push(trade(
        BASE_MS + 13,
        "BTCUSDT",
        "63943.12000000000000000000000",
    ));
    let (items, stats) = run(&lines, ReaderOptions::default());
    // 13 lines: 7 bad trade prices + 3 other fields = 10 bad_number; 2 too_precise; the
    // control is the one message and the one command.
    assert_eq!(stats.lines, 13);
    assert_eq!(stats.problems(Problem::BadNumber), 10);
    assert_eq!(stats.problems(Problem::TooPrecise), 2);
    assert_eq!(stats.total_problems(), 12);
    assert_eq!(stats.total_messages(), 1);
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0].command,
        Command::SetReferencePrices {
            instrument: InstrumentId(0),
            best_bid: None,
            best_ask: None,
            last_trade: Some(p("63943.12")),
        }
    );
    // Each form, alone, is refused with its kind.
    for (text, kind) in bad_prices {
        let (items, stats) = run(&[trade(BASE_MS, "BTCUSDT", text)], ReaderOptions::default());
        assert_eq!(
            (items.len(), stats.problems(kind), stats.total_problems()),
            (0, 1, 1),
            "{text:?}"
        );
    }
}
