//! The sequencer thread: total order, timestamps, group commit, ordered release.
//!
//! Owns: the bounded input queue, stamping (`seq = last + 1`,
//! `ts = max(last_ts + 1, clock)`), applying commands to the state machine, group
//! commit to the journal, releasing events, snapshots at exact sequence numbers, and
//! orderly shutdown.
//!
//! Four threads when journaling (LMAX's split, with the fsync and the mark as stages of
//! their own): the sequencer thread stamps, encodes and applies, and hands each sealed
//! group with its outputs to the journal writer thread; the writer stores the group in
//! sled and flushes it to sled's file, and passes it to the sync thread, which fsyncs
//! every group flushed before that fsync began and passes the round to the mark thread,
//! which records it in the durable mark (written and fsynced) and only then releases
//! the round's outputs. The sequencer applies the next group while the writer stores the
//! previous one, the writer stores it while the one before is being fsynced, and the
//! fsync of one round runs while the mark of the round before is written. Snapshots and barriers travel the
//! same channels, so they are ordered after every group before them. A failed write or
//! fsync stops every stage at once, idle ones too (each waits on the next stage's exit as
//! well as on its input). A snapshot or barrier request is answered by the stage that
//! serves it, or else, once the sequencer thread has finished (after the writer and sync
//! threads), from the `Stop` signal every handle holds: with the error it stopped with.
//! Must never: release an event before the batch holding its command is durable,
//! reorder commands, read the wall clock except through `Clock`, keep going after a
//! journal write or fsync failed, or leave a request waiting after the thread finished.

use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, select, Receiver, Select, Sender, TryRecvError, TrySendError};
use perpcore_journal::{
    BatchBuilder, Journal, JournalError, MarkHandle, SyncHandle, Tip, ENTRY_HEADER_LEN,
};

use crate::clock::Clock;
use crate::error::{Closed, SequencerError, TrySubmitError};
use crate::recovery::Recovered;
use crate::StateMachine;

/// Tuning of a sequencer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequencerConfig {
    /// Capacity of the input queue, in messages (a `submit` is one, a `submit_many` one
    /// per `MAX_COMMANDS_PER_MESSAGE` commands); a full queue blocks producers
    /// (back-pressure).
    pub queue_capacity: usize,
    /// Capacity of the output queue, in groups (one message per group commit, holding
    /// its commands' outputs in order); a full one stalls the sequencer, which in turn
    /// fills the input queue. Consumers must keep reading. At most `output_capacity` ×
    /// `max_group_commands` outputs wait here (groups are that large only under full
    /// load; a consumer that stops reading stalls the pipeline at that bound), plus up to
    /// 64 groups waiting for their fsync, one in the writer and one being filled.
    pub output_capacity: usize,
    /// Most commands in one group commit (at least 1 is used). Limits are checked
    /// between queue messages, so a `submit_many` message can carry a group up to
    /// `MAX_COMMANDS_PER_MESSAGE` − 1 commands past it.
    pub max_group_commands: usize,
    /// A group is committed once its encoded payload reaches this many bytes (checked
    /// between queue messages, like `max_group_commands`).
    pub max_group_bytes: usize,
    /// Within a group, a journal batch (one sled entry) is closed and the next one
    /// started once its payload would exceed this many bytes (a single larger command
    /// still gets a batch of its own). Small batches keep sled's pages small; see
    /// `Journal::append_group`.
    pub max_batch_bytes: usize,
}

impl Default for SequencerConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 4096,
            output_capacity: 1024,
            max_group_commands: 8192,
            max_group_bytes: 4 * 1024 * 1024,
            max_batch_bytes: 6 * 1024,
        }
    }
}

/// The events of one command. Up to two (an amend, a resting order) are stored inline:
/// a heap allocation per command, freed on the consumer's thread, cost the sequencer
/// more than the engine's pre-trade check.
pub type Events<E> = smallvec::SmallVec<[E; 2]>;

/// The outcome of one command, released only once it is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed<E> {
    /// Sequence number assigned to the command.
    pub seq: u64,
    /// Timestamp assigned to the command.
    pub ts_ns: u64,
    /// Events the state machine emitted for it.
    pub events: Events<E>,
}

/// What a snapshot request produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The snapshot holds the state after this command.
    pub seq: u64,
    /// That command's timestamp.
    pub ts_ns: u64,
    /// State hash at `seq`.
    pub state_hash: [u8; 32],
    /// Size of the state bytes.
    pub state_len: u64,
}

/// Counters kept by the sequencer thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SequencerStats {
    /// Commands sequenced.
    pub commands: u64,
    /// Group commits (one flush each; one fsync covers every group flushed before it).
    pub groups: u64,
    /// Journal batches written (one sled entry each; a group holds one or more).
    pub batches: u64,
    /// Largest group, in commands.
    pub max_group_commands: u64,
    /// Snapshots written.
    pub snapshots: u64,
    /// Commands dropped because their encoding exceeds the format's u32 length limit.
    pub rejected_too_large: u64,
}

/// What `shutdown` hands back.
pub struct Stopped<S> {
    /// The state machine after the last command.
    pub state: S,
    /// Last sequence number (all of them durable when a journal is used).
    pub last_seq: u64,
    /// Its timestamp.
    pub last_ts_ns: u64,
    /// The journal, if one was used.
    pub journal: Option<Journal>,
    /// Counters.
    pub stats: SequencerStats,
}

enum Msg<C> {
    Command(C),
    /// Consecutive commands of one producer, sequenced back to back (at most
    /// `MAX_COMMANDS_PER_MESSAGE`).
    Commands(Vec<C>),
    Snapshot(Sender<Result<SnapshotInfo, SequencerError>>),
    Barrier(Sender<u64>),
    Stop,
    #[cfg(feature = "test-hooks")]
    Crash,
}

/// The most commands one queue message carries (`SequencerHandle::submit_many` splits
/// longer runs), so the queue holds at most `queue_capacity` × this many commands.
pub const MAX_COMMANDS_PER_MESSAGE: usize = 256;

/// A cloneable producer handle. Any number of threads may submit concurrently; the
/// sequencer orders them as they come out of the queue.
pub struct SequencerHandle<C> {
    tx: Sender<Msg<C>>,
    stop: Stop,
}

impl<C> Clone for SequencerHandle<C> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            stop: self.stop.clone(),
        }
    }
}

/// How handles learn that the sequencer thread has finished, and why. A request's reply
/// can be lost when the pipeline stops: dropped with its message, or left in a queue
/// that nobody reads any more but that stays alive (a crossbeam channel keeps its
/// buffered messages, reply senders included, while any sender of it exists, and every
/// handle holds one of the input queue). So requests wait for their reply or this
/// signal, whichever comes first.
#[derive(Clone)]
struct Stop {
    /// Never sent on: disconnects when the sequencer thread has finished, after the
    /// writer and sync threads it joins. Its only sender is held by that thread.
    fired: Receiver<()>,
    /// The error the thread stopped with, set before `fired` disconnects (unset after a
    /// clean stop).
    cause: Arc<OnceLock<String>>,
}

impl Stop {
    /// The answer on `reply`, or, if the sequencer stops without giving one, the error
    /// it stopped with.
    fn wait<T>(&self, reply: &Receiver<T>) -> Result<T, SequencerError> {
        select! {
            recv(reply) -> answer => {
                if let Ok(answer) = answer {
                    return Ok(answer);
                }
            }
            // Every stage has finished: an answer is there now or never.
            recv(self.fired) -> _ => {
                if let Ok(answer) = reply.try_recv() {
                    return Ok(answer);
                }
            }
        }
        Err(self.error())
    }

    /// The error the sequencer stopped with. Blocks until the thread has finished
    /// (only called once it is finishing on its own: a request's reply was dropped, or
    /// the input queue refused it), so the cause is known.
    fn error(&self) -> SequencerError {
        let _ = self.fired.recv();
        match self.cause.get() {
            Some(cause) => SequencerError::Stopped(cause.clone()),
            None => SequencerError::Closed,
        }
    }
}

impl<C> std::fmt::Debug for SequencerHandle<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SequencerHandle")
            .field("queued", &self.tx.len())
            .finish()
    }
}

impl<C> SequencerHandle<C> {
    /// Enqueues a command, blocking while the queue is full. Ok means accepted into
    /// the queue, not executed: the `Committed` output is the only acknowledgement.
    pub fn submit(&self, cmd: C) -> Result<(), Closed> {
        self.tx.send(Msg::Command(cmd)).map_err(|_| Closed)
    }

    /// Enqueues commands in order as one queue message (several when there are more
    /// than `MAX_COMMANDS_PER_MESSAGE`), blocking while the queue is full. The commands
    /// of one message get consecutive sequence numbers; other producers' commands can
    /// only come in between messages. One
    /// message instead of one per command: under load a producer and the sequencer
    /// otherwise spend more time passing queue slots between cores than the engine
    /// spends on the commands. On `Closed`, the messages sent before it were accepted.
    pub fn submit_many(&self, cmds: Vec<C>) -> Result<(), Closed> {
        if cmds.is_empty() {
            return Ok(());
        }
        if cmds.len() <= MAX_COMMANDS_PER_MESSAGE {
            return self.tx.send(Msg::Commands(cmds)).map_err(|_| Closed);
        }
        let mut rest = cmds.into_iter();
        loop {
            let chunk: Vec<C> = rest.by_ref().take(MAX_COMMANDS_PER_MESSAGE).collect();
            if chunk.is_empty() {
                return Ok(());
            }
            self.tx.send(Msg::Commands(chunk)).map_err(|_| Closed)?;
        }
    }

    /// Enqueues a command if there is room, without blocking.
    pub fn try_submit(&self, cmd: C) -> Result<(), TrySubmitError<C>> {
        match self.tx.try_send(Msg::Command(cmd)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(Msg::Command(c))) => Err(TrySubmitError::Full(c)),
            Err(TrySendError::Disconnected(Msg::Command(c))) => Err(TrySubmitError::Closed(c)),
            // try_send hands back the message we gave it, which is a command.
            Err(_) => unreachable!("try_submit only sends commands"),
        }
    }

    /// Takes a snapshot at the exact point in the order where this request is
    /// dequeued: everything submitted before it is included, nothing after. The
    /// pending batch is committed first, then the state is written durably. If the
    /// sequencer stops first (or the write fails, which stops it), returns
    /// `SequencerError::Stopped` with the error it stopped with (`Closed` after a clean
    /// stop).
    pub fn snapshot(&self) -> Result<SnapshotInfo, SequencerError> {
        let (tx, rx) = bounded(1);
        if self.tx.send(Msg::Snapshot(tx)).is_err() {
            return Err(self.stop.error());
        }
        self.stop.wait(&rx)?
    }

    /// Waits until every command submitted before this call (through this handle) is
    /// committed and its events are released; returns the last durable seq. If the
    /// sequencer stops first, returns the error it stopped with, as `snapshot` does.
    pub fn barrier(&self) -> Result<u64, SequencerError> {
        let (tx, rx) = bounded(1);
        if self.tx.send(Msg::Barrier(tx)).is_err() {
            return Err(self.stop.error());
        }
        self.stop.wait(&rx)
    }

    /// Messages currently queued.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }
}

/// Receiver of committed outputs: one message per group commit, each holding its
/// commands' outputs in sequence order, the groups in order too. One message per
/// group (not per command) keeps the consumer from being woken once per command.
pub type CommittedReceiver<E> = Receiver<Vec<Committed<E>>>;

/// What `Sequencer::start` / `resume` return: the sequencer and its output receiver.
pub type Started<S> = (Sequencer<S>, CommittedReceiver<<S as StateMachine>::Event>);

/// A running sequencer. Dropping it stops it gracefully (like `shutdown`, discarding
/// the result).
pub struct Sequencer<S: StateMachine> {
    tx: Sender<Msg<S::Command>>,
    stop: Stop,
    thread: Option<JoinHandle<Result<Stopped<S>, SequencerError>>>,
}

impl<S: StateMachine> std::fmt::Debug for Sequencer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequencer")
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl<S: StateMachine> Sequencer<S> {
    /// Starts a sequencer on a fresh state. With a journal, the journal must be empty
    /// (use `recover` + `resume` otherwise). Without one (benchmarks), nothing is
    /// durable and events are released right after each group is applied.
    /// Returns the sequencer and the receiver of committed outputs, in sequence order.
    pub fn start(
        state: S,
        journal: Option<Journal>,
        clock: Box<dyn Clock>,
        config: SequencerConfig,
    ) -> Result<Started<S>, SequencerError> {
        let (last_seq, last_ts_ns) = match &journal {
            Some(j) if j.last_seq() != 0 => {
                return Err(SequencerError::JournalNotEmpty {
                    last_seq: j.last_seq(),
                })
            }
            Some(j) => (0, j.tip().last_ts_ns),
            None => (0, 0),
        };
        Self::spawn(state, journal, last_seq, last_ts_ns, clock, config)
    }

    /// Continues after `recover`: same state, journal and position.
    pub fn resume(
        recovered: Recovered<S>,
        clock: Box<dyn Clock>,
        config: SequencerConfig,
    ) -> Result<Started<S>, SequencerError> {
        let Recovered {
            state,
            last_seq,
            last_ts_ns,
            journal,
            ..
        } = recovered;
        Self::spawn(state, Some(journal), last_seq, last_ts_ns, clock, config)
    }

    fn spawn(
        state: S,
        journal: Option<Journal>,
        last_seq: u64,
        last_ts_ns: u64,
        clock: Box<dyn Clock>,
        config: SequencerConfig,
    ) -> Result<Started<S>, SequencerError> {
        let (tx, rx) = bounded(config.queue_capacity);
        let (out_tx, out_rx) = bounded(config.output_capacity);
        let (writer, out_tx) = match journal {
            Some(j) => (Some(Writer::spawn(j, out_tx)?), None),
            None => (None, Some(out_tx)),
        };
        let worker = Worker {
            state,
            writer,
            clock,
            max_group_commands: config.max_group_commands.max(1),
            max_group_bytes: config.max_group_bytes,
            max_batch_bytes: config.max_batch_bytes,
            rx,
            out: out_tx,
            out_open: true,
            last_seq,
            last_ts_ns,
            builder: BatchBuilder::new(),
            sealed: Vec::new(),
            group_bytes: 0,
            scratch: Vec::new(),
            events: Vec::new(),
            pending: Vec::new(),
            stats: SequencerStats::default(),
        };
        let (stopped, fired) = bounded::<()>(0);
        let stop = Stop {
            fired,
            cause: Arc::new(OnceLock::new()),
        };
        let cause = Arc::clone(&stop.cause);
        let thread = std::thread::Builder::new()
            .name("perpcore-sequencer".to_string())
            .spawn(move || {
                // `run` returns after joining the writer, which joins its sync thread:
                // once `stopped` is dropped no stage can answer a request any more.
                let result = worker.run();
                if let Err(e) = &result {
                    let _ = cause.set(e.to_string());
                }
                drop(stopped);
                result
            })
            .map_err(SequencerError::Spawn)?;
        Ok((
            Self {
                tx,
                stop,
                thread: Some(thread),
            },
            out_rx,
        ))
    }

    /// A new producer handle.
    pub fn handle(&self) -> SequencerHandle<S::Command> {
        SequencerHandle {
            tx: self.tx.clone(),
            stop: self.stop.clone(),
        }
    }

    /// See `SequencerHandle::snapshot`.
    pub fn snapshot(&self) -> Result<SnapshotInfo, SequencerError> {
        self.handle().snapshot()
    }

    /// Stops the sequencer: everything queued before the stop message is sequenced and
    /// committed, then the thread exits; later submissions fail with `Closed`.
    /// Blocks while the output queue is full, so keep consuming (or drop the receiver).
    /// Returns the thread's error if it stopped because of one.
    pub fn shutdown(mut self) -> Result<Stopped<S>, SequencerError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<Stopped<S>, SequencerError> {
        let Some(thread) = self.thread.take() else {
            return Err(SequencerError::Closed);
        };
        // If the thread already exited (after an error) the send fails; join tells why.
        let _ = self.tx.send(Msg::Stop);
        thread.join().map_err(|_| SequencerError::WorkerPanicked)?
    }

    /// Simulates a crash: the thread exits at the next message boundary without
    /// committing its pending batch (whose events were therefore never released).
    #[cfg(feature = "test-hooks")]
    pub fn crash_for_tests(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.tx.send(Msg::Crash);
            let _ = thread.join();
        }
    }
}

impl<S: StateMachine> Drop for Sequencer<S> {
    fn drop(&mut self) {
        if self.thread.is_some() {
            if let Err(e) = self.stop_and_join() {
                tracing::error!(error = %e, "sequencer stopped with an error");
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
    #[cfg(feature = "test-hooks")]
    Crash,
}

/// Groups stored and flushed but waiting for their fsync, at most (bounds memory and how
/// far the writer runs ahead of durability; a full queue stalls the writer, which stalls
/// the sequencer).
const SYNC_QUEUE: usize = 64;
/// Cleared batch builders kept for reuse (each keeps its allocation).
const RECYCLED_BUILDERS: usize = 256;

enum ToWriter<E> {
    Group {
        batches: Vec<BatchBuilder>,
        outputs: Vec<Committed<E>>,
    },
    Snapshot {
        state_hash: [u8; 32],
        bytes: Vec<u8>,
        seq: u64,
        reply: Sender<Result<SnapshotInfo, SequencerError>>,
    },
    Barrier {
        seq: u64,
        reply: Sender<u64>,
    },
}

/// The journal writer thread's handle, owned by the sequencer thread.
struct Writer<E> {
    tx: Option<Sender<ToWriter<E>>>,
    /// Cleared builders coming back for reuse.
    recycled: Receiver<BatchBuilder>,
    /// Disconnects when the writer thread has finished (which, while the sequencer
    /// thread runs, it only does after a failed write or fsync).
    finished: Receiver<()>,
    thread: Option<JoinHandle<(Journal, Result<(), SequencerError>)>>,
}

impl<E: Send + 'static> Writer<E> {
    fn spawn(
        journal: Journal,
        out: Sender<Vec<Committed<E>>>,
    ) -> Result<Writer<E>, SequencerError> {
        // A rendezvous: the sequencer hands a group over only when the writer is ready
        // for it, and keeps growing it until then (see `Worker::offer_or_recv`).
        let (tx, rx) = bounded::<ToWriter<E>>(0);
        let (back_tx, back_rx) = bounded::<BatchBuilder>(RECYCLED_BUILDERS);
        let (finishing, finished) = bounded::<()>(0);
        let thread = std::thread::Builder::new()
            .name("perpcore-journal-writer".to_string())
            .spawn(move || {
                let result = writer_loop(journal, rx, out, back_tx);
                drop(finishing);
                result
            })
            .map_err(SequencerError::Spawn)?;
        Ok(Writer {
            tx: Some(tx),
            recycled: back_rx,
            finished,
            thread: Some(thread),
        })
    }

    /// Send in order; if the writer has stopped, return its error.
    fn send(&mut self, msg: ToWriter<E>) -> Result<(), SequencerError> {
        let sent = self
            .tx
            .as_ref()
            .map(|tx| tx.send(msg).is_ok())
            .unwrap_or(false);
        if sent {
            return Ok(());
        }
        match self.join() {
            Some((_, Err(e))) => Err(e),
            _ => Err(SequencerError::Closed),
        }
    }

    /// Close the channel and wait for the writer to finish what it was given.
    fn join(&mut self) -> Option<(Journal, Result<(), SequencerError>)> {
        self.tx = None;
        let t = self.thread.take()?;
        t.join().ok()
    }
}

/// What the writer hands the sync thread, in journal order.
enum ToSyncer<E> {
    /// A stored and flushed group, not yet fsynced: its last seq and its outputs.
    Group {
        last_seq: u64,
        outputs: Vec<Committed<E>>,
    },
    /// Answered once every group before it is durable and released.
    Barrier { seq: u64, reply: Sender<u64> },
}

/// The writer thread: stores and flushes each group, and hands it to its sync thread,
/// which fsyncs and then releases the group's outputs in order. Two stages, so the
/// next group is written while the fsync of the previous ones is in flight, and one
/// fsync covers every group flushed before it began. Stops at the first failed write,
/// releasing nothing of that group or any later one.
fn writer_loop<E: Send + 'static>(
    mut journal: Journal,
    rx: Receiver<ToWriter<E>>,
    out: Sender<Vec<Committed<E>>>,
    recycle: Sender<BatchBuilder>,
) -> (Journal, Result<(), SequencerError>) {
    // The mark handle first: it takes the durable observer, told after each mark.
    let handles = journal
        .mark_handle()
        .and_then(|m| journal.sync_handle().map(|s| (s, m)));
    let (sync, mark) = match handles {
        Ok(h) => h,
        Err(e) => return (journal, Err(e.into())),
    };
    let (to_sync, from_writer) = bounded::<ToSyncer<E>>(SYNC_QUEUE);
    let (sync_finishing, sync_finished) = bounded::<()>(0);
    let syncer = match std::thread::Builder::new()
        .name("perpcore-journal-sync".to_string())
        .spawn(move || {
            let result = sync_stage(sync, mark, from_writer, out);
            drop(sync_finishing);
            result
        }) {
        Ok(t) => t,
        Err(e) => return (journal, Err(SequencerError::Spawn(e))),
    };
    let written = write_loop(&mut journal, rx, &to_sync, &sync_finished, &recycle);
    // Let the sync thread finish what it was given, then report the first failure. A
    // failed fsync poisons the journal, so a writer that then fails with `Poisoned` (or
    // finds the sync thread gone) reports the sync thread's error, the cause.
    drop(to_sync);
    let synced = syncer.join().unwrap_or(Err(SequencerError::WorkerPanicked));
    let result = match (written, synced) {
        (Ok(()), synced) => synced,
        (Err(Some(SequencerError::Journal(JournalError::Poisoned))), Err(cause)) => Err(cause),
        (Err(Some(e)), _) => Err(e),
        (Err(None), synced) => Err(synced.err().unwrap_or(SequencerError::Closed)),
    };
    (journal, result)
}

/// The writer's stage. `Err(None)`: the sync thread stopped (its result tells why).
fn write_loop<E>(
    journal: &mut Journal,
    rx: Receiver<ToWriter<E>>,
    to_sync: &Sender<ToSyncer<E>>,
    sync_finished: &Receiver<()>,
    recycle: &Sender<BatchBuilder>,
) -> Result<(), Option<SequencerError>> {
    loop {
        // The sync thread only finishes early after a failed fsync. Waiting on that too
        // stops an idle writer at once (not at its next message), so the barriers still
        // queued for the sync thread are dropped with its queue and the sequencer thread
        // stops after it.
        let msg = select! {
            recv(rx) -> msg => match msg {
                Ok(msg) => msg,
                Err(_) => return Ok(()),
            },
            recv(sync_finished) -> _ => return Err(None),
        };
        let next = match msg {
            ToWriter::Group {
                mut batches,
                outputs,
            } => {
                let info = journal
                    .append_group_flushed(&mut batches)
                    .map_err(|e| Some(e.into()))?;
                for mut builder in batches {
                    builder.clear();
                    if recycle.try_send(builder).is_err() {
                        break;
                    }
                }
                ToSyncer::Group {
                    last_seq: info.last_seq,
                    outputs,
                }
            }
            ToWriter::Snapshot {
                state_hash,
                bytes,
                seq,
                reply,
            } => {
                // Flushed and fsynced on this thread; its fsync also covers the groups
                // before it, whose outputs the sync thread releases after its own.
                match journal.write_snapshot(seq, state_hash, &bytes) {
                    Ok(meta) => {
                        let _ = reply.send(Ok(SnapshotInfo {
                            seq: meta.seq,
                            ts_ns: meta.last_ts_ns,
                            state_hash,
                            state_len: meta.state_len,
                        }));
                        continue;
                    }
                    Err(e) => {
                        // Not answered here: once the pipeline has stopped the handle
                        // reports the error it stopped with, which names the first
                        // failure (with a journal poisoned by a failed fsync, that
                        // fsync's rather than this write's `Poisoned`).
                        drop(reply);
                        return Err(Some(e.into()));
                    }
                }
            }
            ToWriter::Barrier { seq, reply } => ToSyncer::Barrier { seq, reply },
        };
        to_sync.send(next).map_err(|_| None)?;
    }
}

/// One fsync round, as the sync thread hands it to the mark thread.
struct Synced<E> {
    /// What the fsync made durable (`None`: the round held only barriers).
    point: Option<Tip>,
    /// The round's messages, in journal order.
    msgs: Vec<ToSyncer<E>>,
}

/// The sync thread and the mark thread it starts: two stages, so the mark of one round
/// is written and fsynced while the next round's fsync of sled's files runs. Returns the
/// first failure of either (a failed stage stops the other, as the writer and the sync
/// thread do).
fn sync_stage<E: Send + 'static>(
    sync: SyncHandle,
    mark: MarkHandle,
    rx: Receiver<ToSyncer<E>>,
    out: Sender<Vec<Committed<E>>>,
) -> Result<(), SequencerError> {
    let (to_mark, from_sync) = bounded::<Synced<E>>(SYNC_QUEUE);
    let (mark_finishing, mark_finished) = bounded::<()>(0);
    let marker = std::thread::Builder::new()
        .name("perpcore-journal-mark".to_string())
        .spawn(move || {
            let result = mark_loop(mark, from_sync, out);
            drop(mark_finishing);
            result
        })
        .map_err(SequencerError::Spawn)?;
    let synced = sync_loop(sync, rx, &to_mark, &mark_finished);
    drop(to_mark);
    let marked = marker.join().unwrap_or(Err(SequencerError::WorkerPanicked));
    match (synced, marked) {
        (Ok(()), marked) => marked,
        (Err(Some(SequencerError::Journal(JournalError::Poisoned))), Err(cause)) => Err(cause),
        (Err(Some(e)), _) => Err(e),
        (Err(None), marked) => Err(marked.err().unwrap_or(SequencerError::Closed)),
    }
}

/// The sync stage: takes everything the writer has flushed so far, fsyncs once, and
/// hands the round to the mark thread. `Err(None)`: the mark thread stopped (its result
/// tells why).
fn sync_loop<E>(
    mut sync: SyncHandle,
    rx: Receiver<ToSyncer<E>>,
    to_mark: &Sender<Synced<E>>,
    mark_finished: &Receiver<()>,
) -> Result<(), Option<SequencerError>> {
    loop {
        // The mark thread only finishes early after a failed mark write; waiting on that
        // too stops an idle sync thread at once, and with it the writer.
        let first = select! {
            recv(rx) -> msg => match msg {
                Ok(msg) => msg,
                Err(_) => return Ok(()),
            },
            recv(mark_finished) -> _ => return Err(None),
        };
        let mut msgs = vec![first];
        // Every message queued now was flushed before the fsync below begins.
        msgs.extend(rx.try_iter());
        let point = if msgs.iter().any(|m| matches!(m, ToSyncer::Group { .. })) {
            Some(sync.sync_data().map_err(|e| Some(e.into()))?)
        } else {
            None
        };
        to_mark.send(Synced { point, msgs }).map_err(|_| None)?;
    }
}

/// The mark stage: takes every synced round so far, records the newest point in the
/// durable mark once (written and fsynced), then releases those rounds' outputs and
/// answers their barriers, in order.
fn mark_loop<E>(
    mut mark: MarkHandle,
    rx: Receiver<Synced<E>>,
    out: Sender<Vec<Committed<E>>>,
) -> Result<(), SequencerError> {
    let mut out_open = true;
    let mut rounds = Vec::new();
    while let Ok(first) = rx.recv() {
        rounds.push(first);
        rounds.extend(rx.try_iter());
        // Points only grow: the newest covers every round before it.
        if let Some(point) = rounds.iter().rev().find_map(|r| r.point) {
            let last_seq = rounds
                .iter()
                .flat_map(|r| r.msgs.iter())
                .filter_map(|m| match m {
                    ToSyncer::Group { last_seq, .. } => Some(*last_seq),
                    ToSyncer::Barrier { .. } => None,
                })
                .max()
                .unwrap_or(point.last_seq);
            mark.record(point, last_seq)?;
        }
        for msg in rounds.drain(..).flat_map(|r| r.msgs) {
            match msg {
                ToSyncer::Group { outputs, .. } => {
                    if out_open && out.send(outputs).is_err() {
                        // The consumer is gone; keep journaling, discard outputs.
                        out_open = false;
                    }
                }
                ToSyncer::Barrier { seq, reply } => {
                    let _ = reply.send(seq);
                }
            }
        }
    }
    Ok(())
}

/// What waiting for the writer or new input produced.
enum Offer<C> {
    /// The pending group went to the writer.
    Sent,
    /// The writer has stopped; the group was not taken.
    WriterGone,
    /// A message arrived first; the group is still pending.
    Received(Msg<C>),
}

struct Worker<S: StateMachine> {
    state: S,
    /// Journal writer (None: no journal, outputs are released right after applying).
    writer: Option<Writer<S::Event>>,
    clock: Box<dyn Clock>,
    max_group_commands: usize,
    max_group_bytes: usize,
    max_batch_bytes: usize,
    rx: Receiver<Msg<S::Command>>,
    /// The output, when there is no writer (with a journal only the writer holds it, so
    /// the output closes as soon as the writer stops).
    out: Option<Sender<Vec<Committed<S::Event>>>>,
    /// False once the consumer dropped the receiver; events are then discarded.
    out_open: bool,
    /// Last sequenced command (applied; durable only after `commit`).
    last_seq: u64,
    last_ts_ns: u64,
    /// The batch being filled.
    builder: BatchBuilder,
    /// Closed batches of the pending group, in order.
    sealed: Vec<BatchBuilder>,
    /// Payload bytes of the pending group.
    group_bytes: usize,
    scratch: Vec<u8>,
    /// The state machine's event buffer, reused; each command's events are moved out.
    events: Vec<S::Event>,
    /// Outputs of applied but not yet committed commands.
    pending: Vec<Committed<S::Event>>,
    stats: SequencerStats,
}

impl<S: StateMachine> Worker<S> {
    fn run(mut self) -> Result<Stopped<S>, SequencerError> {
        let result = self.run_loop();
        // Whatever happened, let the writer finish what it was given (outputs released
        // only for groups it made durable) and take the journal back.
        let joined = self.writer.as_mut().and_then(|w| w.join());
        let (journal, written) = match joined {
            Some((j, r)) => (Some(j), r),
            None => (None, Ok(())),
        };
        match result {
            Ok(Flow::Continue) | Ok(Flow::Stop) => {}
            #[cfg(feature = "test-hooks")]
            Ok(Flow::Crash) => return Err(SequencerError::Crashed),
            Err(e) => {
                tracing::error!(error = %e, last_seq = self.last_seq, "sequencer stopping on error");
                return Err(e);
            }
        }
        if let Err(e) = written {
            tracing::error!(error = %e, "journal writer stopped on error");
            return Err(e);
        }
        Ok(Stopped {
            state: self.state,
            last_seq: self.last_seq,
            last_ts_ns: self.last_ts_ns,
            journal,
            stats: self.stats,
        })
    }

    fn run_loop(&mut self) -> Result<Flow, SequencerError> {
        loop {
            let first = if self.pending.is_empty() || self.writer.is_none() {
                // Nothing waiting to be journaled: block for input. All senders gone
                // means nobody can ever submit again, so stop.
                let Some(msg) = self.recv_input()? else {
                    self.commit()?;
                    return Ok(Flow::Stop);
                };
                msg
            } else if self.group_full() {
                // Back-pressure: wait for the writer.
                self.commit()?;
                continue;
            } else {
                // Group commit with the writer as the pacer: the pending group goes to
                // the writer the moment it is free (the hand-off is a rendezvous), and
                // until then it keeps growing with whatever arrives. Under load one
                // fsync covers everything that came in during the previous one; idle,
                // a lone command is committed at once.
                match self.offer_or_recv()? {
                    Some(msg) => msg,
                    None => continue,
                }
            };
            let mut flow = self.handle(first)?;
            // Take whatever else is already queued, up to the limits.
            while flow == Flow::Continue && !self.group_full() {
                match self.rx.try_recv() {
                    Ok(msg) => flow = self.handle(msg)?,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => flow = Flow::Stop,
                }
            }
            match flow {
                // With a writer, the top of the loop hands the group over; without one,
                // outputs are released now.
                Flow::Continue if self.writer.is_none() => self.commit()?,
                Flow::Continue => {}
                Flow::Stop => {
                    self.commit()?;
                    return Ok(Flow::Stop);
                }
                #[cfg(feature = "test-hooks")]
                Flow::Crash => return Ok(Flow::Crash),
            }
        }
    }

    /// The next input message, blocking (`None`: every sender is gone). With a writer,
    /// also wakes when the writer thread finishes, which it only does after a failed
    /// write or fsync, and returns its error: an idle sequencer stops at once, not at
    /// its next hand-off, so requests waiting on it are answered (see `Stop`).
    fn recv_input(&mut self) -> Result<Option<Msg<S::Command>>, SequencerError> {
        // Under load a message is already queued: taken without a select, as `recv`
        // would.
        match self.rx.try_recv() {
            Ok(msg) => return Ok(Some(msg)),
            Err(TryRecvError::Disconnected) => return Ok(None),
            Err(TryRecvError::Empty) => {}
        }
        match &self.writer {
            None => return Ok(self.rx.recv().ok()),
            Some(w) => select! {
                recv(self.rx) -> msg => return Ok(msg.ok()),
                recv(w.finished) -> _ => {}
            },
        }
        Err(self.writer_error())
    }

    fn group_full(&self) -> bool {
        self.pending.len() >= self.max_group_commands || self.group_bytes >= self.max_group_bytes
    }

    /// Closes the batch being filled (if any) into the pending group.
    fn close_batch(&mut self) {
        if self.builder.is_empty() {
            return;
        }
        let next = self
            .writer
            .as_ref()
            .and_then(|w| w.recycled.try_recv().ok())
            .unwrap_or_default();
        let full = std::mem::replace(&mut self.builder, next);
        self.sealed.push(full);
    }

    fn handle(&mut self, msg: Msg<S::Command>) -> Result<Flow, SequencerError> {
        match msg {
            Msg::Command(cmd) => {
                self.sequence(cmd)?;
                Ok(Flow::Continue)
            }
            Msg::Commands(cmds) => {
                // A group may end up to one message past its limits.
                for cmd in cmds {
                    self.sequence(cmd)?;
                }
                Ok(Flow::Continue)
            }
            Msg::Snapshot(reply) => {
                self.commit()?;
                if self.writer.is_none() {
                    let _ = reply.send(Err(SequencerError::NoJournal));
                    return Ok(Flow::Continue);
                }
                // The state at `last_seq`, written after every group before it; the
                // writer replies (and stops, poisoned, if the write fails).
                let bytes = self.state.snapshot();
                let state_hash = self.state.state_hash();
                let seq = self.last_seq;
                self.stats.snapshots = self.stats.snapshots.saturating_add(1);
                if let Some(w) = self.writer.as_mut() {
                    w.send(ToWriter::Snapshot {
                        state_hash,
                        bytes,
                        seq,
                        reply,
                    })?;
                }
                Ok(Flow::Continue)
            }
            Msg::Barrier(reply) => {
                self.commit()?;
                match self.writer.as_mut() {
                    Some(w) => w.send(ToWriter::Barrier {
                        seq: self.last_seq,
                        reply,
                    })?,
                    None => {
                        let _ = reply.send(self.last_seq);
                    }
                }
                Ok(Flow::Continue)
            }
            Msg::Stop => Ok(Flow::Stop),
            #[cfg(feature = "test-hooks")]
            Msg::Crash => Ok(Flow::Crash),
        }
    }

    fn sequence(&mut self, cmd: S::Command) -> Result<(), SequencerError> {
        let seq = self
            .last_seq
            .checked_add(1)
            .ok_or(SequencerError::SeqOverflow)?;
        let floor = self
            .last_ts_ns
            .checked_add(1)
            .ok_or(SequencerError::TimestampOverflow)?;
        let ts_ns = floor.max(self.clock.now_ns());

        if self.writer.is_some() {
            self.scratch.clear();
            S::encode_command(&cmd, &mut self.scratch);
            let entry_len = ENTRY_HEADER_LEN.saturating_add(self.scratch.len());
            if self.builder.payload_len().saturating_add(entry_len) > self.max_batch_bytes
                || !self.builder.fits(self.scratch.len())
            {
                self.close_batch();
            }
            if !self.builder.fits(self.scratch.len()) {
                // Cannot be journaled even alone (length field is u32); not applying it
                // keeps state and journal identical. No seq is consumed.
                tracing::error!(
                    len = self.scratch.len(),
                    "sequencer: dropping a command whose encoding exceeds the journal limit"
                );
                self.stats.rejected_too_large = self.stats.rejected_too_large.saturating_add(1);
                return Ok(());
            }
            self.builder.push(seq, ts_ns, &self.scratch)?;
            self.group_bytes = self.group_bytes.saturating_add(entry_len);
        }

        self.events.clear();
        self.state.apply(seq, ts_ns, &cmd, &mut self.events);
        let events = self.events.drain(..).collect();
        self.pending.push(Committed { seq, ts_ns, events });
        self.last_seq = seq;
        self.last_ts_ns = ts_ns;
        self.stats.commands = self.stats.commands.saturating_add(1);
        Ok(())
    }

    /// Hands the pending group to the journal writer, which makes it durable and then
    /// releases its outputs in order (without a journal they are released at once).
    /// With a group pending and a writer: hands the group over if the writer is free
    /// (`None`), else waits for whichever comes first, the writer or a new message
    /// (`Some`).
    fn offer_or_recv(&mut self) -> Result<Option<Msg<S::Command>>, SequencerError> {
        // Both channel ends are moved out for the select (so `self` stays free to build
        // the group) and put back before returning; moving them costs no refcounting.
        let Some(tx) = self.writer.as_mut().and_then(|w| w.tx.take()) else {
            self.commit()?;
            return Ok(None);
        };
        let rx = std::mem::replace(&mut self.rx, crossbeam_channel::never());
        let result = self.offer_or_recv_on(&tx, &rx);
        self.rx = rx;
        if let Some(w) = self.writer.as_mut() {
            w.tx = Some(tx);
        }
        let sent = result?;
        match sent {
            Offer::Sent => Ok(None),
            Offer::WriterGone => self.finish_send(false).map(|_| None),
            Offer::Received(msg) => Ok(Some(msg)),
        }
    }

    fn offer_or_recv_on(
        &mut self,
        tx: &Sender<ToWriter<S::Event>>,
        rx: &Receiver<Msg<S::Command>>,
    ) -> Result<Offer<S::Command>, SequencerError> {
        let sent = |ok: bool| if ok { Offer::Sent } else { Offer::WriterGone };
        // Prefer the hand-off when the writer is already waiting.
        let mut only_writer = Select::new();
        only_writer.send(tx);
        if let Ok(oper) = only_writer.try_select() {
            let group = self.take_group();
            return Ok(sent(oper.send(tx, group).is_ok()));
        }
        let mut sel = Select::new();
        let to_writer = sel.send(tx);
        let from_input = sel.recv(rx);
        let oper = sel.select();
        match oper.index() {
            i if i == to_writer => {
                let group = self.take_group();
                Ok(sent(oper.send(tx, group).is_ok()))
            }
            i if i == from_input => match oper.recv(rx) {
                Ok(msg) => Ok(Offer::Received(msg)),
                // Every producer is gone: commit what is pending and stop.
                Err(_) => Ok(Offer::Received(Msg::Stop)),
            },
            _ => unreachable!("select returned an operation it was not given"),
        }
    }

    /// After a hand-off attempt: a refused one means the writer stopped; return its
    /// error (nothing of the group is released).
    fn finish_send(&mut self, sent: bool) -> Result<(), SequencerError> {
        if sent {
            return Ok(());
        }
        Err(self.writer_error())
    }

    /// The error the writer stopped with (after joining it).
    fn writer_error(&mut self) -> SequencerError {
        match self.writer.as_mut().and_then(|w| w.join()) {
            Some((_, Err(e))) => e,
            _ => SequencerError::Closed,
        }
    }

    /// Ends the pending group: counts it and returns its outputs (non-empty).
    fn end_group(&mut self) -> Vec<Committed<S::Event>> {
        self.stats.groups = self.stats.groups.saturating_add(1);
        let n = u64::try_from(self.pending.len()).unwrap_or(u64::MAX);
        self.stats.max_group_commands = self.stats.max_group_commands.max(n);
        self.group_bytes = 0;
        std::mem::take(&mut self.pending)
    }

    /// Takes the pending group (commands applied but not yet handed to the writer) as a
    /// writer message, counting it.
    fn take_group(&mut self) -> ToWriter<S::Event> {
        let outputs = self.end_group();
        self.close_batch();
        let batches = std::mem::take(&mut self.sealed);
        let count = u64::try_from(batches.len()).unwrap_or(u64::MAX);
        self.stats.batches = self.stats.batches.saturating_add(count);
        ToWriter::Group { batches, outputs }
    }

    fn commit(&mut self) -> Result<(), SequencerError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.writer.is_some() {
            let group = self.take_group();
            if let Some(w) = self.writer.as_mut() {
                // On error the writer has stopped: nothing of this group is released.
                return w.send(group);
            }
        }
        let outputs = self.end_group();
        if let Some(out) = &self.out {
            if self.out_open && out.send(outputs).is_err() {
                // The consumer is gone; keep sequencing, discard outputs.
                self.out_open = false;
            }
        }
        Ok(())
    }
}
