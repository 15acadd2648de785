//! What `ordo run` needs of PostgreSQL at start and after, and whether the
//! role it connects as has it, so `ordo check` names a missing grant before
//! `run` trips on it. Only what run will use is asked for: `CREATE` on the
//! database only when the schema is missing, `CREATE` on a schema only when
//! a table must be created in it, ownership only of a table that must be
//! altered, and the table privileges the writes use.

use tokio_postgres::GenericClient;

use super::migrate::Plan;
use super::routes::TableRoute;
use super::{quote_ident, SinkMode, Tables};

/// Privileges on Ordo's own tables: read, write, move (leases, offsets) and
/// clean up (gaps, marks).
const OWN_TABLE_PRIVILEGES: [&str; 4] = ["SELECT", "INSERT", "UPDATE", "DELETE"];

/// Privileges a target table of `mode` needs: an event store is appended to
/// and read (the key state); a projection is upserted and deleted from.
fn target_privileges(mode: SinkMode) -> &'static [&'static str] {
    match mode {
        SinkMode::EventStore => &["SELECT", "INSERT"],
        SinkMode::Projection => &["SELECT", "INSERT", "UPDATE", "DELETE"],
    }
}

/// Ordo's own tables, by name (unquoted).
const OWN_TABLES: [&str; 12] = [
    "ordo_schema_migrations",
    "ordo_offsets",
    "ordo_key_state",
    "ordo_gaps",
    "ordo_dead_lettered",
    "ordo_deleted_keys",
    "ordo_schema_changes",
    "ordo_passed_versions",
    "ordo_key_versions",
    "ordo_route_versions",
    "ordo_refused_events",
    "ordo_offset_moves",
];

/// One thing run needs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ask {
    /// `CREATE` on the database (a schema to create).
    Database,
    /// `CREATE` on a schema (a table to create).
    Schema(String),
    /// Ownership of a table (an `ALTER` to run).
    Owner(String, String),
    /// A privilege on a table.
    Table(String, String, &'static str),
}

impl Ask {
    fn grant(&self, database: &str) -> String {
        match self {
            Ask::Database => format!("CREATE ON DATABASE {}", quote_ident(database)),
            Ask::Schema(s) => format!("CREATE ON SCHEMA {}", quote_ident(s)),
            Ask::Owner(s, t) => format!("ownership of {s}.{t}"),
            Ask::Table(s, t, p) => format!("{p} ON {}.{}", quote_ident(s), quote_ident(t)),
        }
    }

    async fn held<C: GenericClient>(&self, client: &C) -> Result<bool, tokio_postgres::Error> {
        let row = match self {
            Ask::Database => {
                client
                    .query_one(
                        "SELECT has_database_privilege(current_database(), 'CREATE')",
                        &[],
                    )
                    .await?
            }
            Ask::Schema(s) => {
                client
                    .query_one("SELECT has_schema_privilege($1, 'CREATE')", &[s])
                    .await?
            }
            Ask::Owner(s, t) => {
                client
                    .query_one(
                        "SELECT pg_has_role(c.relowner, 'USAGE') FROM pg_class c \
                         JOIN pg_namespace n ON n.oid = c.relnamespace \
                         WHERE n.nspname = $1 AND c.relname = $2",
                        &[s, t],
                    )
                    .await?
            }
            Ask::Table(s, t, p) => {
                client
                    .query_one(
                        "SELECT has_table_privilege(c.oid, $3) FROM pg_class c \
                         JOIN pg_namespace n ON n.oid = c.relnamespace \
                         WHERE n.nspname = $1 AND c.relname = $2",
                        &[s, t, p],
                    )
                    .await?
            }
        };
        Ok(row.get(0))
    }
}

/// What the role lacks, each naming the grant and why run needs it; empty
/// when it has everything. `own_pending` is the DDL of Ordo's own
/// migrations left to apply; `routes` pairs each table route with its
/// pending DDL.
pub async fn missing<C: GenericClient>(
    client: &C,
    own: &Tables,
    own_pending: &[String],
    routes: &[(&TableRoute, &Plan)],
) -> Result<Vec<String>, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT current_user::text, current_database()::text", &[])
        .await?;
    let (role, database): (String, String) = (row.get(0), row.get(1));
    let mut asks: Vec<(Ask, String)> = Vec::new();
    // A table to create in `schema`: CREATE on it, or on the database
    // when the schema itself must be created (Ordo then owns it).
    let create_in = |schema: &str, exists: bool, why: String| {
        if exists {
            (Ask::Schema(schema.to_string()), why)
        } else {
            (
                Ask::Database,
                format!("schema {schema} does not exist and {why}"),
            )
        }
    };
    let (schema, _) = own.schema_and_table();
    let own_schema = schema_exists(client, schema).await?;
    let creates = own_pending.iter().any(|ddl| ddl.contains("CREATE "));
    if !own_schema || creates {
        asks.push(create_in(
            schema,
            own_schema,
            "Ordo creates its own tables (ordo_*) in it".into(),
        ));
    }
    for table in OWN_TABLES {
        if !table_exists(client, schema, table).await? {
            continue;
        }
        // ALTER and DROP need the table's owner.
        let name = format!("{}.{}", quote_ident(schema), quote_ident(table));
        let changed = own_pending.iter().any(|ddl| {
            ddl.contains(&format!("ALTER TABLE {name}"))
                || ddl.contains(&format!("DROP TABLE IF EXISTS {name}"))
        });
        if changed {
            asks.push((
                Ask::Owner(schema.into(), table.into()),
                "a pending migration of Ordo's own tables alters it".into(),
            ));
        }
        for p in OWN_TABLE_PRIVILEGES {
            asks.push((
                Ask::Table(schema.into(), table.into(), p),
                "Ordo keeps its offsets, leases and key state there".into(),
            ));
        }
    }
    for (route, plan) in routes {
        let (schema, table) = route.tables.schema_and_table();
        if !table_exists(client, schema, table).await? {
            let exists = schema_exists(client, schema).await?;
            asks.push(create_in(
                schema,
                exists,
                format!("route {} creates table {schema}.{table} in it", route.name),
            ));
            continue;
        }
        if !plan.statements.is_empty() {
            let ddl: Vec<String> = plan
                .statements
                .iter()
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                .collect();
            asks.push((
                Ask::Owner(schema.into(), table.into()),
                format!("route {} alters it: {}", route.name, ddl.join("; ")),
            ));
        }
        for p in target_privileges(route.mode) {
            asks.push((
                Ask::Table(schema.into(), table.into(), p),
                format!("route {} writes it ({})", route.name, route.mode.as_str()),
            ));
        }
    }
    let mut out: Vec<String> = Vec::new();
    let mut asked: Vec<Ask> = Vec::new();
    for (ask, why) in asks {
        if asked.contains(&ask) {
            continue;
        }
        asked.push(ask.clone());
        if !ask.held(client).await? {
            out.push(format!("role {role} lacks {}: {why}", ask.grant(&database)));
        }
    }
    Ok(out)
}

async fn schema_exists<C: GenericClient>(
    client: &C,
    schema: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&schema],
        )
        .await?
        .get(0))
}

/// Whether `schema`.`table` exists, whatever the role may do with it.
async fn table_exists<C: GenericClient>(
    client: &C,
    schema: &str,
    table: &str,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2)",
            &[&schema, &table],
        )
        .await?
        .get(0))
}
