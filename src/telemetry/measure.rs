//! Measures from the broker what only the broker knows: each owned
//! partition's high watermark (lag = high watermark - next offset to process,
//! and high watermark - the sink's stored offset)
//! and each dead-letter topic's depth (source records among the letters
//! after the replay group's committed offset, each counted once), so both
//! are right after a restart and across replicas.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::health::{health, Position};
use super::metrics::metrics;
use crate::dlq::handled::Handled;
use crate::dlq::sources::{Depth, Source};
use crate::kafka::{KafkaProperties, RecordingContext};

const TIMEOUT: Duration = Duration::from_secs(5);

/// The consumer group whose committed offsets mark what `ordo dlq replay` has done.
pub const REPLAY_GROUP: &str = "ordo-dlq-replay";

/// Measures every `interval` until the process ends: the owned partitions'
/// lag through a client of the cluster `kafka` connects to, and the depth of
/// `dlq_topics`.
pub async fn run(kafka: KafkaProperties, interval: Duration, dlq_topics: Vec<String>) {
    let mut cfg = crate::dlq::connection_config(&kafka);
    cfg.set("group.id", REPLAY_GROUP)
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer<RecordingContext> = match cfg
        .create_with_context(RecordingContext::default())
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot create the client measuring lag; lag is not reported");
            return;
        }
    };
    let mut probe_cfg = crate::dlq::connection_config(&kafka);
    probe_cfg
        .set("group.id", "ordo-lag-probe")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        // It reads one record per lagging partition: keep its fetches small.
        .set("max.partition.fetch.bytes", "65536")
        .set("queued.max.messages.kbytes", "1024");
    let probe: Option<BaseConsumer<RecordingContext>> = probe_cfg
        .create_with_context(RecordingContext::default())
        .ok();
    let mut reader_cfg = crate::dlq::connection_config(&kafka);
    reader_cfg
        .set("group.id", "ordo-dlq-depth")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("queued.max.messages.kbytes", "4096");
    let reader: Option<BaseConsumer<RecordingContext>> = reader_cfg
        .create_with_context(RecordingContext::default())
        .ok();
    let clients = std::sync::Arc::new(Clients {
        consumer,
        probe,
        reader,
        depths: std::sync::Mutex::new(BTreeMap::new()),
    });
    loop {
        let c = clients.clone();
        let topics = dlq_topics.clone();
        let _ = tokio::task::spawn_blocking(move || measure(&c, &topics)).await;
        tokio::time::sleep(interval).await;
    }
}

/// The clients a measurement uses, and what it keeps between measurements.
struct Clients {
    /// Watermarks and the replay group's committed offsets.
    consumer: BaseConsumer<RecordingContext>,
    /// Reads the oldest unprocessed record of lagging partitions.
    probe: Option<BaseConsumer<RecordingContext>>,
    /// Reads new dead letters to count their sources.
    reader: Option<BaseConsumer<RecordingContext>>,
    /// Per dead-letter topic, the letters not yet handled.
    depths: std::sync::Mutex<BTreeMap<String, Depth>>,
}

fn measure(clients: &Clients, dlq_topics: &[String]) {
    let (consumer, probe) = (&clients.consumer, clients.probe.as_ref());
    let mut lagging = Vec::new();
    for ((topic, partition), position, stored) in health().positions() {
        let (low, high) = match consumer.fetch_watermarks(&topic, partition, TIMEOUT) {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(topic, partition, error = %e, "cannot read the high watermark");
                continue;
            }
        };
        let next = match position {
            Position::Next(n) => n,
            Position::Earliest => low,
            Position::Latest => high,
        };
        let lag = (high - next).max(0);
        // From the stored offset: what a restart would read again, held
        // events included (the fetch position runs ahead of them).
        let committed_lag = match (stored, position) {
            (Some(s), _) => (high - s.max(low)).max(0),
            (None, Position::Latest) => lag,
            (None, _) => (high - low).max(0),
        };
        let p = partition.to_string();
        health().while_owned(&topic, partition, || {
            let m = metrics();
            m.lag_offsets.with_label_values(&[&topic, &p]).set(lag);
            m.lag_committed_offsets
                .with_label_values(&[&topic, &p])
                .set(committed_lag);
            if lag == 0 {
                m.lag_seconds.with_label_values(&[&topic, &p]).set(0.0);
            }
        });
        if lag > 0 {
            lagging.push(((topic, partition), next));
        }
    }
    if let Some(probe) = probe {
        for ((topic, partition), age) in oldest_unprocessed_ages(probe, &lagging) {
            let p = partition.to_string();
            health().while_owned(&topic, partition, || {
                metrics()
                    .lag_seconds
                    .with_label_values(&[&topic, &p])
                    .set(age);
            });
        }
    }
    let mut depths = match clients.depths.lock() {
        Ok(d) => d,
        Err(poisoned) => poisoned.into_inner(),
    };
    for topic in dlq_topics {
        let state = depths.entry(topic.clone()).or_default();
        match dlq_depth(consumer, clients.reader.as_ref(), topic, state) {
            Ok(depth) => metrics().dlq_depth.with_label_values(&[topic]).set(depth),
            Err(e) => tracing::debug!(topic, error = %e, "cannot measure the dead-letter depth"),
        }
    }
}

/// For each partition at its next offset to process: seconds since the record
/// there (the oldest not yet processed) was produced. The partitions are read
/// together, so one slow partition does not hold the others' measurement.
fn oldest_unprocessed_ages(
    probe: &BaseConsumer<RecordingContext>,
    lagging: &[((String, i32), i64)],
) -> BTreeMap<(String, i32), f64> {
    use rdkafka::Message;
    let mut ages = BTreeMap::new();
    if lagging.is_empty() {
        return ages;
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), next) in lagging {
        if tpl
            .add_partition_offset(topic, *partition, Offset::Offset(*next))
            .is_err()
        {
            return ages;
        }
    }
    if probe.assign(&tpl).is_err() {
        return ages;
    }
    let wanted: BTreeMap<(&str, i32), i64> = lagging
        .iter()
        .map(|((t, p), n)| ((t.as_str(), *p), *n))
        .collect();
    let started = std::time::Instant::now();
    while ages.len() < wanted.len() && started.elapsed() < TIMEOUT {
        match probe.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let key = (m.topic(), m.partition());
                if wanted.get(&key).is_some_and(|next| m.offset() >= *next) {
                    let (Some(ts), Ok(now)) = (
                        m.timestamp().to_millis(),
                        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH),
                    ) else {
                        continue;
                    };
                    let age = (now.as_millis() as i64 - ts).max(0) as f64 / 1000.0;
                    ages.entry((m.topic().to_string(), m.partition()))
                        .or_insert(age);
                }
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "cannot read the oldest unprocessed record")
            }
            None => {}
        }
    }
    let _ = probe.unassign();
    ages
}

/// Source records among the letters of `topic` the replay group has not
/// handled: letters after its committed offsets, less those its commit
/// metadata says were handled above them, counted by source record (see
/// [`crate::dlq::sources`]). `reader` reads the letters written since the
/// last measurement into `state`; without it, letters count one by one.
fn dlq_depth(
    consumer: &BaseConsumer<RecordingContext>,
    reader: Option<&BaseConsumer<RecordingContext>>,
    topic: &str,
    state: &mut Depth,
) -> Result<i64, rdkafka::error::KafkaError> {
    use rdkafka::Message;
    const READ_AT_MOST: usize = 200_000;
    let meta = consumer.fetch_metadata(Some(topic), TIMEOUT)?;
    let partitions: Vec<i32> = meta
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(tpl, TIMEOUT)?;
    let committed: BTreeMap<i32, Handled> = committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), Handled::committed(o, e.metadata()))),
            _ => None,
        })
        .collect();
    let none = Handled::default();
    let mut highs = BTreeMap::new();
    let mut ends = BTreeMap::new();
    let mut reads = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, TIMEOUT)?;
        highs.insert(p, high);
        let handled = committed.get(&p).unwrap_or(&none);
        if let Some(from) = state.prune(p, low, high, handled) {
            if reads
                .add_partition_offset(topic, p, Offset::Offset(from))
                .is_ok()
            {
                ends.insert(p, high);
            }
        }
    }
    if let (Some(reader), false) = (reader, ends.is_empty()) {
        reader.assign(&reads)?;
        let started = std::time::Instant::now();
        let mut read = 0;
        while !ends.is_empty() && read < READ_AT_MOST && started.elapsed() < TIMEOUT {
            match reader.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    let p = m.partition();
                    let Some(end) = ends.get(&p).copied() else {
                        continue;
                    };
                    if m.offset() < end {
                        let handled = committed.get(&p).unwrap_or(&none).is_handled(m.offset());
                        state.add(p, m.offset(), &Source::of_message(&m), handled);
                        read += 1;
                    }
                    if m.offset() + 1 >= end {
                        ends.remove(&p);
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(topic, error = %e, "cannot read a dead letter to count its source")
                }
                None => {}
            }
        }
        let _ = reader.unassign();
    }
    Ok(state.depth(&highs))
}
