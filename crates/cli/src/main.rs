//! The `perpcore` binary: argument parsing and printing only.
//!
//! Owns the command line (`perpcore scenario|run|serve|node|publish|replay|audit|inspect|snapshot|campaign|bench`),
//! where output goes (event, report and hash lines to stdout as they happen, errors to stderr as
//! `error: FILE:LINE: message`) and the exit code (0 success, 1 failure). All work is in
//! the libraries (the scenario runner is `perpcore-scenario`); this file must never hold
//! scenario logic, read a clock into a command, or touch a float.

mod bench;
mod bench_report;
mod cluster_cmd;
mod serve_cluster;
mod serve_limits;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use perpcore_feed::GuardOptions;
use perpcore_scenario::{load_commands, run_scenario_with, RunOptions};
use perpcore_types::AccountId;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// perpcore: an event-sourced matching-and-risk core for crypto perpetual futures.
#[derive(Parser, Debug)]
#[command(name = "perpcore", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Replay a JSON Lines scenario (format: docs/SCENARIOS.md) and print every engine
    /// event, the requested reports and the final state hash.
    Scenario {
        /// The scenario file (`.jsonl`). A config `path` in it is relative to its directory.
        file: PathBuf,
        /// Check every engine invariant after every command; a violation fails the run.
        #[arg(long)]
        check_invariants: bool,
    },
    /// Run the core: commands from a scenario file through the sequencer, journaled in a
    /// sled journal (created, or recovered and continued). Events are printed only once
    /// durable; a summary ends the run.
    Run {
        /// Journal folder.
        #[arg(long, default_value = "journal")]
        journal: PathBuf,
        /// Scenario file whose engine commands are fed in order (its timestamps are
        /// replaced by the sequencer's stamps; report/expect lines are skipped).
        #[arg(long, default_value = "replay-fixtures/demo.jsonl")]
        input: PathBuf,
        /// Start a new journal, removing the one in the folder (otherwise an existing
        /// journal is recovered and continued). Takes the journal's lock first: a journal
        /// another process is running is never touched, and a folder holding anything but
        /// a journal (and a README.md) is refused.
        #[arg(long)]
        fresh: bool,
        /// Take a snapshot after every N commands.
        #[arg(long)]
        snapshot_every: Option<u64>,
        /// What to print per durable command: events (JSON lines), acks (`{"ack":SEQ}`), or
        /// nothing.
        #[arg(long, default_value = "events")]
        print: PrintMode,
    },
    /// Serve the Binance USDⓈ-M-compatible REST API (docs/GATEWAY.md) in front of the
    /// core, journaled in a sled journal (created, or recovered and continued). Orders are
    /// answered once durable. With --cluster, the core is an engine node of a NATS
    /// JetStream stream that the gateway publishes to (docs/CLUSTER.md). Stops on Ctrl-C,
    /// finishing the requests in flight.
    Serve(ServeArgs),
    /// Run an engine node in cluster mode (docs/CLUSTER.md): consume the NATS JetStream
    /// stream through this node's durable consumer, apply it and keep the node's own
    /// journal and cursor in --dir; report progress on perpcore.<STREAM>.progress.<ID>.
    /// Stops on SIGINT or SIGTERM.
    Node(cluster_cmd::NodeArgs),
    /// Publish engine commands to the cluster's stream in batches and print each batch's
    /// acknowledgement (with --answer-node: once that node has applied it and made it
    /// durable). The commands come from a scenario file (--input), from recorded market
    /// data (--feed), or both (the scenario's first); with neither, from
    /// replay-fixtures/demo.jsonl.
    Publish {
        /// NATS servers, comma-separated.
        #[arg(long)]
        cluster: String,
        #[arg(long, default_value = "PERPCORE")]
        stream: String,
        /// Scenario file whose engine commands are published in order (report/expect lines
        /// are skipped; timestamps come from the stream). The nodes must run its
        /// configuration. Default, without --feed: replay-fixtures/demo.jsonl.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Recorded Binance futures websocket files (`<local ts> <json>` per line, plain
        /// or gzip), merged by exchange time and converted as the feed replay does
        /// (SetMarkPrice, SetIndexPrice, SetFundingRate, SetReferencePrices). Command
        /// times are the stream's, not the exchange's (docs/CLUSTER.md).
        #[arg(long, num_args = 1..)]
        feed: Vec<PathBuf>,
        /// Live Binance futures websocket (`ws://…`; `wss://…` needs the feed crate's
        /// `live-tls` feature), e.g. ws://HOST/stream?streams=btcusdt@markPrice@1s/btcusdt@bookTicker:
        /// its commands are published (after --input's) until SIGINT or SIGTERM, through
        /// the live client (timeouts, reconnects, REST depth snapshots, the guard below).
        #[arg(long, conflicts_with = "feed")]
        live: Option<String>,
        /// With --live: where depth snapshots are requested (GET URL/fapi/v1/depth).
        #[arg(long, default_value = "https://fapi.binance.com")]
        snapshot_url: String,
        /// With --live: no REST depth snapshots (books sync only from snapshots on the
        /// stream).
        #[arg(long)]
        no_snapshots: bool,
        /// With --live: a batch goes out when full or this many milliseconds after its
        /// first command.
        #[arg(long, default_value_t = 20)]
        linger_ms: u64,
        /// Configuration that maps the feed's symbols to instruments (without --input;
        /// the nodes must run the same). Default: the built-in one.
        #[arg(long, conflicts_with = "input")]
        config: Option<PathBuf>,
        /// Largest move of a mark or index price applied at once, in parts per million
        /// of the last applied one; a larger one waits for --guard-confirmations updates
        /// that agree with it (the live client's guard).
        #[arg(long, default_value_t = GuardOptions::default().max_jump_ppm)]
        guard_max_jump_ppm: u32,
        /// Updates that must agree with a jump before it is applied.
        #[arg(long, default_value_t = GuardOptions::default().confirmations)]
        guard_confirmations: u32,
        /// Publish the feed's mark and index prices without the guard.
        #[arg(long)]
        no_guard: bool,
        /// Commands per batch (one JetStream message).
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Batches in flight before the stream acknowledges them. 1 keeps the file's order
        /// even across retries (a retried batch can land after a later one otherwise).
        #[arg(long, default_value_t = 1)]
        max_pending: usize,
        /// The node whose progress acknowledges a batch.
        #[arg(long)]
        answer_node: Option<String>,
        /// Stream replicas, if the stream has to be created.
        #[arg(long, default_value_t = 3)]
        replicas: usize,
        /// How long to wait for the answering node per batch, in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
    },
    /// Rebuild the state from a journal (from genesis) and print its state hash.
    Replay {
        #[arg(long, default_value = "journal")]
        journal: PathBuf,
        /// Stop after this sequence number.
        #[arg(long)]
        to: Option<u64>,
    },
    /// An account's report (balances, positions, margin, liquidation prices) as of a
    /// sequence number.
    Audit {
        #[arg(long, default_value = "journal")]
        journal: PathBuf,
        #[arg(long)]
        account: u64,
        /// The sequence number to audit at (default: the end).
        #[arg(long)]
        at: Option<u64>,
    },
    /// Verify a journal and print its statistics; with --entries, every command.
    Inspect {
        #[arg(long, default_value = "journal")]
        journal: PathBuf,
        #[arg(long)]
        entries: bool,
    },
    /// Recover the journal and write a snapshot at its last sequence number.
    Snapshot {
        #[arg(long, default_value = "journal")]
        journal: PathBuf,
    },
    /// Trading-volume campaign and draw over a journal (docs/CAMPAIGN.md).
    Campaign {
        #[arg(long, default_value = "journal")]
        journal: PathBuf,
        /// Window start, nanoseconds since the epoch (inclusive).
        #[arg(long, default_value_t = 0)]
        from_ns: u64,
        /// Window end, nanoseconds since the epoch (exclusive).
        #[arg(long, default_value_t = u64::MAX)]
        to_ns: u64,
        /// Volume for the share reward, in USDT (decimal).
        #[arg(long, default_value = "500")]
        share: String,
        /// Volume to enter the draw, in USDT (decimal).
        #[arg(long, default_value = "1000")]
        draw: String,
        /// Block hash (hex) whose digits form the draw number.
        #[arg(long)]
        block_hash: String,
        /// Number of winners.
        #[arg(long)]
        winners: usize,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Latency and throughput on recorded ticks: the files merged by exchange time plus a
    /// seeded order flow, through the sequencer without and with the journal; prints
    /// per-kind percentiles and writes interval logs, an SVG plot and summary.json.
    Bench {
        /// Recorded Binance websocket files (plain or gzip), merged by exchange time.
        #[arg(long, num_args = 1.., required = true)]
        ticks: Vec<PathBuf>,
        /// Journal folder for the journaled run (default: OUT/journal). Cleared first, and
        /// only if empty or made by a previous bench.
        #[arg(long)]
        journal: Option<PathBuf>,
        /// Only the run without the journal.
        #[arg(long, conflicts_with = "journal_only")]
        no_journal: bool,
        /// Only the run with the journal.
        #[arg(long)]
        journal_only: bool,
        /// Seed of the generated order flow.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Accounts the order flow opens.
        #[arg(long, default_value_t = 200)]
        accounts: u32,
        /// Order-flow actions per second of exchange time (0: market data only).
        #[arg(long, default_value_t = 1000)]
        flow_rate: u32,
        /// Configuration (must define the files' symbols).
        #[arg(long, default_value = "replay-fixtures/ticks/config.toml")]
        config: PathBuf,
        /// Output folder for the interval logs, the plot and summary.json.
        #[arg(long, default_value = "bench-out")]
        out: PathBuf,
        /// Most commands submitted but not yet committed (0: unbounded, full speed).
        #[arg(long, default_value_t = 0)]
        max_in_flight: u64,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Read, convert and generate while submitting (constant memory; the parsing then
        /// bounds the throughput) instead of building the commands before each run.
        #[arg(long)]
        stream: bool,
        /// Most commands the order flow generates (setup, orders, synthetic marks); at
        /// the budget generation stops and the report says when.
        #[arg(long, default_value_t = perpcore_flow::DEFAULT_MAX_FLOW_COMMANDS)]
        max_flow_commands: u64,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum PrintMode {
    Events,
    Acks,
    None,
}

fn hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn run(
    journal: &Path,
    input: &Path,
    fresh: bool,
    snapshot_every: Option<u64>,
    print: PrintMode,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(input)
        .with_context(|| format!("cannot read {}", input.display()))?;
    let base = input.parent().unwrap_or_else(|| Path::new("."));
    let (config, commands) = load_commands(&text, base)
        .map_err(|e| anyhow::anyhow!("{}:{}: {}", input.display(), e.line, e.message))?;
    let opts = perpcore_node::RunOptions {
        snapshot_every,
        fresh,
        ..Default::default()
    };
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    let mut write_err = None;
    let started = std::time::Instant::now();
    let summary = perpcore_node::run(journal, &config, commands, &opts, |c| {
        if write_err.is_some() {
            return;
        }
        let r = match print {
            PrintMode::Events => c.events.iter().try_for_each(|e| {
                let line = serde_json::json!({"seq": c.seq, "ts": c.ts_ns, "event": e});
                writeln!(w, "{line}")
            }),
            // Flushed per command: a crash test reads acks as they happen.
            PrintMode::Acks => writeln!(w, "{{\"ack\":{}}}", c.seq).and_then(|_| w.flush()),
            PrintMode::None => Ok(()),
        };
        if let Err(e) = r {
            write_err = Some(e);
        }
    })
    .with_context(|| format!("journal {}", journal.display()))?;
    if let Some(e) = write_err {
        return Err(e).context("writing to stdout");
    }
    let secs = started.elapsed().as_millis().max(1);
    let summary_line = serde_json::json!({"summary": {
        "journal": journal.display().to_string(),
        "resumed_after_seq": summary.resumed_after,
        "commands": summary.commands,
        "last_seq": summary.last_seq,
        "events": summary.events,
        "trades": summary.trades,
        "rejected": summary.rejected,
        "groups": summary.groups,
        "batches": summary.batches,
        "snapshots": summary.snapshots,
        "wall_ms": secs,
        "state_hash": hex(&summary.state_hash),
    }});
    writeln!(w, "{summary_line}").context("writing to stdout")?;
    Ok(())
}

fn replay(journal: &Path, to: Option<u64>) -> anyhow::Result<()> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("replay {bar:40} {pos}/{len} seq {msg}")
            .expect("progress template"),
    );
    let started = std::time::Instant::now();
    let r = perpcore_node::replay(journal, to, |p| {
        bar.set_length(p.target_seq);
        bar.set_position(p.last_seq);
    })
    .with_context(|| format!("journal {}", journal.display()))?;
    bar.finish_and_clear();
    let ms = started.elapsed().as_millis().max(1);
    let line = serde_json::json!({"replay": {
        "last_seq": r.last_seq,
        "commands": r.commands,
        "state_hash": hex(&r.state_hash),
        "wall_ms": ms,
        "commands_per_s": (r.commands as u128) * 1000 / ms,
    }});
    println!("{line}");
    Ok(())
}

fn audit(journal: &Path, account: u64, at: Option<u64>) -> anyhow::Result<()> {
    let (seq, report) = perpcore_node::audit(journal, AccountId(account), at)
        .with_context(|| format!("journal {}", journal.display()))?;
    let report =
        report.ok_or_else(|| anyhow::anyhow!("account {account} does not exist at seq {seq}"))?;
    println!("{}", serde_json::json!({"seq": seq, "report": report}));
    Ok(())
}

fn inspect(journal: &Path, entries: bool) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    let (config, st) = perpcore_node::inspect(journal, |seq, ts, cmd| {
        if entries {
            let _ = writeln!(
                w,
                "{}",
                serde_json::json!({"seq": seq, "ts": ts, "command": cmd})
            );
        }
    })
    .with_context(|| format!("journal {}", journal.display()))?;
    let line = serde_json::json!({"journal": {
        "instruments": config.instruments.iter().map(|i| i.symbol.clone()).collect::<Vec<_>>(),
        "batches": st.batches,
        "commands": st.commands,
        "first_seq": st.first_seq,
        "last_seq": st.last_seq,
        "first_ts": st.first_ts_ns,
        "last_ts": st.last_ts_ns,
        "payload_bytes": st.payload_bytes,
        "largest_batch": st.largest_batch,
        "snapshots": st.snapshots,
        "commands_by_kind": st.commands_by_kind,
    }});
    writeln!(w, "{line}")?;
    w.flush()?;
    Ok(())
}

fn campaign(
    journal: &Path,
    window: (u64, u64),
    share: &str,
    draw: &str,
    block_hash: &str,
    winners: usize,
    json: bool,
) -> anyhow::Result<()> {
    let fills = perpcore_node::campaign_fills(journal)
        .with_context(|| format!("journal {}", journal.display()))?;
    let params = perpcore_campaign::CampaignParams {
        volume: perpcore_campaign::VolumeParams {
            start_ns: window.0,
            end_ns: window.1,
            share_threshold: perpcore_campaign::parse_amount(share)?,
            draw_threshold: perpcore_campaign::parse_amount(draw)?,
        },
        block_hash: block_hash.to_string(),
        winners,
    };
    let r = perpcore_campaign::run_campaign(&fills, &params)?;
    if json {
        println!("{}", r.to_json()?);
    } else {
        print!("{}", r.render_table());
    }
    Ok(())
}

/// `perpcore serve`'s arguments.
#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Journal folder (with --cluster: the node directory, its journal in DIR/journal).
    #[arg(long, default_value = "journal")]
    journal: PathBuf,
    /// Configuration (TOML or JSON); default: the built-in one (crates/config/data/default.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// API keys file (TOML, `[[keys]] api_key, secret, account`); must not be readable
    /// by group or others.
    #[arg(long)]
    keys: PathBuf,
    /// Address of the public API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Address of the admin API (accounts, deposits, withdrawals, mark prices).
    #[arg(long, default_value = "127.0.0.1:8081")]
    admin_listen: std::net::SocketAddr,
    /// File holding the admin bearer token (at least 16 characters); otherwise the
    /// environment variable PERPCORE_ADMIN_TOKEN.
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    /// Start a new journal, removing the one in the folder (as for `run`).
    #[arg(long)]
    fresh: bool,
    /// Requests not answered within this many milliseconds get HTTP 408.
    #[arg(long, default_value_t = 10_000)]
    request_timeout_ms: u64,
    #[command(flatten)]
    limits: serve_limits::LimitArgs,
    #[command(flatten)]
    cluster: serve_cluster::ClusterArgs,
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let config = match &a.config {
        Some(p) => {
            perpcore_config::load_path(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
        }
        None => perpcore_config::default_config(),
    };
    let keys = perpcore_gateway::ApiKeys::load(&a.keys)?;
    let token = match &a.admin_token_file {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read {}", p.display()))?
            .trim()
            .to_string(),
        None => std::env::var("PERPCORE_ADMIN_TOKEN")
            .context("no admin token: give --admin-token-file or set PERPCORE_ADMIN_TOKEN")?,
    };
    let mut opts = perpcore_gateway::ServeOptions::new(a.journal, config, keys, token);
    opts.listen = a.listen;
    opts.admin_listen = a.admin_listen;
    opts.fresh = a.fresh;
    opts.request_timeout = std::time::Duration::from_millis(a.request_timeout_ms);
    opts.limits = a.limits.limits();
    opts.cluster = a.cluster.options()?;
    let server = perpcore_gateway::Server::start(opts)?;
    eprintln!(
        "serving the API on http://{} and the admin API on http://{} (Ctrl-C stops)",
        server.public_addr(),
        server.admin_addr()
    );
    let summary = server.run_until_ctrl_c()?;
    println!(
        "{}",
        serde_json::json!({"serve": {
            "resumed_after": summary.resumed_after,
            "commands": summary.commands,
            "last_seq": summary.last_seq,
            "node": summary.node.map(|(stream_seq, hash)| serde_json::json!({
                "stream_seq": stream_seq,
                "state_hash": hash.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            })),
        }})
    );
    Ok(())
}

fn main() -> ExitCode {
    // Warnings of the journal and recovery (a torn tail dropped, a lost or skipped
    // snapshot) go to stderr; no timestamps, so the output is the same on every run.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .without_time()
        .with_ansi(false)
        .init();
    let result = match Cli::parse().command {
        Cmd::Scenario {
            file,
            check_invariants,
        } => scenario(&file, check_invariants),
        Cmd::Run {
            journal,
            input,
            fresh,
            snapshot_every,
            print,
        } => run(&journal, &input, fresh, snapshot_every, print),
        Cmd::Serve(a) => serve(a),
        Cmd::Node(a) => cluster_cmd::node(a),
        Cmd::Publish {
            cluster,
            stream,
            input,
            feed,
            live,
            snapshot_url,
            no_snapshots,
            linger_ms,
            config,
            guard_max_jump_ppm,
            guard_confirmations,
            no_guard,
            batch,
            max_pending,
            answer_node,
            replicas,
            timeout_ms,
        } => cluster_cmd::publish(cluster_cmd::PublishArgs {
            cluster,
            stream,
            input: match (input, feed.is_empty() && live.is_none()) {
                (None, true) => Some(PathBuf::from("replay-fixtures/demo.jsonl")),
                (input, _) => input,
            },
            feeds: feed,
            config,
            guard: (!no_guard).then_some(GuardOptions {
                max_jump_ppm: guard_max_jump_ppm,
                confirmations: guard_confirmations,
            }),
            live: live.map(|url| perpcore_feed::live::LiveOptions {
                snapshot: (!no_snapshots)
                    .then(|| perpcore_feed::live::SnapshotOptions::new(snapshot_url)),
                // Without the guard: jumps applied at once (and counted).
                guard: if no_guard {
                    GuardOptions {
                        max_jump_ppm: u32::MAX,
                        confirmations: 0,
                    }
                } else {
                    GuardOptions {
                        max_jump_ppm: guard_max_jump_ppm,
                        confirmations: guard_confirmations,
                    }
                },
                ..perpcore_feed::live::LiveOptions::new(url)
            }),
            linger: std::time::Duration::from_millis(linger_ms),
            batch,
            max_pending,
            answer_node,
            replicas,
            timeout_ms,
        }),
        Cmd::Replay { journal, to } => replay(&journal, to),
        Cmd::Audit {
            journal,
            account,
            at,
        } => audit(&journal, account, at),
        Cmd::Inspect { journal, entries } => inspect(&journal, entries),
        Cmd::Snapshot { journal } => perpcore_node::snapshot(&journal)
            .with_context(|| format!("journal {}", journal.display()))
            .map(|(seq, hash)| {
                println!(
                    "{}",
                    serde_json::json!({"snapshot": {"seq": seq, "state_hash": hex(&hash)}})
                )
            }),
        Cmd::Campaign {
            journal,
            from_ns,
            to_ns,
            share,
            draw,
            block_hash,
            winners,
            json,
        } => campaign(
            &journal,
            (from_ns, to_ns),
            &share,
            &draw,
            &block_hash,
            winners,
            json,
        ),
        Cmd::Bench {
            ticks,
            journal,
            no_journal,
            journal_only,
            seed,
            accounts,
            flow_rate,
            config,
            out,
            max_in_flight,
            quiet,
            stream,
            max_flow_commands,
        } => bench::run(&bench::BenchOptions {
            ticks,
            config,
            out,
            journal,
            with_journal: !no_journal,
            without_journal: !journal_only,
            flow: perpcore_flow::FlowOptions {
                seed,
                accounts,
                actions_per_sec: flow_rate,
                max_commands: max_flow_commands,
                ..perpcore_flow::FlowOptions::default()
            },
            max_in_flight,
            progress: !quiet,
            stream,
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn scenario(file: &Path, check_invariants: bool) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let base = file.parent().unwrap_or_else(|| Path::new("."));
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    let mut write_err: Option<std::io::Error> = None;
    let result = run_scenario_with(
        &text,
        base,
        RunOptions { check_invariants },
        &mut |_, line| {
            if write_err.is_none() {
                if let Err(e) = writeln!(w, "{line}") {
                    write_err = Some(e);
                }
            }
        },
    );
    // Flush what ran before reporting a failure, so the output leads up to it.
    let flushed = w.flush();
    if let Err(e) = result {
        anyhow::bail!("{}:{}: {}", file.display(), e.line, e.message);
    }
    if let Some(e) = write_err {
        return Err(e).context("writing to stdout");
    }
    flushed.context("writing to stdout")
}
