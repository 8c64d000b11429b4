//! Error types of the journal crate.
//!
//! Owns: `JournalError` (everything the journal API can fail with) and `DecodeError`
//! (why a byte string is not a valid record). Must never: carry a panic payload or
//! lose the sequence number a corruption was found at.

use std::path::PathBuf;

/// Why a byte string is not a valid journal record. Returned by the pure decoders
/// (`decode_batch`, `decode_snapshot`, ...) which never panic on any input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}")]
pub struct DecodeError {
    /// Human-readable description of the first check that failed.
    pub what: &'static str,
}

impl DecodeError {
    pub(crate) const fn new(what: &'static str) -> Self {
        Self { what }
    }
}

/// Everything the journal can fail with.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The storage engine reported damage (or panicked) while reading or writing the
    /// named file or directory, or a file of the journal is missing or unreadable.
    #[error("journal damaged: {path:?}: {what}")]
    Damaged {
        /// The file or directory.
        path: PathBuf,
        /// What was found.
        what: String,
    },

    /// The log ends before the durable high-water mark: acknowledged commands are
    /// missing (the storage engine dropped the end of its log, or records were lost).
    #[error("journal {path:?} lost acknowledged commands: its log ends at seq {log_end}, but every command up to seq {durable} was acknowledged as durable (high-water mark in {path:?}/mark)")]
    Truncated {
        /// The journal directory.
        path: PathBuf,
        /// Last seq of the verified log.
        log_end: u64,
        /// Last seq the mark says was durable.
        durable: u64,
    },

    /// Another process (or another handle in this one) holds the journal.
    #[error("journal {0:?} is in use (locked by another process or handle)")]
    Locked(PathBuf),

    /// A directory to create a journal in holds something that is not a journal.
    #[error("refusing to use {path:?} for a new journal: it holds {entry:?}, which is not part of a perpcore journal")]
    NotEmpty {
        /// The directory.
        path: PathBuf,
        /// The first foreign entry.
        entry: String,
    },

    /// A version-1 journal (sled's files directly in the directory).
    #[error("{0:?} holds a version-1 journal (sled's files directly in it); this build reads version 3 (docs/JOURNAL_FORMAT.md)")]
    Legacy(PathBuf),

    /// A write on a journal opened read-only.
    #[error("the journal was opened read-only")]
    ReadOnly,

    /// An I/O error, e.g. while fsyncing the database files.
    #[error("I/O error while {op} {path:?}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A stored batch is damaged or does not link to its predecessor. `seq` is the
    /// first sequence number of the damaged batch, or the first missing one for a gap.
    #[error("journal corrupt at seq {seq}: {what}")]
    Corrupt {
        /// Sequence number the damage was found at.
        seq: u64,
        /// What check failed.
        what: String,
    },

    /// A snapshot record is damaged or inconsistent with the journal.
    #[error("snapshot at seq {seq} is corrupt: {what}")]
    SnapshotCorrupt {
        /// Sequence number the snapshot claims to be taken at (its key).
        seq: u64,
        /// What check failed.
        what: String,
    },

    /// The `meta` tree is missing a record or holds a damaged one.
    #[error("journal meta data corrupt: {0}")]
    MetaCorrupt(String),

    /// The journal was written in a format version this build cannot read.
    #[error("unsupported journal format version {found} (this build reads version {supported} only; replay older journals with the build that wrote them, see the version history in docs/JOURNAL_FORMAT.md)")]
    UnsupportedVersion {
        /// Version found on disk.
        found: u16,
        /// Version this build reads and writes.
        supported: u16,
    },

    /// The journal's genesis record, or a snapshot, was written with a payload version
    /// (the meaning of the command, configuration and state bytes) this build cannot read.
    #[error("unsupported payload version {found} in {what} (this build reads payload version {supported} only; see docs/JOURNAL_FORMAT.md)")]
    UnsupportedPayloadVersion {
        /// Where it was found: "the genesis record" or "the snapshot at seq N".
        what: String,
        /// Payload version found on disk.
        found: u16,
        /// Payload version this build reads and writes.
        supported: u16,
    },

    /// `open_or_create` was given a genesis record different from the stored one.
    #[error("genesis record differs from the one stored in the journal")]
    GenesisMismatch,

    /// `open` was pointed at a path that holds no journal.
    #[error("no journal at {0:?}")]
    NotAJournal(PathBuf),

    /// An earlier write or fsync failed; the on-disk state is unknown, so the journal
    /// refuses every further write until it is dropped and reopened.
    #[error("journal is poisoned by an earlier write failure; reopen it to continue")]
    Poisoned,

    /// The caller handed the journal a batch that does not continue the log
    /// (wrong first seq, timestamp going backwards, empty batch, ...).
    #[error("invalid batch: {0}")]
    InvalidBatch(&'static str),

    /// A record would exceed a fixed-width length field of the format.
    #[error("record too large: {0}")]
    TooLarge(&'static str),

    /// A snapshot was requested at a sequence number other than the journal tip.
    #[error("snapshot must be taken at the journal tip {tip}, not at {requested}")]
    SnapshotNotAtTip {
        /// The requested sequence number.
        requested: u64,
        /// The journal's last durable sequence number.
        tip: u64,
    },

    /// Fault injected by the `test-hooks` feature.
    #[error("injected fault: {0}")]
    Injected(&'static str),
}

impl JournalError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
