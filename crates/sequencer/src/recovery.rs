//! Rebuilding state from a journal: `recover` (newest good snapshot + tail, to resume
//! sequencing) and `replay` (from genesis, optionally up to a sequence number, for
//! audits and tools).
//!
//! Owns: the choice of snapshot, verifying restored state against the stored state
//! hash, and re-applying journaled commands. Must never: apply a command the journal
//! did not verify, skip a command, or resume from a snapshot that does not chain onto
//! the journal.

use std::path::Path;

use perpcore_journal::{
    BatchIter, Journal, JournalError, JournalOptions, OpenCheck, OpenReport, SnapshotMeta,
};

use crate::error::SequencerError;
use crate::StateMachine;

/// A snapshot recovery could not use, and why. Recovery then falls back to an older
/// snapshot or to genesis; the journal remains the source of truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedSnapshot {
    /// Its sequence number.
    pub seq: u64,
    /// Why it was rejected.
    pub reason: String,
}

/// What `recover` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// What opening the journal found (including a dropped torn tail).
    pub journal: OpenReport,
    /// The snapshot recovery started from (`None`: from genesis).
    pub snapshot_used: Option<SnapshotMeta>,
    /// Newer snapshots that failed verification.
    pub snapshots_rejected: Vec<RejectedSnapshot>,
    /// Batches re-applied after the snapshot.
    pub replayed_batches: u64,
    /// Commands re-applied after the snapshot.
    pub replayed_commands: u64,
    /// State hash after recovery.
    pub state_hash: [u8; 32],
}

/// A recovered state machine with its journal, ready for `Sequencer::resume`.
pub struct Recovered<S> {
    /// The state after the last durable command.
    pub state: S,
    /// Last durable sequence number.
    pub last_seq: u64,
    /// Its timestamp.
    pub last_ts_ns: u64,
    /// What happened.
    pub report: RecoveryReport,
    /// The open journal (holds the directory lock).
    pub journal: Journal,
}

/// Progress of `replay`, reported after every chunk of batches the reader hands over
/// (about 2,048 commands) and when the target is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayProgress {
    /// Last sequence number applied.
    pub last_seq: u64,
    /// Sequence number replay will stop at.
    pub target_seq: u64,
    /// Batches read so far.
    pub batches: u64,
    /// Commands applied so far.
    pub commands: u64,
}

/// Result of `replay`.
pub struct Replayed<S> {
    /// The state after `last_seq`.
    pub state: S,
    /// Last sequence number applied.
    pub last_seq: u64,
    /// Its timestamp.
    pub last_ts_ns: u64,
    /// State hash at `last_seq`.
    pub state_hash: [u8; 32],
    /// What opening the journal found.
    pub journal: OpenReport,
    /// Commands applied.
    pub commands: u64,
}

/// `recover_with` with default journal options (fsync durability).
pub fn recover<S: StateMachine>(path: impl AsRef<Path>) -> Result<Recovered<S>, SequencerError> {
    recover_with(path, JournalOptions::default())
}

/// Opens the journal (verifying it and dropping a torn tail), restores the newest
/// snapshot whose checksum and restored state hash verify, replays the commands after
/// it (verifying the hash chain continues from the snapshot) and returns the state at
/// the journal's last durable sequence number. A snapshot beyond the journal's end is
/// an error (acknowledged batches would be missing), not something to skip.
pub fn recover_with<S: StateMachine>(
    path: impl AsRef<Path>,
    opts: JournalOptions,
) -> Result<Recovered<S>, SequencerError> {
    let (journal, open_report) = Journal::open(path, opts)?;
    recover_journal(journal, open_report)
}

/// `recover_with` on a journal that is already open, on any store (`open_report` is
/// what opening it found): restores the newest good snapshot and replays the tail.
/// Only the tail after the snapshot is read here, so damage before it is found by an
/// `OpenCheck::Full` open (the default) or not at all.
pub fn recover_journal<S: StateMachine>(
    journal: Journal,
    open_report: OpenReport,
) -> Result<Recovered<S>, SequencerError> {
    let tip = journal.tip();

    let mut rejected = Vec::new();
    let mut start: Option<(S, SnapshotMeta)> = None;
    let mut seqs = journal.snapshot_seqs()?;
    seqs.reverse();
    for seq in seqs {
        if seq > tip.last_seq {
            return Err(JournalError::SnapshotCorrupt {
                seq,
                what: format!(
                    "snapshot is beyond the journal end {} (acknowledged batches missing?)",
                    tip.last_seq
                ),
            }
            .into());
        }
        match try_snapshot::<S>(&journal, seq)? {
            Ok(found) => {
                start = Some(found);
                break;
            }
            Err(reason) => {
                tracing::warn!(seq, %reason, "recovery: skipping snapshot");
                rejected.push(RejectedSnapshot { seq, reason });
            }
        }
    }

    let (mut state, iter, snapshot_used) = match start {
        Some((state, meta)) => (state, journal.read_after_snapshot(&meta), Some(meta)),
        None => {
            let state = S::from_genesis(journal.genesis())
                .map_err(|e| SequencerError::Genesis(e.to_string()))?;
            (state, journal.read_from_genesis(), None)
        }
    };
    let from_seq = snapshot_used.map_or(0, |m| m.seq);
    let from_ts = snapshot_used.map_or(0, |m| m.last_ts_ns);
    let run = apply_batches(
        &mut state,
        iter,
        from_seq,
        from_ts,
        tip.last_seq,
        &mut |_| {},
    )?;
    if run.last_seq != tip.last_seq {
        return Err(SequencerError::ShortJournal {
            found: run.last_seq,
            expected: tip.last_seq,
        });
    }
    let state_hash = state.state_hash();
    Ok(Recovered {
        state,
        last_seq: run.last_seq,
        last_ts_ns: run.last_ts_ns,
        report: RecoveryReport {
            journal: open_report,
            snapshot_used,
            snapshots_rejected: rejected,
            replayed_batches: run.batches,
            replayed_commands: run.commands,
            state_hash,
        },
        journal,
    })
}

/// Loads, position-checks, restores and hash-verifies one snapshot. The inner error is
/// why this snapshot cannot be used (recovery falls back to an older one); the outer one
/// refuses the journal: a snapshot of a payload version this build does not know was
/// written by another build, and falling back would hide that.
fn try_snapshot<S: StateMachine>(
    journal: &Journal,
    seq: u64,
) -> Result<Result<(S, SnapshotMeta), String>, SequencerError> {
    let snap = match journal.load_snapshot(seq) {
        Ok(Some(snap)) => snap,
        Ok(None) => return Ok(Err("snapshot disappeared".to_string())),
        Err(e @ JournalError::UnsupportedPayloadVersion { .. }) => return Err(e.into()),
        Err(e) => return Ok(Err(e.to_string())),
    };
    if let Err(e) = journal.check_snapshot_position(&snap.meta) {
        return Ok(Err(e.to_string()));
    }
    let state = match S::restore(&snap.state) {
        Ok(state) => state,
        Err(e) => return Ok(Err(format!("restore failed: {e}"))),
    };
    if state.state_hash() != snap.meta.state_hash {
        return Ok(Err(
            "restored state hash differs from the stored state hash".to_string(),
        ));
    }
    Ok(Ok((state, snap.meta)))
}

/// Replays the journal at `path` from genesis up to `to_seq` (or its end), calling
/// `progress` after each batch. Verifies the whole hash chain on the way. The journal is
/// opened read-only: nothing in its directory changes.
pub fn replay<S: StateMachine>(
    path: impl AsRef<Path>,
    to_seq: Option<u64>,
    progress: impl FnMut(&ReplayProgress),
) -> Result<Replayed<S>, SequencerError> {
    // The replay reads and verifies every batch from genesis itself, so the open only
    // checks the tail (and the durable mark). Read-only: nothing in the journal's
    // directory is written, not even the repair of a torn last batch.
    let opts = JournalOptions {
        open_check: OpenCheck::LastBatch,
        ..JournalOptions::read_only()
    };
    let (journal, open_report) = Journal::open(path, opts)?;
    replay_journal(&journal, open_report, to_seq, progress)
}

/// `replay` on a journal that is already open, on any store (`open_report` is what
/// opening it found): every batch from genesis is read and verified here, so an
/// `OpenCheck::LastBatch` open is enough, and a read-only one changes nothing.
pub fn replay_journal<S: StateMachine>(
    journal: &Journal,
    open_report: OpenReport,
    to_seq: Option<u64>,
    mut progress: impl FnMut(&ReplayProgress),
) -> Result<Replayed<S>, SequencerError> {
    let last = journal.last_seq();
    let target = match to_seq {
        Some(t) if t > last => {
            return Err(SequencerError::TargetBeyondEnd {
                target: t,
                last_seq: last,
            })
        }
        Some(t) => t,
        None => last,
    };
    let mut state =
        S::from_genesis(journal.genesis()).map_err(|e| SequencerError::Genesis(e.to_string()))?;
    let run = apply_batches(
        &mut state,
        journal.read_from_genesis(),
        0,
        0,
        target,
        &mut progress,
    )?;
    if run.last_seq != target {
        return Err(SequencerError::ShortJournal {
            found: run.last_seq,
            expected: target,
        });
    }
    let state_hash = state.state_hash();
    Ok(Replayed {
        state,
        last_seq: run.last_seq,
        last_ts_ns: run.last_ts_ns,
        state_hash,
        journal: open_report,
        commands: run.commands,
    })
}

struct Run {
    last_seq: u64,
    last_ts_ns: u64,
    batches: u64,
    commands: u64,
}

/// Verified, decoded batches, as the reader thread hands them to the applier: whole
/// batches, `CHUNK_COMMANDS` commands or more unless the journal (or the target) ends.
/// One hand-off per chunk rather than per batch: at ~100 commands per batch the two
/// threads would otherwise meet (and park and wake each other) every few microseconds.
struct Chunk<C> {
    /// Batches in the chunk.
    batches: u64,
    /// (seq, ts_ns, command) in order.
    commands: Vec<(u64, u64, C)>,
}

/// Commands per hand-off between the reader and the applier.
const CHUNK_COMMANDS: usize = 2048;
/// Chunks decoded ahead of the applier (bounds the memory the pipeline holds).
const CHUNKS_AHEAD: usize = 4;

type ChunkResult<C> = Result<Chunk<C>, SequencerError>;

/// Applies verified batches to `state` until `target` (inclusive) is applied.
///
/// Two stages: a reader thread walks the journal (sled read, checksum and hash-chain
/// verification, command decoding) and hands decoded chunks of whole batches over a
/// bounded channel; this thread applies them in order and hands the emptied vectors
/// back, so memory is allocated and freed on the reader's side only. The state sees
/// exactly the commands of the sequential loop, in the same order; the first error
/// (from either stage) ends the replay, with everything before it applied.
fn apply_batches<S: StateMachine>(
    state: &mut S,
    iter: BatchIter,
    from_seq: u64,
    from_ts_ns: u64,
    target: u64,
    progress: &mut dyn FnMut(&ReplayProgress),
) -> Result<Run, SequencerError> {
    let mut run = Run {
        last_seq: from_seq,
        last_ts_ns: from_ts_ns,
        batches: 0,
        commands: 0,
    };
    if run.last_seq >= target {
        return Ok(run);
    }
    let (tx, rx) = crossbeam_channel::bounded::<ChunkResult<S::Command>>(CHUNKS_AHEAD);
    let (back_tx, back_rx) = crossbeam_channel::bounded(CHUNKS_AHEAD + 2);
    std::thread::scope(|scope| {
        let reader = std::thread::Builder::new()
            .name("perpcore-replay-reader".to_string())
            .spawn_scoped(scope, move || {
                read_decoded::<S>(iter, from_seq, target, &tx, &back_rx)
            })
            .map_err(SequencerError::Spawn)?;
        let mut events = Vec::new();
        let mut result = Ok(());
        'chunks: for item in rx.iter() {
            let mut chunk = match item {
                Ok(c) => c,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            debug_assert!(chunk.commands.first().is_none_or(|c| c.0 > run.last_seq));
            // The reader stops after the batch holding `target`, so a chunk's batches
            // are all (at least partly) applied.
            run.batches = run.batches.saturating_add(chunk.batches);
            for (seq, ts_ns, cmd) in &chunk.commands {
                events.clear();
                state.apply(*seq, *ts_ns, cmd, &mut events);
                run.last_seq = *seq;
                run.last_ts_ns = *ts_ns;
                run.commands = run.commands.saturating_add(1);
                if run.last_seq >= target {
                    progress(&progress_of(&run, target));
                    break 'chunks;
                }
            }
            progress(&progress_of(&run, target));
            chunk.commands.clear();
            // A full return queue only means the reader allocates a new vector.
            let _ = back_tx.try_send(chunk.commands);
        }
        // Dropping the receiver stops a reader that is still ahead of us.
        drop(rx);
        drop(back_tx);
        reader.join().map_err(|_| SequencerError::ReaderPanicked)?;
        result
    })?;
    Ok(run)
}

/// The reader stage: verifies and decodes batches in order and sends them in chunks,
/// stopping after the batch holding `target`, at the first error (sent on after the
/// good batches before it), or when the applier hangs up.
fn read_decoded<S: StateMachine>(
    iter: BatchIter,
    from_seq: u64,
    target: u64,
    tx: &crossbeam_channel::Sender<ChunkResult<S::Command>>,
    back: &crossbeam_channel::Receiver<Vec<(u64, u64, S::Command)>>,
) {
    let new_chunk = || Chunk {
        batches: 0,
        commands: back
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK_COMMANDS + CHUNK_COMMANDS / 2)),
    };
    let mut chunk = new_chunk();
    let mut last_seq = from_seq;
    for batch in iter {
        let good = chunk.commands.len();
        let decoded = batch.map_err(SequencerError::from).and_then(|batch| {
            for entry in batch.entries() {
                let cmd =
                    S::decode_command(entry.bytes).map_err(|reason| SequencerError::Decode {
                        seq: entry.seq,
                        reason: reason.to_string(),
                    })?;
                chunk.commands.push((entry.seq, entry.ts_ns, cmd));
            }
            let seen = u64::try_from(chunk.commands.len() - good).unwrap_or(u64::MAX);
            if seen != u64::from(batch.header.count) {
                return Err(SequencerError::EntryCount {
                    seq: batch.header.first_seq,
                    found: seen,
                    expected: u64::from(batch.header.count),
                });
            }
            Ok(())
        });
        if let Err(e) = decoded {
            // Nothing of a bad batch is applied; the good ones before it are.
            chunk.commands.truncate(good);
            if chunk.batches > 0 && tx.send(Ok(chunk)).is_err() {
                return;
            }
            let _ = tx.send(Err(e));
            return;
        }
        chunk.batches += 1;
        last_seq = chunk.commands.last().map_or(last_seq, |c| c.0);
        if last_seq >= target {
            let _ = tx.send(Ok(chunk));
            return;
        }
        if chunk.commands.len() >= CHUNK_COMMANDS {
            let full = std::mem::replace(&mut chunk, new_chunk());
            if tx.send(Ok(full)).is_err() {
                return;
            }
        }
    }
    if chunk.batches > 0 {
        let _ = tx.send(Ok(chunk));
    }
}

fn progress_of(run: &Run, target: u64) -> ReplayProgress {
    ReplayProgress {
        last_seq: run.last_seq,
        target_seq: target,
        batches: run.batches,
        commands: run.commands,
    }
}
