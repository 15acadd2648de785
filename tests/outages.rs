//! PostgreSQL outages, one after the other:
//! - after a 20 s outage (the breaker's open period grown to 16 s), the
//!   first write lands within 2 s of the server accepting connections;
//! - the shutdown deadline holds from the moment the signal arrives, whatever
//!   blocks: a SIGTERM that comes while a revoked partition drains with
//!   PostgreSQL down (the rebalance callback waiting for the drain) exits 0
//!   within `shutdown.deadline_ms`.
//!
//! And nothing is lost: a restart lands every event exactly once.
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
async fn writes_resume_at_once_after_an_outage_and_a_stop_during_a_drain_keeps_its_deadline() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        tail: format!("[shutdown]\ndeadline_ms = {DEADLINE_MS}\n"),
        ..Setup::event_store(kafka.bootstrap(), db.url.clone(), "events")
    };
    kafka.create_topic(&setup.topic, PARTITIONS);
    let ds = data::generate(6000, PARTITIONS, 60, 0.05, 10, 0.02, 5);
    // A third of every partition now, a third during each outage.
    let mut per_partition = std::collections::HashMap::new();
    for r in &ds.records {
        *per_partition.entry(r.partition).or_insert(0usize) += 1;
    }
    let mut seen = std::collections::HashMap::new();
    let mut thirds: [Vec<data::Produced>; 3] = Default::default();
    for r in &ds.records {
        let n = seen.entry(r.partition).or_insert(0usize);
        thirds[(*n * 3 / per_partition[&r.partition]).min(2)].push(r.clone());
        *n += 1;
    }
    let [first, second, rest] = thirds;
    kafka.produce(&setup.topic, &first);
    let replicas = setup.replicas(dir.path(), 2);
    let mut r0 = replicas[0].start();
    let client = db.client().await;
    let hw = kafka.high_watermarks(&setup.topic, PARTITIONS);
    data::wait_stored_offsets(&client, &mut r0, &setup.group, &setup.topic, &hw).await;

    // A 20 s outage with records in hand: once the server accepts
    // connections again, the first write lands within 2 s.
    let before: i64 = data::stored_offsets(&client, &setup.group, &setup.topic)
        .await
        .iter()
        .sum();
    cluster().stop();
    kafka.produce(&setup.topic, &second);
    tokio::time::sleep(Duration::from_secs(20)).await;
    cluster().start_again();
    let back = Instant::now();
    let client = db.client().await;
    loop {
        let now: i64 = data::stored_offsets(&client, &setup.group, &setup.topic)
            .await
            .iter()
            .sum();
        if now > before {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(2),
            "no write landed within 2 s of PostgreSQL's return\n{}",
            r0.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hw = kafka.high_watermarks(&setup.topic, PARTITIONS);
    data::wait_stored_offsets(&client, &mut r0, &setup.group, &setup.topic, &hw).await;

    // A second replica joins (it reaches PostgreSQL at start, then joins
    // the group); PostgreSQL goes away before the group has rebalanced,
    // with records in hand, so the first replica revokes partitions whose
    // drain cannot commit.
    let mut r1 = replicas[1].start();
    let joining = Deadline::new("the second replica to subscribe", Duration::from_secs(60));
    while !r1.log_text().contains("consuming") {
        assert!(r1.running(), "{}", r1.log_text());
        joining.tick().await;
    }
    cluster().stop();
    kafka.produce(&setup.topic, &rest);
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
