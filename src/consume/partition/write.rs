//! Writing, inside the partition machine. A flush reads the state of the
//! parked events' keys (one lookup) and orders those events, then cuts the
//! batch into transactions of at most `sink.batch_max_events` events (every
//! part but the last holds the stored offset where no event not yet written
//! is passed), and writes them one after the other. A part the sink refuses
//! for its data is written again event by event, the stored offset held; each
//! event refused alone goes to the dead-letter topic, and the part's progress
//! is written last.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::{Effect, Item, Letter, Note, Op, Origin, Outcome, Partition, Then, TypeCounts};
use crate::order::Gap;
use crate::record::Event;
use crate::sink::{Batch, SinkError, Written};

/// A flush under way.
#[derive(Debug)]
pub(super) struct Flush {
    /// Writes are retried until then (a drain's), if given.
    deadline: Option<Instant>,
    /// What follows once everything is written.
    then: Then,
    stage: Stage,
}

#[derive(Debug)]
enum Stage {
    /// The parked events' keys are to be read.
    Start,
    /// Their state is being read.
    Keys,
    /// The batch is to be cut into parts.
    Plan,
    Writing(Writing),
}

/// The parts of a batch being written.
#[derive(Debug)]
struct Writing {
    /// The parts after the current one: their number of events, and the
    /// offset each stores.
    parts: VecDeque<(usize, i64)>,
    /// Their events, in order.
    rest: std::vec::IntoIter<Event>,
    /// The offset the current part stores.
    stored: i64,
    /// The current part was refused: its events go one at a time.
    refusal: Option<Refusal>,
    /// The current part's events went one at a time: what is in flight is
    /// its progress write.
    after_refusal: bool,
}

/// A part the sink refused, written event by event.
#[derive(Debug)]
struct Refusal {
    /// The offset every single write stores: where the partition's was.
    hold: i64,
    events: VecDeque<Event>,
    /// Gaps go with the first write that takes them.
    gaps: Vec<Gap>,
    /// (key, version) of events refused and dead-lettered: stored with the
    /// progress write so the key's next version does not wait for them.
    passed: Vec<(String, i64)>,
}

impl Partition {
    pub(super) fn start_flush(&mut self, deadline: Option<Instant>, then: Then) {
        self.flush = Some(Flush {
            deadline,
            then,
            stage: Stage::Start,
        });
    }

    /// Takes the flush one step: an effect goes out, or it ends.
    pub(super) fn step_flush(&mut self) {
        let Some(mut flush) = self.flush.take() else {
            return;
        };
        match std::mem::replace(&mut flush.stage, Stage::Plan) {
            Stage::Start if !self.parked.is_empty() => {
                let mut keys: Vec<String> = self.parked.iter().map(|e| e.key.clone()).collect();
                keys.sort_unstable();
                keys.dedup();
                self.op = Some(Op::Keys);
                self.effects.push_back(Effect::ReadKeyStates {
                    keys,
                    deadline: flush.deadline,
                });
                flush.stage = Stage::Keys;
                self.flush = Some(flush);
            }
            Stage::Start | Stage::Keys | Stage::Plan => self.plan(flush),
            Stage::Writing(w) => self.next_write(flush, w),
        }
    }

    /// The parked events' keys were read: they are learned, and the events
    /// ordered as if they had just arrived.
    pub(super) fn keys_read(&mut self, states: Result<HashMap<String, i64>, SinkError>) {
        let Some(mut flush) = self.flush.take() else {
            return;
        };
        let states = match states {
            Ok(states) => states,
            Err(e) => return self.failed(e),
        };
        for event in std::mem::take(&mut self.parked) {
            if !self.buffer.knows(&event.key) {
                let last = states.get(&event.key).copied();
                self.buffer.learn(event.key.clone(), last);
            }
            self.ready.push_back(Item::Learned(event));
        }
        flush.stage = Stage::Plan;
        self.flush = Some(flush);
    }

    /// Cuts the batch into parts and writes the first, unless nothing is due.
    fn plan(&mut self, flush: Flush) {
        let Some(next) = self.progress.next_offset(self.min_held_offset()) else {
            return self.end_flush(flush);
        };
        let b = &self.batch;
        let empty = b.events.is_empty()
            && b.gaps.is_empty()
            && b.dead_lettered.is_empty()
            && b.passed.is_empty();
        if !self.progress.write_due(next, empty) {
            return self.end_flush(flush);
        }
        let offsets: Vec<i64> = b.events.iter().map(|e| e.offset).collect();
        let mut parts: VecDeque<(usize, i64)> = self
            .progress
            .parts(
                &offsets,
                self.cfg.batch_max_events,
                self.min_held_offset(),
                next,
            )
            .into_iter()
            .map(|(range, stored)| (range.len(), stored))
            .collect();
        let Some((len, stored)) = parts.pop_front() else {
            return self.end_flush(flush);
        };
        // The whole batch in one transaction (the usual case) is written
        // from where it is, its allocation kept for the next batch.
        let mut rest = Vec::new().into_iter();
        if !parts.is_empty() {
            rest = std::mem::take(&mut self.batch.events).into_iter();
            self.batch.events = rest.by_ref().take(len).collect();
        }
        self.start_write(stored, flush.deadline);
        self.flush = Some(Flush {
            stage: Stage::Writing(Writing {
                parts,
                rest,
                stored,
                refusal: None,
                after_refusal: false,
            }),
            ..flush
        });
    }

    /// The write that follows the one just done, or the end of the flush.
    fn next_write(&mut self, mut flush: Flush, mut w: Writing) {
        if let Some(r) = w.refusal.as_mut() {
            if let Some(event) = r.events.pop_front() {
                let single = Batch {
                    events: vec![event],
                    gaps: std::mem::take(&mut r.gaps),
                    next_offset: r.hold,
                    ..Batch::default()
                };
                self.op = Some(Op::Write { single: true });
                self.effects.push_back(Effect::Write {
                    batch: single,
                    deadline: flush.deadline,
                });
            } else if let Some(r) = w.refusal.take() {
                // What is left to store: the part's progress.
                self.batch.gaps.extend(r.gaps);
                self.batch.passed.extend(r.passed);
                w.after_refusal = true;
                self.start_write(w.stored, flush.deadline);
            }
            flush.stage = Stage::Writing(w);
            self.flush = Some(flush);
            return;
        }
        let Some((len, stored)) = w.parts.pop_front() else {
            return self.end_flush(flush);
        };
        self.batch.events = w.rest.by_ref().take(len).collect();
        w.stored = stored;
        w.after_refusal = false;
        self.start_write(stored, flush.deadline);
        flush.stage = Stage::Writing(w);
        self.flush = Some(flush);
    }

    /// Hands the batch out to be written with `stored` as its next offset.
    fn start_write(&mut self, stored: i64, deadline: Option<Instant>) {
        let b = &mut self.batch;
        b.next_offset = stored;
        // Dead letters the offset passes need no mark; stored marks it passes go.
        b.dead_lettered.retain(|&o| o >= stored);
        b.prune_dead_lettered = self.marks.any_below(stored);
        self.op = Some(Op::Write { single: false });
        self.effects.push_back(Effect::Write {
            batch: std::mem::take(&mut self.batch),
            deadline,
        });
    }

    /// A write's outcome.
    pub(super) fn write_done(
        &mut self,
        mut batch: Batch,
        single: bool,
        result: Result<Written, SinkError>,
    ) {
        if !single {
            // The batch comes back, with what it carries besides its events.
            self.batch = batch;
            batch = Batch::default();
        }
        let Some(mut flush) = self.flush.take() else {
            return;
        };
        let Stage::Writing(mut w) = std::mem::replace(&mut flush.stage, Stage::Plan) else {
            return;
        };
        match result {
            Ok(written) if single => {
                self.counts.applied += written.applied;
                self.counts.absorbed += written.absorbed;
                count_types(&mut self.typed, &batch.events, written);
            }
            Ok(written) => self.committed(w.stored, written),
            Err(e) if single && e.is_record_error() => {
                let (Some(event), Some(r)) = (batch.events.pop(), w.refusal.as_mut()) else {
                    return self.stop(e.to_string(), None);
                };
                // Gaps it carried go with the next write.
                r.gaps.append(&mut batch.gaps);
                let Some(record) = event.source.clone() else {
                    return self.stop(e.to_string(), None);
                };
                let why = format!(
                    "{}: the sink refused the event (key {}, sequence {}): {e}",
                    record.location(),
                    event.key,
                    event.sequence
                );
                let origin = Origin::Refused {
                    key: event.key.clone(),
                    sequence: event.sequence,
                    write_error: e.to_string(),
                };
                let letter = Letter {
                    record,
                    key: Some(event.key),
                    masked: Some(event.payload),
                    why,
                    event_type: event.event_type,
                    route: e.route().map(str::to_string),
                };
                self.letters.push_back((letter, origin));
            }
            Err(e)
                if !single && e.is_record_error() && self.cfg.dead_letters && !w.after_refusal =>
            {
                let events = std::mem::take(&mut self.batch.events);
                self.note(Note::BatchRefused {
                    error: e.to_string(),
                    events: events.len(),
                });
                let hold = self
                    .progress
                    .hold_offset(self.min_held_offset(), events.iter().map(|e| e.offset))
                    .unwrap_or(w.stored);
                w.refusal = Some(Refusal {
                    hold,
                    events: events.into(),
                    gaps: std::mem::take(&mut self.batch.gaps),
                    passed: Vec::new(),
                });
            }
            Err(e) => return self.failed(e),
        }
        flush.stage = Stage::Writing(w);
        self.flush = Some(flush);
    }

    /// A refused event is in the dead-letter topic.
    pub(super) fn refused_lettered(&mut self, key: String, sequence: i64) {
        if let Some(Flush {
            stage: Stage::Writing(Writing {
                refusal: Some(r), ..
            }),
            ..
        }) = self.flush.as_mut()
        {
            r.passed.push((key, sequence));
        }
    }

    /// A part committed with `stored` as the partition's next offset.
    fn committed(&mut self, stored: i64, written: Written) {
        self.counts.applied += written.applied;
        self.counts.absorbed += written.absorbed;
        count_types(&mut self.typed, &self.batch.events, written);
        self.counts.batches += 1;
        self.progress.committed(stored);
        let b = &mut self.batch;
        b.events.clear();
        b.gaps.clear();
        b.dead_lettered.clear();
        b.passed.clear();
        self.marks.passed(stored);
        self.buffer.evict_idle(self.cfg.max_cached_keys);
        self.effects.push_back(Effect::StoreAdvisory(stored));
        self.note(Note::Committed { next: stored });
    }

    /// Everything is written: what was to follow, follows.
    fn end_flush(&mut self, flush: Flush) {
        self.dirty_since = None;
        match flush.then {
            Then::Nothing => {}
            Then::Retry { error, records } => {
                let Some(first) = records.first().cloned() else {
                    return;
                };
                self.decode_attempts += 1;
                let retry_in =
                    crate::sink::retry::backoff(&self.cfg.retry, self.decode_attempts - 1);
                self.note(Note::DecodeDeferred {
                    record: first,
                    attempt: self.decode_attempts,
                    retry_in,
                    error,
                });
                self.pending = records.into();
                let action = self.flow.decode_deferred();
                self.apply(action);
                self.retry_at = Some(self.now + retry_in);
            }
            Then::Stop { reason, record } => self.stop(reason, record),
        }
    }
}

/// A committed batch's events counted per type. The sink says how many
/// were applied and how many absorbed, not which: in a batch with both
/// (only replays or a concurrent writer make one), the first `applied`
/// events are counted applied. The totals are exact either way.
fn count_types(typed: &mut TypeCounts, events: &[Event], written: Written) {
    if events.iter().all(|e| e.event_type.is_none()) {
        typed.add(None, Outcome::Applied, written.applied);
        typed.add(None, Outcome::Absorbed, written.absorbed);
        return;
    }
    let mut applied = written.applied;
    let mut absorbed = written.absorbed;
    for e in events {
        if applied > 0 {
            applied -= 1;
            typed.add(e.event_type.as_ref(), Outcome::Applied, 1);
        } else if absorbed > 0 {
            absorbed -= 1;
            typed.add(e.event_type.as_ref(), Outcome::Absorbed, 1);
        }
    }
    // A sink may count more than one row per event (a delete's record).
    typed.add(None, Outcome::Applied, applied);
    typed.add(None, Outcome::Absorbed, absorbed);
}
