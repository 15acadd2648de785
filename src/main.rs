//! The `ordo` command line: run, check, schema check, demo.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ordo::config::Settings;

/// Ordo consumes event streams from Kafka and lands them, in order and exactly
/// once, in PostgreSQL.
///
/// Configuration comes from a TOML file (--config) overlaid by ORDO_* environment
/// variables (ORDO_SINK__TABLE=events, ORDO_KAFKA__BOOTSTRAP_SERVERS=host:9092).
/// Start with `ordo check --config ordo.toml`, then `ordo run --config ordo.toml`.
#[derive(Parser)]
#[command(name = "ordo", version, about, long_about)]
struct Cli {
    /// The TOML configuration file (see config/ordo.example.toml).
    #[arg(short, long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the configured topics into the sink until SIGTERM or SIGINT
    /// (then finish in-flight batches, commit, leave the group and exit 0).
    Run,
    /// Validate the configuration and reach Kafka and PostgreSQL; exit non-zero
    /// and say what is wrong if anything is.
    Check,
    /// Schema Registry tasks.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
    /// Run the whole pipeline on an embedded default: an in-process Kafka
    /// cluster with sample events (some late, some duplicated) into the given
    /// PostgreSQL, until drained; then report what landed.
    Demo {
        /// PostgreSQL to write to, e.g. postgres://ordo@127.0.0.1:5432/ordo
        #[arg(long, env = "DEMO_POSTGRES_URL")]
        postgres: String,
        /// Events to produce.
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// Distinct keys.
        #[arg(long, default_value_t = 200)]
        keys: usize,
    },
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// For each configured topic, fetch every registered version of its value
    /// subject and report whether the local reader schema can read it; exit 1
    /// if any cannot (gate a deploy on it).
    Check {
        /// Print the verdicts as JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Demo {
        postgres,
        events,
        keys,
    } = &cli.command
    {
        return demo(postgres, *events, *keys);
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ordo: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    ordo::telemetry::logging::init(&settings.log.level, settings.log.format);
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run => run(&settings).await,
            Command::Check => check(&settings).await,
            Command::Schema {
                command: SchemaCommand::Check { json },
            } => schema_check(&settings, json).await,
            Command::Demo { .. } => Ok(ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ordo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    ordo::run(settings, shutdown_signal())
        .await
        .context("ordo run stopped")?;
    Ok(ExitCode::SUCCESS)
}

async fn check(settings: &Settings) -> anyhow::Result<ExitCode> {
    let findings = ordo::check::run(settings).await;
    let mut ok = true;
    for f in &findings {
        match &f.problem {
            None => println!("ok    {}", f.what),
            Some(p) => {
                ok = false;
                println!("FAIL  {}: {p}", f.what);
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn schema_check(settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    let verdicts = ordo::schema_check::run(settings)
        .await
        .context("ordo schema check")?;
    let mut ok = true;
    for v in &verdicts {
        ok &= v.problem.is_none();
        if json {
            println!("{}", serde_json::to_string(v)?);
            continue;
        }
        let version = v.version.map_or("-".into(), |n| format!("v{n}"));
        let id = v.schema_id.map_or("-".into(), |n| n.to_string());
        let head = format!(
            "topic {} subject {} {version} (schema id {id}) with reader {}",
            v.topic, v.subject, v.reader
        );
        match &v.problem {
            None => println!("ok    {head}"),
            Some(p) => println!("FAIL  {head}: {p}"),
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutdown signal received");
}

/// The multi-threaded runtime (the rebalance callbacks block in place on it).
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("ordo: cannot start the runtime: {e}");
            None
        }
    }
}

fn demo(postgres: &str, events: usize, keys: usize) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(ordo::demo::run(postgres, events, keys)) {
        Ok(r) => {
            println!(
                "produced {} records ({} delivered late, {} duplicates) of {} distinct events",
                r.produced, r.late, r.duplicates, r.distinct
            );
            println!(
                "written with schema v1/v2/v3: {}/{}/{}; read with reader schema v3 (schemas/orders-v3.avsc)",
                r.writers[0], r.writers[1], r.writers[2]
            );
            println!(
                "stored offsets reached the high watermarks {:?}",
                r.high_watermarks
            );
            println!(
                "see them: psql {postgres} -c 'SELECT stream, version, payload FROM {} ORDER BY position LIMIT 10'",
                r.table
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ordo demo: {e}");
            ExitCode::FAILURE
        }
    }
}
