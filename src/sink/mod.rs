//! Sink: writes a partition's released events, the per-key sequence state and
//! the partition's next offset in one transaction.
//!
//! The consumer knows only the [`Sink`] trait; [`postgres`] is the
//! implementation there is (`[sink.postgres]`). The sink is the source of
//! truth for progress: on assign, a partition starts from the `next_offset`
//! stored with its data (see [`Sink::acquire`]).

pub mod breaker;
mod config;
mod error;
pub mod postgres;
pub mod retry;
pub mod route;

use std::collections::HashMap;
use std::sync::Arc;

pub use config::{SinkConfig, SinkKind};
pub use error::{is_authentication_failure, BoxError, SinkError};

use crate::order::Gap;
use crate::record::Event;

/// The exclusive right of one worker to write a partition's progress.
///
/// Taking a lease bumps the partition's epoch in the sink; a write made with an
/// older epoch is refused, so a worker that lost its partition (a zombie after a
/// session timeout) cannot write over its successor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub topic: String,
    pub partition: i32,
    pub epoch: i64,
    /// Where the partition resumes; `None` when the sink has never seen it.
    pub next_offset: Option<i64>,
    /// Offsets at or after `next_offset` whose records are already in the
    /// dead-letter topic (a gap held the offset back when they were sent):
    /// re-read after a restart, they are not sent again.
    pub dead_lettered: Vec<i64>,
}

/// One transaction's worth of a partition's work.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Released events, in per-key sequence order.
    pub events: Vec<Event>,
    /// Gaps skipped by the ordering buffer.
    pub gaps: Vec<Gap>,
    /// The lowest offset not yet durably handled once this batch commits.
    pub next_offset: i64,
    /// Offsets dead-lettered since the last commit that this batch's
    /// `next_offset` does not pass: stored so they are not sent again.
    pub dead_lettered: Vec<i64>,
    /// Stored dead-lettered offsets below `next_offset` are deleted.
    pub prune_dead_lettered: bool,
    /// (key, version) of events the sink refused and the dead-letter topic
    /// took after the buffer released them: the key state counts them as
    /// applied, so the key's next version does not wait for them after a
    /// restart.
    pub passed: Vec<(String, i64)>,
}

/// What a committed batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Rows inserted or updated in the target table.
    pub applied: u64,
    /// Events the table already held (event store) or had newer state for (projection).
    pub absorbed: u64,
}

/// What the consumer needs of a sink. Every write is atomic: a batch's
/// events, the per-key state they imply and the partition's next offset
/// commit together or not at all, and only under the partition's lease.
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// The dependency's name in `ordo_waiting{on}` and `/readyz` (`postgres`).
    fn name(&self) -> &'static str;

    /// Where the sink writes, for log lines and `ordo check`; never a credential.
    fn describe(&self) -> String;

    /// Creates the sink's state (tables) if missing and checks what exists.
    async fn prepare(&self) -> Result<(), SinkError>;

    /// Takes the lease of a partition: fences the previous holder and
    /// returns where the partition resumes.
    async fn acquire(&self, topic: &str, partition: i32, owner: &str) -> Result<Lease, SinkError>;

    /// The last applied sequence of each of `keys` that the sink holds; a
    /// key with nothing applied is absent.
    async fn key_states(&self, keys: &[String]) -> Result<HashMap<String, i64>, SinkError>;

    /// Writes a batch and the partition's progress atomically, under `lease`.
    async fn write(&self, lease: &Lease, batch: &Batch) -> Result<Written, SinkError>;

    /// The stored next offset of each partition of `topic`.
    async fn stored_offsets(&self, topic: &str) -> Result<HashMap<i32, i64>, SinkError>;

    /// Whether `lease` is still the partition's (no other worker took it
    /// since): checked before anything leaves the sink's transaction, such
    /// as a dead letter, so a former owner sends none.
    async fn holds(&self, lease: &Lease) -> Result<bool, SinkError>;

    /// The partition's lease again, at the offset an operator moved it to
    /// (`ordo offsets set` / `skip`) while `owner` held `lease`; `None` if
    /// it was not moved (or another replica holds it now).
    async fn take_moved(
        &self,
        _lease: &Lease,
        _owner: &str,
    ) -> Result<Option<postgres::offsets::TakenMove>, SinkError> {
        Ok(None)
    }

    /// Each route of the sink and what is wrong with it (a table of the
    /// wrong shape, a statement the database cannot prepare), for `ordo
    /// check`; changes nothing.
    async fn check_routes(&self) -> Vec<(String, Option<String>)> {
        Vec::new()
    }

    /// Whether the sink answers now: a cheap check made while the breaker
    /// is open, so writes resume as soon as it is back.
    async fn reachable(&self) -> bool {
        true
    }
}

/// Connects to the configured sink, without preparing it; `unrouted` is
/// what an event no route takes does (`source.unrouted`).
pub async fn connect(
    config: &SinkConfig,
    group: &str,
    unrouted: crate::consume::source::Unrouted,
) -> Result<Arc<dyn Sink>, SinkError> {
    match config.kind {
        SinkKind::Postgres => {
            let pg = config.postgres.as_ref().ok_or_else(|| {
                SinkError::Fatal("sink.postgres: required when sink.kind = \"postgres\"".into())
            })?;
            Ok(Arc::new(
                postgres::PostgresSink::connect_routed(
                    pg,
                    group,
                    config.batch_max_events,
                    unrouted,
                )
                .await?,
            ))
        }
    }
}

/// Connects to the sink and prepares it, waiting (not ready) for as long as
/// it cannot be reached; names the sink on other failures.
pub async fn prepare(
    config: &SinkConfig,
    group: &str,
    unrouted: crate::consume::source::Unrouted,
) -> Result<Arc<dyn Sink>, SinkError> {
    retry::wait_for(
        config.kind.name(),
        "starting",
        &config.retry,
        SinkError::is_transient,
        || async {
            let sink = connect(config, group, unrouted).await?;
            sink.prepare().await?;
            Ok(sink)
        },
    )
    .await
}
