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
