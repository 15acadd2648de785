//! Where a partition's stored offset may move: the pure rules behind every
//! write of a worker, with no I/O (unit-tested here, applied by `worker.rs`).
//!
//! The stored `next_offset` is the lowest offset not yet durably handled. It
//! never passes an event the ordering buffer still holds, nor one released
//! but not yet written; it passes a dead-lettered record only once its dead
//! letter is acknowledged.

use std::collections::BTreeSet;
use std::ops::Range;

/// A partition's offsets as its worker knows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Offset of the last record taken from the queue and handled.
    last_consumed: Option<i64>,
    /// The next offset the sink holds for the partition (`None`: never stored).
    committed: Option<i64>,
}

impl Progress {
    /// A partition whose sink holds `stored` as its next offset.
    pub fn new(stored: Option<i64>) -> Self {
        Self {
            last_consumed: None,
            committed: stored,
        }
    }

    /// The record at `offset` was handled (applied, held, dropped or dead-lettered).
    pub fn consumed(&mut self, offset: i64) {
        self.last_consumed = Some(offset);
    }

    /// A write stored `next` as the partition's next offset.
    pub fn committed(&mut self, next: i64) {
        self.committed = Some(next);
    }

    pub fn last_consumed(&self) -> Option<i64> {
        self.last_consumed
    }

    pub fn stored(&self) -> Option<i64> {
        self.committed
    }

    /// The offset of the next record to read: one past the last handled,
    /// else where the partition resumed.
    pub fn reading(&self) -> Option<i64> {
        self.last_consumed.map(|o| o + 1).or(self.committed)
    }

    /// The lowest offset not yet durably handled once everything released
    /// is written: one past the last handled record, or the lowest offset
    /// the buffer still holds if that is lower.
    pub fn next_offset(&self, min_held: Option<i64>) -> Option<i64> {
        let after_consumed = self.reading()?;
        Some(min_held.map_or(after_consumed, |held| held.min(after_consumed)))
    }

    /// How far a write may move the offset while events from `unwritten`
    /// offsets (and those held) are not yet written: never past any of them,
    /// nor back before the stored offset's floor.
    pub fn hold_offset(
        &self,
        min_held: Option<i64>,
        unwritten: impl IntoIterator<Item = i64>,
    ) -> Option<i64> {
        [self.committed, min_held, unwritten.into_iter().min()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether a write is due: something to write, or an offset to move.
    pub fn write_due(&self, next: i64, batch_empty: bool) -> bool {
        !batch_empty || Some(next) != self.committed
    }

    /// How a batch of events (given by their offsets, in write order) is
    /// cut into transactions of at most `max` events, and the next offset
    /// each stores: every part but the last holds the offset at the lowest
    /// offset not yet written (see [`Self::hold_offset`]); the last moves it
    /// to `next`.
    pub fn parts(
        &self,
        offsets: &[i64],
        max: usize,
        min_held: Option<i64>,
        next: i64,
    ) -> Vec<(Range<usize>, i64)> {
        let max = max.max(1);
        if offsets.len() <= max {
            return vec![(0..offsets.len(), next)];
        }
        // The lowest offset at or after each position, right to left.
        let mut lowest_after = vec![i64::MAX; offsets.len() + 1];
        for i in (0..offsets.len()).rev() {
            lowest_after[i] = lowest_after[i + 1].min(offsets[i]);
        }
        let mut parts = Vec::new();
        let mut start = 0;
        while offsets.len() - start > max {
            let end = start + max;
            let hold = self
                .hold_offset(min_held, Some(lowest_after[end]))
                .unwrap_or(next);
            parts.push((start..end, hold));
            start = end;
        }
        parts.push((start..offsets.len(), next));
        parts
    }
}

/// Offsets at or after the stored offset whose records are in the
/// dead-letter topic already: stored with the batches (and loaded with the
/// lease), so a record re-read after a restart is not sent again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterMarks {
    marks: BTreeSet<i64>,
}

impl DeadLetterMarks {
    pub fn new(stored: impl IntoIterator<Item = i64>) -> Self {
        Self {
            marks: stored.into_iter().collect(),
        }
    }

    /// Whether the record at `offset` was dead-lettered already.
    pub fn contains(&self, offset: i64) -> bool {
        self.marks.contains(&offset)
    }

    /// The record at `offset` was dead-lettered.
    pub fn insert(&mut self, offset: i64) {
        self.marks.insert(offset);
    }

    /// Whether stored marks lie below `next` (a write moving the offset
    /// there deletes them: the offset itself says they were handled).
    pub fn any_below(&self, next: i64) -> bool {
        self.marks.range(..next).next().is_some()
    }

    /// Forgets the marks below `next`, once it is stored.
    pub fn passed(&mut self, next: i64) {
        self.marks = self.marks.split_off(&next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_offset_never_passes_a_held_event() {
        let mut p = Progress::new(Some(10));
        assert_eq!(p.next_offset(None), Some(10), "nothing read: stays");
        p.consumed(14);
        assert_eq!(p.next_offset(None), Some(15));
        assert_eq!(p.next_offset(Some(12)), Some(12), "held at 12");
        assert_eq!(p.next_offset(Some(20)), Some(15));
        assert_eq!(p.reading(), Some(15));
    }

    #[test]
    fn a_partition_never_stored_has_no_offset_until_it_reads() {
        let mut p = Progress::new(None);
        assert_eq!(p.next_offset(None), None);
        assert_eq!(p.reading(), None);
        p.consumed(0);
        assert_eq!(p.next_offset(None), Some(1));
    }

    #[test]
    fn a_write_is_due_for_events_or_a_moved_offset() {
        let mut p = Progress::new(Some(5));
        assert!(!p.write_due(5, true));
        assert!(p.write_due(5, false));
        assert!(p.write_due(6, true));
        p.committed(6);
        assert!(!p.write_due(6, true));
        assert_eq!(p.stored(), Some(6));
    }

    #[test]
    fn the_hold_offset_is_the_lowest_of_stored_held_and_unwritten() {
        let p = Progress::new(Some(100));
        assert_eq!(p.hold_offset(None, [120, 110]), Some(100));
        let p = Progress::new(None);
        assert_eq!(p.hold_offset(None, []), None);
        assert_eq!(p.hold_offset(Some(7), [9, 8]), Some(7));
        assert_eq!(p.hold_offset(None, [9, 8]), Some(8));
    }

    #[test]
    fn a_batch_is_cut_into_parts_that_never_store_past_an_unwritten_event() {
        let mut p = Progress::new(Some(0));
        p.consumed(9);
        // One key's gap filled: its events were released out of offset order.
        let offsets = [5, 1, 2, 3, 4, 0, 6, 7, 8, 9];
        let parts = p.parts(&offsets, 4, None, 10);
        assert_eq!(
            parts,
            vec![(0..4, 0), (4..8, 0), (8..10, 10)],
            "the stored 0 is the floor"
        );
        let p = Progress::new(None);
        let parts = p.parts(&offsets, 4, None, 10);
        assert_eq!(parts, vec![(0..4, 0), (4..8, 8), (8..10, 10)]);
        let parts = p.parts(&offsets, 4, Some(3), 10);
        assert_eq!(parts, vec![(0..4, 0), (4..8, 3), (8..10, 10)]);
        // Within the limit: one part moving the offset.
        assert_eq!(p.parts(&offsets, 10, None, 10), vec![(0..10, 10)]);
        assert_eq!(p.parts(&[], 10, None, 3), vec![(0..0, 3)]);
    }

    #[test]
    fn every_part_stores_at_most_the_lowest_offset_after_it() {
        // Exhaustive over small permutations: each part's offset is at most
        // every offset of the events after it, and the last stores `next`.
        let base: Vec<i64> = (0..7).collect();
        let mut offsets = base.clone();
        for round in 0..500u64 {
            // A deterministic shuffle.
            let mut x = round.wrapping_mul(6364136223846793005).wrapping_add(1);
            for i in (1..offsets.len()).rev() {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                offsets.swap(i, (x >> 33) as usize % (i + 1));
            }
            for max in 1..=7 {
                let p = Progress::new(None);
                let parts = p.parts(&offsets, max, None, 7);
                let covered: Vec<usize> = parts.iter().flat_map(|(r, _)| r.clone()).collect();
                assert_eq!(covered, (0..7).collect::<Vec<_>>());
                for (range, stored) in &parts[..parts.len() - 1] {
                    let later = offsets[range.end..].iter().min().unwrap();
                    assert!(stored <= later, "{offsets:?} max {max}: {parts:?}");
                    assert!(range.len() == max);
                }
                assert_eq!(parts.last().unwrap().1, 7);
            }
        }
        assert_eq!(base.len(), 7);
    }

    #[test]
    fn dead_letter_marks_are_kept_until_the_offset_passes_them() {
        let mut m = DeadLetterMarks::new([5, 9]);
        assert!(m.contains(5) && m.contains(9) && !m.contains(7));
        m.insert(7);
        assert!(m.any_below(8));
        assert!(!m.any_below(5));
        m.passed(8);
        assert!(!m.contains(5) && !m.contains(7) && m.contains(9));
        assert!(!m.any_below(9));
    }
}
