//! Avro body straight to the reader schema's JSON text, in one pass.
//!
//! For a (writer schema, reader schema) pair a [`Plan`] is made once: per
//! writer node, how its bytes are read and how the reader renders them
//! (promotions, fields renamed through reader aliases, writer fields the
//! reader dropped, defaults of reader fields the writer lacks, pre-rendered).
//! Decoding then neither builds `apache_avro` values nor resolves them.
//!
//! The plan covers the evolutions producers make (fields added, removed or
//! renamed through aliases, numeric widening, optional fields) and leaves
//! the rest to the general path (`apache_avro` values, resolved): a pair a
//! plan cannot be made for is decoded that way, with the same result.
//! `apache_avro` offers no such decoder; the rendering of every scalar is the
//! general path's own ([`super::json`]), so both give the same JSON.

use apache_avro::schema::{InnerDecimalSchema, RecordSchema, Schema, SchemaKind, UuidSchema};
use apache_avro::types::Value;

use super::json::{self, Names};

/// Deepest nesting a plan is made for (recursive schemas go the general way).
const MAX_DEPTH: usize = 64;

/// Most items a block of items that take no bytes (nulls) may claim.
const MAX_EMPTY_ITEMS: usize = 1 << 20;

/// How to read one writer node and render it as the reader has it.
#[derive(Debug)]
enum Node {
    Null,
    Boolean,
    /// A writer `int`, rendered as this reader type.
    Int(Scalar),
    /// A writer `long`, rendered as this reader type.
    Long(Scalar),
    /// A writer `float`, rendered as `float` or `double`.
    Float(Scalar),
    Double,
    Bytes,
    String,
    Uuid,
    /// A decimal's scale; `Some(size)` when it is a `fixed`.
    Decimal {
        scale: usize,
        fixed: Option<usize>,
    },
    Fixed(usize),
    /// The reader's symbol, rendered, per writer symbol index.
    Enum(Vec<Vec<u8>>),
    Array(Box<Node>),
    Map(Box<Node>),
    /// Per writer branch.
    Union(Vec<Node>),
    Record(Record),
}

impl Node {
    /// Whether a value of this node may be encoded in no bytes at all.
    fn may_be_empty(&self) -> bool {
        match self {
            Node::Null => true,
            Node::Fixed(0) => true,
            Node::Decimal { fixed: Some(0), .. } => true,
            Node::Record(r) => r.fields.iter().all(|f| f.node.may_be_empty()),
            _ => false,
        }
    }
}

/// What a number is rendered as: the reader's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    Int,
    Long,
    Float,
    Double,
    Date,
    TimeMillis,
    TimeMicros,
    TimestampMillis,
    TimestampMicros,
    TimestampNanos,
    LocalTimestampMillis,
    LocalTimestampMicros,
    LocalTimestampNanos,
}

#[derive(Debug)]
struct Record {
    /// In writer order.
    fields: Vec<Field>,
    /// `"name":value` of each reader field the writer lacks, comma-separated.
    defaults: Vec<u8>,
}

#[derive(Debug)]
struct Field {
    /// `"name":` as the reader calls it; `None`: the reader dropped it.
    name: Option<Vec<u8>>,
    node: Node,
}

/// A compiled (writer, reader) pair.
#[derive(Debug)]
pub struct Plan {
    root: Node,
}

/// Why no plan was made (the general path is taken instead).
#[derive(Debug)]
pub struct Unplanned(pub String);

struct Compiler<'a> {
    writer_names: &'a Names,
    reader_names: &'a Names,
}

fn deref<'a>(s: &'a Schema, names: &'a Names) -> Result<&'a Schema, Unplanned> {
    match s {
        Schema::Ref { name } => names
            .get(name)
            .ok_or_else(|| Unplanned(format!("unknown named type {}", name.fullname(None)))),
        s => Ok(s),
    }
}

/// The JSON text of a string.
fn quoted(s: &str) -> Vec<u8> {
    serde_json::to_vec(s).unwrap_or_default()
}

impl Plan {
    /// The plan for records written with `writer` and read with `reader`.
    pub fn new(
        writer: &Schema,
        writer_names: &Names,
        reader: &Schema,
        reader_names: &Names,
    ) -> Result<Plan, Unplanned> {
        let c = Compiler {
            writer_names,
            reader_names,
        };
        Ok(Plan {
            root: c.node(writer, reader, 0)?,
        })
    }

    /// Renders `body` (the whole of it) as JSON text.
    pub fn render(&self, body: &[u8]) -> Result<String, Error> {
        let mut input = Input { rest: body };
        let mut out = Vec::with_capacity(body.len() * 3);
        render(&self.root, &mut input, &mut out)?;
        if !input.rest.is_empty() {
            return Err(Error::LeftOver(input.rest.len()));
        }
        // Only JSON text was written: strings were checked UTF-8.
        String::from_utf8(out).map_err(|_| Error::Bad("the rendering is not UTF-8".into()))
    }
}

impl Compiler<'_> {
    fn node(&self, w: &Schema, r: &Schema, depth: usize) -> Result<Node, Unplanned> {
        if depth > MAX_DEPTH {
            return Err(Unplanned("nested too deep".into()));
        }
        let w = deref(w, self.writer_names)?;
        let r = deref(r, self.reader_names)?;
        let unplanned = || {
            Err(Unplanned(format!(
                "writer {:?} read as {:?}",
                Kind(w),
                Kind(r)
            )))
        };
        Ok(match (w, r) {
            (Schema::Union(wu), Schema::Union(ru)) => Node::Union(
                wu.variants()
                    .iter()
                    .map(|wb| {
                        let rb = self.branch(wb, ru.variants())?;
                        self.node(wb, rb, depth + 1)
                    })
                    .collect::<Result<_, _>>()?,
            ),
            (Schema::Union(wu), r) => Node::Union(
                wu.variants()
                    .iter()
                    .map(|wb| self.node(wb, r, depth + 1))
                    .collect::<Result<_, _>>()?,
            ),
            (w, Schema::Union(ru)) => {
                let rb = self.branch(w, ru.variants())?;
                self.node(w, rb, depth + 1)?
            }
            (Schema::Null, Schema::Null) => Node::Null,
            (Schema::Boolean, Schema::Boolean) => Node::Boolean,
            (Schema::Int, r) => Node::Int(match r {
                Schema::Int => Scalar::Int,
                Schema::Long => Scalar::Long,
                Schema::Float => Scalar::Float,
                Schema::Double => Scalar::Double,
                _ => return unplanned(),
            }),
            (Schema::Date, Schema::Date) => Node::Int(Scalar::Date),
            (Schema::TimeMillis, Schema::TimeMillis) => Node::Int(Scalar::TimeMillis),
            (Schema::Long, r) => Node::Long(match r {
                Schema::Long => Scalar::Long,
                Schema::Float => Scalar::Float,
                Schema::Double => Scalar::Double,
                _ => return unplanned(),
            }),
            (w, r) if SchemaKind::from(w) == SchemaKind::from(r) && long_logical(w).is_some() => {
                Node::Long(long_logical(w).unwrap_or(Scalar::Long))
            }
            (Schema::Float, Schema::Float) => Node::Float(Scalar::Float),
            (Schema::Float, Schema::Double) => Node::Float(Scalar::Double),
            (Schema::Double, Schema::Double) => Node::Double,
            (Schema::Bytes, Schema::Bytes) => Node::Bytes,
            (Schema::String, Schema::String) => Node::String,
            (Schema::Uuid(UuidSchema::String), Schema::Uuid(UuidSchema::String)) => Node::Uuid,
            (Schema::Decimal(wd), Schema::Decimal(rd))
                if wd.precision == rd.precision && wd.scale == rd.scale =>
            {
                match (&wd.inner, &rd.inner) {
                    (InnerDecimalSchema::Bytes, InnerDecimalSchema::Bytes) => Node::Decimal {
                        scale: rd.scale,
                        fixed: None,
                    },
                    (InnerDecimalSchema::Fixed(wf), InnerDecimalSchema::Fixed(rf))
                        if wf.size == rf.size =>
                    {
                        Node::Decimal {
                            scale: rd.scale,
                            fixed: Some(wf.size),
                        }
                    }
                    _ => return unplanned(),
                }
            }
            (Schema::Fixed(wf), Schema::Fixed(rf)) if wf.size == rf.size => Node::Fixed(wf.size),
            (Schema::Enum(we), Schema::Enum(re)) => Node::Enum(
                we.symbols
                    .iter()
                    .map(|s| {
                        if re.symbols.contains(s) {
                            Ok(quoted(s))
                        } else {
                            Err(Unplanned(format!("enum symbol {s} is not the reader's")))
                        }
                    })
                    .collect::<Result<_, _>>()?,
            ),
            (Schema::Array(wa), Schema::Array(ra)) => {
                Node::Array(Box::new(self.node(&wa.items, &ra.items, depth + 1)?))
            }
            (Schema::Map(wm), Schema::Map(rm)) => {
                Node::Map(Box::new(self.node(&wm.types, &rm.types, depth + 1)?))
            }
            (Schema::Record(wr), Schema::Record(rr)) => Node::Record(self.record(wr, rr, depth)?),
            _ => return unplanned(),
        })
    }

    /// The reader union branch a writer node resolves to: the one equal to it
    /// (a named type: of the same full name). Anything less plain is left to
    /// the general path.
    fn branch<'s>(&'s self, w: &Schema, variants: &'s [Schema]) -> Result<&'s Schema, Unplanned> {
        let w = deref(w, self.writer_names)?;
        for v in variants {
            let r = deref(v, self.reader_names)?;
            let same = match (named(w), named(r)) {
                (Some(a), Some(b)) => a == b && SchemaKind::from(w) == SchemaKind::from(r),
                (None, None) => w == r,
                _ => false,
            };
            if same {
                return Ok(v);
            }
        }
        Err(Unplanned(format!(
            "no reader union branch is the writer's {:?}",
            Kind(w)
        )))
    }

    /// A record: reader fields taken by name, else by a reader alias (the
    /// first writer field that is one), as the general path resolves them.
    fn record(
        &self,
        w: &RecordSchema,
        r: &RecordSchema,
        depth: usize,
    ) -> Result<Record, Unplanned> {
        let mut taken_by: Vec<Option<usize>> = vec![None; r.fields.len()];
        for (pos, rf) in r.fields.iter().enumerate() {
            taken_by[pos] = w
                .fields
                .iter()
                .position(|wf| wf.name == rf.name)
                .or_else(|| {
                    w.fields
                        .iter()
                        .position(|wf| r.lookup.get(&wf.name) == Some(&pos))
                });
        }
        let mut fields = Vec::with_capacity(w.fields.len());
        for (i, wf) in w.fields.iter().enumerate() {
            let field = match taken_by.iter().position(|&t| t == Some(i)) {
                Some(pos) => {
                    let rf = &r.fields[pos];
                    let mut name = quoted(&rf.name);
                    name.push(b':');
                    Field {
                        name: Some(name),
                        node: self.node(&wf.schema, &rf.schema, depth + 1)?,
                    }
                }
                None => Field {
                    name: None,
                    // Read to be skipped: as the writer wrote it.
                    node: Compiler {
                        writer_names: self.writer_names,
                        reader_names: self.writer_names,
                    }
                    .node(&wf.schema, &wf.schema, depth + 1)?,
                },
            };
            fields.push(field);
        }
        let mut defaults = Vec::new();
        for (pos, rf) in r.fields.iter().enumerate() {
            if taken_by[pos].is_some() {
                continue;
            }
            let text = self.default_text(rf)?;
            if !defaults.is_empty() {
                defaults.push(b',');
            }
            defaults.extend_from_slice(&quoted(&rf.name));
            defaults.push(b':');
            defaults.extend_from_slice(text.as_bytes());
        }
        Ok(Record { fields, defaults })
    }

    /// A reader field's default, resolved and rendered as the general path
    /// does it.
    fn default_text(&self, rf: &apache_avro::schema::RecordField) -> Result<String, Unplanned> {
        let fail =
            |e: &dyn std::fmt::Display| Unplanned(format!("the default of field {}: {e}", rf.name));
        let default = rf
            .default
            .clone()
            .ok_or_else(|| Unplanned(format!("field {} has no default", rf.name)))?;
        let value = match &rf.schema {
            Schema::Union(u) => match u.variants().first() {
                Some(Schema::Null) => Value::Union(0, Box::new(Value::Null)),
                Some(first) => Value::Union(
                    0,
                    Box::new(
                        Value::try_from(default)
                            .and_then(|v| v.resolve_with_names(first, self.reader_names))
                            .map_err(|e| fail(&e))?,
                    ),
                ),
                None => return Err(fail(&"an empty union")),
            },
            Schema::Enum(_) => return Err(fail(&"enum defaults are left to the general path")),
            _ => Value::try_from(default).map_err(|e| fail(&e))?,
        };
        let value = value
            .resolve_with_names(&rf.schema, self.reader_names)
            .map_err(|e| fail(&e))?;
        json::to_text(&value, &rf.schema, self.reader_names).map_err(|e| fail(&e))
    }
}

/// The scalar a `long`-based logical type renders as.
fn long_logical(s: &Schema) -> Option<Scalar> {
    Some(match s {
        Schema::TimeMicros => Scalar::TimeMicros,
        Schema::TimestampMillis => Scalar::TimestampMillis,
        Schema::TimestampMicros => Scalar::TimestampMicros,
        Schema::TimestampNanos => Scalar::TimestampNanos,
        Schema::LocalTimestampMillis => Scalar::LocalTimestampMillis,
        Schema::LocalTimestampMicros => Scalar::LocalTimestampMicros,
        Schema::LocalTimestampNanos => Scalar::LocalTimestampNanos,
        _ => return None,
    })
}

fn named(s: &Schema) -> Option<String> {
    match s {
        Schema::Record(r) => Some(r.name.fullname(None)),
        Schema::Enum(e) => Some(e.name.fullname(None)),
        Schema::Fixed(f) => Some(f.name.fullname(None)),
        _ => None,
    }
}

/// A schema's kind, for messages.
struct Kind<'a>(&'a Schema);

impl std::fmt::Debug for Kind<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match named(self.0) {
            Some(name) => write!(f, "{name}"),
            None => write!(f, "{:?}", SchemaKind::from(self.0)),
        }
    }
}

/// Why a body could not be rendered.
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    /// The body ends before the record does.
    Truncated,
    /// Bytes are left after the record.
    LeftOver(usize),
    /// The body holds something its schema does not allow.
    Bad(String),
}

struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if n > self.rest.len() {
            return Err(Error::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    /// A zig-zag varint of at most 10 bytes.
    fn long(&mut self) -> Result<i64, Error> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let [byte] = *self.take(1)? else {
                return Err(Error::Truncated);
            };
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(Error::Bad("a varint is longer than 10 bytes".into()))
    }

    fn int(&mut self) -> Result<i32, Error> {
        let v = self.long()?;
        i32::try_from(v).map_err(|_| Error::Bad(format!("int {v} is out of range")))
    }

    /// A length prefix, checked against what is left.
    fn len(&mut self) -> Result<usize, Error> {
        let n = self.long()?;
        let n = usize::try_from(n).map_err(|_| Error::Bad(format!("negative length {n}")))?;
        if n > self.rest.len() {
            return Err(Error::Truncated);
        }
        Ok(n)
    }

    fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let n = self.len()?;
        self.take(n)
    }

    fn str(&mut self) -> Result<&'a str, Error> {
        std::str::from_utf8(self.bytes()?)
            .map_err(|e| Error::Bad(format!("a string is not UTF-8: {e}")))
    }

    /// The item count of the next block of an array or map (0: the end);
    /// `empty_items`: an item may take no bytes at all (a null).
    fn block(&mut self, empty_items: bool) -> Result<usize, Error> {
        let n = self.long()?;
        if n < 0 {
            // A negative count is followed by the block's size in bytes.
            self.long()?;
        }
        let n = usize::try_from(n.unsigned_abs()).unwrap_or(usize::MAX);
        // Items of a byte or more cannot outnumber the bytes left.
        let most = if empty_items {
            MAX_EMPTY_ITEMS
        } else {
            self.rest.len()
        };
        if n > most {
            return Err(if empty_items {
                Error::Bad(format!("a block of {n} items"))
            } else {
                Error::Truncated
            });
        }
        Ok(n)
    }
}

fn write<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), Error> {
    serde_json::to_writer(out, value).map_err(|e| Error::Bad(e.to_string()))
}

/// Writes a number as the reader's type renders it.
fn number(out: &mut Vec<u8>, as_: Scalar, v: i64) -> Result<(), Error> {
    let value = match as_ {
        Scalar::Int => Value::Int(v as i32),
        Scalar::Long => Value::Long(v),
        Scalar::Float => Value::Float(v as f32),
        Scalar::Double => Value::Double(v as f64),
        Scalar::Date => Value::Date(v as i32),
        Scalar::TimeMillis => Value::TimeMillis(v as i32),
        Scalar::TimeMicros => Value::TimeMicros(v),
        Scalar::TimestampMillis => Value::TimestampMillis(v),
        Scalar::TimestampMicros => Value::TimestampMicros(v),
        Scalar::TimestampNanos => Value::TimestampNanos(v),
        Scalar::LocalTimestampMillis => Value::LocalTimestampMillis(v),
        Scalar::LocalTimestampMicros => Value::LocalTimestampMicros(v),
        Scalar::LocalTimestampNanos => Value::LocalTimestampNanos(v),
    };
    let written = write(out, &json::scalar(&value));
    written
}

fn render(node: &Node, input: &mut Input<'_>, out: &mut Vec<u8>) -> Result<(), Error> {
    match node {
        Node::Null => out.extend_from_slice(b"null"),
        Node::Boolean => match input.take(1)? {
            [0] => out.extend_from_slice(b"false"),
            [1] => out.extend_from_slice(b"true"),
            other => return Err(Error::Bad(format!("boolean byte {other:?}"))),
        },
        Node::Int(as_) => {
            let v = input.int()?;
            number(out, *as_, i64::from(v))?;
        }
        Node::Long(as_) => {
            let v = input.long()?;
            number(out, *as_, v)?;
        }
        Node::Float(as_) => {
            let bytes: [u8; 4] = input.take(4)?.try_into().map_err(|_| Error::Truncated)?;
            let f = f32::from_le_bytes(bytes);
            let value = if *as_ == Scalar::Double {
                Value::Double(f64::from(f))
            } else {
                Value::Float(f)
            };
            write(out, &json::scalar(&value))?;
        }
        Node::Double => {
            let bytes: [u8; 8] = input.take(8)?.try_into().map_err(|_| Error::Truncated)?;
            write(
                out,
                &json::scalar(&Value::Double(f64::from_le_bytes(bytes))),
            )?;
        }
        Node::Bytes => write(out, &json::base64(input.bytes()?))?,
        Node::String => write(out, input.str()?)?,
        Node::Uuid => {
            let s = input.str()?;
            let u = apache_avro::Uuid::parse_str(s)
                .map_err(|e| Error::Bad(format!("uuid {s:?}: {e}")))?;
            write(out, &u.hyphenated().to_string())?;
        }
        Node::Decimal { scale, fixed } => {
            let raw = match fixed {
                Some(size) => input.take(*size)?,
                None => input.bytes()?,
            };
            let unscaled = num_bigint::BigInt::from_signed_bytes_be(raw);
            write(out, &json::with_scale(&unscaled.to_string(), *scale))?;
        }
        Node::Fixed(size) => write(out, &json::base64(input.take(*size)?))?,
        Node::Enum(symbols) => {
            let i = input.int()?;
            let symbol = usize::try_from(i)
                .ok()
                .and_then(|i| symbols.get(i))
                .ok_or_else(|| Error::Bad(format!("enum index {i} out of range")))?;
            out.extend_from_slice(symbol);
        }
        Node::Array(items) => {
            out.push(b'[');
            let mut first = true;
            loop {
                let n = input.block(items.may_be_empty())?;
                if n == 0 {
                    break;
                }
                for _ in 0..n {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    render(items, input, out)?;
                }
            }
            out.push(b']');
        }
        Node::Map(values) => {
            out.push(b'{');
            let mut first = true;
            loop {
                // Each entry has a key, a byte at least.
                let n = input.block(false)?;
                if n == 0 {
                    break;
                }
                for _ in 0..n {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    write(out, input.str()?)?;
                    out.push(b':');
                    render(values, input, out)?;
                }
            }
            out.push(b'}');
        }
        Node::Union(branches) => {
            let i = input.long()?;
            let branch = usize::try_from(i)
                .ok()
                .and_then(|i| branches.get(i))
                .ok_or_else(|| Error::Bad(format!("union index {i} out of range")))?;
            render(branch, input, out)?;
        }
        Node::Record(r) => {
            out.push(b'{');
            let mut first = true;
            for f in &r.fields {
                match &f.name {
                    Some(name) => {
                        if !first {
                            out.push(b',');
                        }
                        first = false;
                        out.extend_from_slice(name);
                        render(&f.node, input, out)?;
                    }
                    None => {
                        // Dropped by the reader: read past it.
                        let mark = out.len();
                        render(&f.node, input, out)?;
                        out.truncate(mark);
                    }
                }
            }
            if !r.defaults.is_empty() {
                if !first {
                    out.push(b',');
                }
                out.extend_from_slice(&r.defaults);
            }
            out.push(b'}');
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
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
            Schema::Uuid(_) => {
                Value::Uuid(apache_avro::Uuid::from_u64_pair(rng.next(), rng.next()))
            }
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
            Schema::LocalTimestampMillis => {
                Value::LocalTimestampMillis(rng.long() % 10_000_000_000)
            }
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
            let direct: serde_json::Value =
                serde_json::from_str(&plan.render(&body).unwrap()).unwrap();
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
}
