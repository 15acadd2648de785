//! The sink's circuit breaker: closed (writes go through), open (no write is
//! tried; every partition feeding the sink is paused, so nothing more is
//! fetched and lag grows visibly instead of memory), half-open (one probe
//! write; success closes the breaker, failure opens it again for twice as long).
//! While it is open the sink is checked apart from the writes ([`watch_sink`]):
//! once it answers, the probe goes at once, so writes resume within moments
//! of the sink being back rather than at the end of a long open period.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::watch;

/// `[sink.breaker]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive transient failures that open the breaker.
    #[serde(default = "default_failures_to_open")]
    pub failures_to_open: u32,
    /// How long the breaker first stays open before a probe.
    #[serde(default = "default_open_ms")]
    pub open_ms: u64,
    /// The longest it stays open (the period doubles after each failed probe).
    #[serde(default = "default_max_open_ms")]
    pub max_open_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures_to_open: default_failures_to_open(),
            open_ms: default_open_ms(),
            max_open_ms: default_max_open_ms(),
        }
    }
}

fn default_failures_to_open() -> u32 {
    3
}
fn default_open_ms() -> u64 {
    1000
}
fn default_max_open_ms() -> u64 {
    30_000
}

/// The breaker's state, as workers watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    failures: u32,
    open_until: Instant,
    open_for: Duration,
}

/// Whether a write may be tried now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Go ahead (as the probe, when half-open).
    Yes,
    /// Not before this instant (the breaker is open, or a probe is in flight).
    NotBefore(Instant),
}

/// A circuit breaker shared by every worker writing to one sink.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
    changes: watch::Sender<BreakerState>,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Breaker {
        let (changes, _) = watch::channel(BreakerState::Closed);
        Breaker {
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: 0,
                open_until: Instant::now(),
                open_for: Duration::from_millis(config.open_ms),
            }),
            config,
            changes,
        }
    }

    /// State changes, for workers to pause and resume their partitions.
    pub fn subscribe(&self) -> watch::Receiver<BreakerState> {
        self.changes.subscribe()
    }

    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, inner: &mut Inner, state: BreakerState) {
        if inner.state != state {
            tracing::warn!(
                from = inner.state.as_str(),
                to = state.as_str(),
                open_for_ms = inner.open_for.as_millis() as u64,
                "sink circuit breaker"
            );
            inner.state = state;
            let m = crate::telemetry::metrics::metrics();
            m.breaker_state.set(match state {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open => 2,
            });
            m.breaker_transitions
                .with_label_values(&[state.as_str()])
                .inc();
            crate::telemetry::health::health().breaker_open(state != BreakerState::Closed);
            self.changes.send_replace(state);
        }
    }

    /// Asks to try a write now.
    pub fn admit(&self, now: Instant) -> Admit {
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Closed => Admit::Yes,
            BreakerState::Open if now >= inner.open_until => {
                // This caller is the probe; others wait for its outcome.
                inner.open_until = now + inner.open_for;
                self.set(&mut inner, BreakerState::HalfOpen);
                Admit::Yes
            }
            BreakerState::Open | BreakerState::HalfOpen => Admit::NotBefore(inner.open_until),
        }
    }

    /// The sink answers again (a check outside the writes): the open
    /// breaker lets its probe write through now rather than at the end of
    /// its open period.
    pub fn probe_now(&self) {
        let mut inner = self.lock();
        if inner.state == BreakerState::Open {
            inner.open_until = Instant::now();
            // Wakes whatever waits for the open period to end.
            self.changes.send_replace(BreakerState::Open);
        }
    }

    /// A write succeeded: the breaker closes.
    pub fn success(&self) {
        let mut inner = self.lock();
        inner.failures = 0;
        inner.open_for = Duration::from_millis(self.config.open_ms);
        self.set(&mut inner, BreakerState::Closed);
    }

    /// A write failed for a transient reason.
    pub fn failure(&self, now: Instant) {
        let mut inner = self.lock();
        inner.failures = inner.failures.saturating_add(1);
        let open = match inner.state {
            BreakerState::Closed => inner.failures >= self.config.failures_to_open,
            BreakerState::HalfOpen => {
                inner.open_for =
                    (inner.open_for * 2).min(Duration::from_millis(self.config.max_open_ms));
                true
            }
            BreakerState::Open => false,
        };
        if open {
            inner.open_until = now + inner.open_for;
            self.set(&mut inner, BreakerState::Open);
        }
    }
}

/// How often an open breaker's sink is checked.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// Checks the sink while `breaker` is open and lets the probe write go as
/// soon as the sink answers ([`Breaker::probe_now`]). Runs until dropped.
pub async fn watch_sink(breaker: &Breaker, sink: &dyn super::Sink) {
    let mut changes = breaker.subscribe();
    loop {
        if breaker.state() != BreakerState::Open {
            if changes.changed().await.is_err() {
                return;
            }
            continue;
        }
        tokio::time::sleep(CHECK_EVERY).await;
        if breaker.state() == BreakerState::Open && sink.reachable().await {
            breaker.probe_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            failures_to_open: 2,
            open_ms: 100,
            max_open_ms: 300,
        })
    }

    #[test]
    fn opens_after_consecutive_failures_and_probes_after_the_open_period() {
        let b = breaker();
        let mut rx = b.subscribe();
        let t0 = Instant::now();
        assert_eq!(b.admit(t0), Admit::Yes);
        b.failure(t0);
        assert_eq!(b.state(), BreakerState::Closed);
        b.failure(t0);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), BreakerState::Open);
        let until = t0 + Duration::from_millis(100);
        assert_eq!(b.admit(t0), Admit::NotBefore(until));
        // After the open period: one probe, others wait.
        assert_eq!(b.admit(until), Admit::Yes);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(matches!(b.admit(until), Admit::NotBefore(_)));
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.admit(until), Admit::Yes);
    }

    #[test]
    fn a_sink_that_answers_again_lets_the_probe_go_at_once() {
        let b = Breaker::new(BreakerConfig {
            failures_to_open: 1,
            open_ms: 60_000,
            max_open_ms: 60_000,
        });
        let mut rx = b.subscribe();
        b.failure(Instant::now());
        rx.borrow_and_update();
        assert!(matches!(b.admit(Instant::now()), Admit::NotBefore(_)));
        b.probe_now();
        // Whatever waited for the open period is woken, and the probe goes.
        assert!(rx.has_changed().unwrap());
        assert_eq!(b.admit(Instant::now()), Admit::Yes);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // Only an open breaker is moved.
        b.probe_now();
        assert!(matches!(b.admit(Instant::now()), Admit::NotBefore(_)));
    }

    /// A sink that answers from the moment `up` is set.
    struct Flaky(std::sync::atomic::AtomicBool);

    #[async_trait::async_trait]
    impl crate::sink::Sink for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
        async fn prepare(&self) -> Result<(), crate::sink::SinkError> {
            Ok(())
        }
        async fn acquire(
            &self,
            _: &str,
            _: i32,
            _: &str,
        ) -> Result<crate::sink::Lease, crate::sink::SinkError> {
            Err(crate::sink::SinkError::BreakerOpen)
        }
        async fn key_states(
            &self,
            _: &[String],
        ) -> Result<std::collections::HashMap<String, i64>, crate::sink::SinkError> {
            Ok(Default::default())
        }
        async fn write(
            &self,
            _: &crate::sink::Lease,
            _: &crate::sink::Batch,
        ) -> Result<crate::sink::Written, crate::sink::SinkError> {
            Ok(Default::default())
        }
        async fn stored_offsets(
            &self,
            _: &str,
        ) -> Result<std::collections::HashMap<i32, i64>, crate::sink::SinkError> {
            Ok(Default::default())
        }
        async fn holds(&self, _: &crate::sink::Lease) -> Result<bool, crate::sink::SinkError> {
            Ok(true)
        }
        async fn reachable(&self) -> bool {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn the_sink_is_watched_while_the_breaker_is_open() {
        let b = std::sync::Arc::new(Breaker::new(BreakerConfig {
            failures_to_open: 1,
            open_ms: 60_000,
            max_open_ms: 60_000,
        }));
        let sink = std::sync::Arc::new(Flaky(Default::default()));
        let watching = {
            let (b, sink) = (b.clone(), sink.clone());
            tokio::spawn(async move { watch_sink(&b, &*sink).await })
        };
        b.failure(Instant::now());
        tokio::time::sleep(CHECK_EVERY * 3).await;
        assert!(
            matches!(b.admit(Instant::now()), Admit::NotBefore(_)),
            "still down"
        );
        sink.0.store(true, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(CHECK_EVERY * 3).await;
        assert_eq!(b.admit(Instant::now()), Admit::Yes, "back: the probe goes");
        watching.abort();
    }

    #[test]
    fn a_failed_probe_reopens_for_longer_up_to_the_cap() {
        let b = breaker();
        let t = Instant::now();
        b.failure(t);
        b.failure(t);
        let mut now = t;
        let mut periods = vec![];
        for _ in 0..4 {
            let Admit::NotBefore(until) = b.admit(now) else {
                panic!("open")
            };
            now = until;
            assert_eq!(b.admit(now), Admit::Yes);
            b.failure(now);
            let Admit::NotBefore(next) = b.admit(now) else {
                panic!("open again")
            };
            periods.push((next - now).as_millis());
        }
        assert_eq!(periods, vec![200, 300, 300, 300]);
        // A success resets the period.
        let Admit::NotBefore(until) = b.admit(now) else {
            panic!()
        };
        assert_eq!(b.admit(until), Admit::Yes);
        b.success();
        b.failure(until);
        b.failure(until);
        assert_eq!(
            b.admit(until),
            Admit::NotBefore(until + Duration::from_millis(100))
        );
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let b = breaker();
        let t = Instant::now();
        b.failure(t);
        b.success();
        b.failure(t);
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
