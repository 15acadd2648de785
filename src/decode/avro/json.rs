//! Turns a resolved Avro value into JSON for the sink, keeping what logical
//! types mean: decimals as exact decimal strings, timestamps as RFC 3339,
//! dates and times in ISO 8601, UUIDs as text. Unions become their branch's
//! value; bytes and fixed become base64.

use std::collections::HashMap;

use apache_avro::schema::{Name, Schema};
use apache_avro::types::Value;
use base64::Engine;
use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value as Json;

/// Named types of a schema, to follow `Ref`s.
pub type Names = HashMap<Name, Schema>;

/// The named types defined in `schema`.
pub fn names_of(schema: &Schema) -> Result<Names, apache_avro::Error> {
    let resolved = apache_avro::schema::ResolvedSchema::try_from(schema)?;
    Ok(resolved
        .get_names()
        .iter()
        .map(|(n, s)| (n.clone(), (*s).clone()))
        .collect())
}

/// `value`, which conforms to `schema`, rendered as JSON as it is serialized
/// (straight to text, or to a [`Json`] value); no intermediate tree.
pub struct Rendered<'a> {
    pub value: &'a Value,
    pub schema: &'a Schema,
    pub names: &'a Names,
}

/// Renders `value`, which conforms to `schema`, as a JSON value.
pub fn to_json(value: &Value, schema: &Schema, names: &Names) -> Json {
    let rendered = Rendered {
        value,
        schema,
        names,
    };
    // Rendering has no failure case: every map key is a string and
    // non-finite floats are rendered as text.
    serde_json::to_value(rendered).unwrap_or(Json::Null)
}

/// Renders `value`, which conforms to `schema`, as JSON text.
pub fn to_text(value: &Value, schema: &Schema, names: &Names) -> Result<String, serde_json::Error> {
    serde_json::to_string(&Rendered {
        value,
        schema,
        names,
    })
}

impl Serialize for Rendered<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let names = self.names;
        let schema = match self.schema {
            Schema::Ref { name } => names.get(name).unwrap_or(self.schema),
            other => other,
        };
        let at = |value, schema| Rendered {
            value,
            schema,
            names,
        };
        match (self.value, schema) {
            (Value::Union(i, inner), Schema::Union(u)) => match u.variants().get(*i as usize) {
                Some(branch) => at(inner, branch).serialize(s),
                None => at(inner, &Schema::Null).serialize(s),
            },
            (Value::Union(_, inner), other) => at(inner, other).serialize(s),
            (Value::Record(fields), Schema::Record(r)) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (name, v) in fields {
                    let field_schema = r
                        .lookup
                        .get(name)
                        .and_then(|&i| r.fields.get(i))
                        .map(|f| &f.schema)
                        .unwrap_or(&Schema::Null);
                    map.serialize_entry(name, &at(v, field_schema))?;
                }
                map.end()
            }
            (Value::Array(items), Schema::Array(a)) => {
                s.collect_seq(items.iter().map(|v| at(v, &a.items)))
            }
            (Value::Map(entries), Schema::Map(m)) => {
                s.collect_map(entries.iter().map(|(k, v)| (k, at(v, &m.types))))
            }
            (Value::Decimal(d), Schema::Decimal(ds)) => {
                let unscaled = num_bigint::BigInt::from(d.clone());
                s.serialize_str(&with_scale(&unscaled.to_string(), ds.scale))
            }
            (v, _) => Scalar(v).serialize(s),
        }
    }
}

/// A value on its own (where the schema adds nothing).
struct Scalar<'a>(&'a Value);

/// `value` rendered on its own, as a part of a record is.
pub fn scalar(value: &Value) -> impl Serialize + '_ {
    Scalar(value)
}

/// Bytes as JSON has them: base64 text.
pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Serialize for Scalar<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Boolean(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i32(*i),
            Value::Long(l) => s.serialize_i64(*l),
            Value::Float(f) => float(f64::from(*f), s),
            Value::Double(f) => float(*f, s),
            Value::Bytes(b) | Value::Fixed(_, b) => s.serialize_str(&base64(b)),
            Value::String(v) | Value::Enum(_, v) => s.serialize_str(v),
            Value::Union(_, inner) => Scalar(inner).serialize(s),
            Value::Array(items) => s.collect_seq(items.iter().map(Scalar)),
            Value::Map(m) => s.collect_map(m.iter().map(|(k, v)| (k, Scalar(v)))),
            Value::Record(fields) => s.collect_map(fields.iter().map(|(k, v)| (k, Scalar(v)))),
            Value::Date(days) => text(
                // `NaiveDate`'s Display is ISO 8601 (`2023-11-14`).
                NaiveDate::from_num_days_from_ce_opt(days.saturating_add(719_163))
                    .map(|d| d.to_string()),
                *days as i64,
                s,
            ),
            Value::Decimal(d) => s.serialize_str(&num_bigint::BigInt::from(d.clone()).to_string()),
            Value::BigDecimal(d) => s.serialize_str(&d.to_string()),
            Value::TimeMillis(ms) => text(time(*ms as i64 * 1_000_000, 3), *ms as i64, s),
            Value::TimeMicros(us) => text(time(us.saturating_mul(1000), 6), *us, s),
            Value::TimestampMillis(ms) => text(
                DateTime::from_timestamp_millis(*ms)
                    .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
                *ms,
                s,
            ),
            Value::TimestampMicros(us) => text(
                DateTime::from_timestamp_micros(*us)
                    .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true)),
                *us,
                s,
            ),
            Value::TimestampNanos(ns) => s.serialize_str(
                &DateTime::from_timestamp_nanos(*ns).to_rfc3339_opts(SecondsFormat::Nanos, true),
            ),
            Value::LocalTimestampMillis(ms) => text(
                DateTime::from_timestamp_millis(*ms)
                    .map(|t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.3f").to_string()),
                *ms,
                s,
            ),
            Value::LocalTimestampMicros(us) => text(
                DateTime::from_timestamp_micros(*us)
                    .map(|t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string()),
                *us,
                s,
            ),
            Value::LocalTimestampNanos(ns) => s.serialize_str(
                &DateTime::from_timestamp_nanos(*ns)
                    .naive_utc()
                    .format("%Y-%m-%dT%H:%M:%S%.9f")
                    .to_string(),
            ),
            Value::Duration(d) => {
                let mut map = s.serialize_map(Some(3))?;
                map.serialize_entry("months", &u32::from(d.months()))?;
                map.serialize_entry("days", &u32::from(d.days()))?;
                map.serialize_entry("millis", &u32::from(d.millis()))?;
                map.end()
            }
            Value::Uuid(u) => s.serialize_str(&u.hyphenated().to_string()),
        }
    }
}

/// A formatted value, or the raw number when it is out of the representable range.
fn text<S: Serializer>(formatted: Option<String>, raw: i64, s: S) -> Result<S::Ok, S::Error> {
    match formatted {
        Some(t) => s.serialize_str(&t),
        None => s.serialize_i64(raw),
    }
}

fn float<S: Serializer>(f: f64, s: S) -> Result<S::Ok, S::Error> {
    if f.is_finite() {
        s.serialize_f64(f)
    } else {
        // JSON has no NaN or infinity; keep them as text rather than losing them.
        s.serialize_str(&f.to_string())
    }
}

/// Time of day from nanoseconds since midnight, with `digits` fractional digits.
fn time(nanos: i64, digits: usize) -> Option<String> {
    let secs = u32::try_from(nanos.div_euclid(1_000_000_000)).ok()?;
    let frac = u32::try_from(nanos.rem_euclid(1_000_000_000)).ok()?;
    let t = NaiveTime::from_num_seconds_from_midnight_opt(secs, frac)?;
    let f = if digits == 3 {
        "%H:%M:%S%.3f"
    } else {
        "%H:%M:%S%.6f"
    };
    Some(t.format(f).to_string())
}

/// Places the decimal point `scale` digits from the right of an integer's digits.
pub fn with_scale(unscaled: &str, scale: usize) -> String {
    let (sign, digits) = match unscaled.strip_prefix('-') {
        Some(d) => ("-", d),
        None => ("", unscaled),
    };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(schema: &str, value: Value) -> Json {
        let schema = Schema::parse_str(schema).unwrap();
        let names = names_of(&schema).unwrap();
        let mut value = value;
        super::super::adapt::adapt(&mut value, &schema, &names);
        let value = value.resolve(&schema).unwrap();
        to_json(&value, &schema, &names)
    }

    #[test]
    fn decimals_keep_their_scale() {
        assert_eq!(with_scale("12345", 2), "123.45");
        assert_eq!(with_scale("-5", 3), "-0.005");
        assert_eq!(with_scale("7", 0), "7");
        assert_eq!(with_scale("0", 2), "0.00");
        let schema = r#"{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}"#;
        // 12345 unscaled, big-endian two's complement.
        let v = Value::Decimal(apache_avro::Decimal::from(vec![0x30, 0x39]));
        assert_eq!(render(schema, v), json!("123.45"));
        let v = Value::Decimal(apache_avro::Decimal::from(vec![0xff, 0x85])); // -123
        assert_eq!(render(schema, v), json!("-1.23"));
    }

    #[test]
    fn times_and_dates_are_iso_8601() {
        let ts = r#"{"type":"long","logicalType":"timestamp-millis"}"#;
        assert_eq!(
            render(ts, Value::TimestampMillis(1_700_000_000_123)),
            json!("2023-11-14T22:13:20.123Z")
        );
        let ts = r#"{"type":"long","logicalType":"timestamp-micros"}"#;
        assert_eq!(
            render(ts, Value::TimestampMicros(1_700_000_000_123_456)),
            json!("2023-11-14T22:13:20.123456Z")
        );
        let d = r#"{"type":"int","logicalType":"date"}"#;
        assert_eq!(render(d, Value::Date(19_675)), json!("2023-11-14"));
        assert_eq!(render(d, Value::Date(-1)), json!("1969-12-31"));
        let t = r#"{"type":"int","logicalType":"time-millis"}"#;
        assert_eq!(
            render(t, Value::TimeMillis(3_723_004)),
            json!("01:02:03.004")
        );
        let l = r#"{"type":"long","logicalType":"local-timestamp-millis"}"#;
        assert_eq!(
            render(l, Value::LocalTimestampMillis(0)),
            json!("1970-01-01T00:00:00.000")
        );
    }

    #[test]
    fn uuid_union_enum_bytes_and_nesting() {
        let schema = r#"{"type":"record","name":"R","fields":[
            {"name":"id","type":{"type":"string","logicalType":"uuid"}},
            {"name":"note","type":["null","string"]},
            {"name":"kind","type":{"type":"enum","name":"K","symbols":["A","B"]}},
            {"name":"raw","type":"bytes"},
            {"name":"tags","type":{"type":"map","values":"long"}},
            {"name":"items","type":{"type":"array","items":{"type":"record","name":"I","fields":[
                {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":5,"scale":1}}]}}},
            {"name":"ratio","type":"double"}
        ]}"#;
        let uuid = apache_avro::Uuid::parse_str("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        let value = Value::Record(vec![
            ("id".into(), Value::Uuid(uuid)),
            (
                "note".into(),
                Value::Union(1, Box::new(Value::String("hi".into()))),
            ),
            ("kind".into(), Value::Enum(1, "B".into())),
            ("raw".into(), Value::Bytes(vec![1, 2, 3])),
            (
                "tags".into(),
                Value::Map([("a".to_string(), Value::Long(1))].into()),
            ),
            (
                "items".into(),
                Value::Array(vec![Value::Record(vec![(
                    "price".into(),
                    Value::Decimal(apache_avro::Decimal::from(vec![0x01, 0x00])),
                )])]),
            ),
            ("ratio".into(), Value::Double(f64::NAN)),
        ]);
        assert_eq!(
            render(schema, value),
            json!({
                "id": "67e55044-10b1-426f-9247-bb680e5fe0c8",
                "note": "hi",
                "kind": "B",
                "raw": "AQID",
                "tags": {"a": 1},
                "items": [{"price": "25.6"}],
                "ratio": "NaN",
            })
        );
    }
}
