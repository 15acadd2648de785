//! `ordo produce`: a load generator for Ordo's workload, pointed at any
//! cluster the configuration reaches (same `[kafka]` connection and security).
//!
//! Keyed, versioned events: each event goes to a key drawn uniformly from
//! `keys` and carries that key's next version, partitioned by key (so a key's
//! events share a partition, as real producers do). A fraction arrives late
//! (held back behind up to `late_window` later events), a fraction is sent
//! twice, a fraction is poison (undecodable). JSON, or Avro with the three
//! `orders` writer schema versions registered in the configured registry and
//! used in turn. It writes the end state the sink must reach (each key's last
//! version), so a run can be checked.

mod plan;

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

pub use plan::{Event, Plan};

use crate::config::Settings;
use crate::decode::FormatKind;

/// What a JSON event holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `id`, `version`, `amount`, `note` (`ordering.sequence = "field:version"`).
    Flat,
    /// The order event as the Avro reader schema v3 renders it, as JSON
    /// (`ordering.sequence = "field:meta.seq"`): the same rows as Avro, to
    /// compare the two formats.
    Orders,
    /// Order events of four types (`type`: `order.placed`, `order.paid`,
    /// `order.shipped`, `order.delivered` in turn; a placed one has
    /// `data.customer` and `data.amount`), for routes
    /// (`source.event_type = "field:type"`, `ordering.sequence = "field:version"`).
    Typed,
}

/// What to produce.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    pub topic: String,
    /// Events to produce (duplicates and poison records come on top); with
    /// `duration`, as many as the rate allows in it.
    pub events: Option<u64>,
    /// Events per second; `None`: as fast as the cluster takes them.
    pub rate: Option<u64>,
    pub duration: Option<Duration>,
    pub keys: u64,
    pub late: f64,
    pub late_window: usize,
    pub duplicates: f64,
    pub poison: f64,
    pub format: FormatKind,
    /// What a JSON event holds (Avro events are always order events).
    pub shape: Shape,
    /// librdkafka `compression.type`.
    pub compression: String,
    /// librdkafka `linger.ms`.
    pub linger_ms: u64,
    pub seed: u64,
    /// Put before each key's name (`<prefix>key-00000001`): a second run
    /// into the same topic then writes new keys rather than duplicates of
    /// the first run's.
    pub key_prefix: String,
    /// Where to write the expected end state (`key,last_version` lines).
    pub expected: Option<PathBuf>,
}

/// What a run produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProduceReport {
    /// Distinct events (each key's versions 1..=last).
    pub events: u64,
    pub keys: u64,
    pub late: u64,
    pub duplicates: u64,
    pub poison: u64,
    /// Records the cluster acknowledged, and those it refused.
    pub delivered: u64,
    pub failed: u64,
    pub elapsed: Duration,
}

/// A run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("{0}")]
    Options(String),
    #[error("cannot create the producer: {0}")]
    Producer(String),
    #[error("schema registry: {0}")]
    Registry(String),
    #[error("cannot produce to {topic}: {reason}")]
    Send { topic: String, reason: String },
    #[error(
        "the producer was not ready to send to {topic} after {:.1} s: {reason}",
        .waited.as_secs_f64()
    )]
    NotReady {
        topic: String,
        waited: Duration,
        reason: String,
    },
    #[error("cannot write the expected end state to {file}: {reason}")]
    Expected { file: PathBuf, reason: String },
}

/// Counts deliveries, and tells when the producer has its producer id.
#[derive(Default)]
struct Counting {
    delivered: AtomicU64,
    failed: AtomicU64,
    last_error: crate::kafka::LastError,
    /// The idempotent producer holds a producer id (librdkafka's statistics
    /// say `idemp_state = "Assigned"`): records sent now go out at once.
    ready: AtomicBool,
}

impl ClientContext for Counting {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.last_error.log(level, fac, message);
    }
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.last_error.error(&error, reason);
    }
    /// Reads the producer id's state until it is assigned; after that the
    /// statistics are not parsed at all (on a cluster of many partitions
    /// they are large, and they keep coming every 100 ms).
    fn stats_raw(&self, statistics: &[u8]) {
        #[derive(serde::Deserialize)]
        struct Stats {
            eos: Option<Eos>,
        }
        #[derive(serde::Deserialize)]
        struct Eos {
            idemp_state: String,
        }
        if self.ready.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(Stats { eos: Some(eos) }) = serde_json::from_slice::<Stats>(statistics) {
            self.ready
                .store(eos.idemp_state == "Assigned", Ordering::Relaxed);
        }
    }
}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.delivered.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

impl ProduceOptions {
    fn validate(&self) -> Result<(), ProduceError> {
        let bad = |m: String| Err(ProduceError::Options(m));
        if self.events.is_none() && self.duration.is_none() {
            return bad("give --events, or --rate with --duration".into());
        }
        if self.duration.is_some() && self.rate.is_none() && self.events.is_none() {
            return bad("--duration needs --rate (or --events)".into());
        }
        if self.keys == 0 {
            return bad("--keys must be at least 1".into());
        }
        for (name, v) in [
            ("--late", self.late),
            ("--duplicates", self.duplicates),
            ("--poison", self.poison),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(format!("{name} {v} is not a fraction between 0 and 1"));
            }
        }
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&self.compression.as_str()) {
            return bad(format!(
                "--compression {}: valid values: none, gzip, snappy, lz4, zstd",
                self.compression
            ));
        }
        Ok(())
    }

    /// Events the run produces (with a rate and duration: their product, at most `events`).
    fn target(&self) -> u64 {
        let by_time = match (self.rate, self.duration) {
            (Some(r), Some(d)) => Some((r as f64 * d.as_secs_f64()) as u64),
            _ => None,
        };
        match (self.events, by_time) {
            (Some(e), Some(t)) => e.min(t),
            (Some(e), None) => e,
            (None, Some(t)) => t,
            (None, None) => 0,
        }
    }
}

/// Registers the `orders` writer schemas under the topic's value subject;
/// returns their ids (v1, v2, v3).
async fn register(settings: &Settings, topic: &str) -> Result<[u32; 3], ProduceError> {
    use schema_registry_converter::async_impl::schema_registry::post_schema;
    use schema_registry_converter::schema_registry_common::{SchemaType, SuppliedSchema};
    let registry = settings.schema_registry.as_ref().ok_or_else(|| {
        ProduceError::Registry("--format avro needs [schema_registry] in the configuration".into())
    })?;
    let client = registry
        .client()
        .map_err(|e| ProduceError::Registry(format!("schema_registry.{}: {}", e.key, e.reason)))?;
    let subject = format!("{topic}-value");
    let mut ids = [0; 3];
    for (i, text) in crate::demo::orders::SCHEMAS.iter().enumerate() {
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, text.to_string());
        ids[i] = post_schema(&client, subject.clone(), supplied)
            .await
            .map_err(|e| {
                ProduceError::Registry(format!(
                    "cannot register writer schema v{} under {subject}: {}",
                    i + 1,
                    crate::decode::avro::registry::describe(&e)
                ))
            })?
            .id;
    }
    Ok(ids)
}

/// Produces what `options` say; `progress` is told of each event.
pub async fn run(
    settings: &Settings,
    options: &ProduceOptions,
    progress: &indicatif::ProgressBar,
) -> Result<ProduceReport, ProduceError> {
    options.validate()?;
    let ids = match options.format {
        FormatKind::Avro => Some(register(settings, &options.topic).await?),
        FormatKind::Json => None,
    };
    let mut cfg = crate::dlq::connection_config(&settings.kafka);
    cfg.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", options.linger_ms.to_string())
        .set("compression.type", &options.compression)
        .set("queue.buffering.max.messages", "500000")
        // For `Counting::ready`: the statistics carry the producer id's state.
        .set("statistics.interval.ms", "100");
    let producer: BaseProducer<Counting> = cfg
        .create_with_context(Counting::default())
        .map_err(|e| ProduceError::Producer(crate::kafka::describe_error(&e).to_string()))?;
    let options = options.clone();
    let progress = progress.clone();
    tokio::task::spawn_blocking(move || {
        wait_ready(&producer, &options.topic, READY_TIMEOUT)?;
        produce_all(&producer, &options, ids, &progress)
    })
    .await
    .map_err(|e| ProduceError::Producer(e.to_string()))?
}

/// How long the producer may take to reach the cluster and get its producer id.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until the producer can send at once: the cluster reached and the
/// idempotent producer's id assigned. The clock of a run (its rate, and the
/// timestamps a latency measure reads) starts after that. librdkafka asks
/// for the id when the producer is created; when no broker is up yet at
/// that moment it asks again only 500 ms later, and records produced
/// meanwhile wait that long in its queue, which would count as latency.
fn wait_ready(
    producer: &BaseProducer<Counting>,
    topic: &str,
    timeout: Duration,
) -> Result<(), ProduceError> {
    let started = Instant::now();
    while !producer.context().ready.load(Ordering::Relaxed) {
        let waited = started.elapsed();
        if waited >= timeout {
            return Err(ProduceError::NotReady {
                topic: topic.to_string(),
                waited,
                reason: producer
                    .context()
                    .last_error
                    .get()
                    .unwrap_or_else(|| "no producer id from the cluster yet".into()),
            });
        }
        producer.poll(Duration::from_millis(20));
    }
    Ok(())
}

fn produce_all(
    producer: &BaseProducer<Counting>,
    options: &ProduceOptions,
    ids: Option<[u32; 3]>,
    progress: &indicatif::ProgressBar,
) -> Result<ProduceReport, ProduceError> {
    let target = options.target();
    progress.set_length(target);
    let mut plan = Plan::new(
        options.keys,
        options.late,
        options.late_window,
        options.duplicates,
        options.poison,
        options.seed,
    );
    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut queue: VecDeque<Event> = VecDeque::new();
    let mut drawn = 0;
    loop {
        while queue.is_empty() {
            if drawn < target {
                drawn += 1;
                queue.extend(plan.next_event());
            } else {
                queue.extend(plan.finish());
                if queue.is_empty() {
                    break;
                }
            }
        }
        let Some(event) = queue.pop_front() else {
            break;
        };
        let (key, payload) = match &event {
            Event::Good { key, version } => {
                let key = format!("{}{}", options.key_prefix, plan::key_name(*key));
                let payload = match ids {
                    None if options.shape == Shape::Orders => {
                        crate::demo::orders::expected(3, 3, &key, *version)
                            .to_string()
                            .into_bytes()
                    }
                    None if options.shape == Shape::Typed => {
                        crate::demo::order_events::payload(&key, *version)
                    }
                    None => crate::demo::data::payload(&key, *version),
                    Some(ids) => {
                        let writer = (*version as usize) % 3 + 1;
                        crate::demo::orders::encode(writer, ids[writer - 1], &key, *version)
                    }
                };
                (key, payload)
            }
            Event::Poison { n } => (format!("poison-{n:08}"), b"\x01{ not an event".to_vec()),
        };
        let mut record = BaseRecord::to(&options.topic).key(&key).payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, back))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                {
                    producer.poll(Duration::from_millis(10));
                    record = back;
                }
                Err((e, _)) => {
                    return Err(ProduceError::Send {
                        topic: options.topic.clone(),
                        reason: e.to_string(),
                    })
                }
            }
        }
        sent += 1;
        if matches!(event, Event::Good { .. }) {
            progress.inc(1);
        }
        producer.poll(Duration::ZERO);
        if let Some(rate) = options.rate {
            // Paced by records sent: sleep when ahead of the schedule.
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            let elapsed = started.elapsed();
            if due > elapsed + Duration::from_millis(2) {
                std::thread::sleep(due - elapsed);
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(|e| ProduceError::Send {
            topic: options.topic.clone(),
            reason: format!("not every record was acknowledged: {e}"),
        })?;
    let ctx = producer.context();
    let report = ProduceReport {
        events: plan.distinct(),
        keys: plan.keys_touched(),
        late: plan.late(),
        duplicates: plan.duplicates(),
        poison: plan.poison(),
        delivered: ctx.delivered.load(Ordering::Relaxed),
        failed: ctx.failed.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
    };
    if let Some(file) = &options.expected {
        let write = || -> std::io::Result<()> {
            let mut out = std::io::BufWriter::new(std::fs::File::create(file)?);
            for (key, version) in plan.last_versions() {
                writeln!(
                    out,
                    "{}{},{version}",
                    options.key_prefix,
                    plan::key_name(key)
                )?;
            }
            out.flush()
        };
        write().map_err(|e| ProduceError::Expected {
            file: file.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A producer that cannot reach any broker gets no producer id: the
    /// run stops with an error naming the topic, before any record is
    /// queued (and before its clock starts).
    #[test]
    fn a_producer_that_reaches_no_broker_is_not_ready() {
        let producer: BaseProducer<Counting> = rdkafka::ClientConfig::new()
            // A port nothing listens on.
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("enable.idempotence", "true")
            .set("statistics.interval.ms", "100")
            .create_with_context(Counting::default())
            .expect("producer");
        let err = wait_ready(&producer, "orders", Duration::from_millis(700))
            .expect_err("no broker, no producer id");
        let text = err.to_string();
        assert!(
            matches!(err, ProduceError::NotReady { ref topic, .. } if topic == "orders"),
            "{text}"
        );
        assert!(text.contains("orders"), "{text}");
        assert_eq!(producer.in_flight_count(), 0);
    }
}
