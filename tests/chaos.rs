//! Chaos: three replicas as processes consume a stream (late and duplicated
//! events, poison records among them) while replicas are SIGKILLed at
//! seeded-random moments and restarted, PostgreSQL goes down across a
//! rebalance, every broker goes down and comes back, and dead-letter writes
//! fail for a while. In the end: nothing lost, nothing doubled, every key in
//! order, every poison record in the dead-letter topic, `ordo dlq inspect`,
//! `replay --dry-run` and `ordo_dlq_depth_records` each counting exactly the
//! poison records, and no replica exited or stopped a partition on its own.
//!
//! Its own test binary: it stops the PostgreSQL cluster the binary's tests share.

mod support;

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::bindings::rd_kafka_resp_err_t as Err;
use support::data::{self, Produced};
use support::kafka::{Kafka, MockCluster};
use support::ordo::{Ordo, Replica, Setup};
use support::postgres::{cluster, TestDb};

const PARTITIONS: i32 = 8;
const POISON: usize = 20;
const SEED: u64 = 2026;

fn mock(kafka: &Kafka) -> &MockCluster {
    match kafka {
        Kafka::Mock(m) => m,
        Kafka::External(_) => unreachable!("chaos needs the mock cluster"),
    }
}

/// The replicas and what happened to them.
struct Fleet<'a> {
    replicas: &'a [Replica],
    running: Vec<Ordo>,
    dir: &'a std::path::Path,
    kills: usize,
    starts: usize,
}

impl Fleet<'_> {
    fn start(&mut self, i: usize) {
        self.starts += 1;
        self.running[i] = Ordo::start(
            &self.replicas[i].config,
            self.dir.join(format!("r{i}-{}.log", self.starts)),
        );
    }

    fn kill(&mut self, i: usize) {
        self.assert_alive();
        self.running[i].crash();
        self.kills += 1;
    }

    /// No replica exited on its own, and none stopped a partition.
    fn assert_alive(&mut self) {
        self.assert_alive_but(usize::MAX);
    }

    /// [`Fleet::assert_alive`], but for replica `down`, killed on purpose.
    fn assert_alive_but(&mut self, down: usize) {
        for (i, r) in self.running.iter_mut().enumerate() {
            if i == down {
                continue;
            }
            assert!(r.running(), "replica {i} exited:\n{}", r.log_text());
            let log = r.log_text();
            assert!(
                !log.contains("partition stopped") && !log.contains("fatal"),
                "replica {i}:\n{log}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_survive_kills_outages_and_failing_dead_letters_exactly() {
    let mut rng = StdRng::seed_from_u64(SEED);
    let kafka = Kafka::Mock(MockCluster::start(3).expect("mock cluster"));
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        dead_letter: true,
        dead_letter_extra: "send_timeout_ms = 1000".into(),
        tail: "[shutdown]\ndeadline_ms = 5000\n".into(),
        ..Setup::event_store(kafka.bootstrap(), db.url.clone(), "events")
    };
    kafka.create_topic(&setup.topic, PARTITIONS);
    let dlq = format!("{}.dlq", setup.topic);
    kafka.create_topic(&dlq, 1);
    let ds = data::generate(48_000, PARTITIONS, 480, 0.05, 20, 0.02, SEED);
    let mut records = ds.records.clone();
    for n in 0..POISON {
        let at = rng.random_range(0..records.len());
        records.insert(
            at,
            Produced {
                partition: rng.random_range(0..PARTITIONS),
                key: Some(format!("poison-{n}").into_bytes()),
                payload: b"{ not json".to_vec(),
            },
        );
    }
    let producer = {
        let (bootstrap, topic, records) = (kafka.bootstrap(), setup.topic.clone(), records.clone());
        // Done in about 12 s, before the brokers go down: the test's own
        // idempotent producer is not what is under test there.
        std::thread::spawn(move || support::kafka::produce_at(&bootstrap, &topic, &records, 4000))
    };
    let replicas = setup.replicas(dir.path(), 3);
    let mut fleet = Fleet {
        replicas: &replicas,
        running: replicas.iter().map(Replica::start).collect(),
        dir: dir.path(),
        kills: 0,
        starts: 3,
    };
    let pause =
        |rng: &mut StdRng, base: u64| Duration::from_millis(base + rng.random_range(0..1500));

    // A crash and a restart.
    tokio::time::sleep(pause(&mut rng, 3000)).await;
    fleet.kill(1);
    tokio::time::sleep(pause(&mut rng, 1000)).await;
    fleet.start(1);

    // PostgreSQL goes down; a replica crashes meanwhile, so its partitions
    // move (after the session timeout) while no lease can be taken; the
    // survivors wait for the leases. The crashed replica comes back once they
    // took them (starting before PostgreSQL is back is tests/waiting.rs's).
    tokio::time::sleep(pause(&mut rng, 3000)).await;
    cluster().stop();
    tokio::time::sleep(pause(&mut rng, 1000)).await;
    fleet.kill(2);
    tokio::time::sleep(Duration::from_secs(8)).await;
    cluster().start_again();
    for i in [0, 1] {
        let deadline = support::Deadline::new(
            format!("replica {i} ready after the outage"),
            Duration::from_secs(60),
        );
        while support::ordo::readyz(&replicas[i].addr).await.0 != 200 {
            fleet.assert_alive_but(2);
            deadline.tick().await;
        }
    }
    fleet.start(2);

    // Every broker down, then back.
    tokio::time::sleep(pause(&mut rng, 3000)).await;
    mock(&kafka).broker_down(-1).unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    mock(&kafka).broker_up(-1).unwrap();

    // Produce requests fail for a while: dead letters (and the test's own
    // producer, which retries) wait.
    tokio::time::sleep(pause(&mut rng, 2000)).await;
    mock(&kafka).push_request_errors(0, &[Err::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 30]);

    // One more crash at a random moment.
    tokio::time::sleep(pause(&mut rng, 2000)).await;
    fleet.kill(0);
    tokio::time::sleep(pause(&mut rng, 500)).await;
    fleet.start(0);

    producer.join().expect("producer");
    let hw = kafka.high_watermarks(&setup.topic, PARTITIONS);
    let client = db.client().await;
    let started = Instant::now();
    loop {
        fleet.assert_alive();
        if data::stored_offsets(&client, &setup.group, &setup.topic).await == hw {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "stored offsets {:?} never reached {hw:?}",
            data::stored_offsets(&client, &setup.group, &setup.topic).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    fleet.assert_alive();
    data::assert_event_store_exact(&client, "events", &ds, &setup.group, &setup.topic, &hw).await;
    // Every poison record is in the dead-letter topic; a second copy only
    // where a kill fell between a letter's acknowledgement and its commit.
    let letters = kafka.read_all(&dlq, POISON);
    // The poison records the topic holds (the test's producer does not check
    // its deliveries through the faults; Ordo must dead-letter what is there).
    let poison_in_topic: Vec<(String, i32, i64)> = kafka
        .read_all(&setup.topic, records.len())
        .iter()
        .filter_map(|m| {
            let key = String::from_utf8_lossy(rdkafka::Message::key(m)?).into_owned();
            Some((
                key,
                rdkafka::Message::partition(m),
                rdkafka::Message::offset(m),
            ))
        })
        .filter(|(k, _, _)| k.starts_with("poison-"))
        .collect();
    assert!(!poison_in_topic.is_empty());
    for (key, partition, offset) in &poison_in_topic {
        let copies = letters
            .iter()
            .filter(|m| rdkafka::Message::key(*m) == Some(key.as_bytes()))
            .count();
        if copies == 0 {
            // What the replicas said about it.
            let mut said = String::new();
            for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let at = |l: &&str| {
                    l.contains(key.as_str())
                        || (l.contains(&format!("partition={partition}"))
                            && (l.contains(&format!("offset={offset}"))
                                || l.contains("drained")
                                || l.contains("assigned")))
                };
                for line in text.lines().filter(at) {
                    said.push_str(&format!("{}: {line}\n", entry.path().display()));
                }
            }
            panic!(
                "{key} (partition {partition}, offset {offset}) is not in the dead-letter topic \
                 ({} letters read); log lines about it and the partition's moves:\n{said}",
                letters.len()
            );
        }
    }
    assert!(
        letters.len() <= POISON + fleet.kills,
        "{} letters for {POISON} poison records and {} kills",
        letters.len(),
        fleet.kills
    );
    // Whatever the topic holds, every count a user sees names each poison
    // record exactly once: inspect, a dry replay and the depth metric.
    let poison_sources: std::collections::BTreeSet<(String, i32, i64)> = poison_in_topic
        .iter()
        .map(|(_, p, o)| (setup.topic.clone(), *p, *o))
        .collect();
    let config = replicas[0].config.to_str().unwrap().to_string();
    let inspect = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            support::ordo::run_to_end(&["dlq", "inspect", "--json", "--config", &config])
        })
    };
    let (status, stdout, stderr) = inspect.await.unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let shown: std::collections::BTreeSet<(String, i32, i64)> = stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON letter");
            (
                v["source_topic"].as_str().unwrap_or_default().to_string(),
                v["source_partition"].as_i64().unwrap_or(-1) as i32,
                v["source_offset"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        stdout.lines().count(),
        poison_sources.len(),
        "inspect: {stderr}"
    );
    assert_eq!(
        shown, poison_sources,
        "inspect shows each poison record once"
    );
    let dry = tokio::task::spawn_blocking(move || {
        support::ordo::run_to_end(&["dlq", "replay", "--dry-run", "--config", &config])
    });
    let (status, stdout, stderr) = dry.await.unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stdout.contains(&format!(", would replay {},", poison_sources.len())),
        "{stdout}"
    );
    let series = format!("ordo_dlq_depth_records{{dlq_topic=\"{dlq}\"}}");
    let want = format!("{series} {}", poison_sources.len());
    let deadline = support::Deadline::new(want.clone(), Duration::from_secs(30));
    loop {
        let text = match reqwest::get(format!("{}/metrics", replicas[0].base())).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.lines().any(|l| l == want) {
            break;
        }
        deadline.tick().await;
    }
    for r in &mut fleet.running {
        assert!(r.terminate(Duration::from_secs(30)).success());
    }
}
