//! `ordo check`: validates the configuration and reaches Kafka, the sink and
//! (for Avro) the schema registry, reporting each check and what is wrong.

use std::time::Duration;

use rdkafka::consumer::BaseConsumer;

use crate::config::Settings;

/// One check's outcome.
#[derive(Debug)]
pub struct Finding {
    pub what: String,
    pub problem: Option<String>,
}

/// Runs every check; the process should exit non-zero if any finding has a problem.
pub async fn run(settings: &Settings) -> Vec<Finding> {
    let mut findings = vec![];
    let servers = settings.bootstrap_servers().to_string();
    let kafka = {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || kafka(&settings))
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
    };
    findings.push(Finding {
        what: format!(
            "Kafka at {servers} ({}): topics {:?}",
            settings.kafka.security_summary(),
            settings.source.topics
        ),
        problem: kafka.err(),
    });
    let sink = crate::sink::connect(
        &settings.sink,
        settings.group_id(),
        settings.source.unrouted,
    )
    .await;
    let routes = match &sink {
        Ok(sink) => sink.check_routes().await,
        Err(_) => Vec::new(),
    };
    findings.push(Finding {
        what: match &sink {
            Ok(sink) => sink.describe(),
            Err(_) => match settings.sink.kind {
                crate::sink::SinkKind::Postgres => "PostgreSQL".to_string(),
            },
        },
        problem: sink.err().map(|e| e.to_string()),
    });
    findings.extend(
        routes
            .into_iter()
            .map(|(what, problem)| Finding { what, problem }),
    );
    if let Some(registry) = &settings.schema_registry {
        findings.extend(registry_findings(settings, registry).await);
    }
    findings
}

/// Reaches the schema registry and fetches each reader schema's subject (its
/// latest version, which the reader must be able to read).
async fn registry_findings(
    settings: &Settings,
    registry: &crate::decode::avro::registry::RegistryConfig,
) -> Vec<Finding> {
    use schema_registry_converter::async_impl::schema_registry::get_schema_by_subject_and_version;
    let urls = registry.urls.join(", ");
    let client = match registry.client() {
        Ok(c) => c,
        Err(e) => {
            return vec![Finding {
                what: format!("Schema Registry at {urls}"),
                problem: Some(format!("schema_registry.{}: {}", e.key, e.reason)),
            }]
        }
    };
    let mut findings = vec![];
    for r in &settings.source.reader_schemas {
        let reader = match r.load() {
            Ok(reader) => reader,
            Err((_, reason)) => {
                findings.push(Finding {
                    what: format!("reader schema for {}", r.topic),
                    problem: Some(reason),
                });
                continue;
            }
        };
        let subject = match registry
            .subject_name_strategy
            .value_subject(&r.topic, &reader.schema)
        {
            Ok(s) => s,
            Err(e) => {
                findings.push(Finding {
                    what: format!("Schema Registry at {urls}: subject of {}", r.topic),
                    problem: Some(e),
                });
                continue;
            }
        };
        let fetched = get_schema_by_subject_and_version(&client, &subject, None).await;
        let (what, problem) = match fetched {
            Ok(latest) => (
                format!(
                    "Schema Registry at {urls}: subject {subject}, latest version {} (id {}) read with {}",
                    latest.version.map_or("?".to_string(), |v| v.to_string()),
                    latest.id,
                    reader.file.display()
                ),
                crate::schema_check::readable(&latest.schema, &reader)
                    .map(|p| format!("the reader cannot read the latest version: {p}")),
            ),
            Err(e) => (
                format!("Schema Registry at {urls}: subject {subject}"),
                Some(format!(
                    "cannot fetch the subject's latest version: {}",
                    crate::decode::avro::registry::describe(&e)
                )),
            ),
        };
        findings.push(Finding { what, problem });
    }
    if settings.source.reader_schemas.is_empty() {
        findings.push(Finding {
            what: format!("Schema Registry at {urls}"),
            problem: None,
        });
    }
    findings
}

fn kafka(settings: &Settings) -> Result<(), String> {
    let consumer: BaseConsumer<crate::kafka::RecordingContext> =
        crate::pipeline::client_config(settings)
            .create_with_context(Default::default())
            .map_err(|e| crate::kafka::describe_error(&e).to_string())?;
    crate::pipeline::reach(&consumer, settings, Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok(())
}
