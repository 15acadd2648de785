//! Broker faults injected through the mock cluster while events stream in:
//! failed fetches, failed offset commits, every broker down and back. Nothing
//! is lost, and nothing lands twice (what is re-delivered, the sink absorbs).

mod support;

use std::time::Duration;

use ordo::demo::mock::MockCluster;
use rdkafka::bindings::rd_kafka_resp_err_t as Err;
use support::data;
use support::ordo::{Ordo, Setup};
use support::postgres::TestDb;

const FETCH: i16 = 1;
const OFFSET_COMMIT: i16 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_faults_lose_nothing_and_double_nothing() {
    // Fault injection needs the mock cluster, whatever TEST_KAFKA_BOOTSTRAP_SERVERS says.
    let cluster = MockCluster::start(3).unwrap();
    let bootstrap = cluster.bootstrap_servers().to_string();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::event_store(bootstrap.clone(), db.url.clone(), "events");
    cluster.create_topic(&setup.topic, 3).unwrap();
    let ds = data::generate(30_000, 3, 300, 0.05, 20, 0.02, 11);
    let producer = {
        let (bootstrap, topic, records) =
            (bootstrap.clone(), setup.topic.clone(), ds.records.clone());
        std::thread::spawn(move || support::kafka::produce_at(&bootstrap, &topic, &records, 3000))
    };
    let config = setup.write(dir.path(), "ordo.toml");
    let mut ordo = Ordo::start(&config, dir.path().join("ordo.log"));
    let client = db.client().await;
    let count = || async {
        client
            .query_one("SELECT count(*) FROM events", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(0)
    };
    let deadline = support::Deadline::new("events before the faults", Duration::from_secs(30));
    while count().await == 0 {
        deadline.tick().await;
    }

    // Fetches fail for a while.
    cluster.push_request_errors(
        FETCH,
        &[
            Err::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            Err::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
            Err::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
        ]
        .repeat(10),
    );
    // Offset commits (Kafka's advisory copy) fail.
    cluster.push_request_errors(
        OFFSET_COMMIT,
        &[Err::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE; 5],
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Every broker down for 3 s, then back.
    cluster.broker_down(-1).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.broker_up(-1).unwrap();

    producer.join().unwrap();
    let hw = {
        let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        (0..3)
            .map(|p| {
                rdkafka::consumer::Consumer::fetch_watermarks(
                    &consumer,
                    &setup.topic,
                    p,
                    Duration::from_secs(10),
                )
                .unwrap()
                .1
            })
            .collect::<Vec<i64>>()
    };
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &hw).await;
    data::assert_event_store_exact(&client, "events", &ds, &setup.group, &setup.topic, &hw).await;
    assert_eq!(ordo.terminate(Duration::from_secs(30)).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_that_cannot_be_written_stops_the_partition_in_front_of_its_record() {
    let cluster = MockCluster::start(1).unwrap();
    let bootstrap = cluster.bootstrap_servers().to_string();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        dead_letter: true,
        ..Setup::event_store(bootstrap.clone(), db.url.clone(), "events")
    };
    cluster.create_topic(&setup.topic, 1).unwrap();
    cluster
        .create_topic(&format!("{}.dlq", setup.topic), 1)
        .unwrap();
    let good = |v: i64| data::Produced {
        partition: 0,
        key: Some(b"k".to_vec()),
        payload: data::payload("k", v),
    };
    let bad = data::Produced {
        partition: 0,
        key: Some(b"k".to_vec()),
        payload: b"{not json".to_vec(),
    };
    ordo::demo::produce(&bootstrap, &setup.topic, &[good(1), good(2), bad, good(3)]).unwrap();
    // From now on every produce request fails: the dead letter cannot be written.
    const PRODUCE: i16 = 0;
    cluster.push_request_errors(
        PRODUCE,
        &[Err::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 200],
    );
    let config = setup.write(dir.path(), "ordo.toml");
    let mut ordo = Ordo::start(&config, dir.path().join("ordo.log"));
    let client = db.client().await;
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &[2]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &[2]).await;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 2, "nothing past the record is applied");
    let log = ordo.log_text();
    assert!(log.contains("cannot write to dead-letter topic"), "{log}");
    assert_eq!(ordo.terminate(Duration::from_secs(30)).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_writes_failing_for_a_while_are_waited_out() {
    let cluster = MockCluster::start(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers().to_string();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        dead_letter: true,
        http: format!("127.0.0.1:{}", support::postgres::free_port()),
        dead_letter_extra: "send_timeout_ms = 500".into(),
        ..Setup::event_store(bootstrap.clone(), db.url.clone(), "events")
    };
    cluster.create_topic(&setup.topic, 1).unwrap();
    let dlq = format!("{}.dlq", setup.topic);
    cluster.create_topic(&dlq, 1).unwrap();
    let good = |v: i64| data::Produced {
        partition: 0,
        key: Some(b"k".to_vec()),
        payload: data::payload("k", v),
    };
    let bad = |n: u8| data::Produced {
        partition: 0,
        key: Some(vec![b'p', n]),
        payload: b"{not json".to_vec(),
    };
    let records = [good(1), bad(1), good(2), bad(2), good(3)];
    ordo::demo::produce(&bootstrap, &setup.topic, &records).unwrap();
    // Produce requests fail with a retriable error for a while: each
    // dead-letter write times out (500 ms) a few times before one goes through.
    const PRODUCE: i16 = 0;
    cluster.push_request_errors(PRODUCE, &[Err::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 16]);
    let config = setup.write(dir.path(), "ordo.toml");
    let mut ordo = Ordo::start(&config, dir.path().join("ordo.log"));
    let client = db.client().await;
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &[5]).await;
    let log = ordo.log_text();
    assert!(log.contains("waits for dead_letter_topic"), "{log}");
    assert!(!log.contains("partition stopped"), "{log}");
    let versions: Vec<i64> = client
        .query("SELECT version FROM events ORDER BY position", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2, 3]);
    let kafka = support::kafka::Kafka::External(bootstrap.clone());
    let letters = kafka.read_all(&dlq, 2);
    let keys: Vec<Vec<u8>> = letters
        .iter()
        .map(|m| rdkafka::Message::key(m).unwrap_or_default().to_vec())
        .collect();
    assert_eq!(
        keys,
        vec![b"p\x01".to_vec(), b"p\x02".to_vec()],
        "each poison record once"
    );
    assert_eq!(support::ordo::readyz(&setup.http).await.0, 200);
    assert_eq!(ordo.terminate(Duration::from_secs(30)).code(), Some(0));
}
