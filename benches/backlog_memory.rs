//! Peak memory with a large backlog: 1M JSON events waiting in 48 partitions
//! when Ordo starts (every partition's prefetch queue fills at once while the
//! sink writes), for a few memory budgets. Ordo runs as its own process
//! against librdkafka's mock cluster and a throw-away PostgreSQL; its peak
//! resident memory (`VmHWM`) is read when every event has landed, and the
//! table is checked exact.
//!
//! Beside it, a bare librdkafka consumer (a process of its own, at
//! librdkafka's defaults) reads the same backlog: its peak RSS is the
//! baseline. The rate of each budget is given as a ratio to the default
//! budget's (512 MiB) on the same backlog.
//!
//! `cargo bench --bench backlog_memory` (budgets in MiB as arguments, default
//! `64 128 256 512`; `BENCH_PRODUCER="batch.size=16384;linger.ms=5"` for one
//! producer profile instead of both); figures in BENCHMARKS.md.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;

use support::data;
use support::kafka::Kafka;
use support::ordo::{Ordo, Setup};
use support::postgres::TestDb;

const EVENTS: usize = 1_000_000;
const PARTITIONS: i32 = 48;

/// Set in the bare consumer's process: `bootstrap topic records`.
const BARE: &str = "BACKLOG_MEMORY_BARE_CONSUMER";

fn main() {
    if let Ok(args) = std::env::var(BARE) {
        return bare_consumer(&args);
    }
    let budgets: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let budgets = if budgets.is_empty() {
        vec![64, 128, 256, 512]
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
        "| producer batches | memory.budget_mb | peak RSS (MiB) | peak RSS - budget (MiB) | drained in (s) | events/s | rate / 512 MiB's | bare consumer peak RSS (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (profile, producer) in &profiles {
        let mut rows = Vec::new();
        let mut bare_peak = 0.0;
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
                if bare_peak == 0.0 {
                    bare_peak =
                        bare_consumer_peak(&kafka.bootstrap(), &setup.topic, hw.iter().sum());
                }
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
                let rate = hw.iter().sum::<i64>() as f64 / drained.as_secs_f64();
                rows.push((budget, peak, drained.as_secs_f64(), rate));
            });
        }
        let default_rate = rows.iter().find(|r| r.0 == 512).map(|r| r.3);
        for (budget, peak, drained, rate) in rows {
            let ratio = default_rate.map_or("".to_string(), |d| format!("{:.2}x", rate / d));
            println!(
                "| {profile} | {budget} | {peak:.0} | {:+.0} | {drained:.1} | {rate:.0} | {ratio} | {bare_peak:.0} |",
                peak - budget as f64,
            );
        }
    }
}

/// Peak RSS (MiB) of a bare librdkafka consumer reading all `records` of
/// `topic`, run as a process of its own (this program, told so by [`BARE`]).
fn bare_consumer_peak(bootstrap: &str, topic: &str, records: i64) -> f64 {
    let out = std::process::Command::new(std::env::current_exe().expect("this program"))
        .env(BARE, format!("{bootstrap} {topic} {records}"))
        .output()
        .expect("run the bare consumer");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bare consumer: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("bare consumer said {text:?}"))
}

/// The bare consumer: assigns every partition from the start, reads every
/// record once at librdkafka's defaults, and prints its peak RSS in MiB.
fn bare_consumer(args: &str) {
    let mut args = args.split(' ');
    let (Some(bootstrap), Some(topic), Some(records)) = (args.next(), args.next(), args.next())
    else {
        panic!("{BARE}: bootstrap topic records");
    };
    let records: i64 = records.parse().expect("records");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-bare")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut read = 0i64;
    while read < records {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(_)) => read += 1,
            Some(Err(e)) => panic!("bare consumer: {e}"),
            None => panic!("bare consumer: nothing for 10 s at {read} of {records}"),
        }
    }
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    println!("{:.1}", kb / 1024.0);
}
