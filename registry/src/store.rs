//! The registry's state: schemas with global ids, subjects with versions, and
//! compatibility settings; every operation the HTTP API offers, without HTTP.
//!
//! Behaviour follows the Confluent Schema Registry API: ids are global and
//! stable (the same schema registered under two subjects gets one id),
//! versions count up per subject and are never reused after a soft delete,
//! registering a schema the subject already has returns the existing id, and
//! a new schema is checked against the subject's compatibility level first.

use std::collections::BTreeMap;

use apache_avro::Schema;

use crate::compat::{self, Level};
use crate::error::ApiError;

/// One registered schema.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: u32,
    /// The schema text as first registered (attributes such as `default` and
    /// `aliases` matter to readers, so it is never reduced to a canonical form).
    pub text: String,
    parsed: Schema,
}

impl Stored {
    pub fn parsed(&self) -> &Schema {
        &self.parsed
    }
}

/// One version of a subject.
#[derive(Debug, Clone, Copy)]
struct Version {
    version: u32,
    id: u32,
    deleted: bool,
}

#[derive(Debug, Default)]
struct Subject {
    versions: Vec<Version>,
    level: Option<Level>,
}

impl Subject {
    fn live(&self) -> impl Iterator<Item = &Version> {
        self.versions.iter().filter(|v| !v.deleted)
    }

    fn is_live(&self) -> bool {
        self.live().next().is_some()
    }
}

/// A subject's version as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    pub schema: String,
}

/// Which version a request names: a number or `latest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRef {
    Number(u32),
    Latest,
}

impl VersionRef {
    /// Parses a version path segment: `1`..`2^31-1`, `latest` or `-1`.
    pub fn parse(s: &str) -> Result<VersionRef, ApiError> {
        if s == "latest" || s == "-1" {
            return Ok(VersionRef::Latest);
        }
        match s.parse::<u32>() {
            Ok(n) if (1..=i32::MAX as u32).contains(&n) => Ok(VersionRef::Number(n)),
            _ => Err(ApiError::invalid_version(s)),
        }
    }
}

/// The whole registry state.
#[derive(Debug)]
pub struct Store {
    schemas: Vec<Stored>,
    /// Normalised schema JSON -> id.
    ids: BTreeMap<String, u32>,
    subjects: BTreeMap<String, Subject>,
    level: Level,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            schemas: Vec::new(),
            ids: BTreeMap::new(),
            subjects: BTreeMap::new(),
            level: Level::Backward,
        }
    }
}

/// Parses a schema as the API receives it; `42201` if it is not valid Avro.
pub fn parse_schema(text: &str) -> Result<(Schema, String), ApiError> {
    let json: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ApiError::invalid_schema(format!("Invalid schema {text}: {e}")))?;
    let parsed = Schema::parse(&json)
        .map_err(|e| ApiError::invalid_schema(format!("Invalid schema {text}: {e}")))?;
    // serde_json's map is ordered by key, so this is a stable identity for the text.
    let normalised = json.to_string();
    Ok((parsed, normalised))
}

impl Store {
    /// The schema with this id (ids are kept even when their versions are deleted).
    pub fn schema_by_id(&self, id: u32) -> Result<&Stored, ApiError> {
        id.checked_sub(1)
            .and_then(|i| self.schemas.get(i as usize))
            .ok_or_else(|| ApiError::schema_not_found(format!("Schema {id} not found")))
    }

    /// Subjects and versions that use the schema with this id.
    pub fn versions_of_id(&self, id: u32, deleted: bool) -> Result<Vec<(String, u32)>, ApiError> {
        self.schema_by_id(id)?;
        Ok(self
            .subjects
            .iter()
            .flat_map(|(name, s)| {
                s.versions
                    .iter()
                    .filter(move |v| v.id == id && (deleted || !v.deleted))
                    .map(move |v| (name.clone(), v.version))
            })
            .collect())
    }

    /// Subject names; with `deleted`, also subjects whose versions are all soft-deleted.
    pub fn subjects(&self, deleted: bool) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(_, s)| s.is_live() || (deleted && !s.versions.is_empty()))
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn subject(&self, name: &str, deleted: bool) -> Result<&Subject, ApiError> {
        self.subjects
            .get(name)
            .filter(|s| s.is_live() || (deleted && !s.versions.is_empty()))
            .ok_or_else(|| ApiError::subject_not_found(name))
    }

    /// Version numbers of a subject.
    pub fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<u32>, ApiError> {
        let s = self.subject(subject, deleted)?;
        Ok(s.versions
            .iter()
            .filter(|v| deleted || !v.deleted)
            .map(|v| v.version)
            .collect())
    }

    fn find_version(
        &self,
        subject: &str,
        version: VersionRef,
        deleted: bool,
    ) -> Result<Version, ApiError> {
        let s = self.subject(subject, deleted)?;
        let mut candidates = s.versions.iter().filter(|v| deleted || !v.deleted);
        let found = match version {
            VersionRef::Latest => candidates.next_back(),
            VersionRef::Number(n) => candidates.find(|v| v.version == n),
        };
        found.copied().ok_or_else(|| match version {
            VersionRef::Number(n) => ApiError::version_not_found(&n.to_string()),
            VersionRef::Latest => ApiError::version_not_found("latest"),
        })
    }

    /// One version of a subject.
    pub fn version(
        &self,
        subject: &str,
        version: VersionRef,
        deleted: bool,
    ) -> Result<SubjectVersion, ApiError> {
        let v = self.find_version(subject, version, deleted)?;
        let stored = self.schema_by_id(v.id)?;
        Ok(SubjectVersion {
            subject: subject.to_string(),
            version: v.version,
            id: v.id,
            schema: stored.text.clone(),
        })
    }

    /// Registers a schema under a subject (`POST /subjects/{s}/versions`); returns its id.
    pub fn register(&mut self, subject: &str, text: &str) -> Result<u32, ApiError> {
        let (parsed, normalised) = parse_schema(text)?;
        if let Some(&id) = self.ids.get(&normalised) {
            if let Some(s) = self.subjects.get(subject) {
                if s.live().any(|v| v.id == id) {
                    return Ok(id);
                }
            }
        }
        let level = self.level_of(subject);
        let earlier = self.live_schemas(subject);
        let problems = compat::check(level, &parsed, &earlier);
        if !problems.is_empty() {
            return Err(ApiError::incompatible(subject, &problems));
        }
        let id = match self.ids.get(&normalised) {
            Some(&id) => id,
            None => {
                let id = self.schemas.len() as u32 + 1;
                self.schemas.push(Stored {
                    id,
                    text: text.to_string(),
                    parsed,
                });
                self.ids.insert(normalised, id);
                id
            }
        };
        let s = self.subjects.entry(subject.to_string()).or_default();
        let version = s.versions.iter().map(|v| v.version).max().unwrap_or(0) + 1;
        s.versions.push(Version {
            version,
            id,
            deleted: false,
        });
        Ok(id)
    }

    /// Finds a schema under a subject (`POST /subjects/{s}`).
    pub fn lookup(
        &self,
        subject: &str,
        text: &str,
        deleted: bool,
    ) -> Result<SubjectVersion, ApiError> {
        let (_, normalised) = parse_schema(text)?;
        let s = self.subject(subject, deleted)?;
        let id = self
            .ids
            .get(&normalised)
            .copied()
            .ok_or_else(|| ApiError::schema_not_found("Schema not found".into()))?;
        let v = s
            .versions
            .iter()
            .rev()
            .find(|v| v.id == id && (deleted || !v.deleted))
            .ok_or_else(|| ApiError::schema_not_found("Schema not found".into()))?;
        self.version(subject, VersionRef::Number(v.version), deleted)
    }

    /// Whether a schema could be registered (`POST /compatibility/...`): against one
    /// version if given, else against what the subject's level asks for.
    /// Returns the reasons it could not (empty when compatible).
    pub fn test_compatibility(
        &self,
        subject: &str,
        version: Option<VersionRef>,
        text: &str,
    ) -> Result<Vec<String>, ApiError> {
        let (parsed, _) = parse_schema(text)?;
        let level = self.level_of(subject);
        let earlier = match version {
            Some(v) => {
                let found = self.find_version(subject, v, false)?;
                vec![self.schema_by_id(found.id)?.parsed.clone()]
            }
            None => self.live_schemas(subject),
        };
        let level = match version {
            // Against one chosen version, the transitive forms mean the same as their plain forms.
            Some(_) => level.non_transitive(),
            None => level,
        };
        Ok(compat::check(level, &parsed, &earlier))
    }

    fn live_schemas(&self, subject: &str) -> Vec<Schema> {
        self.subjects
            .get(subject)
            .map(|s| {
                s.live()
                    .filter_map(|v| self.schema_by_id(v.id).ok())
                    .map(|st| st.parsed.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Deletes all versions of a subject: soft first, then `permanent`.
    pub fn delete_subject(&mut self, subject: &str, permanent: bool) -> Result<Vec<u32>, ApiError> {
        let s = self
            .subjects
            .get_mut(subject)
            .filter(|s| !s.versions.is_empty())
            .ok_or_else(|| ApiError::subject_not_found(subject))?;
        if permanent {
            if s.is_live() {
                return Err(ApiError::subject_not_soft_deleted(subject));
            }
            let versions = s.versions.iter().map(|v| v.version).collect();
            s.versions.clear();
            return Ok(versions);
        }
        if !s.is_live() {
            return Err(ApiError::subject_soft_deleted(subject));
        }
        let mut versions = Vec::new();
        for v in s.versions.iter_mut().filter(|v| !v.deleted) {
            v.deleted = true;
            versions.push(v.version);
        }
        Ok(versions)
    }

    /// Deletes one version: soft first, then `permanent`.
    pub fn delete_version(
        &mut self,
        subject: &str,
        version: VersionRef,
        permanent: bool,
    ) -> Result<u32, ApiError> {
        let found = self.find_version(subject, version, permanent)?;
        let s = self
            .subjects
            .get_mut(subject)
            .ok_or_else(|| ApiError::subject_not_found(subject))?;
        if permanent {
            if !found.deleted {
                return Err(ApiError::version_not_soft_deleted(subject, found.version));
            }
            s.versions.retain(|v| v.version != found.version);
        } else if let Some(v) = s.versions.iter_mut().find(|v| v.version == found.version) {
            v.deleted = true;
        }
        Ok(found.version)
    }

    /// The global compatibility level.
    pub fn global_level(&self) -> Level {
        self.level
    }

    pub fn set_global_level(&mut self, level: Level) {
        self.level = level;
    }

    /// A subject's own level, if one is set.
    pub fn subject_level(&self, subject: &str) -> Option<Level> {
        self.subjects.get(subject).and_then(|s| s.level)
    }

    pub fn set_subject_level(&mut self, subject: &str, level: Option<Level>) -> Option<Level> {
        let s = self.subjects.entry(subject.to_string()).or_default();
        std::mem::replace(&mut s.level, level)
    }

    /// The level that applies to a subject.
    pub fn level_of(&self, subject: &str) -> Level {
        self.subject_level(subject).unwrap_or(self.level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"}]}"#;
    const V2: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"string","default":""}]}"#;
    const V2_NO_DEFAULT: &str = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"string"}]}"#;

    #[test]
    fn ids_are_global_and_versions_per_subject() {
        let mut s = Store::default();
        assert_eq!(s.register("x-value", V1).unwrap(), 1);
        assert_eq!(
            s.register("x-value", V1).unwrap(),
            1,
            "same schema, same id"
        );
        assert_eq!(s.register("x-value", V2).unwrap(), 2);
        assert_eq!(s.register("y-value", V2).unwrap(), 2, "ids are global");
        assert_eq!(s.versions("x-value", false).unwrap(), vec![1, 2]);
        assert_eq!(s.versions("y-value", false).unwrap(), vec![1]);
        let latest = s.version("x-value", VersionRef::Latest, false).unwrap();
        assert_eq!((latest.version, latest.id), (2, 2));
    }

    #[test]
    fn backward_refuses_a_new_field_without_default() {
        let mut s = Store::default();
        s.register("x", V1).unwrap();
        let e = s.register("x", V2_NO_DEFAULT).unwrap_err();
        assert_eq!((e.status, e.code), (409, 409));
        s.set_subject_level("x", Some(Level::None));
        assert_eq!(s.register("x", V2_NO_DEFAULT).unwrap(), 2);
    }

    #[test]
    fn versions_are_not_reused_after_a_soft_delete() {
        let mut s = Store::default();
        s.register("x", V1).unwrap();
        s.register("x", V2).unwrap();
        assert_eq!(
            s.delete_version("x", VersionRef::Number(2), false).unwrap(),
            2
        );
        assert_eq!(s.versions("x", false).unwrap(), vec![1]);
        assert_eq!(s.versions("x", true).unwrap(), vec![1, 2]);
        assert_eq!(s.register("x", V2).unwrap(), 2, "the id stays");
        assert_eq!(s.versions("x", false).unwrap(), vec![1, 3]);
        assert_eq!(s.schema_by_id(2).unwrap().id, 2);
    }

    #[test]
    fn permanent_delete_needs_a_soft_delete_first() {
        let mut s = Store::default();
        s.register("x", V1).unwrap();
        assert_eq!(s.delete_subject("x", true).unwrap_err().code, 40405);
        assert_eq!(s.delete_subject("x", false).unwrap(), vec![1]);
        assert_eq!(s.subjects(false), Vec::<String>::new());
        assert_eq!(s.subjects(true), vec!["x".to_string()]);
        assert_eq!(s.delete_subject("x", true).unwrap(), vec![1]);
        assert_eq!(s.subjects(true), Vec::<String>::new());
        assert_eq!(s.versions("x", true).unwrap_err().code, 40401);
    }

    #[test]
    fn version_refs() {
        assert_eq!(VersionRef::parse("latest").unwrap(), VersionRef::Latest);
        assert_eq!(VersionRef::parse("-1").unwrap(), VersionRef::Latest);
        assert_eq!(VersionRef::parse("3").unwrap(), VersionRef::Number(3));
        assert_eq!(VersionRef::parse("0").unwrap_err().code, 42202);
        assert_eq!(VersionRef::parse("x").unwrap_err().code, 42202);
    }
}
