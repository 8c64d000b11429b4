//! The live adapter against a local websocket server (127.0.0.1, an ephemeral port) that
//! serves a recorded file's messages: the client converts them into exactly the commands a
//! file replay produces (less the marks the plausibility guard holds at start), reconnects
//! after the server drops the connection, gives up after bounded failed connects, and
//! hands commands to a blocking sink through the bridge.
//!
//! Then issue 13's live-client findings, each against a scripted websocket server and a
//! tiny HTTP responder on 127.0.0.1: a silent peer (idle timeout, reconnect), a peer that
//! never completes the handshake (connect timeout), an oversized message (refused,
//! counted, reconnect), an implausible mark (held, dropped; a sustained move confirmed),
//! and the depth book synced from a REST snapshot (and resynced after a gap, and silent
//! when the snapshot fails). Every wait is bounded by [`BOUND`] and every server task is
//! aborted at the end; no assertion depends on timing.

#![cfg(feature = "live")]

use futures_util::{SinkExt as _, StreamExt as _};
use perpcore_feed::live::{self, LiveError, LiveOptions, SnapshotOptions};
use perpcore_feed::{ConvertOptions, FeedItem, GuardStats, ReaderOptions, Replay};
use perpcore_types::{Command, Config, Price};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
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
        // The recorded stream carries its own REST snapshots.
        snapshot: None,
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
    // The file replay's commands less what the plausibility guard holds: the first mark
    // and the first index price of the instrument, each waiting for two agreeing updates.
    // No later update of the capture moves 10% (nothing else held or dropped).
    let mut first = 0;
    let want: Vec<Command> = file_commands()
        .into_iter()
        .filter(|c| {
            let guarded = matches!(
                c,
                Command::SetMarkPrice { .. } | Command::SetIndexPrice { .. }
            );
            first += usize::from(guarded);
            !guarded || first > 4
        })
        .collect();
    assert_eq!(
        stats.guard,
        GuardStats {
            held: 2,
            dropped: 0,
            confirmed: 2
        }
    );
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
    // 99 marks, less the first two the guard held (its state outlives the reconnect).
    assert_eq!(marks, 97);
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

// ---- issue 13, live client findings: a scripted websocket server and HTTP responder ----

/// What a scripted server connection does.
enum Step {
    Send(String),
    /// Keep the connection open and send nothing until the test stops the server.
    Silent,
    /// Wait (bounded) until the HTTP responder has answered this many requests.
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

/// Runs `scripts[k]` on the k-th websocket connection (then accepts no more).
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
                    Step::Silent => {
                        // Reads (so the client's close is seen) but never sends data.
                        let _ = tokio::time::timeout(BOUND, async {
                            while let Some(Ok(_)) = ws.next().await {}
                        })
                        .await;
                        break;
                    }
                    Step::AwaitServed(n) => {
                        let mut served = served.clone();
                        let _ = tokio::time::timeout(BOUND, served.wait_for(|&k| k >= n)).await;
                    }
                    Step::Close => {
                        let _ = ws.close(None).await;
                        // Read until the client's close reply or the end (bounded).
                        let _ = tokio::time::timeout(BOUND, async {
                            while let Some(Ok(_)) = ws.next().await {}
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

/// A tiny HTTP/1.1 responder: answers the k-th request with `answers[k]` (status, body),
/// later ones with 503; records each request line and counts answers in `served`.
async fn http_responder(
    answers: Vec<(u16, String)>,
    served: watch::Sender<usize>,
) -> (String, Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&requests);
    let task = tokio::spawn(async move {
        for k in 0.. {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
                match tokio::time::timeout(BOUND, tcp.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            let line = String::from_utf8_lossy(&head)
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            seen.lock().expect("lock").push(line);
            let (status, body) = answers.get(k).cloned().unwrap_or((503, String::from("{}")));
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tcp.write_all(reply.as_bytes()).await;
            let _ = tcp.shutdown().await;
            served.send_modify(|n| *n += 1);
        }
    });
    (format!("http://{addr}"), requests, task)
}

/// Runs the client until it ends by itself or `stop(items so far)` holds (then it is
/// shut down); a run that does neither within [`BOUND`] is shut down and fails the test.
async fn run_until(
    opts: LiveOptions,
    stop: impl Fn(&[FeedItem]) -> bool,
) -> (Vec<FeedItem>, live::LiveStats) {
    let config = config();
    let (tx, mut rx) = mpsc::channel(64);
    let (stop_tx, stop_rx) = watch::channel(false);
    let client = tokio::spawn(async move { live::run(opts, &config, tx, stop_rx).await });
    let mut items = Vec::new();
    let ended = tokio::time::timeout(BOUND, async {
        while let Some(i) = rx.recv().await {
            items.push(i);
            if stop(&items) {
                let _ = stop_tx.send(true);
            }
        }
    })
    .await;
    if ended.is_err() {
        let _ = stop_tx.send(true);
        let _ = client.await;
        panic!("the live client did not end within {BOUND:?}");
    }
    let stats = client.await.expect("join").expect("live run");
    (items, stats)
}

async fn stop(task: tokio::task::JoinHandle<()>) {
    task.abort();
    let _ = task.await;
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
    let opts = LiveOptions {
        idle_timeout: Duration::from_millis(300),
        ..options(url, 2)
    };
    let (items, stats) = run_until(opts, |_| false).await;
    stop(server).await;
    // The client left the silent peer and took the second connection's mark.
    assert_eq!(marks(&items), vec![px("28000.0"), px("28001.0")]);
    assert_eq!(stats.idle_timeouts, 1, "{stats:?}");
    assert_eq!(stats.connections, 2);
    assert_eq!(stats.reconnects, 1);
    assert_eq!(stats.disconnects, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_connect_times_out_on_a_peer_that_never_answers() {
    // A TCP listener that accepts and never speaks: the websocket handshake never ends.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let opts = LiveOptions {
        connect_timeout: Duration::from_millis(200),
        max_failed_attempts: Some(2),
        ..options(format!("ws://{addr}/"), 1)
    };
    let (tx, _rx) = mpsc::channel(4);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let r = tokio::time::timeout(BOUND, live::run(opts, &config(), tx, stop_rx))
        .await
        .expect("the connect timeout did not end the run within the bound");
    stop(server).await;
    assert!(
        matches!(&r, Err(LiveError::GaveUp { attempts: 2, last, .. }) if last.contains("no connection within")),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_accepts_64_mib_messages() {
    let (_served_tx, served) = watch::channel(0usize);
    let padded = |e_ms: u64, p: &str, bytes: usize| {
        let m = mark(e_ms, p);
        // A real message with one extra (ignored) field that makes it `bytes` long.
        let pad = "x".repeat(bytes.saturating_sub(m.len() + 10));
        format!("{},\"pad\":\"{pad}\"}}}}", &m[..m.len() - 2])
    };
    let under = padded(1_680_652_704_000, "28000.5", 900 << 10);
    let over = padded(1_680_652_705_000, "28001.0", 2 << 20);
    assert!(serde_json::from_str::<serde_json::Value>(&over).is_ok());
    assert!(under.len() < live::DEFAULT_MAX_MESSAGE_BYTES);
    assert!(over.len() > live::DEFAULT_MAX_MESSAGE_BYTES);
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
    let (items, stats) = run_until(options(url, 2), |_| false).await;
    stop(server).await;
    // 900 KiB passes; 2 MiB ends the connection (so 28002.0 behind it is never read) and
    // the client reconnects.
    assert_eq!(
        marks(&items),
        vec![px("28000.0"), px("28000.5"), px("28003.0")]
    );
    assert_eq!(stats.oversize, 1, "{stats:?}");
    assert_eq!(stats.connections, 2);
    assert_eq!(stats.frames, 5);
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
        .zip(0u64..)
        .map(|(p, k)| Step::Send(mark(1_680_652_701_000 + 1000 * k, p)))
        .collect();
    script.push(Step::Close);
    let (url, server) = scripted(vec![script], served).await;
    let (items, stats) = run_until(options(url, 1), |_| false).await;
    stop(server).await;
    let index: Vec<Price> = items
        .iter()
        .filter_map(|i| match i.command {
            Command::SetIndexPrice { price, .. } => Some(price),
            _ => None,
        })
        .collect();
    // The first value waits for two agreeing updates; the lone outlier is never applied;
    // the sustained move to 40,000 is, once confirmed twice.
    let want = vec![px("28000.0"), px("28010.0"), px("40001.0")];
    assert_eq!(marks(&items), want);
    assert_eq!(index, want);
    // Per series (mark and index): held 28000, 0.00000001, 40000; dropped the outlier;
    // confirmed 28000 and 40001.
    assert_eq!(
        stats.guard,
        GuardStats {
            held: 6,
            dropped: 2,
            confirmed: 4
        }
    );
    // Funding is not guarded: every update's rate went through.
    let funding = items
        .iter()
        .filter(|i| matches!(i.command, Command::SetFundingRate { .. }))
        .count();
    assert_eq!(funding, prices.len());
}

fn diff(e_ms: u64, first: u64, last: u64, prev: u64, bid: &str, ask: &str) -> String {
    format!(
        r#"{{"stream":"btcusdt@depth@0ms","data":{{"e":"depthUpdate","E":{e_ms},"T":{e_ms},"s":"BTCUSDT","U":{first},"u":{last},"pu":{prev},"b":[{bid}],"a":[{ask}]}}}}"#
    )
}

/// A USDⓈ-M REST snapshot (no symbol: the client knows which one it asked for).
fn snapshot_body(last_update_id: u64, e_ms: u64) -> String {
    format!(
        r#"{{"lastUpdateId":{last_update_id},"E":{e_ms},"T":{e_ms},"bids":[["27999.0","1"]],"asks":[["28001.0","1"]]}}"#
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

fn snapshot_options(base_url: String) -> SnapshotOptions {
    SnapshotOptions {
        retry_delay: Duration::from_millis(10),
        max_attempts: 3,
        ..SnapshotOptions::new(base_url)
    }
}

/// The four diffs of the book tests: 1..10 (stale for a snapshot at 15), 11..20 (bridges
/// it: bid 28000.0), 21..30 (ask 28000.5), 31..40 (removes bid 28000.0).
fn four_diffs() -> [String; 4] {
    [
        diff(1_680_652_701_000, 1, 10, 0, r#"["27000.0","1"]"#, ""),
        diff(1_680_652_701_100, 11, 20, 10, r#"["28000.0","2"]"#, ""),
        diff(1_680_652_701_200, 21, 30, 20, "", r#"["28000.5","1"]"#),
        diff(1_680_652_701_300, 31, 40, 30, r#"["28000.0","0"]"#, ""),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_book_never_syncs() {
    let (served_tx, served) = watch::channel(0usize);
    let (base, requests, http) =
        http_responder(vec![(200, snapshot_body(15, 1_680_652_701_050))], served_tx).await;
    let [d1, d2, d3, d4] = four_diffs();
    let (url, server) = scripted(
        vec![vec![
            Step::Send(d1),
            Step::Send(d2),
            Step::AwaitServed(1),
            Step::Send(d3),
            Step::Send(d4),
            Step::Silent,
        ]],
        served,
    )
    .await;
    let want = (px("27999.0"), px("28000.5"));
    let opts = LiveOptions {
        snapshot: Some(snapshot_options(base)),
        ..options(url, 1)
    };
    let (items, stats) = run_until(opts, |items| tops(items).last() == Some(&want)).await;
    stop(server).await;
    stop(http).await;
    // Snapshot at 15: bid 27999.0 and ask 28001.0; 1..10 is stale (its bid 27000.0 never
    // shows), 11..20 bridges, 21..30 and 31..40 follow by `pu`.
    assert_eq!(
        tops(&items).last(),
        Some(&want),
        "the live book never synced"
    );
    assert_eq!(
        requests.lock().expect("lock").as_slice(),
        ["GET /fapi/v1/depth?symbol=BTCUSDT&limit=1000 HTTP/1.1"]
    );
    assert_eq!((stats.snapshot_requests, stats.snapshot_failures), (1, 0));
    let depth = &stats.feed.depth;
    assert_eq!((depth.snapshots, depth.stale, depth.applied), (1, 1, 3));
    assert_eq!(depth.gaps, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_book_stays_unsynced_and_silent_when_the_snapshot_fails() {
    let (served_tx, served) = watch::channel(0usize);
    // A server error, a body that is not a snapshot, a truncated snapshot.
    let (base, _requests, http) = http_responder(
        vec![
            (500, String::from("{}")),
            (200, mark(1_680_652_701_000, "28000.0")),
            (
                200,
                String::from(r#"{"lastUpdateId":15,"bids":[["27999.0","1"]"#),
            ),
        ],
        served_tx,
    )
    .await;
    let [d1, d2, d3, d4] = four_diffs();
    let (url, server) = scripted(
        vec![vec![
            Step::Send(d1),
            Step::AwaitServed(3),
            Step::Send(d2),
            Step::Send(d3),
            Step::Send(d4),
            Step::Close,
        ]],
        served,
    )
    .await;
    let opts = LiveOptions {
        snapshot: Some(snapshot_options(base)),
        ..options(url, 1)
    };
    let (items, stats) = run_until(opts, |_| false).await;
    stop(server).await;
    stop(http).await;
    // Three attempts (the bound), none synced: the book emitted nothing.
    assert_eq!(tops(&items), vec![]);
    assert_eq!((stats.snapshot_requests, stats.snapshot_failures), (3, 3));
    let depth = &stats.feed.depth;
    assert_eq!((depth.snapshots, depth.applied, depth.buffered), (0, 0, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_book_resyncs_after_a_gap() {
    let (served_tx, served) = watch::channel(0usize);
    let (base, _requests, http) = http_responder(
        vec![
            (200, snapshot_body(15, 1_680_652_701_050)),
            (200, snapshot_body(55, 1_680_652_701_450)),
        ],
        served_tx,
    )
    .await;
    let [d1, d2, d3, d4] = four_diffs();
    let (url, server) = scripted(
        vec![vec![
            Step::Send(d1),
            Step::Send(d2),
            Step::AwaitServed(1),
            Step::Send(d3),
            Step::Send(d4),
            // 41..50 is missing: a gap; the book clears, asks again, and 51..60 bridges
            // the second snapshot (at 55).
            Step::Send(diff(
                1_680_652_701_500,
                51,
                60,
                50,
                "",
                r#"["28000.5","0"]"#,
            )),
            Step::AwaitServed(2),
            Step::Send(diff(
                1_680_652_701_600,
                61,
                70,
                60,
                r#"["27999.5","3"]"#,
                "",
            )),
            Step::Silent,
        ]],
        served,
    )
    .await;
    let opts = LiveOptions {
        snapshot: Some(snapshot_options(base)),
        ..options(url, 1)
    };
    // After the resync: bid 27999.5 (61..70) over the snapshot's 27999.0; ask 28001.0
    // (the snapshot's; 51..60 removed 28000.5, which the second snapshot lacks anyway).
    let want = (px("27999.5"), px("28001.0"));
    let (items, stats) = run_until(opts, |items| tops(items).last() == Some(&want)).await;
    stop(server).await;
    stop(http).await;
    assert_eq!(tops(&items).last(), Some(&want));
    assert_eq!((stats.snapshot_requests, stats.snapshot_failures), (2, 0));
    let depth = &stats.feed.depth;
    assert_eq!((depth.snapshots, depth.gaps), (2, 1), "{depth:?}");
}
