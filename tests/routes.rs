//! Routes: order events of several types, late and duplicated, routed to an
//! event store of everything, a projection of `order.*` and an SQL route that
//! increments customer totals, all in one transaction with the offsets; kills,
//! a rebalance, a refused statement and its replay, a route added later.

mod support;

use std::time::Duration;

use ordo::demo::order_events;
use support::kafka::{produce_raw, Kafka};
use support::ordo::{run_to_end, Ordo, Setup};
use support::postgres::TestDb;
use support::routes::{
    assert_exact, assert_read_models, drained, produced, setup, CUSTOMER_TOTALS, ROUTES,
};
use support::{unique, Deadline};

const PARTITIONS: i32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_events_land_in_every_route_exactly_through_kills_and_a_rebalance() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(&kafka, &db, ROUTES);
    kafka.create_topic(&s.topic, PARTITIONS);
    let client = db.client().await;
    client.batch_execute(CUSTOMER_TOTALS).await.unwrap();
    // 40 versions per order stream: ten placed orders each, late and duplicated.
    let ds = order_events::generate(24_000, PARTITIONS, 600, 5);
    assert!(
        ds.inversions > 300 && ds.duplicates > 300,
        "{} {}",
        ds.inversions,
        ds.duplicates
    );
    let records = produced(&ds);
    let (first, rest) = records.split_at(records.len() / 3);
    produce_raw(&kafka.bootstrap(), &s.topic, first);
    let config = s.write(dir.path(), "ordo.toml");
    let mut a = Ordo::start(&config, dir.path().join("a.log"));
    // Let A make progress, then a second replica joins: a rebalance.
    let deadline = Deadline::new("first rows", Duration::from_secs(60));
    while count(&client, "order_events").await < 2_000 {
        assert!(a.running(), "{}", a.log_text());
        deadline.tick().await;
    }
    let mut b = Ordo::start(&config, dir.path().join("b.log"));
    let producer = {
        let (rest, topic, bootstrap) = (rest.to_vec(), s.topic.clone(), kafka.bootstrap());
        std::thread::spawn(move || {
            for chunk in rest.chunks(2_000) {
                produce_raw(&bootstrap, &topic, chunk);
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };
    // Kill A mid-stream twice, B once.
    for round in 0..3 {
        let before = count(&client, "order_events").await;
        let deadline = Deadline::new("progress before a kill", Duration::from_secs(120));
        while count(&client, "order_events").await < before + 1_500 {
            assert!(b.running(), "{}", b.log_text());
            deadline.tick().await;
            if count(&client, "order_events").await >= ds.keys as i64 * ds.versions {
                break;
            }
        }
        if round == 1 {
            b.crash();
            b = Ordo::start(&config, dir.path().join(format!("b{round}.log")));
        } else {
            a.crash();
            a = Ordo::start(&config, dir.path().join(format!("a{round}.log")));
        }
    }
    producer.join().unwrap();
    let hw = kafka.high_watermarks(&s.topic, PARTITIONS);
    drained(&client, &s, &hw, &mut [&mut a, &mut b]).await;
    for o in [&mut a, &mut b] {
        let status = o.terminate(Duration::from_secs(30));
        assert!(status.success(), "{status}:\n{}", o.log_text());
    }
    assert_exact(&client, &ds, &s, &hw).await;
    // The event store route takes every event: it is the key state, and
    // no key state of its own is written.
    let own: i64 = client
        .query_one("SELECT count(*) FROM ordo_key_versions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(own, 0);
}

async fn count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}

fn header_text(m: &rdkafka::message::OwnedMessage, name: &str) -> String {
    use rdkafka::message::{Headers, Message};
    m.headers()
        .and_then(|hs| {
            hs.iter()
                .find(|h| h.key == name)
                .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_statement_leaves_nothing_of_its_event_and_its_replay_applies_once() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let s = Setup {
        dead_letter: true,
        ..setup(&kafka, &db, ROUTES)
    };
    let dlq = format!("{}.dlq", s.topic);
    kafka.create_topic(&s.topic, 2);
    kafka.create_topic(&dlq, 1);
    let client = db.client().await;
    client.batch_execute(CUSTOMER_TOTALS).await.unwrap();
    // The read model refuses one customer (a rule to be lifted later).
    let ds = order_events::generate(2_000, 2, 100, 9);
    let refused_customer = order_events::customer(&ordo::demo::data::key_name(0));
    client
        .batch_execute(&format!(
            "ALTER TABLE customer_totals ADD CONSTRAINT not_yet CHECK (customer <> '{refused_customer}')"
        ))
        .await
        .unwrap();
    let refused: Vec<(String, i64)> = (0..ds.keys)
        .map(ordo::demo::data::key_name)
        .filter(|k| order_events::customer(k) == refused_customer)
        .flat_map(|k| {
            (1..=ds.versions)
                .filter(|v| order_events::event_type(*v) == "order.placed")
                .map(move |v| (k.clone(), v))
        })
        .collect();
    assert!(!refused.is_empty());
    produce_raw(&kafka.bootstrap(), &s.topic, &produced(&ds));
    let config = s.write(dir.path(), "ordo.toml");
    let mut ordo = Ordo::start(&config, dir.path().join("ordo.log"));
    let hw = kafka.high_watermarks(&s.topic, 2);
    drained(&client, &s, &hw, &mut [&mut ordo]).await;
    // Nothing of a refused event in any route; the keys went on.
    for (key, version) in &refused {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM order_events WHERE stream = $1 AND version = $2",
                &[&key.as_str(), &version],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "{key} v{version} is in no route");
    }
    assert_eq!(
        count(&client, "order_events").await,
        ds.keys as i64 * ds.versions - refused.len() as i64
    );
    let letters = kafka.read_all(&dlq, refused.len());
    assert_eq!(letters.len(), refused.len());
    for m in &letters {
        assert_eq!(header_text(m, "ordo.route"), "customer_totals");
        assert_eq!(header_text(m, "ordo.event.type"), "order.placed");
        assert!(header_text(m, "ordo.error.message").contains("not_yet"));
    }
    // The cause is fixed; the replay applies each refused event once in
    // every route, and a second replay changes nothing.
    client
        .batch_execute("ALTER TABLE customer_totals DROP CONSTRAINT not_yet")
        .await
        .unwrap();
    for group in ["first", "second"] {
        let path = config.clone();
        let (status, stdout, stderr) = tokio::task::spawn_blocking(move || {
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
        .unwrap();
        assert_eq!(status.code(), Some(0), "{stderr}");
        assert!(
            stdout.contains(&format!("replayed {}", refused.len())),
            "{stdout}"
        );
        let hw = kafka.high_watermarks(&s.topic, 2);
        drained(&client, &s, &hw, &mut [&mut ordo]).await;
        // Every event once (the replayed ones appended after the others).
        let (rows, distinct): (i64, i64) = client
            .query_one(
                "SELECT count(*), count(DISTINCT (stream, version)) FROM order_events",
                &[],
            )
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert_eq!((rows, distinct), (ds.keys as i64 * ds.versions, rows));
        assert_read_models(&client, &ds).await;
    }
    assert!(ordo.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_added_later_catches_up_alone_and_joins_without_doubling() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (event_store, rest) = ROUTES.split_at(
        ROUTES
            .find("[[sink.postgres.routes]]\nname = \"orders\"")
            .unwrap(),
    );
    let (projection, sql_route) = rest.split_at(
        rest.find("[[sink.postgres.routes]]\nname = \"customer_totals\"")
            .unwrap(),
    );
    // The system as it was: an event store and a projection.
    let main = setup(&kafka, &db, &format!("{event_store}{projection}"));
    kafka.create_topic(&main.topic, 2);
    let client = db.client().await;
    client.batch_execute(CUSTOMER_TOTALS).await.unwrap();
    let ds = order_events::generate(4_000, 2, 100, 3);
    let records = produced(&ds);
    let (old, new) = records.split_at(records.len() / 2);
    produce_raw(&kafka.bootstrap(), &main.topic, old);
    let main_config = main.write(dir.path(), "main.toml");
    let mut ordo = Ordo::start(&main_config, dir.path().join("main.log"));
    let hw = kafka.high_watermarks(&main.topic, 2);
    drained(&client, &main, &hw, &mut [&mut ordo]).await;
    // The new read model runs alone, in a group of its own, from earliest,
    // while the main deployment goes on and events keep coming.
    let alone = Setup {
        group: unique("customer-totals"),
        source: "event_type = \"field:type\"\nunrouted = \"ignore\"".into(),
        tail: sql_route.into(),
        ..main.clone()
    };
    let alone_config = alone.write(dir.path(), "alone.toml");
    let mut catching_up = Ordo::start(&alone_config, dir.path().join("alone.log"));
    produce_raw(&kafka.bootstrap(), &main.topic, &new[..new.len() / 2]);
    let hw = kafka.high_watermarks(&main.topic, 2);
    drained(&client, &alone, &hw, &mut [&mut catching_up]).await;
    // It caught up: the route moves into the main configuration (a rolling
    // restart) while the separate deployment still runs; both run the route
    // over the same events for a while.
    let joined = Setup {
        tail: ROUTES.into(),
        ..main.clone()
    };
    let joined_config = joined.write(dir.path(), "joined.toml");
    assert!(ordo.terminate(Duration::from_secs(30)).success());
    let mut ordo = Ordo::start(&joined_config, dir.path().join("joined.log"));
    produce_raw(&kafka.bootstrap(), &main.topic, &new[new.len() / 2..]);
    let hw = kafka.high_watermarks(&main.topic, 2);
    drained(&client, &alone, &hw, &mut [&mut catching_up, &mut ordo]).await;
    drained(&client, &main, &hw, &mut [&mut catching_up, &mut ordo]).await;
    assert!(catching_up.terminate(Duration::from_secs(30)).success());
    assert!(ordo.terminate(Duration::from_secs(30)).success());
    assert_exact(&client, &ds, &main, &hw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_events_are_dead_lettered_or_ignored_as_configured() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let only_placed = "[[sink.postgres.routes]]\nname = \"placed\"\nevent_types = [\"order.placed\"]\ntable = \"placed\"\nmode = \"event_store\"\n";
    let ds = order_events::generate(400, 1, 20, 1);
    let placed = (1..=ds.versions)
        .filter(|v| order_events::event_type(*v) == "order.placed")
        .count() as i64
        * ds.keys as i64;
    let unrouted = ds.keys as i64 * ds.versions - placed;
    for (policy, letters) in [("dead_letter", unrouted), ("ignore", 0)] {
        let s = Setup {
            dead_letter: true,
            source: format!("event_type = \"field:type\"\nunrouted = \"{policy}\""),
            ..setup(&kafka, &db, only_placed)
        };
        kafka.create_topic(&s.topic, 1);
        kafka.create_topic(&format!("{}.dlq", s.topic), 1);
        let client = db.client().await;
        client
            .batch_execute("DROP TABLE IF EXISTS placed")
            .await
            .unwrap();
        produce_raw(&kafka.bootstrap(), &s.topic, &produced(&ds));
        let config = s.write(dir.path(), &format!("{policy}.toml"));
        let mut ordo = Ordo::start(&config, dir.path().join(format!("{policy}.log")));
        let hw = kafka.high_watermarks(&s.topic, 1);
        drained(&client, &s, &hw, &mut [&mut ordo]).await;
        assert!(ordo.terminate(Duration::from_secs(30)).success());
        assert_eq!(count(&client, "placed").await, placed, "{policy}");
        let dlq = kafka.high_watermarks(&format!("{}.dlq", s.topic), 1);
        assert_eq!(dlq, vec![letters], "{policy}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_check_show_every_route_and_name_a_statement_at_fault() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let s = setup(&kafka, &db, ROUTES);
    kafka.create_topic(&s.topic, 1);
    let config = s.write(dir.path(), "ordo.toml");
    let path = config.to_str().unwrap().to_string();
    let (status, plan, stderr) = run_to_end(&["sink", "plan", "--config", &path]);
    assert_eq!(status.code(), Some(0), "{stderr}");
    for expected in [
        "-- route all_events: table public.order_events",
        "CREATE TABLE IF NOT EXISTS \"public\".\"order_events\"",
        "-- route orders: table public.orders",
        "-- route customer_totals: SQL",
        "VALUES ($1, 1, $2::numeric)",
        "$1 = ${data.customer}, $2 = ${data.amount}",
        "ordo_key_versions",
        "ordo_route_versions",
    ] {
        assert!(plan.contains(expected), "{expected:?} in:\n{plan}");
    }
    // The read model's table is missing: check names the route and statement.
    let (status, out, err) = run_to_end(&["check", "--config", &path]);
    let text = format!("{out}{err}");
    assert_ne!(status.code(), Some(0), "{text}");
    assert!(
        text.contains("route customer_totals, statement 1") && text.contains("customer_totals"),
        "{text}"
    );
    db.client()
        .await
        .batch_execute(CUSTOMER_TOTALS)
        .await
        .unwrap();
    let (status, out, err) = run_to_end(&["check", "--config", &path]);
    assert_eq!(status.code(), Some(0), "{out}{err}");
    assert!(
        out.contains("customer_totals -> 1 SQL statement(s)"),
        "{out}"
    );
}
