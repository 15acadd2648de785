//! PostgreSQL stops for 30 s while events keep arriving at 5k/s: the sink's
//! breaker opens and the partitions pause (the process's memory stays
//! bounded while lag grows); once PostgreSQL is back, every event lands
//! exactly once, in order.
//!
//! Its own test binary: it stops the PostgreSQL cluster the binary's tests share.

mod support;

use std::time::{Duration, Instant};

use support::data;
use support::kafka::Kafka;
use support::ordo::{Ordo, Setup};
use support::postgres::{cluster, TestDb};

/// Resident memory of a process, in bytes.
fn rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_for_30s_pauses_partitions_and_loses_nothing() {
    const RATE: usize = 5000;
    const PARTITIONS: i32 = 6;
    const MEMORY_BOUND: u64 = 96 * 1024 * 1024;
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::event_store(kafka.bootstrap(), db.url.clone(), "events");
    // Six partitions: the mock cluster keeps at most 5 MB per partition, and
    // what arrives during the outage must still be there when Ordo resumes.
    kafka.create_topic(&setup.topic, PARTITIONS);
    // 36 s of events at 5k/s, late and duplicated ones among them.
    let ds = data::generate(180_000, PARTITIONS, 1000, 0.05, 20, 0.02, 7);
    let config = setup.write(dir.path(), "ordo.toml");
    let mut ordo = Ordo::start(&config, dir.path().join("ordo.log"));
    let pid = ordo.pid().as_raw();

    let producer = {
        let (bootstrap, topic, records) =
            (kafka.bootstrap(), setup.topic.clone(), ds.records.clone());
        std::thread::spawn(move || support::kafka::produce_at(&bootstrap, &topic, &records, RATE))
    };
    let client = db.client().await;
    let count = || async {
        client
            .query_one("SELECT count(*) FROM events", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before = count().await.unwrap();
    assert!(before > 0, "events land before the outage");

    // The outage: 30 s.
    cluster().stop();
    let outage = Instant::now();
    let mut peak = 0;
    while outage.elapsed() < Duration::from_secs(30) {
        assert!(ordo.running(), "{}", ordo.log_text());
        peak = peak.max(rss(pid));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    cluster().start_again();
    assert!(
        peak < MEMORY_BOUND,
        "resident memory reached {} MiB during the outage",
        peak / (1 << 20)
    );

    producer.join().unwrap();
    let hw = kafka.high_watermarks(&setup.topic, PARTITIONS);
    let client = db.client().await;
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &hw).await;
    data::assert_event_store_exact(&client, "events", &ds, &setup.group, &setup.topic, &hw).await;
    let log = ordo.log_text();
    assert_eq!(
        ordo.terminate(Duration::from_secs(30)).code(),
        Some(0),
        "{log}"
    );
    println!(
        "outage 30 s at {RATE} events/s: peak resident memory {} MiB; {before} events before it",
        peak / (1 << 20)
    );
}
