//! The storage seam: what the journal needs from the bytes below it.
//!
//! Owns: the `Store` and `StoreSync` traits. Two implementations: `SledStore` (the real
//! one: sled 0.34.7 plus the mark file, in a locked directory) and, with the
//! `test-hooks` feature, `SimStore` (an in-memory disk with injected faults, for the
//! seeded simulation of the commit pipeline). Must never: let a storage engine's panic
//! or error escape without saying what was being done to which file.
//!
//! The contract, which the journal relies on and the simulation enforces:
//! - `insert_all` is atomic: after any crash either every record of the call is there or
//!   none is;
//! - `flush` returns once what was inserted before it survives a crash of this process;
//! - `StoreSync::sync` returns once what was flushed before it began survives power loss;
//! - `StoreSync::write_mark` writes one mark slot and, when `durable`, returns once it
//!   survives power loss. Mark slots live outside the ordered key spaces, so no damage to
//!   the store's own log can take them along.

pub use sled::IVec;

use crate::error::JournalError;

/// The ordered key spaces of a journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Space {
    /// The format and genesis records.
    Meta,
    /// Batches keyed by their first seq (big-endian).
    Batches,
    /// Snapshots keyed by their seq (big-endian).
    Snapshots,
}

impl Space {
    /// All spaces, in a fixed order.
    pub const ALL: [Space; 3] = [Space::Meta, Space::Batches, Space::Snapshots];

    /// The sled tree name (also used in messages).
    pub fn name(self) -> &'static str {
        match self {
            Space::Meta => "meta",
            Space::Batches => "batches",
            Space::Snapshots => "snapshots",
        }
    }
}

/// Records in key order (or reverse key order), each read checked by the store.
pub type RecordIter = Box<dyn Iterator<Item = Result<(IVec, IVec), JournalError>> + Send>;

/// The ordered, crash-atomic record store under a journal.
pub trait Store: Send {
    /// Where the journal lives, for messages (the journal directory).
    fn location(&self) -> String;

    /// True when writes must be refused (a private copy opened for reading).
    fn read_only(&self) -> bool;

    /// The value at `key`.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<IVec>, JournalError>;

    /// Records with keys `>= from`, ascending.
    fn scan(&self, space: Space, from: &[u8]) -> RecordIter;

    /// Records with keys `<= to`, descending.
    fn scan_rev(&self, space: Space, to: &[u8]) -> RecordIter;

    /// Inserts every record in one atomic step.
    fn insert_all(&self, space: Space, records: &[(&[u8], &[u8])]) -> Result<(), JournalError>;

    /// Removes one record.
    fn remove(&self, space: Space, key: &[u8]) -> Result<(), JournalError>;

    /// Writes what was inserted so far to the store's files (survives a process crash).
    fn flush(&self) -> Result<(), JournalError>;

    /// The mark file's contents (`None`: there is none).
    fn read_mark(&self) -> Result<Option<Vec<u8>>, JournalError>;

    /// A new handle that makes flushed data and mark writes durable, usable on another
    /// thread.
    fn syncer(&self) -> Result<Box<dyn StoreSync>, JournalError>;
}

/// The durability half of a store (fsync), usable on another thread.
pub trait StoreSync: Send {
    /// Makes everything flushed before this call began durable.
    fn sync(&mut self) -> Result<(), JournalError>;

    /// Writes `bytes` at `offset` of the mark file; with `durable`, returns once they
    /// survive power loss.
    fn write_mark(&mut self, offset: u64, bytes: &[u8], durable: bool) -> Result<(), JournalError>;
}
