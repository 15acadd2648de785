//! `ordo schema check`: for each configured topic, fetches every registered
//! version of its value subject and reports whether the local reader schema
//! can read it, so a deploy can be gated on it.

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use schema_registry_converter::async_impl::schema_registry::{
    get_all_versions, get_schema_by_subject_and_version,
};

use crate::config::Settings;
use crate::decode::avro::registry::describe;
use crate::decode::avro::ReaderSchema;

/// The verdict on one registered version (or on a subject that could not be read).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    pub topic: String,
    pub subject: String,
    pub reader: String,
    pub version: Option<u32>,
    pub schema_id: Option<u32>,
    /// `None` when the reader can read this version.
    pub problem: Option<String>,
}

/// Why the check could not start.
#[derive(Debug, thiserror::Error)]
pub enum SchemaCheckError {
    #[error("no [schema_registry] is configured")]
    NoRegistry,
    #[error("no [[source.reader_schemas]] is configured")]
    NoReaders,
    #[error("schema_registry.{key}: {reason}")]
    Registry { key: &'static str, reason: String },
    #[error("source.reader_schemas: {0}")]
    Reader(String),
}

/// Checks every configured reader schema against its subject's versions.
pub async fn run(settings: &Settings) -> Result<Vec<Verdict>, SchemaCheckError> {
    let registry = settings
        .schema_registry
        .as_ref()
        .ok_or(SchemaCheckError::NoRegistry)?;
    if settings.source.reader_schemas.is_empty() {
        return Err(SchemaCheckError::NoReaders);
    }
    let client = registry.client().map_err(|e| SchemaCheckError::Registry {
        key: e.key,
        reason: e.reason,
    })?;
    let mut verdicts = Vec::new();
    for r in &settings.source.reader_schemas {
        let reader = r
            .load()
            .map_err(|(_, reason)| SchemaCheckError::Reader(reason))?;
        let reader_name = reader.file.display().to_string();
        let verdict = |subject: &str, version, schema_id, problem| Verdict {
            topic: r.topic.clone(),
            subject: subject.to_string(),
            reader: reader_name.clone(),
            version,
            schema_id,
            problem,
        };
        let subject = match registry
            .subject_name_strategy
            .value_subject(&r.topic, &reader.schema)
        {
            Ok(s) => s,
            Err(e) => {
                verdicts.push(verdict("?", None, None, Some(e)));
                continue;
            }
        };
        let versions = match get_all_versions(&client, subject.clone()).await {
            Ok(v) if v.is_empty() => {
                verdicts.push(verdict(
                    &subject,
                    None,
                    None,
                    Some("no versions registered".into()),
                ));
                continue;
            }
            Ok(v) => v,
            Err(e) => {
                let why = format!("cannot list the subject's versions: {}", describe(&e));
                verdicts.push(verdict(&subject, None, None, Some(why)));
                continue;
            }
        };
        for version in versions {
            let problem =
                match get_schema_by_subject_and_version(&client, &subject, Some(version)).await {
                    Err(e) => Err(format!("cannot fetch it: {}", describe(&e))),
                    Ok(registered) => Ok(registered),
                };
            let (id, problem) = match problem {
                Err(p) => (None, Some(p)),
                Ok(registered) => (Some(registered.id), readable(&registered.schema, &reader)),
            };
            verdicts.push(verdict(&subject, Some(version), id, problem));
        }
    }
    Ok(verdicts)
}

/// `None` if `reader` can read data written with `writer_text`, else why not.
pub(crate) fn readable(writer_text: &str, reader: &ReaderSchema) -> Option<String> {
    match Schema::parse_str(writer_text) {
        Err(e) => Some(format!("the registered schema does not parse: {e}")),
        Ok(writer) => SchemaCompatibility::can_read(&writer, &reader.schema)
            .err()
            .map(|e| format!("the reader schema cannot read it: {e}")),
    }
}
