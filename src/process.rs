//! What belongs to the process as a whole: who it is ([`owner_id`], recorded
//! with the leases it takes and its dead letters), the first fatal error
//! ([`Fatal`]), and how long a stop may take ([`ShutdownConfig`]). A leaf.

/// A process-wide fatal error: the first one set wins and stops the process.
#[derive(Default)]
pub struct Fatal {
    error: std::sync::Mutex<Option<String>>,
    notify: tokio::sync::Notify,
}

impl Fatal {
    /// Records a fatal error and wakes the main loop.
    pub fn set(&self, error: String) {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            tracing::error!(%error, "fatal error; Ordo stops");
            *slot = Some(error);
        }
        self.notify.notify_one();
    }

    /// Waits until a fatal error is set and returns it.
    pub async fn wait(&self) -> String {
        loop {
            let notified = self.notify.notified();
            if let Some(e) = self.error.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                return e;
            }
            notified.await;
        }
    }
}

/// `host:pid` of this process, recorded as the owner of the partitions it leases.
pub fn owner_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host}:{}", std::process::id())
}

/// `[shutdown]`: how long SIGTERM/SIGINT may take.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// After a stop signal, the process exits 0 within this long, whatever is
    /// down: batches that commit in time are kept, the rest is abandoned (the
    /// sink holds the truth; the next owner resumes from its offsets). Keep
    /// it below the orchestrator's grace period (Kubernetes: 30 s).
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            deadline_ms: default_deadline_ms(),
        }
    }
}

impl ShutdownConfig {
    /// Checks the section's values: the key (in full) and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.deadline_ms == 0 {
            return Err((
                "shutdown.deadline_ms".into(),
                "must be greater than 0".into(),
            ));
        }
        Ok(())
    }
}

fn default_deadline_ms() -> u64 {
    20_000
}

/// When the process must be gone, once a stop signal arrived.
static STOP_BY: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
static STOPPING: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// A stop signal arrived: the process is gone by `deadline`, whatever
/// blocks. Drains and writes under way shorten to end before it.
pub fn stop_by(deadline: std::time::Instant) {
    if STOP_BY.set(deadline).is_ok() {
        STOPPING.notify_waiters();
    }
}

/// The stop deadline, once a stop signal arrived.
pub fn stop_deadline() -> Option<std::time::Instant> {
    STOP_BY.get().copied()
}

/// Resolves `margin` before the stop deadline, once a stop signal arrived:
/// whatever waits on it gives up in time for the process to report what it
/// committed.
pub async fn stop_deadline_near(margin: std::time::Duration) {
    let deadline = loop {
        let notified = STOPPING.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(d) = stop_deadline() {
            break d;
        }
        notified.await;
    };
    let at = deadline.checked_sub(margin).unwrap_or(deadline);
    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn a_wait_on_the_stop_deadline_ends_before_it() {
        let waiting = tokio::spawn(stop_deadline_near(Duration::from_millis(200)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "no stop signal yet");
        let deadline = Instant::now() + Duration::from_millis(300);
        stop_by(deadline);
        waiting.await.unwrap();
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            left >= Duration::from_millis(150),
            "ended {left:?} before the deadline"
        );
        assert_eq!(stop_deadline(), Some(deadline));
    }
}
