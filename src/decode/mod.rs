//! Decode: turns a raw Kafka record into an [`Event`] (key, sequence, payload).
//!
//! The payload format is a [`Format`] chosen by configuration; the key and the
//! sequence are then taken from the places configured in `[ordering]`, the same
//! way for every format. A new format is a new [`Format`] variant: the consumer
//! only ever calls [`Decoder::decode`].

pub mod avro;
pub mod extract;
mod json;

use std::sync::Arc;

use serde::Deserialize;

use crate::mask::{self, MaskConfig, Masker};
use crate::record::{Event, JsonText, Location, Record};
use avro::{AvroError, AvroFormat, KeyFormat};
use extract::{EventTypeSource, FieldPath, KeySource, SequenceSource};

pub use extract::{ExtractError, Scalar};

/// What the decoder is built from: the parts of `[source]` and `[ordering]`
/// it reads, composed by the assembly (`pipeline.rs`).
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    pub format: FormatKind,
    pub key_format: KeyFormat,
    pub reader_schemas: &'a [avro::ReaderSchemaConfig],
    pub key: &'a KeySource,
    pub sequence: &'a SequenceSource,
    pub tombstones: Tombstones,
    /// The header a tombstone's sequence is read from, if any.
    pub tombstone_header: Option<&'a str>,
    /// Where each event's type is read (`source.event_type`), if anywhere.
    pub event_type: Option<&'a EventTypeSource>,
}

/// What a tombstone (a record whose value is null, as compacted topics use
/// to delete a key) does (`source.tombstones`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Tombstones {
    /// It goes to the dead-letter topic (or stops its partition) like any
    /// record Ordo cannot handle.
    #[default]
    DeadLetter,
    /// Projection mode: it deletes its key's row, in the key's version order.
    Delete,
    /// It is dropped, counted as `tombstone_ignored`.
    Ignore,
}

/// Payload formats Ordo reads.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FormatKind {
    #[default]
    Json,
    /// Confluent-framed Avro, through the Schema Registry.
    Avro,
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
    #[error(transparent)]
    Avro(#[from] AvroError),
    #[error("message key: {0}")]
    AvroKey(AvroError),
    #[error(transparent)]
    Mask(#[from] crate::mask::MaskError),
}

impl DecodeError {
    /// Whether the same record may decode if tried again later (the schema
    /// registry was unreachable); every other decode error is permanent.
    pub fn is_transient(&self) -> bool {
        match &self.reason {
            DecodeReason::Avro(e) | DecodeReason::AvroKey(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// The decoder cannot be set up from the configuration; names the key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct SetupError {
    pub key: String,
    pub reason: String,
}

/// A payload format: bytes in, a JSON-shaped value out.
#[derive(Debug)]
enum Format {
    Json(json::JsonFormat),
    Avro(Arc<AvroFormat>),
}

/// Decodes records and extracts their key and sequence.
#[derive(Debug)]
pub struct Decoder {
    format: Format,
    /// Set when message keys are Avro.
    avro_keys: Option<Arc<AvroFormat>>,
    key: KeySource,
    sequence: SequenceSource,
    /// Where the event's type comes from, if anywhere.
    event_type: Option<EventTypeSource>,
    /// The payload field paths the key, the sequence and the type come from.
    paths: Vec<FieldPath>,
    /// Set when tombstones delete: the header holding their sequence.
    tombstone_sequence: Option<String>,
    /// Tombstones are dropped (`source.tombstones = "ignore"`).
    ignore_tombstones: bool,
    /// Masks payloads after the key and sequence are read (`[mask]`).
    masker: Option<Arc<Masker>>,
    /// The key is a hashed field: the event's key is its hash.
    key_hashed: bool,
}

/// The payload field paths `key`, `sequence` and `event_type` read, in that order.
fn paths_of(
    key: &KeySource,
    sequence: &SequenceSource,
    event_type: Option<&EventTypeSource>,
) -> Vec<FieldPath> {
    let key = match key {
        KeySource::Field(p) => Some(p.clone()),
        KeySource::MessageKey => None,
    };
    let sequence = match sequence {
        SequenceSource::Field(p) => Some(p.clone()),
        SequenceSource::Header(_) => None,
    };
    let event_type = match event_type {
        Some(EventTypeSource::Field(p)) => Some(p.clone()),
        _ => None,
    };
    key.into_iter().chain(sequence).chain(event_type).collect()
}

impl Decoder {
    /// A decoder for JSON payloads with UTF-8 keys.
    pub fn json(key: KeySource, sequence: SequenceSource) -> Self {
        Self {
            format: Format::Json(json::JsonFormat),
            avro_keys: None,
            paths: paths_of(&key, &sequence, None),
            key,
            sequence,
            event_type: None,
            tombstone_sequence: None,
            ignore_tombstones: false,
            masker: None,
            key_hashed: false,
        }
    }

    /// Whether `record` is dropped rather than decoded: a tombstone while
    /// `source.tombstones = "ignore"` (counted as `tombstone_ignored`).
    pub fn ignores(&self, record: &Record) -> bool {
        self.ignore_tombstones && record.payload.is_none()
    }

    /// Payloads masked by `masker` (`[mask]`); the key hashed if its field is.
    pub fn with_masker(mut self, masker: Arc<Masker>, mask: &MaskConfig) -> Self {
        self.key_hashed = match &self.key {
            KeySource::Field(path) => mask.action_at(path) == Some(mask::Action::Hash),
            KeySource::MessageKey => false,
        };
        self.masker = Some(masker);
        self
    }

    /// Each event's type is read from `source`.
    pub fn with_event_type(mut self, source: EventTypeSource) -> Self {
        self.paths = paths_of(&self.key, &self.sequence, Some(&source));
        self.event_type = Some(source);
        self
    }

    /// Tombstones decode to deletes, their sequence read from `header`.
    pub fn with_deletes(mut self, header: &str) -> Self {
        self.tombstone_sequence = Some(header.to_string());
        self
    }

    /// The decoder `setup` (composed from `[source]` and `[ordering]`) and
    /// `[schema_registry]` describe; loads the reader schemas.
    pub fn new(
        setup: &Setup<'_>,
        registry: Option<&avro::RegistryConfig>,
    ) -> Result<Self, SetupError> {
        let source = setup;
        let avro_needed = source.format == FormatKind::Avro || source.key_format == KeyFormat::Avro;
        let avro = if avro_needed {
            let registry = registry.ok_or_else(|| SetupError {
                key: "schema_registry.urls".into(),
                reason: "is required when source.format or source.key_format is `avro`".into(),
            })?;
            let mut readers = std::collections::HashMap::new();
            for (i, r) in source.reader_schemas.iter().enumerate() {
                let reader = r.load().map_err(|(field, reason)| SetupError {
                    key: format!("source.reader_schemas[{i}].{field}"),
                    reason,
                })?;
                readers.insert(r.topic.clone(), reader);
            }
            let format = AvroFormat::new(registry, readers).map_err(|e| SetupError {
                key: format!("schema_registry.{}", e.key),
                reason: e.reason,
            })?;
            Some(Arc::new(format))
        } else {
            None
        };
        let format = match (source.format, &avro) {
            (FormatKind::Avro, Some(a)) => Format::Avro(a.clone()),
            _ => Format::Json(json::JsonFormat),
        };
        let avro_keys = avro.filter(|_| source.key_format == KeyFormat::Avro);
        Ok(Self {
            format,
            avro_keys,
            paths: paths_of(setup.key, setup.sequence, setup.event_type),
            key: setup.key.clone(),
            sequence: setup.sequence.clone(),
            event_type: setup.event_type.cloned(),
            tombstone_sequence: match setup.tombstones {
                Tombstones::Delete => setup.tombstone_header.map(str::to_string),
                _ => None,
            },
            ignore_tombstones: setup.tombstones == Tombstones::Ignore,
            masker: None,
            key_hashed: false,
        })
    }

    /// Decodes one record into an event.
    pub async fn decode(&self, record: &Record) -> Result<Event, DecodeError> {
        self.decode_inner(record)
            .await
            .map_err(|reason| DecodeError {
                location: record.location(),
                reason,
            })
    }

    async fn decode_inner(&self, record: &Record) -> Result<Event, DecodeReason> {
        let Some(bytes) = record.payload.as_deref() else {
            return self.tombstone(record).await;
        };
        let (payload, found) = match &self.format {
            Format::Json(f) => f.decode(bytes, &self.paths)?,
            Format::Avro(f) => {
                // The rendering is read for the key and sequence as a JSON
                // payload is, so both formats follow the same rules.
                let text = f.decode(&record.topic, bytes).await?;
                json::JsonFormat.rendered(text, &self.paths)?
            }
        };
        // The found values are in the order `paths_of` gives: key, sequence, type.
        let mut found = found.iter().map(Option::as_ref);
        let key_found = match self.key {
            KeySource::Field(_) => found.next().flatten(),
            KeySource::MessageKey => None,
        };
        let sequence_found = match self.sequence {
            SequenceSource::Field(_) => found.next().flatten(),
            SequenceSource::Header(_) => None,
        };
        let type_found = found.next().flatten();
        let event_type = self.event_type_of(record, type_found)?;
        let mut key = self.key_of(record, key_found).await?;
        let sequence = extract::sequence(&self.sequence, record, sequence_found)?;
        let mut payload = payload;
        if let Some(m) = &self.masker {
            payload = JsonText::from_string(m.mask(payload.as_str())?);
            if self.key_hashed {
                key = m.hash_text(&key);
            }
        }
        Ok(Event {
            offset: record.offset,
            key,
            sequence,
            payload,
            timestamp_ms: record.timestamp_ms,
            size: bytes.len(),
            replayed: record.header(crate::dlq::headers::REPLAYS).is_some(),
            event_type,
            source: None,
            delete: false,
        })
    }

    /// The key: the message key (Avro-decoded if so configured) or the payload's field.
    async fn key_of(
        &self,
        record: &Record,
        found: Option<&Scalar>,
    ) -> Result<String, DecodeReason> {
        Ok(match (&self.key, &self.avro_keys) {
            (KeySource::MessageKey, Some(avro)) => {
                let bytes = record.key.as_deref().ok_or(ExtractError::NoMessageKey)?;
                avro.decode_key(bytes)
                    .await
                    .map_err(DecodeReason::AvroKey)?
            }
            (source, _) => extract::key(source, record, found)?,
        })
    }

    /// The event's type, if the configuration reads one and the record has it.
    fn event_type_of(
        &self,
        record: &Record,
        found: Option<&Scalar>,
    ) -> Result<Option<Arc<str>>, ExtractError> {
        Ok(match &self.event_type {
            Some(source) => extract::event_type(source, record, found)?.map(Arc::from),
            None => None,
        })
    }

    /// A record without a value: a delete of its key when tombstones delete
    /// (`source.tombstones = "delete"`), its sequence from a header; else
    /// not decodable.
    async fn tombstone(&self, record: &Record) -> Result<Event, DecodeReason> {
        let Some(header) = &self.tombstone_sequence else {
            return Err(DecodeReason::NoPayload);
        };
        let key = self.key_of(record, None).await?;
        let sequence = extract::sequence(&SequenceSource::Header(header.clone()), record, None)?;
        Ok(Event {
            offset: record.offset,
            key,
            sequence,
            payload: JsonText::null(),
            timestamp_ms: record.timestamp_ms,
            size: 0,
            replayed: record.header(crate::dlq::headers::REPLAYS).is_some(),
            event_type: self.event_type_of(record, None)?,
            source: None,
            delete: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(payload: &str) -> Record {
        Record {
            topic: "t".into(),
            partition: 0,
            offset: 5,
            key: Some(b"mk".to_vec()),
            payload: Some(payload.as_bytes().to_vec()),
            headers: vec![("seq".into(), Some(b"8".to_vec()))],
            timestamp_ms: Some(1),
        }
    }

    fn decode(key: &str, sequence: &str, payload: &str) -> Result<Event, DecodeError> {
        let decoder = Decoder::json(key.parse().unwrap(), sequence.parse().unwrap());
        futures::executor::block_on(decoder.decode(&record(payload)))
    }

    #[test]
    fn masked_payloads_and_a_hashed_key_field() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k"), "hash-key").unwrap();
        let mask: MaskConfig = serde_json::from_value(serde_json::json!({
            "hash_key": {"file": dir.path().join("k")},
            "fields": [
                {"path": "user.email", "action": "hash"},
                {"path": "user.name", "action": "redact"}
            ]
        }))
        .unwrap();
        let masker = Arc::new(Masker::new(&mask).unwrap().unwrap());
        let decoder = Decoder::json(
            "field:user.email".parse().unwrap(),
            "field:v".parse().unwrap(),
        )
        .with_masker(masker.clone(), &mask);
        let body = r#"{"user":{"email":"a@b.example","name":"Ann"},"v":3}"#;
        let e = futures::executor::block_on(decoder.decode(&record(body))).unwrap();
        // The key was read from the clear field, then hashed as the field is.
        assert_eq!(e.key, masker.hash_text("a@b.example"));
        assert_eq!(e.sequence, 3);
        let stored: serde_json::Value = serde_json::from_str(e.payload.as_str()).unwrap();
        assert_eq!(stored["user"]["email"], e.key.as_str());
        assert_eq!(stored["user"]["name"], serde_json::Value::Null);
        assert!(!e.payload.as_str().contains("a@b.example"));
    }

    #[test]
    fn a_tombstone_is_a_delete_only_when_tombstones_delete() {
        let mut r = record("{}");
        r.payload = None;
        let plain = Decoder::json("message_key".parse().unwrap(), "field:v".parse().unwrap());
        let e = futures::executor::block_on(plain.decode(&r)).unwrap_err();
        assert!(matches!(e.reason, DecodeReason::NoPayload), "{e}");
        let deleting = Decoder::json("message_key".parse().unwrap(), "field:v".parse().unwrap())
            .with_deletes("seq");
        let e = futures::executor::block_on(deleting.decode(&r)).unwrap();
        assert!(e.delete);
        assert_eq!((e.key.as_str(), e.sequence, e.size), ("mk", 8, 0));
        assert_eq!(e.payload.as_str(), "null");
        // The version header is required and named.
        r.headers.clear();
        let e = futures::executor::block_on(deleting.decode(&r)).unwrap_err();
        assert!(e.to_string().contains("header `seq` is missing"), "{e}");
        assert!(e.to_string().contains("offset 5"), "{e}");
    }

    #[test]
    fn json_key_and_sequence_come_from_fields_or_the_record() {
        let body = r#"{"order": {"id": 42, "v": "7"}, "big": 1234567890123456789012}"#;
        let e = decode("field:order.id", "field:order.v", body).unwrap();
        assert_eq!((e.key.as_str(), e.sequence, e.offset), ("42", 7, 5));
        assert_eq!(e.payload.as_str(), body);
        assert_eq!(e.size, body.len());
        let e = decode("message_key", "header:seq", body).unwrap();
        assert_eq!((e.key.as_str(), e.sequence), ("mk", 8));
        // The same path for both.
        let e = decode("field:n", "field:n", r#"{"n": 3}"#).unwrap();
        assert_eq!((e.key.as_str(), e.sequence), ("3", 3));
    }

    #[test]
    fn json_errors_name_the_field_and_the_offset() {
        let e = decode("field:id", "field:v", r#"{"id": "a", "v": null}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "topic t partition 0 offset 5: field `v` is missing"
        );
        let e = decode("field:id", "field:v", r#"{"id": true, "v": 1}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "topic t partition 0 offset 5: field `id` is a boolean, expected a string or a number"
        );
        let e = decode("field:id", "field:v", r#"{"id": "a", "v": 1.0}"#).unwrap_err();
        assert!(
            e.to_string()
                .contains("field `v` is a number, expected an integer"),
            "{e}"
        );
        let e = decode("field:id", "field:v", r#"{"id": "a", "v": 1"#).unwrap_err();
        assert!(
            e.to_string()
                .contains("offset 5: payload is not valid JSON"),
            "{e}"
        );
    }
}
