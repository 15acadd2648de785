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
    /// `event_store` (append, unique (stream, version)) or `projection` (latest state per key).
    pub mode: SinkMode,
    /// Target table (created if missing).
    pub table: String,
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
            .field("mode", &self.mode)
            .field("schema", &self.schema)
            .field("table", &self.table)
            .field("columns", &self.columns)
            .field("auto_columns", &self.auto_columns)
            .finish_non_exhaustive()
    }
}

impl PostgresConfig {
    /// Checks values that parse but cannot work: the key (in full) and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (key, ident) in [
            ("sink.postgres.table", &self.table),
            ("sink.postgres.schema", &self.schema),
        ] {
            if ident.is_empty() || ident.len() > 63 {
                return Err((key.into(), format!("`{ident}` must be 1 to 63 bytes")));
            }
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
        if !self.payload && self.columns.is_empty() && self.auto_columns.is_none() {
            return Err((
                "sink.postgres.payload".into(),
                "`false` keeps only typed columns: give `columns` or `auto_columns`".into(),
            ));
        }
        if self.auto_columns.is_some() && !self.columns.is_empty() {
            return Err((
                "sink.postgres.auto_columns".into(),
                "give either `columns` or `auto_columns`, not both".into(),
            ));
        }
        self.validate_columns("sink.postgres.columns")
    }

    /// Checks the typed columns (listed, or derived as `from` says): names
    /// that are identifiers of their own, not a base column's, once each.
    pub fn validate_columns(&self, from: &str) -> Result<(), (String, String)> {
        for (i, c) in self.columns.iter().enumerate() {
            let key = format!("{from}[{i}]");
            if c.name.is_empty() || c.name.len() > 63 {
                return Err((key, format!("`{}` must be 1 to 63 bytes", c.name)));
            }
            if base_columns(self.mode).contains(&c.name.as_str()) {
                return Err((
                    key,
                    format!(
                        "`{}` is a column Ordo writes itself in {:?} mode; name the column otherwise",
                        c.name, self.mode
                    ),
                ));
            }
            if self.columns[..i].iter().any(|o| o.name == c.name) {
                return Err((key, format!("`{}` is named twice", c.name)));
            }
        }
        Ok(())
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
