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
