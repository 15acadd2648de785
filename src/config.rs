//! Typed settings: a TOML file overlaid by `ORDO_*` environment variables,
//! validated once at start with errors that name the key and where it came from.
//!
//! Environment variables use `__` between levels: `ORDO_SINK__TABLE=events`,
//! `ORDO_KAFKA__BOOTSTRAP_SERVERS=broker:9092` (under `kafka`, `_` becomes `.`
//! because librdkafka property names never contain `_`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::kafka::KafkaProperties;
use crate::order::BoundPolicy;
pub use crate::sink::postgres::connect::PostgresConfig;

/// Prefix of environment variables that override the file.
pub const ENV_PREFIX: &str = "ORDO";

/// librdkafka properties that Ordo sets itself because its correctness depends on them.
const MANAGED_KAFKA_PROPERTIES: &[(&str, &str)] = &[
    (
        "enable.auto.offset.store",
        "Ordo stores offsets itself, only up to what the sink has committed",
    ),
    (
        "enable.partition.eof",
        "Ordo does not use partition EOF events",
    ),
];

/// The whole configuration of one Ordo process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// librdkafka properties, passed through unchanged (`bootstrap.servers`, `group.id`, ...).
    pub kafka: KafkaProperties,
    pub source: SourceConfig,
    pub ordering: OrderingConfig,
    pub sink: SinkConfig,
    pub postgres: PostgresConfig,
    /// The Schema Registry, for Avro.
    #[serde(default)]
    pub schema_registry: Option<crate::decode::avro::RegistryConfig>,
    /// Where records that cannot be handled go.
    #[serde(default)]
    pub dead_letter: crate::dlq::DeadLetterConfig,
    /// The HTTP listener: /metrics, /healthz, /readyz.
    #[serde(default)]
    pub http: crate::telemetry::http::HttpConfig,
    /// How long a stop may take.
    #[serde(default)]
    pub shutdown: crate::consume::ShutdownConfig,
    /// What Ordo's records may occupy across all partitions.
    #[serde(default)]
    pub memory: crate::consume::memory::MemoryConfig,
    #[serde(default)]
    pub log: LogConfig,
}

/// What to consume and how it is encoded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Topics consumed by this group.
    pub topics: Vec<String>,
    /// Payload format of the records.
    #[serde(default)]
    pub format: crate::decode::FormatKind,
    /// Encoding of the Kafka message key: `string` or `avro`.
    #[serde(default)]
    pub key_format: crate::decode::avro::KeyFormat,
    /// Avro reader schema of each topic (`[[source.reader_schemas]]`).
    #[serde(default)]
    pub reader_schemas: Vec<crate::decode::avro::ReaderSchemaConfig>,
    /// Where to start a partition the sink has never seen.
    #[serde(default)]
    pub start_from: StartFrom,
}

/// Where a partition without a stored offset starts.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    #[default]
    Earliest,
    Latest,
}

/// Where the key and the per-key sequence of an event come from, and the buffer's bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderingConfig {
    /// `message_key` or `field:<dotted.path>`.
    #[serde(default)]
    pub key: KeySource,
    /// `field:<dotted.path>` or `header:<name>`.
    pub sequence: SequenceSource,
    /// The sequence a key's first event carries.
    #[serde(default = "default_first_sequence")]
    pub first_sequence: i64,
    /// Most events held out of order per partition.
    #[serde(default = "default_max_buffered_events")]
    pub max_buffered_events: usize,
    /// Most payload bytes held out of order per partition.
    #[serde(default = "default_max_buffered_bytes")]
    pub max_buffered_bytes: usize,
    /// How long the oldest held event may wait for its gap to fill.
    #[serde(default = "default_gap_timeout_ms")]
    pub gap_timeout_ms: u64,
    /// What happens when a bound is reached: `wait` or `skip`.
    #[serde(default)]
    pub on_bound: BoundPolicy,
    /// Most keys whose last applied sequence is cached per partition.
    #[serde(default = "default_max_cached_keys")]
    pub max_cached_keys: usize,
}

/// Where events are written, and how they are batched.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The sink; `postgres` is the one there is.
    #[serde(default)]
    pub kind: SinkKind,
    /// `event_store` (append, unique (stream, version)) or `projection` (latest state per key).
    pub mode: SinkMode,
    /// Target table (created if missing).
    pub table: String,
    /// Schema of the target table and of Ordo's own state tables.
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Most events per sink transaction.
    #[serde(default = "default_batch_max_events")]
    pub batch_max_events: usize,
    /// Longest an event waits for its batch to fill.
    #[serde(default = "default_batch_max_wait_ms")]
    pub batch_max_wait_ms: u64,
    /// The circuit breaker that pauses partitions while the sink fails.
    #[serde(default)]
    pub breaker: crate::sink::breaker::BreakerConfig,
    /// How failed sink operations are retried.
    #[serde(default)]
    pub retry: crate::sink::retry::RetryConfig,
}

/// The sink implementation.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    #[default]
    Postgres,
}

/// How events land in the table.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SinkMode {
    EventStore,
    Projection,
}

/// Logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// An `EnvFilter` directive such as `info` or `ordo=debug,rdkafka=warn`; `RUST_LOG` wins.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `json` or `text`.
    #[serde(default)]
    pub format: LogFormat,
    /// Header whose value is a record's correlation id, carried by its span.
    #[serde(default = "default_correlation_header")]
    pub correlation_header: String,
    /// Header whose value is a record's causation id, carried by its span.
    #[serde(default = "default_causation_header")]
    pub causation_header: String,
}

fn default_correlation_header() -> String {
    "correlation-id".into()
}
fn default_causation_header() -> String {
    "causation-id".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            correlation_header: default_correlation_header(),
            causation_header: default_causation_header(),
            level: default_log_level(),
            format: LogFormat::default(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

fn default_first_sequence() -> i64 {
    1
}
fn default_max_buffered_events() -> usize {
    10_000
}
fn default_max_buffered_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_gap_timeout_ms() -> u64 {
    60_000
}
fn default_max_cached_keys() -> usize {
    100_000
}
fn default_schema() -> String {
    "public".to_string()
}
fn default_batch_max_events() -> usize {
    1000
}
fn default_batch_max_wait_ms() -> u64 {
    20
}
fn default_log_level() -> String {
    "info,tokio_postgres=warn".to_string()
}

/// Where the key of an event comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeySource {
    /// The Kafka message key, as UTF-8.
    #[default]
    MessageKey,
    /// A field of the decoded record.
    Field(FieldPath),
}

/// Where the sequence of an event comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequenceSource {
    /// A field of the decoded record.
    Field(FieldPath),
    /// A Kafka header holding a decimal integer.
    Header(String),
}

/// A dotted path into a record, such as `order.customer.id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath(pub Vec<String>);

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

impl FromStr for FieldPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<String> = s.split('.').map(str::to_string).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!("`{s}` is not a field path (expected a.b.c)"));
        }
        Ok(FieldPath(parts))
    }
}

impl FromStr for KeySource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            None if s == "message_key" => Ok(KeySource::MessageKey),
            Some(("field", path)) => Ok(KeySource::Field(path.parse()?)),
            _ => Err(format!(
                "`{s}` is not a key source (expected `message_key` or `field:<path>`)"
            )),
        }
    }
}

impl FromStr for SequenceSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("field", path)) => Ok(SequenceSource::Field(path.parse()?)),
            Some(("header", name)) if !name.is_empty() => Ok(SequenceSource::Header(name.into())),
            _ => Err(format!(
                "`{s}` is not a sequence source (expected `field:<path>` or `header:<name>`)"
            )),
        }
    }
}

fn deserialize_from_str<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

impl<'de> Deserialize<'de> for KeySource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_from_str(d)
    }
}

impl<'de> Deserialize<'de> for SequenceSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_from_str(d)
    }
}

/// A configuration that cannot be used, with the key and its origin.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {file}: {reason}")]
    File { file: PathBuf, reason: String },
    #[error("{origin}: key `{key}`: {reason}")]
    Key {
        origin: String,
        key: String,
        reason: String,
    },
}

impl Settings {
    /// Loads the file (if any), overlays `ORDO_*` environment variables and validates.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(file, &vars)
    }

    /// As [`Settings::load`], with the environment given explicitly (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        vars: &[(String, String)],
    ) -> Result<Settings, ConfigError> {
        Self::build(file, None, vars)
    }

    /// Loads a configuration compiled into the binary, overlaid by `vars`.
    pub fn load_embedded(text: &str, vars: &[(String, String)]) -> Result<Settings, ConfigError> {
        Self::build(None, Some(text), vars)
    }

    fn build(
        file: Option<&Path>,
        embedded: Option<&str>,
        vars: &[(String, String)],
    ) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(text) = embedded {
            builder = builder.add_source(config::File::from_str(text, config::FileFormat::Toml));
        }
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::File {
                    file: path.to_path_buf(),
                    reason: "no such file".into(),
                });
            }
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let env: config::Map<String, String> = vars
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}_")))
            .cloned()
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("_")
                .separator("__")
                .list_separator(",")
                .with_list_parse_key("source.topics")
                .with_list_parse_key("schema_registry.urls")
                .try_parsing(true)
                .source(Some(env)),
        );
        let origin_of = |key: &str| origin_of(key, file, embedded.is_some(), vars);
        let built = builder.build().map_err(|e| match file {
            Some(path) => ConfigError::File {
                file: path.to_path_buf(),
                reason: e.to_string(),
            },
            None => ConfigError::Key {
                origin: "environment".into(),
                key: "?".into(),
                reason: e.to_string(),
            },
        })?;
        let mut settings: Settings = serde_path_to_error::deserialize(built).map_err(|e| {
            let (key, reason) = explain(&e.path().to_string(), &e.inner().to_string());
            ConfigError::Key {
                origin: origin_of(&key),
                key,
                reason,
            }
        })?;
        settings.kafka = KafkaProperties(
            std::mem::take(&mut settings.kafka.0)
                .into_iter()
                .map(|(k, v)| (k.replace('_', "."), v))
                .collect(),
        );
        let base = file.and_then(Path::parent);
        if let Some(base) = base {
            settings.resolve_paths(base);
        }
        for (section, props) in [
            ("kafka", &mut settings.kafka),
            ("dead_letter.producer", &mut settings.dead_letter.producer),
        ] {
            props.resolve_files(base).map_err(|e| {
                let key = format!("{section}.{}", e.key);
                ConfigError::Key {
                    origin: origin_of(&key),
                    key,
                    reason: e.reason,
                }
            })?;
        }
        settings
            .validate()
            .map_err(|(key, reason)| ConfigError::Key {
                origin: origin_of(&key),
                key,
                reason,
            })?;
        Ok(settings)
    }

    /// Makes relative file paths relative to the configuration file's directory.
    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for r in &mut self.source.reader_schemas {
            r.file.as_mut().map(resolve);
        }
        for p in [
            &mut self.postgres.password_file,
            &mut self.postgres.sslrootcert,
            &mut self.postgres.sslcert,
            &mut self.postgres.sslkey,
        ] {
            p.as_mut().map(resolve);
        }
        if let Some(registry) = &mut self.schema_registry {
            registry.ca_file.as_mut().map(resolve);
            registry.password_file.as_mut().map(resolve);
            registry.client_identity_file.as_mut().map(resolve);
        }
    }

    /// Checks the Avro settings: registry, and one loadable reader schema per topic.
    fn validate_avro(&self) -> Result<(), (String, String)> {
        use crate::decode::avro::KeyFormat;
        let source = &self.source;
        let avro_values = source.format == crate::decode::FormatKind::Avro;
        if let Some(registry) = &self.schema_registry {
            registry
                .client()
                .map_err(|e| (format!("schema_registry.{}", e.key), e.reason))?;
        } else if avro_values || source.key_format == KeyFormat::Avro {
            return Err((
                "schema_registry.urls".into(),
                "is required when source.format or source.key_format is `avro`".into(),
            ));
        }
        for (i, r) in source.reader_schemas.iter().enumerate() {
            let key = format!("source.reader_schemas[{i}]");
            if !source.topics.contains(&r.topic) {
                return Err((
                    format!("{key}.topic"),
                    format!("`{}` is not one of source.topics", r.topic),
                ));
            }
            if source.reader_schemas[..i]
                .iter()
                .any(|o| o.topic == r.topic)
            {
                return Err((
                    format!("{key}.topic"),
                    format!("`{}` has more than one reader schema", r.topic),
                ));
            }
            r.load()
                .map_err(|(field, reason)| (format!("{key}.{field}"), reason))?;
        }
        if avro_values {
            if let Some(t) = source
                .topics
                .iter()
                .find(|t| !source.reader_schemas.iter().any(|r| &r.topic == *t))
            {
                return Err((
                    "source.reader_schemas".into(),
                    format!("topic `{t}` has no reader schema (source.format = \"avro\")"),
                ));
            }
        }
        Ok(())
    }

    /// Checks values that parse but cannot work; returns the offending key and why.
    fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: &str, r: String| Err((k.to_string(), r));
        for required in ["bootstrap.servers", "group.id"] {
            if self.kafka.get(required).is_none_or(|v| v.trim().is_empty()) {
                return err(&format!("kafka.{required}"), "is required".into());
            }
        }
        for (key, why) in MANAGED_KAFKA_PROPERTIES {
            if self.kafka.contains_key(*key) {
                return err(&format!("kafka.{key}"), format!("is set by Ordo ({why})"));
            }
        }
        if let Err(e) = self.kafka.validate() {
            return err(&format!("kafka.{}", e.key), e.reason);
        }
        if self.source.topics.is_empty() {
            return err("source.topics", "must list at least one topic".into());
        }
        if let Some(t) = self.source.topics.iter().find(|t| !valid_topic(t)) {
            return err(
                "source.topics",
                format!("`{t}` is not a valid topic name (1-249 of [a-zA-Z0-9._-])"),
            );
        }
        for (key, ident) in [
            ("sink.table", &self.sink.table),
            ("sink.schema", &self.sink.schema),
        ] {
            if ident.is_empty() || ident.len() > 63 {
                return err(key, format!("`{ident}` must be 1 to 63 bytes"));
            }
        }
        let positive = [
            ("sink.batch_max_events", self.sink.batch_max_events as u64),
            ("sink.batch_max_wait_ms", self.sink.batch_max_wait_ms),
            ("postgres.pool_size", self.postgres.pool_size as u64),
            (
                "postgres.connect_timeout_ms",
                self.postgres.connect_timeout_ms,
            ),
            (
                "ordering.max_buffered_events",
                self.ordering.max_buffered_events as u64,
            ),
            (
                "ordering.max_buffered_bytes",
                self.ordering.max_buffered_bytes as u64,
            ),
            ("ordering.gap_timeout_ms", self.ordering.gap_timeout_ms),
            ("shutdown.deadline_ms", self.shutdown.deadline_ms),
            ("memory.budget_mb", self.memory.budget_mb),
            (
                "sink.breaker.failures_to_open",
                self.sink.breaker.failures_to_open as u64,
            ),
            ("sink.breaker.open_ms", self.sink.breaker.open_ms),
            ("sink.breaker.max_open_ms", self.sink.breaker.max_open_ms),
            ("sink.retry.base_ms", self.sink.retry.base_ms),
            ("sink.retry.cap_ms", self.sink.retry.cap_ms),
            (
                "ordering.max_cached_keys",
                self.ordering.max_cached_keys as u64,
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return err(key, "must be greater than 0".into());
        }
        if let Err(e) = crate::sink::postgres::connect::Connection::from_config(&self.postgres) {
            return err(&e.key, e.reason);
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return err("log.level", format!("`{}`: {e}", self.log.level));
        }
        self.validate_avro()?;
        self.validate_dead_letter()
    }

    /// Checks the dead-letter settings: topic names and producer properties.
    fn validate_dead_letter(&self) -> Result<(), (String, String)> {
        let dl = &self.dead_letter;
        if !dl.enabled {
            if self.ordering.on_bound == BoundPolicy::DeadLetter {
                return Err((
                    "ordering.on_bound".into(),
                    "`dead_letter` needs dead_letter.enabled = true".into(),
                ));
            }
            return Ok(());
        }
        for source in &self.source.topics {
            let topic = dl.topic_for(source);
            if !valid_topic(&topic) || self.source.topics.contains(&topic) {
                return Err((
                    "dead_letter.topic".into(),
                    format!("`{}` gives `{topic}` for topic `{source}`, not a valid dead-letter topic name", dl.topic),
                ));
            }
        }
        if dl.send_timeout_ms == 0 {
            return Err((
                "dead_letter.send_timeout_ms".into(),
                "must be greater than 0".into(),
            ));
        }
        if let Err(e) = dl.producer.validate() {
            return Err((format!("dead_letter.producer.{}", e.key), e.reason));
        }
        Ok(())
    }

    /// The consumer group id.
    pub fn group_id(&self) -> &str {
        self.kafka.get("group.id").map(String::as_str).unwrap_or("")
    }

    /// The bootstrap servers, for error messages.
    pub fn bootstrap_servers(&self) -> &str {
        self.kafka
            .get("bootstrap.servers")
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// Says whether a key was set by an environment variable or by the file.
fn origin_of(key: &str, file: Option<&Path>, embedded: bool, vars: &[(String, String)]) -> String {
    let mut segments: Vec<String> = key.split('.').map(|s| s.to_uppercase()).collect();
    let candidates: Vec<String> = if segments.first().map(String::as_str) == Some("KAFKA") {
        let rest = segments.split_off(1).join("_");
        vec![format!("{ENV_PREFIX}_KAFKA__{rest}")]
    } else {
        vec![format!("{ENV_PREFIX}_{}", segments.join("__"))]
    };
    // The variable setting this key, or one below it (an unknown section
    // `sinkk` comes from `ORDO_SINKK__TABLE`).
    let from_var = |k: &str| {
        candidates.iter().any(|c| {
            k.eq_ignore_ascii_case(c)
                || (k.len() > c.len() + 2
                    && k[..c.len()].eq_ignore_ascii_case(c)
                    && k[c.len()..].starts_with("__"))
        })
    };
    if let Some((name, _)) = vars.iter().find(|(k, _)| from_var(k)) {
        return format!("environment variable {name}");
    }
    match file {
        Some(path) => format!("config file {}", path.display()),
        None if embedded => "embedded configuration".to_string(),
        None => "configuration (no config file given)".to_string(),
    }
}

/// The values each configuration enum accepts, by the enum's name (a unit
/// test keeps them equal to what the enums deserialize).
const ENUM_VALUES: [(&str, &[&str]); 8] = [
    ("SinkMode", &["event_store", "projection"]),
    ("SinkKind", &["postgres"]),
    ("StartFrom", &["earliest", "latest"]),
    ("LogFormat", &["json", "text"]),
    ("BoundPolicy", &["wait", "skip", "dead_letter"]),
    ("FormatKind", &["json", "avro"]),
    ("KeyFormat", &["string", "avro"]),
    (
        "SubjectNameStrategy",
        &["topic_name", "record_name", "topic_record_name"],
    ),
];

/// A deserialization error as a user reads it: the key that is wrong (a
/// missing field named in full, not as `.`), and, for a value an enum does
/// not accept, the values it does.
fn explain(path: &str, reason: &str) -> (String, String) {
    let reason = strip_config_noise(reason);
    // The config crate names the field in full (`sink.mode`); serde by name.
    let at = |field: &str| match path {
        "" | "." => field.to_string(),
        p if field.starts_with(&format!("{p}.")) => field.to_string(),
        p => format!("{p}.{field}"),
    };
    if let Some(field) = reason
        .strip_prefix("missing configuration field \"")
        .or_else(|| reason.strip_prefix("missing field `"))
        .and_then(|r| r.split(['"', '`']).next())
    {
        return (at(field), "required, but not set".to_string());
    }
    if let Some(rest) = reason.strip_prefix("enum ") {
        if let Some((name, value)) = rest.split_once(" does not have variant constructor ") {
            if let Some((_, values)) = ENUM_VALUES.iter().find(|(n, _)| *n == name) {
                let valid: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
                return (
                    path.to_string(),
                    format!(
                        "`{value}` is not a valid value; valid values: {}",
                        valid.join(", ")
                    ),
                );
            }
        }
    }
    (path.to_string(), reason)
}

/// The config crate appends its own origin text; the key and file are reported by Ordo.
fn strip_config_noise(reason: &str) -> String {
    reason
        .split(" for key")
        .next()
        .unwrap_or(reason)
        .trim()
        .to_string()
}

fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The table of valid values is what each enum really accepts.
    #[test]
    fn enum_values_listed_are_the_enums_values() {
        fn check<T: serde::de::DeserializeOwned>(name: &str) {
            let (_, values) = ENUM_VALUES.iter().find(|(n, _)| *n == name).unwrap();
            for v in *values {
                assert!(
                    serde_json::from_str::<T>(&format!("\"{v}\"")).is_ok(),
                    "{name}: {v}"
                );
            }
            let err = serde_json::from_str::<T>("\"zzz\"")
                .err()
                .unwrap()
                .to_string();
            let listed: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
            for v in &listed {
                assert!(err.contains(v.as_str()), "{name}: {err}");
            }
            assert_eq!(
                err.matches('`').count(),
                2 * (listed.len() + 1),
                "{name}: {err}"
            );
        }
        check::<SinkMode>("SinkMode");
        check::<SinkKind>("SinkKind");
        check::<StartFrom>("StartFrom");
        check::<LogFormat>("LogFormat");
        check::<crate::order::BoundPolicy>("BoundPolicy");
        check::<crate::decode::FormatKind>("FormatKind");
        check::<crate::decode::avro::KeyFormat>("KeyFormat");
        check::<crate::decode::avro::registry::SubjectNameStrategy>("SubjectNameStrategy");
    }

    #[test]
    fn errors_name_the_key_the_valid_values_and_where_the_value_came_from() {
        let base = "[kafka]\n\"bootstrap.servers\" = \"b:9092\"\n[source]\ntopics = [\"t\"]\n[sink]\nmode = \"event_store\"\ntable = \"x\"\n[postgres]\nurl = \"postgres://h/d\"\n";
        let e = Settings::load_embedded(&base.replace("\"event_store\"", "\"eventstore\""), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("key `sink.mode`: `eventstore` is not a valid value; valid values: `event_store`, `projection`"),
            "{e}"
        );
        let e = Settings::load_embedded(base, &[("ORDO_SINKK__TABLE".into(), "x".into())])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("environment variable ORDO_SINKK__TABLE: key `sinkk`"),
            "{e}"
        );
        let e = Settings::load_embedded(
            &base.replace("[kafka]\n\"bootstrap.servers\" = \"b:9092\"\n", ""),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("key `kafka`: required, but not set"), "{e}");
        let e = Settings::load_embedded(
            &base
                .replace("table = \"x\"\n", "")
                .replace("mode = \"event_store\"\n", ""),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("key `sink.mode`: required, but not set"), "{e}");
    }

    const GOOD: &str = r#"
[kafka]
"bootstrap.servers" = "127.0.0.1:9092"
"group.id" = "ordo"

[source]
topics = ["orders"]

[ordering]
key = "field:order.id"
sequence = "header:seq"

[sink]
mode = "event_store"
table = "events"

[postgres]
url = "postgres://ordo@127.0.0.1:5432/ordo"
"#;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let f = file(text);
        let vars: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load_with_env(Some(f.path()), &vars)
    }

    #[test]
    fn good_file_loads_with_defaults() {
        let s = load(GOOD, &[]).unwrap();
        assert_eq!(s.group_id(), "ordo");
        assert_eq!(
            s.ordering.key,
            KeySource::Field(FieldPath(vec!["order".into(), "id".into()]))
        );
        assert_eq!(s.ordering.sequence, SequenceSource::Header("seq".into()));
        assert_eq!(s.sink.batch_max_events, 1000);
        assert_eq!(s.sink.schema, "public");
        assert_eq!(s.ordering.on_bound, BoundPolicy::Wait);
    }

    #[test]
    fn env_overrides_file_and_maps_kafka_underscores() {
        let s = load(
            GOOD,
            &[
                ("ORDO_SINK__TABLE", "other"),
                ("ORDO_KAFKA__SESSION_TIMEOUT_MS", "7000"),
                ("ORDO_SOURCE__TOPICS", "a,b"),
            ],
        )
        .unwrap();
        assert_eq!(s.sink.table, "other");
        assert_eq!(s.kafka.get("session.timeout.ms").unwrap(), "7000");
        assert_eq!(s.source.topics, vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let text = GOOD.replace("table = \"events\"", "tabel = \"events\"");
        let e = load(&text, &[]).unwrap_err().to_string();
        assert!(e.contains("sink.tabel"), "{e}");
        assert!(e.contains(".toml"), "{e}");
    }

    #[test]
    fn unknown_env_key_is_named_with_the_variable() {
        let e = load(GOOD, &[("ORDO_SINK__TABEL", "x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sink.tabel"), "{e}");
        assert!(e.contains("ORDO_SINK__TABEL"), "{e}");
    }

    #[test]
    fn missing_required_value_is_named() {
        let text = GOOD.replace("mode = \"event_store\"", "");
        let e = load(&text, &[]).unwrap_err().to_string();
        assert!(e.contains("sink.mode") || e.contains("`mode`"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            (
                GOOD.replace("header:seq", "column:seq"),
                "ordering.sequence",
            ),
            (GOOD.replace("\"event_store\"", "\"ledger\""), "sink.mode"),
            (
                GOOD.replace(
                    "\"group.id\" = \"ordo\"",
                    "\"group.id\" = \"ordo\"\n\"no.such.prop\" = \"1\"",
                ),
                "kafka.no.such.prop",
            ),
            (
                GOOD.replace("\"group.id\" = \"ordo\"", ""),
                "kafka.group.id",
            ),
            (
                GOOD.replace("[\"orders\"]", "[\"bad topic\"]"),
                "source.topics",
            ),
            (
                GOOD.replace(
                    "postgres://ordo@127.0.0.1:5432/ordo",
                    "postgres://x:notaport/",
                ),
                "postgres.url",
            ),
            (
                GOOD.replace(
                    "table = \"events\"",
                    "table = \"events\"\nbatch_max_events = 0",
                ),
                "sink.batch_max_events",
            ),
            (
                GOOD.replace(
                    "\"group.id\" = \"ordo\"",
                    "\"group.id\" = \"ordo\"\n\"enable.auto.offset.store\" = \"true\"",
                ),
                "kafka.enable.auto.offset.store",
            ),
            (
                format!("{GOOD}\n[dead_letter]\ntopic = \"bad topic {{topic}}\"\n"),
                "dead_letter.topic",
            ),
            (
                format!("{GOOD}\n[dead_letter]\ntopic = \"{{topic}}\"\n"),
                "dead_letter.topic",
            ),
            (
                format!("{GOOD}\n[dead_letter.producer]\n\"no.such.prop\" = \"1\"\n"),
                "dead_letter.producer.no.such.prop",
            ),
        ];
        for (text, key) in cases {
            let e = load(&text, &[]).unwrap_err().to_string();
            assert!(e.contains(key), "expected `{key}` in: {e}");
            assert!(e.contains("config file"), "expected the file in: {e}");
        }
    }

    #[test]
    fn shipped_configurations_load() {
        let example = include_str!("../config/ordo.example.toml");
        let s = Settings::load_embedded(example, &[]).unwrap();
        assert_eq!(s.sink.mode, SinkMode::EventStore);
        let vars = [(
            "ORDO_POSTGRES__URL".to_string(),
            "postgres://ordo@db/ordo".to_string(),
        )];
        let demo = crate::demo::settings(&vars).unwrap();
        assert_eq!(demo.source.topics, vec!["demo.orders".to_string()]);
        assert_eq!(demo.source.format, crate::decode::FormatKind::Avro);
    }

    #[test]
    fn missing_file_is_named() {
        let e = Settings::load_with_env(Some(Path::new("/nonexistent/ordo.toml")), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/ordo.toml"), "{e}");
    }
}
