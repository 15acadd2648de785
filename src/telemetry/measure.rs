//! Measures from the broker what only the broker knows: each owned
//! partition's high watermark (lag = high watermark - next offset to process)
//! and each dead-letter topic's depth (records after the replay group's
//! committed offset), so both are right after a restart and across replicas.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::health::health;
use super::metrics::metrics;
use crate::config::Settings;

const TIMEOUT: Duration = Duration::from_secs(5);

/// The consumer group whose committed offsets mark what `ordo dlq replay` has done.
pub const REPLAY_GROUP: &str = "ordo-dlq-replay";

/// Measures every `interval` until the process ends.
pub async fn run(settings: Settings) {
    let interval = Duration::from_millis(settings.http.measure_interval_ms);
    let mut cfg = crate::dlq::connection_config(&settings.kafka);
    cfg.set("group.id", REPLAY_GROUP)
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = match cfg.create() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the client measuring lag; lag is not reported");
            return;
        }
    };
    let consumer = std::sync::Arc::new(consumer);
    let dlq_topics: Vec<String> = if settings.dead_letter.enabled {
        settings
            .source
            .topics
            .iter()
            .map(|t| settings.dead_letter.topic_for(t))
            .collect()
    } else {
        Vec::new()
    };
    loop {
        let c = consumer.clone();
        let topics = dlq_topics.clone();
        let _ = tokio::task::spawn_blocking(move || measure(&c, &topics)).await;
        tokio::time::sleep(interval).await;
    }
}

fn measure(consumer: &BaseConsumer, dlq_topics: &[String]) {
    for ((topic, partition), next) in health().positions() {
        match consumer.fetch_watermarks(&topic, partition, TIMEOUT) {
            Ok((_, high)) => metrics()
                .lag_offsets
                .with_label_values(&[&topic, &partition.to_string()])
                .set((high - next).max(0)),
            Err(e) => {
                tracing::debug!(topic, partition, error = %e, "cannot read the high watermark")
            }
        }
    }
    for topic in dlq_topics {
        match dlq_depth(consumer, topic) {
            Ok(depth) => metrics().dlq_depth.with_label_values(&[topic]).set(depth),
            Err(e) => tracing::debug!(topic, error = %e, "cannot measure the dead-letter depth"),
        }
    }
}

/// Records of `topic` after the replay group's committed offsets.
fn dlq_depth(consumer: &BaseConsumer, topic: &str) -> Result<i64, rdkafka::error::KafkaError> {
    let meta = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let partitions: Vec<i32> = meta
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(tpl, TIMEOUT)?;
    let committed: BTreeMap<i32, i64> = committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect();
    let mut depth = 0;
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, TIMEOUT)?;
        let done = committed.get(&p).copied().unwrap_or(low).max(low);
        depth += (high - done).max(0);
    }
    Ok(depth)
}
