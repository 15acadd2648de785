//! Ordering, inside the partition machine: a decoded event is offered to the
//! sequence buffer (released events join the batch), an event of a key not
//! known yet is parked, and after each event the bound policy is applied.

use super::{Item, Letter, Note, Origin, Outcome, Partition};
use crate::order::{BoundPolicy, Offer};
use crate::record::Event;

impl Partition {
    /// Orders one decoded record of a run.
    pub(super) fn place_item(&mut self, item: Item) {
        let offset = match item {
            Item::Skipped(offset) => offset,
            Item::Fresh(event) => {
                let offset = event.offset;
                if let Some(event) = self.place(event) {
                    // Its key's state is read with the others' before the batch is written.
                    self.parked.push(event);
                }
                offset
            }
            Item::Learned(event) => {
                if let Some(event) = self.place(event) {
                    // Every parked key was just learned: a bug if not.
                    let reason = format!(
                        "key `{}` was offered before its last applied sequence was loaded",
                        event.key
                    );
                    return self.stop(reason, event.source);
                }
                return self.enforce_bounds();
            }
        };
        self.counts.consumed += 1;
        self.progress.consumed(offset);
        self.dirty_since.get_or_insert(self.now);
        self.enforce_bounds();
    }

    /// Offers an event to the buffer and counts what became of it; an event
    /// of a key the buffer does not know yet comes back.
    fn place(&mut self, event: Event) -> Option<Event> {
        let offset = event.offset;
        let event_type = event.event_type.clone();
        match self.buffer.offer(event, self.now, &mut self.batch.events) {
            Offer::Unknown(event) => return Some(event),
            Offer::Released(n) => self.counts.released += n as u64,
            Offer::Held => {}
            Offer::ReplayedLate => self.counts.replayed_late += 1,
            Offer::Waits {
                key,
                expected,
                received,
            } => self.note(Note::KeyWaiting {
                key,
                expected,
                received,
                offset,
            }),
            Offer::BelowFirst {
                key,
                first,
                received,
            } => {
                self.counts.stale += 1;
                self.typed.add(event_type.as_ref(), Outcome::Stale, 1);
                self.note(Note::BelowFirst {
                    key,
                    first,
                    received,
                    offset,
                });
            }
            Offer::Duplicate => {
                self.counts.duplicates += 1;
                self.typed.add(event_type.as_ref(), Outcome::Duplicate, 1);
            }
            Offer::Stale => {
                self.counts.stale += 1;
                self.typed.add(event_type.as_ref(), Outcome::Stale, 1);
            }
        }
        None
    }

    /// Applies the bound policy (`ordering.on_bound`) once an event was offered.
    pub(super) fn enforce_bounds(&mut self) {
        let now = self.now;
        match self.cfg.policy {
            BoundPolicy::DeadLetter => {
                while let Some(bound) = self.buffer.exceeded(now) {
                    let Some((key, expected, events)) = self.buffer.take_oldest() else {
                        break;
                    };
                    for event in events {
                        let Some(record) = event.source.clone() else {
                            continue;
                        };
                        let why = format!(
                            "{}: key {key} sequence {} waited for sequence {expected} past the ordering bound {} (ordering.on_bound = dead_letter)",
                            record.location(),
                            event.sequence,
                            bound.as_str()
                        );
                        let letter = Letter {
                            record,
                            key: Some(event.key),
                            masked: Some(event.payload),
                            why: why.clone(),
                            event_type: event.event_type,
                            route: None,
                        };
                        self.letters.push_back((letter, Origin::Bound { why }));
                    }
                }
            }
            BoundPolicy::Skip => {
                while let Some(bound) = self.buffer.exceeded(now) {
                    let Some(gap) = self.buffer.skip_oldest(bound, &mut self.batch.events) else {
                        break;
                    };
                    self.counts.gaps += 1;
                    self.note(Note::GapSkipped(gap.clone()));
                    self.batch.gaps.push(gap);
                    self.dirty_since.get_or_insert(now);
                }
            }
            BoundPolicy::Wait => {
                if self.flow.state() != super::State::Running {
                    return;
                }
                let Some(bound) = self.buffer.full_at() else {
                    return;
                };
                self.note(Note::BufferFull {
                    bound,
                    held_events: self.buffer.held_events(),
                    held_bytes: self.buffer.held_bytes(),
                    oldest_offset: self.buffer.min_held_offset(),
                });
                let action = self.flow.buffer_full();
                self.apply(action);
            }
        }
    }
}
