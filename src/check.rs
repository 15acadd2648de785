//! `ordo check`: validates the configuration and reaches Kafka and the sink,
//! reporting each check and what is wrong.

use std::time::Duration;

use rdkafka::consumer::BaseConsumer;

use crate::config::Settings;
use crate::sink::postgres::PostgresSink;

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
    let pg = PostgresSink::connect(&settings.postgres, &settings.sink, settings.group_id()).await;
    findings.push(Finding {
        what: match &pg {
            Ok(sink) => format!(
                "PostgreSQL at {} ({})",
                sink.target(),
                sink.tls().describe()
            ),
            Err(_) => "PostgreSQL".to_string(),
        },
        problem: pg.err().map(|e| e.to_string()),
    });
    findings
}

fn kafka(settings: &Settings) -> Result<(), String> {
    let consumer: BaseConsumer<crate::kafka::RecordingContext> =
        crate::consume::client_config(settings)
            .create_with_context(Default::default())
            .map_err(|e| crate::kafka::describe_error(&e).to_string())?;
    crate::consume::reach(&consumer, settings, Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok(())
}
