//! `ordo demo`: the whole pipeline on an embedded default configuration.
//!
//! Starts an in-process Kafka cluster, produces sample events (some out of
//! order, some duplicated), runs Ordo into the given PostgreSQL until every
//! partition is drained, and reports what landed.

pub mod data;
pub mod mock;
pub mod orders;

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use crate::config::Settings;

/// The embedded configuration.
pub const CONFIG: &str = include_str!("../../config/demo.toml");
const TOPIC: &str = "demo.accounts";
const PARTITIONS: i32 = 3;

/// A failure of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Run(#[from] crate::RunError),
    #[error(transparent)]
    Sink(#[from] crate::sink::postgres::SinkError),
}

/// What the demo saw.
#[derive(Debug)]
pub struct Report {
    pub produced: usize,
    pub late: usize,
    pub duplicates: usize,
    pub distinct: usize,
    pub high_watermarks: Vec<i64>,
    pub table: String,
}

/// Runs the demo with `events` events over `keys` keys into `postgres_url`.
pub async fn run(postgres_url: &str, events: usize, keys: usize) -> Result<Report, DemoError> {
    let cluster = mock::MockCluster::start(3).map_err(DemoError::Setup)?;
    cluster
        .create_topic(TOPIC, PARTITIONS)
        .map_err(DemoError::Setup)?;
    let bootstrap = cluster.bootstrap_servers().to_string();
    let vars = vec![
        (
            "ORDO_KAFKA__BOOTSTRAP_SERVERS".to_string(),
            bootstrap.clone(),
        ),
        ("ORDO_POSTGRES__URL".to_string(), postgres_url.to_string()),
    ];
    let settings = Settings::load_embedded(CONFIG, &vars)?;
    crate::telemetry::logging::init(&settings.log.level, settings.log.format);

    let ds = data::generate(events, PARTITIONS, keys.max(1), 0.05, 20, 0.02, 42);
    let produced = ds.records.len();
    let hw = {
        let bootstrap = bootstrap.clone();
        tokio::task::spawn_blocking(move || produce_all(&bootstrap, &ds.records))
            .await
            .map_err(|e| DemoError::Setup(e.to_string()))?
            .map_err(DemoError::Setup)?
    };
    tracing::info!(produced, topic = TOPIC, high_watermarks = ?hw, "sample events produced");

    let sink = crate::consume::prepare_sink(&settings).await?;
    let watcher = sink.clone();
    let target = hw.clone();
    let drained = async move {
        loop {
            if let Ok(stored) = watcher.stored_offsets(TOPIC).await {
                let all = (0..PARTITIONS).all(|p| stored.get(&p) == target.get(p as usize));
                if all {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let shutdown = async {
        tokio::select! {
            _ = drained => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    crate::consume::run(&settings, sink, shutdown)
        .await
        .map_err(crate::RunError::from)?;
    drop(cluster);
    Ok(Report {
        produced,
        late: ds.inversions,
        duplicates: ds.duplicates,
        distinct: ds.keys * ds.versions as usize,
        high_watermarks: hw,
        table: settings.sink.table.clone(),
    })
}

/// Produces the records in order; returns each partition's high watermark.
fn produce_all(bootstrap: &str, records: &[data::Produced]) -> Result<Vec<i64>, String> {
    produce(bootstrap, TOPIC, records)?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    (0..PARTITIONS)
        .map(|p| {
            consumer
                .fetch_watermarks(TOPIC, p, Duration::from_secs(10))
                .map(|(_, high)| high)
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// Produces records to their partitions in order (idempotently) and waits for all.
pub fn produce(bootstrap: &str, topic: &str, records: &[data::Produced]) -> Result<(), String> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .map_err(|e| e.to_string())?;
    for r in records {
        let mut rec = BaseRecord::to(topic)
            .partition(r.partition)
            .payload(&r.payload);
        if let Some(k) = &r.key {
            rec = rec.key(k);
        }
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((e, back))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                {
                    producer.poll(Duration::from_millis(10));
                    rec = back;
                }
                Err((e, _)) => return Err(format!("cannot produce to {topic}: {e}")),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(60))
        .map_err(|e| format!("cannot flush records to {topic}: {e}"))
}
