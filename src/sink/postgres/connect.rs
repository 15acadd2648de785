//! How Ordo reaches PostgreSQL: the connection string and `[sink.postgres]` keys
//! turned into a tokio-postgres configuration and a TLS connector that honour
//! libpq's `sslmode` (`disable`, `prefer`, `require`, `verify-ca`,
//! `verify-full`), `sslrootcert`, `sslcert` and `sslkey`.
//!
//! tokio-postgres itself knows only `disable`/`prefer`/`require` and refuses
//! the `ssl*` file keys, so they are taken out of the string here and applied
//! to an OpenSSL connector (the same OpenSSL librdkafka links).

use std::path::PathBuf;

pub use super::config::PostgresConfig;
use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS if the server offers it, without verification; plain otherwise (libpq's default).
    Prefer,
    /// TLS or no connection; the certificate is verified only if `sslrootcert` is given.
    Require,
    /// TLS, the server's certificate signed by a trusted CA.
    VerifyCa,
    /// As `verify-ca`, and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            // libpq's `allow` tries plain first; TLS when offered is the safer reading.
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ))
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// TLS as configured: the mode and the files it uses.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// `None`: the system's CA store.
    pub root_cert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsSettings {
    /// Whether the server's certificate is checked, for `ordo check` and logs.
    pub fn describe(&self) -> String {
        let verify = match self.mode {
            SslMode::Disable => return "TLS off (sslmode=disable)".into(),
            SslMode::Prefer => "TLS if offered, certificate not verified",
            SslMode::Require if self.root_cert.is_none() => {
                "TLS required, certificate not verified"
            }
            SslMode::Require | SslMode::VerifyCa => {
                "TLS required, CA verified, host name not checked"
            }
            SslMode::VerifyFull => "TLS required, CA and host name verified",
        };
        let ca = match &self.root_cert {
            Some(p) => format!("CA {}", p.display()),
            None => "system CAs".into(),
        };
        let client = if self.cert.is_some() {
            ", client certificate"
        } else {
            ""
        };
        format!("sslmode={}: {verify} ({ca}{client})", self.mode.as_str())
    }
}

/// A connection string and keys, ready to connect.
pub struct Connection {
    pub config: tokio_postgres::Config,
    pub tls: TlsSettings,
    /// Where the password comes from (see [`PASSWORD_PRECEDENCE`]), or
    /// `None` when none is set.
    pub password_from: Option<&'static str>,
}

/// Where Ordo takes the PostgreSQL password from, first found wins.
pub const PASSWORD_PRECEDENCE: &str = "sink.postgres.password_file, else sink.postgres.password (or ORDO_SINK__POSTGRES__PASSWORD), else the URL's, else PGPASSWORD";

/// What is wrong with the `[sink.postgres]` settings; never carries a secret.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConnectionError {
    pub key: String,
    pub reason: String,
}

fn bad(key: &str, reason: impl Into<String>) -> ConnectionError {
    ConnectionError {
        key: key.into(),
        reason: reason.into(),
    }
}

impl Connection {
    /// Parses `pg.url`, takes the `ssl*` keys out of it and applies the
    /// `[sink.postgres]` keys over them.
    pub fn from_config(pg: &PostgresConfig) -> Result<Connection, ConnectionError> {
        Self::from_config_and_env(pg, std::env::var("PGPASSWORD").ok())
    }

    /// [`Connection::from_config`], with the value of `PGPASSWORD` given
    /// (libpq's variable: the password when no other is set).
    pub fn from_config_and_env(
        pg: &PostgresConfig,
        pgpassword: Option<String>,
    ) -> Result<Connection, ConnectionError> {
        let (rest, ssl) = split_ssl_params(&pg.url).map_err(|r| bad("sink.postgres.url", r))?;
        let mut config: tokio_postgres::Config = rest.parse().map_err(|e| {
            // tokio-postgres's message names the key or value at fault, never the password.
            bad(
                "sink.postgres.url",
                format!("is not a PostgreSQL connection string: {e}"),
            )
        })?;
        let pick = |key: &str, over: Option<String>| {
            over.or_else(|| ssl.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
        };
        let mode = match pick("sslmode", pg.sslmode.clone()) {
            Some(m) => SslMode::parse(&m).map_err(|r| bad("sink.postgres.sslmode", r))?,
            None => SslMode::Prefer,
        };
        let path = |key: &str, over: &Option<PathBuf>| {
            pick(key, over.as_ref().map(|p| p.display().to_string()))
                .filter(|p| p != "system")
                .map(PathBuf::from)
        };
        let tls = TlsSettings {
            mode,
            root_cert: path("sslrootcert", &pg.sslrootcert),
            cert: path("sslcert", &pg.sslcert),
            key: path("sslkey", &pg.sslkey),
        };
        if tls.cert.is_some() != tls.key.is_some() {
            return Err(bad(
                "sink.postgres.sslcert",
                "sslcert and sslkey go together (a client certificate and its key)",
            ));
        }
        for (key, file) in [
            ("sink.postgres.sslrootcert", &tls.root_cert),
            ("sink.postgres.sslcert", &tls.cert),
            ("sink.postgres.sslkey", &tls.key),
        ] {
            if let Some(f) = file.as_ref().filter(|f| !f.is_file()) {
                return Err(bad(key, format!("{} is not a readable file", f.display())));
            }
        }
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let password_from = if let Some(file) = &pg.password_file {
            let text = std::fs::read_to_string(file).map_err(|e| {
                bad(
                    "sink.postgres.password_file",
                    format!("cannot read {}: {e}", file.display()),
                )
            })?;
            config.password(text.trim_end_matches(['\r', '\n']));
            Some("sink.postgres.password_file")
        } else if let Some(p) = &pg.password {
            config.password(p.as_str());
            Some("sink.postgres.password")
        } else if config.get_password().is_some() {
            Some("the URL")
        } else if let Some(p) = pgpassword.filter(|p| !p.is_empty()) {
            config.password(p);
            Some("PGPASSWORD")
        } else {
            None
        };
        Ok(Connection {
            config,
            tls,
            password_from,
        })
    }

    /// The OpenSSL connector for this mode: which CAs, whether the host name is checked.
    pub fn connector(&self) -> Result<MakeTlsConnector, ConnectionError> {
        let ssl_err = |key: &str| {
            let key = key.to_string();
            move |e: openssl::error::ErrorStack| bad(&key, format!("cannot use it: {e}"))
        };
        let mut builder = SslConnector::builder(SslMethod::tls_client())
            .map_err(ssl_err("sink.postgres.sslmode"))?;
        let verify = match self.tls.mode {
            SslMode::Disable | SslMode::Prefer => false,
            SslMode::Require => self.tls.root_cert.is_some(),
            SslMode::VerifyCa | SslMode::VerifyFull => true,
        };
        if let Some(ca) = &self.tls.root_cert {
            builder
                .set_ca_file(ca)
                .map_err(ssl_err("sink.postgres.sslrootcert"))?;
        }
        if let (Some(cert), Some(key)) = (&self.tls.cert, &self.tls.key) {
            builder
                .set_certificate_chain_file(cert)
                .map_err(ssl_err("sink.postgres.sslcert"))?;
            builder
                .set_private_key_file(key, SslFiletype::PEM)
                .map_err(ssl_err("sink.postgres.sslkey"))?;
        }
        builder.set_verify(if verify {
            SslVerifyMode::PEER
        } else {
            SslVerifyMode::NONE
        });
        let mut connector = MakeTlsConnector::new(builder.build());
        let check_host = self.tls.mode == SslMode::VerifyFull;
        connector.set_callback(move |c, _domain| {
            c.set_verify_hostname(check_host);
            if !verify {
                c.set_verify(SslVerifyMode::NONE);
            }
            Ok(())
        });
        Ok(connector)
    }
}

/// Splits `sslmode`, `sslrootcert`, `sslcert` and `sslkey` from a URL's query
/// or a key=value string; returns the rest and those (key, value) pairs.
fn split_ssl_params(url: &str) -> Result<(String, Vec<(String, String)>), String> {
    const OURS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];
    let mut taken = vec![];
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_string(), taken));
        };
        let mut kept = vec![];
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if OURS.contains(&k) {
                let v = percent_decode(v)
                    .ok_or_else(|| format!("the value of `{k}` is not valid percent-encoding"))?;
                taken.push((k.to_string(), v));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, taken));
    }
    if let Some((scheme, _)) = url.split_once("://") {
        let hint = if scheme.starts_with("jdbc:") {
            " (a JDBC URL: drop `jdbc:`)"
        } else {
            ""
        };
        return Err(format!(
            "`{scheme}://...` is not a PostgreSQL URL{hint}: expected `postgres://user@host:5432/dbname` or `host=... dbname=...`"
        ));
    }
    // key=value form: values may be single-quoted with backslash escapes.
    let mut kept = vec![];
    let mut chars = url.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("expected `=` after `{key}`"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut raw = String::new();
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            raw.push('\'');
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => {
                        let c = chars.next().ok_or("unterminated quoted value")?;
                        raw.push('\\');
                        raw.push(c);
                        value.push(c);
                    }
                    Some('\'') => {
                        raw.push('\'');
                        break;
                    }
                    Some(c) => {
                        raw.push(c);
                        value.push(c);
                    }
                    None => return Err(format!("unterminated quoted value of `{key}`")),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                raw.push(c);
                value.push(c);
                chars.next();
            }
        }
        if OURS.contains(&key.as_str()) {
            taken.push((key, value));
        } else {
            kept.push(format!("{key}={raw}"));
        }
    }
    Ok((kept.join(" "), taken))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// True when the server refused the login (a wrong password, no password
/// where one is asked for, a `pg_hba.conf` rejection).
pub fn is_authentication(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(code) => {
            *code == SqlState::INVALID_PASSWORD
                || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        }
        None => {
            let mut link: Option<&(dyn std::error::Error + 'static)> = Some(e);
            while let Some(l) = link {
                if l.to_string().contains("password missing") {
                    return true;
                }
                link = l.source();
            }
            false
        }
    }
}

/// An authentication failure as a user fixes it: what the server said and
/// where the password came from (never the password).
pub fn explain_authentication(e: &tokio_postgres::Error, password_from: Option<&str>) -> String {
    let said = match e.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    };
    match password_from {
        None => format!(
            "{said}: the server asks for a password and none is set (Ordo takes it from {PASSWORD_PRECEDENCE})"
        ),
        Some(from) => format!(
            "{said} (the password came from {from}; Ordo takes it from {PASSWORD_PRECEDENCE})"
        ),
    }
}

/// Says why a connection failed: the server's own message for a refused
/// login, or what went wrong in the TLS handshake in words a person can act on.
pub fn explain_connect_error(e: &tokio_postgres::Error, tls: &TlsSettings) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !chain.contains(&text) {
            chain.push_str(": ");
            chain.push_str(&text);
        }
        source = s.source();
    }
    let lower = chain.to_lowercase();
    let ca = match &tls.root_cert {
        Some(p) => format!("the CA in sslrootcert {}", p.display()),
        None => "the system's CAs (set sslrootcert)".into(),
    };
    let why = if lower.contains("server does not support tls") {
        format!(
            "the server does not support TLS, and sslmode={} does not fall back to a plain connection",
            tls.mode.as_str()
        )
    } else if lower.contains("hostname mismatch") || lower.contains("ip address mismatch") {
        "the server's certificate does not name this host (sslmode=verify-full checks the host name)".into()
    } else if lower.contains("certificate verify failed") {
        format!("the server's certificate is not signed by {ca}")
    } else {
        return chain;
    };
    format!("TLS handshake failed: {why} ({chain})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(url: &str) -> PostgresConfig {
        PostgresConfig {
            url: url.into(),
            password: None,
            password_file: None,
            sslmode: None,
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
            pool_size: 1,
            group_commit: true,
            connect_timeout_ms: 1000,
            mode: Some(super::super::SinkMode::EventStore),
            table: Some("events".into()),
            routes: Vec::new(),
            schema: "public".into(),
            columns: vec![],
            payload: true,
            auto_columns: None,
        }
    }

    #[test]
    fn ssl_keys_are_taken_from_a_url() {
        let ca = tempfile::NamedTempFile::new().unwrap();
        let url = format!(
            "postgres://u:p@db.example:5433/app?application_name=x&sslmode=verify-full&sslrootcert={}",
            ca.path().display()
        );
        let c = Connection::from_config(&pg(&url)).unwrap();
        assert_eq!(c.tls.mode, SslMode::VerifyFull);
        assert_eq!(c.tls.root_cert.as_deref(), Some(ca.path()));
        assert_eq!(c.config.get_dbname(), Some("app"));
        assert_eq!(c.config.get_application_name(), Some("x"));
        assert_eq!(
            c.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }

    #[test]
    fn a_url_of_another_scheme_is_named_as_not_postgres() {
        for (url, hint) in [
            (
                "jdbc:postgresql://db:5432/app?user=u&password=secret",
                "drop `jdbc:`",
            ),
            ("http://db:5432/app", "not a PostgreSQL URL"),
        ] {
            let e = Connection::from_config(&pg(url))
                .err()
                .expect("refused")
                .to_string();
            assert!(
                e.contains("is not a PostgreSQL URL") && e.contains(hint),
                "{e}"
            );
            assert!(e.contains("postgres://user@host:5432/dbname"), "{e}");
            assert!(!e.contains("secret") && !e.contains("expected `=`"), "{e}");
        }
    }

    #[test]
    fn ssl_keys_are_taken_from_a_key_value_string() {
        let c = Connection::from_config(&pg(
            "host=db user=ordo password='a b\\'c' sslmode=require dbname=app",
        ))
        .unwrap();
        assert_eq!(c.tls.mode, SslMode::Require);
        assert_eq!(c.config.get_password(), Some(&b"a b'c"[..]));
        assert_eq!(c.config.get_dbname(), Some("app"));
    }

    #[test]
    fn the_default_is_prefer_and_keys_override_the_url() {
        let c = Connection::from_config(&pg("postgres://db/app")).unwrap();
        assert_eq!(c.tls.mode, SslMode::Prefer);
        let mut p = pg("postgres://db/app?sslmode=require");
        p.sslmode = Some("disable".into());
        p.password = Some("from-env".into());
        let c = Connection::from_config(&p).unwrap();
        assert_eq!(c.tls.mode, SslMode::Disable);
        assert_eq!(c.config.get_password(), Some(&b"from-env"[..]));
    }

    #[test]
    fn the_password_comes_from_the_first_source_set_and_says_which() {
        let from = |p: &PostgresConfig, env: Option<&str>| {
            let c = Connection::from_config_and_env(p, env.map(String::from)).unwrap();
            (c.password_from, c.config.get_password().map(<[u8]>::to_vec))
        };
        let mut p = pg("postgres://ordo:in-url@db/app");
        assert_eq!(
            from(&p, Some("env")),
            (Some("the URL"), Some(b"in-url".to_vec()))
        );
        p.password = Some("key".into());
        assert_eq!(
            from(&p, Some("env")),
            (Some("sink.postgres.password"), Some(b"key".to_vec()))
        );
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "file\n").unwrap();
        p.password_file = Some(f.path().into());
        assert_eq!(
            from(&p, None),
            (Some("sink.postgres.password_file"), Some(b"file".to_vec()))
        );
        let p = pg("postgres://ordo@db/app");
        assert_eq!(
            from(&p, Some("env")),
            (Some("PGPASSWORD"), Some(b"env".to_vec()))
        );
        assert_eq!(from(&p, Some("")), (None, None));
        assert_eq!(from(&p, None), (None, None));
    }

    #[test]
    fn a_password_file_is_read_without_its_newline() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "s3cret\n").unwrap();
        let mut p = pg("postgres://ordo@db/app");
        p.password_file = Some(f.path().into());
        let c = Connection::from_config(&p).unwrap();
        assert_eq!(c.config.get_password(), Some(&b"s3cret"[..]));
    }

    #[test]
    fn bad_values_name_the_key_and_never_the_password() {
        let e = Connection::from_config(&pg("postgres://u:hunter2@db/app?sslmode=verify"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("sslmode `verify`") && e.contains("verify-full"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let e = Connection::from_config(&pg(
            "postgres://u:hunter2@db/app?sslmode=verify-ca&sslrootcert=/no/such/ca.pem",
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("/no/such/ca.pem"), "{e}");
        let e = Connection::from_config(&pg("postgres://u:hunter2@db:port/app"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("sink.postgres.url") && !e.contains("hunter2"),
            "{e}"
        );
        let mut p = pg("postgres://db/app");
        p.sslcert = Some("/etc/hostname".into());
        let e = Connection::from_config(&p).err().unwrap().to_string();
        assert!(e.contains("sslkey"), "{e}");
    }

    #[test]
    fn debug_output_holds_no_secret() {
        let mut p = pg("postgres://u:hunter2@db/app");
        p.password = Some("hunter3".into());
        let text = format!("{p:?}");
        assert!(!text.contains("hunter"), "{text}");
    }
}
