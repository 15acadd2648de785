//! The PostgreSQL sink on its own, against a real PostgreSQL: the key state
//! it reads back from the target table, the plan of that lookup, and batches
//! appended by `COPY` falling back to `ON CONFLICT` when the table has an
//! event already, small batches of several partitions sharing a
//! transaction, and the key column's collation (bytewise when Ordo creates
//! the table, the table's own when it exists).

mod support;

use ordo::config::Settings;
use ordo::record::Event;
use ordo::sink::postgres::PostgresSink;
use ordo::sink::Batch;
use support::postgres::TestDb;

async fn sink(db: &TestDb, mode: &str, table: &str) -> PostgresSink {
    sink_with(db, mode, table, "").await
}

async fn sink_with(db: &TestDb, mode: &str, table: &str, extra: &str) -> PostgresSink {
    let pool = if extra.contains("pool_size") {
        ""
    } else {
        "pool_size = 2"
    };
    connected(
        db,
        "sink-test",
        &format!("mode = \"{mode}\"\ntable = \"{table}\"\n{pool}\n{extra}"),
    )
    .await
}

/// A sink of `routes` (TOML of `[[sink.postgres.routes]]`) for `group`.
async fn routed_sink(db: &TestDb, group: &str, routes: &str) -> PostgresSink {
    connected(db, group, &format!("pool_size = 2\n\n{routes}")).await
}

/// A migrated sink for `group` whose `[sink.postgres]` section (after its
/// `url`) is `postgres`.
async fn connected(db: &TestDb, group: &str, postgres: &str) -> PostgresSink {
    let toml = format!(
        r#"[kafka]
"bootstrap.servers" = "127.0.0.1:9"
"group.id" = "{group}"

[source]
topics = ["orders"]

[ordering]
key = "message_key"
sequence = "field:version"

[sink.postgres]
url = "{url}"
{postgres}
"#,
        url = db.url,
    );
    let settings = Settings::load_embedded(&toml, &[]).expect("config");
    let pg = settings.sink.postgres.as_ref().expect("[sink.postgres]");
    let sink = PostgresSink::connect(pg, group, settings.sink.batch_max_events)
        .await
        .expect("connect");
    sink.migrate().await.expect("migrate");
    sink
}

fn events(key: &str, versions: std::ops::RangeInclusive<i64>, first_offset: i64) -> Vec<Event> {
    versions
        .enumerate()
        .map(|(i, v)| {
            let mut e = Event::for_test(key, v, first_offset + i as i64);
            e.timestamp_ms = Some(1_700_000_000_123 + v);
            e
        })
        .collect()
}

/// (key, version) rows of `sql`.
async fn key_versions(client: &tokio_postgres::Client, sql: &str) -> Vec<(String, i64)> {
    client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn batch(events: Vec<Event>, next_offset: i64) -> Batch {
    Batch {
        events,
        next_offset,
        ..Batch::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_state_is_the_highest_version_the_table_holds() {
    let db = TestDb::new().await;
    for (mode, table) in [("event_store", "events"), ("projection", "latest")] {
        let sink = sink(&db, mode, table).await;
        let lease = sink.acquire("orders", 0, "test").await.unwrap();
        let mut all = events("a", 1..=3, 0);
        all.extend(events("b", 1..=1, 3));
        all.extend(events("a", 4..=5, 4));
        sink.write(&lease, &batch(all, 6)).await.unwrap();
        let keys: Vec<String> = ["a", "b", "never"].map(String::from).to_vec();
        let states = sink.key_states(&keys).await.unwrap();
        assert_eq!(states.len(), 2, "{mode}: {states:?}");
        assert_eq!(states.get("a"), Some(&5), "{mode}");
        assert_eq!(states.get("b"), Some(&1), "{mode}");
        assert_eq!(states.get("never"), None, "{mode}");
        assert_eq!(
            sink.stored_offsets("orders").await.unwrap().get(&0),
            Some(&6)
        );
    }
    let client = db.client().await;
    let separate: Option<String> = client
        .query_one("SELECT to_regclass('ordo_key_state')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(separate, None, "no separate key state table");
}

/// Key-state lookups of several partitions made at once, with one slot
/// (`pool_size = 1`): the three queued behind the first are read in one
/// statement over all their keys (the queue's unit tests show the
/// grouping; this test does not count statements). Each lookup gets the
/// state of its own keys only, never another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_made_at_once_are_read_together_and_answer_their_own_keys() {
    let db = TestDb::new().await;
    let sink = sink_with(&db, "event_store", "events", "pool_size = 1").await;
    let lease = sink.acquire("orders", 0, "test").await.unwrap();
    let mut all = events("a", 1..=3, 0);
    all.extend(events("b", 1..=2, 3));
    all.extend(events("c", 1..=1, 5));
    sink.write(&lease, &batch(all, 6)).await.unwrap();
    let lookups: Vec<Vec<String>> = [vec!["a", "never"], vec!["b"], vec!["c", "a"], vec!["none"]]
        .iter()
        .map(|keys| keys.iter().map(|k| k.to_string()).collect())
        .collect();
    let states = futures::future::join_all(
        lookups
            .iter()
            .map(|keys| ordo::sink::Sink::key_states(&sink, keys)),
    )
    .await;
    let states: Vec<Vec<(String, i64)>> = states
        .into_iter()
        .map(|s| {
            let mut s: Vec<(String, i64)> = s.unwrap().into_iter().collect();
            s.sort();
            s
        })
        .collect();
    let expect = |pairs: &[(&str, i64)]| -> Vec<(String, i64)> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    };
    assert_eq!(
        states,
        [
            expect(&[("a", 3)]),
            expect(&[("b", 2)]),
            expect(&[("a", 3), ("c", 1)]),
            expect(&[])
        ]
    );
}

/// The lookup stays a primary-key probe per key even when its prepared plan
/// was made generic while the table was empty and had no statistics: a plan
/// reading the whole table per call made throughput fall with the key space.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_state_lookup_probes_the_primary_key_whatever_the_statistics() {
    let db = TestDb::new().await;
    let client = db.client().await;
    for (mode, table, insert) in [
        (
            "event_store",
            "events",
            "INSERT INTO events (stream, version, payload, topic, partition, \"offset\") \
             SELECT 'k' || (g % 50000), g / 50000 + 1, '{}', 'orders', 0, g FROM generate_series(0, 199999) g",
        ),
        (
            "projection",
            "latest",
            "INSERT INTO latest (key, version, state, topic, partition, \"offset\") \
             SELECT 'k' || g, 1, '{}', 'orders', 0, g FROM generate_series(0, 199999) g",
        ),
    ] {
        let sink = sink(&db, mode, table).await;
        let sql = sink.key_state_statement();
        client
            .batch_execute("SET plan_cache_mode = force_generic_plan")
            .await
            .unwrap();
        for stage in ["empty, no statistics", "200,000 rows, analyzed"] {
            if stage.starts_with("200") {
                client.batch_execute(insert).await.unwrap();
                client
                    .batch_execute(&format!("ANALYZE {table}"))
                    .await
                    .unwrap();
            }
            client
                .batch_execute(&format!(
                    "DEALLOCATE ALL; PREPARE lookup(text[]) AS {sql}"
                ))
                .await
                .unwrap();
            let text: Vec<String> = client
                .query("EXPLAIN EXECUTE lookup('{k1,k2,k3}')", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            // The one filter allowed drops the keys the tables do not hold.
            let text = text
                .iter()
                .filter(|l| l.trim() != "Filter: (s.version IS NOT NULL)")
                .cloned()
                .collect::<Vec<_>>()
                .join("\n");
            // Side tables are probed per key only when they hold a row for
            // the target: one check per lookup, by their primary key.
            assert!(
                text.contains("Index Only Scan using ordo_passed_versions_pkey on ordo_passed_versions x0"),
                "{mode}, {stage}: no once-per-lookup check of the passed versions:\n{text}"
            );
            // Index Scan, Index Only Scan, either Backward (for max).
            assert!(
                text.contains(&format!("Scan using {table}_pkey"))
                    || text.contains(&format!("Scan Backward using {table}_pkey")),
                "{mode}, {stage}: no probe of the primary key:\n{text}"
            );
            for whole_table in ["Seq Scan", "Hash", "Filter", "Bitmap"] {
                assert!(
                    !text.contains(whole_table),
                    "{mode}, {stage}: the plan reads more than one key's rows ({whole_table}):\n{text}"
                );
            }
        }
    }
}

/// Released events are appended by `COPY`; when the table holds one of them
/// already (another writer got there: a key that moved partitions, an
/// earlier replay), the batch is written again with `ON CONFLICT` in a new
/// transaction: nothing doubled, nothing lost, progress stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_meeting_an_event_already_stored_is_absorbed_not_doubled() {
    let db = TestDb::new().await;
    let sink = sink(&db, "event_store", "events").await;
    let lease = sink.acquire("orders", 0, "test").await.unwrap();
    let first = sink
        .write(&lease, &batch(events("a", 1..=3, 0), 3))
        .await
        .unwrap();
    assert_eq!((first.applied, first.absorbed), (3, 0));
    // Versions 3 to 6 of `a`: 3 is in the table already.
    let mut again = events("a", 3..=6, 3);
    again.extend(events("b", 1..=2, 7));
    let second = sink.write(&lease, &batch(again, 9)).await.unwrap();
    assert_eq!((second.applied, second.absorbed), (5, 1));
    let client = db.client().await;
    let rows: Vec<(String, i64, Option<std::time::SystemTime>)> = client
        .query(
            "SELECT stream, version, event_time FROM events ORDER BY position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let keys: Vec<(&str, i64)> = rows.iter().map(|(s, v, _)| (s.as_str(), *v)).collect();
    assert_eq!(
        keys,
        [
            ("a", 1),
            ("a", 2),
            ("a", 3),
            ("a", 4),
            ("a", 5),
            ("a", 6),
            ("b", 1),
            ("b", 2)
        ]
    );
    let at = rows[0].2.expect("event_time");
    assert_eq!(
        at.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
        1_700_000_000_124,
        "event_time keeps the record's millisecond timestamp"
    );
    assert_eq!(
        sink.stored_offsets("orders").await.unwrap().get(&0),
        Some(&9)
    );
}

/// Small batches of several partitions written at once, with one writer
/// slot (`pool_size = 1`): those that queue while it is busy share one
/// transaction. When a grouped write fails (a lease taken over, an event
/// already stored) each batch is written on its own and gets its own
/// outcome: the fenced partition is told so and nothing of its batch lands,
/// the others land, the event already stored is absorbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_batches_of_several_partitions_share_a_transaction_and_keep_their_own_outcomes() {
    let db = TestDb::new().await;
    let sink = sink_with(&db, "event_store", "events", "pool_size = 1").await;
    let mut leases = Vec::new();
    for p in 0..5 {
        leases.push(sink.acquire("orders", p, "test").await.unwrap());
    }
    let key = |p: usize| format!("k{p}");
    let first: Vec<Batch> = (0..5)
        .map(|p| batch(events(&key(p), 1..=2, 0), 2))
        .collect();
    let written =
        futures::future::join_all(leases.iter().zip(&first).map(|(l, b)| sink.write(l, b))).await;
    for (p, w) in written.into_iter().enumerate() {
        assert_eq!(w.unwrap().applied, 2, "partition {p}");
    }
    let client = db.client().await;
    let transactions: i64 = client
        .query_one("SELECT count(DISTINCT xmin::text) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    // The first batch alone, the four queued behind it together.
    assert_eq!(transactions, 2);

    // Partition 4 is taken over; partition 3's batch repeats an event stored already.
    let stale = leases[4].clone();
    sink.acquire("orders", 4, "another").await.unwrap();
    let second: Vec<Batch> = (0..5)
        .map(|p| {
            let from = if p == 3 { 2 } else { 3 };
            batch(events(&key(p), from..=4, 2), 5)
        })
        .collect();
    let mut with_stale = leases[..4].to_vec();
    with_stale.push(stale);
    let written = futures::future::join_all(
        with_stale
            .iter()
            .zip(&second)
            .map(|(l, b)| sink.write(l, b)),
    )
    .await;
    let outcomes: Vec<String> = written
        .iter()
        .map(|w| match w {
            Ok(w) => format!("{}+{}", w.applied, w.absorbed),
            Err(e) => format!("{e}"),
        })
        .collect();
    assert_eq!(outcomes[..4], ["2+0", "2+0", "2+0", "2+1"], "{outcomes:?}");
    assert!(
        matches!(
            written[4],
            Err(ordo::sink::SinkError::Fenced { partition: 4, .. })
        ),
        "{outcomes:?}"
    );
    let rows = key_versions(
        &client,
        "SELECT stream, max(version) FROM events GROUP BY 1 ORDER BY 1",
    )
    .await;
    assert_eq!(
        rows,
        [
            ("k0".to_string(), 4),
            ("k1".to_string(), 4),
            ("k2".to_string(), 4),
            ("k3".to_string(), 4),
            ("k4".to_string(), 2)
        ]
    );
    let stored = sink.stored_offsets("orders").await.unwrap();
    for p in 0..4 {
        assert_eq!(stored.get(&p), Some(&5), "partition {p}");
    }
    assert_eq!(
        stored.get(&4),
        Some(&2),
        "the fenced partition's offset stays"
    );
}

/// A projection's small batches share a transaction too, each upserted by
/// its own statement: two partitions holding versions of one key (a key that
/// moved partitions) in the same transaction leave the newer state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projection_batches_share_a_transaction_and_keep_the_newest_state() {
    let db = TestDb::new().await;
    let sink = sink_with(&db, "projection", "latest", "pool_size = 1").await;
    let mut leases = Vec::new();
    for p in 0..4 {
        leases.push(sink.acquire("orders", p, "test").await.unwrap());
    }
    let batches = [
        batch(events("a", 1..=2, 0), 2),
        batch(events("b", 1..=1, 0), 1),
        batch(events("shared", 3..=4, 0), 2),
        batch(events("shared", 1..=2, 0), 2),
    ];
    let written =
        futures::future::join_all(leases.iter().zip(&batches).map(|(l, b)| sink.write(l, b))).await;
    for (p, w) in written.into_iter().enumerate() {
        assert!(w.is_ok(), "partition {p}: {w:?}");
    }
    let client = db.client().await;
    let rows = key_versions(&client, "SELECT key, version FROM latest ORDER BY key").await;
    assert_eq!(
        rows,
        [
            ("a".to_string(), 2),
            ("b".to_string(), 1),
            ("shared".to_string(), 4)
        ]
    );
    let transactions: i64 = client
        .query_one(
            "SELECT count(DISTINCT xmin::text) FROM ordo_offsets WHERE next_offset IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        transactions, 2,
        "the first batch alone, the three queued behind it together"
    );
}

/// PostgreSQL refusing an event's data (here a NUL character, which `jsonb`
/// cannot hold) is a record error on the `COPY` path too, so the worker
/// writes around it and dead-letters that one event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_postgres_refuses_is_a_record_error_on_the_copy_path() {
    let db = TestDb::new().await;
    let sink = sink(&db, "event_store", "events").await;
    let lease = sink.acquire("orders", 0, "test").await.unwrap();
    let mut all = events("a", 1..=2, 0);
    all[1].payload =
        ordo::record::JsonText::from_value(&serde_json::json!({ "note": "nul \u{0} here" }));
    let err = sink.write(&lease, &batch(all, 2)).await.unwrap_err();
    assert!(err.is_record_error(), "{err}");
    let client = db.client().await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the refused batch wrote nothing");
    assert_eq!(sink.stored_offsets("orders").await.unwrap().get(&0), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_columns_hold_json_fields_as_their_types_in_a_projection() {
    let db = TestDb::new().await;
    let sink = sink_with(
        &db,
        "projection",
        "accounts",
        r#"columns = [
  { name = "amount", path = "money.amount", type = "numeric" },
  { name = "opened", path = "opened", type = "timestamptz" },
  { name = "n", path = "n", type = "bigint" },
  { name = "tags", path = "tags", type = "jsonb" },
  { name = "active", path = "active", type = "boolean" },
]"#,
    )
    .await;
    let lease = sink.acquire("accounts", 0, "test").await.unwrap();
    let event = |key: &str, version: i64, offset: i64, payload: serde_json::Value| {
        let mut e = Event::for_test(key, version, offset);
        e.payload = ordo::record::JsonText::from_value(&payload);
        e
    };
    let first = vec![
        event(
            "a",
            1,
            0,
            serde_json::json!({"money": {"amount": "10.10"}, "n": 1}),
        ),
        event(
            "a",
            2,
            1,
            serde_json::json!({"money": {"amount": "12.50"}, "opened": "2024-01-02T03:04:05Z",
                "n": 9007199254740993u64, "tags": ["x", "y"], "active": true}),
        ),
        event("b", 1, 2, serde_json::json!({"n": null})),
    ];
    sink.write(&lease, &batch(first, 3)).await.unwrap();
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT version, amount = 12.50, opened = '2024-01-02 03:04:05+00'::timestamptz,              n, tags = '[\"x\", \"y\"]'::jsonb, active FROM accounts WHERE key = 'a'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 2, "the newest version per key");
    assert!(row.get::<_, bool>(1));
    assert!(row.get::<_, bool>(2));
    assert_eq!(row.get::<_, i64>(3), 9_007_199_254_740_993, "every digit");
    assert!(row.get::<_, bool>(4));
    assert!(row.get::<_, bool>(5));
    let nulls = client
        .query_one(
            "SELECT amount IS NULL AND opened IS NULL AND n IS NULL AND tags IS NULL \
             FROM accounts WHERE key = 'b'",
            &[],
        )
        .await
        .unwrap();
    assert!(nulls.get::<_, bool>(0), "absent and null fields are NULL");
    // A value its column cannot take is refused by PostgreSQL for the event.
    let bad = vec![event(
        "c",
        1,
        3,
        serde_json::json!({"money": {"amount": "lots"}}),
    )];
    let e = sink.write(&lease, &batch(bad, 4)).await.unwrap_err();
    assert!(e.is_record_error(), "{e}");
    assert!(e.to_string().contains("numeric"), "{e}");

    // `payload = false`: only the typed columns, the table made without `state`.
    let slim = sink_with(
        &db,
        "projection",
        "slim",
        "payload = false\ncolumns = [{ name = \"n\", path = \"n\", type = \"bigint\" }]",
    )
    .await;
    let lease = slim.acquire("slim", 0, "test").await.unwrap();
    let rows = vec![
        event("a", 1, 0, serde_json::json!({"n": 1, "secret": "not kept"})),
        event("a", 2, 1, serde_json::json!({"n": 2, "secret": "not kept"})),
    ];
    slim.write(&lease, &batch(rows, 2)).await.unwrap();
    let state_column: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_name = 'slim' AND column_name = 'state'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(state_column, 0);
    let (version, n): (i64, i64) = {
        let r = client
            .query_one("SELECT version, n FROM slim WHERE key = 'a'", &[])
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((version, n), (2, 2));
    // Against a table whose `state` is NOT NULL, `payload = false` is refused
    // with the DDL it would take.
    let pg_url = db.url.clone();
    let settings = ordo::config::Settings::load_embedded(
        &format!(
            "[kafka]\n\"bootstrap.servers\" = \"127.0.0.1:9\"\n\"group.id\" = \"g\"\n\
             [source]\ntopics = [\"t\"]\n[ordering]\nsequence = \"field:v\"\n\
             [sink.postgres]\nmode = \"projection\"\ntable = \"accounts\"\nurl = \"{pg_url}\"\n\
             payload = false\ncolumns = [{{ name = \"n\", path = \"n\", type = \"bigint\" }}]\n"
        ),
        &[],
    )
    .unwrap();
    let pg = settings.sink.postgres.as_ref().unwrap();
    let refused = PostgresSink::connect(pg, "g", settings.sink.batch_max_events)
        .await
        .unwrap();
    let plans = refused.plan().await.unwrap();
    let plan = &plans[0].plan;
    assert!(
        plan.refused
            .iter()
            .any(|r| r
                .contains("ALTER TABLE \"public\".\"accounts\" ALTER COLUMN state DROP NOT NULL")),
        "{plan:?}"
    );
    let e = refused.migrate().await.unwrap_err().to_string();
    assert!(e.contains("DROP NOT NULL"), "{e}");
}

/// The tables Ordo creates compare their key column bytewise
/// (`COLLATE "C"`); a target table that exists in the database's collation
/// is used as it is: the same statements write it (`COPY`, and `ON
/// CONFLICT` when a batch meets a stored event) and read its key state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_tables_compare_keys_bytewise_and_an_existing_table_keeps_its_collation() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let collation = |table: &'static str, column: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT collation_name::text FROM information_schema.columns \
                     WHERE table_name = $1 AND column_name = $2",
                    &[&table, &column],
                )
                .await
                .unwrap()
                .get::<_, Option<String>>(0)
        }
    };
    sink(&db, "event_store", "events").await;
    sink(&db, "projection", "latest").await;
    assert_eq!(collation("events", "stream").await.as_deref(), Some("C"));
    assert_eq!(collation("latest", "key").await.as_deref(), Some("C"));

    client
        .batch_execute(
            "CREATE TABLE legacy (position bigint GENERATED ALWAYS AS IDENTITY, \
             stream text NOT NULL, version bigint NOT NULL, payload jsonb NOT NULL, \
             topic text NOT NULL, partition integer NOT NULL, \"offset\" bigint NOT NULL, \
             event_time timestamptz, recorded_at timestamptz NOT NULL DEFAULT now(), \
             PRIMARY KEY (stream, version))",
        )
        .await
        .unwrap();
    let sink = sink(&db, "event_store", "legacy").await;
    assert_eq!(collation("legacy", "stream").await, None, "left as it was");
    let lease = sink.acquire("orders", 0, "test").await.unwrap();
    let mut first = events("Zebra", 1..=2, 0);
    first.extend(events("äpfel", 1..=1, 2));
    let written = sink.write(&lease, &batch(first, 3)).await.unwrap();
    assert_eq!((written.applied, written.absorbed), (3, 0));
    // `Zebra` 2 is stored already: the batch goes by `ON CONFLICT`.
    let mut again = events("Zebra", 2..=3, 3);
    again.extend(events("apple", 1..=1, 5));
    let written = sink.write(&lease, &batch(again, 6)).await.unwrap();
    assert_eq!((written.applied, written.absorbed), (2, 1));
    let keys: Vec<String> = ["Zebra", "äpfel", "apple", "zebra"]
        .map(String::from)
        .to_vec();
    let states = sink.key_states(&keys).await.unwrap();
    assert_eq!(states.get("Zebra"), Some(&3));
    assert_eq!(states.get("äpfel"), Some(&1));
    assert_eq!(states.get("apple"), Some(&1));
    assert_eq!(states.get("zebra"), None);
    assert_eq!(
        key_versions(
            &client,
            "SELECT stream, version FROM legacy ORDER BY position"
        )
        .await,
        [
            ("Zebra".to_string(), 1),
            ("Zebra".to_string(), 2),
            ("äpfel".to_string(), 1),
            ("Zebra".to_string(), 3),
            ("apple".to_string(), 1)
        ]
    );
}

/// A lease is held until another worker takes the partition: only its
/// current holder may send a dead letter for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_held_until_another_worker_takes_it() {
    let db = TestDb::new().await;
    let sink = sink_with(&db, "event_store", "events", "").await;
    let first = sink.acquire("orders", 0, "first").await.unwrap();
    assert!(sink.holds(&first).await.unwrap());
    let second = sink.acquire("orders", 0, "second").await.unwrap();
    assert!(!sink.holds(&first).await.unwrap(), "fenced by the second");
    assert!(sink.holds(&second).await.unwrap());
    let elsewhere = ordo::sink::Lease {
        partition: 1,
        ..second.clone()
    };
    assert!(!sink.holds(&elsewhere).await.unwrap(), "never leased");
}

/// SQL route values travel as quoted text (in `EXECUTE` statements of
/// statements prepared by name): whatever a value holds (quotes,
/// backslashes, SQL, dollar quotes, line breaks, any Unicode) lands as it
/// is, a NUL is refused as a record error with nothing written, and a
/// route with a statement `PREPARE` does not take (`CALL`) runs each event
/// once, bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_route_values_land_verbatim_and_a_call_runs_bound() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE notes (key text, version bigint, note text, amount numeric, PRIMARY KEY (key, version));
             CREATE TABLE settled (key text, version bigint, PRIMARY KEY (key, version));
             CREATE PROCEDURE settle(k text, v bigint) LANGUAGE sql AS $$ INSERT INTO settled VALUES (k, v) $$;",
        )
        .await
        .unwrap();
    let notes = [
        Some("it's"),
        Some(r"back\slash \' \\ E'\x41'"),
        Some("'); DROP TABLE notes; --"),
        Some("$$ dollar $$ $x$"),
        Some("snow ☃ and 𝄞\nsecond line\ttab"),
        None,
        Some(""),
    ];
    let sink = routed_sink(
        &db,
        "verbatim",
        r#"[[sink.postgres.routes]]
name = "notes"
sql = "INSERT INTO notes VALUES (${key}, ${version}::bigint, ${data.note}, ${data.amount}::numeric)"
"#,
    )
    .await;
    let lease = sink.acquire("orders", 0, "test").await.unwrap();
    let mut all = events("k'1", 1..=notes.len() as i64, 0);
    for (e, note) in all.iter_mut().zip(notes) {
        e.payload = ordo::record::JsonText::from_value(
            &serde_json::json!({ "data": { "note": note, "amount": 1.5 } }),
        );
    }
    sink.write(&lease, &batch(all, notes.len() as i64))
        .await
        .unwrap();
    let landed: Vec<(String, i64, Option<String>, String)> = client
        .query(
            "SELECT key, version, note, amount::text FROM notes ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let expected: Vec<(String, i64, Option<String>, String)> = notes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            (
                "k'1".into(),
                i as i64 + 1,
                n.map(String::from),
                "1.5".into(),
            )
        })
        .collect();
    assert_eq!(landed, expected);

    let mut nul = events("k2", 1..=2, notes.len() as i64);
    nul[1].payload =
        ordo::record::JsonText::from_value(&serde_json::json!({ "data": { "note": "a\u{0}b" } }));
    let err = sink
        .write(&lease, &batch(nul, notes.len() as i64 + 2))
        .await
        .unwrap_err();
    assert!(err.is_record_error(), "{err}");
    assert!(
        err.to_string().contains("route notes, statement 1"),
        "{err}"
    );
    let k2: i64 = client
        .query_one("SELECT count(*) FROM notes WHERE key = 'k2'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(k2, 0, "the refused batch wrote nothing");

    let bound = routed_sink(
        &db,
        "bound",
        r#"[[sink.postgres.routes]]
name = "settle"
sql = "CALL settle(${key}, ${version}::bigint)"
"#,
    )
    .await;
    let lease = bound.acquire("orders", 0, "test").await.unwrap();
    bound
        .write(&lease, &batch(events("it's", 1..=3, 0), 3))
        .await
        .unwrap();
    // Again from the start (a rewind): each (route, key, version) ran once.
    bound
        .write(&lease, &batch(events("it's", 1..=4, 0), 4))
        .await
        .unwrap();
    let settled = key_versions(&client, "SELECT key, version FROM settled ORDER BY version").await;
    assert_eq!(
        settled,
        (1..=4).map(|v| ("it's".to_string(), v)).collect::<Vec<_>>()
    );
}
