//! Dependencies that are not there are waited out, never fatal: Ordo started
//! before PostgreSQL and before the broker, a rebalance while PostgreSQL is
//! down (a partition's lease waits), and stops within the shutdown deadline
//! with every broker down and with PostgreSQL down. After each, every event
//! is in the table exactly once, in order.
//!
//! Its own test binary: it stops the PostgreSQL cluster the binary's tests share.

mod support;

use std::time::{Duration, Instant};

use support::data::{self, Produced};
use support::kafka::{Kafka, MockCluster};
use support::ordo::{readyz, wait_not_ready_with, Ordo, Setup};
use support::postgres::{cluster, TestDb};
use support::Deadline;

const PARTITIONS: i32 = 4;
const DEADLINE_MS: u64 = 5000;

fn mock(kafka: &Kafka) -> &MockCluster {
    match kafka {
        Kafka::Mock(m) => m,
        Kafka::External(_) => unreachable!("this test needs the mock cluster"),
    }
}

/// Stops `ordo` with SIGTERM and asserts it exits 0 within the deadline.
fn stop_in_time(ordo: &mut Ordo, what: &str) {
    let started = Instant::now();
    let status = ordo.terminate(Duration::from_secs(30));
    let took = started.elapsed();
    assert!(
        status.success(),
        "{what}: exit {status:?}\n{}",
        ordo.log_text()
    );
    assert!(
        took < Duration::from_millis(DEADLINE_MS + 2000),
        "{what}: the stop took {took:?}, past the {DEADLINE_MS} ms deadline"
    );
}

/// Waits until a replica reports `wanted` assigned partitions (any, if `None`).
async fn wait_owns_partitions(
    ordo: &mut Ordo,
    replica: &support::ordo::Replica,
    wanted: Option<i64>,
) {
    let deadline = Deadline::new(
        format!("a replica to own {wanted:?} partitions"),
        Duration::from_secs(60),
    );
    loop {
        let metrics = reqwest::get(format!("{}/metrics", replica.base()))
            .await
            .ok();
        let text = match metrics {
            Some(r) => r.text().await.unwrap_or_default(),
            None => String::new(),
        };
        let owned = text
            .lines()
            .find_map(|l| l.strip_prefix("ordo_assigned_partitions "))
            .and_then(|v| v.trim().parse::<i64>().ok());
        match (owned, wanted) {
            (Some(n), None) if n > 0 => return,
            (Some(n), Some(w)) if n == w => return,
            _ => {}
        }
        assert!(ordo.running(), "{}", ordo.log_text());
        deadline.tick().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dependency_failure_is_waited_out_and_stops_meet_their_deadline() {
    let kafka = Kafka::Mock(MockCluster::start(3).expect("mock cluster"));
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        dead_letter: true,
        tail: format!("[shutdown]\ndeadline_ms = {DEADLINE_MS}\n"),
        ..Setup::event_store(kafka.bootstrap(), db.url.clone(), "events")
    };
    kafka.create_topic(&setup.topic, PARTITIONS);
    kafka.create_topic(&format!("{}.dlq", setup.topic), 1);
    let ds = data::generate(8000, PARTITIONS, 80, 0.05, 10, 0.02, 21);
    // Partitions 0 and 1 now, 2 and 3 during the second outage (a key's
    // events all live in one partition, so the first part is complete).
    let (first, rest): (Vec<Produced>, Vec<Produced>) =
        ds.records.iter().cloned().partition(|r| r.partition < 2);
    kafka.produce(&setup.topic, &first);
    let poison: Vec<Produced> = (0..PARTITIONS)
        .map(|p| Produced {
            partition: p,
            key: Some(format!("poison-{p}").into_bytes()),
            payload: b"{ not json".to_vec(),
        })
        .collect();
    kafka.produce(&setup.topic, &poison);
    let replicas = setup.replicas(dir.path(), 3);

    // Started before PostgreSQL and before the broker: it waits, not ready.
    cluster().stop();
    mock(&kafka).broker_down(-1).unwrap();
    let mut r0 = replicas[0].start();
    wait_not_ready_with(&mut r0, &replicas[0].addr, &["waits for postgres"]).await;
    cluster().start_again();
    wait_not_ready_with(&mut r0, &replicas[0].addr, &["waits for kafka"]).await;
    mock(&kafka).broker_up(-1).unwrap();
    let hw = kafka.high_watermarks(&setup.topic, PARTITIONS);
    let client = db.client().await;
    data::wait_stored_offsets(&client, &mut r0, &setup.group, &setup.topic, &hw).await;
    assert_eq!(readyz(&replicas[0].addr).await.0, 200);

    // A rebalance while PostgreSQL is down: the second replica joins, takes
    // partitions, and is killed during the outage; the first is handed its
    // partitions and waits for their leases instead of exiting.
    let mut r1 = replicas[1].start();
    wait_owns_partitions(&mut r1, &replicas[1], None).await;
    let mut r2 = replicas[2].start();
    wait_owns_partitions(&mut r2, &replicas[2], None).await;
    cluster().stop();
    kafka.produce(&setup.topic, &rest);
    // Two rebalances during the outage: neither waits for PostgreSQL (a
    // partition whose lease cannot be taken is assigned paused and waits in
    // the background), so r0 follows both and ends up owning every
    // partition while PostgreSQL is still down.
    r1.crash();
    tokio::time::sleep(Duration::from_secs(2)).await;
    r2.crash();
    wait_owns_partitions(&mut r0, &replicas[0], Some(PARTITIONS as i64)).await;
    wait_not_ready_with(&mut r0, &replicas[0].addr, &["taking its lease"]).await;
    cluster().start_again();
    let hw = kafka.high_watermarks(&setup.topic, PARTITIONS);
    let client = db.client().await;
    data::wait_stored_offsets(&client, &mut r0, &setup.group, &setup.topic, &hw).await;
    data::assert_event_store_exact(&client, "events", &ds, &setup.group, &setup.topic, &hw).await;
    let log = r0.log_text();
    assert!(
        !log.contains("partition stopped") && !log.contains("fenced"),
        "{log}"
    );

    // Every broker down: SIGTERM still exits 0 within the deadline.
    mock(&kafka).broker_down(-1).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_in_time(&mut r0, "every broker down");
    mock(&kafka).broker_up(-1).unwrap();

    // PostgreSQL down: the same.
    let mut r0 = Ordo::start(&replicas[0].config, dir.path().join("r0-again.log"));
    data::wait_stored_offsets(&client, &mut r0, &setup.group, &setup.topic, &hw).await;
    cluster().stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_in_time(&mut r0, "PostgreSQL down");
    cluster().start_again();

    // A restart after both finds the table exact, and every poison record
    // was dead-lettered.
    let client = db.client().await;
    let mut r0 = Ordo::start(&replicas[0].config, dir.path().join("r0-last.log"));
    data::wait_stored_offsets(&client, &mut r0, &setup.group, &setup.topic, &hw).await;
    data::assert_event_store_exact(&client, "events", &ds, &setup.group, &setup.topic, &hw).await;
    let letters = kafka.read_all(&format!("{}.dlq", setup.topic), poison.len());
    for p in 0..PARTITIONS {
        let key = format!("poison-{p}");
        assert!(
            letters
                .iter()
                .any(|m| rdkafka::Message::key(m) == Some(key.as_bytes())),
            "{key} not dead-lettered"
        );
    }
    assert!(r0.terminate(Duration::from_secs(30)).success());
}
