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
        match positive.iter().find(|(_, v)| *v == 0) {
            Some((key, _)) => Err((key.to_string(), "must be greater than 0".into())),
            None => Ok(()),
        }
    }
}
