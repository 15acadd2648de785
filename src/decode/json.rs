//! JSON payloads: one JSON document per record.

use super::DecodeReason;

/// Parses a payload as one JSON document.
#[derive(Debug, Clone, Copy)]
pub struct JsonFormat;

impl JsonFormat {
    pub fn decode(&self, bytes: &[u8]) -> Result<serde_json::Value, DecodeReason> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_json() {
        assert_eq!(
            JsonFormat.decode(br#"{"a":1}"#).unwrap(),
            serde_json::json!({"a": 1})
        );
        let e = JsonFormat.decode(b"{\"a\":").unwrap_err().to_string();
        assert!(e.contains("not valid JSON"), "{e}");
    }
}
