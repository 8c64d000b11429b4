//! Bounds-checked little-endian field readers and writers shared by every record type.
//!
//! Owns: the primitive encoding rules of the on-disk format (fixed-width little-endian
//! integers, fixed-size byte arrays). Must never: panic or index out of bounds on
//! arbitrary input, or encode a platform-sized integer (`usize`) to disk.

use crate::error::DecodeError;

/// A cursor over a byte slice whose every read is bounds-checked.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) const fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not yet consumed.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::new(what))?;
        let out = self.buf.get(self.pos..end).ok_or(DecodeError::new(what))?;
        self.pos = end;
        Ok(out)
    }

    pub(crate) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let s = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
}

/// Converts an on-disk u32 length to an in-memory length. Only fails on targets whose
/// `usize` is narrower than 32 bits, which we do not support, but we refuse to panic.
pub(crate) fn len_u32(n: u32, what: &'static str) -> Result<usize, DecodeError> {
    usize::try_from(n).map_err(|_| DecodeError::new(what))
}

/// Same as `len_u32` for u64 lengths (snapshots may exceed 4 GiB on 64-bit targets).
pub(crate) fn len_u64(n: u64, what: &'static str) -> Result<usize, DecodeError> {
    usize::try_from(n).map_err(|_| DecodeError::new(what))
}

/// Overwrites `buf[at..at + bytes.len()]`; returns false (and writes nothing) when the
/// range is out of bounds, so header patching can never panic.
#[must_use]
pub(crate) fn patch(buf: &mut [u8], at: usize, bytes: &[u8]) -> bool {
    let Some(end) = at.checked_add(bytes.len()) else {
        return false;
    };
    match buf.get_mut(at..end) {
        Some(dst) => {
            dst.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

/// Big-endian key for a sequence number, so sled's lexicographic order is numeric order.
pub fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// Inverse of `seq_key`; `None` when the key is not exactly 8 bytes.
pub fn key_seq(key: &[u8]) -> Option<u64> {
    let arr: [u8; 8] = key.try_into().ok()?;
    Some(u64::from_be_bytes(arr))
}

/// blake3 of `parts` concatenated, without concatenating them in memory.
pub(crate) fn hash_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p);
    }
    *h.finalize().as_bytes()
}

/// In-memory length to an on-disk u64. Lossless on every target with `usize` of at
/// most 64 bits; saturates (never wraps) elsewhere.
pub(crate) fn u64_len(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
