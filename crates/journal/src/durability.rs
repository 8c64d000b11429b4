//! Making sled's writes durable for real.
//!
//! Owns: the fsync step that follows every `sled::Db::flush()`. Must never: report a
//! sync as done when any fsync failed, or write to sled's files (it only fsyncs them).
//!
//! Why this exists: sled 0.34.7 documents `flush()` as "flushes all dirty IO buffers and
//! calls fsync", but on Linux its log writer (`pagecache/iobuf.rs`) calls
//! `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)` on the written range instead of
//! `fsync`. `sync_file_range` pushes the pages to the device but neither commits file
//! metadata (e.g. the file size after the log grows) nor flushes the device's volatile
//! write cache, so it does not survive power loss (sled issue #1452). Values larger than
//! about a quarter of a segment (~128 KiB with the default 512 KiB segments) are written
//! to separate files under `blobs/` with plain `write_all` and no sync at all
//! (`pagecache/blob_io.rs`). So after `flush()` we `fsync` the `db` file, every blob file
//! we have not synced yet (blobs are written once and never modified), the `blobs/`
//! directory when its listing changed, and the database directory itself (new files,
//! sled's own `snap.*` renames).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::error::JournalError;

/// What a successful commit guarantees. See the crate docs for the full statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `sled::Db::flush()` and then `fsync` of sled's files and directories: a committed
    /// batch survives process crash, kernel crash and power loss (on storage that honours
    /// fsync). The default, and the only mode fit for production.
    #[default]
    Fsync,
    /// `sled::Db::flush()` only: survives a process crash, may be lost on power loss or
    /// kernel crash. For benchmarks that want to measure the cost of fsync.
    FlushOnly,
    /// No flush at all: data sits in sled's in-process buffers until sled's own
    /// background flush. A process crash can lose committed batches. Benchmarks only.
    Buffered,
}

/// fsyncs sled's on-disk files.
pub(crate) struct FileSyncer {
    root: PathBuf,
    db_file: File,
    synced_blobs: BTreeSet<OsString>,
}

impl FileSyncer {
    /// Opens the handles and syncs the files sled wrote while creating the database
    /// (`conf` is written once at creation and never again).
    pub(crate) fn open(root: &Path) -> Result<Self, JournalError> {
        let db_path = root.join("db");
        // Opened read+write without create/truncate: fsync needs a writable handle on
        // some platforms, and we must never create or shorten sled's file.
        let db_file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&db_path)
            .map_err(|e| JournalError::io("opening for fsync", &db_path, e))?;
        let conf = root.join("conf");
        match File::open(&conf) {
            Ok(f) => f
                .sync_all()
                .map_err(|e| JournalError::io("fsyncing", &conf, e))?,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(JournalError::io("opening for fsync", &conf, e)),
        }
        let mut syncer = Self {
            root: root.to_path_buf(),
            db_file,
            synced_blobs: BTreeSet::new(),
        };
        syncer.sync()?;
        sync_dir(root)?;
        Ok(syncer)
    }

    /// fsyncs everything sled may have written since the last call. Call it after
    /// `sled::Db::flush()` returned Ok.
    ///
    /// The database directory itself is synced only by `open`: sled 0.34.7 creates and
    /// renames files there (`conf`, `db`, `blobs/`, its `snap.*` files) only while it
    /// opens (`PageCache::start`), before `open` runs; afterwards the only new files
    /// are blobs, whose directory is synced below when its listing changes.
    pub(crate) fn sync(&mut self) -> Result<(), JournalError> {
        // fdatasync: the data and the metadata needed to read it back (the file size
        // when sled grew the file), without the timestamps a full fsync also journals.
        self.db_file
            .sync_data()
            .map_err(|e| JournalError::io("fsyncing", self.root.join("db"), e))?;
        self.sync_blobs()
    }

    fn sync_blobs(&mut self) -> Result<(), JournalError> {
        let dir = self.root.join("blobs");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(JournalError::io("listing", &dir, e)),
        };
        // BTreeSet, not HashSet: the order we touch files in is deterministic.
        let mut present = BTreeSet::new();
        for entry in entries {
            let entry = entry.map_err(|e| JournalError::io("listing", &dir, e))?;
            present.insert(entry.file_name());
        }
        let mut changed = present.len() != self.synced_blobs.len();
        for name in &present {
            if self.synced_blobs.contains(name) {
                continue;
            }
            changed = true;
            let path = dir.join(name);
            match File::open(&path) {
                Ok(f) => f
                    .sync_all()
                    .map_err(|e| JournalError::io("fsyncing", &path, e))?,
                // sled garbage-collects blobs; one that vanished needs no sync.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(JournalError::io("opening for fsync", &path, e)),
            }
        }
        if changed {
            sync_dir(&dir)?;
        }
        self.synced_blobs = present;
        Ok(())
    }
}

/// fsyncs a directory so file creations, renames and removals in it are durable.
#[cfg(unix)]
pub(crate) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| JournalError::io("fsyncing directory", dir, e))
}

/// Directories cannot be opened for fsync on non-unix platforms; nothing to do there.
#[cfg(not(unix))]
pub(crate) fn sync_dir(_dir: &Path) -> Result<(), JournalError> {
    Ok(())
}
