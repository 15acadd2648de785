//! `[source]`: the topics this group consumes, how their records are
//! encoded, and where a partition the sink has never seen starts. Checked by
//! [`SourceConfig::validate`].

use serde::Deserialize;

/// `[source]`: what to consume and how it is encoded.
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
    /// What a record without a value (a tombstone) means.
    #[serde(default)]
    pub tombstones: crate::decode::Tombstones,
    /// Where each event's type is read: `field:<path>` or `header:<name>`
    /// (a CloudEvents `ce_type` header, for example).
    #[serde(default)]
    pub event_type: Option<crate::decode::extract::EventTypeSource>,
    /// Event types counted by name in `ordo_events_total{type}`; the types
    /// seen beyond this many are counted as `other`.
    #[serde(default = "default_max_event_types")]
    pub max_event_types: usize,
    /// What an event that matches no route of the sink does: `dead_letter`
    /// (the default) or `ignore` (counted as `unrouted`).
    #[serde(default)]
    pub unrouted: Unrouted,
}

fn default_max_event_types() -> usize {
    100
}

/// What an event that matches no route does (`source.unrouted`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Unrouted {
    /// It goes to the dead-letter topic (or stops its partition when dead
    /// letters are off), like an event the sink refuses.
    #[default]
    DeadLetter,
    /// It is dropped: its key's version still counts as handled.
    Ignore,
}

/// Where a partition without a stored offset starts.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    #[default]
    Earliest,
    Latest,
}

impl SourceConfig {
    /// Checks values that parse but cannot work: the key (in full) and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.topics.is_empty() {
            return Err((
                "source.topics".into(),
                "must list at least one topic".into(),
            ));
        }
        if let Some(t) = self.topics.iter().find(|t| !crate::kafka::valid_topic(t)) {
            return Err((
                "source.topics".into(),
                format!("`{t}` is not a valid topic name (1-249 of [a-zA-Z0-9._-])"),
            ));
        }
        Ok(())
    }

    /// Makes relative file paths (reader schemas) relative to `base`.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        for r in &mut self.reader_schemas {
            if let Some(f) = r.file.as_mut().filter(|f| f.is_relative()) {
                *f = base.join(&*f);
            }
        }
    }
}
