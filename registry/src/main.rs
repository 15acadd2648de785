//! `ordo-registry`: the in-memory Confluent-compatible Schema Registry as a
//! program of its own, to try Ordo's Avro path (or any Confluent Avro
//! client) without a Schema Registry installed.
//!
//! State lives in memory: schemas registered are gone when it stops.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ordo_registry::{Level, Registry};

/// A Confluent-compatible Schema Registry (Avro) kept in memory.
#[derive(Parser)]
#[command(name = "ordo-registry", version)]
struct Args {
    /// Address to listen on, `host:port`; port 0 picks a free one (printed).
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Global compatibility level: BACKWARD (Confluent's default),
    /// BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL,
    /// FULL_TRANSITIVE or NONE.
    #[arg(long, default_value = "BACKWARD", value_parser = parse_level)]
    compatibility: Level,
    /// Require HTTP basic auth with this user (with --password-file or
    /// ORDO_REGISTRY_PASSWORD).
    #[arg(long)]
    user: Option<String>,
    /// A file holding the basic-auth password (its first line); without it
    /// the password is read from ORDO_REGISTRY_PASSWORD.
    #[arg(long, value_name = "FILE", requires = "user")]
    password_file: Option<PathBuf>,
}

fn parse_level(s: &str) -> Result<Level, String> {
    Level::parse(s).ok_or_else(|| {
        format!("`{s}` is not a compatibility level: BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE or NONE")
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut registry = Registry::new();
    registry.set_level(args.compatibility);
    if let Some(user) = &args.user {
        let password = match (&args.password_file, std::env::var("ORDO_REGISTRY_PASSWORD")) {
            (Some(file), _) => match std::fs::read_to_string(file) {
                Ok(text) => text.lines().next().unwrap_or_default().to_string(),
                Err(e) => {
                    eprintln!("ordo-registry: --password-file {}: {e}", file.display());
                    return ExitCode::from(2);
                }
            },
            (None, Ok(p)) if !p.is_empty() => p,
            (None, _) => {
                eprintln!("ordo-registry: --user needs --password-file or ORDO_REGISTRY_PASSWORD");
                return ExitCode::from(2);
            }
        };
        registry = registry.with_basic_auth(user, &password);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ordo-registry: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("ordo-registry: cannot listen on {}: {e}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        let addr = listener.local_addr().map_or(args.listen, |a| a);
        println!(
            "ordo-registry: serving the Schema Registry API on http://{addr} (in memory; Ctrl-C stops it){}",
            if args.user.is_some() { ", basic auth required" } else { "" }
        );
        match registry.serve(listener, ordo_registry::stop_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ordo-registry: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
