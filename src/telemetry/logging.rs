//! Logging through `tracing`: JSON lines for machines, text for terminals.

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use serde::Deserialize;

/// A subscriber writing `format` lines that pass `filter` to `writer`.
pub fn subscriber<W>(
    filter: EnvFilter,
    format: LogFormat,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        // Each line carries its spans: a record's topic, partition, offset,
        // key and correlation/causation ids.
        LogFormat::Json => Box::new(
            builder
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(super::json::JsonLines)
                .finish(),
        ),
        LogFormat::Text => Box::new(builder.finish()),
    }
}

/// Installs the global subscriber, writing to stderr. `RUST_LOG`, when set, wins over `level`.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    use tracing_subscriber::util::SubscriberInitExt;
    let ansi = std::io::stderr().is_terminal();
    // `try_init` also forwards records of crates that log through `log`.
    let _ = subscriber(filter, format, ansi, std::io::stderr).try_init();
}

/// `[log]`: level, line format, and the headers that carry a record's ids.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// An `EnvFilter` directive such as `info` or `ordo=debug,rdkafka=warn`; `RUST_LOG` wins.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `json` or `text`.
    #[serde(default)]
    pub format: LogFormat,
    /// Header whose value is a record's correlation id, carried by its span.
    #[serde(default = "default_correlation_header")]
    pub correlation_header: String,
    /// Header whose value is a record's causation id, carried by its span.
    #[serde(default = "default_causation_header")]
    pub causation_header: String,
}

fn default_correlation_header() -> String {
    "correlation-id".into()
}
fn default_causation_header() -> String {
    "causation-id".into()
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            correlation_header: default_correlation_header(),
            causation_header: default_causation_header(),
            level: default_log_level(),
            format: LogFormat::default(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Json,
    Text,
}

fn default_log_level() -> String {
    "info,tokio_postgres=warn".to_string()
}

impl LogConfig {
    /// Checks values that parse but cannot work: the key (in full) and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        EnvFilter::try_new(&self.level)
            .map(drop)
            .map_err(|e| ("log.level".into(), format!("`{}`: {e}", self.level)))
    }
}
