//! Routes through a PostgreSQL outage: the event store, the projection and
//! the incrementing SQL route stay exact while PostgreSQL is away for 10 s
//! with events arriving, since all of a batch's routes and its offset commit
//! together or not at all.
//!
//! Its own test binary: it stops the PostgreSQL cluster the binary's tests share.

mod support;

use std::time::Duration;

use ordo::demo::order_events;
use support::kafka::{produce_raw, Kafka};
use support::ordo::Ordo;
use support::postgres::{cluster, TestDb};
use support::routes::{assert_exact, drained, produced, setup, CUSTOMER_TOTALS, ROUTES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_stays_exact_through_a_postgres_outage() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(&kafka, &db, ROUTES);
    kafka.create_topic(&s.topic, 4);
    let client = db.client().await;
    client.batch_execute(CUSTOMER_TOTALS).await.unwrap();
    let ds = order_events::generate(12_000, 4, 300, 17);
    let records = produced(&ds);
    let (first, rest) = records.split_at(records.len() / 2);
    produce_raw(&kafka.bootstrap(), &s.topic, first);
    let config = s.write(dir.path(), "ordo.toml");
    let mut ordo = Ordo::start(&config, dir.path().join("ordo.log"));
    // Mid-stream, PostgreSQL goes away; events keep arriving.
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster().stop();
    produce_raw(&kafka.bootstrap(), &s.topic, rest);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        ordo.running(),
        "Ordo waits out an outage:\n{}",
        ordo.log_text()
    );
    cluster().start_again();
    let client = db.client().await;
    let hw = kafka.high_watermarks(&s.topic, 4);
    drained(&client, &s, &hw, &mut [&mut ordo]).await;
    assert!(ordo.terminate(Duration::from_secs(30)).success());
    assert_exact(&client, &ds, &s, &hw).await;
}
