//! `ordo demo`: the whole pipeline on an embedded default configuration.
//!
//! Starts an in-process Kafka cluster and an in-process Schema Registry,
//! produces sample Avro order events written with three schema versions
//! (interleaved; some out of order, some duplicated), runs Ordo with reader
//! schema v3 into the given PostgreSQL until every partition is drained;
//! then runs the routes example (`examples/orders/`: order events of four
//! types into an event store and two read models) the same way, and reports
//! what landed.

pub mod data;
pub mod keep;
pub mod mock;
pub mod order_events;
pub mod orders;

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use crate::config::Settings;

/// The embedded configuration.
pub const CONFIG: &str = include_str!("../../config/demo.toml");
const TOPIC: &str = "demo.orders";
const PARTITIONS: i32 = 3;
/// Brokers of the in-process cluster.
const BROKERS: i32 = 3;

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
    Sink(#[from] crate::sink::SinkError),
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
    /// Records written with schema v1, v2 and v3.
    pub writers: [usize; 3],
    /// The routes example's read models: a few rows of each, as text.
    pub read_models: Vec<(String, Vec<String>)>,
    /// With `keep`: the Kafka cluster and Schema Registry, still running.
    pub kept: Option<keep::Kept>,
}

/// Runs the demo with `events` events over `keys` keys into `postgres_url`;
/// with `keep`, the Kafka cluster and the Schema Registry are handed back
/// running, with try-out topics and configurations for them
/// ([`keep::Kept`]).
pub async fn run(
    postgres_url: &str,
    events: usize,
    keys: usize,
    keep: bool,
) -> Result<Report, DemoError> {
    let cluster = mock::MockCluster::start(BROKERS).map_err(DemoError::Setup)?;
    cluster
        .create_topic(TOPIC, PARTITIONS)
        .map_err(DemoError::Setup)?;
    cluster
        .create_topic(&format!("{TOPIC}.dlq"), 1)
        .map_err(DemoError::Setup)?;
    let bootstrap = cluster.bootstrap_servers().to_string();
    let registry = ordo_registry::Registry::new();
    let registry_server = registry
        .spawn(([127, 0, 0, 1], 0).into())
        .map_err(|e| DemoError::Setup(format!("cannot start the schema registry: {e}")))?;
    let mut ids = [0u32; 3];
    for (i, text) in orders::SCHEMAS.iter().enumerate() {
        ids[i] = registry
            .register(&format!("{TOPIC}-value"), text)
            .map_err(|e| DemoError::Setup(format!("cannot register schema v{}: {e}", i + 1)))?;
    }
    let vars = vec![
        (
            "ORDO_KAFKA__BOOTSTRAP_SERVERS".to_string(),
            bootstrap.clone(),
        ),
        (
            "ORDO_SINK__POSTGRES__URL".to_string(),
            postgres_url.to_string(),
        ),
        (
            "ORDO_SCHEMA_REGISTRY__URLS".to_string(),
            registry_server.url(),
        ),
    ];
    let settings = settings(&vars)?;
    crate::telemetry::logging::init(&settings.log.level, settings.log.format);

    let mut ds = data::generate(events, PARTITIONS, keys.max(1), 0.05, 20, 0.02, 42);
    let writers = to_avro(&mut ds.records, &ids)?;
    let produced = ds.records.len();
    let hw = {
        let bootstrap = bootstrap.clone();
        tokio::task::spawn_blocking(move || produce_all(&bootstrap, &ds.records))
            .await
            .map_err(|e| DemoError::Setup(e.to_string()))?
            .map_err(DemoError::Setup)?
    };
    tracing::info!(
        produced,
        topic = TOPIC,
        high_watermarks = crate::telemetry::json::List::numbers(hw.iter().copied()).field(),
        "sample events produced"
    );

    run_until_drained(&settings, TOPIC, &hw).await?;
    let read_models = routes_example(&cluster, postgres_url, events, keys).await?;
    let kept = if keep {
        Some(keep::Kept::new(cluster, registry_server, postgres_url)?)
    } else {
        drop(cluster);
        drop(registry_server);
        None
    };
    Ok(Report {
        produced,
        late: ds.inversions,
        duplicates: ds.duplicates,
        distinct: ds.keys * ds.versions as usize,
        high_watermarks: hw,
        table: settings
            .sink
            .postgres
            .as_ref()
            .and_then(|pg| pg.routes.iter().find_map(|r| r.table.clone()))
            .unwrap_or_default(),
        writers,
        read_models,
        kept,
    })
}

/// Runs the pipeline `settings` describe until every partition of `topic`
/// stored its high watermark (or Ctrl-C).
async fn run_until_drained(settings: &Settings, topic: &str, hw: &[i64]) -> Result<(), DemoError> {
    let sink = crate::sink::prepare(
        &settings.sink,
        settings.group_id(),
        settings.source.unrouted,
    )
    .await?;
    let watcher = sink.clone();
    let target = hw.to_vec();
    let topic = topic.to_string();
    let drained = async move {
        loop {
            if let Ok(stored) = watcher.stored_offsets(&topic).await {
                let all = (0..target.len()).all(|p| stored.get(&(p as i32)) == target.get(p));
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
    crate::pipeline::run(settings, sink, shutdown)
        .await
        .map_err(crate::RunError::from)?;
    Ok(())
}

/// The routes example (`examples/orders/`): its configuration and read
/// models.
pub const ORDERS_CONFIG: &str = include_str!("../../examples/orders/ordo.toml");
pub const ORDERS_SCHEMA: &str = include_str!("../../examples/orders/schema.sql");

/// Runs the orders example on `cluster`: order events of four types into
/// an event store and two read models; returns a few rows of each read model.
async fn routes_example(
    cluster: &mock::MockCluster,
    postgres_url: &str,
    events: usize,
    keys: usize,
) -> Result<Vec<(String, Vec<String>)>, DemoError> {
    let topic = "orders";
    cluster
        .create_topic(topic, PARTITIONS)
        .map_err(DemoError::Setup)?;
    cluster
        .create_topic(&format!("{topic}.dlq"), 1)
        .map_err(DemoError::Setup)?;
    let bootstrap = cluster.bootstrap_servers().to_string();
    let vars = vec![
        (
            "ORDO_KAFKA__BOOTSTRAP_SERVERS".to_string(),
            bootstrap.clone(),
        ),
        (
            "ORDO_SINK__POSTGRES__URL".to_string(),
            postgres_url.to_string(),
        ),
    ];
    let settings = Settings::load_embedded(ORDERS_CONFIG, &vars)?;
    let (client, connection) = tokio_postgres::connect(postgres_url, tokio_postgres::NoTls)
        .await
        .map_err(|e| {
            DemoError::Setup(format!("cannot reach PostgreSQL for the read models: {e}"))
        })?;
    tokio::spawn(connection);
    client
        .batch_execute(ORDERS_SCHEMA)
        .await
        .map_err(|e| DemoError::Setup(format!("examples/orders/schema.sql: {e}")))?;
    let ds = order_events::generate(events, PARTITIONS, keys.max(1), 43);
    let records = ds.records;
    let hw = {
        let bootstrap = bootstrap.clone();
        tokio::task::spawn_blocking(move || {
            produce(&bootstrap, topic, &records)?;
            watermarks(&bootstrap, topic)
        })
        .await
        .map_err(|e| DemoError::Setup(e.to_string()))?
        .map_err(DemoError::Setup)?
    };
    tracing::info!(
        topic,
        high_watermarks = crate::telemetry::json::List::numbers(hw.iter().copied()).field(),
        "order events of four types produced"
    );
    run_until_drained(&settings, topic, &hw).await?;
    let mut out = Vec::new();
    for (name, query) in [
        (
            "orders by status",
            "SELECT status || ': ' || count(*) FROM orders GROUP BY status ORDER BY status",
        ),
        (
            "customer_totals (top 3)",
            "SELECT customer || ': ' || orders || ' orders, ' || amount FROM customer_totals ORDER BY amount DESC, customer LIMIT 3",
        ),
        (
            "order_events (event store)",
            "SELECT count(*) || ' events of ' || count(DISTINCT stream) || ' orders' FROM order_events",
        ),
    ] {
        let rows = client
            .query(query, &[])
            .await
            .map_err(|e| DemoError::Setup(format!("reading {name}: {e}")))?;
        out.push((name.to_string(), rows.iter().map(|r| r.get(0)).collect()));
    }
    Ok(out)
}

/// Each partition's high watermark of `topic`.
fn watermarks(bootstrap: &str, topic: &str) -> Result<Vec<i64>, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    (0..PARTITIONS)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map(|(_, high)| high)
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// The demo's settings: the embedded configuration with reader schema v3
/// inline, overlaid by `vars`.
pub fn settings(vars: &[(String, String)]) -> Result<Settings, crate::config::ConfigError> {
    let config = format!(
        "{CONFIG}\n[[source.reader_schemas]]\ntopic = \"{TOPIC}\"\nschema = '''{}'''\n",
        orders::SCHEMAS[2]
    );
    Settings::load_embedded(&config, vars)
}

/// The schema version (1 to 3) the demo writes event `version` of `key` with.
pub fn writer_of(key: &str, version: i64) -> usize {
    let spread = key.bytes().map(usize::from).sum::<usize>();
    (spread + version as usize) % 3 + 1
}

/// Re-encodes the sample events as Avro orders, each written with schema v1,
/// v2 or v3 (interleaved within every key); returns how many used each.
fn to_avro(records: &mut [data::Produced], ids: &[u32; 3]) -> Result<[usize; 3], DemoError> {
    let mut writers = [0usize; 3];
    for r in records.iter_mut() {
        let event: serde_json::Value = serde_json::from_slice(&r.payload)
            .map_err(|e| DemoError::Setup(format!("sample event is not JSON: {e}")))?;
        let (Some(key), Some(version)) = (event["id"].as_str(), event["version"].as_i64()) else {
            return Err(DemoError::Setup(format!(
                "sample event without id/version: {event}"
            )));
        };
        let writer = writer_of(key, version);
        writers[writer - 1] += 1;
        r.payload = orders::encode(writer, ids[writer - 1], key, version);
    }
    Ok(writers)
}

/// Produces the records in order; returns each partition's high watermark.
fn produce_all(bootstrap: &str, records: &[data::Produced]) -> Result<Vec<i64>, String> {
    produce(bootstrap, TOPIC, records)?;
    watermarks(bootstrap, TOPIC)
}

/// Produces records to their partitions in order (idempotently) and waits for all.
pub fn produce(bootstrap: &str, topic: &str, records: &[data::Produced]) -> Result<(), String> {
    produce_with(bootstrap, topic, records, &[])
}

/// [`produce`] with extra producer properties (e.g. `batch.size`).
pub fn produce_with(
    bootstrap: &str,
    topic: &str,
    records: &[data::Produced],
    properties: &[(String, String)],
) -> Result<(), String> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000");
    for (k, v) in properties {
        config.set(k, v);
    }
    let producer: BaseProducer = config.create().map_err(|e| e.to_string())?;
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
