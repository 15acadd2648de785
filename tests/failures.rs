//! Bad input gets a clear error naming the thing, and nothing consumed is lost:
//! bad config, unreachable broker, unreachable database, malformed payloads.

mod support;

use std::time::Duration;

use support::data::{self, Produced};
use support::kafka::Kafka;
use support::ordo::{run_to_end, wait_not_ready_with, Ordo, Setup};
use support::postgres::{free_port, TestDb};
use support::{unique, Deadline};

fn setup(bootstrap: String, db_url: String) -> Setup {
    Setup {
        bootstrap,
        group: unique("ordo"),
        topic: unique("events"),
        db_url,
        mode: "event_store",
        table: "events".into(),
        ordering: String::new(),
        ..Setup::default()
    }
}

#[test]
fn bad_config_names_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = setup(
        "127.0.0.1:9092".into(),
        "postgres://ordo@127.0.0.1:5432/x".into(),
    );
    let cases = [
        (
            good.toml()
                .replace("table = \"events\"", "tabel = \"events\""),
            "sink.postgres.tabel",
        ),
        (
            good.toml()
                .replace("mode = \"event_store\"", "mode = \"ledger\""),
            "sink.postgres.mode",
        ),
        (
            good.toml().replace("sequence = \"field:version\"", ""),
            "ordering.sequence",
        ),
        (
            good.toml()
                .replace("batch_max_events = 500", "batch_max_events = -3"),
            "sink.batch_max_events",
        ),
        (
            good.toml().replace(
                "\"session.timeout.ms\" = \"6000\"",
                "\"session.timeout.ms\" = \"soon\"",
            ),
            "kafka.session.timeout.ms",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let (status, _, stderr) = run_to_end(&["check", "--config", path.to_str().unwrap()]);
        assert_eq!(status.code(), Some(2), "{key}: {stderr}");
        assert!(stderr.contains(key), "expected `{key}` in: {stderr}");
        assert!(
            stderr.contains(path.to_str().unwrap()),
            "expected the file in: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_and_database_are_named() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let dead_kafka = format!("127.0.0.1:{}", free_port());
    let dead_pg_port = free_port();
    let dead_pg = format!("postgres://ordo@127.0.0.1:{dead_pg_port}/ordo");

    let s = setup(dead_kafka.clone(), db.url.clone());
    let path = s.write(dir.path(), "no-kafka.toml");
    let (status, stdout, stderr) = run_to_end(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1));
    assert!(
        stdout.contains(&format!("FAIL  Kafka at {dead_kafka}")),
        "{stdout}"
    );
    // What librdkafka said is in the report's line, not logged around it.
    assert!(stdout.contains("librdkafka: "), "{stdout}");
    assert!(
        !stdout.contains("\"target\":\"librdkafka\"")
            && !stderr.contains("\"target\":\"librdkafka\""),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("ok    PostgreSQL at 127.0.0.1:"),
        "{stdout}"
    );
    // `ordo run` waits for Kafka, not ready and saying why; a stop ends it.
    let s = Setup {
        http: format!("127.0.0.1:{}", free_port()),
        ..s
    };
    let path = s.write(dir.path(), "no-kafka-run.toml");
    let mut ordo = Ordo::start(&path, dir.path().join("no-kafka.log"));
    wait_not_ready_with(
        &mut ordo,
        &s.http,
        &[
            "waits for kafka",
            &format!("cannot reach Kafka at {dead_kafka}"),
        ],
    )
    .await;
    assert!(ordo.terminate(Duration::from_secs(30)).success());

    let kafka = Kafka::start();
    let s = setup(kafka.bootstrap(), dead_pg);
    kafka.create_topic(&s.topic, 2);
    let path = s.write(dir.path(), "no-pg.toml");
    let (status, stdout, _) = run_to_end(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1));
    assert!(stdout.contains("ok    Kafka at"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{dead_pg_port}/ordo"
        )),
        "{stdout}"
    );
    let s = Setup {
        http: format!("127.0.0.1:{}", free_port()),
        ..s
    };
    let path = s.write(dir.path(), "no-pg-run.toml");
    let mut ordo = Ordo::start(&path, dir.path().join("no-pg.log"));
    wait_not_ready_with(
        &mut ordo,
        &s.http,
        &[
            "waits for postgres",
            &format!("cannot connect to PostgreSQL at 127.0.0.1:{dead_pg_port}/ordo"),
        ],
    )
    .await;
    assert!(ordo.terminate(Duration::from_secs(30)).success());

    // A topic that does not exist is named too.
    let mut s = setup(kafka.bootstrap(), db.url.clone());
    s.topic = "no-such-topic".into();
    let path = s.write(dir.path(), "no-topic.toml");
    let (status, stdout, _) = run_to_end(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1));
    assert!(
        stdout.contains("topic `no-such-topic` does not exist"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payload_stops_only_its_partition_and_loses_nothing() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let s = setup(kafka.bootstrap(), db.url.clone());
    kafka.create_topic(&s.topic, 2);
    // Partition 0: versions 1..=50 of k0 with a malformed record at offset 20;
    // partition 1: versions 1..=50 of k1, all good.
    let mut records = vec![];
    for v in 1..=50 {
        for (p, key) in [(0, "k0"), (1, "k1")] {
            if p == 0 && v == 21 {
                records.push(Produced {
                    partition: 0,
                    key: Some(b"k0".to_vec()),
                    payload: b"{\"id\": \"k0\", \"version\": ".to_vec(),
                });
            }
            records.push(Produced {
                partition: p,
                key: Some(key.as_bytes().to_vec()),
                payload: data::payload(key, v),
            });
        }
    }
    kafka.produce(&s.topic, &records);
    let hw = kafka.high_watermarks(&s.topic, 2);
    assert_eq!(hw, vec![51, 50]);
    let dir = tempfile::tempdir().unwrap();
    let path = s.write(dir.path(), "ordo.toml");
    let mut ordo = Ordo::start(&path, dir.path().join("ordo.log"));
    let client = db.client().await;
    let deadline = Deadline::new(
        "partition 1 drained and partition 0 stopped at 20",
        Duration::from_secs(60),
    );
    loop {
        assert!(ordo.running(), "{}", ordo.log_text());
        if data::stored_offsets(&client, &s.group, &s.topic).await == vec![20, 50] {
            break;
        }
        deadline.tick().await;
    }
    // The partition stays stopped in front of the bad record.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        data::stored_offsets(&client, &s.group, &s.topic).await,
        vec![20, 50]
    );
    let per_key: Vec<(String, i64)> = client
        .query(
            "SELECT stream, max(version) FROM events GROUP BY stream ORDER BY stream",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        per_key,
        vec![("k0".to_string(), 20), ("k1".to_string(), 50)]
    );
    let log = ordo.log_text();
    assert!(
        log.contains(&format!(
            "topic {} partition 0 offset 20: payload is not valid JSON",
            s.topic
        )),
        "{log}"
    );
    assert!(ordo.terminate(Duration::from_secs(30)).success());
    // After a restart the partition stops at the same place: nothing skipped.
    let mut ordo = Ordo::start(&path, dir.path().join("ordo2.log"));
    let deadline = Deadline::new(
        "the restarted ordo to stop at the bad record",
        Duration::from_secs(60),
    );
    while !ordo
        .log_text()
        .contains("partition 0 offset 20: payload is not valid JSON")
    {
        deadline.tick().await;
    }
    assert_eq!(
        data::stored_offsets(&client, &s.group, &s.topic).await,
        vec![20, 50]
    );
    assert!(ordo.terminate(Duration::from_secs(30)).success());
}

/// `ordo check` finds what `ordo run` would trip on at start, and `run`
/// needs no privilege it does not use: a role given `USAGE, CREATE` on an
/// existing schema (and not `CREATE` on the database) passes both and lands
/// events; the same role without `CREATE` on the schema fails `check`,
/// naming the grant and the route that needs it, as `run` would fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_a_missing_grant_that_run_needs_and_run_needs_no_other() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = db.client().await;
    let role = unique("newbie");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; CREATE SCHEMA app; GRANT USAGE, CREATE ON SCHEMA app TO {role}; \
             REVOKE CREATE ON DATABASE {} FROM PUBLIC",
            db.name
        ))
        .await
        .unwrap();
    let url = db
        .url
        .replacen("postgres://ordo@", &format!("postgres://{role}@"), 1);
    let s = Setup {
        http: format!("127.0.0.1:{}", free_port()),
        ..setup(kafka.bootstrap(), url)
    };
    kafka.create_topic(&s.topic, 1);
    let write = |s: &Setup, name: &str, table: &str| {
        let path = s.write(dir.path(), name);
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "table = \"events\"",
            &format!("table = \"{table}\"\nschema = \"app\""),
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let check = |path: &std::path::Path| run_to_end(&["check", "--config", path.to_str().unwrap()]);

    let path = write(&s, "granted.toml", "events");
    let (status, stdout, stderr) = check(&path);
    assert_eq!(status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("ok    grants"), "{stdout}");
    kafka.produce(
        &s.topic,
        &(1..=3)
            .map(|v| Produced {
                partition: 0,
                key: Some(b"a".to_vec()),
                payload: data::payload("a", v),
            })
            .collect::<Vec<_>>(),
    );
    let mut ordo = Ordo::start(&path, dir.path().join("granted.log"));
    let client = db.client().await;
    let deadline = Deadline::new("events landed in app.events", Duration::from_secs(60));
    loop {
        assert!(ordo.running(), "{}", ordo.log_text());
        let rows: i64 = client
            .query_one("SELECT count(*) FROM app.events", &[])
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        if rows == 3 {
            break;
        }
        deadline.tick().await;
    }
    assert_eq!(ordo.terminate(Duration::from_secs(30)).code(), Some(0));

    // Without CREATE on the schema, a new route table cannot be created.
    admin
        .batch_execute(&format!("REVOKE CREATE ON SCHEMA app FROM {role}"))
        .await
        .unwrap();
    let path = write(&s, "revoked.toml", "events_v2");
    let (status, stdout, _) = check(&path);
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL  grants")
            && stdout.contains(&format!("role {role} lacks CREATE ON SCHEMA"))
            && stdout.contains("route default creates table app.events_v2 in it"),
        "{stdout}"
    );
    // The table it has keeps passing: nothing to create there.
    let path = write(&s, "kept.toml", "events");
    let (status, stdout, _) = check(&path);
    assert_eq!(status.code(), Some(0), "{stdout}");

    // A table of the wrong shape: check fails on the route, run refuses it
    // at start, each saying why once.
    admin
        .batch_execute(&format!(
            "CREATE TABLE app.wrong (id int PRIMARY KEY, data jsonb); GRANT ALL ON app.wrong TO {role}"
        ))
        .await
        .unwrap();
    let path = write(&s, "wrong.toml", "wrong");
    let (status, stdout, _) = check(&path);
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "FAIL  route default -> table app.wrong (event_store): missing column(s) stream"
        ),
        "{stdout}"
    );
    let (status, _, stderr) = run_to_end(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.matches("missing column(s)").count(), 1, "{stderr}");
    assert_eq!(
        stderr.matches("does not fit sink mode").count(),
        1,
        "{stderr}"
    );

    // A migration of Ordo's own tables left to apply (as after an upgrade)
    // needs the owner of the tables it alters, and of no other.
    admin
        .batch_execute(
            "DELETE FROM app.ordo_schema_migrations WHERE version = 8; \
             ALTER TABLE app.ordo_offsets OWNER TO ordo; ALTER TABLE app.ordo_gaps OWNER TO ordo",
        )
        .await
        .unwrap();
    let (status, stdout, _) = check(&write(&s, "upgrade.toml", "events"));
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("role {role} lacks ownership of app.ordo_offsets")),
        "{stdout}"
    );
    assert!(!stdout.contains("ownership of app.ordo_gaps"), "{stdout}");
}

/// A role that must give a password: without one, `check` and `run` say
/// the server asks for one and where Ordo takes it from (run exits 2 at
/// once, not waiting "until it is back"); `PGPASSWORD` is honoured and
/// shown as the source; a wrong one is an authentication failure naming the
/// key it came from, and the password itself is never printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_is_named_as_one_with_where_the_password_came_from() {
    use support::ordo::run_to_end_with_env;
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let admin = db.client().await;
    let role = unique("pw");
    // Members of `ordo_password_login` log in with a password.
    let hba = support::postgres::cluster().dir.join("data/pg_hba.conf");
    let text = std::fs::read_to_string(&hba).unwrap();
    if !text.contains("+ordo_password_login") {
        std::fs::write(
            &hba,
            format!("host all +ordo_password_login 127.0.0.1/32 scram-sha-256\n{text}"),
        )
        .unwrap();
    }
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE ordo_password_login; EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
             CREATE ROLE {role} LOGIN PASSWORD 'right-horse' IN ROLE ordo_password_login; \
             GRANT CREATE ON DATABASE {} TO {role}; GRANT CREATE ON SCHEMA public TO {role}; \
             SELECT pg_reload_conf();",
            db.name
        ))
        .await
        .unwrap();
    let url = db
        .url
        .replacen("postgres://ordo@", &format!("postgres://{role}@"), 1);
    // The reloaded rules are in force once a login without a password is refused.
    let deadline = Deadline::new("pg_hba.conf reloaded", Duration::from_secs(30));
    while tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .is_ok()
    {
        deadline.tick().await;
    }
    let s = setup(kafka.bootstrap(), url);
    kafka.create_topic(&s.topic, 1);
    let path = s.write(dir.path(), "ordo.toml");
    let config = path.to_str().unwrap();

    let (status, stdout, _) = run_to_end_with_env(&["check", "--config", config], &[]);
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("refused to authenticate user {role}"))
            && stdout.contains("the server asks for a password and none is set")
            && stdout.contains("sink.postgres.password_file")
            && stdout.contains("PGPASSWORD"),
        "{stdout}"
    );
    let started = std::time::Instant::now();
    let (status, _, stderr) = run_to_end_with_env(&["run", "--config", config], &[]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        stderr.contains("the server asks for a password and none is set")
            && !stderr.contains("until it is back"),
        "{stderr}"
    );

    let (status, stdout, _) = run_to_end_with_env(
        &["check", "--config", config],
        &[("PGPASSWORD", "right-horse")],
    );
    assert_eq!(status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!("user {role}, password from PGPASSWORD")),
        "{stdout}"
    );

    let wrong = s.write(dir.path(), "wrong.toml");
    let text = std::fs::read_to_string(&wrong).unwrap().replacen(
        "[sink.postgres]\n",
        "[sink.postgres]\npassword = \"wrong-horse\"\n",
        1,
    );
    std::fs::write(&wrong, text).unwrap();
    let (status, stdout, stderr) = run_to_end_with_env(
        &["check", "--config", wrong.to_str().unwrap()],
        &[("PGPASSWORD", "right-horse")],
    );
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("28P01")
            && stdout.contains("the password came from sink.postgres.password"),
        "{stdout}"
    );
    assert!(!stdout.contains("wrong-horse") && !stderr.contains("wrong-horse"));
}
