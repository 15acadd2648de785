//! The record and the event every stage shares: a [`Record`] as read from
//! Kafka (with its [`Location`]), the [`Event`] decoded from it, the
//! [`JsonText`] it carries, and the names of the `ordo.*` headers Ordo
//! writes and reads. A leaf: it depends on no other module of Ordo.

use std::fmt;
use std::sync::Arc;

/// The headers Ordo writes into dead letters and reads back on replay.
pub mod headers {
    pub const SOURCE_TOPIC: &str = "ordo.source.topic";
    pub const SOURCE_PARTITION: &str = "ordo.source.partition";
    pub const SOURCE_OFFSET: &str = "ordo.source.offset";
    pub const SOURCE_TIMESTAMP: &str = "ordo.source.timestamp";
    pub const ERROR_CLASS: &str = "ordo.error.class";
    pub const ERROR_MESSAGE: &str = "ordo.error.message";
    pub const ATTEMPTS: &str = "ordo.attempts";
    pub const ORDO_VERSION: &str = "ordo.version";
    /// The lease epoch of the partition's owner that wrote the letter.
    pub const LEASE_EPOCH: &str = "ordo.lease.epoch";
    /// The event's type (`source.event_type`), when it was decoded.
    pub const EVENT_TYPE: &str = "ordo.event.type";
    /// The route whose statement refused the event.
    pub const ROUTE: &str = "ordo.route";
    /// How many times `ordo dlq replay` has sent this record back.
    pub const REPLAYS: &str = "ordo.replay.count";
    /// `masked`: the payload is the record's, with `[mask]` applied;
    /// `withheld`: masking is on and the record could not be parsed, so its
    /// payload is not in the letter (it stays in the source topic).
    pub const PAYLOAD: &str = "ordo.payload";
}

/// A record as read from Kafka, owned so it can outlive the consumer's buffer.
#[derive(Debug, Clone, PartialEq)]
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
    /// Bytes of its key, payload and headers.
    pub fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.payload.as_ref().map_or(0, Vec::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
    }

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
    /// The JSON the sink stores (`null` for a delete).
    pub payload: JsonText,
    /// A tombstone: the key's state is deleted at `sequence`.
    pub delete: bool,
    pub timestamp_ms: Option<i64>,
    /// Size of the encoded payload, for the buffer's byte bound.
    pub size: usize,
    /// Sent back from the dead-letter topic (it carries `ordo.replay.count`).
    pub replayed: bool,
    /// The event's type (`source.event_type`), when it has one.
    pub event_type: Option<Arc<str>>,
    /// The record it was decoded from, kept while dead letters are on (the
    /// sink may still refuse the event, and its dead letter is the record).
    pub source: Option<Arc<Record>>,
}

impl Event {
    /// A small event for tests.
    #[doc(hidden)]
    pub fn for_test(key: &str, sequence: i64, offset: i64) -> Event {
        Event {
            offset,
            key: key.to_string(),
            sequence,
            payload: JsonText::from_value(&serde_json::json!({ "key": key, "seq": sequence })),
            timestamp_ms: None,
            size: 16,
            replayed: false,
            event_type: None,
            source: None,
            delete: false,
        }
    }

    /// A tombstone for tests.
    #[doc(hidden)]
    pub fn delete_for_test(key: &str, sequence: i64, offset: i64) -> Event {
        Event {
            payload: JsonText::null(),
            size: 0,
            delete: true,
            ..Event::for_test(key, sequence, offset)
        }
    }
}

/// A payload as JSON text, known to be one valid JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonText(Box<str>);

impl JsonText {
    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Text known to be one JSON document (it was just rendered).
    pub fn from_string(text: String) -> Self {
        Self(text.into_boxed_str())
    }

    /// `null`: the payload of a delete.
    pub fn null() -> Self {
        Self("null".into())
    }

    /// The text of a JSON value.
    pub fn from_value(value: &serde_json::Value) -> Self {
        Self(value.to_string().into_boxed_str())
    }

    /// The document as a value.
    #[cfg(test)]
    pub fn to_value(&self) -> serde_json::Value {
        // The text was checked when it was made.
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

impl fmt::Display for JsonText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
