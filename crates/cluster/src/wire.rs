//! What travels on the NATS subjects: the command batch (one JetStream message), its
//! idempotency id, and a node's progress report.
//!
//! Owns: the byte layout of a batch message (docs/CLUSTER.md, "The batch message") and
//! its checks, the `Nats-Msg-Id` of a batch, the JSON of a progress report. Must never:
//! interpret command bytes (they are the journal's command encoding, opaque here) or
//! panic on any input.

use serde::{Deserialize, Serialize};

/// `PCCB`: a perpcore command batch.
pub const BATCH_MAGIC: [u8; 4] = *b"PCCB";
/// Version of the batch message layout.
pub const WIRE_VERSION: u16 = 1;
/// Bytes before the first entry.
pub const BATCH_HEADER_LEN: usize = 40;
/// Bytes before each command's bytes (its length, u32 LE).
pub const ENTRY_HEADER_LEN: usize = 4;

/// A producer's identity: 16 bytes, fresh for every producer process (so a restarted
/// producer never reuses batch sequence numbers under an old identity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProducerId(pub [u8; 16]);

impl ProducerId {
    /// Lower-case hex, 32 characters.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A new identity from the wall clock, the process id and a counter, hashed: distinct
    /// across processes and within one. Not secret, only unique.
    pub fn fresh() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now() // determinism-ok: an identity, never state
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut h = blake3::Hasher::new();
        h.update(b"perpcore producer id");
        h.update(&now.to_le_bytes());
        h.update(&std::process::id().to_le_bytes());
        h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        let mut id = [0u8; 16];
        id.copy_from_slice(&h.finalize().as_bytes()[..16]);
        ProducerId(id)
    }
}

/// The `Nats-Msg-Id` of a batch: `<producer hex>:<batch seq>`. JetStream drops a second
/// message with the same id inside the stream's duplicate window and acknowledges it with
/// the first one's stream sequence.
pub fn msg_id(producer: ProducerId, batch_seq: u64) -> String {
    format!("{}:{batch_seq}", producer.hex())
}

/// Why bytes are not a batch message. Nodes skip such a message (every node decides the
/// same, from the bytes alone) and count it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("shorter than the {BATCH_HEADER_LEN}-byte batch header")]
    Short,
    #[error("not a perpcore batch (magic)")]
    Magic,
    #[error("batch layout version {0}, this build reads {WIRE_VERSION}")]
    Version(u16),
    #[error("command payload version {found}, this build reads {supported}")]
    PayloadVersion { found: u16, supported: u16 },
    #[error("reserved bytes are not zero")]
    Reserved,
    #[error("batch sequence number 0")]
    ZeroBatchSeq,
    #[error("no commands")]
    Empty,
    #[error("entry {0} runs past the end of the message")]
    Truncated(u32),
    #[error("{0} bytes after the last entry")]
    Trailing(usize),
}

/// Encodes batch messages: the commands' journal encodings, back to back.
#[derive(Debug, Clone)]
pub struct BatchEncoder {
    buf: Vec<u8>,
    count: u32,
}

impl BatchEncoder {
    /// An empty batch of `producer`'s batch `batch_seq` (≥ 1).
    pub fn new(producer: ProducerId, batch_seq: u64) -> Self {
        let mut buf = Vec::with_capacity(4096);
        buf.extend_from_slice(&BATCH_MAGIC);
        buf.extend_from_slice(&WIRE_VERSION.to_le_bytes());
        buf.extend_from_slice(&perpcore_journal::PAYLOAD_VERSION.to_le_bytes());
        buf.extend_from_slice(&producer.0);
        buf.extend_from_slice(&batch_seq.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes()); // count, patched by `finish`
        buf.extend_from_slice(&0u32.to_le_bytes()); // reserved
        debug_assert_eq!(buf.len(), BATCH_HEADER_LEN);
        Self { buf, count: 0 }
    }

    /// Appends one command's bytes (its journal encoding). Commands are at most a few
    /// hundred bytes; a longer one than u32::MAX cannot be built in memory here.
    pub fn push(&mut self, command: &[u8]) {
        let len = u32::try_from(command.len()).expect("a command shorter than 4 GiB");
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(command);
        self.count = self.count.checked_add(1).expect("fewer than 2^32 commands");
    }

    /// Commands so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True before the first `push`.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The message bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[32..36].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }
}

/// A decoded batch header; the entries follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub producer: ProducerId,
    pub batch_seq: u64,
    pub count: u32,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Checks a whole batch message and returns its header and the commands' bytes, in
/// order. Every check is on the bytes alone, so every node decides the same.
pub fn decode_batch(msg: &[u8]) -> Result<(BatchHeader, Vec<&[u8]>), WireError> {
    if msg.len() < BATCH_HEADER_LEN {
        return Err(WireError::Short);
    }
    if msg[0..4] != BATCH_MAGIC {
        return Err(WireError::Magic);
    }
    let version = u16_at(msg, 4);
    if version != WIRE_VERSION {
        return Err(WireError::Version(version));
    }
    let payload_version = u16_at(msg, 6);
    if payload_version != perpcore_journal::PAYLOAD_VERSION {
        return Err(WireError::PayloadVersion {
            found: payload_version,
            supported: perpcore_journal::PAYLOAD_VERSION,
        });
    }
    let mut producer = [0u8; 16];
    producer.copy_from_slice(&msg[8..24]);
    let batch_seq = u64_at(msg, 24);
    let count = u32_at(msg, 32);
    if u32_at(msg, 36) != 0 {
        return Err(WireError::Reserved);
    }
    if batch_seq == 0 {
        return Err(WireError::ZeroBatchSeq);
    }
    if count == 0 {
        return Err(WireError::Empty);
    }
    // Each entry takes at least its 4-byte length: a count the message cannot hold is
    // refused before anything is allocated for it.
    let room = (msg.len() - BATCH_HEADER_LEN) / ENTRY_HEADER_LEN;
    if u64::from(count) > room as u64 {
        return Err(WireError::Truncated(0));
    }
    let mut commands = Vec::with_capacity(count as usize);
    let mut at = BATCH_HEADER_LEN;
    for i in 0..count {
        if msg.len() - at < ENTRY_HEADER_LEN {
            return Err(WireError::Truncated(i));
        }
        let len = u32_at(msg, at) as usize;
        at += ENTRY_HEADER_LEN;
        if msg.len() - at < len {
            return Err(WireError::Truncated(i));
        }
        commands.push(&msg[at..at + len]);
        at += len;
    }
    if at != msg.len() {
        return Err(WireError::Trailing(msg.len() - at));
    }
    Ok((
        BatchHeader {
            producer: ProducerId(producer),
            batch_seq,
            count,
        },
        commands,
    ))
}

/// A state hash a node computed at a stream sequence (after applying every message up
/// to and including it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub stream_seq: u64,
    pub engine_seq: u64,
    /// blake3 state hash, lower-case hex.
    pub state_hash: String,
}

/// What a node publishes on its progress subject after every durable group and
/// periodically: how far the stream is applied and durable in its own journal. A producer
/// whose batch has stream sequence `s` may acknowledge it to its client once its
/// answering node reports `stream_seq >= s`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub node: String,
    /// Every stream message up to this one is applied (or skipped by the node's rules)
    /// and durable in the node's journal.
    pub stream_seq: u64,
    /// The journal's last sequence number at that point.
    pub engine_seq: u64,
    /// Its timestamp.
    pub ts_ns: u64,
    /// Messages skipped as duplicates of an applied batch, since the node started.
    pub duplicates: u64,
    /// Messages skipped as not decodable, since the node started.
    pub invalid: u64,
    /// True while the node re-reads stream messages its journal already holds after a
    /// restart (the position is then the verified part; the state is already further).
    pub verifying: bool,
    /// State hashes at the checkpoint stream sequences (every `hash_every` messages) and
    /// when the node has caught up, since the previous report.
    pub checkpoints: Vec<Checkpoint>,
}

/// Lower-case hex of a hash.
pub fn hex32(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let p = ProducerId([7; 16]);
        let mut e = BatchEncoder::new(p, 42);
        e.push(b"abc");
        e.push(b"");
        let bytes = e.finish();
        // 40-byte header + (4 + 3) + (4 + 0), worked by hand from the layout.
        assert_eq!(bytes.len(), 40 + 7 + 4);
        assert_eq!(&bytes[0..4], b"PCCB");
        assert_eq!(u32_at(&bytes, 32), 2);
        let (h, cmds) = decode_batch(&bytes).unwrap();
        assert_eq!(h.producer, p);
        assert_eq!(h.batch_seq, 42);
        assert_eq!(cmds, vec![&b"abc"[..], &b""[..]]);
    }

    #[test]
    fn refuses_bad_messages() {
        let mut e = BatchEncoder::new(ProducerId([1; 16]), 1);
        e.push(b"xy");
        let good = e.finish();
        assert_eq!(decode_batch(&good[..39]), Err(WireError::Short));
        let mut m = good.clone();
        m[0] = b'X';
        assert_eq!(decode_batch(&m), Err(WireError::Magic));
        let mut m = good.clone();
        m[4] = 9;
        assert_eq!(decode_batch(&m), Err(WireError::Version(9)));
        let mut m = good.clone();
        m[6] = m[6].wrapping_add(1);
        assert!(matches!(
            decode_batch(&m),
            Err(WireError::PayloadVersion { .. })
        ));
        let mut m = good.clone();
        m[24..32].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(decode_batch(&m), Err(WireError::ZeroBatchSeq));
        let mut m = good.clone();
        m[32..36].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(decode_batch(&m), Err(WireError::Empty));
        let mut m = good.clone();
        m[36] = 1;
        assert_eq!(decode_batch(&m), Err(WireError::Reserved));
        assert_eq!(
            decode_batch(&good[..good.len() - 1]),
            Err(WireError::Truncated(0))
        );
        let mut m = good.clone();
        m.push(0);
        assert_eq!(decode_batch(&m), Err(WireError::Trailing(1)));
        // A count far beyond what the bytes can hold is refused before allocating.
        let mut m = good;
        m[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_batch(&m), Err(WireError::Truncated(0)));
    }

    #[test]
    fn msg_id_names_producer_and_batch() {
        let p = ProducerId([0xab; 16]);
        assert_eq!(msg_id(p, 7), format!("{}:7", "ab".repeat(16)));
        assert_ne!(ProducerId::fresh(), ProducerId::fresh());
    }
}
