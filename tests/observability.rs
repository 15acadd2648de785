//! `/metrics`, `/healthz` and `/readyz` of a running Ordo: lag per owned
//! partition equals the broker's high watermark minus the next offset to
//! process; a stopped partition makes the replica not ready; dead-letter
//! depth is measured from the broker, so it is right after a replay and a
//! restart, and counts a record lettered twice once (as inspect and replay do).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::data::{self, Produced};
use support::kafka::Kafka;
use support::ordo::{run_to_end, Ordo, Setup};
use support::postgres::{free_port, TestDb};
use support::Deadline;

async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// The value of the series whose text starts with `series` (name and labels).
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn wait_metric(base: &str, series: &str, want: f64) -> String {
    let deadline = Deadline::new(format!("{series} = {want}"), Duration::from_secs(30));
    loop {
        let (_, text) = get(&format!("{base}/metrics")).await;
        if value(&text, series) == Some(want) {
            return text;
        }
        deadline.tick().await;
    }
}

fn record(partition: i32, key: &str, v: i64) -> Produced {
    Produced {
        partition,
        key: Some(key.as_bytes().to_vec()),
        payload: data::payload(key, v),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_equals_high_watermark_minus_next_offset_and_a_stopped_partition_is_not_ready() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let setup = Setup {
        http: format!("127.0.0.1:{port}"),
        ..Setup::event_store(kafka.bootstrap(), db.url.clone(), "events")
    };
    kafka.create_topic(&setup.topic, 2);
    let mut records: Vec<Produced> = (1..=20).map(|v| record(0, "a", v)).collect();
    records.push(Produced {
        partition: 0,
        key: Some(b"a".to_vec()),
        payload: b"{broken".to_vec(),
    });
    records.extend((21..=29).map(|v| record(0, "a", v)));
    records.extend((1..=30).map(|v| record(1, "b", v)));
    kafka.produce(&setup.topic, &records);
    let hw = kafka.high_watermarks(&setup.topic, 2);
    assert_eq!(hw, vec![30, 30]);

    let config = setup.write(dir.path(), "ordo.toml");
    let mut ordo = Ordo::start(&config, dir.path().join("ordo.log"));
    let base = format!("http://127.0.0.1:{port}");
    let client = db.client().await;
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &[20, 30]).await;

    let (status, _) = get(&format!("{base}/healthz")).await;
    assert_eq!(status, 200);
    let topic = &setup.topic;
    // Partition 0 stopped in front of offset 20: lag 30 - 20; partition 1 caught up.
    wait_metric(
        &base,
        &format!("ordo_consumer_lag_offsets{{partition=\"0\",topic=\"{topic}\"}}"),
        (hw[0] - 20) as f64,
    )
    .await;
    let text = wait_metric(
        &base,
        &format!("ordo_consumer_lag_offsets{{partition=\"1\",topic=\"{topic}\"}}"),
        0.0,
    )
    .await;
    assert_eq!(
        value(
            &text,
            &format!("ordo_events_total{{outcome=\"applied\",topic=\"{topic}\",type=\"none\"}}")
        ),
        Some(50.0)
    );
    assert_eq!(value(&text, "ordo_assigned_partitions"), Some(2.0));
    // The oldest unprocessed record of partition 0 (offset 20) has an age; partition 1 has none.
    let deadline = Deadline::new("lag in seconds", Duration::from_secs(30));
    loop {
        let (_, text) = get(&format!("{base}/metrics")).await;
        let p0 = value(
            &text,
            &format!("ordo_consumer_lag_seconds{{partition=\"0\",topic=\"{topic}\"}}"),
        );
        let p1 = value(
            &text,
            &format!("ordo_consumer_lag_seconds{{partition=\"1\",topic=\"{topic}\"}}"),
        );
        if p0.is_some_and(|s| s > 0.0) && p1 == Some(0.0) {
            break;
        }
        deadline.tick().await;
    }
    assert_eq!(
        value(
            &text,
            &format!("ordo_end_to_end_seconds_count{{topic=\"{topic}\"}}")
        ),
        Some(50.0)
    );
    assert!(
        value(&text, "ordo_stage_duration_seconds_count{stage=\"decode\"}")
            .is_some_and(|n| n >= 51.0)
    );
    let batches = value(
        &text,
        &format!("ordo_sink_batch_events_sum{{topic=\"{topic}\"}}"),
    );
    assert_eq!(batches, Some(50.0), "events written in batches");
    assert_eq!(value(&text, "ordo_stopped_partitions"), Some(1.0));
    let (status, why) = get(&format!("{base}/readyz")).await;
    assert_eq!(status, 503, "{why}");
    assert!(
        why.contains(&format!("topic {topic} partition 0 is stopped")),
        "{why}"
    );
    assert_eq!(ordo.terminate(Duration::from_secs(30)).code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_depth_comes_from_the_broker_on_every_replica_and_after_a_restart() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        dead_letter: true,
        ..Setup::event_store(kafka.bootstrap(), db.url.clone(), "events")
    };
    let dlq = format!("{}.dlq", setup.topic);
    let parked = format!("{}.parked", setup.topic);
    kafka.create_topic(&setup.topic, 2);
    kafka.create_topic(&dlq, 1);
    kafka.create_topic(&parked, 1);
    let mut records: Vec<Produced> = (1..=10).map(|v| record(0, "a", v)).collect();
    records.extend((1..=10).map(|v| record(1, "b", v)));
    for _ in 0..3 {
        records.push(Produced {
            partition: 0,
            key: Some(b"x".to_vec()),
            payload: b"{broken".to_vec(),
        });
    }
    kafka.produce(&setup.topic, &records);
    let configs = setup.replicas(dir.path(), 2);
    let mut replicas: Vec<Ordo> = configs.iter().map(|r| r.start()).collect();
    let bases: Vec<String> = configs.iter().map(|r| r.base()).collect();
    let client = db.client().await;
    data::wait_stored_offsets(
        &client,
        &mut replicas[0],
        &setup.group,
        &setup.topic,
        &[13, 10],
    )
    .await;
    // Both replicas report the broker's depth, whichever one dead-lettered the records.
    let series = format!("ordo_dlq_depth_records{{dlq_topic=\"{dlq}\"}}");
    for base in &bases {
        wait_metric(base, &series, 3.0).await;
        let deadline = Deadline::new(format!("{base}/readyz"), Duration::from_secs(30));
        while get(&format!("{base}/readyz")).await.0 != 200 {
            deadline.tick().await;
        }
    }

    // A second letter of the first poison record (as a crash between the
    // broker's acknowledgement and the commit leaves): the depth, inspect
    // and every replay count the record once.
    let first = kafka.read_all(&dlq, 3).remove(0);
    kafka.produce_copy(&first);
    assert_eq!(kafka.high_watermarks(&dlq, 1), vec![4]);
    // Nothing to wait for: the depth must *stay* 3. Two seconds are ten
    // measurements (measure_interval_ms = 200); counting letters, it would
    // read 4 by then.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for base in &bases {
        let (_, text) = get(&format!("{base}/metrics")).await;
        assert_eq!(value(&text, &series), Some(3.0), "{base}: {text}");
    }
    let inspect = |extra: &'static [&'static str]| {
        let config = configs[0].config.to_str().unwrap().to_string();
        let mut args = vec!["dlq", "inspect", "--json", "--config", &config];
        args.extend_from_slice(extra);
        let (status, stdout, stderr) = run_to_end(&args);
        assert_eq!(status.code(), Some(0), "{stderr}");
        let letters: Vec<serde_json::Value> = stdout
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON letter"))
            .collect();
        (letters, stderr)
    };
    let (letters, stderr) = inspect(&[]);
    assert_eq!(letters.len(), 3, "each source record once: {letters:?}");
    assert!(
        stderr.contains(&format!(
            "{dlq}: 4 letters, 3 source records; 1 letters repeat"
        )),
        "{stderr}"
    );
    let (letters, _) = inspect(&["--all-copies"]);
    assert_eq!(letters.len(), 4);
    assert_eq!(
        letters[3]["copy_of"],
        serde_json::json!({"partition": 0, "offset": 0})
    );

    // Replays run to the parked topic; each returns its summary line.
    let replay = |extra: &'static [&'static str]| {
        let config = configs[0].config.clone();
        let parked = parked.clone();
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["dlq", "replay", "--to", &parked];
            args.extend_from_slice(extra);
            let config = config.to_str().unwrap().to_string();
            args.extend(["--config", &config]);
            let (status, stdout, stderr) = run_to_end(&args);
            assert_eq!(status.code(), Some(0), "{stderr}");
            stdout
        })
    };

    // A filtered replay that matches none of the three letters moves
    // nothing: the next dry run still sees them all, and the depth stays.
    let out = replay(&["--error-contains", "no such error"])
        .await
        .unwrap();
    assert!(
        out.contains("replayed 0") && out.contains("3 left alone stay for a later replay"),
        "{out}"
    );
    let out = replay(&["--dry-run"]).await.unwrap();
    assert!(
        out.contains("scanned 4, would replay 3")
            && out.contains("copies of a source record seen before 1"),
        "{out}"
    );
    for base in &bases {
        wait_metric(base, &series, 3.0).await;
    }
    // One that matches the last two replays them; the first stays, and so
    // do its copy and the committed offset in front of it: depth 1.
    let out = replay(&["--from-offset", "1"]).await.unwrap();
    assert!(
        out.contains("scanned 4, replayed 2, filtered out 1"),
        "{out}"
    );
    for base in &bases {
        wait_metric(base, &series, 1.0).await;
    }
    // The unfiltered replay sends only the one left (its copy is marked
    // handled, not sent): every record replayed exactly once, and only now
    // is the depth 0, on either replica.
    let out = replay(&[]).await.unwrap();
    assert!(
        out.contains("scanned 4, replayed 1,")
            && out.contains("handled by an earlier replay 2")
            && out.contains("copies of a source record seen before 1"),
        "{out}"
    );
    assert_eq!(
        kafka.high_watermarks(&parked, 1),
        vec![3],
        "each source record replayed once"
    );
    for base in &bases {
        wait_metric(base, &series, 0.0).await;
    }
    let out = replay(&["--dry-run"]).await.unwrap();
    assert!(out.contains("scanned 0"), "{out}");

    // A restarted replica reads the same depth from the broker.
    assert_eq!(
        replicas[0].terminate(Duration::from_secs(30)).code(),
        Some(0)
    );
    replicas[0] = configs[0].start();
    wait_metric(&bases[0], &series, 0.0).await;
    for r in &mut replicas {
        assert!(r.running());
        assert_eq!(r.terminate(Duration::from_secs(30)).code(), Some(0));
    }
}

/// Lag series of `topic` in a `/metrics` text: partition -> lag.
fn lag_series(metrics: &str, topic: &str) -> BTreeMap<i32, i64> {
    let prefix = "ordo_consumer_lag_offsets{partition=\"";
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|rest| {
            let (partition, rest) = rest.split_once('"')?;
            let rest = rest.strip_prefix(&format!(",topic=\"{topic}\"}} "))?;
            Some((partition.parse().ok()?, rest.trim().parse().ok()?))
        })
        .collect()
}

/// Waits until the replicas' lag series, together, name every partition of
/// `topic` exactly once, each equal to the broker's high watermark minus the
/// next offset to process (the sink's stored offset); returns which replica
/// reported each partition.
async fn wait_lag_matches_broker(
    kafka: &Kafka,
    db: &tokio_postgres::Client,
    setup: &Setup,
    bases: &[&str],
    partitions: i32,
) -> BTreeMap<i32, usize> {
    let deadline = Deadline::new(
        "lag = high watermark - next offset",
        Duration::from_secs(60),
    );
    loop {
        let hw = kafka.high_watermarks(&setup.topic, partitions);
        let next = data::stored_offsets(db, &setup.group, &setup.topic).await;
        let mut owner = BTreeMap::new();
        let mut reported = BTreeMap::new();
        let mut twice = false;
        for (i, base) in bases.iter().enumerate() {
            let (_, text) = get(&format!("{base}/metrics")).await;
            for (p, lag) in lag_series(&text, &setup.topic) {
                twice |= owner.insert(p, i).is_some();
                reported.insert(p, lag);
            }
        }
        let expected: BTreeMap<i32, i64> = (0..partitions)
            .filter_map(|p| {
                let n = *next.get(p as usize)?;
                Some((p, hw[p as usize] - n))
            })
            .collect();
        if !twice && expected.len() == partitions as usize && reported == expected {
            return owner;
        }
        deadline.tick().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_matches_the_broker_for_each_owned_partition_across_rebalances() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::event_store(kafka.bootstrap(), db.url.clone(), "events");
    const PARTITIONS: i32 = 4;
    kafka.create_topic(&setup.topic, PARTITIONS);
    // Partitions 0 and 2 stop in front of a broken record at offset 10 and
    // fall behind; 1 and 3 keep up.
    let batch = |from: i64, to: i64| {
        let mut records = Vec::new();
        for p in 0..PARTITIONS {
            let key = format!("k{p}");
            for v in from..=to {
                records.push(record(p, &key, v));
                if v == 10 && p % 2 == 0 {
                    records.push(Produced {
                        partition: p,
                        key: Some(key.as_bytes().to_vec()),
                        payload: b"{broken".to_vec(),
                    });
                }
            }
        }
        records
    };
    kafka.produce(&setup.topic, &batch(1, 30));
    let configs = setup.replicas(dir.path(), 2);
    let bases: Vec<String> = configs.iter().map(|r| r.base()).collect();
    let (a, b) = (bases[0].as_str(), bases[1].as_str());
    let client = db.client().await;

    // One replica owns every partition.
    let mut first = configs[0].start();
    data::wait_stored_offsets(
        &client,
        &mut first,
        &setup.group,
        &setup.topic,
        &[10, 30, 10, 30],
    )
    .await;
    let owners = wait_lag_matches_broker(&kafka, &client, &setup, &[a], PARTITIONS).await;
    assert_eq!(owners.len(), 4);
    // Both stopped partitions have an oldest unprocessed event with an age.
    let deadline = Deadline::new("lag in seconds per partition", Duration::from_secs(30));
    loop {
        let (_, text) = get(&format!("{a}/metrics")).await;
        let age = |p: i32| {
            value(
                &text,
                &format!(
                    "ordo_consumer_lag_seconds{{partition=\"{p}\",topic=\"{}\"}}",
                    setup.topic
                ),
            )
        };
        let stopped_aged = [0, 2].iter().all(|&p| age(p).is_some_and(|s| s > 0.0));
        let caught_up = [1, 3].iter().all(|&p| age(p) == Some(0.0));
        if stopped_aged && caught_up {
            break;
        }
        deadline.tick().await;
    }

    // A second replica joins: the partitions split between them, each
    // reported by its owner only, the moved ones no longer by the first.
    let mut second = configs[1].start();
    let deadline = Deadline::new(
        "partitions split between the replicas",
        Duration::from_secs(60),
    );
    let owners = loop {
        let owners = wait_lag_matches_broker(&kafka, &client, &setup, &[a, b], PARTITIONS).await;
        if owners.values().any(|&i| i == 0) && owners.values().any(|&i| i == 1) {
            break owners;
        }
        deadline.tick().await;
    };
    let (_, text) = get(&format!("{b}/metrics")).await;
    assert_eq!(
        value(&text, "ordo_assigned_partitions"),
        Some(owners.values().filter(|&&i| i == 1).count() as f64)
    );

    // More records: the stopped partitions fall further behind, the others catch up.
    kafka.produce(&setup.topic, &batch(31, 40));
    data::wait_stored_offsets(
        &client,
        &mut second,
        &setup.group,
        &setup.topic,
        &[10, 40, 10, 40],
    )
    .await;
    let owners = wait_lag_matches_broker(&kafka, &client, &setup, &[a, b], PARTITIONS).await;
    let owner_of_0 = bases[owners[&0]].as_str();
    let (_, text) = get(&format!("{owner_of_0}/metrics")).await;
    assert_eq!(lag_series(&text, &setup.topic).get(&0), Some(&31));

    // The first replica leaves: the second owns and reports every partition.
    assert_eq!(first.terminate(Duration::from_secs(30)).code(), Some(0));
    let owners = wait_lag_matches_broker(&kafka, &client, &setup, &[b], PARTITIONS).await;
    assert!(owners.values().all(|&i| i == 0), "{owners:?}");
    assert_eq!(second.terminate(Duration::from_secs(30)).code(), Some(0));
}

/// A replica the group gives no partition says, after a few seconds, that
/// it waits for the group and why that can take `session.timeout.ms`; the
/// one with the partition says nothing of the kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_without_partitions_says_it_waits_for_the_group() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::event_store(kafka.bootstrap(), db.url.clone(), "events");
    kafka.create_topic(&setup.topic, 1);
    kafka.produce(&setup.topic, &[record(0, "a", 1)]);
    let configs = setup.replicas(dir.path(), 2);
    for c in &configs {
        let text = std::fs::read_to_string(&c.config).unwrap();
        std::fs::write(
            &c.config,
            text.replace("format = \"text\"", "format = \"json\""),
        )
        .unwrap();
    }
    let mut first = configs[0].start();
    let client = db.client().await;
    data::wait_stored_offsets(&client, &mut first, &setup.group, &setup.topic, &[1]).await;
    let mut second = configs[1].start();
    let said = |o: &Ordo| {
        o.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| {
                v["message"].as_str().is_some_and(|m| {
                    m.starts_with("no partition assigned yet: waiting for the consumer group")
                })
            })
    };
    let deadline = Deadline::new("the spare replica says it waits", Duration::from_secs(30));
    let line = loop {
        assert!(second.running(), "{}", second.log_text());
        if let Some(line) = said(&second) {
            break line;
        }
        deadline.tick().await;
    };
    assert_eq!(
        line["session_timeout_ms"],
        serde_json::json!(6000),
        "{line}"
    );
    assert!(line["waited_s"].as_u64().is_some_and(|s| s >= 5), "{line}");
    assert!(said(&first).is_none(), "{}", first.log_text());
    // Every field of every line is typed: no Rust Debug text of an Option.
    let assigned = first
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .inspect(|v| {
            for (field, value) in v.as_object().into_iter().flatten() {
                let text = value.as_str().unwrap_or_default();
                assert!(
                    !text.starts_with("Some(") && text != "None" && !text.starts_with("[\""),
                    "{field} = {value} in {v}"
                );
            }
        })
        .filter(|v| v["message"] == "partition assigned")
        .count();
    assert!(assigned >= 1, "{}", first.log_text());
    // Lists are arrays: the topics consumed, and the partitions a revoke drains.
    let lines: Vec<serde_json::Value> = second
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let consuming = lines
        .iter()
        .find(|v| v["message"] == "consuming")
        .unwrap_or_else(|| panic!("{}", second.log_text()));
    assert_eq!(
        consuming["topics"],
        serde_json::json!([setup.topic]),
        "{consuming}"
    );
    for o in [&mut first, &mut second] {
        assert_eq!(o.terminate(Duration::from_secs(30)).code(), Some(0));
    }
}
