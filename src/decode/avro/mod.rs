//! Avro in Confluent's wire format: magic byte 0, a 4-byte big-endian schema
//! id, then the Avro body.
//!
//! Writer schemas are fetched by id from the Schema Registry through
//! `schema_registry_converter` and cached for the life of the process, so a
//! registry outage does not stop records whose ids were seen before. Each
//! record is then resolved to the reader schema configured for its topic
//! (`[[source.reader_schemas]]`); whether the reader can read a writer id is
//! checked once per (topic, id) with `SchemaCompatibility::can_read`.

mod adapt;
mod direct;
pub mod json;
pub mod registry;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::error::SRCError;
use serde::Deserialize;

pub use registry::{RegistryConfig, SubjectNameStrategy};

/// Largest allocation a single Avro length prefix may ask for; bounds what a
/// corrupt or hostile record can make the decoder allocate.
const MAX_ALLOCATION_BYTES: usize = 64 * 1024 * 1024;

/// `[[source.reader_schemas]]`: the reader schema of one topic, from a file or inline.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReaderSchemaConfig {
    pub topic: String,
    /// An `.avsc` file; a relative path is taken from the configuration file's directory.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The schema's JSON text, instead of `file`.
    #[serde(default)]
    pub schema: Option<String>,
}

impl ReaderSchemaConfig {
    /// Loads the schema; `Err((field, reason))` names `file` or `schema`.
    pub fn load(&self) -> Result<ReaderSchema, (&'static str, String)> {
        match (&self.file, &self.schema) {
            (Some(file), None) => ReaderSchema::load(file).map_err(|e| ("file", e)),
            (None, Some(text)) => {
                let origin = format!("<inline reader schema of {}>", self.topic);
                ReaderSchema::parse(Path::new(&origin), text).map_err(|e| ("schema", e))
            }
            _ => Err(("file", "set exactly one of `file` and `schema`".into())),
        }
    }
}

/// How the Kafka message key is encoded.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KeyFormat {
    /// UTF-8 text.
    #[default]
    String,
    /// Confluent-framed Avro; the key is its value as text (a record as compact JSON).
    Avro,
}

/// A reader schema loaded from its file.
#[derive(Debug)]
pub struct ReaderSchema {
    pub file: PathBuf,
    pub schema: Schema,
    names: json::Names,
    /// Whether decoded values need [`adapt::adapt`] before resolution.
    adapt: bool,
    /// The schema as JSON, to recognise a writer schema that is the same.
    json: serde_json::Value,
}

impl ReaderSchema {
    /// Reads and parses an `.avsc` file; the error names the file.
    pub fn load(file: &Path) -> Result<ReaderSchema, String> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        Self::parse(file, &text)
    }

    /// Parses schema text that came from `file`.
    pub fn parse(file: &Path, text: &str) -> Result<ReaderSchema, String> {
        let schema = Schema::parse_str(text)
            .map_err(|e| format!("{} is not a valid Avro schema: {e}", file.display()))?;
        let names = json::names_of(&schema)
            .map_err(|e| format!("{} is not a valid Avro schema: {e}", file.display()))?;
        let adapt = adapt::needed(&schema, &names);
        let json = serde_json::from_str(text)
            .map_err(|e| format!("{} is not valid JSON: {e}", file.display()))?;
        Ok(ReaderSchema {
            file: file.to_path_buf(),
            schema,
            names,
            adapt,
            json,
        })
    }
}

/// Why an Avro record could not be decoded. Every case names the schema id
/// once it is known; the caller adds topic, partition and offset.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AvroError {
    #[error("not in Confluent's Avro wire format: {0}")]
    Frame(String),
    #[error("schema id {id} is not registered in the schema registry ({detail})")]
    UnknownSchema { id: u32, detail: String },
    #[error("schema id {id}: the schema registry did not answer and the schema is not cached yet ({detail})")]
    RegistryUnavailable { id: u32, detail: String },
    #[error("schema id {id}: the reader schema {file} cannot read this writer schema: {detail}")]
    Incompatible {
        id: u32,
        file: String,
        detail: String,
    },
    #[error("schema id {id}: the body does not match its writer schema: {detail}")]
    Body { id: u32, detail: String },
    #[error("schema id {id}: the record cannot be resolved to the reader schema {file}: {detail}")]
    Resolve {
        id: u32,
        file: String,
        detail: String,
    },
    #[error("no reader schema is configured for topic {0} ([[source.reader_schemas]])")]
    NoReader(String),
}

impl AvroError {
    /// Whether trying again later may succeed (the registry was unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(self, AvroError::RegistryUnavailable { .. })
    }
}

/// The schema id of a Confluent-framed payload, and its body.
pub fn frame(bytes: &[u8]) -> Result<(u32, &[u8]), AvroError> {
    match bytes {
        [] => Err(AvroError::Frame("the payload is empty".into())),
        [magic, ..] if *magic != 0 => Err(AvroError::Frame(format!(
            "magic byte is {magic:#04x}, expected 0x00"
        ))),
        [0, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        short => Err(AvroError::Frame(format!(
            "{} bytes, too short for the 5-byte header",
            short.len()
        ))),
    }
}

/// A topic's reader schema and what is known of the writer ids seen on it.
struct TopicReader {
    reader: ReaderSchema,
    /// Per writer id: what is known once the reader was found able to read
    /// it, else why not.
    checked: RwLock<HashMap<u32, Result<Arc<Readable>, String>>>,
    /// `ordo_schema_cache_total{result="hit"}`, counted per record.
    hits: prometheus::IntCounter,
}

/// A reader over a record's body that notes whether the decoder asked for more
/// than there is. `apache_avro` turns some reads past the end into values (a
/// string cut short reads as null, a missing union index as branch 0), so a
/// truncated body would otherwise pass for a record.
struct Body<'a> {
    rest: &'a [u8],
    overrun: bool,
}

impl std::io::Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.len() > self.rest.len() {
            self.overrun = true;
        }
        self.rest.read(buf)
    }
}

/// Decodes the body of a framed record with its writer schema; the whole body,
/// no more and no less.
fn read_body(
    id: u32,
    writer: &Schema,
    framed: &[u8],
) -> Result<apache_avro::types::Value, AvroError> {
    let (_, body) = frame(framed)?;
    let datum = apache_avro::reader::datum::GenericDatumReader::builder(writer)
        .build()
        .map_err(|e| AvroError::Body {
            id,
            detail: e.to_string(),
        })?;
    read_with(id, &datum, body)
}

/// Decodes an Avro body with a datum reader made for its writer schema.
fn read_with(
    id: u32,
    datum: &GenericDatumReader<'_>,
    body: &[u8],
) -> Result<apache_avro::types::Value, AvroError> {
    let err = |detail: String| AvroError::Body { id, detail };
    let mut input = Body {
        rest: body,
        overrun: false,
    };
    let value = datum
        .read_value(&mut input)
        .map_err(|e| err(e.to_string()))?;
    if input.overrun {
        return Err(err(truncated(body.len())));
    }
    if !input.rest.is_empty() {
        return Err(err(left_over(id, input.rest.len())));
    }
    Ok(value)
}

fn truncated(body: usize) -> String {
    format!("the body ({body} bytes) ends before the record does (truncated)")
}

fn left_over(id: u32, n: usize) -> String {
    format!(
        "{n} bytes are left after the record (is schema id {id} the schema it was written with?)"
    )
}

/// What is known of a writer id the reader schema can read.
struct Readable {
    /// The writer schema is the reader schema itself: nothing to resolve.
    same: bool,
    how: Decoding,
}

/// How the bodies of one writer id are decoded.
enum Decoding {
    /// Straight to the reader's JSON.
    Plan(direct::Plan),
    /// Through `apache_avro` values, resolved (pairs no plan covers). The
    /// datum reader is made once; its schema is kept for the life of the
    /// process, as the registry client keeps it.
    General(GenericDatumReader<'static>),
}

impl Readable {
    fn new(
        topic: &str,
        id: u32,
        writer: &Schema,
        same: bool,
        reader: &ReaderSchema,
    ) -> Result<Readable, String> {
        let plan = json::names_of(writer)
            .map_err(|e| direct::Unplanned(e.to_string()))
            .and_then(|names| direct::Plan::new(writer, &names, &reader.schema, &reader.names));
        let how = match plan {
            Ok(plan) => Decoding::Plan(plan),
            Err(direct::Unplanned(why)) => {
                tracing::info!(topic, schema_id = id, reason = %why,
                    "records of this writer schema are decoded through apache_avro values");
                let writer: &'static Schema = Box::leak(Box::new(writer.clone()));
                let datum = GenericDatumReader::builder(writer)
                    .build()
                    .map_err(|e| format!("schema id {id}: {e}"))?;
                Decoding::General(datum)
            }
        };
        Ok(Readable { same, how })
    }
}

/// Decodes Confluent-framed Avro through the Schema Registry.
pub struct AvroFormat {
    decoder: AvroDecoder,
    topics: HashMap<String, TopicReader>,
}

impl std::fmt::Debug for AvroFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroFormat")
            .field("topics", &self.topics.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl AvroFormat {
    /// A format with a registry client and the reader schema of each topic.
    pub fn new(
        registry: &RegistryConfig,
        readers: HashMap<String, ReaderSchema>,
    ) -> Result<AvroFormat, registry::RegistryConfigError> {
        apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
        Ok(AvroFormat {
            decoder: AvroDecoder::new(registry.client()?),
            topics: readers
                .into_iter()
                .map(|(topic, reader)| {
                    let checked = RwLock::new(HashMap::new());
                    let hits = crate::telemetry::metrics::metrics()
                        .schema_cache
                        .with_label_values(&["hit"]);
                    (
                        topic,
                        TopicReader {
                            reader,
                            checked,
                            hits,
                        },
                    )
                })
                .collect(),
        })
    }

    /// The writer schema of `id`, from the cache or the registry.
    async fn writer(
        &self,
        id: u32,
    ) -> Result<Arc<schema_registry_converter::avro_common::AvroSchema>, AvroError> {
        self.decoder
            .get_schema(id)
            .await
            .map_err(|e| self.fetch_error(id, &e))
    }

    fn fetch_error(&self, id: u32, e: &SRCError) -> AvroError {
        let detail = registry::describe(e);
        if registry::is_not_found(e) {
            return AvroError::UnknownSchema { id, detail };
        }
        // Anything else (unreachable, 5xx, refused credentials) may be fixed on the
        // registry's side: do not keep the failure cached.
        self.decoder.remove_errors_from_cache();
        AvroError::RegistryUnavailable { id, detail }
    }

    /// Decodes a record value of `topic` into JSON text shaped by the topic's
    /// reader schema.
    pub async fn decode(&self, topic: &str, bytes: &[u8]) -> Result<String, AvroError> {
        let (id, body) = frame(bytes)?;
        let topic_reader = self
            .topics
            .get(topic)
            .ok_or_else(|| AvroError::NoReader(topic.to_string()))?;
        let reader = &topic_reader.reader;
        let readable = match topic_reader.known(id)? {
            Some(readable) => readable,
            None => {
                let writer = self.writer(id).await?;
                topic_reader.check(topic, id, &writer)?
            }
        };
        let datum = match &readable.how {
            Decoding::General(datum) => datum,
            Decoding::Plan(plan) => {
                return plan.render(body).map_err(|e| AvroError::Body {
                    id,
                    detail: match e {
                        direct::Error::Truncated => truncated(body.len()),
                        direct::Error::LeftOver(n) => left_over(id, n),
                        direct::Error::Bad(detail) => detail,
                    },
                })
            }
        };
        let mut value = read_with(id, datum, body)?;
        let resolve_error = |detail: String| AvroError::Resolve {
            id,
            file: reader.file.display().to_string(),
            detail,
        };
        if !readable.same {
            if reader.adapt {
                adapt::adapt(&mut value, &reader.schema, &reader.names);
            }
            value = value
                .resolve_with_names(&reader.schema, &reader.names)
                .map_err(|e| resolve_error(e.to_string()))?;
        }
        json::to_text(&value, &reader.schema, &reader.names)
            .map_err(|e| resolve_error(e.to_string()))
    }

    /// Decodes an Avro message key with its writer schema; returns it as text.
    pub async fn decode_key(&self, bytes: &[u8]) -> Result<String, AvroError> {
        let (id, _) = frame(bytes)?;
        let writer = self.writer(id).await?;
        let value = read_body(id, &writer.parsed, bytes)?;
        let names = json::names_of(&writer.parsed).unwrap_or_default();
        Ok(match json::to_json(&value, &writer.parsed, &names) {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        })
    }
}

impl TopicReader {
    /// What is known of writer id `id`, if it was seen before: `Err` if the
    /// reader schema cannot read it.
    fn known(&self, id: u32) -> Result<Option<Arc<Readable>>, AvroError> {
        let checked = self.checked.read().unwrap_or_else(|p| p.into_inner());
        let Some(known) = checked.get(&id) else {
            return Ok(None);
        };
        self.hits.inc();
        known
            .clone()
            .map(Some)
            .map_err(|detail| self.incompatible(id, detail))
    }

    fn incompatible(&self, id: u32, detail: String) -> AvroError {
        AvroError::Incompatible {
            id,
            file: self.reader.file.display().to_string(),
            detail,
        }
    }

    /// Checks once per writer id that the reader schema can read the writer's.
    fn check(
        &self,
        topic: &str,
        id: u32,
        writer: &schema_registry_converter::avro_common::AvroSchema,
    ) -> Result<Arc<Readable>, AvroError> {
        if let Some(known) = self.known(id)? {
            return Ok(known);
        }
        let reader = &self.reader;
        crate::telemetry::metrics::metrics()
            .schema_cache
            .with_label_values(&["miss"])
            .inc();
        let same =
            serde_json::from_str::<serde_json::Value>(&writer.raw).is_ok_and(|w| w == reader.json);
        let result = SchemaCompatibility::can_read(&writer.parsed, &reader.schema)
            .map_err(|e| e.to_string())
            .and_then(|_| Readable::new(topic, id, &writer.parsed, same, reader).map(Arc::new));
        match &result {
            Ok(_) => tracing::info!(topic, schema_id = id, reader = %reader.file.display(),
                same, "new writer schema; the reader schema can read it"),
            Err(e) => tracing::error!(topic, schema_id = id, reader = %reader.file.display(),
                error = %e, "new writer schema; the reader schema cannot read it"),
        }
        self.checked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, result.clone());
        result.map_err(|detail| self.incompatible(id, detail))
    }
}

#[cfg(test)]
mod tests;
