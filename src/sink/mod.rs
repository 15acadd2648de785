//! Sink: writes a partition's released events, the per-key sequence state and
//! the partition's next offset in one transaction.
//!
//! The sink is the source of truth for progress: on assign, a partition starts
//! from the `next_offset` stored here (see [`postgres::PostgresSink::acquire`]).

pub mod breaker;
pub mod postgres;
pub mod retry;

use crate::decode::Event;
use crate::order::Gap;

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
#[derive(Debug, Default)]
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
}

/// What a committed batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// Rows inserted or updated in the target table.
    pub applied: u64,
    /// Events the table already held (event store) or had newer state for (projection).
    pub absorbed: u64,
}
