//! The live adapter against a local websocket server (127.0.0.1, an ephemeral port) that
//! serves a recorded file's messages: the client converts them into exactly the commands a
//! file replay produces, reconnects after the server drops the connection, gives up after
//! bounded failed connects, and hands commands to a blocking sink through the bridge.

#![cfg(feature = "live")]

use futures_util::SinkExt as _;
use perpcore_feed::live::{self, LiveError, LiveOptions};
use perpcore_feed::{ConvertOptions, FeedItem, ReaderOptions, Replay};
use perpcore_types::{Command, Config};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

fn ticks_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .nth(2)
        .unwrap_or(here)
        .join("replay-fixtures/ticks")
}

const FILE: &str = "usdm_btcusdt_20230404.dat.gz";

fn config() -> Config {
    perpcore_config::load_path(&ticks_dir().join("config.toml")).expect("config")
}

/// The JSON part of every line of the recorded file (the recorder's prefix stripped: a
/// live frame is the exchange's JSON alone).
fn frames() -> Vec<String> {
    let r = perpcore_feed::lines::open_maybe_gzip(&ticks_dir().join(FILE)).expect("open");
    perpcore_feed::lines::read_all_lines(r)
        .expect("read")
        .into_iter()
        .filter_map(|l| l.split_once(' ').map(|(_, json)| json.to_string()))
        .collect()
}

fn file_commands() -> Vec<Command> {
    Replay::open(
        &[ticks_dir().join(FILE)],
        &config(),
        ReaderOptions::default(),
        ConvertOptions::default(),
    )
    .expect("replay")
    .map(|i| i.command)
    .collect()
}

/// Serves `parts[k]` to the k-th connection; every connection but the last is dropped
/// without a close frame after its part, the last one is closed properly.
async fn serve(parts: Vec<Vec<String>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let n = parts.len();
        for (k, part) in parts.into_iter().enumerate() {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            for f in part {
                if ws.send(Message::text(f)).await.is_err() {
                    return;
                }
            }
            if k + 1 == n {
                let _ = ws.close(None).await;
                // Let the client read the close before the socket goes away.
                tokio::time::sleep(Duration::from_millis(200)).await;
            } else {
                let _ = ws.flush().await;
                // Dropping the stream drops the TCP connection: no close handshake.
                drop(ws);
            }
        }
    });
    format!("ws://{addr}/stream")
}

fn options(url: String, max_connections: u64) -> LiveOptions {
    LiveOptions {
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        max_connections: Some(max_connections),
        max_failed_attempts: Some(20),
        ..LiveOptions::new(url)
    }
}

async fn collect(opts: LiveOptions) -> (Vec<FeedItem>, live::LiveStats) {
    let config = config();
    let (tx, mut rx) = mpsc::channel(64);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let client = tokio::spawn(async move { live::run(opts, &config, tx, stop_rx).await });
    let mut items = Vec::new();
    while let Some(i) = rx.recv().await {
        items.push(i);
    }
    let stats = client.await.expect("join").expect("live run");
    (items, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_client_converts_like_a_file_replay() {
    let frames = frames();
    let n = frames.len() as u64;
    let url = serve(vec![frames]).await;
    let (items, stats) = collect(options(url, 1)).await;
    let want = file_commands();
    assert_eq!(stats.connections, 1);
    assert_eq!(stats.frames, n);
    assert_eq!(stats.feed.total_problems(), 0, "{}", stats.feed.report());
    assert_eq!(items.len(), want.len());
    let got: Vec<Command> = items.into_iter().map(|i| i.command).collect();
    assert_eq!(got, want);
    assert_eq!(stats.commands, want.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_client_reconnects_after_a_drop() {
    let frames = frames();
    let half = frames.len() / 2;
    let (a, b) = (frames[..half].to_vec(), frames[half..].to_vec());
    let url = serve(vec![a, b]).await;
    let (items, stats) = collect(options(url, 2)).await;
    assert_eq!(stats.connections, 2, "{stats:?}");
    assert_eq!(stats.disconnects, 2);
    assert_eq!(stats.frames, frames.len() as u64);
    // Market data from both connections arrived; the depth book was reset on reconnect
    // (no snapshot on the second connection), so depth diffs there are only buffered.
    let marks = items
        .iter()
        .filter(|i| matches!(i.command, Command::SetMarkPrice { .. }))
        .count();
    assert_eq!(marks, 99);
    assert!(stats.feed.depth.buffered > 0);
    assert!(items.len() < file_commands().len() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_client_gives_up_after_bounded_failed_connects() {
    // A port that was bound and released: nothing listens there.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let opts = LiveOptions {
        max_failed_attempts: Some(3),
        ..options(format!("ws://{addr}/"), 1)
    };
    let (tx, _rx) = mpsc::channel(4);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let r = live::run(opts, &config(), tx, stop_rx).await;
    assert!(
        matches!(r, Err(LiveError::GaveUp { attempts: 3, .. })),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_hands_commands_to_a_blocking_sink_in_order() {
    let frames: Vec<String> = frames().into_iter().take(2000).collect();
    let url = serve(vec![frames]).await;
    let config = config();
    // A tiny channel and a slow sink: the client is held back, nothing is lost.
    let (tx, rx) = mpsc::channel(2);
    let (sink_tx, sink_rx) = std::sync::mpsc::sync_channel::<Command>(1);
    let bridge = live::spawn_submit_bridge(rx, move |c| sink_tx.send(c).is_ok()).expect("spawn");
    let consumer = std::thread::spawn(move || {
        let mut got = Vec::new();
        while let Ok(c) = sink_rx.recv() {
            if got.len() % 100 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            got.push(c);
        }
        got
    });
    let (_stop_tx, stop_rx) = watch::channel(false);
    let stats = live::run(options(url, 1), &config, tx, stop_rx)
        .await
        .expect("live run");
    let submitted = tokio::task::spawn_blocking(move || bridge.join().expect("bridge"))
        .await
        .expect("join");
    let got = tokio::task::spawn_blocking(move || consumer.join().expect("consumer"))
        .await
        .expect("join");
    assert_eq!(submitted, stats.commands);
    assert_eq!(got.len() as u64, stats.commands);
    assert!(stats.commands > 100);
}

// ---- issue 13, live client findings (reproductions) ----

use perpcore_types::Price;

/// What a scripted server connection does.
enum Step {
    Send(String),
    /// Keep the connection open and send nothing until the test stops the server.
    Silent,
    /// Wait (bounded) until the HTTP responder has served this many requests.
    AwaitServed(usize),
    Close,
}

fn mark(e_ms: u64, p: &str) -> String {
    format!(
        r#"{{"stream":"btcusdt@markPrice@1s","data":{{"e":"markPriceUpdate","E":{e_ms},"s":"BTCUSDT","p":"{p}","P":"{p}","i":"{p}","r":"0.00010000","T":1680681600000}}}}"#
    )
}

fn marks(items: &[FeedItem]) -> Vec<Price> {
    items
        .iter()
        .filter_map(|i| match i.command {
            Command::SetMarkPrice { price, .. } => Some(price),
            _ => None,
        })
        .collect()
}

fn px(s: &str) -> Price {
    Price::parse(s).expect("price")
}

/// Bound on any wait in these tests: a run that has not ended by then is a failure.
const BOUND: Duration = Duration::from_secs(20);

async fn scripted(
    scripts: Vec<Vec<Step>>,
    served: watch::Receiver<usize>,
) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        for script in scripts {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            for step in script {
                match step {
                    Step::Send(f) => {
                        if ws.send(Message::text(f)).await.is_err() {
                            break;
                        }
                    }
                    Step::Silent => std::future::pending::<()>().await,
                    Step::AwaitServed(n) => {
                        let mut served = served.clone();
                        let _ = tokio::time::timeout(BOUND, served.wait_for(|&k| k >= n)).await;
                    }
                    Step::Close => {
                        let _ = ws.close(None).await;
                        // Read until the client's close reply or the end (bounded).
                        let _ = tokio::time::timeout(BOUND, async {
                            while let Some(Ok(_)) = futures_util::StreamExt::next(&mut ws).await {}
                        })
                        .await;
                        break;
                    }
                }
            }
        }
    });
    (format!("ws://{addr}/stream"), task)
}

async fn run_bounded(opts: LiveOptions) -> (Vec<FeedItem>, live::LiveStats) {
    tokio::time::timeout(BOUND, collect(opts))
        .await
        .expect("the live client did not end within the bound")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_silent_peer_leaves_marks_stale() {
    let (_served_tx, served) = watch::channel(0usize);
    let (url, server) = scripted(
        vec![
            vec![
                Step::Send(mark(1_680_652_701_000, "28000.0")),
                Step::Send(mark(1_680_652_702_000, "28000.0")),
                Step::Send(mark(1_680_652_703_000, "28000.0")),
                Step::Silent,
            ],
            vec![Step::Send(mark(1_680_652_710_000, "28001.0")), Step::Close],
        ],
        served,
    )
    .await;
    let (items, _stats) = run_bounded(options(url, 2)).await;
    server.abort();
    let _ = server.await;
    // The second connection's mark arrived: the client left the silent peer.
    assert_eq!(marks(&items).last(), Some(&px("28001.0")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_accepts_64_mib_messages() {
    let (_served_tx, served) = watch::channel(0usize);
    let padded = |e_ms: u64, p: &str, bytes: usize| {
        let m = mark(e_ms, p);
        // A real message with one extra (ignored) field that makes it `bytes` long.
        let pad = "x".repeat(bytes.saturating_sub(m.len() + 12));
        format!("{},\"pad\":\"{pad}\"}}}}", &m[..m.len() - 2])
    };
    let under = padded(1_680_652_704_000, "28000.5", 900 << 10);
    let over = padded(1_680_652_705_000, "28001.0", 2 << 20);
    assert!(serde_json::from_str::<serde_json::Value>(&over).is_ok());
    let (url, server) = scripted(
        vec![
            vec![
                Step::Send(mark(1_680_652_701_000, "28000.0")),
                Step::Send(mark(1_680_652_702_000, "28000.0")),
                Step::Send(mark(1_680_652_703_000, "28000.0")),
                Step::Send(under),
                Step::Send(over),
                Step::Send(mark(1_680_652_706_000, "28002.0")),
                Step::Close,
            ],
            vec![Step::Send(mark(1_680_652_710_000, "28003.0")), Step::Close],
        ],
        served,
    )
    .await;
    let (items, _stats) = run_bounded(options(url, 2)).await;
    server.abort();
    let _ = server.await;
    let got = marks(&items);
    assert!(got.contains(&px("28000.5")), "{got:?}");
    assert!(
        !got.contains(&px("28001.0")),
        "a 2 MiB message was accepted"
    );
    assert_eq!(got.last(), Some(&px("28003.0")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_implausible_mark_liquidates_every_long() {
    let (_served_tx, served) = watch::channel(0usize);
    let prices = [
        "28000.0",
        "28000.0",
        "28000.0",
        "0.00000001",
        "28010.0",
        "40000.0",
        "40000.0",
        "40001.0",
    ];
    let mut script: Vec<Step> = prices
        .iter()
        .enumerate()
        .map(|(k, p)| Step::Send(mark(1_680_652_701_000 + 1000 * k as u64, p)))
        .collect();
    script.push(Step::Close);
    let (url, server) = scripted(vec![script], served).await;
    let (items, _stats) = run_bounded(options(url, 1)).await;
    server.abort();
    let _ = server.await;
    let index: Vec<Price> = items
        .iter()
        .filter_map(|i| match i.command {
            Command::SetIndexPrice { price, .. } => Some(price),
            _ => None,
        })
        .collect();
    // The lone outlier is never applied; the sustained move is, once confirmed.
    let want = vec![px("28000.0"), px("28010.0"), px("40001.0")];
    assert_eq!(marks(&items), want);
    assert_eq!(index, want);
}

fn diff(e_ms: u64, first: u64, last: u64, prev: u64, bid: &str, ask: &str) -> String {
    format!(
        r#"{{"stream":"btcusdt@depth@0ms","data":{{"e":"depthUpdate","E":{e_ms},"T":{e_ms},"s":"BTCUSDT","U":{first},"u":{last},"pu":{prev},"b":[{bid}],"a":[{ask}]}}}}"#
    )
}

fn tops(items: &[FeedItem]) -> Vec<(Price, Price)> {
    items
        .iter()
        .filter_map(|i| match i.command {
            Command::SetReferencePrices {
                best_bid: Some(b),
                best_ask: Some(a),
                ..
            } => Some((b, a)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_book_never_syncs() {
    let (_served_tx, served) = watch::channel(0usize);
    let (url, server) = scripted(
        vec![vec![
            Step::Send(diff(1_680_652_701_000, 1, 10, 0, r#"["27999.0","1"]"#, "")),
            Step::Send(diff(
                1_680_652_701_100,
                11,
                20,
                10,
                r#"["28000.0","2"]"#,
                "",
            )),
            Step::AwaitServed(1),
            Step::Send(diff(
                1_680_652_701_200,
                21,
                30,
                20,
                "",
                r#"["28000.5","1"]"#,
            )),
            Step::Send(diff(
                1_680_652_701_300,
                31,
                40,
                30,
                r#"["28000.0","0"]"#,
                "",
            )),
            Step::Close,
        ]],
        served,
    )
    .await;
    let (items, _stats) = run_bounded(options(url, 1)).await;
    server.abort();
    let _ = server.await;
    // Snapshot at 15: bids 27999.0 (from the snapshot), 28000.0 (diff 11..20, then removed
    // by 31..40); asks 28001.0 (snapshot), 28000.5 (diff 21..30).
    assert_eq!(
        tops(&items).last(),
        Some(&(px("27999.0"), px("28000.5"))),
        "the live book never synced"
    );
}
