//! The consumer group's rebalance callbacks.
//!
//! librdkafka calls [`ConsumerContext::rebalance`] while the main queue is
//! polled. On assign, before the partitions are added: each partition's lease
//! is taken in the sink, its start offset is set to the sink's `next_offset`,
//! its queue is split off and its worker started (a partition whose lease the
//! sink cannot give now is assigned paused and waits for it in the
//! background, see [`super::lease`]). On revoke, before the
//! partitions are removed: each worker finishes and commits its batch, then the
//! sink's offsets are committed to Kafka (advisory, for lag tools).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use tokio::sync::{mpsc, oneshot};

use super::worker::{Control, Worker};
use super::{OrdoConsumer, Shared};
use crate::telemetry::health::health;
use crate::telemetry::metrics::metrics;

/// How long a revoked partition may take to finish its batch before it is abandoned
/// (abandoning loses nothing: the next owner resumes from the sink's offset).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

type PartitionId = (Arc<str>, i32);

/// Partitions assigned without their lease: paused once assigned, then
/// their tasks are let go to wait for the lease.
#[derive(Default)]
struct Deferred {
    partitions: TopicPartitionList,
    gates: Vec<oneshot::Sender<()>>,
}

struct WorkerHandle {
    control: mpsc::Sender<Control>,
    task: tokio::task::JoinHandle<()>,
}

/// Ordo's consumer context: owns the partition workers.
pub struct OrdoContext {
    pipeline: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    consumer: OnceLock<Weak<OrdoConsumer>>,
    workers: Mutex<HashMap<PartitionId, WorkerHandle>>,
    closing: AtomicBool,
    last_error: crate::kafka::LastError,
}

impl ClientContext for OrdoContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.last_error.log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.last_error.error(&error, reason);
    }
}

impl ConsumerContext for OrdoContext {
    fn rebalance(
        &self,
        base: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(base.rebalance_protocol(), RebalanceProtocol::Cooperative);
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let deferred = self.on_assign(tpl);
                let result = if cooperative {
                    base.incremental_assign(tpl)
                } else {
                    base.assign(tpl)
                };
                match result {
                    Ok(()) => {
                        super::lease::pause(base, &deferred.partitions);
                        for gate in deferred.gates {
                            let _ = gate.send(());
                        }
                    }
                    Err(e) => self
                        .pipeline
                        .fatal
                        .set(format!("cannot assign partitions {}: {e}", list(tpl))),
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = base.assignment_lost();
                let offsets = self.on_revoke(tpl);
                if !lost {
                    commit_advisory(base, &offsets);
                }
                let result = if cooperative {
                    base.incremental_unassign(tpl)
                } else {
                    base.unassign()
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, "unassign failed");
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                if !cooperative {
                    let _ = base.unassign();
                }
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // Kafka commits are a copy for lag tools; the sink holds the real offsets.
            tracing::debug!(error = %e, offsets = %list(offsets), "advisory offset commit failed");
        }
    }
}

/// `topic/partition` pairs, for logs.
fn list(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Commits the sink's offsets to Kafka so lag tools see them.
pub(super) fn commit_advisory<C: Consumer<OrdoContext>>(
    consumer: &C,
    offsets: &[(PartitionId, i64)],
) {
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), next) in offsets {
        if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
            tracing::warn!(error = %e, topic = %topic, partition, "bad offset for commit");
        }
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
        tracing::debug!(error = %e, "advisory offset commit failed");
    }
}

impl OrdoContext {
    pub(crate) fn new(pipeline: Arc<Shared>, runtime: tokio::runtime::Handle) -> Self {
        Self {
            pipeline,
            runtime,
            consumer: OnceLock::new(),
            workers: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
            last_error: Default::default(),
        }
    }

    /// Gives the context a handle on its consumer, to split partition queues.
    pub(crate) fn bind(&self, consumer: &Arc<OrdoConsumer>) {
        let _ = self.consumer.set(Arc::downgrade(consumer));
    }

    /// From now on, assigned partitions get no worker (the process is stopping).
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<PartitionId, WorkerHandle>> {
        self.workers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a future to completion from the (synchronous) rebalance callback.
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => tokio::task::block_in_place(|| handle.block_on(f)),
            Err(_) => self.runtime.block_on(f),
        }
    }

    /// Starts the assigned partitions: those whose lease the sink gives at
    /// once start at its offset; the others (the sink unreachable) are
    /// returned, to be paused once assigned, and wait for their lease in the
    /// background (see [`super::lease`]): `gate` fires after that pause.
    fn on_assign(&self, tpl: &mut TopicPartitionList) -> Deferred {
        let mut deferred = Deferred::default();
        if self.closing.load(Ordering::SeqCst) {
            return deferred;
        }
        health().joined();
        metrics().rebalances.with_label_values(&["assign"]).inc();
        let Some(consumer) = self.consumer.get().and_then(Weak::upgrade) else {
            self.pipeline
                .fatal
                .set("partitions assigned before the consumer was ready".into());
            return deferred;
        };
        let partitions: Vec<PartitionId> = tpl
            .elements()
            .iter()
            .map(|e| (Arc::<str>::from(e.topic()), e.partition()))
            .collect();
        let pipeline = self.pipeline.clone();
        // One attempt each; after the first the sink could not answer, the
        // rest wait in the background without holding the rebalance up.
        let taken = self.block_on(async move {
            let mut leases = Vec::with_capacity(partitions.len());
            let mut later = Vec::new();
            for (topic, partition) in partitions {
                if !later.is_empty() {
                    later.push((topic, partition));
                    continue;
                }
                match pipeline.sink.acquire(&topic, partition, &pipeline.owner).await {
                    Ok(lease) => leases.push(lease),
                    Err(e) if e.is_transient() => {
                        tracing::warn!(topic = %topic, partition, error = %e,
                            "cannot take the partition's lease now; it stays paused until the lease is taken");
                        later.push((topic, partition));
                    }
                    Err(e) => {
                        return Err(format!(
                            "topic {topic} partition {partition}: cannot take the partition's lease: {e}"
                        ))
                    }
                }
            }
            Ok::<_, String>((leases, later))
        });
        let (leases, later) = match taken {
            Ok(t) => t,
            Err(e) => {
                self.pipeline.fatal.set(e);
                return deferred;
            }
        };
        let mut workers = self.workers();
        for lease in leases {
            let (offset, position) = super::lease::start_offset(&lease, self.pipeline.start_from);
            if let Err(e) = tpl.set_partition_offset(&lease.topic, lease.partition, offset) {
                self.pipeline.fatal.set(format!(
                    "topic {} partition {}: cannot set start offset: {e}",
                    lease.topic, lease.partition
                ));
                return deferred;
            }
            let Some(queue) = consumer.split_partition_queue(&lease.topic, lease.partition) else {
                self.pipeline.fatal.set(format!(
                    "topic {} partition {}: cannot split the partition queue",
                    lease.topic, lease.partition
                ));
                return deferred;
            };
            super::lease::announce(&lease, position);
            metrics().assigned_partitions.inc();
            let id: PartitionId = (lease.topic.as_str().into(), lease.partition);
            let (control, rx) = mpsc::channel(1);
            let worker = Worker::new(self.pipeline.clone(), consumer.clone(), lease);
            let task = self.runtime.spawn(worker.run(queue, rx));
            workers.insert(id, WorkerHandle { control, task });
        }
        for (topic, partition) in later {
            // Fetched from the start until paused; the seek after the lease
            // drops whatever came before it.
            if let Err(e) = tpl.set_partition_offset(&topic, partition, Offset::Beginning) {
                self.pipeline.fatal.set(format!(
                    "topic {topic} partition {partition}: cannot set start offset: {e}"
                ));
                return deferred;
            }
            let Some(queue) = consumer.split_partition_queue(&topic, partition) else {
                self.pipeline.fatal.set(format!(
                    "topic {topic} partition {partition}: cannot split the partition queue"
                ));
                return deferred;
            };
            metrics().assigned_partitions.inc();
            let (control, rx) = mpsc::channel(1);
            let (gate, assigned) = oneshot::channel();
            let task = self.runtime.spawn(super::lease::take_then_run(
                self.pipeline.clone(),
                consumer.clone(),
                (topic.clone(), partition),
                queue,
                assigned,
                rx,
            ));
            workers.insert((topic.clone(), partition), WorkerHandle { control, task });
            deferred.partitions.add_partition(&topic, partition);
            deferred.gates.push(gate);
        }
        deferred
    }

    /// Drains the workers of the revoked partitions; returns their committed offsets.
    fn on_revoke(&self, tpl: &TopicPartitionList) -> Vec<(PartitionId, i64)> {
        let handles: Vec<(PartitionId, WorkerHandle)> = {
            let mut workers = self.workers();
            tpl.elements()
                .iter()
                .filter_map(|e| {
                    let id: PartitionId = (e.topic().into(), e.partition());
                    workers.remove(&id).map(|h| (id, h))
                })
                .collect()
        };
        metrics().rebalances.with_label_values(&["revoke"]).inc();
        metrics().assigned_partitions.sub(handles.len() as i64);
        let drained = if handles.is_empty() {
            vec![]
        } else {
            tracing::info!(partitions = %list(tpl), "partitions revoked: draining");
            self.block_on(drain(handles, DRAIN_TIMEOUT))
        };
        // After the drain: a draining worker no longer publishes its position.
        for e in tpl.elements() {
            health().revoked(e.topic(), e.partition());
        }
        drained
    }

    /// Drains every worker (shutdown) and commits their offsets to Kafka.
    pub(crate) async fn drain_all(&self, consumer: &OrdoConsumer, budget: Duration) {
        let handles: Vec<(PartitionId, WorkerHandle)> = self.workers().drain().collect();
        let offsets = drain(handles, budget.min(DRAIN_TIMEOUT)).await;
        commit_advisory(consumer, &offsets);
    }
}

/// Asks each worker to finish its batch and waits (bounded) for its committed offset.
async fn drain(
    handles: Vec<(PartitionId, WorkerHandle)>,
    timeout: Duration,
) -> Vec<(PartitionId, i64)> {
    let waits = handles.into_iter().map(|(id, handle)| async move {
        let (ack, done) = oneshot::channel();
        let _ = handle.control.send(Control::Drain(ack)).await;
        let result = tokio::time::timeout(timeout, done).await;
        let mut task = handle.task;
        match result {
            Ok(Ok(next)) => {
                let _ = (&mut task).await;
                next.map(|n| (id, n))
            }
            Ok(Err(_)) => None, // the worker had already stopped
            Err(_) => {
                tracing::warn!(topic = %id.0, partition = id.1,
                    "partition did not drain in time; abandoned (its next owner resumes from the sink)");
                task.abort();
                None
            }
        }
    });
    futures::future::join_all(waits)
        .await
        .into_iter()
        .flatten()
        .collect()
}
