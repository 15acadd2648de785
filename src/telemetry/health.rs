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
    /// Per owned partition: the next offset to process.
    positions: BTreeMap<(String, i32), i64>,
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

    pub fn breaker_open(&self, open: bool) {
        let mut inner = self.lock();
        match (open, inner.breaker_open_since) {
            (true, None) => inner.breaker_open_since = Some(Instant::now()),
            (false, _) => inner.breaker_open_since = None,
            _ => {}
        }
    }

    /// Records the next offset `topic`/`partition` will process.
    pub fn position(&self, topic: &str, partition: i32, next: i64) {
        self.lock()
            .positions
            .insert((topic.to_string(), partition), next);
    }

    /// Forgets a partition this replica no longer owns.
    pub fn revoked(&self, topic: &str, partition: i32) {
        let mut inner = self.lock();
        let key = (topic.to_string(), partition);
        inner.positions.remove(&key);
        inner.stopped.remove(&key);
        super::metrics::metrics()
            .stopped_partitions
            .set(inner.stopped.len() as i64);
    }

    /// Owned partitions and their next offsets.
    pub fn positions(&self) -> Vec<((String, i32), i64)> {
        self.lock()
            .positions
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// `Ok` when ready, else the reasons.
    pub fn ready(&self, max_breaker_open: Duration) -> Result<(), Vec<String>> {
        let inner = self.lock();
        let mut why = Vec::new();
        if !inner.joined {
            why.push("the consumer group has not been joined yet".to_string());
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
