//! Each source record once: a record can be lettered twice (see the README's
//! dead-letter section: a crash between the broker's acknowledgement and the
//! commit, or an old owner's send acknowledged just before its fence), so
//! `ordo dlq inspect`, `ordo dlq replay` and `ordo_dlq_depth_records` count
//! letters by the source record they carry (`ordo.source.topic`,
//! `ordo.source.partition`, `ordo.source.offset`), not one by one. A letter
//! without those headers (written by something else) is its own source.

use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use rdkafka::message::{Headers, Message};

use super::headers;

/// The record a letter is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    /// The source coordinates the letter's headers carry.
    Record {
        topic: String,
        partition: i32,
        offset: i64,
    },
    /// A letter without them: only itself (its dead-letter coordinates).
    Letter { partition: i32, offset: i64 },
}

impl Source {
    /// The source of the letter at `partition`/`offset` of a dead-letter
    /// topic with these header values.
    pub fn new(
        topic: Option<&str>,
        source_partition: Option<i32>,
        source_offset: Option<i64>,
        partition: i32,
        offset: i64,
    ) -> Source {
        match (topic, source_partition, source_offset) {
            (Some(topic), Some(p), Some(o)) => Source::Record {
                topic: topic.to_string(),
                partition: p,
                offset: o,
            },
            _ => Source::Letter { partition, offset },
        }
    }

    /// The source of a letter read from a dead-letter topic.
    pub fn of_message(m: &impl Message) -> Source {
        let (mut topic, mut partition, mut offset) = (None, None, None);
        if let Some(hs) = m.headers() {
            for h in hs.iter() {
                let Some(value) = h.value.and_then(|v| std::str::from_utf8(v).ok()) else {
                    continue;
                };
                match h.key {
                    headers::SOURCE_TOPIC => topic = Some(value),
                    headers::SOURCE_PARTITION => partition = value.parse().ok(),
                    headers::SOURCE_OFFSET => offset = value.parse().ok(),
                    _ => {}
                }
            }
        }
        Source::new(topic, partition, offset, m.partition(), m.offset())
    }

    /// A 64-bit digest, for counting many sources in little memory.
    pub fn digest(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

/// The letters of one dead-letter partition the replay group has not
/// handled, by offset, as source digests.
#[derive(Debug, Default)]
struct Unhandled {
    /// The next offset to read.
    read_to: i64,
    letters: BTreeMap<i64, u64>,
}

/// `ordo_dlq_depth_records` of one dead-letter topic: the source records
/// among the letters the replay group has not handled. Fed incrementally
/// (each measurement reads only the letters written since the last one); a
/// letter not read yet counts as a source of its own, so the depth is never
/// below the truth while a large topic is being read.
#[derive(Debug, Default)]
pub struct Depth {
    partitions: BTreeMap<i32, Unhandled>,
}

/// Letters remembered per topic at most; beyond, the rest count one by one.
pub const MAX_REMEMBERED: usize = 2_000_000;

impl Depth {
    /// Forgets what the group handled (or retention removed) on `partition`,
    /// whose offsets now run from `low` to `high`; returns the offset to read
    /// from, or `None` when there is nothing to read.
    pub fn prune(
        &mut self,
        partition: i32,
        low: i64,
        high: i64,
        handled: &super::handled::Handled,
    ) -> Option<i64> {
        let u = self.partitions.entry(partition).or_default();
        if high < u.read_to {
            // The topic was recreated: start over.
            *u = Unhandled::default();
        }
        let first = low.max(handled.next());
        u.read_to = u.read_to.max(first);
        u.letters = u
            .letters
            .split_off(&first)
            .into_iter()
            .filter(|(offset, _)| !handled.is_handled(*offset))
            .collect();
        let (read_to, more) = (u.read_to, u.read_to < high);
        (more && self.remembered() < MAX_REMEMBERED).then_some(read_to)
    }

    /// Adds a letter read at `partition`/`offset`; `handled` when the group
    /// handled it already.
    pub fn add(&mut self, partition: i32, offset: i64, source: &Source, handled: bool) {
        let u = self.partitions.entry(partition).or_default();
        if offset < u.read_to {
            return;
        }
        u.read_to = offset + 1;
        if !handled {
            u.letters.insert(offset, source.digest());
        }
    }

    /// Letters remembered, all partitions together.
    pub fn remembered(&self) -> usize {
        self.partitions.values().map(|u| u.letters.len()).sum()
    }

    /// The depth, given each partition's high watermark.
    pub fn depth(&self, highs: &BTreeMap<i32, i64>) -> i64 {
        let distinct: HashSet<u64> = self
            .partitions
            .values()
            .flat_map(|u| u.letters.values().copied())
            .collect();
        let unread: i64 = highs
            .iter()
            .map(|(p, high)| {
                let read_to = self.partitions.get(p).map_or(0, |u| u.read_to);
                (high - read_to).max(0)
            })
            .sum();
        distinct.len() as i64 + unread
    }
}

#[cfg(test)]
mod tests {
    use super::super::handled::Handled;
    use super::*;

    fn src(offset: i64) -> Source {
        Source::new(Some("orders"), Some(0), Some(offset), 0, 0)
    }

    #[test]
    fn a_letter_without_source_headers_is_its_own_source() {
        assert_eq!(
            Source::new(Some("orders"), None, Some(3), 1, 9),
            Source::Letter {
                partition: 1,
                offset: 9
            }
        );
        assert_ne!(src(1).digest(), src(2).digest());
        assert_eq!(src(1).digest(), src(1).digest());
    }

    #[test]
    fn two_letters_of_one_source_count_once_until_handled() {
        let mut d = Depth::default();
        let none = Handled::committed(0, "");
        assert_eq!(d.prune(0, 0, 4, &none), Some(0));
        // Letters 0..4: sources 10, 11, 10 (a copy), 12.
        for (offset, s) in [(0, 10), (1, 11), (2, 10), (3, 12)] {
            d.add(0, offset, &src(s), false);
        }
        let highs = BTreeMap::from([(0, 4)]);
        assert_eq!(d.depth(&highs), 3);
        // Nothing new to read; a read again of offset 1 is ignored.
        assert_eq!(d.prune(0, 0, 4, &none), None);
        d.add(0, 1, &src(11), false);
        assert_eq!(d.depth(&highs), 3);
        // The group handled letters 0 and 1 (committed at 2): the copy at 2
        // of source 10 still counts, once.
        let handled = Handled::committed(2, "");
        assert_eq!(d.prune(0, 0, 4, &handled), None);
        assert_eq!(d.depth(&highs), 2);
        // Handled above the committed offset: 2 and 3 (metadata ranges).
        let handled = Handled::committed(0, "ordo.handled.v1:0-3");
        d.prune(0, 0, 4, &handled);
        assert_eq!(d.depth(&highs), 0);
    }

    #[test]
    fn letters_not_read_yet_count_one_by_one_across_partitions() {
        let mut d = Depth::default();
        let none = Handled::committed(0, "");
        assert_eq!(d.prune(0, 0, 2, &none), Some(0));
        assert_eq!(d.prune(1, 5, 8, &none), Some(5));
        d.add(0, 0, &src(1), false);
        d.add(1, 5, &src(1), false);
        // Partition 0 read to 1 of 2, partition 1 to 6 of 8: one source
        // read (twice) and three letters unread.
        let highs = BTreeMap::from([(0, 2), (1, 8)]);
        assert_eq!(d.depth(&highs), 4);
        // Retention removed partition 1's letters below 7.
        assert_eq!(d.prune(1, 7, 8, &none), Some(7));
        assert_eq!(d.depth(&highs), 3);
    }

    #[test]
    fn a_recreated_topic_is_read_again() {
        let mut d = Depth::default();
        let none = Handled::committed(0, "");
        d.prune(0, 0, 3, &none);
        for o in 0..3 {
            d.add(0, o, &src(o), false);
        }
        assert_eq!(d.prune(0, 0, 1, &none), Some(0));
        assert_eq!(d.depth(&BTreeMap::from([(0, 1)])), 1);
    }
}
