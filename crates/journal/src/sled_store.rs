//! The real store: sled 0.34.7 in `DIR/sled/`, the mark file `DIR/mark`, and a lock on
//! `DIR` itself.
//!
//! Owns: the journal directory's layout, its lock, creation (and `--fresh` clearing),
//! read-only opening through a private copy, turning sled's errors and panics into
//! journal errors that name the file. Must never: touch a directory another process has
//! locked, delete anything that is not part of a journal, write to a journal opened
//! read-only, or let a sled panic unwind into the caller.
//!
//! Read-only opens copy `DIR/sled/` into a private temporary directory (under `$TMPDIR`)
//! and open sled there, because sled 0.34 writes while it opens (it repairs its log,
//! which can make a loss permanent, writes its own snapshot file and grows `db`); the
//! journal directory is only read, under a shared lock.

use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};

use crate::durability::{sync_dir, FileSyncer};
use crate::error::JournalError;
use crate::store::{IVec, RecordIter, Space, Store, StoreSync};

/// sled's database directory inside the journal directory.
pub const SLED_DIR: &str = "sled";
/// The high-water mark file inside the journal directory.
pub const MARK_FILE: &str = "mark";
/// The mark file while it is being created.
const MARK_TMP: &str = "mark.tmp";
/// A file a journal directory may hold besides the journal (the repository documents
/// its `journal/` folder with one).
const README: &str = "README.md";

/// How long an open waits for another holder of the journal's lock (a process that is
/// exiting, or sled's threads of a handle dropped a moment ago).
const LOCK_WAIT_MS: u64 = 5_000;

/// What an open may do when the directory holds no journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opening {
    /// Open an existing journal only.
    Existing,
    /// Create one (writing `mark` for the given genesis hash) if the directory is empty
    /// or missing.
    CreateIfMissing([u8; 32]),
    /// Remove an existing journal (only a journal: nothing else may be in the directory)
    /// and create a new one.
    Fresh([u8; 32]),
}

/// The journal directory, locked.
struct DirLock {
    _file: File,
}

fn lock_dir(dir: &Path, exclusive: bool) -> Result<DirLock, JournalError> {
    let file = File::open(dir).map_err(|e| JournalError::io("opening", dir, e))?;
    let mut waited = 0;
    loop {
        let r = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match r {
            Ok(()) => return Ok(DirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) if waited < LOCK_WAIT_MS => {
                std::thread::sleep(std::time::Duration::from_millis(10));
                waited += 10;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(JournalError::Locked(dir.to_path_buf()))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(JournalError::io("locking", dir, e))
            }
        }
    }
}

/// What a journal directory holds.
struct Listing {
    /// `mark` or `sled/` is there.
    journal: bool,
    /// The first entry that is neither part of a journal nor the README.
    foreign: Option<String>,
    /// sled's own files directly in the directory: a version-1 journal.
    legacy: bool,
}

fn list(dir: &Path) -> Result<Listing, JournalError> {
    let mut l = Listing {
        journal: false,
        foreign: None,
        legacy: false,
    };
    let entries = std::fs::read_dir(dir).map_err(|e| JournalError::io("listing", dir, e))?;
    let mut names = Vec::new();
    for e in entries {
        let e = e.map_err(|e| JournalError::io("listing", dir, e))?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    for name in names {
        match name.as_str() {
            MARK_FILE | SLED_DIR => l.journal = true,
            MARK_TMP | README => {}
            "conf" | "db" => {
                l.legacy = true;
                l.foreign.get_or_insert(name);
            }
            _ => {
                l.foreign.get_or_insert(name);
            }
        }
    }
    Ok(l)
}

thread_local! {
    /// Set while this thread runs storage-engine code under `catching`.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    /// The message of the last panic caught on this thread.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once) a panic hook that keeps the panics `catching` turns into errors off
/// stderr (they are reported as errors instead) and passes every other panic on.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) {
                CAUGHT.with(|c| *c.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs storage-engine code, turning a panic into `Err(message)`.
fn catching<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_panic_hook();
    let outer = CATCHING.with(|c| c.replace(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CATCHING.with(|c| c.set(outer));
    r.map_err(|payload| {
        CAUGHT
            .with(|c| c.borrow_mut().take())
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string())
    })
}

/// sled's handles, dropped (closing sled) or leaked together.
struct Handles {
    trees: [sled::Tree; 3],
    db: sled::Db,
}

/// The sled-backed store.
pub(crate) struct SledStore {
    /// `None` only while the store is being dropped.
    handles: Option<Handles>,
    /// Set by any failed storage call (sled's, or an fsync or mark write of a syncer):
    /// sled 0.34 then never closes cleanly (its drop-time flush waits forever for a write
    /// that failed), so its handles are leaked instead; the process is about to stop.
    failed: Arc<AtomicBool>,
    /// The journal directory (what messages name, also for a private copy).
    root: PathBuf,
    /// The private copy sled runs on, for a read-only open (removed on drop, after sled).
    _copy: Option<tempfile::TempDir>,
    read_only: bool,
    /// Held for the store's lifetime; dropped last.
    _lock: DirLock,
}

impl Drop for SledStore {
    fn drop(&mut self) {
        let Some(handles) = self.handles.take() else {
            return;
        };
        if self.failed.load(Ordering::Acquire) {
            tracing::warn!(journal = %self.root.display(), "journal: storage failed; sled is not flushed on close");
            std::mem::forget(handles);
        } else if let Err(p) = catching(|| drop(handles)) {
            tracing::error!(journal = %self.root.display(), panic = %p, "journal: the storage engine panicked while closing");
        }
    }
}

impl SledStore {
    /// Opens (or creates) the journal directory `root` for writing, under an exclusive
    /// lock taken before anything in it is touched.
    pub(crate) fn open(
        root: &Path,
        opening: Opening,
        cache_capacity: u64,
    ) -> Result<Self, JournalError> {
        if !root.exists() {
            if opening == Opening::Existing {
                return Err(JournalError::NotAJournal(root.to_path_buf()));
            }
            std::fs::create_dir_all(root).map_err(|e| JournalError::io("creating", root, e))?;
            if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let lock = lock_dir(root, true)?;
        let listing = list(root)?;
        let genesis_hash = match opening {
            Opening::Existing => {
                check_existing(root, &listing)?;
                None
            }
            Opening::CreateIfMissing(_) if listing.journal => None,
            Opening::CreateIfMissing(g) => {
                refuse_foreign(root, &listing)?;
                Some(g)
            }
            Opening::Fresh(g) => {
                refuse_foreign(root, &listing)?;
                clear(root)?;
                Some(g)
            }
        };
        if let Some(g) = genesis_hash {
            create_mark(root, g)?;
        }
        let sled_dir = root.join(SLED_DIR);
        let new_sled = !sled_dir.exists();
        if new_sled && genesis_hash.is_none() {
            return Err(JournalError::Damaged {
                path: sled_dir,
                what: "the database directory is missing".to_string(),
            });
        }
        let store = Self::open_sled(root, &sled_dir, None, false, lock, cache_capacity)?;
        if new_sled {
            sync_dir(root)?;
        }
        Ok(store)
    }

    /// Opens the journal in `root` for reading only: under a shared lock, sled runs on a
    /// private copy of `root/sled`; nothing in `root` is written.
    pub(crate) fn open_read_only(root: &Path, cache_capacity: u64) -> Result<Self, JournalError> {
        if !root.is_dir() {
            return Err(JournalError::NotAJournal(root.to_path_buf()));
        }
        let lock = lock_dir(root, false)?;
        let listing = list(root)?;
        check_existing(root, &listing)?;
        let sled_dir = root.join(SLED_DIR);
        if !sled_dir.is_dir() {
            return Err(JournalError::Damaged {
                path: sled_dir,
                what: "the database directory is missing".to_string(),
            });
        }
        let copy = tempfile::Builder::new()
            .prefix("perpcore-journal-copy-")
            .tempdir()
            .map_err(|e| {
                JournalError::io(
                    "creating a private copy (read-only open) in",
                    std::env::temp_dir(),
                    e,
                )
            })?;
        let target = copy.path().join(SLED_DIR);
        copy_tree(&sled_dir, &target)?;
        Self::open_sled(root, &target, Some(copy), true, lock, cache_capacity)
    }

    fn open_sled(
        root: &Path,
        sled_dir: &Path,
        copy: Option<tempfile::TempDir>,
        read_only: bool,
        lock: DirLock,
        cache_capacity: u64,
    ) -> Result<Self, JournalError> {
        let config = sled::Config::new()
            .path(sled_dir)
            .cache_capacity(cache_capacity)
            // We flush explicitly after every batch; sled's periodic background flush
            // would only add a second writer of the files we fsync.
            .flush_every_ms(None);
        let shown = root.join(SLED_DIR);
        let damaged = |what: String| JournalError::Damaged {
            path: shown.clone(),
            what,
        };
        let db = catching(|| open_sled(&config))
            .map_err(|p| damaged(format!("the storage engine panicked while opening: {p}")))?
            .map_err(|e| sled_error(&shown, "opening", e))?;
        let tree = |space: Space| {
            catching(|| db.open_tree(space.name()))
                .map_err(|p| {
                    damaged(format!(
                        "the storage engine panicked opening {}: {p}",
                        space.name()
                    ))
                })?
                .map_err(|e| sled_error(&shown, "opening a tree of", e))
        };
        let trees = [
            tree(Space::Meta)?,
            tree(Space::Batches)?,
            tree(Space::Snapshots)?,
        ];
        Ok(Self {
            handles: Some(Handles { trees, db }),
            failed: Arc::new(AtomicBool::new(false)),
            root: root.to_path_buf(),
            _copy: copy,
            read_only,
            _lock: lock,
        })
    }

    fn handles(&self) -> Result<&Handles, JournalError> {
        self.handles.as_ref().ok_or_else(|| JournalError::Damaged {
            path: self.sled_path(),
            what: "the store is closed".to_string(),
        })
    }

    fn tree(&self, space: Space) -> Result<&sled::Tree, JournalError> {
        let t = &self.handles()?.trees;
        Ok(match space {
            Space::Meta => &t[0],
            Space::Batches => &t[1],
            Space::Snapshots => &t[2],
        })
    }

    fn sled_path(&self) -> PathBuf {
        self.root.join(SLED_DIR)
    }

    /// Runs a sled call: a panic or an error becomes a journal error naming the file.
    fn call<T>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Handles) -> Result<T, sled::Error>,
    ) -> Result<T, JournalError> {
        let path = self.sled_path();
        let h = self.handles()?;
        let r = catching(|| f(h))
            .map_err(|p| JournalError::Damaged {
                path: path.clone(),
                what: format!("the storage engine panicked while {op}: {p}"),
            })
            .and_then(|r| r.map_err(|e| sled_error(&path, op, e)));
        if r.is_err() {
            self.failed.store(true, Ordering::Release);
        }
        r
    }

    fn iter(
        &self,
        space: Space,
        op: &'static str,
        make: impl FnOnce(&sled::Tree) -> RecordSource,
    ) -> RecordIter {
        let path = self.sled_path();
        let inner = match self.tree(space) {
            Ok(t) => make(t),
            Err(e) => return Box::new(std::iter::once(Err(e))),
        };
        Box::new(Guarded {
            inner,
            path,
            op,
            failed: Arc::clone(&self.failed),
            done: false,
        })
    }
}

/// sled's lock on its own `db` file can outlive a dropped handle for a moment (its
/// threads wind down); wait for it, up to five seconds, on that error only (sled reports
/// it as an `io::ErrorKind::Other` whose only distinguishing mark is its message).
fn open_sled(config: &sled::Config) -> Result<sled::Db, sled::Error> {
    const STEP_MS: u64 = 10;
    let mut waited_ms = 0;
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if waited_ms < LOCK_WAIT_MS && e.to_string().contains("could not acquire lock") =>
            {
                std::thread::sleep(std::time::Duration::from_millis(STEP_MS));
                waited_ms += STEP_MS;
            }
            other => return other,
        }
    }
}

/// `sled::open(DIR/sled)` of a journal directory, with the same wait for a released
/// lock: for tools and tests that inspect or damage a journal's raw records after the
/// journal was dropped. Writing through it bypasses every check; never on a live journal.
pub fn open_raw_db(journal_dir: &Path) -> Result<sled::Db, sled::Error> {
    open_sled(&sled::Config::new().path(journal_dir.join(SLED_DIR)))
}

fn sled_error(path: &Path, op: &'static str, e: sled::Error) -> JournalError {
    match e {
        sled::Error::Io(source) => JournalError::Io {
            op,
            path: path.to_path_buf(),
            source,
        },
        other => JournalError::Damaged {
            path: path.to_path_buf(),
            what: format!("{op}: the storage engine reports: {other}"),
        },
    }
}

fn check_existing(root: &Path, listing: &Listing) -> Result<(), JournalError> {
    if listing.journal {
        return Ok(());
    }
    if listing.legacy {
        return Err(JournalError::Legacy(root.to_path_buf()));
    }
    Err(JournalError::NotAJournal(root.to_path_buf()))
}

fn refuse_foreign(root: &Path, listing: &Listing) -> Result<(), JournalError> {
    if listing.legacy {
        return Err(JournalError::Legacy(root.to_path_buf()));
    }
    match &listing.foreign {
        Some(name) => Err(JournalError::NotEmpty {
            path: root.to_path_buf(),
            entry: name.clone(),
        }),
        None => Ok(()),
    }
}

/// Removes a journal's own entries (the caller holds the lock and checked that nothing
/// else is there).
fn clear(root: &Path) -> Result<(), JournalError> {
    for name in [MARK_FILE, MARK_TMP] {
        let p = root.join(name);
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(JournalError::io("removing", p, e)),
        }
    }
    let s = root.join(SLED_DIR);
    match std::fs::remove_dir_all(&s) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(JournalError::io("removing", s, e)),
    }
    sync_dir(root)
}

/// Writes a new mark file (mark at seq 0) through a temporary name, durably.
fn create_mark(root: &Path, genesis_hash: [u8; 32]) -> Result<(), JournalError> {
    use std::io::Write as _;
    let bytes = crate::mark::new_mark_file(&crate::mark::MarkSlot {
        generation: 0,
        mark: crate::mark::Mark {
            last_seq: 0,
            link: genesis_hash,
            snapshot: None,
        },
        genesis_hash,
    });
    let tmp = root.join(MARK_TMP);
    let mut f = File::create(&tmp).map_err(|e| JournalError::io("creating", &tmp, e))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| JournalError::io("writing", &tmp, e))?;
    let dst = root.join(MARK_FILE);
    std::fs::rename(&tmp, &dst).map_err(|e| JournalError::io("renaming", &dst, e))?;
    sync_dir(root)
}

/// Copies a directory tree of regular files (the private copy of a read-only open).
fn copy_tree(from: &Path, to: &Path) -> Result<(), JournalError> {
    const OP: &str = "making a private copy (read-only open) of";
    std::fs::create_dir_all(to).map_err(|e| JournalError::io(OP, to, e))?;
    let entries = std::fs::read_dir(from).map_err(|e| JournalError::io("listing", from, e))?;
    for e in entries {
        let e = e.map_err(|e| JournalError::io("listing", from, e))?;
        let src = e.path();
        let dst = to.join(e.file_name());
        let kind = e
            .file_type()
            .map_err(|err| JournalError::io("reading", &src, err))?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|err| JournalError::io(OP, &src, err))?;
        }
    }
    Ok(())
}

/// A sled iterator whose every step is checked: a panic or an error ends it with a
/// journal error naming the file.
struct Guarded {
    inner: RecordSource,
    path: PathBuf,
    op: &'static str,
    failed: Arc<AtomicBool>,
    done: bool,
}

/// sled's iterator of a range, forwards or backwards.
type RecordSource = Box<dyn Iterator<Item = sled::Result<(IVec, IVec)>> + Send>;

impl Iterator for Guarded {
    type Item = Result<(IVec, IVec), JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match catching(|| self.inner.next()) {
            Ok(None) => return None,
            Ok(Some(Ok(kv))) => Ok(kv),
            Ok(Some(Err(e))) => Err(sled_error(&self.path, self.op, e)),
            Err(p) => Err(JournalError::Damaged {
                path: self.path.clone(),
                what: format!("the storage engine panicked while {}: {p}", self.op),
            }),
        };
        if item.is_err() {
            self.done = true;
            self.failed.store(true, Ordering::Release);
        }
        Some(item)
    }
}

impl Store for SledStore {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<IVec>, JournalError> {
        self.call("reading", |h| tree_of(h, space).get(key))
    }

    fn scan(&self, space: Space, from: &[u8]) -> RecordIter {
        let from = from.to_vec();
        self.iter(space, "reading", move |t| Box::new(t.range(from..)))
    }

    fn scan_rev(&self, space: Space, to: &[u8]) -> RecordIter {
        let to = to.to_vec();
        self.iter(space, "reading", move |t| Box::new(t.range(..=to).rev()))
    }

    fn insert_all(&self, space: Space, records: &[(&[u8], &[u8])]) -> Result<(), JournalError> {
        if self.read_only {
            return Err(JournalError::ReadOnly);
        }
        let mut batch = sled::Batch::default();
        for (k, v) in records {
            batch.insert(*k, *v);
        }
        self.call("storing records in", |h| {
            tree_of(h, space).apply_batch(batch)
        })
    }

    fn remove(&self, space: Space, key: &[u8]) -> Result<(), JournalError> {
        if self.read_only {
            return Err(JournalError::ReadOnly);
        }
        self.call("removing a record from", |h| {
            tree_of(h, space).remove(key).map(drop)
        })
    }

    fn flush(&self) -> Result<(), JournalError> {
        if self.read_only {
            return Err(JournalError::ReadOnly);
        }
        self.call("flushing", |h| h.db.flush().map(drop))
    }

    fn read_mark(&self) -> Result<Option<Vec<u8>>, JournalError> {
        let p = self.root.join(MARK_FILE);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(JournalError::io("reading", p, e)),
        }
    }

    fn syncer(&self) -> Result<Box<dyn StoreSync>, JournalError> {
        if self.read_only {
            return Err(JournalError::ReadOnly);
        }
        let mark_path = self.root.join(MARK_FILE);
        let mark = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&mark_path)
            .map_err(|e| JournalError::io("opening", &mark_path, e))?;
        Ok(Box::new(SledSync {
            files: FileSyncer::open(&self.sled_path())?,
            failed: Arc::clone(&self.failed),
            mark,
            mark_path,
        }))
    }
}

/// fsyncs sled's files and writes the mark file.
struct SledSync {
    files: FileSyncer,
    /// The store's failure flag: a failed fsync or mark write also means sled must not
    /// be flushed on close.
    failed: Arc<AtomicBool>,
    mark: File,
    mark_path: PathBuf,
}

impl SledSync {
    fn write_mark_now(
        &mut self,
        offset: u64,
        bytes: &[u8],
        durable: bool,
    ) -> Result<(), JournalError> {
        use std::os::unix::fs::FileExt as _;
        self.mark
            .write_all_at(bytes, offset)
            .map_err(|e| JournalError::io("writing", &self.mark_path, e))?;
        if durable {
            self.mark
                .sync_data()
                .map_err(|e| JournalError::io("fsyncing", &self.mark_path, e))?;
        }
        Ok(())
    }
}

impl StoreSync for SledSync {
    fn sync(&mut self) -> Result<(), JournalError> {
        let r = self.files.sync();
        if r.is_err() {
            self.failed.store(true, Ordering::Release);
        }
        r
    }

    fn write_mark(&mut self, offset: u64, bytes: &[u8], durable: bool) -> Result<(), JournalError> {
        let r = self.write_mark_now(offset, bytes, durable);
        if r.is_err() {
            self.failed.store(true, Ordering::Release);
        }
        r
    }
}

/// One of the three trees.
fn tree_of(h: &Handles, space: Space) -> &sled::Tree {
    match space {
        Space::Meta => &h.trees[0],
        Space::Batches => &h.trees[1],
        Space::Snapshots => &h.trees[2],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sled 0.34 panics on some damaged files (`tried to serialize Uninitialized`, seen by
    /// the byte-flip sweep on a 20,000-command journal); such a panic must come back as
    /// an error carrying the message, and the hook must not stop other panics.
    #[test]
    fn a_panic_inside_the_storage_engine_becomes_an_error() {
        let r: Result<(), String> = catching(|| panic!("tried to serialize Uninitialized"));
        let msg = r.expect_err("caught");
        assert!(msg.contains("tried to serialize Uninitialized"), "{msg}");
        // Nested and repeated use keep working, and a value passes through.
        assert_eq!(catching(|| catching(|| 7)), Ok(Ok(7)));
        // Outside `catching`, a panic is still a panic.
        let outside = std::panic::catch_unwind(|| panic!("not ours"));
        assert!(outside.is_err());
    }
}
