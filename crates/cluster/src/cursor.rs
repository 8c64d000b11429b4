//! The node's cursor: which stream message its journal has reached, with the
//! de-duplication table at that point.
//!
//! Owns: the `cursor` file next to the node's journal (layout below), written as a new
//! file renamed over the old one. Must never: claim a position the journal has not made
//! durable (the node writes it only after the journal's commit returned), or be trusted
//! without its checksum.
//!
//! The cursor is a lower bound, not the source of truth: after a restart the node
//! re-reads the stream from the cursor's message on and checks each command against its
//! journal until the journal's end (docs/CLUSTER.md, "Restart"). A stale cursor (a power
//! loss after the rename was lost) only makes that re-read longer; a missing or damaged
//! one makes it start at the stream's first message.
//!
//! Layout (little-endian): magic `PCCU`, u16 version (1), u16 reserved (0), u16 stream
//! name length + its bytes, u64 stream_seq, u64 engine_seq, u64 last_ts_ns, 32-byte
//! journal chain link at engine_seq, the admission table (`Admission::encode`), and a
//! 32-byte blake3 of everything before it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::admission::Admission;

const MAGIC: [u8; 4] = *b"PCCU";
const VERSION: u16 = 1;
/// The file's name in the node directory.
pub const CURSOR_FILE: &str = "cursor";

/// A position in both logs: after stream message `stream_seq`, the journal's last
/// command is `engine_seq` with timestamp `last_ts_ns` and chain link `link`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub stream: String,
    pub stream_seq: u64,
    pub engine_seq: u64,
    pub last_ts_ns: u64,
    pub link: [u8; 32],
    pub admission: Admission,
}

/// Why a cursor file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error("cursor {path:?}: {what}")]
    Damaged { path: PathBuf, what: &'static str },
    #[error("cursor {path:?}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Cursor {
    /// The encoded file contents.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        let name = self.stream.as_bytes();
        let len = u16::try_from(name.len()).expect("stream names are short");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&self.stream_seq.to_le_bytes());
        out.extend_from_slice(&self.engine_seq.to_le_bytes());
        out.extend_from_slice(&self.last_ts_ns.to_le_bytes());
        out.extend_from_slice(&self.link);
        self.admission.encode(&mut out);
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// Decodes `encode`'s output; the reason on anything else.
    pub fn decode(bytes: &[u8]) -> Result<Self, &'static str> {
        if bytes.len() < 4 + 2 + 2 + 2 + 24 + 32 + 4 + 32 {
            return Err("too short");
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err("checksum mismatch");
        }
        if body[0..4] != MAGIC {
            return Err("not a cursor (magic)");
        }
        if u16::from_le_bytes([body[4], body[5]]) != VERSION {
            return Err("unknown cursor version");
        }
        if body[6..8] != [0, 0] {
            return Err("reserved bytes are not zero");
        }
        let name_len = u16::from_le_bytes([body[8], body[9]]) as usize;
        let rest = body.get(10..).ok_or("too short")?;
        if rest.len() < name_len + 24 + 32 {
            return Err("too short");
        }
        let stream = std::str::from_utf8(&rest[..name_len])
            .map_err(|_| "stream name is not UTF-8")?
            .to_string();
        let rest = &rest[name_len..];
        let u64_at = |at: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&rest[at..at + 8]);
            u64::from_le_bytes(a)
        };
        let mut link = [0u8; 32];
        link.copy_from_slice(&rest[24..56]);
        let admission = Admission::decode(&rest[56..]).ok_or("damaged admission table")?;
        Ok(Cursor {
            stream,
            stream_seq: u64_at(0),
            engine_seq: u64_at(8),
            last_ts_ns: u64_at(16),
            link,
            admission,
        })
    }

    /// Reads the cursor in `dir`: `Ok(None)` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Self>, CursorError> {
        let path = dir.join(CURSOR_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(CursorError::Io { path, source }),
        };
        Cursor::decode(&bytes)
            .map(Some)
            .map_err(|what| CursorError::Damaged { path, what })
    }

    /// Writes the cursor to `dir/cursor.tmp`, fdatasyncs it and renames it over
    /// `dir/cursor`. The directory is not fsynced: a rename lost to a power loss leaves
    /// the previous cursor, which is still a valid lower bound.
    pub fn store(&self, dir: &Path) -> Result<(), CursorError> {
        let tmp = dir.join("cursor.tmp");
        let path = dir.join(CURSOR_FILE);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CursorError::Io { path, source }
        };
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&self.encode()).map_err(io(&tmp))?;
        f.sync_data().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ProducerId;

    fn sample() -> Cursor {
        let mut admission = Admission::new();
        admission.admit(ProducerId([3; 16]), 5, 99);
        Cursor {
            stream: "PERPCORE".into(),
            stream_seq: 77,
            engine_seq: 1234,
            last_ts_ns: 1_700_000_000_000_000_000,
            link: [9; 32],
            admission,
        }
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Cursor::load(dir.path()).unwrap().is_none());
        let c = sample();
        c.store(dir.path()).unwrap();
        assert_eq!(Cursor::load(dir.path()).unwrap(), Some(c.clone()));
        let mut d = c;
        d.stream_seq = 78;
        d.store(dir.path()).unwrap();
        assert_eq!(Cursor::load(dir.path()).unwrap().unwrap().stream_seq, 78);
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x20;
            assert!(Cursor::decode(&b).is_err(), "byte {i}");
        }
        assert!(Cursor::decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
