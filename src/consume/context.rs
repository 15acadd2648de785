//! The consumer group's rebalance callbacks: they tell the coordinator
//! ([`super::coordinator`]), which owns the partition workers, and wait for
//! its answer.
//!
//! librdkafka calls [`ConsumerContext::rebalance`] while the main queue is
//! polled. On assign, before the partitions are added: the coordinator takes
//! each partition's lease, the callback sets the partition's start offset to
//! the sink's `next_offset` in the assignment itself and splits its queue off,
//! and the coordinator starts its worker (a partition whose lease the sink
//! cannot give now is assigned paused and leased in the background). On
//! revoke, before the partitions are removed: the coordinator drains their
//! workers, each finishing and committing its batch, then the sink's offsets
//! are committed to Kafka (advisory, for lag tools).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use tokio::sync::{mpsc, oneshot};

use super::coordinator::{PartitionId, Request};
use super::{OrdoConsumer, Shared};
use crate::telemetry::health::health;
use crate::telemetry::metrics::metrics;

/// How long a revoked partition may take to finish its batch before it is abandoned
/// (abandoning loses nothing: the next owner resumes from the sink's offset).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Partitions paused once assigned: those without their lease (`ids`,
/// leased in the background) and those without a fetch turn yet (their
/// workers resume them when they get one).
#[derive(Default)]
struct Deferred {
    partitions: TopicPartitionList,
    ids: Vec<PartitionId>,
    /// The others: fetched at once. A pause is the application's until it
    /// resumes, across assignments (librdkafka keeps it when a partition
    /// is revoked paused), so they are resumed before they are assigned.
    fetching: TopicPartitionList,
}

/// Ordo's consumer context: hands rebalances to the coordinator.
pub struct OrdoContext {
    pipeline: Arc<Shared>,
    runtime: tokio::runtime::Handle,
    consumer: OnceLock<Weak<OrdoConsumer>>,
    coordinator: OnceLock<mpsc::UnboundedSender<Request>>,
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
                // Paused before they are assigned too, so that not even their
                // first fetch is materialised (the pause after the assignment
                // stays: it also drops a fetch begun in between).
                super::lease::pause(base, &deferred.partitions);
                if deferred.fetching.count() > 0 {
                    if let Err(e) = base.resume(&deferred.fetching) {
                        tracing::warn!(error = %e, "cannot resume partitions being assigned");
                    }
                }
                let result = if cooperative {
                    base.incremental_assign(tpl)
                } else {
                    base.assign(tpl)
                };
                match result {
                    Ok(()) => {
                        super::lease::pause(base, &deferred.partitions);
                        if !deferred.ids.is_empty() {
                            self.tell(Request::Assigned(deferred.ids));
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
                tracing::error!(
                    error = %rdkafka::types::RDKafkaErrorCode::from(other),
                    "rebalance error"
                );
                if !cooperative {
                    let _ = base.unassign();
                }
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            // Kafka commits are a copy for lag tools; the sink holds the real offsets.
            tracing::debug!(error = %e, offsets = list(offsets).field(), "advisory offset commit failed");
        }
    }
}

/// `topic/partition` pairs, for logs.
/// `topic/partition` of each element, as a log field's list.
fn list(tpl: &TopicPartitionList) -> crate::telemetry::json::List {
    crate::telemetry::json::List::strings(
        tpl.elements()
            .iter()
            .map(|e| format!("{}/{}", e.topic(), e.partition())),
    )
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
            coordinator: OnceLock::new(),
            closing: AtomicBool::new(false),
            last_error: Default::default(),
        }
    }

    /// Gives the context a handle on its consumer, to split partition
    /// queues, and starts the coordinator.
    pub(crate) fn bind(&self, consumer: &Arc<OrdoConsumer>) {
        let _ = self.consumer.set(Arc::downgrade(consumer));
        let _ = self.coordinator.set(super::coordinator::start(
            self.pipeline.clone(),
            Arc::downgrade(consumer),
            &self.runtime,
        ));
    }

    /// Sends the coordinator a request that needs no answer.
    fn tell(&self, request: Request) {
        let sent = self
            .coordinator
            .get()
            .is_some_and(|c| c.send(request).is_ok());
        if !sent {
            self.pipeline
                .fatal
                .set("the partition coordinator is not running".into());
        }
    }

    /// Sends the coordinator a request and waits for its answer.
    async fn ask<T>(&self, request: impl FnOnce(oneshot::Sender<T>) -> Request) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.tell(request(reply));
        answer.await.ok()
    }

    /// From now on, assigned partitions get no worker (the process is stopping).
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
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
        let leased = self.block_on(self.ask(|reply| Request::Lease { partitions, reply }));
        let leased = match leased {
            Some(Ok(leased)) => leased,
            Some(Err(e)) => {
                self.pipeline.fatal.set(e);
                return deferred;
            }
            None => {
                self.pipeline
                    .fatal
                    .set("the partition coordinator did not answer".into());
                return deferred;
            }
        };
        let mut start = Vec::with_capacity(leased.leases.len());
        for lease in leased.leases {
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
            let turn = self
                .pipeline
                .turns
                .try_take(super::turns::Estimate::default().bytes());
            let list = match turn {
                Some(_) => &mut deferred.fetching,
                None => &mut deferred.partitions,
            };
            list.add_partition(&lease.topic, lease.partition);
            start.push((lease, queue, turn));
        }
        let mut later = Vec::with_capacity(leased.later.len());
        for (topic, partition) in leased.later {
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
            deferred.partitions.add_partition(&topic, partition);
            deferred.ids.push((topic.clone(), partition));
            later.push(((topic, partition), queue));
        }
        self.tell(Request::Start {
            leased: start,
            later,
        });
        deferred
    }

    /// Drains the workers of the revoked partitions; returns their committed offsets.
    fn on_revoke(&self, tpl: &TopicPartitionList) -> Vec<(PartitionId, i64)> {
        let partitions: Vec<PartitionId> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().into(), e.partition()))
            .collect();
        metrics().rebalances.with_label_values(&["revoke"]).inc();
        tracing::info!(
            partitions = list(tpl).field(),
            "partitions revoked: draining"
        );
        let (drained, released) = self
            .block_on(self.ask(|reply| Request::Revoke {
                partitions: Some(partitions),
                within: DRAIN_TIMEOUT,
                reply,
            }))
            .unwrap_or_default();
        metrics().assigned_partitions.sub(released as i64);
        // After the drain: a draining worker no longer publishes its position.
        for e in tpl.elements() {
            health().revoked(e.topic(), e.partition());
        }
        drained
    }

    /// Drains every worker (shutdown) and commits their offsets to Kafka.
    pub(crate) async fn drain_all(&self, consumer: &OrdoConsumer, budget: Duration) {
        let (offsets, _) = self
            .ask(|reply| Request::Revoke {
                partitions: None,
                within: budget.min(DRAIN_TIMEOUT),
                reply,
            })
            .await
            .unwrap_or_default();
        commit_advisory(consumer, &offsets);
    }
}
