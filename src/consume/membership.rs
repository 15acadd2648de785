//! Says so when the replica has no partition for a while: a restarted
//! replica may wait up to `session.timeout.ms` before the group gives it
//! anything (the partitions of a member that stopped without leaving, such
//! as a killed one, stay assigned to it until its session expires), and a
//! group with more members than partitions leaves some with none. One line
//! per stretch without partitions, so an idle spare replica is not noisy.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;

use super::OrdoConsumer;

/// How long without a partition before it is said.
const QUIET_FOR: Duration = Duration::from_secs(5);

/// librdkafka's default `session.timeout.ms`.
const DEFAULT_SESSION_TIMEOUT_MS: u64 = 45_000;

/// Watches the consumer's assignment until the process ends.
pub async fn watch(consumer: Arc<OrdoConsumer>, group: String, session_timeout_ms: Option<String>) {
    let session_timeout_ms = session_timeout_ms
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_SESSION_TIMEOUT_MS);
    let mut without_since = Some(Instant::now());
    let mut said = false;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let assigned = consumer.assignment().map(|a| a.count()).unwrap_or(0);
        if assigned > 0 {
            if said {
                tracing::info!(
                    group,
                    partitions = assigned as u64,
                    "the consumer group assigned partitions"
                );
            }
            without_since = None;
            said = false;
            continue;
        }
        let since = *without_since.get_or_insert_with(Instant::now);
        if !said && since.elapsed() >= QUIET_FOR {
            said = true;
            tracing::info!(
                group,
                waited_s = since.elapsed().as_secs(),
                session_timeout_ms,
                "no partition assigned yet: waiting for the consumer group (the partitions of a member that stopped without leaving, such as a killed one, move only once its session.timeout.ms passes; with more replicas than partitions, some have none)"
            );
        }
    }
}
