//! A replay group's progress on one dead-letter partition: the first letter
//! not yet handled (the group's committed offset) and the letters above it
//! that were handled already (replayed, or skipped on request), kept as
//! offset ranges in the commit's metadata. A filtered replay thus never moves
//! the committed offset past a letter it left alone, and a later replay does
//! not send again what an earlier one sent.

use std::collections::BTreeMap;

/// Marks metadata written by Ordo (version 1 of its format).
const PREFIX: &str = "ordo.handled.v1:";
/// Kafka brokers refuse commit metadata above `offset.metadata.max.bytes`
/// (4096 by default).
pub const MAX_METADATA_BYTES: usize = 4000;

/// The progress on one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Handled {
    /// Every offset below it is handled.
    next: i64,
    /// Handled ranges above `next` (inclusive, disjoint, not touching `next`),
    /// by first offset.
    above: BTreeMap<i64, i64>,
}

impl Handled {
    /// The progress committed at `next` with `metadata` (anything not written
    /// by Ordo, or malformed, counts as no letters handled above `next`).
    pub fn committed(next: i64, metadata: &str) -> Self {
        let mut p = Handled {
            next,
            above: BTreeMap::new(),
        };
        let Some(ranges) = metadata.strip_prefix(PREFIX) else {
            return p;
        };
        let mut parsed: Vec<(i64, i64)> = Vec::new();
        for range in ranges.split(',').filter(|r| !r.is_empty()) {
            let bounds: Option<(i64, i64)> = match range.split_once('-') {
                Some((a, b)) => a.parse().ok().zip(b.parse().ok()),
                None => range.parse().ok().map(|o| (o, o)),
            };
            match bounds {
                Some((first, last)) if first <= last => parsed.push((first, last)),
                _ => return Handled::committed(next, ""),
            }
        }
        parsed.sort_unstable();
        for (first, last) in parsed {
            p.handle_range(first, last);
        }
        p
    }

    /// Marks `first..=last` handled, given ranges arriving in ascending order
    /// of `first`.
    fn handle_range(&mut self, first: i64, last: i64) {
        if first <= self.next {
            self.next = self.next.max(last + 1);
            return;
        }
        if let Some(mut prev) = self.above.last_entry() {
            if first <= *prev.get() + 1 {
                let l = prev.get_mut();
                *l = (*l).max(last);
                return;
            }
        }
        self.above.insert(first, last);
    }

    /// The first offset not handled: what is committed.
    pub fn next(&self) -> i64 {
        self.next
    }

    /// True when the letter at `offset` was handled.
    pub fn is_handled(&self, offset: i64) -> bool {
        offset < self.next
            || self
                .above
                .range(..=offset)
                .next_back()
                .is_some_and(|(_, &last)| offset <= last)
    }

    /// Marks the letter at `offset` handled.
    pub fn handle(&mut self, offset: i64) {
        if self.is_handled(offset) {
            return;
        }
        let mut first = offset;
        let mut last = offset;
        if let Some((&f, &l)) = self.above.range(..offset).next_back() {
            if l + 1 == offset {
                first = f;
                self.above.remove(&f);
            }
        }
        if let Some(l) = self.above.remove(&(offset + 1)) {
            last = l;
        }
        if first == self.next {
            self.next = last + 1;
        } else {
            self.above.insert(first, last);
        }
    }

    /// Letters handled above the committed offset, below `end`.
    pub fn handled_above(&self, end: i64) -> i64 {
        self.above
            .iter()
            .filter(|(&f, _)| f < end)
            .map(|(&f, &l)| l.min(end - 1) - f + 1)
            .sum()
    }

    /// The commit's metadata.
    pub fn metadata(&self) -> String {
        if self.above.is_empty() {
            return String::new();
        }
        let ranges: Vec<String> = self
            .above
            .iter()
            .map(|(f, l)| {
                if f == l {
                    f.to_string()
                } else {
                    format!("{f}-{l}")
                }
            })
            .collect();
        format!("{PREFIX}{}", ranges.join(","))
    }

    /// True when marking `offset` handled keeps the metadata within
    /// [`MAX_METADATA_BYTES`].
    pub fn can_handle(&self, offset: i64) -> bool {
        let mut after = self.clone();
        after.handle(offset);
        after.metadata().len() <= MAX_METADATA_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_offset_stops_at_the_first_letter_not_handled() {
        let mut p = Handled::committed(10, "");
        p.handle(11);
        p.handle(13);
        assert_eq!(p.next(), 10);
        assert!(p.is_handled(11) && p.is_handled(13) && !p.is_handled(12));
        assert_eq!(p.metadata(), "ordo.handled.v1:11,13");
        assert_eq!(p.handled_above(100), 2);
        p.handle(12);
        assert_eq!(p.metadata(), "ordo.handled.v1:11-13");
        p.handle(10);
        assert_eq!((p.next(), p.metadata()), (14, String::new()));
    }

    #[test]
    fn metadata_round_trips_and_foreign_metadata_is_ignored() {
        let mut p = Handled::committed(0, "");
        for o in [2, 3, 4, 7, 9, 10] {
            p.handle(o);
        }
        let again = Handled::committed(0, &p.metadata());
        assert_eq!(again, p);
        assert_eq!(again.handled_above(10), 5);
        assert_eq!(
            Handled::committed(5, "written by someone else"),
            Handled::committed(5, "")
        );
        assert_eq!(
            Handled::committed(5, "ordo.handled.v1:9-x"),
            Handled::committed(5, "")
        );
    }

    #[test]
    fn metadata_stays_within_the_brokers_limit() {
        let mut p = Handled::committed(0, "");
        let mut o = 1;
        while p.can_handle(o) {
            p.handle(o);
            o += 2;
        }
        assert!(p.metadata().len() <= MAX_METADATA_BYTES);
        assert!(o > 500);
    }
}
