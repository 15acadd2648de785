use super::*;
use apache_avro::reader::datum::GenericDatumReader;

/// Every type and evolution a plan covers.
const WRITER: &str = r#"{"type":"record","name":"E","namespace":"t","fields":[
    {"name":"id","type":{"type":"string","logicalType":"uuid"}},
    {"name":"n","type":"int"},
    {"name":"big","type":"long"},
    {"name":"f","type":"float"},
    {"name":"d","type":"double"},
    {"name":"i2f","type":"int"},
    {"name":"l2d","type":"long"},
    {"name":"ok","type":"boolean"},
    {"name":"raw","type":"bytes"},
    {"name":"text","type":"string"},
    {"name":"opt","type":["null","string"]},
    {"name":"kind","type":{"type":"enum","name":"K","symbols":["A","B","C"]}},
    {"name":"fx","type":{"type":"fixed","name":"F4","size":4}},
    {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":12,"scale":2}},
    {"name":"famount","type":{"type":"fixed","name":"F8","size":8,"logicalType":"decimal","precision":18,"scale":4}},
    {"name":"day","type":{"type":"int","logicalType":"date"}},
    {"name":"tm","type":{"type":"int","logicalType":"time-millis"}},
    {"name":"tu","type":{"type":"long","logicalType":"time-micros"}},
    {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"tsu","type":{"type":"long","logicalType":"timestamp-micros"}},
    {"name":"lts","type":{"type":"long","logicalType":"local-timestamp-millis"}},
    {"name":"tags","type":{"type":"map","values":"long"}},
    {"name":"lines","type":{"type":"array","items":{"type":"record","name":"L","fields":[
        {"name":"sku","type":"string"},{"name":"q","type":"int"}]}}},
    {"name":"ship","type":["null","L"]},
    {"name":"gone","type":{"type":"array","items":{"type":"map","values":["null","double"]}}},
    {"name":"old_name","type":"string"}
]}"#;

/// `WRITER` evolved: promotions, a field dropped, one renamed through an
/// alias, fields added with defaults, another order.
const READER: &str = r#"{"type":"record","name":"E","namespace":"t","fields":[
    {"name":"text","type":"string"},
    {"name":"id","type":{"type":"string","logicalType":"uuid"}},
    {"name":"n","type":"long"},
    {"name":"big","type":"long"},
    {"name":"f","type":"double"},
    {"name":"d","type":"double"},
    {"name":"i2f","type":"float"},
    {"name":"l2d","type":"double"},
    {"name":"ok","type":"boolean"},
    {"name":"raw","type":"bytes"},
    {"name":"opt","type":["null","string"]},
    {"name":"kind","type":{"type":"enum","name":"K","symbols":["A","B","C","D"]}},
    {"name":"fx","type":{"type":"fixed","name":"F4","size":4}},
    {"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":12,"scale":2}},
    {"name":"famount","type":{"type":"fixed","name":"F8","size":8,"logicalType":"decimal","precision":18,"scale":4}},
    {"name":"day","type":{"type":"int","logicalType":"date"}},
    {"name":"tm","type":{"type":"int","logicalType":"time-millis"}},
    {"name":"tu","type":{"type":"long","logicalType":"time-micros"}},
    {"name":"ts","type":{"type":"long","logicalType":"timestamp-millis"}},
    {"name":"tsu","type":{"type":"long","logicalType":"timestamp-micros"}},
    {"name":"lts","type":{"type":"long","logicalType":"local-timestamp-millis"}},
    {"name":"tags","type":{"type":"map","values":"double"}},
    {"name":"lines","type":{"type":"array","items":{"type":"record","name":"L","fields":[
        {"name":"sku","type":"string"},{"name":"q","type":"long"},
        {"name":"note","type":"string","default":"none"}]}}},
    {"name":"ship","type":["null","L"]},
    {"name":"new_name","type":"string","aliases":["old_name"]},
    {"name":"added_s","type":"string","default":"x \"quoted\""},
    {"name":"added_opt","type":["null","int"],"default":null},
    {"name":"added_int","type":"int","default":7},
    {"name":"added_u2","type":["string","null"],"default":"hey"},
    {"name":"added_ts","type":{"type":"long","logicalType":"timestamp-millis"},"default":0},
    {"name":"added_arr","type":{"type":"array","items":"long"},"default":[1,2]},
    {"name":"added_rec","type":{"type":"record","name":"P","fields":[{"name":"a","type":"int"}]},"default":{"a":3}}
]}"#;

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 11
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn long(&mut self) -> i64 {
        match self.below(4) {
            0 => self.below(100) as i64 - 50,
            1 => self.next() as i64,
            2 => -(self.next() as i64),
            _ => i64::MAX - self.below(3) as i64,
        }
    }
    fn int(&mut self) -> i32 {
        match self.below(3) {
            0 => self.below(100) as i32 - 50,
            1 => self.next() as i32,
            _ => i32::MIN + self.below(3) as i32,
        }
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn text(&mut self) -> String {
        let parts = ["a", "\"", "\\", "\n", "é", "\u{1F600}", "\u{1}", " ", "z"];
        (0..self.below(6))
            .map(|_| parts[self.below(parts.len() as u64) as usize])
            .collect()
    }
}

fn value(s: &Schema, names: &Names, rng: &mut Rng, depth: usize) -> Value {
    let s = deref(s, names).unwrap();
    match s {
        Schema::Null => Value::Null,
        Schema::Boolean => Value::Boolean(rng.below(2) == 1),
        Schema::Int => Value::Int(rng.int()),
        Schema::Long => Value::Long(rng.long()),
        Schema::Float => Value::Float(f32::from_bits(rng.next() as u32 & 0x7f7f_ffff)),
        Schema::Double => Value::Double(match rng.below(4) {
            0 => f64::NAN,
            1 => 0.1,
            _ => rng.long() as f64 / 7.0,
        }),
        Schema::Bytes => {
            let n = rng.below(5) as usize;
            Value::Bytes(rng.bytes(n))
        }
        Schema::String => Value::String(rng.text()),
        Schema::Uuid(_) => Value::Uuid(apache_avro::Uuid::from_u64_pair(rng.next(), rng.next())),
        Schema::Decimal(d) => {
            let n = match &d.inner {
                InnerDecimalSchema::Fixed(f) => f.size,
                InnerDecimalSchema::Bytes => 1 + rng.below(5) as usize,
            };
            Value::Decimal(apache_avro::Decimal::from(rng.bytes(n)))
        }
        Schema::Date => Value::Date(rng.int() % 3_000_000),
        Schema::TimeMillis => Value::TimeMillis(rng.below(86_400_000) as i32),
        Schema::TimeMicros => Value::TimeMicros(rng.below(86_400_000_000) as i64),
        Schema::TimestampMillis => Value::TimestampMillis(rng.long() % 4_000_000_000_000),
        Schema::TimestampMicros => Value::TimestampMicros(rng.long()),
        Schema::LocalTimestampMillis => Value::LocalTimestampMillis(rng.long() % 10_000_000_000),
        Schema::Enum(e) => {
            let i = rng.below(e.symbols.len() as u64) as usize;
            Value::Enum(i as u32, e.symbols[i].clone())
        }
        Schema::Fixed(f) => Value::Fixed(f.size, rng.bytes(f.size)),
        Schema::Array(a) => Value::Array(
            (0..rng.below(if depth > 3 { 1 } else { 4 }))
                .map(|_| value(&a.items, names, rng, depth + 1))
                .collect(),
        ),
        Schema::Map(m) => Value::Map(
            (0..rng.below(4))
                .map(|_| (rng.text(), value(&m.types, names, rng, depth + 1)))
                .collect(),
        ),
        Schema::Union(u) => {
            let i = rng.below(u.variants().len() as u64) as usize;
            Value::Union(
                i as u32,
                Box::new(value(&u.variants()[i], names, rng, depth + 1)),
            )
        }
        Schema::Record(r) => Value::Record(
            r.fields
                .iter()
                .map(|f| (f.name.clone(), value(&f.schema, names, rng, depth + 1)))
                .collect(),
        ),
        other => panic!("no generator for {other:?}"),
    }
}

/// What the general path (values, adapted and resolved) renders.
fn general(
    writer: &Schema,
    reader: &Schema,
    reader_names: &Names,
    body: &[u8],
) -> serde_json::Value {
    let datum = GenericDatumReader::builder(writer).build().unwrap();
    let mut v = datum.read_value(&mut &body[..]).unwrap();
    if writer != reader {
        super::super::adapt::adapt(&mut v, reader, reader_names);
        v = v.resolve_with_names(reader, reader_names).unwrap();
    }
    // Compared parsed from text, as the direct rendering is: both
    // parses round numbers the same way.
    serde_json::from_str(&json::to_text(&v, reader, reader_names).unwrap()).unwrap()
}

fn same_as_general(writer: &str, reader: &str, records: usize) {
    let writer = Schema::parse_str(writer).unwrap();
    let reader = Schema::parse_str(reader).unwrap();
    let (wn, rn) = (
        json::names_of(&writer).unwrap(),
        json::names_of(&reader).unwrap(),
    );
    let plan = Plan::new(&writer, &wn, &reader, &rn).expect("a plan is made");
    let mut rng = Rng(7);
    for i in 0..records {
        let v = value(&writer, &wn, &mut rng, 0);
        let body = apache_avro::writer::datum::GenericDatumWriter::builder(&writer)
            .build()
            .and_then(|w| w.write_value_to_vec(v.clone()))
            .unwrap();
        let direct: serde_json::Value = serde_json::from_str(&plan.render(&body).unwrap()).unwrap();
        assert_eq!(
            direct,
            general(&writer, &reader, &rn, &body),
            "record {i}: {v:?}"
        );
        // A body cut short or with bytes after it is refused.
        assert!(
            plan.render(&body[..body.len() - 1]).is_err(),
            "record {i} cut short"
        );
        let mut longer = body.clone();
        longer.push(0);
        assert_eq!(plan.render(&longer), Err(Error::LeftOver(1)), "record {i}");
    }
}

#[test]
fn renders_as_the_general_path_for_the_same_schema() {
    same_as_general(WRITER, WRITER, 300);
    same_as_general(READER, READER, 300);
}

#[test]
fn renders_as_the_general_path_across_an_evolution() {
    same_as_general(WRITER, READER, 500);
}

#[test]
fn renders_the_order_events_of_every_version_as_the_general_path() {
    use crate::demo::orders::SCHEMAS;
    for (w, r) in [(0, 2), (1, 2), (2, 2), (0, 0), (1, 0), (0, 1)] {
        same_as_general(SCHEMAS[w], SCHEMAS[r], 100);
    }
}

#[test]
fn pairs_without_a_plan_are_named() {
    let plan = |w: &str, r: &str| {
        let (w, r) = (Schema::parse_str(w).unwrap(), Schema::parse_str(r).unwrap());
        Plan::new(
            &w,
            &json::names_of(&w).unwrap(),
            &r,
            &json::names_of(&r).unwrap(),
        )
        .map(|_| ())
        .map_err(|Unplanned(why)| why)
    };
    // Promotion inside a union, a string read as bytes, an enum default.
    assert!(plan(r#"["null","int"]"#, r#"["null","long"]"#).is_err());
    assert!(plan(r#""string""#, r#""bytes""#).is_err());
    let e = plan(
        r#"{"type":"record","name":"R","fields":[]}"#,
        r#"{"type":"record","name":"R","fields":[{"name":"k","type":{"type":"enum","name":"K","symbols":["A"]},"default":"A"}]}"#,
    )
    .unwrap_err();
    assert!(e.contains("field k"), "{e}");
    assert!(plan(r#"["null","int"]"#, r#"["null","int"]"#).is_ok());
}

#[test]
fn hostile_lengths_are_refused_without_allocating() {
    let schema = Schema::parse_str(r#"{"type":"array","items":"null"}"#).unwrap();
    let names = json::names_of(&schema).unwrap();
    let plan = Plan::new(&schema, &names, &schema, &names).unwrap();
    // A block of 2^40 nulls.
    let mut body = vec![];
    let mut n: u64 = (1u64 << 40) << 1;
    while n >= 0x80 {
        body.push((n as u8) | 0x80);
        n >>= 7;
    }
    body.push(n as u8);
    assert!(matches!(plan.render(&body), Err(Error::Bad(_))));
    let s = Schema::parse_str(r#""string""#).unwrap();
    let plan = Plan::new(&s, &names, &s, &names).unwrap();
    assert_eq!(
        plan.render(&[0xfe, 0xff, 0xff, 0xff, 0x0f]),
        Err(Error::Truncated)
    );
    assert!(plan.render(&[0xff; 11]).is_err());
}
