//! Sequencer tests with a toy ledger state machine: ordering across producers,
//! back-pressure, durability before release, failure handling, recovery after a
//! stop or crash mid-stream, snapshots, replay and timestamp monotonicity.

mod toy;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use perpcore_journal::{Journal, JournalError, JournalOptions};
use perpcore_sequencer::{
    recover, replay, Clock, Closed, Committed, CommittedReceiver, ManualClock, Sequencer,
    SequencerConfig, SequencerError, SequencerHandle, StateMachine, SystemClock, TrySubmitError,
};
use toy::{rebuild, Cmd, Ev, Toy, GENESIS};

const WAIT: Duration = Duration::from_secs(60);

fn new_journal(path: &Path) -> Journal {
    Journal::open_or_create(path, GENESIS, JournalOptions::default())
        .expect("journal")
        .0
}

/// The raw sled database of a dropped journal (waits for sled to release its lock).
fn sled_open(path: &Path) -> sled::Db {
    perpcore_journal::open_raw_db(path).expect("sled open")
}

fn fresh() -> Toy {
    Toy::from_genesis(GENESIS).expect("genesis")
}

fn cmd(producer: u32, n: u64) -> Cmd {
    Cmd {
        producer,
        n,
        amount: n % 100,
    }
}

/// Receives exactly `n` outputs (fails the test after a long timeout instead of hanging).
/// Outputs come one message per group commit; a group never straddles `n` here because
/// the tests wait for exactly what they submitted.
fn recv_n(rx: &CommittedReceiver<Ev>, n: usize) -> Vec<Committed<Ev>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let group = rx.recv_timeout(WAIT).expect("output within timeout");
        assert!(!group.is_empty(), "an empty group was released");
        out.extend(group);
    }
    assert_eq!(out.len(), n, "more outputs than expected");
    out
}

/// The next single output (the next group must hold exactly one command).
fn recv_one(rx: &CommittedReceiver<Ev>) -> Committed<Ev> {
    let mut v = recv_n(rx, 1);
    v.pop().expect("one output")
}

/// Receives until the sequencer closes the output channel.
fn recv_all(rx: &CommittedReceiver<Ev>) -> Vec<Committed<Ev>> {
    let mut out = Vec::new();
    loop {
        match rx.recv_timeout(WAIT) {
            Ok(group) => out.extend(group),
            Err(RecvTimeoutError::Disconnected) => return out,
            Err(RecvTimeoutError::Timeout) => panic!("sequencer did not close its output"),
        }
    }
}

fn as_log(outputs: &[Committed<Ev>]) -> Vec<(u64, u64, Cmd)> {
    outputs
        .iter()
        .map(|c| {
            assert_eq!(c.events.len(), 1);
            (c.seq, c.ts_ns, c.events[0].cmd())
        })
        .collect()
}

fn assert_strictly_ordered(outputs: &[Committed<Ev>], first_seq: u64) {
    for (i, c) in outputs.iter().enumerate() {
        assert_eq!(c.seq, first_seq + u64::try_from(i).expect("fits"));
    }
    for w in outputs.windows(2) {
        assert!(w[1].ts_ns > w[0].ts_ns, "timestamps must strictly increase");
    }
}

/// A fresh sequencer on a new journal at `path`, on the system clock.
fn start_journaled(
    path: &Path,
    config: SequencerConfig,
) -> (Sequencer<Toy>, CommittedReceiver<Ev>) {
    Sequencer::start(
        fresh(),
        Some(new_journal(path)),
        Box::new(SystemClock),
        config,
    )
    .expect("start")
}

/// `start_journaled` with an input queue of `queue_capacity` messages.
fn start_with_queue(path: &Path, queue_capacity: usize) -> (Sequencer<Toy>, CommittedReceiver<Ev>) {
    start_journaled(
        path,
        SequencerConfig {
            queue_capacity,
            ..SequencerConfig::default()
        },
    )
}

#[test]
fn orders_commands_from_many_producers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    let (seq, rx) = start_with_queue(&path, 64);
    const PRODUCERS: u32 = 4;
    const PER: u64 = 250;
    let mut threads = Vec::new();
    for p in 0..PRODUCERS {
        let h = seq.handle();
        threads.push(std::thread::spawn(move || {
            for n in 0..PER {
                h.submit(cmd(p, n)).expect("submit");
            }
        }));
    }
    let outputs = recv_n(
        &rx,
        usize::try_from(u64::from(PRODUCERS) * PER).expect("fits"),
    );
    for t in threads {
        t.join().expect("producer");
    }
    let stopped = seq.shutdown().expect("shutdown");

    assert_strictly_ordered(&outputs, 1);
    // Each producer's commands keep their submission order.
    let mut next = [0u64; PRODUCERS as usize];
    for c in &outputs {
        let Ev::Applied { producer, n, .. } = c.events[0] else {
            panic!("unexpected rejection")
        };
        let slot = &mut next[usize::try_from(producer).expect("fits")];
        assert_eq!(n, *slot, "producer {producer} reordered");
        *slot += 1;
    }
    assert_eq!(stopped.last_seq, 1000);
    assert!(stopped.stats.batches >= 1 && stopped.stats.batches <= 1000);
    let live_hash = stopped.state.state_hash();
    assert_eq!(rebuild(&as_log(&outputs)).state_hash(), live_hash);
    drop(stopped);
    let replayed = replay::<Toy>(&path, None, |_| {}).expect("replay");
    assert_eq!(replayed.state_hash, live_hash);
    assert_eq!(replayed.commands, 1000);
}

/// `submit_many`: the commands of one queue message (a run, or each
/// `MAX_COMMANDS_PER_MESSAGE` piece of a longer one) get consecutive sequence numbers
/// with nothing from other producers in between; every command is sequenced once, in
/// its producer's order.
#[test]
fn submit_many_keeps_a_run_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    let (seq, rx) = start_with_queue(&path, 8);
    let max = perpcore_sequencer::MAX_COMMANDS_PER_MESSAGE;
    // Run lengths around the message limit; the run of 2 × max + 1 is split in three.
    let max_u64 = u64::try_from(max).expect("fits");
    let lengths = [0, 1, 7, max - 1, max, max + 1, 2 * max + 1, 3];
    const PRODUCERS: u32 = 3;
    let mut threads = Vec::new();
    for p in 0..PRODUCERS {
        let h = seq.handle();
        threads.push(std::thread::spawn(move || {
            let mut n = 0u64;
            let mut runs = Vec::new();
            for len in lengths {
                let len = u64::try_from(len).expect("fits");
                runs.push((n, len));
                h.submit_many((n..n + len).map(|i| cmd(p, i)).collect())
                    .expect("submit_many");
                n += len;
            }
            (runs, n)
        }));
    }
    let runs: Vec<(Vec<(u64, u64)>, u64)> = threads
        .into_iter()
        .map(|t| t.join().expect("producer"))
        .collect();
    let total: u64 = runs.iter().map(|r| r.1).sum();
    let outputs = recv_n(&rx, usize::try_from(total).expect("fits"));
    let stopped = seq.shutdown().expect("shutdown");
    assert_strictly_ordered(&outputs, 1);
    assert_eq!(stopped.last_seq, total);
    // seq of every (producer, n).
    let mut seq_of = std::collections::BTreeMap::new();
    for c in &outputs {
        let Ev::Applied { producer, n, .. } = c.events[0] else {
            panic!("unexpected rejection")
        };
        assert!(
            seq_of.insert((producer, n), c.seq).is_none(),
            "sequenced twice"
        );
    }
    for (p, (producer_runs, count)) in (0u32..).zip(&runs) {
        assert_eq!(seq_of.range((p, 0)..(p + 1, 0)).count() as u64, *count);
        for (start, len) in producer_runs {
            // Within a message, no gap; between the pieces of a split run there may be,
            // so each command is compared with the first of its own piece (comparing with
            // the run's first failed whenever another producer came in between pieces).
            for i in (1..*len).filter(|i| i % max_u64 != 0) {
                let piece = i - i % max_u64;
                assert_eq!(
                    seq_of[&(p, start + i)],
                    seq_of[&(p, start + piece)] + (i - piece),
                    "producer {p}: run at {start} was interleaved"
                );
            }
        }
    }
    let live_hash = stopped.state.state_hash();
    drop(stopped);
    assert_eq!(
        replay::<Toy>(&path, None, |_| {})
            .expect("replay")
            .state_hash,
        live_hash
    );
}

#[test]
fn full_queue_blocks_producers() {
    let config = SequencerConfig {
        queue_capacity: 8,
        output_capacity: 1,
        max_group_commands: 4,
        ..SequencerConfig::default()
    };
    let (seq, rx) = Sequencer::start(fresh(), None, Box::new(SystemClock), config).expect("start");
    let h = seq.handle();
    // Nobody reads outputs, so the sequencer stalls on its output and the input fills.
    let mut accepted = 0u64;
    let mut full = false;
    for n in 0..10_000u64 {
        match h.try_submit(cmd(0, n)) {
            Ok(()) => accepted += 1,
            Err(TrySubmitError::Full(c)) => {
                assert_eq!(c, cmd(0, n), "the command is handed back");
                // The sequencer may still be taking a few; give it time to stall.
                std::thread::sleep(Duration::from_millis(20));
                if h.try_submit(c).is_err() {
                    full = true;
                    break;
                }
                accepted += 1;
            }
            Err(TrySubmitError::Closed(_)) => panic!("closed"),
        }
    }
    assert!(full, "queue never filled");
    // queue (8) + one group in the worker (4) + one output slot holding a group (4),
    // plus slack for timing.
    assert!(
        accepted <= 8 + 4 + 4 + 2,
        "accepted {accepted}: memory is not bounded"
    );

    // A blocking submit waits until the consumer makes room.
    let done = Arc::new(AtomicBool::new(false));
    let d = Arc::clone(&done);
    let h2 = seq.handle();
    let blocked = std::thread::spawn(move || {
        h2.submit(cmd(1, 0)).expect("submit");
        d.store(true, Ordering::SeqCst);
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !done.load(Ordering::SeqCst),
        "submit did not block on a full queue"
    );
    let outputs = recv_n(&rx, usize::try_from(accepted + 1).expect("fits"));
    blocked.join().expect("blocked producer");
    assert!(done.load(Ordering::SeqCst));
    assert_strictly_ordered(&outputs, 1);
    drop(seq);
}

#[test]
fn events_are_released_only_after_their_batch_is_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut journal = new_journal(&dir.path().join("j"));
    let durable = Arc::new(AtomicU64::new(0));
    let d = Arc::clone(&durable);
    journal.set_durable_observer(Box::new(move |seq| d.store(seq, Ordering::SeqCst)));
    let (seq, rx) = Sequencer::start(
        fresh(),
        Some(journal),
        Box::new(SystemClock),
        SequencerConfig::default(),
    )
    .expect("start");
    let mut threads = Vec::new();
    for p in 0..3 {
        let h = seq.handle();
        threads.push(std::thread::spawn(move || {
            for n in 0..200 {
                h.submit(cmd(p, n)).expect("submit");
            }
        }));
    }
    let mut received = 0;
    while received < 600 {
        let group = rx.recv_timeout(WAIT).expect("output");
        let watermark = durable.load(Ordering::SeqCst);
        for c in &group {
            assert!(
                c.seq <= watermark,
                "seq {} released before durable ({watermark})",
                c.seq
            );
        }
        received += group.len();
    }
    assert_eq!(received, 600);
    for t in threads {
        t.join().expect("producer");
    }
    let stopped = seq.shutdown().expect("shutdown");
    assert_eq!(stopped.last_seq, 600);
}

#[test]
fn failed_commit_releases_nothing_and_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    let mut journal = new_journal(&path);
    journal.fail_next_sync();
    let (seq, rx) = Sequencer::start(
        fresh(),
        Some(journal),
        Box::new(SystemClock),
        SequencerConfig::default(),
    )
    .expect("start");
    let h = seq.handle();
    h.submit(cmd(0, 0)).expect("first submit is queued");
    // The first commit fails: nothing is released and the output closes.
    assert!(recv_all(&rx).is_empty());
    // The thread has exited; producers see Closed.
    let mut closed = false;
    for n in 1..100 {
        if h.submit(cmd(0, n)) == Err(Closed) {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(closed);
    match seq.shutdown() {
        Err(SequencerError::Journal(JournalError::Injected(_))) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("shutdown must report the failure"),
    }
    // The unacknowledged record may or may not have reached the disk; either way the
    // journal recovers to a consistent state.
    let rec = recover::<Toy>(&path).expect("recover");
    assert!(rec.last_seq <= 1);
}

#[test]
fn recovers_after_the_sequencer_is_dropped_mid_stream() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    let (seq, rx) = start_with_queue(&path, 32);
    let mut producers = Vec::new();
    for p in 0..3 {
        let h = seq.handle();
        producers.push(std::thread::spawn(move || {
            // Submit until the sequencer goes away.
            let mut n = 0;
            while h.submit(cmd(p, n)).is_ok() {
                n += 1;
            }
        }));
    }
    let consumer = std::thread::spawn(move || recv_all(&rx));
    // Let it run for a while, then drop it while producers are still submitting.
    std::thread::sleep(Duration::from_millis(300));
    drop(seq);
    for p in producers {
        p.join().expect("producer");
    }
    let outputs = consumer.join().expect("consumer");
    assert!(!outputs.is_empty());
    assert_strictly_ordered(&outputs, 1);

    let rec = recover::<Toy>(&path).expect("recover");
    // Every released output is durable, and nothing else was committed.
    assert_eq!(rec.last_seq, u64::try_from(outputs.len()).expect("fits"));
    assert_eq!(rec.last_ts_ns, outputs.last().map(|c| c.ts_ns).unwrap_or(0));
    assert_eq!(
        rec.report.state_hash,
        rebuild(&as_log(&outputs)).state_hash()
    );
    assert_eq!(rec.report.journal.dropped_tail, None);

    // Resume: numbering and time continue.
    let last = rec.last_seq;
    let last_ts = rec.last_ts_ns;
    let (seq, rx) = Sequencer::resume(
        rec,
        Box::new(ManualClock::new(0)),
        SequencerConfig::default(),
    )
    .expect("resume");
    seq.handle().submit(cmd(9, 0)).expect("submit");
    let c = recv_one(&rx);
    assert_eq!(c.seq, last + 1);
    assert_eq!(
        c.ts_ns,
        last_ts + 1,
        "a clock behind the journal is overridden"
    );
    seq.shutdown().expect("shutdown");
}

#[test]
fn a_crash_loses_only_what_was_never_released() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    let (seq, rx) = start_journaled(
        &path,
        SequencerConfig {
            max_group_commands: 16,
            ..SequencerConfig::default()
        },
    );
    let h = seq.handle();
    for n in 0..500 {
        h.submit(cmd(0, n)).expect("submit");
    }
    seq.crash_for_tests();
    let outputs = recv_all(&rx);
    assert_strictly_ordered(&outputs, 1);
    let rec = recover::<Toy>(&path).expect("recover");
    assert_eq!(rec.last_seq, u64::try_from(outputs.len()).expect("fits"));
    assert_eq!(
        rec.report.state_hash,
        rebuild(&as_log(&outputs)).state_hash()
    );
}

#[test]
fn snapshot_plus_tail_equals_full_replay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    let clock = ManualClock::new(1_000);
    let (seq, rx) = Sequencer::start(
        fresh(),
        Some(new_journal(&path)),
        Box::new(clock.clone()),
        SequencerConfig::default(),
    )
    .expect("start");
    let h = seq.handle();
    for n in 0..300 {
        clock.advance(7);
        h.submit(cmd(1, n)).expect("submit");
    }
    // The snapshot lands exactly after the 300 commands queued before it.
    let snap = h.snapshot().expect("snapshot");
    assert_eq!(snap.seq, 300);
    for n in 300..500 {
        clock.advance(3);
        h.submit(cmd(2, n)).expect("submit");
    }
    let outputs = recv_n(&rx, 500);
    let stopped = seq.shutdown().expect("shutdown");
    let live_hash = stopped.state.state_hash();
    assert_eq!(stopped.stats.snapshots, 1);
    drop(stopped);
    assert_eq!(
        rebuild(&as_log(&outputs[..300])).state_hash(),
        snap.state_hash
    );

    let rec = recover::<Toy>(&path).expect("recover");
    let used = rec.report.snapshot_used.expect("snapshot used");
    assert_eq!(used.seq, 300);
    assert_eq!(rec.report.replayed_commands, 200);
    assert_eq!(rec.report.state_hash, live_hash);
    assert!(rec.report.snapshots_rejected.is_empty());
    drop(rec);

    let mut progress = Vec::new();
    let full = replay::<Toy>(&path, None, |p| progress.push(*p)).expect("replay");
    assert_eq!(full.state_hash, live_hash);
    assert_eq!(full.commands, 500);
    assert_eq!(progress.last().map(|p| p.last_seq), Some(500));
    assert!(progress.windows(2).all(|w| w[0].last_seq < w[1].last_seq));

    let partial = replay::<Toy>(&path, Some(300), |_| {}).expect("replay to 300");
    assert_eq!(partial.state_hash, snap.state_hash);
    let mid = replay::<Toy>(&path, Some(123), |_| {}).expect("replay to 123");
    assert_eq!(mid.last_seq, 123);
    assert_eq!(
        mid.state_hash,
        rebuild(&as_log(&outputs[..123])).state_hash()
    );
    assert!(matches!(
        replay::<Toy>(&path, Some(501), |_| {}),
        Err(SequencerError::TargetBeyondEnd {
            target: 501,
            last_seq: 500
        })
    ));
}

#[test]
fn damaged_newest_snapshot_falls_back_to_an_older_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    let (seq, rx) = start_journaled(&path, SequencerConfig::default());
    let h = seq.handle();
    for n in 0..50 {
        h.submit(cmd(0, n)).expect("submit");
    }
    assert_eq!(h.snapshot().expect("snapshot").seq, 50);
    for n in 50..80 {
        h.submit(cmd(0, n)).expect("submit");
    }
    assert_eq!(h.snapshot().expect("snapshot").seq, 80);
    for n in 80..90 {
        h.submit(cmd(0, n)).expect("submit");
    }
    recv_n(&rx, 90);
    let live_hash = seq.shutdown().expect("shutdown").state.state_hash();

    {
        let db = sled_open(&path);
        let t = db.open_tree("snapshots").expect("tree");
        let mut v = t
            .get(80u64.to_be_bytes())
            .expect("get")
            .expect("present")
            .to_vec();
        let last = v.len() - 1;
        v[last] ^= 1;
        t.insert(80u64.to_be_bytes(), v).expect("insert");
        db.flush().expect("flush");
    }
    let rec = recover::<Toy>(&path).expect("recover");
    assert_eq!(rec.report.snapshots_rejected.len(), 1);
    assert_eq!(rec.report.snapshots_rejected[0].seq, 80);
    assert_eq!(rec.report.snapshot_used.map(|m| m.seq), Some(50));
    assert_eq!(rec.report.replayed_commands, 40);
    assert_eq!(rec.report.state_hash, live_hash);
}

#[test]
fn recover_drops_a_torn_tail_and_resumes_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    let (seq, rx) = start_journaled(&path, SequencerConfig::default());
    let h = seq.handle();
    for n in 0..20 {
        h.submit(cmd(0, n)).expect("submit");
        h.barrier().expect("barrier");
    }
    let outputs = recv_n(&rx, 20);
    seq.shutdown().expect("shutdown");
    // A torn batch at seq 21 beyond the durable mark, as a crash during a write that
    // was never acknowledged leaves it.
    let tip = Journal::open(&path, JournalOptions::default())
        .expect("open")
        .0
        .tip();
    {
        let mut b = perpcore_journal::BatchBuilder::new();
        let mut bytes = Vec::new();
        Toy::encode_command(&cmd(9, 9), &mut bytes);
        b.push(21, tip.last_ts_ns + 1, &bytes).expect("push");
        b.seal(tip.link).expect("seal");
        let db = sled_open(&path);
        let t = db.open_tree("batches").expect("tree");
        t.insert(21u64.to_be_bytes(), &b.record()[..b.record().len() - 5])
            .expect("insert");
        db.flush().expect("flush");
    }
    let rec = recover::<Toy>(&path).expect("recover");
    assert_eq!(
        rec.report
            .journal
            .dropped_tail
            .as_ref()
            .map(|d| d.first_seq),
        Some(21)
    );
    assert_eq!(rec.last_seq, 20);
    assert_eq!(
        rec.report.state_hash,
        rebuild(&as_log(&outputs)).state_hash()
    );
    let (seq, rx) =
        Sequencer::resume(rec, Box::new(SystemClock), SequencerConfig::default()).expect("resume");
    seq.handle().submit(cmd(5, 5)).expect("submit");
    assert_eq!(recv_one(&rx).seq, 21);
    seq.shutdown().expect("shutdown");
    assert_eq!(recover::<Toy>(&path).expect("recover").last_seq, 21);
    // Tearing the last acknowledged batch is damage, not a torn write.
    {
        let db = sled_open(&path);
        let t = db.open_tree("batches").expect("tree");
        let (k, v) = t.last().expect("last").expect("present");
        t.insert(k, &v[..v.len() - 5]).expect("insert");
        db.flush().expect("flush");
    }
    match recover::<Toy>(&path) {
        Err(SequencerError::Journal(JournalError::Corrupt { seq: 21, what })) => {
            assert!(what.contains("acknowledged"), "{what}")
        }
        Err(e) => panic!("expected damage at seq 21, got {e}"),
        Ok(_) => panic!("expected damage at seq 21, recovered"),
    }
}

#[test]
fn timestamps_stay_monotonic_when_the_clock_goes_backwards() {
    let clock = ManualClock::new(1_000);
    let (seq, rx) = Sequencer::start(
        fresh(),
        None,
        Box::new(clock.clone()),
        SequencerConfig::default(),
    )
    .expect("start");
    let h = seq.handle();
    let mut expect = Vec::new();
    for (n, now, want) in [
        (0u64, 1_000u64, 1_000u64),
        (1, 500, 1_001),
        (2, 500, 1_002),
        (3, 5_000, 5_000),
        (4, 5_000, 5_001),
        (5, 0, 5_002),
        (6, 9_000, 9_000),
    ] {
        clock.set(now);
        h.submit(cmd(0, n)).expect("submit");
        // The barrier makes the sequencer stamp this command before the clock moves.
        h.barrier().expect("barrier");
        expect.push(want);
    }
    let got: Vec<u64> = recv_n(&rx, expect.len()).iter().map(|c| c.ts_ns).collect();
    assert_eq!(got, expect);
    seq.shutdown().expect("shutdown");
}

#[test]
fn no_journal_mode_runs_and_refuses_snapshots() {
    let (seq, rx) = Sequencer::start(
        fresh(),
        None,
        Box::new(SystemClock),
        SequencerConfig::default(),
    )
    .expect("start");
    let h = seq.handle();
    for n in 0..100 {
        h.submit(cmd(0, n)).expect("submit");
    }
    assert!(matches!(h.snapshot(), Err(SequencerError::NoJournal)));
    assert_eq!(h.barrier().expect("barrier"), 100);
    let outputs = recv_n(&rx, 100);
    assert_strictly_ordered(&outputs, 1);
    let stopped = seq.shutdown().expect("shutdown");
    assert!(stopped.journal.is_none());
    assert_eq!(
        stopped.state.state_hash(),
        rebuild(&as_log(&outputs)).state_hash()
    );
    assert_eq!(h.submit(cmd(0, 0)), Err(Closed));
}

#[test]
fn start_refuses_a_journal_that_already_has_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    let (seq, rx) = start_journaled(&path, SequencerConfig::default());
    seq.handle().submit(cmd(0, 0)).expect("submit");
    recv_n(&rx, 1);
    let journal = seq.shutdown().expect("shutdown").journal.expect("journal");
    match Sequencer::start(
        fresh(),
        Some(journal),
        Box::new(SystemClock),
        SequencerConfig::default(),
    ) {
        Err(SequencerError::JournalNotEmpty { last_seq: 1 }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("must refuse"),
    }
}

#[test]
fn outputs_are_discarded_when_nobody_listens() {
    let (seq, rx) = Sequencer::start(
        fresh(),
        None,
        Box::new(SystemClock),
        SequencerConfig {
            output_capacity: 1,
            ..SequencerConfig::default()
        },
    )
    .expect("start");
    drop(rx);
    let h = seq.handle();
    for n in 0..50 {
        h.submit(cmd(0, n)).expect("submit");
    }
    assert_eq!(h.barrier().expect("barrier"), 50);
    assert_eq!(seq.shutdown().expect("shutdown").last_seq, 50);
}

/// Journals `n` commands through a sequencer whose batches hold a few commands each
/// (many batches per group) and returns its outputs and what it stopped with.
fn run_small_batches(
    path: &Path,
    n: u64,
) -> (Vec<Committed<Ev>>, perpcore_sequencer::Stopped<Toy>) {
    let (seq, rx) = Sequencer::start(
        fresh(),
        Some(new_journal(path)),
        Box::new(SystemClock),
        SequencerConfig {
            max_batch_bytes: 100,
            ..SequencerConfig::default()
        },
    )
    .expect("start");
    let h = seq.handle();
    for i in 0..n {
        h.submit(cmd(0, i)).expect("submit");
    }
    let outputs = recv_n(&rx, usize::try_from(n).expect("fits"));
    (outputs, seq.shutdown().expect("shutdown"))
}

#[test]
fn a_group_is_split_into_small_batches_and_replays_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    let (outputs, stopped) = run_small_batches(&path, 2_000);
    assert_strictly_ordered(&outputs, 1);
    assert!(
        stopped.stats.batches > stopped.stats.groups,
        "{:?}",
        stopped.stats
    );
    assert!(stopped.stats.batches >= 2_000 / 4, "{:?}", stopped.stats);
    let live_hash = stopped.state.state_hash();
    drop(stopped);
    let replayed = replay::<Toy>(&path, None, |_| {}).expect("replay");
    assert_eq!(replayed.state_hash, live_hash);
    assert_eq!(replayed.commands, 2_000);
    let rec = recover::<Toy>(&path).expect("recover");
    assert_eq!(rec.last_seq, 2_000);
}

/// Replay hands decoded batches from its reader thread to the applier in chunks of
/// 2,048 commands or more; a target anywhere (first command, chunk edges, mid-batch, the
/// end) must stop exactly there, with the state of the sequential loop.
#[test]
fn replay_to_any_seq_across_chunk_and_batch_edges_matches_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    let n = 5_000u64;
    let (outputs, stopped) = run_small_batches(&path, n);
    let live_hash = stopped.state.state_hash();
    drop(stopped);
    let log = as_log(&outputs);
    for to in [
        1, 2, 2_047, 2_048, 2_049, 2_050, 4_095, 4_096, 4_097, 4_999, n,
    ] {
        let mut last_progress = None;
        let r = replay::<Toy>(&path, Some(to), |p| last_progress = Some(*p)).expect("replay");
        let prefix = usize::try_from(to).expect("fits");
        assert_eq!((r.last_seq, r.commands), (to, to), "to {to}");
        assert_eq!(r.last_ts_ns, log[prefix - 1].1, "to {to}");
        assert_eq!(
            r.state_hash,
            rebuild(&log[..prefix]).state_hash(),
            "to {to}"
        );
        let p = last_progress.expect("progress reported");
        assert_eq!((p.last_seq, p.target_seq, p.commands), (to, to, to));
        assert!(p.batches >= 1 && p.batches <= to, "to {to}: {p:?}");
    }
    let full = replay::<Toy>(&path, None, |_| {}).expect("replay");
    assert_eq!(full.state_hash, live_hash);
}

#[test]
fn replay_names_the_seq_of_damage_in_the_middle_of_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    drop(run_small_batches(&path, 300));
    // Flip a payload byte of a batch in the middle, as a disk fault would.
    let (key, damaged_seq) = {
        let db = sled_open(&path);
        let t = db.open_tree("batches").expect("tree");
        let all: Vec<(sled::IVec, sled::IVec)> = t.iter().map(|r| r.expect("iter")).collect();
        assert!(all.len() > 4, "need several batches, got {}", all.len());
        let (k, v) = &all[all.len() / 2];
        let mut v = v.to_vec();
        let last = v.len() - 1;
        v[last] ^= 0x01;
        t.insert(k, v).expect("insert");
        db.flush().expect("flush");
        let seq = u64::from_be_bytes(k[..8].try_into().expect("8-byte key"));
        (k.to_vec(), seq)
    };
    assert_eq!(key.len(), 8);
    match replay::<Toy>(&path, None, |_| {}) {
        Err(SequencerError::Journal(JournalError::Corrupt { seq, .. })) => {
            assert_eq!(seq, damaged_seq)
        }
        other => panic!(
            "expected damage at {damaged_seq}, got {:?}",
            other.map(|r| r.last_seq)
        ),
    }
    // A start (full check at open) refuses it too.
    assert!(recover::<Toy>(&path).is_err());
}

#[test]
fn barrier_with_a_journal_answers_after_every_earlier_output_is_released() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (seq, rx) = start_journaled(&dir.path().join("j"), SequencerConfig::default());
    let h = seq.handle();
    for round in 1..=3u64 {
        for n in 0..300 {
            h.submit(cmd(0, n)).expect("submit");
        }
        // Groups are fsynced and released by the writer's sync thread; the barrier goes
        // the same way, so by its answer all 300 outputs are already in the channel.
        assert_eq!(h.barrier().expect("barrier"), 300 * round);
        let released: usize = rx.try_iter().map(|group| group.len()).sum();
        assert_eq!(released, 300);
    }
    let stopped = seq.shutdown().expect("shutdown");
    assert_eq!(stopped.last_seq, 900);
}

// Storage errors end cleanly: once a journal write or fsync fails, every request and
// every producer is answered (in bounded time), and nothing that was released is lost.

/// How long a request may take to be answered once the journal failed; a regression
/// fails the test instead of hanging the run.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// A clock that stalls the sequencer thread at its `stall_at`-th reading (the stamping
/// of a known command) until the test opens the gate, so the test can queue messages
/// behind that command.
struct GateClock {
    readings: AtomicU64,
    stall_at: u64,
    entered: Sender<()>,
    release: Receiver<()>,
}

impl Clock for GateClock {
    fn now_ns(&self) -> u64 {
        let reading = self.readings.fetch_add(1, Ordering::SeqCst) + 1;
        if reading == self.stall_at {
            let _ = self.entered.send(());
            // Bounded, so a failing test never leaves the sequencer thread stuck here.
            let _ = self.release.recv_timeout(WAIT);
        }
        SystemClock.now_ns()
    }
}

/// The test's side of a `GateClock`.
struct Gate {
    entered: Receiver<()>,
    release: Sender<()>,
}

impl Gate {
    /// Waits until the sequencer thread is stalled at the gate.
    fn wait_entered(&self) {
        self.entered
            .recv_timeout(WAIT)
            .expect("the sequencer thread reached the gate");
    }

    fn open(&self) {
        self.release.send(()).expect("open the gate");
    }
}

fn gate_clock(stall_at: u64) -> (Box<dyn Clock>, Gate) {
    let (entered_tx, entered) = bounded(1);
    let (release, release_rx) = bounded(1);
    let clock = GateClock {
        readings: AtomicU64::new(0),
        stall_at,
        entered: entered_tx,
        release: release_rx,
    };
    (Box::new(clock), Gate { entered, release })
}

/// A sequencer on a fresh journal whose first fsync fails. One command per group, so
/// each command goes to the journal writer on its own, before the next is stamped.
fn start_failing(path: &Path, clock: Box<dyn Clock>) -> (Sequencer<Toy>, CommittedReceiver<Ev>) {
    let mut journal = new_journal(path);
    journal.fail_next_sync();
    Sequencer::start(
        fresh(),
        Some(journal),
        clock,
        SequencerConfig {
            max_group_commands: 1,
            ..SequencerConfig::default()
        },
    )
    .expect("start")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Snapshot,
    Barrier,
}

/// Sends `request` from a thread of its own (the call blocks); its answer, the seq it
/// reports, comes on the returned channel.
fn request(h: &SequencerHandle<Cmd>, request: Request) -> Receiver<Result<u64, SequencerError>> {
    let h = h.clone();
    let (tx, rx) = bounded(1);
    std::thread::spawn(move || {
        let answer = match request {
            Request::Snapshot => h.snapshot().map(|s| s.seq),
            Request::Barrier => h.barrier(),
        };
        let _ = tx.send(answer);
    });
    rx
}

/// The answer to a request; panics (instead of hanging) if none comes in time.
fn answer_of(
    answer: &Receiver<Result<u64, SequencerError>>,
    what: &str,
) -> Result<u64, SequencerError> {
    answer
        .recv_timeout(ANSWER_WITHIN)
        .unwrap_or_else(|_| panic!("{what}: no answer within {ANSWER_WITHIN:?}; it hangs"))
}

/// The answer must be the sequencer's stop, naming the injected fsync failure.
fn assert_stopped_by_the_fault(answer: Result<u64, SequencerError>, what: &str) {
    match answer {
        Err(SequencerError::Stopped(cause)) => {
            assert!(
                cause.contains("injected fault: sync failure"),
                "{what}: {cause}"
            )
        }
        other => {
            panic!("{what}: expected the sequencer's stop naming the failed fsync, got {other:?}")
        }
    }
}

/// Waits until `n` messages are in the input queue.
fn wait_queued(h: &SequencerHandle<Cmd>, n: usize) {
    let start = Instant::now();
    while h.queued() < n {
        assert!(start.elapsed() < WAIT, "{n} messages were never queued");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Submits until the sequencer refuses with `Closed` (a submission accepted while it
/// was stopping is dropped, never released).
fn wait_closed(h: &SequencerHandle<Cmd>) {
    let start = Instant::now();
    for n in 1_000_000.. {
        if h.submit(cmd(7, n)) == Err(Closed) {
            assert_eq!(h.submit_many(vec![cmd(7, 0), cmd(7, 1)]), Err(Closed));
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "submit still accepted after the failure"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn assert_shutdown_reports_the_fault(seq: Sequencer<Toy>) {
    match seq.shutdown() {
        Err(SequencerError::Journal(JournalError::Injected(_))) => {}
        Err(e) => panic!("shutdown: unexpected error {e}"),
        Ok(_) => panic!("shutdown must report the failure"),
    }
}

/// Everything released (and the seq of any snapshot reported written) survives:
/// recovery reaches it, and replaying up to the last released command gives the state
/// the released outputs describe.
fn assert_released_is_recovered(path: &Path, released: &[Committed<Ev>], durable: u64) {
    assert_strictly_ordered(released, 1);
    let last_released = released.last().map_or(0, |c| c.seq);
    let rec = recover::<Toy>(path).expect("recover");
    assert!(
        rec.last_seq >= last_released.max(durable),
        "recovered up to {}, but {last_released} was released and {durable} reported durable",
        rec.last_seq
    );
    drop(rec);
    if last_released > 0 {
        let replayed = replay::<Toy>(path, Some(last_released), |_| {}).expect("replay");
        assert_eq!(replayed.state_hash, rebuild(&as_log(released)).state_hash());
    }
}

/// Requests of `kind` around a failed fsync, each answered with the sequencer's stop:
/// queued before the failure, behind the command whose fsync fails; queued after it,
/// while the sequencer thread is still busy (they are in its input queue when it
/// stops); and sent once the pipeline has stopped.
fn requests_around_a_failed_fsync(kind: Request) {
    const REQUESTS: usize = 3;

    // Queued before the failure: stamping command 1 stalls until they are queued.
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j");
        let (clock, gate) = gate_clock(1);
        let (seq, out) = start_failing(&path, clock);
        let h = seq.handle();
        h.submit(cmd(0, 1)).expect("submit");
        gate.wait_entered();
        let answers: Vec<_> = (0..REQUESTS).map(|_| request(&h, kind)).collect();
        wait_queued(&h, REQUESTS);
        gate.open();
        let mut durable = 0;
        for a in &answers {
            match answer_of(a, "queued before the failure") {
                // A snapshot can win the race for the injected failure against the sync
                // thread's fsync by a hair, and be written; it is durable then.
                Ok(s) if kind == Request::Snapshot => durable = durable.max(s),
                answer => assert_stopped_by_the_fault(answer, "queued before the failure"),
            }
        }
        let released = recv_all(&out);
        wait_closed(&h);
        assert_shutdown_reports_the_fault(seq);
        assert_released_is_recovered(&path, &released, durable);
    }

    // Queued after the failure while the sequencer thread is busy stamping command 2:
    // command 1 went to the writer alone, its fsync failed and closed the output.
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j");
        let (clock, gate) = gate_clock(2);
        let (seq, out) = start_failing(&path, clock);
        let h = seq.handle();
        h.submit(cmd(0, 1)).expect("submit");
        h.submit(cmd(0, 2)).expect("submit");
        gate.wait_entered();
        assert!(recv_all(&out).is_empty(), "released after a failed fsync");
        h.submit(cmd(0, 3))
            .expect("queued: the sequencer thread is still running");
        let answers: Vec<_> = (0..REQUESTS).map(|_| request(&h, kind)).collect();
        wait_queued(&h, 1 + REQUESTS);
        gate.open();
        for a in &answers {
            assert_stopped_by_the_fault(
                answer_of(a, "queued after the failure"),
                "queued after the failure",
            );
        }
        wait_closed(&h);
        assert_shutdown_reports_the_fault(seq);
        assert_released_is_recovered(&path, &[], 0);
    }

    // Sent once the pipeline has stopped.
    {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j");
        let (seq, out) = start_failing(&path, Box::new(SystemClock));
        let h = seq.handle();
        h.submit(cmd(0, 1)).expect("submit");
        assert!(recv_all(&out).is_empty(), "released after a failed fsync");
        wait_closed(&h);
        let answer = answer_of(&request(&h, kind), "sent after the stop");
        assert_stopped_by_the_fault(answer, "sent after the stop");
        assert_shutdown_reports_the_fault(seq);
        assert_released_is_recovered(&path, &[], 0);
    }
}

#[test]
fn snapshot_after_a_failed_fsync_returns_an_error_instead_of_hanging() {
    requests_around_a_failed_fsync(Request::Snapshot);
}

#[test]
fn barrier_after_a_failed_fsync_returns_an_error_instead_of_hanging() {
    requests_around_a_failed_fsync(Request::Barrier);
}

/// A failed fsync under load, with producers, a consumer, a snapshot and a barrier in
/// flight: the requests error out, every producer is answered (`Closed`), the output
/// closes, shutdown names the failure, and whatever was released, before or after it,
/// is recovered.
#[test]
fn a_failed_fsync_answers_everyone_and_loses_nothing_released() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j");
    // A first run: all of it durable and released.
    let (seq, out) = start_journaled(&path, SequencerConfig::default());
    let h = seq.handle();
    for n in 0..100 {
        h.submit(cmd(0, n)).expect("submit");
    }
    assert_eq!(h.barrier().expect("barrier"), 100);
    let mut released = recv_n(&out, 100);
    seq.shutdown().expect("shutdown");

    // Continued with the next fsync failing.
    let mut rec = recover::<Toy>(&path).expect("recover");
    rec.journal.fail_next_sync();
    let (seq, out) = Sequencer::resume(
        rec,
        Box::new(SystemClock),
        SequencerConfig {
            queue_capacity: 64,
            ..SequencerConfig::default()
        },
    )
    .expect("resume");
    let consumer = std::thread::spawn(move || recv_all(&out));
    let h = seq.handle();
    h.submit(cmd(1, 0)).expect("submit");
    let snapshot = request(&h, Request::Snapshot);
    let barrier = request(&h, Request::Barrier);
    // Producers submit until refused; some block on the full queue meanwhile.
    let (done_tx, done) = bounded(3);
    for p in 2..5u32 {
        let h = seq.handle();
        let done_tx = done_tx.clone();
        std::thread::spawn(move || {
            for n in 0.. {
                let refused = if p % 2 == 0 {
                    h.submit(cmd(p, n)).is_err()
                } else {
                    h.submit_many((0..10).map(|i| cmd(p, n * 10 + i)).collect())
                        .is_err()
                };
                if refused {
                    break;
                }
            }
            let _ = done_tx.send(p);
        });
    }
    let mut durable = 0;
    match answer_of(&snapshot, "snapshot") {
        // Written if it won the race for the injected failure by a hair; durable then.
        Ok(s) => durable = s,
        answer => assert_stopped_by_the_fault(answer, "snapshot"),
    }
    assert_stopped_by_the_fault(answer_of(&barrier, "barrier"), "barrier");
    for _ in 0..3 {
        done.recv_timeout(ANSWER_WITHIN)
            .expect("every producer is refused in time");
    }
    released.extend(consumer.join().expect("consumer"));
    wait_closed(&h);
    assert_shutdown_reports_the_fault(seq);
    assert_released_is_recovered(&path, &released, durable);
}
