//! Retries of sink operations: exponential backoff with full jitter, an
//! optional attempt budget, and the sink's circuit breaker in front of every
//! attempt. A retried batch is the same batch: retrying never reorders a
//! key's events, and the partition's offset moves only when it commits.

use std::time::{Duration, Instant};

use serde::Deserialize;

use super::breaker::{Admit, Breaker};
use super::SinkError;

/// `[sink.retry]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// The first backoff's ceiling; each attempt doubles it.
    #[serde(default = "default_base_ms")]
    pub base_ms: u64,
    /// The largest backoff ceiling.
    #[serde(default = "default_cap_ms")]
    pub cap_ms: u64,
    /// Attempts of one operation before its partition stops; 0: no limit
    /// (the breaker keeps partitions paused meanwhile).
    #[serde(default)]
    pub max_attempts: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            base_ms: default_base_ms(),
            cap_ms: default_cap_ms(),
            max_attempts: 0,
        }
    }
}

fn default_base_ms() -> u64 {
    100
}
fn default_cap_ms() -> u64 {
    10_000
}

/// Exponential backoff with full jitter: a random delay up to
/// `base * 2^attempt`, the ceiling capped at `cap`.
pub fn backoff(config: &RetryConfig, attempt: u32) -> Duration {
    let base = Duration::from_millis(config.base_ms);
    let cap = Duration::from_millis(config.cap_ms);
    let ceiling = base.saturating_mul(1u32 << attempt.min(16)).min(cap);
    ceiling.mul_f64(rand::random::<f64>())
}

/// Retries transient sink errors with exponential backoff and full jitter,
/// through the sink's breaker: while it is open no attempt is made (the
/// workers pause their partitions as the breaker's state changes); when a
/// probe is due, one caller makes it. Gives up at `deadline`, if given, or after
/// `config.max_attempts` attempts.
pub async fn retry<T, F, Fut>(
    what: &str,
    operation: &'static str,
    deadline: Option<Instant>,
    config: &RetryConfig,
    breaker: &Breaker,
    mut op: F,
) -> Result<T, SinkError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SinkError>>,
{
    let mut attempt: u32 = 0;
    let mut changes = breaker.subscribe();
    let mut last_error = None;
    loop {
        if let Admit::NotBefore(at) = breaker.admit(Instant::now()) {
            if deadline.is_some_and(|d| at > d) {
                return Err(last_error.take().unwrap_or(SinkError::BreakerOpen));
            }
            tokio::select! {
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                _ = changes.changed() => {}
            }
            continue;
        }
        match op().await {
            Ok(v) => {
                breaker.success();
                return Ok(v);
            }
            Err(e) if e.is_transient() => {
                breaker.failure(Instant::now());
                crate::telemetry::metrics::metrics()
                    .retries
                    .with_label_values(&[operation])
                    .inc();
                attempt += 1;
                if config.max_attempts > 0 && attempt >= config.max_attempts {
                    return Err(SinkError::GaveUp {
                        attempts: attempt,
                        last: Box::new(e),
                    });
                }
                let delay = backoff(config, attempt - 1);
                if deadline.is_some_and(|d| Instant::now() + delay > d) {
                    return Err(e);
                }
                tracing::warn!(error = %e, attempt, retry_in_ms = delay.as_millis() as u64,
                    breaker = breaker.state().as_str(), "{what} failed; retrying");
                last_error = Some(e);
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Waits out a dependency that is not there (yet): Kafka or PostgreSQL at
/// start, a partition's lease, a dead-letter write. Tries `op` until it
/// succeeds or fails for a reason `is_transient` says retrying cannot fix,
/// backing off with full jitter (never more than `config.cap_ms`), with no
/// attempt limit. Meanwhile `what` is reported as waiting for `on` (`/readyz`
/// not ready, `ordo_waiting{on}` = 1), and a warning is logged at the first
/// failure and at most every 30 s after it.
pub async fn wait_for<T, E, F, Fut>(
    on: &'static str,
    what: &str,
    config: &RetryConfig,
    is_transient: impl Fn(&E) -> bool,
    mut op: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    const LOG_EVERY: Duration = Duration::from_secs(30);
    let health = crate::telemetry::health::health();
    let mut attempt: u32 = 0;
    let mut logged: Option<Instant> = None;
    loop {
        match op().await {
            Ok(v) => {
                if attempt > 0 {
                    health.done_waiting(on, what);
                    tracing::info!(
                        waited_for = on,
                        attempts = attempt + 1,
                        "{what}: {on} is back"
                    );
                }
                return Ok(v);
            }
            Err(e) if is_transient(&e) => {
                attempt += 1;
                health.waiting(on, what, &e.to_string());
                crate::telemetry::metrics::metrics()
                    .retries
                    .with_label_values(&[crate::telemetry::metrics::operation::waiting_for(on)])
                    .inc();
                let delay = backoff(config, attempt - 1);
                if logged.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                    logged = Some(Instant::now());
                    tracing::warn!(error = %e, attempt, retry_in_ms = delay.as_millis() as u64,
                        "{what} waits for {on}; retrying until it is back");
                }
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                health.done_waiting(on, what);
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_below_a_doubling_capped_ceiling() {
        let c = RetryConfig {
            base_ms: 100,
            cap_ms: 1000,
            max_attempts: 0,
        };
        for attempt in 0..20 {
            let ceiling = Duration::from_millis((100u64 << attempt.min(16)).min(1000));
            let delays: Vec<Duration> = (0..200).map(|_| backoff(&c, attempt)).collect();
            assert!(delays.iter().all(|d| *d <= ceiling));
            // Full jitter: spread over the whole range, not clustered at the ceiling.
            assert!(delays.iter().any(|d| *d < ceiling / 4), "attempt {attempt}");
        }
    }

    #[tokio::test]
    async fn gives_up_after_the_attempt_budget_and_counts_failures_on_the_breaker() {
        let c = RetryConfig {
            base_ms: 1,
            cap_ms: 2,
            max_attempts: 3,
        };
        let breaker = Breaker::new(super::super::breaker::BreakerConfig {
            failures_to_open: 100,
            open_ms: 1,
            max_open_ms: 1,
        });
        let mut calls = 0;
        let result: Result<(), SinkError> = retry("testing", "testing", None, &c, &breaker, || {
            calls += 1;
            async { Err(SinkError::Transient("cannot connect to db: down".into())) }
        })
        .await;
        assert_eq!(calls, 3);
        let e = result.unwrap_err();
        assert!(e.to_string().contains("gave up after 3 attempts"), "{e}");
        assert!(!e.is_transient());
    }

    #[tokio::test]
    async fn an_open_breaker_gives_up_at_the_deadline_without_an_attempt() {
        let breaker = Breaker::new(super::super::breaker::BreakerConfig {
            failures_to_open: 1,
            open_ms: 60_000,
            max_open_ms: 60_000,
        });
        breaker.failure(Instant::now());
        let deadline = Instant::now() + Duration::from_millis(100);
        let mut calls = 0;
        let result: Result<(), SinkError> = retry(
            "draining",
            "draining",
            Some(deadline),
            &RetryConfig::default(),
            &breaker,
            || {
                calls += 1;
                async { Ok(()) }
            },
        )
        .await;
        assert_eq!(calls, 0);
        assert!(matches!(result, Err(SinkError::BreakerOpen)));
    }
}
