//! Records of the `meta` tree: the format record and the genesis record, and the payload
//! version.
//!
//! Owns: their byte layouts, the genesis hash (the first link of the batch hash chain)
//! and `PAYLOAD_VERSION`. Must never: interpret the genesis bytes (they are the caller's
//! opaque configuration) or accept a genesis record whose checksum does not match.

use crate::batch::FORMAT_VERSION;
use crate::codec::{self, hash_parts, Reader};
use crate::error::DecodeError;

/// Version of what the journal's opaque bytes mean — the command encoding (stable `u16`
/// tags, `perpcore_types::tags`), the genesis configuration and the snapshot sections —
/// as opposed to `FORMAT_VERSION`, the journal's own byte layout. Stored in the genesis
/// record and in every snapshot header; a journal or snapshot of another payload version
/// is refused with `JournalError::UnsupportedPayloadVersion`. Adding a command with a new
/// tag does not change it (old journals keep their meaning); changing what an existing
/// tag's bytes mean does. History in docs/JOURNAL_FORMAT.md.
pub const PAYLOAD_VERSION: u16 = 4;

/// Key of the format record in the `meta` tree.
pub const META_FORMAT_KEY: &[u8] = b"format";
/// Key of the genesis record in the `meta` tree.
pub const META_GENESIS_KEY: &[u8] = b"genesis";
/// Magic of the format record.
pub const FORMAT_MAGIC: [u8; 4] = *b"PCJF";
/// Magic of the genesis record.
pub const GENESIS_MAGIC: [u8; 4] = *b"PCJG";
/// Length of the format record.
pub const FORMAT_RECORD_LEN: usize = 8;
/// Length of the fixed part of the genesis record (before the genesis bytes).
pub const GENESIS_HEADER_LEN: usize = 80;
/// The record checksum covers header bytes 0..48 and the genesis bytes.
const GENESIS_HASHED_HEADER_LEN: usize = 48;

/// Encodes the format record: magic, version (u16 LE), reserved zero (u16).
pub fn encode_format_record() -> Vec<u8> {
    let mut out = Vec::with_capacity(FORMAT_RECORD_LEN);
    out.extend_from_slice(&FORMAT_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// Decodes the format record and returns the stored format version (any version; the
/// caller decides whether it is supported).
pub fn decode_format_record(bytes: &[u8]) -> Result<u16, DecodeError> {
    if bytes.len() != FORMAT_RECORD_LEN {
        return Err(DecodeError::new("format record has the wrong length"));
    }
    let mut r = Reader::new(bytes);
    if r.array::<4>("format magic")? != FORMAT_MAGIC {
        return Err(DecodeError::new("bad format magic"));
    }
    let version = r.u16("format version")?;
    if r.u16("reserved")? != 0 {
        return Err(DecodeError::new("reserved format field is not zero"));
    }
    Ok(version)
}

/// The genesis hash: blake3 of the genesis bytes. The first batch's `prev_hash`.
pub fn genesis_hash(genesis: &[u8]) -> [u8; 32] {
    hash_parts(&[genesis])
}

/// A decoded, verified genesis record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenesisRecord<'a> {
    /// The payload version the journal was written with (not checked here: the caller
    /// decides whether it is supported).
    pub payload_version: u16,
    /// The genesis bytes.
    pub genesis: &'a [u8],
    /// blake3 of the genesis bytes: the first link of the hash chain.
    pub hash: [u8; 32],
}

/// Encodes the genesis record: magic, format version, payload version, len (u64),
/// genesis hash = blake3(bytes), record checksum = blake3(header 0..48 ‖ bytes), bytes.
pub fn encode_genesis_record(payload_version: u16, genesis: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(GENESIS_HEADER_LEN.saturating_add(genesis.len()));
    out.extend_from_slice(&GENESIS_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&payload_version.to_le_bytes());
    out.extend_from_slice(&codec::u64_len(genesis.len()).to_le_bytes());
    out.extend_from_slice(&genesis_hash(genesis));
    let checksum = hash_parts(&[&out, genesis]);
    out.extend_from_slice(&checksum);
    out.extend_from_slice(genesis);
    out
}

/// Decodes and verifies a genesis record (any payload version).
pub fn decode_genesis_record(bytes: &[u8]) -> Result<GenesisRecord<'_>, DecodeError> {
    let mut r = Reader::new(bytes);
    if r.array::<4>("genesis magic")? != GENESIS_MAGIC {
        return Err(DecodeError::new("bad genesis magic"));
    }
    if r.u16("genesis version")? != FORMAT_VERSION {
        return Err(DecodeError::new("unsupported genesis record version"));
    }
    let payload_version = r.u16("payload version")?;
    let len = codec::len_u64(r.u64("genesis length")?, "genesis length")?;
    let hash: [u8; 32] = r.array("genesis hash")?;
    let checksum: [u8; 32] = r.array("genesis checksum")?;
    if r.remaining() != len {
        return Err(DecodeError::new("genesis length differs from the record"));
    }
    let body = r.take(len, "genesis bytes")?;
    if genesis_hash(body) != hash {
        return Err(DecodeError::new("genesis hash mismatch"));
    }
    let hashed = bytes
        .get(..GENESIS_HASHED_HEADER_LEN)
        .ok_or(DecodeError::new("record shorter than the genesis header"))?;
    if hash_parts(&[hashed, body]) != checksum {
        return Err(DecodeError::new("genesis checksum mismatch"));
    }
    Ok(GenesisRecord {
        payload_version,
        genesis: body,
        hash,
    })
}
