//! What the partition machine hands out: the [`Effect`]s its shell carries
//! out, the [`Letter`]s it sends to the dead-letter topic, the [`Note`]s
//! telemetry reports, and the [`Counts`] of what became of its records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::order::{Bound, Gap};
use crate::record::{JsonText, Record};
use crate::sink::Batch;

/// What the machine asks of its shell.
#[derive(Debug)]
pub enum Effect {
    /// Decode these records in order, stopping after the first that fails;
    /// answer with [`super::Partition::decoded`].
    Decode(Vec<Arc<Record>>),
    /// Read the sink's last applied sequence of these keys (retrying until
    /// `deadline`, if given); answer with [`super::Partition::key_states`].
    ReadKeyStates {
        keys: Vec<String>,
        deadline: Option<Instant>,
    },
    /// Write this batch and its next offset in one transaction (retrying
    /// until `deadline`, if given); answer with [`super::Partition::written`].
    Write {
        batch: Batch,
        deadline: Option<Instant>,
    },
    /// Send this letter to the dead-letter topic; answer with
    /// [`super::Partition::dead_lettered`].
    DeadLetter(Letter),
    /// Stop fetching the partition.
    Pause,
    /// Fetch the partition again.
    Resume,
    /// Hand the stored offset to Kafka's (advisory) committed copy.
    StoreAdvisory(i64),
    /// Something telemetry reports.
    Note(Note),
    /// Drained: the partition's stored next offset, as the sink holds it.
    Drained(Option<i64>),
}

/// A record bound for the dead-letter topic, and why.
#[derive(Debug, Clone)]
pub struct Letter {
    pub record: Arc<Record>,
    /// The key it was decoded with, if it was.
    pub key: Option<String>,
    /// The decoded payload (masked with `[mask]` on), if it was decoded.
    pub masked: Option<JsonText>,
    pub why: String,
    /// The event's type, if it was decoded and has one.
    pub event_type: Option<Arc<str>>,
    /// The route whose statement refused the event, if one did.
    pub route: Option<String>,
}

/// What the machine reports, for logs and metrics (`telemetry::partition`).
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// The first records read lie past the stored offset: the ones between
    /// are no longer in Kafka.
    ResumedAfterStored { expected: i64, first: i64 },
    /// A record below the stored offset was fetched and ignored.
    BelowStored { offset: i64 },
    /// A key starts waiting for a missing version.
    KeyWaiting {
        key: String,
        expected: i64,
        received: i64,
        offset: i64,
    },
    /// A key's first event has a version below `ordering.first_sequence`.
    BelowFirst {
        key: String,
        first: i64,
        received: i64,
        offset: i64,
    },
    /// A gap was skipped (`ordering.on_bound = skip`).
    GapSkipped(Gap),
    /// The buffer is full under `wait`: the partition is paused.
    BufferFull {
        bound: Bound,
        held_events: usize,
        held_bytes: usize,
        oldest_offset: Option<i64>,
    },
    /// Under `wait`, a bound is still reached by the same oldest event.
    StillWaiting {
        bound: Bound,
        key: String,
        expected: i64,
        received: i64,
        offset: i64,
        held_events: usize,
        stored: Option<i64>,
    },
    /// A record cannot be decoded yet: tried again in `retry_in`.
    DecodeDeferred {
        record: Arc<Record>,
        attempt: u32,
        retry_in: Duration,
        error: String,
    },
    /// The deferred records decoded; the partition resumes.
    DecodeRecovered,
    /// The sink refused a batch for its data: its events go one at a time.
    BatchRefused { error: String, events: usize },
    /// A dead letter could not be written for a refused event.
    LetterFailed { why: String, error: String },
    /// A transient fetch error (librdkafka retries).
    FetchError {
        next_offset: Option<i64>,
        error: String,
    },
    /// A batch committed: the stored next offset is now `next`.
    Committed { next: i64 },
    /// Another replica took the partition's lease (epoch `epoch` was
    /// fenced): its work here is dropped; a handover, not a failure.
    HandedOver { epoch: i64, stored: Option<i64> },
    /// The partition stopped; `record` is the one in front of which it did, if any.
    Stopped {
        reason: String,
        stored: Option<i64>,
        record: Option<Arc<Record>>,
    },
}

/// What happened to the partition's records, counted; telemetry publishes
/// the differences (`ordo_events_total`) and logs them on drain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub consumed: u64,
    pub released: u64,
    pub applied: u64,
    pub absorbed: u64,
    pub duplicates: u64,
    pub stale: u64,
    pub gaps: u64,
    pub batches: u64,
    pub dead_lettered: u64,
    pub replayed_late: u64,
    pub tombstones_ignored: u64,
}

/// The `ordo_events_total` outcomes counted per event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Absorbed,
    Duplicate,
    Stale,
    DeadLettered,
    TombstoneIgnored,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Applied,
        Outcome::Absorbed,
        Outcome::Duplicate,
        Outcome::Stale,
        Outcome::DeadLettered,
        Outcome::TombstoneIgnored,
    ];

    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Absorbed => "absorbed",
            Outcome::Duplicate => "duplicate",
            Outcome::Stale => "stale",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::TombstoneIgnored => "tombstone_ignored",
        }
    }

    /// The outcome's count in `c`.
    pub fn of(self, c: &Counts) -> u64 {
        match self {
            Outcome::Applied => c.applied,
            Outcome::Absorbed => c.absorbed,
            Outcome::Duplicate => c.duplicates,
            Outcome::Stale => c.stale,
            Outcome::DeadLettered => c.dead_lettered,
            Outcome::TombstoneIgnored => c.tombstones_ignored,
        }
    }
}

/// The outcomes counted per event type (`ordo_events_total{type}`): events
/// without a type apart, at most `max` types by name, the rest together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeCounts {
    max: usize,
    /// Events without a type.
    pub none: [u64; 6],
    pub named: std::collections::HashMap<Arc<str>, [u64; 6]>,
    /// Types seen beyond `max`.
    pub other: [u64; 6],
}

impl TypeCounts {
    /// Counts at most `max` types by name.
    pub fn new(max: usize) -> Self {
        Self {
            max,
            ..Self::default()
        }
    }

    /// `n` events of `event_type` had `outcome`.
    pub fn add(&mut self, event_type: Option<&Arc<str>>, outcome: Outcome, n: u64) {
        let slot = match event_type {
            None => &mut self.none,
            Some(t) => {
                if !self.named.contains_key(t) && self.named.len() >= self.max {
                    &mut self.other
                } else {
                    self.named.entry(t.clone()).or_default()
                }
            }
        };
        slot[outcome as usize] += n;
    }
}
