//! The `ordo` command line: run, check, schema check, dlq inspect/replay,
//! produce (a load generator), demo.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use ordo::config::Settings;

/// mimalloc rather than the system allocator: a record's decode and write
/// allocate and free many small buffers from several threads, where glibc's
/// malloc spent about a quarter of Ordo's CPU (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Ordo consumes event streams from Kafka and lands them, in order and exactly
/// once, in PostgreSQL.
///
/// Configuration comes from a TOML file (--config) overlaid by ORDO_* environment
/// variables (ORDO_SINK__POSTGRES__TABLE=events, ORDO_KAFKA__BOOTSTRAP_SERVERS=host:9092).
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
    /// Sink tasks: plan.
    Sink {
        #[command(subcommand)]
        command: SinkCommand,
    },
    /// Dead-letter topic tasks: inspect, replay.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// The stored offsets (kept in PostgreSQL with the data; Kafka's
    /// committed offsets are an advisory copy): show, set, skip.
    Offsets {
        #[command(subcommand)]
        command: OffsetsCommand,
    },
    /// Produce a load of keyed, versioned events (some late, some twice, some
    /// poison) to a topic of the configured cluster, and write the end state
    /// the sink must reach.
    Produce(ProduceArgs),
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
        /// The database is removed when the demo ends: print no hint to look at it.
        #[arg(long)]
        throwaway: bool,
        /// Keep the in-process Kafka cluster and Schema Registry running
        /// after the demo (until Ctrl-C), with two empty topics and a
        /// configuration for each (JSON and Avro) to try `ordo produce` and
        /// `ordo run` with; prints their addresses and files.
        #[arg(long)]
        keep: bool,
    },
}

#[derive(Subcommand)]
enum OffsetsCommand {
    /// Per topic and partition: the stored next offset, its owner and
    /// epoch, when it was last written, the watermarks, the lag (offsets and
    /// seconds) and Kafka's committed copy.
    Show {
        /// One JSON object per partition, a line each.
        #[arg(long)]
        json: bool,
    },
    /// Moves stored offsets: replicas that own a moved partition drop what
    /// they hold for it and resume from the new offset, without a restart.
    /// A rewind re-reads events the per-key guards then drop (nothing is
    /// applied twice).
    Set {
        #[command(flatten)]
        to: SetTarget,
        /// Only this topic (default: every topic of source.topics).
        #[arg(long)]
        topic: Option<String>,
        /// Only these partitions, e.g. 0,3.
        #[arg(long)]
        partitions: Option<String>,
        /// Print what would move, move nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Moves one partition forward past a range of records (a broken
    /// producer's), which are never processed nor dead-lettered; the skip is
    /// recorded (`ordo offsets show`, `ordo_skipped_offsets_total`).
    Skip {
        #[arg(long)]
        topic: String,
        #[arg(long)]
        partition: i32,
        /// The first offset to process again.
        #[arg(long)]
        to_offset: i64,
        /// Print what would move, move nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct SetTarget {
    /// To each partition's low watermark (reprocess everything kept).
    #[arg(long)]
    to_earliest: bool,
    /// To each partition's high watermark (skip everything not processed).
    #[arg(long)]
    to_latest: bool,
    /// To this offset in every chosen partition.
    #[arg(long)]
    to_offset: Option<i64>,
    /// To the first record at or after this time (RFC 3339, or epoch
    /// milliseconds), from the broker's time index.
    #[arg(long)]
    to_timestamp: Option<String>,
}

#[derive(Args)]
struct ProduceArgs {
    /// The topic (default: the first of source.topics).
    #[arg(long)]
    topic: Option<String>,
    /// Distinct events to produce (duplicates and poison come on top).
    #[arg(long)]
    events: Option<u64>,
    /// Events per second (default: as fast as the cluster takes them).
    #[arg(long)]
    rate: Option<u64>,
    /// With --rate: produce for this many seconds.
    #[arg(long)]
    duration: Option<u64>,
    /// Distinct keys the events are spread over, named `key-00000000`
    /// upwards, each from version 1: a second run into the same topic
    /// writes the same keys and versions again (duplicates to Ordo) unless
    /// given another --key-prefix.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Put before each key's name, e.g. `run2-` (keys `run2-key-00000000`
    /// ...), so a second run's events are new ones; --expected names them so.
    #[arg(long, default_value = "")]
    key_prefix: String,
    /// Fraction of events held back to arrive late.
    #[arg(long, default_value_t = 0.05)]
    late: f64,
    /// How many later events a late one arrives behind (at most).
    #[arg(long, default_value_t = 20)]
    late_window: usize,
    /// Fraction of events sent twice.
    #[arg(long, default_value_t = 0.02)]
    duplicates: f64,
    /// Fraction of undecodable records among the events.
    #[arg(long, default_value_t = 0.0)]
    poison: f64,
    /// `json`, or `avro` (the three orders writer schemas, registered in
    /// [schema_registry], used in turn). Default: source.format.
    #[arg(long)]
    format: Option<String>,
    /// What a JSON event holds: `flat` (id, version, amount, note) or
    /// `orders` (the order event as the Avro reader schema v3 renders it;
    /// sequence at `meta.seq`) or `typed` (order events of four types in
    /// `type`, for routes; a placed one has `data.customer` and
    /// `data.amount`). Avro events are order events.
    #[arg(long, default_value = "flat")]
    shape: String,
    /// librdkafka compression.type: none, gzip, snappy, lz4, zstd.
    #[arg(long, default_value = "none")]
    compression: String,
    /// librdkafka linger.ms: how long the producer gathers records into a batch.
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    /// Seed of the run (the same seed, the same records).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the end state (`key,last_version` lines) here.
    #[arg(long, value_name = "FILE")]
    expected: Option<PathBuf>,
}

#[derive(Subcommand)]
enum SinkCommand {
    /// Print the DDL Ordo would run on the target table at start (creating
    /// it, adding typed columns, widening their types) without running it;
    /// exit 1 if a change would be refused, with the DDL it would take.
    Plan,
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

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters with their error headers (a table, or JSON lines).
    Inspect {
        #[command(flatten)]
        select: Select,
        /// JSON lines with every header, key and value.
        #[arg(long)]
        json: bool,
        /// Show at most this many.
        #[arg(long)]
        limit: Option<usize>,
        /// Show every letter; by default a letter that repeats a source
        /// record lettered before it (same ordo.source.topic, partition and
        /// offset) is counted, not shown.
        #[arg(long)]
        all_copies: bool,
    },
    /// Send dead letters back to their source topic and partition (or --to
    /// another topic). Resumable: progress is the --group's committed offsets.
    Replay {
        #[command(flatten)]
        select: Select,
        /// Send to this topic instead of each letter's source topic.
        #[arg(long)]
        to: Option<String>,
        /// Show what would be replayed; send nothing, save no progress.
        #[arg(long)]
        dry_run: bool,
        /// Leave alone letters whose record was already replayed this many times.
        #[arg(long, default_value_t = 3)]
        max_replays: u32,
        /// Consumer group holding this replay's progress.
        #[arg(long, default_value = "ordo-dlq-replay")]
        group: String,
        /// Mark the letters this replay does not send (filtered out, held by
        /// the loop guard, without a source topic) handled: later replays and
        /// the dead-letter depth pass them by. Without it they stay for a later replay.
        #[arg(long)]
        skip_unreplayed: bool,
    },
}

/// Which dead letters a `dlq` command works on.
#[derive(Args)]
struct Select {
    /// The dead-letter topic (default: that of every configured topic).
    #[arg(long)]
    topic: Option<String>,
    /// Only this dead-letter partition.
    #[arg(long)]
    partition: Option<i32>,
    /// Dead-letter offsets from (inclusive).
    #[arg(long)]
    from_offset: Option<i64>,
    /// Dead-letter offsets up to (exclusive).
    #[arg(long)]
    to_offset: Option<i64>,
    /// Only letters whose error message contains this text.
    #[arg(long)]
    error_contains: Option<String>,
    /// Only letters from this source partition.
    #[arg(long)]
    source_partition: Option<i32>,
}

impl Select {
    fn filter(&self) -> ordo::dlq::read::Filter {
        ordo::dlq::read::Filter {
            partition: self.partition,
            from_offset: self.from_offset,
            to_offset: self.to_offset,
            error_contains: self.error_contains.clone(),
            source_partition: self.source_partition,
        }
    }

    fn topics(&self, settings: &Settings) -> Vec<String> {
        match &self.topic {
            Some(t) => vec![t.clone()],
            None => settings
                .source
                .topics
                .iter()
                .map(|t| settings.dead_letter.topic_for(t))
                .collect(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run | Command::Demo { .. }) {
        // A command whose output is piped into `head` ends quietly when the
        // pipe closes, as Unix tools do, instead of panicking in `println!`.
        // SAFETY: resetting a signal's disposition to the default, before any
        // thread is started.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if let Command::Demo {
        postgres,
        events,
        keys,
        throwaway,
        keep,
    } = &cli.command
    {
        return demo(postgres, *events, *keys, *throwaway, *keep);
    }
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    // `run` hears a stop from its first moment: a SIGTERM while the settings
    // are read or Kafka and PostgreSQL are reached is a clean stop, not the
    // default kill.
    let stops = match cli.command {
        Command::Run => {
            let _in_runtime = runtime.enter();
            match StopSignals::listen() {
                Ok(stops) => Some(stops),
                Err(e) => {
                    eprintln!("ordo: cannot listen for SIGTERM and SIGINT: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ordo: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    // `check` prints a report, with what librdkafka said about a failure in
    // the line that fails: its log lines would only interleave with it.
    let level = match cli.command {
        Command::Check => format!("{},librdkafka=off", settings.log.level),
        _ => settings.log.level.clone(),
    };
    ordo::telemetry::logging::init(&level, settings.log.format);
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run => match stops {
                Some(stops) => run(&settings, stops).await,
                None => Ok(ExitCode::FAILURE),
            },
            Command::Check => check(&settings).await,
            Command::Schema {
                command: SchemaCommand::Check { json },
            } => schema_check(&settings, json).await,
            Command::Dlq { command } => dlq(&settings, command).await,
            Command::Offsets { command } => offsets(&settings, command).await,
            Command::Sink {
                command: SinkCommand::Plan,
            } => sink_plan(&settings).await,
            Command::Produce(args) => produce(&settings, args).await,
            Command::Demo { .. } => Ok(ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // With JSON logs the last line is JSON too, for the log pipeline.
            match settings.log.format {
                ordo::config::LogFormat::Json => {
                    tracing::error!(error = %format!("{e:#}"), "Ordo stops")
                }
                ordo::config::LogFormat::Text => eprintln!("ordo: {e:#}"),
            }
            // A refused login is fixed in the configuration, like a bad value.
            let refused_login = |link: &(dyn std::error::Error + 'static)| {
                link.downcast_ref::<ordo::RunError>()
                    .is_some_and(ordo::RunError::is_authentication_failure)
                    || ordo::sink::is_authentication_failure(link)
            };
            if e.chain().any(refused_login) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(settings: &Settings, mut stops: StopSignals) -> anyhow::Result<ExitCode> {
    let deadline = std::time::Duration::from_millis(settings.shutdown.deadline_ms);
    let (stop, stopped) = tokio::sync::oneshot::channel();
    // Signals are heard by a task of their own, so the deadline holds from
    // the moment the signal arrives, whatever blocks the main loop (a
    // rebalance's drain with PostgreSQL down).
    tokio::spawn(async move {
        let signal = stops.next().await;
        let by = std::time::Instant::now() + deadline;
        ordo::process::stop_by(by);
        let exit_by =
            chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now() + deadline);
        tracing::info!(
            signal,
            deadline_ms = deadline.as_millis() as u64,
            exit_by = %exit_by.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "stopping: each partition finishes and commits the batch in hand, then the group is left; \
             whatever has not committed by the deadline is abandoned (the next owner resumes from the sink's offsets). \
             A second signal exits at once"
        );
        // Whatever is down (every broker, PostgreSQL), the process is gone by
        // the deadline: what committed is kept, the sink holds the truth.
        std::thread::spawn(move || {
            std::thread::sleep(deadline);
            tracing::warn!(
                deadline_ms = deadline.as_millis() as u64,
                "shutdown deadline reached: abandoning what did not commit (the next owner resumes from the sink's offsets); exiting"
            );
            std::process::exit(0);
        });
        let _ = stop.send(());
        let again = stops.next().await;
        tracing::warn!(
            signal = again,
            "second stop signal: exiting now; what did not commit is re-read by the partitions' next owners, as after a kill"
        );
        std::process::exit(if again == "SIGINT" { 130 } else { 143 });
    });
    let stop = async move {
        let _ = stopped.await;
    };
    ordo::run(settings, stop)
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

async fn produce(settings: &Settings, args: ProduceArgs) -> anyhow::Result<ExitCode> {
    let format = match args.format.as_deref() {
        None => settings.source.format,
        Some("json") => ordo::decode::FormatKind::Json,
        Some("avro") => ordo::decode::FormatKind::Avro,
        Some(other) => anyhow::bail!("--format {other}: valid values: json, avro"),
    };
    let shape = match args.shape.as_str() {
        "flat" => ordo::produce::Shape::Flat,
        "orders" => ordo::produce::Shape::Orders,
        "typed" => ordo::produce::Shape::Typed,
        other => anyhow::bail!("--shape {other}: valid values: flat, orders, typed"),
    };
    let topic = match args
        .topic
        .or_else(|| settings.source.topics.first().cloned())
    {
        Some(t) => t,
        None => anyhow::bail!("give --topic (source.topics is empty)"),
    };
    let options = ordo::produce::ProduceOptions {
        topic: topic.clone(),
        events: args.events,
        rate: args.rate,
        duration: args.duration.map(std::time::Duration::from_secs),
        keys: args.keys,
        late: args.late,
        late_window: args.late_window,
        duplicates: args.duplicates,
        poison: args.poison,
        format,
        shape,
        compression: args.compression,
        linger_ms: args.linger_ms,
        seed: args.seed,
        key_prefix: args.key_prefix.clone(),
        expected: args.expected.clone(),
    };
    let progress = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} events, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    progress.set_message(topic.clone());
    let report = ordo::produce::run(settings, &options, &progress)
        .await
        .context("ordo produce")?;
    progress.finish_and_clear();
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    println!(
        "{topic}: {} events over {} keys ({} late, {} sent twice) and {} poison records in {:.1} s ({:.0} events/s); {} records acknowledged, {} refused",
        report.events,
        report.keys,
        report.late,
        report.duplicates,
        report.poison,
        secs,
        report.events as f64 / secs,
        report.delivered,
        report.failed
    );
    if let Some(file) = &args.expected {
        println!("expected end state (key,last_version): {}", file.display());
    }
    Ok(if report.failed == 0 {
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

async fn sink_plan(settings: &Settings) -> anyhow::Result<ExitCode> {
    let Some(pg) = settings.sink.postgres.as_ref() else {
        anyhow::bail!("sink.postgres: required, but not set");
    };
    let sink = ordo::sink::postgres::PostgresSink::connect(
        pg,
        settings.group_id(),
        settings.sink.batch_max_events,
    )
    .await?;
    let own = sink.plan_own().await?;
    let plans = sink.plan().await?;
    println!("-- Ordo's own tables (schema {})", pg.schema);
    if own.is_empty() {
        println!("-- nothing to change");
    }
    for statement in &own {
        println!("{statement}");
    }
    let mut refused = false;
    for p in &plans {
        println!("\n-- route {}: table {}", p.route, p.table);
        if p.plan.statements.is_empty() && p.plan.refused.is_empty() {
            println!("-- {}: nothing to change", p.table);
        }
        for statement in &p.plan.statements {
            println!("{statement};");
        }
        for why in &p.plan.refused {
            refused = true;
            println!("-- REFUSED: {why}");
        }
    }
    for (route, statements) in sink.sql_statements() {
        println!("\n-- route {route}: SQL, run once per (route, key, version)");
        for (i, s) in statements.iter().enumerate() {
            let params: Vec<String> = s
                .names
                .iter()
                .enumerate()
                .map(|(n, name)| format!("${} = ${{{name}}}", n + 1))
                .collect();
            println!("-- statement {} (prepared; {})", i + 1, params.join(", "));
            println!("{};", s.sql);
        }
    }
    Ok(if refused {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn offsets(settings: &Settings, command: OffsetsCommand) -> anyhow::Result<ExitCode> {
    use ordo::offsets::{MoveRequest, OffsetsError, Target};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let result = async {
        match command {
            OffsetsCommand::Show { json } => {
                let reports = ordo::offsets::show(settings).await?;
                print_offsets(&reports, json);
                Ok(())
            }
            OffsetsCommand::Set {
                to,
                topic,
                partitions,
                dry_run,
            } => {
                let target = if to.to_earliest {
                    Target::Earliest
                } else if to.to_latest {
                    Target::Latest
                } else if let Some(n) = to.to_offset {
                    Target::Offset(n)
                } else if let Some(t) = &to.to_timestamp {
                    Target::Timestamp(ordo::offsets::parse_timestamp(t, now)?)
                } else {
                    return Err(OffsetsError::Input(
                        "one of --to-earliest, --to-latest, --to-offset, --to-timestamp".into(),
                    ));
                };
                let partitions = partitions
                    .as_deref()
                    .map(ordo::offsets::parse_partitions)
                    .transpose()?;
                let request = MoveRequest {
                    topic,
                    partitions,
                    target,
                    skip: false,
                    dry_run,
                };
                let moved = ordo::offsets::set(settings, &request).await?;
                print_moves(&moved, dry_run);
                Ok(())
            }
            OffsetsCommand::Skip {
                topic,
                partition,
                to_offset,
                dry_run,
            } => {
                let request = MoveRequest {
                    topic: Some(topic),
                    partitions: Some(vec![partition]),
                    target: Target::Offset(to_offset),
                    skip: true,
                    dry_run,
                };
                let moved = ordo::offsets::set(settings, &request).await?;
                print_moves(&moved, dry_run);
                Ok(())
            }
        }
    };
    match result.await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(OffsetsError::Input(why)) => {
            eprintln!("ordo offsets: {why}; nothing moved");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(anyhow::anyhow!("ordo offsets: {e}; nothing moved")),
    }
}

fn print_offsets(reports: &[ordo::offsets::PartitionReport], json: bool) {
    if json {
        for r in reports {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        }
        return;
    }
    let show = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
    println!(
        "{:<24} {:>9} {:>12} {:>12} {:>12} {:>10} {:>9} {:>12} {:>8} {:>8}  {:<24} owner",
        "topic",
        "partition",
        "next_offset",
        "low",
        "high",
        "lag",
        "lag_s",
        "kafka_commit",
        "epoch",
        "skipped",
        "updated_at"
    );
    for r in reports {
        println!(
            "{:<24} {:>9} {:>12} {:>12} {:>12} {:>10} {:>9} {:>12} {:>8} {:>8}  {:<24} {}{}",
            r.topic,
            r.partition,
            show(r.next_offset),
            r.low_watermark,
            r.high_watermark,
            show(r.lag_offsets),
            r.lag_seconds.map_or("-".to_string(), |s| format!("{s:.1}")),
            show(r.kafka_committed),
            show(r.epoch),
            r.skipped_offsets,
            r.updated_at.as_deref().unwrap_or("-"),
            r.owner.as_deref().unwrap_or("-"),
            if r.moved {
                " (moved; its owner resumes from here)"
            } else {
                ""
            }
        );
    }
}

fn print_moves(moved: &[ordo::offsets::Moved], dry_run: bool) {
    for m in moved {
        let from = m
            .from
            .map_or("(never stored)".to_string(), |f| f.to_string());
        println!("{} {}: {} -> {}", m.topic, m.partition, from, m.to);
    }
    if dry_run {
        println!(
            "dry run: nothing moved ({} partitions would move)",
            moved.len()
        );
    } else {
        println!(
            "moved {} partitions; their owners resume from the new offsets",
            moved.len()
        );
    }
}

async fn dlq(settings: &Settings, command: DlqCommand) -> anyhow::Result<ExitCode> {
    let client = ordo::dlq::connection_config(&settings.kafka);
    match command {
        DlqCommand::Inspect {
            select,
            json,
            limit,
            all_copies,
        } => {
            let topics = select.topics(settings);
            ordo::dlq::command::inspect(&client, topics, &select.filter(), json, limit, all_copies)
                .await?;
        }
        DlqCommand::Replay {
            select,
            to,
            dry_run,
            max_replays,
            group,
            skip_unreplayed,
        } => {
            let options = ordo::dlq::replay::ReplayOptions {
                to,
                filter: select.filter(),
                dry_run,
                max_replays,
                group,
                skip_unreplayed,
            };
            ordo::dlq::command::replay(&client, select.topics(settings), &options).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM and SIGINT, listened for from the moment they are created.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Starts listening (inside a runtime).
    fn listen() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on the next SIGTERM or SIGINT (those since [`Self::listen`]
    /// included); says which.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
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

fn demo(postgres: &str, events: usize, keys: usize, throwaway: bool, keep: bool) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(ordo::demo::run(postgres, events, keys, keep)) {
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
            println!("routes example (examples/orders/ordo.toml): an event store and two read models, one transaction per batch");
            for (name, rows) in &r.read_models {
                println!("  {name}:");
                for row in rows {
                    println!("    {row}");
                }
            }
            if !throwaway {
                println!(
                    "see them: psql {postgres} -c 'SELECT stream, version, payload FROM {} ORDER BY position LIMIT 10'",
                    r.table
                );
                println!(
                    "          psql {postgres} -c 'SELECT * FROM orders LIMIT 10' -c 'SELECT * FROM customer_totals ORDER BY amount DESC LIMIT 10'"
                );
            }
            if let Some(kept) = r.kept {
                print!("{}", kept.describe());
                use std::io::Write as _;
                let _ = std::io::stdout().flush();
                runtime.block_on(kept.wait());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ordo demo: {e}");
            ExitCode::FAILURE
        }
    }
}
