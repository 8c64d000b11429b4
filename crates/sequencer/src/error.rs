//! Error types of the sequencer crate.
//!
//! Owns: `SequencerError`, `Closed` and `TrySubmitError`. Must never: hide a journal
//! error behind a string when the typed error is available.

use perpcore_journal::JournalError;

/// The sequencer has stopped (or failed) and accepts no more messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sequencer is closed")]
pub struct Closed;

/// Why `try_submit` did not enqueue a command; the command is handed back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrySubmitError<C> {
    /// The bounded queue is full (back-pressure).
    #[error("sequencer queue is full")]
    Full(C),
    /// The sequencer has stopped.
    #[error("sequencer is closed")]
    Closed(C),
}

/// Everything the sequencer, recovery and replay can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SequencerError {
    /// The journal failed (storage, corruption, poisoning, ...).
    #[error(transparent)]
    Journal(#[from] JournalError),

    /// `Sequencer::start` was given a journal that already holds commands.
    #[error("journal is not empty (last seq {last_seq}); use recover() and Sequencer::resume")]
    JournalNotEmpty {
        /// The journal's last sequence number.
        last_seq: u64,
    },

    /// A snapshot was requested without a journal to store it in.
    #[error("no journal configured; snapshots need one")]
    NoJournal,

    /// The sequencer stopped on an error before it answered a snapshot or barrier
    /// request; the text is that error (the one `shutdown` returns), naming what failed,
    /// such as a journal write or fsync.
    #[error("sequencer stopped: {0}")]
    Stopped(String),

    /// Sequence numbers exhausted.
    #[error("sequence number overflow")]
    SeqOverflow,

    /// Timestamps reached `u64::MAX`.
    #[error("timestamp overflow")]
    TimestampOverflow,

    /// The state machine could not decode a journaled command.
    #[error("cannot decode command at seq {seq}: {reason}")]
    Decode {
        /// Sequence number of the command.
        seq: u64,
        /// The state machine's reason.
        reason: String,
    },

    /// The state machine could not be built from the journal's genesis record.
    #[error("state machine rejected the genesis record: {0}")]
    Genesis(String),

    /// The journal ended before the sequence number it should have reached.
    #[error("journal ended at seq {found}, expected {expected}")]
    ShortJournal {
        /// Last sequence number read.
        found: u64,
        /// Sequence number that should have been reached.
        expected: u64,
    },

    /// `replay` was asked for a sequence number past the end of the journal.
    #[error("replay target seq {target} is beyond the journal end {last_seq}")]
    TargetBeyondEnd {
        /// Requested target.
        target: u64,
        /// The journal's last sequence number.
        last_seq: u64,
    },

    /// A batch yielded a different number of commands than its header says.
    #[error("batch at seq {seq} yielded {found} commands, header says {expected}")]
    EntryCount {
        /// First seq of the batch.
        seq: u64,
        /// Commands yielded.
        found: u64,
        /// Count in the header.
        expected: u64,
    },

    /// The sequencer thread (or a replay's reader thread) could not be spawned.
    #[error("cannot spawn a thread: {0}")]
    Spawn(#[source] std::io::Error),

    /// A replay's journal reader thread panicked (a bug in the decoder or the journal).
    #[error("replay reader thread panicked")]
    ReaderPanicked,

    /// The sequencer thread panicked (a bug in the state machine or here).
    #[error("sequencer thread panicked")]
    WorkerPanicked,

    /// The sequencer has stopped; the request was not served.
    #[error("sequencer is closed")]
    Closed,

    /// The sequencer was stopped through the crash test hook.
    #[error("sequencer crashed (test hook)")]
    Crashed,
}

impl From<Closed> for SequencerError {
    fn from(_: Closed) -> Self {
        Self::Closed
    }
}
