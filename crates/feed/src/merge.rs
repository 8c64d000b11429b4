//! K-way merge of several message sources by exchange time, streaming.
//!
//! Owns the interleaving: it always yields the head with the smallest
//! `(exchange_ns, source index)`, holding exactly one message per source. Must never
//! reorder messages within a source (each source's order is its recorded order), buffer
//! more than one message per source, or drop anything.

use crate::reader::{Message, Reader};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Merges sources by exchange time; ties go to the lower source index.
pub struct Merge<S: Iterator<Item = Message>> {
    sources: Vec<S>,
    heads: Vec<Option<Message>>,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    started: bool,
}

impl<S: Iterator<Item = Message>> Merge<S> {
    pub fn new(sources: Vec<S>) -> Self {
        let n = sources.len();
        Self {
            sources,
            heads: (0..n).map(|_| None).collect(),
            heap: BinaryHeap::with_capacity(n),
            started: false,
        }
    }

    pub fn sources(&self) -> &[S] {
        &self.sources
    }

    fn pull(&mut self, i: usize) {
        if let Some(m) = self.sources[i].next() {
            self.heap.push(Reverse((m.exchange_ns, i)));
            self.heads[i] = Some(m);
        }
    }
}

impl Merge<Reader> {
    /// Lines read so far over all sources (for progress).
    pub fn lines_read(&self) -> u64 {
        self.sources.iter().map(Reader::lines_read).sum()
    }
}

impl<S: Iterator<Item = Message>> Iterator for Merge<S> {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        if !self.started {
            self.started = true;
            for i in 0..self.sources.len() {
                self.pull(i);
            }
        }
        let Reverse((_, i)) = self.heap.pop()?;
        let m = self.heads[i].take();
        self.pull(i);
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Body;
    use perpcore_types::Price;

    fn msg(source: u16, t: u64) -> Message {
        Message {
            source,
            line: t,
            local_ts: 0,
            exchange_ns: t,
            body: Body::Trade {
                symbol: "X".into(),
                price: Price::ONE,
                aggregated: false,
            },
        }
    }

    #[test]
    fn merges_by_time_and_keeps_source_order() {
        let a = vec![msg(0, 1), msg(0, 5), msg(0, 3), msg(0, 9)];
        let b = vec![msg(1, 2), msg(1, 5), msg(1, 6)];
        let out: Vec<(u16, u64)> = Merge::new(vec![a.into_iter(), b.into_iter()])
            .map(|m| (m.source, m.exchange_ns))
            .collect();
        // a's 5 then 3 stay in a's order; the tie at 5 goes to source 0.
        assert_eq!(
            out,
            vec![(0, 1), (1, 2), (0, 5), (0, 3), (1, 5), (1, 6), (0, 9)]
        );
    }
}
