//! Turns a resolved Avro value into JSON for the sink, keeping what logical
//! types mean: decimals as exact decimal strings, timestamps as RFC 3339,
//! dates and times in ISO 8601, UUIDs as text. Unions become their branch's
//! value; bytes and fixed become base64.

use std::collections::HashMap;

use apache_avro::schema::{Name, Schema};
use apache_avro::types::Value;
use base64::Engine;
use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat};
use serde_json::{Map, Number, Value as Json};

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

/// Renders `value`, which conforms to `schema`, as JSON.
pub fn to_json(value: &Value, schema: &Schema, names: &Names) -> Json {
    let schema = match schema {
        Schema::Ref { name } => names.get(name).unwrap_or(schema),
        s => s,
    };
    match (value, schema) {
        (Value::Union(i, inner), Schema::Union(u)) => match u.variants().get(*i as usize) {
            Some(branch) => to_json(inner, branch, names),
            None => to_json(inner, &Schema::Null, names),
        },
        (Value::Union(_, inner), s) => to_json(inner, s, names),
        (Value::Record(fields), Schema::Record(r)) => {
            let mut map = Map::with_capacity(fields.len());
            for (name, v) in fields {
                let field_schema = r
                    .lookup
                    .get(name)
                    .and_then(|&i| r.fields.get(i))
                    .map(|f| &f.schema)
                    .unwrap_or(&Schema::Null);
                map.insert(name.clone(), to_json(v, field_schema, names));
            }
            Json::Object(map)
        }
        (Value::Array(items), Schema::Array(a)) => {
            Json::Array(items.iter().map(|v| to_json(v, &a.items, names)).collect())
        }
        (Value::Map(entries), Schema::Map(m)) => Json::Object(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v, &m.types, names)))
                .collect(),
        ),
        (Value::Decimal(d), Schema::Decimal(ds)) => {
            let unscaled = num_bigint::BigInt::from(d.clone());
            Json::String(with_scale(&unscaled.to_string(), ds.scale))
        }
        (v, _) => scalar(v),
    }
}

/// Renders a value on its own (where the schema adds nothing).
fn scalar(value: &Value) -> Json {
    let b64 = |b: &[u8]| Json::String(base64::engine::general_purpose::STANDARD.encode(b));
    match value {
        Value::Null => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Long(l) => Json::from(*l),
        Value::Float(f) => float(f64::from(*f)),
        Value::Double(f) => float(*f),
        Value::Bytes(b) | Value::Fixed(_, b) => b64(b),
        Value::String(s) | Value::Enum(_, s) => Json::String(s.clone()),
        Value::Union(_, inner) => scalar(inner),
        Value::Array(items) => Json::Array(items.iter().map(scalar).collect()),
        Value::Map(m) => Json::Object(m.iter().map(|(k, v)| (k.clone(), scalar(v))).collect()),
        Value::Record(fields) => {
            Json::Object(fields.iter().map(|(k, v)| (k.clone(), scalar(v))).collect())
        }
        Value::Date(days) => text(
            // `NaiveDate`'s Display is ISO 8601 (`2023-11-14`).
            NaiveDate::from_num_days_from_ce_opt(days.saturating_add(719_163))
                .map(|d| d.to_string()),
            *days as i64,
        ),
        Value::Decimal(d) => Json::String(num_bigint::BigInt::from(d.clone()).to_string()),
        Value::BigDecimal(d) => Json::String(d.to_string()),
        Value::TimeMillis(ms) => text(time(*ms as i64 * 1_000_000, 3), *ms as i64),
        Value::TimeMicros(us) => text(time(us.saturating_mul(1000), 6), *us),
        Value::TimestampMillis(ms) => text(
            DateTime::from_timestamp_millis(*ms)
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true)),
            *ms,
        ),
        Value::TimestampMicros(us) => text(
            DateTime::from_timestamp_micros(*us)
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true)),
            *us,
        ),
        Value::TimestampNanos(ns) => Json::String(
            DateTime::from_timestamp_nanos(*ns).to_rfc3339_opts(SecondsFormat::Nanos, true),
        ),
        Value::LocalTimestampMillis(ms) => text(
            DateTime::from_timestamp_millis(*ms)
                .map(|t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.3f").to_string()),
            *ms,
        ),
        Value::LocalTimestampMicros(us) => text(
            DateTime::from_timestamp_micros(*us)
                .map(|t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S%.6f").to_string()),
            *us,
        ),
        Value::LocalTimestampNanos(ns) => Json::String(
            DateTime::from_timestamp_nanos(*ns)
                .naive_utc()
                .format("%Y-%m-%dT%H:%M:%S%.9f")
                .to_string(),
        ),
        Value::Duration(d) => serde_json::json!({
            "months": u32::from(d.months()),
            "days": u32::from(d.days()),
            "millis": u32::from(d.millis()),
        }),
        Value::Uuid(u) => Json::String(u.hyphenated().to_string()),
    }
}

/// A formatted value, or the raw number when it is out of the representable range.
fn text(formatted: Option<String>, raw: i64) -> Json {
    formatted
        .map(Json::String)
        .unwrap_or_else(|| Json::from(raw))
}

fn float(f: f64) -> Json {
    match Number::from_f64(f) {
        Some(n) => Json::Number(n),
        // JSON has no NaN or infinity; keep them as text rather than losing them.
        None => Json::String(f.to_string()),
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
fn with_scale(unscaled: &str, scale: usize) -> String {
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
