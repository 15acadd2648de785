//! The latency case: rows landed at a fixed rate, each row's latency from
//! its record's timestamp to the commit that wrote it, beside a bare
//! consumer's latency on the same topic.

use super::*;

/// A bare librdkafka consumer reading the topic as it is produced: each
/// record's latency (ms) from its timestamp to its arrival, until `target`
/// (set once the producer is done) records were read. The broker's and the
/// producer's share of the latency, measured beside Ordo's.
fn bare_consumer_latencies(
    bootstrap: String,
    topic: String,
    partitions: i32,
    target: std::sync::Arc<std::sync::atomic::AtomicI64>,
    ready: std::sync::mpsc::Sender<()>,
) -> std::thread::JoinHandle<Vec<(i64, f64)>> {
    std::thread::spawn(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "bench-bare-latency")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "5")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        let mut latencies = Vec::new();
        let started = Instant::now();
        let mut ready = Some(ready);
        loop {
            // Fetching (like Ordo, whose partitions are leased before the
            // producer starts) before the first record is produced: its
            // start-up is not counted as the broker's latency.
            if started.elapsed() > Duration::from_secs(3) {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            let want = target.load(std::sync::atomic::Ordering::Relaxed);
            if want > 0 && latencies.len() as i64 >= want {
                return latencies;
            }
            assert!(
                started.elapsed() < Duration::from_secs(900),
                "bare consumer stalled"
            );
            if let Some(m) = consumer.poll(Duration::from_millis(100)) {
                let m = m.expect("bare consumer");
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("clock")
                    .as_millis() as i64;
                if let Some(ts) = m.timestamp().to_millis() {
                    latencies.push((ts, (now - ts) as f64));
                }
            }
        }
    })
}

/// The p50, p99 and max of `values`.
fn percentiles(mut values: Vec<f64>) -> [f64; 3] {
    if values.is_empty() {
        return [f64::NAN; 3];
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    [at(0.5), at(0.99), at(1.0)]
}

/// Runs a latency case and prints its row.
pub(super) async fn latency(case: &Case, partitions: i32) {
    let rate = env_u64("BENCH_RATE", 10_000);
    let seconds = env_u64("BENCH_SECONDS", 30);
    let run = prepare(case, partitions).await;
    let mut ordo = Ordo::start(&run.config, run.dir.path().join("ordo.log"));
    let client = run.db.client().await;
    wait_leased(&client, &mut ordo, &run).await;
    let target = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let (ready, fetching) = std::sync::mpsc::channel();
    let bare = bare_consumer_latencies(
        run.kafka.bootstrap(),
        run.setup.topic.clone(),
        run.partitions,
        target.clone(),
        ready,
    );
    fetching
        .recv_timeout(Duration::from_secs(60))
        .expect("bare consumer fetching");
    let expected = produce(
        &run,
        case,
        &[
            "--rate",
            &rate.to_string(),
            "--duration",
            &seconds.to_string(),
        ],
    );
    let hw = run.kafka.high_watermarks(&run.setup.topic, run.partitions);
    let total: i64 = hw.iter().sum();
    target.store(total, std::sync::atomic::Ordering::Relaxed);
    let bare = bare.join().expect("bare consumer");
    let bare_by_second = {
        let mut by: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
        for &(ts, l) in &bare {
            by.entry(ts.div_euclid(1000)).or_default().push(l);
        }
        by
    };
    let bare = percentiles(bare.into_iter().map(|(_, l)| l).collect());
    while stored_total(&client, &run.setup.group).await != total {
        assert!(ordo.running(), "{}", ordo.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_exact(&client, case, &expected).await;
    let table = if case.projection { "latest" } else { "events" };
    // A row counts as landed when the transaction that wrote it committed
    // (the cluster runs with `track_commit_timestamp`).
    let when = "pg_xact_commit_timestamp(xmin)";
    let row = client
        .query_one(
            &format!(
                "SELECT percentile_cont(ARRAY[0.5, 0.99, 1.0]) WITHIN GROUP \
                 (ORDER BY extract(epoch FROM {when} - event_time)::float8), count(*) FROM {table}"
            ),
            &[],
        )
        .await
        .unwrap();
    let (q, rows): (Vec<f64>, i64) = (row.get(0), row.get(1));
    if std::env::var_os("BENCH_LATENCY_DETAIL").is_some() {
        for r in client
            .query(
                &format!(
                    "SELECT extract(epoch FROM date_trunc('second', event_time))::int8 AS s, count(*), \
                     percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM {when} - event_time)::float8) \
                     FROM {table} GROUP BY 1 ORDER BY 1"
                ),
                &[],
            )
            .await
            .unwrap()
        {
            let (second, n, q): (i64, i64, Vec<f64>) = (r.get(0), r.get(1), r.get(2));
            let b = bare_by_second
                .get(&second)
                .map(|l| percentiles(l.clone()))
                .unwrap_or([f64::NAN; 3]);
            println!(
                "  second: {n} rows, p50 {:.1} ms, p99 {:.1} ms; bare consumer p50 {:.0} ms, p99 {:.0} ms",
                q[0] * 1e3,
                q[1] * 1e3,
                b[0],
                b[1]
            );
        }
    }
    if std::env::var_os("BENCH_LATENCY_DETAIL").is_some() {
        let commits: i64 = client
            .query_one(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        println!(
            "  PostgreSQL transactions committed in the database: {commits} ({:.0}/s over the run)",
            commits as f64 / seconds as f64
        );
    }
    let (cpu, peak) = ordo.cpu_and_peak_rss();
    assert!(ordo.terminate(Duration::from_secs(60)).success());
    println!(
        "| {} | {rate}/s for {seconds} s | {rows} | {:.1} | {:.1} | {:.1} | {:.0} / {:.0} / {:.0} | {:.2} | {peak:.0} |",
        case.name,
        q[0] * 1000.0,
        q[1] * 1000.0,
        q[2] * 1000.0,
        bare[0],
        bare[1],
        bare[2],
        cpu / seconds as f64
    );
}
