//! The `[kafka]` table: librdkafka properties shared by every Kafka client
//! Ordo makes (consumer, dead-letter producer, lag probe, `ordo dlq`, `ordo
//! check`). Secrets may come from files (`<property>_file`); no value of a
//! secret property, nor of a property librdkafka does not know, is ever shown:
//! not in errors, not in `Debug` output, not in `ordo check`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// librdkafka properties, by name (`bootstrap.servers`, `sasl.password`, ...).
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct KafkaProperties(pub BTreeMap<String, String>);

impl std::ops::Deref for KafkaProperties {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KafkaProperties {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<'a> IntoIterator for &'a KafkaProperties {
    type Item = (&'a String, &'a String);
    type IntoIter = std::collections::btree_map::Iter<'a, String, String>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Secret values print as `[redacted]`.
impl std::fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let shown = if is_secret(k) { REDACTED } else { v.as_str() };
                (k, shown)
            }))
            .finish()
    }
}

const REDACTED: &str = "[redacted]";

/// Suffix of a property whose value is a file holding the real property's value.
const FILE_SUFFIX: &str = "_file";

/// Properties whose values are secrets (passwords, keys, tokens, credentials).
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "jaas",
        "credential",
        "private",
    ]
    .iter()
    .any(|w| key.contains(w))
        || key == "ssl.key.pem"
        || key == "ssl_key"
        || key == "sasl.oauthbearer.config"
        || key == "sasl.oauthbearer.assertion.private.key.pem"
}

/// Properties known to librdkafka and not secret, whose values may be shown
/// in an error (so a typo such as `SASL_SSLX` can be seen).
fn is_shown(key: &str) -> bool {
    !is_secret(key)
        && (matches!(
            key,
            "bootstrap.servers"
                | "group.id"
                | "client.id"
                | "security.protocol"
                | "sasl.mechanism"
                | "sasl.mechanisms"
                | "sasl.oauthbearer.method"
                | "ssl.endpoint.identification.algorithm"
                | "enable.ssl.certificate.verification"
                | "partition.assignment.strategy"
                | "auto.offset.reset"
                | "group.protocol"
                | "isolation.level"
                | "compression.codec"
                | "compression.type"
        ) || key.ends_with(".ms")
            || key.ends_with(".bytes")
            || key.ends_with(".messages")
            || key.ends_with(".kbytes"))
}

/// A property that cannot be used; `reason` never holds a secret value.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct PropertyError {
    /// The property, e.g. `sasl.password`.
    pub key: String,
    pub reason: String,
}

impl KafkaProperties {
    /// Replaces every `<property>_file` by `<property>` read from that file
    /// (trailing newlines removed). `base` resolves relative paths.
    ///
    /// Environment variables map `_` to `.`, so `ORDO_KAFKA__SASL_PASSWORD_FILE`
    /// arrives as `sasl.password.file` and is read the same way.
    pub fn resolve_files(&mut self, base: Option<&Path>) -> Result<(), PropertyError> {
        let file_keys: Vec<String> = self
            .0
            .keys()
            .filter(|k| k.ends_with(FILE_SUFFIX) || k.ends_with(".file"))
            .cloned()
            .collect();
        for key in file_keys {
            let target = key[..key.len() - FILE_SUFFIX.len()].to_string();
            let path = self.0.remove(&key).unwrap_or_default();
            let path = match base {
                Some(b) if Path::new(&path).is_relative() => b.join(&path),
                _ => path.into(),
            };
            let text = std::fs::read_to_string(&path).map_err(|e| PropertyError {
                key: key.clone(),
                reason: format!("cannot read {}: {e}", path.display()),
            })?;
            if self.0.contains_key(&target) {
                return Err(PropertyError {
                    key: key.clone(),
                    reason: format!("{target} is set too; give one of them"),
                });
            }
            self.0
                .insert(target, text.trim_end_matches(['\r', '\n']).to_string());
        }
        Ok(())
    }

    /// Checks the properties with librdkafka itself (as `kind` client would
    /// use them), returning the offending property and a reason without its value.
    pub fn validate(&self) -> Result<(), PropertyError> {
        let mut client = rdkafka::ClientConfig::new();
        for (k, v) in &self.0 {
            client.set(k, v);
        }
        client
            .create_native_config()
            .map(|_| ())
            .map_err(|e| describe_error(&e))
    }

    /// The security settings in effect, without secret values, for `ordo check`.
    pub fn security_summary(&self) -> String {
        let get = |k: &str| self.0.get(k).map(String::as_str);
        let protocol = get("security.protocol").unwrap_or("plaintext");
        let lower = protocol.to_ascii_lowercase();
        let mut parts = vec![format!("security.protocol={protocol}")];
        if lower.starts_with("sasl") {
            let mechanism = get("sasl.mechanisms")
                .or(get("sasl.mechanism"))
                .unwrap_or("GSSAPI");
            let mut m = format!("sasl.mechanism={mechanism}");
            if let Some(user) = get("sasl.username") {
                m.push_str(&format!(" as user {user}"));
            }
            if mechanism.eq_ignore_ascii_case("OAUTHBEARER") {
                match get("sasl.oauthbearer.method") {
                    Some(method) if method.eq_ignore_ascii_case("oidc") => m.push_str(&format!(
                        " (OIDC token endpoint {})",
                        get("sasl.oauthbearer.token.endpoint.url").unwrap_or("not set")
                    )),
                    _ => m.push_str(" (unsecured JWT or default method)"),
                }
            }
            let secrets: Vec<&str> = self
                .0
                .keys()
                .filter(|k| is_secret(k))
                .map(String::as_str)
                .collect();
            if !secrets.is_empty() {
                m.push_str(&format!(", secrets set: {}", secrets.join(", ")));
            }
            parts.push(m);
        }
        if lower.ends_with("ssl") {
            let verify = get("enable.ssl.certificate.verification")
                .is_none_or(|v| !v.eq_ignore_ascii_case("false"));
            let host = get("ssl.endpoint.identification.algorithm")
                .is_none_or(|v| !v.eq_ignore_ascii_case("none"));
            let ca = get("ssl.ca.location")
                .map(|l| format!("CA {l}"))
                .or(get("ssl.ca.pem").map(|_| "CA from ssl.ca.pem".to_string()))
                .unwrap_or_else(|| "system CAs".into());
            parts.push(match (verify, host) {
                (false, _) => "TLS certificate verification OFF".into(),
                (true, true) => {
                    format!("TLS verifies the broker's certificate and host name ({ca})")
                }
                (true, false) => {
                    format!("TLS verifies the broker's certificate, not its host name ({ca})")
                }
            });
            if get("ssl.certificate.location").is_some() || get("ssl.certificate.pem").is_some() {
                parts.push("client certificate (mutual TLS)".into());
            }
        }
        parts.join("; ")
    }
}

/// An rdkafka error from creating a client, with the property named and its
/// value left out unless the property is known not to be secret.
pub fn describe_error(e: &rdkafka::error::KafkaError) -> PropertyError {
    match e {
        rdkafka::error::KafkaError::ClientConfig(_, desc, key, value) => {
            let mut reason = desc.clone();
            if !is_shown(key) && !value.is_empty() {
                reason = reason.replace(value.as_str(), REDACTED);
            }
            if key == "sasl.jaas.config" {
                reason.push_str(
                    "; sasl.jaas.config is the Java client's: set sasl.mechanism, \
                     sasl.username and sasl.password (or sasl.oauthbearer.*) instead",
                );
            }
            if is_shown(key) && !value.is_empty() && !reason.contains(value.as_str()) {
                reason = format!("`{value}`: {reason}");
            }
            PropertyError {
                key: key.clone(),
                reason,
            }
        }
        other => PropertyError {
            key: String::new(),
            reason: other.to_string(),
        },
    }
}

/// librdkafka repeats itself: every client of the process logs the same
/// broker failure, each error callback repeats a log line, and a broker that
/// stays down is reported again every few hundred milliseconds. Lines are
/// forwarded to `tracing` (target `librdkafka`) once per
/// [`REPEAT_INTERVAL`] per distinct message, process-wide; the next one says
/// how many were held back.
pub const REPEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether a librdkafka message is due to be logged now: `Some(held back
/// since the last time)` if so.
fn due(message: &str) -> Option<u64> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;
    static SEEN: OnceLock<Mutex<HashMap<String, (Instant, u64)>>> = OnceLock::new();
    // The same failure, whatever the client, broker thread and counters.
    let key: String = message
        .split(" (after ")
        .next()
        .unwrap_or(message)
        .split("]: ")
        .last()
        .unwrap_or(message)
        .chars()
        .filter(|c| !c.is_ascii_digit())
        .collect();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    if seen.len() > 10_000 {
        seen.retain(|_, (at, _)| now.duration_since(*at) < REPEAT_INTERVAL);
    }
    match seen.get_mut(&key) {
        Some((at, held)) if now.duration_since(*at) < REPEAT_INTERVAL => {
            *held += 1;
            None
        }
        Some((at, held)) => {
            let n = *held;
            *at = now;
            *held = 0;
            Some(n)
        }
        None => {
            seen.insert(key, (now, 0));
            Some(0)
        }
    }
}

/// The last error a client's librdkafka reported, through its error callback
/// or an error-level log line (e.g. `SASL authentication error: ...`, a failed
/// TLS handshake), so that a connection failure can say why rather than just
/// "transport failure". Log lines are forwarded to `tracing`, without
/// repetitions (see [`REPEAT_INTERVAL`]).
#[derive(Debug, Default)]
pub struct LastError(std::sync::Mutex<Option<String>>);

impl LastError {
    /// For `ClientContext::error`: recorded; logged as a warning unless
    /// logged lately (the error callback mostly repeats a log line).
    pub fn error(&self, error: &rdkafka::error::KafkaError, reason: &str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_string());
        if let Some(repeated) = due(reason) {
            tracing::warn!(target: "librdkafka", repeated, "librdkafka: {error}: {reason}");
        }
    }

    /// For `ClientContext::log`.
    pub fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        if matches!(level, L::Emerg | L::Alert | L::Critical | L::Error) {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(message.to_string());
        }
        if matches!(level, L::Debug) {
            tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}");
            return;
        }
        let Some(repeated) = due(message) else {
            return;
        };
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(target: "librdkafka", repeated, "librdkafka: {fac} {message}")
            }
            L::Warning => {
                tracing::warn!(target: "librdkafka", repeated, "librdkafka: {fac} {message}")
            }
            _ => tracing::info!(target: "librdkafka", repeated, "librdkafka: {fac} {message}"),
        }
    }

    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A client context that remembers the last error, for one-shot clients
/// (`ordo check`, `ordo dlq`).
#[derive(Default)]
pub struct RecordingContext {
    pub last_error: LastError,
}

impl rdkafka::ClientContext for RecordingContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.last_error.log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.last_error.error(&error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for RecordingContext {}

impl RecordingContext {
    /// The last error librdkafka reported to this client.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.get()
    }
}

/// Whether `t` is a valid Kafka topic name: 1 to 249 of `[a-zA-Z0-9._-]`.
pub fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Fetch errors that fetching the same record again cannot fix.
pub fn fetch_error_is_permanent(code: rdkafka::types::RDKafkaErrorCode) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        code,
        C::NotImplemented
            | C::BadCompression
            | C::BadMessage
            | C::InvalidMessage
            | C::MessageSizeTooLarge
            | C::UnsupportedForMessageFormat
            | C::UnsupportedCompressionType
            | C::InvalidRecord
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode as C;

    #[test]
    fn librdkafka_repeating_itself_is_logged_once() {
        let line = |n: u32| {
            format!("[thrd:127.0.0.1:{n}/bootstrap]: 127.0.0.1:{n}/bootstrap: Connect to ipv4#127.0.0.1:{n} failed: Connection refused (after {n}ms in state CONNECT)")
        };
        assert_eq!(due(&line(1)), Some(0));
        assert_eq!(due(&line(1)), None);
        assert_eq!(due(&line(2)), None, "another client, the same failure");
        assert_eq!(due("something else entirely"), Some(0));
    }

    fn props(pairs: &[(&str, &str)]) -> KafkaProperties {
        KafkaProperties(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn an_unknown_property_is_named_without_its_value() {
        let p = props(&[
            ("bootstrap.servers", "b:9092"),
            ("sasl.pasword", "LeakMe123"),
        ]);
        let e = p.validate().unwrap_err();
        assert_eq!(e.key, "sasl.pasword");
        assert!(!e.to_string().contains("LeakMe123"), "{e}");
        assert!(
            e.to_string().contains("No such configuration property"),
            "{e}"
        );
    }

    #[test]
    fn a_java_jaas_config_is_refused_with_what_to_set_instead() {
        let jaas = "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"u\" password=\"Sup3rS3cret\";";
        let e = props(&[("sasl.jaas.config", jaas)]).validate().unwrap_err();
        let text = e.to_string();
        assert!(
            !text.contains("Sup3rS3cret") && !text.contains("ScramLoginModule"),
            "{text}"
        );
        assert!(text.contains("sasl.username"), "{text}");
    }

    #[test]
    fn a_bad_non_secret_value_is_shown() {
        let e = props(&[("security.protocol", "SASL_SSLX")])
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("SASL_SSLX"), "{e}");
    }

    #[test]
    fn tls_sasl_and_every_codec_are_built_in() {
        let p = props(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
            ("compression.codec", "zstd"),
        ]);
        p.validate().unwrap();
        for mechanism in ["PLAIN", "SCRAM-SHA-256", "OAUTHBEARER", "GSSAPI"] {
            props(&[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", mechanism),
            ])
            .validate()
            .unwrap_or_else(|e| panic!("{mechanism}: {e}"));
        }
        props(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "OAUTHBEARER"),
            ("sasl.oauthbearer.method", "oidc"),
            ("sasl.oauthbearer.client.id", "id"),
            ("sasl.oauthbearer.client.secret", "s"),
            ("sasl.oauthbearer.token.endpoint.url", "https://idp/token"),
        ])
        .validate()
        .unwrap();
    }

    #[test]
    fn secrets_come_from_files_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cr3t-value\n").unwrap();
        let mut p = props(&[
            ("sasl.username", "ordo"),
            ("sasl.password_file", "pw"),
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
        ]);
        p.resolve_files(Some(dir.path())).unwrap();
        assert_eq!(p.get("sasl.password").unwrap(), "s3cr3t-value");
        assert!(!p.contains_key("sasl.password_file"));
        assert!(!format!("{p:?}").contains("s3cr3t"));
        let summary = p.security_summary();
        assert!(summary.contains("SCRAM-SHA-512") && summary.contains("sasl.password"));
        assert!(!summary.contains("s3cr3t"), "{summary}");
        // From an environment variable `_` became `.`.
        let mut p = props(&[("sasl.password.file", "pw")]);
        p.resolve_files(Some(dir.path())).unwrap();
        assert_eq!(p.get("sasl.password").unwrap(), "s3cr3t-value");
        let mut p = props(&[("ssl.key.password_file", "/no/such/file")]);
        let e = p.resolve_files(None).unwrap_err();
        assert!(e.to_string().contains("/no/such/file"), "{e}");
    }

    #[test]
    fn undecodable_records_stop_and_broker_trouble_retries() {
        for code in [
            C::NotImplemented,
            C::BadCompression,
            C::BadMessage,
            C::MessageSizeTooLarge,
        ] {
            assert!(fetch_error_is_permanent(code), "{code:?}");
        }
        for code in [
            C::BrokerTransportFailure,
            C::AllBrokersDown,
            C::NotLeaderForPartition,
            C::RequestTimedOut,
            C::OffsetOutOfRange,
        ] {
            assert!(!fetch_error_is_permanent(code), "{code:?}");
        }
    }
}
