//! A partition's lease: taking it (waiting out a sink outage), where the
//! partition starts, and moving it there.
//!
//! The coordinator tries each newly assigned partition's lease once while
//! the rebalance callback waits. When the sink cannot be reached (an outage
//! during a rebalance), the partition is assigned paused instead and its
//! lease is taken in the background ([`acquire`]): the callback returns at
//! once, so the group's rebalance is never held past its timeout by a sink
//! outage (which would let the group move the partition on while this
//! replica still takes its lease, fencing the new owner). Once the lease is
//! taken, the partition is moved to the lease's offset ([`seek`]; librdkafka
//! drops what it fetched before), resumed, and its worker runs.

use std::sync::Arc;
use std::time::Duration;

use super::source::StartFrom;
use super::{OrdoConsumer, OrdoContext, Shared};
use crate::sink::Lease;
use crate::telemetry::health::{health, Position};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// How long moving a partition to its lease's offset may keep failing before
/// the partition is stopped.
const SEEK_PATIENCE: Duration = Duration::from_secs(60);

/// Takes a partition's lease, waiting for as long as the sink cannot be
/// reached; only a permanent error fails.
pub(super) async fn acquire(
    pipeline: &Shared,
    topic: &str,
    partition: i32,
) -> Result<Lease, String> {
    crate::sink::retry::wait_for(
        pipeline.sink.name(),
        &format!("partition {topic}/{partition} (taking its lease)"),
        &pipeline.retry,
        crate::sink::SinkError::is_transient,
        || pipeline.sink.acquire(topic, partition, &pipeline.owner),
    )
    .await
    .map_err(|e| {
        format!("topic {topic} partition {partition}: cannot take the partition's lease: {e}")
    })
}

/// Where a partition starts: the lease's next offset, or `start_from` for a
/// partition the sink has never stored.
pub(super) fn start_offset(lease: &Lease, start_from: StartFrom) -> (Offset, Position) {
    match (lease.next_offset, start_from) {
        (Some(n), _) => (Offset::Offset(n), Position::Next(n)),
        (None, StartFrom::Earliest) => (Offset::Beginning, Position::Earliest),
        (None, StartFrom::Latest) => (Offset::End, Position::Latest),
    }
}

/// Publishes a leased partition's start and counts it assigned.
pub(super) fn announce(lease: &Lease, position: Position) {
    tracing::info!(
        topic = %lease.topic,
        partition = lease.partition,
        next_offset = lease.next_offset,
        epoch = lease.epoch,
        "partition assigned"
    );
    health().position(&lease.topic, lease.partition, position);
    if let Some(next) = lease.next_offset {
        health().stored(&lease.topic, lease.partition, next);
    }
}

/// Moves a partition to `offset` (retrying a while: librdkafka refuses a
/// seek until the partition's fetcher has started). librdkafka purges what it
/// had fetched for the partition before the seek.
pub(super) async fn seek(
    consumer: &Arc<OrdoConsumer>,
    topic: &Arc<str>,
    partition: i32,
    offset: Offset,
) -> Result<(), String> {
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        let (c, t) = (consumer.clone(), topic.clone());
        let result = tokio::task::spawn_blocking(move || {
            <StreamConsumer<OrdoContext> as Consumer<OrdoContext>>::seek(
                &c,
                &t,
                partition,
                offset,
                Duration::from_secs(5),
            )
        })
        .await
        .map_err(|e| e.to_string())?;
        match result {
            Ok(()) => return Ok(()),
            Err(e) if started.elapsed() < SEEK_PATIENCE => {
                tracing::debug!(topic = %topic, partition, error = %e, "seek not accepted yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Pauses the given partitions (assigned, lease or fetch turn not yet taken).
pub(super) fn pause<C: Consumer<OrdoContext>>(consumer: &C, partitions: &TopicPartitionList) {
    if partitions.count() == 0 {
        return;
    }
    if let Err(e) = consumer.pause(partitions) {
        tracing::warn!(error = %e, "cannot pause partitions waiting for their lease or a fetch turn");
    }
}
