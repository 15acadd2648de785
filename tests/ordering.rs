//! Per-key ordering at the sink: projections keep the newest state, a gap that
//! never fills either holds the partition's offset (`wait`) or is skipped and
//! recorded (`skip`).

mod support;

use std::time::Duration;

use support::data::{self, Produced};
use support::kafka::Kafka;
use support::ordo::{Ordo, Setup};
use support::postgres::TestDb;
use support::{unique, Deadline};

struct Run {
    kafka: Kafka,
    db: TestDb,
    setup: Setup,
    dir: tempfile::TempDir,
}

async fn start(mode: &'static str, partitions: i32, ordering: &str) -> Run {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let setup = Setup {
        bootstrap: kafka.bootstrap(),
        group: unique("ordo"),
        topic: unique("events"),
        db_url: db.url.clone(),
        mode,
        table: "state".into(),
        ordering: ordering.to_string(),
        ..Setup::default()
    };
    kafka.create_topic(&setup.topic, partitions);
    Run {
        kafka,
        db,
        setup,
        dir: tempfile::tempdir().unwrap(),
    }
}

async fn wait_offsets(r: &Run, ordo: &mut Ordo, want: &[i64]) {
    let client = r.db.client().await;
    data::wait_stored_offsets(&client, ordo, &r.setup.group, &r.setup.topic, want).await;
}

fn record(partition: i32, key: &str, version: i64) -> Produced {
    Produced {
        partition,
        key: Some(key.as_bytes().to_vec()),
        payload: data::payload(key, version),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projection_holds_the_newest_state_of_every_key() {
    let r = start("projection", 3, "").await;
    let ds = data::generate(20_000, 3, 200, 0.05, 20, 0.02, 11);
    assert!(ds.inversions > 0 && ds.duplicates > 0);
    r.kafka.produce(&r.setup.topic, &ds.records);
    let hw = r.kafka.high_watermarks(&r.setup.topic, 3);
    let path = r.setup.write(r.dir.path(), "ordo.toml");
    let mut ordo = Ordo::start(&path, r.dir.path().join("ordo.log"));
    wait_offsets(&r, &mut ordo, &hw).await;
    assert!(ordo.terminate(Duration::from_secs(30)).success());
    let client = r.db.client().await;
    let rows = client
        .query("SELECT key, version, state FROM state ORDER BY key", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 200);
    for row in rows {
        let key: String = row.get(0);
        let version: i64 = row.get(1);
        let state: serde_json::Value = row.get(2);
        assert_eq!(version, ds.versions, "{key}");
        assert_eq!(
            state,
            serde_json::from_slice::<serde_json::Value>(&data::payload(&key, ds.versions)).unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_policy_holds_the_offset_at_an_unfilled_gap() {
    let r = start("event_store", 1, "gap_timeout_ms = 200").await;
    // k1 misses version 3; k2 is complete.
    let mut records = vec![];
    for v in [1, 2, 4, 5] {
        records.push(record(0, "k1", v));
    }
    for v in 1..=5 {
        records.push(record(0, "k2", v));
    }
    r.kafka.produce(&r.setup.topic, &records);
    let path = r.setup.write(r.dir.path(), "ordo.toml");
    let mut ordo = Ordo::start(&path, r.dir.path().join("ordo.log"));
    // k1 v4 at offset 2 is held: the stored offset stops there.
    wait_offsets(&r, &mut ordo, &[2]).await;
    let client = r.db.client().await;
    let deadline = Deadline::new("k2 applied", Duration::from_secs(30));
    loop {
        let n: i64 = client
            .query_one("SELECT count(*) FROM state WHERE stream = 'k2'", &[])
            .await
            .unwrap()
            .get(0);
        if n == 5 {
            break;
        }
        deadline.tick().await;
    }
    let k1 = versions_of(&client, "k1").await;
    assert_eq!(k1, vec![1, 2]);
    assert!(ordo.terminate(Duration::from_secs(30)).success());

    // The missing version arrives later: k1 completes in order, the offset reaches the end.
    r.kafka.produce(&r.setup.topic, &[record(0, "k1", 3)]);
    let mut ordo = Ordo::start(&path, r.dir.path().join("ordo2.log"));
    wait_offsets(&r, &mut ordo, &[10]).await;
    assert!(ordo.terminate(Duration::from_secs(30)).success());
    let k1 = versions_of(&client, "k1").await;
    assert_eq!(k1, vec![1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_policy_records_the_gap_and_drops_the_late_event_as_stale() {
    let r = start(
        "event_store",
        1,
        "gap_timeout_ms = 300\non_bound = \"skip\"",
    )
    .await;
    let records: Vec<Produced> = [1, 2, 4, 5].iter().map(|&v| record(0, "k1", v)).collect();
    r.kafka.produce(&r.setup.topic, &records);
    let path = r.setup.write(r.dir.path(), "ordo.toml");
    let mut ordo = Ordo::start(&path, r.dir.path().join("ordo.log"));
    wait_offsets(&r, &mut ordo, &[4]).await;
    // The late version 3 is not applied after the gap was skipped.
    r.kafka.produce(&r.setup.topic, &[record(0, "k1", 3)]);
    wait_offsets(&r, &mut ordo, &[5]).await;
    assert!(ordo.terminate(Duration::from_secs(30)).success());
    let client = r.db.client().await;
    let k1: Vec<i64> = client
        .query("SELECT version FROM state ORDER BY position", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(k1, vec![1, 2, 4, 5]);
    let gap = client
        .query_one(
            "SELECT key, expected, released, \"offset\", bound FROM ordo_gaps",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(gap.get::<_, String>(0), "k1");
    assert_eq!(gap.get::<_, i64>(1), 3);
    assert_eq!(gap.get::<_, i64>(2), 4);
    assert_eq!(gap.get::<_, i64>(3), 2);
    assert_eq!(gap.get::<_, String>(4), "gap_timeout");
}

/// A stream's versions in the order they were applied.
async fn versions_of(client: &tokio_postgres::Client, stream: &str) -> Vec<i64> {
    client
        .query(
            "SELECT version FROM state WHERE stream = $1 ORDER BY position",
            &[&stream],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_policy_parks_a_stuck_key_until_its_gap_fills_and_a_replay() {
    let mut r = start(
        "event_store",
        1,
        "max_buffered_events = 5\non_bound = \"dead_letter\"",
    )
    .await;
    r.setup.dead_letter = true;
    let dlq = format!("{}.dlq", r.setup.topic);
    r.kafka.create_topic(&dlq, 1);
    // k1: 1, then 3..=8 while 2 is missing: six held, one over the bound.
    let records: Vec<Produced> = [1, 3, 4, 5, 6, 7, 8]
        .iter()
        .map(|&v| record(0, "k1", v))
        .collect();
    r.kafka.produce(&r.setup.topic, &records);
    let path = r.setup.write(r.dir.path(), "ordo.toml");
    let mut ordo = Ordo::start(&path, r.dir.path().join("ordo.log"));
    // The held events went to the dead-letter topic, so the offset passes them.
    wait_offsets(&r, &mut ordo, &[7]).await;
    let client = r.db.client().await;
    assert_eq!(versions_of(&client, "k1").await, vec![1]);
    assert_eq!(r.kafka.read_all(&dlq, 6).len(), 6);
    // The gap fills; then the parked events come back, in order behind it.
    r.kafka.produce(&r.setup.topic, &[record(0, "k1", 2)]);
    wait_offsets(&r, &mut ordo, &[8]).await;
    assert_eq!(versions_of(&client, "k1").await, vec![1, 2]);
    let (status, stdout, stderr) = tokio::task::spawn_blocking({
        let path = path.clone();
        move || support::ordo::run_to_end(&["dlq", "replay", "--config", path.to_str().unwrap()])
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("replayed 6"), "{stdout}");
    wait_offsets(&r, &mut ordo, &[14]).await;
    assert_eq!(
        versions_of(&client, "k1").await,
        (1..=8).collect::<Vec<_>>()
    );
    assert!(ordo.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_never_holds_more_than_batch_max_events() {
    const MAX: usize = 25;
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let setup = Setup {
        topic: unique("batches"),
        ..Setup::event_store(kafka.bootstrap(), db.url.clone(), "events")
    };
    kafka.create_topic(&setup.topic, 1);
    // Versions 2..=120 wait for version 1, which comes last: its arrival
    // releases 120 events at once.
    let record = |v: i64| Produced {
        partition: 0,
        key: Some(b"a".to_vec()),
        payload: data::payload("a", v),
    };
    let records: Vec<Produced> = (2..=120).chain([1]).map(record).collect();
    kafka.produce(&setup.topic, &records);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ordo.toml");
    std::fs::write(
        &config,
        setup.toml().replace(
            "batch_max_events = 500",
            &format!("batch_max_events = {MAX}"),
        ),
    )
    .unwrap();
    let mut ordo = Ordo::start(&config, dir.path().join("ordo.log"));
    let client = db.client().await;
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &[120]).await;
    let versions: Vec<i64> = client
        .query("SELECT version FROM events ORDER BY position", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, (1..=120).collect::<Vec<i64>>());
    // Rows written by one transaction share its xmin.
    let largest: i64 = client
        .query_one(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM events GROUP BY xmin::text) t",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        largest <= MAX as i64,
        "a transaction wrote {largest} events (batch_max_events = {MAX})"
    );
    assert!(ordo.terminate(Duration::from_secs(30)).success());
}
