//! The batch record: one group-commit batch of sequenced commands, as stored in the
//! `batches` tree, plus the verifier that checks batches link into one hash chain.
//!
//! Owns: the byte layout of batch headers and payloads (see `docs/JOURNAL_FORMAT.md`),
//! `BatchBuilder` (encoding), `decode_batch` (decoding + self-consistency checks) and
//! `ChainVerifier` (sequence continuity and hash-chain checks across batches).
//! Must never: panic or allocate in proportion to a length field on arbitrary input,
//! accept a record whose bytes differ from what was written, or interpret command
//! bytes (they are opaque to the journal).

use crate::codec::{self, hash_parts, key_seq, Reader};
use crate::error::{DecodeError, JournalError};

/// Magic bytes at the start of every batch record.
pub const BATCH_MAGIC: [u8; 4] = *b"PCJB";
/// Journal format version written by this build (history in docs/JOURNAL_FORMAT.md).
pub const FORMAT_VERSION: u16 = 3;
/// Length of the fixed batch header, in bytes.
pub const BATCH_HEADER_LEN: usize = 136;
/// Length of the fixed per-command header inside a payload (seq, ts_ns, len).
pub const ENTRY_HEADER_LEN: usize = 20;
/// The header checksum covers the header bytes before it.
const HASHED_HEADER_LEN: usize = 104;

// Byte offset of the header checksum (it follows the bytes it covers).
const OFF_HEADER_HASH: usize = HASHED_HEADER_LEN;

/// Decoded batch header. `header_hash` is the batch's link in the hash chain: the
/// next batch stores it as its `prev_hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Sequence number of the first command in the batch (>= 1).
    pub first_seq: u64,
    /// Number of commands (>= 1).
    pub count: u32,
    /// Length of the payload in bytes.
    pub payload_len: u32,
    /// Timestamp of the first command.
    pub first_ts_ns: u64,
    /// Timestamp of the last command.
    pub last_ts_ns: u64,
    /// blake3 of the payload (full 32 bytes).
    pub payload_hash: [u8; 32],
    /// `header_hash` of the previous batch, or the genesis hash for the first batch.
    pub prev_hash: [u8; 32],
    /// blake3 of header bytes 0..104 (everything above, plus magic and version).
    pub header_hash: [u8; 32],
}

impl BatchHeader {
    /// Sequence number of the last command in the batch.
    pub fn last_seq(&self) -> u64 {
        // Decoding and sealing both reject headers where this overflows, so the
        // saturating forms below are exact for every header this crate hands out.
        self.first_seq
            .saturating_add(u64::from(self.count.saturating_sub(1)))
    }

    /// Header bytes 0..104, the part covered by the header checksum.
    fn encode_hashed_part(&self) -> Vec<u8> {
        let mut w = Vec::with_capacity(HASHED_HEADER_LEN);
        w.extend_from_slice(&BATCH_MAGIC);
        w.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        w.extend_from_slice(&0u16.to_le_bytes());
        w.extend_from_slice(&self.first_seq.to_le_bytes());
        w.extend_from_slice(&self.count.to_le_bytes());
        w.extend_from_slice(&self.payload_len.to_le_bytes());
        w.extend_from_slice(&self.first_ts_ns.to_le_bytes());
        w.extend_from_slice(&self.last_ts_ns.to_le_bytes());
        w.extend_from_slice(&self.payload_hash);
        w.extend_from_slice(&self.prev_hash);
        w
    }
}

/// One command as stored in a batch payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRef<'a> {
    /// Sequence number.
    pub seq: u64,
    /// Sequencer timestamp, nanoseconds.
    pub ts_ns: u64,
    /// Encoded command, opaque to the journal.
    pub bytes: &'a [u8],
}

/// A decoded, self-consistent batch borrowing the record bytes.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    /// The verified header.
    pub header: BatchHeader,
    payload: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// Iterates the commands of the batch in sequence order.
    pub fn entries(&self) -> EntryIter<'a> {
        EntryIter::new(self.payload, self.header.count)
    }
}

/// Iterator over the commands of a verified batch.
pub struct EntryIter<'a> {
    reader: Reader<'a>,
    remaining: u32,
}

impl<'a> EntryIter<'a> {
    /// Iterates `count` entries of an already verified payload.
    pub(crate) fn new(payload: &'a [u8], count: u32) -> Self {
        Self {
            reader: Reader::new(payload),
            remaining: count,
        }
    }
}

impl<'a> Iterator for EntryIter<'a> {
    type Item = EntryRef<'a>;

    fn next(&mut self) -> Option<EntryRef<'a>> {
        // The payload was fully validated by `decode_batch`, so none of these reads can
        // fail; if one ever did we stop rather than panic, and replay cross-checks the
        // number of entries it saw against the header count.
        self.remaining = self.remaining.checked_sub(1)?;
        let seq = self.reader.u64("entry seq").ok()?;
        let ts_ns = self.reader.u64("entry ts").ok()?;
        let len = self.reader.u32("entry len").ok()?;
        let len = codec::len_u32(len, "entry len").ok()?;
        let bytes = self.reader.take(len, "entry bytes").ok()?;
        Some(EntryRef { seq, ts_ns, bytes })
    }
}

/// Decodes a batch record and checks everything that can be checked from the record
/// alone: length, magic, header checksum, version, payload length and checksum, and
/// that the entries are numbered `first_seq..` with non-decreasing timestamps matching
/// the header. Never panics, never allocates based on a length field.
pub fn decode_batch(bytes: &[u8]) -> Result<BatchView<'_>, DecodeError> {
    if bytes.len() < BATCH_HEADER_LEN {
        return Err(DecodeError::new("record shorter than the batch header"));
    }
    let mut r = Reader::new(bytes);
    let magic: [u8; 4] = r.array("magic")?;
    if magic != BATCH_MAGIC {
        return Err(DecodeError::new("bad batch magic"));
    }
    let version = r.u16("version")?;
    let reserved = r.u16("reserved")?;
    let first_seq = r.u64("first seq")?;
    let count = r.u32("count")?;
    let payload_len = r.u32("payload length")?;
    let first_ts_ns = r.u64("first ts")?;
    let last_ts_ns = r.u64("last ts")?;
    let payload_hash: [u8; 32] = r.array("payload checksum")?;
    let prev_hash: [u8; 32] = r.array("previous checksum")?;
    let header_hash: [u8; 32] = r.array("header checksum")?;

    // Header checksum first: once it matches, every header field is what was written,
    // so the remaining checks report real inconsistencies rather than bit flips.
    let hashed = bytes
        .get(..HASHED_HEADER_LEN)
        .ok_or(DecodeError::new("record shorter than the batch header"))?;
    if hash_parts(&[hashed]) != header_hash {
        return Err(DecodeError::new("header checksum mismatch"));
    }
    if version != FORMAT_VERSION {
        return Err(DecodeError::new("unsupported batch format version"));
    }
    if reserved != 0 {
        return Err(DecodeError::new("reserved header field is not zero"));
    }
    if count == 0 {
        return Err(DecodeError::new("empty batch"));
    }
    if first_seq == 0 {
        return Err(DecodeError::new("first seq is 0"));
    }
    first_seq
        .checked_add(u64::from(count - 1))
        .ok_or(DecodeError::new("sequence numbers overflow u64"))?;
    if first_ts_ns > last_ts_ns {
        return Err(DecodeError::new("first ts after last ts"));
    }
    let payload_len_usize = codec::len_u32(payload_len, "payload length")?;
    if r.remaining() != payload_len_usize {
        return Err(DecodeError::new(
            "payload length differs from the header (truncated or extended record)",
        ));
    }
    let payload = r.take(payload_len_usize, "payload")?;
    if hash_parts(&[payload]) != payload_hash {
        return Err(DecodeError::new("payload checksum mismatch"));
    }

    // Walk the entries once so later iteration cannot fail.
    let mut p = Reader::new(payload);
    let mut expected_seq = first_seq;
    let mut prev_ts = first_ts_ns;
    for i in 0..count {
        let seq = p.u64("entry seq truncated")?;
        let ts = p.u64("entry ts truncated")?;
        let len = p.u32("entry length truncated")?;
        let len = codec::len_u32(len, "entry length")?;
        p.take(len, "entry bytes truncated")?;
        if seq != expected_seq {
            return Err(DecodeError::new("entry seq not contiguous"));
        }
        if i == 0 && ts != first_ts_ns {
            return Err(DecodeError::new("first entry ts differs from the header"));
        }
        if ts < prev_ts {
            return Err(DecodeError::new("entry ts goes backwards"));
        }
        prev_ts = ts;
        // Cannot overflow: checked above that first_seq + count - 1 fits.
        expected_seq = expected_seq.saturating_add(1);
    }
    if p.remaining() != 0 {
        return Err(DecodeError::new("trailing bytes after the last entry"));
    }
    if prev_ts != last_ts_ns {
        return Err(DecodeError::new("last entry ts differs from the header"));
    }

    Ok(BatchView {
        header: BatchHeader {
            first_seq,
            count,
            payload_len,
            first_ts_ns,
            last_ts_ns,
            payload_hash,
            prev_hash,
            header_hash,
        },
        payload,
    })
}

/// Accumulates the commands of one group-commit batch in their final on-disk encoding,
/// so committing the batch costs one hash pass and no re-encoding.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    /// Header space (zeroed until sealed) followed by the payload.
    buf: Vec<u8>,
    count: u32,
    first_seq: u64,
    last_seq: u64,
    first_ts_ns: u64,
    last_ts_ns: u64,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    /// Largest payload a batch can hold (the payload length field is a u32).
    pub const MAX_PAYLOAD_LEN: u64 = u32::MAX as u64;

    /// An empty builder.
    pub fn new() -> Self {
        Self {
            buf: vec![0u8; BATCH_HEADER_LEN],
            count: 0,
            first_seq: 0,
            last_seq: 0,
            first_ts_ns: 0,
            last_ts_ns: 0,
        }
    }

    /// Empties the builder, keeping its allocation.
    pub fn clear(&mut self) {
        self.buf.truncate(BATCH_HEADER_LEN);
        self.buf.fill(0);
        self.count = 0;
        self.first_seq = 0;
        self.last_seq = 0;
        self.first_ts_ns = 0;
        self.last_ts_ns = 0;
    }

    /// Number of commands in the batch.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// True when no command has been pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Payload bytes so far (in-memory size, for batch-size limits).
    pub fn payload_len(&self) -> usize {
        self.buf.len().saturating_sub(BATCH_HEADER_LEN)
    }

    /// Sequence number of the first command, if any.
    pub fn first_seq(&self) -> Option<u64> {
        (self.count > 0).then_some(self.first_seq)
    }

    /// Sequence number of the last command, if any.
    pub fn last_seq(&self) -> Option<u64> {
        (self.count > 0).then_some(self.last_seq)
    }

    /// Timestamp of the last command, if any.
    pub fn last_ts_ns(&self) -> Option<u64> {
        (self.count > 0).then_some(self.last_ts_ns)
    }

    /// True when a command of `cmd_len` bytes still fits in this batch's payload.
    pub fn fits(&self, cmd_len: usize) -> bool {
        let total = codec::u64_len(self.payload_len())
            .checked_add(codec::u64_len(ENTRY_HEADER_LEN))
            .and_then(|t| t.checked_add(u64::try_from(cmd_len).ok()?));
        matches!(total, Some(t) if t <= Self::MAX_PAYLOAD_LEN)
    }

    /// Appends one command. `seq` must follow the previous command's (any seq >= 1 for
    /// the first), `ts_ns` must not go backwards. Bad input leaves the builder unchanged.
    pub fn push(&mut self, seq: u64, ts_ns: u64, bytes: &[u8]) -> Result<(), JournalError> {
        if self.count == 0 {
            if seq == 0 {
                return Err(JournalError::InvalidBatch("sequence numbers start at 1"));
            }
        } else {
            if self.last_seq.checked_add(1) != Some(seq) {
                return Err(JournalError::InvalidBatch(
                    "seq does not follow the previous command",
                ));
            }
            if ts_ns < self.last_ts_ns {
                return Err(JournalError::InvalidBatch("timestamp goes backwards"));
            }
        }
        let count = self.count.checked_add(1).ok_or(JournalError::TooLarge(
            "more than u32::MAX commands in one batch",
        ))?;
        let len = u32::try_from(bytes.len())
            .map_err(|_| JournalError::TooLarge("command longer than u32::MAX bytes"))?;
        if !self.fits(bytes.len()) {
            return Err(JournalError::TooLarge(
                "batch payload would exceed u32::MAX bytes",
            ));
        }
        self.buf.extend_from_slice(&seq.to_le_bytes());
        self.buf.extend_from_slice(&ts_ns.to_le_bytes());
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(bytes);
        if self.count == 0 {
            self.first_seq = seq;
            self.first_ts_ns = ts_ns;
        }
        self.count = count;
        self.last_seq = seq;
        self.last_ts_ns = ts_ns;
        Ok(())
    }

    /// Fills in the header, chaining to `prev_hash`, and returns it. After this,
    /// `record()` is the exact byte string to store. `Journal::append` calls this; it is
    /// public so tools and tests can produce records without a database.
    pub fn seal(&mut self, prev_hash: [u8; 32]) -> Result<BatchHeader, JournalError> {
        if self.count == 0 {
            return Err(JournalError::InvalidBatch("empty batch"));
        }
        let payload = self
            .buf
            .get(BATCH_HEADER_LEN..)
            .ok_or(JournalError::InvalidBatch("builder lost its header space"))?;
        let payload_len = u32::try_from(payload.len())
            .map_err(|_| JournalError::TooLarge("batch payload exceeds u32::MAX bytes"))?;
        let mut header = BatchHeader {
            first_seq: self.first_seq,
            count: self.count,
            payload_len,
            first_ts_ns: self.first_ts_ns,
            last_ts_ns: self.last_ts_ns,
            payload_hash: hash_parts(&[payload]),
            prev_hash,
            header_hash: [0u8; 32],
        };
        let hashed = header.encode_hashed_part();
        header.header_hash = hash_parts(&[&hashed]);
        if !codec::patch(&mut self.buf, 0, &hashed)
            || !codec::patch(&mut self.buf, OFF_HEADER_HASH, &header.header_hash)
        {
            return Err(JournalError::InvalidBatch("builder lost its header space"));
        }
        Ok(header)
    }

    /// The record bytes (a valid record only after `seal`).
    pub fn record(&self) -> &[u8] {
        &self.buf
    }
}

/// Why a stored batch was rejected by `ChainVerifier::check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchFault {
    /// The record is not self-consistent (bad checksum, truncated, ...). This is what a
    /// torn or partially written record looks like, so it is forgivable on the last batch.
    Damaged {
        /// The batch's first sequence number (from its key).
        seq: u64,
        /// What failed.
        what: String,
    },
    /// The record is well formed but does not continue the log (sequence gap, broken
    /// hash chain, bad key). A torn write cannot produce this, so it is never forgiven.
    Broken {
        /// The sequence number the problem was found at.
        seq: u64,
        /// What failed.
        what: String,
    },
}

impl BatchFault {
    /// The sequence number the fault was found at.
    pub fn seq(&self) -> u64 {
        match self {
            Self::Damaged { seq, .. } | Self::Broken { seq, .. } => *seq,
        }
    }

    /// Converts into the public error type.
    pub fn into_error(self) -> JournalError {
        match self {
            Self::Damaged { seq, what } | Self::Broken { seq, what } => {
                JournalError::Corrupt { seq, what }
            }
        }
    }
}

/// Verifies that a sequence of (key, record) pairs forms one unbroken log: keys equal
/// first seqs, sequence numbers continue without gap or overlap, timestamps never go
/// backwards, and each batch's `prev_hash` is the previous batch's `header_hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainVerifier {
    last_seq: u64,
    last_ts_ns: u64,
    link: [u8; 32],
}

impl ChainVerifier {
    /// A verifier expecting the batch that follows `last_seq`, whose `prev_hash` must be
    /// `link` (the genesis hash when `last_seq` is 0) and whose timestamps start at or
    /// after `last_ts_ns`.
    pub fn new(last_seq: u64, last_ts_ns: u64, link: [u8; 32]) -> Self {
        Self {
            last_seq,
            last_ts_ns,
            link,
        }
    }

    /// Last sequence number accepted so far.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Timestamp of the last command accepted so far.
    pub fn last_ts_ns(&self) -> u64 {
        self.last_ts_ns
    }

    /// The hash-chain link the next batch must carry as `prev_hash`.
    pub fn link(&self) -> [u8; 32] {
        self.link
    }

    /// Checks one stored batch against its predecessor, without advancing.
    pub fn check<'a>(&self, key: &[u8], value: &'a [u8]) -> Result<BatchView<'a>, BatchFault> {
        let expected = self
            .last_seq
            .checked_add(1)
            .ok_or_else(|| BatchFault::Broken {
                seq: self.last_seq,
                what: "sequence number space exhausted".to_string(),
            })?;
        let Some(key_seq) = key_seq(key) else {
            return Err(BatchFault::Broken {
                seq: expected,
                what: format!("batch key is {} bytes, not 8", key.len()),
            });
        };
        // The key is written atomically with the record by sled, so check continuity on
        // it before the record: a gap is never excused as a torn tail.
        if key_seq > expected {
            return Err(BatchFault::Broken {
                seq: expected,
                what: format!("gap: batches missing between seq {expected} and {key_seq}"),
            });
        }
        if key_seq < expected {
            return Err(BatchFault::Broken {
                seq: key_seq,
                what: format!(
                    "batch overlaps the previous one, which ended at seq {}",
                    self.last_seq
                ),
            });
        }
        let view = decode_batch(value).map_err(|e| BatchFault::Damaged {
            seq: key_seq,
            what: e.what.to_string(),
        })?;
        if view.header.first_seq != key_seq {
            return Err(BatchFault::Broken {
                seq: key_seq,
                what: format!(
                    "key says seq {key_seq}, header says {}",
                    view.header.first_seq
                ),
            });
        }
        if view.header.prev_hash != self.link {
            return Err(BatchFault::Broken {
                seq: key_seq,
                what: "hash chain broken: previous-batch checksum does not match".to_string(),
            });
        }
        if view.header.first_ts_ns < self.last_ts_ns {
            return Err(BatchFault::Broken {
                seq: key_seq,
                what: "timestamp goes backwards across batches".to_string(),
            });
        }
        Ok(view)
    }

    /// Accepts a batch previously returned by `check`.
    pub fn advance(&mut self, header: &BatchHeader) {
        self.last_seq = header.last_seq();
        self.last_ts_ns = header.last_ts_ns;
        self.link = header.header_hash;
    }
}

/// A last batch that failed its self-consistency checks during `scan_records`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The record's key.
    pub key: Vec<u8>,
    /// The first sequence number the key names.
    pub first_seq: u64,
    /// Length of the record in bytes.
    pub record_len: u64,
    /// Which check failed.
    pub reason: String,
}

/// Result of `scan_records`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOutcome {
    /// Position after the last good batch.
    pub position: ChainVerifier,
    /// Number of good batches.
    pub batches: u64,
    /// The torn last batch, if there was one (the caller decides what to do with it).
    pub torn_tail: Option<TornTail>,
}

/// Verifies a whole log, given as (key, record) pairs in key order, from genesis.
/// A last record that is not self-consistent is reported as `torn_tail` rather than
/// failing; every other fault is `JournalError::Corrupt` naming the sequence number.
/// This is exactly the check `Journal` runs at open; it is public so tools and tests
/// can verify copies of a journal without sled.
pub fn scan_records<K, V, I>(
    genesis_hash: [u8; 32],
    records: I,
) -> Result<ScanOutcome, JournalError>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
    I: IntoIterator<Item = Result<(K, V), JournalError>>,
{
    scan_records_from(ChainVerifier::new(0, 0, genesis_hash), records)
}

/// `scan_records` starting from `verifier` (the position after the batches before
/// `records`) instead of genesis.
pub(crate) fn scan_records_from<K, V, I>(
    verifier: ChainVerifier,
    records: I,
) -> Result<ScanOutcome, JournalError>
where
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
    I: IntoIterator<Item = Result<(K, V), JournalError>>,
{
    let mut verifier = verifier;
    let mut batches: u64 = 0;
    let mut iter = records.into_iter();
    let mut current = iter.next();
    while let Some(item) = current {
        let (key, value) = item?;
        let (key, value) = (key.as_ref(), value.as_ref());
        // Look one ahead: only the last record may be forgiven as torn.
        let next = iter.next();
        match verifier.check(key, value) {
            Ok(view) => {
                verifier.advance(&view.header);
                batches = batches.checked_add(1).ok_or(JournalError::Corrupt {
                    seq: view.header.first_seq,
                    what: "batch count overflow".to_string(),
                })?;
            }
            Err(BatchFault::Damaged { seq, what }) if next.is_none() => {
                return Ok(ScanOutcome {
                    position: verifier,
                    batches,
                    torn_tail: Some(TornTail {
                        key: key.to_vec(),
                        first_seq: seq,
                        record_len: codec::u64_len(value.len()),
                        reason: what,
                    }),
                });
            }
            Err(fault) => return Err(fault.into_error()),
        }
        current = next;
    }
    Ok(ScanOutcome {
        position: verifier,
        batches,
        torn_tail: None,
    })
}
