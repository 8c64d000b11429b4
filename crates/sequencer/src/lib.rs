//! perpcore-sequencer: the single writer that puts commands in a total order, stamps
//! them, applies them to a state machine, makes them durable in the journal and only
//! then releases their events.
//!
//! Owns: the `StateMachine` trait the engine implements, the `Sequencer` thread and its
//! producer handles, clocks, recovery and replay. Must never: release an event before
//! the batch holding its command is durable, read the wall clock outside `SystemClock`,
//! or know the engine's concrete command type (everything is generic).
//!
//! # Pipeline
//! Producers (`SequencerHandle::submit`, or `submit_many` for a run of up to
//! `MAX_COMMANDS_PER_MESSAGE` commands per queue message, sequenced back to back; any
//! number of threads) feed one bounded crossbeam channel; a full queue blocks them
//! (back-pressure, bounded memory). One
//! thread drains it: each command gets `seq = last + 1` and
//! `ts_ns = max(last_ts + 1, clock.now_ns())`, is encoded into the pending journal batch
//! (a new batch is started within the group once `max_batch_bytes` would be passed) and
//! applied to the state machine. The journal writer thread paces the group commits: the
//! hand-off is a rendezvous, so a pending group goes to the writer the moment it is free
//! and keeps growing while it is busy (up to `max_group_commands` / `max_group_bytes`,
//! then the sequencer waits: back-pressure). Idle, a lone command is committed at once;
//! under load one flush covers everything that arrived during the previous one.
//! The writer stores the group's batches atomically and flushes them to sled's file,
//! then hands the group to its sync thread, which fsyncs once for every group flushed
//! before it began (see perpcore-journal's `SyncHandle::sync_data`) and hands the round
//! to the mark thread, which records it in the durable mark (`MarkHandle::record`) and
//! only then sends each group's outputs, in order, as one message (`Vec<Committed { seq, ts_ns, events }>`,
//! the events inline up to two) on the bounded output channel; meanwhile the writer
//! stores the next group and the sequencer thread applies the one after. If a journal
//! write, fsync or mark write fails, the writer, sync and mark threads stop, no event of that group or
//! a later one is sent, and the sequencer stops with the error, at once even when idle:
//! the output channel closes, later submissions return `Closed`, and `shutdown` returns
//! the error.
//!
//! Snapshots and barriers travel through the same queue, so a snapshot is taken at the
//! exact point in the order where it was dequeued (after committing the pending group).
//! Each request is answered: by the stage that serves it, or, if the pipeline stops
//! first (the request queued, in flight or sent later), once the sequencer thread has
//! finished, with `SequencerError::Stopped` carrying the error it stopped with (`Closed`
//! after a clean stop). Shutdown is a stop message: everything queued before it is
//! committed, then the thread exits and later submissions return `Closed`.
//!
//! Without a journal (benchmarks), outputs are released right after each group is
//! applied and nothing is durable.
//!
//! # Recovery
//! `recover` opens the journal (dropping a torn, never-acknowledged last batch), restores
//! the newest snapshot whose checksum and state hash verify, replays the tail while
//! verifying the hash chain, and returns a `Recovered` that `Sequencer::resume`
//! continues from. `replay` re-runs the journal from genesis (optionally up to a seq).
//!
//! # The command codec
//! The journal stores command bytes opaquely; `StateMachine::encode_command` and
//! `decode_command` define them. The engine is expected to use bincode 2 with the
//! fixed-int, little-endian configuration, so encodings are platform-independent.

mod clock;
mod error;
mod recovery;
mod sequencer;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Closed, SequencerError, TrySubmitError};
pub use perpcore_journal::{Durability, Journal, JournalOptions};
pub use recovery::{
    recover, recover_journal, recover_with, replay, replay_journal, Recovered, RecoveryReport,
    RejectedSnapshot, ReplayProgress, Replayed,
};
pub use sequencer::{
    Committed, CommittedReceiver, Events, Sequencer, SequencerConfig, SequencerHandle,
    SequencerStats, SnapshotInfo, Started, Stopped, MAX_COMMANDS_PER_MESSAGE,
};

/// A deterministic state machine driven by the sequencer. Determinism is the
/// implementor's contract: the same genesis and the same `(seq, ts_ns, command)` stream
/// must yield the same `state_hash` and events, on any platform.
pub trait StateMachine: Send + Sized + 'static {
    /// A command submitted by producers.
    type Command: Clone + Send + 'static;
    /// An event produced by applying a command.
    type Event: Send + 'static;
    /// Why a genesis record, a command or a snapshot could not be decoded; the sequencer
    /// names it in its own errors.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Builds the initial state from the journal's genesis record (the configuration
    /// given to `Journal::open_or_create`). Used when there is no usable snapshot.
    fn from_genesis(genesis: &[u8]) -> Result<Self, Self::Error>;

    /// Appends the journal encoding of `cmd` to `out` (bincode 2, fixed-int LE config,
    /// in the engine).
    fn encode_command(cmd: &Self::Command, out: &mut Vec<u8>);

    /// Decodes a command from its journal encoding. Must return Err, never panic, on
    /// bytes it does not understand.
    fn decode_command(bytes: &[u8]) -> Result<Self::Command, Self::Error>;

    /// Applies one sequenced command, pushing the events it produces. Must not fail:
    /// a command the engine rejects is a successful application that emits a
    /// rejection event.
    fn apply(&mut self, seq: u64, ts_ns: u64, cmd: &Self::Command, events: &mut Vec<Self::Event>);

    /// A hash of the complete state, equal across machines for equal states.
    fn state_hash(&self) -> [u8; 32];

    /// Serializes the complete state.
    fn snapshot(&self) -> Vec<u8>;

    /// Rebuilds a state from `snapshot` output. Must return Err, never panic, on bad bytes.
    fn restore(bytes: &[u8]) -> Result<Self, Self::Error>;
}
