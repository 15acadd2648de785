//! The PostgreSQL sink: a connection pool, migrations, leases and batch writes.

pub mod columns;
mod config;
pub mod connect;
mod grants;
mod group;
mod migrate;
pub mod offsets;
mod routes;
pub mod sql_route;
mod sql_send;
mod write;

pub use config::{base_columns, validate_columns, PostgresConfig, RouteConfig, SinkMode, Target};
pub use migrate::Plan;

/// What one table route's table needs (`ordo sink plan`).
#[derive(Debug, Clone)]
pub struct RoutePlan {
    pub route: String,
    /// `schema.table`.
    pub table: String,
    pub plan: Plan,
}

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};

use super::{Batch, Lease, SinkError, Written};
use crate::consume::source::Unrouted;
use connect::{Connection, TlsSettings};

/// A failure of the PostgreSQL sink.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Connect { target: String, reason: String },
    /// The server refused the login: retrying with the same password
    /// cannot pass.
    #[error("PostgreSQL at {target} refused to authenticate user {user}: {reason}")]
    Authentication {
        target: String,
        user: String,
        reason: String,
    },
    #[error("PostgreSQL at {target}: {what}: {}", describe_pg(source))]
    Query {
        target: String,
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("table {table} does not fit sink mode {}: {reason}", mode.as_str())]
    Schema {
        table: String,
        mode: SinkMode,
        reason: String,
    },
    /// A statement of an SQL route failed.
    #[error(
        "PostgreSQL at {target}: route {route}, statement {statement}: {}",
        describe_pg(source)
    )]
    Route {
        target: String,
        route: String,
        statement: usize,
        #[source]
        source: tokio_postgres::Error,
    },
    /// An event matches no route (`source.unrouted = "dead_letter"`).
    #[error("no route takes the event (key {key}, version {version}, topic {topic}, event type {}); source.unrouted = \"dead_letter\"", event_type.as_deref().unwrap_or("none"))]
    Unrouted {
        key: String,
        version: i64,
        topic: String,
        event_type: Option<String>,
    },
}

impl PostgresError {
    /// True when PostgreSQL refused the data itself (a constraint, an invalid
    /// value: SQLSTATE classes 22 and 23): another event may well go through.
    pub fn is_record_error(&self) -> bool {
        match self {
            PostgresError::Unrouted { .. } => true,
            PostgresError::Query { source, .. } | PostgresError::Route { source, .. } => source
                .code()
                .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23")),
            _ => false,
        }
    }

    /// True when trying again may succeed (connection lost, timeout, deadlock,
    /// serialization failure); false for errors that repeat.
    pub fn is_transient(&self) -> bool {
        match self {
            PostgresError::Connect { .. } => true,
            PostgresError::Query { source, .. } | PostgresError::Route { source, .. } => {
                write::is_transient(source)
            }
            PostgresError::Schema { .. }
            | PostgresError::Unrouted { .. }
            | PostgresError::Authentication { .. } => false,
        }
    }
}

impl PostgresError {
    /// The route whose statement failed, if a route's did.
    pub fn route(&self) -> Option<&str> {
        match self {
            PostgresError::Route { route, .. } => Some(route),
            _ => None,
        }
    }
}

impl From<PostgresError> for SinkError {
    fn from(e: PostgresError) -> Self {
        if e.is_transient() {
            SinkError::Transient(Box::new(e))
        } else if e.is_record_error() {
            SinkError::Refused(Box::new(e))
        } else {
            SinkError::Fatal(Box::new(e))
        }
    }
}

/// A PostgreSQL error with what the server said (SQLSTATE, message, constraint, detail).
pub fn describe_pg(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut out = format!("{} {}: {}", db.severity(), db.code().code(), db.message());
            if let Some(c) = db.constraint() {
                out.push_str(&format!(" (constraint {c})"));
            }
            if let Some(d) = db.detail() {
                out.push_str(&format!("; {d}"));
            }
            out
        }
        None => e.to_string(),
    }
}

/// Quotes a constant of Ordo's own configuration (a table's name) as an SQL
/// string literal, for statements prepared once; data is always bound.
pub(super) fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Quotes an SQL identifier (never a value: values are always bound parameters).
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Names of the tables the sink uses, quoted and schema-qualified.
#[derive(Debug, Clone)]
pub(crate) struct Tables {
    pub schema: String,
    pub target: String,
    pub target_display: String,
    pub offsets: String,
    pub key_state: String,
    pub gaps: String,
    pub dead_lettered: String,
    pub deleted_keys: String,
    pub schema_changes: String,
    pub passed_versions: String,
    pub key_versions: String,
    pub route_versions: String,
    pub refused_events: String,
    pub offset_moves: String,
    pub migrations: String,
    /// Whether the whole payload is stored (`payload` / `state`).
    pub payload: bool,
    /// The target's schema and table, unquoted (for the catalog).
    schema_name: String,
    table_name: String,
}

impl Tables {
    /// Ordo's own tables in `schema`, with `table` as the target.
    fn new(schema_name: &str, table: &str, payload: bool) -> Self {
        let schema = quote_ident(schema_name);
        let q = |t: &str| format!("{schema}.{}", quote_ident(t));
        Tables {
            target: q(table),
            target_display: format!("{schema_name}.{table}"),
            offsets: q("ordo_offsets"),
            key_state: q("ordo_key_state"),
            gaps: q("ordo_gaps"),
            dead_lettered: q("ordo_dead_lettered"),
            deleted_keys: q("ordo_deleted_keys"),
            schema_changes: q("ordo_schema_changes"),
            passed_versions: q("ordo_passed_versions"),
            key_versions: q("ordo_key_versions"),
            route_versions: q("ordo_route_versions"),
            refused_events: q("ordo_refused_events"),
            offset_moves: q("ordo_offset_moves"),
            payload,
            schema_name: schema_name.to_string(),
            table_name: table.to_string(),
            migrations: q("ordo_schema_migrations"),
            schema,
        }
    }
}

impl Tables {
    /// The target's schema and table names, unquoted.
    pub fn schema_and_table(&self) -> (&str, &str) {
        (&self.schema_name, &self.table_name)
    }
}

/// The key state lookup: one primary-key probe per key, whatever the table's
/// statistics say. The statement is prepared once per connection and its plan
/// turns generic; a plan made while the table was new (no statistics) could
/// otherwise keep reading every row per call (a hash join, or a filter of
/// `= ANY($1)`), a cost that grows with the key space.
fn key_state_sql(t: &Tables, mode: SinkMode) -> String {
    let target = quote_literal(&t.target_display);
    // A side table (versions the sink refused, keys a tombstone deleted) is
    // probed per key only when it holds a row for this target at all: the
    // check runs once per lookup (an InitPlan), in the same snapshot.
    let side = |table: &str, alias: &str| {
        format!(
            "CASE WHEN (SELECT min({alias}0.key) FROM {table} AS {alias}0 WHERE {alias}0.target_table = {target}) IS NOT NULL \
             THEN (SELECT {alias}.version FROM {table} AS {alias} WHERE {alias}.target_table = {target} AND {alias}.key = k.key) END"
        )
    };
    // A version the sink refused and the dead-letter topic took counts.
    let passed = side(&t.passed_versions, "x");
    let per_key = match mode {
        SinkMode::EventStore => format!(
            "SELECT k.key, GREATEST((SELECT max(e.version) FROM {} AS e WHERE e.stream = k.key), {passed}) AS version \
             FROM unnest($1::text[]) AS k(key)",
            t.target
        ),
        // A key a tombstone deleted is at the version it was deleted at.
        SinkMode::Projection => format!(
            "SELECT k.key, GREATEST(\
               (SELECT p.version FROM {} AS p WHERE p.key = k.key), \
               {}, \
               {passed}) AS version \
             FROM unnest($1::text[]) AS k(key)",
            t.target,
            side(&t.deleted_keys, "d")
        ),
    };
    // Only the keys the tables hold come back (most keys looked up are
    // new); `OFFSET 0` keeps the probes from being inlined into the filter
    // and run twice.
    format!("SELECT s.key, s.version FROM ({per_key} OFFSET 0) AS s WHERE s.version IS NOT NULL")
}

/// Writes batches to PostgreSQL and keeps Ordo's progress there.
#[derive(Clone)]
pub struct PostgresSink {
    pool: Pool,
    target: String,
    tls: TlsSettings,
    /// The user Ordo logs in as, and where its password comes from.
    user: String,
    password_from: Option<&'static str>,
    group: String,
    /// Every route, and where the key state is.
    routes: std::sync::Arc<routes::Routes>,
    /// Small batches of several partitions share transactions
    /// (`None`: `group_commit = false`).
    commits: Option<std::sync::Arc<group::GroupCommit>>,
    /// Key-state lookups of several partitions share a statement (same flag).
    lookups: Option<std::sync::Arc<group::GroupLookup>>,
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("target", &self.target)
            .field("routes", &self.routes.describe())
            .finish()
    }
}

/// `host:port/dbname` of a connection string, without credentials.
pub fn describe_target(cfg: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = cfg
        .get_hosts()
        .iter()
        .zip(cfg.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(h, p)| match h {
            tokio_postgres::config::Host::Tcp(h) => format!("{h}:{p}"),
            tokio_postgres::config::Host::Unix(path) => format!("{}:{p}", path.display()),
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost:5432".to_string()
    } else {
        hosts.join(",")
    };
    format!(
        "{hosts}/{}",
        cfg.get_dbname().unwrap_or("(default database)")
    )
}

impl PostgresSink {
    /// Builds the pool and checks one connection, so a wrong address fails
    /// at start. No transaction holds more than `max_events` events
    /// (`sink.batch_max_events`).
    pub async fn connect(
        pg: &PostgresConfig,
        group: &str,
        max_events: usize,
    ) -> Result<Self, PostgresError> {
        Self::connect_routed(pg, group, max_events, Unrouted::default()).await
    }

    /// [`Self::connect`], with what an event no route takes does.
    pub async fn connect_routed(
        pg: &PostgresConfig,
        group: &str,
        max_events: usize,
        unrouted: Unrouted,
    ) -> Result<Self, PostgresError> {
        let bad_config = |e: connect::ConnectionError| PostgresError::Connect {
            target: e.key.clone(),
            reason: e.reason,
        };
        let routes = routes::Routes::new(pg, unrouted).map_err(|e| PostgresError::Connect {
            target: e.key,
            reason: e.reason,
        })?;
        let connection = Connection::from_config(pg).map_err(bad_config)?;
        let tls = connection.connector().map_err(bad_config)?;
        let mut cfg = connection.config;
        let timeout = Duration::from_millis(pg.connect_timeout_ms);
        cfg.connect_timeout(timeout);
        if cfg.get_application_name().is_none() {
            cfg.application_name("ordo");
        }
        let target = describe_target(&cfg);
        let user = cfg.get_user().unwrap_or("(libpq default)").to_string();
        let password_from = connection.password_from;
        let manager = Manager::from_config(
            cfg,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pg.pool_size)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(timeout))
            .wait_timeout(Some(timeout * 2))
            .build()
            .map_err(|e| PostgresError::Connect {
                target: target.clone(),
                reason: e.to_string(),
            })?;
        let sink = PostgresSink {
            pool,
            target,
            tls: connection.tls,
            user,
            password_from,
            group: group.to_string(),
            routes: std::sync::Arc::new(routes),
            commits: pg.group_commit.then(|| {
                std::sync::Arc::new(group::GroupCommit::new(
                    pg.pool_size,
                    max_events,
                    group::events,
                ))
            }),
            lookups: pg.group_commit.then(|| {
                std::sync::Arc::new(group::GroupLookup::new(
                    pg.pool_size,
                    max_events,
                    group::keys,
                ))
            }),
        };
        drop(sink.client().await?);
        Ok(sink)
    }

    /// How events land in the (first) table route's table.
    pub fn mode(&self) -> Option<SinkMode> {
        self.routes.tables.first().map(|r| r.mode)
    }

    /// The routes' names and targets.
    pub fn describe_routes(&self) -> String {
        self.routes.describe()
    }

    /// `host:port/dbname` this sink writes to.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// TLS as this sink connects: mode, verification, files.
    pub fn tls(&self) -> &TlsSettings {
        &self.tls
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, PostgresError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) if connect::is_authentication(&e) => {
                PostgresError::Authentication {
                    target: self.target.clone(),
                    user: self.user.clone(),
                    reason: connect::explain_authentication(&e, self.password_from),
                }
            }
            deadpool_postgres::PoolError::Backend(e) => PostgresError::Connect {
                target: self.target.clone(),
                reason: connect::explain_connect_error(&e, &self.tls),
            },
            other => PostgresError::Connect {
                target: self.target.clone(),
                reason: other.to_string(),
            },
        })
    }

    fn query_error(&self, what: &str) -> impl Fn(tokio_postgres::Error) -> PostgresError + '_ {
        let what = what.to_string();
        move |source| PostgresError::Query {
            target: self.target.clone(),
            what: what.clone(),
            source,
        }
    }

    /// Creates Ordo's state tables and the target table if missing, and checks the target's shape.
    pub async fn migrate(&self) -> Result<(), PostgresError> {
        let mut client = self.client().await?;
        migrate::run(
            &mut client,
            &self.routes.own,
            &self.routes.tables,
            &self.target,
            &crate::process::owner_id(),
        )
        .await?;
        self.prepare_on(&client).await
    }

    /// Prepares every statement of every SQL route, so one PostgreSQL
    /// cannot run fails at start, naming the route and the statement.
    pub async fn prepare_statements(&self) -> Result<(), PostgresError> {
        let client = self.client().await?;
        self.prepare_on(&client).await
    }

    /// [`Self::prepare_statements`] on a connection in hand (a pool of one
    /// has no second), as each batch's connection prepares them: by name
    /// when the runs travel as `EXECUTE` texts, else as bound statements.
    async fn prepare_on(&self, client: &deadpool_postgres::Object) -> Result<(), PostgresError> {
        let bound = if self.routes.by_name {
            &[][..]
        } else {
            &self.routes.sql[..]
        };
        for route in bound {
            for (i, statement) in route.statements.iter().enumerate() {
                client
                    .prepare(&statement.sql)
                    .await
                    .map_err(|source| PostgresError::Route {
                        target: self.target.clone(),
                        route: route.name.clone(),
                        statement: i + 1,
                        source,
                    })?;
            }
        }
        sql_send::prepare(client, &self.routes)
            .await
            .map_err(|f| PostgresError::Route {
                target: self.target.clone(),
                route: f.route,
                statement: f.statement,
                source: f.source,
            })
    }

    /// Opens the pool's connections before the first batch needs them, so
    /// the first batches of many partitions do not each wait for a new
    /// connection. One that cannot open now is logged; the pool opens it
    /// when it is needed.
    async fn warm_up(&self) {
        let size = self.pool.status().max_size;
        let opened = futures::future::join_all((0..size).map(|_| self.client())).await;
        let failed: Vec<String> = opened
            .iter()
            .filter_map(|c| c.as_ref().err().map(ToString::to_string))
            .collect();
        if let Some(first) = failed.first() {
            tracing::warn!(target_db = %self.target, opened = size - failed.len(), pool_size = size,
                error = %first, "cannot open every connection of the pool yet; it opens them when needed");
        }
    }

    /// The DDL each table route's table needs (what [`Self::migrate`]
    /// would run on it), without running anything: for `ordo sink plan`.
    pub async fn plan(&self) -> Result<Vec<RoutePlan>, PostgresError> {
        let client = self.client().await?;
        let mut plans = Vec::new();
        for route in &self.routes.tables {
            let plan = migrate::plan(&**client, &route.tables, route.mode, &route.columns)
                .await
                .map_err(self.query_error(&format!(
                    "reading the columns of {}",
                    route.tables.target_display
                )))?;
            plans.push(RoutePlan {
                route: route.name.clone(),
                table: route.tables.target_display.clone(),
                plan,
            });
        }
        Ok(plans)
    }

    /// Each route and what is wrong with it: a table route's plan refused,
    /// an SQL route's statement PostgreSQL cannot prepare (with what each
    /// `$n` stands for).
    pub async fn check_routes(&self) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        let plans = self.plan().await;
        for (i, route) in self.routes.tables.iter().enumerate() {
            let what = format!(
                "route {} -> table {} ({})",
                route.name,
                route.tables.target_display,
                route.mode.as_str()
            );
            let problem = match &plans {
                Ok(plans) => plans
                    .get(i)
                    .filter(|p| !p.plan.refused.is_empty())
                    .map(|p| p.plan.refused.join("; ")),
                Err(e) => Some(e.to_string()),
            };
            out.push((what, problem));
        }
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => {
                for r in &self.routes.sql {
                    out.push((format!("route {}", r.name), Some(e.to_string())));
                }
                return out;
            }
        };
        if let Ok(plans) = &plans {
            let what = "grants: what `ordo run` needs of PostgreSQL".to_string();
            let problem = match self.plan_own().await {
                Err(e) => Some(e.to_string()),
                Ok(own) => {
                    let routes: Vec<_> = self
                        .routes
                        .tables
                        .iter()
                        .zip(plans.iter().map(|p| &p.plan))
                        .collect();
                    match grants::missing(&**client, &self.routes.own, &own, &routes).await {
                        Ok(missing) if missing.is_empty() => None,
                        Ok(missing) => Some(missing.join("; ")),
                        Err(e) => Some(describe_pg(&e)),
                    }
                }
            };
            out.push((what, problem));
        }
        for r in &self.routes.sql {
            let mut problems = Vec::new();
            for (i, statement) in r.statements.iter().enumerate() {
                if let Err(e) = client.prepare(&statement.sql).await {
                    let params: Vec<String> = statement
                        .names
                        .iter()
                        .enumerate()
                        .map(|(n, name)| format!("${} = ${{{name}}}", n + 1))
                        .collect();
                    problems.push(format!(
                        "route {}, statement {}: {} (parameters: {})",
                        r.name,
                        i + 1,
                        describe_pg(&e),
                        if params.is_empty() {
                            "none".to_string()
                        } else {
                            params.join(", ")
                        }
                    ));
                }
            }
            out.push((
                format!(
                    "route {} -> {} SQL statement(s)",
                    r.name,
                    r.statements.len()
                ),
                (!problems.is_empty()).then(|| problems.join("; ")),
            ));
        }
        out
    }

    /// The DDL of Ordo's own tables that [`Self::migrate`] would run.
    pub async fn plan_own(&self) -> Result<Vec<String>, PostgresError> {
        let client = self.client().await?;
        migrate::pending_own(&**client, &self.routes.own)
            .await
            .map_err(self.query_error("reading Ordo's applied migrations"))
    }

    /// Each SQL route's statements as they are prepared (`$n` in place of
    /// the names), with what each parameter is.
    pub fn sql_statements(&self) -> Vec<(String, Vec<sql_route::Statement>)> {
        self.routes
            .sql
            .iter()
            .map(|r| (r.name.clone(), r.statements.clone()))
            .collect()
    }

    /// Takes the lease of a partition: bumps its epoch and returns where it resumes.
    pub async fn acquire(
        &self,
        topic: &str,
        partition: i32,
        owner: &str,
    ) -> Result<Lease, PostgresError> {
        let client = self.client().await?;
        let sql = format!(
            "INSERT INTO {} AS o (consumer_group, topic, partition, next_offset, epoch, owner, updated_at) \
             VALUES ($1, $2, $3, NULL, 1, $4, now()) \
             ON CONFLICT (consumer_group, topic, partition) DO UPDATE \
             SET epoch = o.epoch + 1, owner = EXCLUDED.owner, moved = false, updated_at = now() \
             RETURNING next_offset, epoch",
            self.routes.own.offsets
        );
        let row = client
            .query_one(&sql, &[&self.group, &topic, &partition, &owner])
            .await
            .map_err(self.query_error(&format!("taking the lease of {topic}/{partition}")))?;
        let next_offset: Option<i64> = row.get(0);
        let dead_lettered = self
            .dead_lettered_from(&client, topic, partition, next_offset)
            .await?;
        Ok(Lease {
            topic: topic.to_string(),
            partition,
            epoch: row.get(1),
            next_offset,
            dead_lettered,
        })
    }

    /// The offsets at or after `next_offset` whose records are in the
    /// dead-letter topic already.
    async fn dead_lettered_from(
        &self,
        client: &deadpool_postgres::Object,
        topic: &str,
        partition: i32,
        next_offset: Option<i64>,
    ) -> Result<Vec<i64>, PostgresError> {
        Ok(client
            .query(
                &format!(
                    "SELECT \"offset\" FROM {} WHERE consumer_group = $1 AND topic = $2 \
                     AND partition = $3 AND \"offset\" >= $4 ORDER BY 1",
                    self.routes.own.dead_lettered
                ),
                &[&self.group, &topic, &partition, &next_offset.unwrap_or(0)],
            )
            .await
            .map_err(self.query_error(&format!(
                "reading dead-lettered offsets of {topic}/{partition}"
            )))?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// Whether `lease` is still the partition's: no other worker took it since.
    pub async fn holds(&self, lease: &Lease) -> Result<bool, PostgresError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT epoch FROM {} WHERE consumer_group = $1 AND topic = $2 AND partition = $3",
            self.routes.own.offsets
        );
        let row = client
            .query_opt(&sql, &[&self.group, &lease.topic, &lease.partition])
            .await
            .map_err(self.query_error(&format!(
                "checking the lease of {}/{}",
                lease.topic, lease.partition
            )))?;
        Ok(row.is_some_and(|r| r.get::<_, i64>(0) == lease.epoch))
    }

    /// The last applied sequence of each of `keys` that the sink holds.
    ///
    /// The target table is the key state: it is written in the same
    /// transaction as the partition's progress, so the highest version it
    /// holds for a key is exactly what was applied (event store: the highest
    /// `version` of the stream; projection: the row's `version`). A key with
    /// nothing applied is absent from the result.
    pub async fn key_states(&self, keys: &[String]) -> Result<HashMap<String, i64>, PostgresError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.key_state_statement())
            .await
            .map_err(self.query_error("preparing the key state lookup"))?;
        let rows = if self.routes.single || self.routes.store.is_some() {
            client.query(&stmt, &[&keys]).await
        } else {
            client.query(&stmt, &[&keys, &self.group]).await
        }
        .map_err(self.query_error(&format!(
            "reading the last applied versions from {}",
            self.key_state_table()
        )))?;
        // Only keys the tables hold are returned: the rest were never applied.
        Ok(rows
            .into_iter()
            .filter_map(|r| Some((r.get(0), r.get::<_, Option<i64>>(1)?)))
            .collect())
    }

    /// Reads the key state of several partitions' lookups in one
    /// statement, and answers each with its own keys; when that fails, each
    /// lookup on its own, so each gets its own outcome.
    async fn look_up_group(
        &self,
        lookups: Vec<Vec<String>>,
    ) -> Vec<Result<HashMap<String, i64>, SinkError>> {
        if let [keys] = lookups.as_slice() {
            return vec![self.key_states(keys).await.map_err(SinkError::from)];
        }
        let mut all: Vec<String> = lookups.iter().flatten().cloned().collect();
        all.sort_unstable();
        all.dedup();
        match self.key_states(&all).await {
            Ok(states) => lookups
                .iter()
                .map(|keys| {
                    Ok(keys
                        .iter()
                        .filter_map(|k| states.get(k).map(|v| (k.clone(), *v)))
                        .collect())
                })
                .collect(),
            Err(e) => {
                tracing::debug!(lookups = lookups.len(), error = %e,
                    "a grouped key-state lookup failed; reading each on its own");
                futures::future::join_all(
                    lookups
                        .iter()
                        .map(|keys| async { self.key_states(keys).await.map_err(SinkError::from) }),
                )
                .await
            }
        }
    }

    /// The statement [`Self::key_states`] runs, with the keys as `$1`
    /// (for an operator's `EXPLAIN`, and the test that keeps its plan a
    /// probe per key).
    pub fn key_state_statement(&self) -> String {
        match (self.routes.single, self.routes.tables.first()) {
            (true, Some(r)) => key_state_sql(&r.tables, r.mode),
            _ => match self.routes.store {
                Some(i) => routes::store_key_state_sql(&self.routes, &self.routes.tables[i]),
                None => routes::key_versions_sql(&self.routes.own),
            },
        }
    }

    /// Where the key state is read from, for errors.
    fn key_state_table(&self) -> &str {
        match (self.routes.single, self.routes.tables.first()) {
            (true, Some(r)) => &r.tables.target_display,
            _ => match self.routes.store {
                Some(i) => &self.routes.tables[i].tables.target_display,
                None => "ordo_key_versions",
            },
        }
    }

    /// Writes a batch and the partition's progress in one transaction.
    pub async fn write(&self, lease: &Lease, batch: &Batch) -> Result<Written, SinkError> {
        if self.routes.single && self.mode() == Some(SinkMode::EventStore) {
            if let Some(e) = batch.events.iter().find(|e| e.delete) {
                return Err(SinkError::Fatal(
                    format!(
                        "a tombstone (key {}, offset {}) reached the event store; \
                         source.tombstones = \"delete\" needs sink.postgres.mode = \"projection\"",
                        e.key, e.offset
                    )
                    .into(),
                ));
            }
        }
        let written = match self
            .commits
            .as_ref()
            .filter(|g| g.takes(batch.events.len()))
        {
            Some(group) => {
                group
                    .submit((lease.clone(), batch.clone()), |members| {
                        self.write_group(members)
                    })
                    .await?
            }
            None => self.write_alone(lease, batch).await?,
        };
        if written.absorbed > 0 && self.mode() == Some(SinkMode::EventStore) {
            tracing::warn!(topic = %lease.topic, partition = lease.partition,
                absorbed = written.absorbed, routes = %self.routes.describe(),
                "events already present in the event store were not written again");
        }
        Ok(written)
    }

    /// Writes the batches of several partitions in one transaction; when
    /// that fails, each batch on its own, so each gets its own outcome.
    async fn write_group(&self, members: Vec<(Lease, Batch)>) -> Vec<Result<Written, SinkError>> {
        if let [(lease, batch)] = members.as_slice() {
            return vec![self.write_alone(lease, batch).await];
        }
        let grouped = async {
            let mut client = self.client().await?;
            let what = || {
                format!(
                    "writing the batches of {} partitions ({} events) to {}",
                    members.len(),
                    members.iter().map(|(_, b)| b.events.len()).sum::<usize>(),
                    self.routes.describe()
                )
            };
            write::group(&mut client, &self.routes, &self.group, &members)
                .await
                .map_err(|e| self.write_error(e, "", what))
        };
        let failed = match grouped.await {
            Ok(written) => return written.into_iter().map(Ok).collect(),
            Err(e) => e,
        };
        // Also after a lost connection: one broken connection then costs
        // no partition a retry (nor the breaker a failure per batch); a
        // database that is down fails each batch's own attempt as well.
        tracing::debug!(partitions = members.len(),
            error = %failed.as_ref().map_or("a lease was taken over".to_string(), ToString::to_string),
            "a grouped transaction failed; writing its batches one by one");
        futures::future::join_all(
            members
                .iter()
                .map(|(lease, batch)| self.write_alone(lease, batch)),
        )
        .await
    }

    /// Writes a batch and the partition's progress in a transaction of its own.
    async fn write_alone(&self, lease: &Lease, batch: &Batch) -> Result<Written, SinkError> {
        let mut client = self.client().await?;
        let what = || {
            format!(
                "writing a batch of {} events of {}/{} to {}",
                batch.events.len(),
                lease.topic,
                lease.partition,
                self.routes.describe()
            )
        };
        write::batch(&mut client, &self.routes, &self.group, lease, batch)
            .await
            .map_err(|e| match self.write_error(e, &lease.topic, what) {
                None => SinkError::Fenced {
                    topic: lease.topic.clone(),
                    partition: lease.partition,
                    epoch: lease.epoch,
                },
                Some(e) => SinkError::from(e),
            })
    }

    /// A failed write as the sink's error (`None`: fenced); `what` says
    /// what was being written.
    fn write_error(
        &self,
        e: write::WriteError,
        topic: &str,
        what: impl Fn() -> String,
    ) -> Option<PostgresError> {
        Some(match e {
            write::WriteError::Fenced => return None,
            write::WriteError::Db(source) => PostgresError::Query {
                target: self.target.clone(),
                what: what(),
                source,
            },
            write::WriteError::Statement(f) => PostgresError::Route {
                target: self.target.clone(),
                route: f.route,
                statement: f.statement,
                source: f.source,
            },
            write::WriteError::Unrouted {
                key,
                version,
                event_type,
            } => PostgresError::Unrouted {
                key,
                version,
                topic: topic.to_string(),
                event_type,
            },
        })
    }

    /// The stored next offset of each partition of `topic` (for `ordo check` and tests).
    pub async fn stored_offsets(&self, topic: &str) -> Result<HashMap<i32, i64>, PostgresError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT partition, next_offset FROM {} WHERE consumer_group = $1 AND topic = $2 AND next_offset IS NOT NULL",
            self.routes.own.offsets
        );
        let rows = client
            .query(&sql, &[&self.group, &topic])
            .await
            .map_err(self.query_error("reading stored offsets"))?;
        Ok(rows
            .into_iter()
            .filter_map(|r| Some((r.get(0), r.get::<_, Option<i64>>(1)?)))
            .collect())
    }
}

#[async_trait::async_trait]
impl super::Sink for PostgresSink {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn describe(&self) -> String {
        format!(
            "PostgreSQL at {} ({}; user {}, {}), routes: {}",
            self.target,
            self.tls.describe(),
            self.user,
            match self.password_from {
                Some(from) => format!("password from {from}"),
                None => "no password".to_string(),
            },
            self.routes.describe()
        )
    }

    async fn prepare(&self) -> Result<(), SinkError> {
        self.migrate().await?;
        self.warm_up().await;
        Ok(())
    }

    async fn acquire(&self, topic: &str, partition: i32, owner: &str) -> Result<Lease, SinkError> {
        Ok(PostgresSink::acquire(self, topic, partition, owner).await?)
    }

    async fn key_states(&self, keys: &[String]) -> Result<HashMap<String, i64>, SinkError> {
        match self.lookups.as_ref().filter(|g| g.takes(keys.len())) {
            Some(group) => {
                group
                    .submit(keys.to_vec(), |lookups| self.look_up_group(lookups))
                    .await
            }
            None => Ok(PostgresSink::key_states(self, keys).await?),
        }
    }

    async fn write(&self, lease: &Lease, batch: &Batch) -> Result<Written, SinkError> {
        PostgresSink::write(self, lease, batch).await
    }

    async fn stored_offsets(&self, topic: &str) -> Result<HashMap<i32, i64>, SinkError> {
        Ok(PostgresSink::stored_offsets(self, topic).await?)
    }

    async fn holds(&self, lease: &Lease) -> Result<bool, SinkError> {
        Ok(PostgresSink::holds(self, lease).await?)
    }

    async fn take_moved(
        &self,
        lease: &Lease,
        owner: &str,
    ) -> Result<Option<offsets::TakenMove>, SinkError> {
        Ok(PostgresSink::take_moved(self, lease, owner).await?)
    }

    async fn check_routes(&self) -> Vec<(String, Option<String>)> {
        PostgresSink::check_routes(self).await
    }

    async fn reachable(&self) -> bool {
        match self.client().await {
            Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_quoted() {
        assert_eq!(quote_literal("public.events"), "'public.events'");
        assert_eq!(quote_literal("o'brien"), "'o''brien'");
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("events"), "\"events\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn targets_hide_credentials() {
        let cfg: tokio_postgres::Config =
            "postgres://u:secret@db.example:6543/app".parse().unwrap();
        assert_eq!(describe_target(&cfg), "db.example:6543/app");
    }
}
