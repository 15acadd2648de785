//! Typed settings: a TOML file overlaid by `ORDO_*` environment variables,
//! validated once at start with errors that name the key and where it came from.
//!
//! Each section's struct lives beside the module that uses it and checks its
//! own values; this module loads them, composes them into [`Settings`], and
//! checks what spans sections (a reader schema's topic, a dead-letter topic).
//!
//! Environment variables use `__` between levels: `ORDO_SINK__POSTGRES__TABLE=events`,
//! `ORDO_KAFKA__BOOTSTRAP_SERVERS=broker:9092` (under `kafka`, `_` becomes `.`
//! because librdkafka property names never contain `_`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::consume::source::{SourceConfig, StartFrom};
pub use crate::decode::extract::{FieldPath, KeySource, SequenceSource};
pub use crate::decode::Tombstones;
use crate::kafka::KafkaProperties;
use crate::order::BoundPolicy;
pub use crate::order::OrderingConfig;
pub use crate::sink::postgres::{PostgresConfig, SinkMode};
pub use crate::sink::{SinkConfig, SinkKind};
pub use crate::telemetry::logging::{LogConfig, LogFormat};

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
    pub shutdown: crate::process::ShutdownConfig,
    /// What Ordo's records may occupy across all partitions.
    #[serde(default)]
    pub memory: crate::consume::memory::MemoryConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Payload fields masked before anything is stored or logged.
    #[serde(default)]
    pub mask: crate::mask::MaskConfig,
}

/// Keys that moved, with where they are now: a configuration still using
/// one is refused with the new place, not taken as an unknown key.
const MOVED_KEYS: &[(&str, &str)] = &[
    ("postgres", "sink.postgres"),
    ("sink.mode", "sink.postgres.mode"),
    ("sink.table", "sink.postgres.table"),
    ("sink.schema", "sink.postgres.schema"),
];

/// The first moved key `config` sets: the old key and why it is refused.
fn moved_key(config: &config::Config) -> Option<(String, String)> {
    MOVED_KEYS.iter().find_map(|(old, new)| {
        config.get::<config::Value>(old).ok().map(|_| {
            let env = |k: &str| format!("{ENV_PREFIX}_{}", k.to_uppercase().replace('.', "__"));
            (
                old.to_string(),
                format!(
                    "moved to `{new}` (in a file: the keys of `[{old}]` go under `[{new}]`; \
                     in the environment: {} is now {})",
                    env(old),
                    env(new)
                ),
            )
        })
    })
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
                    reason: if path.is_dir() {
                        "is a directory; --config takes a TOML file such as ordo.toml".into()
                    } else {
                        "no such file".into()
                    },
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
        if let Some((key, reason)) = moved_key(&built) {
            return Err(ConfigError::Key {
                origin: origin_of(&key),
                key,
                reason,
            });
        }
        let mut settings: Settings = serde_path_to_error::deserialize(built).map_err(|e| {
            let (key, reason) = explain(&e.path().to_string(), &e.inner().to_string());
            ConfigError::Key {
                origin: origin_of(&key),
                key,
                reason,
            }
        })?;
        // librdkafka's properties are dotted; a variable cannot carry dots,
        // so `ORDO_KAFKA__BOOTSTRAP_SERVERS` names `bootstrap.servers`. In a
        // file, an unquoted `bootstrap_servers` is a mistake: say so.
        // (`<property>_file` names a file holding the property's value.)
        let unquoted = |k: &&String| k.strip_suffix("_file").unwrap_or(k).contains('_');
        for key in settings.kafka.0.keys().filter(unquoted) {
            let full = format!("kafka.{key}");
            let origin = origin_of(&full);
            if !origin.starts_with("environment variable") {
                return Err(ConfigError::Key {
                    origin,
                    key: full,
                    reason: format!(
                        "librdkafka properties are dotted: write `\"{}{}\" = ...` (quoted)",
                        key.strip_suffix("_file").unwrap_or(key).replace('_', "."),
                        if key.ends_with("_file") { "_file" } else { "" }
                    ),
                });
            }
        }
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
            .resolve_routes()
            .and_then(|()| settings.validate())
            .and_then(|()| settings.derive_columns())
            .map_err(|(key, reason)| ConfigError::Key {
                origin: origin_of(&key),
                key,
                reason,
            })?;
        Ok(settings)
    }

    /// Makes relative file paths relative to the configuration file's directory.
    fn resolve_paths(&mut self, base: &Path) {
        self.source.resolve_paths(base);
        self.sink.resolve_paths(base);
        self.mask.resolve_paths(base);
        if let Some(registry) = &mut self.schema_registry {
            for p in [
                &mut registry.ca_file,
                &mut registry.password_file,
                &mut registry.client_identity_file,
            ] {
                if let Some(p) = p.as_mut().filter(|p| p.is_relative()) {
                    *p = base.join(&*p);
                }
            }
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

    /// Checks each section, then what spans sections; returns the offending key and why.
    fn validate(&self) -> Result<(), (String, String)> {
        for required in ["bootstrap.servers", "group.id"] {
            if self.kafka.get(required).is_none_or(|v| v.trim().is_empty()) {
                return Err((format!("kafka.{required}"), "is required".into()));
            }
        }
        for (key, why) in MANAGED_KAFKA_PROPERTIES {
            if self.kafka.contains_key(*key) {
                return Err((format!("kafka.{key}"), format!("is set by Ordo ({why})")));
            }
        }
        if let Err(e) = self.kafka.validate() {
            return Err((format!("kafka.{}", e.key), e.reason));
        }
        self.source.validate()?;
        self.ordering.validate()?;
        self.sink.validate()?;
        self.shutdown.validate()?;
        self.memory.validate()?;
        self.log.validate()?;
        self.http.validate()?;
        self.validate_avro()?;
        self.validate_routes()?;
        self.validate_tombstones()?;
        self.validate_mask()?;
        self.validate_dead_letter()
    }

    /// The sink's routes: its own `table` and `mode` as the one route when
    /// no `[[sink.postgres.routes]]` are given.
    fn resolve_routes(&mut self) -> Result<(), (String, String)> {
        match self.sink.postgres.as_mut() {
            Some(pg) => pg.resolve_routes(),
            None => Ok(()),
        }
    }

    /// `auto_columns`: a table route's typed columns, from the (one)
    /// topic's Avro reader schema.
    fn derive_columns(&mut self) -> Result<(), (String, String)> {
        let Some(pg) = self.sink.postgres.as_mut() else {
            return Ok(());
        };
        let source = &self.source;
        for (i, route) in pg.routes.iter_mut().enumerate() {
            let Some(auto) = route.auto_columns else {
                continue;
            };
            let route_key = route.key(i);
            let key = format!("{route_key}.auto_columns");
            if source.format != crate::decode::FormatKind::Avro || source.topics.len() != 1 {
                return Err((
                    key,
                    "derives columns from the reader schema: it needs source.format = \"avro\" and one topic".into(),
                ));
            }
            let reader = source
                .reader_schemas
                .iter()
                .find(|r| r.topic == source.topics[0])
                .ok_or_else(|| (key.clone(), "the topic has no reader schema".into()))?
                .load()
                .map_err(|(field, why)| (format!("source.reader_schemas[0].{field}"), why))?;
            route.columns = crate::sink::postgres::columns::from_avro(&reader.schema, auto)
                .map_err(|why| (key.clone(), why))?;
            let Some(mode) = route.mode else {
                continue;
            };
            crate::sink::postgres::validate_columns(
                &route.columns,
                mode,
                &format!("the reader schema's columns ({key})"),
            )?;
        }
        Ok(())
    }

    /// Routes name topics this group consumes, and event types only when
    /// events have a type.
    fn validate_routes(&self) -> Result<(), (String, String)> {
        let Some(pg) = self.sink.postgres.as_ref() else {
            return Ok(());
        };
        for (i, route) in pg.routes.iter().enumerate() {
            let key = route.key(i);
            if let Some(t) = route
                .topics
                .iter()
                .flatten()
                .find(|t| !self.source.topics.contains(t))
            {
                return Err((
                    format!("{key}.topics"),
                    format!(
                        "`{t}` is not one of source.topics ({})",
                        self.source.topics.join(", ")
                    ),
                ));
            }
            if route.event_types.is_some() && self.source.event_type.is_none() {
                return Err((
                    format!("{key}.event_types"),
                    "events have no type: set source.event_type = \"field:<path>\" or \"header:<name>\"".into(),
                ));
            }
        }
        if self.source.max_event_types == 0 {
            return Err((
                "source.max_event_types".into(),
                "must be greater than 0".into(),
            ));
        }
        Ok(())
    }

    /// Masked fields and the key and sequence they may be: a sequence must
    /// stay a number, and a key only stays distinct and stable hashed.
    fn validate_mask(&self) -> Result<(), (String, String)> {
        self.mask.validate()?;
        for (i, rule) in self.mask.fields.iter().enumerate() {
            let key = format!("mask.fields[{i}].path");
            if self.ordering.sequence == SequenceSource::Field(rule.path.clone()) {
                return Err((
                    key,
                    format!(
                        "`{}` is ordering.sequence, which must stay a number",
                        rule.path
                    ),
                ));
            }
            if self.ordering.key == KeySource::Field(rule.path.clone())
                && rule.action != crate::mask::Action::Hash
            {
                return Err((
                    key,
                    format!(
                        "`{}` is ordering.key: only `hash` keeps keys distinct and stable (the stored key is then the hash)",
                        rule.path
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Deleting by tombstone needs a projection, a key and a sequence that
    /// a record without a payload carries.
    fn validate_tombstones(&self) -> Result<(), (String, String)> {
        if self.source.tombstones != Tombstones::Delete {
            return Ok(());
        }
        let key = "source.tombstones".to_string();
        let projection = self.sink.postgres.as_ref().is_some_and(|pg| {
            pg.routes
                .iter()
                .any(|r| r.mode == Some(SinkMode::Projection))
        });
        if !projection {
            return Err((
                key,
                "`delete` needs sink.postgres.mode = \"projection\" (or a projection route): an event store keeps every event".into(),
            ));
        }
        if self.ordering.key != KeySource::MessageKey {
            return Err((
                key,
                "`delete` needs ordering.key = \"message_key\": a tombstone has no payload to read the key from".into(),
            ));
        }
        if self.ordering.tombstone_header().is_none() {
            return Err((
                key,
                format!(
                    "`delete` needs a tombstone's version from a header: ordering.sequence is `field:{}`, \
                     so set ordering.tombstone_sequence = \"header:<name>\"",
                    match &self.ordering.sequence {
                        SequenceSource::Field(p) => p.to_string(),
                        SequenceSource::Header(h) => h.clone(),
                    }
                ),
            ));
        }
        Ok(())
    }

    /// Checks the dead-letter settings against the source topics and the bound policy.
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
            if !crate::kafka::valid_topic(&topic) || self.source.topics.contains(&topic) {
                return Err((
                    "dead_letter.topic".into(),
                    format!("`{}` gives `{topic}` for topic `{source}`, not a valid dead-letter topic name", dl.topic),
                ));
            }
        }
        dl.validate()
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
const ENUM_VALUES: [(&str, &[&str]); 10] = [
    ("SinkMode", &["event_store", "projection"]),
    ("SinkKind", &["postgres"]),
    ("StartFrom", &["earliest", "latest"]),
    ("Tombstones", &["dead_letter", "delete", "ignore"]),
    ("LogFormat", &["json", "text"]),
    ("BoundPolicy", &["wait", "skip", "dead_letter"]),
    ("FormatKind", &["json", "avro"]),
    ("KeyFormat", &["string", "avro"]),
    (
        "SubjectNameStrategy",
        &["topic_name", "record_name", "topic_record_name"],
    ),
    ("PgType", crate::sink::postgres::columns::TYPE_NAMES),
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

#[cfg(test)]
mod tests;
