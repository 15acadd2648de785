//! Ordo watched by a real Prometheus, with the dashboard and alert rules
//! shipped in deploy/: two replicas under steady load (Avro, three writer
//! schema versions, through a schema registry) are scraped; every
//! dashboard panel's query returns data; each alert stays quiet while all is
//! well and fires when its condition is driven (dead letters arrive, the
//! database goes away so the breaker opens, lag grows and ages and no replica
//! is ready), then clears on recovery. Nothing is lost on the way.
//!
//! One test in this binary: it stops the shared PostgreSQL cluster.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use ordo::demo::orders;
use ordo_registry::Registry;
use support::data;
use support::kafka::Kafka;
use support::ordo::{Ordo, Setup};
use support::postgres::{cluster, TestDb};
use support::prometheus::{rules_with_for, Prometheus};

const PARTITIONS: i32 = 4;
const KEYS: usize = 40;

/// What the load thread is told while it runs.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    /// Subtracted from the records' timestamps (an event time in the past).
    backdate_ms: AtomicI64,
    /// Undecodable records still to send.
    poison: AtomicUsize,
    /// Records produced (good, duplicate and poison).
    produced: AtomicUsize,
    /// Events to send to partition 0 next: (key, version).
    extra: std::sync::Mutex<Vec<(String, i64)>>,
}

/// Produces keyed, versioned Avro events (written with schemas v1, v2 and v3
/// in turn, registered as `ids`) at about `per_second` until told to stop:
/// every 25th is a duplicate of its key's previous version, and poison
/// records are slipped in on demand. Returns the number of distinct events.
fn produce(
    bootstrap: String,
    topic: String,
    ids: [u32; 3],
    load: Arc<Load>,
    per_second: u64,
) -> i64 {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let mut versions = [0i64; KEYS];
    let mut n: usize = 0;
    while !load.stop.load(Ordering::SeqCst) {
        let extra: Vec<(String, i64)> = std::mem::take(&mut *load.extra.lock().unwrap());
        for (key, version) in extra {
            let payload = orders::encode(3, ids[2], &key, version);
            let record = BaseRecord::to(&topic)
                .partition(0)
                .key(&key)
                .payload(&payload);
            if let Err((e, _)) = producer.send(record) {
                panic!("produce: {e}");
            }
            load.produced.fetch_add(1, Ordering::SeqCst);
        }
        let k = n % KEYS;
        let key = format!("k{k}");
        let partition = (k % PARTITIONS as usize) as i32;
        let payload = if load
            .poison
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| p.checked_sub(1))
            .is_ok()
        {
            b"{not json".to_vec()
        } else {
            if n % 25 != 24 || versions[k] == 0 {
                versions[k] += 1;
            }
            let writer = (k + versions[k] as usize) % 3 + 1;
            orders::encode(writer, ids[writer - 1], &key, versions[k])
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis() as i64;
        let ts = now - load.backdate_ms.load(Ordering::SeqCst);
        let record = BaseRecord::to(&topic)
            .partition(partition)
            .key(&key)
            .payload(&payload)
            .timestamp(ts);
        if let Err((e, _)) = producer.send(record) {
            panic!("produce: {e}");
        }
        load.produced.fetch_add(1, Ordering::SeqCst);
        n += 1;
        producer.poll(Duration::from_micros(1_000_000 / per_second));
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    versions.iter().sum()
}

/// Waits until `check` holds for what Prometheus says, or panics naming `what`
/// with the alerts Prometheus has and its log.
async fn until<F, Fut>(prom: &Prometheus, what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        if start.elapsed() > timeout {
            panic!(
                "timed out after {timeout:?} waiting for {what}; alerts: {:?}\nprometheus log:\n{}",
                prom.alerts().await,
                prom.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A dashboard panel's query with Grafana's variables filled in as the
/// dashboard would: this job, every topic, a rate window a few scrapes wide.
fn as_grafana_sends_it(expr: &str) -> String {
    expr.replace("$job", "ordo")
        .replace("$topic", ".*")
        .replace("$__rate_interval", "15s")
}

/// The labels an expression's aggregations group by (`le` is consumed by
/// `histogram_quantile`).
fn grouped_by(expr: &str) -> Vec<String> {
    expr.split("by (")
        .skip(1)
        .filter_map(|rest| rest.split_once(')'))
        .flat_map(|(labels, _)| labels.split(','))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && l != "le")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dashboard_queries_return_data_and_every_alert_fires_on_its_condition() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let events = Setup::event_store(kafka.bootstrap(), db.url.clone(), "events");
    let topic = events.topic.clone();
    let registry = Registry::new();
    let server = registry.spawn("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut ids = [0; 3];
    for (i, text) in orders::SCHEMAS.iter().enumerate() {
        ids[i] = registry.register(&format!("{topic}-value"), text).unwrap();
    }
    let reader = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/orders-v3.avsc");
    let base = Setup {
        dead_letter: true,
        source: format!(
            "format = \"avro\"\n[[source.reader_schemas]]\ntopic = \"{topic}\"\nfile = \"{}\"",
            reader.display()
        ),
        sequence: "field:meta.seq".into(),
        ordering: "gap_timeout_ms = 3000".into(),
        http_extra: "max_breaker_open_ms = 2000".into(),
        tail: format!(
            "[sink.breaker]\nopen_ms = 500\nmax_open_ms = 2000\n\n[schema_registry]\nurls = [\"{}\"]\n",
            server.url()
        ),
        ..events
    };
    let dlq = format!("{topic}.dlq");
    kafka.create_topic(&topic, PARTITIONS);
    kafka.create_topic(&dlq, 1);

    let load = Arc::new(Load::default());
    let producer = std::thread::spawn({
        let (bootstrap, topic, load) = (kafka.bootstrap(), topic.clone(), load.clone());
        move || produce(bootstrap, topic, ids, load, 300)
    });
    let configs = base.replicas(dir.path(), 2);
    let mut replicas: Vec<Ordo> = configs.iter().map(|r| r.start()).collect();
    let targets: Vec<String> = configs.iter().map(|r| r.addr.clone()).collect();
    let rules = rules_with_for(std::path::Path::new("deploy/prometheus/alerts.yml"), "2s");
    let prom = Prometheus::start("ordo", &targets, &rules).await;

    // Both replicas scraped, each owning partitions, ready, and landing events.
    until(
        &prom,
        "both replicas ready and owning partitions",
        Duration::from_secs(60),
        || async {
            let ready = prom.query("sum(ordo_ready{job=\"ordo\"})").await;
            let owning = prom
                .query("count(ordo_assigned_partitions{job=\"ordo\"} > 0)")
                .await;
            ready.first().is_some_and(|s| s.value == 2.0)
                && owning.first().is_some_and(|s| s.value == 2.0)
        },
    )
    .await;
    until(&prom, "events applied on both replicas", Duration::from_secs(30), || async {
        prom.query("sum by (instance) (rate(ordo_events_total{job=\"ordo\",outcome=\"applied\"}[5s])) > 0")
            .await
            .len()
            == 2
    })
    .await;

    // All is well: no alert fires over several evaluations.
    for _ in 0..8 {
        let firing = prom.firing().await;
        assert!(
            firing.is_empty(),
            "alerts firing while all is well: {firing:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // A key whose first event carries version 6 (1 expected) and one whose
    // first carries version 0: the first key's events are held, so partition
    // 0's stored offset stops while its fetch position moves on; the held
    // age and the lag from the stored offset show it, the log names the key
    // and both versions, and the held-events alert fires, then clears once
    // the missing versions arrive.
    load.extra.lock().unwrap().extend([
        ("gap-key".to_string(), 6),
        ("gap-key".to_string(), 7),
        ("gap-key".to_string(), 8),
        ("below-key".to_string(), 0),
    ]);
    until(
        &prom,
        "a held event's age and the lag from the stored offset on partition 0",
        Duration::from_secs(30),
        || async {
            let age = prom
                .query("max(ordo_held_oldest_age_seconds{job=\"ordo\",partition=\"0\"})")
                .await;
            let lag = prom
                .query("max(ordo_consumer_lag_committed_offsets{job=\"ordo\",partition=\"0\"})")
                .await;
            age.first().is_some_and(|s| s.value > 1.0)
                && lag.first().is_some_and(|s| s.value > 50.0)
        },
    )
    .await;
    until(
        &prom,
        "OrdoEventsHeldBehindGap firing for partition 0",
        Duration::from_secs(30),
        || async {
            prom.alerts().await.iter().any(|a| {
                a.name == "OrdoEventsHeldBehindGap"
                    && a.state == "firing"
                    && a.labels.get("partition").and_then(|v| v.as_str()) == Some("0")
            })
        },
    )
    .await;
    let logs: String = replicas.iter().map(|r| r.log_text()).collect();
    let said = |words: &[&str]| logs.lines().any(|l| words.iter().all(|w| l.contains(w)));
    assert!(
        said(&[
            "gap-key",
            "expected_version=1",
            "received_version=6",
            "waits for a missing version"
        ]),
        "no line says gap-key waits for 1 having received 6:\n{logs}"
    );
    assert!(
        said(&[
            "gap-key",
            "expected_version=1",
            "received_version=6",
            "longer than ordering.gap_timeout_ms"
        ]),
        "no line says gap-key timed out waiting for 1:\n{logs}"
    );
    assert!(
        said(&["below-key", "first_sequence=1", "received_version=0"]),
        "no line names below-key's version 0 and first_sequence 1:\n{logs}"
    );
    load.extra
        .lock()
        .unwrap()
        .extend((1..=5).map(|v| ("gap-key".to_string(), v)));
    until(
        &prom,
        "OrdoEventsHeldBehindGap cleared once the gap filled",
        Duration::from_secs(30),
        || async {
            let age = prom
                .query("max(ordo_held_oldest_age_seconds{job=\"ordo\",partition=\"0\"})")
                .await;
            age.first().is_some_and(|s| s.value == 0.0)
                && !prom
                    .firing()
                    .await
                    .iter()
                    .any(|f| f == "OrdoEventsHeldBehindGap")
        },
    )
    .await;

    // Dead letters arrive: both replicas report the broker's depth, and the alert fires.
    load.poison.store(5, Ordering::SeqCst);
    until(
        &prom,
        "dead-letter depth 5 on both replicas",
        Duration::from_secs(30),
        || async {
            let depth = prom
                .query(&format!(
                    "ordo_dlq_depth_records{{job=\"ordo\",dlq_topic=\"{dlq}\"}}"
                ))
                .await;
            depth.len() == 2 && depth.iter().all(|s| s.value == 5.0)
        },
    )
    .await;
    until(
        &prom,
        "OrdoDeadLetterGrowing firing",
        Duration::from_secs(30),
        || async {
            prom.alerts().await.iter().any(|a| {
                a.name == "OrdoDeadLetterGrowing"
                    && a.state == "firing"
                    && a.labels.get("dlq_topic").and_then(|v| v.as_str()) == Some(&dlq)
            })
        },
    )
    .await;

    // Events now carry an event time 15 minutes old; then the database goes away.
    load.backdate_ms.store(15 * 60 * 1000, Ordering::SeqCst);
    until(
        &prom,
        "old events landing (end-to-end above the largest bucket, 163.84 s)",
        Duration::from_secs(30),
        || async {
            let old = prom
                .query(
                    "sum(ordo_end_to_end_seconds_count{job=\"ordo\"}) \
                     - sum(ordo_end_to_end_seconds_bucket{job=\"ordo\",le=\"163.84\"})",
                )
                .await;
            old.first().is_some_and(|s| s.value > 200.0)
        },
    )
    .await;
    cluster().stop();
    let outage = [
        "OrdoConsumerLagGrowing",
        "OrdoConsumerLagSecondsHigh",
        "OrdoNoReplicaReady",
        "OrdoSinkBreakerOpen",
    ];
    until(
        &prom,
        "every outage alert firing",
        Duration::from_secs(120),
        || async {
            let firing = prom.firing().await;
            outage.iter().all(|a| firing.iter().any(|f| f == a))
        },
    )
    .await;
    let open = prom
        .query("max by (instance) (ordo_sink_breaker_state{job=\"ordo\"}) > 0")
        .await;
    assert_eq!(open.len(), 2, "both replicas' breakers are open: {open:?}");

    // The database is back and new events are current: the breaker closes,
    // the backlog drains, the alerts clear.
    load.backdate_ms.store(0, Ordering::SeqCst);
    cluster().start_again();
    until(
        &prom,
        "outage alerts cleared",
        Duration::from_secs(120),
        || async {
            let firing = prom.firing().await;
            !outage.iter().any(|a| firing.iter().any(|f| f == a))
        },
    )
    .await;

    // Every panel's query returns data, per replica where it says so.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("deploy/grafana/dashboards/ordo.json").unwrap(),
    )
    .unwrap();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = as_grafana_sends_it(target["expr"].as_str().unwrap());
            let result = prom.query(&expr).await;
            assert!(
                result.iter().any(|s| s.value.is_finite()),
                "panel {title:?}: {expr} returned no data: {result:?}"
            );
            // Every label the panel groups by (its legend) is on every series.
            for label in grouped_by(&expr) {
                assert!(
                    result.iter().all(|s| s.labels.contains_key(&label)),
                    "panel {title:?}: {expr}: series without {label}: {result:?}"
                );
            }
            if expr.contains("by (instance") {
                let instances: BTreeSet<String> = result
                    .iter()
                    .filter_map(|s| s.labels.get("instance")?.as_str().map(String::from))
                    .collect();
                assert_eq!(instances.len(), 2, "panel {title:?}: {expr}: {result:?}");
            }
            queried += 1;
        }
    }
    assert!(queried >= 20, "{queried} panel queries");

    // Nothing was lost on the way: every record is applied or dead-lettered.
    load.stop.store(true, Ordering::SeqCst);
    let distinct = producer.join().unwrap();
    let hw = kafka.high_watermarks(&topic, PARTITIONS);
    let client = db.client().await;
    let mut first = replicas.remove(0);
    data::wait_stored_offsets(&client, &mut first, &base.group, &topic, &hw).await;
    let dead: i64 = kafka.high_watermarks(&dlq, 1)[0];
    assert_eq!(dead, 5, "poison records in the dead-letter topic");
    let produced = load.produced.load(Ordering::SeqCst) as i64;
    assert_eq!(hw.iter().sum::<i64>(), produced);
    let rows: i64 = client
        .query_one("SELECT count(DISTINCT (stream, version)) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    let total: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    // gap-key's 8 versions landed; below-key's version 0 was dropped as stale.
    let distinct = distinct + 8;
    assert_eq!((rows, total), (distinct, distinct), "every event once");
    assert_eq!(first.terminate(Duration::from_secs(30)).code(), Some(0));
    for mut r in replicas {
        assert_eq!(r.terminate(Duration::from_secs(30)).code(), Some(0));
    }
}
