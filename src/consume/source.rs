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
