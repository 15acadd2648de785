//! Consume: one consumer group, one ordered worker per assigned partition.
//!
//! The group's rebalance callbacks ([`context`]) hand each change to the
//! [`coordinator`], the one task that owns the partitions held: on assign it
//! takes each partition's lease (the callback sets the resume offset in the
//! assignment itself) and starts a [`worker`] on the partition's own queue
//! (leasing in the background, [`lease`], when the sink cannot give the lease
//! at once), fetched only while it holds one of the memory budget's
//! [`turns`]; on revoke the workers finish their in-flight batch and commit
//! before the revoke returns. A worker is the I/O shell of its partition's
//! machine ([`partition`]: ordering, batches, progress, with no I/O). The
//! consumer is assembled from the settings, and run, by the assembly
//! (`pipeline.rs`).

mod context;
mod coordinator;
mod flow;
mod lease;
pub mod membership;
pub mod memory;
pub mod partition;
mod progress;
pub mod source;
pub mod turns;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError;

use crate::decode::Decoder;
use crate::order::BufferConfig;
use crate::sink::{Sink, SinkError};
use source::StartFrom;

pub use context::OrdoContext;

/// The consumer type Ordo runs.
pub type OrdoConsumer = StreamConsumer<OrdoContext>;

/// Why the consumer stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("cannot create the Kafka consumer: {0}")]
    Create(#[source] KafkaError),
    #[error("cannot reach Kafka at {servers}: {reason}")]
    Unreachable { servers: String, reason: String },
    #[error("topic `{topic}` does not exist on the cluster at {servers}")]
    NoSuchTopic { topic: String, servers: String },
    #[error("dead-letter topic `{topic}` (for `{source_topic}`) does not exist on the cluster at {servers}; create it, or set dead_letter.enabled = false to stop partitions instead")]
    NoSuchDeadLetterTopic {
        topic: String,
        source_topic: String,
        servers: String,
    },
    #[error("cannot create the dead-letter producer: {0}")]
    DeadLetterProducer(#[source] KafkaError),
    #[error("cannot subscribe to {topics:?}: {source}")]
    Subscribe {
        topics: Vec<String>,
        #[source]
        source: KafkaError,
    },
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("{0}")]
    Fatal(String),
}

/// What every worker shares: how to decode, order and write, and where to report a fatal error.
pub struct Shared {
    pub decoder: Decoder,
    /// Masks payloads (`[mask]`): dead letters carry masked payloads too.
    pub masker: Option<Arc<crate::mask::Masker>>,
    /// Where records that cannot be decoded go; `None`: they stop their partition.
    pub dead_letters: Option<crate::dlq::DeadLetters>,
    pub sink: Arc<dyn Sink>,
    /// Opens while the sink keeps failing; workers pause their partitions meanwhile.
    pub breaker: crate::sink::breaker::Breaker,
    /// How sink operations are retried.
    pub retry: crate::sink::retry::RetryConfig,
    pub buffer: BufferConfig,
    pub policy: crate::order::BoundPolicy,
    /// What a record without a value does.
    pub tombstones: crate::decode::Tombstones,
    pub max_cached_keys: usize,
    /// Event types counted by name (`source.max_event_types`).
    pub max_event_types: usize,
    pub batch_max_events: usize,
    pub batch_max_wait: Duration,
    pub start_from: StartFrom,
    /// Who holds the leases: `host:pid`.
    pub owner: String,
    /// Headers carrying correlation and causation ids, for records' spans.
    pub correlation_header: String,
    pub causation_header: String,
    pub fatal: crate::process::Fatal,
    /// Which partitions librdkafka may fetch at once ([`turns`]).
    pub turns: turns::Turns,
    /// Which partitions may take records from their queues ([`turns::InHand`]).
    pub hand: turns::Turns,
}
