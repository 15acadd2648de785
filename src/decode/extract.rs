//! Takes the key and the sequence of an event from the configured places.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::record::Record;

/// The key or sequence is missing or has the wrong type.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExtractError {
    #[error("the record has no message key (ordering.key = \"message_key\")")]
    NoMessageKey,
    #[error("the message key is not UTF-8")]
    KeyNotUtf8,
    #[error("field `{0}` is missing")]
    MissingField(String),
    #[error("field `{field}` is {found}, expected {expected}")]
    WrongType {
        field: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error("header `{0}` is missing")]
    MissingHeader(String),
    #[error("header `{name}` is `{value}`, expected a decimal integer")]
    BadHeader { name: String, value: String },
}

/// What a payload holds at a field path, as much as the key and sequence
/// rules need: strings and numbers in full, other kinds by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scalar {
    Null,
    Bool,
    Str(String),
    Number(serde_json::Number),
    Array,
    Object,
}

impl Scalar {
    fn kind(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool => "a boolean",
            Scalar::Number(_) => "a number",
            Scalar::Str(_) => "a string",
            Scalar::Array => "an array",
            Scalar::Object => "an object",
        }
    }
}

/// The value at `path`; a missing field and `null` are both missing.
fn field<'f>(found: Option<&'f Scalar>, path: &FieldPath) -> Result<&'f Scalar, ExtractError> {
    match found {
        None | Some(Scalar::Null) => Err(ExtractError::MissingField(path.to_string())),
        Some(v) => Ok(v),
    }
}

/// The event's key; `found` is what the payload holds at the key's field
/// path, if the key comes from one.
pub fn key(
    source: &KeySource,
    record: &Record,
    found: Option<&Scalar>,
) -> Result<String, ExtractError> {
    match source {
        KeySource::MessageKey => {
            let bytes = record.key.as_deref().ok_or(ExtractError::NoMessageKey)?;
            String::from_utf8(bytes.to_vec()).map_err(|_| ExtractError::KeyNotUtf8)
        }
        KeySource::Field(path) => match field(found, path)? {
            Scalar::Str(s) => Ok(s.clone()),
            Scalar::Number(n) => Ok(n.to_string()),
            other => Err(ExtractError::WrongType {
                field: path.to_string(),
                found: other.kind(),
                expected: "a string or a number",
            }),
        },
    }
}

/// The event's per-key sequence; `found` is what the payload holds at the
/// sequence's field path, if the sequence comes from one.
pub fn sequence(
    source: &SequenceSource,
    record: &Record,
    found: Option<&Scalar>,
) -> Result<i64, ExtractError> {
    match source {
        SequenceSource::Field(path) => {
            let v = field(found, path)?;
            let parsed = match v {
                Scalar::Number(n) => n.as_i64(),
                Scalar::Str(s) => s.parse::<i64>().ok(),
                _ => None,
            };
            parsed.ok_or_else(|| ExtractError::WrongType {
                field: path.to_string(),
                found: v.kind(),
                expected: "an integer that fits in 64 bits",
            })
        }
        SequenceSource::Header(name) => {
            let bytes = record
                .header(name)
                .ok_or_else(|| ExtractError::MissingHeader(name.clone()))?;
            let text = String::from_utf8_lossy(bytes);
            text.trim()
                .parse::<i64>()
                .map_err(|_| ExtractError::BadHeader {
                    name: name.clone(),
                    value: text.into_owned(),
                })
        }
    }
}

/// Where the key of an event comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeySource {
    /// The Kafka message key, as UTF-8.
    #[default]
    MessageKey,
    /// A field of the decoded record.
    Field(FieldPath),
}

/// Where the sequence of an event comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequenceSource {
    /// A field of the decoded record.
    Field(FieldPath),
    /// A Kafka header holding a decimal integer.
    Header(String),
}

/// Where an event's type comes from (`source.event_type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTypeSource {
    /// A field of the decoded record.
    Field(FieldPath),
    /// A Kafka header (a CloudEvents `ce_type`, for example).
    Header(String),
}

/// The event's type; `found` is what the payload holds at the type's field
/// path, if the type comes from one. A type that is absent (or null) is
/// `None`: the event matches only routes that name no event types.
pub fn event_type(
    source: &EventTypeSource,
    record: &Record,
    found: Option<&Scalar>,
) -> Result<Option<String>, ExtractError> {
    match source {
        EventTypeSource::Field(path) => match found {
            None | Some(Scalar::Null) => Ok(None),
            Some(Scalar::Str(s)) => Ok(Some(s.clone())),
            Some(Scalar::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(ExtractError::WrongType {
                field: path.to_string(),
                found: other.kind(),
                expected: "a string (the event type)",
            }),
        },
        EventTypeSource::Header(name) => Ok(record
            .header(name)
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
            .filter(|t| !t.is_empty())),
    }
}

/// A dotted path into a record, such as `order.customer.id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath(pub Vec<String>);

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

impl FromStr for FieldPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<String> = s.split('.').map(str::to_string).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(format!("`{s}` is not a field path (expected a.b.c)"));
        }
        Ok(FieldPath(parts))
    }
}

impl FromStr for KeySource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            None if s == "message_key" => Ok(KeySource::MessageKey),
            Some(("field", path)) => Ok(KeySource::Field(path.parse()?)),
            _ => Err(format!(
                "`{s}` is not a key source (expected `message_key` or `field:<path>`)"
            )),
        }
    }
}

impl FromStr for SequenceSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("field", path)) => Ok(SequenceSource::Field(path.parse()?)),
            Some(("header", name)) if !name.is_empty() => Ok(SequenceSource::Header(name.into())),
            _ => Err(format!(
                "`{s}` is not a sequence source (expected `field:<path>` or `header:<name>`)"
            )),
        }
    }
}

impl FromStr for EventTypeSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("field", path)) => Ok(EventTypeSource::Field(path.parse()?)),
            Some(("header", name)) if !name.is_empty() => Ok(EventTypeSource::Header(name.into())),
            _ => Err(format!(
                "`{s}` is not an event type source (expected `field:<path>` or `header:<name>`)"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for EventTypeSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_from_str(d)
    }
}

fn deserialize_from_str<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

impl<'de> Deserialize<'de> for FieldPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_from_str(d)
    }
}

impl<'de> Deserialize<'de> for KeySource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_from_str(d)
    }
}

impl<'de> Deserialize<'de> for SequenceSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_from_str(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn record(key: Option<&str>, headers: &[(&str, &str)]) -> Record {
        Record {
            topic: "t".into(),
            partition: 0,
            offset: 7,
            key: key.map(|k| k.as_bytes().to_vec()),
            payload: None,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), Some(v.as_bytes().to_vec())))
                .collect(),
            timestamp_ms: None,
        }
    }

    fn path(s: &str) -> FieldPath {
        s.parse().unwrap()
    }

    /// What the JSON text of `v` holds at `path`.
    fn at(v: &Value, path: &FieldPath) -> Option<Scalar> {
        let text = v.to_string();
        let (_, mut found) = super::super::json::JsonFormat
            .decode(text.as_bytes(), std::slice::from_ref(path))
            .unwrap();
        found.pop().flatten()
    }

    fn k(source: &KeySource, r: &Record, v: &Value) -> Result<String, ExtractError> {
        let found = match source {
            KeySource::Field(p) => at(v, p),
            KeySource::MessageKey => None,
        };
        key(source, r, found.as_ref())
    }

    fn s(source: &SequenceSource, r: &Record, v: &Value) -> Result<i64, ExtractError> {
        let found = match source {
            SequenceSource::Field(p) => at(v, p),
            SequenceSource::Header(_) => None,
        };
        sequence(source, r, found.as_ref())
    }

    #[test]
    fn keys_from_message_key_and_nested_fields() {
        let v = json!({"order": {"id": "o-1", "n": 42}});
        assert_eq!(
            k(&KeySource::MessageKey, &record(Some("k"), &[]), &v).unwrap(),
            "k"
        );
        assert_eq!(
            k(&KeySource::MessageKey, &record(None, &[]), &v),
            Err(ExtractError::NoMessageKey)
        );
        assert_eq!(
            k(&KeySource::Field(path("order.id")), &record(None, &[]), &v).unwrap(),
            "o-1"
        );
        assert_eq!(
            k(&KeySource::Field(path("order.n")), &record(None, &[]), &v).unwrap(),
            "42"
        );
        assert_eq!(
            k(&KeySource::Field(path("order.x")), &record(None, &[]), &v),
            Err(ExtractError::MissingField("order.x".into()))
        );
        assert!(matches!(
            k(&KeySource::Field(path("order")), &record(None, &[]), &v),
            Err(ExtractError::WrongType { .. })
        ));
    }

    #[test]
    fn sequences_from_fields_and_headers() {
        let v = json!({"v": 3, "s": "4", "f": 1.5});
        let r = record(None, &[("seq", "9"), ("bad", "x")]);
        assert_eq!(s(&SequenceSource::Field(path("v")), &r, &v).unwrap(), 3);
        assert_eq!(s(&SequenceSource::Field(path("s")), &r, &v).unwrap(), 4);
        assert!(s(&SequenceSource::Field(path("f")), &r, &v).is_err());
        assert_eq!(s(&SequenceSource::Header("seq".into()), &r, &v).unwrap(), 9);
        assert!(matches!(
            s(&SequenceSource::Header("bad".into()), &r, &v),
            Err(ExtractError::BadHeader { .. })
        ));
        assert_eq!(
            s(&SequenceSource::Header("none".into()), &r, &v),
            Err(ExtractError::MissingHeader("none".into()))
        );
    }
}
