//! Production connectivity: Kafka over TLS with the broker's certificate
//! verified, SASL/SCRAM-SHA-512 over TLS (a wrong password refused, the right
//! one landing events, dead letters written and inspected through it), every
//! compression codec an independent producer uses, a record no codec can
//! read, PostgreSQL over TLS honouring sslmode, and no secret in any output.
//!
//! The mock cluster speaks neither TLS nor SASL: a front (tests/support/tls.rs)
//! terminates TLS and authenticates SCRAM before it, and the broker
//! advertises the front, so every client connection goes through it.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::data::{self, Dataset, Produced};
use support::kafka::{Kafka, MockCluster};
use support::ordo::{run_to_end, Ordo, Setup};
use support::postgres::{cluster, free_port, TestDb};
use support::tls::{Ca, KafkaFront, Scram};
use support::{unique, Deadline};

/// A one-broker mock cluster holding `ds` in a topic, then put behind a
/// front: (cluster, front, topic, high watermarks, the CA's file).
struct Secured {
    _kafka: Kafka,
    front: KafkaFront,
    topic: String,
    hw: Vec<i64>,
    ca_file: PathBuf,
}

async fn secured(dir: &Path, ds: &Dataset, extra: &[Produced], scram: Option<Scram>) -> Secured {
    let kafka = Kafka::Mock(MockCluster::start(1).expect("mock cluster"));
    let topic = unique("secure");
    kafka.create_topic(&topic, ds.partitions);
    kafka.create_topic(&format!("{topic}.dlq"), 1);
    kafka.produce(&topic, &ds.records);
    kafka.produce(&topic, extra);
    let hw = kafka.high_watermarks(&topic, ds.partitions);
    let upstream: SocketAddr = kafka.bootstrap().parse().expect("broker address");
    let ca = Ca::new();
    let cert = ca.issue(&["localhost"]);
    let ca_file = dir.join("kafka-ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let front = KafkaFront::start(upstream, &cert, scram).await;
    // From now on clients reach the broker only through the front.
    if let Kafka::Mock(m) = &kafka {
        m.set_advertised(1, "localhost", front.port).unwrap();
    }
    Secured {
        _kafka: kafka,
        front,
        topic,
        hw,
        ca_file,
    }
}

fn setup_for(s: &Secured, db: &TestDb, kafka: String) -> Setup {
    Setup {
        bootstrap: format!("localhost:{}", s.front.port),
        topic: s.topic.clone(),
        kafka,
        ..Setup::event_store(String::new(), db.url.clone(), "events")
    }
}

async fn lands_exactly(setup: &Setup, dir: &Path, db: &TestDb, ds: &Dataset, hw: &[i64]) -> Ordo {
    let config = setup.write(dir, &format!("{}.toml", unique("ordo")));
    let mut ordo = Ordo::start(&config, config.with_extension("log"));
    let client = db.client().await;
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, hw).await;
    data::assert_event_store_exact(&client, "events", ds, &setup.group, &setup.topic, hw).await;
    ordo
}

fn check(config: &Path) -> (Option<i32>, String) {
    let (status, stdout, stderr) = run_to_end(&["check", "--config", config.to_str().unwrap()]);
    (status.code(), format!("{stdout}{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_over_tls_verifies_the_broker_and_lands_every_event() {
    let dir = tempfile::tempdir().unwrap();
    let ds = data::generate(3000, 3, 30, 0.05, 10, 0.02, 11);
    let s = secured(dir.path(), &ds, &[], None).await;
    let db = TestDb::new().await;

    // Without the broker's CA its certificate cannot be verified.
    let untrusted = setup_for(&s, &db, "\"security.protocol\" = \"SSL\"".into());
    let (code, out) = check(&untrusted.write(dir.path(), "untrusted.toml"));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("FAIL  Kafka") && out.contains("certificate verify failed"),
        "{out}"
    );

    let setup = setup_for(
        &s,
        &db,
        format!(
            "\"security.protocol\" = \"SSL\"\n\"ssl.ca.location\" = \"{}\"",
            s.ca_file.display()
        ),
    );
    let (code, out) = check(&setup.write(dir.path(), "trusted.toml"));
    assert!(
        out.contains("TLS verifies the broker's certificate and host name"),
        "{out}"
    );
    assert!(out.contains("ok    Kafka"), "{out}");
    assert_eq!(code, Some(0), "{out}");
    lands_exactly(&setup, dir.path(), &db, &ds, &s.hw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_scram_over_tls_refuses_a_wrong_password_and_lands_with_the_right_one() {
    let dir = tempfile::tempdir().unwrap();
    let ds = data::generate(2000, 2, 20, 0.05, 10, 0.02, 12);
    let poison = [Produced {
        partition: 0,
        key: Some(b"acct-0000".to_vec()),
        payload: b"{not json".to_vec(),
    }];
    let password = "Right-Pa55word-xyz";
    let scram = Scram {
        user: "ordo".into(),
        password: password.into(),
    };
    let s = secured(dir.path(), &ds, &poison, Some(scram)).await;
    let db = TestDb::new().await;
    let sasl = |password_line: String| {
        format!(
            "\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\
             \"sasl.username\" = \"ordo\"\n{password_line}\n\"ssl.ca.location\" = \"{}\"",
            s.ca_file.display()
        )
    };

    let wrong = "Wrong-Pa55word-abc";
    let bad = setup_for(&s, &db, sasl(format!("\"sasl.password\" = \"{wrong}\"")));
    let (code, out) = check(&bad.write(dir.path(), "wrong.toml"));
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("Authentication failed"), "{out}");
    assert!(!out.contains(wrong), "the password was printed:\n{out}");

    // The right password from a file, as a mounted Secret would give it.
    let password_file = dir.path().join("kafka-password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let mut setup = setup_for(
        &s,
        &db,
        sasl(format!(
            "\"sasl.password_file\" = \"{}\"",
            password_file.display()
        )),
    );
    setup.dead_letter = true;
    let config = setup.write(dir.path(), "right.toml");
    let (code, out) = check(&config);
    assert!(
        out.contains("SCRAM-SHA-512 as user ordo") && !out.contains(password),
        "{out}"
    );
    assert_eq!(code, Some(0), "{out}");
    let ordo = lands_exactly(&setup, dir.path(), &db, &ds, &s.hw).await;
    assert!(!ordo.log_text().contains(password));

    // The dead-letter producer and `ordo dlq inspect` went through SASL_SSL too.
    let (status, stdout, stderr) = run_to_end(&[
        "dlq",
        "inspect",
        "--config",
        config.to_str().unwrap(),
        "--json",
    ]);
    assert!(status.success(), "{stderr}");
    let letters: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 1, "{stdout}");
    assert_eq!(letters[0]["source_offset"], serde_json::json!(s.hw[0] - 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_compressed_with_every_codec_land_exactly_once() {
    use std::io::Write;
    let codecs = ["gzip", "snappy", "lz4", "zstd"];
    let ds = data::generate(4000, codecs.len() as i32, 40, 0.05, 10, 0.02, 13);
    let kafka = Kafka::start();
    let topic = unique("codecs");
    kafka.create_topic(&topic, ds.partitions);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/producers/compressed_json.py");
    for (p, codec) in codecs.iter().enumerate() {
        let mut child = std::process::Command::new(support::python())
            .arg(&script)
            .args(["--bootstrap", &kafka.bootstrap(), "--topic", &topic])
            .args(["--compression", codec])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("Python is required for this test (scripts/setup.sh test)");
        let mut stdin = child.stdin.take().unwrap();
        for r in ds.records.iter().filter(|r| r.partition == p as i32) {
            let line = serde_json::json!({
                "partition": r.partition,
                "key": String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()),
                "value": String::from_utf8_lossy(&r.payload),
            });
            writeln!(stdin, "{line}").unwrap();
        }
        drop(stdin);
        assert!(child.wait().unwrap().success(), "producing with {codec}");
    }
    let hw = kafka.high_watermarks(&topic, ds.partitions);
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        topic,
        ..Setup::event_store(kafka.bootstrap(), db.url.clone(), "events")
    };
    lands_exactly(&setup, dir.path(), &db, &ds, &hw).await;
}

/// Writes one record batch whose attributes name compression codec 5, which
/// no Kafka client can decompress, to `partition` of the one-broker cluster at
/// `broker` (a Produce v3 request, as a misbehaving producer could send).
fn produce_unreadable_batch(broker: &str, topic: &str, partition: i32) {
    use std::io::{Read, Write};
    let mut batch = Vec::new();
    let records = b"not a compressed record set".to_vec();
    // After the CRC: attributes .. records.
    let mut tail = Vec::new();
    tail.extend(5i16.to_be_bytes()); // attributes: codec 5
    tail.extend(0i32.to_be_bytes()); // last offset delta
    tail.extend(0i64.to_be_bytes()); // first timestamp
    tail.extend(0i64.to_be_bytes()); // max timestamp
    tail.extend((-1i64).to_be_bytes()); // producer id
    tail.extend((-1i16).to_be_bytes()); // producer epoch
    tail.extend((-1i32).to_be_bytes()); // base sequence
    tail.extend(1i32.to_be_bytes()); // records
    tail.extend(&records);
    batch.extend(0i64.to_be_bytes()); // base offset
    batch.extend(((4 + 1 + 4 + tail.len()) as i32).to_be_bytes()); // batch length
    batch.extend(0i32.to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend(crc32c(&tail).to_be_bytes());
    batch.extend(&tail);

    let mut req = Vec::new();
    req.extend(0i16.to_be_bytes()); // Produce
    req.extend(3i16.to_be_bytes()); // v3
    req.extend(1i32.to_be_bytes()); // correlation id
    req.extend(4i16.to_be_bytes());
    req.extend(b"test");
    req.extend((-1i16).to_be_bytes()); // no transactional id
    req.extend((-1i16).to_be_bytes()); // acks = all
    req.extend(10_000i32.to_be_bytes());
    req.extend(1i32.to_be_bytes()); // one topic
    req.extend((topic.len() as i16).to_be_bytes());
    req.extend(topic.as_bytes());
    req.extend(1i32.to_be_bytes()); // one partition
    req.extend(partition.to_be_bytes());
    req.extend((batch.len() as i32).to_be_bytes());
    req.extend(&batch);

    let mut conn = std::net::TcpStream::connect(broker).unwrap();
    conn.write_all(&(req.len() as i32).to_be_bytes()).unwrap();
    conn.write_all(&req).unwrap();
    let mut len = [0u8; 4];
    conn.read_exact(&mut len).unwrap();
    let mut response = vec![0u8; i32::from_be_bytes(len) as usize];
    conn.read_exact(&mut response).unwrap();
    // correlation id, topics (1), name, partitions (1), partition id, error code.
    let at = 4 + 4 + 2 + topic.len() + 4 + 4;
    let code = i16::from_be_bytes([response[at], response[at + 1]]);
    assert_eq!(code, 0, "the broker refused the batch");
}

fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_no_codec_can_read_stops_its_partition_at_its_offset() {
    let kafka = Kafka::Mock(MockCluster::start(1).expect("mock cluster"));
    let topic = unique("codec5");
    kafka.create_topic(&topic, 2);
    let record = |p: i32, key: &str, v: i64| Produced {
        partition: p,
        key: Some(key.as_bytes().to_vec()),
        payload: data::payload(key, v),
    };
    kafka.produce(
        &topic,
        &(1..=3).map(|v| record(0, "a", v)).collect::<Vec<_>>(),
    );
    produce_unreadable_batch(&kafka.bootstrap(), &topic, 0);
    kafka.produce(
        &topic,
        &(4..=5).map(|v| record(0, "a", v)).collect::<Vec<_>>(),
    );
    kafka.produce(
        &topic,
        &(1..=5).map(|v| record(1, "b", v)).collect::<Vec<_>>(),
    );
    assert_eq!(kafka.high_watermarks(&topic, 2), vec![6, 5]);

    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        topic: topic.clone(),
        http: format!("127.0.0.1:{}", free_port()),
        ..Setup::event_store(kafka.bootstrap(), db.url.clone(), "events")
    };
    let config = setup.write(dir.path(), "ordo.toml");
    let mut ordo = Ordo::start(&config, config.with_extension("log"));
    let client = db.client().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", setup.http);
    let deadline = Deadline::new("partition 0 to stop", Duration::from_secs(60));
    let reasons = loop {
        assert!(ordo.running(), "{}", ordo.log_text());
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            let (code, body) = (r.status().as_u16(), r.text().await.unwrap_or_default());
            if code == 503 && body.contains("offset 3") {
                break body;
            }
        }
        deadline.tick().await;
    };
    assert!(
        reasons.contains(&format!("{topic}/0")) && reasons.contains("retrying cannot fix"),
        "{reasons}"
    );
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &topic, &[3, 5]).await;
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l == "ordo_stopped_partitions 1"),
        "{metrics}"
    );
    let rows = client
        .query(
            "SELECT stream, version FROM events ORDER BY stream, version",
            &[],
        )
        .await
        .unwrap();
    let got: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let want: Vec<(String, i64)> = [("a", 1), ("a", 2), ("a", 3)]
        .into_iter()
        .chain((1..=5).map(|v| ("b", v)))
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(
        got, want,
        "nothing past the unreadable record of partition 0"
    );
    // One clear error, not a line every fetch.
    let log = ordo.log_text();
    assert_eq!(log.matches("partition stopped").count(), 1, "{log}");
}

/// A server that answers PostgreSQL's SSLRequest with `N`, as a server
/// without TLS does; returns its port.
async fn server_without_tls() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                if s.read_exact(&mut request).await.is_ok() {
                    let _ = s.write_all(b"N").await;
                    let mut rest = [0u8; 1024];
                    let _ = s.read(&mut rest).await;
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_honours_sslmode_and_names_the_host_and_the_reason() {
    let db = TestDb::new().await;
    let port = cluster().port;
    let ca = cluster().dir.join("ca.pem");
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, Ca::new().pem).unwrap();
    let kafka = Kafka::start();
    let ds = data::generate(600, 2, 10, 0.05, 5, 0.02, 14);
    let topic = unique("pgtls");
    kafka.create_topic(&topic, ds.partitions);
    kafka.produce(&topic, &ds.records);
    let hw = kafka.high_watermarks(&topic, ds.partitions);
    let setup = |url: String| Setup {
        topic: topic.clone(),
        ..Setup::event_store(kafka.bootstrap(), url, "events")
    };

    let url =
        |host: &str, query: String| format!("postgres://ordo@{host}:{port}/{}?{query}", db.name);
    let failing = [
        (
            url(
                "localhost",
                format!("sslmode=verify-full&sslrootcert={}", other_ca.display()),
            ),
            format!("localhost:{port}"),
            "not signed by the CA in sslrootcert",
        ),
        (
            url(
                "127.0.0.1",
                format!("sslmode=verify-full&sslrootcert={}", ca.display()),
            ),
            format!("127.0.0.1:{port}"),
            "does not name this host",
        ),
    ];
    let plain = server_without_tls().await;
    let failing = failing.into_iter().chain([
        (
            format!("postgres://ordo@127.0.0.1:{plain}/x?sslmode=require"),
            format!("127.0.0.1:{plain}"),
            "does not support TLS",
        ),
        (
            format!(
                "postgres://ordo@127.0.0.1:{plain}/x?sslmode=verify-ca&sslrootcert={}",
                ca.display()
            ),
            format!("127.0.0.1:{plain}"),
            "does not support TLS",
        ),
    ]);
    for (i, (url, host, reason)) in failing.enumerate() {
        let (code, out) = check(&setup(url.clone()).write(dir.path(), &format!("bad{i}.toml")));
        assert_eq!(code, Some(1), "{url}: {out}");
        let line = out
            .lines()
            .find(|l| l.starts_with("FAIL  PostgreSQL"))
            .unwrap_or_else(|| panic!("{url}: {out}"));
        assert!(
            line.contains(&host) && line.contains(reason),
            "{url}: {line}"
        );
    }

    // verify-full with the right CA and host name: events land, over TLS.
    let good = setup(url(
        "localhost",
        format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    ));
    let (code, out) = check(&good.write(dir.path(), "good.toml"));
    assert!(
        out.contains("sslmode=verify-full: TLS required, CA and host name verified"),
        "{out}"
    );
    assert_eq!(code, Some(0), "{out}");
    let _ordo = lands_exactly(&good, dir.path(), &db, &ds, &hw).await;
    let client = db.client().await;
    let encrypted: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE application_name = 'ordo' AND ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted > 0, "Ordo's connections are encrypted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_any_output() {
    let dir = tempfile::tempdir().unwrap();
    let ds = data::generate(20, 1, 2, 0.0, 1, 0.0, 15);
    let password = "Scram-S3cret-value";
    let s = secured(
        dir.path(),
        &ds,
        &[],
        Some(Scram {
            user: "ordo".into(),
            password: "another-password".into(),
        }),
    )
    .await;
    let db = TestDb::new().await;
    let secrets = [
        password,
        "LeakMe123",
        "Jaas-S3cret",
        "Pg-S3cret-pw",
        "ScramLoginModule",
    ];
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, Ca::new().pem).unwrap();
    let sasl = format!(
        "\"security.protocol\" = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\
         \"sasl.username\" = \"ordo\"\n\"sasl.password\" = \"{password}\"\n"
    );
    let base = setup_for(&s, &db, String::new());
    let cases: Vec<(&str, Setup)> = vec![
        (
            "wrong password",
            Setup {
                kafka: format!("{sasl}\"ssl.ca.location\" = \"{}\"", s.ca_file.display()),
                ..base.clone()
            },
        ),
        (
            "misspelt secret property",
            Setup {
                kafka: "\"sasl.pasword\" = \"LeakMe123\"".into(),
                ..base.clone()
            },
        ),
        (
            "Java JAAS config",
            Setup {
                kafka: "\"sasl.jaas.config\" = \"org.apache.kafka.common.security.scram.ScramLoginModule required username='ordo' password='Jaas-S3cret';\"".into(),
                ..base.clone()
            },
        ),
        (
            "unknown CA",
            Setup {
                kafka: format!("{sasl}\"ssl.ca.location\" = \"{}\"", other_ca.display()),
                ..base.clone()
            },
        ),
        (
            "unreachable host",
            Setup {
                bootstrap: format!("127.0.0.1:{}", free_port()),
                kafka: sasl.clone(),
                ..base.clone()
            },
        ),
        (
            "PostgreSQL unreachable, a password in its URL",
            Setup {
                db_url: format!(
                    "postgres://nobody:Pg-S3cret-pw@127.0.0.1:{}/{}?sslmode=require",
                    free_port(),
                    db.name
                ),
                ..base.clone()
            },
        ),
    ];
    for (what, setup) in cases {
        let config = setup.write(dir.path(), &format!("{}.toml", unique("leak")));
        let (code, out) = check(&config);
        assert_ne!(code, Some(0), "{what}: {out}");
        // `ordo run` too, with its logs, for as long as it runs (at most 15 s).
        let mut ordo = Ordo::start(&config, config.with_extension("log"));
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while ordo.running() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let log = ordo.log_text();
        drop(ordo);
        for secret in secrets {
            assert!(
                !out.contains(secret),
                "{what}: `ordo check` printed {secret}:\n{out}"
            );
            assert!(
                !log.contains(secret),
                "{what}: `ordo run` printed {secret}:\n{log}"
            );
        }
    }
}
