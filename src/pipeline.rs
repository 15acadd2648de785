//! The pipeline assembled from [`Settings`]: the consumer's librdkafka
//! configuration, reaching Kafka at start, what every partition worker shares
//! ([`Shared`]), and the main loop until shutdown or a fatal error.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

use crate::config::Settings;
use crate::consume::source::StartFrom;
use crate::consume::{ConsumeError, OrdoConsumer, OrdoContext, Shared};
use crate::decode::Decoder;
use crate::kafka::RecordingContext;
use crate::order::BufferConfig;
use crate::process::{owner_id, Fatal};
use crate::sink::Sink;

/// The librdkafka configuration: the user's `[kafka]` table over Ordo's defaults.
pub fn client_config(settings: &Settings) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("partition.assignment.strategy", "cooperative-sticky")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set(
            "auto.offset.reset",
            match settings.source.start_from {
                StartFrom::Earliest => "earliest",
                StartFrom::Latest => "latest",
            },
        )
        .set("client.id", format!("ordo-{}", owner_id()));
    for (k, v) in &settings.kafka {
        cfg.set(k, v);
    }
    cfg.set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false");
    cfg
}

/// `reason` with the last error librdkafka reported (why the broker could not be reached).
pub fn with_last_error(reason: String, last: Option<String>) -> String {
    match last {
        Some(last) if !reason.contains(&last) => format!("{reason}; librdkafka: {last}"),
        _ => reason,
    }
}

/// Reaches Kafka with a one-shot client: the topics' total partition count,
/// or why not (with the last error librdkafka reported, e.g. a refused
/// password or an untrusted certificate).
pub fn reach(
    consumer: &BaseConsumer<RecordingContext>,
    settings: &Settings,
    timeout: Duration,
) -> Result<usize, ConsumeError> {
    match check_topics(consumer, settings, timeout) {
        Err(ConsumeError::Unreachable { servers, reason }) => {
            // librdkafka's log lines and errors wait in the main queue.
            for _ in 0..3 {
                let _ = consumer.poll(Duration::from_millis(100));
            }
            Err(ConsumeError::Unreachable {
                reason: with_last_error(reason, consumer.context().last_error()),
                servers,
            })
        }
        other => other,
    }
}

/// Fails fast, naming the servers or the topic, when Kafka is unreachable or a topic is missing.
pub fn check_topics<C: rdkafka::consumer::ConsumerContext>(
    consumer: &impl Consumer<C>,
    settings: &Settings,
    timeout: Duration,
) -> Result<usize, ConsumeError> {
    let servers = settings.bootstrap_servers().to_string();
    let meta = consumer
        .fetch_metadata(None, timeout)
        .map_err(|e| ConsumeError::Unreachable {
            servers: servers.clone(),
            reason: e.to_string(),
        })?;
    let exists = |topic: &str| {
        meta.topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
    };
    for topic in &settings.source.topics {
        if !exists(topic) {
            return Err(ConsumeError::NoSuchTopic {
                topic: topic.clone(),
                servers: servers.clone(),
            });
        }
        let dl = &settings.dead_letter;
        if dl.enabled && !exists(&dl.topic_for(topic)) {
            return Err(ConsumeError::NoSuchDeadLetterTopic {
                topic: dl.topic_for(topic),
                source_topic: topic.clone(),
                servers: servers.clone(),
            });
        }
    }
    Ok(meta
        .topics()
        .iter()
        .filter(|t| settings.source.topics.iter().any(|s| s == t.name()))
        .map(|t| t.partitions().len())
        .sum())
}

/// Runs the pipeline until `shutdown` resolves (then drains, commits and leaves
/// the group) or a fatal error stops it.
pub async fn run(
    settings: &Settings,
    sink: Arc<dyn Sink>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConsumeError> {
    tokio::pin!(shutdown);
    // Kafka unreachable, or a topic missing: waited out (not ready), never
    // fatal. The topics' partition count divides the memory budget.
    let probe: Arc<BaseConsumer<RecordingContext>> = Arc::new(
        client_config(settings)
            .create_with_context(RecordingContext::default())
            .map_err(ConsumeError::Create)?,
    );
    let reached = crate::sink::retry::wait_for(
        "kafka",
        "starting",
        &settings.sink.retry,
        |e: &ConsumeError| {
            matches!(
                e,
                ConsumeError::Unreachable { .. }
                    | ConsumeError::NoSuchTopic { .. }
                    | ConsumeError::NoSuchDeadLetterTopic { .. }
            )
        },
        || {
            let (probe, settings) = (probe.clone(), settings.clone());
            async move {
                tokio::task::spawn_blocking(move || {
                    reach(&probe, &settings, Duration::from_secs(10))
                })
                .await
                .map_err(|e| ConsumeError::Fatal(e.to_string()))?
            }
        },
    );
    let partitions = tokio::select! {
        reached = reached => reached?,
        _ = &mut shutdown => return Ok(()),
    };
    drop(probe);
    let limits = settings.memory.limits(partitions);
    tracing::info!(
        partitions,
        budget_mb = settings.memory.budget_mb,
        prefetch_kbytes_per_partition = limits.prefetch_kbytes_per_partition,
        buffered_bytes_per_partition = limits.buffered_bytes_per_partition,
        "memory budget divided"
    );
    let m = crate::telemetry::metrics::metrics();
    m.init_topics(&settings.source.topics);
    m.gap_timeout_seconds
        .set(settings.ordering.gap_timeout_ms as f64 / 1000.0);
    let masker = crate::mask::Masker::new(&settings.mask)
        .map_err(|(key, why)| ConsumeError::Fatal(format!("{key}: {why}")))?
        .map(Arc::new);
    let setup = crate::decode::Setup {
        format: settings.source.format,
        key_format: settings.source.key_format,
        reader_schemas: &settings.source.reader_schemas,
        key: &settings.ordering.key,
        sequence: &settings.ordering.sequence,
        tombstones: settings.source.tombstones,
        tombstone_header: settings.ordering.tombstone_header(),
        event_type: settings.source.event_type.as_ref(),
    };
    let mut decoder = Decoder::new(&setup, settings.schema_registry.as_ref())
        .map_err(|e| ConsumeError::Fatal(format!("cannot set up decoding: {e}")))?;
    if let Some(m) = &masker {
        decoder = decoder.with_masker(m.clone(), &settings.mask);
    }
    let pipeline = Arc::new(Shared {
        turns: crate::consume::turns::Turns::new(limits.prefetch_bytes, "fetch"),
        hand: crate::consume::turns::Turns::new(limits.in_hand_bytes, "in_hand"),
        decoder,
        masker,
        dead_letters: if settings.dead_letter.enabled {
            Some(
                crate::dlq::DeadLetters::new(&settings.kafka, &settings.dead_letter)
                    .map_err(ConsumeError::DeadLetterProducer)?,
            )
        } else {
            None
        },
        sink,
        breaker: crate::sink::breaker::Breaker::new(settings.sink.breaker.clone()),
        retry: settings.sink.retry.clone(),
        buffer: BufferConfig {
            first_sequence: settings.ordering.first_sequence,
            max_events: settings.ordering.max_buffered_events,
            max_bytes: settings
                .ordering
                .max_buffered_bytes
                .min(usize::try_from(limits.buffered_bytes_per_partition).unwrap_or(usize::MAX)),
            gap_timeout: Duration::from_millis(settings.ordering.gap_timeout_ms),
        },
        policy: settings.ordering.on_bound,
        tombstones: settings.source.tombstones,
        max_cached_keys: settings.ordering.max_cached_keys,
        max_event_types: settings.source.max_event_types,
        batch_max_events: settings.sink.batch_max_events,
        batch_max_wait: Duration::from_millis(settings.sink.batch_max_wait_ms),
        start_from: settings.source.start_from,
        owner: owner_id(),
        correlation_header: settings.log.correlation_header.clone(),
        causation_header: settings.log.causation_header.clone(),
        fatal: Fatal::default(),
    });
    let context = OrdoContext::new(pipeline.clone(), tokio::runtime::Handle::current());
    let mut config = client_config(settings);
    const FETCH_QUEUE_BACKOFF_MS: u64 = 20;
    const FETCH_WAIT_MAX_MS: u64 = 100;
    for (key, value) in [
        (
            "queued.max.messages.kbytes",
            limits.prefetch_kbytes_per_partition,
        ),
        (
            "queued.min.messages",
            limits.prefetch_messages_per_partition,
        ),
        ("max.partition.fetch.bytes", limits.partition_fetch_bytes),
        ("fetch.max.bytes", limits.fetch_max_bytes),
        // A partition whose queue passed the thresholds is fetched again this
        // soon after it drained (librdkafka's 1 s idles small queues).
        ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS),
        // A partition resumed for its turn joins the broker's next fetch
        // request: it waits for the one in flight, which the broker holds
        // this long when it has nothing new.
        ("fetch.wait.max.ms", FETCH_WAIT_MAX_MS),
    ] {
        // A value set in [kafka] wins over the budget's.
        if !settings.kafka.contains_key(key) {
            config.set(key, value.to_string());
        }
    }
    let consumer: Arc<OrdoConsumer> = Arc::new(
        config
            .create_with_context(context)
            .map_err(ConsumeError::Create)?,
    );
    consumer.context().bind(&consumer);
    let topics: Vec<&str> = settings.source.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(|source| ConsumeError::Subscribe {
            topics: settings.source.topics.clone(),
            source,
        })?;
    tracing::info!(
        group = settings.group_id(),
        topics = crate::telemetry::json::List::strings(&settings.source.topics).field(),
        sink = %pipeline.sink.describe(),
        owner = %pipeline.owner,
        "consuming"
    );

    let membership = tokio::spawn(crate::consume::membership::watch(
        consumer.clone(),
        settings.group_id().to_string(),
        settings.kafka.get("session.timeout.ms").cloned(),
    ));
    // While the breaker is open the sink is checked apart from the writes,
    // so they resume as soon as it answers.
    let watching = {
        let shared = pipeline.clone();
        tokio::spawn(async move {
            crate::sink::breaker::watch_sink(&shared.breaker, &*shared.sink).await;
        })
    };
    let outcome = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            error = pipeline.fatal.wait() => break Err(ConsumeError::Fatal(error)),
            msg = consumer.recv() => match msg {
                // Every assigned partition has its own queue; a message here means
                // a partition was not split. It is not processed (its offset is not
                // stored), so stopping loses nothing.
                Ok(m) => break Err(ConsumeError::Fatal(format!(
                    "topic {} partition {} offset {} arrived without a partition worker",
                    m.topic(), m.partition(), m.offset()
                ))),
                Err(e) => tracing::warn!(error = %e, "kafka client error"),
            },
        }
    };

    watching.abort();
    membership.abort();
    tracing::info!("stopping: draining partitions");
    consumer.context().close();
    // The shutdown deadline (ShutdownConfig) ends the process regardless;
    // the drain gives up a little before it so what committed is reported.
    let budget =
        Duration::from_millis(settings.shutdown.deadline_ms).saturating_sub(Duration::from_secs(3));
    consumer.context().drain_all(&consumer, budget).await;
    consumer.unsubscribe();
    // Dropping the consumer leaves the group; it blocks while librdkafka closes.
    tokio::task::spawn_blocking(move || drop(consumer))
        .await
        .map_err(|e| ConsumeError::Fatal(e.to_string()))?;
    tracing::info!("stopped");
    outcome
}
