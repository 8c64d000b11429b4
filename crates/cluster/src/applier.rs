//! One engine node's state machine side: stream messages in, envelopes applied to the
//! engine, the node's own journal and cursor written. No network here: the node loop
//! (`node.rs`) feeds it messages in stream order, tests feed it directly.
//!
//! Owns: opening the node directory (journal recovery, cursor, the re-read check after a
//! restart), the stream-message → envelope rule (through `admission`), group commits of
//! whole messages to the journal, snapshots, checkpoint hashes and the progress report.
//! Must never: apply a message out of stream order or twice, let anything but the
//! message's bytes, stream sequence and stored timestamp reach the engine, report a
//! position before the journal made it durable, or carry on after the journal and the
//! stream disagree.
//!
//! Directory: `DIR/journal/` (a perpcore journal, genesis = the configuration: `perpcore
//! replay`, `inspect`, `audit` work on it as on any journal) and `DIR/cursor`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use perpcore_engine::Engine;
use perpcore_journal::{BatchBuilder, BatchIter, ChainVerifier, Journal, JournalOptions};
use perpcore_node::Core;
use perpcore_sequencer::StateMachine;
use perpcore_types::{Command, Config, Event};

use crate::admission::{next_ts, Admission, Verdict, EVICT_EVERY_MESSAGES};
use crate::cursor::{Cursor, CursorError};
use crate::wire::{decode_batch, hex32, Checkpoint, ProducerId, Progress};

/// The journal's folder inside a node directory.
pub const JOURNAL_DIR: &str = "journal";

/// One stream message as the node consumes it.
#[derive(Debug, Clone)]
pub struct LogMsg {
    /// JetStream's stream sequence.
    pub stream_seq: u64,
    /// The timestamp the stream leader stored with the message, ns since the epoch.
    pub stored_ts_ns: u64,
    /// The message body (a batch, see `wire`).
    pub payload: bytes::Bytes,
}

/// One command as the applier applied it, with where it came from: what a gateway on
/// the node needs to answer its own clients and keep its read replica
/// (`ApplierOptions::capture`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub seq: u64,
    pub ts_ns: u64,
    /// The producer and batch of the stream message it came in, and its place there.
    pub producer: ProducerId,
    pub batch_seq: u64,
    pub index: u32,
    pub command: Command,
    pub events: Vec<Event>,
}

/// Tuning of an applier.
#[derive(Debug, Clone, Copy)]
pub struct ApplierOptions {
    /// A state hash is computed after every stream message whose sequence is a multiple
    /// of this (0: never) and reported as a checkpoint.
    pub hash_every: u64,
    /// A snapshot is written when the engine sequence passes a multiple of this (0:
    /// never).
    pub snapshot_every: u64,
    /// Journal batch size (see `SequencerConfig::max_batch_bytes`).
    pub max_batch_bytes: usize,
    pub journal: JournalOptions,
    /// Keep every applied command with its events for [`Applier::take_applied`] (off for
    /// plain nodes: it costs a copy of each command and its events).
    pub capture: bool,
}

impl Default for ApplierOptions {
    fn default() -> Self {
        Self {
            hash_every: 1024,
            snapshot_every: 1_000_000,
            max_batch_bytes: 6 * 1024,
            journal: JournalOptions::default(),
            capture: false,
        }
    }
}

/// Why the applier stopped. Every one of these stops the node: it cannot go on safely.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Journal(#[from] perpcore_journal::JournalError),
    #[error(transparent)]
    Recover(#[from] perpcore_sequencer::SequencerError),
    #[error(transparent)]
    Cursor(#[from] CursorError),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("the journal in {0} was made with a different configuration")]
    ConfigMismatch(PathBuf),
    #[error("the cursor in {dir} is for stream {found:?}, not {expected:?}")]
    OtherStream {
        dir: PathBuf,
        found: String,
        expected: String,
    },
    #[error("the cursor says engine seq {cursor}, but the journal ends at {journal}: the journal lost acknowledged commands")]
    CursorAhead { cursor: u64, journal: u64 },
    #[error("stream message {got} arrived, {expected} was next")]
    Gap { expected: u64, got: u64 },
    #[error("the journal and the stream disagree at stream message {stream_seq}, engine seq {engine_seq}: {what}")]
    Diverged {
        stream_seq: u64,
        engine_seq: u64,
        what: String,
    },
    #[error("timestamp overflow at stream message {0}")]
    TimestampOverflow(u64),
}

/// Counters since the applier was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplierStats {
    /// Stream messages processed (applied, verified, or skipped).
    pub messages: u64,
    /// Commands applied to the engine (not counting re-verified ones).
    pub commands: u64,
    /// Commands re-read from the stream and found equal to the journal's.
    pub verified: u64,
    /// Messages skipped as duplicates.
    pub duplicates: u64,
    /// Messages skipped as undecodable.
    pub invalid: u64,
    /// Group commits.
    pub groups: u64,
    /// Snapshots written.
    pub snapshots: u64,
}

/// What opening found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenInfo {
    /// The journal's last sequence number.
    pub journal_seq: u64,
    /// The cursor's stream position (0: none, re-read from the start).
    pub cursor_stream_seq: u64,
    /// Its engine sequence; commands after it are re-read and compared.
    pub cursor_engine_seq: u64,
    /// The cursor file was damaged and ignored.
    pub cursor_damaged: bool,
    /// The snapshot recovery started from.
    pub snapshot_seq: Option<u64>,
}

/// The journal's commands after the cursor, read back one by one to compare with what
/// the stream delivers again.
struct VerifyTail {
    iter: BatchIter,
    entries: VecDeque<(u64, u64, Vec<u8>)>,
    /// The journal's last sequence number: verification ends there.
    end: u64,
}

impl VerifyTail {
    fn next(&mut self) -> Result<Option<(u64, u64, Vec<u8>)>, ApplyError> {
        if self.entries.is_empty() {
            match self.iter.next() {
                None => return Ok(None),
                Some(batch) => {
                    let batch = batch?;
                    for e in batch.entries() {
                        self.entries.push_back((e.seq, e.ts_ns, e.bytes.to_vec()));
                    }
                }
            }
        }
        Ok(self.entries.pop_front())
    }
}

/// The node's engine, journal, cursor state and position in the stream.
pub struct Applier {
    dir: PathBuf,
    stream: String,
    opts: ApplierOptions,
    core: Core,
    journal: Journal,
    /// Last stream message processed.
    stream_seq: u64,
    /// Engine sequence after it (equals the journal's tip once committed and not
    /// verifying).
    engine_seq: u64,
    last_ts_ns: u64,
    admission: Admission,
    verify: Option<VerifyTail>,
    /// The state's engine sequence while verifying (the journal's end); `engine_seq`
    /// otherwise.
    state_seq: u64,
    builder: BatchBuilder,
    sealed: Vec<BatchBuilder>,
    spare: Vec<BatchBuilder>,
    decoded: Vec<Command>,
    events: Vec<Event>,
    checkpoints: Vec<Checkpoint>,
    /// Applied commands not yet taken (only with `capture`).
    applied: Vec<Applied>,
    last_checkpoint: u64,
    last_snapshot_seq: u64,
    stats: ApplierStats,
}

fn has_journal(dir: &Path) -> bool {
    dir.join(perpcore_journal::MARK_FILE).exists() || dir.join(perpcore_journal::SLED_DIR).exists()
}

impl Applier {
    /// Opens (or creates) the node directory `dir` for `stream`, with the engine
    /// configuration `config` (an existing journal must have been made with it).
    pub fn open(
        dir: &Path,
        config: &Config,
        stream: &str,
        opts: ApplierOptions,
    ) -> Result<(Self, OpenInfo), ApplyError> {
        std::fs::create_dir_all(dir).map_err(|e| ApplyError::Io(dir.to_path_buf(), e))?;
        let jdir = dir.join(JOURNAL_DIR);
        let genesis = perpcore_node::genesis(config);
        let (core, journal, snapshot_seq) = if has_journal(&jdir) {
            let rec = perpcore_sequencer::recover_with::<Core>(&jdir, opts.journal)?;
            if rec.journal.genesis() != genesis.as_slice() {
                return Err(ApplyError::ConfigMismatch(jdir));
            }
            let snap = rec.report.snapshot_used.map(|m| m.seq);
            (rec.state, rec.journal, snap)
        } else {
            let (journal, _) = Journal::open_or_create(&jdir, &genesis, opts.journal)?;
            (Core(Engine::new(config.clone())), journal, None)
        };
        let mut journal = journal;
        let tip = journal.tip();
        if journal.durable_mark().last_seq < tip.last_seq {
            // Batches stored before a crash but never made durable (the mark does not
            // reach them) are kept by the open; the re-read will report them as this
            // node's progress, so they are made durable first.
            journal.sync_handle()?.sync(tip.last_seq)?;
        }
        let (cursor, cursor_damaged) = match Cursor::load(dir) {
            Ok(c) => (c, false),
            Err(e @ CursorError::Damaged { .. }) => {
                tracing::warn!(error = %e, "ignoring the damaged cursor: re-reading the stream from its first message");
                (None, true)
            }
            Err(e) => return Err(e.into()),
        };
        let cursor = match cursor {
            Some(c) if c.stream != stream => {
                return Err(ApplyError::OtherStream {
                    dir: dir.to_path_buf(),
                    found: c.stream,
                    expected: stream.to_string(),
                })
            }
            Some(c) => c,
            None => Cursor {
                stream: stream.to_string(),
                stream_seq: 0,
                engine_seq: 0,
                last_ts_ns: 0,
                link: journal.genesis_hash(),
                admission: Admission::new(),
            },
        };
        if cursor.engine_seq > tip.last_seq {
            return Err(ApplyError::CursorAhead {
                cursor: cursor.engine_seq,
                journal: tip.last_seq,
            });
        }
        let verify = (cursor.engine_seq < tip.last_seq).then(|| VerifyTail {
            iter: journal.read_after(ChainVerifier::new(
                cursor.engine_seq,
                cursor.last_ts_ns,
                cursor.link,
            )),
            entries: VecDeque::new(),
            end: tip.last_seq,
        });
        let info = OpenInfo {
            journal_seq: tip.last_seq,
            cursor_stream_seq: cursor.stream_seq,
            cursor_engine_seq: cursor.engine_seq,
            cursor_damaged,
            snapshot_seq,
        };
        let applier = Applier {
            dir: dir.to_path_buf(),
            stream: stream.to_string(),
            opts,
            core,
            journal,
            stream_seq: cursor.stream_seq,
            engine_seq: cursor.engine_seq,
            last_ts_ns: cursor.last_ts_ns,
            admission: cursor.admission,
            verify,
            state_seq: tip.last_seq,
            builder: BatchBuilder::new(),
            sealed: Vec::new(),
            spare: Vec::new(),
            decoded: Vec::new(),
            events: Vec::new(),
            checkpoints: Vec::new(),
            applied: Vec::new(),
            last_checkpoint: cursor.stream_seq,
            last_snapshot_seq: snapshot_seq.unwrap_or(0),
            stats: ApplierStats::default(),
        };
        Ok((applier, info))
    }

    /// The next stream message this node needs.
    pub fn next_stream_seq(&self) -> u64 {
        self.stream_seq + 1
    }

    /// Last stream message processed.
    pub fn stream_seq(&self) -> u64 {
        self.stream_seq
    }

    /// Engine sequence after it.
    pub fn engine_seq(&self) -> u64 {
        self.engine_seq
    }

    /// True while commands already in the journal are being re-read from the stream.
    pub fn verifying(&self) -> bool {
        self.verify.is_some()
    }

    /// The engine (its state is at the journal's end, also while verifying).
    pub fn engine(&self) -> &Engine {
        &self.core.0
    }

    /// The engine's state hash.
    pub fn state_hash(&self) -> [u8; 32] {
        self.core.state_hash()
    }

    /// Counters.
    pub fn stats(&self) -> ApplierStats {
        self.stats
    }

    /// The journal (for its tip and mark).
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Processes `msgs` (in stream order, starting at `next_stream_seq`; earlier ones are
    /// ignored) and makes the commands they applied durable in one group commit. When it
    /// returns Ok, everything up to `stream_seq()` is durable in the journal.
    pub fn apply(&mut self, msgs: &[LogMsg]) -> Result<(), ApplyError> {
        self.apply_with(msgs, true)
    }

    /// `apply`, but the group is only stored and flushed (`Journal::append_group_flushed`):
    /// it is durable once a `SyncHandle::sync` (from `sync_handle`) that began after this
    /// returned has returned. Nothing up to `stream_seq()` may be reported before that.
    pub fn apply_flushed(&mut self, msgs: &[LogMsg]) -> Result<(), ApplyError> {
        self.apply_with(msgs, false)
    }

    /// The fsync half for `apply_flushed`, for another thread.
    pub fn sync_handle(&mut self) -> Result<perpcore_journal::SyncHandle, ApplyError> {
        Ok(self.journal.sync_handle()?)
    }

    /// The node directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn apply_with(&mut self, msgs: &[LogMsg], durable: bool) -> Result<(), ApplyError> {
        for m in msgs {
            if m.stream_seq <= self.stream_seq {
                continue;
            }
            if m.stream_seq != self.stream_seq + 1 {
                return Err(ApplyError::Gap {
                    expected: self.stream_seq + 1,
                    got: m.stream_seq,
                });
            }
            self.process(m)?;
        }
        self.commit(durable)?;
        self.snapshot_if_due()?;
        Ok(())
    }

    fn process(&mut self, m: &LogMsg) -> Result<(), ApplyError> {
        self.stats.messages += 1;
        match decode_batch(&m.payload) {
            Err(e) => {
                tracing::warn!(stream_seq = m.stream_seq, error = %e, "skipping a stream message that is not a batch");
                self.stats.invalid += 1;
            }
            Ok((header, commands)) => {
                // Decode every command before deciding anything: a message is applied
                // whole or not at all.
                self.decoded.clear();
                let mut bad = None;
                for (i, bytes) in commands.iter().enumerate() {
                    match Core::decode_command(bytes) {
                        Ok(c) => self.decoded.push(c),
                        Err(e) => {
                            bad = Some((i, e));
                            break;
                        }
                    }
                }
                if let Some((i, e)) = bad {
                    tracing::warn!(stream_seq = m.stream_seq, command = i, error = %e, "skipping a batch with an undecodable command");
                    self.stats.invalid += 1;
                } else {
                    match self
                        .admission
                        .admit(header.producer, header.batch_seq, m.stored_ts_ns)
                    {
                        Verdict::Duplicate => self.stats.duplicates += 1,
                        Verdict::Apply => self.apply_batch(m, &header, &commands)?,
                    }
                }
            }
        }
        self.stream_seq = m.stream_seq;
        if self.stream_seq.is_multiple_of(EVICT_EVERY_MESSAGES) {
            self.admission.evict(m.stored_ts_ns);
        }
        if self.verify.is_none()
            && self.opts.hash_every > 0
            && self.stream_seq.is_multiple_of(self.opts.hash_every)
        {
            self.checkpoint();
        }
        Ok(())
    }

    fn apply_batch(
        &mut self,
        m: &LogMsg,
        header: &crate::wire::BatchHeader,
        commands: &[&[u8]],
    ) -> Result<(), ApplyError> {
        let decoded = std::mem::take(&mut self.decoded);
        for (index, (bytes, cmd)) in commands.iter().zip(&decoded).enumerate() {
            let seq = self.engine_seq + 1;
            let ts = next_ts(self.last_ts_ns, m.stored_ts_ns)
                .ok_or(ApplyError::TimestampOverflow(m.stream_seq))?;
            if let Some(tail) = self.verify.as_mut() {
                let diverged = |what: String| ApplyError::Diverged {
                    stream_seq: m.stream_seq,
                    engine_seq: seq,
                    what,
                };
                match tail.next()? {
                    None => {
                        return Err(diverged(
                            "the journal ends inside this stream message".into(),
                        ))
                    }
                    Some((jseq, jts, jbytes)) => {
                        if jseq != seq || jts != ts || jbytes.as_slice() != *bytes {
                            return Err(diverged(format!(
                                "journal has seq {jseq} ts {jts} ({} bytes), the stream gives seq {seq} ts {ts} ({} bytes)",
                                jbytes.len(),
                                bytes.len()
                            )));
                        }
                    }
                }
                self.stats.verified += 1;
            } else {
                let entry = perpcore_journal::ENTRY_HEADER_LEN + bytes.len();
                if !self.builder.is_empty()
                    && self.builder.payload_len() + entry > self.opts.max_batch_bytes
                {
                    let next = self.spare.pop().unwrap_or_default();
                    let full = std::mem::replace(&mut self.builder, next);
                    self.sealed.push(full);
                }
                self.builder.push(seq, ts, bytes)?;
                self.events.clear();
                self.core.apply(seq, ts, cmd, &mut self.events);
                if self.opts.capture {
                    self.applied.push(Applied {
                        seq,
                        ts_ns: ts,
                        producer: header.producer,
                        batch_seq: header.batch_seq,
                        index: index as u32,
                        command: cmd.clone(),
                        events: self.events.clone(),
                    });
                }
                self.stats.commands += 1;
                self.state_seq = seq;
            }
            self.engine_seq = seq;
            self.last_ts_ns = ts;
        }
        self.decoded = decoded;
        if let Some(tail) = &self.verify {
            if self.engine_seq == tail.end {
                tracing::info!(
                    stream_seq = m.stream_seq,
                    engine_seq = self.engine_seq,
                    "caught up with the journal: applying from the next stream message on"
                );
                self.verify = None;
            }
        }
        Ok(())
    }

    /// Stores the pending commands as one group commit, durable or only flushed.
    fn commit(&mut self, durable: bool) -> Result<(), ApplyError> {
        if !self.builder.is_empty() {
            let next = self.spare.pop().unwrap_or_default();
            let full = std::mem::replace(&mut self.builder, next);
            self.sealed.push(full);
        }
        if self.sealed.is_empty() {
            return Ok(());
        }
        if durable {
            self.journal.append_group(&mut self.sealed)?;
        } else {
            self.journal.append_group_flushed(&mut self.sealed)?;
        }
        self.stats.groups += 1;
        debug_assert_eq!(self.journal.last_seq(), self.engine_seq);
        for mut b in self.sealed.drain(..) {
            b.clear();
            self.spare.push(b);
        }
        Ok(())
    }

    fn snapshot_if_due(&mut self) -> Result<(), ApplyError> {
        let every = self.opts.snapshot_every;
        if every == 0 || self.verify.is_some() {
            return Ok(());
        }
        if self.engine_seq / every > self.last_snapshot_seq / every {
            let hash = self.core.state_hash();
            self.journal
                .write_snapshot(self.engine_seq, hash, &self.core.snapshot())?;
            self.last_snapshot_seq = self.engine_seq;
            self.stats.snapshots += 1;
        }
        Ok(())
    }

    fn checkpoint(&mut self) {
        self.checkpoints.push(Checkpoint {
            stream_seq: self.stream_seq,
            engine_seq: self.engine_seq,
            state_hash: hex32(&self.core.state_hash()),
        });
        self.last_checkpoint = self.stream_seq;
    }

    /// Adds a checkpoint at the current position unless there is one already (the node
    /// calls this when it has caught up with the stream). Nothing while verifying.
    pub fn checkpoint_at_tip(&mut self) {
        if self.verify.is_none() && self.last_checkpoint != self.stream_seq {
            self.checkpoint();
        }
    }

    /// The cursor at the current position, if it can be written now: not while
    /// verifying (the position may then lie inside a journal batch), and only with
    /// everything committed.
    pub fn cursor(&self) -> Option<Cursor> {
        if self.verify.is_some() || !self.builder.is_empty() || !self.sealed.is_empty() {
            return None;
        }
        let tip = self.journal.tip();
        debug_assert_eq!(tip.last_seq, self.engine_seq);
        Some(Cursor {
            stream: self.stream.clone(),
            stream_seq: self.stream_seq,
            engine_seq: tip.last_seq,
            last_ts_ns: tip.last_ts_ns,
            link: tip.link,
            admission: self.admission.clone(),
        })
    }

    /// Writes the cursor (see `cursor`); false when it could not be written now.
    pub fn store_cursor(&self) -> Result<bool, ApplyError> {
        match self.cursor() {
            Some(c) => {
                c.store(&self.dir)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The progress report, taking the checkpoints gathered since the last one.
    pub fn progress(&mut self, node: &str) -> Progress {
        Progress {
            node: node.to_string(),
            stream_seq: self.stream_seq,
            engine_seq: self.engine_seq,
            ts_ns: self.last_ts_ns,
            duplicates: self.stats.duplicates,
            invalid: self.stats.invalid,
            verifying: self.verify.is_some(),
            checkpoints: std::mem::take(&mut self.checkpoints),
        }
    }

    /// The commands applied since the last call, with their events (empty unless
    /// `ApplierOptions::capture`). Stored, but durable only as `apply`/`apply_flushed`
    /// say.
    pub fn take_applied(&mut self) -> Vec<Applied> {
        std::mem::take(&mut self.applied)
    }

    /// The engine's full state as of the journal's end (`state_seq`), and that command's
    /// timestamp: what a read replica starts from.
    pub fn state_snapshot(&self) -> (Vec<u8>, u64, u64) {
        let tip = self.journal.tip();
        (self.core.snapshot(), tip.last_seq, tip.last_ts_ns)
    }

    /// The engine sequence of the state (the journal's end while verifying).
    pub fn state_seq(&self) -> u64 {
        self.state_seq
    }
}
