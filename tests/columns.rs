//! Typed columns derived from the Avro reader schema (`auto_columns`): the
//! table is created at reader v1, gains v2's and v3's columns (and a widened
//! type) when Ordo restarts with the newer reader, two replicas starting at
//! once apply each change once, every row holds typed values compared as
//! such, `ordo sink plan` prints the DDL without running it, and a change that
//! is not a widening is refused with the DDL it would take.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use ordo::demo::orders;
use support::data::{self, Produced};
use support::kafka::Kafka;
use support::ordo::{run_to_end, Ordo, Setup};
use support::postgres::TestDb;
use support::unique;

const PARTITIONS: i32 = 2;
const STREAMS: usize = 6;

fn reader(version: usize) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("schemas/orders-v{version}.avsc"))
}

fn with_reader(setup: &Setup, file: &std::path::Path, registry: &str) -> Setup {
    let mut s = setup.clone();
    s.source = format!(
        "format = \"avro\"\n[[source.reader_schemas]]\ntopic = \"{}\"\nfile = \"{}\"",
        setup.topic,
        file.display()
    );
    s.postgres = "auto_columns = \"flatten\"".into();
    s.tail = format!("[schema_registry]\nurls = [\"{registry}\"]\n");
    s
}

/// The table's columns and their types, as the catalog names them.
async fn column_types(db: &TestDb) -> Vec<(String, String)> {
    db.client()
        .await
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns \
             WHERE table_name = 'orders' ORDER BY ordinal_position",
            &[],
        )
        .await
        .expect("columns")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn changes(db: &TestDb) -> Vec<String> {
    db.client()
        .await
        .query("SELECT statement FROM ordo_schema_changes ORDER BY id", &[])
        .await
        .expect("schema changes")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Starts two replicas at once, waits for the stored offsets, stops both.
async fn run_two(setup: &Setup, dir: &std::path::Path, name: &str, db: &TestDb, kafka: &Kafka) {
    let config = setup.write(dir, &format!("{name}.toml"));
    let mut a = Ordo::start(&config, dir.join(format!("{name}-a.log")));
    let mut b = Ordo::start(&config, dir.join(format!("{name}-b.log")));
    let hw = kafka.high_watermarks(&setup.topic, PARTITIONS);
    let client = db.client().await;
    data::wait_stored_offsets(&client, &mut a, &setup.group, &setup.topic, &hw).await;
    assert!(b.running(), "{}", b.log_text());
    assert!(a.terminate(Duration::from_secs(30)).success());
    assert!(b.terminate(Duration::from_secs(30)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_columns_follow_the_reader_schema_and_hold_typed_values() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let topic = unique("orders");
    kafka.create_topic(&topic, PARTITIONS);
    let registry = ordo_registry::Registry::new();
    let server = registry
        .spawn("127.0.0.1:0".parse().expect("addr"))
        .expect("registry");
    let mut ids = [0u32; 3];
    for (i, text) in orders::SCHEMAS.iter().enumerate() {
        ids[i] = registry
            .register(&format!("{topic}-value"), text)
            .expect("register");
    }
    let base = Setup {
        bootstrap: kafka.bootstrap(),
        group: unique("ordo"),
        topic: topic.clone(),
        db_url: db.url.clone(),
        mode: "event_store",
        table: "orders".into(),
        sequence: "field:meta.seq".into(),
        ..Setup::default()
    };
    // (stream, seq, writer, reader) of every event produced.
    let mut produced: Vec<(String, i64, usize, usize)> = vec![];
    let mut produce = |seqs: std::ops::RangeInclusive<i64>, readers: usize| {
        let mut records = vec![];
        for seq in seqs {
            for i in 0..STREAMS {
                let stream = format!("order-{i}");
                let writer = (i + seq as usize) % readers + 1;
                records.push(Produced {
                    partition: (i % PARTITIONS as usize) as i32,
                    key: Some(stream.clone().into_bytes()),
                    payload: orders::encode(writer, ids[writer - 1], &stream, seq),
                });
                produced.push((stream, seq, writer, readers));
            }
        }
        kafka.produce(&topic, &records);
    };

    // Reader v1: the table is created with v1's columns, once by two replicas.
    produce(1..=3, 1);
    run_two(
        &with_reader(&base, &reader(1), &server.url()),
        dir.path(),
        "v1",
        &db,
        &kafka,
    )
    .await;
    let v1_columns = column_types(&db).await;
    for (name, ty) in [
        ("meta_stream", "text"),
        ("meta_seq", "integer"),
        ("order_id", "uuid"),
        ("customer", "text"),
        ("qty", "integer"),
        ("amount", "numeric"),
        ("placed_at", "timestamp with time zone"),
        ("due", "date"),
        ("status", "text"),
    ] {
        assert!(
            v1_columns.contains(&(name.to_string(), ty.to_string())),
            "{name} {ty} in {v1_columns:?}"
        );
    }
    assert!(!v1_columns.iter().any(|(n, _)| n == "note"));
    let created = changes(&db).await;
    assert_eq!(created.len(), 1, "{created:?}");
    assert!(created[0].starts_with("CREATE TABLE"), "{created:?}");

    // `ordo sink plan` with reader v2 prints the DDL and runs nothing.
    let v2 = with_reader(&base, &reader(2), &server.url());
    let plan_config = v2.write(dir.path(), "plan.toml");
    let (status, stdout, stderr) = run_to_end(&[
        "sink",
        "plan",
        "--config",
        plan_config.to_str().expect("path"),
    ]);
    assert!(status.success(), "{stdout}{stderr}");
    let statements: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("--"))
        .collect();
    assert_eq!(
        statements,
        ["ALTER TABLE \"public\".\"orders\" ADD COLUMN \"note\" text;"],
        "{stdout}"
    );
    assert!(
        stdout.contains("-- route default: table public.orders"),
        "{stdout}"
    );
    assert_eq!(column_types(&db).await, v1_columns, "plan runs nothing");

    // Reader v2 (v1 and v2 writers): `note` is added, once.
    produce(4..=6, 2);
    run_two(&v2, dir.path(), "v2", &db, &kafka).await;
    // Reader v3 (all three): `buyer` added, `meta_seq` widened to bigint;
    // `customer` and `status`, gone from the reader, stay.
    produce(7..=9, 3);
    run_two(
        &with_reader(&base, &reader(3), &server.url()),
        dir.path(),
        "v3",
        &db,
        &kafka,
    )
    .await;
    let types = column_types(&db).await;
    for (name, ty) in [
        ("meta_seq", "bigint"),
        ("note", "text"),
        ("buyer", "text"),
        ("customer", "text"),
        ("status", "text"),
    ] {
        assert!(
            types.contains(&(name.to_string(), ty.to_string())),
            "{name} {ty} in {types:?}"
        );
    }
    let applied = changes(&db).await;
    assert_eq!(
        applied[1..],
        [
            "ALTER TABLE \"public\".\"orders\" ADD COLUMN \"note\" text".to_string(),
            "ALTER TABLE \"public\".\"orders\" ALTER COLUMN \"meta_seq\" TYPE bigint".to_string(),
            "ALTER TABLE \"public\".\"orders\" ADD COLUMN \"buyer\" text".to_string(),
        ],
        "each change once, though two replicas started each time"
    );

    // Every row's typed values, compared as their types.
    let client = db.client().await;
    let total: i64 = client
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(total as usize, produced.len());
    for (stream, seq, writer, reader) in &produced {
        let e = orders::expected(*writer, *reader, stream, *seq);
        let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
        let row = client
            .query_one(
                "SELECT count(*) FROM orders WHERE stream = $1 AND version = $2 \
                 AND meta_stream = $1 AND meta_seq = $2 \
                 AND order_id = $3::text::uuid AND qty = $4::text::integer \
                 AND amount = $5::text::numeric AND placed_at = $6::text::timestamptz \
                 AND packed_at = $7::text::timestamptz AND due = $8::text::date \
                 AND customer IS NOT DISTINCT FROM $9 AND buyer IS NOT DISTINCT FROM $10 \
                 AND status IS NOT DISTINCT FROM $11 AND note IS NOT DISTINCT FROM $12",
                &[
                    stream,
                    seq,
                    &text(&e["order_id"]),
                    &e["qty"].as_i64().map(|q| q.to_string()),
                    &text(&e["amount"]),
                    &text(&e["placed_at"]),
                    &text(&e["packed_at"]),
                    &text(&e["due"]),
                    &text(&e["customer"]),
                    &text(&e["buyer"]),
                    &text(&e["status"]),
                    &text(&e["note"]),
                ],
            )
            .await
            .expect("row");
        assert_eq!(
            row.get::<_, i64>(0),
            1,
            "{stream} v{seq} (writer {writer}, reader {reader}): {e}"
        );
    }
    // The values are typed: arithmetic and date functions work on them.
    let (sum, year): (String, f64) = {
        let r = client
            .query_one(
                "SELECT sum(amount)::text, min(extract(year FROM due))::float8 FROM orders",
                &[],
            )
            .await
            .expect("typed");
        (r.get(0), r.get(1))
    };
    assert!(!sum.is_empty());
    assert!(year >= 2023.0, "{year}");

    // A reader whose `amount` turns double: not a widening of numeric, refused
    // by `ordo sink plan` and at start, naming the DDL it would take.
    let text = std::fs::read_to_string(reader(3)).expect("v3").replace(
        r#"{"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}"#,
        r#""double""#,
    );
    let narrowed = dir.path().join("orders-double.avsc");
    std::fs::write(&narrowed, text).expect("schema");
    let bad = with_reader(&base, &narrowed, &server.url()).write(dir.path(), "bad.toml");
    let ddl = "ALTER TABLE \"public\".\"orders\" ALTER COLUMN \"amount\" TYPE double precision USING \"amount\"::double precision";
    let (status, stdout, _) =
        run_to_end(&["sink", "plan", "--config", bad.to_str().expect("path")]);
    assert_eq!(status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("-- REFUSED:") && stdout.contains(ddl),
        "{stdout}"
    );
    let (status, stdout, stderr) = run_to_end(&["run", "--config", bad.to_str().expect("path")]);
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains(ddl), "{stderr}");
    assert!(
        column_types(&db)
            .await
            .contains(&("amount".into(), "numeric".into())),
        "nothing changed"
    );
}
