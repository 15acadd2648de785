//! Test harness: a throw-away PostgreSQL, a Kafka cluster (librdkafka's mock
//! cluster, or an external broker named by `TEST_KAFKA_BOOTSTRAP_SERVERS`), the
//! `ordo` binary as a child process, a real Prometheus scraping it, and event
//! data with known answers.
#![allow(dead_code)]

pub mod data;
pub mod kafka;
pub mod ordo;
pub mod postgres;
pub mod prometheus;
pub mod routes;
pub mod tansu;
pub mod tls;

use std::time::{Duration, Instant};

/// A bounded wait for a condition polled in a loop: `tick` sleeps a little,
/// and panics naming what was awaited once the time is up.
pub struct Deadline {
    what: String,
    start: Instant,
    timeout: Duration,
}

impl Deadline {
    pub fn new(what: impl Into<String>, timeout: Duration) -> Self {
        Self {
            what: what.into(),
            start: Instant::now(),
            timeout,
        }
    }

    pub async fn tick(&self) {
        if self.start.elapsed() > self.timeout {
            panic!(
                "timed out after {:?} waiting for {}",
                self.timeout, self.what
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Python of the test producers: the project's virtual environment that
/// `scripts/setup.sh test` makes (`.venv`), or `ORDO_TEST_PYTHON`, or `python3`.
pub fn python() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("ORDO_TEST_PYTHON") {
        return p.into();
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python3");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

/// A name unique within this test run.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}
