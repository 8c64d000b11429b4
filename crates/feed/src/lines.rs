//! Bounded line reading from plain or gzip files.
//!
//! Owns opening a recorded file (gzip recognised by its magic bytes `1f 8b`, anything
//! else read as plain text; concatenated gzip members are read through) and splitting it
//! into lines with one reused buffer. Must never hold more than one line (at most the
//! limit) in memory, whatever the file size, nor interpret the content.

use flate2::bufread::MultiGzDecoder;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Longest line kept (bytes, without the newline). Binance depth snapshots of 1000 levels
/// per side are about 50 KB; live frames are far smaller.
pub const DEFAULT_MAX_LINE: usize = 4 << 20;

/// Opens `path` for reading, decompressing when the file starts with the gzip magic.
pub fn open_maybe_gzip(path: &Path) -> std::io::Result<Box<dyn BufRead + Send>> {
    let file = std::fs::File::open(path)?;
    maybe_gzip(BufReader::with_capacity(1 << 16, file))
}

/// Wraps a reader, decompressing when its first bytes are the gzip magic.
pub fn maybe_gzip<R: BufRead + Send + 'static>(
    mut r: R,
) -> std::io::Result<Box<dyn BufRead + Send>> {
    // fill_buf may return fewer than two bytes only at the end of the input (a BufReader
    // over a file fills its buffer as far as it can).
    let head = r.fill_buf()?;
    if head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b {
        Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            MultiGzDecoder::new(r),
        )))
    } else {
        Ok(Box::new(r))
    }
}

/// One step of [`LineReader::next_line`].
#[derive(Debug, PartialEq, Eq)]
pub enum LineRead {
    /// A line is in the buffer (without its `\n` or `\r\n`).
    Line,
    /// A line longer than the limit was skipped; the buffer is empty.
    TooLong,
    /// End of input.
    Eof,
}

/// Splits a reader into lines with a bounded, reused buffer.
pub struct LineReader<R> {
    inner: R,
    max_line: usize,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R, max_line: usize) -> Self {
        Self { inner, max_line }
    }

    /// Reads the next line into `buf` (cleared first). A last line without a newline is
    /// still a line.
    pub fn next_line(&mut self, buf: &mut Vec<u8>) -> std::io::Result<LineRead> {
        buf.clear();
        let mut too_long = false;
        let mut saw_any = false;
        loop {
            let chunk = match self.inner.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if chunk.is_empty() {
                if !saw_any {
                    return Ok(LineRead::Eof);
                }
                break;
            }
            saw_any = true;
            let (part, used, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], i + 1, true),
                None => (chunk, chunk.len(), false),
            };
            if !too_long {
                if buf.len() + part.len() > self.max_line {
                    too_long = true;
                    buf.clear();
                } else {
                    buf.extend_from_slice(part);
                }
            }
            self.inner.consume(used);
            if done {
                break;
            }
        }
        if too_long {
            return Ok(LineRead::TooLong);
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        Ok(LineRead::Line)
    }
}

/// Reads a whole (small) reader into lines; for tests.
pub fn read_all_lines<R: Read>(r: R) -> std::io::Result<Vec<String>> {
    let mut lr = LineReader::new(BufReader::new(r), DEFAULT_MAX_LINE);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    loop {
        match lr.next_line(&mut buf)? {
            LineRead::Line => out.push(String::from_utf8_lossy(&buf).into_owned()),
            LineRead::TooLong => out.push(String::new()),
            LineRead::Eof => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn splits_lines_and_skips_long_ones() {
        let data = b"ab\r\ncdefgh\nij\nk".to_vec();
        let mut lr = LineReader::new(std::io::BufReader::with_capacity(2, &data[..]), 4);
        let mut buf = Vec::new();
        assert_eq!(lr.next_line(&mut buf).unwrap(), LineRead::Line);
        assert_eq!(buf, b"ab");
        assert_eq!(lr.next_line(&mut buf).unwrap(), LineRead::TooLong);
        assert!(buf.is_empty());
        assert_eq!(lr.next_line(&mut buf).unwrap(), LineRead::Line);
        assert_eq!(buf, b"ij");
        assert_eq!(lr.next_line(&mut buf).unwrap(), LineRead::Line);
        assert_eq!(buf, b"k");
        assert_eq!(lr.next_line(&mut buf).unwrap(), LineRead::Eof);
    }

    #[test]
    fn gzip_is_detected_by_magic() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"one\ntwo\n").unwrap();
        let gz = enc.finish().unwrap();
        let r = maybe_gzip(std::io::BufReader::new(std::io::Cursor::new(gz))).unwrap();
        assert_eq!(read_all_lines(r).unwrap(), vec!["one", "two"]);
        let plain = maybe_gzip(std::io::BufReader::new(std::io::Cursor::new(
            b"one\ntwo\n".to_vec(),
        )))
        .unwrap();
        assert_eq!(read_all_lines(plain).unwrap(), vec!["one", "two"]);
    }
}
