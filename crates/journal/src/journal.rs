//! The `Journal`: an append-only, hash-chained log of sequenced commands in sled.
//!
//! Owns: the sled database (trees `meta`, `batches`, `snapshots`), the journal tip
//! (last durable seq, ts and chain link), open-time verification and torn-tail repair,
//! appends, snapshots and reading back. Must never: acknowledge a batch before it is
//! durable, accept a write after a failed one (the journal is poisoned until reopened),
//! or silently skip damage anywhere but in the never-acknowledged last batch.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::batch::{
    scan_records, BatchBuilder, BatchHeader, ChainVerifier, EntryIter, ScanOutcome,
};
use crate::codec::{key_seq, seq_key};
use crate::durability::{sync_dir, Durability, FileSyncer};
use crate::error::JournalError;
use crate::meta;
use crate::snapshot::{decode_snapshot, encode_snapshot, Snapshot, SnapshotMeta};
use crate::FORMAT_VERSION;

const TREE_META: &str = "meta";
const TREE_BATCHES: &str = "batches";
const TREE_SNAPSHOTS: &str = "snapshots";

/// Options for opening a journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalOptions {
    /// What a successful append guarantees (default: `Durability::Fsync`).
    pub durability: Durability,
    /// sled page cache size in bytes.
    pub cache_capacity_bytes: u64,
    /// What `open` verifies (default: `OpenCheck::Full`).
    pub open_check: OpenCheck,
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Fsync,
            cache_capacity_bytes: 64 * 1024 * 1024,
            open_check: OpenCheck::Full,
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
    /// Only the last batch (and its link to the one before): a torn last batch is
    /// still dropped, but damage further back is found only by whoever reads the log
    /// next. For a caller that reads and verifies the whole log itself right away (a
    /// replay from genesis does, through `read_from_genesis`), so the log is not
    /// hashed twice.
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

/// A last batch that failed its self-consistency checks at open and was removed.
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
    /// The torn last batch that was removed, if any.
    pub dropped_tail: Option<DroppedTail>,
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

/// sled holds an exclusive lock on its files, and a handle dropped a moment ago (in this
/// process, or in one that just exited) keeps it while sled's threads wind down. Opening
/// waits for it, up to five seconds, on that error only (sled reports it as an
/// `io::ErrorKind::Other` whose only distinguishing mark is its message).
fn open_sled(config: &sled::Config) -> Result<sled::Db, sled::Error> {
    const STEP_MS: u64 = 10;
    const MAX_WAIT_MS: u64 = 5_000;
    let mut waited_ms = 0;
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if waited_ms < MAX_WAIT_MS && e.to_string().contains("could not acquire lock") =>
            {
                std::thread::sleep(std::time::Duration::from_millis(STEP_MS));
                waited_ms += STEP_MS;
            }
            other => return other,
        }
    }
}

/// `sled::open(path)` with the same wait for a just-released lock: for tools and tests
/// that inspect or damage a journal's raw records after the journal was dropped.
pub fn open_raw_db(path: &Path) -> Result<sled::Db, sled::Error> {
    open_sled(&sled::Config::new().path(path))
}

/// Callback told the last durable sequence number after every durable append.
pub type DurableObserver = Box<dyn FnMut(u64) + Send>;

/// An open journal. Single writer: sled locks the directory, so a second `open` of the
/// same path (in this or another process) fails until this one is dropped.
pub struct Journal {
    path: PathBuf,
    opts: JournalOptions,
    db: sled::Db,
    batches: sled::Tree,
    snapshots: sled::Tree,
    syncer: FileSyncer,
    genesis: Vec<u8>,
    genesis_hash: [u8; 32],
    tip: Tip,
    shared: Arc<Shared>,
    observer: Option<DurableObserver>,
}

/// How far `Journal::store_group` takes a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commit {
    /// Flushed and fsynced (per the durability mode).
    Durable,
    /// Flushed to sled's file; the fsync is the caller's, through a [`SyncHandle`].
    Flushed,
}

/// The fsync half of a commit, usable on another thread than the journal's writer (see
/// [`Journal::append_group_flushed`]).
pub struct SyncHandle {
    syncer: FileSyncer,
    durability: Durability,
    shared: Arc<Shared>,
    observer: Option<DurableObserver>,
}

impl std::fmt::Debug for SyncHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncHandle")
            .field("durability", &self.durability)
            .field("poisoned", &self.shared.is_poisoned())
            .finish_non_exhaustive()
    }
}

impl SyncHandle {
    /// Makes durable every group whose `append_group_flushed` returned before this call
    /// began (fsync of sled's files, per the journal's durability mode), then tells the
    /// durable observer `last_seq`, the last of those groups' sequence numbers. A
    /// failure poisons the journal: what reached the disk is unknown.
    pub fn sync(&mut self, last_seq: u64) -> Result<(), JournalError> {
        let (shared, syncer) = (&self.shared, &mut self.syncer);
        let fsync = self.durability == Durability::Fsync;
        shared.guarded(|| {
            shared.injected_failure()?;
            if fsync {
                syncer.sync()?;
            }
            Ok(())
        })?;
        if let Some(obs) = self.observer.as_mut() {
            obs(last_seq);
        }
        Ok(())
    }
}

/// What a journal shares with its [`SyncHandle`]: a failed fsync on either side poisons
/// both.
#[derive(Debug, Default)]
struct Shared {
    poisoned: AtomicBool,
    #[cfg(feature = "test-hooks")]
    fail_next_sync: AtomicBool,
}

impl Shared {
    fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Runs a write or an fsync; any failure poisons the journal, because after it we no
    /// longer know what is on disk.
    fn guarded<T>(&self, f: impl FnOnce() -> Result<T, JournalError>) -> Result<T, JournalError> {
        if self.is_poisoned() {
            return Err(JournalError::Poisoned);
        }
        let r = f();
        if r.is_err() {
            self.poisoned.store(true, Ordering::Release);
            tracing::error!("journal: write failed; journal poisoned until reopened");
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

impl Journal {
    /// Opens the journal at `path`, creating it with `genesis` (the caller's opaque
    /// configuration, so the journal alone suffices to replay) if there is none. An
    /// existing journal must have been created with byte-identical `genesis`.
    pub fn open_or_create(
        path: impl AsRef<Path>,
        genesis: &[u8],
        opts: JournalOptions,
    ) -> Result<(Self, OpenReport), JournalError> {
        Self::open_inner(path.as_ref(), Some(genesis), opts)
    }

    /// Opens an existing journal; its genesis record is available via `genesis()`.
    pub fn open(
        path: impl AsRef<Path>,
        opts: JournalOptions,
    ) -> Result<(Self, OpenReport), JournalError> {
        let path = path.as_ref();
        if !path.join("conf").exists() {
            return Err(JournalError::NotAJournal(path.to_path_buf()));
        }
        Self::open_inner(path, None, opts)
    }

    fn open_inner(
        path: &Path,
        genesis_arg: Option<&[u8]>,
        opts: JournalOptions,
    ) -> Result<(Self, OpenReport), JournalError> {
        let dir_existed = path.exists();
        let db = open_sled(
            &sled::Config::new()
                .path(path)
                .cache_capacity(opts.cache_capacity_bytes)
                // We flush explicitly after every batch; sled's periodic background flush
                // would only add a second writer of the files we fsync.
                .flush_every_ms(None),
        )?;
        let syncer = FileSyncer::open(path)?;
        if !dir_existed {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                // Make the new directory's own entry durable.
                sync_dir(parent)?;
            }
        }
        let meta_tree = db.open_tree(TREE_META)?;
        let batches = db.open_tree(TREE_BATCHES)?;
        let snapshots = db.open_tree(TREE_SNAPSHOTS)?;

        let mut created = false;
        match meta_tree.get(meta::META_FORMAT_KEY)? {
            None => {
                let Some(genesis) = genesis_arg else {
                    return Err(JournalError::NotAJournal(path.to_path_buf()));
                };
                if !batches.is_empty() || !snapshots.is_empty() {
                    return Err(JournalError::MetaCorrupt(
                        "format record missing but batches or snapshots exist".to_string(),
                    ));
                }
                // One sled batch, so a crash leaves either both records or neither.
                let mut b = sled::Batch::default();
                b.insert(meta::META_FORMAT_KEY, meta::encode_format_record());
                b.insert(meta::META_GENESIS_KEY, meta::encode_genesis_record(genesis));
                meta_tree.apply_batch(b)?;
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
        let genesis_rec = meta_tree
            .get(meta::META_GENESIS_KEY)?
            .ok_or_else(|| JournalError::MetaCorrupt("genesis record missing".to_string()))?;
        let (genesis, genesis_hash) = meta::decode_genesis_record(&genesis_rec)
            .map_err(|e| JournalError::MetaCorrupt(e.to_string()))?;
        if let Some(g) = genesis_arg {
            if g != genesis {
                return Err(JournalError::GenesisMismatch);
            }
        }
        let genesis = genesis.to_vec();

        let mut journal = Self {
            path: path.to_path_buf(),
            opts,
            db,
            batches,
            snapshots,
            syncer,
            genesis,
            genesis_hash,
            tip: Tip {
                last_seq: 0,
                last_ts_ns: 0,
                link: genesis_hash,
            },
            shared: Arc::default(),
            observer: None,
        };
        let (dropped_tail, batches) = journal.scan_and_repair()?;
        if created || dropped_tail.is_some() {
            // Creation records and tail repair must be durable before anyone builds on
            // them; the durability mode still applies (benchmarks may skip fsync).
            journal.make_durable()?;
        }
        let report = OpenReport {
            created,
            batches,
            last_seq: journal.tip.last_seq,
            dropped_tail,
        };
        Ok((journal, report))
    }

    /// Verifies every batch from genesis and sets the tip. A last batch that is not
    /// self-consistent (a torn write: it was never acknowledged, since acknowledgement
    /// follows a successful fsync of the whole record) is removed and reported.
    /// Returns the dropped tail and, for a full check, the number of good batches.
    fn scan_and_repair(&mut self) -> Result<(Option<DroppedTail>, Option<u64>), JournalError> {
        let (outcome, batches) = match self.opts.open_check {
            OpenCheck::Full => {
                let o = scan_records(
                    self.genesis_hash,
                    self.batches.iter().map(|r| r.map_err(JournalError::from)),
                )?;
                let n = o.batches;
                (o, Some(n))
            }
            OpenCheck::LastBatch => (self.scan_last()?, None),
        };
        self.set_tip(outcome.position);
        let Some(torn) = outcome.torn_tail else {
            return Ok((None, batches));
        };
        tracing::warn!(
            seq = torn.first_seq,
            reason = %torn.reason,
            record_len = torn.record_len,
            "journal: dropping torn last batch (never acknowledged)"
        );
        self.batches.remove(&torn.key)?;
        let dropped = DroppedTail {
            first_seq: torn.first_seq,
            record_len: torn.record_len,
            reason: torn.reason,
        };
        Ok((Some(dropped), batches))
    }

    /// `OpenCheck::LastBatch`: the last two records, the one before the last trusted
    /// for its header only (its self-consistency is checked, its own link is not).
    /// Nothing else is read: not even a count of the keys, which sled can only get by
    /// walking every leaf (a third of a replay's time on a 1M-command journal).
    fn scan_last(&self) -> Result<ScanOutcome, JournalError> {
        let mut tail = self.batches.iter().rev();
        let last = tail.next().transpose()?;
        let before = tail.next().transpose()?;
        let start = match &before {
            None => ChainVerifier::new(0, 0, self.genesis_hash),
            Some((key, value)) => {
                let seq = crate::codec::key_seq(key).unwrap_or(0);
                let view =
                    crate::batch::decode_batch(value).map_err(|e| JournalError::Corrupt {
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

    /// Flushes sled and, in `Durability::Fsync` mode, fsyncs its files.
    fn make_durable(&mut self) -> Result<(), JournalError> {
        self.shared.injected_failure()?;
        self.flush_to_file()?;
        if self.opts.durability == Durability::Fsync {
            self.syncer.sync()?;
        }
        Ok(())
    }

    /// sled's flush: its buffers written to its file (not yet fsynced), unless the
    /// durability mode skips even that.
    fn flush_to_file(&self) -> Result<(), JournalError> {
        match self.opts.durability {
            Durability::Fsync | Durability::FlushOnly => {
                self.db.flush()?;
            }
            Durability::Buffered => {}
        }
        Ok(())
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

    /// The end of the durable log.
    pub fn tip(&self) -> Tip {
        self.tip
    }

    /// Last durable sequence number (0: empty).
    pub fn last_seq(&self) -> u64 {
        self.tip.last_seq
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

    /// Makes the next flush/fsync fail, to test poisoning.
    #[cfg(feature = "test-hooks")]
    pub fn fail_next_sync(&mut self) {
        self.shared.fail_next_sync.store(true, Ordering::Release);
    }

    /// Seals `batch` onto the hash chain, stores it as one sled entry and makes it
    /// durable. Only after this returns Ok may the batch's effects be released. The
    /// builder is left sealed; `clear()` it before reuse. `append_group` of one batch.
    pub fn append(&mut self, batch: &mut BatchBuilder) -> Result<AppendInfo, JournalError> {
        self.append_group(std::slice::from_mut(batch))
    }

    /// One group commit: seals `batches` onto the hash chain in order, stores each as
    /// one sled entry (all of them in one atomic sled batch: after a crash either every
    /// record of the group is there or none is) and makes them durable with one flush +
    /// fsync. Only after this returns Ok may the group's effects be released. The
    /// builders are left sealed; `clear()` them before reuse.
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

    /// `append_group` without the fsync: the group is stored and sled has written it to
    /// its file (`sled::Db::flush`), but it is durable only once a [`SyncHandle::sync`]
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

    /// A handle that fsyncs this journal's files from another thread, for
    /// [`Journal::append_group_flushed`]. It opens its own handle on sled's file (an
    /// fsync through any descriptor of a file makes the file durable). The durable
    /// observer, if any, moves to the handle: from now on it is told after each sync.
    /// A failed sync on either side poisons both.
    pub fn sync_handle(&mut self) -> Result<SyncHandle, JournalError> {
        Ok(SyncHandle {
            syncer: FileSyncer::open(&self.path)?,
            durability: self.opts.durability,
            shared: Arc::clone(&self.shared),
            observer: self.observer.take(),
        })
    }

    fn store_group(
        &mut self,
        batches: &mut [BatchBuilder],
        commit: Commit,
    ) -> Result<AppendInfo, JournalError> {
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
        let mut sled_batch = sled::Batch::default();
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
            let key = seq_key(header.first_seq);
            let record = batch.record();
            record_len = record_len.saturating_add(crate::codec::u64_len(record.len()));
            sled_batch.insert(&key[..], record);
            keys.push((header.first_seq, key));
            tip = Tip {
                last_seq: header.last_seq(),
                last_ts_ns: header.last_ts_ns,
                link: header.header_hash,
            };
        }
        self.guarded(|j| {
            // One writer (sled's lock keeps other processes out), so checking before the
            // atomic batch is enough to never overwrite a stored record.
            for (seq, key) in &keys {
                if j.batches.contains_key(key)? {
                    return Err(JournalError::Corrupt {
                        seq: *seq,
                        what: "a batch is already stored at this seq".to_string(),
                    });
                }
            }
            j.batches.apply_batch(sled_batch)?;
            match commit {
                Commit::Durable => j.make_durable(),
                Commit::Flushed => j.flush_to_file(),
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
    /// `state_hash` is what the state machine reports for that state.
    pub fn write_snapshot(
        &mut self,
        seq: u64,
        state_hash: [u8; 32],
        state: &[u8],
    ) -> Result<SnapshotMeta, JournalError> {
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
            seq,
            last_ts_ns: self.tip.last_ts_ns,
            state_len: crate::codec::u64_len(state.len()),
            state_hash,
            chain_hash: self.tip.link,
        };
        let record = encode_snapshot(&meta, state);
        self.guarded(|j| {
            j.snapshots.insert(seq_key(seq), record)?;
            j.make_durable()
        })?;
        Ok(meta)
    }

    /// Sequence numbers of stored snapshots, ascending (keys only, not verified).
    pub fn snapshot_seqs(&self) -> Result<Vec<u64>, JournalError> {
        let mut out = Vec::new();
        for item in self.snapshots.iter().keys() {
            let key = item?;
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
        let Some(value) = self.snapshots.get(seq_key(seq))? else {
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

    /// Reads every batch from the first, verifying as at open.
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

    /// Reads the batches following the position `from` describes.
    pub fn read_after(&self, from: ChainVerifier) -> BatchIter {
        let start = from.last_seq().saturating_add(1);
        BatchIter {
            inner: self.batches.range(seq_key(start)..),
            verifier: from,
            done: from.last_seq() == u64::MAX,
        }
    }
}

/// One verified batch read back from the journal.
#[derive(Debug, Clone)]
pub struct StoredBatch {
    /// The verified header.
    pub header: BatchHeader,
    record: sled::IVec,
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

/// Iterator over verified batches; yields an error (and then ends) at the first
/// batch that fails verification.
pub struct BatchIter {
    inner: sled::Iter,
    verifier: ChainVerifier,
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
                return Some(Err(e.into()));
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
        Some(Ok(StoredBatch {
            header,
            record: value,
        }))
    }
}
