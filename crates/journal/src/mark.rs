//! The durable high-water mark: what the journal has acknowledged, kept outside sled.
//!
//! Owns: the byte layout of the mark file (two alternating checksummed slots) and the
//! choice of the slot to trust. Must never: accept a slot whose checksum fails, or pick
//! an older generation over a newer valid one.
//!
//! Why it exists: sled 0.34 treats a checksum failure in the part of its log written
//! since its own last snapshot as a torn tail and silently drops everything after it.
//! The hash chain then sees a shorter log that is perfectly valid. The mark, written and
//! fsynced after every durable commit and before anything is acknowledged, says how far
//! the log must reach; a log that ends before it has lost acknowledged commands.
//!
//! Layout: the file is `MARK_FILE_LEN` bytes, slot 0 at offset 0 and slot 1 at
//! `MARK_SLOT_STRIDE` (each slot in its own 4 KiB block, so a torn write of one cannot
//! damage the other). Generation `g` is written to slot `g % 2`; readers take the valid
//! slot with the highest generation. A torn or damaged newest slot falls back to the
//! previous mark, which is exactly what was durable before the interrupted write.

use crate::batch::FORMAT_VERSION;
use crate::codec::{hash_parts, Reader};
use crate::error::DecodeError;

/// Magic of a mark slot.
pub const MARK_MAGIC: [u8; 4] = *b"PCJM";
/// Length of one mark record.
pub const MARK_RECORD_LEN: usize = 136;
/// Distance between the two slots (one 4 KiB block each).
pub const MARK_SLOT_STRIDE: u64 = 4096;
/// Length of the mark file.
pub const MARK_FILE_LEN: usize = 8192;
/// Bytes covered by the slot checksum.
const MARK_HASHED_LEN: usize = 104;
/// `flags` bit: `snapshot_seq` names a durable snapshot.
const FLAG_SNAPSHOT: u64 = 1;

/// What the journal has made durable and acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// Every command up to this seq was durable when the mark was written (0: none).
    pub last_seq: u64,
    /// The hash-chain link at `last_seq` (the genesis hash when it is 0).
    pub link: [u8; 32],
    /// The newest durable snapshot, if any.
    pub snapshot: Option<u64>,
}

/// A decoded slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkSlot {
    /// Write counter; the newest valid slot wins.
    pub generation: u64,
    /// The mark.
    pub mark: Mark,
    /// blake3 of the genesis bytes of the journal the mark belongs to.
    pub genesis_hash: [u8; 32],
}

/// Encodes one slot.
pub fn encode_mark(slot: &MarkSlot) -> [u8; MARK_RECORD_LEN] {
    let mut out = [0u8; MARK_RECORD_LEN];
    let (snapshot_seq, flags) = match slot.mark.snapshot {
        Some(s) => (s, FLAG_SNAPSHOT),
        None => (0, 0),
    };
    let fields: [&[u8]; 9] = [
        &MARK_MAGIC,
        &FORMAT_VERSION.to_le_bytes(),
        &0u16.to_le_bytes(),
        &slot.generation.to_le_bytes(),
        &slot.mark.last_seq.to_le_bytes(),
        &slot.mark.link,
        &slot.genesis_hash,
        &snapshot_seq.to_le_bytes(),
        &flags.to_le_bytes(),
    ];
    let mut at = 0;
    for f in fields {
        out[at..at + f.len()].copy_from_slice(f);
        at += f.len();
    }
    let sum = hash_parts(&[&out[..MARK_HASHED_LEN]]);
    out[MARK_HASHED_LEN..].copy_from_slice(&sum);
    out
}

/// Decodes and verifies one slot.
pub fn decode_mark(bytes: &[u8]) -> Result<MarkSlot, DecodeError> {
    let rec = bytes
        .get(..MARK_RECORD_LEN)
        .ok_or(DecodeError::new("mark slot is short"))?;
    let mut r = Reader::new(rec);
    if r.array::<4>("mark magic")? != MARK_MAGIC {
        return Err(DecodeError::new("bad mark magic"));
    }
    let hashed = rec
        .get(..MARK_HASHED_LEN)
        .ok_or(DecodeError::new("mark slot is short"))?;
    let sum: [u8; 32] = rec
        .get(MARK_HASHED_LEN..)
        .and_then(|s| s.try_into().ok())
        .ok_or(DecodeError::new("mark slot is short"))?;
    if hash_parts(&[hashed]) != sum {
        return Err(DecodeError::new("mark checksum mismatch"));
    }
    if r.u16("mark version")? != FORMAT_VERSION {
        return Err(DecodeError::new("unsupported mark version"));
    }
    if r.u16("reserved")? != 0 {
        return Err(DecodeError::new("reserved mark field is not zero"));
    }
    let generation = r.u64("mark generation")?;
    let last_seq = r.u64("mark seq")?;
    let link = r.array::<32>("mark link")?;
    let genesis_hash = r.array::<32>("mark genesis hash")?;
    let snapshot_seq = r.u64("mark snapshot seq")?;
    let snapshot = match r.u64("mark flags")? {
        0 => None,
        FLAG_SNAPSHOT => Some(snapshot_seq),
        _ => return Err(DecodeError::new("unknown mark flags")),
    };
    Ok(MarkSlot {
        generation,
        mark: Mark {
            last_seq,
            link,
            snapshot,
        },
        genesis_hash,
    })
}

/// Byte offset of the slot that generation `generation` is written to.
pub fn slot_offset(generation: u64) -> u64 {
    (generation % 2) * MARK_SLOT_STRIDE
}

/// What reading the mark file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkRead {
    /// The newest valid slot.
    pub newest: MarkSlot,
    /// Why the other slot was not usable, if it was not (a damaged slot that is not the
    /// newest only costs the fallback; it is reported, not fatal).
    pub other_damaged: Option<&'static str>,
}

/// Reads the newest valid slot of a mark file's contents.
pub fn read_mark_file(bytes: &[u8]) -> Result<MarkRead, DecodeError> {
    if bytes.len() != MARK_FILE_LEN {
        return Err(DecodeError::new("mark file has the wrong length"));
    }
    let slot = |i: u64| {
        let at = usize::try_from(i * MARK_SLOT_STRIDE).unwrap_or(usize::MAX);
        decode_mark(bytes.get(at..).unwrap_or_default())
    };
    // A slot must hold a generation of its own parity: anything else was not written
    // by us to that place.
    let in_place = |i: u64, r: Result<MarkSlot, DecodeError>| {
        r.and_then(|s| {
            if s.generation % 2 == i {
                Ok(s)
            } else {
                Err(DecodeError::new(
                    "mark slot holds a generation of the other slot",
                ))
            }
        })
    };
    let (a, b) = (in_place(0, slot(0)), in_place(1, slot(1)));
    // An untouched slot (never written: all zeros) is not damage.
    let never_written = |i: u64| {
        let at = usize::try_from(i * MARK_SLOT_STRIDE).unwrap_or(usize::MAX);
        bytes
            .get(at..at.saturating_add(MARK_RECORD_LEN))
            .is_some_and(|s| s.iter().all(|&x| x == 0))
    };
    match (a, b) {
        (Ok(x), Ok(y)) => {
            if x.genesis_hash != y.genesis_hash {
                return Err(DecodeError::new(
                    "the two mark slots belong to different journals",
                ));
            }
            Ok(MarkRead {
                newest: if y.generation > x.generation { y } else { x },
                other_damaged: None,
            })
        }
        (Ok(x), Err(e)) | (Err(e), Ok(x)) => {
            let other = 1 - (x.generation % 2);
            Ok(MarkRead {
                newest: x,
                other_damaged: (!never_written(other)).then_some(e.what),
            })
        }
        (Err(_), Err(_)) => Err(DecodeError::new("neither mark slot is valid")),
    }
}

/// A whole new mark file holding `slot` (generation 0) in slot 0.
pub fn new_mark_file(slot: &MarkSlot) -> Vec<u8> {
    let mut out = vec![0u8; MARK_FILE_LEN];
    let at = usize::try_from(slot_offset(slot.generation)).unwrap_or(0);
    out[at..at + MARK_RECORD_LEN].copy_from_slice(&encode_mark(slot));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(generation: u64, seq: u64) -> MarkSlot {
        MarkSlot {
            generation,
            mark: Mark {
                last_seq: seq,
                link: [seq as u8; 32],
                snapshot: seq.is_multiple_of(2).then_some(seq),
            },
            genesis_hash: [7; 32],
        }
    }

    fn write(file: &mut [u8], s: &MarkSlot) {
        let at = slot_offset(s.generation) as usize;
        file[at..at + MARK_RECORD_LEN].copy_from_slice(&encode_mark(s));
    }

    #[test]
    fn newest_valid_slot_wins_and_a_torn_one_falls_back() {
        let mut file = new_mark_file(&slot(0, 0));
        assert_eq!(read_mark_file(&file).unwrap().newest, slot(0, 0));
        write(&mut file, &slot(1, 10));
        assert_eq!(read_mark_file(&file).unwrap().newest, slot(1, 10));
        write(&mut file, &slot(2, 20));
        assert_eq!(read_mark_file(&file).unwrap().newest, slot(2, 20));
        // A torn write of generation 3 (slot 1): half of the new record over the old.
        let new = encode_mark(&slot(3, 30));
        let at = MARK_SLOT_STRIDE as usize;
        file[at..at + 60].copy_from_slice(&new[..60]);
        let r = read_mark_file(&file).unwrap();
        assert_eq!(r.newest, slot(2, 20));
        assert!(r.other_damaged.is_some());
    }

    #[test]
    fn every_single_byte_flip_is_caught_or_harmless() {
        let mut file = new_mark_file(&slot(0, 0));
        write(&mut file, &slot(1, 10));
        write(&mut file, &slot(2, 20));
        for i in 0..file.len() {
            let mut f = file.clone();
            f[i] ^= 0xFF;
            match read_mark_file(&f) {
                // The newest survives, or the fallback is the previous generation.
                Ok(r) => assert!(r.newest == slot(2, 20) || r.newest == slot(1, 10), "{i}"),
                Err(_) => panic!("one flip made both slots unreadable at {i}"),
            }
        }
    }
}
