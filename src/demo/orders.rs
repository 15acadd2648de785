//! Sample Avro order events in three schema versions, with known answers.
//!
//! `schemas/orders-v{1,2,3}.avsc`: v2 adds an optional `note` with a default;
//! v3 removes `status`, renames `customer` to `buyer` (alias `customer`) and
//! widens `meta.seq` from int to long. Every logical type Ordo renders
//! (uuid, decimal, timestamp-millis, timestamp-micros, date) is in each.

use apache_avro::types::Value;
use apache_avro::Schema;
use serde_json::json;

/// The schema texts, v1 to v3.
pub const SCHEMAS: [&str; 3] = [
    include_str!("../../schemas/orders-v1.avsc"),
    include_str!("../../schemas/orders-v2.avsc"),
    include_str!("../../schemas/orders-v3.avsc"),
];

/// The schema of `version` (1 to 3).
pub fn schema(version: usize) -> Schema {
    // The texts are compiled in and covered by tests.
    Schema::parse_str(SCHEMAS[version.clamp(1, 3) - 1]).expect("embedded schema parses")
}

fn order_id(stream: &str, seq: i64) -> String {
    let h = stream
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    format!(
        "{h:08x}-0000-4000-8000-{:012x}",
        seq as u64 & 0xffff_ffff_ffff
    )
}

fn unscaled_amount(seq: i64) -> i64 {
    seq * 101 + 5 - if seq % 5 == 0 { 20_000 } else { 0 }
}

fn placed_at_ms(seq: i64) -> i64 {
    1_700_000_000_000 + seq * 1000
}

fn note(seq: i64) -> Option<String> {
    (seq % 2 == 0).then(|| format!("note {seq}"))
}

/// Event `seq` of `stream` as written with schema `version`.
pub fn value(version: usize, stream: &str, seq: i64) -> Value {
    let amount = num_bigint::BigInt::from(unscaled_amount(seq)).to_signed_bytes_be();
    let uuid = apache_avro::Uuid::parse_str(&order_id(stream, seq)).unwrap_or_default();
    let seq_value = if version >= 3 {
        Value::Long(seq)
    } else {
        Value::Int(seq as i32)
    };
    let mut fields = vec![
        (
            "meta".to_string(),
            Value::Record(vec![
                ("stream".into(), Value::String(stream.into())),
                ("seq".into(), seq_value),
            ]),
        ),
        ("order_id".into(), Value::Uuid(uuid)),
        (
            if version >= 3 { "buyer" } else { "customer" }.into(),
            Value::String(format!("cust-{stream}")),
        ),
        ("qty".into(), Value::Int((seq % 7 + 1) as i32)),
        (
            "amount".into(),
            Value::Decimal(apache_avro::Decimal::from(amount)),
        ),
        (
            "placed_at".into(),
            Value::TimestampMillis(placed_at_ms(seq)),
        ),
        (
            "packed_at".into(),
            Value::TimestampMicros(placed_at_ms(seq) * 1000 + 123),
        ),
        ("due".into(), Value::Date(19_675 + (seq % 30) as i32)),
    ];
    if version <= 2 {
        let status = if seq % 3 == 0 { "paid" } else { "open" };
        fields.push(("status".into(), Value::String(status.into())));
    }
    if version >= 2 {
        let n = match note(seq) {
            Some(n) => Value::Union(1, Box::new(Value::String(n))),
            None => Value::Union(0, Box::new(Value::Null)),
        };
        fields.push(("note".into(), n));
    }
    Value::Record(fields)
}

/// The Avro body of `value` written with `schema`.
pub fn datum(schema: &Schema, value: Value) -> Vec<u8> {
    apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()
        .and_then(|w| w.write_value_to_vec(value))
        .expect("sample values conform to their schema")
}

/// Confluent's framing: magic byte 0, the schema id, the Avro body.
pub fn frame(schema_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Event `seq` of `stream` encoded with schema `version` registered as `schema_id`.
pub fn encode(version: usize, schema_id: u32, stream: &str, seq: i64) -> Vec<u8> {
    let schema = schema(version);
    let body = datum(&schema, value(version, stream, seq));
    frame(schema_id, &body)
}

fn decimal_text(unscaled: i64) -> String {
    let sign = if unscaled < 0 { "-" } else { "" };
    let a = unscaled.unsigned_abs();
    format!("{sign}{}.{:02}", a / 100, a % 100)
}

fn iso_date(days_since_epoch: i64) -> String {
    // Civil-from-days (Howard Hinnant), independent of the decoder's own formatting.
    let z = days_since_epoch + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}")
}

fn iso_time(ms: i64, micros: Option<i64>) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (h, m, s) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60);
    let frac = match micros {
        Some(us) => format!("{:06}", (rem % 1000) * 1000 + us),
        None => format!("{:03}", rem % 1000),
    };
    format!("{}T{h:02}:{m:02}:{s:02}.{frac}Z", iso_date(days))
}

/// The JSON Ordo must land for event `seq` of `stream`, written with
/// `writer` and read with reader schema `reader`.
pub fn expected(writer: usize, reader: usize, stream: &str, seq: i64) -> serde_json::Value {
    let ms = placed_at_ms(seq);
    let mut v = json!({
        "meta": {"stream": stream, "seq": seq},
        "order_id": order_id(stream, seq),
        "qty": seq % 7 + 1,
        "amount": decimal_text(unscaled_amount(seq)),
        "placed_at": iso_time(ms, None),
        "packed_at": iso_time(ms, Some(123)),
        "due": iso_date(19_675 + seq % 30),
    });
    let customer = format!("cust-{stream}");
    if reader >= 3 {
        v["buyer"] = json!(customer);
        v["note"] = if writer >= 2 {
            json!(note(seq))
        } else {
            json!(null)
        };
    } else {
        v["customer"] = json!(customer);
        // Written by v3 (no status): the reader's default.
        let status = match writer {
            3 => "open",
            _ if seq % 3 == 0 => "paid",
            _ => "open",
        };
        v["status"] = json!(status);
        if reader == 2 {
            v["note"] = if writer >= 2 {
                json!(note(seq))
            } else {
                json!(null)
            };
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_parse_and_samples_encode() {
        for version in 1..=3 {
            let bytes = encode(version, 7, "s-1", 10);
            assert_eq!(&bytes[..5], &[0, 0, 0, 0, 7]);
        }
        assert_eq!(iso_date(0), "1970-01-01");
        assert_eq!(iso_date(19_675), "2023-11-14");
        assert_eq!(
            iso_time(1_700_000_000_123, None),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(decimal_text(-19_495), "-194.95");
    }
}
