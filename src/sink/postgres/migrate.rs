//! Migrations: Ordo's state tables (versioned) and the target table (created if
//! missing, then checked for the columns the sink mode writes).

use tokio_postgres::Client;

use super::{PostgresError, SinkMode, Tables};

/// Versioned migrations of Ordo's own tables; `{schema}`, `{offsets}`, ... are table names.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        "CREATE TABLE IF NOT EXISTS {offsets} (
        consumer_group text NOT NULL,
        topic text NOT NULL,
        partition integer NOT NULL,
        next_offset bigint,
        epoch bigint NOT NULL,
        owner text NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (consumer_group, topic, partition));
     CREATE TABLE IF NOT EXISTS {key_state} (
        consumer_group text NOT NULL,
        topic text NOT NULL,
        key text NOT NULL,
        last_sequence bigint NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (consumer_group, topic, key));
     CREATE TABLE IF NOT EXISTS {gaps} (
        id bigserial PRIMARY KEY,
        consumer_group text NOT NULL,
        topic text NOT NULL,
        partition integer NOT NULL,
        key text NOT NULL,
        expected bigint NOT NULL,
        released bigint NOT NULL,
        \"offset\" bigint NOT NULL,
        bound text NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now());",
    ),
    (
        2,
        "CREATE TABLE IF NOT EXISTS {dead_lettered} (
        consumer_group text NOT NULL,
        topic text NOT NULL,
        partition integer NOT NULL,
        \"offset\" bigint NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (consumer_group, topic, partition, \"offset\"));",
    ),
    // Each key's last applied version is read from the target table itself
    // (written in the same transactions), so the separate copy goes.
    (3, "DROP TABLE IF EXISTS {key_state};"),
    // Keys a tombstone deleted from a projection, with the version deleted
    // at: part of the key state, so an older version does not bring a row back.
    (
        4,
        "CREATE TABLE IF NOT EXISTS {deleted_keys} (
        target_table text NOT NULL,
        key text NOT NULL,
        version bigint NOT NULL,
        deleted_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (target_table, key));",
    ),
];

const EVENT_STORE: &str = "CREATE TABLE IF NOT EXISTS {target} (
    position bigint GENERATED ALWAYS AS IDENTITY,
    stream text NOT NULL,
    version bigint NOT NULL,
    payload jsonb NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    \"offset\" bigint NOT NULL,
    event_time timestamptz,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, version))";

const PROJECTION: &str = "CREATE TABLE IF NOT EXISTS {target} (
    key text PRIMARY KEY,
    version bigint NOT NULL,
    state jsonb NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    \"offset\" bigint NOT NULL,
    event_time timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now())";

/// Columns the sink writes, per mode.
fn required_columns(mode: SinkMode) -> &'static [&'static str] {
    match mode {
        SinkMode::EventStore => &[
            "stream",
            "version",
            "payload",
            "topic",
            "partition",
            "offset",
            "event_time",
        ],
        SinkMode::Projection => &[
            "key",
            "version",
            "state",
            "topic",
            "partition",
            "offset",
            "event_time",
            "updated_at",
        ],
    }
}

fn fill(sql: &str, t: &Tables) -> String {
    sql.replace("{schema}", &t.schema)
        .replace("{offsets}", &t.offsets)
        .replace("{key_state}", &t.key_state)
        .replace("{gaps}", &t.gaps)
        .replace("{dead_lettered}", &t.dead_lettered)
        .replace("{deleted_keys}", &t.deleted_keys)
        .replace("{target}", &t.target)
}

/// Applies pending migrations under an advisory lock, so replicas starting together do not race.
pub async fn run(
    client: &mut Client,
    t: &Tables,
    mode: SinkMode,
    target: &str,
) -> Result<(), PostgresError> {
    let err = |what: &str| {
        let what = what.to_string();
        move |source| PostgresError::Query {
            target: target.to_string(),
            what: what.clone(),
            source,
        }
    };
    let tx = client
        .transaction()
        .await
        .map_err(err("starting migrations"))?;
    tx.execute("SELECT pg_advisory_xact_lock(7283119401)", &[])
        .await
        .map_err(err("locking migrations"))?;
    tx.batch_execute(&fill(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.\"ordo_schema_migrations\" (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now())",
        t,
    ))
    .await
    .map_err(err("creating the migrations table"))?;
    let applied: Vec<i32> = tx
        .query(&format!("SELECT version FROM {}", t.migrations), &[])
        .await
        .map_err(err("reading applied migrations"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(&fill(sql, t))
            .await
            .map_err(err(&format!("applying migration {version}")))?;
        tx.execute(
            &format!("INSERT INTO {} (version) VALUES ($1)", t.migrations),
            &[version],
        )
        .await
        .map_err(err(&format!("recording migration {version}")))?;
    }
    let create = match mode {
        SinkMode::EventStore => EVENT_STORE,
        SinkMode::Projection => PROJECTION,
    };
    tx.batch_execute(&fill(create, t))
        .await
        .map_err(err(&format!("creating table {}", t.target_display)))?;
    tx.commit().await.map_err(err("committing migrations"))?;

    let (schema, table) = t
        .target_display
        .split_once('.')
        .unwrap_or(("public", t.target_display.as_str()));
    let columns: Vec<String> = client
        .query(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
            &[&schema, &table],
        )
        .await
        .map_err(err("reading the target table's columns"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let missing: Vec<&str> = required_columns(mode)
        .iter()
        .copied()
        .filter(|c| !columns.iter().any(|have| have == c))
        .collect();
    if !missing.is_empty() {
        return Err(PostgresError::Schema {
            table: t.target_display.clone(),
            mode,
            reason: format!("missing column(s) {}", missing.join(", ")),
        });
    }
    Ok(())
}
