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
mod tests;
