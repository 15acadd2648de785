//! End to end, side by side in one run: Ordo landing a backlog (JSON, event
//! store, default settings) from Kafka into PostgreSQL, against a bare
//! librdkafka consumer reading the same topic and a text `COPY` of the very
//! same rows into an identical table, for several key-space sizes. The
//! backlog is written by `ordo produce` (5 % late, 2 % duplicated) into 48
//! partitions of librdkafka's mock cluster (in this process; Ordo runs as its
//! own process). Ordo's rate is counted from its first landed row to its last
//! (the group join is left out); its CPU seconds and peak RSS come from /proc.
//!
//! `cargo bench --bench end_to_end` (key counts as arguments, default
//! `10000 200000`; `BENCH_EVENTS` events, default 480000); figures in
//! BENCHMARKS.md.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use futures::SinkExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use support::data;
use support::kafka::Kafka;
use support::ordo::{run_to_end, Ordo, Setup};
use support::postgres::TestDb;

const PARTITIONS: i32 = 48;

/// Records a bare consumer reads per second, from the start of every partition to its high watermark.
fn bare_consumer_rate(bootstrap: &str, topic: &str, hw: &[i64]) -> f64 {
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
    let total: i64 = hw.iter().sum();
    let mut read = 0i64;
    let started = Instant::now();
    while read < total {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(_)) => read += 1,
            Some(Err(e)) => panic!("bare consumer: {e}"),
            None => panic!("bare consumer: nothing for 10 s at {read} of {total}"),
        }
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// The statements PostgreSQL spent most time on (needs
/// `TEST_PG_OPTS="-c shared_preload_libraries=pg_stat_statements"`).
async fn print_statement_stats(client: &tokio_postgres::Client) {
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .expect("pg_stat_statements");
    let rows = client
        .query(
            "SELECT calls, total_exec_time, rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 110) \
             FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12",
            &[],
        )
        .await
        .expect("statement stats");
    for r in rows {
        let (calls, ms, n, q): (i64, f64, i64, String) = (r.get(0), r.get(1), r.get(2), r.get(3));
        println!("  {calls:>8} calls {ms:>10.0} ms {n:>9} rows  {q}");
    }
}

fn main() {
    let keys: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let keys = if keys.is_empty() {
        vec![10_000, 200_000]
    } else {
        keys
    };
    let events: u64 = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(480_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("{events} JSON events, 5 % late, 2 % duplicated, {PARTITIONS} partitions, event store, default settings");
    println!("| keys | Ordo rows/s | bare consumer records/s | text COPY rows/s | Ordo / COPY | Ordo / consumer | Ordo CPU s per 1M events | Ordo peak RSS (MiB) |");
    println!("|---|---|---|---|---|---|---|---|");
    for k in keys {
        runtime.block_on(async {
            let kafka = Kafka::start();
            let db = TestDb::new().await;
            let setup = Setup::event_store(kafka.bootstrap(), db.url.clone(), "events");
            kafka.create_topic(&setup.topic, PARTITIONS);
            let dir = tempfile::tempdir().unwrap();
            let config = setup.write_with_default_sink(dir.path(), "ordo.toml");
            let expected = dir.path().join("expected.csv");
            let (status, out, err) = run_to_end(&[
                "produce",
                "--config",
                config.to_str().unwrap(),
                "--events",
                &events.to_string(),
                "--keys",
                &k.to_string(),
                "--expected",
                expected.to_str().unwrap(),
            ]);
            assert!(status.success(), "{out}{err}");
            let hw = kafka.high_watermarks(&setup.topic, PARTITIONS);
            let bare = bare_consumer_rate(&kafka.bootstrap(), &setup.topic, &hw);

            let mut ordo = Ordo::start(&config, dir.path().join("ordo.log"));
            let client = db.client().await;
            let started = Instant::now();
            loop {
                assert!(ordo.running(), "{}", ordo.log_text());
                if data::stored_offsets(&client, &setup.group, &setup.topic).await == hw {
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(1800), "not drained");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let (cpu, peak) = ordo.cpu_and_peak_rss();
            if std::env::var_os("BENCH_PG_STATS").is_some() {
                print_statement_stats(&client).await;
            }
            let row = client
                .query_one(
                    "SELECT count(*), count(DISTINCT (stream, version)), \
                     extract(epoch FROM max(recorded_at) - min(recorded_at))::float8 FROM events",
                    &[],
                )
                .await
                .unwrap();
            let (rows, distinct, span): (i64, i64, f64) = (row.get(0), row.get(1), row.get(2));
            assert_eq!((rows, distinct), (events as i64, events as i64), "exact");
            assert!(ordo.terminate(Duration::from_secs(60)).success());
            let ordo_rate = rows as f64 / span.max(1e-3);

            // The same rows, by text COPY, into an identical table.
            client
                .batch_execute("CREATE TABLE copied (LIKE events INCLUDING ALL)")
                .await
                .unwrap();
            let mut text = String::with_capacity(rows as usize * 160);
            for line in std::fs::read_to_string(&expected).unwrap().lines() {
                let (key, last) = line.split_once(',').unwrap();
                for v in 1..=last.parse::<i64>().unwrap() {
                    let payload = String::from_utf8(ordo::demo::data::payload(key, v)).unwrap();
                    text.push_str(&format!(
                        "{key}\t{v}\t{}\t{}\t0\t{v}\n",
                        payload.replace('\\', "\\\\"),
                        setup.topic
                    ));
                }
            }
            let copy_started = Instant::now();
            let sink = client
                .copy_in::<_, bytes::Bytes>(
                    "COPY copied (stream, version, payload, topic, partition, \"offset\") FROM STDIN",
                )
                .await
                .unwrap();
            futures::pin_mut!(sink);
            for chunk in text.as_bytes().chunks(1 << 20) {
                sink.send(bytes::Bytes::copy_from_slice(chunk)).await.unwrap();
            }
            let copied = sink.finish().await.unwrap();
            let copy_rate = copied as f64 / copy_started.elapsed().as_secs_f64();
            println!(
                "| {k} | {ordo_rate:.0} | {bare:.0} | {copy_rate:.0} | {:.2}x | {:.3}x | {:.1} | {peak:.0} |",
                ordo_rate / copy_rate,
                ordo_rate / bare,
                cpu / (events as f64 / 1e6)
            );
        });
    }
}
