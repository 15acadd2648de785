//! Errors that explain themselves, as a user meets them through the binary:
//! a bad value names the valid ones, a misspelt variable is blamed on the
//! variable, a missing section is named, PostgreSQL's reason is shown, the
//! last line is JSON when logs are, librdkafka does not repeat itself, a
//! closed pipe ends a command quietly, and `ordo check` reaches the schema
//! registry.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use ordo_registry::Registry;
use support::data::Produced;
use support::kafka::Kafka;
use support::ordo::{binary, run_to_end, Ordo, Setup};
use support::postgres::TestDb;

fn check(dir: &std::path::Path, name: &str, toml: &str, env: &[(&str, &str)]) -> (i32, String) {
    let path = dir.join(name);
    std::fs::write(&path, toml).unwrap();
    let out = Command::new(binary())
        .args(["check", "--config", path.to_str().unwrap()])
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_and_postgresql_errors_name_the_value_the_choices_and_the_reason() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let s = Setup::event_store(kafka.bootstrap(), db.url.clone(), "events");
    kafka.create_topic(&s.topic, 1);
    let good = s.toml();

    let (code, out) = check(
        dir.path(),
        "enum.toml",
        &good.replace("mode = \"event_store\"", "mode = \"eventstore\""),
        &[],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("key `sink.postgres.mode`: `eventstore` is not a valid value; valid values: `event_store`, `projection`"),
        "{out}"
    );

    let (code, out) = check(dir.path(), "env.toml", &good, &[("ORDO_SINKK__TABLE", "x")]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("environment variable ORDO_SINKK__TABLE: key `sinkk`"),
        "{out}"
    );
    assert!(!out.contains("config file"), "{out}");

    let start = good.find("[kafka]").unwrap();
    let end = start + 1 + good[start + 1..].find("\n[").unwrap();
    let without_kafka = format!("{}{}", &good[..start], &good[end + 1..]);
    let (code, out) = check(dir.path(), "no-kafka.toml", &without_kafka, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("key `kafka`: required, but not set"), "{out}");

    // PostgreSQL's own reason: a database and a user that do not exist.
    let (base, name) = db.url.rsplit_once('/').unwrap();
    let cases = [
        (
            good.replace(&db.url, &format!("{base}/no_such_db")),
            "database \"no_such_db\" does not exist",
        ),
        (
            good.replace(&db.url, &db.url.replace("ordo@", "no_such_user@")),
            "no_such_user",
        ),
    ];
    assert!(!name.is_empty());
    for (i, (toml, reason)) in cases.iter().enumerate() {
        let (code, out) = check(dir.path(), &format!("pg-{i}.toml"), toml, &[]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains(reason), "{reason} in: {out}");
        assert!(!out.contains("db error"), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_json_logs_every_line_is_json_and_librdkafka_does_not_repeat_itself() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    // A table in the way, with another shape: retrying cannot fix it.
    db.client()
        .await
        .batch_execute("CREATE TABLE events (something integer)")
        .await
        .unwrap();
    let s = Setup::event_store("127.0.0.1:1".into(), db.url.clone(), "events");
    let path = dir.path().join("json.toml");
    std::fs::write(
        &path,
        s.toml().replace("format = \"text\"", "format = \"json\""),
    )
    .unwrap();
    let (status, stdout, stderr) = run_to_end(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    // Every line is JSON, the one saying why Ordo stops too.
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "ERROR"
            && l["message"] == "Ordo stops"
            && l["error"].as_str().is_some_and(|e| e.contains("events"))),
        "{stderr}"
    );

    // An unreachable broker for about 12 s: each distinct librdkafka line once.
    let s = Setup {
        http: String::new(),
        ..Setup::event_store("127.0.0.1:1".into(), db.url.clone(), "fresh")
    };
    let path = s.write(dir.path(), "unreachable.toml");
    let mut ordo = Ordo::start(&path, dir.path().join("unreachable.log"));
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(ordo.terminate(Duration::from_secs(30)).success());
    let log = ordo.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("librdkafka")).collect();
    assert!(!lines.is_empty(), "{log}");
    assert!(lines.len() <= 6, "{} librdkafka lines:\n{log}", lines.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_piped_into_head_ends_quietly() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let s = Setup {
        dead_letter: true,
        ..Setup::event_store(kafka.bootstrap(), db.url.clone(), "events")
    };
    let dlq = format!("{}.dlq", s.topic);
    kafka.create_topic(&s.topic, 1);
    kafka.create_topic(&dlq, 1);
    let letters: Vec<Produced> = (0..2000)
        .map(|i| Produced {
            partition: 0,
            key: Some(format!("k{i}").into_bytes()),
            payload: b"{ not json".to_vec(),
        })
        .collect();
    kafka.produce(&dlq, &letters);
    let path = s.write(dir.path(), "ordo.toml");
    let mut child = Command::new(binary())
        .args(["dlq", "inspect", "--config", path.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // `head -1`: the reader is gone after one line.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!first.is_empty());
    assert!(!stderr.contains("panicked"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.success() || out.status.signal() == Some(libc_sigpipe()),
        "{:?}: {stderr}",
        out.status
    );
}

fn libc_sigpipe() -> i32 {
    nix::sys::signal::Signal::SIGPIPE as i32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordo_check_reaches_the_schema_registry_and_the_readers_subject() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::new();
    let server = registry.spawn("127.0.0.1:0".parse().unwrap()).unwrap();
    let base = Setup::event_store(kafka.bootstrap(), db.url.clone(), "events");
    kafka.create_topic(&base.topic, 1);
    let reader = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/orders-v3.avsc");
    let with_registry = |url: &str| Setup {
        source: format!(
            "format = \"avro\"\n[[source.reader_schemas]]\ntopic = \"{}\"\nfile = \"{}\"",
            base.topic,
            reader.display()
        ),
        sequence: "field:meta.seq".into(),
        tail: format!("[schema_registry]\nurls = [\"{url}\"]\n"),
        ..base.clone()
    };
    let subject = format!("{}-value", base.topic);

    // Nothing registered yet: the subject is named.
    let (code, out) = check(
        dir.path(),
        "a.toml",
        &with_registry(&server.url()).toml(),
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "FAIL  Schema Registry at {}: subject {subject}",
            server.url()
        )),
        "{out}"
    );
    // Registered: reached, and the latest version is readable.
    for text in ordo::demo::orders::SCHEMAS {
        registry.register(&subject, text).unwrap();
    }
    let (code, out) = check(
        dir.path(),
        "b.toml",
        &with_registry(&server.url()).toml(),
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "ok    Schema Registry at {}: subject {subject}, latest version 3",
            server.url()
        )),
        "{out}"
    );
    // A wrong URL fails at `ordo check`, not at the first record.
    let dead = format!("http://127.0.0.1:{}", support::postgres::free_port());
    let (code, out) = check(dir.path(), "c.toml", &with_registry(&dead).toml(), &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("FAIL  Schema Registry at {dead}")),
        "{out}"
    );
}
