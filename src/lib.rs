//! Ordo consumes event streams from Kafka and lands them, in order and exactly
//! once, in PostgreSQL.
//!
//! A record's path, one module per step:
//!
//! ```text
//! consume  (consume/)  one consumer group; a worker per assigned partition
//!   -> decode (decode/)  payload format -> Event { key, sequence, payload }
//!              (dlq/)    a record that cannot be decoded goes to the dead-letter topic
//!   -> mask   (mask.rs)  sensitive fields redacted, hashed or encrypted
//!   -> order  (order/)   per-key sequence buffer: release in order, hold early, drop duplicates
//!   -> sink   (sink/)    one transaction per batch: events + per-key state + next offset
//!   -> commit (consume/) the sink's offset copied to Kafka for lag tools
//! ```
//!
//! The sink is the source of truth for progress: on assign a partition resumes
//! from the `next_offset` stored with the data, never from Kafka's committed
//! offset, so a crash or a rebalance neither loses nor doubles an effect.

pub mod check;
pub mod config;
pub mod consume;
pub mod decode;
pub mod demo;
pub mod dlq;
pub mod kafka;
pub mod mask;
pub mod offsets;
pub mod order;
pub mod pipeline;
pub mod process;
pub mod produce;
pub mod record;
pub mod schema_check;
pub mod sink;
pub mod telemetry;

use std::future::Future;

use config::Settings;

/// Why `ordo run` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Sink(#[from] sink::SinkError),
    #[error(transparent)]
    Consume(#[from] consume::ConsumeError),
    #[error(transparent)]
    Http(#[from] telemetry::http::HttpError),
}

impl RunError {
    /// True when a sink refused Ordo's login: a configuration to fix (the
    /// binary exits 2, as for a bad value), not an outage to wait out.
    pub fn is_authentication_failure(&self) -> bool {
        match self {
            RunError::Sink(e) | RunError::Consume(consume::ConsumeError::Sink(e)) => {
                sink::is_authentication_failure(e)
            }
            _ => false,
        }
    }
}

/// Runs the pipeline until `shutdown` resolves or a fatal error occurs.
pub async fn run(settings: &Settings, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    telemetry::http::start(&settings.http).await?;
    let dlq_topics: Vec<String> = if settings.dead_letter.enabled {
        let dl = &settings.dead_letter;
        settings
            .source
            .topics
            .iter()
            .map(|t| dl.topic_for(t))
            .collect()
    } else {
        Vec::new()
    };
    let measuring = tokio::spawn(telemetry::measure::run(
        settings.kafka.clone(),
        std::time::Duration::from_millis(settings.http.measure_interval_ms),
        dlq_topics,
    ));
    tokio::pin!(shutdown);
    // PostgreSQL not there yet is waited out; a shutdown meanwhile ends it.
    let sink = tokio::select! {
        sink = sink::prepare(&settings.sink, settings.group_id(), settings.source.unrouted) => sink?,
        _ = &mut shutdown => {
            measuring.abort();
            return Ok(());
        }
    };
    let result = pipeline::run(settings, sink, shutdown).await;
    measuring.abort();
    result?;
    Ok(())
}
