//! `[sink]`: which sink, how events are batched for it, how its failures are
//! retried and when its breaker opens. The sink's own keys are a section
//! below it (`[sink.postgres]`). Checked by [`SinkConfig::validate`].

use serde::Deserialize;

use super::breaker::BreakerConfig;
use super::postgres::PostgresConfig;
use super::retry::RetryConfig;

/// `[sink]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The sink; `postgres` is the one there is.
    #[serde(default)]
    pub kind: SinkKind,
    /// Most events per sink transaction.
    #[serde(default = "default_batch_max_events")]
    pub batch_max_events: usize,
    /// Longest an event waits for its batch to fill.
    #[serde(default = "default_batch_max_wait_ms")]
    pub batch_max_wait_ms: u64,
    /// The circuit breaker that pauses partitions while the sink fails.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// How failed sink operations are retried.
    #[serde(default)]
    pub retry: RetryConfig,
    /// `[sink.postgres]`, for `kind = "postgres"`.
    #[serde(default)]
    pub postgres: Option<PostgresConfig>,
}

/// The sink implementation.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    #[default]
    Postgres,
}

impl SinkKind {
    /// The kind's name, as configured; also its section under `[sink]`.
    pub fn name(self) -> &'static str {
        match self {
            SinkKind::Postgres => "postgres",
        }
    }
}

fn default_batch_max_events() -> usize {
    4000
}
fn default_batch_max_wait_ms() -> u64 {
    2
}

impl SinkConfig {
    /// Checks values that parse but cannot work: the key (in full) and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let positive = [
            ("sink.batch_max_events", self.batch_max_events as u64),
            ("sink.batch_max_wait_ms", self.batch_max_wait_ms),
            (
                "sink.breaker.failures_to_open",
                self.breaker.failures_to_open as u64,
            ),
            ("sink.breaker.open_ms", self.breaker.open_ms),
            ("sink.breaker.max_open_ms", self.breaker.max_open_ms),
            ("sink.retry.base_ms", self.retry.base_ms),
            ("sink.retry.cap_ms", self.retry.cap_ms),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err((key.to_string(), "must be greater than 0".into()));
        }
        match self.kind {
            SinkKind::Postgres => match &self.postgres {
                Some(pg) => pg.validate(),
                None => Err((
                    "sink.postgres".into(),
                    "required, but not set (sink.kind = \"postgres\")".into(),
                )),
            },
        }
    }

    /// Makes the sink's relative file paths relative to `base`.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        if let Some(pg) = &mut self.postgres {
            pg.resolve_paths(base);
        }
    }
}
