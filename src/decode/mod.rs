//! Decode: turns a raw Kafka record into an [`Event`] (key, sequence, payload).
//!
//! The payload format is a [`Format`] chosen by configuration; the key and the
//! sequence are then taken from the places configured in `[ordering]`, the same
//! way for every format. A new format is a new [`Format`] variant: the consumer
//! only ever calls [`Decoder::decode`].

mod extract;
mod json;

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;

use crate::config::{KeySource, SequenceSource};

pub use extract::ExtractError;

/// A record as read from Kafka, owned so it can outlive the consumer's buffer.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp_ms: Option<i64>,
}

impl Record {
    /// The value of the first header with this name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Where this record is, for error messages.
    pub fn location(&self) -> Location {
        Location {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// Topic, partition and offset of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "topic {} partition {} offset {}",
            self.topic, self.partition, self.offset
        )
    }
}

/// A decoded event, ready for ordering and the sink.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub offset: i64,
    pub key: String,
    pub sequence: i64,
    pub payload: serde_json::Value,
    pub timestamp_ms: Option<i64>,
    /// Size of the encoded payload, for the buffer's byte bound.
    pub size: usize,
}

impl Event {
    /// A small event for tests.
    #[doc(hidden)]
    pub fn for_test(key: &str, sequence: i64, offset: i64) -> Event {
        Event {
            offset,
            key: key.to_string(),
            sequence,
            payload: serde_json::json!({ "key": key, "seq": sequence }),
            timestamp_ms: None,
            size: 16,
        }
    }
}

/// Payload formats Ordo reads.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FormatKind {
    #[default]
    Json,
}

/// Why a record could not be decoded; it names where the record is.
#[derive(Debug, thiserror::Error)]
#[error("{location}: {reason}")]
pub struct DecodeError {
    pub location: Location,
    pub reason: DecodeReason,
}

/// What was wrong with the record.
#[derive(Debug, thiserror::Error)]
pub enum DecodeReason {
    #[error("the record has no payload (a tombstone)")]
    NoPayload,
    #[error("payload is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Extract(#[from] ExtractError),
}

/// A payload format: bytes in, a JSON-shaped value out.
#[derive(Debug)]
enum Format {
    Json(json::JsonFormat),
}

/// Decodes records and extracts their key and sequence.
#[derive(Debug)]
pub struct Decoder {
    format: Format,
    key: KeySource,
    sequence: SequenceSource,
}

impl Decoder {
    pub fn new(kind: FormatKind, key: KeySource, sequence: SequenceSource) -> Self {
        let format = match kind {
            FormatKind::Json => Format::Json(json::JsonFormat),
        };
        Self {
            format,
            key,
            sequence,
        }
    }

    /// Decodes one record into an event.
    pub async fn decode(&self, record: &Record) -> Result<Event, DecodeError> {
        self.decode_inner(record).map_err(|reason| DecodeError {
            location: record.location(),
            reason,
        })
    }

    fn decode_inner(&self, record: &Record) -> Result<Event, DecodeReason> {
        let bytes = record.payload.as_deref().ok_or(DecodeReason::NoPayload)?;
        let payload = match &self.format {
            Format::Json(f) => f.decode(bytes)?,
        };
        let key = extract::key(&self.key, record, &payload)?;
        let sequence = extract::sequence(&self.sequence, record, &payload)?;
        Ok(Event {
            offset: record.offset,
            key,
            sequence,
            payload,
            timestamp_ms: record.timestamp_ms,
            size: bytes.len(),
        })
    }
}
