//! perpcore-journal: the durable, append-only, hash-chained log of sequenced commands.
//!
//! Owns: the on-disk format (byte layouts in `docs/JOURNAL_FORMAT.md`), writing batches
//! durably, verifying them on read, snapshots, and torn-tail recovery. Must never:
//! interpret command or state bytes (they are opaque; the state machine's codec — for
//! the engine, stable tags over bincode 2 fixed-int little-endian, payload version
//! `PAYLOAD_VERSION` — lives with the state machine),
//! acknowledge a batch before it is durable, panic on any stored bytes, or accept writes
//! after a failed one.
//!
//! # Layout (format version 3)
//! A locked directory holding `sled/` (a sled database with three trees) and `mark`:
//! - `batches`: one entry per group-commit batch, keyed by the big-endian first sequence
//!   number (so sled's ordered iteration is sequence order). Value: a 136-byte header
//!   (magic `PCJB`, version, first seq, count, payload length, first/last ts, blake3 of
//!   the payload, the previous batch's header checksum, blake3 of the header) followed by
//!   the payload (per command: seq u64, ts_ns u64, len u32, bytes). All integers are
//!   fixed-width little-endian; checksums are full 32-byte blake3.
//! - `meta`: the format record (version 3) and the genesis record (the payload version and
//!   opaque bytes given by the caller, normally the engine configuration, so the journal
//!   alone suffices to replay). blake3 of the genesis bytes is the first link of the hash
//!   chain. A journal of another format or payload version is refused at open
//!   (`UnsupportedVersion`, `UnsupportedPayloadVersion`).
//! - `snapshots`: full state bytes at a sequence number with the payload version, a
//!   section tag, the state hash, the chain link at that sequence number and a checksum.
//! - `mark` (outside sled): the durable high-water mark, two alternating checksummed
//!   slots holding the last seq (and chain link) acknowledged as durable and the newest
//!   durable snapshot. sled 0.34 silently drops the rest of its log after a checksum
//!   failure; the mark is how that loss is detected.
//!
//! # Verification and recovery
//! Opening reads the mark, then verifies every batch: header checksum, payload checksum,
//! entry numbering, key = first seq, no gap or overlap with the previous batch,
//! non-decreasing timestamps, and the hash chain from genesis. A *last* batch beyond the
//! mark that fails the self-consistency checks (a torn write, never acknowledged) is
//! removed with a `tracing::warn!` and reported in `OpenReport::dropped_tail`; appends
//! then continue from the last good batch. A log that ends before the mark is
//! `JournalError::Truncated`; any other damage is `JournalError::Corrupt { seq, what }`
//! or `JournalError::Damaged { path, what }` (sled's errors and caught panics).
//! Read-only opens (`JournalOptions::read_only`) run sled on a private copy, so nothing
//! in the directory is written.
//!
//! # Storage seam
//! `Store` / `StoreSync` (`store.rs`) are what the journal needs below it: the sled store,
//! and with the `test-hooks` feature the fault-injecting `sim::SimStore` that the seeded
//! simulation of the commit pipeline runs on.
//!
//! # Durability guarantee
//! With `Durability::Fsync` (the default), when `Journal::append` or
//! `Journal::write_snapshot` returns Ok, the record has been written by sled, sled has
//! flushed its buffers (`sled::Db::flush`), we have `fsync`ed sled's `db` file, every
//! file under `blobs/` and the `blobs/` directory (sled 0.34.7's flush uses
//! `sync_file_range` on Linux and never syncs blob files, which does not survive power
//! loss; see `durability`), and the mark recording it has been written and fsynced. So
//! the record survives a process crash, kernel crash or power loss, provided the storage
//! honours fsync (no lying write caches), and its loss is detected if it happens anyway.
//! `Journal::append_group_flushed` stops before the fsync; a group stored that way is
//! durable once a later `SyncHandle::sync` returns Ok (the fsync and the mark on another
//! thread). `Durability::FlushOnly` and `Durability::Buffered` are weaker and meant for
//! benchmarks.
//!
//! # Poisoning
//! After any failed write or sync, the journal refuses every further write with
//! `JournalError::Poisoned` until it is dropped and reopened (reopening re-verifies the
//! log, which tells what actually reached the disk).

mod batch;
mod codec;
mod durability;
mod error;
mod journal;
mod mark;
mod meta;
#[cfg(feature = "test-hooks")]
pub mod sim;
mod sled_store;
mod snapshot;
mod store;

pub use batch::{
    decode_batch, scan_records, BatchBuilder, BatchFault, BatchHeader, BatchView, ChainVerifier,
    EntryIter, EntryRef, ScanOutcome, TornTail, BATCH_HEADER_LEN, BATCH_MAGIC, ENTRY_HEADER_LEN,
    FORMAT_VERSION,
};
pub use codec::{key_seq, seq_key};
pub use durability::Durability;
pub use error::{DecodeError, JournalError};
pub use journal::{
    AppendInfo, BatchIter, DroppedTail, DurableObserver, Journal, JournalOptions, MarkHandle,
    OpenCheck, OpenReport, StoredBatch, SyncHandle, SyncStage, SyncTimer, Tip,
};
pub use mark::{
    decode_mark, encode_mark, read_mark_file, Mark, MarkRead, MarkSlot, MARK_FILE_LEN, MARK_MAGIC,
    MARK_RECORD_LEN, MARK_SLOT_STRIDE,
};
pub use meta::{
    decode_format_record, decode_genesis_record, encode_format_record, encode_genesis_record,
    genesis_hash, GenesisRecord, FORMAT_MAGIC, FORMAT_RECORD_LEN, GENESIS_HEADER_LEN,
    GENESIS_MAGIC, META_FORMAT_KEY, META_GENESIS_KEY, PAYLOAD_VERSION,
};
pub use sled_store::{open_raw_db, MARK_FILE, SLED_DIR};
pub use snapshot::{
    decode_snapshot, encode_snapshot, section_name, Snapshot, SnapshotMeta, SnapshotView,
    RETIRED_SNAPSHOT_SECTIONS, SECTION_STATE, SNAPSHOT_HEADER_LEN, SNAPSHOT_MAGIC,
    SNAPSHOT_SECTIONS,
};
pub use store::{IVec, RecordIter, Space, Store, StoreSync};
