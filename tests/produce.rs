//! `ordo produce` against a cluster, then Ordo consuming what it produced:
//! the end state it wrote is what lands (every version of every key once),
//! and every poison record it reported is in the dead-letter topic; in JSON
//! and in Avro (three writer versions through the registry, read with v3),
//! and JSON of the same order events (`--shape orders`).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use ordo_registry::Registry;
use support::data;
use support::kafka::Kafka;
use support::ordo::{run_to_end, Ordo, Setup};
use support::postgres::TestDb;

const PARTITIONS: i32 = 4;

/// The number before `word` in `text` ("... 57 poison records ...").
fn count_before(text: &str, word: &str) -> u64 {
    let at = text
        .find(word)
        .unwrap_or_else(|| panic!("{word} in {text}"));
    text[..at]
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a number before {word} in {text}"))
}

/// What `ordo produce` writes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Events {
    Json,
    /// JSON of the order events (`--shape orders`).
    JsonOrders,
    Avro,
}

async fn produce_then_consume(events: Events) {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::new();
    let server = registry.spawn("127.0.0.1:0".parse().unwrap()).unwrap();
    let base = Setup {
        dead_letter: true,
        ..Setup::event_store(kafka.bootstrap(), db.url.clone(), "events")
    };
    let setup = if events == Events::Avro {
        let reader =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/orders-v3.avsc");
        Setup {
            source: format!(
                "format = \"avro\"\n[[source.reader_schemas]]\ntopic = \"{}\"\nfile = \"{}\"",
                base.topic,
                reader.display()
            ),
            sequence: "field:meta.seq".into(),
            tail: format!("[schema_registry]\nurls = [\"{}\"]\n", server.url()),
            ..base
        }
    } else if events == Events::JsonOrders {
        Setup {
            sequence: "field:meta.seq".into(),
            ..base
        }
    } else {
        base
    };
    kafka.create_topic(&setup.topic, PARTITIONS);
    let dlq = format!("{}.dlq", setup.topic);
    kafka.create_topic(&dlq, 1);
    let config = setup.write(dir.path(), "ordo.toml");
    let expected = dir.path().join("expected.csv");

    let (status, stdout, stderr) = tokio::task::spawn_blocking({
        let (config, expected) = (config.clone(), expected.clone());
        move || {
            let shape = match events {
                Events::JsonOrders => "orders",
                _ => "flat",
            };
            run_to_end(&[
                "produce",
                "--shape",
                shape,
                "--config",
                config.to_str().unwrap(),
                "--events",
                "6000",
                "--keys",
                "300",
                "--late",
                "0.1",
                "--duplicates",
                "0.05",
                "--poison",
                "0.01",
                "--compression",
                "zstd",
                "--expected",
                expected.to_str().unwrap(),
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("6000 events over"), "{stdout}");
    let poison = count_before(&stdout, "poison records");
    let duplicates = count_before(&stdout, "sent twice");
    assert!(poison > 20 && duplicates > 150, "{stdout}");
    let hw = kafka.high_watermarks(&setup.topic, PARTITIONS);
    assert_eq!(hw.iter().sum::<i64>() as u64, 6000 + poison + duplicates);

    let last: BTreeMap<String, i64> = data::expected_state(&expected).into_iter().collect();
    assert_eq!(last.values().sum::<i64>(), 6000);

    let mut ordo = Ordo::start(&config, dir.path().join("ordo.log"));
    let client = db.client().await;
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &hw).await;
    let rows = client
        .query(
            "SELECT stream, version FROM events ORDER BY stream, version",
            &[],
        )
        .await
        .unwrap();
    let mut landed: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in rows {
        landed.entry(r.get(0)).or_default().push(r.get(1));
    }
    assert_eq!(landed.len(), last.len());
    for (key, last) in &last {
        assert_eq!(
            landed.get(key),
            Some(&(1..=*last).collect::<Vec<_>>()),
            "key {key}"
        );
    }
    if events == Events::JsonOrders {
        // The order event as the Avro reader schema v3 renders it.
        let row = client
            .query_one(
                "SELECT stream, version, payload FROM events ORDER BY position LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        let (stream, version): (String, i64) = (row.get(0), row.get(1));
        let payload: serde_json::Value = row.get(2);
        assert_eq!(
            payload,
            ordo::demo::orders::expected(3, 3, &stream, version)
        );
    }
    assert_eq!(kafka.read_all(&dlq, poison as usize).len() as u64, poison);
    assert!(ordo.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_ordo_produce_writes_lands_as_its_expected_end_state_json() {
    produce_then_consume(Events::Json).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_ordo_produce_writes_lands_as_its_expected_end_state_json_orders() {
    produce_then_consume(Events::JsonOrders).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_ordo_produce_writes_lands_as_its_expected_end_state_avro() {
    produce_then_consume(Events::Avro).await;
}

/// A second run into the same topic with another `--key-prefix` writes new
/// keys, so both runs' expected end states hold together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_with_a_key_prefix_adds_new_keys_beside_the_first() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::event_store(kafka.bootstrap(), db.url.clone(), "events");
    kafka.create_topic(&setup.topic, PARTITIONS);
    let config = setup.write(dir.path(), "ordo.toml");
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for (run, prefix) in [(1, ""), (2, "run2-")] {
        let expected = dir.path().join(format!("expected-{run}.csv"));
        let (config, file) = (config.clone(), expected.clone());
        let (status, stdout, stderr) = tokio::task::spawn_blocking(move || {
            let mut args = vec![
                "produce",
                "--config",
                config.to_str().unwrap(),
                "--events",
                "900",
                "--keys",
                "30",
                "--expected",
                file.to_str().unwrap(),
            ];
            if !prefix.is_empty() {
                args.extend(["--key-prefix", prefix]);
            }
            run_to_end(&args)
        })
        .await
        .unwrap();
        assert_eq!(status.code(), Some(0), "{stdout}{stderr}");
        for (key, version) in data::expected_state(&expected) {
            assert!(key.starts_with(prefix), "{key}");
            assert!(last.insert(key, version).is_none(), "a key of both runs");
        }
    }
    assert_eq!(last.len(), 60);
    let hw = kafka.high_watermarks(&setup.topic, PARTITIONS);
    let mut ordo = Ordo::start(&config, dir.path().join("ordo.log"));
    let client = db.client().await;
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &hw).await;
    let landed: BTreeMap<String, i64> = client
        .query(
            "SELECT stream, max(version) FROM events GROUP BY stream",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(landed, last);
    assert!(ordo.terminate(Duration::from_secs(30)).success());
}
