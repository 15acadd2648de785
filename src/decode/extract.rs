//! Takes the key and the sequence of an event from the configured places.

use serde_json::Value;

use super::Record;
use crate::config::{FieldPath, KeySource, SequenceSource};

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

/// Follows a dotted path through nested objects.
pub fn field<'v>(value: &'v Value, path: &FieldPath) -> Result<&'v Value, ExtractError> {
    let mut v = value;
    for part in &path.0 {
        v = v
            .get(part)
            .ok_or_else(|| ExtractError::MissingField(path.to_string()))?;
    }
    if v.is_null() {
        return Err(ExtractError::MissingField(path.to_string()));
    }
    Ok(v)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The event's key.
pub fn key(source: &KeySource, record: &Record, value: &Value) -> Result<String, ExtractError> {
    match source {
        KeySource::MessageKey => {
            let bytes = record.key.as_deref().ok_or(ExtractError::NoMessageKey)?;
            String::from_utf8(bytes.to_vec()).map_err(|_| ExtractError::KeyNotUtf8)
        }
        KeySource::Field(path) => match field(value, path)? {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(ExtractError::WrongType {
                field: path.to_string(),
                found: kind(other),
                expected: "a string or a number",
            }),
        },
    }
}

/// The event's per-key sequence.
pub fn sequence(
    source: &SequenceSource,
    record: &Record,
    value: &Value,
) -> Result<i64, ExtractError> {
    match source {
        SequenceSource::Field(path) => {
            let v = field(value, path)?;
            let parsed = match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.parse::<i64>().ok(),
                _ => None,
            };
            parsed.ok_or_else(|| ExtractError::WrongType {
                field: path.to_string(),
                found: kind(v),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    #[test]
    fn keys_from_message_key_and_nested_fields() {
        let v = json!({"order": {"id": "o-1", "n": 42}});
        assert_eq!(
            key(&KeySource::MessageKey, &record(Some("k"), &[]), &v).unwrap(),
            "k"
        );
        assert_eq!(
            key(&KeySource::MessageKey, &record(None, &[]), &v),
            Err(ExtractError::NoMessageKey)
        );
        assert_eq!(
            key(&KeySource::Field(path("order.id")), &record(None, &[]), &v).unwrap(),
            "o-1"
        );
        assert_eq!(
            key(&KeySource::Field(path("order.n")), &record(None, &[]), &v).unwrap(),
            "42"
        );
        assert_eq!(
            key(&KeySource::Field(path("order.x")), &record(None, &[]), &v),
            Err(ExtractError::MissingField("order.x".into()))
        );
        assert!(matches!(
            key(&KeySource::Field(path("order")), &record(None, &[]), &v),
            Err(ExtractError::WrongType { .. })
        ));
    }

    #[test]
    fn sequences_from_fields_and_headers() {
        let v = json!({"v": 3, "s": "4", "f": 1.5});
        let r = record(None, &[("seq", "9"), ("bad", "x")]);
        assert_eq!(
            sequence(&SequenceSource::Field(path("v")), &r, &v).unwrap(),
            3
        );
        assert_eq!(
            sequence(&SequenceSource::Field(path("s")), &r, &v).unwrap(),
            4
        );
        assert!(sequence(&SequenceSource::Field(path("f")), &r, &v).is_err());
        assert_eq!(
            sequence(&SequenceSource::Header("seq".into()), &r, &v).unwrap(),
            9
        );
        assert!(matches!(
            sequence(&SequenceSource::Header("bad".into()), &r, &v),
            Err(ExtractError::BadHeader { .. })
        ));
        assert_eq!(
            sequence(&SequenceSource::Header("none".into()), &r, &v),
            Err(ExtractError::MissingHeader("none".into()))
        );
    }
}
