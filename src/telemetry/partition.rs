//! A partition's telemetry: what its machine reports ([`Note`]s, its
//! [`Counts`]) and what its shell measures (decode and write times, a dead
//! letter sent), turned into metrics and log lines in one place. The
//! partition's code says what happened; how often a line is logged, at which
//! level and with which fields is decided here.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter};

use super::health::{health, Position};
use super::metrics::metrics;
use crate::consume::partition::{Counts, Letter, Note, Outcome, TypeCounts};
use crate::record::Record;
use crate::sink::Batch;

/// A key starting to wait is logged at info at most this often per partition.
const WAITING_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Keys remembered per partition for the below-`first_sequence` line.
const BELOW_FIRST_LOGGED_KEYS: usize = 10_000;
/// Transient fetch errors are logged at most this often per partition.
const FETCH_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Event type labels in use, across partitions: at most the configured
/// number (`source.max_event_types`); other types are counted as `other`.
fn type_label(event_type: &str, max: usize) -> String {
    static SEEN: std::sync::OnceLock<std::sync::Mutex<HashSet<String>>> =
        std::sync::OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    let Ok(mut seen) = seen.lock() else {
        return "other".into();
    };
    if seen.contains(event_type) {
        return event_type.to_string();
    }
    if seen.len() < max {
        seen.insert(event_type.to_string());
        return event_type.to_string();
    }
    "other".into()
}

/// One partition's reporter.
pub struct Reporter {
    topic: Arc<str>,
    partition: i32,
    partition_label: String,
    correlation_header: String,
    causation_header: String,
    /// The counts already published.
    published: Counts,
    published_typed: TypeCounts,
    /// `ordo_events_total` of each type label, per outcome.
    outcomes: HashMap<String, [IntCounter; 6]>,
    max_event_types: usize,
    decode_time: Histogram,
    order_time: Histogram,
    waiting_logged_at: Option<Instant>,
    waiting_unlogged: u64,
    below_first_logged: HashSet<String>,
    fetch_error_logged_at: Option<Instant>,
}

impl Reporter {
    pub fn new(
        topic: Arc<str>,
        partition: i32,
        correlation_header: &str,
        causation_header: &str,
        max_event_types: usize,
    ) -> Self {
        let m = metrics();
        Self {
            outcomes: HashMap::new(),
            published_typed: TypeCounts::default(),
            max_event_types,
            decode_time: m.stage_seconds.with_label_values(&["decode"]),
            order_time: m.stage_seconds.with_label_values(&["order"]),
            partition_label: partition.to_string(),
            topic,
            partition,
            correlation_header: correlation_header.to_string(),
            causation_header: causation_header.to_string(),
            published: Counts::default(),
            waiting_logged_at: None,
            waiting_unlogged: 0,
            below_first_logged: HashSet::new(),
            fetch_error_logged_at: None,
        }
    }

    /// The span of log lines about a record (see [`super::span`]).
    pub fn span_of(&self, r: &Record, key: Option<&str>) -> tracing::Span {
        super::span::record_span(r, key, &self.correlation_header, &self.causation_header)
    }

    /// Publishes what the counts gained since last time.
    pub fn counts(&mut self, now: &Counts, typed: &TypeCounts) {
        if *now == self.published {
            return;
        }
        self.published = *now;
        let mut gains: Vec<(String, usize, u64)> = Vec::new();
        let mut gained = |label: &str, now: &[u64; 6], before: &[u64; 6]| {
            for (i, (n, b)) in now.iter().zip(before).enumerate() {
                if n > b {
                    gains.push((label.to_string(), i, n - b));
                }
            }
        };
        gained("none", &typed.none, &self.published_typed.none);
        gained("other", &typed.other, &self.published_typed.other);
        for (t, counts) in &typed.named {
            let before = self
                .published_typed
                .named
                .get(t)
                .copied()
                .unwrap_or_default();
            gained(t, counts, &before);
        }
        for (t, i, n) in gains {
            let label = match t.as_str() {
                "none" | "other" => t,
                _ => type_label(&t, self.max_event_types),
            };
            let topic = &self.topic;
            let counters = self.outcomes.entry(label).or_insert_with_key(|label| {
                Outcome::ALL.map(|o| {
                    metrics()
                        .events
                        .with_label_values(&[&**topic, o.as_str(), label.as_str()])
                })
            });
            counters[i].inc_by(n);
        }
        self.published_typed = typed.clone();
    }

    /// One record's decode took `elapsed`.
    pub fn decoded(&self, elapsed: Duration) {
        self.decode_time.observe(elapsed.as_secs_f64());
    }

    /// One record's ordering (its bound checks included) took `elapsed`.
    pub fn ordered(&self, elapsed: Duration) {
        self.order_time.observe(elapsed.as_secs_f64());
    }

    /// A batch was written in `elapsed`.
    pub fn written(&self, batch: &Batch, elapsed: Duration) {
        let m = metrics();
        let seconds = elapsed.as_secs_f64();
        m.batch_seconds
            .with_label_values(&[&*self.topic])
            .observe(seconds);
        m.batch_events
            .with_label_values(&[&*self.topic])
            .observe(batch.events.len() as f64);
        m.stage_seconds
            .with_label_values(&["sink"])
            .observe(seconds);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let e2e = m.end_to_end_seconds.with_label_values(&[&*self.topic]);
        for ts in batch.events.iter().filter_map(|e| e.timestamp_ms) {
            e2e.observe((now_ms - ts).max(0) as f64 / 1000.0);
        }
    }

    /// A letter reached the dead-letter topic `topic`.
    pub fn dead_lettered(&self, letter: &Letter, topic: &str) {
        let r = &letter.record;
        // A record that could not be decoded has no ordering key yet: its
        // Kafka message key names it instead.
        let message_key = r.key.as_deref().map(String::from_utf8_lossy);
        self.span_of(r, letter.key.as_deref()).in_scope(|| {
            tracing::warn!(topic = %self.topic, partition = self.partition,
                offset = r.offset, key = letter.key.as_deref(),
                message_key = message_key.as_deref(), dead_letter_topic = %topic,
                error = %letter.why, "record sent to the dead-letter topic")
        });
    }

    /// The partition's position for lag and the buffer's gauges.
    pub fn position(&self, last_consumed: Option<i64>, held_events: usize, held_bytes: usize) {
        if let Some(last) = last_consumed {
            health().position(&self.topic, self.partition, Position::Next(last + 1));
        }
        let m = metrics();
        let labels = [&*self.topic, self.partition_label.as_str()];
        m.buffered_events
            .with_label_values(&labels)
            .set(held_events as i64);
        m.buffered_bytes
            .with_label_values(&labels)
            .set(held_bytes as i64);
    }

    /// How long the oldest held event has waited (0: none held).
    pub fn held_age(&self, oldest: Option<Instant>, now: Instant) {
        let age = oldest.map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        metrics()
            .held_oldest_age_seconds
            .with_label_values(&[&*self.topic, self.partition_label.as_str()])
            .set(age);
    }

    /// What the machine reported.
    pub fn note(&mut self, note: Note) {
        let (topic, partition) = (&*self.topic, self.partition);
        match note {
            Note::ResumedAfterStored { expected, first } => tracing::warn!(topic, partition,
                expected, first,
                "the partition resumed after its stored offset: offsets in between are no longer in Kafka (retention?)"),
            Note::BelowStored { offset } => tracing::debug!(topic, partition, offset,
                "record below the stored offset ignored"),
            Note::KeyWaiting { key, expected, received, offset } => {
                self.key_waiting(&key, expected, received, offset)
            }
            Note::BelowFirst { key, first, received, offset } => {
                if self.below_first_logged.len() >= BELOW_FIRST_LOGGED_KEYS
                    || self.below_first_logged.contains(&key)
                {
                    tracing::debug!(topic, partition, key, first_sequence = first,
                        received_version = received, offset,
                        "version below ordering.first_sequence dropped");
                } else {
                    tracing::warn!(topic, partition, key = %key, first_sequence = first,
                        received_version = received, offset,
                        "a key's event has a version below ordering.first_sequence and nothing was applied for the key: dropped as stale (set ordering.first_sequence to the producers' first version)");
                    self.below_first_logged.insert(key);
                }
            }
            Note::GapSkipped(gap) => {
                tracing::warn!(topic, partition, key = %gap.key, expected = gap.expected,
                    released = gap.released, offset = gap.offset, bound = gap.bound.as_str(),
                    "sequence gap skipped (ordering.on_bound = skip)");
                metrics().gaps.with_label_values(&[topic]).inc();
            }
            Note::BufferFull { bound, held_events, held_bytes, oldest_offset } => {
                tracing::error!(topic, partition, bound = bound.as_str(), held_events,
                    held_bytes, oldest_offset,
                    "ordering buffer full (ordering.{}); partition paused until its gaps fill (ordering.on_bound = wait)",
                    bound.as_str())
            }
            Note::StillWaiting { bound, key, expected, received, offset, held_events, stored } => {
                // The bound named is the one reached: time, or the buffer's size.
                let what = match bound {
                    crate::order::Bound::GapTimeout => {
                        "a key has waited longer than ordering.gap_timeout_ms for a missing version".to_string()
                    }
                    other => format!(
                        "the ordering buffer is past ordering.{} while a key waits for a missing version",
                        other.as_str()
                    ),
                };
                tracing::warn!(topic, partition, key, expected_version = expected,
                    received_version = received, offset, held_events, bound = bound.as_str(),
                    stored_next_offset = stored,
                    "{what}; its events and the partition's stored offset are held (ordering.on_bound = wait)")
            }
            Note::DecodeDeferred { record, attempt, retry_in, error } => {
                self.span_of(&record, None).in_scope(|| tracing::warn!(topic, partition,
                    attempt, retry_in_ms = retry_in.as_millis() as u64, error = %error,
                    "cannot decode the record yet; the partition is paused and the record will be tried again"));
                metrics()
                    .retries
                    .with_label_values(&[super::metrics::operation::DECODE_RECORD])
                    .inc();
            }
            Note::DecodeRecovered => tracing::info!(topic, partition,
                "records decode again; the partition resumes"),
            Note::BatchRefused { error, events } => tracing::warn!(topic, partition,
                error = %error, events,
                "the sink refused a batch for its data; writing its events one at a time"),
            Note::LetterFailed { why, error } => tracing::error!(topic, partition,
                error = %error, "{why}"),
            Note::FetchError { next_offset, error } => {
                let now = Instant::now();
                if self
                    .fetch_error_logged_at
                    .is_none_or(|t| now.duration_since(t) >= FETCH_ERROR_LOG_INTERVAL)
                {
                    self.fetch_error_logged_at = Some(now);
                    tracing::warn!(topic, partition, next_offset, error = %error,
                        "fetch error; librdkafka retries");
                }
            }
            Note::Committed { next } => health().stored(topic, partition, next),
            Note::HandedOver { epoch, stored } => {
                tracing::info!(topic, partition, epoch, stored_next_offset = stored,
                    "another replica took the partition's lease: its work here is dropped (the new owner resumes from the sink's offset) until the revoke comes");
                metrics().handovers.with_label_values(&[topic]).inc();
            }
            Note::Stopped { reason, stored, record } => {
                health().stopped(topic, partition, &reason);
                let span = record
                    .map(|r| self.span_of(&r, None))
                    .unwrap_or_else(tracing::Span::none);
                span.in_scope(|| tracing::error!(topic, partition,
                    stored_next_offset = stored, error = %reason, "partition stopped"));
            }
        }
    }

    /// A key starts waiting. Late events are common and their gaps fill
    /// within moments, so one such line per partition every
    /// [`WAITING_LOG_INTERVAL`] is logged at info (the others at debug,
    /// counted in the next).
    fn key_waiting(&mut self, key: &str, expected: i64, received: i64, offset: i64) {
        let now = Instant::now();
        let (topic, partition) = (&*self.topic, self.partition);
        let due = self
            .waiting_logged_at
            .is_none_or(|t| now.saturating_duration_since(t) >= WAITING_LOG_INTERVAL);
        if due {
            tracing::info!(
                topic,
                partition,
                key,
                expected_version = expected,
                received_version = received,
                offset,
                other_keys_started_waiting = self.waiting_unlogged,
                "key waits for a missing version; its later events are held"
            );
            self.waiting_logged_at = Some(now);
            self.waiting_unlogged = 0;
        } else {
            self.waiting_unlogged += 1;
            tracing::debug!(
                topic,
                partition,
                key,
                expected_version = expected,
                received_version = received,
                offset,
                "key waits for a missing version"
            );
        }
    }

    /// The partition drained; what it did, in all.
    pub fn drained(&self, c: &Counts, stored: Option<i64>, held: usize) {
        tracing::info!(topic = %self.topic, partition = self.partition,
            next_offset = stored, consumed = c.consumed, released = c.released,
            applied = c.applied, absorbed = c.absorbed, duplicates = c.duplicates,
            stale = c.stale, gaps = c.gaps, batches = c.batches,
            dead_lettered = c.dead_lettered, replayed_late = c.replayed_late,
            tombstones_ignored = c.tombstones_ignored, held, "partition drained");
    }
}
