//! `ordo offsets set` while PostgreSQL is down fails clearly and moves
//! nothing; once PostgreSQL is back the same move applies whole.
//!
//! Its own test binary: it stops the PostgreSQL cluster the binary's tests share.

mod support;

use std::time::Duration;

use ordo::demo::order_events;
use support::data;
use support::kafka::{produce_raw, Kafka};
use support::ordo::{run_to_end, Ordo};
use support::postgres::{cluster, TestDb};
use support::routes::{drained, produced, setup, CUSTOMER_TOTALS, ROUTES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_with_postgres_down_fails_clearly_and_moves_nothing() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(&kafka, &db, ROUTES);
    kafka.create_topic(&s.topic, 2);
    let client = db.client().await;
    client.batch_execute(CUSTOMER_TOTALS).await.unwrap();
    let ds = order_events::generate(2_000, 2, 50, 23);
    produce_raw(&kafka.bootstrap(), &s.topic, &produced(&ds));
    let hw = kafka.high_watermarks(&s.topic, 2);
    let config = s.write(dir.path(), "ordo.toml");
    let path = config.to_str().unwrap().to_string();
    let mut ordo = Ordo::start(&config, dir.path().join("ordo.log"));
    drained(&client, &s, &hw, &mut [&mut ordo]).await;
    assert!(
        ordo.terminate(Duration::from_secs(30)).success(),
        "{}",
        ordo.log_text()
    );
    drop(client);

    cluster().stop();
    let (status, stdout, stderr) =
        run_to_end(&["offsets", "set", "--to-earliest", "--config", &path]);
    cluster().start_again();
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("nothing moved"), "{stderr}");
    assert!(!stdout.contains("moved 2 partitions"), "{stdout}");

    let client = db.client().await;
    assert_eq!(
        data::stored_offsets(&client, &s.group, &s.topic).await,
        hw,
        "nothing moved"
    );
    let moves: i64 = client
        .query_one("SELECT count(*) FROM ordo_offset_moves", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(moves, 0);

    let (status, stdout, stderr) =
        run_to_end(&["offsets", "set", "--to-earliest", "--config", &path]);
    assert!(status.success(), "{stdout}{stderr}");
    assert_eq!(
        data::stored_offsets(&client, &s.group, &s.topic).await,
        vec![0, 0]
    );
}
