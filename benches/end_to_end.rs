//! End to end, side by side in one run: Ordo landing a backlog from Kafka
//! into PostgreSQL, against a bare librdkafka consumer reading the same
//! topic and `COPY` (text and binary) of the very same rows into a table of
//! the event store's shape; and Ordo's end-to-end latency at a fixed rate.
//!
//! Each case is `format/mode/keys` (`json`, `json_orders`, `json_typed` or
//! `avro`; `event_store`, `event_store_route` (the same as one explicit
//! route), `projection` or `routes`), or
//! `latency/format/mode/keys`; `json_typed` is order events of four types
//! (`ordo produce --shape typed`) and `routes` the three routes of the
//! documented shape (an event store of everything, a projection of
//! `order.*`, an SQL route incrementing customer totals) in one transaction;
//! `json_orders` is JSON of the very order events the Avro case renders
//! (`ordo produce --shape orders`), to compare the formats on the same rows. A throughput case has
//! `ordo produce` write `BENCH_EVENTS` events (default 480,000; 5 % late,
//! 2 % duplicated, producer linger 50 ms; Avro through the registry in writer versions v1, v2 and
//! v3 in turn, read as v3) into `BENCH_PARTITIONS` partitions (default 48)
//! of librdkafka's mock cluster (in a process of its own, this binary
//! started again; Ordo runs as its own process, release build, default
//! settings); Ordo's rate runs from the moment
//! every partition is leased to the one every stored offset reaches the high
//! watermark (the group join is left out), and the table is
//! checked exact (every version of every key once, in order). A latency case
//! starts Ordo first, produces at `BENCH_RATE` events/s (default 10,000) for
//! `BENCH_SECONDS` (default 30) into `BENCH_LATENCY_PARTITIONS` partitions
//! (default 4) and reads each row's latency from the
//! record's timestamp to the commit of the transaction that wrote its row
//! (`BENCH_LATENCY_DETAIL` prints them per second too).
//!
//! `cargo bench --bench end_to_end` runs the default cases; give cases as
//! arguments to choose. `BENCH_ROUNDS=N` runs the throughput cases N times,
//! in turn, and adds their medians and each case's rate against the first
//! case's in the same round. `BENCH_VARIANTS` runs each case once per
//! variant of Ordo's settings, given as its environment (`;` between
//! variants, `,` between settings; an empty variant is the defaults), e.g.
//! `BENCH_VARIANTS=";ORDO_SINK__BATCH_MAX_EVENTS=4000"`; a variant
//! `BENCH_ORDO_BINARY=/path/to/ordo` runs another build of Ordo (an earlier
//! commit's, side by side with this one). `BENCH_KAFKA` and
//! `BENCH_SINK` add settings to Ordo's `[kafka]` and `[sink]` sections
//! (TOML lines, `;` between them). Ordo connects to PostgreSQL without TLS,
//! as the `COPY` baselines do.
//! Figures in BENCHMARKS.md.

#[path = "end_to_end/baselines.rs"]
mod baselines;
#[path = "end_to_end/latency.rs"]
mod latency;
#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use baselines::{bare_consumer_rate, copy_rates};
use latency::latency;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use ordo_registry::Registry;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use support::kafka::{Kafka, MockCluster};
use support::ordo::{run_to_end, Ordo, Setup};
use support::postgres::TestDb;

const DEFAULT_CASES: &[&str] = &[
    "json/event_store/1000",
    "json/event_store/10000",
    "json/event_store/200000",
    "json/projection/10000",
    "json_orders/event_store/10000",
    "avro/event_store/10000",
    "latency/json/event_store/10000",
];

/// The event store's shape (as Ordo creates it), for the `COPY` baselines:
/// its key column `COLLATE "C"`, or with `BENCH_KEY_COLLATION=default` the
/// database's collation, and then the event store case creates Ordo's table
/// so too (Ordo uses a table that exists as it is), so that the two can be
/// compared side by side (`BENCH_VARIANTS=";BENCH_KEY_COLLATION=default"`).
fn copy_table() -> String {
    let collate = match std::env::var("BENCH_KEY_COLLATION").as_deref() {
        Ok("default") => "",
        Ok(other) if other != "C" => panic!("BENCH_KEY_COLLATION: C or default, not {other}"),
        _ => " COLLATE \"C\"",
    };
    format!(
        "(position bigint GENERATED ALWAYS AS IDENTITY, stream text{collate} NOT NULL, \
         version bigint NOT NULL, payload jsonb NOT NULL, topic text NOT NULL, partition integer NOT NULL, \
         \"offset\" bigint NOT NULL, event_time timestamptz, recorded_at timestamptz NOT NULL DEFAULT now(), \
         PRIMARY KEY (stream, version))"
    )
}
const COPY_COLUMNS: &str = "(stream, version, payload, topic, partition, \"offset\", event_time)";

#[derive(Debug, Clone)]
struct Case {
    name: String,
    latency: bool,
    avro: bool,
    /// Events are order events (Avro, or JSON of `--shape orders`).
    orders: bool,
    /// Events are order events of four types (`--shape typed`).
    typed: bool,
    projection: bool,
    /// The three routes of the documented shape (an event store `events`,
    /// a projection, an SQL route), in place of one table.
    routes: bool,
    /// One explicit event store route (`[[sink.postgres.routes]]`) in place
    /// of `table` and `mode`: the same fast path.
    one_route: bool,
    keys: u64,
}

fn parse_case(text: &str) -> Case {
    let mut parts: Vec<&str> = text.split('/').collect();
    let latency = parts.first() == Some(&"latency");
    if latency {
        parts.remove(0);
    }
    let [format, mode, keys] = parts[..] else {
        panic!("case {text}: expected [latency/]format/mode/keys");
    };
    Case {
        name: text.to_string(),
        latency,
        avro: format == "avro",
        orders: match format {
            "json" | "json_typed" => false,
            "json_orders" | "avro" => true,
            other => panic!("case {text}: format {other}: json, json_orders, json_typed or avro"),
        },
        typed: format == "json_typed",
        projection: match mode {
            "event_store" | "event_store_route" | "routes" => false,
            "projection" => true,
            other => panic!(
                "case {text}: mode {other}: event_store, event_store_route, projection or routes"
            ),
        },
        routes: mode == "routes",
        one_route: mode == "event_store_route",
        keys: keys
            .parse()
            .unwrap_or_else(|_| panic!("case {text}: keys {keys}")),
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(default)
}

/// The statements PostgreSQL spent most time on (needs
/// `TEST_PG_OPTS="-c shared_preload_libraries=pg_stat_statements"`).
async fn print_statement_stats(client: &tokio_postgres::Client) {
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await
        .expect("pg_stat_statements");
    let rows = client
        .query(
            "SELECT calls, total_exec_time, rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 110) \
             FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 40",
            &[],
        )
        .await
        .expect("statement stats");
    for r in rows {
        let (calls, ms, n, q): (i64, f64, i64, String) = (r.get(0), r.get(1), r.get(2), r.get(3));
        println!("  {calls:>8} calls {ms:>10.0} ms {n:>9} rows  {q}");
    }
}

/// The sum of the partitions' stored next offsets.
async fn stored_total(client: &tokio_postgres::Client, group: &str) -> i64 {
    client
        .query_one(
            "SELECT coalesce(sum(next_offset), 0)::bigint FROM ordo_offsets WHERE consumer_group = $1",
            &[&group],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}

/// Asserts the table holds every version of every key once, in order (event
/// store), or each key's last version (projection).
async fn assert_exact(
    client: &tokio_postgres::Client,
    case: &Case,
    expected: &HashMap<String, i64>,
) {
    let events: i64 = expected.values().sum();
    let landed: HashMap<String, i64> = if case.projection {
        client
            .query("SELECT key, version FROM latest", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    } else {
        let (rows, distinct): (i64, i64) = client
            .query_one(
                "SELECT count(*), count(DISTINCT (stream, version)) FROM events",
                &[],
            )
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert_eq!((rows, distinct), (events, events), "{}: rows", case.name);
        let misordered: i64 = client
            .query_one(
                "SELECT count(*) FROM (SELECT version, lag(version) OVER (PARTITION BY stream ORDER BY position) AS before \
                 FROM events) v WHERE version <> coalesce(before, 0) + 1",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            misordered, 0,
            "{}: versions out of order or missing",
            case.name
        );
        client
            .query(
                "SELECT stream, max(version) FROM events GROUP BY stream",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    assert!(
        &landed == expected,
        "{}: each key's last version",
        case.name
    );
    if case.routes {
        // Each placed order counted once.
        let placed: i64 = expected
            .values()
            .map(|last| {
                (1..=*last)
                    .filter(|v| ordo::demo::order_events::event_type(*v) == "order.placed")
                    .count() as i64
            })
            .sum();
        let counted: i64 = client
            .query_one(
                "SELECT coalesce(sum(orders), 0)::bigint FROM customer_totals",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(counted, placed, "{}: customer totals", case.name);
        let latest: i64 = client
            .query_one("SELECT count(*) FROM orders", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(latest as usize, expected.len(), "{}: orders", case.name);
    }
}

/// Leaves the cluster quiet: the database's tables vacuumed and analyzed
/// (so autovacuum has nothing left to do on them) and a checkpoint taken,
/// so each timed step starts from the same state.
async fn quiesce(client: &tokio_postgres::Client) {
    for statement in ["VACUUM ANALYZE", "CHECKPOINT"] {
        client.batch_execute(statement).await.unwrap();
    }
}

/// Writes about 850 MB of WAL into a throw-away database and checkpoints, so
/// that the first case finds WAL files to recycle, as every later case and
/// a long-running cluster do, rather than creating and zero-filling each.
async fn warm_up() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(&format!("CREATE TABLE warm_up {}", copy_table()))
        .await
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO warm_up (stream, version, payload, topic, partition, \"offset\") \
             SELECT 'k' || g, 1, jsonb_build_object('pad', repeat('x', 200)), 'warm_up', 0, g \
             FROM generate_series(1, 2000000) g",
        )
        .await
        .unwrap();
    drop(client);
    db.remove().await;
}

/// Waits until every partition is leased (the group has settled and the
/// workers start reading); returns when that was seen.
async fn wait_leased(client: &tokio_postgres::Client, ordo: &mut Ordo, run: &Run) -> Instant {
    let started = Instant::now();
    loop {
        assert!(ordo.running(), "{}", ordo.log_text());
        let leased: i64 = client
            .query_one(
                "SELECT count(*) FROM ordo_offsets WHERE consumer_group = $1",
                &[&run.setup.group],
            )
            .await
            .map(|r| r.get(0))
            .unwrap_or(0);
        if leased == run.partitions as i64 {
            return Instant::now();
        }
        assert!(started.elapsed() < Duration::from_secs(120), "not assigned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The mock cluster in a process of its own: this bench's binary, started
/// again with `BENCH_BROKER_PROCESS` set ([`broker_main`]). It prints its
/// bootstrap servers, then creates the topics named on its standard input
/// (`<topic> <partitions>`, answering `ok`), and ends with its input.
struct BrokerProcess {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    bootstrap: String,
}

impl BrokerProcess {
    fn start() -> BrokerProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().expect("bench binary"))
            .env("BENCH_BROKER_PROCESS", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("broker process");
        let stdin = child.stdin.take().expect("broker stdin");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("broker stdout"));
        let mut bootstrap = String::new();
        stdout.read_line(&mut bootstrap).expect("broker bootstrap");
        assert!(!bootstrap.trim().is_empty(), "the broker process ended");
        BrokerProcess {
            child,
            stdin,
            stdout,
            bootstrap: bootstrap.trim().to_string(),
        }
    }

    fn create_topic(&mut self, topic: &str, partitions: i32) {
        use std::io::{BufRead, Write};
        writeln!(self.stdin, "{topic} {partitions}").expect("broker stdin");
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).expect("broker answer");
        assert_eq!(answer.trim(), "ok", "creating topic {topic}");
    }

    /// The process's CPU seconds so far (user and system).
    fn cpu_seconds(&self) -> f64 {
        process_cpu_seconds(self.child.id())
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user and system) of process `pid`, from `/proc`.
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime is the
    // 14th field of the line, stime the 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    // Linux counts them in USER_HZ, 100 a second.
    ticks / 100.0
}

/// The broker process's life: the mock cluster of three brokers, serving
/// until its standard input ends.
fn broker_main() {
    use std::io::BufRead;
    let cluster = MockCluster::start(3).expect("mock cluster");
    println!("{}", cluster.bootstrap_servers());
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("broker stdin");
        let (topic, partitions) = line
            .split_once(' ')
            .and_then(|(t, p)| Some((t, p.parse::<i32>().ok()?)))
            .unwrap_or_else(|| panic!("broker process: `{line}` is not `<topic> <partitions>`"));
        cluster
            .create_topic(topic, partitions)
            .expect("create topic");
        println!("ok");
    }
}

struct Run {
    kafka: Kafka,
    /// The broker's own process (`None` with an external broker).
    broker: Option<BrokerProcess>,
    db: TestDb,
    setup: Setup,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    partitions: i32,
    _registry: Option<ordo_registry::Running>,
}

async fn prepare(case: &Case, partitions: i32) -> Run {
    // The mock cluster runs in a process of its own, unless
    // `TEST_KAFKA_BOOTSTRAP_SERVERS` names a broker.
    let mut broker = match std::env::var("TEST_KAFKA_BOOTSTRAP_SERVERS") {
        Ok(s) if !s.trim().is_empty() => None,
        _ => Some(BrokerProcess::start()),
    };
    let kafka = match &broker {
        Some(b) => Kafka::External(b.bootstrap.clone()),
        None => Kafka::start(),
    };
    let db = TestDb::new().await;
    let mut setup = Setup::event_store(kafka.bootstrap(), db.url.clone(), "events");
    // The test cluster offers TLS, which Ordo's default (`sslmode = prefer`)
    // takes, while the `COPY` baselines connect in plain text: Ordo does too,
    // so that both pay for the same connection. A variant
    // `ORDO_SINK__POSTGRES__SSLMODE=require` measures TLS.
    setup.postgres = "sslmode = \"disable\"".into();
    if case.projection {
        setup.mode = "projection";
        setup.table = "latest".into();
    }
    let mut registry = None;
    if case.avro {
        let server = Registry::new()
            .spawn("127.0.0.1:0".parse().unwrap())
            .unwrap();
        let reader = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/orders-v3.avsc");
        setup.source = format!(
            "format = \"avro\"\n[[source.reader_schemas]]\ntopic = \"{}\"\nfile = \"{}\"",
            setup.topic,
            reader.display()
        );
        setup.tail = format!("[schema_registry]\nurls = [\"{}\"]\n", server.url());
        registry = Some(server);
    }
    if case.orders {
        setup.sequence = "field:meta.seq".into();
    }
    if case.typed {
        setup.source = "event_type = \"field:type\"".into();
    }
    if case.routes {
        setup.mode = "";
        setup.tail = support::routes::ROUTES.replace("\"order_events\"", "\"events\"");
        db.client()
            .await
            .batch_execute(support::routes::CUSTOMER_TOTALS)
            .await
            .unwrap();
    }
    if case.one_route {
        setup.mode = "";
        setup.tail = "[[sink.postgres.routes]]\nname = \"all_events\"\ntable = \"events\"\nmode = \"event_store\"\n".into();
    }
    if case.latency {
        // The mock cluster answers a fetch that finds no new data only after
        // `fetch.wait.max.ms` (500 by default), where a broker answers as
        // soon as data arrives: a short wait stands in for that.
        setup.kafka = "\"fetch.wait.max.ms\" = \"5\"".into();
    }
    if let Ok(extra) = std::env::var("BENCH_KAFKA") {
        setup.kafka = extra.replace(';', "\n");
    }
    match &mut broker {
        Some(b) => b.create_topic(&setup.topic, partitions),
        None => kafka.create_topic(&setup.topic, partitions),
    }
    let dir = tempfile::tempdir().unwrap();
    let config = setup.write_with_default_sink(dir.path(), "ordo.toml");
    if let Ok(extra) = std::env::var("BENCH_SINK") {
        let text = std::fs::read_to_string(&config).unwrap();
        let text = text.replace(
            "[sink]\n",
            &format!("[sink]\n{}\n", extra.replace(';', "\n")),
        );
        std::fs::write(&config, text).unwrap();
    }
    Run {
        kafka,
        broker,
        db,
        setup,
        dir,
        config,
        partitions,
        _registry: registry,
    }
}

fn produce(run: &Run, case: &Case, extra: &[&str]) -> HashMap<String, i64> {
    let expected = run.dir.path().join("expected.csv");
    let keys = case.keys.to_string();
    let mut args = vec![
        "produce",
        "--config",
        run.config.to_str().unwrap(),
        "--keys",
        &keys,
        "--expected",
        expected.to_str().unwrap(),
    ];
    if case.orders && !case.avro {
        args.extend_from_slice(&["--shape", "orders"]);
    }
    if case.typed {
        args.extend_from_slice(&["--shape", "typed"]);
    }
    args.extend_from_slice(extra);
    let (status, out, err) = run_to_end(&args);
    assert!(status.success(), "{out}{err}");
    support::data::expected_state(&expected)
}

/// CPU seconds used so far by the PostgreSQL processes on this machine (the
/// throw-away cluster's: server processes, and the children the postmaster
/// reaped).
fn postgres_cpu() -> f64 {
    let mut ticks = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if !head.ends_with("(postgres") {
            continue;
        }
        // After the command name: utime, stime, cutime, cstime are fields 12 to 15.
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ticks += (11..=14)
            .filter_map(|i| fields.get(i)?.parse::<f64>().ok())
            .sum::<f64>();
    }
    // Linux counts them in USER_HZ, 100 a second.
    ticks / 100.0
}

/// A throughput case's rates in one run.
#[derive(Debug, Clone, Copy)]
struct Rates {
    ordo: f64,
    text_copy: f64,
}

async fn throughput(case: &Case, events: u64, partitions: i32) -> Rates {
    let run = prepare(case, partitions).await;
    // Batches of a size a busy producer makes, whatever the encoding speed.
    let expected = produce(
        &run,
        case,
        &["--events", &events.to_string(), "--linger-ms", "50"],
    );
    let hw = run.kafka.high_watermarks(&run.setup.topic, run.partitions);
    let total: i64 = hw.iter().sum();
    let bare = bare_consumer_rate(&run.kafka.bootstrap(), &run.setup.topic, &hw);

    if !case.projection && std::env::var_os("BENCH_KEY_COLLATION").is_some() {
        run.db
            .client()
            .await
            .batch_execute(&format!("CREATE TABLE events {}", copy_table()))
            .await
            .unwrap();
    }
    let mut ordo = Ordo::start(&run.config, run.dir.path().join("ordo.log"));
    let client = run.db.client().await;
    let began = wait_leased(&client, &mut ordo, &run).await;
    let pg_cpu_before = postgres_cpu();
    let broker_cpu_before = run.broker.as_ref().map(BrokerProcess::cpu_seconds);
    loop {
        assert!(ordo.running(), "{}", ordo.log_text());
        if stored_total(&client, &run.setup.group).await == total {
            break;
        }
        assert!(began.elapsed() < Duration::from_secs(1800), "not drained");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ordo_rate = events as f64 / began.elapsed().as_secs_f64();
    let pg_cpu = postgres_cpu() - pg_cpu_before;
    if let (Some(b), Some(before)) = (&run.broker, broker_cpu_before) {
        println!(
            "  {}: the broker process spent {:.1} CPU s per 1M events while Ordo drained the topic",
            case.name,
            (b.cpu_seconds() - before) * 1e6 / events as f64
        );
    }
    let (cpu, peak) = ordo.cpu_and_peak_rss();
    if std::env::var_os("BENCH_PG_STATS").is_some() {
        print_statement_stats(&client).await;
    }
    assert_exact(&client, case, &expected).await;
    assert!(ordo.terminate(Duration::from_secs(60)).success());
    let (text, binary) = copy_rates(&client, case, &run.setup.topic, &expected).await;
    // What this case left in PostgreSQL does not land on the next one.
    drop(client);
    run.db.remove().await;
    println!(
        "| {} | {events} | {ordo_rate:.0} | {bare:.0} | {text:.0} | {binary:.0} | {:.2}x | {:.2}x | {:.2}x | {:.1} | {:.1} | {peak:.0} |",
        case.name,
        ordo_rate / text,
        ordo_rate / binary,
        ordo_rate / bare,
        cpu / (events as f64 / 1e6),
        pg_cpu / (events as f64 / 1e6)
    );
    Rates {
        ordo: ordo_rate,
        text_copy: text,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Over `BENCH_ROUNDS` rounds (each running every case once, in turn, so
/// that the machine's drift touches all cases alike): each case's median
/// rate and ratio to text `COPY`, and its rate against the first case's in
/// the same round.
fn print_rounds(cases: &[Case], rounds: &[Vec<Rates>]) {
    println!();
    println!(
        "Over {} rounds (cases in turn in each round):",
        rounds.len()
    );
    println!();
    println!("| case | Ordo events/s, median | Ordo / text COPY, median | against {} in the same round | median |", cases[0].name);
    println!("|---|---|---|---|---|");
    for (i, case) in cases.iter().enumerate() {
        let of_case: Vec<Rates> = rounds.iter().map(|r| r[i]).collect();
        let against: Vec<f64> = rounds.iter().map(|r| r[i].ordo / r[0].ordo).collect();
        println!(
            "| {} | {:.0} | {:.2}x | {} | {:.2}x |",
            case.name,
            median(of_case.iter().map(|r| r.ordo).collect()),
            median(of_case.iter().map(|r| r.ordo / r.text_copy).collect()),
            against
                .iter()
                .map(|a| format!("{a:.2}x"))
                .collect::<Vec<_>>()
                .join(", "),
            median(against)
        );
    }
}

fn main() {
    if std::env::var_os("BENCH_BROKER_PROCESS").is_some() {
        return broker_main();
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a.contains('/'))
        .collect();
    let cases: Vec<Case> = if args.is_empty() {
        DEFAULT_CASES.iter().map(|c| parse_case(c)).collect()
    } else {
        args.iter().map(|c| parse_case(c)).collect()
    };
    let events = env_u64("BENCH_EVENTS", 480_000);
    let partitions = env_u64("BENCH_PARTITIONS", 48) as i32;
    if cases.iter().any(|c| c.latency) {
        // Latency runs to each row's commit, which PostgreSQL records only
        // with this setting (set before the cluster starts, for every case).
        let opts = std::env::var("TEST_PG_OPTS").unwrap_or_default();
        std::env::set_var(
            "TEST_PG_OPTS",
            format!("{opts} -c track_commit_timestamp=on"),
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("{partitions} partitions, 5 % late, 2 % duplicated, default settings");
    let (throughput_cases, latency_cases): (Vec<Case>, Vec<Case>) =
        cases.into_iter().partition(|c| !c.latency);
    if !throughput_cases.is_empty() {
        runtime.block_on(warm_up());
        println!("| case | events | Ordo events/s | bare consumer records/s | text COPY rows/s | binary COPY rows/s | Ordo / text COPY | Ordo / binary COPY | Ordo / consumer | Ordo CPU s per 1M events | PostgreSQL CPU s per 1M events | Ordo peak RSS (MiB) |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        // Each variant: Ordo's settings by environment (`ORDO_...=value`,
        // `,` between them), run as a case of its own in each round.
        let variants: Vec<String> = std::env::var("BENCH_VARIANTS")
            .map(|v| v.split(';').map(str::to_string).collect())
            .unwrap_or_else(|_| vec![String::new()]);
        let named: Vec<Case> = throughput_cases
            .iter()
            .flat_map(|case| {
                variants.iter().map(move |v| Case {
                    name: if v.is_empty() {
                        case.name.clone()
                    } else {
                        format!("{} ({v})", case.name)
                    },
                    ..case.clone()
                })
            })
            .collect();
        let rounds: Vec<Vec<Rates>> = (0..env_u64("BENCH_ROUNDS", 1))
            .map(|_| {
                named
                    .iter()
                    .zip(variants.iter().cycle())
                    .map(|(case, variant)| {
                        let vars: Vec<(&str, &str)> = variant
                            .split(',')
                            .filter(|kv| !kv.is_empty())
                            .map(|kv| {
                                kv.split_once('=').unwrap_or_else(|| {
                                    panic!("BENCH_VARIANTS: `{kv}` in variant `{variant}` is not NAME=value")
                                })
                            })
                            .collect();
                        for (k, v) in &vars {
                            std::env::set_var(k, v);
                        }
                        let rates = runtime.block_on(throughput(case, events, partitions));
                        for (k, _) in &vars {
                            std::env::remove_var(k);
                        }
                        rates
                    })
                    .collect()
            })
            .collect();
        if rounds.len() > 1 {
            print_rounds(&named, &rounds);
        }
    }
    if !latency_cases.is_empty() {
        println!("| case | rate | rows | p50 ms | p99 ms | max ms | bare consumer p50 / p99 / max ms | Ordo CPU (cores) | Ordo peak RSS (MiB) |");
        println!("|---|---|---|---|---|---|---|---|---|");
        // Fewer partitions than a throughput case: the mock cluster finds
        // a fetch's offset by walking the partition's message sets from the
        // first, and at 10k events/s each partition adds up to one set per
        // `linger.ms`, so the broker's own tail grows with partitions and
        // time (BENCHMARKS.md). The bare consumer's latency is printed
        // beside Ordo's to show it.
        let partitions = env_u64("BENCH_LATENCY_PARTITIONS", 4) as i32;
        println!("latency: {partitions} partitions");
        for case in &latency_cases {
            runtime.block_on(latency(case, partitions));
        }
    }
}
