//! The partitions this replica holds, owned by one task: the rebalance
//! callbacks ([`super::context`]) only send it messages and wait for its
//! answers, so no lock guards the workers and every change to them happens
//! in one place, in order.
//!
//! A newly assigned partition's lease is tried once while the callback waits
//! (the callback then sets the partition's start offset in the assignment
//! itself: invariant 1); a partition whose lease the sink cannot give now is
//! assigned paused and held here as *leasing*: its lease is taken in the
//! background, without holding the group's rebalance up, then the partition
//! is moved to the lease's offset and its worker started (which resumes it
//! once it holds a fetch turn, [`super::turns`]). A revoke
//! drains the partitions' workers (bounded) and answers with their stored
//! offsets; a partition still leasing just lets go.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use tokio::sync::{mpsc, oneshot};

use super::worker::{Control, Worker};
use super::{OrdoConsumer, OrdoContext, Shared};
use crate::sink::Lease;
use crate::telemetry::health::health;

/// A partition: its topic and number.
pub(super) type PartitionId = (Arc<str>, i32);
/// A partition's own queue, split off the consumer's.
pub(super) type Queue = StreamPartitionQueue<OrdoContext>;

/// What the leases of newly assigned partitions came to.
pub(super) struct Leased {
    /// Taken: these partitions start at their lease's offset.
    pub leases: Vec<Lease>,
    /// Not takeable now (the sink unreachable): assigned paused, leased later.
    pub later: Vec<PartitionId>,
}

/// A message to the coordinator.
pub(super) enum Request {
    /// Take the leases of newly assigned partitions, one attempt each.
    Lease {
        partitions: Vec<PartitionId>,
        reply: oneshot::Sender<Result<Leased, String>>,
    },
    /// Start the workers of partitions being assigned, on their queues:
    /// `leased` at once, `later` once assigned (see [`Request::Assigned`]).
    Start {
        leased: Vec<(Lease, Queue, Option<super::turns::Turn>)>,
        later: Vec<(PartitionId, Queue)>,
    },
    /// These partitions are assigned and paused: their leases may be taken.
    Assigned(Vec<PartitionId>),
    /// Drain these partitions' workers (`None`: all) within `within`; answer
    /// with the offsets they stored, and how many of the partitions were held.
    Revoke {
        partitions: Option<Vec<PartitionId>>,
        within: Duration,
        reply: oneshot::Sender<(Vec<(PartitionId, i64)>, usize)>,
    },
    /// A partition's lease was taken in the background and the partition
    /// moved to its offset (or that failed).
    Leased {
        id: PartitionId,
        attempt: u64,
        lease: Result<Lease, LeaseFailure>,
    },
}

/// Why a lease taken in the background did not start its partition.
pub(super) enum LeaseFailure {
    /// The sink refused the lease for good: the process stops.
    Fatal(String),
    /// The partition could not be moved to the lease's offset: it stops.
    Seek(String),
}

/// A partition this replica holds.
enum Held {
    /// Its worker runs.
    Running {
        control: mpsc::Sender<Control>,
        task: tokio::task::JoinHandle<()>,
    },
    /// Assigned paused; its lease is being taken (`task`, once assigned).
    /// `attempt` tells its background lease from an earlier assignment's.
    Leasing {
        queue: Queue,
        task: Option<tokio::task::JoinHandle<()>>,
        attempt: u64,
    },
    /// Stopped before its worker ran: nothing to drain.
    Stopped,
}

/// The coordinator's state.
struct Coordinator {
    shared: Arc<Shared>,
    consumer: Weak<OrdoConsumer>,
    /// Its own mailbox, for the background lease tasks.
    mailbox: mpsc::WeakUnboundedSender<Request>,
    held: HashMap<PartitionId, Held>,
    /// Background leases started so far.
    attempts: u64,
}

/// Starts the coordinator; requests go to the sender it returns.
pub(super) fn start(
    shared: Arc<Shared>,
    consumer: Weak<OrdoConsumer>,
    runtime: &tokio::runtime::Handle,
) -> mpsc::UnboundedSender<Request> {
    let (tx, rx) = mpsc::unbounded_channel();
    let coordinator = Coordinator {
        shared,
        consumer,
        mailbox: tx.downgrade(),
        held: HashMap::new(),
        attempts: 0,
    };
    runtime.spawn(coordinator.run(rx));
    tx
}

impl Coordinator {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Request>) {
        while let Some(request) = rx.recv().await {
            match request {
                Request::Lease { partitions, reply } => {
                    let _ = reply.send(self.lease(partitions).await);
                }
                Request::Start { leased, later } => {
                    for (lease, queue, turn) in leased {
                        self.run_worker(lease, queue, turn);
                    }
                    for (id, queue) in later {
                        self.attempts += 1;
                        let attempt = self.attempts;
                        self.held.insert(
                            id,
                            Held::Leasing {
                                queue,
                                task: None,
                                attempt,
                            },
                        );
                    }
                }
                Request::Assigned(ids) => {
                    for id in ids {
                        self.take_lease_later(id);
                    }
                }
                Request::Revoke {
                    partitions,
                    within,
                    reply,
                } => self.revoke(partitions, within, reply),
                Request::Leased { id, attempt, lease } => self.leased(id, attempt, lease),
            }
        }
    }

    /// One attempt at each lease; after the first the sink could not
    /// answer, the rest wait in the background without holding the
    /// rebalance up.
    async fn lease(&self, partitions: Vec<PartitionId>) -> Result<Leased, String> {
        let s = &self.shared;
        let mut leased = Leased {
            leases: Vec::with_capacity(partitions.len()),
            later: Vec::new(),
        };
        for (topic, partition) in partitions {
            if !leased.later.is_empty() {
                leased.later.push((topic, partition));
                continue;
            }
            match s.sink.acquire(&topic, partition, &s.owner).await {
                Ok(lease) => leased.leases.push(lease),
                Err(e) if e.is_transient() => {
                    tracing::warn!(topic = %topic, partition, error = %e,
                        "cannot take the partition's lease now; it stays paused until the lease is taken");
                    leased.later.push((topic, partition));
                }
                Err(e) => {
                    return Err(format!(
                    "topic {topic} partition {partition}: cannot take the partition's lease: {e}"
                ))
                }
            }
        }
        Ok(leased)
    }

    /// Starts a leased partition's worker on its queue.
    /// Starts a partition's worker; with a `turn` the partition is being
    /// fetched, without one it is paused until the worker gets one.
    fn run_worker(&mut self, lease: Lease, queue: Queue, turn: Option<super::turns::Turn>) {
        let Some(consumer) = self.consumer.upgrade() else {
            return;
        };
        let id: PartitionId = (lease.topic.as_str().into(), lease.partition);
        let (control, rx) = mpsc::channel(1);
        let worker = Worker::new(self.shared.clone(), consumer, lease, turn);
        let task = tokio::spawn(worker.run(queue, rx));
        self.held.insert(id, Held::Running { control, task });
    }

    /// A partition assigned paused: its lease is taken in the background.
    fn take_lease_later(&mut self, id: PartitionId) {
        let (Some(Held::Leasing { task, attempt, .. }), Some(consumer), Some(mailbox)) = (
            self.held.get_mut(&id),
            self.consumer.upgrade(),
            self.mailbox.upgrade(),
        ) else {
            return;
        };
        let shared = self.shared.clone();
        let (key, attempt) = (id.clone(), *attempt);
        *task = Some(tokio::spawn(async move {
            let (topic, partition) = &key;
            let lease = match super::lease::acquire(&shared, topic, *partition).await {
                Ok(lease) => {
                    let (offset, _) = super::lease::start_offset(&lease, shared.start_from);
                    super::lease::seek(&consumer, topic, *partition, offset)
                        .await
                        .map(|()| lease)
                        .map_err(|e| {
                            LeaseFailure::Seek(format!(
                                "cannot move the partition to its stored offset {offset:?}: {e}"
                            ))
                        })
                }
                Err(e) => Err(LeaseFailure::Fatal(e)),
            };
            let _ = mailbox.send(Request::Leased {
                id: key,
                attempt,
                lease,
            });
        }));
    }

    /// A lease taken in the background: the partition's worker starts
    /// (unless it was revoked meanwhile).
    fn leased(&mut self, id: PartitionId, attempt: u64, lease: Result<Lease, LeaseFailure>) {
        match self.held.get(&id) {
            Some(Held::Leasing { attempt: a, .. }) if *a == attempt => {}
            _ => return,
        }
        let Some(Held::Leasing { queue, .. }) = self.held.remove(&id) else {
            return;
        };
        let (topic, partition) = &id;
        match lease {
            Ok(lease) => {
                let (_, position) = super::lease::start_offset(&lease, self.shared.start_from);
                super::lease::announce(&lease, position);
                // Paused since it was assigned: the worker resumes it once
                // it has a fetch turn.
                self.run_worker(lease, queue, None);
            }
            Err(LeaseFailure::Fatal(e)) => {
                self.shared.fatal.set(e);
                self.held.insert(id, Held::Stopped);
            }
            Err(LeaseFailure::Seek(why)) => {
                health().stopped(topic, *partition, &why);
                tracing::error!(topic = %topic, partition, error = %why, "partition stopped");
                // Stays paused; a drain is answered with nothing stored by this owner.
                self.held.insert(id, Held::Stopped);
            }
        }
    }

    /// Drains the revoked partitions' workers in the background and answers
    /// with their stored offsets.
    fn revoke(
        &mut self,
        partitions: Option<Vec<PartitionId>>,
        within: Duration,
        reply: oneshot::Sender<(Vec<(PartitionId, i64)>, usize)>,
    ) {
        let taken: Vec<(PartitionId, Held)> = match partitions {
            Some(ids) => ids
                .into_iter()
                .filter_map(|id| self.held.remove(&id).map(|h| (id, h)))
                .collect(),
            None => self.held.drain().collect(),
        };
        let released = taken.len();
        let mut running = Vec::new();
        for (id, held) in taken {
            match held {
                Held::Running { control, task } => running.push((id, control, task)),
                Held::Leasing { task, .. } => {
                    if let Some(task) = task {
                        task.abort();
                    }
                    tracing::info!(topic = %id.0, partition = id.1,
                        "partition revoked before its lease was taken");
                }
                Held::Stopped => {}
            }
        }
        tokio::spawn(async move {
            let _ = reply.send((drain(running, within).await, released));
        });
    }
}

type Running = (
    PartitionId,
    mpsc::Sender<Control>,
    tokio::task::JoinHandle<()>,
);

/// How long before the stop deadline a drain gives up, so the process can
/// still report what committed and leave the group.
const STOP_MARGIN: Duration = Duration::from_secs(3);

/// Asks each worker to finish its batch and waits for its stored offset,
/// at most `within`, and never past the stop deadline if a stop signal
/// arrives meanwhile.
async fn drain(workers: Vec<Running>, within: Duration) -> Vec<(PartitionId, i64)> {
    let waits = workers.into_iter().map(|(id, control, mut task)| async move {
        let (ack, done) = oneshot::channel();
        let answered = async {
            let _ = control.send(Control::Drain(ack)).await;
            done.await
        };
        let outcome = tokio::select! {
            answer = tokio::time::timeout(within, answered) => match answer {
                Ok(Ok(next)) => Some(next),
                // The worker had already stopped.
                Ok(Err(_)) => return None,
                Err(_) => None,
            },
            () = crate::process::stop_deadline_near(STOP_MARGIN) => None,
        };
        match outcome {
            Some(next) => {
                let _ = (&mut task).await;
                next.map(|n| (id, n))
            }
            None => {
                let why = if crate::process::stop_deadline().is_some() {
                    "before the shutdown deadline"
                } else {
                    "in time"
                };
                tracing::warn!(topic = %id.0, partition = id.1,
                    "partition did not drain {why}; abandoned (its next owner resumes from the sink)");
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
