//! The ordered worker of one partition: consume -> decode -> order -> sink -> commit.
//!
//! It reads its partition's own queue in offset order, decodes each record,
//! passes it through the per-key sequence buffer and writes what the buffer
//! releases in batches. An event of a key the buffer does not know is parked
//! until the batch is written: one lookup then reads the state of all such
//! keys and the parked events are ordered. Each batch's transaction also
//! stores the partition's `next_offset`: one past the last consumed record,
//! or the lowest offset still held by the buffer or parked if that is lower.
//! Nothing is acknowledged to Kafka before the sink has committed it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot, watch};

use super::flow::{Action, Flow, State};
use super::progress::{DeadLetterMarks, Progress};
use super::{OrdoConsumer, OrdoContext, Pipeline};
use crate::decode::Tombstones;
use crate::order::{BoundPolicy, Offer, SequenceBuffer};
use crate::record::{Event, Record};
use crate::sink::breaker::BreakerState;
use crate::sink::retry::{backoff, retry};
use crate::sink::SinkError;
use crate::sink::{Batch, Lease};

/// How long a draining worker keeps retrying its last batch.
const DRAIN_WRITE_BUDGET: Duration = Duration::from_secs(25);
/// How often held events are checked against the gap timeout.
const TICK: Duration = Duration::from_millis(250);
/// A key starting to wait is logged at info at most this often per partition.
const WAITING_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Keys remembered per partition for the below-`first_sequence` line.
const BELOW_FIRST_LOGGED_KEYS: usize = 10_000;

/// Messages from the rebalance callback to a worker.
pub enum Control {
    /// Finish the batch in flight, commit it, reply with the stored next offset, and stop.
    Drain(oneshot::Sender<Option<i64>>),
}

/// Counts kept per partition and logged when the worker stops.
#[derive(Debug, Default)]
struct Counts {
    consumed: u64,
    released: u64,
    applied: u64,
    absorbed: u64,
    duplicates: u64,
    stale: u64,
    gaps: u64,
    batches: u64,
    dead_lettered: u64,
    replayed_late: u64,
    tombstones_ignored: u64,
}

/// A record of a run, once decoded.
enum Decoded {
    Event(Event),
    /// Undecodable; its dead letter was acknowledged.
    DeadLettered(i64),
    /// A tombstone, dropped as `source.tombstones = "ignore"` says.
    Ignored(i64),
}

/// The worker of one partition.
pub struct Worker {
    pipeline: Arc<Pipeline>,
    consumer: Arc<OrdoConsumer>,
    topic: Arc<str>,
    lease: Lease,
    buffer: SequenceBuffer,
    batch: Batch,
    /// Where the partition's stored offset is and may move.
    progress: Progress,
    /// When the first change not yet written was made.
    dirty_since: Option<Instant>,
    /// Whether the partition is read, and paused or resumed.
    flow: Flow,
    counts: Counts,
    warned_timeout_at: Option<i64>,
    /// When a key starting to wait was last logged at info level, and how
    /// many started since (logged at debug).
    waiting_logged_at: Option<Instant>,
    waiting_unlogged: u64,
    /// Keys whose first event below `first_sequence` was logged.
    below_first_logged: std::collections::HashSet<String>,
    /// Records taken from the queue but not yet decoded (state `Retrying`).
    pending: Vec<Arc<Record>>,
    /// Failed decode attempts of `pending`'s first record, and when to try again.
    decode_attempts: u32,
    retry_at: Option<tokio::time::Instant>,
    /// The sink's breaker state.
    breaker: watch::Receiver<BreakerState>,
    /// When a transient fetch error was last logged.
    fetch_error_logged_at: Option<Instant>,
    /// Records in the dead-letter topic already: not sent again when re-read.
    dead_letter_marks: DeadLetterMarks,
    /// Decoded events of keys the buffer does not know yet, in offset order:
    /// ordered once their keys' state is read, in one lookup per batch
    /// ([`Worker::learn_parked`]). They hold the stored offset like held events.
    parked: Vec<Event>,
    /// Time spent in the ordering buffer (`ordo_stage_seconds{stage="order"}`).
    order_time: prometheus::Histogram,
}

/// What [`Worker::place`] did with an event.
enum Placed {
    /// Ordered: released, held or dropped, and counted.
    Ordered,
    /// Its key is not known yet: handed back, to be parked.
    Unknown(Event),
}

/// Transient fetch errors are logged at most this often per partition.
const FETCH_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Fetch errors that fetching the same record again cannot fix.
fn fetch_error_is_permanent(code: rdkafka::types::RDKafkaErrorCode) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        code,
        C::NotImplemented
            | C::BadCompression
            | C::BadMessage
            | C::InvalidMessage
            | C::MessageSizeTooLarge
            | C::UnsupportedForMessageFormat
            | C::UnsupportedCompressionType
            | C::InvalidRecord
    )
}

impl Worker {
    pub fn new(pipeline: Arc<Pipeline>, consumer: Arc<OrdoConsumer>, lease: Lease) -> Self {
        Self {
            breaker: pipeline.breaker.subscribe(),
            fetch_error_logged_at: None,
            dead_letter_marks: DeadLetterMarks::new(lease.dead_lettered.iter().copied()),
            buffer: SequenceBuffer::new(pipeline.buffer.clone()),
            topic: lease.topic.as_str().into(),
            progress: Progress::new(lease.next_offset),
            pipeline,
            consumer,
            lease,
            batch: Batch::default(),
            dirty_since: None,
            flow: Flow::default(),
            counts: Counts::default(),
            warned_timeout_at: None,
            waiting_logged_at: None,
            waiting_unlogged: 0,
            below_first_logged: Default::default(),
            pending: Vec::new(),
            decode_attempts: 0,
            retry_at: None,
            parked: Vec::new(),
            order_time: crate::telemetry::metrics::metrics()
                .stage_seconds
                .with_label_values(&["order"]),
        }
    }

    /// Runs until told to drain.
    pub async fn run(
        mut self,
        queue: StreamPartitionQueue<OrdoContext>,
        mut control: mpsc::Receiver<Control>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let flush_at = self
                .dirty_since
                .filter(|_| self.flow.writing())
                .map(|t| tokio::time::Instant::from_std(t + self.pipeline.batch_max_wait));
            tokio::select! {
                biased;
                c = control.recv() => {
                    let next = self.finish().await;
                    if let Some(Control::Drain(ack)) = c {
                        let _ = ack.send(next);
                    }
                    return;
                }
                _ = tokio::time::sleep_until(flush_at.unwrap_or_else(tokio::time::Instant::now)),
                    if flush_at.is_some() => {
                    self.flush_or_stop(None).await;
                }
                _ = tokio::time::sleep_until(self.retry_at.unwrap_or_else(tokio::time::Instant::now)),
                    if self.flow.state() == State::Retrying && self.retry_at.is_some() => {
                    self.retry_decode().await;
                }
                _ = tick.tick() => self.on_tick().await,
                changed = self.breaker.changed() => {
                    if changed.is_ok() {
                        let state = *self.breaker.borrow_and_update();
                        self.on_breaker(state);
                    }
                }
                msg = queue.recv(), if self.flow.reading() => {
                    let mut records = Vec::new();
                    match msg {
                        Ok(m) => self.take(&m, &mut records),
                        Err(e) => {
                            self.on_fetch_error(e).await;
                            continue;
                        }
                    }
                    while records.len() < self.pipeline.batch_max_events {
                        match queue.recv().now_or_never() {
                            Some(Ok(m)) => self.take(&m, &mut records),
                            _ => break,
                        }
                    }
                    if records.is_empty() {
                        continue;
                    }
                    self.handle(records).await;
                    self.publish_position();
                    if self.batch.events.len() + self.parked.len() >= self.pipeline.batch_max_events {
                        self.flush_or_stop(None).await;
                    }
                }
            }
        }
    }

    /// Adds a fetched record to the run, unless it lies below the lease's
    /// stored offset (the sink has it already; only a fetch from before the
    /// partition moved to that offset can bring one).
    fn take(&self, m: &BorrowedMessage<'_>, records: &mut Vec<Arc<Record>>) {
        if self.lease.next_offset.is_some_and(|n| m.offset() < n) {
            tracing::debug!(topic = %self.topic, partition = self.lease.partition,
                offset = m.offset(), "record below the stored offset ignored");
            return;
        }
        records.push(self.record_of(m));
    }

    fn record_of(&self, m: &BorrowedMessage<'_>) -> Arc<Record> {
        Arc::new(Record {
            topic: self.topic.clone(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
            timestamp_ms: m.timestamp().to_millis(),
        })
    }

    /// Decodes and orders a run of records taken from the queue.
    async fn handle(&mut self, records: Vec<Arc<Record>>) {
        if let (None, Some(first)) = (self.progress.last_consumed(), records.first()) {
            if let Some(expected) = self.lease.next_offset.filter(|&n| first.offset > n) {
                tracing::warn!(topic = %self.topic, partition = self.lease.partition,
                    expected, first = first.offset,
                    "the partition resumed after its stored offset: offsets in between are no longer in Kafka (retention?)");
            }
        }
        let mut decoded: Vec<Decoded> = Vec::with_capacity(records.len());
        let mut failed = None;
        let stages = &crate::telemetry::metrics::metrics().stage_seconds;
        let decode_time = stages.with_label_values(&["decode"]);
        // One clock read per record: each one ends a record's decode and
        // starts the next's.
        let mut started = Instant::now();
        for (i, r) in records.iter().enumerate() {
            if r.payload.is_none() && self.pipeline.tombstones == Tombstones::Ignore {
                self.counts.tombstones_ignored += 1;
                self.outcome("tombstone_ignored");
                decoded.push(Decoded::Ignored(r.offset));
                continue;
            }
            let result = self.pipeline.decoder.decode(r).await;
            let ended = Instant::now();
            decode_time.observe(ended.duration_since(started).as_secs_f64());
            started = ended;
            match result {
                Ok(mut e) => {
                    if self.pipeline.dead_letters.is_some() {
                        e.source = Some(r.clone());
                    }
                    decoded.push(Decoded::Event(e));
                }
                Err(e) if !e.is_transient() && self.pipeline.dead_letters.is_some() => {
                    let sent = self.dead_letter(r, None, None, &e.to_string()).await;
                    started = Instant::now();
                    match sent {
                        Ok(()) => decoded.push(Decoded::DeadLettered(r.offset)),
                        Err(dle) => {
                            failed = Some((i, e, Some(dle)));
                            break;
                        }
                    }
                }
                Err(e) => {
                    failed = Some((i, e, None));
                    break;
                }
            }
        }
        let now = Instant::now();
        let mut clock = now;
        for item in decoded {
            let offset = match item {
                Decoded::DeadLettered(offset) | Decoded::Ignored(offset) => offset,
                Decoded::Event(event) => {
                    let offset = event.offset;
                    match self.place(event, now, &mut clock) {
                        Placed::Ordered => {}
                        // Its key's state is read with the others' before the batch is written.
                        Placed::Unknown(event) => self.parked.push(event),
                    }
                    offset
                }
            };
            self.counts.consumed += 1;
            self.progress.consumed(offset);
            self.dirty_since.get_or_insert(now);
            self.enforce_bounds(now).await;
            if !self.flow.writing() {
                return;
            }
        }
        // Log lines about the record that failed carry its span.
        let span = failed
            .as_ref()
            .map(|(i, _, _)| self.span_of(&records[*i], None));
        let span = span.unwrap_or_else(tracing::Span::none);
        match failed {
            None => self.decode_attempts = 0,
            Some((i, err, None)) if err.is_transient() => {
                // Save the progress made before the record, then try it again later.
                self.flush_or_stop(None).await;
                if !self.flow.writing() {
                    return;
                }
                self.pending = records.into_iter().skip(i).collect();
                self.decode_attempts += 1;
                crate::telemetry::metrics::metrics()
                    .retries
                    .with_label_values(&[crate::telemetry::metrics::operation::DECODE_RECORD])
                    .inc();
                let delay = backoff(&self.pipeline.retry, self.decode_attempts - 1);
                span.in_scope(|| tracing::warn!(topic = %self.topic, partition = self.lease.partition,
                    attempt = self.decode_attempts, retry_in_ms = delay.as_millis() as u64,
                    error = %err, "cannot decode the record yet; the partition is paused and the record will be tried again"));
                let action = self.flow.decode_deferred();
                self.apply(action);
                self.retry_at = Some(tokio::time::Instant::now() + delay);
            }
            Some((_, err, dead_letter_error)) => {
                // Save the progress made before the bad record, then stop in front of it.
                self.flush_or_stop(None).await;
                let also = dead_letter_error
                    .map(|e| format!("; {e}"))
                    .unwrap_or_default();
                span.in_scope(|| self.stop(format!(
                    "{err}{also}. The record stays in Kafka and the partition's stored offset does not pass it; \
                     the partition is paused until the record is dealt with and Ordo restarted"
                )));
            }
        }
    }

    /// Tries the records held back by a transient decode error again; resumes
    /// the partition once they all went through.
    async fn retry_decode(&mut self) {
        self.retry_at = None;
        self.flow.decode_retrying();
        let records = std::mem::take(&mut self.pending);
        self.handle(records).await;
        let action = self.flow.decode_recovered();
        if action == Action::Resume {
            tracing::info!(topic = %self.topic, partition = self.lease.partition,
                "records decode again; the partition resumes");
        }
        self.apply(action);
    }

    /// Pauses the partition while the sink's breaker is not closed; resumes it after.
    fn on_breaker(&mut self, state: BreakerState) {
        let action = self.flow.breaker(state);
        self.apply(action);
    }

    /// Tells librdkafka what [`Flow`] decided.
    fn apply(&self, action: Action) {
        match action {
            Action::Pause => self.pause(),
            Action::Resume => self.resume(),
            Action::Nothing => {}
        }
    }

    /// The one way a record goes to the dead-letter topic: written (and
    /// written again while the failure is transient, the partition waiting),
    /// counted and logged with its span. `Ok` once acknowledged; an error
    /// when dead letters are off or the write cannot succeed. With `[mask]`,
    /// the letter carries `masked` (the decoded event's payload) or the
    /// record's payload masked, never a clear value ([`letter_of`]).
    async fn dead_letter(
        &mut self,
        record: &Record,
        key: Option<&str>,
        masked: Option<&crate::record::JsonText>,
        why: &str,
    ) -> Result<(), crate::dlq::DeadLetterError> {
        let letter = letter_of(self.pipeline.masker.as_deref(), record, masked);
        let record: &Record = &letter;
        let Some(dl) = &self.pipeline.dead_letters else {
            return Err(crate::dlq::DeadLetterError {
                topic: String::new(),
                reason: "dead letters are off (dead_letter.enabled = false)".into(),
                permanent: true,
            });
        };
        if self.dead_letter_marks.contains(record.offset) {
            // Sent before a restart while a gap held the stored offset back.
            tracing::debug!(topic = %self.topic, partition = self.lease.partition,
                offset = record.offset, "record already in the dead-letter topic; not sent again");
            return Ok(());
        }
        let topic = dl.config().topic_for(&self.topic);
        dl.send_waiting(
            record,
            crate::dlq::ErrorClass::Permanent,
            why,
            &self.pipeline.retry,
        )
        .await?;
        self.dead_letter_marks.insert(record.offset);
        self.batch.dead_lettered.push(record.offset);
        self.counts.dead_lettered += 1;
        self.outcome("dead_lettered");
        self.span_of(record, key).in_scope(|| {
            tracing::warn!(topic = %self.topic, partition = self.lease.partition,
                offset = record.offset, dead_letter_topic = %topic, error = %why,
                "record sent to the dead-letter topic")
        });
        Ok(())
    }

    /// Passes a decoded event through the ordering buffer (released events
    /// go to the batch) and counts the outcome; an event of a key the buffer
    /// does not know yet comes back. `clock` is when the previous event's
    /// ordering ended (one clock read per event): the time since is this
    /// one's, bound checks between the two included.
    fn place(&mut self, event: Event, now: Instant, clock: &mut Instant) -> Placed {
        if event.replayed
            && self
                .buffer
                .last_applied(&event.key)
                .is_some_and(|last| event.sequence <= last)
        {
            // Back from the dead-letter topic after later versions were
            // applied: written now, out of order; the sink keeps it idempotent.
            self.counts.replayed_late += 1;
            self.batch.events.push(event);
            return Placed::Ordered;
        }
        let offset = event.offset;
        let offered = self.buffer.offer(event, now, &mut self.batch.events);
        let ended = Instant::now();
        self.order_time
            .observe(ended.saturating_duration_since(*clock).as_secs_f64());
        *clock = ended;
        match offered {
            Offer::Unknown(event) => return Placed::Unknown(event),
            Offer::Released(n) => self.counts.released += n as u64,
            Offer::Held => {}
            Offer::Waits {
                key,
                expected,
                received,
            } => self.note_waiting(&key, expected, received, offset, now),
            Offer::BelowFirst {
                key,
                first,
                received,
            } => {
                self.counts.stale += 1;
                self.outcome("stale");
                self.note_below_first(key, first, received, offset);
            }
            Offer::Duplicate => {
                self.counts.duplicates += 1;
                self.outcome("duplicate");
            }
            Offer::Stale => {
                self.counts.stale += 1;
                self.outcome("stale");
            }
        }
        Placed::Ordered
    }

    /// Reads the sink's last applied sequence of the parked events' keys, in
    /// one lookup, then orders the parked events as if they had just
    /// arrived (retrying until `deadline`, if given, like the write). One
    /// lookup per batch rather than per run read from the
    /// queue: at a steady rate a run holds a record or two, and while keys
    /// are new each run would make its own statement.
    async fn learn_parked(&mut self, deadline: Option<Instant>) -> Result<(), SinkError> {
        if self.parked.is_empty() {
            return Ok(());
        }
        let mut unknown: Vec<String> = self.parked.iter().map(|e| e.key.clone()).collect();
        unknown.sort_unstable();
        unknown.dedup();
        let sink = &self.pipeline.sink;
        let (states, paused) = self
            .with_retries(
                "reading key state",
                crate::telemetry::metrics::operation::SINK_READ_KEY_STATE,
                deadline,
                || sink.key_states(&unknown),
            )
            .await;
        if paused {
            self.flow.paused_for_breaker();
        }
        let states = states?;
        for key in unknown {
            let last = states.get(&key).copied();
            self.buffer.learn(key, last);
        }
        let now = Instant::now();
        let mut clock = now;
        for event in std::mem::take(&mut self.parked) {
            match self.place(event, now, &mut clock) {
                Placed::Ordered => {}
                Placed::Unknown(event) => {
                    // Every parked key was just learned: a bug if not.
                    self.stop(format!(
                        "key `{}` was offered before its last applied sequence was loaded",
                        event.key
                    ));
                    return Ok(());
                }
            }
            self.enforce_bounds(now).await;
            if !self.flow.writing() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Applies the bound policy after an event was offered.
    async fn enforce_bounds(&mut self, now: Instant) {
        match self.pipeline.policy {
            BoundPolicy::DeadLetter => {
                while let Some(bound) = self.buffer.exceeded(now) {
                    let Some((key, expected, events)) = self.buffer.take_oldest() else {
                        break;
                    };
                    for event in events {
                        let Some(record) = event.source.as_deref() else {
                            continue;
                        };
                        let why = format!(
                            "{}: key {key} sequence {} waited for sequence {expected} past the ordering bound {} (ordering.on_bound = dead_letter)",
                            record.location(),
                            event.sequence,
                            bound.as_str()
                        );
                        if let Err(e) = self
                            .dead_letter(record, Some(&event.key), Some(&event.payload), &why)
                            .await
                        {
                            // The taken events are no longer held: stop before any
                            // write could store an offset past them.
                            self.stop(format!("{why}; {e}"));
                            return;
                        }
                    }
                    self.dirty_since.get_or_insert(now);
                }
            }
            BoundPolicy::Skip => {
                while let Some(bound) = self.buffer.exceeded(now) {
                    let Some(gap) = self.buffer.skip_oldest(bound, &mut self.batch.events) else {
                        break;
                    };
                    tracing::warn!(topic = %self.topic, partition = self.lease.partition,
                        key = %gap.key, expected = gap.expected, released = gap.released,
                        offset = gap.offset, bound = bound.as_str(),
                        "sequence gap skipped (ordering.on_bound = skip)");
                    self.counts.gaps += 1;
                    crate::telemetry::metrics::metrics()
                        .gaps
                        .with_label_values(&[&*self.topic])
                        .inc();
                    self.batch.gaps.push(gap);
                    self.dirty_since.get_or_insert(now);
                }
            }
            BoundPolicy::Wait => {
                if self.buffer.full() && self.flow.state() == State::Running {
                    tracing::error!(topic = %self.topic, partition = self.lease.partition,
                        held_events = self.buffer.held_events(), held_bytes = self.buffer.held_bytes(),
                        oldest_offset = ?self.buffer.min_held_offset(),
                        "ordering buffer full; partition paused until its gaps fill (ordering.on_bound = wait)");
                    let action = self.flow.buffer_full();
                    self.apply(action);
                }
            }
        }
    }

    /// A key starts waiting for a missing version. Late events are common
    /// and their gaps fill within moments, so one such line per partition
    /// every [`WAITING_LOG_INTERVAL`] is logged at info (the others at debug,
    /// counted in the next); a gap that lasts is warned about at
    /// `gap_timeout_ms` (see [`Self::on_tick`]).
    fn note_waiting(&mut self, key: &str, expected: i64, received: i64, offset: i64, now: Instant) {
        let due = self
            .waiting_logged_at
            .is_none_or(|t| now.saturating_duration_since(t) >= WAITING_LOG_INTERVAL);
        if due {
            tracing::info!(topic = %self.topic, partition = self.lease.partition, key,
                expected_version = expected, received_version = received, offset,
                other_keys_started_waiting = self.waiting_unlogged,
                "key waits for a missing version; its later events are held");
            self.waiting_logged_at = Some(now);
            self.waiting_unlogged = 0;
        } else {
            self.waiting_unlogged += 1;
            tracing::debug!(topic = %self.topic, partition = self.lease.partition, key,
                expected_version = expected, received_version = received, offset,
                "key waits for a missing version");
        }
    }

    /// A key's first event carries a version below `ordering.first_sequence`:
    /// dropped as stale, and said once per key.
    fn note_below_first(&mut self, key: String, first: i64, received: i64, offset: i64) {
        if self.below_first_logged.len() >= BELOW_FIRST_LOGGED_KEYS
            || self.below_first_logged.contains(&key)
        {
            tracing::debug!(topic = %self.topic, partition = self.lease.partition, key,
                first_sequence = first, received_version = received, offset,
                "version below ordering.first_sequence dropped");
            return;
        }
        tracing::warn!(topic = %self.topic, partition = self.lease.partition, key = %key,
            first_sequence = first, received_version = received, offset,
            "a key's event has a version below ordering.first_sequence and nothing was applied for the key: dropped as stale (set ordering.first_sequence to the producers' first version)");
        self.below_first_logged.insert(key);
    }

    /// The span of log lines about a record (see [`crate::telemetry::span`]).
    fn span_of(&self, r: &Record, key: Option<&str>) -> tracing::Span {
        crate::telemetry::span::record_span(
            r,
            key,
            &self.pipeline.correlation_header,
            &self.pipeline.causation_header,
        )
    }

    /// Counts a record's outcome.
    fn outcome(&self, outcome: &str) {
        crate::telemetry::metrics::metrics()
            .events
            .with_label_values(&[&*self.topic, outcome])
            .inc();
    }

    /// The next offset to process, for lag; and the buffer's gauges.
    fn publish_position(&self) {
        if let Some(last) = self.progress.last_consumed() {
            crate::telemetry::health::health().position(
                &self.topic,
                self.lease.partition,
                crate::telemetry::health::Position::Next(last + 1),
            );
        }
        let m = crate::telemetry::metrics::metrics();
        let p = self.lease.partition.to_string();
        m.buffered_events
            .with_label_values(&[&*self.topic, p.as_str()])
            .set(self.buffer.held_events() as i64);
        m.buffered_bytes
            .with_label_values(&[&*self.topic, p.as_str()])
            .set(self.buffer.held_bytes() as i64);
        self.publish_held_age(Instant::now());
    }

    /// How long the oldest held event has waited (0: none held).
    fn publish_held_age(&self, now: Instant) {
        let age = self
            .buffer
            .oldest_since()
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        let p = self.lease.partition.to_string();
        crate::telemetry::metrics::metrics()
            .held_oldest_age_seconds
            .with_label_values(&[&*self.topic, p.as_str()])
            .set(age);
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        self.publish_held_age(now);
        match self.pipeline.policy {
            BoundPolicy::Skip | BoundPolicy::DeadLetter => {
                if self.buffer.exceeded(now).is_some() {
                    self.enforce_bounds(now).await;
                }
            }
            BoundPolicy::Wait => {
                let oldest = self.buffer.min_held_offset();
                if self.buffer.exceeded(now).is_some() && oldest != self.warned_timeout_at {
                    self.warned_timeout_at = oldest;
                    if let Some((key, expected, received, offset)) = self.buffer.oldest_waiting() {
                        tracing::warn!(topic = %self.topic, partition = self.lease.partition,
                            key, expected_version = expected, received_version = received,
                            offset, held_events = self.buffer.held_events(),
                            stored_next_offset = ?self.progress.stored(),
                            "a key has waited longer than ordering.gap_timeout_ms for a missing version; its events and the partition's stored offset are held (ordering.on_bound = wait)");
                    }
                }
            }
        }
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

    /// The lowest offset not yet durably handled, once the current batch commits.
    fn next_offset(&self) -> Option<i64> {
        self.progress.next_offset(self.min_held_offset())
    }

    /// Writes the batch and the partition's progress; retries transient failures
    /// (until `deadline`, if given). A transaction never holds more than
    /// `sink.batch_max_events` events: when a gap filling released more, the
    /// first parts are written with the stored offset held where it is (so it
    /// passes no event not yet written) and the last part moves it
    /// ([`Progress::parts`]).
    async fn flush(&mut self, deadline: Option<Instant>) -> Result<(), SinkError> {
        self.learn_parked(deadline).await?;
        if !self.flow.writing() {
            // Stopped while ordering the parked events: nothing is written.
            return Ok(());
        }
        let Some(next) = self.next_offset() else {
            self.dirty_since = None;
            return Ok(());
        };
        let empty = self.batch.events.is_empty()
            && self.batch.gaps.is_empty()
            && self.batch.dead_lettered.is_empty()
            && self.batch.passed.is_empty();
        if !self.progress.write_due(next, empty) {
            self.dirty_since = None;
            return Ok(());
        }
        let offsets: Vec<i64> = self.batch.events.iter().map(|e| e.offset).collect();
        let parts = self.progress.parts(
            &offsets,
            self.pipeline.batch_max_events,
            self.min_held_offset(),
            next,
        );
        if let [(_, stored)] = parts[..] {
            // The whole batch in one transaction (the usual case): written
            // from where it is, its allocation kept for the next batch.
            self.commit(stored, deadline).await?;
        } else {
            let mut events = std::mem::take(&mut self.batch.events).into_iter();
            for (range, stored) in parts {
                self.batch.events = events.by_ref().take(range.len()).collect();
                self.commit(stored, deadline).await?;
            }
        }
        self.dirty_since = None;
        Ok(())
    }

    /// How far a partial write may move the partition's offset while
    /// `unwritten` (and what the buffer holds) is not yet written.
    fn hold_offset(&self, unwritten: &[Event]) -> Option<i64> {
        self.progress
            .hold_offset(self.min_held_offset(), unwritten.iter().map(|e| e.offset))
    }

    /// Writes the batch with `next` as the partition's next offset (events
    /// the sink refuses for their data going to the dead-letter topic),
    /// records the outcome, and empties the batch.
    async fn commit(&mut self, next: i64, deadline: Option<Instant>) -> Result<(), SinkError> {
        self.batch.next_offset = next;
        let started = Instant::now();
        let events = self.batch.events.len();
        let written = match self.write_batch(deadline).await {
            Err(e) if e.is_record_error() && self.pipeline.dead_letters.is_some() => {
                self.write_around_refused(&e, deadline).await?;
                // What is left to store: the partition's progress.
                self.write_batch(deadline).await?
            }
            other => other?,
        };
        self.counts.applied += written.applied;
        self.counts.absorbed += written.absorbed;
        self.counts.batches += 1;
        let m = crate::telemetry::metrics::metrics();
        m.batch_seconds
            .with_label_values(&[&*self.topic])
            .observe(started.elapsed().as_secs_f64());
        m.batch_events
            .with_label_values(&[&*self.topic])
            .observe(events as f64);
        m.stage_seconds
            .with_label_values(&["sink"])
            .observe(started.elapsed().as_secs_f64());
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let e2e = m.end_to_end_seconds.with_label_values(&[&*self.topic]);
        for ts in self.batch.events.iter().filter_map(|e| e.timestamp_ms) {
            e2e.observe((now_ms - ts).max(0) as f64 / 1000.0);
        }
        m.events
            .with_label_values(&[&*self.topic, "applied"])
            .inc_by(written.applied);
        m.events
            .with_label_values(&[&*self.topic, "absorbed"])
            .inc_by(written.absorbed);
        self.progress.committed(next);
        crate::telemetry::health::health().stored(&self.topic, self.lease.partition, next);
        self.batch.events.clear();
        self.batch.gaps.clear();
        self.batch.dead_lettered.clear();
        self.batch.passed.clear();
        self.dead_letter_marks.passed(next);
        self.buffer.evict_idle(self.pipeline.max_cached_keys);
        self.store_advisory(next);
        Ok(())
    }

    /// Writes `batch` with retries, through the breaker; also says whether
    /// it paused the partition for the breaker.
    async fn write(
        &self,
        batch: &Batch,
        deadline: Option<Instant>,
    ) -> (Result<crate::sink::Written, SinkError>, bool) {
        let (sink, lease) = (&self.pipeline.sink, &self.lease);
        self.with_retries(
            "writing a batch",
            crate::telemetry::metrics::operation::SINK_WRITE_BATCH,
            deadline,
            || sink.write(lease, batch),
        )
        .await
    }

    /// Runs a sink operation with retries, through the breaker ([`retry`]):
    /// the partition is paused while the breaker keeps the operation
    /// waiting. Also says whether it paused the partition, for [`Flow`].
    async fn with_retries<T, F, Fut>(
        &self,
        what: &str,
        operation: &'static str,
        deadline: Option<Instant>,
        op: F,
    ) -> (Result<T, SinkError>, bool)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SinkError>>,
    {
        let paused = std::sync::atomic::AtomicBool::new(false);
        let pause = || {
            if !paused.swap(true, std::sync::atomic::Ordering::Relaxed) {
                self.pause();
            }
        };
        let result = retry(
            what,
            operation,
            deadline,
            &self.pipeline.retry,
            &self.pipeline.breaker,
            &pause,
            op,
        )
        .await;
        (result, paused.into_inner())
    }

    /// [`Worker::write`], noting a pause.
    async fn write_batch(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<crate::sink::Written, SinkError> {
        // Dead letters the offset passes need no mark; stored marks it passes go.
        let next = self.batch.next_offset;
        self.batch.dead_lettered.retain(|&o| o >= next);
        self.batch.prune_dead_lettered = self.dead_letter_marks.any_below(next);
        let (written, paused) = self.write(&self.batch, deadline).await;
        if paused {
            self.flow.paused_for_breaker();
        }
        written
    }

    /// The sink refused the batch for its data: writes its events one at a
    /// time (the partition's stored offset held where it was), sends each
    /// event it refuses to the dead-letter topic as the record it came from,
    /// and leaves the batch empty for the progress write.
    async fn write_around_refused(
        &mut self,
        first: &SinkError,
        deadline: Option<Instant>,
    ) -> Result<(), SinkError> {
        tracing::warn!(topic = %self.topic, partition = self.lease.partition, error = %first,
            events = self.batch.events.len(),
            "the sink refused a batch for its data; writing its events one at a time");
        let events = std::mem::take(&mut self.batch.events);
        let mut gaps = std::mem::take(&mut self.batch.gaps);
        let hold = self.hold_offset(&events).unwrap_or(self.batch.next_offset);
        let mut passed = vec![];
        for event in events {
            let single = Batch {
                events: vec![event],
                gaps: std::mem::take(&mut gaps),
                next_offset: hold,
                ..Batch::default()
            };
            let (written, paused) = self.write(&single, deadline).await;
            if paused {
                self.flow.paused_for_breaker();
            }
            match written {
                Ok(w) => {
                    self.counts.applied += w.applied;
                    self.counts.absorbed += w.absorbed;
                }
                Err(e) if e.is_record_error() => {
                    let event = &single.events[0];
                    let Some(record) = event.source.as_deref() else {
                        return Err(e);
                    };
                    let why = format!(
                        "{}: the sink refused the event (key {}, sequence {}): {e}",
                        record.location(),
                        event.key,
                        event.sequence
                    );
                    if let Err(dle) = self
                        .dead_letter(record, Some(&event.key), Some(&event.payload), &why)
                        .await
                    {
                        tracing::error!(error = %dle, "{why}");
                        return Err(e);
                    }
                    passed.push((event.key.clone(), event.sequence));
                }
                Err(e) => return Err(e),
            }
        }
        self.batch.gaps = gaps;
        // Stored with the progress write that passes their offsets.
        self.batch.passed.extend(passed);
        Ok(())
    }

    async fn flush_or_stop(&mut self, deadline: Option<Instant>) {
        if let Err(e) = self.flush(deadline).await {
            self.stop(e.to_string());
        }
    }

    /// Hands the sink's offset to librdkafka for its next (advisory) commit.
    fn store_advisory(&self, next: i64) {
        let mut tpl = TopicPartitionList::new();
        let stored = tpl
            .add_partition_offset(&self.topic, self.lease.partition, Offset::Offset(next))
            .and_then(|_| self.consumer.store_offsets(&tpl));
        if let Err(e) = stored {
            tracing::debug!(topic = %self.topic, partition = self.lease.partition, error = %e,
                "cannot store advisory offset");
        }
    }

    fn resume(&self) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, self.lease.partition);
        if let Err(e) = self.consumer.resume(&tpl) {
            tracing::warn!(topic = %self.topic, partition = self.lease.partition, error = %e,
                "cannot resume partition");
        }
    }

    fn pause(&self) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, self.lease.partition);
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::warn!(topic = %self.topic, partition = self.lease.partition, error = %e,
                "cannot pause partition");
        }
    }

    /// A fetch error on this partition's queue. One that retrying cannot fix
    /// (a record librdkafka cannot decompress or parse, or that is too large)
    /// stops the partition in front of the record; any other is logged, at
    /// most once a minute, while librdkafka retries.
    async fn on_fetch_error(&mut self, e: rdkafka::error::KafkaError) {
        let offset = self.progress.reading();
        let at = offset.map_or("the start".to_string(), |o| format!("offset {o}"));
        if e.rdkafka_error_code().is_some_and(fetch_error_is_permanent) {
            self.flush_or_stop(None).await;
            self.stop(format!(
                "cannot read the record at {at} of {}/{}: {e}; retrying cannot fix this \
                 (a compression codec or record format this build cannot read, a corrupt or \
                 oversized record); the partition's stored offset does not pass it",
                self.topic, self.lease.partition
            ));
            return;
        }
        let now = Instant::now();
        if self
            .fetch_error_logged_at
            .is_none_or(|t| now.duration_since(t) >= FETCH_ERROR_LOG_INTERVAL)
        {
            self.fetch_error_logged_at = Some(now);
            tracing::warn!(topic = %self.topic, partition = self.lease.partition,
                next_offset = ?offset, error = %e, "fetch error; librdkafka retries");
        }
    }

    /// Stops handling this partition: it is paused and stays so until the process restarts.
    fn stop(&mut self, reason: String) {
        let Some(action) = self.flow.stop() else {
            return;
        };
        self.dirty_since = None;
        self.apply(action);
        crate::telemetry::health::health().stopped(&self.topic, self.lease.partition, &reason);
        tracing::error!(topic = %self.topic, partition = self.lease.partition,
            stored_next_offset = ?self.progress.stored(), error = %reason, "partition stopped");
    }

    /// Finishes the batch in flight on drain; returns the stored next offset.
    async fn finish(&mut self) -> Option<i64> {
        if self.flow.writing() {
            self.flush_or_stop(Some(Instant::now() + DRAIN_WRITE_BUDGET))
                .await;
        }
        let c = &self.counts;
        tracing::info!(topic = %self.topic, partition = self.lease.partition,
            next_offset = ?self.progress.stored(), consumed = c.consumed, released = c.released,
            applied = c.applied, absorbed = c.absorbed, duplicates = c.duplicates,
            stale = c.stale, gaps = c.gaps, batches = c.batches,
            dead_lettered = c.dead_lettered, replayed_late = c.replayed_late,
            tombstones_ignored = c.tombstones_ignored,
            held = self.buffer.held_events(), "partition drained");
        self.progress.stored()
    }
}

/// The record a dead letter carries: the record itself, or with `[mask]`
/// on, its payload masked (`ordo.payload = masked`) or, when it cannot be
/// parsed to mask, withheld (`ordo.payload = withheld`; the record stays in
/// its source topic, at the offset the letter names).
fn letter_of<'a>(
    masker: Option<&crate::mask::Masker>,
    record: &'a Record,
    masked: Option<&crate::record::JsonText>,
) -> std::borrow::Cow<'a, Record> {
    let Some(masker) = masker else {
        return std::borrow::Cow::Borrowed(record);
    };
    let payload = match masked {
        Some(text) => Some(text.as_str().as_bytes().to_vec()),
        None => record
            .payload
            .as_deref()
            .and_then(|p| std::str::from_utf8(p).ok())
            .and_then(|text| masker.mask(text).ok())
            .map(String::into_bytes),
    };
    let how = if payload.is_some() || record.payload.is_none() {
        "masked"
    } else {
        "withheld"
    };
    let mut letter = record.clone();
    letter.payload = payload;
    letter.headers.push((
        crate::dlq::headers::PAYLOAD.to_string(),
        Some(how.as_bytes().to_vec()),
    ));
    std::borrow::Cow::Owned(letter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode as C;

    #[test]
    fn undecodable_records_stop_and_broker_trouble_retries() {
        for code in [
            C::NotImplemented,
            C::BadCompression,
            C::BadMessage,
            C::MessageSizeTooLarge,
        ] {
            assert!(fetch_error_is_permanent(code), "{code:?}");
        }
        for code in [
            C::BrokerTransportFailure,
            C::AllBrokersDown,
            C::NotLeaderForPartition,
            C::RequestTimedOut,
            C::OffsetOutOfRange,
        ] {
            assert!(!fetch_error_is_permanent(code), "{code:?}");
        }
    }
}
