//! `ordo offsets`: show matches the stored offsets and the broker's
//! watermarks; a dry run moves nothing; a rewind to the earliest offsets
//! with two replicas running makes both re-read their partitions and every
//! route stays exact; `skip` passes a range of poison records without dead-lettering them and
//! records it; bad input exits 2 and moves nothing.

mod support;

use std::time::Duration;

use ordo::demo::order_events;
use support::kafka::{produce_raw, Kafka, Raw};
use support::ordo::{run_to_end, Ordo};
use support::postgres::TestDb;
use support::routes::{assert_exact, drained, produced, setup, CUSTOMER_TOTALS, ROUTES};
use support::{data, Deadline};

const PARTITIONS: i32 = 3;

fn show(config: &str) -> Vec<serde_json::Value> {
    let (status, stdout, stderr) = run_to_end(&["offsets", "show", "--json", "--config", config]);
    assert!(status.success(), "{stdout}{stderr}");
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

async fn moves(
    client: &tokio_postgres::Client,
    group: &str,
) -> Vec<(i32, Option<i64>, i64, String)> {
    client
        .query(
            "SELECT partition, from_offset, to_offset, kind FROM ordo_offset_moves \
             WHERE consumer_group = $1 ORDER BY id",
            &[&group],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_shown_rewound_to_the_start_with_two_replicas_and_skipped() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(&kafka, &db, ROUTES);
    kafka.create_topic(&s.topic, PARTITIONS);
    let client = db.client().await;
    client.batch_execute(CUSTOMER_TOTALS).await.unwrap();
    let ds = order_events::generate(6_000, PARTITIONS, 150, 11);
    let records = produced(&ds);
    produce_raw(&kafka.bootstrap(), &s.topic, &records);
    let hw = kafka.high_watermarks(&s.topic, PARTITIONS);
    let config = s.write(dir.path(), "ordo.toml");
    let path = config.to_str().unwrap().to_string();

    let mut a = Ordo::start(&config, dir.path().join("a.log"));
    let mut b = Ordo::start(&config, dir.path().join("b.log"));
    drained(&client, &s, &hw, &mut [&mut a, &mut b]).await;
    assert_exact(&client, &ds, &s, &hw).await;

    // show: the stored offsets, the broker's watermarks, no lag.
    let shown = show(&path);
    assert_eq!(shown.len(), PARTITIONS as usize, "{shown:?}");
    for (p, row) in shown.iter().enumerate() {
        assert_eq!(row["topic"], s.topic.as_str());
        assert_eq!(row["partition"], p as i64);
        assert_eq!(row["next_offset"], hw[p], "{row}");
        assert_eq!(row["high_watermark"], hw[p], "{row}");
        assert_eq!(row["low_watermark"], 0, "{row}");
        assert_eq!(row["lag_offsets"], 0, "{row}");
        assert!(
            row["owner"].as_str().is_some_and(|o| !o.is_empty()),
            "{row}"
        );
        assert!(row["epoch"].as_i64().is_some_and(|e| e >= 1), "{row}");
    }

    // A dry run prints the moves and moves nothing.
    let (status, stdout, stderr) = run_to_end(&[
        "offsets",
        "set",
        "--to-earliest",
        "--dry-run",
        "--config",
        &path,
    ]);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("dry run: nothing moved"), "{stdout}");
    assert!(
        stdout.contains(&format!("{} 0: {} -> 0", s.topic, hw[0])),
        "{stdout}"
    );
    assert_eq!(data::stored_offsets(&client, &s.group, &s.topic).await, hw);
    assert!(moves(&client, &s.group).await.is_empty());

    // By time: a broker whose time index answers "no record that recent"
    // while its last record is (the mock cluster has no time index) is not
    // trusted with the move: it would skip everything. Refused, nothing moved.
    let minute_ago = (std::time::SystemTime::now() - Duration::from_secs(60))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let (status, stdout, stderr) = run_to_end(&[
        "offsets",
        "set",
        "--to-timestamp",
        &minute_ago,
        "--config",
        &path,
    ]);
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr.contains("cannot look offsets up by time") && stderr.contains("nothing moved"),
        "{stderr}"
    );
    assert_eq!(data::stored_offsets(&client, &s.group, &s.topic).await, hw);
    assert!(moves(&client, &s.group).await.is_empty());

    // Rewind everything with both replicas running: they re-read every
    // partition, the guards drop what was applied, every route stays exact.
    let (status, stdout, stderr) =
        run_to_end(&["offsets", "set", "--to-earliest", "--config", &path]);
    assert!(status.success(), "{stdout}{stderr}");
    let recorded = moves(&client, &s.group).await;
    assert_eq!(recorded.len(), PARTITIONS as usize, "{recorded:?}");
    assert!(recorded
        .iter()
        .all(|(p, from, to, kind)| *from == Some(hw[*p as usize]) && *to == 0 && kind == "set"));
    let deadline = Deadline::new("both replicas take the rewind up", Duration::from_secs(60));
    loop {
        let pending: i64 = client
            .query_one(
                "SELECT count(*) FROM ordo_offsets WHERE consumer_group = $1 AND moved",
                &[&s.group],
            )
            .await
            .unwrap()
            .get(0);
        if pending == 0 {
            break;
        }
        assert!(a.running() && b.running());
        deadline.tick().await;
    }
    drained(&client, &s, &hw, &mut [&mut a, &mut b]).await;
    assert_exact(&client, &ds, &s, &hw).await;
    let re_read = a.log_text() + &b.log_text();
    assert!(
        re_read
            .matches("the partition's offset was moved by an operator")
            .count()
            >= PARTITIONS as usize,
        "each partition's owner took the move up:\n{re_read}"
    );

    // Poison a broken producer wrote into partition 0 while Ordo was
    // stopped: skipped, never dead-lettered; the skip is recorded.
    for o in [&mut a, &mut b] {
        assert!(
            o.terminate(Duration::from_secs(30)).success(),
            "{}",
            o.log_text()
        );
    }
    let poison: Vec<Raw> = (0..5)
        .map(|i| Raw {
            partition: 0,
            key: format!("broken-{i}").into_bytes(),
            payload: Some(b"{not json".to_vec()),
            headers: vec![],
        })
        .collect();
    produce_raw(&kafka.bootstrap(), &s.topic, &poison);
    let past = hw[0] + 5;
    let bad_skip = run_to_end(&[
        "offsets",
        "skip",
        "--topic",
        &s.topic,
        "--partition",
        "0",
        "--to-offset",
        "1",
        "--config",
        &path,
    ]);
    assert_eq!(
        bad_skip.0.code(),
        Some(2),
        "skip moves forward only: {}",
        bad_skip.2
    );
    let (status, stdout, stderr) = run_to_end(&[
        "offsets",
        "skip",
        "--topic",
        &s.topic,
        "--partition",
        "0",
        "--to-offset",
        &past.to_string(),
        "--config",
        &path,
    ]);
    assert!(status.success(), "{stdout}{stderr}");
    let mut c = Ordo::start(&config, dir.path().join("c.log"));
    let mut after = hw.clone();
    after[0] = past;
    drained(&client, &s, &after, &mut [&mut c]).await;
    assert!(
        c.terminate(Duration::from_secs(30)).success(),
        "{}",
        c.log_text()
    );
    let shown = show(&path);
    assert_eq!(shown[0]["skipped_offsets"], 5, "{:?}", shown[0]);
    assert_eq!(shown[0]["next_offset"], past);
    let last = moves(&client, &s.group).await.pop().unwrap();
    assert_eq!(last, (0, Some(hw[0]), past, "skip".to_string()));
    let dlq = format!("{}.dlq", s.topic);
    let letters: i64 = client
        .query_one(
            "SELECT count(*) FROM ordo_dead_lettered WHERE consumer_group = $1",
            &[&s.group],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(letters, 0, "nothing dead-lettered ({dlq})");
    assert!(
        !c.log_text().contains("dead-letter topic"),
        "{}",
        c.log_text()
    );
    assert_exact(&client, &ds, &s, &after).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_what_is_wrong_exits_2_and_moves_nothing() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(&kafka, &db, ROUTES);
    kafka.create_topic(&s.topic, 2);
    let client = db.client().await;
    client.batch_execute(CUSTOMER_TOTALS).await.unwrap();
    let ds = order_events::generate(400, 2, 20, 3);
    produce_raw(&kafka.bootstrap(), &s.topic, &produced(&ds));
    let hw = kafka.high_watermarks(&s.topic, 2);
    let config = s.write(dir.path(), "ordo.toml");
    let path = config.to_str().unwrap().to_string();
    let future = (std::time::SystemTime::now() + Duration::from_secs(3_600))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let past_end = (hw[1] + 1).to_string();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["set", "--to-earliest", "--topic", "nope"],
            "--topic nope: not one of source.topics".into(),
        ),
        (
            vec!["set", "--to-earliest", "--partitions", "0,7"],
            format!("topic {} partition 7: no such partition", s.topic),
        ),
        (
            vec!["set", "--to-earliest", "--partitions", "0,x"],
            "--partitions 0,x: `x` is not a partition number".into(),
        ),
        (
            vec!["set", "--to-offset", &past_end, "--partitions", "1"],
            format!(
                "--to-offset {past_end}: outside topic {} partition 1",
                s.topic
            ),
        ),
        (
            vec!["set", "--to-timestamp", &future],
            format!("--to-timestamp {future}: in the future"),
        ),
        (
            vec!["set", "--to-timestamp", "yesterday"],
            "--to-timestamp yesterday:".into(),
        ),
        (
            vec![
                "skip",
                "--topic",
                &s.topic,
                "--partition",
                "5",
                "--to-offset",
                "3",
            ],
            format!("topic {} partition 5: no such partition", s.topic),
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["offsets"];
        all.extend(args.iter().copied());
        all.extend(["--config", &path]);
        let (status, stdout, stderr) = run_to_end(&all);
        assert_eq!(status.code(), Some(2), "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains(&expected) && stderr.contains("nothing moved"),
            "{args:?}: {stderr}"
        );
    }
    let moved: i64 = client
        .query_one("SELECT count(*) FROM ordo_offset_moves", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(moved, 0);
    let stored: i64 = client
        .query_one("SELECT count(*) FROM ordo_offsets", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 0);
}
