//! Group commit: the small batches of several partitions, written in one
//! transaction; and their key-state lookups, read in one statement.
//!
//! At a steady rate each partition's batch holds the few events of its
//! `sink.batch_max_wait_ms`, and a transaction per partition per wait is
//! more commits than the database has cores for: they queue, and the
//! queueing is latency. A batch handed to [`GroupCommit::write`] joins a
//! queue; a caller that gets one of the writer slots (as many as the pool
//! has connections) takes every batch queued, up to `sink.batch_max_events`
//! events in all, and writes them together; the others wait for its answer.
//! With a slot free a batch is written at once, alone, so grouping adds no
//! wait; under load, the batches that arrive while the slots are busy share
//! the next transaction.
//!
//! Lookups queue the same way: the keys of every queued lookup are read in
//! one statement, and each lookup is answered with its own keys.
//!
//! Each partition's progress row is still moved under its own lease in that
//! transaction. A grouped write that fails (a lease taken over, an event
//! already stored, data refused, a lost connection) is written again batch
//! by batch, so each partition gets the outcome of its own batch.

use std::sync::Mutex;

use tokio::sync::{oneshot, Semaphore};

use crate::sink::{Batch, Lease, SinkError, Written};

/// A request waiting for a writer slot.
pub(super) struct Member<R, A> {
    pub request: R,
    reply: oneshot::Sender<Result<A, SinkError>>,
}

/// The queue of requests and the writer slots (see the module doc): for
/// partitions' batches ([`GroupCommit`]), and for the keys whose state
/// partitions look up ([`GroupLookup`]: one statement reads them all).
pub(super) struct Group<R, A> {
    queue: Mutex<Vec<Member<R, A>>>,
    writers: Semaphore,
    /// Most events (or keys) in one transaction (or statement).
    max: usize,
    /// A request's events (or keys).
    size: fn(&R) -> usize,
}

/// Partitions' batches, written together.
pub(super) type GroupCommit = Group<(Lease, Batch), Written>;

/// Partitions' key-state lookups, read together.
pub(super) type GroupLookup = Group<Vec<String>, std::collections::HashMap<String, i64>>;

impl<R, A> Group<R, A> {
    /// `writers` at a time, each taking requests of at most `max` in all.
    pub fn new(writers: usize, max: usize, size: fn(&R) -> usize) -> Self {
        Self {
            queue: Mutex::new(Vec::new()),
            writers: Semaphore::new(writers.max(1)),
            max: max.max(1),
            size,
        }
    }

    /// Whether a request of `size` is small enough to share; a larger one
    /// gains nothing from it and goes alone.
    pub fn takes(&self, size: usize) -> bool {
        size <= self.max / 2
    }

    /// Runs `request` with whatever else is queued (`run` runs a group and
    /// answers for each member, in order).
    pub async fn submit<F, Fut>(&self, request: R, run: F) -> Result<A, SinkError>
    where
        F: Fn(Vec<R>) -> Fut,
        Fut: std::future::Future<Output = Vec<Result<A, SinkError>>>,
    {
        let (reply, mut answer) = oneshot::channel();
        self.lock().push(Member { request, reply });
        loop {
            tokio::select! {
                biased;
                answer = &mut answer => return answer.unwrap_or_else(|_| Err(abandoned())),
                permit = self.writers.acquire() => {
                    let Ok(_permit) = permit else {
                        return Err(abandoned());
                    };
                    let members = self.take();
                    if members.is_empty() {
                        // Another writer took this request: its answer comes.
                        drop(_permit);
                        return answer.await.unwrap_or_else(|_| Err(abandoned()));
                    }
                    let (requests, replies): (Vec<_>, Vec<_>) = members
                        .into_iter()
                        .map(|m| (m.request, m.reply))
                        .unzip();
                    let results = run(requests).await;
                    for (reply, result) in replies.into_iter().zip(results) {
                        // A caller that gave up waiting is gone; its request ran or not, as said.
                        let _ = reply.send(result);
                    }
                }
            }
        }
    }

    /// The queued requests, oldest first, up to `max` events or keys in all
    /// (at least one request). A request whose caller stopped waiting (its
    /// task ended) is dropped unrun: nobody would learn its outcome.
    fn take(&self) -> Vec<Member<R, A>> {
        let mut queue = self.lock();
        queue.retain(|m| !m.reply.is_closed());
        let mut events = 0;
        let n = queue
            .iter()
            .take_while(|m| {
                events += (self.size)(&m.request);
                events <= self.max
            })
            .count()
            .max(1)
            .min(queue.len());
        queue.drain(..n).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Member<R, A>>> {
        // The queue is a plain Vec: a panic while it was held leaves it whole.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer holding a batch stopped before answering (its task ended):
/// nothing is known written, so the caller writes it again.
fn abandoned() -> SinkError {
    SinkError::Transient("the grouped transaction holding this request was abandoned".into())
}

/// A batch's size for [`GroupCommit`]: its events.
pub(super) fn events(request: &(Lease, Batch)) -> usize {
    request.1.events.len()
}

/// A lookup's size for [`GroupLookup`]: its keys.
#[allow(clippy::ptr_arg)] // the request type is `Vec<String>`: `fn(&R) -> usize`
pub(super) fn keys(request: &Vec<String>) -> usize {
    request.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn lease(partition: i32) -> Lease {
        Lease {
            topic: "t".into(),
            partition,
            epoch: 1,
            next_offset: None,
            dead_lettered: vec![],
        }
    }

    fn batch(events: usize, next_offset: i64) -> Batch {
        Batch {
            events: (0..events as i64)
                .map(|i| crate::record::Event::for_test("k", i + 1, i))
                .collect(),
            next_offset,
            ..Batch::default()
        }
    }

    #[tokio::test]
    async fn batches_queued_while_the_writer_is_busy_share_the_next_transaction() {
        let group = Arc::new(GroupCommit::new(1, 100, events));
        let groups = Arc::new(Mutex::new(Vec::<Vec<i32>>::new()));
        let (release, released) = tokio::sync::watch::channel(false);
        let write = {
            let groups = groups.clone();
            move |members: Vec<(Lease, Batch)>| {
                let groups = groups.clone();
                let mut released = released.clone();
                async move {
                    let _ = released.wait_for(|r| *r).await;
                    groups
                        .lock()
                        .unwrap()
                        .push(members.iter().map(|(l, _)| l.partition).collect());
                    members
                        .iter()
                        .map(|(l, b)| {
                            Ok(Written {
                                applied: b.events.len() as u64 + l.partition as u64 * 1000,
                                absorbed: 0,
                            })
                        })
                        .collect()
                }
            }
        };
        let mut tasks = Vec::new();
        for p in 0..4 {
            let (group, write) = (group.clone(), write.clone());
            tasks.push(tokio::spawn(async move {
                group.submit((lease(p), batch(2, 10)), write).await
            }));
            // The first holds the only slot; the others queue behind it.
            tokio::task::yield_now().await;
        }
        while group.lock().len() < 3 {
            tokio::task::yield_now().await;
        }
        release.send(true).unwrap();
        for (p, task) in tasks.into_iter().enumerate() {
            let written = task.await.unwrap().unwrap();
            assert_eq!(
                written.applied,
                2 + p as u64 * 1000,
                "partition {p}'s own answer"
            );
        }
        assert_eq!(*groups.lock().unwrap(), vec![vec![0], vec![1, 2, 3]]);
    }

    #[tokio::test]
    async fn a_group_holds_at_most_max_events_and_a_large_batch_is_not_grouped() {
        let group = GroupCommit::new(1, 10, events);
        assert!(group.takes(5) && !group.takes(6));
        let mut answers = Vec::new();
        for p in 0..4 {
            let (reply, answer) = oneshot::channel();
            answers.push(answer);
            group.lock().push(Member {
                request: (lease(p), batch(4, 1)),
                reply,
            });
        }
        let sizes: Vec<usize> = std::iter::from_fn(|| Some(group.take()).filter(|m| !m.is_empty()))
            .map(|m| m.len())
            .collect();
        assert_eq!(sizes, vec![2, 2]);
    }

    #[tokio::test]
    async fn a_writer_that_stops_frees_its_slot_and_its_members_are_told_to_write_again() {
        let group = Arc::new(GroupCommit::new(1, 100, events));
        let calls = Arc::new(AtomicUsize::new(0));
        // The first write never ends; the later ones answer.
        let write = {
            let calls = calls.clone();
            move |members: Vec<(Lease, Batch)>| {
                let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
                async move {
                    if first {
                        std::future::pending::<()>().await;
                    }
                    members.iter().map(|_| Ok(Written::default())).collect()
                }
            }
        };
        let leader = {
            let (group, write) = (group.clone(), write.clone());
            tokio::spawn(async move { group.submit((lease(0), batch(1, 1)), write).await })
        };
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let follower = {
            let (group, write) = (group.clone(), write.clone());
            tokio::spawn(async move { group.submit((lease(1), batch(1, 1)), write).await })
        };
        while group.lock().is_empty() {
            tokio::task::yield_now().await;
        }
        // The leader's task ends mid-write: the follower gets the slot.
        leader.abort();
        assert!(follower.await.unwrap().is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // A queued batch whose caller is gone is not written.
        let (reply, answer) = oneshot::channel();
        group.lock().push(Member {
            request: (lease(3), batch(1, 1)),
            reply,
        });
        drop(answer);
        assert!(group.take().is_empty());

        // A batch taken by a writer that stops before answering: its caller
        // is told to write it again, not that it was written.
        let slot = group.writers.acquire().await.unwrap();
        let waiting = {
            let (group, write) = (group.clone(), write.clone());
            tokio::spawn(async move { group.submit((lease(2), batch(1, 1)), write).await })
        };
        while group.lock().is_empty() {
            tokio::task::yield_now().await;
        }
        drop(group.take());
        drop(slot);
        let answer = waiting.await.unwrap();
        assert!(
            matches!(answer, Err(ref e) if e.is_transient()),
            "{answer:?}"
        );
    }
}
