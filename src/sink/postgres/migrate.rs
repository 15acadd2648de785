//! Migrations: Ordo's state tables (versioned) and the target table: created
//! if missing, with its typed columns; checked for the columns the sink mode
//! writes; evolved as the typed columns change (nullable columns added, types
//! only widened, nothing dropped). A change that cannot be applied safely is
//! refused with the DDL it would take. All of it runs under one advisory
//! lock, so replicas starting together apply each change once; each applied
//! statement is recorded in `ordo_schema_changes`.

use std::collections::HashMap;

use tokio_postgres::GenericClient;

use super::columns::{Column, PgType};
use super::{base_columns, quote_ident, PostgresError, SinkMode, Tables};

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
    // The DDL Ordo ran on target tables (typed columns), and which replica ran it.
    (
        5,
        "CREATE TABLE IF NOT EXISTS {schema_changes} (
        id bigserial PRIMARY KEY,
        target_table text NOT NULL,
        statement text NOT NULL,
        owner text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now());",
    ),
    // Versions the sink refused that went to the dead-letter topic: part of
    // the key state, so the key's next version does not wait for them.
    (
        6,
        "CREATE TABLE IF NOT EXISTS {passed_versions} (
        target_table text NOT NULL,
        key text NOT NULL,
        version bigint NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (target_table, key));",
    ),
    // With routes, each key's last handled version (across every route)
    // is kept here, per consumer group; each SQL route's last applied
    // version per key, its exactly-once guard (shared by every deployment
    // that runs the route); and the events refused and dead-lettered, which
    // a replay from the dead-letter topic then applies once.
    (
        7,
        "CREATE TABLE IF NOT EXISTS {key_versions} (
        consumer_group text NOT NULL,
        key text COLLATE \"C\" NOT NULL,
        version bigint NOT NULL,
        PRIMARY KEY (consumer_group, key));
     CREATE TABLE IF NOT EXISTS {route_versions} (
        route text NOT NULL,
        key text COLLATE \"C\" NOT NULL,
        version bigint,
        PRIMARY KEY (route, key));
     CREATE TABLE IF NOT EXISTS {refused_events} (
        consumer_group text NOT NULL,
        key text COLLATE \"C\" NOT NULL,
        version bigint NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (consumer_group, key, version));",
    ),
    // Offsets an operator moved (`ordo offsets set` / `skip`): the move is
    // marked on the partition's row (its owner takes the lease again and
    // resumes from there) and recorded, with who moved it and how.
    (
        8,
        "ALTER TABLE {offsets} ADD COLUMN IF NOT EXISTS moved boolean NOT NULL DEFAULT false;
     CREATE TABLE IF NOT EXISTS {offset_moves} (
        id bigserial PRIMARY KEY,
        consumer_group text NOT NULL,
        topic text NOT NULL,
        partition integer NOT NULL,
        from_offset bigint,
        to_offset bigint NOT NULL,
        kind text NOT NULL,
        command text NOT NULL,
        host text NOT NULL,
        moved_at timestamptz NOT NULL DEFAULT now());",
    ),
];

// The key columns compare bytewise (`COLLATE "C"`): keys are identifiers,
// not prose, and the primary key's inserts and the key-state probes spend
// their time comparing them (BENCHMARKS.md). A table that exists is used as
// it is.
const EVENT_STORE: &str = "CREATE TABLE IF NOT EXISTS {target} (
    position bigint GENERATED ALWAYS AS IDENTITY,
    stream text COLLATE \"C\" NOT NULL,
    version bigint NOT NULL,
    payload jsonb NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    \"offset\" bigint NOT NULL,
    event_time timestamptz,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, version))";

const PROJECTION: &str = "CREATE TABLE IF NOT EXISTS {target} (
    key text COLLATE \"C\" PRIMARY KEY,
    version bigint NOT NULL,
    state jsonb NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    \"offset\" bigint NOT NULL,
    event_time timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now())";

/// The column holding the whole payload, per mode.
fn payload_column(mode: SinkMode) -> &'static str {
    match mode {
        SinkMode::EventStore => "payload",
        SinkMode::Projection => "state",
    }
}

/// Columns an existing target table must have: those the sink writes.
fn required_columns(mode: SinkMode, payload: bool) -> impl Iterator<Item = &'static str> {
    // The identity and the insert time are the table's own defaults.
    base_columns(mode)
        .iter()
        .copied()
        .filter(|c| !matches!(*c, "position" | "recorded_at"))
        .filter(move |c| payload || *c != payload_column(mode))
}

fn fill(sql: &str, t: &Tables) -> String {
    sql.replace("{schema}", &t.schema)
        .replace("{offsets}", &t.offsets)
        .replace("{key_state}", &t.key_state)
        .replace("{gaps}", &t.gaps)
        .replace("{dead_lettered}", &t.dead_lettered)
        .replace("{deleted_keys}", &t.deleted_keys)
        .replace("{schema_changes}", &t.schema_changes)
        .replace("{passed_versions}", &t.passed_versions)
        .replace("{key_versions}", &t.key_versions)
        .replace("{route_versions}", &t.route_versions)
        .replace("{refused_events}", &t.refused_events)
        .replace("{offset_moves}", &t.offset_moves)
        .replace("{target}", &t.target)
}

/// What the target table needs: statements to run, and changes refused.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    pub statements: Vec<String>,
    /// Each refusal says why, and the DDL that would be needed.
    pub refused: Vec<String>,
}

/// The DDL the target table needs for `mode` and `columns`, as PostgreSQL
/// has it now (read through `client`, inside the caller's transaction).
pub async fn plan<C: GenericClient>(
    client: &C,
    t: &Tables,
    mode: SinkMode,
    columns: &[Column],
) -> Result<Plan, tokio_postgres::Error> {
    let (schema, table) = t.schema_and_table();
    let rows = client
        .query(
            "SELECT column_name::text, data_type::text, is_nullable = 'YES' OR column_default IS NOT NULL \
             FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
            &[&schema, &table],
        )
        .await?;
    let existing: HashMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let may_be_left_out = |name: &str| {
        rows.iter()
            .any(|r| r.get::<_, String>(0) == name && r.get::<_, bool>(2))
    };
    let mut plan = Plan::default();
    if existing.is_empty() {
        let create = match mode {
            SinkMode::EventStore => EVENT_STORE,
            SinkMode::Projection => PROJECTION,
        };
        let mut sql = fill(create, t);
        if !t.payload {
            sql = sql.replace(
                &format!("    {} jsonb NOT NULL,\n", payload_column(mode)),
                "",
            );
        }
        // The base definition ends with its closing parenthesis.
        sql.pop();
        for c in columns {
            sql.push_str(&format!(
                ",\n    {} {}",
                quote_ident(&c.name),
                c.pg_type.sql()
            ));
        }
        sql.push(')');
        plan.statements.push(sql);
        return Ok(plan);
    }
    let payload = payload_column(mode);
    if !t.payload && existing.contains_key(payload) && !may_be_left_out(payload) {
        plan.refused.push(format!(
            "column {payload} of {} is NOT NULL, but sink.postgres.payload = false leaves it out; \
             the DDL it would take: ALTER TABLE {} ALTER COLUMN {payload} DROP NOT NULL",
            t.target_display, t.target
        ));
    }
    let missing: Vec<&str> = required_columns(mode, t.payload)
        .filter(|c| !existing.contains_key(*c))
        .collect();
    if !missing.is_empty() {
        // The error around it names the table and the mode.
        plan.refused
            .push(format!("missing column(s) {}", missing.join(", ")));
    }
    for c in columns {
        let col = quote_ident(&c.name);
        let want = c.pg_type;
        match existing.get(&c.name) {
            None => plan.statements.push(format!(
                "ALTER TABLE {} ADD COLUMN {col} {}",
                t.target,
                want.sql()
            )),
            Some(have) => match PgType::from_catalog(have) {
                Some(have) if have.holds(want) => {}
                Some(have) if want.holds(have) => plan.statements.push(format!(
                    "ALTER TABLE {} ALTER COLUMN {col} TYPE {}",
                    t.target,
                    want.sql()
                )),
                _ => plan.refused.push(format!(
                    "column {col} of {} is {have}, but field `{}` now needs {}, which is not a widening \
                     (values could be lost or refused), so Ordo does not change it; the DDL it would take: \
                     ALTER TABLE {} ALTER COLUMN {col} TYPE {} USING {}",
                    t.target_display,
                    c.path,
                    want.sql(),
                    t.target,
                    want.sql(),
                    want.cast(&col)
                )),
            },
        }
    }
    Ok(plan)
}

/// The DDL of Ordo's own tables not applied yet (all of it on a database
/// Ordo never used), without running anything: for `ordo sink plan`.
pub async fn pending_own<C: GenericClient>(
    client: &C,
    t: &Tables,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let (schema, _) = t.schema_and_table();
    let exists = client
        .query_one(
            "SELECT to_regclass(quote_ident($1) || '.ordo_schema_migrations') IS NOT NULL",
            &[&schema],
        )
        .await?
        .get::<_, bool>(0);
    let applied: Vec<i32> = if exists {
        client
            .query(&format!("SELECT version FROM {}", t.migrations), &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        Vec::new()
    };
    Ok(MIGRATIONS
        .iter()
        .filter(|(v, _)| !applied.contains(v))
        .map(|(v, sql)| format!("-- Ordo migration {v}\n{}", fill(sql, t).trim()))
        .collect())
}

/// Applies pending migrations and the target table's plan under an
/// advisory lock, so replicas starting together do not race; a refused
/// change fails, naming the DDL it would take.
pub async fn run(
    client: &mut tokio_postgres::Client,
    t: &Tables,
    targets: &[super::routes::TableRoute],
    target: &str,
    owner: &str,
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
    // Only what is missing is created: `CREATE ... IF NOT EXISTS` needs the
    // privilege to create even when there is nothing to create, and a role
    // given an existing schema needs no CREATE on the database.
    let (schema, _) = t.schema_and_table();
    let present = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1), \
                    to_regclass(quote_ident($1) || '.ordo_schema_migrations') IS NOT NULL",
            &[&schema],
        )
        .await
        .map_err(err("looking for Ordo's schema"))?;
    let (schema_exists, migrations_exist): (bool, bool) = (present.get(0), present.get(1));
    if !schema_exists {
        tx.batch_execute(&fill("CREATE SCHEMA IF NOT EXISTS {schema}", t))
            .await
            .map_err(err("creating the schema"))?;
    }
    if !migrations_exist {
        tx.batch_execute(&fill(
            "CREATE TABLE IF NOT EXISTS {schema}.\"ordo_schema_migrations\" (
                version integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now())",
            t,
        ))
        .await
        .map_err(err("creating the migrations table"))?;
    }
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
    for route in targets {
        apply_plan(&tx, route, target, owner).await?;
    }
    tx.commit().await.map_err(err("committing migrations"))?;
    Ok(())
}

/// Creates or evolves one route's table, inside the migrations' transaction.
async fn apply_plan(
    tx: &tokio_postgres::Transaction<'_>,
    route: &super::routes::TableRoute,
    target: &str,
    owner: &str,
) -> Result<(), PostgresError> {
    let err = |what: &str| {
        let what = what.to_string();
        move |source| PostgresError::Query {
            target: target.to_string(),
            what: what.clone(),
            source,
        }
    };
    let (t, mode) = (&route.tables, route.mode);
    let plan = plan(tx, t, mode, &route.columns)
        .await
        .map_err(err(&format!("reading the columns of {}", t.target_display)))?;
    if !plan.refused.is_empty() {
        return Err(PostgresError::Schema {
            table: t.target_display.clone(),
            mode,
            reason: plan.refused.join("; "),
        });
    }
    for statement in &plan.statements {
        tx.batch_execute(statement)
            .await
            .map_err(err(&format!("running {statement}")))?;
        tx.execute(
            &format!(
                "INSERT INTO {} (target_table, statement, owner) VALUES ($1, $2, $3)",
                t.schema_changes
            ),
            &[&t.target_display, statement, &owner],
        )
        .await
        .map_err(err("recording a schema change"))?;
        // One line, however the statement is laid out.
        let statement = statement.split_whitespace().collect::<Vec<_>>().join(" ");
        tracing::info!(table = %t.target_display, route = %route.name, %statement, "target table changed");
    }
    Ok(())
}
