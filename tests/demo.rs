//! `ordo demo`, the embedded default: in-process Kafka and Schema Registry,
//! Avro events written with three schema versions, late and duplicated, land
//! exactly once, in order, with reader schema v3's values; then the routes
//! example's order events land in its event store and read models.

mod support;

use ordo::demo::{orders, writer_of};
use std::time::Duration;
use support::ordo::run_to_end;
use support::postgres::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_lands_every_event_once_with_its_values() {
    let db = TestDb::new().await;
    let (status, stdout, stderr) = tokio::task::spawn_blocking({
        let url = db.url.clone();
        move || {
            run_to_end(&[
                "demo",
                "--postgres",
                &url,
                "--events",
                "3000",
                "--keys",
                "30",
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("of 3000 distinct events"), "{stdout}");
    assert!(
        !stdout.contains("CONFWARN") && !stderr.contains("CONFWARN"),
        "librdkafka configuration warnings in the demo's output:\n{stdout}\n{stderr}"
    );
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT stream, version, payload FROM demo_events ORDER BY position",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 3000);
    let mut next = std::collections::HashMap::<String, i64>::new();
    let mut writers = [0usize; 3];
    for row in rows {
        let (stream, version, payload): (String, i64, serde_json::Value) =
            (row.get(0), row.get(1), row.get(2));
        let n = next.entry(stream.clone()).or_insert(1);
        assert_eq!(version, *n, "{stream}: versions in applied order");
        *n += 1;
        let writer = writer_of(&stream, version);
        writers[writer - 1] += 1;
        assert_eq!(payload, orders::expected(writer, 3, &stream, version));
    }
    assert_eq!(next.len(), 30);
    assert!(
        writers.iter().all(|&w| w > 500),
        "all three writers used: {writers:?}"
    );
    // The routes example ran too: every event in the event store, one row
    // per order, each placed order counted once per customer.
    assert!(stdout.contains("routes example"), "{stdout}");
    assert!(stdout.contains("customer_totals (top 3)"), "{stdout}");
    let one = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(one("SELECT count(*) FROM order_events").await, 3000);
    assert_eq!(one("SELECT count(*) FROM orders").await, 30);
    assert_eq!(
        one("SELECT sum(orders)::bigint FROM customer_totals").await,
        30 * 25,
        "100 versions per order: 25 placed"
    );
    assert_eq!(
        one("SELECT count(*) FROM orders WHERE status <> 'delivered'").await,
        0,
        "each order's last event (version 100) delivered it"
    );
}

/// Where `ordo demo --keep` wrote the configuration of `format`.
fn kept_config(out: &str, format: &str) -> std::path::PathBuf {
    let prefix = format!("  {format}: ");
    out.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {format} configuration in:\n{out}"))
        .trim()
        .into()
}

/// `ordo produce` into a kept topic, then `ordo run` with the kept
/// configuration until the table holds every event: each key's versions
/// 1..=last once, in order.
async fn produce_and_land(db: &TestDb, config: &std::path::Path, table: &str, events: usize) {
    let expected = config.with_extension("expected.csv");
    let (status, stdout, stderr) = tokio::task::spawn_blocking({
        let config = config.to_path_buf();
        let expected = expected.clone();
        let events = events.to_string();
        move || {
            run_to_end(&[
                "produce",
                "--config",
                config.to_str().unwrap(),
                "--events",
                &events,
                "--keys",
                "20",
                "--expected",
                expected.to_str().unwrap(),
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0), "{stdout}\n{stderr}");
    let last: std::collections::HashMap<String, i64> = std::fs::read_to_string(&expected)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(','))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect();
    assert_eq!(last.values().sum::<i64>(), events as i64);
    let log = config.with_extension("log");
    let mut ordo = support::ordo::Ordo::start(config, log);
    let client = db.client().await;
    let deadline = support::Deadline::new(
        format!("{events} events in {table}"),
        Duration::from_secs(120),
    );
    let count = format!("SELECT count(*) FROM {table}");
    loop {
        let n: i64 = match client.query_one(count.as_str(), &[]).await {
            Ok(row) => row.get(0),
            Err(_) => 0,
        };
        if n >= events as i64 {
            break;
        }
        assert!(ordo.running(), "{}", ordo.log_text());
        deadline.tick().await;
    }
    let status = ordo.terminate(Duration::from_secs(30));
    assert!(status.success(), "{}", ordo.log_text());
    let rows = client
        .query(
            format!("SELECT stream, version FROM {table} ORDER BY position").as_str(),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), events, "{table}: every event once");
    let mut next = std::collections::HashMap::<String, i64>::new();
    for row in rows {
        let (stream, version): (String, i64) = (row.get(0), row.get(1));
        let n = next.entry(stream.clone()).or_insert(1);
        assert_eq!(version, *n, "{table}: {stream}'s versions in order");
        *n += 1;
    }
    for (key, last) in &last {
        assert_eq!(next.get(key), Some(&(last + 1)), "{table}: {key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_demo_serves_a_users_own_configuration_with_json_and_avro() {
    use std::io::{BufRead, BufReader};
    let db = TestDb::new().await;
    let mut demo = std::process::Command::new(support::ordo::binary())
        .args([
            "demo",
            "--postgres",
            &db.url,
            "--events",
            "300",
            "--keys",
            "10",
            "--keep",
        ])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        let mut out = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            out.push_str(&line);
            out.push('\n');
            if line.starts_with("Ctrl-C stops") {
                break;
            }
        }
        out
    })
    .await
    .unwrap();
    assert!(out.contains("kept running (--keep)"), "{out}");
    assert!(out.contains("Schema Registry: http://127.0.0.1:"), "{out}");
    let json = kept_config(&out, "json");
    let avro = kept_config(&out, "avro");
    let dir = json.parent().unwrap().to_path_buf();
    produce_and_land(&db, &json, "try_json", 2000).await;
    produce_and_land(&db, &avro, "try_avro", 600).await;
    let client = db.client().await;
    // The Avro events were resolved to reader schema v3 (`buyer`, which v1
    // and v2 call `customer`).
    let buyers: i64 = client
        .query_one(
            "SELECT count(*) FROM try_avro WHERE payload ? 'buyer' AND NOT payload ? 'customer'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(buyers, 600);
    // Ctrl-C ends the kept services and removes the written files.
    let pid = demo.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = demo.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!dir.exists(), "{} removed", dir.display());
}
