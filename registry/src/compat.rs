//! Compatibility levels and the check a new schema must pass before it is registered.
//!
//! BACKWARD: the new schema can read data written with the latest one.
//! FORWARD: the latest schema can read data written with the new one.
//! FULL: both. The `_TRANSITIVE` forms check against every live version
//! instead of the latest only; NONE checks nothing.

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use serde::{Deserialize, Serialize};

/// A compatibility level, spelled as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Level {
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
    None,
}

impl Level {
    /// Parses a level name as the API accepts it (case-insensitive).
    pub fn parse(s: &str) -> Option<Level> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_uppercase())).ok()
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Level::BackwardTransitive | Level::ForwardTransitive | Level::FullTransitive
        )
    }

    /// The same direction, checked against one version only.
    pub fn non_transitive(self) -> Level {
        match self {
            Level::BackwardTransitive => Level::Backward,
            Level::ForwardTransitive => Level::Forward,
            Level::FullTransitive => Level::Full,
            other => other,
        }
    }

    fn backward(self) -> bool {
        matches!(
            self,
            Level::Backward | Level::BackwardTransitive | Level::Full | Level::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            Level::Forward | Level::ForwardTransitive | Level::Full | Level::FullTransitive
        )
    }
}

/// Checks `new` against `earlier` (oldest first) at `level`; returns what is
/// incompatible, empty when the schema may be registered.
pub fn check(level: Level, new: &Schema, earlier: &[Schema]) -> Vec<String> {
    let against: &[Schema] = if level.transitive() {
        earlier
    } else {
        earlier.last().map(std::slice::from_ref).unwrap_or(&[])
    };
    let mut problems = Vec::new();
    for old in against {
        if level.backward() {
            if let Err(e) = SchemaCompatibility::can_read(old, new) {
                problems.push(format!(
                    "the new schema cannot read data written with an earlier one: {e}"
                ));
            }
        }
        if level.forward() {
            if let Err(e) = SchemaCompatibility::can_read(new, old) {
                problems.push(format!(
                    "an earlier schema cannot read data written with the new one: {e}"
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type":"record","name":"R","fields":[{fields}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn directions() {
        let a = s(r#"{"name":"a","type":"int"}"#);
        // Adds a field with no default: old data cannot fill it (not backward),
        // new data can be read by the old schema (forward).
        let b = s(r#"{"name":"a","type":"int"},{"name":"b","type":"int"}"#);
        let old = [a.clone()];
        assert!(!check(Level::Backward, &b, &old).is_empty());
        assert!(check(Level::Forward, &b, &old).is_empty());
        assert!(!check(Level::Full, &b, &old).is_empty());
        assert!(check(Level::None, &b, &old).is_empty());
        // With a default both ways work.
        let c = s(r#"{"name":"a","type":"int"},{"name":"b","type":"int","default":0}"#);
        assert!(check(Level::Full, &c, &old).is_empty());
    }

    #[test]
    fn transitive_checks_every_version() {
        let v1 = s(r#"{"name":"a","type":"int"}"#);
        let v2 = s(r#"{"name":"a","type":"int"},{"name":"b","type":"int","default":0}"#);
        // v3 drops the default of b: readable from v2 data (b present), not from v1 data.
        let v3 = s(r#"{"name":"a","type":"int"},{"name":"b","type":"int"}"#);
        let earlier = [v1, v2];
        assert!(check(Level::Backward, &v3, &earlier).is_empty());
        assert!(!check(Level::BackwardTransitive, &v3, &earlier).is_empty());
    }

    #[test]
    fn promotion_and_alias() {
        let v1 = s(r#"{"name":"n","type":"int"},{"name":"old","type":"string"}"#);
        let v3 =
            s(r#"{"name":"n","type":"long"},{"name":"new","type":"string","aliases":["old"]}"#);
        assert!(check(Level::Backward, &v3, std::slice::from_ref(&v1)).is_empty());
        // long -> int is not a promotion: not forward.
        assert!(!check(Level::Forward, &v3, &[v1]).is_empty());
    }

    #[test]
    fn level_names() {
        assert_eq!(Level::parse("full_transitive"), Some(Level::FullTransitive));
        assert_eq!(Level::parse("NONE"), Some(Level::None));
        assert_eq!(Level::parse("sideways"), None);
    }
}
