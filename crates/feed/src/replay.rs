//! Recorded files → a stream of commands: readers, the merge by exchange time and the
//! converter, composed.
//!
//! Owns nothing but the composition and the combined statistics. Must never load a file
//! whole (memory stays constant whatever the file sizes: one line and one pending message
//! per file, the bounded books) or stop on bad input.

use crate::convert::{ConvertOptions, Converter, FeedItem};
use crate::merge::Merge;
use crate::reader::{Reader, ReaderOptions};
use crate::stats::FeedStats;
use crate::FeedError;
use perpcore_types::Config;
use std::collections::VecDeque;
use std::path::PathBuf;

/// Commands from several recorded files merged by exchange time.
pub struct Replay {
    merge: Merge<Reader>,
    converter: Converter,
    pending: VecDeque<FeedItem>,
    scratch: Vec<FeedItem>,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("sources", &self.merge.sources())
            .finish()
    }
}

impl Replay {
    /// Opens every file (an unreadable file is an error before anything is read).
    pub fn open(
        paths: &[PathBuf],
        config: &Config,
        reader: ReaderOptions,
        convert: ConvertOptions,
    ) -> Result<Replay, FeedError> {
        let mut readers = Vec::with_capacity(paths.len());
        for (i, p) in paths.iter().enumerate() {
            let source = u16::try_from(i).map_err(|_| FeedError::TooManySources(paths.len()))?;
            readers.push(Reader::open(p, source, reader.clone())?);
        }
        Ok(Self::from_readers(readers, config, convert))
    }

    pub fn from_readers(readers: Vec<Reader>, config: &Config, convert: ConvertOptions) -> Replay {
        Replay {
            merge: Merge::new(readers),
            converter: Converter::new(config, convert),
            pending: VecDeque::new(),
            scratch: Vec::new(),
        }
    }

    /// Everything counted so far: every source's reading problems plus conversion.
    pub fn stats(&self) -> FeedStats {
        let mut s = FeedStats::default();
        for r in self.merge.sources() {
            s.add(r.stats());
        }
        s.add(self.converter.stats());
        s
    }

    /// Per-source statistics, with the source names.
    pub fn source_stats(&self) -> Vec<(String, FeedStats)> {
        self.merge
            .sources()
            .iter()
            .map(|r| (r.name().to_string(), r.stats().clone()))
            .collect()
    }

    /// Lines read so far over all files (for progress).
    pub fn lines_read(&self) -> u64 {
        self.merge.lines_read()
    }

    pub fn converter(&self) -> &Converter {
        &self.converter
    }

    /// What a person reads about the input: per file "NAME: L lines, M messages, no
    /// problems" (or "problems: kind n, …"), then "converting: kind n, …" if the
    /// conversion had any.
    pub fn problem_lines(&self) -> Vec<String> {
        let list = |problems: &std::collections::BTreeMap<&'static str, u64>| -> String {
            let parts: Vec<String> = problems.iter().map(|(k, v)| format!("{k} {v}")).collect();
            parts.join(", ")
        };
        let mut lines: Vec<String> = self
            .source_stats()
            .iter()
            .map(|(name, s)| {
                let r = s.report();
                let problems = if r.problems.is_empty() {
                    "no problems".to_string()
                } else {
                    format!("problems: {}", list(&r.problems))
                };
                format!(
                    "{name}: {} lines, {} messages, {problems}",
                    s.lines,
                    s.total_messages()
                )
            })
            .collect();
        let conversion = self.converter.stats().report();
        if !conversion.problems.is_empty() {
            lines.push(format!("converting: {}", list(&conversion.problems)));
        }
        lines
    }
}

impl Iterator for Replay {
    type Item = FeedItem;

    fn next(&mut self) -> Option<FeedItem> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            let msg = self.merge.next()?;
            self.converter.convert(msg, &mut self.scratch);
            self.pending.extend(self.scratch.drain(..));
        }
    }
}
