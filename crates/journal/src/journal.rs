//! The `Journal`: an append-only, hash-chained log of sequenced commands.
//!
//! Owns: the journal's records in a `Store` (spaces `meta`, `batches`, `snapshots`), the
//! journal tip (last stored seq, ts and chain link), the durable high-water mark (what
//! has been acknowledged, in the mark file outside the store's log), open-time
//! verification and torn-tail repair, appends, snapshots and reading back. Must never:
//! acknowledge a batch before it is durable and recorded in the mark, accept a write
//! after a failed one (the journal is poisoned until reopened), open a log that ends
//! before the mark, or silently skip damage anywhere but in a never-acknowledged last
//! batch.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::batch::{
    decode_batch, scan_records, BatchBuilder, BatchHeader, ChainVerifier, EntryIter, ScanOutcome,
};
use crate::codec::{key_seq, seq_key};
use crate::durability::Durability;
use crate::error::JournalError;
use crate::mark::{encode_mark, read_mark_file, slot_offset, Mark, MarkSlot};
use crate::meta;
use crate::meta::PAYLOAD_VERSION;
use crate::sled_store::{Opening, SledStore, MARK_FILE};
use crate::snapshot::{
    decode_snapshot, encode_snapshot, section_name, Snapshot, SnapshotMeta, SECTION_STATE,
    SNAPSHOT_SECTIONS,
};
use crate::store::{IVec, RecordIter, Space, Store, StoreSync};
use crate::FORMAT_VERSION;

/// Options for opening a journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalOptions {
    /// What a successful append guarantees (default: `Durability::Fsync`).
    pub durability: Durability,
    /// sled page cache size in bytes.
    pub cache_capacity_bytes: u64,
    /// What `open` verifies (default: `OpenCheck::Full`).
    pub open_check: OpenCheck,
    /// Open for reading only: nothing in the journal directory is written (sled runs on
    /// a private copy; see `SledStore`), every write is refused with
    /// `JournalError::ReadOnly`, and a torn last batch is left in place (reads stop
    /// before it).
    pub read_only: bool,
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Fsync,
            cache_capacity_bytes: 64 * 1024 * 1024,
            open_check: OpenCheck::Full,
            read_only: false,
        }
    }
}

impl JournalOptions {
    /// The default options, read-only.
    pub fn read_only() -> Self {
        Self {
            read_only: true,
            ..Self::default()
        }
    }
}

/// How much of the log `open` verifies before returning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpenCheck {
    /// Every batch from genesis: checksums, sequence continuity and the hash chain.
    /// Damage anywhere is an error naming the seq; a torn last batch is dropped. What a
    /// start (recovery from a snapshot) uses, since it re-reads only the tail.
    #[default]
    Full,
    /// Only the last batch (and its link to the one before) and the batch the durable
    /// mark points into: a torn last batch is still dropped, but damage further back is
    /// found only by whoever reads the log next. For a caller that reads and verifies
    /// the whole log itself right away (a replay from genesis does, through
    /// `read_from_genesis`), so the log is not hashed twice.
    LastBatch,
}

/// The end of the durable log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    /// Last durable sequence number (0: empty journal).
    pub last_seq: u64,
    /// Timestamp of the last durable command (0: empty journal).
    pub last_ts_ns: u64,
    /// Hash-chain link the next batch must carry (the genesis hash when empty).
    pub link: [u8; 32],
}

/// A last batch that failed its self-consistency checks at open and was removed (or, in
/// a read-only open, left in place and not read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedTail {
    /// The first sequence number the dropped record claimed (from its key).
    pub first_seq: u64,
    /// Length of the dropped record in bytes.
    pub record_len: u64,
    /// Which check failed.
    pub reason: String,
}

/// What `open` / `open_or_create` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// True when this call created the journal.
    pub created: bool,
    /// Number of verified batches; `None` after an `OpenCheck::LastBatch` open, which
    /// reads only the last two records (sled can count keys only by reading them all).
    pub batches: Option<u64>,
    /// Last verified sequence number.
    pub last_seq: u64,
    /// The durable high-water mark: every command up to it was acknowledged as durable.
    pub durable_mark: u64,
    /// The torn last batch that was removed, if any.
    pub dropped_tail: Option<DroppedTail>,
    /// A snapshot the mark says was made durable but that is no longer stored (the log
    /// is intact; recovery starts from an older snapshot or genesis).
    pub lost_snapshot: Option<u64>,
}

/// What `append` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// First sequence number of the group.
    pub first_seq: u64,
    /// Last sequence number of the group.
    pub last_seq: u64,
    /// Number of commands.
    pub count: u32,
    /// The last batch's header checksum (the hash chain's new link).
    pub header_hash: [u8; 32],
    /// Length of the stored records in bytes.
    pub record_len: u64,
}

/// Callback told the last durable sequence number after every durable append.
pub type DurableObserver = Box<dyn FnMut(u64) + Send>;

/// Which part of a two-stage sync a [`SyncTimer`] is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStage {
    /// [`SyncHandle::sync_data`]: the fsync of the store's files.
    Data,
    /// [`MarkHandle::record`]: the durable mark written and fsynced.
    Mark,
}

/// Told how long each stage of a sync took, on the thread that ran it (metrics only:
/// nothing journaled or hashed depends on it). Set with [`Journal::set_sync_timer`]
/// before the handles are made; keep it cheap. Only the handles' two-stage syncs (the
/// sequencer's pipeline) are timed, and only when the durability mode fsyncs.
pub type SyncTimer = std::sync::Arc<dyn Fn(SyncStage, std::time::Duration) + Send + Sync>;

/// An open journal. Single writer: the journal directory is locked, so a second `open`
/// of the same path (in this or another process) fails until this one is dropped.
pub struct Journal {
    path: PathBuf,
    opts: JournalOptions,
    store: Box<dyn Store>,
    /// The fsync and mark writer of this handle (`None` when read-only).
    sync: Option<Box<dyn StoreSync>>,
    genesis: Vec<u8>,
    genesis_hash: [u8; 32],
    tip: Tip,
    shared: Arc<Shared>,
    observer: Option<DurableObserver>,
    timer: Option<SyncTimer>,
}

/// How far `Journal::store_group` takes a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commit {
    /// Flushed, fsynced and recorded in the mark (per the durability mode).
    Durable,
    /// Flushed to the store's file; the fsync and the mark are the caller's, through a
    /// [`SyncHandle`].
    Flushed,
}

/// The fsync half of a commit, usable on another thread than the journal's writer (see
/// [`Journal::append_group_flushed`]). It holds a [`MarkHandle`] for `sync`, which does
/// both halves.
#[derive(Debug)]
pub struct SyncHandle {
    mark: MarkHandle,
}

impl SyncHandle {
    /// Makes durable every group whose `append_group_flushed` returned before this call
    /// began (fsync of the store's files, per the journal's durability mode), records
    /// the last of them in the durable mark (written and fsynced before this returns),
    /// then tells the durable observer `last_seq`. A failure poisons the journal: what
    /// reached the disk is unknown.
    pub fn sync(&mut self, last_seq: u64) -> Result<(), JournalError> {
        let point = self.sync_data()?;
        self.mark.record(point, last_seq)
    }

    /// The first half of `sync`: the fsync only. Returns the point it made durable (the
    /// last group flushed before it began), which is not yet in the mark: nothing up to
    /// it may be released before a [`MarkHandle::record`] of it (or a later point) has
    /// returned. Lets the mark of one round be written while the next round's fsync runs.
    pub fn sync_data(&mut self) -> Result<Tip, JournalError> {
        let m = &mut self.mark;
        let (shared, sync, timer) = (&m.shared, &mut m.sync, &m.timer);
        let fsync = m.durability == Durability::Fsync;
        shared.guarded(|| {
            shared.injected_failure()?;
            // Read before the fsync: everything flushed up to here is covered by it.
            let flushed = shared.flushed();
            if fsync {
                let started = timer.as_ref().map(|_| std::time::Instant::now()); // determinism-ok: times the fsync for the operator's sync timer (metrics) only; nothing journaled or applied sees it
                sync.sync()?;
                if let (Some(t), Some(s)) = (timer, started) {
                    t(SyncStage::Data, s.elapsed());
                }
            }
            Ok(flushed)
        })
    }
}

/// The mark half of a two-stage sync (see [`SyncHandle::sync_data`]), usable on its own
/// thread.
pub struct MarkHandle {
    sync: Box<dyn StoreSync>,
    durability: Durability,
    shared: Arc<Shared>,
    observer: Option<DurableObserver>,
    timer: Option<SyncTimer>,
}

impl std::fmt::Debug for MarkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarkHandle")
            .field("durability", &self.durability)
            .field("poisoned", &self.shared.is_poisoned())
            .finish_non_exhaustive()
    }
}

impl MarkHandle {
    /// Records `point` (returned by a `SyncHandle::sync_data` that has returned Ok) in
    /// the durable mark, written and fsynced before this returns, then tells the durable
    /// observer `last_seq`. Only then may what it covers be released. A failure poisons
    /// the journal.
    pub fn record(&mut self, point: Tip, last_seq: u64) -> Result<(), JournalError> {
        let (shared, sync) = (&self.shared, self.sync.as_mut());
        let fsync = self.durability == Durability::Fsync;
        let started = self
            .timer
            .as_ref()
            .filter(|_| fsync)
            .map(|_| std::time::Instant::now()); // determinism-ok: times the mark's fsync for the sync timer (metrics) only
        shared.guarded(|| shared.advance_mark(sync, point.last_seq, point.link, None, fsync))?;
        if let (Some(t), Some(s)) = (&self.timer, started) {
            t(SyncStage::Mark, s.elapsed());
        }
        if let Some(obs) = self.observer.as_mut() {
            obs(last_seq);
        }
        Ok(())
    }
}

/// The mark as last written, and the generation that wrote it.
#[derive(Debug)]
struct MarkState {
    generation: u64,
    mark: Mark,
    genesis_hash: [u8; 32],
}

/// What a journal shares with its [`SyncHandle`]: a failed fsync on either side poisons
/// both; the mark is advanced by both, one write at a time.
#[derive(Debug)]
struct Shared {
    poisoned: AtomicBool,
    mark: Mutex<MarkState>,
    /// The tip of the last group flushed to the store's file.
    flushed: Mutex<Tip>,
    #[cfg(feature = "test-hooks")]
    fail_next_sync: AtomicBool,
}

impl Shared {
    fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    fn flushed(&self) -> Tip {
        *self.flushed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_flushed(&self, tip: Tip) {
        *self.flushed.lock().unwrap_or_else(PoisonError::into_inner) = tip;
    }

    fn mark(&self) -> Mark {
        self.mark
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .mark
    }

    /// Records that everything up to `seq` (chain link `link`), and the snapshot if
    /// given, is durable: the next generation goes to the other slot of the mark file,
    /// written (and fsynced with `durable`) before this returns. Never moves backwards;
    /// writes nothing when there is nothing new.
    fn advance_mark(
        &self,
        sync: &mut dyn StoreSync,
        seq: u64,
        link: [u8; 32],
        snapshot: Option<u64>,
        durable: bool,
    ) -> Result<(), JournalError> {
        let mut st = self.mark.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = st.mark;
        if seq > next.last_seq {
            next.last_seq = seq;
            next.link = link;
        }
        if let Some(s) = snapshot {
            if next.snapshot.is_none_or(|old| s >= old) {
                next.snapshot = Some(s);
            }
        }
        if next == st.mark {
            return Ok(());
        }
        let generation = st
            .generation
            .checked_add(1)
            .ok_or(JournalError::InvalidBatch("mark generation exhausted"))?;
        let slot = MarkSlot {
            generation,
            mark: next,
            genesis_hash: st.genesis_hash,
        };
        sync.write_mark(slot_offset(generation), &encode_mark(&slot), durable)?;
        st.generation = generation;
        st.mark = next;
        Ok(())
    }

    /// Runs a write or an fsync; any failure poisons the journal, because after it we no
    /// longer know what is on disk.
    fn guarded<T>(&self, f: impl FnOnce() -> Result<T, JournalError>) -> Result<T, JournalError> {
        if self.is_poisoned() {
            return Err(JournalError::Poisoned);
        }
        let r = f();
        if let Err(e) = &r {
            self.poisoned.store(true, Ordering::Release);
            tracing::error!(error = %e, "journal: write failed; journal poisoned until reopened");
        }
        r
    }

    /// The failure `Journal::fail_next_sync` asked for, once (test-hooks builds only).
    fn injected_failure(&self) -> Result<(), JournalError> {
        #[cfg(feature = "test-hooks")]
        if self.fail_next_sync.swap(false, Ordering::AcqRel) {
            return Err(JournalError::Injected("sync failure"));
        }
        Ok(())
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("opts", &self.opts)
            .field("tip", &self.tip)
            .field("poisoned", &self.shared.is_poisoned())
            .finish_non_exhaustive()
    }
}

/// True when the meta records are not both valid, yet the journal holds no batch and
/// no snapshot and the mark says nothing was ever acknowledged: its creation was
/// interrupted by a torn write of the meta records (on a store that can tear a write;
/// sled applies a batch whole or not at all), which `open_store` completes like a
/// creation interrupted before them. Anything else with a damaged meta record stays
/// `MetaCorrupt`.
fn torn_creation(
    store: &dyn Store,
    format: &[u8],
    mark: &Mark,
    can_create: bool,
) -> Result<bool, JournalError> {
    if !can_create || mark.last_seq != 0 || mark.snapshot.is_some() {
        return Ok(false);
    }
    let genesis_ok = store
        .get(Space::Meta, meta::META_GENESIS_KEY)?
        .is_some_and(|g| meta::decode_genesis_record(&g).is_ok());
    if genesis_ok && meta::decode_format_record(format).is_ok() {
        return Ok(false);
    }
    Ok(is_empty(store, Space::Batches)? && is_empty(store, Space::Snapshots)?)
}

/// True when `space` holds no record. A failed read is an error, not a record (it used
/// to count as one, which reported a read failure during creation as `MetaCorrupt`).
fn is_empty(store: &dyn Store, space: Space) -> Result<bool, JournalError> {
    match store.scan(space, &[]).next() {
        None => Ok(true),
        Some(Ok(_)) => Ok(false),
        Some(Err(e)) => Err(e),
    }
}

/// Where the mark file of a journal at `location` is (for messages).
fn mark_path(location: &str) -> PathBuf {
    Path::new(location).join(MARK_FILE)
}

impl Journal {
    /// Opens the journal in directory `path`, creating it with `genesis` (the caller's
    /// opaque configuration, so the journal alone suffices to replay) if the directory
    /// is missing or empty (a `README.md` may be there). A directory holding anything
    /// else is refused. An existing journal must have been created with byte-identical
    /// `genesis`.
    pub fn open_or_create(
        path: impl AsRef<Path>,
        genesis: &[u8],
        opts: JournalOptions,
    ) -> Result<(Self, OpenReport), JournalError> {
        let path = path.as_ref();
        if opts.read_only {
            return Self::open(path, opts);
        }
        let store = SledStore::open(
            path,
            Opening::CreateIfMissing(meta::genesis_hash(genesis)),
            opts.cache_capacity_bytes,
        )?;
        Self::open_store(Box::new(store), path, Some(genesis), opts)
    }

    /// Creates a new journal in `path`, removing the journal that is there. The journal
    /// lock is taken before anything is touched (a journal another process holds is
    /// never touched), and a directory holding anything but a journal (and a
    /// `README.md`) is refused with `JournalError::NotEmpty`.
    pub fn create_fresh(
        path: impl AsRef<Path>,
        genesis: &[u8],
        opts: JournalOptions,
    ) -> Result<(Self, OpenReport), JournalError> {
        let path = path.as_ref();
        if opts.read_only {
            return Err(JournalError::ReadOnly);
        }
        let store = SledStore::open(
            path,
            Opening::Fresh(meta::genesis_hash(genesis)),
            opts.cache_capacity_bytes,
        )?;
        Self::open_store(Box::new(store), path, Some(genesis), opts)
    }

    /// Opens an existing journal; its genesis record is available via `genesis()`.
    /// With `opts.read_only`, nothing in `path` is written.
    pub fn open(
        path: impl AsRef<Path>,
        opts: JournalOptions,
    ) -> Result<(Self, OpenReport), JournalError> {
        let path = path.as_ref();
        let store = if opts.read_only {
            SledStore::open_read_only(path, opts.cache_capacity_bytes)?
        } else {
            SledStore::open(path, Opening::Existing, opts.cache_capacity_bytes)?
        };
        Self::open_store(Box::new(store), path, None, opts)
    }

    /// Opens a journal on any store (the fault-injecting simulation uses this). With
    /// `genesis`, a store without meta records (a new one, or one whose creation was
    /// interrupted) is initialised with it. `path` is what `path()` reports.
    pub fn open_store(
        store: Box<dyn Store>,
        path: &Path,
        genesis_arg: Option<&[u8]>,
        opts: JournalOptions,
    ) -> Result<(Self, OpenReport), JournalError> {
        let opts = JournalOptions {
            read_only: opts.read_only || store.read_only(),
            ..opts
        };
        let location = store.location();
        // A journal of another format version is named as such before anything else is
        // read (its mark, too, has another version and would only read as damaged).
        if let Some(v) = store.get(Space::Meta, meta::META_FORMAT_KEY)? {
            if let Ok(version) = meta::decode_format_record(&v) {
                if version != FORMAT_VERSION {
                    return Err(JournalError::UnsupportedVersion {
                        found: version,
                        supported: FORMAT_VERSION,
                    });
                }
            }
        }
        let mark_bytes = store.read_mark()?.ok_or_else(|| JournalError::Damaged {
            path: mark_path(&location),
            what: "the mark file is missing".to_string(),
        })?;
        let mark_read = read_mark_file(&mark_bytes).map_err(|e| JournalError::Damaged {
            path: mark_path(&location),
            what: e.what.to_string(),
        })?;
        if let Some(why) = mark_read.other_damaged {
            tracing::warn!(file = %mark_path(&location).display(), why, "journal: the older mark slot is damaged; the newer one is used");
        }
        let mark_slot = mark_read.newest;
        let mark = mark_slot.mark;

        let mut created = false;
        let format_rec = match store.get(Space::Meta, meta::META_FORMAT_KEY)? {
            Some(v)
                if torn_creation(
                    store.as_ref(),
                    &v,
                    &mark,
                    genesis_arg.is_some() && !opts.read_only,
                )? =>
            {
                tracing::warn!(journal = %location, "journal: the meta records are half written (creation interrupted by a torn write) and nothing else is stored; completing the creation");
                None
            }
            other => other,
        };
        match format_rec {
            None => {
                // A journal whose creation was interrupted before its meta records were
                // stored; anything else without them is damage.
                let damaged = |what: String| JournalError::Damaged {
                    path: PathBuf::from(&location),
                    what,
                };
                if mark.last_seq != 0 || mark.snapshot.is_some() {
                    return Err(damaged(format!(
                        "the format record is missing, but the mark says seq {} was acknowledged",
                        mark.last_seq
                    )));
                }
                let Some(genesis) = genesis_arg.filter(|_| !opts.read_only) else {
                    return Err(damaged(
                        "the format record is missing (the journal was never completely created)"
                            .to_string(),
                    ));
                };
                if !is_empty(store.as_ref(), Space::Batches)?
                    || !is_empty(store.as_ref(), Space::Snapshots)?
                {
                    return Err(JournalError::MetaCorrupt(
                        "format record missing but batches or snapshots exist".to_string(),
                    ));
                }
                if meta::genesis_hash(genesis) != mark_slot.genesis_hash {
                    return Err(JournalError::GenesisMismatch);
                }
                let format = meta::encode_format_record();
                let genesis_rec = meta::encode_genesis_record(PAYLOAD_VERSION, genesis);
                // One insert, atomic in sled, so a crash leaves both records or neither
                // (a store that tears writes may leave half of them: `torn_creation`).
                store.insert_all(
                    Space::Meta,
                    &[
                        (meta::META_FORMAT_KEY, &format),
                        (meta::META_GENESIS_KEY, &genesis_rec),
                    ],
                )?;
                created = true;
            }
            Some(v) => {
                let version = meta::decode_format_record(&v)
                    .map_err(|e| JournalError::MetaCorrupt(e.to_string()))?;
                if version != FORMAT_VERSION {
                    return Err(JournalError::UnsupportedVersion {
                        found: version,
                        supported: FORMAT_VERSION,
                    });
                }
            }
        }
        let genesis_rec = store
            .get(Space::Meta, meta::META_GENESIS_KEY)?
            .ok_or_else(|| JournalError::MetaCorrupt("genesis record missing".to_string()))?;
        let meta::GenesisRecord {
            payload_version,
            genesis,
            hash: genesis_hash,
        } = meta::decode_genesis_record(&genesis_rec)
            .map_err(|e| JournalError::MetaCorrupt(e.to_string()))?;
        if payload_version != PAYLOAD_VERSION {
            return Err(JournalError::UnsupportedPayloadVersion {
                what: "the genesis record".to_string(),
                found: payload_version,
                supported: PAYLOAD_VERSION,
            });
        }
        if let Some(g) = genesis_arg {
            if g != genesis {
                return Err(JournalError::GenesisMismatch);
            }
        }
        if mark_slot.genesis_hash != genesis_hash {
            return Err(JournalError::Damaged {
                path: mark_path(&location),
                what: "the mark file belongs to another journal (genesis differs)".to_string(),
            });
        }
        let genesis = genesis.to_vec();
        let sync = if opts.read_only {
            None
        } else {
            Some(store.syncer()?)
        };
        let empty = Tip {
            last_seq: 0,
            last_ts_ns: 0,
            link: genesis_hash,
        };
        let mut journal = Self {
            path: path.to_path_buf(),
            opts,
            store,
            sync,
            genesis,
            genesis_hash,
            tip: empty,
            shared: Arc::new(Shared {
                poisoned: AtomicBool::new(false),
                mark: Mutex::new(MarkState {
                    generation: mark_slot.generation,
                    mark,
                    genesis_hash,
                }),
                flushed: Mutex::new(empty),
                #[cfg(feature = "test-hooks")]
                fail_next_sync: AtomicBool::new(false),
            }),
            observer: None,
            timer: None,
        };
        let (dropped_tail, batches) = journal.scan_and_repair(mark.last_seq)?;
        journal.check_mark(&mark)?;
        let lost_snapshot = journal.lost_snapshot(&mark)?;
        journal.shared.set_flushed(journal.tip);
        if !journal.opts.read_only && (created || dropped_tail.is_some()) {
            // Creation records and tail repair must be durable before anyone builds on
            // them; the durability mode still applies (benchmarks may skip fsync).
            let tip = journal.tip;
            journal.guarded(|j| j.make_durable(tip, None))?;
        }
        let report = OpenReport {
            created,
            batches,
            last_seq: journal.tip.last_seq,
            durable_mark: mark.last_seq,
            dropped_tail,
            lost_snapshot,
        };
        Ok((journal, report))
    }

    /// Verifies the log (per `open_check`) and sets the tip. A last batch that is not
    /// self-consistent and lies beyond the durable mark (a torn write: it was never
    /// acknowledged) is removed and reported; one at or below the mark was acknowledged,
    /// so it is damage. Returns the dropped tail and, for a full check, the number of
    /// good batches.
    fn scan_and_repair(
        &mut self,
        durable: u64,
    ) -> Result<(Option<DroppedTail>, Option<u64>), JournalError> {
        let (outcome, batches) = match self.opts.open_check {
            OpenCheck::Full => {
                let o = scan_records(self.genesis_hash, self.store.scan(Space::Batches, &[]))?;
                let n = o.batches;
                (o, Some(n))
            }
            OpenCheck::LastBatch => (self.scan_last()?, None),
        };
        self.set_tip(outcome.position);
        let Some(torn) = outcome.torn_tail else {
            return Ok((None, batches));
        };
        if torn.first_seq <= durable {
            return Err(JournalError::Corrupt {
                seq: torn.first_seq,
                what: format!(
                    "{}; the batch was acknowledged (durable mark at seq {durable}), so this is damage, not a torn write",
                    torn.reason
                ),
            });
        }
        if self.opts.read_only {
            tracing::warn!(
                seq = torn.first_seq,
                reason = %torn.reason,
                "journal: torn last batch (never acknowledged) left in place and not read"
            );
        } else {
            tracing::warn!(
                seq = torn.first_seq,
                reason = %torn.reason,
                record_len = torn.record_len,
                "journal: dropping torn last batch (never acknowledged)"
            );
            self.store.remove(Space::Batches, &torn.key)?;
        }
        let dropped = DroppedTail {
            first_seq: torn.first_seq,
            record_len: torn.record_len,
            reason: torn.reason,
        };
        Ok((Some(dropped), batches))
    }

    /// The log must reach the durable mark and pass through it: a log that ends before
    /// it has lost acknowledged commands (sled drops the rest of its log after a
    /// checksum failure as if it were a torn tail).
    fn check_mark(&self, mark: &Mark) -> Result<(), JournalError> {
        if self.tip.last_seq < mark.last_seq {
            return Err(JournalError::Truncated {
                path: PathBuf::from(self.store.location()),
                log_end: self.tip.last_seq,
                durable: mark.last_seq,
            });
        }
        let passes = if mark.last_seq == 0 {
            mark.link == self.genesis_hash
        } else {
            match self
                .store
                .scan_rev(Space::Batches, &seq_key(mark.last_seq))
                .next()
                .transpose()?
            {
                Some((_, value)) => decode_batch(&value).is_ok_and(|v| {
                    v.header.last_seq() == mark.last_seq && v.header.header_hash == mark.link
                }),
                None => false,
            }
        };
        if !passes {
            return Err(JournalError::Corrupt {
                seq: mark.last_seq,
                what: "the log does not pass through the durable mark (no batch ends there with the mark's chain link)".to_string(),
            });
        }
        Ok(())
    }

    /// The newest snapshot the mark names, when it is no longer stored.
    fn lost_snapshot(&self, mark: &Mark) -> Result<Option<u64>, JournalError> {
        let Some(seq) = mark.snapshot else {
            return Ok(None);
        };
        if self.store.get(Space::Snapshots, &seq_key(seq))?.is_some() {
            return Ok(None);
        }
        tracing::warn!(
            seq,
            journal = %self.store.location(),
            "journal: the snapshot at seq {seq} was made durable but is no longer stored; recovery uses an older one or genesis"
        );
        Ok(Some(seq))
    }

    /// `OpenCheck::LastBatch`: the last two records, the one before the last trusted
    /// for its header only (its self-consistency is checked, its own link is not).
    /// Nothing else is read: not even a count of the keys, which sled can only get by
    /// walking every leaf (a third of a replay's time on a 1M-command journal).
    fn scan_last(&self) -> Result<ScanOutcome, JournalError> {
        let mut tail = self.store.scan_rev(Space::Batches, &[0xFF; 8]);
        let last = tail.next().transpose()?;
        let before = tail.next().transpose()?;
        let start = match &before {
            None => ChainVerifier::new(0, 0, self.genesis_hash),
            Some((key, value)) => {
                let seq = key_seq(key).unwrap_or(0);
                let view = decode_batch(value).map_err(|e| JournalError::Corrupt {
                    seq,
                    what: e.what.to_string(),
                })?;
                let h = view.header;
                ChainVerifier::new(h.last_seq(), h.last_ts_ns, h.header_hash)
            }
        };
        let records = last.into_iter().map(Ok::<_, JournalError>);
        crate::batch::scan_records_from(start, records)
    }

    fn set_tip(&mut self, v: ChainVerifier) {
        self.tip = Tip {
            last_seq: v.last_seq(),
            last_ts_ns: v.last_ts_ns(),
            link: v.link(),
        };
    }

    /// Flushes the store and, in `Durability::Fsync` mode, fsyncs its files; then
    /// records `tip` (and the snapshot, if any) in the durable mark.
    fn make_durable(&mut self, tip: Tip, snapshot: Option<u64>) -> Result<(), JournalError> {
        self.shared.injected_failure()?;
        self.flush_to_file()?;
        let fsync = self.opts.durability == Durability::Fsync;
        let sync = self.sync.as_mut().ok_or(JournalError::ReadOnly)?;
        if fsync {
            sync.sync()?;
        }
        self.shared
            .advance_mark(sync.as_mut(), tip.last_seq, tip.link, snapshot, fsync)
    }

    /// The store's flush: its buffers written to its file (not yet fsynced), unless the
    /// durability mode skips even that.
    fn flush_to_file(&self) -> Result<(), JournalError> {
        match self.opts.durability {
            Durability::Fsync | Durability::FlushOnly => self.store.flush(),
            Durability::Buffered => Ok(()),
        }
    }

    /// Runs a write under `Shared::guarded` (a failure poisons the journal).
    fn guarded<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let shared = Arc::clone(&self.shared);
        shared.guarded(|| f(self))
    }

    /// The directory the journal lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options the journal was opened with.
    pub fn options(&self) -> JournalOptions {
        self.opts
    }

    /// The genesis bytes given at creation.
    pub fn genesis(&self) -> &[u8] {
        &self.genesis
    }

    /// blake3 of the genesis bytes: the first link of the hash chain.
    pub fn genesis_hash(&self) -> [u8; 32] {
        self.genesis_hash
    }

    /// The end of the stored log (durable once the group that ends it is synced).
    pub fn tip(&self) -> Tip {
        self.tip
    }

    /// Last stored sequence number (0: empty).
    pub fn last_seq(&self) -> u64 {
        self.tip.last_seq
    }

    /// The durable high-water mark as last written.
    pub fn durable_mark(&self) -> Mark {
        self.shared.mark()
    }

    /// True after a failed write; every further write returns `JournalError::Poisoned`.
    pub fn is_poisoned(&self) -> bool {
        self.shared.is_poisoned()
    }

    /// Registers a callback told the last durable seq after each durable append.
    /// It runs on the writer's thread before `append` returns; keep it cheap.
    pub fn set_durable_observer(&mut self, observer: DurableObserver) {
        self.observer = Some(observer);
    }

    /// Registers a timer told the duration of each sync stage of the handles made after
    /// this call (see [`SyncTimer`]).
    pub fn set_sync_timer(&mut self, timer: SyncTimer) {
        self.timer = Some(timer);
    }

    /// Makes the next flush/fsync fail, to test poisoning.
    #[cfg(feature = "test-hooks")]
    pub fn fail_next_sync(&mut self) {
        self.shared.fail_next_sync.store(true, Ordering::Release);
    }

    /// Seals `batch` onto the hash chain, stores it as one record and makes it durable.
    /// Only after this returns Ok may the batch's effects be released. The builder is
    /// left sealed; `clear()` it before reuse. `append_group` of one batch.
    pub fn append(&mut self, batch: &mut BatchBuilder) -> Result<AppendInfo, JournalError> {
        self.append_group(std::slice::from_mut(batch))
    }

    /// One group commit: seals `batches` onto the hash chain in order, stores each as
    /// one record (all of them in one atomic insert: after a crash either every record
    /// of the group is there or none is), makes them durable with one flush + fsync and
    /// records the group's end in the durable mark. Only after this returns Ok may the
    /// group's effects be released. The builders are left sealed; `clear()` them
    /// before reuse.
    ///
    /// Small records keep sled's pages small (sled rewrites a whole leaf, up to 17
    /// records, when it consolidates one), so a large group is best split into several
    /// batches rather than stored as one large value.
    ///
    /// Invalid input (a batch that does not continue the log, an empty group) is
    /// rejected without poisoning and without writing anything. A storage or fsync
    /// failure poisons the journal: the records may or may not be on disk, so a later
    /// open may find them (they were never acknowledged).
    pub fn append_group(
        &mut self,
        batches: &mut [BatchBuilder],
    ) -> Result<AppendInfo, JournalError> {
        self.store_group(batches, Commit::Durable)
    }

    /// `append_group` without the fsync and the mark: the group is stored and the store
    /// has written it to its file, but it is durable only once a [`SyncHandle::sync`]
    /// that *starts* after this returns has returned Ok. Nothing of the group may be
    /// released before that. This lets a writer store the next group while the fsync of
    /// the previous ones is in flight on another thread; one fsync then covers every
    /// group flushed before it began. The tip advances (the next group chains onto this
    /// one); the durable observer is not told (the sync handle tells it).
    pub fn append_group_flushed(
        &mut self,
        batches: &mut [BatchBuilder],
    ) -> Result<AppendInfo, JournalError> {
        self.store_group(batches, Commit::Flushed)
    }

    /// A handle that fsyncs this journal's files and advances its mark from another
    /// thread, for [`Journal::append_group_flushed`]. It opens its own file handles (an
    /// fsync through any descriptor of a file makes the file durable). The durable
    /// observer, if any, moves to the handle: from now on it is told after each sync.
    /// A failed sync on either side poisons both.
    pub fn sync_handle(&mut self) -> Result<SyncHandle, JournalError> {
        Ok(SyncHandle {
            mark: self.mark_handle()?,
        })
    }

    /// The mark half of a two-stage sync, for another thread (see
    /// [`SyncHandle::sync_data`]). The durable observer, if any, moves to it: from now on
    /// it is told after each `record`.
    pub fn mark_handle(&mut self) -> Result<MarkHandle, JournalError> {
        if self.opts.read_only {
            return Err(JournalError::ReadOnly);
        }
        Ok(MarkHandle {
            sync: self.store.syncer()?,
            durability: self.opts.durability,
            shared: Arc::clone(&self.shared),
            observer: self.observer.take(),
            timer: self.timer.clone(),
        })
    }

    fn store_group(
        &mut self,
        batches: &mut [BatchBuilder],
        commit: Commit,
    ) -> Result<AppendInfo, JournalError> {
        if self.opts.read_only {
            return Err(JournalError::ReadOnly);
        }
        if self.shared.is_poisoned() {
            return Err(JournalError::Poisoned);
        }
        if batches.is_empty() {
            return Err(JournalError::InvalidBatch("empty group"));
        }
        // Seal every batch against a local copy of the tip: nothing changes until the
        // whole group is stored.
        let mut tip = self.tip;
        let mut first_seq = 0;
        let mut count: u32 = 0;
        let mut record_len: u64 = 0;
        let mut keys = Vec::with_capacity(batches.len());
        for (i, batch) in batches.iter_mut().enumerate() {
            let expected = tip
                .last_seq
                .checked_add(1)
                .ok_or(JournalError::InvalidBatch(
                    "sequence number space exhausted",
                ))?;
            match batch.first_seq() {
                None => return Err(JournalError::InvalidBatch("empty batch")),
                Some(first) if first != expected => {
                    return Err(JournalError::InvalidBatch(
                        "first seq does not follow the journal tip",
                    ))
                }
                Some(_) => {}
            }
            let header: BatchHeader = batch.seal(tip.link)?;
            if header.first_ts_ns < tip.last_ts_ns {
                return Err(JournalError::InvalidBatch(
                    "first timestamp is before the journal tip's",
                ));
            }
            if i == 0 {
                first_seq = header.first_seq;
            }
            count = count
                .checked_add(header.count)
                .ok_or(JournalError::TooLarge(
                    "more than u32::MAX commands in one group",
                ))?;
            record_len = record_len.saturating_add(crate::codec::u64_len(batch.record().len()));
            keys.push(seq_key(header.first_seq));
            tip = Tip {
                last_seq: header.last_seq(),
                last_ts_ns: header.last_ts_ns,
                link: header.header_hash,
            };
        }
        let records: Vec<(&[u8], &[u8])> = keys
            .iter()
            .zip(batches.iter())
            .map(|(k, b)| (&k[..], b.record()))
            .collect();
        let shared = Arc::clone(&self.shared);
        shared.guarded(|| {
            // One writer (the directory lock keeps other processes out), so checking
            // before the atomic insert is enough to never overwrite a stored record.
            for key in &keys {
                if self.store.get(Space::Batches, key)?.is_some() {
                    return Err(JournalError::Corrupt {
                        seq: key_seq(key).unwrap_or(0),
                        what: "a batch is already stored at this seq".to_string(),
                    });
                }
            }
            self.store.insert_all(Space::Batches, &records)?;
            match commit {
                Commit::Durable => self.make_durable(tip, None),
                Commit::Flushed => {
                    self.flush_to_file()?;
                    self.shared.set_flushed(tip);
                    Ok(())
                }
            }
        })?;
        self.tip = tip;
        if commit == Commit::Durable {
            if let Some(obs) = self.observer.as_mut() {
                obs(self.tip.last_seq);
            }
        }
        Ok(AppendInfo {
            first_seq,
            last_seq: tip.last_seq,
            count,
            header_hash: tip.link,
            record_len,
        })
    }

    /// Stores a durable snapshot of the state after command `seq`, which must be the
    /// journal tip (so the snapshot's chain link and timestamp are known exactly).
    /// `state_hash` is what the state machine reports for that state. Everything stored
    /// before it becomes durable with it, and the mark records both.
    pub fn write_snapshot(
        &mut self,
        seq: u64,
        state_hash: [u8; 32],
        state: &[u8],
    ) -> Result<SnapshotMeta, JournalError> {
        if self.opts.read_only {
            return Err(JournalError::ReadOnly);
        }
        if self.shared.is_poisoned() {
            return Err(JournalError::Poisoned);
        }
        if seq != self.tip.last_seq {
            return Err(JournalError::SnapshotNotAtTip {
                requested: seq,
                tip: self.tip.last_seq,
            });
        }
        let meta = SnapshotMeta {
            payload_version: PAYLOAD_VERSION,
            section: SECTION_STATE,
            seq,
            last_ts_ns: self.tip.last_ts_ns,
            state_len: crate::codec::u64_len(state.len()),
            state_hash,
            chain_hash: self.tip.link,
        };
        let record = encode_snapshot(&meta, state);
        let tip = self.tip;
        self.guarded(|j| {
            j.store
                .insert_all(Space::Snapshots, &[(&seq_key(seq)[..], &record[..])])?;
            j.make_durable(tip, Some(seq))
        })?;
        Ok(meta)
    }

    /// Sequence numbers of stored snapshots, ascending (keys only, not verified).
    pub fn snapshot_seqs(&self) -> Result<Vec<u64>, JournalError> {
        let mut out = Vec::new();
        for item in self.store.scan(Space::Snapshots, &[]) {
            let (key, _) = item?;
            let seq = key_seq(&key).ok_or_else(|| JournalError::SnapshotCorrupt {
                seq: 0,
                what: format!("snapshot key is {} bytes, not 8", key.len()),
            })?;
            out.push(seq);
        }
        Ok(out)
    }

    /// Loads and verifies the snapshot stored at `seq`, if any.
    pub fn load_snapshot(&self, seq: u64) -> Result<Option<Snapshot>, JournalError> {
        let Some(value) = self.store.get(Space::Snapshots, &seq_key(seq))? else {
            return Ok(None);
        };
        let view = decode_snapshot(&value).map_err(|e| JournalError::SnapshotCorrupt {
            seq,
            what: e.to_string(),
        })?;
        if view.meta.seq != seq {
            return Err(JournalError::SnapshotCorrupt {
                seq,
                what: format!("record says seq {}", view.meta.seq),
            });
        }
        if view.meta.payload_version != PAYLOAD_VERSION {
            return Err(JournalError::UnsupportedPayloadVersion {
                what: format!("the snapshot at seq {seq}"),
                found: view.meta.payload_version,
                supported: PAYLOAD_VERSION,
            });
        }
        if section_name(view.meta.section).is_none() {
            return Err(JournalError::SnapshotCorrupt {
                seq,
                what: format!(
                    "unknown snapshot section tag {} (this build reads {:?})",
                    view.meta.section, SNAPSHOT_SECTIONS
                ),
            });
        }
        Ok(Some(Snapshot {
            meta: view.meta,
            state: view.state.to_vec(),
        }))
    }

    /// Verifies and lists every snapshot, ascending by seq. Fails on the first damaged one.
    pub fn list_snapshots(&self) -> Result<Vec<SnapshotMeta>, JournalError> {
        let mut out = Vec::new();
        for seq in self.snapshot_seqs()? {
            if let Some(s) = self.load_snapshot(seq)? {
                out.push(s.meta);
            }
        }
        Ok(out)
    }

    /// The newest snapshot at or before `at_or_before` (any, when `None`), verified.
    /// A damaged newest snapshot is an error, not skipped.
    pub fn newest_snapshot(
        &self,
        at_or_before: Option<u64>,
    ) -> Result<Option<Snapshot>, JournalError> {
        let bound = at_or_before.unwrap_or(u64::MAX);
        let newest = self
            .snapshot_seqs()?
            .into_iter()
            .filter(|s| *s <= bound)
            .max();
        match newest {
            Some(seq) => self.load_snapshot(seq),
            None => Ok(None),
        }
    }

    /// Checks a snapshot's position against the journal: it must not lie beyond the tip
    /// (that would mean acknowledged batches are missing) and, at the tip, its chain
    /// link and timestamp must be the tip's. Snapshots below the tip are checked by the
    /// hash chain when reading resumes after them (`read_after_snapshot`).
    pub fn check_snapshot_position(&self, meta: &SnapshotMeta) -> Result<(), JournalError> {
        if meta.seq > self.tip.last_seq {
            return Err(JournalError::SnapshotCorrupt {
                seq: meta.seq,
                what: format!(
                    "snapshot is beyond the journal tip {} (acknowledged batches missing?)",
                    self.tip.last_seq
                ),
            });
        }
        if meta.seq == self.tip.last_seq
            && (meta.chain_hash != self.tip.link || meta.last_ts_ns != self.tip.last_ts_ns)
        {
            return Err(JournalError::SnapshotCorrupt {
                seq: meta.seq,
                what: "chain link or timestamp differs from the journal tip".to_string(),
            });
        }
        Ok(())
    }

    /// Reads every batch from the first to the tip, verifying as at open.
    pub fn read_from_genesis(&self) -> BatchIter {
        self.read_after(ChainVerifier::new(0, 0, self.genesis_hash))
    }

    /// Reads the batches after a snapshot, verifying that the first one chains onto it.
    pub fn read_after_snapshot(&self, meta: &SnapshotMeta) -> BatchIter {
        self.read_after(ChainVerifier::new(
            meta.seq,
            meta.last_ts_ns,
            meta.chain_hash,
        ))
    }

    /// Reads the batches following the position `from` describes, up to the tip (a
    /// torn record left beyond it by a read-only open is never read).
    pub fn read_after(&self, from: ChainVerifier) -> BatchIter {
        let start = from.last_seq().saturating_add(1);
        BatchIter {
            inner: self.store.scan(Space::Batches, &seq_key(start)),
            verifier: from,
            end: self.tip.last_seq,
            done: from.last_seq() >= self.tip.last_seq,
        }
    }
}

/// One verified batch read back from the journal.
#[derive(Debug, Clone)]
pub struct StoredBatch {
    /// The verified header.
    pub header: BatchHeader,
    record: IVec,
}

impl StoredBatch {
    /// The commands of the batch, in sequence order.
    pub fn entries(&self) -> EntryIter<'_> {
        let payload = self
            .record
            .get(crate::BATCH_HEADER_LEN..)
            .unwrap_or_default();
        EntryIter::new(payload, self.header.count)
    }

    /// The raw record bytes.
    pub fn record(&self) -> &[u8] {
        &self.record
    }
}

/// Iterator over verified batches up to the journal tip; yields an error (and then ends)
/// at the first batch that fails verification.
pub struct BatchIter {
    inner: RecordIter,
    verifier: ChainVerifier,
    /// The tip when the iterator was made: nothing beyond it is read.
    end: u64,
    done: bool,
}

impl BatchIter {
    /// The position after the last batch yielded.
    pub fn position(&self) -> ChainVerifier {
        self.verifier
    }
}

impl Iterator for BatchIter {
    type Item = Result<StoredBatch, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (key, value) = match self.inner.next()? {
            Ok(kv) => kv,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        let header = match self.verifier.check(&key, &value) {
            Ok(view) => view.header,
            Err(fault) => {
                self.done = true;
                return Some(Err(fault.into_error()));
            }
        };
        self.verifier.advance(&header);
        self.done = self.verifier.last_seq() >= self.end;
        Some(Ok(StoredBatch {
            header,
            record: value,
        }))
    }
}
