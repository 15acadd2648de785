//! Taking a partition's lease, without holding the consumer group up.
//!
//! In the rebalance callback each newly assigned partition's lease is tried
//! once: when the sink answers, the partition starts at the lease's offset
//! right away. When it cannot be reached (an outage during a rebalance), the
//! partition is assigned paused instead and [`take_then_run`] waits for the
//! lease in the background: the callback returns at once, so the group's
//! rebalance is never held past its timeout by a sink outage (which would let
//! the group move the partition on while this replica still takes its lease,
//! fencing the new owner). Once the lease is taken, the partition is moved to
//! the lease's offset (librdkafka drops what it fetched before), resumed,
//! and its worker runs. Revoked before that, it just lets go.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use super::source::StartFrom;
use super::worker::{Control, Worker};
use super::{OrdoConsumer, OrdoContext, Shared};
use crate::sink::Lease;
use crate::telemetry::health::{health, Position};

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
        next_offset = ?lease.next_offset,
        epoch = lease.epoch,
        "partition assigned"
    );
    health().position(&lease.topic, lease.partition, position);
    if let Some(next) = lease.next_offset {
        health().stored(&lease.topic, lease.partition, next);
    }
}

/// A partition assigned paused because its lease could not be taken in the
/// rebalance callback. `assigned` fires once the callback has assigned and
/// paused it (dropped: the assignment failed, nothing to do).
pub(super) async fn take_then_run(
    pipeline: Arc<Shared>,
    consumer: Arc<OrdoConsumer>,
    (topic, partition): (Arc<str>, i32),
    queue: rdkafka::consumer::stream_consumer::StreamPartitionQueue<OrdoContext>,
    assigned: oneshot::Receiver<()>,
    mut control: mpsc::Receiver<Control>,
) {
    let lease = tokio::select! {
        biased;
        c = control.recv() => {
            let_go(&topic, partition, c);
            return;
        }
        lease = async {
            assigned.await.ok()?;
            Some(acquire(&pipeline, &topic, partition).await)
        } => lease,
    };
    let lease = match lease {
        None => return,
        Some(Ok(lease)) => lease,
        Some(Err(e)) => {
            pipeline.fatal.set(e);
            return;
        }
    };
    let (offset, position) = start_offset(&lease, pipeline.start_from);
    if let Err(e) = seek(&consumer, &topic, partition, offset).await {
        let why = format!("cannot move the partition to its stored offset {offset:?}: {e}");
        health().stopped(&topic, partition, &why);
        tracing::error!(topic = %topic, partition, error = %why, "partition stopped");
        // Stays paused; a drain is answered with nothing stored by this owner.
        if let Some(c) = control.recv().await {
            let_go(&topic, partition, Some(c));
        }
        return;
    }
    announce(&lease, position);
    let worker = Worker::new(pipeline, consumer.clone(), lease);
    resume(&consumer, &topic, partition);
    worker.run(queue, control).await;
}

/// Answers a drain that came before the lease: nothing was stored.
fn let_go(topic: &str, partition: i32, control: Option<Control>) {
    tracing::info!(topic = %topic, partition, "partition revoked before its lease was taken");
    if let Some(Control::Drain(ack)) = control {
        let _ = ack.send(None);
    }
}

/// Moves a partition to `offset` (retrying a while: librdkafka refuses a
/// seek until the partition's fetcher has started). librdkafka purges what it
/// had fetched for the partition before the seek.
async fn seek(
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

/// Pauses the given partitions (assigned, lease not yet taken).
pub(super) fn pause<C: Consumer<OrdoContext>>(consumer: &C, partitions: &TopicPartitionList) {
    if partitions.count() == 0 {
        return;
    }
    if let Err(e) = consumer.pause(partitions) {
        tracing::warn!(error = %e, "cannot pause partitions waiting for their lease");
    }
}

fn resume(consumer: &OrdoConsumer, topic: &str, partition: i32) {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    if let Err(e) = consumer.resume(&tpl) {
        tracing::warn!(topic = %topic, partition, error = %e, "cannot resume partition");
    }
}
