//! Dead letters: a record Ordo cannot handle for a reason retrying cannot fix
//! goes, unchanged (key, value, headers), to a dead-letter topic with headers
//! saying where it came from and why. The partition's offset passes the record
//! only once the dead-letter write is acknowledged; if it cannot be written,
//! the partition stops in front of the record instead.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde::Deserialize;

use crate::kafka::KafkaProperties;
use crate::record::{JsonText, Record};

/// Header names Ordo adds to a dead letter.
pub use crate::record::headers;

pub mod command;
pub mod handled;
pub mod read;
pub mod replay;
pub mod sources;

/// The record a dead letter carries: the record itself, or with `[mask]`
/// on, its payload masked (`ordo.payload = masked`) or, when it cannot be
/// parsed to mask, withheld (`ordo.payload = withheld`; the record stays in
/// its source topic, at the offset the letter names).
pub fn letter_record<'a>(
    masker: Option<&crate::mask::Masker>,
    record: &'a Record,
    masked: Option<&JsonText>,
    notes: &[(&str, Option<&str>)],
) -> std::borrow::Cow<'a, Record> {
    let notes: Vec<(String, Option<Vec<u8>>)> = notes
        .iter()
        .filter_map(|(name, value)| Some((name.to_string(), Some((*value)?.as_bytes().to_vec()))))
        .collect();
    let Some(masker) = masker else {
        if notes.is_empty() {
            return std::borrow::Cow::Borrowed(record);
        }
        let mut letter = record.clone();
        letter.headers.extend(notes);
        return std::borrow::Cow::Owned(letter);
    };
    let payload = match masked {
        Some(text) => Some(text.as_str().as_bytes().to_vec()),
        None => record
            .payload
            .as_deref()
            .and_then(|p| std::str::from_utf8(p).ok())
            .and_then(|text| masker.mask(text).ok())
            .map(String::into_bytes),
    };
    let how = if payload.is_some() || record.payload.is_none() {
        "masked"
    } else {
        "withheld"
    };
    let mut letter = record.clone();
    letter.payload = payload;
    letter
        .headers
        .push((headers::PAYLOAD.to_string(), Some(how.as_bytes().to_vec())));
    letter.headers.extend(notes);
    std::borrow::Cow::Owned(letter)
}

/// `[dead_letter]`: where records that cannot be handled go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    /// Off: such a record stops its partition instead.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// The dead-letter topic; `{topic}` is replaced by the source topic.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// How long a dead-letter write may take before the partition stops.
    #[serde(default = "default_send_timeout_ms")]
    pub send_timeout_ms: u64,
    /// Extra librdkafka producer properties (the `[kafka]` connection and
    /// security properties are used too).
    #[serde(default)]
    pub producer: KafkaProperties,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            topic: default_topic(),
            send_timeout_ms: default_send_timeout_ms(),
            producer: KafkaProperties::default(),
        }
    }
}

fn default_enabled() -> bool {
    true
}
fn default_topic() -> String {
    "{topic}.dlq".into()
}
fn default_send_timeout_ms() -> u64 {
    30_000
}

impl DeadLetterConfig {
    /// Checks the section's own values (the topic against the source topics
    /// is checked where both are known): the key (in full) and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if !self.enabled {
            return Ok(());
        }
        if self.send_timeout_ms == 0 {
            return Err((
                "dead_letter.send_timeout_ms".into(),
                "must be greater than 0".into(),
            ));
        }
        self.producer
            .validate()
            .map_err(|e| (format!("dead_letter.producer.{}", e.key), e.reason))
    }

    /// The dead-letter topic of `source`.
    pub fn topic_for(&self, source: &str) -> String {
        self.topic.replace("{topic}", source)
    }
}

/// How a failure is classed in the `ordo.error.class` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The record itself cannot be handled (undecodable, unreadable schema, a tombstone).
    Permanent,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Permanent => "permanent",
        }
    }
}

/// A dead-letter write that was not acknowledged.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to dead-letter topic {topic}: {reason}")]
pub struct DeadLetterError {
    pub topic: String,
    pub reason: String,
    /// Writing again cannot succeed (the record is too large for the topic,
    /// the producer is not authorised): the partition stops instead.
    pub permanent: bool,
}

/// Produce errors that writing the same record again cannot fix.
fn is_permanent(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidRecord
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::InvalidMessage
        )
    )
}

/// The `[kafka]` properties another client of the same cluster needs.
pub fn connection_config(kafka: &BTreeMap<String, String>) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    for (k, v) in kafka.iter().filter(|(k, _)| is_connection_property(k)) {
        cfg.set(k, v);
    }
    cfg
}

/// Kafka properties of `[kafka]` that a producer to the same cluster needs.
fn is_connection_property(key: &str) -> bool {
    key == "bootstrap.servers"
        || key == "client.rack"
        || key.starts_with("security.")
        || key.starts_with("sasl.")
        || key.starts_with("ssl.")
        || key.starts_with("socket.")
        || key.starts_with("broker.")
        || key.starts_with("enable.ssl.")
        || key.starts_with("enable.sasl.")
        || key == "client.dns.lookup"
        || key == "api.version.request"
}

/// Writes dead letters.
pub struct DeadLetters {
    config: DeadLetterConfig,
    producer: FutureProducer<crate::kafka::RecordingContext>,
}

impl DeadLetters {
    /// A producer to the cluster in `kafka` (idempotent, `acks=all`).
    pub fn new(
        kafka: &BTreeMap<String, String>,
        config: &DeadLetterConfig,
    ) -> Result<DeadLetters, rdkafka::error::KafkaError> {
        let mut cfg = connection_config(kafka);
        cfg.set("enable.idempotence", "true")
            .set("acks", "all")
            // One attempt fails after this long; it is then tried again.
            .set("message.timeout.ms", config.send_timeout_ms.to_string())
            .set(
                "client.id",
                format!("ordo-dlq-{}", crate::process::owner_id()),
            );
        for (k, v) in &config.producer {
            cfg.set(k, v);
        }
        Ok(DeadLetters {
            producer: cfg.create_with_context(crate::kafka::RecordingContext::default())?,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &DeadLetterConfig {
        &self.config
    }

    /// Sends `record` with its failure to the dead-letter topic and waits
    /// for the acknowledgement; `epoch` is the writer's lease epoch.
    pub async fn send(
        &self,
        record: &Record,
        class: ErrorClass,
        error: &str,
        attempts: u32,
        epoch: i64,
    ) -> Result<(), DeadLetterError> {
        let topic = self.config.topic_for(&record.topic);
        let mut hs = OwnedHeaders::new_with_capacity(record.headers.len() + 8);
        for (k, v) in &record.headers {
            hs = hs.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        let partition = record.partition.to_string();
        let offset = record.offset.to_string();
        let timestamp = record.timestamp_ms.map(|t| t.to_string());
        let attempts = attempts.to_string();
        let epoch = epoch.to_string();
        let ours: [(&str, Option<&str>); 9] = [
            (headers::SOURCE_TOPIC, Some(&record.topic)),
            (headers::SOURCE_PARTITION, Some(&partition)),
            (headers::SOURCE_OFFSET, Some(&offset)),
            (headers::SOURCE_TIMESTAMP, timestamp.as_deref()),
            (headers::ERROR_CLASS, Some(class.as_str())),
            (headers::ERROR_MESSAGE, Some(error)),
            (headers::ATTEMPTS, Some(&attempts)),
            (headers::ORDO_VERSION, Some(env!("CARGO_PKG_VERSION"))),
            (headers::LEASE_EPOCH, Some(&epoch)),
        ];
        for (key, value) in ours {
            if let Some(value) = value {
                hs = hs.insert(Header {
                    key,
                    value: Some(value),
                });
            }
        }
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&topic).headers(hs);
        if let Some(k) = &record.key {
            rec = rec.key(k);
        }
        if let Some(p) = &record.payload {
            rec = rec.payload(p);
        }
        if let Some(t) = record.timestamp_ms {
            rec = rec.timestamp(t);
        }
        let timeout = Duration::from_millis(self.config.send_timeout_ms);
        self.producer
            .send(rec, timeout)
            .await
            .map(|_| ())
            .map_err(|(e, _)| DeadLetterError {
                permanent: is_permanent(&e),
                topic,
                reason: e.to_string(),
            })
    }
}
