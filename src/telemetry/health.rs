//! What `/readyz` decides on, and the positions lag is measured from: shared
//! state the consumer, the workers and the sink's breaker update.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Process-wide health.
#[derive(Default)]
pub struct Health {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The group was joined (a first assignment, possibly empty, arrived).
    joined: bool,
    /// Partitions stopped in front of a record, with why.
    stopped: BTreeMap<(String, i32), String>,
    /// Since when the sink's breaker has not been closed.
    breaker_open_since: Option<Instant>,
    /// Per owned partition: where processing stands.
    positions: BTreeMap<(String, i32), Position>,
    /// Per owned partition: the next offset the sink has stored.
    stored: BTreeMap<(String, i32), i64>,
    /// What the replica or one of its partitions waits for: (dependency, what) -> why.
    waiting: BTreeMap<(&'static str, String), String>,
}

/// Where an owned partition's processing stands, for lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The next offset to process.
    Next(i64),
    /// Nothing processed yet: processing starts at the earliest retained record.
    Earliest,
    /// Nothing processed yet: processing starts at the end of the partition.
    Latest,
}

/// The process's health state.
pub fn health() -> &'static Health {
    static HEALTH: OnceLock<Health> = OnceLock::new();
    HEALTH.get_or_init(Health::default)
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn joined(&self) {
        self.lock().joined = true;
    }

    pub fn stopped(&self, topic: &str, partition: i32, why: &str) {
        let mut inner = self.lock();
        inner
            .stopped
            .insert((topic.to_string(), partition), why.to_string());
        super::metrics::metrics()
            .stopped_partitions
            .set(inner.stopped.len() as i64);
    }

    /// `what` (the replica at start, or a partition) waits for dependency
    /// `on` (one of [`super::metrics::WAITING_ON`]) because of `why`; it is
    /// not ready until [`Health::done_waiting`].
    pub fn waiting(&self, on: &'static str, what: &str, why: &str) {
        let mut inner = self.lock();
        inner
            .waiting
            .insert((on, what.to_string()), why.to_string());
        super::metrics::metrics()
            .waiting
            .with_label_values(&[on])
            .set(1);
    }

    pub fn done_waiting(&self, on: &'static str, what: &str) {
        let mut inner = self.lock();
        if inner.waiting.remove(&(on, what.to_string())).is_some()
            && !inner.waiting.keys().any(|(o, _)| *o == on)
        {
            super::metrics::metrics()
                .waiting
                .with_label_values(&[on])
                .set(0);
        }
    }

    pub fn breaker_open(&self, open: bool) {
        let mut inner = self.lock();
        match (open, inner.breaker_open_since) {
            (true, None) => inner.breaker_open_since = Some(Instant::now()),
            (false, _) => inner.breaker_open_since = None,
            _ => {}
        }
    }

    /// Records where `topic`/`partition` stands (it is owned from now on).
    pub fn position(&self, topic: &str, partition: i32, position: Position) {
        self.lock()
            .positions
            .insert((topic.to_string(), partition), position);
    }

    /// Records the next offset the sink stored for an owned partition.
    pub fn stored(&self, topic: &str, partition: i32, next: i64) {
        let mut inner = self.lock();
        let key = (topic.to_string(), partition);
        if inner.positions.contains_key(&key) {
            inner.stored.insert(key, next);
        }
    }

    /// Forgets a partition this replica no longer owns, and removes its series.
    pub fn revoked(&self, topic: &str, partition: i32) {
        let mut inner = self.lock();
        let key = (topic.to_string(), partition);
        inner.positions.remove(&key);
        inner.stored.remove(&key);
        inner.stopped.remove(&key);
        let m = super::metrics::metrics();
        m.stopped_partitions.set(inner.stopped.len() as i64);
        m.forget_partition(topic, partition);
    }

    /// Owned partitions, where each stands, and the next offset the sink
    /// stored for it (`None`: nothing stored yet).
    pub fn positions(&self) -> Vec<((String, i32), Position, Option<i64>)> {
        let inner = self.lock();
        inner
            .positions
            .iter()
            .map(|(k, v)| (k.clone(), *v, inner.stored.get(k).copied()))
            .collect()
    }

    /// Runs `publish` only while `topic`/`partition` is owned, holding the
    /// state so that a revocation cannot slip between the check and the
    /// publication: a revoked partition's series stay removed.
    pub fn while_owned(&self, topic: &str, partition: i32, publish: impl FnOnce()) {
        let inner = self.lock();
        if inner
            .positions
            .contains_key(&(topic.to_string(), partition))
        {
            publish();
        }
    }

    /// `Ok` when ready, else the reasons.
    pub fn ready(&self, max_breaker_open: Duration) -> Result<(), Vec<String>> {
        let inner = self.lock();
        let mut why = Vec::new();
        if !inner.joined {
            why.push("the consumer group has not been joined yet".to_string());
        }
        for ((on, what), reason) in &inner.waiting {
            why.push(format!("{what} waits for {on}: {reason}"));
        }
        for ((topic, partition), reason) in &inner.stopped {
            why.push(format!(
                "topic {topic} partition {partition} is stopped: {reason}"
            ));
        }
        if let Some(since) = inner.breaker_open_since {
            if since.elapsed() > max_breaker_open {
                why.push(format!(
                    "the sink's circuit breaker has been open for {} s",
                    since.elapsed().as_secs()
                ));
            }
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_partition_publishes_nothing() {
        let h = Health::default();
        h.position("t", 3, Position::Next(7));
        let mut published = 0;
        h.while_owned("t", 3, || published += 1);
        h.revoked("t", 3);
        h.while_owned("t", 3, || published += 1);
        assert_eq!(published, 1);
        assert!(h.positions().is_empty());
    }

    #[test]
    fn readiness_needs_a_join_and_no_stopped_partition() {
        let h = Health::default();
        assert!(h.ready(Duration::from_secs(60)).is_err());
        h.joined();
        assert!(h.ready(Duration::from_secs(60)).is_ok());
        h.stopped("t", 1, "bad record");
        let why = h.ready(Duration::from_secs(60)).unwrap_err();
        assert!(why[0].contains("topic t partition 1 is stopped"), "{why:?}");
        h.revoked("t", 1);
        assert!(h.ready(Duration::from_secs(60)).is_ok());
        h.breaker_open(true);
        assert!(h.ready(Duration::from_secs(60)).is_ok());
        assert!(h.ready(Duration::ZERO).is_err());
        h.breaker_open(false);
        assert!(h.ready(Duration::ZERO).is_ok());
    }
}
