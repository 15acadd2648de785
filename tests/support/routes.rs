//! Routes in tests: the documented three-route configuration (an event
//! store, a projection, an SQL route), order events as produced, and the
//! checks that each read model holds exactly what the events say.

use std::collections::BTreeMap;
use std::time::Duration;

use ordo::demo::order_events;

use super::data::{self, Dataset};
use super::kafka::{Kafka, Raw};
use super::ordo::{Ordo, Setup};
use super::postgres::TestDb;
use super::{unique, Deadline};

/// The three routes of the documented configuration shape.
pub const ROUTES: &str = r#"
[[sink.postgres.routes]]
name = "all_events"
table = "order_events"
mode = "event_store"

[[sink.postgres.routes]]
name = "orders"
event_types = ["order.*"]
table = "orders"
mode = "projection"

[[sink.postgres.routes]]
name = "customer_totals"
event_types = ["order.placed"]
sql = """
INSERT INTO customer_totals (customer, orders, amount)
VALUES (${data.customer}, 1, ${data.amount}::numeric)
ON CONFLICT (customer) DO UPDATE
SET orders = customer_totals.orders + 1, amount = customer_totals.amount + EXCLUDED.amount
"""
"#;

pub const CUSTOMER_TOTALS: &str = "CREATE TABLE customer_totals (
    customer text PRIMARY KEY, orders bigint NOT NULL, amount numeric(14,2) NOT NULL)";

pub fn setup(kafka: &Kafka, db: &TestDb, routes: &str) -> Setup {
    Setup {
        bootstrap: kafka.bootstrap(),
        group: unique("ordo"),
        topic: unique("orders"),
        db_url: db.url.clone(),
        mode: "",
        key: "field:id".into(),
        source: "event_type = \"field:type\"".into(),
        tail: routes.into(),
        ..Setup::default()
    }
}

pub fn produced(ds: &Dataset) -> Vec<Raw> {
    ds.records
        .iter()
        .map(|r| Raw {
            partition: r.partition,
            key: r.key.clone().unwrap_or_default(),
            payload: Some(r.payload.clone()),
            headers: vec![],
        })
        .collect()
}

pub async fn totals(client: &tokio_postgres::Client) -> BTreeMap<String, (i64, i64)> {
    client
        .query(
            "SELECT customer, orders, (amount * 100)::bigint FROM customer_totals",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
}

/// Every route holds exactly what the events say.
pub async fn assert_exact(client: &tokio_postgres::Client, ds: &Dataset, s: &Setup, hw: &[i64]) {
    data::assert_event_store_exact(client, "order_events", ds, &s.group, &s.topic, hw).await;
    assert_read_models(client, ds).await;
}

/// The read models hold exactly what the events say (the event store's
/// rows are checked apart).
pub async fn assert_read_models(client: &tokio_postgres::Client, ds: &Dataset) {
    let wrong: i64 = client
        .query_one(
            "SELECT count(*) FROM orders WHERE version <> $1 OR state->>'type' <> $2 OR state->>'id' <> key",
            &[&ds.versions, &order_events::event_type(ds.versions)],
        )
        .await
        .unwrap()
        .get(0);
    let rows: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((rows, wrong), (ds.keys as i64, 0), "the orders projection");
    assert_eq!(
        totals(client).await,
        order_events::customer_totals(ds),
        "customer totals: each placed order counted once"
    );
}

pub async fn drained(
    client: &tokio_postgres::Client,
    s: &Setup,
    hw: &[i64],
    replicas: &mut [&mut Ordo],
) {
    let deadline = Deadline::new(
        format!("stored offsets to reach {hw:?}"),
        Duration::from_secs(240),
    );
    loop {
        for o in replicas.iter_mut() {
            assert!(o.running(), "a replica exited:\n{}", o.log_text());
        }
        if data::stored_offsets(client, &s.group, &s.topic).await == hw {
            return;
        }
        deadline.tick().await;
    }
}
