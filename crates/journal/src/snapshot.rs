//! Snapshot records of the `snapshots` tree: full state-machine state at a sequence
//! number, with the state hash the state machine reported and the hash-chain link at
//! that sequence number (so replay of the tail can keep verifying the chain). The header
//! names the payload version and the section the bytes are (what kind of state).
//!
//! Owns: the snapshot byte layout, the section tags, `encode_snapshot` and
//! `decode_snapshot`. Must never: interpret the state bytes, hand out a snapshot whose
//! checksum fails, or reuse a retired section tag.

use crate::batch::FORMAT_VERSION;
use crate::codec::{self, hash_parts, Reader};
use crate::error::DecodeError;

/// Magic of a snapshot record.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"PCJS";
/// Length of the fixed snapshot header (before the state bytes).
pub const SNAPSHOT_HEADER_LEN: usize = 136;
/// The record checksum covers header bytes 0..104 and the state bytes.
const SNAPSHOT_HASHED_HEADER_LEN: usize = 104;

/// Section tag: the state machine's whole state, as its `snapshot()` returns it (for the
/// engine, its canonical state encoding). The only section written today.
pub const SECTION_STATE: u16 = 1;
/// Every section tag this build reads, with its name (docs/JOURNAL_FORMAT.md).
pub const SNAPSHOT_SECTIONS: &[(u16, &str)] = &[(SECTION_STATE, "state")];
/// Section tags no longer written; never given to another section.
pub const RETIRED_SNAPSHOT_SECTIONS: &[u16] = &[];

/// The name of a section tag this build reads.
pub fn section_name(section: u16) -> Option<&'static str> {
    SNAPSHOT_SECTIONS
        .iter()
        .find(|(tag, _)| *tag == section)
        .map(|(_, name)| *name)
}

/// What a snapshot record says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Payload version the state bytes were written with (the journal refuses any other
    /// than `PAYLOAD_VERSION` when loading).
    pub payload_version: u16,
    /// What the state bytes are (`SECTION_STATE`).
    pub section: u16,
    /// Sequence number of the last command applied to the state (0: no command yet).
    pub seq: u64,
    /// Timestamp of that command (0 when `seq` is 0).
    pub last_ts_ns: u64,
    /// Length of the state bytes.
    pub state_len: u64,
    /// State hash reported by the state machine when the snapshot was taken.
    pub state_hash: [u8; 32],
    /// Hash-chain link at `seq`: header checksum of the batch ending at `seq`, or the
    /// genesis hash when `seq` is 0.
    pub chain_hash: [u8; 32],
}

/// A verified snapshot record borrowing its bytes.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotView<'a> {
    /// Header fields.
    pub meta: SnapshotMeta,
    /// The state bytes as produced by the state machine.
    pub state: &'a [u8],
}

/// An owned, verified snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Header fields.
    pub meta: SnapshotMeta,
    /// The state bytes as produced by the state machine.
    pub state: Vec<u8>,
}

/// Encodes a snapshot record. `meta.state_len` is ignored and recomputed.
pub fn encode_snapshot(meta: &SnapshotMeta, state: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_LEN.saturating_add(state.len()));
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&meta.payload_version.to_le_bytes());
    out.extend_from_slice(&meta.seq.to_le_bytes());
    out.extend_from_slice(&meta.last_ts_ns.to_le_bytes());
    out.extend_from_slice(&codec::u64_len(state.len()).to_le_bytes());
    out.extend_from_slice(&meta.state_hash);
    out.extend_from_slice(&meta.chain_hash);
    out.extend_from_slice(&meta.section.to_le_bytes());
    out.extend_from_slice(&[0u8; 6]);
    let checksum = hash_parts(&[&out, state]);
    out.extend_from_slice(&checksum);
    out.extend_from_slice(state);
    out
}

/// Decodes and verifies a snapshot record (any payload version and section tag: the
/// journal checks them when loading, to name what it found). Never panics on any input.
pub fn decode_snapshot(bytes: &[u8]) -> Result<SnapshotView<'_>, DecodeError> {
    if bytes.len() < SNAPSHOT_HEADER_LEN {
        return Err(DecodeError::new("record shorter than the snapshot header"));
    }
    let mut r = Reader::new(bytes);
    if r.array::<4>("snapshot magic")? != SNAPSHOT_MAGIC {
        return Err(DecodeError::new("bad snapshot magic"));
    }
    let version = r.u16("snapshot version")?;
    let payload_version = r.u16("snapshot payload version")?;
    let seq = r.u64("snapshot seq")?;
    let last_ts_ns = r.u64("snapshot ts")?;
    let state_len = r.u64("state length")?;
    let state_hash: [u8; 32] = r.array("state hash")?;
    let chain_hash: [u8; 32] = r.array("chain hash")?;
    let section = r.u16("snapshot section")?;
    let reserved: [u8; 6] = r.array("reserved")?;
    let checksum: [u8; 32] = r.array("snapshot checksum")?;
    let len = codec::len_u64(state_len, "state length")?;
    if r.remaining() != len {
        return Err(DecodeError::new(
            "state length differs from the record (truncated or extended record)",
        ));
    }
    let state = r.take(len, "state bytes")?;
    let hashed = bytes
        .get(..SNAPSHOT_HASHED_HEADER_LEN)
        .ok_or(DecodeError::new("record shorter than the snapshot header"))?;
    if hash_parts(&[hashed, state]) != checksum {
        return Err(DecodeError::new("snapshot checksum mismatch"));
    }
    if version != FORMAT_VERSION {
        return Err(DecodeError::new("unsupported snapshot format version"));
    }
    if reserved != [0u8; 6] {
        return Err(DecodeError::new("reserved snapshot field is not zero"));
    }
    Ok(SnapshotView {
        meta: SnapshotMeta {
            payload_version,
            section,
            seq,
            last_ts_ns,
            state_len,
            state_hash,
            chain_hash,
        },
        state,
    })
}
