//! The recorded format: every message kind parsed from real lines (copied verbatim from
//! the bundled captures in replay-fixtures/ticks/, except `aggTrade`, which the captures
//! lack: that line follows Binance's documented payload), their commands, problem counting
//! by kind, the merge, gzip and plain input, and a property test that no line panics.

use perpcore_feed::{
    parse_line, Body, ConvertOptions, Converter, FeedItem, Merge, Problem, Reader, ReaderOptions,
    Replay,
};
use perpcore_types::{Command, Config, InstrumentId, Price, Qty, Rate};
use proptest::prelude::*;
use std::io::Write as _;
use std::path::{Path, PathBuf};

const BRIDGE: &str = r#"1680652700600379 {"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":1680652700594,"T":1680652700586,"s":"BTCUSDT","U":2710246765373,"u":2710246765597,"pu":2710246765326,"b":[["5000.00","14.368"],["28018.90","0.000"],["28049.60","0.288"],["28080.20","3.000"]],"a":[["28145.20","6.961"],["28173.30","0.015"],["28220.30","0.424"]]}}"#;
const DEPTH: &str = r#"1680652700600379 {"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":1680652700610,"T":1680652700603,"s":"BTCUSDT","U":2710246765629,"u":2710246765882,"pu":2710246765597,"b":[["28018.90","0.080"],["28080.20","3.080"],["28117.00","0.223"]],"a":[["28220.20","0.452"],["28250.90","1.431"],["28281.50","0.081"]]}}"#;
const DEPTH_NEXT: &str = r#"1680652700618593 {"stream":"btcusdt@depth@0ms","data":{"e":"depthUpdate","E":1680652700628,"T":1680652700614,"s":"BTCUSDT","U":2710246765966,"u":2710246766123,"pu":2710246765882,"b":[],"a":[["28173.30","0.014"],["28989.60","0.650"]]}}"#;
const MARK: &str = r#"1680652701048293 {"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1680652701000,"s":"BTCUSDT","p":"28147.27373413","P":"28142.15563565","i":"28159.75642857","r":"0.00002754","T":1680652800000}}"#;
const TRADE: &str = r#"1723161256419684465 {"stream":"btcusd_perp@trade","data":{"e":"trade","E":1723161257687,"T":1723161257679,"s":"BTCUSD_PERP","t":849714402,"p":"61804.8","q":"4","X":"MARKET","m":false}}"#;
const TICKER: &str = r#"1723161256207640365 {"stream":"btcusd_perp@bookTicker","data":{"u":1007198632021,"e":"bookTicker","s":"BTCUSD_PERP","ps":"BTCUSD","b":"61804.7","B":"35","a":"61804.8","A":"1645","T":1723161257465,"E":1723161257476}}"#;
const AGG: &str = r#"1723161256500000000 {"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1723161257700,"s":"BTCUSDT","a":5933014,"p":"61800.30","q":"0.006","f":100,"l":105,"T":1723161257699,"m":true}}"#;
/// The USDⓈ-M REST snapshot has no symbol (cut to two levels per side).
const SNAPSHOT: &str = r#"1680652700599351 {"lastUpdateId": 2710246765483, "E": 1680652700590, "T": 1680652700580, "bids": [["28145.10", "3.818"], ["28145.00", "0.413"]], "asks": [["28145.20", "6.880"], ["28145.30", "0.002"]]}"#;

fn root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(2).unwrap_or(here).to_path_buf()
}

fn ticks_config() -> Config {
    perpcore_config::load_path(&root().join("replay-fixtures/ticks/config.toml"))
        .expect("ticks config")
}

fn p(s: &str) -> Price {
    Price::parse(s).unwrap()
}

#[test]
fn every_kind_parses_from_real_lines() {
    let (local, d) = parse_line(DEPTH).unwrap();
    assert_eq!(local, 1680652700600379);
    assert_eq!(d.exchange_ns, Some(1680652700610 * 1_000_000));
    let Body::Depth(u) = d.body else {
        panic!("not depth")
    };
    assert_eq!(
        (u.symbol.as_str(), u.first_id, u.last_id, u.prev_last_id),
        ("BTCUSDT", 2710246765629, 2710246765882, Some(2710246765597))
    );
    assert_eq!(u.bids[1], (p("28080.2"), Qty::parse("3.08").unwrap()));
    assert_eq!(u.asks.len(), 3);

    let (_, m) = parse_line(MARK).unwrap();
    assert_eq!(
        m.body,
        Body::MarkPrice {
            symbol: "BTCUSDT".into(),
            mark: p("28147.27373413"),
            index: p("28159.75642857"),
            funding_rate: Rate::parse("0.00002754").unwrap(),
            next_funding_ns: 1680652800000 * 1_000_000,
        }
    );
    assert_eq!(m.exchange_ns, Some(1680652701000 * 1_000_000));

    let (_, t) = parse_line(TRADE).unwrap();
    assert_eq!(
        t.body,
        Body::Trade {
            symbol: "BTCUSD_PERP".into(),
            price: p("61804.8"),
            aggregated: false
        }
    );
    assert_eq!(t.exchange_ns, Some(1723161257687 * 1_000_000));

    let (_, a) = parse_line(AGG).unwrap();
    assert_eq!(
        a.body,
        Body::Trade {
            symbol: "BTCUSDT".into(),
            price: p("61800.3"),
            aggregated: true
        }
    );

    let (_, b) = parse_line(TICKER).unwrap();
    assert_eq!(
        b.body,
        Body::BookTicker {
            symbol: "BTCUSD_PERP".into(),
            bid: p("61804.7"),
            ask: p("61804.8")
        }
    );

    let (_, s) = parse_line(SNAPSHOT).unwrap();
    let Body::Snapshot(s) = s.body else {
        panic!("not a snapshot")
    };
    assert_eq!(s.symbol, None);
    assert_eq!(s.last_update_id, 2710246765483);
    assert_eq!(s.bids[0].0, p("28145.1"));
}

fn convert_all(config: &Config, text: String) -> (Vec<FeedItem>, perpcore_feed::FeedStats) {
    let reader = Reader::from_text("t", text, 0, ReaderOptions::default());
    let mut replay = Replay::from_readers(vec![reader], config, ConvertOptions::default());
    let items: Vec<FeedItem> = replay.by_ref().collect();
    (items, replay.stats())
}

#[test]
fn messages_become_commands() {
    let config = ticks_config();
    let btc = InstrumentId(0);
    let btcusd = InstrumentId(2);
    // Snapshot (symbol from the depth line after it), three diffs, mark, trade, ticker.
    let text = [
        SNAPSHOT, BRIDGE, DEPTH, DEPTH_NEXT, MARK, TRADE, TRADE, TICKER, AGG,
    ]
    .join("\n");
    let (items, stats) = convert_all(&config, text);
    let cmds: Vec<&Command> = items.iter().map(|i| &i.command).collect();
    // The snapshot's top; the diffs (the first bridges lastUpdateId 2710246765483) touch
    // no best price, so nothing more from the book.
    assert_eq!(
        cmds[0],
        &Command::SetReferencePrices {
            instrument: btc,
            best_bid: Some(p("28145.1")),
            best_ask: Some(p("28145.2")),
            last_trade: None
        }
    );
    // The funding rate first (the engine settles a funding time at the rate of the first
    // update after it), then the mark and the index.
    assert_eq!(
        cmds[1],
        &Command::SetFundingRate {
            instrument: btc,
            rate: Rate::parse("0.00002754").unwrap(),
            next_funding_ns: 1_680_652_800_000_000_000
        }
    );
    assert_eq!(
        cmds[2],
        &Command::SetMarkPrice {
            instrument: btc,
            price: p("28147.27373413")
        }
    );
    assert_eq!(
        cmds[3],
        &Command::SetIndexPrice {
            instrument: btc,
            price: p("28159.75642857")
        }
    );
    // The repeated trade at the same price is not re-emitted.
    assert_eq!(
        cmds[4],
        &Command::SetReferencePrices {
            instrument: btcusd,
            best_bid: None,
            best_ask: None,
            last_trade: Some(p("61804.8"))
        }
    );
    assert_eq!(
        cmds[5],
        &Command::SetReferencePrices {
            instrument: btcusd,
            best_bid: Some(p("61804.7")),
            best_ask: Some(p("61804.8")),
            last_trade: None
        }
    );
    assert_eq!(
        cmds[6],
        &Command::SetReferencePrices {
            instrument: btc,
            best_bid: None,
            best_ask: None,
            last_trade: Some(p("61800.3"))
        }
    );
    assert_eq!(cmds.len(), 7);
    assert_eq!(stats.depth.snapshots, 1);
    assert_eq!(stats.depth.applied, 3);
    assert_eq!(stats.total_problems(), 0);
    // Every command carries its message's exchange time.
    assert_eq!(items[1].exchange_ns, 1680652701000 * 1_000_000);
}

#[test]
fn problems_are_counted_by_kind_and_never_stop_the_replay() {
    let config = ticks_config();
    let lines = [
        MARK.to_string(),
        "garbage without prefix".into(),
        "123 {not json".into(),
        r#"123 {"e":"kline","E":1,"s":"BTCUSDT"}"#.into(),
        r#"123 {"e":"trade","E":1680652701001,"s":"BTCUSDT"}"#.into(),
        r#"123 {"e":"trade","E":1680652701001,"s":"BTCUSDT","p":"28452.234565221"}"#.into(),
        r#"123 {"e":"trade","E":1680652701001,"s":"BTCUSDT","p":"-1"}"#.into(),
        r#"123 {"e":"trade","E":1680652701001,"s":"DOGEUSDT","p":"0.1"}"#.into(),
        // 2 s behind the latest exchange time: beyond the 1 s tolerance.
        r#"123 {"e":"trade","E":1680652699000,"s":"BTCUSDT","p":"28000"}"#.into(),
        // 0.5 s behind: within the tolerance, kept.
        r#"123 {"e":"trade","E":1680652700500,"s":"BTCUSDT","p":"28452.23456522"}"#.into(),
        MARK.replace("1680652701000", "1680652702000"),
    ];
    let (items, stats) = convert_all(&config, lines.join("\n"));
    let count = |p| stats.problems(p);
    assert_eq!(count(Problem::BadPrefix), 1);
    assert_eq!(count(Problem::BadJson), 1);
    assert_eq!(count(Problem::UnknownEvent), 1);
    assert_eq!(count(Problem::BadField), 1);
    assert_eq!(count(Problem::TooPrecise), 1);
    assert_eq!(count(Problem::BadNumber), 1);
    assert_eq!(count(Problem::UnknownSymbol), 1);
    assert_eq!(count(Problem::OutOfOrder), 1);
    assert_eq!(stats.first_line(Problem::OutOfOrder), Some(9));
    assert_eq!(stats.total_problems(), 8);
    assert_eq!(stats.lines, 11);
    // Both marks (3 commands each) and the in-tolerance trade got through.
    assert_eq!(items.len(), 7);
    assert!(items.iter().any(|i| i.command
        == Command::SetReferencePrices {
            instrument: InstrumentId(0),
            best_bid: None,
            best_ask: None,
            last_trade: Some(p("28452.23456522"))
        }));
    let report = stats.report();
    assert_eq!(report.problems.get("too_precise"), Some(&1));
    assert!(report.to_string().contains("out_of_order 1"));
}

#[test]
fn depth_gaps_and_stale_diffs_are_counted() {
    let config = ticks_config();
    // Snapshot, bridging diff, the same diff again (stale), then a diff whose pu skips.
    let skipped = DEPTH_NEXT.replace("\"pu\":2710246765882", "\"pu\":2710246765000");
    let text = [SNAPSHOT, BRIDGE, DEPTH, DEPTH, &skipped, DEPTH_NEXT].join("\n");
    let (_, stats) = convert_all(&config, text);
    assert_eq!(stats.depth.applied, 2);
    assert_eq!(stats.depth.stale, 1);
    assert_eq!(stats.depth.gaps, 1);
    // After the gap the book waits for a snapshot: the good diff is only buffered.
    assert_eq!(stats.depth.buffered, 2);
}

#[test]
fn gzip_and_plain_files_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let text = [SNAPSHOT, BRIDGE, MARK, TRADE, TICKER, AGG].join("\n") + "\n";
    let plain = dir.path().join("x.txt");
    std::fs::write(&plain, &text).unwrap();
    let gz = dir.path().join("x.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(text.as_bytes()).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let config = ticks_config();
    let run = |path: &Path| {
        let mut r = Replay::open(
            &[path.to_path_buf()],
            &config,
            ReaderOptions::default(),
            ConvertOptions::default(),
        )
        .unwrap();
        let items: Vec<FeedItem> = r.by_ref().collect();
        (items, r.stats())
    };
    let (a, sa) = run(&plain);
    let (b, sb) = run(&gz);
    assert_eq!(a, b);
    assert_eq!(sa, sb);
    assert_eq!(sa.lines, 6);
    assert_eq!(a.len(), 7);
    assert!(Replay::open(
        &[dir.path().join("missing.gz")],
        &config,
        ReaderOptions::default(),
        ConvertOptions::default()
    )
    .is_err());
}

#[test]
fn merge_orders_files_by_exchange_time() {
    let a = [MARK, &MARK.replace("1680652701000", "1680652703000")].join("\n");
    let b = [
        DEPTH,
        DEPTH_NEXT,
        &MARK.replace("1680652701000", "1680652702000"),
    ]
    .join("\n");
    let merged: Vec<(u16, u64)> = Merge::new(vec![
        Reader::from_text("a", a, 0, ReaderOptions::default()),
        Reader::from_text("b", b, 1, ReaderOptions::default()),
    ])
    .map(|m| (m.source, m.exchange_ns / 1_000_000))
    .collect();
    assert_eq!(
        merged,
        vec![
            (1, 1680652700610),
            (1, 1680652700628),
            (0, 1680652701000),
            (1, 1680652702000),
            (0, 1680652703000)
        ]
    );
}

#[test]
fn a_long_line_is_skipped_with_bounded_memory() {
    let config = ticks_config();
    let long = format!("1 {{\"e\":\"trade\",\"pad\":\"{}\"}}", "x".repeat(10_000));
    let text = [MARK, &long, MARK].join("\n");
    let reader = Reader::from_text(
        "t",
        text,
        0,
        ReaderOptions {
            max_line: 1_000,
            ..ReaderOptions::default()
        },
    );
    let mut replay = Replay::from_readers(vec![reader], &config, ConvertOptions::default());
    assert_eq!(replay.by_ref().count(), 6);
    assert_eq!(replay.stats().problems(Problem::LineTooLong), 1);
}

#[test]
fn converter_counts_a_snapshot_for_an_unknown_symbol() {
    let config = ticks_config();
    let mut c = Converter::new(&config, ConvertOptions::default());
    let mut out = Vec::new();
    let (_, parsed) = parse_line(&TICKER.replace("BTCUSD_PERP", "XRPUSD_PERP")).unwrap();
    c.convert(
        perpcore_feed::Message {
            source: 0,
            line: 1,
            local_ts: 0,
            exchange_ns: parsed.exchange_ns.unwrap(),
            body: parsed.body,
        },
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!(c.stats().problems(Problem::UnknownSymbol), 1);
}

/// Lines that look like the format: a prefix, then JSON built from the real kinds with
/// fields mutated.
fn line_strategy() -> impl Strategy<Value = String> {
    let real = prop::sample::select(vec![
        BRIDGE, DEPTH, DEPTH_NEXT, MARK, TRADE, TICKER, AGG, SNAPSHOT,
    ]);
    prop_oneof![
        any::<String>(),
        "[0-9]{0,25} .{0,200}",
        (real.clone(), any::<usize>(), ".{0,5}").prop_map(|(l, at, s)| {
            let cut = at % (l.len() + 1);
            let cut = (0..=cut)
                .rev()
                .find(|i| l.is_char_boundary(*i))
                .unwrap_or(0);
            format!("{}{}{}", &l[..cut], s, &l[cut..])
        }),
        (real, "-?[0-9]{0,22}(\\.[0-9]{0,14})?").prop_map(|(l, n)| {
            l.replace("28147.27373413", &n)
                .replace("61804.8", &n)
                .replace("1680652700610", &n)
                .replace("2710246765882", &n)
        }),
    ]
}

proptest! {
    #![proptest_config(perpcore_testkit::prop::config(512))]

    #[test]
    fn arbitrary_lines_never_panic(lines in prop::collection::vec(line_strategy(), 1..20)) {
        let config = ticks_config();
        let (_, stats) = convert_all(&config, lines.join("\n"));
        // Every non-blank line is a message or a counted problem (or both: a message for
        // an unknown symbol).
        prop_assert!(stats.total_messages() + stats.total_problems() >= stats.lines);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2000)) {
        let config = ticks_config();
        let reader = Reader::from_bufread(
            "b".into(),
            Box::new(std::io::Cursor::new(bytes)),
            0,
            ReaderOptions::default(),
        );
        let mut replay = Replay::from_readers(vec![reader], &config, ConvertOptions::default());
        let _ = replay.by_ref().count();
        let _ = replay.stats().report().to_string();
    }
}
