//! Sample events with known answers: keyed, versioned JSON events spread over
//! partitions by key, some delivered late (out of order) and some twice.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One record to produce.
#[derive(Debug, Clone)]
pub struct Produced {
    pub partition: i32,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// What was produced and what the sink must end up holding.
pub struct Dataset {
    pub records: Vec<Produced>,
    pub keys: usize,
    pub versions: i64,
    pub partitions: i32,
    /// Adjacent pairs in a partition where a key's higher version came first.
    pub inversions: usize,
    pub duplicates: usize,
}

pub fn key_name(k: usize) -> String {
    format!("acct-{k:04}")
}

pub fn payload(key: &str, version: i64) -> Vec<u8> {
    serde_json::json!({
        "id": key,
        "version": version,
        "amount": version * 10,
        "note": format!("event {version} of {key}"),
    })
    .to_string()
    .into_bytes()
}

/// `events` events over `keys` keys and `partitions` partitions; a fraction
/// `late` of them delivered up to `window` positions late (swapped behind the
/// key's next version where that is near), a fraction `dup` duplicated.
pub fn generate(
    events: usize,
    partitions: i32,
    keys: usize,
    late: f64,
    window: usize,
    dup: f64,
    seed: u64,
) -> Dataset {
    generate_with(events, partitions, keys, late, window, dup, seed, payload)
}

/// [`generate`], each event's payload made by `payload(key, version)`.
#[allow(clippy::too_many_arguments)]
pub fn generate_with(
    events: usize,
    partitions: i32,
    keys: usize,
    late: f64,
    window: usize,
    dup: f64,
    seed: u64,
    payload: fn(&str, i64) -> Vec<u8>,
) -> Dataset {
    let mut rng = StdRng::seed_from_u64(seed);
    let versions = (events / keys) as i64;
    let mut records = Vec::with_capacity(events + (events as f64 * dup) as usize + 16);
    let mut inversions = 0;
    let mut duplicates = 0;
    for p in 0..partitions {
        let mine: Vec<usize> = (0..keys)
            .filter(|k| (*k as i32) % partitions == p)
            .collect();
        let mut next: HashMap<usize, i64> = mine.iter().map(|&k| (k, 1)).collect();
        let mut live = mine.clone();
        let mut seq: Vec<(usize, i64)> = Vec::new();
        while !live.is_empty() {
            let i = rng.random_range(0..live.len());
            let k = live[i];
            let v = next[&k];
            seq.push((k, v));
            if v == versions {
                live.swap_remove(i);
            } else {
                next.insert(k, v + 1);
            }
        }
        // Late delivery: swap with the key's next version when it is within the window.
        let n = seq.len();
        for i in 0..n {
            if !rng.random_bool(late) {
                continue;
            }
            let (k, v) = seq[i];
            let horizon = (i + window).min(n - 1);
            if let Some(j) = (i + 1..=horizon).find(|&j| seq[j] == (k, v + 1)) {
                seq.swap(i, j);
            } else if horizon > i {
                let d = rng.random_range(i + 1..=horizon);
                let e = seq.remove(i);
                seq.insert(d, e);
            }
        }
        // Duplicates: a copy delivered again a little later.
        let mut with_dups = Vec::with_capacity(n + n / 20);
        let mut pending: Vec<(usize, (usize, i64))> = Vec::new();
        for (i, e) in seq.iter().enumerate() {
            with_dups.push(*e);
            pending.retain(|(at, d)| {
                if *at == i {
                    with_dups.push(*d);
                    false
                } else {
                    true
                }
            });
            if rng.random_bool(dup) {
                pending.push((i + rng.random_range(0..200), *e));
                duplicates += 1;
            }
        }
        with_dups.extend(pending.into_iter().map(|(_, d)| d));
        let mut last: HashMap<usize, i64> = HashMap::new();
        for &(k, v) in &with_dups {
            if last.get(&k).is_some_and(|&l| l > v) {
                inversions += 1;
            }
            last.insert(k, v);
            let key = key_name(k);
            records.push(Produced {
                partition: p,
                key: Some(key.clone().into_bytes()),
                payload: payload(&key, v),
            });
        }
    }
    Dataset {
        records,
        keys,
        versions,
        partitions,
        inversions,
        duplicates,
    }
}
