//! Event data with known answers: keyed, versioned JSON events spread over
//! partitions by key, with some delivered out of order and some duplicated;
//! and the checks that the sink holds exactly the distinct events.

#[allow(unused_imports)]
pub use ordo::demo::data::{generate, payload, Dataset, Produced};

/// Asserts the event store holds exactly the distinct events, each key's in
/// version order, and that the stored offsets equal the high watermarks.
pub async fn assert_event_store_exact(
    db: &tokio_postgres::Client,
    table: &str,
    ds: &Dataset,
    group: &str,
    topic: &str,
    high_watermarks: &[i64],
) {
    let total: i64 = db
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, ds.keys as i64 * ds.versions, "rows in {table}");
    let rows = db
        .query(
            &format!(
                "SELECT stream, array_agg(version ORDER BY position) FROM {table} GROUP BY stream"
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), ds.keys, "streams in {table}");
    let expected: Vec<i64> = (1..=ds.versions).collect();
    for r in rows {
        let stream: String = r.get(0);
        let versions: Vec<i64> = r.get(1);
        assert_eq!(versions, expected, "versions of {stream} in applied order");
    }
    let wrong: i64 = db
        .query_one(
            &format!(
                "SELECT count(*) FROM {table} WHERE payload->>'id' <> stream \
                 OR (payload->>'version')::bigint <> version"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        wrong, 0,
        "rows whose payload does not match (stream, version)"
    );
    assert_offsets(db, group, topic, high_watermarks).await;
}

/// The stored next offset of every partition.
pub async fn stored_offsets(db: &tokio_postgres::Client, group: &str, topic: &str) -> Vec<i64> {
    let rows = db
        .query(
            "SELECT partition, next_offset FROM ordo_offsets WHERE consumer_group = $1 AND topic = $2 ORDER BY partition",
            &[&group, &topic],
        )
        .await
        .unwrap_or_default();
    let mut out = vec![];
    for r in rows {
        let p: i32 = r.get(0);
        let n: Option<i64> = r.get(1);
        while out.len() < p as usize {
            out.push(-1);
        }
        out.push(n.unwrap_or(-1));
    }
    out
}

pub async fn assert_offsets(db: &tokio_postgres::Client, group: &str, topic: &str, hw: &[i64]) {
    assert_eq!(
        stored_offsets(db, group, topic).await,
        hw.to_vec(),
        "stored next offsets vs high watermarks"
    );
}

/// Waits until the stored offsets of `group`/`topic` equal `want`, asserting
/// on every poll that `ordo` still runs (its log is shown if it stopped).
pub async fn wait_stored_offsets(
    db: &tokio_postgres::Client,
    ordo: &mut super::ordo::Ordo,
    group: &str,
    topic: &str,
    want: &[i64],
) {
    let start = std::time::Instant::now();
    loop {
        assert!(ordo.running(), "{}", ordo.log_text());
        let stored = stored_offsets(db, group, topic).await;
        if stored == want {
            return;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "timed out after 120 s waiting for stored offsets {want:?}; they are {stored:?}; log:\n{}",
            ordo.log_text()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// `key -> last version`, as `ordo produce --expected` writes it.
pub fn expected_state(path: &std::path::Path) -> std::collections::HashMap<String, i64> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| {
            let (k, v) = l.split_once(',').expect("key,last_version");
            (k.to_string(), v.parse().expect("a version"))
        })
        .collect()
}
