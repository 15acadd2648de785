//! `ordo offsets set --to-timestamp` against a broker with a time index
//! (tansu, a separate process; librdkafka's mock cluster has none): the
//! stored offsets land on each partition's first record at or after the
//! time, given as RFC 3339 or epoch milliseconds; a dry run moves nothing;
//! the rewound events are re-read and the table stays exact.

mod support;

use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use support::kafka::Kafka;
use support::ordo::{run_to_end, Ordo, Setup};
use support::postgres::TestDb;
use support::tansu::Tansu;
use support::{data, Deadline};

const PARTITIONS: i32 = 2;
const PER_PARTITION: i64 = 20;

/// Runs Ordo until the stored offsets reach `hw`, then stops it.
async fn run_until_stored(
    client: &tokio_postgres::Client,
    setup: &Setup,
    dir: &std::path::Path,
    hw: &[i64],
    name: &str,
) {
    let config = setup.write(dir, &format!("{name}.toml"));
    let mut ordo = Ordo::start(&config, dir.join(format!("{name}.log")));
    let deadline = Deadline::new(format!("stored offsets {hw:?}"), Duration::from_secs(120));
    while data::stored_offsets(client, &setup.group, &setup.topic).await != hw {
        assert!(ordo.running(), "{}", ordo.log_text());
        deadline.tick().await;
    }
    assert!(
        ordo.terminate(Duration::from_secs(30)).success(),
        "{}",
        ordo.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_timestamp_lands_on_the_first_offset_at_or_after_it() {
    let tansu = Tansu::start();
    let kafka = Kafka::External(tansu.bootstrap());
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::event_store(tansu.bootstrap(), db.url.clone(), "events");
    kafka.create_topic(&setup.topic, PARTITIONS);
    // Record i of each partition was written at base + i s; partition 1's
    // clock runs half a second behind.
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 3_600_000;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", tansu.bootstrap())
        .set("enable.idempotence", "false")
        .create()
        .unwrap();
    for p in 0..PARTITIONS {
        for i in 0..PER_PARTITION {
            let key = format!("k{p}-{}", i % 4);
            let payload = format!(r#"{{"id":"{key}","version":{}}}"#, i / 4 + 1);
            let at = base + i * 1000 - i64::from(p) * 500;
            producer
                .send(
                    BaseRecord::to(&setup.topic)
                        .partition(p)
                        .key(&key)
                        .payload(&payload)
                        .timestamp(at),
                )
                .map_err(|(e, _)| e)
                .unwrap();
            producer.flush(Duration::from_secs(10)).unwrap();
        }
    }
    let hw = kafka.high_watermarks(&setup.topic, PARTITIONS);
    assert_eq!(hw, vec![PER_PARTITION; PARTITIONS as usize]);
    let client = db.client().await;
    run_until_stored(&client, &setup, dir.path(), &hw, "first").await;
    let config = setup.write(dir.path(), "ordo.toml");
    let config = config.to_str().unwrap();

    // 10.2 s after base: record 11 of partition 0 (at 11 s), and of
    // partition 1 (at 10.5 s). As RFC 3339, dry run first.
    let at = chrono::DateTime::from_timestamp_millis(base + 10_200)
        .unwrap()
        .to_rfc3339();
    let (status, stdout, stderr) = run_to_end(&[
        "offsets",
        "set",
        "--to-timestamp",
        &at,
        "--dry-run",
        "--config",
        config,
    ]);
    assert!(status.success(), "{stdout}{stderr}");
    assert_eq!(
        data::stored_offsets(&client, &setup.group, &setup.topic).await,
        hw,
        "a dry run moves nothing: {stdout}"
    );
    let (status, stdout, stderr) =
        run_to_end(&["offsets", "set", "--to-timestamp", &at, "--config", config]);
    assert!(status.success(), "{stdout}{stderr}");
    assert_eq!(
        data::stored_offsets(&client, &setup.group, &setup.topic).await,
        vec![11, 11],
        "{stdout}"
    );
    // As epoch milliseconds, one partition: 15 s after base is record 15
    // of partition 0.
    let (status, stdout, stderr) = run_to_end(&[
        "offsets",
        "set",
        "--to-timestamp",
        &(base + 15_000).to_string(),
        "--partitions",
        "0",
        "--config",
        config,
    ]);
    assert!(status.success(), "{stdout}{stderr}");
    assert_eq!(
        data::stored_offsets(&client, &setup.group, &setup.topic).await,
        vec![15, 11],
        "{stdout}"
    );
    let moves: Vec<(i32, i64, String)> = client
        .query(
            "SELECT partition, to_offset, kind FROM ordo_offset_moves WHERE consumer_group = $1 ORDER BY id",
            &[&setup.group],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        moves,
        vec![
            (0, 11, "set".to_string()),
            (1, 11, "set".to_string()),
            (0, 15, "set".to_string())
        ]
    );
    // A time after every record: Kafka answers "none" (the move goes to
    // the end); tansu answers offset 0, whose record is older. Checked
    // against the records, that answer is refused and nothing moves.
    let (status, stdout, stderr) = run_to_end(&[
        "offsets",
        "set",
        "--to-timestamp",
        &(base + 60_000).to_string(),
        "--config",
        config,
    ]);
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("cannot look offsets up by time"),
        "{stdout}{stderr}"
    );
    assert_eq!(
        data::stored_offsets(&client, &setup.group, &setup.topic).await,
        vec![15, 11]
    );
    // Re-read from there: what was applied is dropped as duplicates, the
    // table is as before.
    run_until_stored(&client, &setup, dir.path(), &hw, "again").await;
    let rows: Vec<(String, i64)> = client
        .query(
            "SELECT stream, version FROM events ORDER BY stream, version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(rows.len(), (PER_PARTITION * i64::from(PARTITIONS)) as usize);
    let mut expected = Vec::new();
    for p in 0..PARTITIONS {
        for k in 0..4 {
            for v in 1..=PER_PARTITION / 4 {
                expected.push((format!("k{p}-{k}"), v));
            }
        }
    }
    expected.sort();
    assert_eq!(rows, expected);
}
