//! Avro through the Schema Registry, end to end: a topic whose producers
//! evolved their schema (v1, v2, v3 interleaved) lands with the right values
//! under reader schema v3, and under v1 as far as v1 can read; bad records
//! stop their partition naming the schema id; a registry outage holds the
//! partition until the registry is back; `ordo schema check` gates deploys.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use ordo::demo::orders;
use ordo_registry::{Registry, Running};
use support::data::{self, Produced};
use support::kafka::Kafka;
use support::ordo::{run_to_end, Ordo, Setup};
use support::postgres::TestDb;
use support::unique;

fn reader(version: usize) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("schemas/orders-v{version}.avsc"))
}

/// A registry holding orders v1..v3 under `<topic>-value` and `"string"` under `<topic>-key`.
struct Schemas {
    registry: Registry,
    server: Option<Running>,
    ids: [u32; 3],
    key_id: u32,
}

impl Schemas {
    fn start(topic: &str) -> Schemas {
        let registry = Registry::new();
        let server = registry.spawn("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut ids = [0; 3];
        for (i, text) in orders::SCHEMAS.iter().enumerate() {
            ids[i] = registry.register(&format!("{topic}-value"), text).unwrap();
        }
        let key_id = registry
            .register(&format!("{topic}-key"), r#""string""#)
            .unwrap();
        Schemas {
            registry,
            server: Some(server),
            ids,
            key_id,
        }
    }

    fn url(&self) -> String {
        self.server.as_ref().expect("registry running").url()
    }

    fn value(&self, writer: usize, stream: &str, seq: i64) -> Vec<u8> {
        orders::encode(writer, self.ids[writer - 1], stream, seq)
    }

    fn avro_key(&self, stream: &str) -> Vec<u8> {
        let schema = apache_avro::Schema::parse_str(r#""string""#).unwrap();
        let body = orders::datum(&schema, apache_avro::types::Value::String(stream.into()));
        orders::frame(self.key_id, &body)
    }
}

struct Run {
    kafka: Kafka,
    db: TestDb,
    setup: Setup,
    dir: tempfile::TempDir,
}

async fn start(partitions: i32) -> Run {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let setup = Setup {
        bootstrap: kafka.bootstrap(),
        group: unique("ordo"),
        topic: unique("orders"),
        db_url: db.url.clone(),
        mode: "event_store",
        table: "orders".into(),
        sequence: "field:meta.seq".into(),
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

/// Avro values with reader schema `version`, keys as `key_format`, registry at `url`.
fn avro(setup: &Setup, version: usize, key_format: &str, url: &str) -> Setup {
    let mut s = setup.clone();
    s.source = format!(
        "format = \"avro\"\nkey_format = \"{key_format}\"\n[[source.reader_schemas]]\ntopic = \"{}\"\nfile = \"{}\"",
        setup.topic,
        reader(version).display()
    );
    s.tail = format!("[schema_registry]\nurls = [\"{url}\"]\ntimeout_ms = 1000\n");
    s
}

async fn wait_offsets(r: &Run, ordo: &mut Ordo, want: &[i64]) {
    let client = r.db.client().await;
    data::wait_stored_offsets(&client, ordo, &r.setup.group, &r.setup.topic, want).await;
}

/// Rows as (stream, version, payload, offset), in applied order.
async fn rows(r: &Run) -> Vec<(String, i64, serde_json::Value, i64)> {
    r.db.client()
        .await
        .query(
            "SELECT stream, version, payload, \"offset\" FROM orders ORDER BY position",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect()
}

/// The writer version of event `seq` of stream number `i`: all three interleave.
fn writer_of(i: usize, seq: i64) -> usize {
    (i + seq as usize) % 3 + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evolved_schemas_land_with_reader_v3() {
    let r = start(2).await;
    let schemas = Schemas::start(&r.setup.topic);
    let (streams, seqs) = (40usize, 25i64);
    let mut records = Vec::new();
    for seq in 1..=seqs {
        for i in 0..streams {
            let stream = format!("s-{i:03}");
            let rec = Produced {
                partition: (i % 2) as i32,
                key: Some(schemas.avro_key(&stream)),
                payload: schemas.value(writer_of(i, seq), &stream, seq),
            };
            records.push(rec.clone());
            if seq % 10 == 0 {
                // The same event again, written by another producer version: a duplicate.
                let mut dup = rec;
                dup.payload = schemas.value(writer_of(i, seq + 1), &stream, seq);
                records.push(dup);
            }
        }
    }
    r.kafka.produce(&r.setup.topic, &records);
    let hw = r.kafka.high_watermarks(&r.setup.topic, 2);
    let config = avro(&r.setup, 3, "avro", &schemas.url()).write(r.dir.path(), "v3.toml");
    let mut ordo = Ordo::start(&config, r.dir.path().join("ordo.log"));
    wait_offsets(&r, &mut ordo, &hw).await;

    let landed = rows(&r).await;
    assert_eq!(landed.len(), streams * seqs as usize);
    let mut next = vec![1i64; streams];
    for (stream, version, payload, _) in &landed {
        let i: usize = stream[2..].parse().unwrap();
        assert_eq!(*version, next[i], "{stream}: versions in order");
        next[i] += 1;
        let expected = orders::expected(writer_of(i, *version), 3, stream, *version);
        assert_eq!(payload, &expected, "{stream} v{version}");
    }
    assert!(next.iter().all(|&n| n == seqs + 1));
    assert_eq!(ordo.terminate(Duration::from_secs(30)).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_v1_stops_at_v3_and_an_upgraded_reader_continues() {
    let mut r = start(1).await;
    r.setup.key = "field:meta.stream".into();
    let schemas = Schemas::start(&r.setup.topic);
    let mut records = Vec::new();
    // Offsets 0..30: five streams, v1 and v2 interleaved.
    for seq in 1..=6 {
        for i in 0..5 {
            let stream = format!("s-{i:03}");
            let writer = (i + seq as usize) % 2 + 1;
            records.push((writer, stream, seq));
        }
    }
    // Offset 30: a v3 record, which reader v1 cannot read (seq is a long, customer renamed).
    records.push((3, "s-000".into(), 7));
    // Offsets 31..35: more v1 records.
    for i in 1..5 {
        records.push((1, format!("s-{i:03}"), 7));
    }
    let produced: Vec<Produced> = records
        .iter()
        .map(|(w, s, q)| Produced {
            partition: 0,
            key: Some(s.as_bytes().to_vec()),
            payload: schemas.value(*w, s, *q),
        })
        .collect();
    r.kafka.produce(&r.setup.topic, &produced);

    let config = avro(&r.setup, 1, "string", &schemas.url()).write(r.dir.path(), "v1.toml");
    let mut ordo = Ordo::start(&config, r.dir.path().join("v1.log"));
    wait_offsets(&r, &mut ordo, &[30]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_offsets(&r, &mut ordo, &[30]).await;
    let landed = rows(&r).await;
    assert_eq!(landed.len(), 30);
    for (stream, version, payload, offset) in &landed {
        let (w, _, _) = &records[*offset as usize];
        assert_eq!(payload, &orders::expected(*w, 1, stream, *version));
        assert!(
            payload.get("note").is_none(),
            "v2's note is not in reader v1"
        );
    }
    let log = ordo.log_text();
    let id3 = schemas.ids[2];
    assert!(
        log.contains(&format!(
            "partition 0 offset 30: schema id {id3}: the reader schema"
        )),
        "{log}"
    );
    assert_eq!(ordo.terminate(Duration::from_secs(30)).code(), Some(0));

    // Deploy reader v3: the partition continues from the stopped record.
    let config = avro(&r.setup, 3, "string", &schemas.url()).write(r.dir.path(), "v3.toml");
    let mut ordo = Ordo::start(&config, r.dir.path().join("v3.log"));
    wait_offsets(&r, &mut ordo, &[35]).await;
    let landed = rows(&r).await;
    assert_eq!(landed.len(), 35);
    for (stream, version, payload, offset) in landed.iter().filter(|row| row.3 >= 30) {
        let (w, _, _) = &records[*offset as usize];
        assert_eq!(payload, &orders::expected(*w, 3, stream, *version));
    }
    assert_eq!(ordo.terminate(Duration::from_secs(30)).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_stop_their_partition_naming_the_schema_id() {
    let r = start(4).await;
    let schemas = Schemas::start(&r.setup.topic);
    let mut produced = Vec::new();
    for p in 0..4 {
        for seq in 1..=5 {
            let stream = format!("p{p}");
            let mut payload = schemas.value(2, &stream, seq);
            if seq == 3 {
                match p {
                    0 => payload[0] = 1,
                    1 => payload[1..5].copy_from_slice(&999u32.to_be_bytes()),
                    2 => payload.truncate(payload.len() - 3),
                    _ => {}
                }
            }
            produced.push(Produced {
                partition: p,
                key: Some(schemas.avro_key(&stream)),
                payload,
            });
        }
    }
    r.kafka.produce(&r.setup.topic, &produced);
    let config = avro(&r.setup, 3, "avro", &schemas.url()).write(r.dir.path(), "c.toml");
    let mut ordo = Ordo::start(&config, r.dir.path().join("ordo.log"));
    wait_offsets(&r, &mut ordo, &[2, 2, 2, 5]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_offsets(&r, &mut ordo, &[2, 2, 2, 5]).await;
    assert_eq!(rows(&r).await.len(), 2 + 2 + 2 + 5);
    let log = ordo.log_text();
    let id2 = schemas.ids[1];
    for expected in [
        "partition 0 offset 2: not in Confluent's Avro wire format: magic byte is 0x01".to_string(),
        "partition 1 offset 2: schema id 999 is not registered in the schema registry".to_string(),
        format!("partition 2 offset 2: schema id {id2}: the body does not match its writer schema"),
    ] {
        assert!(log.contains(&expected), "expected `{expected}` in:\n{log}");
    }
    assert_eq!(ordo.terminate(Duration::from_secs(30)).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_holds_new_schema_ids_until_it_returns() {
    let r = start(1).await;
    let mut schemas = Schemas::start(&r.setup.topic);
    let batch = |writer: usize, seqs: std::ops::RangeInclusive<i64>| -> Vec<Produced> {
        seqs.map(|seq| Produced {
            partition: 0,
            key: Some(b"s-000".to_vec()),
            payload: orders::encode(writer, schemas.ids[writer - 1], "s-000", seq),
        })
        .collect()
    };
    let first = batch(1, 1..=10);
    let second = batch(2, 11..=20);
    let port = support::postgres::free_port();
    let config = Setup {
        http: format!("127.0.0.1:{port}"),
        ..avro(&r.setup, 3, "string", &schemas.url())
    }
    .write(r.dir.path(), "c.toml");
    r.kafka.produce(&r.setup.topic, &first);
    let mut ordo = Ordo::start(&config, r.dir.path().join("ordo.log"));
    wait_offsets(&r, &mut ordo, &[10]).await;

    let server = schemas.server.take().unwrap();
    let addr = server.addr();
    server.stop();
    // Writer v2's id has not been seen yet: it cannot be fetched.
    r.kafka.produce(&r.setup.topic, &second);
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_offsets(&r, &mut ordo, &[10]).await;
    let log = ordo.log_text();
    let id2 = schemas.ids[1];
    assert!(
        log.contains(&format!(
            "partition 0 offset 10: schema id {id2}: the schema registry did not answer"
        )),
        "{log}"
    );
    // Each failed attempt is counted as a retry.
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let retries = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ordo_retries_total{operation=\"decode_record\"} "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(retries.is_some_and(|n| n >= 1.0), "{metrics}");
    // Back on the same address: the held records land, in order.
    schemas.server = Some(schemas.registry.spawn(addr).unwrap());
    wait_offsets(&r, &mut ordo, &[20]).await;
    let landed = rows(&r).await;
    let versions: Vec<i64> = landed.iter().map(|row| row.1).collect();
    assert_eq!(versions, (1..=20).collect::<Vec<_>>());
    for (stream, version, payload, _) in &landed {
        let writer = if *version <= 10 { 1 } else { 2 };
        assert_eq!(payload, &orders::expected(writer, 3, stream, *version));
    }
    assert_eq!(ordo.terminate(Duration::from_secs(30)).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_check_reports_each_version_and_gates_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("orders");
    let schemas = Schemas::start(&topic);
    let base = Setup {
        bootstrap: "127.0.0.1:9092".into(),
        group: "g".into(),
        topic: topic.clone(),
        db_url: "postgres://ordo@127.0.0.1:5432/x".into(),
        mode: "event_store",
        table: "orders".into(),
        sequence: "field:meta.seq".into(),
        ..Setup::default()
    };
    let check = |setup: &Setup, name: &str| {
        let path = setup.write(dir.path(), name);
        run_to_end(&["schema", "check", "--config", path.to_str().unwrap()])
    };

    let (status, stdout, stderr) = check(&avro(&base, 3, "string", &schemas.url()), "v3.toml");
    assert_eq!(status.code(), Some(0), "{stdout}{stderr}");
    for v in 1..=3 {
        let id = schemas.ids[v - 1];
        assert!(
            stdout.contains(&format!(
                "ok    topic {topic} subject {topic}-value v{v} (schema id {id})"
            )),
            "{stdout}"
        );
    }

    let (status, stdout, _) = check(&avro(&base, 1, "string", &schemas.url()), "v1.toml");
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("ok    topic {topic} subject {topic}-value v2")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "FAIL  topic {topic} subject {topic}-value v3 (schema id {})",
            schemas.ids[2]
        )),
        "{stdout}"
    );

    // RecordName: the subject is the record's full name, which nobody registered.
    let mut record_name = avro(&base, 3, "string", &schemas.url());
    record_name
        .tail
        .push_str("subject_name_strategy = \"record_name\"\n");
    let (status, stdout, _) = check(&record_name, "rn.toml");
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("subject shop.Order"), "{stdout}");
    assert!(stdout.contains("40401"), "{stdout}");
    schemas
        .registry
        .register("shop.Order", orders::SCHEMAS[2])
        .unwrap();
    let (status, stdout, _) = check(&record_name, "rn.toml");
    assert_eq!(status.code(), Some(0), "{stdout}");

    // JSON lines for machines.
    let path = avro(&base, 1, "string", &schemas.url()).write(dir.path(), "j.toml");
    let (_, stdout, _) = run_to_end(&[
        "schema",
        "check",
        "--json",
        "--config",
        path.to_str().unwrap(),
    ]);
    let verdicts: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(verdicts.len(), 3);
    assert!(verdicts[2]["problem"].is_string());

    // The registry down: every subject fails, the command says so.
    let url = schemas.url();
    drop(schemas);
    let (status, stdout, _) = check(&avro(&base, 3, "string", &url), "down.toml");
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("cannot list the subject's versions"),
        "{stdout}"
    );
}

#[test]
fn avro_config_errors_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = Setup {
        bootstrap: "127.0.0.1:9092".into(),
        group: "g".into(),
        topic: "orders".into(),
        db_url: "postgres://ordo@127.0.0.1:5432/x".into(),
        mode: "event_store",
        table: "orders".into(),
        sequence: "field:meta.seq".into(),
        ..Setup::default()
    };
    let good = avro(&base, 3, "string", "http://127.0.0.1:8081");
    let broken = dir.path().join("broken.avsc");
    std::fs::write(
        &broken,
        r#"{"type":"record","name":"X","fields":[{"name":"a"}]}"#,
    )
    .unwrap();
    let cases = [
        (
            good.toml().replace("[schema_registry]", "[registry_typo]"),
            "registry_typo".to_string(),
        ),
        (
            good.toml()
                .replace(&reader(3).display().to_string(), "/nowhere/orders.avsc"),
            "key `source.reader_schemas[0].file`: cannot read /nowhere/orders.avsc".to_string(),
        ),
        (
            good.toml()
                .replace(&reader(3).display().to_string(), broken.to_str().unwrap()),
            format!(
                "key `source.reader_schemas[0].file`: {} is not a valid Avro schema",
                broken.display()
            ),
        ),
        (
            good.toml()
                .replace("topic = \"orders\"\nfile", "topic = \"other\"\nfile"),
            "key `source.reader_schemas[0].topic`: `other` is not one of source.topics".to_string(),
        ),
        (
            good.toml().replace(
                "urls = [\"http://127.0.0.1:8081\"]",
                "urls = [\"127.0.0.1:8081\"]",
            ),
            "key `schema_registry.urls`: `127.0.0.1:8081` is not an http:// or https:// URL"
                .to_string(),
        ),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let (status, _, stderr) = run_to_end(&["check", "--config", path.to_str().unwrap()]);
        assert_eq!(status.code(), Some(2), "{expected}: {stderr}");
        assert!(
            stderr.contains(expected.as_str()),
            "expected `{expected}` in: {stderr}"
        );
        assert!(
            stderr.contains(path.to_str().unwrap()),
            "the config file in: {stderr}"
        );
    }
    // A relative reader schema path is taken from the config file's directory.
    std::fs::create_dir_all(dir.path().join("schemas")).unwrap();
    std::fs::copy(reader(3), dir.path().join("schemas/orders.avsc")).unwrap();
    let relative = good
        .toml()
        .replace(&reader(3).display().to_string(), "schemas/orders.avsc");
    let path = dir.path().join("relative.toml");
    std::fs::write(&path, relative).unwrap();
    let (status, stdout, stderr) =
        run_to_end(&["schema", "check", "--config", path.to_str().unwrap()]);
    // Loads (the registry at :8081 is not there, so the check itself fails with exit 1, not 2).
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
}

/// Runs the Confluent-client producer (`tests/producers/confluent_avro.py`) with `lines` on stdin.
fn produce_with_confluent_client(bootstrap: &str, registry: &str, topic: &str, lines: &str) {
    use std::io::Write;
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/producers/confluent_avro.py");
    let mut cmd = std::process::Command::new(support::python());
    cmd.arg(&script).args([
        "--bootstrap",
        bootstrap,
        "--registry",
        registry,
        "--topic",
        topic,
    ]);
    for v in 1..=3 {
        cmd.arg("--schema").arg(reader(v));
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("Python is required for this test (scripts/setup.sh test)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Confluent-client producer failed (needs `pip install -r tests/producers/requirements.txt`):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_from_confluents_own_serializer_land() {
    let r = start(2).await;
    // An empty registry: Confluent's serializer registers v1, v2 and v3 itself.
    let registry = Registry::new();
    let server = registry.spawn("127.0.0.1:0".parse().unwrap()).unwrap();
    let (streams, seqs) = (12usize, 15i64);
    let mut lines = String::new();
    for seq in 1..=seqs {
        for i in 0..streams {
            let stream = format!("s-{i:03}");
            let writer = writer_of(i, seq);
            let line = serde_json::json!({
                "writer": writer,
                "key": stream,
                "partition": i % 2,
                "value": orders::expected(writer, writer, &stream, seq),
            });
            lines.push_str(&format!("{line}\n"));
        }
    }
    produce_with_confluent_client(&r.kafka.bootstrap(), &server.url(), &r.setup.topic, &lines);
    let subject = format!("{}-value", r.setup.topic);
    let http = reqwest::Client::new();
    let versions: Vec<u32> = http
        .get(format!("{}/subjects/{subject}/versions", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        versions,
        vec![1, 2, 3],
        "the serializer registered each writer schema"
    );

    let hw = r.kafka.high_watermarks(&r.setup.topic, 2);
    let config = avro(&r.setup, 3, "string", &server.url()).write(r.dir.path(), "v3.toml");
    let mut ordo = Ordo::start(&config, r.dir.path().join("ordo.log"));
    wait_offsets(&r, &mut ordo, &hw).await;
    let landed = rows(&r).await;
    assert_eq!(landed.len(), streams * seqs as usize);
    for (stream, version, payload, _) in &landed {
        let i: usize = stream[2..].parse().unwrap();
        let expected = orders::expected(writer_of(i, *version), 3, stream, *version);
        assert_eq!(payload, &expected, "{stream} v{version}");
    }
    assert_eq!(ordo.terminate(Duration::from_secs(30)).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replayed_after_the_reader_is_fixed_land_once() {
    let mut r = start(1).await;
    r.setup.key = "field:meta.stream".into();
    r.setup.dead_letter = true;
    let dlq = format!("{}.dlq", r.setup.topic);
    r.kafka.create_topic(&dlq, 1);
    let schemas = Schemas::start(&r.setup.topic);
    let mut produced = Vec::new();
    for seq in 1..=5 {
        for i in 0..10 {
            let stream = format!("s-{i:03}");
            produced.push(Produced {
                partition: 0,
                key: Some(stream.clone().into_bytes()),
                payload: schemas.value(1 + (i + seq as usize) % 2, &stream, seq),
            });
        }
    }
    // Written with v3, which reader v1 cannot read: dead letters until the reader is fixed.
    for i in 0..5 {
        let stream = format!("s-{i:03}");
        produced.push(Produced {
            partition: 0,
            key: Some(stream.clone().into_bytes()),
            payload: schemas.value(3, &stream, 6),
        });
    }
    // Never decodable.
    produced.push(Produced {
        partition: 0,
        key: Some(b"junk".to_vec()),
        payload: b"\x07not avro".to_vec(),
    });
    r.kafka.produce(&r.setup.topic, &produced);
    let v1 = avro(&r.setup, 1, "string", &schemas.url()).write(r.dir.path(), "v1.toml");
    let v3 = avro(&r.setup, 3, "string", &schemas.url()).write(r.dir.path(), "v3.toml");
    let cli = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_to_end(&args)
        })
        .await
        .unwrap()
    };
    let dlq_cmd = |config: &PathBuf, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = vec!["dlq".into()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a.extend(["--config".into(), config.display().to_string()]);
        a
    };

    let mut ordo = Ordo::start(&v1, r.dir.path().join("v1.log"));
    wait_offsets(&r, &mut ordo, &[56]).await;
    assert_eq!(rows(&r).await.len(), 50);
    assert_eq!(ordo.terminate(Duration::from_secs(30)).code(), Some(0));

    // Inspect: all six, as JSON lines; filtered by error text.
    let (status, stdout, stderr) = cli(dlq_cmd(&v1, &["inspect", "--json"])).await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    let letters: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 6, "{stdout}");
    let offsets: Vec<i64> = letters
        .iter()
        .map(|l| l["source_offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, vec![50, 51, 52, 53, 54, 55]);
    assert!(letters[0]["error_message"]
        .as_str()
        .unwrap()
        .contains("cannot read this writer schema"));
    let (_, stdout, _) = cli(dlq_cmd(&v1, &["inspect", "--error-contains", "magic byte"])).await;
    assert_eq!(
        stdout.lines().count(),
        2,
        "a header and one letter:\n{stdout}"
    );
    assert!(
        stdout.contains(&format!("{}/0/55", r.setup.topic)),
        "{stdout}"
    );

    // Fix the cause (deploy reader v3), then replay: a dry run first.
    let mut ordo = Ordo::start(&v3, r.dir.path().join("v3.log"));
    let (status, stdout, stderr) = cli(dlq_cmd(&v3, &["replay", "--dry-run"])).await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("would replay 6"), "{stdout}");
    assert_eq!(r.kafka.high_watermarks(&r.setup.topic, 1), vec![56]);

    let (status, stdout, stderr) = cli(dlq_cmd(&v3, &["replay"])).await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("replayed 6"), "{stdout}");
    wait_offsets(&r, &mut ordo, &[62]).await;
    let landed = rows(&r).await;
    assert_eq!(landed.len(), 55);
    for (stream, version, payload, _) in landed.iter().filter(|row| row.1 == 6) {
        assert_eq!(payload, &orders::expected(3, 3, stream, *version));
    }
    // The junk record failed again: a second dead letter, counting one replay.
    let letters = r.kafka.read_all(&dlq, 7);
    assert_eq!(letters.len(), 7);

    // The same replay group resumes after what it did; the loop guard holds the junk.
    let (_, stdout, _) = cli(dlq_cmd(&v3, &["replay", "--max-replays", "1"])).await;
    assert!(stdout.contains("scanned 1, replayed 0"), "{stdout}");
    assert!(
        stdout.contains("left alone by the loop guard 1"),
        "{stdout}"
    );

    // Replaying everything again (a new group) duplicates no effect.
    let (_, stdout, _) = cli(dlq_cmd(
        &v3,
        &["replay", "--group", "again", "--max-replays", "5"],
    ))
    .await;
    assert!(stdout.contains("scanned 7, replayed 7"), "{stdout}");
    wait_offsets(&r, &mut ordo, &[69]).await;
    assert_eq!(rows(&r).await.len(), 55);
    assert_eq!(ordo.terminate(Duration::from_secs(30)).code(), Some(0));
}
