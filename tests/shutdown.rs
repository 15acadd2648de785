//! The shutdown deadline holds from the moment the signal arrives, whatever
//! blocks: a SIGTERM that comes while a revoked partition drains with
//! PostgreSQL down (the rebalance callback waiting for the drain) exits 0
//! within `shutdown.deadline_ms`, and nothing is lost: after PostgreSQL is
//! back, a restart lands every event exactly once.
//!
//! Its own test binary: it stops the PostgreSQL cluster the binary's tests share.

mod support;

use std::time::{Duration, Instant};

use support::data;
use support::kafka::Kafka;
use support::ordo::{Ordo, Setup};
use support::postgres::{cluster, TestDb};
use support::Deadline;

const PARTITIONS: i32 = 4;
const DEADLINE_MS: u64 = 6000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_revoke_drain_with_postgres_down_exits_within_the_deadline() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        tail: format!("[shutdown]\ndeadline_ms = {DEADLINE_MS}\n"),
        ..Setup::event_store(kafka.bootstrap(), db.url.clone(), "events")
    };
    kafka.create_topic(&setup.topic, PARTITIONS);
    let ds = data::generate(6000, PARTITIONS, 60, 0.05, 10, 0.02, 5);
    // The first half of every partition now, the rest once PostgreSQL is down.
    let mut per_partition = std::collections::HashMap::new();
    for r in &ds.records {
        *per_partition.entry(r.partition).or_insert(0usize) += 1;
    }
    let mut seen = std::collections::HashMap::new();
    let (first, rest): (Vec<_>, Vec<_>) = ds.records.iter().cloned().partition(|r| {
        let n = seen.entry(r.partition).or_insert(0usize);
        *n += 1;
        *n <= per_partition[&r.partition] / 2
    });
    kafka.produce(&setup.topic, &first);
    let replicas = setup.replicas(dir.path(), 2);
    let mut r0 = replicas[0].start();
    let client = db.client().await;
    let hw = kafka.high_watermarks(&setup.topic, PARTITIONS);
    data::wait_stored_offsets(&client, &mut r0, &setup.group, &setup.topic, &hw).await;

    // PostgreSQL goes away with batches in hand; a second replica joins, so
    // the first revokes partitions whose drain cannot commit.
    cluster().stop();
    kafka.produce(&setup.topic, &rest);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut r1 = replicas[1].start();
    let deadline = Deadline::new(
        "the first replica to drain revoked partitions",
        Duration::from_secs(90),
    );
    while !r0.log_text().contains("partitions revoked: draining") {
        assert!(r0.running(), "{}", r0.log_text());
        deadline.tick().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let status = r0.terminate(Duration::from_secs(60));
    let took = started.elapsed();
    assert!(status.success(), "exit {status:?}\n{}", r0.log_text());
    assert!(
        took < Duration::from_millis(DEADLINE_MS + 2000),
        "the stop took {took:?}, past the {DEADLINE_MS} ms deadline\n{}",
        r0.log_text()
    );
    r1.crash();

    // Nothing was lost: PostgreSQL back, a restart lands everything once.
    cluster().start_again();
    let client = db.client().await;
    let hw = kafka.high_watermarks(&setup.topic, PARTITIONS);
    let mut r0 = Ordo::start(&replicas[0].config, dir.path().join("r0-again.log"));
    data::wait_stored_offsets(&client, &mut r0, &setup.group, &setup.topic, &hw).await;
    data::assert_event_store_exact(&client, "events", &ds, &setup.group, &setup.topic, &hw).await;
    assert!(r0.terminate(Duration::from_secs(30)).success());
}
