//! `[sink.postgres]`: where the PostgreSQL sink connects, which table it
//! writes and how events land there. Checked by [`PostgresConfig::validate`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::columns::{AutoColumns, Column};

/// `[sink.postgres]`: the connection to PostgreSQL and the target table.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// libpq URL or key=value string, e.g. `postgres://ordo@db:5432/ordo?sslmode=verify-full`.
    pub url: String,
    /// The password, when not in the URL (e.g. from `ORDO_SINK__POSTGRES__PASSWORD`).
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding the password (e.g. a mounted Kubernetes Secret).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// libpq's `sslmode`; overrides the URL's.
    #[serde(default)]
    pub sslmode: Option<String>,
    /// CA certificates (PEM) that sign the server's certificate; overrides the URL's.
    #[serde(default)]
    pub sslrootcert: Option<PathBuf>,
    /// Client certificate (PEM), for servers that require one; overrides the URL's.
    #[serde(default)]
    pub sslcert: Option<PathBuf>,
    /// The client certificate's private key (PEM); overrides the URL's.
    #[serde(default)]
    pub sslkey: Option<PathBuf>,
    /// Connections in the pool.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Small event store batches of several partitions share a transaction
    /// (group commit); `false`: a transaction per batch.
    #[serde(default = "default_group_commit")]
    pub group_commit: bool,
    /// Timeout for establishing a connection.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// `event_store` (append, unique (stream, version)) or `projection`
    /// (latest state per key): the one target's, when no routes are given.
    #[serde(default)]
    pub mode: Option<SinkMode>,
    /// Target table (created if missing), when no routes are given.
    #[serde(default)]
    pub table: Option<String>,
    /// Schema of the target table and of Ordo's own state tables.
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Payload fields copied into typed columns of their own.
    #[serde(default)]
    pub columns: Vec<Column>,
    /// Keep the whole payload (`payload` in an event store, `state` in a
    /// projection) beside the typed columns; `false` keeps only the columns.
    #[serde(default = "default_payload")]
    pub payload: bool,
    /// Columns derived from the Avro reader schema instead of listed:
    /// `flatten` (a nested record's fields as `parent_child` columns) or
    /// `jsonb` (a nested record as one column).
    #[serde(default)]
    pub auto_columns: Option<AutoColumns>,
    /// `[[sink.postgres.routes]]`: several targets, each taking the events
    /// of its topics and event types, all written in one transaction. None
    /// given: the one target above (`table`, `mode`) is the only route.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

/// `[[sink.postgres.routes]]`: one target and the events it takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The route's name, in logs, metrics and dead-letter headers.
    pub name: String,
    /// The topics whose events it takes (absent: all).
    #[serde(default)]
    pub topics: Option<Vec<String>>,
    /// The event types it takes: exact names or `prefix.*` (absent: all).
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    /// A table target: the table (created if missing) ...
    #[serde(default)]
    pub table: Option<String>,
    /// ... and how events land in it.
    #[serde(default)]
    pub mode: Option<SinkMode>,
    /// Payload fields copied into typed columns of their own.
    #[serde(default)]
    pub columns: Vec<Column>,
    /// Keep the whole payload beside the typed columns.
    #[serde(default = "default_payload")]
    pub payload: bool,
    /// Columns derived from the Avro reader schema instead of listed.
    #[serde(default)]
    pub auto_columns: Option<AutoColumns>,
    /// An SQL target: statements run once per event, in per-key order.
    #[serde(default)]
    pub sql: Option<String>,
    /// Made from the section's own `table` and `mode` (no routes given):
    /// its keys are the section's.
    #[serde(skip)]
    pub implicit: bool,
}

/// What a route writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<'a> {
    Table { table: &'a str, mode: SinkMode },
    Sql(&'a str),
}

impl RouteConfig {
    /// The route's configuration keys' prefix: `sink.postgres.routes[2]`,
    /// or `sink.postgres` for the implicit route.
    pub fn key(&self, index: usize) -> String {
        if self.implicit {
            "sink.postgres".into()
        } else {
            format!("sink.postgres.routes[{index}]")
        }
    }

    /// The route's target; `None` only before validation.
    pub fn target(&self) -> Option<Target<'_>> {
        match (&self.sql, &self.table, self.mode) {
            (Some(sql), _, _) => Some(Target::Sql(sql)),
            (None, Some(table), Some(mode)) => Some(Target::Table { table, mode }),
            _ => None,
        }
    }

    /// The route's filter.
    pub fn filter(&self) -> Result<crate::sink::route::Filter, (String, String)> {
        crate::sink::route::Filter::new(self.topics.as_deref(), self.event_types.as_deref())
    }

    fn validate(
        &self,
        index: usize,
        schema_routes: &[RouteConfig],
    ) -> Result<(), (String, String)> {
        let key = self.key(index);
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.len() <= 63
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        };
        if !valid_name(&self.name) {
            return Err((
                format!("{key}.name"),
                format!("`{}` must be 1 to 63 of [A-Za-z0-9_.-]", self.name),
            ));
        }
        if schema_routes[..index].iter().any(|r| r.name == self.name) {
            return Err((
                format!("{key}.name"),
                format!("`{}` is named twice", self.name),
            ));
        }
        self.filter()
            .map_err(|(k, why)| (format!("{key}.{k}"), why))?;
        if let Some(sql) = &self.sql {
            for (field, set) in [
                ("table", self.table.is_some()),
                ("mode", self.mode.is_some()),
                ("columns", !self.columns.is_empty()),
                ("auto_columns", self.auto_columns.is_some()),
            ] {
                if set {
                    return Err((
                        format!("{key}.{field}"),
                        "an SQL route (`sql`) writes what its statements say: give `sql` or a `table`, not both".into(),
                    ));
                }
            }
            return super::sql_route::parse(sql)
                .map(|_| ())
                .map_err(|why| (format!("{key}.sql"), why));
        }
        let Some(table) = &self.table else {
            return Err((
                format!("{key}.table"),
                "required, but not set (or give `sql` for an SQL route)".into(),
            ));
        };
        let Some(mode) = self.mode else {
            return Err((
                format!("{key}.mode"),
                "required, but not set; valid values: `event_store`, `projection`".into(),
            ));
        };
        if table.is_empty() || table.len() > 63 {
            return Err((
                format!("{key}.table"),
                format!("`{table}` must be 1 to 63 bytes"),
            ));
        }
        if let Some(other) = schema_routes[..index]
            .iter()
            .find(|r| r.table.as_deref() == Some(table.as_str()))
        {
            return Err((
                format!("{key}.table"),
                format!(
                    "`{table}` is route `{}`'s table already: a table has one route",
                    other.name
                ),
            ));
        }
        if !self.payload && self.columns.is_empty() && self.auto_columns.is_none() {
            return Err((
                format!("{key}.payload"),
                "`false` keeps only typed columns: give `columns` or `auto_columns`".into(),
            ));
        }
        if self.auto_columns.is_some() && !self.columns.is_empty() {
            return Err((
                format!("{key}.auto_columns"),
                "give either `columns` or `auto_columns`, not both".into(),
            ));
        }
        validate_columns(&self.columns, mode, &format!("{key}.columns"))
    }
}

/// Columns every target table of a mode has: no typed column may take their names.
pub fn base_columns(mode: SinkMode) -> &'static [&'static str] {
    match mode {
        SinkMode::EventStore => &[
            "position",
            "stream",
            "version",
            "payload",
            "topic",
            "partition",
            "offset",
            "event_time",
            "recorded_at",
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

/// How events land in the table.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SinkMode {
    EventStore,
    Projection,
}

fn default_pool_size() -> usize {
    8
}
fn default_group_commit() -> bool {
    true
}
fn default_connect_timeout_ms() -> u64 {
    5000
}
fn default_payload() -> bool {
    true
}
fn default_schema() -> String {
    "public".to_string()
}

/// Never prints the URL (it may hold a password) nor the password.
impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("pool_size", &self.pool_size)
            .field("group_commit", &self.group_commit)
            .field("schema", &self.schema)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl PostgresConfig {
    /// Makes the section's own `table` and `mode` its one route when no
    /// routes are given; refuses both at once, naming the key.
    pub fn resolve_routes(&mut self) -> Result<(), (String, String)> {
        if !self.routes.is_empty() {
            for (key, set) in [
                ("table", self.table.is_some()),
                ("mode", self.mode.is_some()),
                ("columns", !self.columns.is_empty()),
                ("auto_columns", self.auto_columns.is_some()),
            ] {
                if set {
                    return Err((
                        format!("sink.postgres.{key}"),
                        "with [[sink.postgres.routes]] each route names its own target: move it into a route".into(),
                    ));
                }
            }
            return Ok(());
        }
        if self.mode.is_none() {
            return Err((
                "sink.postgres.mode".into(),
                "required, but not set (or give [[sink.postgres.routes]])".into(),
            ));
        }
        if self.table.is_none() {
            return Err((
                "sink.postgres.table".into(),
                "required, but not set (or give [[sink.postgres.routes]])".into(),
            ));
        }
        self.routes.push(RouteConfig {
            name: "default".into(),
            topics: None,
            event_types: None,
            table: self.table.clone(),
            mode: self.mode,
            columns: std::mem::take(&mut self.columns),
            payload: self.payload,
            auto_columns: self.auto_columns,
            sql: None,
            implicit: true,
        });
        Ok(())
    }

    /// Checks values that parse but cannot work: the key (in full) and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let schema = &self.schema;
        if schema.is_empty() || schema.len() > 63 {
            return Err((
                "sink.postgres.schema".into(),
                format!("`{schema}` must be 1 to 63 bytes"),
            ));
        }
        for (key, value) in [
            ("sink.postgres.pool_size", self.pool_size as u64),
            ("sink.postgres.connect_timeout_ms", self.connect_timeout_ms),
        ] {
            if value == 0 {
                return Err((key.into(), "must be greater than 0".into()));
            }
        }
        super::connect::Connection::from_config(self).map_err(|e| (e.key, e.reason))?;
        if self.routes.is_empty() {
            return Err((
                "sink.postgres.routes".into(),
                "no route: give `table` and `mode`, or [[sink.postgres.routes]]".into(),
            ));
        }
        for (i, route) in self.routes.iter().enumerate() {
            route.validate(i, &self.routes)?;
        }
        Ok(())
    }

    /// The one route when it takes every event into a table: today's fast
    /// path, where the table itself is the key state.
    pub fn single_table(&self) -> Option<(&RouteConfig, &str, SinkMode)> {
        match self.routes.as_slice() {
            [r] if r.topics.is_none() && r.event_types.is_none() => match r.target()? {
                Target::Table { table, mode } => Some((r, table, mode)),
                Target::Sql(_) => None,
            },
            _ => None,
        }
    }

    /// Makes relative file paths relative to `base` (the configuration file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [
            &mut self.password_file,
            &mut self.sslrootcert,
            &mut self.sslcert,
            &mut self.sslkey,
        ] {
            if let Some(p) = p.as_mut().filter(|p| p.is_relative()) {
                *p = base.join(&*p);
            }
        }
    }
}

/// Checks typed columns (listed, or derived as `from` says): names that are
/// identifiers of their own, not a base column of `mode`, once each.
pub fn validate_columns(
    columns: &[Column],
    mode: SinkMode,
    from: &str,
) -> Result<(), (String, String)> {
    for (i, c) in columns.iter().enumerate() {
        let key = format!("{from}[{i}]");
        if c.name.is_empty() || c.name.len() > 63 {
            return Err((key, format!("`{}` must be 1 to 63 bytes", c.name)));
        }
        if base_columns(mode).contains(&c.name.as_str()) {
            return Err((
                key,
                format!(
                    "`{}` is a column Ordo writes itself in {} mode; name the column otherwise",
                    c.name,
                    mode.as_str()
                ),
            ));
        }
        if columns[..i].iter().any(|o| o.name == c.name) {
            return Err((key, format!("`{}` is named twice", c.name)));
        }
    }
    Ok(())
}

impl SinkMode {
    /// The mode as configured.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkMode::EventStore => "event_store",
            SinkMode::Projection => "projection",
        }
    }
}
