//! `ordo demo`, the embedded default: in-process Kafka and Schema Registry,
//! Avro events written with three schema versions, late and duplicated, land
//! exactly once, in order, with reader schema v3's values; then the routes
//! example's order events land in its event store and read models.

mod support;

use ordo::demo::{orders, writer_of};
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
