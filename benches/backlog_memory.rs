//! Peak memory with a large backlog: 1M JSON events waiting in 48 partitions
//! when Ordo starts (every partition's prefetch queue fills at once while the
//! sink writes), for a few memory budgets. Ordo runs as its own process
//! against librdkafka's mock cluster and a throw-away PostgreSQL; its peak
//! resident memory (`VmHWM`) is read when every event has landed, and the
//! table is checked exact.
//!
//! `cargo bench --bench backlog_memory` (budgets in MiB as arguments, default
//! `64 256 512`; `BENCH_PRODUCER="batch.size=16384;linger.ms=5"` for one
//! producer profile instead of both); figures in BENCHMARKS.md.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use support::data;
use support::kafka::Kafka;
use support::ordo::{Ordo, Setup};
use support::postgres::TestDb;

const EVENTS: usize = 1_000_000;
const PARTITIONS: i32 = 48;

fn main() {
    let budgets: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let budgets = if budgets.is_empty() {
        vec![64, 256, 512]
    } else {
        budgets
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ds = data::generate(EVENTS, PARTITIONS, 10_000, 0.05, 20, 0.02, 42);
    let payload_mb = ds.records.iter().map(|r| r.payload.len()).sum::<usize>() as f64 / 1e6;
    println!(
        "backlog: {} records ({:.1} MB of payload) in {PARTITIONS} partitions",
        ds.records.len(),
        payload_mb
    );
    // How the backlog was produced matters: librdkafka materialises every
    // record of a fetched record batch at once, so the largest producer batch
    // sets a floor per partition.
    let profiles: Vec<(String, String)> = match std::env::var("BENCH_PRODUCER") {
        Ok(p) => vec![(p.clone(), p)],
        Err(_) => vec![
            (
                "16 KiB (Java clients' batch.size)".into(),
                "batch.size=16384".into(),
            ),
            ("1 MB / 10,000 records (librdkafka's)".into(), String::new()),
        ],
    };
    println!(
        "| producer batches | memory.budget_mb | peak RSS (MiB) | peak RSS - budget (MiB) | drained in (s) |"
    );
    println!("|---|---|---|---|---|");
    for (profile, producer) in &profiles {
        for &budget in &budgets {
            runtime.block_on(async {
                let kafka = Kafka::start();
                let db = TestDb::new().await;
                let setup = Setup {
                    tail: format!("[memory]\nbudget_mb = {budget}\n"),
                    kafka: std::env::var("BENCH_KAFKA")
                        .unwrap_or_default()
                        .replace(';', "\n"),
                    ..Setup::event_store(kafka.bootstrap(), db.url.clone(), "events")
                };
                kafka.create_topic(&setup.topic, PARTITIONS);
                let producer: Vec<(String, String)> = producer
                    .split(';')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                    .collect();
                ordo::demo::produce_with(&kafka.bootstrap(), &setup.topic, &ds.records, &producer)
                    .expect("produce");
                let hw = kafka.high_watermarks(&setup.topic, PARTITIONS);
                let dir = tempfile::tempdir().unwrap();
                let config = setup.write_with_default_sink(dir.path(), "ordo.toml");
                let started = Instant::now();
                let mut ordo = Ordo::start(&config, dir.path().join("ordo.log"));
                let client = db.client().await;
                loop {
                    assert!(ordo.running(), "{}", ordo.log_text());
                    if data::stored_offsets(&client, &setup.group, &setup.topic).await == hw {
                        break;
                    }
                    assert!(started.elapsed() < Duration::from_secs(900), "not drained");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let drained = started.elapsed();
                let (_, peak) = ordo.cpu_and_peak_rss();
                data::assert_event_store_exact(
                    &client,
                    "events",
                    &ds,
                    &setup.group,
                    &setup.topic,
                    &hw,
                )
                .await;
                assert!(ordo.terminate(Duration::from_secs(60)).success());
                println!(
                    "| {profile} | {budget} | {peak:.0} | {:+.0} | {:.1} |",
                    peak - budget as f64,
                    drained.as_secs_f64()
                );
            });
        }
    }
}
