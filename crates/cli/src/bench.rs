//! `perpcore bench`: recorded ticks merged by exchange time, plus the generated order flow,
//! run through the sequencer with the journal (group commit, fsync) and without it, with
//! per-command latency measured.
//!
//! Measures, per command kind: the time from just before `SequencerHandle::submit` to the
//! arrival of the command's `Committed` output (so it includes waiting for queue room, the
//! queue, the engine, the group commit and the output queue), and separately the engine's
//! apply time (timed inside the sequencer thread by a wrapper state machine). By default
//! each run's commands (ticks + flow) are built first (the time that takes is reported as
//! the feed's own rate), so the run measures the sequencer, engine and journal; with
//! `--stream` the producer parses while it submits, in constant memory. The producer
//! submits as fast as the queue takes commands unless `--max-in-flight` bounds the
//! commands submitted but not yet committed; at full speed the end-to-end figures are
//! dominated by queueing (queue depth ÷ throughput).
//!
//! Tick files that give no command at all (empty, random or foreign files, only symbols
//! the configuration lacks) are refused before the sequencer starts, with each file's
//! lines, messages and problem counts in the message; a depth stream that never
//! synchronised (diffs, no usable snapshot) is warned on stderr and shown in the report,
//! and so is a flow stopped by its command budget (`--max-flow-commands`).
//!
//! Owns the bench's command line options, its threads and its output folder (interval
//! logs, the SVG plot, `summary.json`). Must never: change what the engine does (it only
//! wraps `Core` to time `apply`), delete a folder it did not create (the journal folder
//! is cleared only when empty or marked as a bench journal), or put a clock reading into a
//! command (command times are the sequencer's stamps).

use crate::bench_report::{self, Hist, KINDS};
use anyhow::Context as _;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2Serializer;
use perpcore_engine::Engine;
use perpcore_feed::{ConvertOptions, FeedItem, ReaderOptions, Replay, StatsReport};
use perpcore_flow::{Flow, FlowOptions, FlowStats};
use perpcore_node::Core;
use perpcore_sequencer::{
    Journal, JournalOptions, Sequencer, SequencerConfig, StateMachine, SystemClock,
};
use perpcore_types::{Command, Config, Event};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Marker file that makes a journal folder the bench's to clear.
const MARKER: &str = ".perpcore-bench";

/// What `perpcore bench` was asked to do.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub ticks: Vec<PathBuf>,
    pub config: PathBuf,
    pub out: PathBuf,
    pub journal: Option<PathBuf>,
    pub with_journal: bool,
    pub without_journal: bool,
    pub flow: FlowOptions,
    /// 0: unbounded.
    pub max_in_flight: u64,
    pub progress: bool,
    /// Parse and generate while submitting instead of building the commands first.
    pub stream: bool,
}

/// The index of a command kind in [`KINDS`] (the last entry, "other", for kinds added
/// later).
pub fn kind_index(cmd: &Command) -> usize {
    let k = cmd.kind();
    KINDS
        .iter()
        .position(|n| *n == k)
        .unwrap_or(KINDS.len() - 1)
}

/// The engine with its apply time recorded per command kind.
struct Timed {
    core: Core,
    apply: Vec<Hist>,
}

impl Timed {
    fn new(core: Core) -> Self {
        Self {
            core,
            apply: bench_report::new_hists(),
        }
    }
}

impl StateMachine for Timed {
    type Command = Command;
    type Event = Event;
    type Error = perpcore_node::CoreError;

    fn from_genesis(genesis: &[u8]) -> Result<Self, Self::Error> {
        Core::from_genesis(genesis).map(Timed::new)
    }
    fn encode_command(cmd: &Command, out: &mut Vec<u8>) {
        Core::encode_command(cmd, out)
    }
    fn decode_command(bytes: &[u8]) -> Result<Command, Self::Error> {
        Core::decode_command(bytes)
    }
    fn apply(&mut self, seq: u64, ts_ns: u64, cmd: &Command, events: &mut Vec<Event>) {
        let k = kind_index(cmd);
        let t0 = Instant::now();
        self.core.apply(seq, ts_ns, cmd, events);
        let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.apply[k].saturating_record(ns.max(1));
    }
    fn state_hash(&self) -> [u8; 32] {
        self.core.state_hash()
    }
    fn snapshot(&self) -> Vec<u8> {
        self.core.snapshot()
    }
    fn restore(bytes: &[u8]) -> Result<Self, Self::Error> {
        Core::restore(bytes).map(Timed::new)
    }
}

/// Submit times of in-flight commands, by sequence number modulo the ring size. The
/// sequencer holds at most queue + batch + output capacity commands in flight, far below
/// the ring size.
struct Ring {
    at_ns: Vec<AtomicU64>,
    kind: Vec<AtomicU8>,
}

const RING: usize = 1 << 17;

impl Ring {
    fn new() -> Self {
        Self {
            at_ns: (0..RING).map(|_| AtomicU64::new(0)).collect(),
            kind: (0..RING).map(|_| AtomicU8::new(0)).collect(),
        }
    }
    fn slot(seq: u64) -> usize {
        (seq % RING as u64) as usize
    }
}

/// What the engine emitted, counted.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct EventCounts {
    pub events: u64,
    pub trades: u64,
    pub liquidations: u64,
    pub takeovers: u64,
    pub deficits_covered: u64,
    pub rejected: BTreeMap<String, u64>,
}

impl EventCounts {
    fn count(&mut self, events: &[Event]) {
        self.events += events.len() as u64;
        for e in events {
            match e {
                Event::Trade { .. } => self.trades += 1,
                Event::LiquidationTriggered { .. } => self.liquidations += 1,
                Event::PositionTakenOver { .. } => self.takeovers += 1,
                Event::DeficitCovered { .. } => self.deficits_covered += 1,
                Event::Rejected { reason, .. } => {
                    let name = serde_json::to_value(reason)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_else(|| format!("{reason:?}"));
                    *self.rejected.entry(name).or_default() += 1;
                }
                _ => {}
            }
        }
    }
}

/// One run's results.
pub struct RunResult {
    pub mode: &'static str,
    pub commands: u64,
    pub wall: Duration,
    pub e2e: Vec<Hist>,
    pub apply: Vec<Hist>,
    pub feed: FeedOutcome,
    pub flow: FlowStats,
    pub events: EventCounts,
    pub batches: u64,
    pub largest_batch: u64,
    pub state_hash: String,
    pub hlog: PathBuf,
    /// Commands built up front, tick lines read, and how long that took (not `--stream`).
    pub prepared: Option<(u64, u64, Duration)>,
}

fn hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Clears `dir` for a new bench journal: it must not exist, be empty, or carry the bench
/// marker.
fn prepare_journal_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .peekable();
        let empty = entries.peek().is_none();
        if !empty && !dir.join(MARKER).exists() {
            anyhow::bail!(
                "{} exists and is not a bench journal (no {MARKER}); choose another --journal",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(
        dir.join(MARKER),
        "made by perpcore bench; cleared by the next run\n",
    )?;
    Ok(())
}

/// Counts the lines of the tick files (for the progress bar).
fn count_lines(paths: &[PathBuf]) -> anyhow::Result<u64> {
    use perpcore_feed::lines::{open_maybe_gzip, LineRead, LineReader, DEFAULT_MAX_LINE};
    let mut n = 0;
    let mut buf = Vec::new();
    for p in paths {
        let r = open_maybe_gzip(p).with_context(|| format!("cannot open {}", p.display()))?;
        let mut lr = LineReader::new(r, DEFAULT_MAX_LINE);
        loop {
            match lr.next_line(&mut buf) {
                Ok(LineRead::Eof) | Err(_) => break,
                Ok(_) => n += 1,
            }
        }
    }
    Ok(n)
}

/// Where the producer takes its commands from.
enum Source {
    /// Built before the timed run: the run measures the sequencer, engine and journal,
    /// not JSON parsing.
    Preloaded {
        commands: std::vec::IntoIter<Command>,
        prepared: Box<Prepared>,
    },
    /// Read, converted and generated while submitting (`--stream`): constant memory, and
    /// the producer's parsing bounds the throughput. `first` is the first item, read
    /// before the run to know there is one.
    Streaming {
        flow: Box<Flow<Replay>>,
        first: Option<FeedItem>,
    },
}

impl Source {
    fn next(&mut self) -> Option<Command> {
        match self {
            Source::Preloaded { commands, .. } => commands.next(),
            Source::Streaming { flow, first } => {
                first.take().or_else(|| flow.next()).map(|i| i.command)
            }
        }
    }
    /// Progress-bar position: commands submitted, or tick lines read when streaming.
    fn progress(&self, submitted: u64) -> u64 {
        match self {
            Source::Preloaded { .. } => submitted,
            Source::Streaming { flow, .. } => flow.inner().lines_read(),
        }
    }
}

/// What the feed made of the tick files, for the report and the checks.
#[derive(Clone, Debug)]
pub struct FeedOutcome {
    pub report: StatsReport,
    /// Commands the ticks produced.
    pub commands: u64,
    /// Per file: name, lines, messages and problems by kind; then conversion problems.
    pub per_file: String,
    /// Depth streams that never synchronised (symbol, diffs received).
    pub never_synced: Vec<(String, u64)>,
}

fn feed_outcome(replay: &Replay) -> FeedOutcome {
    let stats = replay.stats();
    let per_file = replay.problem_lines();
    FeedOutcome {
        report: stats.report(),
        commands: stats.total_commands(),
        per_file: per_file.join("; "),
        never_synced: replay
            .converter()
            .never_synced()
            .into_iter()
            .map(|(s, n)| (s.to_string(), n))
            .collect(),
    }
}

/// Nothing usable: the ticks gave no command (empty, random or foreign files, or only
/// symbols the configuration lacks): the bench would measure nothing.
fn check_usable(outcome: &FeedOutcome) -> anyhow::Result<()> {
    if outcome.commands == 0 {
        anyhow::bail!(
            "nothing usable in the tick files: they gave 0 commands ({})",
            outcome.per_file
        );
    }
    Ok(())
}

/// What building the command stream up front took.
pub struct Prepared {
    pub commands: u64,
    pub lines: u64,
    pub wall: Duration,
    pub feed: FeedOutcome,
    pub flow: FlowStats,
}

fn preload(mut stream: Flow<Replay>) -> (Vec<Command>, Prepared) {
    let t0 = Instant::now();
    let commands: Vec<Command> = stream.by_ref().map(|i| i.command).collect();
    let prepared = Prepared {
        commands: commands.len() as u64,
        lines: stream.inner().lines_read(),
        wall: t0.elapsed(),
        feed: feed_outcome(stream.inner()),
        flow: stream.stats().clone(),
    };
    (commands, prepared)
}

fn run_once(
    opts: &BenchOptions,
    config: &Config,
    journal_dir: Option<&Path>,
    total_lines: u64,
) -> anyhow::Result<RunResult> {
    let mode = if journal_dir.is_some() {
        "journal"
    } else {
        "no-journal"
    };
    let replay = Replay::open(
        &opts.ticks,
        config,
        ReaderOptions::default(),
        ConvertOptions::default(),
    )?;
    let mut stream = Flow::new(replay, config, opts.flow.clone());
    // Nothing usable is refused before the sequencer starts (and before a journal is
    // made): preloaded, the whole stream is there; streaming, an empty stream has no first
    // item (the flow starts at the first tick, so no ticks means nothing at all).
    let source = if opts.stream {
        let first = stream.next();
        if first.is_none() {
            check_usable(&feed_outcome(stream.inner()))?;
        }
        Source::Streaming {
            flow: Box::new(stream),
            first,
        }
    } else {
        let (commands, prepared) = preload(stream);
        check_usable(&prepared.feed)?;
        Source::Preloaded {
            commands: commands.into_iter(),
            prepared: Box::new(prepared),
        }
    };
    let (progress_len, prepared_info) = match &source {
        Source::Preloaded { prepared: p, .. } => (p.commands, Some((p.commands, p.lines, p.wall))),
        Source::Streaming { .. } => (total_lines, None),
    };

    let journal = match journal_dir {
        Some(dir) => {
            prepare_journal_dir(dir)?;
            let genesis = perpcore_node::genesis(config);
            // The journal beside the marker, in a folder of its own (a journal folder holds
            // nothing else).
            let dir = &dir.join("journal");
            let (j, _) = Journal::open_or_create(dir, &genesis, JournalOptions::default())
                .with_context(|| format!("cannot create the journal in {}", dir.display()))?;
            Some(j)
        }
        None => None,
    };
    let (sequencer, rx) = Sequencer::start(
        Timed::new(Core(Engine::new(config.clone()))),
        journal,
        Box::new(SystemClock),
        SequencerConfig::default(),
    )?;

    std::fs::create_dir_all(&opts.out)?;
    let hlog = opts.out.join(format!("latency-{mode}.hlog"));
    let mut log_file = std::io::BufWriter::new(
        std::fs::File::create(&hlog)
            .with_context(|| format!("cannot create {}", hlog.display()))?,
    );
    let mut serializer = V2Serializer::new();
    let started_wall = SystemTime::now();
    let mut log = IntervalLogWriterBuilder::new()
        .add_comment(&format!(
            "perpcore bench ({mode}): submit -> committed latency in ns, one histogram per \
             command kind per second; tag = kind"
        ))
        .with_start_time(started_wall)
        .with_base_time(started_wall)
        .begin_log_with(&mut log_file, &mut serializer)
        .context("writing the interval log")?;

    let ring = Arc::new(Ring::new());
    let committed = Arc::new(AtomicU64::new(0));
    let lines_read = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let now_ns = move || u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);

    let bar = if opts.progress {
        indicatif::ProgressBar::new(progress_len.max(1))
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(if opts.stream {
            "{prefix:>10} {bar:40} {pos}/{len} tick lines {msg} [{elapsed_precise}]"
        } else {
            "{prefix:>10} {bar:40} {pos}/{len} commands submitted, {msg} [{elapsed_precise}]"
        })
        .context("progress template")?,
    );
    bar.set_prefix(mode);

    let mut e2e = bench_report::new_hists();
    let mut interval = bench_report::new_hists();
    let mut interval_start = Duration::ZERO;
    let mut events = EventCounts::default();
    let mut n_committed = 0u64;
    let mut log_err: Option<String> = None;

    let (stopped, feed, flow) = std::thread::scope(|scope| {
        let ring_p = Arc::clone(&ring);
        let committed_p = Arc::clone(&committed);
        let lines_p = Arc::clone(&lines_read);
        let max_in_flight = opts.max_in_flight;
        let producer = scope.spawn(move || {
            let handle = sequencer.handle();
            let mut source = source;
            let mut seq = 0u64;
            while let Some(command) = source.next() {
                seq += 1;
                if max_in_flight > 0 {
                    while seq.saturating_sub(committed_p.load(Ordering::Acquire)) > max_in_flight {
                        std::thread::yield_now();
                    }
                }
                let slot = Ring::slot(seq);
                ring_p.kind[slot].store(kind_index(&command) as u8, Ordering::Relaxed);
                ring_p.at_ns[slot].store(now_ns(), Ordering::Release);
                if handle.submit(command).is_err() {
                    break;
                }
                if seq.is_multiple_of(1024) {
                    lines_p.store(source.progress(seq), Ordering::Relaxed);
                }
            }
            lines_p.store(source.progress(seq), Ordering::Relaxed);
            drop(handle);
            let (feed, flow) = match source {
                Source::Streaming { flow, .. } => {
                    (feed_outcome(flow.inner()), flow.stats().clone())
                }
                Source::Preloaded { prepared, .. } => (prepared.feed, prepared.flow),
            };
            (sequencer.shutdown(), feed, flow)
        });
        for c in rx.iter().flatten() {
            let slot = Ring::slot(c.seq);
            let at = ring.at_ns[slot].load(Ordering::Acquire);
            let k = usize::from(ring.kind[slot].load(Ordering::Relaxed)).min(KINDS.len() - 1);
            let now = now_ns();
            let lat = now.saturating_sub(at).max(1);
            e2e[k].saturating_record(lat);
            interval[k].saturating_record(lat);
            events.count(&c.events);
            n_committed += 1;
            committed.store(c.seq, Ordering::Release);
            if n_committed.is_multiple_of(2048) {
                bar.set_position(lines_read.load(Ordering::Relaxed));
                bar.set_message(format!("{n_committed} committed"));
                let elapsed = t0.elapsed();
                if elapsed >= interval_start + Duration::from_secs(1) {
                    if let Err(e) = write_interval(
                        &mut log,
                        &mut interval,
                        interval_start,
                        elapsed - interval_start,
                    ) {
                        log_err.get_or_insert(e);
                    }
                    interval_start = elapsed;
                }
            }
        }
        let elapsed = t0.elapsed();
        if let Err(e) = write_interval(
            &mut log,
            &mut interval,
            interval_start,
            elapsed.saturating_sub(interval_start),
        ) {
            log_err.get_or_insert(e);
        }
        bar.set_position(lines_read.load(Ordering::Relaxed));
        bar.finish_and_clear();
        producer
            .join()
            .map_err(|_| anyhow::anyhow!("the bench producer thread panicked"))
    })?;
    let wall = t0.elapsed();
    drop(log);
    use std::io::Write as _;
    log_file.flush()?;
    if let Some(e) = log_err {
        anyhow::bail!("writing {}: {e}", hlog.display());
    }
    let stopped = stopped?;
    Ok(RunResult {
        mode,
        commands: n_committed,
        wall,
        e2e,
        apply: stopped.state.apply.clone(),
        feed,
        flow,
        events,
        batches: stopped.stats.batches,
        largest_batch: stopped.stats.max_group_commands,
        state_hash: hex(&stopped.state.state_hash()),
        hlog,
        prepared: prepared_info,
    })
}

fn write_interval<W: std::io::Write>(
    log: &mut hdrhistogram::serialization::interval_log::IntervalLogWriter<'_, '_, W, V2Serializer>,
    hists: &mut [Hist],
    start: Duration,
    len: Duration,
) -> Result<(), String> {
    for (k, h) in hists.iter_mut().enumerate() {
        if h.is_empty() {
            continue;
        }
        let tag = Tag::new(KINDS[k]);
        log.write_histogram(h, start, len, tag)
            .map_err(|e| format!("{e:?}"))?;
        h.reset();
    }
    Ok(())
}

/// Runs the bench and prints its report.
pub fn run(opts: &BenchOptions) -> anyhow::Result<()> {
    if opts.ticks.is_empty() {
        anyhow::bail!("--ticks needs at least one file");
    }
    let config = perpcore_config::load_path(&opts.config)
        .map_err(|e| anyhow::anyhow!("config {}: {e}", opts.config.display()))?;
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("cannot create {}", opts.out.display()))?;
    let total_lines = count_lines(&opts.ticks)?;
    let journal_dir = opts
        .journal
        .clone()
        .unwrap_or_else(|| opts.out.join("journal"));
    let mut results = Vec::new();
    if opts.without_journal {
        results.push(run_once(opts, &config, None, total_lines)?);
    }
    if opts.with_journal {
        results.push(run_once(opts, &config, Some(&journal_dir), total_lines)?);
    }
    if let Some(r) = results.first() {
        if !r.feed.never_synced.is_empty() {
            eprintln!(
                "warning: {}",
                bench_report::never_synced_line(&r.feed.never_synced)
            );
        }
        if r.flow.budget_reached_ns.is_some() {
            eprintln!(
                "warning: the order flow stopped at its budget: {}",
                bench_report::flow_bounds_line(opts, &r.flow)
            );
        }
    }
    let svg = opts.out.join("latency.svg");
    std::fs::write(&svg, bench_report::svg(&results))
        .with_context(|| format!("cannot write {}", svg.display()))?;
    let summary = bench_report::summary_json(opts, &results);
    let summary_path = opts.out.join("summary.json");
    std::fs::write(
        &summary_path,
        serde_json::to_string_pretty(&summary)? + "\n",
    )
    .with_context(|| format!("cannot write {}", summary_path.display()))?;
    print!("{}", bench_report::text(opts, &results));
    println!(
        "wrote {}, {} and {}",
        svg.display(),
        summary_path.display(),
        results
            .iter()
            .map(|r| r.hlog.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
