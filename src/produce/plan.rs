//! The order of a load run's events, apart from any Kafka I/O: which key
//! comes next with which version, which events are held back to arrive late,
//! which are sent twice, which records are poison; and the end state the sink
//! must reach. Seeded, so a run can be repeated.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One record to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Good {
        key: u64,
        version: i64,
    },
    /// An undecodable record (the n-th).
    Poison {
        n: u64,
    },
}

/// The name of key `k`.
pub fn key_name(k: u64) -> String {
    format!("key-{k:08}")
}

/// The plan of a run.
pub struct Plan {
    rng: StdRng,
    keys: u64,
    late: f64,
    window: usize,
    duplicates: f64,
    poison: f64,
    /// Per key, the last version drawn (0: none yet).
    versions: Vec<i64>,
    /// Events held back, each with the number of events still to pass it.
    held: VecDeque<(usize, Event)>,
    counts: Counts,
}

#[derive(Default)]
struct Counts {
    distinct: u64,
    late: u64,
    duplicates: u64,
    poison: u64,
}

impl Plan {
    pub fn new(
        keys: u64,
        late: f64,
        window: usize,
        duplicates: f64,
        poison: f64,
        seed: u64,
    ) -> Self {
        Plan {
            rng: StdRng::seed_from_u64(seed),
            keys,
            late,
            window: window.max(1),
            duplicates,
            poison,
            versions: vec![0; usize::try_from(keys).unwrap_or(usize::MAX)],
            held: VecDeque::new(),
            counts: Counts::default(),
        }
    }

    /// Draws the next distinct event; returns what is sent now (the event,
    /// unless held back; held events whose time came; copies; poison).
    pub fn next_event(&mut self) -> Vec<Event> {
        let mut out = Vec::with_capacity(2);
        if self.poison > 0.0 && self.rng.random_bool(self.poison) {
            out.push(Event::Poison {
                n: self.counts.poison,
            });
            self.counts.poison += 1;
        }
        let key = self.rng.random_range(0..self.keys);
        let slot = &mut self.versions[key as usize];
        *slot += 1;
        let event = Event::Good {
            key,
            version: *slot,
        };
        self.counts.distinct += 1;
        // Held events move one step; those whose time came go out first.
        for (left, _) in self.held.iter_mut() {
            *left = left.saturating_sub(1);
        }
        while self.held.front().is_some_and(|(left, _)| *left == 0) {
            if let Some((_, e)) = self.held.pop_front() {
                out.push(e);
            }
        }
        if self.late > 0.0 && self.rng.random_bool(self.late) {
            let after = self.rng.random_range(1..=self.window);
            self.insert_held(after, event);
            self.counts.late += 1;
        } else {
            out.push(event);
        }
        if self.duplicates > 0.0 && self.rng.random_bool(self.duplicates) {
            let after = self.rng.random_range(1..=self.window);
            self.insert_held(after, event);
            self.counts.duplicates += 1;
        }
        out
    }

    fn insert_held(&mut self, after: usize, event: Event) {
        let at = self.held.partition_point(|(left, _)| *left <= after);
        self.held.insert(at, (after, event));
    }

    /// What is still held back, to send at the end.
    pub fn finish(&mut self) -> Vec<Event> {
        self.held.drain(..).map(|(_, e)| e).collect()
    }

    pub fn distinct(&self) -> u64 {
        self.counts.distinct
    }
    pub fn late(&self) -> u64 {
        self.counts.late
    }
    pub fn duplicates(&self) -> u64 {
        self.counts.duplicates
    }
    pub fn poison(&self) -> u64 {
        self.counts.poison
    }
    pub fn keys_touched(&self) -> u64 {
        self.versions.iter().filter(|v| **v > 0).count() as u64
    }

    /// Each touched key's last version: the end state.
    pub fn last_versions(&self) -> impl Iterator<Item = (u64, i64)> + '_ {
        self.versions
            .iter()
            .enumerate()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| (k as u64, *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(plan: &mut Plan, n: usize) -> Vec<Event> {
        let mut out = vec![];
        for _ in 0..n {
            out.extend(plan.next_event());
        }
        out.extend(plan.finish());
        out
    }

    #[test]
    fn every_version_of_every_key_is_sent_and_the_end_state_matches() {
        let mut plan = Plan::new(50, 0.1, 20, 0.05, 0.01, 7);
        let sent = run(&mut plan, 5000);
        let mut seen: HashMap<u64, Vec<i64>> = HashMap::new();
        let mut poison = 0;
        for e in &sent {
            match e {
                Event::Good { key, version } => seen.entry(*key).or_default().push(*version),
                Event::Poison { .. } => poison += 1,
            }
        }
        assert_eq!(poison, plan.poison());
        assert!(plan.late() > 300 && plan.duplicates() > 150);
        let mut distinct = 0;
        for (key, last) in plan.last_versions() {
            let mut versions = seen[&key].clone();
            versions.sort_unstable();
            versions.dedup();
            assert_eq!(versions, (1..=last).collect::<Vec<_>>(), "key {key}");
            distinct += last as u64;
        }
        assert_eq!(distinct, plan.distinct());
        assert_eq!(distinct, 5000);
        assert_eq!(sent.len() as u64, 5000 + plan.duplicates() + plan.poison());
    }

    #[test]
    fn late_events_arrive_after_later_versions_within_the_window() {
        let mut plan = Plan::new(3, 0.3, 10, 0.0, 0.0, 1);
        let sent = run(&mut plan, 3000);
        let mut inversions = 0;
        let mut last: HashMap<u64, i64> = HashMap::new();
        for e in &sent {
            if let Event::Good { key, version } = e {
                if last.get(key).is_some_and(|l| l > version) {
                    inversions += 1;
                }
                last.insert(*key, *version);
            }
        }
        assert!(inversions > 100, "{inversions}");
    }

    #[test]
    fn a_seed_repeats_a_run() {
        let a = run(&mut Plan::new(100, 0.05, 20, 0.02, 0.0, 42), 1000);
        let b = run(&mut Plan::new(100, 0.05, 20, 0.02, 0.0, 42), 1000);
        assert_eq!(a, b);
    }
}
