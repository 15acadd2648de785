//! `/metrics`, `/healthz` and `/readyz` of a running Ordo: lag per owned
//! partition equals the broker's high watermark minus the next offset to
//! process; a stopped partition makes the replica not ready; dead-letter
//! depth is measured from the broker, so it is right after a replay and a restart.

mod support;

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
            &format!("ordo_events_total{{outcome=\"applied\",topic=\"{topic}\"}}")
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
async fn dead_letter_depth_comes_from_the_broker() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let setup = Setup {
        http: format!("127.0.0.1:{port}"),
        dead_letter: true,
        ..Setup::event_store(kafka.bootstrap(), db.url.clone(), "events")
    };
    let dlq = format!("{}.dlq", setup.topic);
    let parked = format!("{}.parked", setup.topic);
    kafka.create_topic(&setup.topic, 1);
    kafka.create_topic(&dlq, 1);
    kafka.create_topic(&parked, 1);
    let mut records: Vec<Produced> = (1..=10).map(|v| record(0, "a", v)).collect();
    for _ in 0..3 {
        records.push(Produced {
            partition: 0,
            key: Some(b"x".to_vec()),
            payload: b"{broken".to_vec(),
        });
    }
    kafka.produce(&setup.topic, &records);
    let config = setup.write(dir.path(), "ordo.toml");
    let mut ordo = Ordo::start(&config, dir.path().join("ordo.log"));
    let base = format!("http://127.0.0.1:{port}");
    let client = db.client().await;
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &[13]).await;
    let series = format!("ordo_dlq_depth_records{{dlq_topic=\"{dlq}\"}}");
    wait_metric(&base, &series, 3.0).await;
    let (status, _) = get(&format!("{base}/readyz")).await;
    assert_eq!(status, 200);

    // Replayed elsewhere: nothing left in the dead-letter topic to replay.
    let (status, _, stderr) = tokio::task::spawn_blocking({
        let config = config.clone();
        let parked = parked.clone();
        move || {
            run_to_end(&[
                "dlq",
                "replay",
                "--to",
                &parked,
                "--config",
                config.to_str().unwrap(),
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    wait_metric(&base, &series, 0.0).await;

    // A restarted replica reads the same depth from the broker.
    assert_eq!(ordo.terminate(Duration::from_secs(30)).code(), Some(0));
    let mut ordo = Ordo::start(&config, dir.path().join("ordo2.log"));
    wait_metric(&base, &series, 0.0).await;
    assert!(ordo.running());
    assert_eq!(ordo.terminate(Duration::from_secs(30)).code(), Some(0));
}
