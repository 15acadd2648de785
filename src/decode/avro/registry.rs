//! Connection to a Confluent-compatible Schema Registry: URLs, basic auth,
//! TLS and timeouts, and how subjects are named.

use std::path::{Path, PathBuf};
use std::time::Duration;

use apache_avro::Schema;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use serde::Deserialize;

/// `[schema_registry]`: where writer schemas are fetched from.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URLs, tried in order (`http://registry:8081`).
    pub urls: Vec<String>,
    /// HTTP basic auth user.
    #[serde(default)]
    pub username: Option<String>,
    /// HTTP basic auth password.
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding the HTTP basic auth password (e.g. a mounted Secret).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM file of CA certificates to trust in addition to the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM file holding a client certificate and its private key (mutual TLS).
    #[serde(default)]
    pub client_identity_file: Option<PathBuf>,
    /// Timeout of one request to the registry.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How a topic's value subject is named: `topic_name`, `record_name` or `topic_record_name`.
    #[serde(default)]
    pub subject_name_strategy: SubjectNameStrategy,
}

fn default_timeout_ms() -> u64 {
    5000
}

/// The password never prints.
impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field("ca_file", &self.ca_file)
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

/// Confluent's subject naming strategies.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SubjectNameStrategy {
    /// `<topic>-value`
    #[default]
    TopicName,
    /// `<record full name>`
    RecordName,
    /// `<topic>-<record full name>`
    TopicRecordName,
}

impl SubjectNameStrategy {
    /// The value subject of `topic` whose records have the reader schema's record type.
    pub fn value_subject(self, topic: &str, reader: &Schema) -> Result<String, String> {
        let record = || {
            match reader {
            Schema::Record(r) => Ok(r.name.fullname(None)),
            _ => Err(format!(
                "{self:?} needs a record schema to name the subject; the reader schema is not a record"
            )),
        }
        };
        Ok(match self {
            SubjectNameStrategy::TopicName => format!("{topic}-value"),
            SubjectNameStrategy::RecordName => record()?,
            SubjectNameStrategy::TopicRecordName => format!("{topic}-{}", record()?),
        })
    }
}

/// The configuration cannot make a registry client; names the key.
#[derive(Debug, thiserror::Error)]
#[error("schema_registry.{key}: {reason}")]
pub struct RegistryConfigError {
    pub key: &'static str,
    pub reason: String,
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, RegistryConfigError> {
    std::fs::read(path).map_err(|e| RegistryConfigError {
        key,
        reason: format!("cannot read {}: {e}", path.display()),
    })
}

impl RegistryConfig {
    /// Checks the values and builds the client settings of `schema_registry_converter`.
    pub fn client(&self) -> Result<SrSettings, RegistryConfigError> {
        let bad = |key, reason: String| RegistryConfigError { key, reason };
        let mut urls = self.urls.iter();
        let first = urls
            .next()
            .ok_or_else(|| bad("urls", "must list at least one URL".into()))?;
        for url in &self.urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(bad(
                    "urls",
                    format!("`{url}` is not an http:// or https:// URL"),
                ));
            }
        }
        if self.timeout_ms == 0 {
            return Err(bad("timeout_ms", "must be greater than 0".into()));
        }
        let mut builder = SrSettings::new_builder(first.trim_end_matches('/').to_string());
        for url in urls {
            builder.add_url(url.trim_end_matches('/').to_string());
        }
        let from_file = match &self.password_file {
            Some(path) if self.password.is_some() => {
                return Err(bad(
                    "password_file",
                    format!(
                        "{} is given with password; give one of them",
                        path.display()
                    ),
                ))
            }
            Some(path) => {
                let bytes = read_file("password_file", path)?;
                Some(
                    String::from_utf8_lossy(&bytes)
                        .trim_end_matches(['\r', '\n'])
                        .to_string(),
                )
            }
            None => None,
        };
        match (
            &self.username,
            from_file.as_ref().or(self.password.as_ref()),
        ) {
            (Some(user), password) => {
                builder.set_basic_authorization(user, password.map(String::as_str));
            }
            (None, Some(_)) => {
                return Err(bad("password", "is set without a username".into()));
            }
            (None, None) => {}
        }
        builder.set_timeout(Duration::from_millis(self.timeout_ms));
        let mut http = reqwest::Client::builder();
        if let Some(path) = &self.ca_file {
            let pem = read_file("ca_file", path)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                bad(
                    "ca_file",
                    format!("{} holds no usable PEM certificate: {e}", path.display()),
                )
            })?;
            if certs.is_empty() {
                return Err(bad(
                    "ca_file",
                    format!("{} holds no PEM certificate", path.display()),
                ));
            }
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        if let Some(path) = &self.client_identity_file {
            let pem = read_file("client_identity_file", path)?;
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                bad(
                    "client_identity_file",
                    format!(
                        "{} is not a PEM certificate with its private key: {e}",
                        path.display()
                    ),
                )
            })?;
            http = http.identity(identity);
        }
        builder
            .build_with(http)
            .map_err(|e| bad("urls", describe(&e)))
    }
}

/// A registry client error as one readable line.
pub fn describe(e: &SRCError) -> String {
    match &e.cause {
        Some(cause) => format!("{}: {cause}", e.error),
        None => e.error.clone(),
    }
}

/// Whether the registry answered that the schema id does not exist.
pub fn is_not_found(e: &SRCError) -> bool {
    e.cause
        .as_deref()
        .is_some_and(|c| c.contains("error_code: 40403"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> RegistryConfig {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn subjects_by_strategy() {
        let reader =
            Schema::parse_str(r#"{"type":"record","name":"Order","namespace":"shop","fields":[]}"#)
                .unwrap();
        let s = |strategy| SubjectNameStrategy::value_subject(strategy, "orders", &reader).unwrap();
        assert_eq!(s(SubjectNameStrategy::TopicName), "orders-value");
        assert_eq!(s(SubjectNameStrategy::RecordName), "shop.Order");
        assert_eq!(s(SubjectNameStrategy::TopicRecordName), "orders-shop.Order");
        let string = Schema::parse_str(r#""string""#).unwrap();
        assert!(SubjectNameStrategy::RecordName
            .value_subject("orders", &string)
            .is_err());
    }

    #[test]
    fn bad_settings_name_their_key() {
        let e = config(serde_json::json!({"urls": []}))
            .client()
            .unwrap_err();
        assert_eq!(e.key, "urls");
        let e = config(serde_json::json!({"urls": ["registry:8081"]}))
            .client()
            .unwrap_err();
        assert!(e.to_string().contains("`registry:8081`"), "{e}");
        let e = config(
            serde_json::json!({"urls": ["http://r:8081"], "ca_file": "/nonexistent/ca.pem"}),
        )
        .client()
        .unwrap_err();
        assert_eq!(e.key, "ca_file");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        let e = config(serde_json::json!({"urls": ["http://r:8081"], "password": "x"}))
            .client()
            .unwrap_err();
        assert_eq!(e.key, "password");
        config(serde_json::json!({
            "urls": ["http://a:8081", "https://b:8081/"], "username": "u", "password": "p"
        }))
        .client()
        .unwrap();
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let e = config(serde_json::json!({"urls": ["https://r:8081"], "ca_file": path}))
            .client()
            .unwrap_err();
        assert_eq!(e.key, "ca_file");
    }
}
