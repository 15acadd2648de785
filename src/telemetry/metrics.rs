//! Prometheus metrics, named by Prometheus conventions (units in the names),
//! registered once per process in [`metrics()`].

use std::sync::OnceLock;

/// The dependencies `ordo_waiting` reports on.
pub const WAITING_ON: [&str; 3] = ["postgres", "kafka", "dead_letter_topic"];

/// `ordo_events_total`'s outcomes.
pub const OUTCOMES: [&str; 6] = [
    "applied",
    "absorbed",
    "duplicate",
    "stale",
    "dead_lettered",
    "tombstone_ignored",
];

/// `ordo_retries_total`'s operations: sink reads and writes, a record whose
/// writer schema could not be fetched yet, and waiting for a dependency.
pub mod operation {
    pub const SINK_READ_KEY_STATE: &str = "sink_read_key_state";
    pub const SINK_WRITE_BATCH: &str = "sink_write_batch";
    pub const SINK_CHECK_LEASE: &str = "sink_check_lease";
    pub const DECODE_RECORD: &str = "decode_record";
    pub const WAIT_POSTGRES: &str = "wait_postgres";
    pub const WAIT_KAFKA: &str = "wait_kafka";
    pub const WAIT_DEAD_LETTER_TOPIC: &str = "wait_dead_letter_topic";
    pub const ALL: [&str; 7] = [
        SINK_READ_KEY_STATE,
        SINK_WRITE_BATCH,
        SINK_CHECK_LEASE,
        DECODE_RECORD,
        WAIT_POSTGRES,
        WAIT_KAFKA,
        WAIT_DEAD_LETTER_TOPIC,
    ];

    /// The operation of waiting for `on` (one of [`super::WAITING_ON`]).
    pub fn waiting_for(on: &str) -> &'static str {
        match on {
            "postgres" => WAIT_POSTGRES,
            "kafka" => WAIT_KAFKA,
            _ => WAIT_DEAD_LETTER_TOPIC,
        }
    }
}

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Every metric Ordo exports.
pub struct Metrics {
    pub registry: Registry,
    /// High watermark minus the next offset to process, per owned partition.
    pub lag_offsets: IntGaugeVec,
    /// High watermark minus the sink's stored next offset, per owned
    /// partition: includes records fetched but held behind a gap.
    pub lag_committed_offsets: IntGaugeVec,
    /// Seconds the oldest event held out of order has waited, per partition.
    pub held_oldest_age_seconds: GaugeVec,
    /// Records consumed, by outcome: applied, absorbed, duplicate, stale,
    /// dead_lettered, tombstone_ignored.
    pub events: IntCounterVec,
    /// Sink batch write duration.
    pub batch_seconds: HistogramVec,
    /// Events per sink batch.
    pub batch_events: HistogramVec,
    /// The sink's breaker: 0 closed, 1 half-open, 2 open.
    pub breaker_state: IntGauge,
    pub breaker_transitions: IntCounterVec,
    /// Events and payload bytes held out of order, per partition.
    pub buffered_events: IntGaugeVec,
    pub buffered_bytes: IntGaugeVec,
    /// Partitions this replica owns, and rebalance callbacks by kind.
    pub assigned_partitions: IntGauge,
    pub rebalances: IntCounterVec,
    /// Records in each dead-letter topic not yet replayed (from the broker).
    pub dlq_depth: IntGaugeVec,
    /// Partitions stopped in front of a record.
    pub stopped_partitions: IntGauge,
    /// What this replica waits for (1) or not (0): `postgres`, `kafka`, `dead_letter_topic`.
    pub waiting: IntGaugeVec,
    /// 1 while `/readyz` answers ready, else 0 (set when scraped).
    pub ready: IntGauge,
    /// Age of the oldest record not yet processed, per owned partition.
    pub lag_seconds: GaugeVec,
    /// Time per pipeline stage: decode, order, sink.
    pub stage_seconds: HistogramVec,
    /// From an event's Kafka timestamp to its sink commit.
    pub end_to_end_seconds: HistogramVec,
    /// Writer schema lookups, by result: hit (seen before) or miss (fetched).
    pub schema_cache: IntCounterVec,
    /// Failed attempts that were retried, by operation: sink writes and reads,
    /// and decoding a record whose writer schema could not be fetched yet.
    pub retries: IntCounterVec,
    /// Gaps skipped under `on_bound = "skip"`.
    pub gaps: IntCounterVec,
    /// Partitions whose lease another replica took (a handover, not a failure).
    pub handovers: IntCounterVec,
    /// Moves of a partition's offset by an operator that this replica took up.
    pub offset_moves: IntCounterVec,
    /// Offsets passed over by `ordo offsets skip`, as this replica took them up.
    pub skipped_offsets: IntCounterVec,
    /// Partitions waiting for their share of the memory budget.
    pub memory_waiting: IntGaugeVec,
    /// `ordering.gap_timeout_ms` in seconds (for the held-events alert).
    pub gap_timeout_seconds: Gauge,
    /// 1, labelled with Ordo's version.
    pub build_info: IntGaugeVec,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let tp = &["topic", "partition"];
    let m = Metrics {
        lag_offsets: IntGaugeVec::new(
            Opts::new(
                "ordo_consumer_lag_offsets",
                "High watermark minus the next offset to process, per owned partition",
            ),
            tp,
        )?,
        lag_committed_offsets: IntGaugeVec::new(
            Opts::new(
                "ordo_consumer_lag_committed_offsets",
                "High watermark minus the sink's stored next offset (what a restart reads again, held events included), per owned partition",
            ),
            tp,
        )?,
        held_oldest_age_seconds: GaugeVec::new(
            Opts::new(
                "ordo_held_oldest_age_seconds",
                "Seconds the oldest event held behind a sequence gap has waited, per partition (0: none held)",
            ),
            tp,
        )?,
        events: IntCounterVec::new(
            Opts::new(
                "ordo_events_total",
                "Records consumed, by outcome and event type (`none`: no type; `other`: types past source.max_event_types)",
            ),
            &["topic", "outcome", "type"],
        )?,
        batch_seconds: HistogramVec::new(
            HistogramOpts::new(
                "ordo_sink_batch_duration_seconds",
                "Duration of one sink transaction",
            )
            .buckets(prometheus::exponential_buckets(0.001, 2.0, 14)?),
            &["topic"],
        )?,
        batch_events: HistogramVec::new(
            HistogramOpts::new("ordo_sink_batch_events", "Events per sink transaction")
                .buckets(prometheus::exponential_buckets(1.0, 2.0, 14)?),
            &["topic"],
        )?,
        breaker_state: IntGauge::new(
            "ordo_sink_breaker_state",
            "The sink's circuit breaker: 0 closed, 1 half-open, 2 open",
        )?,
        breaker_transitions: IntCounterVec::new(
            Opts::new(
                "ordo_sink_breaker_transitions_total",
                "Breaker state changes, by new state",
            ),
            &["to"],
        )?,
        buffered_events: IntGaugeVec::new(
            Opts::new(
                "ordo_buffered_events",
                "Events held out of order, per partition",
            ),
            tp,
        )?,
        buffered_bytes: IntGaugeVec::new(
            Opts::new(
                "ordo_buffered_bytes",
                "Payload bytes held out of order, per partition",
            ),
            tp,
        )?,
        assigned_partitions: IntGauge::new(
            "ordo_assigned_partitions",
            "Partitions this replica owns",
        )?,
        rebalances: IntCounterVec::new(
            Opts::new("ordo_rebalances_total", "Rebalance callbacks, by kind"),
            &["kind"],
        )?,
        dlq_depth: IntGaugeVec::new(
            Opts::new(
                "ordo_dlq_depth_records",
                "Source records in the dead-letter topic not yet replayed, a record lettered twice counted once (measured from the broker)",
            ),
            &["dlq_topic"],
        )?,
        stopped_partitions: IntGauge::new(
            "ordo_stopped_partitions",
            "Partitions stopped in front of a record",
        )?,
        waiting: IntGaugeVec::new(
            Opts::new(
                "ordo_waiting",
                "1 while this replica waits for a dependency (on: postgres, kafka, dead_letter_topic), else 0",
            ),
            &["on"],
        )?,
        ready: IntGauge::new(
            "ordo_ready",
            "1 while this replica is ready (/readyz answers 200), else 0",
        )?,
        lag_seconds: GaugeVec::new(
            Opts::new(
                "ordo_consumer_lag_seconds",
                "Age of the oldest record not yet processed, per owned partition",
            ),
            tp,
        )?,
        stage_seconds: HistogramVec::new(
            HistogramOpts::new(
                "ordo_stage_duration_seconds",
                "Time spent per pipeline stage (decode and order per record, sink per batch)",
            )
            .buckets(prometheus::exponential_buckets(0.000_001, 4.0, 12)?),
            &["stage"],
        )?,
        end_to_end_seconds: HistogramVec::new(
            HistogramOpts::new(
                "ordo_end_to_end_seconds",
                "From an event's Kafka timestamp to its sink commit",
            )
            .buckets(prometheus::exponential_buckets(0.005, 2.0, 16)?),
            &["topic"],
        )?,
        schema_cache: IntCounterVec::new(
            Opts::new(
                "ordo_schema_cache_total",
                "Writer schema lookups, by result",
            ),
            &["result"],
        )?,
        retries: IntCounterVec::new(
            Opts::new(
                "ordo_retries_total",
                "Failed attempts that were retried with backoff, by operation",
            ),
            &["operation"],
        )?,
        gaps: IntCounterVec::new(
            Opts::new(
                "ordo_gaps_total",
                "Gaps skipped under ordering.on_bound = skip",
            ),
            &["topic"],
        )?,
        handovers: IntCounterVec::new(
            Opts::new(
                "ordo_handovers_total",
                "Partitions this replica let go because another replica took their lease (a write was fenced)",
            ),
            &["topic"],
        )?,
        offset_moves: IntCounterVec::new(
            Opts::new(
                "ordo_offset_moves_total",
                "Moves of a partition's stored offset by an operator (ordo offsets set or skip) that this replica took up",
            ),
            &["topic", "kind"],
        )?,
        skipped_offsets: IntCounterVec::new(
            Opts::new(
                "ordo_skipped_offsets_total",
                "Offsets passed over by ordo offsets skip (records never processed), as this replica took the move up",
            ),
            &["topic"],
        )?,
        memory_waiting: IntGaugeVec::new(
            Opts::new(
                "ordo_memory_waiting_partitions",
                "Partitions waiting for their share of memory.budget_mb: fetch (paused until a fetch turn is free) or in_hand (until records of other partitions are written)",
            ),
            &["share"],
        )?,
        gap_timeout_seconds: Gauge::new(
            "ordo_ordering_gap_timeout_seconds",
            "ordering.gap_timeout_ms, in seconds: how long an event may normally wait for its gap",
        )?,
        build_info: IntGaugeVec::new(
            Opts::new("ordo_build_info", "Always 1; labelled with Ordo's version"),
            &["version"],
        )?,
        registry,
    };
    m.build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
    m.registry
        .register(Box::new(m.gap_timeout_seconds.clone()))?;
    m.registry.register(Box::new(m.build_info.clone()))?;
    for kind in ["assign", "revoke"] {
        m.rebalances.with_label_values(&[kind]).inc_by(0);
    }
    for to in ["closed", "open", "half_open"] {
        m.breaker_transitions.with_label_values(&[to]).inc_by(0);
    }
    for result in ["hit", "miss"] {
        m.schema_cache.with_label_values(&[result]).inc_by(0);
    }
    for op in operation::ALL {
        m.retries.with_label_values(&[op]).inc_by(0);
    }
    #[cfg(target_os = "linux")]
    m.registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    m.registry.register(Box::new(m.lag_offsets.clone()))?;
    m.registry
        .register(Box::new(m.lag_committed_offsets.clone()))?;
    m.registry
        .register(Box::new(m.held_oldest_age_seconds.clone()))?;
    m.registry.register(Box::new(m.events.clone()))?;
    m.registry.register(Box::new(m.batch_seconds.clone()))?;
    m.registry.register(Box::new(m.batch_events.clone()))?;
    m.registry.register(Box::new(m.breaker_state.clone()))?;
    m.registry
        .register(Box::new(m.breaker_transitions.clone()))?;
    m.registry.register(Box::new(m.buffered_events.clone()))?;
    m.registry.register(Box::new(m.buffered_bytes.clone()))?;
    m.registry
        .register(Box::new(m.assigned_partitions.clone()))?;
    m.registry.register(Box::new(m.rebalances.clone()))?;
    m.registry.register(Box::new(m.dlq_depth.clone()))?;
    m.registry
        .register(Box::new(m.stopped_partitions.clone()))?;
    for on in WAITING_ON {
        m.waiting.with_label_values(&[on]).set(0);
    }
    m.registry.register(Box::new(m.waiting.clone()))?;
    m.registry.register(Box::new(m.ready.clone()))?;
    m.registry.register(Box::new(m.lag_seconds.clone()))?;
    m.registry.register(Box::new(m.stage_seconds.clone()))?;
    m.registry
        .register(Box::new(m.end_to_end_seconds.clone()))?;
    m.registry.register(Box::new(m.schema_cache.clone()))?;
    m.registry.register(Box::new(m.retries.clone()))?;
    m.registry.register(Box::new(m.gaps.clone()))?;
    m.registry.register(Box::new(m.handovers.clone()))?;
    m.registry.register(Box::new(m.offset_moves.clone()))?;
    m.registry.register(Box::new(m.skipped_offsets.clone()))?;
    for share in ["fetch", "in_hand"] {
        m.memory_waiting.with_label_values(&[share]).set(0);
    }
    m.registry.register(Box::new(m.memory_waiting.clone()))?;
    Ok(m)
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    // The definitions above are static; a failure here is a programming error caught by tests.
    METRICS.get_or_init(|| build().expect("metric definitions are valid"))
}

impl Metrics {
    /// Creates the per-topic series at zero, so that rates and alerts see
    /// them before their first event.
    pub fn init_topics(&self, topics: &[String]) {
        for topic in topics {
            for outcome in OUTCOMES {
                self.events
                    .with_label_values(&[topic, outcome, "none"])
                    .inc_by(0);
            }
            self.gaps.with_label_values(&[topic]).inc_by(0);
            self.handovers.with_label_values(&[topic]).inc_by(0);
            self.skipped_offsets.with_label_values(&[topic]).inc_by(0);
        }
    }

    /// Removes the series of a partition this replica no longer owns.
    pub fn forget_partition(&self, topic: &str, partition: i32) {
        let p = partition.to_string();
        let _ = self.lag_offsets.remove_label_values(&[topic, &p]);
        let _ = self.lag_committed_offsets.remove_label_values(&[topic, &p]);
        let _ = self
            .held_oldest_age_seconds
            .remove_label_values(&[topic, &p]);
        let _ = self.lag_seconds.remove_label_values(&[topic, &p]);
        let _ = self.buffered_events.remove_label_values(&[topic, &p]);
        let _ = self.buffered_bytes.remove_label_values(&[topic, &p]);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_is_registered() {
        let m = super::metrics();
        // Families without series are not rendered: give each one a series.
        m.lag_offsets.with_label_values(&["x", "9"]).set(0);
        m.lag_seconds.with_label_values(&["x", "9"]).set(0.0);
        m.lag_committed_offsets
            .with_label_values(&["x", "9"])
            .set(0);
        m.held_oldest_age_seconds
            .with_label_values(&["x", "9"])
            .set(0.0);
        m.events
            .with_label_values(&["x", "applied", "none"])
            .inc_by(0);
        m.batch_seconds.with_label_values(&["x"]).observe(0.0);
        m.batch_events.with_label_values(&["x"]).observe(0.0);
        m.breaker_transitions
            .with_label_values(&["closed"])
            .inc_by(0);
        m.buffered_events.with_label_values(&["x", "9"]).set(0);
        m.buffered_bytes.with_label_values(&["x", "9"]).set(0);
        m.rebalances.with_label_values(&["assign"]).inc_by(0);
        m.dlq_depth.with_label_values(&["x.dlq"]).set(0);
        m.stage_seconds.with_label_values(&["decode"]).observe(0.0);
        m.end_to_end_seconds.with_label_values(&["x"]).observe(0.0);
        m.schema_cache.with_label_values(&["hit"]).inc_by(0);
        m.retries
            .with_label_values(&[super::operation::SINK_WRITE_BATCH])
            .inc_by(0);
        m.gaps.with_label_values(&["x"]).inc_by(0);
        m.handovers.with_label_values(&["x"]).inc_by(0);
        m.offset_moves.with_label_values(&["x", "set"]).inc_by(0);
        m.skipped_offsets.with_label_values(&["x"]).inc_by(0);
        let text = m.render();
        for name in [
            "ordo_consumer_lag_offsets",
            "ordo_consumer_lag_seconds",
            "ordo_events_total",
            "ordo_sink_batch_duration_seconds",
            "ordo_sink_batch_events",
            "ordo_sink_breaker_state",
            "ordo_sink_breaker_transitions_total",
            "ordo_buffered_events",
            "ordo_buffered_bytes",
            "ordo_assigned_partitions",
            "ordo_rebalances_total",
            "ordo_dlq_depth_records",
            "ordo_stopped_partitions",
            "ordo_ready",
            "ordo_stage_duration_seconds",
            "ordo_end_to_end_seconds",
            "ordo_schema_cache_total",
            "ordo_retries_total",
            "ordo_gaps_total",
            "ordo_handovers_total",
            "ordo_offset_moves_total",
            "ordo_skipped_offsets_total",
            "ordo_consumer_lag_committed_offsets",
            "ordo_held_oldest_age_seconds",
            "ordo_ordering_gap_timeout_seconds",
            "ordo_memory_waiting_partitions",
            "ordo_build_info",
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} is not registered"
            );
        }
        m.forget_partition("x", 9);
    }

    /// The metrics table of docs/metrics.md names exactly the metrics this
    /// file defines (each name is a string literal before the tests).
    #[test]
    fn the_metrics_reference_lists_every_metric_and_no_other() {
        let source = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/telemetry/metrics.rs"
        ))
        .expect("metrics.rs");
        let code = &source[..source.find("#[cfg(test)]").unwrap_or(source.len())];
        let mut defined: Vec<&str> = code
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|s| {
                s.starts_with("ordo_") && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            })
            .collect();
        defined.sort_unstable();
        defined.dedup();
        let reference =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
                .expect("docs/metrics.md");
        let mut documented: Vec<&str> = reference
            .lines()
            .filter(|l| l.starts_with("| `ordo_"))
            .flat_map(|l| {
                let first = l.split(" | ").next().unwrap_or_default();
                first.split('`').skip(1).step_by(2).collect::<Vec<_>>()
            })
            .collect();
        documented.sort_unstable();
        assert!(defined.len() > 20, "{defined:?}");
        assert_eq!(
            documented, defined,
            "docs/metrics.md's table against the metrics defined"
        );
    }

    #[test]
    fn metrics_register_and_render() {
        let m = super::metrics();
        m.lag_offsets.with_label_values(&["t", "0"]).set(5);
        assert!(m
            .render()
            .contains("ordo_consumer_lag_offsets{partition=\"0\",topic=\"t\"} 5"));
        m.forget_partition("t", 0);
        assert!(!m
            .render()
            .contains("ordo_consumer_lag_offsets{partition=\"0\""));
    }
}
