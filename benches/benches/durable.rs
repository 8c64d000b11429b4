//! Durability benchmark (issue: sequencer and journal). Not a test: prints tables.
//!
//! 1. durable commands/s through the sequencer with group commit and fsync;
//! 2. replay commands/s from genesis;
//! 3. recovery time from a snapshot plus a 1M-command tail;
//! 4. enqueue-to-durable latency percentiles at 100k, 500k and 1M commands/s offered;
//! 5. the machine's own stalls (threads spinning on the clock), to read (4) against.
//!
//! The journal lives under `target/bench-journal` (on the build disk, not tmpfs; another
//! place with `PERPCORE_BENCH_JOURNAL_DIR`) and is deleted before each part. Commands come from the seeded generator in
//! `perpcore-testkit` (orders of every kind, cancels, amends, marks, transfers …).
//! Sizes: `PERPCORE_BENCH_N` (default 1,000,000). `PERPCORE_BENCH_SKIP_TESTKIT=1` leaves out
//! the (engine-bound, minutes-long) testkit-mix row.

// Floats only format rates for printing; nothing here feeds the engine.
#![allow(clippy::float_arithmetic)]

use hdrhistogram::Histogram;
use perpcore_node::{self as node, Core, RunOptions};
use perpcore_sequencer::{Sequencer, SequencerConfig, SystemClock};
use perpcore_testkit::gen::{test_config, Gen};
use perpcore_types::Command;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn journal_dir(name: &str) -> PathBuf {
    // PERPCORE_BENCH_JOURNAL_DIR moves the journals (e.g. to tmpfs, to see what the
    // pipeline costs without the disk).
    let base = std::env::var_os("PERPCORE_BENCH_JOURNAL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-journal"));
    let root = base.join(name);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.parent().unwrap()).unwrap();
    root
}

fn commands(seed: u64, n: usize) -> Vec<Command> {
    let mut g = Gen::new(seed, 1_000);
    let mut v = g.setup();
    v.extend((0..n).map(|_| g.next_command()));
    v
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cpu}, {cores} cores, release profile (overflow checks on)")
}

fn main() {
    let n: usize = std::env::var("PERPCORE_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    println!("machine: {}", machine());
    println!("commands per workload: {n}\n");
    // The exchange-core mix (82% amend, 9% GTC, 6% cancel, 3% IOC; 1,000 accounts, one
    // instrument): the engine is cheap here, so the journal's own cost shows.
    let w = perpcore_benches::generate(perpcore_benches::Params {
        warmup: 0,
        timed: n,
        ..Default::default()
    });
    let st = perpcore_benches::engine_stream(&w);
    let ec: Vec<Command> = st
        .untimed
        .into_iter()
        .chain(st.timed)
        .map(|e| e.command)
        .collect();
    let ec_setup = ec.len() - n;
    // The testkit mix: 3 instruments, every command kind, 8% mark ticks that run the
    // liquidation check over every position holder (engine-bound).
    let tk = commands(1, n);
    let tk_setup = tk.len() - n;
    println!("| workload | durable cmds/s (group commit + fsync) | commands per group commit | commands per journal batch | replay cmds/s | recovery: snapshot + {n} tail |");
    println!("|---|---|---|---|---|---|");
    let ec_cfg = perpcore_benches::bench_config();
    part_table("exchange-core mix", &ec_cfg, &ec, ec_setup);
    if std::env::var("PERPCORE_BENCH_SKIP_TESTKIT").is_err() {
        part_table("testkit mix (8% mark ticks)", &test_config(), &tk, tk_setup);
    }

    // Enqueue-to-durable latency on the exchange-core mix.
    println!(
        "\nenqueue-to-durable latency (µs, from each command's due time), exchange-core mix, one paced producer, 2 s per rate:\n"
    );
    println!("| offered/s | achieved/s | p50 | p90 | p99 | p99.9 | max |");
    println!("|---|---|---|---|---|---|---|");
    for rate in [100_000u64, 500_000, 1_000_000] {
        latency_at(rate, &ec, &ec_cfg);
    }
    machine_stalls();
}

/// How often the machine itself stops running us: `threads` threads each read the
/// monotonic clock in a tight loop for 2 s; a gap of more than 200 µs between two reads
/// is time the thread was not running (on an otherwise idle VM, the host descheduled
/// the virtual CPU). With both cores busy, as in the latency runs, such gaps are what a
/// commit in flight waits out, whatever the code does.
fn machine_stalls() {
    println!("\nmachine stalls (threads spinning on the clock for 2 s; gaps > 200 µs):\n");
    println!("| spinning threads | gaps | gaps > 2 ms | longest (µs) | time lost |");
    println!("|---|---|---|---|---|");
    for threads in [1usize, 2] {
        let per_thread: Vec<(u64, u64, u64, Duration)> = std::thread::scope(|s| {
            let spinners: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let start = Instant::now();
                        let (mut gaps, mut over_2ms, mut longest) = (0u64, 0u64, 0u64);
                        let mut lost = Duration::ZERO;
                        let mut prev = start;
                        while prev.duration_since(start) < Duration::from_secs(2) {
                            let now = Instant::now();
                            let gap = now.duration_since(prev);
                            if gap > Duration::from_micros(200) {
                                gaps += 1;
                                lost += gap;
                                longest = longest.max(gap.as_micros() as u64);
                                if gap > Duration::from_millis(2) {
                                    over_2ms += 1;
                                }
                            }
                            prev = now;
                        }
                        (gaps, over_2ms, longest, lost)
                    })
                })
                .collect();
            spinners.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let gaps: u64 = per_thread.iter().map(|t| t.0).sum();
        let over: u64 = per_thread.iter().map(|t| t.1).sum();
        let longest = per_thread.iter().map(|t| t.2).max().unwrap_or(0);
        let lost: Duration = per_thread.iter().map(|t| t.3).sum();
        let share = lost.as_secs_f64() / (2.0 * threads as f64) * 100.0;
        println!("| {threads} | {gaps} | {over} | {longest} | {share:.1}% |");
    }
}

fn part_table(name: &str, cfg: &perpcore_types::Config, cmds: &[Command], setup: usize) {
    let dir = journal_dir("throughput");
    let t = Instant::now();
    let s = node::run(&dir, cfg, cmds.to_vec(), &RunOptions::default(), |_| {}).unwrap();
    let durable = s.commands as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let r = node::replay(&dir, None, |_| {}).unwrap();
    let replay = r.commands as f64 / t.elapsed().as_secs_f64();
    assert_eq!(
        r.state_hash, s.state_hash,
        "replay reproduces the live hash"
    );
    let dir3 = journal_dir("recovery");
    node::run(
        &dir3,
        cfg,
        cmds[..setup].to_vec(),
        &RunOptions::default(),
        |_| {},
    )
    .unwrap();
    node::snapshot(&dir3).unwrap();
    node::run(
        &dir3,
        cfg,
        cmds[setup..].to_vec(),
        &RunOptions::default(),
        |_| {},
    )
    .unwrap();
    let t = Instant::now();
    let rec = node::recover(&dir3).unwrap();
    let recovery = t.elapsed();
    assert!(rec.report.snapshot_used.is_some());
    println!(
        "| {name} | {durable:.0} | {:.0} | {:.0} | {replay:.0} | {:.2} s ({} commands replayed) |",
        s.commands as f64 / s.groups.max(1) as f64,
        s.commands as f64 / s.batches.max(1) as f64,
        recovery.as_secs_f64(),
        rec.report.replayed_commands
    );
}

fn latency_at(rate: u64, cmds: &[Command], cfg: &perpcore_types::Config) {
    let dir = journal_dir(&format!("latency-{rate}"));
    let (journal, _) =
        perpcore_journal::Journal::open_or_create(&dir, &node::genesis(cfg), Default::default())
            .unwrap();
    let cfg_seq = SequencerConfig {
        queue_capacity: 65_536,
        output_capacity: 1_024,
        ..SequencerConfig::default()
    };
    let (seqr, rx) = Sequencer::start(
        Core(perpcore_engine::Engine::new(cfg.clone())),
        Some(journal),
        Box::new(SystemClock),
        cfg_seq,
    )
    .unwrap();
    let total = (rate * 2) as usize;
    let total = total.min(cmds.len());
    let start = Instant::now();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    std::thread::scope(|scope| {
        let handle = seqr.handle();
        // Command i is due at start + i / rate. The producer does not spin (on two cores
        // a spinning producer would take a core from the sequencer and the writer): it
        // wakes every 50 µs and submits everything that has come due, as one
        // `submit_many` (as a gateway hands over what one read brought). Latency is
        // counted from the due time, so the wait in the producer counts against us too.
        let due = |i: usize| start + Duration::from_nanos(i as u64 * 1_000_000_000 / rate);
        let producer = scope.spawn(move || {
            let mut i = 0;
            while i < total {
                let now = Instant::now();
                let from = i;
                while i < total && due(i) <= now {
                    i += 1;
                }
                handle.submit_many(cmds[from..i].to_vec()).unwrap();
                std::thread::sleep(Duration::from_micros(50));
            }
        });
        let mut done_at = Vec::with_capacity(total);
        for c in rx.iter().flatten() {
            done_at.push((c.seq, Instant::now()));
            if done_at.len() == total {
                break;
            }
        }
        producer.join().unwrap();
        // One producer: command i got seq i + 1.
        for (seq, t) in &done_at {
            let us = t.duration_since(due(*seq as usize - 1)).as_micros() as u64;
            hist.record(us.max(1)).unwrap();
        }
        let elapsed = done_at
            .last()
            .map(|(_, t)| t.duration_since(start))
            .unwrap_or_default();
        println!(
            "| {} | {:.0} | {} | {} | {} | {} | {} |",
            rate,
            total as f64 / elapsed.as_secs_f64(),
            hist.value_at_quantile(0.5),
            hist.value_at_quantile(0.9),
            hist.value_at_quantile(0.99),
            hist.value_at_quantile(0.999),
            hist.max()
        );
    });
    seqr.shutdown().unwrap();
}
