//! The partition machine: everything one partition's worker decides, with no
//! I/O and no clock (a sans-I/O state machine, the shape of quinn-proto's
//! `Connection`). The I/O shell (`worker.rs`) feeds it inputs (records
//! fetched, decoded, key states read, a write's or a dead letter's outcome,
//! breaker changes, a fetch error, a drain request, the time) and carries out
//! the [`Effect`]s it hands out, at most one I/O effect (decode, read key
//! states, write, dead letter) at a time; the others (pause, resume, the
//! advisory offset, notes for telemetry) come between them.
//!
//! It owns the ordering buffer, the batch being built, the partition's
//! progress and flow state, the events parked until their key's state is
//! read, and the offsets already in the dead-letter topic. The rules that
//! make a partition exact live here and are unit-tested without a broker or
//! a database (`tests.rs`): where the stored offset may move, how a refused
//! batch is written around its refused events, how a batch too large for one
//! transaction is cut, what each bound policy does.

mod effect;
mod place;
#[cfg(test)]
mod tests;
mod write;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::flow::{Action, Flow, State};
use super::progress::{DeadLetterMarks, Progress};
use crate::decode::DecodeError;
use crate::dlq::DeadLetterError;
use crate::order::{BoundPolicy, BufferConfig, SequenceBuffer};
use crate::record::{Event, Record};
use crate::sink::breaker::BreakerState;
use crate::sink::retry::RetryConfig;
use crate::sink::{Batch, Lease, SinkError, Written};

pub use effect::{Counts, Effect, Letter, Note, Outcome, TypeCounts};
use write::Flush;

/// Decoded events the ready queue keeps room for between runs.
const READY_KEPT: usize = 64;

/// How often held events are checked against the ordering bounds' time.
pub const TICK: Duration = Duration::from_millis(250);

/// What the machine needs to know of the settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub buffer: BufferConfig,
    pub policy: BoundPolicy,
    /// Whether records Ordo cannot handle go to the dead-letter topic
    /// (otherwise they stop the partition).
    pub dead_letters: bool,
    pub max_cached_keys: usize,
    pub batch_max_events: usize,
    pub batch_max_wait: Duration,
    /// How a record that cannot be decoded yet is tried again.
    pub retry: RetryConfig,
    /// Event types counted by name (`source.max_event_types`).
    pub max_event_types: usize,
}

/// A record of a run, once decoded, waiting to be ordered.
#[derive(Debug)]
enum Item {
    /// Decoded, not yet offered.
    Fresh(Event),
    /// Parked for its key's state, now learned: offered again (it was
    /// counted as consumed when it was parked).
    Learned(Event),
    /// Handled without an event: dead-lettered, or a tombstone ignored.
    Skipped(i64),
}

/// Why a letter is sent, and what its failure does.
#[derive(Debug, Clone)]
enum Origin {
    /// The record could not be decoded (`error`).
    Decode { error: String },
    /// The event waited past an ordering bound (`on_bound = dead_letter`).
    Bound { why: String },
    /// The sink refused the event (`write_error`).
    Refused {
        key: String,
        sequence: i64,
        write_error: String,
    },
}

/// The one I/O effect in flight.
#[derive(Debug)]
enum Op {
    Decode,
    Keys,
    /// A write; `single`: one event of a refused batch, not the batch itself.
    Write {
        single: bool,
    },
    Letter {
        origin: Origin,
        record: Arc<Record>,
        event_type: Option<Arc<str>>,
    },
}

/// What a flush does once it has written everything.
#[derive(Debug)]
enum Then {
    Nothing,
    /// Try `records` again after a backoff (a transient decode error).
    Retry {
        error: String,
        records: Vec<Arc<Record>>,
    },
    /// Stop the partition in front of `record`.
    Stop {
        reason: String,
        record: Option<Arc<Record>>,
    },
}

/// One partition's machine.
#[derive(Debug)]
pub struct Partition {
    cfg: Arc<Config>,
    /// `topic/partition`, for the reasons it stops.
    name: String,
    /// The lease's stored offset: records below it are in the sink already.
    leased_at: Option<i64>,
    now: Instant,
    buffer: SequenceBuffer,
    batch: Batch,
    progress: Progress,
    flow: Flow,
    counts: Counts,
    /// The outcomes per event type.
    typed: TypeCounts,
    /// Records in the dead-letter topic already: not sent again when re-read.
    marks: DeadLetterMarks,
    /// When the first change not yet written was made.
    dirty_since: Option<Instant>,
    /// Fetched, not yet decoded.
    pending: VecDeque<Arc<Record>>,
    /// Decoded, not yet ordered.
    ready: VecDeque<Item>,
    /// Letters to send before anything else goes on.
    letters: VecDeque<(Letter, Origin)>,
    /// Events of keys the buffer does not know yet, in offset order; their
    /// keys' state is read in one lookup when the batch is written. They
    /// hold the stored offset like held events.
    parked: Vec<Event>,
    op: Option<Op>,
    flush: Option<Flush>,
    /// A decode failure to act on once the progress before it is written.
    failure: Option<Then>,
    /// Failed attempts at decoding the first pending record, and when the next is due.
    decode_attempts: u32,
    retry_at: Option<Instant>,
    /// The deferred records are being tried again.
    recovering: bool,
    /// A record of the run being decoded failed (not dead-lettered).
    run_failed: bool,
    next_tick: Instant,
    /// The oldest held offset last reported as still waiting (`wait`).
    reported_waiting: Option<i64>,
    /// Asked to drain (with the deadline of its writes); the drain's flush started; drained.
    draining: Option<Instant>,
    drain_flushed: bool,
    drained: bool,
    effects: VecDeque<Effect>,
}

impl Partition {
    /// The machine of a partition leased as `lease` says, started at `now`.
    pub fn new(cfg: Arc<Config>, lease: &Lease, now: Instant) -> Self {
        let max_event_types = cfg.max_event_types;
        Self {
            buffer: SequenceBuffer::new(cfg.buffer.clone()),
            cfg,
            name: format!("{}/{}", lease.topic, lease.partition),
            leased_at: lease.next_offset,
            now,
            batch: Batch::default(),
            progress: Progress::new(lease.next_offset),
            flow: Flow::default(),
            counts: Counts::default(),
            typed: TypeCounts::new(max_event_types),
            marks: DeadLetterMarks::new(lease.dead_lettered.iter().copied()),
            dirty_since: None,
            pending: VecDeque::new(),
            ready: VecDeque::new(),
            letters: VecDeque::new(),
            parked: Vec::new(),
            op: None,
            flush: None,
            failure: None,
            decode_attempts: 0,
            retry_at: None,
            recovering: false,
            run_failed: false,
            next_tick: now + TICK,
            reported_waiting: None,
            draining: None,
            drain_flushed: false,
            drained: false,
            effects: VecDeque::new(),
        }
    }

    // ---- inputs ----

    /// Records taken from the partition's queue, in offset order.
    pub fn fetched(&mut self, now: Instant, records: Vec<Arc<Record>>) {
        self.now = now;
        if let (None, Some(first), Some(expected)) = (
            self.progress.last_consumed(),
            records.first(),
            self.leased_at,
        ) {
            if first.offset > expected && self.pending.is_empty() {
                self.note(Note::ResumedAfterStored {
                    expected,
                    first: first.offset,
                });
            }
        }
        for r in records {
            if self.leased_at.is_some_and(|n| r.offset < n) {
                // Only a fetch from before the partition moved to its stored
                // offset brings one: the sink has it already.
                self.note(Note::BelowStored { offset: r.offset });
                continue;
            }
            self.pending.push_back(r);
        }
        self.advance();
    }

    /// A record of the run [`Effect::Decode`] handed out, decoded (`Ok(None)`:
    /// a tombstone the decoder ignores), in the run's order: it is ordered at
    /// once. Says whether to decode the next: not after one that failed (the
    /// rest wait), nor once the partition stopped. The run ends with
    /// [`Partition::decode_ended`].
    pub fn decoded(
        &mut self,
        now: Instant,
        record: Arc<Record>,
        result: Result<Option<Event>, DecodeError>,
    ) -> bool {
        self.now = now;
        if !matches!(self.op, Some(Op::Decode)) || !self.flow.writing() {
            return false;
        }
        match result {
            Ok(Some(mut event)) => {
                if self.cfg.dead_letters {
                    event.source = Some(record);
                }
                self.order(Item::Fresh(event));
                return self.flow.writing();
            }
            Ok(None) => {
                self.counts.tombstones_ignored += 1;
                self.typed.add(None, Outcome::TombstoneIgnored, 1);
                self.order(Item::Skipped(record.offset));
                return self.flow.writing();
            }
            Err(e) if e.is_transient() => {
                self.failure = Some(Then::Retry {
                    error: e.to_string(),
                    records: vec![record],
                });
            }
            Err(e) if self.cfg.dead_letters => {
                let letter = Letter {
                    record,
                    key: None,
                    masked: None,
                    why: e.to_string(),
                    event_type: None,
                    route: None,
                };
                let origin = Origin::Decode {
                    error: e.to_string(),
                };
                self.letters.push_back((letter, origin));
                // What follows is decoded once the letter is acknowledged.
                return false;
            }
            Err(e) => {
                self.failure = Some(Then::Stop {
                    reason: format!("{e}{}", STAYS),
                    record: Some(record),
                });
            }
        }
        self.run_failed = true;
        false
    }

    /// The run [`Effect::Decode`] handed out ended; `rest` are its records
    /// not decoded, decoded next (or, after a transient failure, with the
    /// failed record once it is tried again).
    pub fn decode_ended(&mut self, now: Instant, rest: Vec<Arc<Record>>) {
        self.now = now;
        if !matches!(self.op.take(), Some(Op::Decode)) {
            return self.advance();
        }
        let failed = std::mem::take(&mut self.run_failed);
        match self.failure.as_mut() {
            Some(Then::Retry { records, .. }) => records.extend(rest),
            _ => {
                for r in rest.into_iter().rev() {
                    self.pending.push_front(r);
                }
            }
        }
        if !failed {
            self.decode_attempts = 0;
        }
        if self.recovering && !failed && self.pending.is_empty() {
            self.recovering = false;
            let action = self.flow.decode_recovered();
            if action == Action::Resume {
                self.note(Note::DecodeRecovered);
            }
            self.apply(action);
        }
        self.advance();
    }

    /// Orders a decoded record now, unless records before it still wait
    /// (behind a dead letter): then after them.
    fn order(&mut self, item: Item) {
        if self.letters.is_empty() && self.ready.is_empty() {
            self.place_item(item);
        } else {
            self.ready.push_back(item);
        }
    }

    /// The outcome of [`Effect::ReadKeyStates`].
    pub fn key_states(
        &mut self,
        now: Instant,
        states: Result<std::collections::HashMap<String, i64>, SinkError>,
    ) {
        self.now = now;
        if matches!(self.op.take(), Some(Op::Keys)) {
            self.keys_read(states);
        }
        self.advance();
    }

    /// The outcome of [`Effect::Write`]; `batch` is the one the effect carried.
    pub fn written(&mut self, now: Instant, batch: Batch, result: Result<Written, SinkError>) {
        self.now = now;
        if let Some(Op::Write { single }) = self.op.take() {
            self.write_done(batch, single, result);
        }
        self.advance();
    }

    /// The outcome of [`Effect::DeadLetter`].
    pub fn dead_lettered(&mut self, now: Instant, result: Result<(), DeadLetterError>) {
        self.now = now;
        if let Some(Op::Letter {
            origin,
            record,
            event_type,
        }) = self.op.take()
        {
            match result {
                Ok(()) => {
                    self.marks.insert(record.offset);
                    self.batch.dead_lettered.push(record.offset);
                    self.counts.dead_lettered += 1;
                    self.typed
                        .add(event_type.as_ref(), Outcome::DeadLettered, 1);
                    self.lettered(record.offset, origin);
                }
                Err(e) => self.letter_failed(origin, record, e),
            }
        }
        self.advance();
    }

    /// The effect in flight could not be carried out for a reason of the
    /// sink's: a lease another worker took (a handover), or an error
    /// retrying cannot fix (the partition stops).
    pub fn sink_failed(&mut self, now: Instant, e: SinkError) {
        self.now = now;
        if self.op.take().is_some() {
            self.failed(e);
        }
        self.advance();
    }

    /// The sink's breaker changed.
    pub fn breaker(&mut self, now: Instant, state: BreakerState) {
        self.now = now;
        let action = self.flow.breaker(state);
        self.apply(action);
        self.advance();
    }

    /// A fetch error on the partition's queue; `permanent`: fetching again
    /// cannot fix it.
    pub fn fetch_error(&mut self, now: Instant, permanent: bool, error: String) {
        self.now = now;
        let next_offset = self.progress.reading();
        if !permanent {
            return self.note(Note::FetchError { next_offset, error });
        }
        let at = next_offset.map_or("the start".to_string(), |o| format!("offset {o}"));
        self.failure = Some(Then::Stop {
            reason: format!(
                "cannot read the record at {at} of {}: {error}; retrying cannot fix this \
                 (a compression codec or record format this build cannot read, a corrupt or \
                 oversized record); the partition's stored offset does not pass it",
                self.name
            ),
            record: None,
        });
        self.advance();
    }

    /// Finish what is in hand and write it (retrying until `deadline`),
    /// then answer [`Effect::Drained`].
    pub fn drain(&mut self, now: Instant, deadline: Instant) {
        self.now = now;
        self.draining.get_or_insert(deadline);
        self.advance();
    }

    /// The time given by [`Partition::poll_timeout`] came.
    pub fn timeout(&mut self, now: Instant) {
        self.now = now;
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            self.recovering = true;
            self.flow.decode_retrying();
        }
        if now >= self.next_tick {
            self.next_tick = now + TICK;
            self.tick();
        }
        self.advance();
    }

    // ---- outputs ----

    /// The next effect to carry out.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// When [`Partition::timeout`] is due.
    pub fn poll_timeout(&self) -> Instant {
        let mut at = self.next_tick;
        if self.op.is_none() && self.flush.is_none() && self.flow.writing() {
            if let Some(d) = self.dirty_since {
                at = at.min(d + self.cfg.batch_max_wait);
            }
        }
        if let Some(r) = self.retry_at {
            at = at.min(r);
        }
        at
    }

    /// Whether the shell takes records from the queue: the partition is
    /// fetched and everything taken before is handled.
    pub fn reading(&self) -> bool {
        self.flow.reading()
            && self.op.is_none()
            && self.pending.is_empty()
            && self.ready.is_empty()
            && self.letters.is_empty()
            && self.flush.is_none()
            && self.failure.is_none()
            && self.draining.is_none()
    }

    /// Whether an I/O effect is in flight.
    pub fn busy(&self) -> bool {
        self.op.is_some()
    }

    /// The stored next offset, as the sink holds it.
    pub fn stored(&self) -> Option<i64> {
        self.progress.stored()
    }

    /// The offset of the last record handled.
    pub fn last_consumed(&self) -> Option<i64> {
        self.progress.last_consumed()
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// The outcomes per event type.
    pub fn typed_counts(&self) -> &TypeCounts {
        &self.typed
    }

    /// Whether nothing taken from the queue is on its way to the sink:
    /// every record is decoded, written, dead-lettered or held behind a gap
    /// (the buffer has its own bound).
    pub fn settled(&self) -> bool {
        self.pending.is_empty()
            && self.ready.is_empty()
            && self.batch.events.is_empty()
            && self.parked.is_empty()
            && self.letters.is_empty()
            && self.op.is_none()
            && self.flush.is_none()
    }

    pub fn held_events(&self) -> usize {
        self.buffer.held_events()
    }

    pub fn held_bytes(&self) -> usize {
        self.buffer.held_bytes()
    }

    /// Since when the oldest held event waits.
    pub fn oldest_held_since(&self) -> Option<Instant> {
        self.buffer.oldest_since()
    }

    pub fn state(&self) -> State {
        self.flow.state()
    }

    // ---- the machine ----

    /// Goes on until an I/O effect is out or nothing is left to do.
    fn advance(&mut self) {
        loop {
            if self.op.is_some() || self.drained {
                return;
            }
            if !self.flow.writing() {
                if self.draining.is_some() {
                    self.finish_drain();
                }
                return;
            }
            if let Some((letter, origin)) = self.letters.pop_front() {
                self.send_letter(letter, origin);
                continue;
            }
            if let Some(item) = self.ready.pop_front() {
                self.place_item(item);
                if self.ready.is_empty() {
                    // A run's worth of decoded events is not kept allocated
                    // between runs (a partition of many at rest).
                    self.ready.shrink_to(READY_KEPT);
                }
                continue;
            }
            if self.flush.is_some() {
                self.step_flush();
                continue;
            }
            if let Some(then) = self.failure.take() {
                // Save the progress made before the record, then act.
                self.start_flush(None, then);
                continue;
            }
            if let Some(deadline) = self.draining {
                if !self.drain_flushed {
                    self.drain_flushed = true;
                    self.start_flush(Some(deadline), Then::Nothing);
                    continue;
                }
                self.finish_drain();
                return;
            }
            if self.batch.events.len() + self.parked.len() >= self.cfg.batch_max_events
                || self
                    .dirty_since
                    .is_some_and(|d| self.now >= d + self.cfg.batch_max_wait)
            {
                self.start_flush(None, Then::Nothing);
                continue;
            }
            if !self.pending.is_empty() && self.retry_at.is_none() {
                self.op = Some(Op::Decode);
                let run: Vec<_> = self.pending.drain(..).collect();
                self.effects.push_back(Effect::Decode(run));
            }
            return;
        }
    }

    /// Sends a letter, unless its record is in the dead-letter topic already
    /// (sent before a restart while a gap held the stored offset back).
    fn send_letter(&mut self, letter: Letter, origin: Origin) {
        if self.marks.contains(letter.record.offset) {
            return self.lettered(letter.record.offset, origin);
        }
        if !self.cfg.dead_letters {
            let e = DeadLetterError {
                topic: String::new(),
                reason: "dead letters are off (dead_letter.enabled = false)".into(),
                permanent: true,
            };
            return self.letter_failed(origin, letter.record, e);
        }
        self.op = Some(Op::Letter {
            origin,
            record: letter.record.clone(),
            event_type: letter.event_type.clone(),
        });
        self.effects.push_back(Effect::DeadLetter(letter));
    }

    /// A letter is in the dead-letter topic: what sent it goes on.
    fn lettered(&mut self, offset: i64, origin: Origin) {
        match origin {
            Origin::Decode { .. } => self.ready.push_back(Item::Skipped(offset)),
            Origin::Bound { .. } => {
                self.dirty_since.get_or_insert(self.now);
            }
            Origin::Refused { key, sequence, .. } => self.refused_lettered(key, sequence),
        }
    }

    fn letter_failed(&mut self, origin: Origin, record: Arc<Record>, e: DeadLetterError) {
        match origin {
            Origin::Decode { error } => {
                self.pending.clear();
                self.failure = Some(Then::Stop {
                    reason: format!("{error}; {e}{STAYS}"),
                    record: Some(record),
                });
            }
            // The taken events are no longer held: stop before any write
            // could store an offset past them.
            Origin::Bound { why } => self.stop(format!("{why}; {e}"), Some(record)),
            Origin::Refused {
                write_error, key, ..
            } => {
                let why = format!(
                    "{}: the sink refused the event (key {key}): {write_error}",
                    record.location()
                );
                self.note(Note::LetterFailed {
                    why,
                    error: e.to_string(),
                });
                self.stop(write_error, Some(record));
            }
        }
    }

    /// Checks held events against the bounds' time; under `wait`, reports a
    /// bound still reached. Deferred while an effect is in flight.
    fn tick(&mut self) {
        if self.op.is_some() || !self.flow.writing() {
            return;
        }
        let Some(bound) = self.buffer.exceeded(self.now) else {
            return;
        };
        match self.cfg.policy {
            BoundPolicy::Skip | BoundPolicy::DeadLetter => self.enforce_bounds(),
            BoundPolicy::Wait => {
                let oldest = self.buffer.min_held_offset();
                if oldest == self.reported_waiting {
                    return;
                }
                self.reported_waiting = oldest;
                if let Some((key, expected, received, offset)) = self.buffer.oldest_waiting() {
                    let note = Note::StillWaiting {
                        bound,
                        key: key.to_string(),
                        expected,
                        received,
                        offset,
                        held_events: self.buffer.held_events(),
                        stored: self.progress.stored(),
                    };
                    self.note(note);
                }
            }
        }
    }

    /// Stops handling the partition: paused until the process restarts.
    fn stop(&mut self, reason: String, record: Option<Arc<Record>>) {
        if !self.halt() {
            return;
        }
        self.note(Note::Stopped {
            reason,
            stored: self.progress.stored(),
            record,
        });
    }

    /// A sink operation failed for good: the partition stops, unless the
    /// failure is a fence (another replica took the lease), which is a
    /// handover: the work in hand is dropped, quietly, and the partition
    /// waits for its revoke without marking the replica unready.
    fn failed(&mut self, e: SinkError) {
        if let SinkError::Fenced { epoch, .. } = e {
            if self.halt() {
                self.note(Note::HandedOver {
                    epoch,
                    stored: self.progress.stored(),
                });
            }
            return;
        }
        self.stop(e.to_string(), None);
    }

    /// Drops everything in hand and pauses the partition for good; false
    /// if it was halted already.
    fn halt(&mut self) -> bool {
        let Some(action) = self.flow.stop() else {
            return false;
        };
        self.dirty_since = None;
        self.pending.clear();
        self.ready.clear();
        self.letters.clear();
        self.flush = None;
        self.failure = None;
        self.retry_at = None;
        self.parked.clear();
        self.apply(action);
        true
    }

    fn finish_drain(&mut self) {
        self.drained = true;
        self.effects
            .push_back(Effect::Drained(self.progress.stored()));
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::Pause => self.effects.push_back(Effect::Pause),
            Action::Resume => self.effects.push_back(Effect::Resume),
            Action::Nothing => {}
        }
    }

    fn note(&mut self, note: Note) {
        self.effects.push_back(Effect::Note(note));
    }

    /// The lowest offset the buffer holds or an event parked for its key's
    /// state has: the stored offset must not pass it.
    fn min_held_offset(&self) -> Option<i64> {
        let parked = self.parked.first().map(|e| e.offset);
        [self.buffer.min_held_offset(), parked]
            .into_iter()
            .flatten()
            .min()
    }
}

/// The end of the reason a partition stops in front of a record.
const STAYS: &str =
    ". The record stays in Kafka and the partition's stored offset does not pass it; \
     the partition is paused until the record is dealt with and Ordo restarted";
