//! Records that cannot be decoded go to the dead-letter topic, unchanged and
//! with headers naming where they came from and why; every good record lands;
//! nothing is sent twice after a restart; a missing dead-letter topic is
//! refused at start.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::message::{Headers, Message};
use support::data;
use support::kafka::{produce_raw as produce, Kafka, Raw};
use support::ordo::{readyz, run_to_end, wait_not_ready_with, Ordo, Setup};
use support::postgres::TestDb;
use support::Deadline;

async fn count_rows(client: &tokio_postgres::Client) -> usize {
    client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get::<_, i64>(0) as usize
}

fn header<'a>(m: &'a rdkafka::message::OwnedMessage, name: &str) -> Option<&'a [u8]> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
}

fn header_text(m: &rdkafka::message::OwnedMessage, name: &str) -> String {
    String::from_utf8_lossy(header(m, name).unwrap_or_else(|| panic!("header {name}"))).into_owned()
}

/// Version `v` of key `a`, on partition 0.
fn event(v: i64) -> data::Produced {
    data::Produced {
        partition: 0,
        key: Some(b"a".to_vec()),
        payload: data::payload("a", v),
    }
}

/// Poison record `n` (key `p<n>`, not JSON), on partition 0.
fn poison(n: u8) -> data::Produced {
    data::Produced {
        partition: 0,
        key: Some(vec![b'p', n]),
        payload: b"{not json".to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dead_letter_topic_and_good_ones_land() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        dead_letter: true,
        ..Setup::event_store(kafka.bootstrap(), db.url.clone(), "events")
    };
    let dlq = format!("{}.dlq", setup.topic);
    kafka.create_topic(&setup.topic, 2);
    kafka.create_topic(&dlq, 1);

    // 100 keys x 500 versions (50k good records), in order per key; about 1 %
    // poison between them: malformed JSON, a missing sequence field, a tombstone.
    let (keys, versions) = (100usize, 500i64);
    let mut records = Vec::new();
    let mut poison = Vec::new();
    for v in 1..=versions {
        for k in 0..keys {
            let key = format!("acct-{k:04}");
            let partition = (k % 2) as i32;
            records.push(Raw {
                partition,
                key: key.clone().into_bytes(),
                payload: Some(data::payload(&key, v)),
                headers: vec![],
            });
            if (v * keys as i64 + k as i64) % 97 == 0 {
                let payload = match poison.len() % 3 {
                    0 => Some(b"{\"id\": \"broken".to_vec()),
                    1 => Some(format!("{{\"id\":\"{key}\",\"amount\":1}}").into_bytes()),
                    _ => None,
                };
                let bad = Raw {
                    partition,
                    key: key.clone().into_bytes(),
                    payload,
                    headers: vec![
                        ("trace-id", format!("t-{}", poison.len()).into_bytes()),
                        (
                            "correlation-id",
                            format!("corr-{}", poison.len()).into_bytes(),
                        ),
                    ],
                };
                records.push(bad.clone());
                poison.push(bad);
            }
        }
    }
    assert!(poison.len() >= 500, "{}", poison.len());
    produce(&kafka.bootstrap(), &setup.topic, &records);
    let hw = kafka.high_watermarks(&setup.topic, 2);
    // Where each poison record sits: its offset within its partition.
    let mut next = [0i64; 2];
    let mut at = HashMap::new();
    for r in &records {
        let offset = next[r.partition as usize];
        next[r.partition as usize] += 1;
        if let Some((_, t)) = r.headers.first() {
            at.insert(t.clone(), (r.partition, offset, r.clone()));
        }
    }

    let config = setup.write(dir.path(), "ordo.toml");
    let mut ordo = Ordo::start(&config, dir.path().join("ordo.log"));
    let client = db.client().await;
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &hw).await;

    // Every good record landed, in order.
    let rows = client
        .query(
            "SELECT stream, array_agg(version ORDER BY position) FROM events GROUP BY stream",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), keys);
    for r in rows {
        let versions_of: Vec<i64> = r.get(1);
        assert_eq!(versions_of, (1..=versions).collect::<Vec<_>>());
    }

    // Every poison record is in the dead-letter topic, unchanged, with its story.
    let letters = kafka.read_all(&dlq, poison.len());
    assert_eq!(letters.len(), poison.len());
    for m in &letters {
        let trace = header(m, "trace-id")
            .expect("original headers kept")
            .to_vec();
        let (partition, offset, original) = &at[&trace];
        assert_eq!(m.key(), Some(&original.key[..]));
        assert_eq!(m.payload(), original.payload.as_deref());
        assert_eq!(header_text(m, "ordo.source.topic"), setup.topic);
        assert_eq!(
            header_text(m, "ordo.source.partition"),
            partition.to_string()
        );
        assert_eq!(header_text(m, "ordo.source.offset"), offset.to_string());
        assert!(header_text(m, "ordo.source.timestamp")
            .parse::<i64>()
            .is_ok());
        assert_eq!(header_text(m, "ordo.error.class"), "permanent");
        assert_eq!(header_text(m, "ordo.attempts"), "1");
        assert_eq!(header_text(m, "ordo.version"), env!("CARGO_PKG_VERSION"));
        let why = header_text(m, "ordo.error.message");
        let expected = match &original.payload {
            None => "tombstone",
            Some(p) if p.starts_with(b"{\"id\": \"broken") => "not valid JSON",
            Some(_) => "field `version` is missing",
        };
        assert!(why.contains(expected), "{why}");
        assert!(
            why.contains(&format!("partition {partition} offset {offset}")),
            "{why}"
        );
    }

    // The log line of each dead letter carries the record's span: where it is
    // and its correlation id.
    let log = ordo.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("record sent to the dead-letter topic") && l.contains("corr-0"))
        .unwrap_or_else(|| panic!("no dead-letter line with its correlation id:\n{log}"));
    assert!(line.contains(&format!("topic={}", setup.topic)), "{line}");

    // A restart sends nothing again: the offsets passed the dead letters.
    assert_eq!(ordo.terminate(Duration::from_secs(30)).code(), Some(0));
    let mut ordo = Ordo::start(&config, dir.path().join("ordo2.log"));
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &hw).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(kafka.read_all(&dlq, poison.len()).len(), poison.len());
    assert_eq!(ordo.terminate(Duration::from_secs(30)).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dead_letter_topic_is_waited_for_and_named() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        dead_letter: true,
        http: format!("127.0.0.1:{}", support::postgres::free_port()),
        ..Setup::event_store(kafka.bootstrap(), db.url.clone(), "events")
    };
    kafka.create_topic(&setup.topic, 1);
    let path = setup.write(dir.path(), "ordo.toml");
    let dlq = format!("{}.dlq", setup.topic);
    let (status, stdout, _) = tokio::task::spawn_blocking({
        let path = path.clone();
        move || run_to_end(&["check", "--config", path.to_str().unwrap()])
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("dead-letter topic `{dlq}`")),
        "{stdout}"
    );
    // `ordo run` waits for it, not ready and naming it; it starts once the
    // topic exists.
    let mut ordo = Ordo::start(&path, dir.path().join("ordo.log"));
    wait_not_ready_with(
        &mut ordo,
        &setup.http,
        &["waits for kafka", &format!("dead-letter topic `{dlq}`")],
    )
    .await;
    kafka.create_topic(&dlq, 1);
    let deadline = Deadline::new("ready once the topic exists", Duration::from_secs(60));
    while readyz(&setup.http).await.0 != 200 {
        assert!(ordo.running(), "{}", ordo.log_text());
        deadline.tick().await;
    }
    assert!(ordo.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_postgres_refuses_go_to_the_dead_letter_topic_and_land_once_replayed() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        dead_letter: true,
        http: format!("127.0.0.1:{}", support::postgres::free_port()),
        ..Setup::event_store(kafka.bootstrap(), db.url.clone(), "events")
    };
    let dlq = format!("{}.dlq", setup.topic);
    kafka.create_topic(&setup.topic, 2);
    kafka.create_topic(&dlq, 1);
    let config = setup.write(dir.path(), "ordo.toml");
    let mut ordo = Ordo::start(&config, dir.path().join("ordo.log"));
    let client = db.client().await;
    let dead_lettered = {
        let url = format!("http://{}/metrics", setup.http);
        let series = format!(
            "ordo_events_total{{outcome=\"dead_lettered\",topic=\"{}\",type=\"none\"}} ",
            setup.topic
        );
        move || {
            let (url, series) = (url.clone(), series.clone());
            async move {
                let text = match reqwest::get(&url).await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                text.lines()
                    .find_map(|l| l.strip_prefix(series.as_str()))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            }
        }
    };
    // The table exists once Ordo started; a rule of the database's own refuses negative amounts.
    support::postgres::refuse_negative_amounts(&client).await;

    let (keys, versions) = (20usize, 50i64);
    let mut records = Vec::new();
    let mut refused = 0;
    for v in 1..=versions {
        for k in 0..keys {
            let key = format!("acct-{k:04}");
            let bad = (k as i64 * versions + v) % 97 == 0;
            refused += bad as usize;
            let amount = if bad { -1 } else { v * 10 };
            records.push(Raw {
                partition: (k % 2) as i32,
                key: key.clone().into_bytes(),
                payload: Some(
                    serde_json::json!({"id": key, "version": v, "amount": amount})
                        .to_string()
                        .into_bytes(),
                ),
                headers: vec![],
            });
        }
    }
    assert!(refused >= 8, "{refused}");
    // Counted from the start: the series is there at 0 before any event.
    let deadline = support::Deadline::new("the dead_lettered series", Duration::from_secs(30));
    while dead_lettered().await != Some(0.0) {
        deadline.tick().await;
    }
    produce(&kafka.bootstrap(), &setup.topic, &records);
    let hw = kafka.high_watermarks(&setup.topic, 2);
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &hw).await;
    assert_eq!(
        dead_lettered().await,
        Some(refused as f64),
        "events PostgreSQL refused count as dead-lettered"
    );
    assert_eq!(
        count_rows(&client).await,
        keys * versions as usize - refused
    );
    let letters = kafka.read_all(&dlq, refused);
    assert_eq!(letters.len(), refused);
    for m in &letters {
        let why = header_text(m, "ordo.error.message");
        assert!(why.contains("the sink refused the event"), "{why}");
        assert!(why.contains("PostgreSQL at"), "{why}");
        assert!(why.contains("amount_not_negative"), "{why}");
        let value: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(value["amount"], -1, "the record itself, unchanged");
    }

    // Fix the cause, replay: every version of every key is there.
    client
        .batch_execute("ALTER TABLE events DROP CONSTRAINT amount_not_negative")
        .await
        .unwrap();
    let replay = |group: &'static str| {
        let path = config.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                run_to_end(&[
                    "dlq",
                    "replay",
                    "--group",
                    group,
                    "--config",
                    path.to_str().unwrap(),
                ])
            })
            .await
            .unwrap()
        }
    };
    let (status, stdout, stderr) = replay("first").await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stdout.contains(&format!("replayed {refused}")), "{stdout}");
    let hw = kafka.high_watermarks(&setup.topic, 2);
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &hw).await;
    assert_eq!(count_rows(&client).await, keys * versions as usize);
    let complete = client
        .query(
            "SELECT stream, array_agg(version ORDER BY version) FROM events GROUP BY stream",
            &[],
        )
        .await
        .unwrap();
    for r in complete {
        let got: Vec<i64> = r.get(1);
        assert_eq!(got, (1..=versions).collect::<Vec<_>>());
    }

    // Replaying the same letters again changes nothing.
    let (_, stdout, _) = replay("second").await;
    assert!(stdout.contains(&format!("replayed {refused}")), "{stdout}");
    let hw = kafka.high_watermarks(&setup.topic, 2);
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &hw).await;
    assert_eq!(count_rows(&client).await, keys * versions as usize);
    assert_eq!(ordo.terminate(Duration::from_secs(30)).code(), Some(0));
}

/// A key's newest version refused by PostgreSQL and dead-lettered counts as
/// passed: after a restart (the key state read from the sink) the key's next
/// version lands instead of waiting for the refused one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_version_does_not_hold_the_keys_next_one_after_a_restart() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        dead_letter: true,
        ..Setup::event_store(kafka.bootstrap(), db.url.clone(), "events")
    };
    kafka.create_topic(&setup.topic, 1);
    kafka.create_topic(&format!("{}.dlq", setup.topic), 1);
    let config = setup.write(dir.path(), "ordo.toml");
    let client = db.client().await;
    let event = |v: i64, amount: i64| Raw {
        partition: 0,
        key: b"acct-1".to_vec(),
        payload: Some(
            serde_json::json!({"id": "acct-1", "version": v, "amount": amount})
                .to_string()
                .into_bytes(),
        ),
        headers: vec![],
    };
    let mut ordo = Ordo::start(&config, dir.path().join("ordo-1.log"));
    support::postgres::refuse_negative_amounts(&client).await;
    produce(
        &kafka.bootstrap(),
        &setup.topic,
        &[event(1, 10), event(2, -1)],
    );
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &[2]).await;
    assert!(ordo.terminate(Duration::from_secs(30)).success());

    let mut ordo = Ordo::start(&config, dir.path().join("ordo-2.log"));
    produce(&kafka.bootstrap(), &setup.topic, &[event(3, 30)]);
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &[3]).await;
    assert!(ordo.terminate(Duration::from_secs(30)).success());
    let versions: Vec<i64> = client
        .query("SELECT version FROM events ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 3]);
    let passed: i64 = client
        .query_one(
            "SELECT version FROM ordo_passed_versions WHERE key = 'acct-1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(passed, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_is_dead_lettered_once_across_restarts_while_a_gap_holds_the_offset() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        dead_letter: true,
        http: format!("127.0.0.1:{}", support::postgres::free_port()),
        ..Setup::event_store(kafka.bootstrap(), db.url.clone(), "events")
    };
    kafka.create_topic(&setup.topic, 1);
    let dlq = format!("{}.dlq", setup.topic);
    kafka.create_topic(&dlq, 1);
    // Version 2 waits for version 1: the stored offset stays at 0 while the
    // poison records behind it are dead-lettered.
    kafka.produce(&setup.topic, &[event(2), poison(1), poison(2), poison(3)]);
    let config = setup.write(dir.path(), "ordo.toml");
    let client = db.client().await;
    for run in 0..3 {
        let mut ordo = Ordo::start(&config, dir.path().join(format!("ordo{run}.log")));
        // Every record was read again (lag 0 from the fetch position) and
        // the marks are stored.
        let deadline = Deadline::new("the poison records handled", Duration::from_secs(60));
        loop {
            assert!(ordo.running(), "{}", ordo.log_text());
            let marks: i64 = client
                .query_one("SELECT count(*) FROM ordo_dead_lettered", &[])
                .await
                .map(|r| r.get(0))
                .unwrap_or(0);
            let metrics = match reqwest::get(format!("http://{}/metrics", setup.http)).await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            let read_all = metrics.lines().any(|l| {
                l.starts_with("ordo_consumer_lag_offsets{")
                    && l.contains("partition=\"0\"")
                    && l.ends_with(" 0")
            });
            if marks == 3 && read_all {
                break;
            }
            deadline.tick().await;
        }
        assert_eq!(
            data::stored_offsets(&client, &setup.group, &setup.topic).await,
            vec![0],
            "the gap holds the offset"
        );
        let status = ordo.terminate(Duration::from_secs(30));
        assert_eq!(status.code(), Some(0), "{}", ordo.log_text());
    }
    // The gap fills: everything lands, the marks are gone, and each poison
    // record is in the dead-letter topic once.
    kafka.produce(&setup.topic, &[event(1)]);
    let mut ordo = Ordo::start(&config, dir.path().join("ordo-last.log"));
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &[5]).await;
    let marks: i64 = client
        .query_one("SELECT count(*) FROM ordo_dead_lettered", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(marks, 0);
    let letters = kafka.read_all(&dlq, 3);
    let keys: Vec<Vec<u8>> = letters
        .iter()
        .map(|m| m.key().unwrap_or_default().to_vec())
        .collect();
    assert_eq!(
        keys,
        vec![b"p\x01".to_vec(), b"p\x02".to_vec(), b"p\x03".to_vec()]
    );
    assert_eq!(ordo.terminate(Duration::from_secs(30)).code(), Some(0));
}

/// A replica paused while it waits to send a dead letter loses its Kafka
/// session; the group gives its partition to another replica, which takes
/// the lease and letters the records. Resumed, the old owner still holds the
/// record and still believes it owns the partition (two owners at once):
/// its next attempt checks the lease first and is fenced, so it writes no
/// letter. Each poison record is lettered once, under the new owner's epoch,
/// and the table is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_owner_resumed_after_its_partition_moved_writes_no_dead_letter() {
    use rdkafka::bindings::rd_kafka_resp_err_t as Err;
    const PRODUCE: i16 = 0;
    let kafka = Kafka::Mock(ordo::demo::mock::MockCluster::start(1).expect("mock cluster"));
    let Kafka::Mock(cluster) = &kafka else {
        unreachable!()
    };
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        dead_letter: true,
        dead_letter_extra: "send_timeout_ms = 500".into(),
        ..Setup::event_store(kafka.bootstrap(), db.url.clone(), "events")
    };
    kafka.create_topic(&setup.topic, 1);
    let dlq = format!("{}.dlq", setup.topic);
    kafka.create_topic(&dlq, 1);
    kafka.produce(
        &setup.topic,
        &[
            event(1),
            event(2),
            poison(1),
            poison(2),
            poison(3),
            event(3),
            event(4),
        ],
    );
    // Every dead-letter write fails (retriably) until the errors are cleared.
    cluster.push_request_errors(
        PRODUCE,
        &[Err::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 100_000],
    );
    let replicas = setup.replicas(dir.path(), 2);
    let mut old = replicas[0].start();
    let client = db.client().await;
    let lease = || async {
        client
            .query_one(
                "SELECT epoch, owner FROM ordo_offsets WHERE consumer_group = $1 AND topic = $2",
                &[&setup.group, &setup.topic],
            )
            .await
            .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)))
            .ok()
    };
    let deadline = Deadline::new("the first owner waits to letter", Duration::from_secs(60));
    while !old.log_text().contains("waits for dead_letter_topic") {
        assert!(old.running(), "{}", old.log_text());
        deadline.tick().await;
    }
    let (old_epoch, old_owner) = lease().await.expect("the first owner's lease");

    // Paused, its session expires; the other replica gets the partition and
    // takes the lease.
    old.pause();
    let mut new = replicas[1].start();
    let deadline = Deadline::new(
        "the second replica takes the lease",
        Duration::from_secs(90),
    );
    let new_epoch = loop {
        assert!(new.running(), "{}", new.log_text());
        match lease().await {
            Some((epoch, owner)) if owner != old_owner => break epoch,
            _ => deadline.tick().await,
        }
    };
    assert!(new_epoch > old_epoch);
    cluster.clear_request_errors(PRODUCE);
    data::wait_stored_offsets(&client, &mut new, &setup.group, &setup.topic, &[7]).await;

    // Resumed, the old owner tries again with the record it holds.
    old.resume();
    let deadline = Deadline::new("the old owner fenced", Duration::from_secs(60));
    while !old
        .log_text()
        .contains("another replica took the partition's lease")
    {
        assert!(old.running(), "{}", old.log_text());
        deadline.tick().await;
    }
    // The letters must *stay* three: a window for a send the old owner had
    // in flight to land, had it sent one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        kafka.high_watermarks(&dlq, 1),
        vec![3],
        "one letter per poison record"
    );
    let letters = kafka.read_all(&dlq, 3);
    for m in &letters {
        assert_eq!(
            header_text(m, "ordo.lease.epoch"),
            new_epoch.to_string(),
            "lettered by the new owner"
        );
    }
    let keys: Vec<Vec<u8>> = letters
        .iter()
        .map(|m| m.key().unwrap_or_default().to_vec())
        .collect();
    assert_eq!(
        keys,
        vec![b"p\x01".to_vec(), b"p\x02".to_vec(), b"p\x03".to_vec()]
    );
    let versions: Vec<i64> = client
        .query("SELECT version FROM events ORDER BY position", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    assert_eq!(
        data::stored_offsets(&client, &setup.group, &setup.topic).await,
        vec![7]
    );
    for r in [&mut old, &mut new] {
        assert!(r.running(), "{}", r.log_text());
        assert_eq!(r.terminate(Duration::from_secs(30)).code(), Some(0));
    }
}
