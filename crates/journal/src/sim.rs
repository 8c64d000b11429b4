//! A simulated disk under the journal, with injected faults, crashes and damage: the
//! storage half of the seeded simulation of the commit pipeline (`test-hooks` only).
//!
//! Owns: `SimDisk` (an in-memory model of what a store's files hold and what of it would
//! survive a crash), `SimStore` / `SimSync` (the `Store` and `StoreSync` seam on top of
//! it), fault injection by countdown, crash images and damage. Must never: be compiled
//! into a production build, lose anything the `Store` contract promises to keep (that
//! would report bugs that are not there), or keep anything it promises to lose unless
//! on purpose and said so (that would hide bugs). The one deliberate step past the
//! contract is the torn write below: `insert_all` is atomic by contract (sled applies a
//! batch whole or not at all), but the journal also claims to forgive a torn last batch,
//! so power loss may tear the last surviving op. Every choice comes from the caller's
//! RNG or a counter, so a seed decides what the model does (thread interleavings
//! aside).
//!
//! # The model
//! The disk is a log of operations: one `insert_all` (every record of the call) or one
//! `remove`. Two watermarks split it:
//! - `flushed`: the ops a `Store::flush` has written to the store's files (the kernel's
//!   page cache): they survive a crash of the process;
//! - `synced`: the ops a `StoreSync::sync` made durable (everything flushed when the sync
//!   began, not what was flushed while it ran): they survive power loss.
//!
//! A sync can be given a latency (`SimDisk::set_sync_latency`) with the disk unlocked
//! meanwhile, so the writer's flushes race the sync thread's fsyncs as on a real disk.
//!
//! The process reads the live view: every op, flushed or not (sled serves reads from its
//! own cache). The mark file (`MARK_FILE_LEN` bytes) is kept twice: as written (what the
//! process reads and what survives a process crash) and as durable (what survives power
//! loss); a `write_mark` with `durable` makes the whole file durable, like `fdatasync`.
//!
//! A crash image (`SimDisk::crash`) is the disk a restarted process finds:
//! - `ProcessCrash`: the ops up to `flushed` and the mark as written (what was only in
//!   page cache stays undurable: a later power loss can still take it);
//! - `PowerLoss`: the ops up to `synced`, then possibly a prefix of the flushed but
//!   unsynced ops (the device wrote some pages in order before the power went) and
//!   possibly one more of them torn (a prefix of its records, the last of them cut
//!   short: a torn write is a prefix of what was being written); the mark as durable,
//!   with the last undurable slot write possibly applied whole or in part (a torn
//!   slot).
//!
//! Faults are armed by countdown: the Nth call of a kind (`insert_all`, `flush`, `sync`,
//! `write_mark`) after arming fails with `JournalError::Io` naming the operation and a
//! `sim/...` path. A failed call may have done part of its work first (decided by bits
//! drawn when the fault is armed): an insert applied, a flush or sync that got part of
//! the way, a mark slot written but not made durable. A crash countdown kills the
//! process at its Nth storage call (any kind, reads too): that call and every later one
//! fail and change nothing, so the disk stays as it was at that moment.
//!
//! Damage (`damage`) works on an image: a flipped byte in one stored value (any space,
//! any op, possibly one a later op replaced), a flipped byte of the mark file, or the op
//! log's suffix dropped from some op on (what sled 0.34 does after a checksum failure in
//! the part of its log written since its last snapshot). It reports what it hit, so a
//! checker can tell whether acknowledged data was touched.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use rand::Rng;

use crate::error::JournalError;
use crate::mark::{new_mark_file, Mark, MarkSlot, MARK_FILE_LEN};
use crate::meta::genesis_hash;
use crate::store::{IVec, RecordIter, Space, Store, StoreSync};

/// A storage call that a fault can be armed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// `Store::insert_all`.
    InsertAll,
    /// `Store::flush`.
    Flush,
    /// `StoreSync::sync`.
    Sync,
    /// `StoreSync::write_mark`.
    WriteMark,
}

impl FaultKind {
    /// Every kind, in a fixed order.
    pub const ALL: [FaultKind; 4] = [
        FaultKind::InsertAll,
        FaultKind::Flush,
        FaultKind::Sync,
        FaultKind::WriteMark,
    ];

    /// The call's name, for messages and counters.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::InsertAll => "insert_all",
            FaultKind::Flush => "flush",
            FaultKind::Sync => "sync",
            FaultKind::WriteMark => "write_mark",
        }
    }

    fn index(self) -> usize {
        match self {
            FaultKind::InsertAll => 0,
            FaultKind::Flush => 1,
            FaultKind::Sync => 2,
            FaultKind::WriteMark => 3,
        }
    }
}

/// What kind of crash an image is taken after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CrashKind {
    /// The process died (SIGKILL, panic): flushed ops and the mark as written survive.
    ProcessCrash,
    /// The machine lost power: only synced ops and the durable mark survive, plus
    /// whatever the device happened to write (possibly torn).
    PowerLoss,
}

/// One entry of the op log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// One `insert_all`: every record of the call (power loss may tear it: see `crash`).
    Insert {
        /// The key space.
        space: Space,
        /// The records, in the order given.
        records: Vec<(Vec<u8>, IVec)>,
    },
    /// One `remove`.
    Remove {
        /// The key space.
        space: Space,
        /// The key.
        key: Vec<u8>,
    },
}

/// What made a storage call fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// An armed fault of this kind.
    Fault(FaultKind),
    /// The crash countdown: the process died at this call.
    Crash,
}

/// A failure the disk injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// Why the call failed.
    pub trigger: Trigger,
    /// The call's number (1-based, every storage call counted) since the disk was made.
    pub call: u64,
    /// The operation, as named in the error.
    pub op: &'static str,
    /// What the failed call did before failing (`None`: nothing).
    pub partial: Option<&'static str>,
}

/// What a crash image kept beyond the durable state (see [`SimDisk::crash`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CrashReport {
    /// Ops the image holds.
    pub ops: usize,
    /// Ops lost (in the log before the crash, not in the image).
    pub lost_ops: usize,
    /// Unsynced ops that survived whole (power loss only).
    pub unsynced_survivors: usize,
    /// An op survived torn (power loss only).
    pub torn_op: bool,
    /// The last undurable mark slot write survived in part (power loss only).
    pub torn_mark: bool,
    /// The last undurable mark slot write survived whole (power loss only).
    pub undurable_mark_kept: bool,
}

/// What [`damage`] did to an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// One byte of one stored value flipped.
    Value {
        /// The op the value belongs to.
        op: usize,
        /// Its key space.
        space: Space,
        /// Its key.
        key: Vec<u8>,
        /// The byte's offset in the value.
        at: usize,
        /// The damaged value is the one the image's view holds (no later op replaced or
        /// removed it).
        live: bool,
    },
    /// One byte of the mark file flipped.
    Mark {
        /// The byte's offset in the file.
        offset: usize,
    },
    /// The op log's suffix dropped.
    Suffix {
        /// The first op dropped.
        from_op: usize,
        /// How many ops were dropped.
        dropped: usize,
    },
    /// The image held nothing of the chosen kind to damage.
    Nothing,
}

/// A fault waiting to fire.
#[derive(Debug, Clone, Copy)]
struct Armed {
    /// Calls of the kind still to go; the call that brings it to zero fails.
    left: u64,
    /// Random bits that decide what the failing call does before it fails.
    effect: u64,
}

#[derive(Debug, Clone)]
struct Disk {
    name: String,
    ops: Vec<Op>,
    flushed: usize,
    synced: usize,
    /// The live view, one map per space (`Space::ALL` order).
    view: [BTreeMap<Vec<u8>, IVec>; 3],
    mark: Vec<u8>,
    mark_durable: Vec<u8>,
    /// The last mark slot write not made durable since the last durable one.
    mark_pending: Option<(usize, Vec<u8>)>,
    armed: [Option<Armed>; 4],
    /// Storage calls still to go until the process dies (the call reaching zero fails).
    crash_left: Option<u64>,
    dead: bool,
    /// Longest time a sync takes, in µs (each sync a pseudo-random part of it).
    sync_latency_us: u64,
    calls: u64,
    fired: Vec<Fired>,
    crash_report: Option<CrashReport>,
}

fn space_index(space: Space) -> usize {
    match space {
        Space::Meta => 0,
        Space::Batches => 1,
        Space::Snapshots => 2,
    }
}

/// Applies one op to a view.
fn apply(view: &mut [BTreeMap<Vec<u8>, IVec>; 3], op: &Op) {
    match op {
        Op::Insert { space, records } => {
            let m = &mut view[space_index(*space)];
            for (k, v) in records {
                m.insert(k.clone(), v.clone());
            }
        }
        Op::Remove { space, key } => {
            view[space_index(*space)].remove(key);
        }
    }
}

fn view_of(ops: &[Op]) -> [BTreeMap<Vec<u8>, IVec>; 3] {
    let mut view: [BTreeMap<Vec<u8>, IVec>; 3] = Default::default();
    for op in ops {
        apply(&mut view, op);
    }
    view
}

/// The path named in errors for a store call.
fn sim_path(name: &str, what: &str) -> PathBuf {
    PathBuf::from(format!("sim/{name}/{what}"))
}

/// SplitMix64: spreads a counter into pseudo-random bits (sync latencies).
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniformly random index below `n` (0 when `n` is 0).
fn below(rng: &mut impl Rng, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        rng.gen_range(0..n)
    }
}

impl Disk {
    fn new(name: &str, mark: Vec<u8>) -> Self {
        Self {
            name: name.to_string(),
            ops: Vec::new(),
            flushed: 0,
            synced: 0,
            view: Default::default(),
            mark_durable: mark.clone(),
            mark,
            mark_pending: None,
            armed: [None; 4],
            crash_left: None,
            dead: false,
            sync_latency_us: 0,
            calls: 0,
            fired: Vec::new(),
            crash_report: None,
        }
    }

    /// Counts a storage call; fails it when the process is dead or dies now.
    fn enter(&mut self, op: &'static str, path: &str) -> Result<(), JournalError> {
        self.calls = self.calls.saturating_add(1);
        if !self.dead {
            if let Some(left) = self.crash_left.as_mut() {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    self.dead = true;
                    self.crash_left = None;
                    self.fired.push(Fired {
                        trigger: Trigger::Crash,
                        call: self.calls,
                        op,
                        partial: None,
                    });
                }
            }
        }
        if self.dead {
            return Err(JournalError::io(
                op,
                sim_path(&self.name, path),
                std::io::Error::other(format!(
                    "simulated crash: the process is dead (storage call {})",
                    self.calls
                )),
            ));
        }
        Ok(())
    }

    /// Counts a call of a faultable kind; `Some(effect bits)` when this call must fail.
    fn fault(&mut self, kind: FaultKind) -> Option<u64> {
        let slot = &mut self.armed[kind.index()];
        let armed = slot.as_mut()?;
        armed.left = armed.left.saturating_sub(1);
        if armed.left > 0 {
            return None;
        }
        let effect = armed.effect;
        *slot = None;
        Some(effect)
    }

    fn injected(
        &mut self,
        kind: FaultKind,
        op: &'static str,
        path: &str,
        partial: Option<&'static str>,
    ) -> JournalError {
        self.fired.push(Fired {
            trigger: Trigger::Fault(kind),
            call: self.calls,
            op,
            partial,
        });
        JournalError::io(
            op,
            sim_path(&self.name, path),
            std::io::Error::other(format!(
                "injected fault: {} failed (storage call {})",
                kind.name(),
                self.calls
            )),
        )
    }

    fn push(&mut self, op: Op) {
        apply(&mut self.view, &op);
        self.ops.push(op);
    }

    fn insert_all(&mut self, space: Space, records: &[(&[u8], &[u8])]) -> Result<(), JournalError> {
        const OP: &str = "storing records in";
        self.enter(OP, space.name())?;
        let op = Op::Insert {
            space,
            records: records
                .iter()
                .map(|(k, v)| (k.to_vec(), IVec::from(*v)))
                .collect(),
        };
        if let Some(effect) = self.fault(FaultKind::InsertAll) {
            // The write may have gone through before the error was reported.
            let partial = if effect & 1 == 1 {
                self.push(op);
                Some("the records were stored")
            } else {
                None
            };
            return Err(self.injected(FaultKind::InsertAll, OP, space.name(), partial));
        }
        self.push(op);
        Ok(())
    }

    fn remove(&mut self, space: Space, key: &[u8]) -> Result<(), JournalError> {
        self.enter("removing a record from", space.name())?;
        self.push(Op::Remove {
            space,
            key: key.to_vec(),
        });
        Ok(())
    }

    fn flush(&mut self) -> Result<(), JournalError> {
        const OP: &str = "flushing";
        self.enter(OP, "db")?;
        if let Some(effect) = self.fault(FaultKind::Flush) {
            // Part of the buffers may have been written before the failure.
            let span = self.ops.len().saturating_sub(self.flushed);
            let got = usize::try_from(effect % u64::try_from(span + 1).unwrap_or(1)).unwrap_or(0);
            self.flushed = self.flushed.saturating_add(got);
            let partial = (got > 0).then_some("some ops were flushed");
            return Err(self.injected(FaultKind::Flush, OP, "db", partial));
        }
        self.flushed = self.ops.len();
        Ok(())
    }

    /// The start of a sync: what is flushed now is what it makes durable. Returns that
    /// and how long (µs) the sync takes.
    fn begin_sync(&mut self) -> Result<(usize, u64), JournalError> {
        const OP: &str = "fsyncing";
        self.enter(OP, "db")?;
        if let Some(effect) = self.fault(FaultKind::Sync) {
            // Part of the flushed pages may have reached the device.
            let span = self.flushed.saturating_sub(self.synced);
            let got = usize::try_from(effect % u64::try_from(span + 1).unwrap_or(1)).unwrap_or(0);
            self.synced = self.synced.saturating_add(got);
            let partial = (got > 0).then_some("some ops were made durable");
            return Err(self.injected(FaultKind::Sync, OP, "db", partial));
        }
        let pause = match self.sync_latency_us {
            0 => 0,
            max => splitmix(self.calls) % max.saturating_add(1),
        };
        Ok((self.flushed, pause))
    }

    /// The end of a sync begun when `target` ops were flushed (unless the process died
    /// meanwhile: then it never completed).
    fn end_sync(&mut self, target: usize) -> Result<(), JournalError> {
        if self.dead {
            return Err(JournalError::io(
                "fsyncing",
                sim_path(&self.name, "db"),
                std::io::Error::other("simulated crash: the process died during the fsync"),
            ));
        }
        self.synced = self.synced.max(target);
        Ok(())
    }

    fn write_mark(&mut self, offset: u64, bytes: &[u8], durable: bool) -> Result<(), JournalError> {
        const OP: &str = "writing";
        self.enter(OP, "mark")?;
        let at = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = at.checked_add(bytes.len()).filter(|e| *e <= MARK_FILE_LEN);
        let Some(end) = end else {
            return Err(JournalError::io(
                OP,
                sim_path(&self.name, "mark"),
                std::io::Error::other("write beyond the end of the mark file"),
            ));
        };
        if let Some(effect) = self.fault(FaultKind::WriteMark) {
            // The pwrite may have succeeded and the fdatasync failed: written, not
            // durable (a power loss may then keep it whole, torn or not at all).
            let partial = if effect & 1 == 1 {
                self.mark[at..end].copy_from_slice(bytes);
                self.mark_pending = Some((at, bytes.to_vec()));
                Some("the slot was written but not made durable")
            } else {
                None
            };
            return Err(self.injected(FaultKind::WriteMark, OP, "mark", partial));
        }
        self.mark[at..end].copy_from_slice(bytes);
        if durable {
            self.mark_durable.clone_from(&self.mark);
            self.mark_pending = None;
        } else {
            self.mark_pending = Some((at, bytes.to_vec()));
        }
        Ok(())
    }

    fn range(
        &mut self,
        space: Space,
        lo: Bound<&[u8]>,
        hi: Bound<&[u8]>,
    ) -> Result<Vec<(IVec, IVec)>, JournalError> {
        self.enter("reading", space.name())?;
        Ok(self.view[space_index(space)]
            .range::<[u8], _>((lo, hi))
            .map(|(k, v)| (IVec::from(k.as_slice()), v.clone()))
            .collect())
    }

    /// A fresh disk holding `ops` and `mark`, everything in it flushed; synced up to
    /// `synced`.
    fn image(&self, ops: Vec<Op>, synced: usize, mark: Vec<u8>, mark_durable: Vec<u8>) -> Disk {
        let mut d = Disk::new(&self.name, mark);
        d.mark_durable = mark_durable;
        d.sync_latency_us = self.sync_latency_us;
        d.view = view_of(&ops);
        d.flushed = ops.len();
        d.synced = synced.min(ops.len());
        d.ops = ops;
        d
    }
}

/// A simulated disk. Clones share it (the store, its syncers and the test all see the
/// same disk); [`SimDisk::copy`] makes an independent one.
#[derive(Debug, Clone)]
pub struct SimDisk {
    inner: Arc<Mutex<Disk>>,
}

impl SimDisk {
    /// An empty disk with a new journal's mark file for `genesis` (what a sled journal
    /// directory holds right after its mark is created): `Journal::open_store` with the
    /// same genesis completes the creation.
    pub fn new(name: &str, genesis: &[u8]) -> Self {
        let g = genesis_hash(genesis);
        let mark = new_mark_file(&MarkSlot {
            generation: 0,
            mark: Mark {
                last_seq: 0,
                link: g,
                snapshot: None,
            },
            genesis_hash: g,
        });
        Self::wrap(Disk::new(name, mark))
    }

    fn wrap(d: Disk) -> Self {
        Self {
            inner: Arc::new(Mutex::new(d)),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Disk) -> T) -> T {
        let mut d = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut d)
    }

    /// A store on this disk.
    pub fn store(&self) -> SimStore {
        SimStore { disk: self.clone() }
    }

    /// An independent copy of the disk as it is now (faults and counters included).
    pub fn copy(&self) -> SimDisk {
        Self::wrap(self.with(|d| d.clone()))
    }

    /// Arms a fault: the `countdown`th call of `kind` from now on fails (1: the next
    /// one). `effect` bits decide what the failing call does before failing. Replaces a
    /// fault of the same kind still armed.
    pub fn arm(&self, kind: FaultKind, countdown: u64, effect: u64) {
        self.with(|d| {
            d.armed[kind.index()] = Some(Armed {
                left: countdown.max(1),
                effect,
            });
        });
    }

    /// Arms the crash countdown: the process dies at its `countdown`th storage call from
    /// now on (1: the next one).
    pub fn arm_crash(&self, countdown: u64) {
        self.with(|d| d.crash_left = Some(countdown.max(1)));
    }

    /// Makes every sync take up to `max_us` microseconds (0: none), the disk unlocked
    /// meanwhile, so the writer's flushes race the sync thread's fsyncs as on a real
    /// disk. Crash images keep the setting.
    pub fn set_sync_latency(&self, max_us: u64) {
        self.with(|d| d.sync_latency_us = max_us);
    }

    /// Disarms every fault and the crash countdown (a dead process stays dead).
    pub fn disarm(&self) {
        self.with(|d| {
            d.armed = [None; 4];
            d.crash_left = None;
        });
    }

    /// The failures injected so far, in order.
    pub fn fired(&self) -> Vec<Fired> {
        self.with(|d| d.fired.clone())
    }

    /// True once the crash countdown has run out.
    pub fn is_dead(&self) -> bool {
        self.with(|d| d.dead)
    }

    /// Storage calls made so far.
    pub fn calls(&self) -> u64 {
        self.with(|d| d.calls)
    }

    /// Ops in the log.
    pub fn ops_len(&self) -> usize {
        self.with(|d| d.ops.len())
    }

    /// The op log.
    pub fn ops(&self) -> Vec<Op> {
        self.with(|d| d.ops.clone())
    }

    /// Ops that survive a process crash.
    pub fn flushed(&self) -> usize {
        self.with(|d| d.flushed)
    }

    /// Ops that survive power loss.
    pub fn synced(&self) -> usize {
        self.with(|d| d.synced)
    }

    /// The live view of one space, ascending by key.
    pub fn records(&self, space: Space) -> Vec<(Vec<u8>, IVec)> {
        self.with(|d| {
            d.view[space_index(space)]
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
    }

    /// The mark file as written.
    pub fn mark_bytes(&self) -> Vec<u8> {
        self.with(|d| d.mark.clone())
    }

    /// The mark file as durable.
    pub fn durable_mark_bytes(&self) -> Vec<u8> {
        self.with(|d| d.mark_durable.clone())
    }

    /// What the crash that made this image kept (`None`: not a crash image).
    pub fn crash_report(&self) -> Option<CrashReport> {
        self.with(|d| d.crash_report)
    }

    /// The disk a restarted process finds after a crash of `kind` now (see the module
    /// doc). The image has no faults armed and counts calls from zero.
    pub fn crash(&self, kind: CrashKind, rng: &mut impl Rng) -> SimDisk {
        let d = self.with(|d| d.clone());
        let mut report = CrashReport::default();
        let mut image = match kind {
            CrashKind::ProcessCrash => {
                // The page cache survives: the mark as written, its undurable write
                // still undurable (a later power loss may keep it, tear it or not).
                let ops = d.ops[..d.flushed].to_vec();
                let mut image = d.image(ops, d.synced, d.mark.clone(), d.mark_durable.clone());
                image.mark_pending.clone_from(&d.mark_pending);
                image
            }
            CrashKind::PowerLoss => {
                let mut ops = d.ops[..d.synced].to_vec();
                // Only what was flushed ever reached the files; of that, the device may
                // have written some pages, in order, before the power went: a prefix of
                // the unsynced ops survives, and maybe the next one torn.
                let unsynced = &d.ops[d.synced..d.flushed.max(d.synced)];
                let whole = if unsynced.is_empty() || rng.gen_range(0..2) == 0 {
                    0
                } else {
                    rng.gen_range(0..=unsynced.len())
                };
                ops.extend_from_slice(&unsynced[..whole]);
                report.unsynced_survivors = whole;
                if let Some(next) = unsynced.get(whole) {
                    if rng.gen_range(0..2) == 0 {
                        if let Some(torn) = tear(next, rng) {
                            ops.push(torn);
                            report.torn_op = true;
                        }
                    }
                }
                let mut mark = d.mark_durable.clone();
                if let Some((at, bytes)) = &d.mark_pending {
                    match rng.gen_range(0..3) {
                        0 => {}
                        1 => {
                            mark[*at..at + bytes.len()].copy_from_slice(bytes);
                            report.undurable_mark_kept = true;
                        }
                        _ => {
                            // A torn slot: the first part of the new record over the old.
                            let cut = rng.gen_range(1..bytes.len().max(2));
                            let cut = cut.min(bytes.len());
                            mark[*at..at + cut].copy_from_slice(&bytes[..cut]);
                            report.torn_mark = true;
                        }
                    }
                }
                let n = ops.len();
                d.image(ops, n, mark.clone(), mark)
            }
        };
        report.ops = image.ops.len();
        report.lost_ops = d.ops.len().saturating_sub(report.ops);
        image.crash_report = Some(report);
        Self::wrap(image)
    }
}

/// A torn copy of `op`: a prefix of its records, the last of them cut short. `None`
/// when nothing of it can survive torn (a remove, or a record with an empty value).
fn tear(op: &Op, rng: &mut impl Rng) -> Option<Op> {
    let Op::Insert { space, records } = op else {
        return None;
    };
    if records.is_empty() {
        return None;
    }
    let k = below(rng, records.len());
    let (key, value) = &records[k];
    if value.is_empty() {
        return None;
    }
    let cut = below(rng, value.len());
    let mut kept = records[..k].to_vec();
    kept.push((key.clone(), IVec::from(&value[..cut])));
    Some(Op::Insert {
        space: *space,
        records: kept,
    })
}

/// Which damage [`damage`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DamageKind {
    /// Flip one byte of one stored value.
    Value,
    /// Flip one byte of the mark file.
    Mark,
    /// Drop the op log's suffix.
    Suffix,
}

impl DamageKind {
    /// Every kind, in a fixed order.
    pub const ALL: [DamageKind; 3] = [DamageKind::Value, DamageKind::Mark, DamageKind::Suffix];
}

/// Damages `image` (meant for a crash image; the whole log counts as flushed and
/// synced afterwards) and says what was hit.
pub fn damage(image: &SimDisk, kind: DamageKind, rng: &mut impl Rng) -> Damage {
    image.with(|d| {
        let out = match kind {
            DamageKind::Value => flip_value(d, rng),
            DamageKind::Mark => {
                // Mostly inside one of the two slot records: the rest of the file is
                // padding no reader looks at.
                let offset = if rng.gen_range(0..4) == 0 {
                    below(rng, MARK_FILE_LEN)
                } else {
                    let slot =
                        below(rng, 2) * usize::try_from(crate::MARK_SLOT_STRIDE).unwrap_or(0);
                    slot + below(rng, crate::MARK_RECORD_LEN)
                };
                let flip: u8 = rng.gen_range(1..=255);
                d.mark[offset] ^= flip;
                d.mark_durable.clone_from(&d.mark);
                d.mark_pending = None;
                Damage::Mark { offset }
            }
            DamageKind::Suffix => {
                if d.ops.is_empty() {
                    Damage::Nothing
                } else {
                    // Half the time near the end, where sled's unsnapshotted log is.
                    let n = d.ops.len();
                    let from_op = if rng.gen_range(0..2) == 0 {
                        n - 1 - below(rng, n.min(8))
                    } else {
                        below(rng, n)
                    };
                    d.ops.truncate(from_op);
                    Damage::Suffix {
                        from_op,
                        dropped: n - from_op,
                    }
                }
            }
        };
        d.view = view_of(&d.ops);
        d.flushed = d.ops.len();
        d.synced = d.ops.len();
        out
    })
}

fn flip_value(d: &mut Disk, rng: &mut impl Rng) -> Damage {
    // A space first (batches half the time, meta and snapshots a quarter each, so the
    // few meta and snapshot records get their share), then any (op, record) of it with
    // a non-empty value, uniformly; a space without one falls back to any space.
    let space = match rng.gen_range(0..4) {
        0 => Some(Space::Meta),
        1 => Some(Space::Snapshots),
        _ => Some(Space::Batches),
    };
    match flip_value_in(d, space, rng) {
        Damage::Nothing => flip_value_in(d, None, rng),
        hit => hit,
    }
}

fn flip_value_in(d: &mut Disk, only: Option<Space>, rng: &mut impl Rng) -> Damage {
    let candidates: Vec<(usize, usize)> = d
        .ops
        .iter()
        .enumerate()
        .filter_map(|(i, op)| match op {
            Op::Insert { space, records } if only.is_none_or(|s| s == *space) => Some((i, records)),
            Op::Insert { .. } | Op::Remove { .. } => None,
        })
        .flat_map(|(i, records)| {
            records
                .iter()
                .enumerate()
                .filter(|(_, (_, v))| !v.is_empty())
                .map(move |(j, _)| (i, j))
        })
        .collect();
    if candidates.is_empty() {
        return Damage::Nothing;
    }
    let (i, j) = candidates[below(rng, candidates.len())];
    let Some(Op::Insert { space, records }) = d.ops.get_mut(i) else {
        return Damage::Nothing;
    };
    let space = *space;
    let (key, value) = &mut records[j];
    let mut bytes = value.to_vec();
    let at = below(rng, bytes.len());
    let flip: u8 = rng.gen_range(1..=255);
    bytes[at] ^= flip;
    *value = IVec::from(bytes);
    let key = key.clone();
    // Live unless a later op (or a later record of the same op) wrote or removed the key.
    let later_in_op = records[j + 1..].iter().any(|(k, _)| *k == key);
    let later = d.ops[i + 1..].iter().any(|op| match op {
        Op::Insert { space: s, records } => *s == space && records.iter().any(|(k, _)| *k == key),
        Op::Remove { space: s, key: k } => *s == space && *k == key,
    });
    Damage::Value {
        op: i,
        space,
        key,
        at,
        live: !later_in_op && !later,
    }
}

/// The `Store` on a [`SimDisk`].
#[derive(Debug, Clone)]
pub struct SimStore {
    disk: SimDisk,
}

impl SimStore {
    /// The disk under the store.
    pub fn disk(&self) -> &SimDisk {
        &self.disk
    }
}

fn iter_of(r: Result<Vec<(IVec, IVec)>, JournalError>) -> RecordIter {
    match r {
        Ok(v) => Box::new(v.into_iter().map(Ok)),
        Err(e) => Box::new(std::iter::once(Err(e))),
    }
}

impl Store for SimStore {
    fn location(&self) -> String {
        format!("sim:{}", self.disk.with(|d| d.name.clone()))
    }

    fn read_only(&self) -> bool {
        false
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<IVec>, JournalError> {
        self.disk.with(|d| {
            d.enter("reading", space.name())?;
            Ok(d.view[space_index(space)].get(key).cloned())
        })
    }

    fn scan(&self, space: Space, from: &[u8]) -> RecordIter {
        iter_of(
            self.disk
                .with(|d| d.range(space, Bound::Included(from), Bound::Unbounded)),
        )
    }

    fn scan_rev(&self, space: Space, to: &[u8]) -> RecordIter {
        iter_of(self.disk.with(|d| {
            d.range(space, Bound::Unbounded, Bound::Included(to))
                .map(|mut v| {
                    v.reverse();
                    v
                })
        }))
    }

    fn insert_all(&self, space: Space, records: &[(&[u8], &[u8])]) -> Result<(), JournalError> {
        self.disk.with(|d| d.insert_all(space, records))
    }

    fn remove(&self, space: Space, key: &[u8]) -> Result<(), JournalError> {
        self.disk.with(|d| d.remove(space, key))
    }

    fn flush(&self) -> Result<(), JournalError> {
        self.disk.with(Disk::flush)
    }

    fn read_mark(&self) -> Result<Option<Vec<u8>>, JournalError> {
        self.disk.with(|d| {
            d.enter("reading", "mark")?;
            Ok(Some(d.mark.clone()))
        })
    }

    fn syncer(&self) -> Result<Box<dyn StoreSync>, JournalError> {
        self.disk.with(|d| d.enter("opening", "mark"))?;
        Ok(Box::new(SimSync {
            disk: self.disk.clone(),
        }))
    }
}

/// The `StoreSync` on a [`SimDisk`].
#[derive(Debug)]
pub struct SimSync {
    disk: SimDisk,
}

impl StoreSync for SimSync {
    fn sync(&mut self) -> Result<(), JournalError> {
        // In two steps, the disk unlocked in between (an fsync does not stop writes to
        // the page cache): what the writer flushes meanwhile is not covered by it.
        let (target, pause) = self.disk.with(Disk::begin_sync)?;
        if pause > 0 {
            std::thread::sleep(std::time::Duration::from_micros(pause));
        }
        self.disk.with(|d| d.end_sync(target))
    }

    fn write_mark(&mut self, offset: u64, bytes: &[u8], durable: bool) -> Result<(), JournalError> {
        self.disk.with(|d| d.write_mark(offset, bytes, durable))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::{BatchBuilder, Journal, JournalOptions};

    const GENESIS: &[u8] = b"sim-test-genesis";

    fn open(disk: &SimDisk) -> Result<(Journal, crate::OpenReport), JournalError> {
        Journal::open_store(
            Box::new(disk.store()),
            Path::new("sim"),
            Some(GENESIS),
            JournalOptions::default(),
        )
    }

    /// Appends one group of `batches` batches of two commands each.
    fn append(j: &mut Journal, batches: u64) -> Result<u64, JournalError> {
        let mut group = Vec::new();
        let mut seq = j.last_seq();
        for _ in 0..batches {
            let mut b = BatchBuilder::new();
            for _ in 0..2 {
                seq += 1;
                b.push(seq, seq * 10, &seq.to_le_bytes()).expect("push");
            }
            group.push(b);
        }
        Ok(j.append_group(&mut group)?.last_seq)
    }

    fn put(d: &SimDisk, key: u8, value: &[u8]) {
        d.store()
            .insert_all(Space::Batches, &[(&[key][..], value)])
            .expect("insert");
    }

    fn keys(d: &SimDisk) -> Vec<u8> {
        d.records(Space::Batches)
            .iter()
            .map(|(k, _)| k[0])
            .collect()
    }

    #[test]
    fn watermarks_decide_what_each_crash_keeps() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let d = SimDisk::new("w", GENESIS);
        let s = d.store();
        let mut sync = s.syncer().expect("syncer");
        put(&d, 1, b"one");
        s.flush().expect("flush");
        sync.sync().expect("sync");
        put(&d, 2, b"two");
        s.flush().expect("flush");
        put(&d, 3, b"three");
        // The process reads everything.
        assert_eq!(keys(&d), [1, 2, 3]);
        assert_eq!((d.ops_len(), d.flushed(), d.synced()), (3, 2, 1));
        // A process crash keeps what was flushed; the rest of it is still not durable.
        let p = d.crash(CrashKind::ProcessCrash, &mut rng);
        assert_eq!(keys(&p), [1, 2]);
        assert_eq!((p.flushed(), p.synced()), (2, 1));
        // Power loss keeps the synced op, maybe the flushed one (whole or torn), never
        // the unflushed one.
        let (mut torn, mut whole) = (0, 0);
        for seed in 0..50 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let l = d.crash(CrashKind::PowerLoss, &mut rng);
            let r = l.crash_report().expect("report");
            let recs = l.records(Space::Batches);
            assert_eq!(recs[0], (vec![1], IVec::from(&b"one"[..])));
            assert!(recs.len() <= 2);
            if r.torn_op {
                torn += 1;
                assert!(recs[1].1.len() < 3, "a torn value is cut short");
            } else if recs.len() == 2 {
                whole += 1;
                assert_eq!(recs[1].1, IVec::from(&b"two"[..]));
            }
            assert_eq!(
                l.synced(),
                l.ops_len(),
                "what survived power loss is durable"
            );
        }
        assert!(torn > 0 && whole > 0);
    }

    #[test]
    fn faults_fire_on_the_nth_call_of_their_kind_and_a_crash_freezes_the_disk() {
        let d = SimDisk::new("f", GENESIS);
        let s = d.store();
        d.arm(FaultKind::InsertAll, 2, 0);
        put(&d, 1, b"a");
        let e = s
            .insert_all(Space::Batches, &[(&[2u8][..], &b"b"[..])])
            .expect_err("second insert fails");
        assert!(
            matches!(&e, JournalError::Io { op: "storing records in", path, .. } if path.as_path() == Path::new("sim/f/batches")),
            "{e:?}"
        );
        assert_eq!(keys(&d), [1], "effect 0: nothing applied");
        put(&d, 3, b"c");
        assert_eq!(d.fired().len(), 1);

        d.arm(FaultKind::Flush, 1, 1);
        assert!(s.flush().is_err());
        assert_eq!(d.flushed(), 1, "effect 1: one op of the two flushed");

        d.arm_crash(2);
        assert!(s.get(Space::Batches, &[1]).is_ok());
        let before = d.ops();
        assert!(s.flush().is_err(), "the process died at this call");
        assert!(s.get(Space::Batches, &[1]).is_err(), "and stays dead");
        assert!(s
            .insert_all(Space::Batches, &[(&[9u8][..], &b"z"[..])])
            .is_err());
        assert_eq!(d.ops(), before);
        assert_eq!(d.flushed(), 1);
        assert!(d.is_dead());
        assert_eq!(d.fired().last().map(|f| f.trigger), Some(Trigger::Crash));
    }

    #[test]
    fn a_sync_covers_what_was_flushed_before_it_began_only() {
        let d = SimDisk::new("s", GENESIS);
        put(&d, 1, b"one");
        d.store().flush().expect("flush");
        d.set_sync_latency(u64::MAX / 2);
        // The first sync draws a long pause (SplitMix64 of the call number): flush a
        // second op while it runs.
        let mut sync = d.store().syncer().expect("syncer");
        let (target, pause) = d.with(Disk::begin_sync).expect("begin");
        assert_eq!(target, 1);
        assert!(pause > 0);
        put(&d, 2, b"two");
        d.store().flush().expect("flush");
        d.with(|x| x.end_sync(target)).expect("end");
        assert_eq!((d.flushed(), d.synced()), (2, 1));
        d.set_sync_latency(0);
        sync.sync().expect("sync");
        assert_eq!(d.synced(), 2);
    }

    #[test]
    fn an_undurable_mark_write_can_survive_power_loss_torn() {
        let d = SimDisk::new("m", GENESIS);
        let mut sync = d.store().syncer().expect("syncer");
        let before = d.durable_mark_bytes();
        sync.write_mark(4096, &[0xAB; 136], false).expect("write");
        assert_eq!(&d.mark_bytes()[4096..4232], &[0xAB; 136][..]);
        let (mut torn, mut whole, mut none) = (0, 0, 0);
        for seed in 0..60 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let l = d.crash(CrashKind::PowerLoss, &mut rng);
            let m = l.mark_bytes();
            let r = l.crash_report().expect("report");
            assert_eq!(&m[..4096], &before[..4096], "the other slot is untouched");
            if r.torn_mark {
                torn += 1;
                assert!(m[4096] == 0xAB && m[4231] == 0);
            } else if r.undurable_mark_kept {
                whole += 1;
            } else {
                none += 1;
                assert_eq!(m, before);
            }
        }
        assert!(torn > 0 && whole > 0 && none > 0);
        // A process crash keeps the write; making it durable keeps it through power loss.
        let p = d.crash(CrashKind::ProcessCrash, &mut ChaCha8Rng::seed_from_u64(0));
        assert_eq!(p.mark_bytes(), d.mark_bytes());
        sync.write_mark(4096, &[0xCD; 136], true).expect("write");
        assert_eq!(d.durable_mark_bytes(), d.mark_bytes());
    }

    #[test]
    fn damage_reports_what_it_hit() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let d = SimDisk::new("d", GENESIS);
        put(&d, 1, b"old");
        put(&d, 1, b"new");
        put(&d, 2, b"two");
        let mut seen_dead = false;
        let mut seen_live = false;
        for _ in 0..40 {
            let img = d.copy();
            match damage(&img, DamageKind::Value, &mut rng) {
                Damage::Value { op, live, .. } => {
                    assert_eq!(live, op != 0, "op 0 was replaced by op 1");
                    seen_dead |= !live;
                    seen_live |= live;
                    let changed = img.records(Space::Batches) != d.records(Space::Batches);
                    assert_eq!(changed, live);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(seen_dead && seen_live);
        let img = d.copy();
        match damage(&img, DamageKind::Suffix, &mut rng) {
            Damage::Suffix { from_op, dropped } => {
                assert_eq!(from_op + dropped, 3);
                assert_eq!(img.ops_len(), from_op);
            }
            other => panic!("{other:?}"),
        }
        let img = d.copy();
        match damage(&img, DamageKind::Mark, &mut rng) {
            Damage::Mark { offset } => {
                assert_ne!(img.mark_bytes()[offset], d.mark_bytes()[offset]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_creation_torn_by_power_loss_is_completed_but_damaged_meta_elsewhere_is_not() {
        // Power loss while the meta records were being written: a prefix of them, the
        // last one cut short. Nothing was acknowledged and nothing else is stored, so
        // the next open completes the creation.
        for cut in [0, 4, 8] {
            let d = SimDisk::new("t", GENESIS);
            let format = crate::meta::encode_format_record();
            let genesis = crate::meta::encode_genesis_record(crate::meta::PAYLOAD_VERSION, GENESIS);
            let records: Vec<(&[u8], &[u8])> = if cut < format.len() {
                vec![(crate::META_FORMAT_KEY, &format[..cut])]
            } else {
                vec![
                    (crate::META_FORMAT_KEY, &format[..]),
                    (crate::META_GENESIS_KEY, &genesis[..20]),
                ]
            };
            d.store().insert_all(Space::Meta, &records).expect("insert");
            let (mut j, report) = open(&d).expect("the creation is completed");
            assert!(report.created);
            assert_eq!(append(&mut j, 1).expect("append"), 2);
        }
        // The same damage in a journal that has acknowledged something is an error.
        let d = SimDisk::new("t", GENESIS);
        let (mut j, _) = open(&d).expect("create");
        append(&mut j, 1).expect("append");
        drop(j);
        d.store()
            .insert_all(Space::Meta, &[(crate::META_FORMAT_KEY, &b"PCJ"[..])])
            .expect("insert");
        assert!(matches!(open(&d), Err(JournalError::MetaCorrupt(_))));
    }

    #[test]
    fn a_journal_on_the_sim_survives_what_was_acknowledged() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let d = SimDisk::new("j", GENESIS);
        let (mut j, report) = open(&d).expect("create");
        assert!(report.created);
        assert_eq!(append(&mut j, 3).expect("append"), 6);
        // Stored and flushed, never synced: a power loss may lose or tear it.
        let mut group = vec![BatchBuilder::new(), BatchBuilder::new()];
        for (i, b) in group.iter_mut().enumerate() {
            for k in 0..2u64 {
                let seq = 7 + 2 * i as u64 + k;
                b.push(seq, seq * 10, &seq.to_le_bytes()).expect("push");
            }
        }
        j.append_group_flushed(&mut group).expect("flushed");
        drop(j);
        for _ in 0..30 {
            let img = d.crash(CrashKind::PowerLoss, &mut rng);
            let (j, report) = open(&img).expect("reopen");
            assert!(j.last_seq() >= 6, "acknowledged commands survive");
            assert_eq!(report.durable_mark, 6);
            if img.crash_report().is_some_and(|r| r.torn_op) {
                assert!(report.dropped_tail.is_some());
            }
        }
        // The mark refuses a log that lost acknowledged batches.
        let img = d.crash(CrashKind::ProcessCrash, &mut rng);
        let ops = img.ops_len();
        let cut = img.copy();
        cut.with(|c| {
            c.ops.truncate(ops - 2);
            c.view = view_of(&c.ops);
        });
        assert!(matches!(open(&cut), Err(JournalError::Truncated { .. })));
        // A failed fsync poisons the journal; nothing after it is acknowledged.
        let (mut j, _) = open(&img).expect("reopen");
        img.arm(FaultKind::Sync, 1, 0);
        assert!(matches!(
            append(&mut j, 1),
            Err(JournalError::Io { op: "fsyncing", .. })
        ));
        assert!(matches!(append(&mut j, 1), Err(JournalError::Poisoned)));
    }
}
