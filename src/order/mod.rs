//! Order: the per-key sequence buffer of one partition.
//!
//! Each key's events are released in sequence order. An event whose sequence is
//! the next expected one is released at once, with any held successors it
//! unblocks; a later one is held until the gap fills; a duplicate or stale one
//! is dropped and counted. The buffer is bounded in events, bytes and time; at a
//! bound the configured [`BoundPolicy`] applies.
//!
//! Pure: no I/O and no clock (the caller passes `now`), so it is easy to test
//! and to fuzz. The last applied sequence of a key is [`learn`]ed from the
//! sink: an event of a key not learned yet is handed back
//! ([`Offer::Unknown`]), to be offered again once its key is.
//!
//! [`learn`]: SequenceBuffer::learn

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::record::Event;

mod config;
pub use config::OrderingConfig;

/// What happens when the buffer reaches a bound.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BoundPolicy {
    /// Stop fetching the partition; nothing is skipped (the partition stalls
    /// until the gap fills or an operator intervenes).
    #[default]
    Wait,
    /// Release the oldest held key past its gap, recording the gap.
    Skip,
    /// Send the oldest held key's held events to the dead-letter topic; the
    /// key keeps waiting for its gap (replay them once it filled).
    DeadLetter,
}

/// The buffer's bounds and the first sequence of a new key.
#[derive(Debug, Clone)]
pub struct BufferConfig {
    pub first_sequence: i64,
    pub max_events: usize,
    pub max_bytes: usize,
    pub gap_timeout: Duration,
}

/// Which bound was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Events,
    Bytes,
    GapTimeout,
}

impl Bound {
    /// Label for metrics and the gap table.
    pub fn as_str(self) -> &'static str {
        match self {
            Bound::Events => "max_buffered_events",
            Bound::Bytes => "max_buffered_bytes",
            Bound::GapTimeout => "gap_timeout",
        }
    }
}

/// What became of an offered event.
#[derive(Debug, Clone, PartialEq)]
pub enum Offer {
    /// Its key's last applied sequence is not known yet: the event is handed
    /// back as it was, to be offered again once the key is learned.
    Unknown(Event),
    /// Released, with this many events in all (itself and the held ones it unblocked).
    Released(usize),
    /// Held until its gap fills; the key already held others.
    Held,
    /// Held until its gap fills, and the first held for its key: the key
    /// starts waiting for `expected`, having received `received`.
    Waits {
        key: String,
        expected: i64,
        received: i64,
    },
    /// Its sequence is already held or already applied: dropped.
    Duplicate,
    /// Sent back from the dead-letter topic after later versions of its key
    /// were applied: released now, out of order (the sink keeps it
    /// idempotent), rather than dropped as a duplicate.
    ReplayedLate,
    /// Its sequence was skipped over by a recorded gap: dropped.
    Stale,
    /// Its sequence (`received`) is below `first_sequence` (`first`) and the
    /// key has applied nothing: dropped.
    BelowFirst {
        key: String,
        first: i64,
        received: i64,
    },
}

/// A gap the buffer skipped over (policy `skip`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub key: String,
    /// The first missing sequence.
    pub expected: i64,
    /// The sequence released instead.
    pub released: i64,
    /// Offset of the released event.
    pub offset: i64,
    pub bound: Bound,
}

/// Skipped ranges remembered per key (older ones then count as duplicates).
const MAX_SKIPPED_RANGES: usize = 8;

#[derive(Debug)]
struct Held {
    event: Event,
    since: Instant,
}

/// A cached key: 16 bytes besides its name, since a partition may cache
/// many keys and most of them hold nothing.
#[derive(Debug)]
struct KeyState {
    last_applied: i64,
    /// What few keys have: held events and skipped ranges.
    extra: Option<Box<Extra>>,
}

#[derive(Debug, Default)]
struct Extra {
    /// Recent ranges skipped over by gaps: late events in them are stale, not duplicates.
    skipped: Vec<(i64, i64)>,
    pending: BTreeMap<i64, Held>,
}

impl KeyState {
    fn pending(&self) -> Option<&BTreeMap<i64, Held>> {
        self.extra.as_deref().map(|x| &x.pending)
    }

    fn holds(&self) -> bool {
        self.pending().is_some_and(|p| !p.is_empty())
    }

    fn skipped(&self, seq: i64) -> bool {
        self.extra
            .as_deref()
            .is_some_and(|x| x.skipped.iter().any(|&(lo, hi)| lo <= seq && seq <= hi))
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    /// Drops the extra part once it holds nothing.
    fn tidy(&mut self) {
        if self
            .extra
            .as_deref()
            .is_some_and(|x| x.pending.is_empty() && x.skipped.is_empty())
        {
            self.extra = None;
        }
    }
}

/// The hasher of the key map: fast for short keys, seeded per map.
type KeyHasher = foldhash::fast::RandomState;

/// The per-key sequence buffer of one partition.
#[derive(Debug)]
pub struct SequenceBuffer {
    cfg: BufferConfig,
    keys: HashMap<Box<str>, KeyState, KeyHasher>,
    /// Held events by offset: the lowest is the oldest, and bounds `next_offset`.
    held_by_offset: BTreeMap<i64, (String, i64)>,
    held_bytes: usize,
}

impl SequenceBuffer {
    pub fn new(cfg: BufferConfig) -> Self {
        Self {
            cfg,
            keys: HashMap::default(),
            held_by_offset: BTreeMap::new(),
            held_bytes: 0,
        }
    }

    /// True when the key's last applied sequence is known.
    pub fn knows(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// Records a key's last applied sequence as stored by the sink (`None`: never applied).
    pub fn learn(&mut self, key: String, last_applied: Option<i64>) {
        let last_applied = last_applied.unwrap_or(self.cfg.first_sequence - 1);
        self.keys.entry(key.into_boxed_str()).or_insert(KeyState {
            last_applied,
            extra: None,
        });
    }

    /// The last sequence released for a key, if the key is known.
    pub fn last_applied(&self, key: &str) -> Option<i64> {
        self.keys.get(key).map(|k| k.last_applied)
    }

    /// Offers an event; released events are appended to `out` in per-key
    /// order. The key is looked up once: an unknown key's event comes back.
    pub fn offer(&mut self, event: Event, now: Instant, out: &mut Vec<Event>) -> Offer {
        let Some(state) = self.keys.get_mut(event.key.as_str()) else {
            return Offer::Unknown(event);
        };
        let seq = event.sequence;
        if seq <= state.last_applied {
            if event.replayed {
                out.push(event);
                return Offer::ReplayedLate;
            }
            let key = &event.key;
            return if state.skipped(seq) {
                Offer::Stale
            } else if seq < self.cfg.first_sequence {
                if state.last_applied < self.cfg.first_sequence {
                    Offer::BelowFirst {
                        key: key.clone(),
                        first: self.cfg.first_sequence,
                        received: seq,
                    }
                } else {
                    Offer::Stale
                }
            } else {
                Offer::Duplicate
            };
        }
        if state.pending().is_some_and(|p| p.contains_key(&seq)) {
            return Offer::Duplicate;
        }
        if seq == state.last_applied + 1 {
            state.last_applied = seq;
            // Most keys hold nothing: their name is neither cloned nor looked up again.
            let key = state.holds().then(|| event.key.clone());
            out.push(event);
            let released = 1 + key.map_or(0, |key| self.release_ready(&key, out));
            return Offer::Released(released);
        }
        let starts_waiting = !state.holds();
        let expected = state.last_applied + 1;
        self.held_bytes += event.size;
        self.held_by_offset
            .insert(event.offset, (event.key.clone(), seq));
        let key = starts_waiting.then(|| event.key.clone());
        state
            .extra()
            .pending
            .insert(seq, Held { event, since: now });
        if let Some(key) = key {
            Offer::Waits {
                key,
                expected,
                received: seq,
            }
        } else {
            Offer::Held
        }
    }

    /// Releases the held events of `key` that directly follow its last applied sequence.
    fn release_ready(&mut self, key: &str, out: &mut Vec<Event>) -> usize {
        let Some(state) = self.keys.get_mut(key) else {
            return 0;
        };
        let KeyState {
            last_applied,
            extra,
        } = state;
        let Some(extra) = extra.as_deref_mut() else {
            return 0;
        };
        let mut n = 0;
        while let Some(entry) = extra.pending.first_entry() {
            if *entry.key() != *last_applied + 1 {
                break;
            }
            let held = entry.remove();
            *last_applied = held.event.sequence;
            self.held_bytes -= held.event.size;
            self.held_by_offset.remove(&held.event.offset);
            out.push(held.event);
            n += 1;
        }
        state.tidy();
        n
    }

    /// The bound currently exceeded, if any (events and bytes are checked before time).
    pub fn exceeded(&self, now: Instant) -> Option<Bound> {
        if self.held_by_offset.len() > self.cfg.max_events {
            return Some(Bound::Events);
        }
        if self.held_bytes > self.cfg.max_bytes {
            return Some(Bound::Bytes);
        }
        let oldest = self.oldest_since()?;
        (now.saturating_duration_since(oldest) >= self.cfg.gap_timeout).then_some(Bound::GapTimeout)
    }

    /// True when holding one more event would exceed the event or byte bound.
    pub fn full(&self) -> bool {
        self.full_at().is_some()
    }

    /// The bound that holding one more event would exceed, if any.
    pub fn full_at(&self) -> Option<Bound> {
        if self.held_by_offset.len() >= self.cfg.max_events {
            Some(Bound::Events)
        } else if self.held_bytes >= self.cfg.max_bytes {
            Some(Bound::Bytes)
        } else {
            None
        }
    }

    /// When the oldest held event started waiting.
    pub fn oldest_since(&self) -> Option<Instant> {
        let (_, (key, seq)) = self.held_by_offset.first_key_value()?;
        self.keys
            .get(key.as_str())?
            .pending()?
            .get(seq)
            .map(|h| h.since)
    }

    /// The key holding the oldest held event: (key, the sequence it waits
    /// for, its lowest held sequence, that event's offset).
    pub fn oldest_waiting(&self) -> Option<(&str, i64, i64, i64)> {
        let (&offset, (key, _)) = self.held_by_offset.first_key_value()?;
        let state = self.keys.get(key.as_str())?;
        let (&first, _) = state.pending()?.first_key_value()?;
        Some((key.as_str(), state.last_applied + 1, first, offset))
    }

    /// Skips the gap in front of the oldest held event: that key's held events from
    /// its lowest one up to the next gap are released, and the gap is returned.
    pub fn skip_oldest(&mut self, bound: Bound, out: &mut Vec<Event>) -> Option<Gap> {
        let (_, (key, _)) = self.held_by_offset.first_key_value()?;
        let key = key.clone();
        let state = self.keys.get_mut(key.as_str())?;
        let (&first, held) = state.pending()?.first_key_value()?;
        let gap = Gap {
            key: key.clone(),
            expected: state.last_applied + 1,
            released: first,
            offset: held.event.offset,
            bound,
        };
        let skipped = &mut state.extra().skipped;
        if skipped.len() == MAX_SKIPPED_RANGES {
            skipped.remove(0);
        }
        skipped.push((gap.expected, first - 1));
        state.last_applied = first - 1;
        self.release_ready(&key, out);
        Some(gap)
    }

    /// Takes out every held event of the key holding the oldest one, leaving the
    /// key waiting for the same sequence: (key, the sequence it waits for, its events).
    pub fn take_oldest(&mut self) -> Option<(String, i64, Vec<Event>)> {
        let (_, (key, _)) = self.held_by_offset.first_key_value()?;
        let key = key.clone();
        let state = self.keys.get_mut(key.as_str())?;
        let held = std::mem::take(&mut state.extra().pending);
        state.tidy();
        let expected = state.last_applied + 1;
        let mut events = Vec::with_capacity(held.len());
        for (_, h) in held {
            self.held_bytes -= h.event.size;
            self.held_by_offset.remove(&h.event.offset);
            events.push(h.event);
        }
        Some((key, expected, events))
    }

    /// Lowest offset among held events: the committed offset must not pass it.
    pub fn min_held_offset(&self) -> Option<i64> {
        self.held_by_offset.keys().next().copied()
    }

    /// Number of events held.
    pub fn held_events(&self) -> usize {
        self.held_by_offset.len()
    }

    /// Payload bytes held.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Number of keys whose state is cached.
    pub fn cached_keys(&self) -> usize {
        self.keys.len()
    }

    /// Forgets keys holding nothing once more than `max_keys` are cached. Call only
    /// when every released sequence is durable in the sink: forgotten keys are
    /// learned again from it.
    pub fn evict_idle(&mut self, max_keys: usize) {
        if self.keys.len() > max_keys {
            self.keys.retain(|_, s| s.holds());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg() -> BufferConfig {
        BufferConfig {
            first_sequence: 1,
            max_events: 100,
            max_bytes: 1 << 20,
            gap_timeout: Duration::from_secs(10),
        }
    }

    fn ev(key: &str, seq: i64, offset: i64) -> Event {
        Event::for_test(key, seq, offset)
    }

    #[test]
    fn take_oldest_empties_the_key_and_keeps_its_gap() {
        let mut b = SequenceBuffer::new(cfg());
        let now = Instant::now();
        let mut out = vec![];
        b.learn("a".into(), Some(1));
        b.learn("b".into(), Some(0));
        b.offer(ev("a", 4, 10), now, &mut out);
        b.offer(ev("b", 3, 11), now, &mut out);
        b.offer(ev("a", 5, 12), now, &mut out);
        let (key, expected, events) = b.take_oldest().unwrap();
        assert_eq!((key.as_str(), expected), ("a", 2));
        assert_eq!(seqs(&events), vec![4, 5]);
        assert_eq!(b.held_events(), 1);
        assert_eq!(b.min_held_offset(), Some(11));
        // `a` still waits for 2; once it comes, what follows flows.
        assert_eq!(b.offer(ev("a", 2, 13), now, &mut out), Offer::Released(1));
        assert_eq!(b.offer(ev("a", 3, 14), now, &mut out), Offer::Released(1));
        assert_eq!(b.last_applied("a"), Some(3));
    }

    fn seqs(out: &[Event]) -> Vec<i64> {
        out.iter().map(|e| e.sequence).collect()
    }

    #[test]
    fn in_order_events_are_released_at_once() {
        let mut b = SequenceBuffer::new(cfg());
        b.learn("a".into(), None);
        let now = Instant::now();
        let mut out = vec![];
        assert_eq!(b.offer(ev("a", 1, 0), now, &mut out), Offer::Released(1));
        assert_eq!(b.offer(ev("a", 2, 1), now, &mut out), Offer::Released(1));
        assert_eq!(seqs(&out), vec![1, 2]);
        assert_eq!(b.min_held_offset(), None);
    }

    #[test]
    fn early_events_wait_for_the_gap_and_bound_the_offset() {
        let mut b = SequenceBuffer::new(cfg());
        b.learn("a".into(), Some(4));
        let now = Instant::now();
        let mut out = vec![];
        assert_eq!(
            b.offer(ev("a", 7, 10), now, &mut out),
            Offer::Waits {
                key: "a".into(),
                expected: 5,
                received: 7
            }
        );
        assert_eq!(b.offer(ev("a", 6, 11), now, &mut out), Offer::Held);
        assert_eq!(b.min_held_offset(), Some(10));
        assert_eq!(b.oldest_waiting(), Some(("a", 5, 6, 10)));
        assert_eq!(b.offer(ev("a", 5, 12), now, &mut out), Offer::Released(3));
        assert_eq!(seqs(&out), vec![5, 6, 7]);
        assert_eq!(b.min_held_offset(), None);
        assert_eq!(b.held_bytes(), 0);
    }

    #[test]
    fn a_first_event_below_first_sequence_is_told_apart_from_a_stale_one() {
        let mut b = SequenceBuffer::new(cfg());
        b.learn("new".into(), None);
        b.learn("old".into(), Some(3));
        let now = Instant::now();
        let mut out = vec![];
        assert_eq!(
            b.offer(ev("new", 0, 0), now, &mut out),
            Offer::BelowFirst {
                key: "new".into(),
                first: 1,
                received: 0
            }
        );
        assert_eq!(b.offer(ev("old", 0, 1), now, &mut out), Offer::Stale);
        assert!(out.is_empty());
    }

    #[test]
    fn duplicates_and_applied_versions_are_dropped() {
        let mut b = SequenceBuffer::new(cfg());
        b.learn("a".into(), Some(3));
        let now = Instant::now();
        let mut out = vec![];
        assert_eq!(b.offer(ev("a", 3, 0), now, &mut out), Offer::Duplicate);
        assert_eq!(
            b.offer(ev("a", 5, 1), now, &mut out),
            Offer::Waits {
                key: "a".into(),
                expected: 4,
                received: 5
            }
        );
        assert_eq!(b.offer(ev("a", 5, 2), now, &mut out), Offer::Duplicate);
        assert_eq!(b.held_events(), 1);
        assert!(out.is_empty());
    }

    #[test]
    fn an_unknown_keys_event_comes_back_untouched() {
        let mut b = SequenceBuffer::new(cfg());
        let mut out = vec![];
        assert_eq!(
            b.offer(ev("a", 1, 0), Instant::now(), &mut out),
            Offer::Unknown(ev("a", 1, 0))
        );
        assert!(out.is_empty());
        assert_eq!(b.held_events(), 0);
        b.learn("a".into(), None);
        assert_eq!(
            b.offer(ev("a", 1, 0), Instant::now(), &mut out),
            Offer::Released(1)
        );
    }

    #[test]
    fn bounds_are_reported_and_skip_records_the_gap() {
        let mut b = SequenceBuffer::new(BufferConfig {
            max_events: 2,
            ..cfg()
        });
        b.learn("a".into(), None);
        b.learn("b".into(), None);
        let t0 = Instant::now();
        let mut out = vec![];
        b.offer(ev("a", 3, 0), t0, &mut out);
        b.offer(ev("b", 2, 1), t0, &mut out);
        assert!(b.full());
        assert_eq!(b.exceeded(t0), None);
        b.offer(ev("a", 4, 2), t0, &mut out);
        assert_eq!(b.exceeded(t0), Some(Bound::Events));
        let gap = b.skip_oldest(Bound::Events, &mut out).unwrap();
        assert_eq!(
            gap,
            Gap {
                key: "a".into(),
                expected: 1,
                released: 3,
                offset: 0,
                bound: Bound::Events
            }
        );
        assert_eq!(seqs(&out), vec![3, 4]);
        assert_eq!(b.min_held_offset(), Some(1));
        // The skipped sequences arriving late are stale, not applied.
        assert_eq!(b.offer(ev("a", 2, 3), t0, &mut out), Offer::Stale);
        assert_eq!(
            b.exceeded(t0 + Duration::from_secs(10)),
            Some(Bound::GapTimeout)
        );
    }

    #[test]
    fn idle_keys_are_evicted_but_holding_keys_stay() {
        let mut b = SequenceBuffer::new(cfg());
        b.learn("a".into(), None);
        b.learn("b".into(), None);
        let mut out = vec![];
        b.offer(ev("b", 2, 0), Instant::now(), &mut out);
        b.evict_idle(1);
        assert!(!b.knows("a"));
        assert!(b.knows("b"));
    }

    proptest! {
        /// Whatever the arrival order and duplication, each key's released
        /// sequences are exactly 1..=n in order, and the held offsets bound
        /// the committed offset.
        #[test]
        fn any_arrival_order_releases_each_key_in_order(
            n_keys in 1usize..5,
            per_key in 1i64..30,
            swaps in proptest::collection::vec((0usize..200, 0usize..20), 0..100),
            dups in proptest::collection::vec(0usize..200, 0..20),
        ) {
            let mut stream: Vec<(String, i64)> = (1..=per_key)
                .flat_map(|s| (0..n_keys).map(move |k| (format!("k{k}"), s)))
                .collect();
            let len = stream.len();
            for (i, d) in swaps {
                let (i, j) = (i % len, (i + d) % len);
                stream.swap(i, j);
            }
            for d in dups {
                let e = stream[d % len].clone();
                stream.push(e);
            }
            let mut b = SequenceBuffer::new(BufferConfig { max_events: 10_000, ..cfg() });
            let mut out = vec![];
            let now = Instant::now();
            for (offset, (k, s)) in stream.into_iter().enumerate() {
                if !b.knows(&k) { b.learn(k.clone(), None); }
                b.offer(ev(&k, s, offset as i64), now, &mut out);
                if let Some(min) = b.min_held_offset() {
                    prop_assert!(min <= offset as i64);
                }
            }
            prop_assert_eq!(b.held_events(), 0);
            for k in 0..n_keys {
                let key = format!("k{k}");
                let got: Vec<i64> = out.iter().filter(|e| e.key == key).map(|e| e.sequence).collect();
                prop_assert_eq!(got, (1..=per_key).collect::<Vec<_>>());
            }
        }
    }
}
