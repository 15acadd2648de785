//! The memory budget: one setting bounding what Ordo holds across all
//! partitions, divided among librdkafka's prefetch queues (one per partition,
//! since every partition's queue is split off) and the out-of-order buffers.
//!
//! A replica may own every partition of its topics, so each share is divided
//! by the topics' total partition count, known at start.

use serde::Deserialize;

/// `[memory]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// What Ordo's records may occupy, in MiB: 40 % for librdkafka's
    /// prefetched records, 40 % for events held out of order, the rest for
    /// batches in flight and caches.
    #[serde(default = "default_budget_mb")]
    pub budget_mb: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            budget_mb: default_budget_mb(),
        }
    }
}

impl MemoryConfig {
    /// Checks the section's values: the key (in full) and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.budget_mb == 0 {
            return Err(("memory.budget_mb".into(), "must be greater than 0".into()));
        }
        Ok(())
    }
}

fn default_budget_mb() -> u64 {
    512
}

/// Smallest prefetch queue per partition: below it a partition's fetches
/// become too small to keep up.
const MIN_PREFETCH_KB: u64 = 64;
/// librdkafka's own defaults, never raised.
const LIBRDKAFKA_QUEUE_KB: u64 = 65_536;
const LIBRDKAFKA_PARTITION_FETCH: u64 = 1_048_576;
const LIBRDKAFKA_FETCH_MAX: u64 = 52_428_800;

/// The budget's division for `partitions` partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// librdkafka `queued.max.messages.kbytes` (per partition queue).
    pub prefetch_kbytes_per_partition: u64,
    /// librdkafka `queued.min.messages`: librdkafka keeps a few hundred bytes
    /// per prefetched message besides its payload, so small records are
    /// bounded by count as well (a share of 1 KiB each).
    pub prefetch_messages_per_partition: u64,
    /// librdkafka `max.partition.fetch.bytes`.
    pub partition_fetch_bytes: u64,
    /// librdkafka `fetch.max.bytes` (one fetch request, all its partitions).
    pub fetch_max_bytes: u64,
    /// Payload bytes held out of order per partition (`ordering.max_buffered_bytes`
    /// if that is lower).
    pub buffered_bytes_per_partition: u64,
    /// What librdkafka's queues may hold across all partitions: the share
    /// handed out as fetch turns ([`super::turns`]).
    pub prefetch_bytes: u64,
    /// What records on their way to the sink may occupy across all
    /// partitions ([`super::turns::InHand`]).
    pub in_hand_bytes: u64,
}

impl MemoryConfig {
    /// Divides the budget for a replica that may own `partitions` partitions.
    pub fn limits(&self, partitions: usize) -> Limits {
        let partitions = partitions.max(1) as u64;
        let budget = self.budget_mb.saturating_mul(1 << 20);
        let prefetch = budget / 10 * 4;
        let buffers = budget / 10 * 4;
        let per_partition_kb =
            (prefetch / partitions / 1024).clamp(MIN_PREFETCH_KB, LIBRDKAFKA_QUEUE_KB);
        Limits {
            prefetch_kbytes_per_partition: per_partition_kb,
            prefetch_messages_per_partition: per_partition_kb.clamp(100, 100_000),
            partition_fetch_bytes: (per_partition_kb * 1024).min(LIBRDKAFKA_PARTITION_FETCH),
            fetch_max_bytes: prefetch.clamp(1 << 20, LIBRDKAFKA_FETCH_MAX),
            buffered_bytes_per_partition: (buffers / partitions).max(64 * 1024),
            prefetch_bytes: prefetch,
            in_hand_bytes: budget - prefetch - buffers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_divided_among_partitions() {
        let l = MemoryConfig { budget_mb: 512 }.limits(48);
        // 40 % of 512 MiB over 48 partitions.
        assert_eq!(l.prefetch_kbytes_per_partition, 512 * 1024 * 4 / 10 / 48);
        assert_eq!(l.partition_fetch_bytes, 1 << 20);
        assert_eq!(
            l.prefetch_messages_per_partition,
            l.prefetch_kbytes_per_partition
        );
        assert_eq!(l.buffered_bytes_per_partition, (512u64 << 20) / 10 * 4 / 48);
        let total =
            l.prefetch_kbytes_per_partition * 1024 * 48 + l.buffered_bytes_per_partition * 48;
        assert!(total <= 512 << 20);
    }

    #[test]
    fn small_budgets_keep_a_working_minimum_and_large_ones_stay_at_librdkafkas_defaults() {
        let l = MemoryConfig { budget_mb: 16 }.limits(1000);
        assert_eq!(l.prefetch_kbytes_per_partition, MIN_PREFETCH_KB);
        assert_eq!(l.partition_fetch_bytes, MIN_PREFETCH_KB * 1024);
        assert_eq!(l.fetch_max_bytes, 6_710_884);
        let l = MemoryConfig { budget_mb: 1 << 20 }.limits(1);
        assert_eq!(l.prefetch_kbytes_per_partition, LIBRDKAFKA_QUEUE_KB);
        assert_eq!(l.fetch_max_bytes, LIBRDKAFKA_FETCH_MAX);
    }
}
