//! Exactly-once delivery into PostgreSQL: out-of-order and duplicated events,
//! crashes (SIGKILL) and restarts, and two replicas sharing the partitions.

mod support;

use std::time::Duration;

use rand::Rng;
use support::data::{self, Dataset};
use support::kafka::Kafka;
use support::ordo::{Ordo, Setup};
use support::postgres::TestDb;
use support::{unique, Deadline};

const PARTITIONS: i32 = 6;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(240);

struct World {
    kafka: Kafka,
    db: TestDb,
    setup: Setup,
    dir: tempfile::TempDir,
}

async fn world(mode: &'static str) -> World {
    let kafka = Kafka::start();
    let topic = unique("events");
    kafka.create_topic(&topic, PARTITIONS);
    let db = TestDb::new().await;
    let setup = Setup {
        bootstrap: kafka.bootstrap(),
        group: unique("ordo"),
        topic,
        db_url: db.url.clone(),
        mode,
        table: "events".into(),
        ordering: String::new(),
        ..Setup::default()
    };
    World {
        kafka,
        db,
        setup,
        dir: tempfile::tempdir().expect("temp dir"),
    }
}

fn dataset() -> Dataset {
    let ds = data::generate(100_000, PARTITIONS, 1000, 0.05, 20, 0.02, 7);
    assert!(
        ds.inversions > 1000,
        "the data must reorder keys: {}",
        ds.inversions
    );
    assert!(
        ds.duplicates > 1000,
        "the data must hold duplicates: {}",
        ds.duplicates
    );
    ds
}

/// Waits until the stored offsets reach the high watermarks.
async fn drained(w: &World, hw: &[i64], ordo: &mut Ordo) {
    let client = w.db.client().await;
    let deadline = Deadline::new(format!("stored offsets to reach {hw:?}"), DRAIN_TIMEOUT);
    loop {
        assert!(ordo.running(), "ordo exited early:\n{}", ordo.log_text());
        if data::stored_offsets(&client, &w.setup.group, &w.setup.topic).await == hw {
            return;
        }
        deadline.tick().await;
    }
}

async fn rows(w: &World) -> i64 {
    let c = w.db.client().await;
    c.query_one("SELECT count(*) FROM events", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_and_duplicated_events_land_exactly_once_in_order() {
    let w = world("event_store").await;
    let ds = dataset();
    w.kafka.produce(&w.setup.topic, &ds.records);
    let hw = w.kafka.high_watermarks(&w.setup.topic, PARTITIONS);
    assert_eq!(hw.iter().sum::<i64>() as usize, ds.records.len());

    let config = w.setup.write(w.dir.path(), "ordo.toml");
    let mut ordo = Ordo::start(&config, w.dir.path().join("ordo.log"));
    drained(&w, &hw, &mut ordo).await;
    let status = ordo.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        ordo.log_text()
    );

    let client = w.db.client().await;
    data::assert_event_store_exact(&client, "events", &ds, &w.setup.group, &w.setup.topic, &hw)
        .await;
    // Kafka's committed offsets are the sink's, copied for lag tools.
    assert_eq!(
        w.kafka
            .committed(&w.setup.group, &w.setup.topic, PARTITIONS),
        hw
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_and_restarted_three_times_the_table_is_exact() {
    let w = world("event_store").await;
    let ds = dataset();
    w.kafka.produce(&w.setup.topic, &ds.records);
    let hw = w.kafka.high_watermarks(&w.setup.topic, PARTITIONS);
    let config = w.setup.write(w.dir.path(), "ordo.toml");
    let total = ds.keys as i64 * ds.versions;
    let mut rng = rand::rng();
    let mut kills = 0;
    // Kill at random points while rows are still arriving.
    for round in 0..4 {
        let mut ordo = Ordo::start(&config, w.dir.path().join(format!("ordo-{round}.log")));
        let before = rows(&w).await;
        let target = before + rng.random_range(2_000..12_000);
        let deadline = Deadline::new("progress before the kill", DRAIN_TIMEOUT);
        while rows(&w).await < target.min(total) {
            assert!(ordo.running(), "ordo exited:\n{}", ordo.log_text());
            deadline.tick().await;
        }
        if rows(&w).await >= total {
            break;
        }
        ordo.crash();
        kills += 1;
    }
    assert!(kills >= 3, "only {kills} kills happened mid-stream");
    let mut ordo = Ordo::start(&config, w.dir.path().join("ordo-last.log"));
    drained(&w, &hw, &mut ordo).await;
    let status = ordo.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}:\n{}", ordo.log_text());
    let client = w.db.client().await;
    data::assert_event_store_exact(&client, "events", &ds, &w.setup.group, &w.setup.topic, &hw)
        .await;
}

/// A memory budget with room for one partition's fetch at a time: the
/// partitions take turns (each paused while it waits), also across a
/// rebalance when a second replica joins, and every event lands once, in
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_room_for_one_fetch_at_a_time_partitions_take_turns_and_land_exactly() {
    let mut w = world("event_store").await;
    w.setup.tail = "[memory]\nbudget_mb = 1\n".into();
    let ds = dataset();
    // librdkafka's producer defaults: batches of up to 10,000 records.
    w.kafka.produce(&w.setup.topic, &ds.records);
    let hw = w.kafka.high_watermarks(&w.setup.topic, PARTITIONS);
    let config = w.setup.write(w.dir.path(), "ordo.toml");
    let mut a = Ordo::start(&config, w.dir.path().join("a.log"));
    let client = w.db.client().await;
    let deadline = Deadline::new("a third of the events", Duration::from_secs(120));
    while rows(&w).await < ds.records.len() as i64 / 3 {
        assert!(a.running(), "{}", a.log_text());
        deadline.tick().await;
    }
    let mut b = Ordo::start(&config, w.dir.path().join("b.log"));
    let deadline = Deadline::new(format!("stored offsets to reach {hw:?}"), DRAIN_TIMEOUT);
    loop {
        assert!(
            a.running() && b.running(),
            "{}\n{}",
            a.log_text(),
            b.log_text()
        );
        if data::stored_offsets(&client, &w.setup.group, &w.setup.topic).await == hw {
            break;
        }
        deadline.tick().await;
    }
    for o in [&mut a, &mut b] {
        let status = o.terminate(Duration::from_secs(30));
        assert!(status.success(), "{status:?}\n{}", o.log_text());
    }
    data::assert_event_store_exact(&client, "events", &ds, &w.setup.group, &w.setup.topic, &hw)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_split_partitions_and_one_takes_over() {
    let w = world("event_store").await;
    let ds = dataset();
    // Produce in the background so both replicas work mid-stream.
    let records = ds.records.clone();
    let (first, rest) = records.split_at(records.len() / 4);
    w.kafka.produce(&w.setup.topic, first);
    let config = w.setup.write(w.dir.path(), "ordo.toml");
    let mut a = Ordo::start(&config, w.dir.path().join("a.log"));
    let mut b = Ordo::start(&config, w.dir.path().join("b.log"));
    let client = w.db.client().await;
    // Both replicas hold leases at the same time: the partitions are split.
    let a_pid = a.pid().as_raw().to_string();
    let b_pid = b.pid().as_raw().to_string();
    let deadline = Deadline::new("both replicas to own partitions", Duration::from_secs(60));
    loop {
        assert!(a.running() && b.running(), "a replica exited");
        let pids = owners(&client, &w.setup.group).await;
        if pids.len() == PARTITIONS as usize && pids.contains(&a_pid) && pids.contains(&b_pid) {
            break;
        }
        deadline.tick().await;
    }
    // Stop one mid-stream, while the rest is being produced.
    let producer = {
        let rest = rest.to_vec();
        let topic = w.setup.topic.clone();
        let kafka_bootstrap = w.kafka.bootstrap();
        std::thread::spawn(move || {
            let k = Kafka::External(kafka_bootstrap);
            for chunk in rest.chunks(5_000) {
                k.produce(&topic, chunk);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = a.terminate(Duration::from_secs(60));
    assert!(status.success(), "a: {status:?}\n{}", a.log_text());
    producer.join().expect("producer");
    let hw = w.kafka.high_watermarks(&w.setup.topic, PARTITIONS);
    drained(&w, &hw, &mut b).await;
    let mut pids = owners(&client, &w.setup.group).await;
    pids.dedup();
    assert_eq!(pids, vec![b_pid], "b took over every partition");
    let status = b.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}:\n{}", b.log_text());
    data::assert_event_store_exact(&client, "events", &ds, &w.setup.group, &w.setup.topic, &hw)
        .await;
}

/// The pid of the owner of each partition's lease, in partition order.
async fn owners(client: &tokio_postgres::Client, group: &str) -> Vec<String> {
    client
        .query(
            "SELECT split_part(owner, ':', 2) FROM ordo_offsets WHERE consumer_group = $1 ORDER BY partition",
            &[&group],
        )
        .await
        .map(|rows| rows.iter().map(|r| r.get(0)).collect())
        .unwrap_or_default()
}
