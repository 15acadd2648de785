//! `ordo demo --keep`: after the demo, the in-process Kafka cluster and
//! Schema Registry stay up for the user's own configuration.
//!
//! Two empty topics are created (`try.json` and `try.avro`, each with its
//! dead-letter topic) and a configuration for each is written into a private
//! directory, so `ordo produce` and `ordo run` can be tried against them
//! with JSON and with Avro without installing anything else. Everything
//! here lives as long as the `ordo demo` process: Ctrl-C ends it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{mock::MockCluster, orders, DemoError, BROKERS, PARTITIONS};

/// The kept services and the files written for them.
pub struct Kept {
    cluster: MockCluster,
    registry: ordo_registry::Running,
    postgres_url: String,
    dir: PathBuf,
    configs: Vec<(&'static str, PathBuf)>,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kept")
            .field("bootstrap", &self.cluster.bootstrap_servers())
            .field("registry", &self.registry.url())
            .field("dir", &self.dir)
            .finish()
    }
}

/// One try-out topic: its format and what its configuration says.
struct TryTopic {
    name: &'static str,
    format: &'static str,
    sequence: &'static str,
    table: &'static str,
}

const TOPICS: [TryTopic; 2] = [
    TryTopic {
        name: "try.json",
        format: "json",
        sequence: "field:version",
        table: "try_json",
    },
    TryTopic {
        name: "try.avro",
        format: "avro",
        sequence: "field:meta.seq",
        table: "try_avro",
    },
];

impl Kept {
    /// Creates the try-out topics on `cluster` and writes their
    /// configurations into a new private directory under the system's
    /// temporary directory.
    pub(super) fn new(
        cluster: MockCluster,
        registry: ordo_registry::Running,
        postgres_url: &str,
    ) -> Result<Kept, DemoError> {
        let setup = |what: &str, e: std::io::Error| DemoError::Setup(format!("{what}: {e}"));
        let dir = std::env::temp_dir().join(format!("ordo-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| setup(&dir.display().to_string(), e))?;
        restrict(&dir).map_err(|e| setup(&dir.display().to_string(), e))?;
        let schema = dir.join("orders-v3.avsc");
        std::fs::write(&schema, orders::SCHEMAS[2])
            .map_err(|e| setup(&schema.display().to_string(), e))?;
        let mut configs = Vec::new();
        for topic in &TOPICS {
            cluster
                .create_topic(topic.name, PARTITIONS)
                .map_err(DemoError::Setup)?;
            cluster
                .create_topic(&format!("{}.dlq", topic.name), 1)
                .map_err(DemoError::Setup)?;
            let text = config(
                topic,
                cluster.bootstrap_servers(),
                &registry.url(),
                postgres_url,
                &schema,
                free_port().map_err(|e| setup("a free port for http.listen", e))?,
            );
            let path = dir.join(format!("{}.toml", topic.format));
            std::fs::write(&path, text).map_err(|e| setup(&path.display().to_string(), e))?;
            configs.push((topic.format, path));
        }
        Ok(Kept {
            cluster,
            registry,
            postgres_url: postgres_url.to_string(),
            dir,
            configs,
        })
    }

    /// What is kept, where, and how to use it.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "kept running (--keep) until Ctrl-C:");
        let _ = writeln!(
            out,
            "  Kafka (in-process, {BROKERS} brokers): {}   topics: demo.orders, orders, try.json, try.avro (each with .dlq)",
            self.cluster.bootstrap_servers()
        );
        let _ = writeln!(
            out,
            "  Schema Registry: {}   (subjects: demo.orders-value)",
            self.registry.url()
        );
        let _ = writeln!(out, "  PostgreSQL: {}", self.postgres_url);
        let _ = writeln!(
            out,
            "configurations for them, to edit or copy (in {}):",
            self.dir.display()
        );
        // The commands name this very program, so they work before `ordo`
        // is installed on the PATH.
        let ordo = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "ordo".to_string());
        for (format, path) in &self.configs {
            let path = path.display();
            let _ = writeln!(out, "  {format}: {path}");
            let _ = writeln!(out, "    {ordo} produce --config {path} --events 10000");
            let _ = writeln!(out, "    {ordo} run --config {path}");
        }
        let _ = writeln!(
            out,
            "Ctrl-C stops Kafka and the registry (their data is in memory) and removes {}",
            self.dir.display()
        );
        out
    }

    /// Waits for Ctrl-C (SIGINT) or SIGTERM, then removes the written files.
    pub async fn wait(self) {
        ordo_registry::stop_signal().await;
        let _ = std::fs::remove_dir_all(&self.dir);
        drop(self.cluster);
        self.registry.stop();
    }
}

/// A configuration for `topic` on the kept services.
fn config(
    topic: &TryTopic,
    bootstrap: &str,
    registry: &str,
    postgres_url: &str,
    schema: &Path,
    http_port: u16,
) -> String {
    let TryTopic {
        name,
        format,
        sequence,
        table,
    } = topic;
    let mut text = format!(
        r#"# Written by `ordo demo --keep`: {format} events from the topic {name} of the
# demo's in-process Kafka cluster into the table {table}. `ordo produce` writes
# keyed, versioned events (some late, some twice) that this configuration reads.

[kafka]
"bootstrap.servers" = "{bootstrap}"
"group.id" = "ordo-try-{format}"

[source]
topics = ["{name}"]
format = "{format}"

[ordering]
key = "message_key"
sequence = "{sequence}"

[sink.postgres]
mode = "event_store"
table = "{table}"
url = {url}

[http]
listen = "127.0.0.1:{http_port}"

[log]
format = "text"
"#,
        url = toml_string(postgres_url),
    );
    if *format == "avro" {
        let _ = write!(
            text,
            r#"
[schema_registry]
urls = ["{registry}"]

[[source.reader_schemas]]
topic = "{name}"
file = {file}
"#,
            file = toml_string(&schema.display().to_string()),
        );
    }
    text
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TCP port nothing listens on now.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// Only the owner may read the directory: a configuration holds the
/// PostgreSQL URL as given.
fn restrict(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_written_configuration_loads_with_what_it_names() {
        for topic in &TOPICS {
            let text = config(
                topic,
                "127.0.0.1:1",
                "http://127.0.0.1:2",
                "postgres://ordo@127.0.0.1:3/ordo?application_name=a\"b",
                Path::new("/tmp/x/orders-v3.avsc"),
                4,
            );
            let dir = std::env::temp_dir().join(format!(
                "ordo-keep-test-{}-{}",
                std::process::id(),
                topic.format
            ));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("orders-v3.avsc"), orders::SCHEMAS[2]).unwrap();
            let text = text.replace("/tmp/x", &dir.display().to_string());
            let path = dir.join("ordo.toml");
            std::fs::write(&path, &text).unwrap();
            let settings = crate::config::Settings::load_with_env(Some(&path), &[]).unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
            assert_eq!(settings.source.topics, vec![topic.name.to_string()]);
            assert_eq!(settings.http.listen, "127.0.0.1:4");
            let pg = settings.sink.postgres.unwrap();
            assert_eq!(
                pg.url,
                "postgres://ordo@127.0.0.1:3/ordo?application_name=a\"b"
            );
            assert_eq!(
                settings.schema_registry.is_some(),
                topic.format == "avro",
                "{text}"
            );
        }
    }
}
