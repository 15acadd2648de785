//! Prometheus metrics, named by Prometheus conventions (units in the names),
//! registered once per process in [`metrics()`].

use std::sync::OnceLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric Ordo exports.
pub struct Metrics {
    pub registry: Registry,
    /// High watermark minus the next offset to process, per owned partition.
    pub lag_offsets: IntGaugeVec,
    /// Records consumed, by outcome: applied, absorbed, duplicate, stale, dead_lettered.
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
        events: IntCounterVec::new(
            Opts::new("ordo_events_total", "Records consumed, by outcome"),
            &["topic", "outcome"],
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
                "Records in the dead-letter topic not yet replayed (measured from the broker)",
            ),
            &["dlq_topic"],
        )?,
        stopped_partitions: IntGauge::new(
            "ordo_stopped_partitions",
            "Partitions stopped in front of a record",
        )?,
        registry,
    };
    m.registry.register(Box::new(m.lag_offsets.clone()))?;
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
    Ok(m)
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    // The definitions above are static; a failure here is a programming error caught by tests.
    METRICS.get_or_init(|| build().expect("metric definitions are valid"))
}

impl Metrics {
    /// Removes the series of a partition this replica no longer owns.
    pub fn forget_partition(&self, topic: &str, partition: i32) {
        let p = partition.to_string();
        let _ = self.lag_offsets.remove_label_values(&[topic, &p]);
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
