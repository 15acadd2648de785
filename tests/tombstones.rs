//! A compacted topic into a projection: upserts and tombstones of each key
//! interleaved, late and duplicated, across a SIGKILL and a restart, then
//! read again from the start (`ordo offsets set --to-earliest`). The
//! projection ends as each key's last state, deleted keys absent, and no
//! older version brings a deleted row back (not even one sent back from the
//! dead-letter topic, which bypasses the ordering buffer).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::data;
use support::kafka::{produce_raw, Kafka, Raw};
use support::ordo::{Ordo, Setup};
use support::postgres::TestDb;
use support::{unique, Deadline};

const PARTITIONS: i32 = 4;
const KEYS: usize = 400;

/// One key's operation at a version: `Some(state)` upserts, `None` deletes.
#[derive(Clone)]
struct Op {
    key: String,
    version: i64,
    state: Option<serde_json::Value>,
}

fn raw(op: &Op, partition: i32, extra: &[(&'static str, Vec<u8>)]) -> Raw {
    let mut headers = vec![("seq", op.version.to_string().into_bytes())];
    headers.extend(extra.iter().cloned());
    Raw {
        partition,
        key: op.key.as_bytes().to_vec(),
        payload: op.state.as_ref().map(|s| s.to_string().into_bytes()),
        headers,
    }
}

/// Each key's history (some versions tombstones, some keys ending deleted),
/// produced per partition with neighbours swapped (late) and some records
/// sent twice (duplicates). Returns the records and each key's last op.
fn history(seed: u64) -> (Vec<Raw>, HashMap<String, Op>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut per_partition: Vec<Vec<Op>> = vec![vec![]; PARTITIONS as usize];
    let mut last = HashMap::new();
    for k in 0..KEYS {
        let key = format!("key-{k:04}");
        let versions = rng.random_range(2..=9);
        let mut ops: Vec<Op> = (1..=versions)
            .map(|v| {
                Op {
                key: key.clone(),
                version: v,
                state: (rng.random_bool(0.7) || v == 1).then(|| {
                    serde_json::json!({ "key": key, "v": v, "note": format!("state {v} of {key}") })
                }),
            }
            })
            .collect();
        // About a third of the keys end deleted.
        if rng.random_bool(0.33) {
            ops.last_mut().expect("a version").state = None;
        }
        last.insert(key.clone(), ops.last().expect("a version").clone());
        per_partition[k % PARTITIONS as usize].extend(ops);
    }
    let mut records = vec![];
    for (p, ops) in per_partition.iter_mut().enumerate() {
        // Interleave the keys, keeping each key's versions in order...
        let mut queues: Vec<std::collections::VecDeque<Op>> = vec![];
        for op in ops.drain(..) {
            match queues
                .iter_mut()
                .find(|q| q.front().is_some_and(|f| f.key == op.key))
            {
                Some(q) => q.push_back(op),
                None => queues.push([op].into()),
            }
        }
        let mut order = vec![];
        while !queues.is_empty() {
            let i = rng.random_range(0..queues.len());
            order.push(queues[i].pop_front().expect("non-empty"));
            if queues[i].is_empty() {
                queues.swap_remove(i);
            }
        }
        // ...then make some late: a version swapped with the key's next one.
        for i in 0..order.len() {
            if !rng.random_bool(0.15) {
                continue;
            }
            if let Some(j) = (i + 1..order.len()).find(|&j| order[j].key == order[i].key) {
                order.swap(i, j);
            }
        }
        for op in &order {
            records.push(raw(op, p as i32, &[]));
            if rng.random_bool(0.05) {
                // A duplicate, a little later.
                records.push(raw(op, p as i32, &[]));
            }
        }
    }
    (records, last)
}

async fn projection(db: &TestDb) -> HashMap<String, (i64, serde_json::Value)> {
    db.client()
        .await
        .query("SELECT key, version, state FROM events", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_delete_in_key_order_across_a_kill_and_a_rewind_and_nothing_is_resurrected() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let setup = Setup {
        bootstrap: kafka.bootstrap(),
        group: unique("ordo"),
        topic: unique("compacted"),
        db_url: db.url.clone(),
        mode: "projection",
        table: "events".into(),
        sequence: "header:seq".into(),
        source: "tombstones = \"delete\"".into(),
        ..Setup::default()
    };
    kafka.create_topic(&setup.topic, PARTITIONS);
    let (records, last) = history(11);
    let deletes = records.iter().filter(|r| r.payload.is_none()).count();
    assert!(deletes > 300, "the data must hold tombstones: {deletes}");
    let deleted: Vec<&String> = last
        .iter()
        .filter(|(_, op)| op.state.is_none())
        .map(|(k, _)| k)
        .collect();
    assert!(
        deleted.len() > 80,
        "keys must end deleted: {}",
        deleted.len()
    );

    // The first half, a kill mid-stream, then the rest after a restart.
    let (first, rest) = records.split_at(records.len() / 2);
    produce_raw(&kafka.bootstrap(), &setup.topic, first);
    let config = setup.write(dir.path(), "ordo.toml");
    let client = db.client().await;
    let mut ordo = Ordo::start(&config, dir.path().join("ordo-1.log"));
    let deadline = Deadline::new("progress before the kill", Duration::from_secs(120));
    loop {
        assert!(ordo.running(), "ordo exited:\n{}", ordo.log_text());
        let stored: i64 = data::stored_offsets(&client, &setup.group, &setup.topic)
            .await
            .iter()
            .sum();
        if stored > first.len() as i64 / 3 {
            break;
        }
        deadline.tick().await;
    }
    ordo.crash();
    produce_raw(&kafka.bootstrap(), &setup.topic, rest);
    let hw = kafka.high_watermarks(&setup.topic, PARTITIONS);
    let mut ordo = Ordo::start(&config, dir.path().join("ordo-2.log"));
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &hw).await;

    let check = |rows: &HashMap<String, (i64, serde_json::Value)>| {
        for (key, op) in &last {
            match (&op.state, rows.get(key)) {
                (None, None) => {}
                (Some(state), Some((version, stored))) => {
                    assert_eq!(*version, op.version, "{key}");
                    assert_eq!(stored, state, "{key}");
                }
                (None, Some(row)) => {
                    panic!("{key} was deleted at {} but holds {row:?}", op.version)
                }
                (Some(_), None) => {
                    panic!("{key} is missing; its last version {} upserts", op.version)
                }
            }
        }
        assert_eq!(rows.len(), last.len() - deleted.len());
    };
    check(&projection(&db).await);
    // The key state remembers each delete, at its version.
    let remembered: HashMap<String, i64> = client
        .query("SELECT key, version FROM ordo_deleted_keys", &[])
        .await
        .expect("deleted keys")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for key in &deleted {
        assert_eq!(remembered.get(*key), Some(&last[*key].version), "{key}");
    }

    // Older versions of deleted keys again: as duplicates through the
    // buffer, and as dead letters sent back (which skip it); neither brings
    // a row back.
    let mut again = vec![];
    for key in &deleted {
        let k: usize = key["key-".len()..].parse().expect("key number");
        let old = Op {
            key: (*key).clone(),
            version: 1,
            state: Some(serde_json::json!({ "key": key, "v": 1, "resurrected": true })),
        };
        let partition = (k % PARTITIONS as usize) as i32;
        again.push(raw(&old, partition, &[]));
        again.push(raw(
            &old,
            partition,
            &[("ordo.replay.count", b"1".to_vec())],
        ));
    }
    produce_raw(&kafka.bootstrap(), &setup.topic, &again);
    let hw = kafka.high_watermarks(&setup.topic, PARTITIONS);
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &hw).await;
    check(&projection(&db).await);

    // A rewind of every partition to its start, Ordo running: the whole
    // history is read again, and no deleted key comes back.
    let path = config.to_str().expect("path");
    let (status, stdout, stderr) =
        support::ordo::run_to_end(&["offsets", "set", "--to-earliest", "--config", path]);
    assert!(status.success(), "{stdout}{stderr}");
    let deadline = Deadline::new("the rewind taken up", Duration::from_secs(60));
    loop {
        let pending: i64 = client
            .query_one(
                "SELECT count(*) FROM ordo_offsets WHERE consumer_group = $1 AND moved",
                &[&setup.group],
            )
            .await
            .expect("moved")
            .get(0);
        if pending == 0 {
            break;
        }
        assert!(ordo.running(), "ordo exited:\n{}", ordo.log_text());
        deadline.tick().await;
    }
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &hw).await;
    assert!(ordo.terminate(Duration::from_secs(30)).success());
    check(&projection(&db).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_without_a_projection_or_a_sequence_header_are_refused_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = Setup {
        bootstrap: "127.0.0.1:9".into(),
        group: unique("ordo"),
        topic: unique("compacted"),
        db_url: "postgres://ordo@127.0.0.1:9/x".into(),
        mode: "projection",
        table: "events".into(),
        sequence: "header:seq".into(),
        source: "tombstones = \"delete\"".into(),
        ..Setup::default()
    };
    let cases = [
        (
            Setup {
                mode: "event_store",
                ..base.clone()
            },
            "`delete` needs sink.postgres.mode = \"projection\"",
        ),
        (
            Setup {
                sequence: "field:version".into(),
                ..base.clone()
            },
            "ordering.tombstone_sequence = \"header:<name>\"",
        ),
        (
            Setup {
                key: "field:id".into(),
                ..base.clone()
            },
            "`delete` needs ordering.key = \"message_key\"",
        ),
    ];
    for (i, (setup, why)) in cases.iter().enumerate() {
        let path = setup.write(dir.path(), &format!("bad-{i}.toml"));
        let (status, _, stderr) =
            support::ordo::run_to_end(&["check", "--config", path.to_str().expect("path")]);
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("key `source.tombstones`"), "{stderr}");
        assert!(stderr.contains(why), "{why} in: {stderr}");
    }
    // With a tombstone header of its own, a field sequence is fine.
    let ok = Setup {
        sequence: "field:version".into(),
        ordering: "tombstone_sequence = \"header:seq\"".into(),
        ..base.clone()
    };
    let path = ok.write(dir.path(), "ok.toml");
    let (status, _, stderr) =
        support::ordo::run_to_end(&["check", "--config", path.to_str().expect("path")]);
    assert_ne!(status.code(), Some(2), "{stderr}");
}
