//! Records of the `meta` tree: the format record and the genesis record.
//!
//! Owns: their byte layouts and the genesis hash, which is the first link of the batch
//! hash chain. Must never: interpret the genesis bytes (they are the caller's opaque
//! configuration) or accept a genesis record whose checksum does not match.

use crate::batch::FORMAT_VERSION;
use crate::codec::{self, hash_parts, Reader};
use crate::error::DecodeError;

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
pub const GENESIS_HEADER_LEN: usize = 48;

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

/// Encodes the genesis record: magic, version, reserved, len (u64), blake3 (32), bytes.
pub fn encode_genesis_record(genesis: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(GENESIS_HEADER_LEN.saturating_add(genesis.len()));
    out.extend_from_slice(&GENESIS_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&codec::u64_len(genesis.len()).to_le_bytes());
    out.extend_from_slice(&genesis_hash(genesis));
    out.extend_from_slice(genesis);
    out
}

/// Decodes and verifies a genesis record; returns the genesis bytes and their hash.
pub fn decode_genesis_record(bytes: &[u8]) -> Result<(&[u8], [u8; 32]), DecodeError> {
    let mut r = Reader::new(bytes);
    if r.array::<4>("genesis magic")? != GENESIS_MAGIC {
        return Err(DecodeError::new("bad genesis magic"));
    }
    if r.u16("genesis version")? != FORMAT_VERSION {
        return Err(DecodeError::new("unsupported genesis record version"));
    }
    if r.u16("reserved")? != 0 {
        return Err(DecodeError::new("reserved genesis field is not zero"));
    }
    let len = codec::len_u64(r.u64("genesis length")?, "genesis length")?;
    let hash: [u8; 32] = r.array("genesis checksum")?;
    if r.remaining() != len {
        return Err(DecodeError::new("genesis length differs from the record"));
    }
    let body = r.take(len, "genesis bytes")?;
    if genesis_hash(body) != hash {
        return Err(DecodeError::new("genesis checksum mismatch"));
    }
    Ok((body, hash))
}
