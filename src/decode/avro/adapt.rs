//! Prepares a writer-decoded value for `Value::resolve`, working around two
//! gaps of `apache_avro` 0.22:
//!
//! - reader field aliases: `SchemaCompatibility::can_read` honours them but
//!   `Value::resolve` matches fields by name only, so a field renamed through
//!   an alias would be read as missing. Such fields are renamed here first.
//! - `bytes` decimals: `Value::resolve` refuses a decimal whose encoded length
//!   could not hold the schema's full precision, but writers (Confluent's
//!   Java serializer among them) encode the minimal two's complement, so a
//!   small amount in a `decimal(12,2)` would be refused. Such values are
//!   sign-extended here (same number, longer encoding).
//!
//! The pass only runs for reader schemas that have aliases or bytes decimals.

use apache_avro::schema::{DecimalSchema, InnerDecimalSchema, Schema};
use apache_avro::types::Value;
use apache_avro::Decimal;

use super::json::Names;

/// Whether values read with `schema` need [`adapt`]: it declares a field alias
/// or a bytes-backed decimal.
pub fn needed(schema: &Schema, names: &Names) -> bool {
    fn walk(s: &Schema, names: &Names, seen: &mut Vec<String>) -> bool {
        match s {
            Schema::Record(r) => {
                let name = r.name.fullname(None);
                if seen.contains(&name) {
                    return false;
                }
                seen.push(name);
                r.fields
                    .iter()
                    .any(|f| !f.aliases.is_empty() || walk(&f.schema, names, seen))
            }
            Schema::Decimal(d) => matches!(d.inner, InnerDecimalSchema::Bytes),
            Schema::Array(a) => walk(&a.items, names, seen),
            Schema::Map(m) => walk(&m.types, names, seen),
            Schema::Union(u) => u.variants().iter().any(|v| walk(v, names, seen)),
            Schema::Ref { name } => names.get(name).is_some_and(|s| walk(s, names, seen)),
            _ => false,
        }
    }
    walk(schema, names, &mut Vec::new())
}

fn deref<'a>(s: &'a Schema, names: &'a Names) -> Option<&'a Schema> {
    match s {
        Schema::Ref { name } => names.get(name),
        s => Some(s),
    }
}

/// The union branch a non-union writer value will be resolved into.
fn branch<'a>(value: &Value, variants: &'a [Schema], names: &'a Names) -> Option<&'a Schema> {
    variants.iter().find_map(|v| {
        let s = deref(v, names)?;
        let fits = matches!(
            (value, s),
            (Value::Record(_), Schema::Record(_))
                | (Value::Array(_), Schema::Array(_))
                | (Value::Map(_), Schema::Map(_))
                | (Value::Decimal(_) | Value::Bytes(_), Schema::Decimal(_))
        );
        fits.then_some(s)
    })
}

/// Smallest two's complement length whose range holds every `precision`-digit
/// number, as `apache_avro` computes it.
fn bytes_for_precision(precision: usize) -> usize {
    (1..=64)
        .find(|&len: &usize| {
            ((2.0_f64).powi(8 * len as i32 - 1) - 1.0).log10().floor() as usize >= precision
        })
        .unwrap_or(64)
}

/// `d` sign-extended to hold `precision` digits, if it is shorter.
fn widen(d: &Decimal, precision: usize) -> Option<Decimal> {
    let raw = num_bigint::BigInt::from(d.clone()).to_signed_bytes_be();
    let need = bytes_for_precision(precision);
    if raw.len() >= need {
        return None;
    }
    let sign = if raw.first().is_some_and(|b| b & 0x80 != 0) {
        0xff
    } else {
        0
    };
    let mut bytes = vec![sign; need - raw.len()];
    bytes.extend_from_slice(&raw);
    Some(Decimal::from(bytes))
}

/// Adapts `value` in place for resolution to `reader`.
pub fn adapt(value: &mut Value, reader: &Schema, names: &Names) {
    let Some(reader) = deref(reader, names) else {
        return;
    };
    match (value, reader) {
        (Value::Union(_, inner), _) => adapt(inner, reader, names),
        (v, Schema::Union(u)) => {
            if let Some(b) = branch(v, u.variants(), names) {
                adapt(v, b, names);
            }
        }
        (Value::Record(fields), Schema::Record(r)) => {
            for i in 0..fields.len() {
                let Some(&pos) = r.lookup.get(&fields[i].0) else {
                    continue;
                };
                let Some(rf) = r.fields.get(pos) else {
                    continue;
                };
                let taken = fields.iter().any(|(n, _)| *n == rf.name);
                if fields[i].0 != rf.name && !taken {
                    fields[i].0 = rf.name.clone();
                }
                adapt(&mut fields[i].1, &rf.schema, names);
            }
        }
        (Value::Array(items), Schema::Array(a)) => {
            for v in items {
                adapt(v, &a.items, names);
            }
        }
        (Value::Map(entries), Schema::Map(m)) => {
            for v in entries.values_mut() {
                adapt(v, &m.types, names);
            }
        }
        (
            v @ (Value::Decimal(_) | Value::Bytes(_)),
            Schema::Decimal(DecimalSchema {
                precision,
                inner: InnerDecimalSchema::Bytes,
                ..
            }),
        ) => {
            let d = match v {
                Value::Decimal(d) => d.clone(),
                Value::Bytes(b) => Decimal::from(&b[..]),
                _ => return,
            };
            if let Some(wide) = widen(&d, *precision) {
                *v = Value::Decimal(wide);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::super::json::names_of;
    use super::*;

    #[test]
    fn renames_nested_fields_known_by_alias() {
        let reader = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[
                {"name":"customer","type":"string","aliases":["client"]},
                {"name":"lines","type":{"type":"array","items":{"type":"record","name":"L",
                    "fields":[{"name":"sku","type":"string","aliases":["code"]}]}}},
                {"name":"ship","type":["null",{"type":"record","name":"S",
                    "fields":[{"name":"city","type":"string","aliases":["town"]}]}],"default":null}
            ]}"#,
        )
        .unwrap();
        let names = names_of(&reader).unwrap();
        assert!(needed(&reader, &names));
        let mut value = Value::Record(vec![
            ("client".into(), Value::String("ann".into())),
            (
                "lines".into(),
                Value::Array(vec![Value::Record(vec![(
                    "code".into(),
                    Value::String("X1".into()),
                )])]),
            ),
            (
                "ship".into(),
                Value::Union(
                    1,
                    Box::new(Value::Record(vec![(
                        "town".into(),
                        Value::String("Oslo".into()),
                    )])),
                ),
            ),
        ]);
        adapt(&mut value, &reader, &names);
        let resolved = value.resolve(&reader).unwrap();
        let json = super::super::json::to_json(&resolved, &reader, &names);
        assert_eq!(
            json,
            serde_json::json!({"customer": "ann", "lines": [{"sku": "X1"}], "ship": {"city": "Oslo"}})
        );
    }

    #[test]
    fn a_field_present_under_its_own_name_wins_over_an_alias() {
        let reader = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[{"name":"b","type":"int","aliases":["a"]}]}"#,
        )
        .unwrap();
        let names = names_of(&reader).unwrap();
        let mut value = Value::Record(vec![
            ("a".into(), Value::Int(1)),
            ("b".into(), Value::Int(2)),
        ]);
        adapt(&mut value, &reader, &names);
        assert_eq!(
            value.resolve(&reader).unwrap(),
            Value::Record(vec![("b".into(), Value::Int(2))])
        );
    }

    #[test]
    fn short_bytes_decimals_are_widened_keeping_their_value() {
        let reader = Schema::parse_str(
            r#"{"type":"record","name":"R","fields":[
                {"name":"a","type":{"type":"bytes","logicalType":"decimal","precision":12,"scale":2}},
                {"name":"b","type":["null",{"type":"bytes","logicalType":"decimal","precision":30,"scale":0}]}
            ]}"#,
        )
        .unwrap();
        let names = names_of(&reader).unwrap();
        assert!(needed(&reader, &names));
        for n in [0i64, 1, -1, 127, -128, 12_345, -12_345, 999_999_999_999] {
            let bytes = num_bigint::BigInt::from(n).to_signed_bytes_be();
            let mut value = Value::Record(vec![
                ("a".into(), Value::Decimal(Decimal::from(&bytes[..]))),
                (
                    "b".into(),
                    Value::Union(1, Box::new(Value::Decimal(Decimal::from(&bytes[..])))),
                ),
            ]);
            adapt(&mut value, &reader, &names);
            let resolved = value.resolve(&reader).unwrap();
            let Value::Record(fields) = resolved else {
                panic!()
            };
            let Value::Decimal(a) = &fields[0].1 else {
                panic!()
            };
            assert_eq!(
                num_bigint::BigInt::from(a.clone()),
                num_bigint::BigInt::from(n)
            );
        }
        assert_eq!(bytes_for_precision(12), 6);
        assert_eq!(bytes_for_precision(2), 1);
    }
}
