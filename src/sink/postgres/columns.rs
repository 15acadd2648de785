//! Typed columns: payload fields (dotted paths) copied into columns of their
//! own PostgreSQL type, listed in `[sink.postgres] columns` or derived from
//! the Avro reader schema (`auto_columns`). Values travel as text and are
//! cast by PostgreSQL, so a value a column cannot take is refused by the
//! database for that event alone (and dead-lettered), never coerced.

use serde::Deserialize;
use serde_json::Value;

use crate::decode::extract::FieldPath;

/// A column's PostgreSQL type: the ones a payload value maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum PgType {
    #[serde(rename = "boolean")]
    Boolean,
    #[serde(rename = "smallint")]
    SmallInt,
    #[serde(rename = "integer")]
    Integer,
    #[serde(rename = "bigint")]
    BigInt,
    #[serde(rename = "numeric")]
    Numeric,
    #[serde(rename = "real")]
    Real,
    #[serde(rename = "double precision")]
    Double,
    #[serde(rename = "text")]
    Text,
    #[serde(rename = "bytea")]
    Bytea,
    #[serde(rename = "uuid")]
    Uuid,
    #[serde(rename = "date")]
    Date,
    #[serde(rename = "time")]
    Time,
    #[serde(rename = "timestamp")]
    Timestamp,
    #[serde(rename = "timestamptz")]
    Timestamptz,
    #[serde(rename = "jsonb")]
    Jsonb,
}

/// The type names `columns` accepts, as a user writes them.
pub const TYPE_NAMES: &[&str] = &[
    "boolean",
    "smallint",
    "integer",
    "bigint",
    "numeric",
    "real",
    "double precision",
    "text",
    "bytea",
    "uuid",
    "date",
    "time",
    "timestamp",
    "timestamptz",
    "jsonb",
];

impl PgType {
    /// The type in DDL.
    pub fn sql(self) -> &'static str {
        match self {
            PgType::Boolean => "boolean",
            PgType::SmallInt => "smallint",
            PgType::Integer => "integer",
            PgType::BigInt => "bigint",
            PgType::Numeric => "numeric",
            PgType::Real => "real",
            PgType::Double => "double precision",
            PgType::Text => "text",
            PgType::Bytea => "bytea",
            PgType::Uuid => "uuid",
            PgType::Date => "date",
            PgType::Time => "time",
            PgType::Timestamp => "timestamp",
            PgType::Timestamptz => "timestamptz",
            PgType::Jsonb => "jsonb",
        }
    }

    /// The type as `information_schema.columns.data_type` names it.
    pub fn from_catalog(data_type: &str) -> Option<PgType> {
        Some(match data_type {
            "boolean" => PgType::Boolean,
            "smallint" => PgType::SmallInt,
            "integer" => PgType::Integer,
            "bigint" => PgType::BigInt,
            "numeric" => PgType::Numeric,
            "real" => PgType::Real,
            "double precision" => PgType::Double,
            "text" | "character varying" => PgType::Text,
            "bytea" => PgType::Bytea,
            "uuid" => PgType::Uuid,
            "date" => PgType::Date,
            "time without time zone" => PgType::Time,
            "timestamp without time zone" => PgType::Timestamp,
            "timestamp with time zone" => PgType::Timestamptz,
            "jsonb" => PgType::Jsonb,
            _ => return None,
        })
    }

    /// The SQL turning the text parameter `v` into this type.
    pub fn cast(self, v: &str) -> String {
        match self {
            // Bytes travel as the base64 text JSON renders them as.
            PgType::Bytea => format!("decode({v}, 'base64')"),
            other => format!("{v}::{}", other.sql()),
        }
    }

    /// Whether a column of this type holds every value of `narrower`
    /// exactly, so a column of this type may stay when a field becomes
    /// `narrower`, and may become this type when it was `narrower`.
    pub fn holds(self, narrower: PgType) -> bool {
        use PgType::*;
        self == narrower
            || matches!(
                (self, narrower),
                (Integer, SmallInt)
                    | (BigInt, SmallInt | Integer)
                    | (Numeric, SmallInt | Integer | BigInt)
                    | (Double, SmallInt | Integer | Real)
                    | (Real, SmallInt)
            )
    }

    /// The text sent for a payload value, or `None` for SQL `NULL`.
    pub fn text_of(self, v: &Value) -> Option<String> {
        match (self, v) {
            (_, Value::Null) => None,
            (PgType::Jsonb, v) => Some(v.to_string()),
            (_, Value::String(s)) => Some(s.clone()),
            (_, v) => Some(v.to_string()),
        }
    }
}

/// A typed column.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    /// The column's name.
    pub name: String,
    /// The payload field it holds.
    pub path: FieldPath,
    /// Its PostgreSQL type.
    #[serde(rename = "type")]
    pub pg_type: PgType,
}

/// How an Avro record field becomes columns with `auto_columns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AutoColumns {
    /// A nested record is one `jsonb` column.
    Jsonb,
    /// A nested record's fields are columns of their own, `parent_child`.
    Flatten,
}

/// The columns an Avro reader schema gives, one per field (nested records
/// as `auto` says), every one nullable.
pub fn from_avro(schema: &apache_avro::Schema, auto: AutoColumns) -> Result<Vec<Column>, String> {
    let apache_avro::Schema::Record(record) = schema else {
        return Err("the reader schema is not a record".into());
    };
    let mut out = vec![];
    add_fields(record, &[], auto, &mut out);
    Ok(out)
}

fn add_fields(
    record: &apache_avro::schema::RecordSchema,
    prefix: &[String],
    auto: AutoColumns,
    out: &mut Vec<Column>,
) {
    for field in &record.fields {
        let mut path = prefix.to_vec();
        path.push(field.name.clone());
        let inner = nullable_inner(&field.schema);
        match (inner, auto) {
            (apache_avro::Schema::Record(nested), AutoColumns::Flatten) => {
                add_fields(nested, &path, auto, out)
            }
            (schema, _) => out.push(Column {
                name: path.join("_"),
                path: FieldPath(path),
                pg_type: pg_type_of(schema),
            }),
        }
    }
}

/// `T` of a `["null", T]` union; the schema itself otherwise.
fn nullable_inner(schema: &apache_avro::Schema) -> &apache_avro::Schema {
    if let apache_avro::Schema::Union(u) = schema {
        let non_null: Vec<&apache_avro::Schema> = u
            .variants()
            .iter()
            .filter(|s| !matches!(s, apache_avro::Schema::Null))
            .collect();
        if let [only] = non_null[..] {
            return only;
        }
    }
    schema
}

/// The PostgreSQL type an Avro type renders into.
fn pg_type_of(schema: &apache_avro::Schema) -> PgType {
    use apache_avro::Schema as S;
    match schema {
        S::Boolean => PgType::Boolean,
        S::Int => PgType::Integer,
        S::Long => PgType::BigInt,
        S::Float => PgType::Real,
        S::Double => PgType::Double,
        S::String | S::Enum(_) => PgType::Text,
        S::Bytes | S::Fixed(_) => PgType::Bytea,
        S::Decimal(_) | S::BigDecimal => PgType::Numeric,
        S::Uuid(_) => PgType::Uuid,
        S::Date => PgType::Date,
        S::TimeMillis | S::TimeMicros => PgType::Time,
        S::TimestampMillis | S::TimestampMicros | S::TimestampNanos => PgType::Timestamptz,
        S::LocalTimestampMillis | S::LocalTimestampMicros | S::LocalTimestampNanos => {
            PgType::Timestamp
        }
        _ => PgType::Jsonb,
    }
}

/// The value at `path` of a document, if it has one there.
pub fn at<'a>(doc: &'a Value, path: &FieldPath) -> Option<&'a Value> {
    path.0
        .iter()
        .try_fold(doc, |v, segment| v.as_object()?.get(segment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_name_is_accepted_and_round_trips_through_the_catalog() {
        for name in TYPE_NAMES {
            let t: PgType = serde_json::from_value(Value::String(name.to_string())).unwrap();
            assert_eq!(t.sql(), *name);
        }
        assert_eq!(
            PgType::from_catalog("timestamp with time zone"),
            Some(PgType::Timestamptz)
        );
        assert_eq!(PgType::from_catalog("integer"), Some(PgType::Integer));
        assert_eq!(PgType::from_catalog("money"), None);
    }

    #[test]
    fn wider_types_hold_narrower_ones_and_nothing_else() {
        assert!(PgType::BigInt.holds(PgType::Integer));
        assert!(PgType::Numeric.holds(PgType::BigInt));
        assert!(PgType::Double.holds(PgType::Real));
        assert!(!PgType::Integer.holds(PgType::BigInt));
        assert!(
            !PgType::Double.holds(PgType::BigInt),
            "not exactly above 2^53"
        );
        assert!(!PgType::Double.holds(PgType::Numeric));
        assert!(!PgType::Numeric.holds(PgType::Double));
        assert!(!PgType::Text.holds(PgType::Integer));
        // A date becomes midnight in the session's time zone: not exact.
        assert!(!PgType::Timestamptz.holds(PgType::Date));
    }

    #[test]
    fn values_travel_as_text_and_nulls_as_null() {
        assert_eq!(
            PgType::Numeric.text_of(&Value::String("12.30".into())),
            Some("12.30".into())
        );
        assert_eq!(
            PgType::BigInt.text_of(&serde_json::json!(42)),
            Some("42".into())
        );
        assert_eq!(PgType::Text.text_of(&Value::Null), None);
        assert_eq!(
            PgType::Jsonb.text_of(&serde_json::json!({"a": "b"})),
            Some(r#"{"a":"b"}"#.into())
        );
        assert_eq!(
            PgType::Jsonb.text_of(&serde_json::json!("s")),
            Some("\"s\"".into())
        );
        assert_eq!(PgType::Bytea.cast("$1"), "decode($1, 'base64')");
        assert_eq!(PgType::Double.cast("c"), "c::double precision");
    }

    #[test]
    fn avro_fields_become_typed_columns() {
        let schema = apache_avro::Schema::parse_str(crate::demo::orders::SCHEMAS[2]).unwrap();
        let flat = from_avro(&schema, AutoColumns::Flatten).unwrap();
        let cols: Vec<(String, &str)> = flat
            .iter()
            .map(|c| (c.name.clone(), c.pg_type.sql()))
            .collect();
        let want = [
            ("meta_stream", "text"),
            ("meta_seq", "bigint"),
            ("order_id", "uuid"),
            ("buyer", "text"),
            ("qty", "integer"),
            ("amount", "numeric"),
            ("placed_at", "timestamptz"),
            ("packed_at", "timestamptz"),
            ("due", "date"),
            ("note", "text"),
        ];
        assert_eq!(
            cols,
            want.iter()
                .map(|(n, t)| (n.to_string(), *t))
                .collect::<Vec<_>>()
        );
        assert_eq!(flat[1].path.to_string(), "meta.seq");
        let nested = from_avro(&schema, AutoColumns::Jsonb).unwrap();
        assert_eq!(
            (nested[0].name.as_str(), nested[0].pg_type),
            ("meta", PgType::Jsonb)
        );
        let doc = serde_json::json!({"meta": {"seq": 3}});
        assert_eq!(at(&doc, &flat[1].path), Some(&serde_json::json!(3)));
    }
}
