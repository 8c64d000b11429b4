//! The seeded simulation of the whole commit pipeline: the sequencer with its writer, sync
//! and mark threads, the journal, and a simulated disk (`perpcore_journal::sim`) that fails
//! calls, crashes and gets damaged, driven by one ChaCha8 stream per seed.
//!
//! Owns: the simulation driver, its checks and its counters. Must never: wait without a
//! bound (every answer is awaited with a timeout, and a watchdog ends a seed that hangs
//! anywhere else), accept a recovered log that is shorter than what was acknowledged or
//! differs from what was sequenced, or fail without naming the seed and how to rerun it.
//!
//! Per seed: a fresh journal on a `SimDisk`; a few crash cycles, each: arm one fault
//! (the Nth `insert_all`, `flush`, `sync` or `write_mark` fails) or a crash point (the
//! process dies at its Nth storage call) or nothing; rounds of `submit_many` (1–40
//! random commands, sometimes several messages back to back), each followed by a
//! `barrier`, sometimes by a `snapshot`, until the pipeline stops or the rounds run out;
//! shut down; take a crash image (process crash or power loss); sometimes damage a copy
//! of it and check that recovery refuses it or recovers exactly the right state;
//! sometimes fail or crash the recovery itself; recover the image and check it; resume.
//!
//! What is checked after every crash (and damage):
//! - acknowledged ⊆ recovered: every released output (and every snapshot reported
//!   written) is at or below the recovered last seq;
//! - the recovered log is a prefix of what the sequencer sequenced (the test predicts
//!   each command's seq and timestamp: one producer, a manual clock), so acknowledged
//!   commands come back exactly (same seq, ts and command) and nothing else appears;
//! - the recovered state hash equals a clean replay of the recovered log from genesis;
//! - damage that hit acknowledged (or marked durable) data is an error, never a
//!   shorter or different log; damage the design tolerates (a snapshot, a mark slot
//!   with a valid other one, data beyond the mark that a drop removed) recovers exactly.
//!
//! Seeds: `PERPCORE_SIM_SEEDS=N` runs seeds 0..N (default `CI_SEEDS`);
//! `PERPCORE_SIM_SEED=S` runs seed S alone; `PERPCORE_SIM_SOAK=1` starts at a random
//! base seed (from the system time, printed); `PERPCORE_SIM_REPEAT=K` runs each seed K
//! times; `PERPCORE_SIM_VERBOSE=1` prints a line per run. Counters are printed at the
//! end (visible with `--nocapture`).
//!
//! Reproducibility: half the seeds run every round to the end before the next (one
//! message per round, barriers between), so every storage call, and so which call a
//! countdown hits, is the same on every run: such a seed fails the same way each time.
//! The other half are racy on purpose (several messages back to back, a snapshot right
//! behind a group, fsyncs that take time while the writer flushes): the choices are the
//! same on every run, the interleaving is not, so a failure may need several reruns
//! (`PERPCORE_SIM_REPEAT`); the failure message says which kind the seed is.

mod toy;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use perpcore_journal::sim::{damage, CrashKind, Damage, DamageKind, FaultKind, SimDisk, Trigger};
use perpcore_journal::{
    decode_format_record, decode_genesis_record, decode_mark, key_seq, read_mark_file, IVec,
    Journal, JournalError, JournalOptions, OpenCheck, Space, MARK_RECORD_LEN, MARK_SLOT_STRIDE,
    META_FORMAT_KEY, META_GENESIS_KEY,
};
use perpcore_sequencer::{
    recover_journal, replay_journal, CommittedReceiver, ManualClock, Recovered, Replayed,
    Sequencer, SequencerConfig, SequencerError, SequencerHandle, SnapshotInfo, StateMachine,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use toy::{rebuild, Cmd, Ev, Toy, GENESIS};

/// Seeds run by default (CI): 0..CI_SEEDS.
const CI_SEEDS: u64 = 500;
/// How long any answer (a barrier, a snapshot, an output) may take.
const WAIT: Duration = Duration::from_secs(30);
/// How long one seed may take before the watchdog ends the run.
const SEED_LIMIT: Duration = Duration::from_secs(120);

/// One sequenced command: (seq, ts_ns, command).
type Entry = (u64, u64, Cmd);

#[test]
fn seeded_simulation_of_the_commit_pipeline() {
    let seeds = seeds_from_env();
    let repeat = env_number("PERPCORE_SIM_REPEAT").unwrap_or(1).max(1);
    let verbose = env_number("PERPCORE_SIM_VERBOSE").is_some_and(|v| v != 0);
    let started = Instant::now();
    let watchdog = Watchdog::start();
    let mut counters = Counters::default();
    for seed in seeds.clone() {
        for _ in 0..repeat {
            watchdog.enter(seed);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run_seed(seed, &mut counters)
            }));
            let failure = match result {
                Ok(Ok(summary)) => {
                    if verbose {
                        println!("seed {seed}: {summary}");
                    }
                    None
                }
                Ok(Err(why)) => Some(why),
                Err(payload) => Some(panic_text(payload.as_ref())),
            };
            if let Some(why) = failure {
                let racy = if is_racy(seed) {
                    "\n  a racy seed (the writer and the sync thread race, so the interleaving \
                     varies between runs): add PERPCORE_SIM_REPEAT=100 to run it 100 times"
                } else {
                    ""
                };
                panic!(
                    "simulation failed at seed {seed}: {why}\n  rerun it alone: \
                     PERPCORE_SIM_SEED={seed} cargo test -p perpcore-sequencer --test sim -- --nocapture{racy}"
                );
            }
            counters.bump("seeds.runs");
        }
        counters.bump("seeds");
        if is_racy(seed) {
            counters.bump("seeds.racy");
        }
    }
    watchdog.stop();
    println!(
        "simulation: seeds {}..{} ({} seeds) in {:.1?}",
        seeds.start,
        seeds.end,
        seeds.end - seeds.start,
        started.elapsed()
    );
    counters.print();
}

/// A number from the environment.
fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

/// The seeds to run, from the environment (see the module doc).
fn seeds_from_env() -> std::ops::Range<u64> {
    let var = env_number;
    if let Some(seed) = var("PERPCORE_SIM_SEED") {
        println!("simulation: seed {seed} alone");
        return seed..seed + 1;
    }
    let count = var("PERPCORE_SIM_SEEDS").unwrap_or(CI_SEEDS);
    let base = if var("PERPCORE_SIM_SOAK").is_some_and(|v| v != 0) {
        // A fresh region of the seed space each soak run; printed so it can be rerun.
        let now = SystemTime::now() // determinism-ok: picks the soak's base seed, printed
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let base = now.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16;
        println!("simulation: soak from base seed {base}");
        base
    } else {
        0
    };
    base..base.saturating_add(count)
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "panic".to_string())
}

/// Ends the process if one seed runs longer than `SEED_LIMIT` (a hang in a join or a
/// shutdown, which cannot be given a timeout of its own), naming the seed.
struct Watchdog {
    current: Arc<Mutex<(u64, Instant)>>,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start() -> Self {
        let current = Arc::new(Mutex::new((0, Instant::now())));
        let done = Arc::new(AtomicBool::new(false));
        let (c, d) = (Arc::clone(&current), Arc::clone(&done));
        let thread = std::thread::spawn(move || {
            while !d.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(200));
                let (seed, since) = *c.lock().unwrap_or_else(PoisonError::into_inner);
                if since.elapsed() > SEED_LIMIT {
                    eprintln!(
                        "simulation: seed {seed} hung (over {SEED_LIMIT:?}); rerun it alone: \
                         PERPCORE_SIM_SEED={seed} cargo test -p perpcore-sequencer --test sim -- --nocapture"
                    );
                    std::process::exit(101);
                }
            }
        });
        Self {
            current,
            done,
            thread: Some(thread),
        }
    }

    fn enter(&self, seed: u64) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = (seed, Instant::now());
    }

    fn stop(mut self) {
        self.done.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Named event counts, printed sorted at the end.
#[derive(Default)]
struct Counters(BTreeMap<String, u64>);

impl Counters {
    fn bump(&mut self, name: &str) {
        self.add(name, 1);
    }

    fn add(&mut self, name: &str, n: u64) {
        *self.0.entry(name.to_string()).or_insert(0) += n;
    }

    fn print(&self) {
        for (k, v) in &self.0 {
            println!("  {k:<48} {v:>10}");
        }
    }
}

/// What a request to the sequencer is.
#[derive(Debug, Clone, Copy)]
enum Ask {
    Barrier,
    Snapshot,
}

enum Answer {
    Barrier(Result<u64, SequencerError>),
    Snapshot(Result<SnapshotInfo, SequencerError>),
}

/// Sends requests from a thread of its own (`barrier` and `snapshot` block without a
/// bound), so the driver can wait for the answer with a timeout.
struct Requester {
    tx: Option<Sender<Ask>>,
    rx: Receiver<Answer>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Requester {
    fn new(h: SequencerHandle<Cmd>) -> Self {
        let (tx, asks) = bounded::<Ask>(1);
        let (answers, rx) = bounded(1);
        let thread = std::thread::spawn(move || {
            for ask in asks {
                let a = match ask {
                    Ask::Barrier => Answer::Barrier(h.barrier()),
                    Ask::Snapshot => Answer::Snapshot(h.snapshot()),
                };
                if answers.send(a).is_err() {
                    return;
                }
            }
        });
        Self {
            tx: Some(tx),
            rx,
            thread: Some(thread),
        }
    }

    fn ask(&self, ask: Ask) -> Answer {
        self.tx
            .as_ref()
            .expect("requester running")
            .send(ask)
            .expect("requester thread alive");
        self.rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("{ask:?}: no answer within {WAIT:?}; it hangs"))
    }
}

impl Drop for Requester {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What one cycle armed.
#[derive(Debug, Clone, Copy)]
enum Plan {
    Clean,
    Fault(FaultKind, u64),
    Crash(u64),
}

/// The state of one seed's run.
struct World {
    rng: ChaCha8Rng,
    /// Half the seeds race the writer against the sync thread (several messages back to
    /// back, a snapshot right behind a group, fsyncs that take time); the others run
    /// every round to the end before the next, so each storage call is the same on
    /// every run and a failure reproduces exactly.
    racy: bool,
    /// Storage calls made on the disks of earlier cycles.
    calls: u64,
    clock: ManualClock,
    config: SequencerConfig,
    /// Every command sequenced (or about to be) that the journal may hold, by seq:
    /// `stream[i]` has seq `i + 1`. Truncated to what recovery found after each crash.
    stream: Vec<Entry>,
    /// The highest acknowledged seq: released on the output channel, or covered by a
    /// snapshot reported written.
    acked: u64,
    /// The next seq expected on the output channel.
    next_release: u64,
    /// Command counter (every command is distinct).
    next_n: u64,
}

fn fail<T>(why: impl Into<String>) -> Result<T, String> {
    Err(why.into())
}

fn journal_open(disk: &SimDisk) -> Result<(Journal, perpcore_journal::OpenReport), JournalError> {
    Journal::open_store(
        Box::new(disk.store()),
        Path::new("sim"),
        Some(GENESIS),
        JournalOptions::default(),
    )
}

/// Opens the journal on `disk` and recovers; also reads back its whole log.
fn recover(disk: &SimDisk) -> Result<(Recovered<Toy>, Vec<Entry>), SequencerError> {
    let (journal, report) = journal_open(disk)?;
    let rec = recover_journal::<Toy>(journal, report)?;
    let log = read_log(&rec.journal)?;
    Ok((rec, log))
}

/// What a replay tool makes of `disk`: a read-only `OpenCheck::LastBatch` open (as
/// `replay` does; nothing is written) and a replay of every batch from genesis.
fn replay_of(disk: &SimDisk) -> Result<Replayed<Toy>, SequencerError> {
    let opts = JournalOptions {
        open_check: OpenCheck::LastBatch,
        ..JournalOptions::read_only()
    };
    let (journal, report) =
        Journal::open_store(Box::new(disk.store()), Path::new("sim"), None, opts)?;
    replay_journal::<Toy>(&journal, report, None, |_| {})
}

/// The journal's log, verified from genesis and decoded.
fn read_log(j: &Journal) -> Result<Vec<Entry>, SequencerError> {
    let mut out = Vec::new();
    for batch in j.read_from_genesis() {
        let batch = batch?;
        for e in batch.entries() {
            let cmd = Toy::decode_command(e.bytes).map_err(|reason| SequencerError::Decode {
                seq: e.seq,
                reason: reason.to_string(),
            })?;
            out.push((e.seq, e.ts_ns, cmd));
        }
    }
    Ok(out)
}

/// A short name for an error, for the counters.
fn error_kind(e: &SequencerError) -> &'static str {
    match e {
        SequencerError::Journal(j) => match j {
            JournalError::Corrupt { .. } => "Corrupt",
            JournalError::Truncated { .. } => "Truncated",
            JournalError::Damaged { .. } => "Damaged",
            JournalError::MetaCorrupt(_) => "MetaCorrupt",
            JournalError::SnapshotCorrupt { .. } => "SnapshotCorrupt",
            JournalError::GenesisMismatch => "GenesisMismatch",
            JournalError::UnsupportedVersion { .. } => "UnsupportedVersion",
            JournalError::Io { .. } => "Io",
            JournalError::Poisoned => "Poisoned",
            _ => "other journal error",
        },
        SequencerError::Stopped(_) => "Stopped",
        SequencerError::ShortJournal { .. } => "ShortJournal",
        SequencerError::Decode { .. } => "Decode",
        SequencerError::EntryCount { .. } => "EntryCount",
        _ => "other",
    }
}

/// What damage must do to recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Acknowledged (or marked durable) data was hit: recovery must refuse.
    Refuse,
    /// Only what the design tolerates was hit: recovery must give exactly the right state.
    Recover,
    /// Data beyond the mark was damaged in place: refusing is allowed (a damaged batch
    /// that is not the last one is `Corrupt` even if it was never acknowledged), and so
    /// is recovering (a damaged last batch is dropped as torn), but only exactly.
    Either,
}

/// The mark's last seq and snapshot in an image (`None`: no valid slot).
fn mark_of(disk: &SimDisk) -> Option<(u64, Option<u64>)> {
    read_mark_file(&disk.mark_bytes())
        .ok()
        .map(|r| (r.newest.mark.last_seq, r.newest.mark.snapshot))
}

/// A journal whose creation never finished (its meta records missing or half written,
/// nothing else stored, nothing acknowledged: a crash before they were durable). A
/// writable open completes it; a read-only replay cannot, and refuses it.
fn never_created(disk: &SimDisk) -> bool {
    let meta: BTreeMap<_, _> = disk.records(Space::Meta).into_iter().collect();
    let valid = |key: &[u8], check: fn(&[u8]) -> bool| meta.get(key).is_some_and(|v| check(v));
    let complete = valid(META_FORMAT_KEY, |v| decode_format_record(v).is_ok())
        && valid(META_GENESIS_KEY, |v| decode_genesis_record(v).is_ok());
    !complete
        && disk.records(Space::Batches).is_empty()
        && disk.records(Space::Snapshots).is_empty()
        && mark_of(disk) == Some((0, None))
}

/// What `what` did to `image` (now `damaged`) means for recovery, given the highest
/// acknowledged seq.
fn classify(image: &SimDisk, damaged: &SimDisk, what: &Damage, acked: u64) -> Expect {
    let Some((mark_seq, mark_snapshot)) = mark_of(image) else {
        // An image without a valid mark is refused as it is; nothing can be at stake.
        return Expect::Refuse;
    };
    let durable = acked.max(mark_seq);
    match what {
        Damage::Nothing => Expect::Recover,
        Damage::Mark { offset } => {
            let bytes = image.mark_bytes();
            let stride = usize::try_from(MARK_SLOT_STRIDE).expect("fits");
            let valid = |i: usize| {
                bytes
                    .get(i * stride..)
                    .and_then(|b| decode_mark(b).ok())
                    .is_some_and(|s| s.generation % 2 == u64::try_from(i).expect("fits"))
            };
            let slot = offset / stride;
            let in_record = offset % stride < MARK_RECORD_LEN;
            if in_record && slot < 2 && valid(slot) && !valid(1 - slot) {
                // The only valid slot: nothing says how far the log must reach.
                Expect::Refuse
            } else {
                Expect::Recover
            }
        }
        Damage::Value { .. } | Damage::Suffix { .. } => {
            let before = |s: Space| image.records(s).into_iter().collect::<BTreeMap<_, _>>();
            let after = |s: Space| damaged.records(s).into_iter().collect::<BTreeMap<_, _>>();
            let (meta0, meta1) = (before(Space::Meta), after(Space::Meta));
            if meta0 != meta1 {
                // Lost or damaged meta records: only a journal that never got past its
                // creation (nothing acknowledged, nothing else stored) may be created
                // again (or refused: a flipped version byte reads as a format record of
                // another version); anything else is damage.
                let empty = damaged.records(Space::Batches).is_empty()
                    && damaged.records(Space::Snapshots).is_empty();
                return if empty && mark_seq == 0 && mark_snapshot.is_none() {
                    Expect::Either
                } else {
                    Expect::Refuse
                };
            }
            let (b0, b1) = (before(Space::Batches), after(Space::Batches));
            let seq_of = |k: &Vec<u8>| key_seq(k).unwrap_or(0);
            let mut expect = Expect::Recover;
            for (k, v) in &b0 {
                let now: Option<&IVec> = b1.get(k);
                if now == Some(v) {
                    continue;
                }
                if seq_of(k) <= durable {
                    return Expect::Refuse;
                }
                if now.is_some() {
                    // Changed in place beyond the mark.
                    expect = Expect::Either;
                }
            }
            // A record the damage brought back (an older value a dropped op had
            // replaced or removed).
            if b1.keys().any(|k| !b0.contains_key(k)) {
                expect = Expect::Either;
            }
            expect
        }
    }
}

impl World {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // The first draw, so `is_racy` can tell without running the seed.
        let racy = rng.gen_range(0..2) == 0;
        let config = SequencerConfig {
            queue_capacity: 64,
            output_capacity: 4096,
            max_group_commands: if rng.gen_range(0..2) == 0 {
                rng.gen_range(1..=64)
            } else {
                SequencerConfig::default().max_group_commands
            },
            max_batch_bytes: rng.gen_range(64..=512),
            ..SequencerConfig::default()
        };
        let clock = ManualClock::new(rng.gen_range(0..1_000_000));
        Self {
            rng,
            racy,
            calls: 0,
            clock,
            config,
            stream: Vec::new(),
            acked: 0,
            next_release: 1,
            next_n: 0,
        }
    }

    fn last(&self) -> (u64, u64) {
        self.stream.last().map_or((0, 0), |e| (e.0, e.1))
    }

    /// `n` new commands, appended to the stream with the seq and timestamp the
    /// sequencer will give them (`ts = max(last_ts + 1, clock)`).
    fn commands(&mut self, n: usize) -> Vec<Cmd> {
        let now = self.clock_now();
        let (mut seq, mut ts) = self.last();
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let cmd = Cmd {
                producer: self.rng.gen_range(0..4),
                n: self.next_n,
                amount: self.rng.gen_range(0..1_000),
            };
            self.next_n += 1;
            seq += 1;
            ts = (ts + 1).max(now);
            self.stream.push((seq, ts, cmd.clone()));
            out.push(cmd);
        }
        out
    }

    fn clock_now(&self) -> u64 {
        use perpcore_sequencer::Clock;
        self.clock.now_ns()
    }

    /// Moves the clock between rounds: forwards, not at all, or backwards (the
    /// sequencer keeps stamps increasing regardless).
    fn tick(&mut self) {
        match self.rng.gen_range(0..4) {
            0 => {}
            1 => {
                let back = self.rng.gen_range(0..1_000);
                self.clock.set(self.clock_now().saturating_sub(back));
            }
            _ => self.clock.advance(self.rng.gen_range(1..100_000)),
        }
    }

    /// Checks released outputs against the stream.
    fn take_outputs(
        &mut self,
        groups: Vec<Vec<perpcore_sequencer::Committed<Ev>>>,
    ) -> Result<(), String> {
        for group in groups {
            if group.is_empty() {
                return fail("an empty group was released");
            }
            for c in group {
                if c.seq != self.next_release {
                    return fail(format!(
                        "released seq {} but expected {}",
                        c.seq, self.next_release
                    ));
                }
                let Some(entry) = usize::try_from(c.seq - 1)
                    .ok()
                    .and_then(|i| self.stream.get(i))
                else {
                    return fail(format!("released seq {} was never submitted", c.seq));
                };
                let cmd = match c.events.as_slice() {
                    [ev] => ev.cmd(),
                    other => return fail(format!("seq {}: {} events", c.seq, other.len())),
                };
                if (c.seq, c.ts_ns, &cmd) != (entry.0, entry.1, &entry.2) {
                    return fail(format!(
                        "released ({}, {}, {cmd:?}) but sequenced {entry:?}",
                        c.seq, c.ts_ns
                    ));
                }
                self.next_release += 1;
                self.acked = self.acked.max(c.seq);
            }
        }
        Ok(())
    }

    /// Everything released so far, without waiting.
    fn poll(&mut self, rx: &CommittedReceiver<Ev>) -> Result<(), String> {
        let groups: Vec<_> = rx.try_iter().collect();
        self.take_outputs(groups)
    }

    /// Everything released until the output closes (the pipeline has stopped).
    fn drain(&mut self, rx: &CommittedReceiver<Ev>) -> Result<(), String> {
        loop {
            match rx.recv_timeout(WAIT) {
                Ok(group) => self.take_outputs(vec![group])?,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
                Err(RecvTimeoutError::Timeout) => {
                    return fail(format!("the output did not close within {WAIT:?}"))
                }
            }
        }
    }

    /// Arms this cycle's fault or crash point (or nothing).
    fn arm(&mut self, disk: &SimDisk, rounds: u64, c: &mut Counters) -> Plan {
        let effect = self.rng.gen();
        let plan = match self.rng.gen_range(0..10) {
            0 | 1 => Plan::Clean,
            2..=6 => {
                let kind = FaultKind::ALL[self.rng.gen_range(0..FaultKind::ALL.len())];
                // Each round makes about one call of each kind (a snapshot one more).
                Plan::Fault(kind, self.rng.gen_range(1..=rounds + 2))
            }
            _ => Plan::Crash(self.rng.gen_range(1..=rounds * 12)),
        };
        match plan {
            Plan::Clean => c.bump("cycle.plan.clean"),
            Plan::Fault(kind, n) => {
                disk.arm(kind, n, effect);
                c.bump(&format!("cycle.plan.fault.{}", kind.name()));
            }
            Plan::Crash(n) => {
                disk.arm_crash(n);
                c.bump("cycle.plan.crash_point");
            }
        }
        plan
    }

    /// Runs rounds until they run out or the pipeline stops.
    fn rounds(
        &mut self,
        seq: &Sequencer<Toy>,
        rx: &CommittedReceiver<Ev>,
        rounds: u64,
        c: &mut Counters,
    ) -> Result<(), String> {
        let h = seq.handle();
        let requester = Requester::new(seq.handle());
        for _ in 0..rounds {
            self.tick();
            // Usually one message per round (then the group is exactly that message);
            // sometimes several back to back, so the writer stores one group while the
            // sync thread fsyncs the one before.
            let messages = if self.racy && self.rng.gen_range(0..5) == 0 {
                self.rng.gen_range(2..=4)
            } else {
                1
            };
            let mut closed = false;
            for _ in 0..messages {
                let n = self.rng.gen_range(1..=40);
                let cmds = self.commands(n);
                if h.submit_many(cmds).is_err() {
                    closed = true;
                    break;
                }
                c.add("commands.submitted", u64::try_from(n).expect("fits"));
            }
            if closed {
                c.bump("stop.submit_refused");
                return Ok(());
            }
            // A snapshot right behind the group (the writer then stores and fsyncs it
            // while the sync thread fsyncs the group), or after the barrier.
            let snapshot = match self.rng.gen_range(0..6) {
                0 if !self.racy => 1,
                n => n,
            };
            if snapshot == 0 && !self.snapshot(&requester, c)? {
                return Ok(());
            }
            match requester.ask(Ask::Barrier) {
                Answer::Barrier(Ok(at)) => {
                    if at != self.last().0 {
                        return fail(format!(
                            "barrier answered at seq {at}, but {} were sequenced",
                            self.last().0
                        ));
                    }
                    // The outputs of every group before the barrier were sent before it
                    // was answered.
                    self.poll(rx)?;
                    if self.next_release != at + 1 {
                        return fail(format!(
                            "barrier answered at {at} but released up to {}",
                            self.next_release - 1
                        ));
                    }
                    c.bump("requests.barrier.ok");
                }
                Answer::Barrier(Err(e)) => {
                    c.bump(&format!("stop.barrier.{}", error_kind(&e)));
                    return Ok(());
                }
                Answer::Snapshot(_) => return fail("a barrier answered as a snapshot"),
            }
            if snapshot == 1 && !self.snapshot(&requester, c)? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Asks for a snapshot; false when the pipeline has stopped.
    fn snapshot(&mut self, requester: &Requester, c: &mut Counters) -> Result<bool, String> {
        match requester.ask(Ask::Snapshot) {
            Answer::Snapshot(Ok(info)) => {
                if (info.seq, info.ts_ns) != self.last() {
                    return fail(format!(
                        "snapshot at ({}, {}), but the last sequenced is {:?}",
                        info.seq,
                        info.ts_ns,
                        self.last()
                    ));
                }
                // Reported written: durable, so acknowledged.
                self.acked = self.acked.max(info.seq);
                c.bump("requests.snapshot.ok");
                Ok(true)
            }
            Answer::Snapshot(Err(e)) => {
                c.bump(&format!("stop.snapshot.{}", error_kind(&e)));
                Ok(false)
            }
            Answer::Barrier(_) => fail("a snapshot answered as a barrier"),
        }
    }

    /// Checks a recovery's result: acknowledged ⊆ recovered, the log a prefix of the
    /// stream, the state a clean replay of the log.
    fn check_recovered(&self, rec: &Recovered<Toy>, log: &[Entry]) -> Result<(), String> {
        if rec.last_seq < self.acked {
            return fail(format!(
                "recovered up to seq {}, but seq {} was acknowledged",
                rec.last_seq, self.acked
            ));
        }
        if u64::try_from(log.len()).ok() != Some(rec.last_seq) {
            return fail(format!(
                "recovered last seq {} but the log holds {} commands",
                rec.last_seq,
                log.len()
            ));
        }
        if log.len() > self.stream.len() {
            return fail(format!(
                "the recovered log holds {} commands, only {} were sequenced",
                log.len(),
                self.stream.len()
            ));
        }
        if let Some(i) = (0..log.len()).find(|&i| log[i] != self.stream[i]) {
            return fail(format!(
                "the recovered log holds {:?} where {:?} was sequenced",
                log[i], self.stream[i]
            ));
        }
        let last_ts = log.last().map_or(0, |e| e.1);
        if rec.last_ts_ns != last_ts {
            return fail(format!(
                "recovered last ts {} but the log ends at ts {last_ts}",
                rec.last_ts_ns
            ));
        }
        let clean = rebuild(log).state_hash();
        if rec.state.state_hash() != clean || rec.report.state_hash != clean {
            return fail(format!(
                "recovered state hash differs from a clean replay of its log (up to seq {}; snapshot used: {:?})",
                rec.last_seq,
                rec.report.snapshot_used.map(|m| m.seq)
            ));
        }
        Ok(())
    }

    /// Checks a replay's result against the stream: everything acknowledged, the state
    /// of a clean replay of the stream's prefix.
    fn check_replayed(&self, r: &Replayed<Toy>) -> Result<(), String> {
        if r.last_seq < self.acked {
            return fail(format!(
                "replayed up to seq {}, but seq {} was acknowledged",
                r.last_seq, self.acked
            ));
        }
        let Some(prefix) = usize::try_from(r.last_seq)
            .ok()
            .and_then(|n| self.stream.get(..n))
        else {
            return fail(format!(
                "replayed up to seq {}, only {} were sequenced",
                r.last_seq,
                self.stream.len()
            ));
        };
        if r.state_hash != rebuild(prefix).state_hash() {
            return fail(format!(
                "the replay's state hash at seq {} differs from a clean replay of what was sequenced",
                r.last_seq
            ));
        }
        Ok(())
    }

    fn count_recovery(&self, rec: &Recovered<Toy>, c: &mut Counters) {
        let r = &rec.report;
        c.bump("recovery.ok");
        if r.journal.dropped_tail.is_some() {
            c.bump("recovery.dropped_torn_tail");
        }
        if r.journal.lost_snapshot.is_some() {
            c.bump("recovery.lost_snapshot");
        }
        c.add(
            "recovery.snapshots_rejected",
            u64::try_from(r.snapshots_rejected.len()).expect("fits"),
        );
        if r.snapshot_used.is_some() {
            c.bump("recovery.from_snapshot");
        } else {
            c.bump("recovery.from_genesis");
        }
        if rec.last_seq > self.acked {
            c.bump("recovery.kept_unacknowledged_tail");
        }
        if rec.last_seq < self.last().0 {
            c.bump("recovery.lost_unacknowledged_tail");
        }
    }

    /// Damages a copy of `image` and checks what recovery makes of it.
    fn damage_check(&mut self, image: &SimDisk, c: &mut Counters) -> Result<(), String> {
        let kind = DamageKind::ALL[self.rng.gen_range(0..DamageKind::ALL.len())];
        let damaged = image.copy();
        let what = damage(&damaged, kind, &mut self.rng);
        let expect = classify(image, &damaged, &what, self.acked);
        let label = match &what {
            Damage::Value { space, live, .. } => format!(
                "value.{}.{}",
                space.name(),
                if *live { "live" } else { "replaced" }
            ),
            Damage::Mark { .. } => "mark".to_string(),
            Damage::Suffix { .. } => "suffix_drop".to_string(),
            Damage::Nothing => "nothing".to_string(),
        };
        // A replay tool (read-only, nothing written) on its own copy first: it must agree.
        match (expect, replay_of(&damaged.copy())) {
            (Expect::Refuse, Ok(r)) => {
                return fail(format!(
                    "damage {what:?} hit acknowledged data (acked {}, mark {:?}), yet a replay succeeded up to seq {}",
                    self.acked,
                    mark_of(image),
                    r.last_seq
                ))
            }
            (Expect::Recover, Err(e)) if !never_created(&damaged) => {
                return fail(format!(
                    "damage {what:?} is one the design tolerates, yet a replay failed: {e}"
                ))
            }
            (_, Ok(r)) => {
                self.check_replayed(&r)
                    .map_err(|why| format!("after damage {what:?}: {why}"))?;
                c.bump("damage.replay.recovered");
            }
            (_, Err(e)) => c.bump(&format!("damage.replay.refused.{}", error_kind(&e))),
        }
        let result = recover(&damaged);
        match (expect, result) {
            (Expect::Refuse, Err(e)) | (Expect::Either, Err(e)) => {
                if matches!(e, SequencerError::Journal(JournalError::Io { .. })) {
                    return fail(format!("damage {what:?}: an I/O error with no fault armed: {e}"));
                }
                c.bump(&format!("damage.{label}.{expect:?}.refused.{}", error_kind(&e)));
            }
            (Expect::Refuse, Ok((rec, log))) => {
                return fail(format!(
                    "damage {what:?} hit acknowledged data (acked {}, mark {:?}), yet recovery succeeded up to seq {} ({})",
                    self.acked,
                    mark_of(image),
                    rec.last_seq,
                    match self.check_recovered(&rec, &log) {
                        Ok(()) => "with the right state".to_string(),
                        Err(why) => why,
                    }
                ))
            }
            (Expect::Recover, Err(e)) => {
                return fail(format!(
                    "damage {what:?} is one the design tolerates, yet recovery failed: {e}"
                ))
            }
            (Expect::Recover, Ok((rec, log))) | (Expect::Either, Ok((rec, log))) => {
                self.check_recovered(&rec, &log)
                    .map_err(|why| format!("after damage {what:?}: {why}"))?;
                c.bump(&format!("damage.{label}.{expect:?}.recovered"));
            }
        }
        Ok(())
    }

    /// Takes a crash image of `disk`, maybe damages a copy, maybe fails the recovery
    /// itself, recovers and checks. Returns the disk the next run continues on.
    fn crash_and_recover(
        &mut self,
        disk: &SimDisk,
        c: &mut Counters,
    ) -> Result<(SimDisk, Recovered<Toy>), String> {
        let kind = self.crash_kind();
        let mut image = disk.crash(kind, &mut self.rng);
        self.count_crash(kind, &image, c);
        if self.rng.gen_range(0..3) == 0 {
            self.damage_check(&image, c)?;
        }
        if self.rng.gen_range(0..5) == 0 {
            // A fault or a crash while recovering (reading, dropping a torn tail, making
            // the repair durable): the recovery must fail, and the disk it leaves must
            // still recover.
            let attempt = image.copy();
            let effect = self.rng.gen();
            if self.rng.gen_range(0..2) == 0 {
                attempt.arm_crash(self.rng.gen_range(1..=12));
            } else {
                let kind = FaultKind::ALL[self.rng.gen_range(0..FaultKind::ALL.len())];
                attempt.arm(kind, self.rng.gen_range(1..=2), effect);
            }
            let result = recover(&attempt);
            let fired = !attempt.fired().is_empty();
            match (result, fired) {
                (Ok((rec, log)), false) => {
                    c.bump("recovery_fault.not_reached");
                    drop((rec, log));
                }
                (Ok((rec, log)), true) => {
                    // Only a read can fail unseen: a scan's error comes with its first
                    // record, and a scan of nothing (an empty tail) is never consumed.
                    // A failed write must never be ignored.
                    let fired = attempt.fired();
                    if !fired
                        .iter()
                        .all(|f| f.trigger == Trigger::Crash && f.op == "reading")
                    {
                        return fail(format!(
                            "recovery succeeded although a storage write failed: {fired:?}"
                        ));
                    }
                    self.check_recovered(&rec, &log)
                        .map_err(|why| format!("after an unseen failed read: {why}"))?;
                    c.bump("recovery_fault.unseen_read");
                }
                (Err(e), true) => {
                    c.bump(&format!("recovery_fault.refused.{}", error_kind(&e)));
                    attempt.disarm();
                    let kind = self.crash_kind();
                    image = attempt.crash(kind, &mut self.rng);
                    self.count_crash(kind, &image, c);
                }
                (Err(e), false) => return fail(format!("recovery failed: {e}")),
            }
        }
        // What a replay tool makes of the image (it writes nothing), then the recovery.
        let replayed = match replay_of(&image) {
            Ok(r) => {
                self.check_replayed(&r)?;
                Some(r)
            }
            Err(_) if never_created(&image) => {
                c.bump("replay.refused_unfinished_creation");
                None
            }
            Err(e) => {
                return fail(format!(
                    "replay of an undamaged {kind:?} image failed: {e} (acked {}, mark {:?})",
                    self.acked,
                    mark_of(&image)
                ))
            }
        };
        let (rec, log) = recover(&image).map_err(|e| {
            format!(
                "recovery of an undamaged {kind:?} image failed: {e} (acked {}, mark {:?})",
                self.acked,
                mark_of(&image)
            )
        })?;
        self.check_recovered(&rec, &log)?;
        if let Some(r) = replayed.filter(|r| r.last_seq != rec.last_seq) {
            return fail(format!(
                "a replay reads up to seq {}, recovery up to {}",
                r.last_seq, rec.last_seq
            ));
        }
        self.count_recovery(&rec, c);
        self.stream.truncate(log.len());
        self.next_release = rec.last_seq + 1;
        Ok((image, rec))
    }

    fn crash_kind(&mut self) -> CrashKind {
        if self.rng.gen_range(0..2) == 0 {
            CrashKind::ProcessCrash
        } else {
            CrashKind::PowerLoss
        }
    }

    fn count_crash(&self, kind: CrashKind, image: &SimDisk, c: &mut Counters) {
        c.bump(&format!("crash.{kind:?}"));
        if let Some(r) = image.crash_report() {
            if r.lost_ops > 0 {
                c.bump(&format!("crash.{kind:?}.lost_ops"));
            }
            if r.unsynced_survivors > 0 {
                c.bump("crash.PowerLoss.unsynced_ops_survived");
            }
            if r.torn_op {
                c.bump("crash.PowerLoss.torn_op");
            }
            if r.torn_mark {
                c.bump("crash.PowerLoss.torn_mark_slot");
            }
            if r.undurable_mark_kept {
                c.bump("crash.PowerLoss.undurable_mark_kept");
            }
        }
    }
}

/// Whether `seed` runs racy (see `World::racy`).
fn is_racy(seed: u64) -> bool {
    World::new(seed).racy
}

/// One seed: a fresh journal, a few crash cycles, a final clean stop. Returns a summary
/// (what a rerun must reproduce, for a seed that is not racy).
fn run_seed(seed: u64, c: &mut Counters) -> Result<String, String> {
    let mut w = World::new(seed);
    let mut disk = SimDisk::new(&format!("seed-{seed}"), GENESIS);
    // Racy seeds give every fsync a pause (the writer's flushes then race the sync
    // thread's fsyncs); the latency stays with the seed's disks across crashes.
    if w.racy {
        disk.set_sync_latency(w.rng.gen_range(0..=300));
    }
    let mut creation_faulted = false;
    if w.rng.gen_range(0..8) == 0 {
        // A failure or crash while the journal is being created: nothing was
        // acknowledged, so whatever it leaves must open (and complete the creation).
        creation_faulted = true;
        let effect = w.rng.gen();
        if w.rng.gen_range(0..2) == 0 {
            disk.arm_crash(w.rng.gen_range(1..=12));
        } else {
            let kind = FaultKind::ALL[w.rng.gen_range(0..FaultKind::ALL.len())];
            disk.arm(kind, 1, effect);
        }
        match journal_open(&disk) {
            Ok(_) if disk.fired().is_empty() => c.bump("creation_fault.not_reached"),
            Ok(_) => {
                return fail(format!(
                    "creation succeeded although a storage call failed: {:?}",
                    disk.fired()
                ))
            }
            Err(e) => {
                if disk.fired().is_empty() {
                    return fail(format!("creation failed with no fault fired: {e}"));
                }
                c.bump(&format!(
                    "creation_fault.refused.{}",
                    error_kind(&SequencerError::Journal(e))
                ));
                disk.disarm();
                let kind = w.crash_kind();
                disk = disk.crash(kind, &mut w.rng);
                w.count_crash(kind, &disk, c);
            }
        }
        disk.disarm();
    }
    let (journal, report) = journal_open(&disk).map_err(|e| {
        format!(
            "create: {e} (after a fault during creation: {:?})",
            disk.crash_report()
        )
    })?;
    if !report.created && !creation_faulted {
        return fail("a new disk did not create a journal");
    }
    if journal.last_seq() != 0 {
        return fail(format!("a new journal holds seq {}", journal.last_seq()));
    }
    let fresh = Toy::from_genesis(GENESIS).map_err(|e| format!("genesis: {e}"))?;
    let (mut seq, mut rx) =
        Sequencer::start(fresh, Some(journal), Box::new(w.clock.clone()), w.config)
            .map_err(|e| format!("start: {e}"))?;
    let cycles = w.rng.gen_range(1..=4);
    for _ in 0..cycles {
        c.bump("cycles");
        let rounds = w.rng.gen_range(1..=20);
        // The writer thread opens its sync handle (a storage call) when it starts; wait
        // for that before arming, or a countdown would race it.
        match Requester::new(seq.handle()).ask(Ask::Barrier) {
            Answer::Barrier(Ok(at)) if at == w.last().0 => {}
            Answer::Barrier(Ok(at)) => {
                return fail(format!(
                    "a fresh pipeline's barrier answered at {at}, not {}",
                    w.last().0
                ))
            }
            Answer::Barrier(Err(e)) => return fail(format!("a fresh pipeline stopped: {e}")),
            Answer::Snapshot(_) => return fail("a barrier answered as a snapshot"),
        }
        let plan = w.arm(&disk, rounds, c);
        w.rounds(&seq, &rx, rounds, c)?;
        let stopped = seq.shutdown();
        w.drain(&rx)?;
        let fired = disk.fired();
        match (&stopped, fired.last()) {
            (Ok(s), None) => {
                if s.last_seq != w.last().0 || w.acked != s.last_seq {
                    return fail(format!(
                        "clean stop at seq {} with {} sequenced and {} acknowledged",
                        s.last_seq,
                        w.last().0,
                        w.acked
                    ));
                }
            }
            (Err(_), Some(f)) => {
                let name = match f.trigger {
                    Trigger::Fault(k) => format!("fault.{}", k.name()),
                    Trigger::Crash => format!("crash_point.at_{}", f.op.replace(' ', "_")),
                };
                c.bump(&format!("fired.{name}"));
                if let Some(p) = f.partial {
                    c.bump(&format!("fired.partial.{}", p.replace(' ', "_")));
                }
            }
            (Ok(_), Some(f)) => {
                return fail(format!(
                    "the pipeline stopped cleanly although a storage call failed ({f:?}; plan {plan:?})"
                ))
            }
            (Err(e), None) => {
                return fail(format!("the pipeline stopped with {e} but no fault fired"))
            }
        }
        if let Plan::Fault(..) | Plan::Crash(..) = plan {
            if fired.is_empty() {
                c.bump("cycle.armed_but_not_reached");
            }
        }
        drop(stopped);
        disk.disarm();
        let (image, rec) = w.crash_and_recover(&disk, c)?;
        w.calls += disk.calls();
        disk = image;
        (seq, rx) = Sequencer::resume(rec, Box::new(w.clock.clone()), w.config)
            .map_err(|e| format!("resume: {e}"))?;
    }
    c.add("commands.acknowledged", w.acked);
    let stopped = seq.shutdown().map_err(|e| format!("final stop: {e}"))?;
    w.drain(&rx)?;
    if stopped.last_seq != w.last().0 {
        return fail(format!(
            "final stop at seq {}, but {} were sequenced",
            stopped.last_seq,
            w.last().0
        ));
    }
    Ok(format!(
        "racy {}, {cycles} cycles, last seq {}, acknowledged {}, storage calls {}, state {}",
        w.racy,
        stopped.last_seq,
        w.acked,
        w.calls + disk.calls(),
        hex8(&stopped.state.state_hash())
    ))
}

fn hex8(h: &[u8; 32]) -> String {
    h.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
