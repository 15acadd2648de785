//! `[ordering]`: where an event's key and per-key sequence come from, and
//! the bounds of the sequence buffer. Checked by [`OrderingConfig::validate`].

use serde::Deserialize;

use super::BoundPolicy;
use crate::decode::extract::{KeySource, SequenceSource};

/// `[ordering]`: where the key and the per-key sequence of an event come from, and the buffer's bounds.
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
    /// Where a tombstone's sequence comes from (`header:<name>`); by default
    /// the `sequence` header, when `sequence` is one.
    #[serde(default)]
    pub tombstone_sequence: Option<SequenceSource>,
    /// Most keys whose last applied sequence is cached per partition.
    #[serde(default = "default_max_cached_keys")]
    pub max_cached_keys: usize,
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

impl OrderingConfig {
    /// The header a tombstone's sequence is read from: a tombstone has no
    /// payload, so it is `tombstone_sequence`, else `sequence` when that is
    /// a header.
    pub fn tombstone_header(&self) -> Option<&str> {
        match (&self.tombstone_sequence, &self.sequence) {
            (Some(SequenceSource::Header(h)), _) => Some(h),
            (Some(SequenceSource::Field(_)), _) => None,
            (None, SequenceSource::Header(h)) => Some(h),
            (None, SequenceSource::Field(_)) => None,
        }
    }

    /// Checks values that parse but cannot work: the key (in full) and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let positive = [
            (
                "ordering.max_buffered_events",
                self.max_buffered_events as u64,
            ),
            (
                "ordering.max_buffered_bytes",
                self.max_buffered_bytes as u64,
            ),
            ("ordering.gap_timeout_ms", self.gap_timeout_ms),
            ("ordering.max_cached_keys", self.max_cached_keys as u64),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err((key.to_string(), "must be greater than 0".into()));
        }
        if let Some(SequenceSource::Field(path)) = &self.tombstone_sequence {
            return Err((
                "ordering.tombstone_sequence".into(),
                format!("`field:{path}`: a tombstone has no payload; use `header:<name>`"),
            ));
        }
        Ok(())
    }
}
