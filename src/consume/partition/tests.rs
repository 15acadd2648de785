//! The partition machine's rules, driven by hand: no broker, no database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::decode::avro::AvroError;
use crate::decode::{DecodeError, DecodeReason};
use crate::order::Bound;

const WAIT: Duration = Duration::from_millis(5);

fn config(policy: BoundPolicy, max_events: usize, batch_max_events: usize) -> Config {
    Config {
        buffer: BufferConfig {
            first_sequence: 1,
            max_events,
            max_bytes: usize::MAX,
            gap_timeout: Duration::from_secs(3600),
        },
        policy,
        dead_letters: true,
        max_cached_keys: 1_000,
        max_event_types: 10,
        batch_max_events,
        batch_max_wait: WAIT,
        retry: RetryConfig {
            base_ms: 10,
            cap_ms: 10,
            max_attempts: 0,
        },
    }
}

fn lease(next: Option<i64>, dead_lettered: Vec<i64>) -> Lease {
    Lease {
        topic: "t".into(),
        partition: 0,
        epoch: 1,
        next_offset: next,
        dead_lettered,
    }
}

/// Hands a decoded run to the machine as the shell does: each result in
/// turn while the machine wants the next, then the records left.
fn decode_run(
    m: &mut Partition,
    now: Instant,
    run: Vec<Arc<Record>>,
    results: Vec<Result<Option<Event>, DecodeError>>,
) {
    let mut records = run.into_iter();
    for result in results {
        let Some(r) = records.next() else { break };
        if !m.decoded(now, r, result) {
            break;
        }
    }
    m.decode_ended(now, records.collect());
}

fn record(offset: i64) -> Arc<Record> {
    Arc::new(Record {
        topic: "t".into(),
        partition: 0,
        offset,
        key: None,
        payload: Some(b"{}".to_vec()),
        headers: vec![],
        timestamp_ms: None,
    })
}

/// A machine at `t0` whose records are `(key, version)` at offsets from 0.
struct Harness {
    m: Partition,
    now: Instant,
}

impl Harness {
    fn new(cfg: Config) -> Self {
        Self::with_lease(cfg, lease(None, vec![]))
    }

    fn with_lease(cfg: Config, lease: Lease) -> Self {
        let now = Instant::now();
        let mut m = Partition::new(Arc::new(cfg), &lease, now);
        m.breaker(now, BreakerState::Closed);
        Self { m, now }
    }

    fn effects(&mut self) -> Vec<Effect> {
        std::iter::from_fn(|| self.m.poll_effect()).collect()
    }

    /// Fetches `events` as (key, version, offset), decodes them all (`bad`:
    /// offsets that fail to decode with `reason`), and returns what followed.
    fn feed(&mut self, events: &[(&str, i64, i64)]) -> Vec<Effect> {
        let records: Vec<_> = events.iter().map(|&(_, _, o)| record(o)).collect();
        self.m.fetched(self.now, records);
        let effects = self.effects();
        let [Effect::Decode(run)] = &effects[..] else {
            panic!("expected one decode, got {effects:?}");
        };
        let results = events
            .iter()
            .map(|&(k, v, o)| Ok(Some(Event::for_test(k, v, o))))
            .collect();
        decode_run(&mut self.m, self.now, run.clone(), results);
        self.effects()
    }

    /// Records fetched now are not even decoded: the machine reads no more.
    fn feed_nothing_more(&mut self) {
        assert!(!self.m.reading());
        self.m.fetched(self.now, vec![record(9)]);
        assert!(self.effects().is_empty());
    }

    /// Lets the batch wait pass.
    fn later(&mut self) -> Vec<Effect> {
        self.now += WAIT;
        self.m.timeout(self.now);
        self.effects()
    }

    /// Answers a key-state read with `states`.
    fn keys(&mut self, states: &[(&str, i64)]) -> Vec<Effect> {
        let states = states.iter().map(|&(k, v)| (k.to_string(), v)).collect();
        self.m.key_states(self.now, Ok(states));
        self.effects()
    }

    fn write_ok(&mut self, batch: Batch) -> Vec<Effect> {
        let applied = batch.events.len() as u64;
        self.m.written(
            self.now,
            batch,
            Ok(Written {
                applied,
                absorbed: 0,
            }),
        );
        self.effects()
    }
}

fn refused() -> SinkError {
    SinkError::Refused("violates check constraint".into())
}

fn writes(effects: Vec<Effect>) -> Vec<Batch> {
    effects
        .into_iter()
        .filter_map(|e| match e {
            Effect::Write { batch, .. } => Some(batch),
            _ => None,
        })
        .collect()
}

fn one_write(effects: Vec<Effect>) -> Batch {
    let mut w = writes(effects);
    assert_eq!(w.len(), 1, "one write expected");
    w.remove(0)
}

fn offsets(b: &Batch) -> Vec<i64> {
    b.events.iter().map(|e| e.offset).collect()
}

fn has(effects: &[Effect], f: impl Fn(&Effect) -> bool) -> bool {
    effects.iter().any(f)
}

#[test]
fn new_keys_are_read_in_one_lookup_and_the_batch_stores_the_next_offset() {
    let mut h = Harness::new(config(BoundPolicy::Wait, 100, 100));
    let after = h.feed(&[("a", 1, 0), ("b", 1, 1), ("a", 2, 2)]);
    assert!(
        writes(after).is_empty(),
        "nothing is written before the wait"
    );
    let effects = h.later();
    let [Effect::ReadKeyStates { keys, .. }] = &effects[..] else {
        panic!("{effects:?}");
    };
    assert_eq!(keys, &["a", "b"]);
    let batch = one_write(h.keys(&[]));
    assert_eq!(offsets(&batch), vec![0, 1, 2]);
    assert_eq!(batch.next_offset, 3);
    let effects = h.write_ok(batch);
    assert!(has(&effects, |e| matches!(e, Effect::StoreAdvisory(3))));
    assert_eq!(h.m.stored(), Some(3));
    assert_eq!(h.m.counts().applied, 3);
}

#[test]
fn the_stored_offset_never_passes_a_held_event() {
    let mut h = Harness::new(config(BoundPolicy::Wait, 100, 100));
    h.feed(&[("a", 1, 0), ("a", 3, 1), ("b", 1, 2)]);
    h.later();
    let batch = one_write(h.keys(&[]));
    assert_eq!(offsets(&batch), vec![0, 2]);
    assert_eq!(batch.next_offset, 1, "a@3 at offset 1 is still held");
    h.write_ok(batch);
    // The gap fills: everything is written and the offset moves past all.
    h.feed(&[("a", 2, 3)]);
    let batch = one_write(h.later());
    assert_eq!(offsets(&batch), vec![3, 1]);
    assert_eq!(batch.next_offset, 4);
}

#[test]
fn a_release_larger_than_a_transaction_is_cut_and_only_the_last_part_moves_the_offset() {
    let mut h = Harness::new(config(BoundPolicy::Wait, 100, 2));
    // Known key: a@2..4 are held until a@1 releases all four at once.
    h.m.buffer.learn("a".into(), None);
    let after = h.feed(&[("a", 2, 0), ("a", 3, 1), ("a", 4, 2), ("a", 1, 3)]);
    let first = one_write(after);
    assert_eq!(offsets(&first), vec![3, 0]);
    assert_eq!(
        first.next_offset, 1,
        "held at the lowest offset not yet written"
    );
    let second = one_write(h.write_ok(first));
    assert_eq!(offsets(&second), vec![1, 2]);
    assert_eq!(second.next_offset, 4);
    let effects = h.write_ok(second);
    assert!(has(&effects, |e| matches!(e, Effect::StoreAdvisory(4))));
    assert_eq!(h.m.counts().batches, 2);
}

#[test]
fn a_refused_batch_goes_event_by_event_and_the_refused_event_is_dead_lettered() {
    let mut h = Harness::new(config(BoundPolicy::Wait, 100, 100));
    h.m.buffer.learn("a".into(), None);
    h.m.buffer.learn("b".into(), None);
    h.feed(&[("a", 1, 0), ("b", 1, 1), ("a", 2, 2)]);
    let mut batch = one_write(h.later());
    for e in &mut batch.events {
        e.source = Some(record(e.offset));
    }
    h.m.written(h.now, batch, Err(refused()));
    let mut effects = h.effects();
    let mut sent = vec![];
    let mut letters = vec![];
    // Each event alone, the stored offset held where it was (nothing stored yet: 0).
    while let Some(single) = writes(std::mem::take(&mut effects)).pop() {
        if single.events.is_empty() || single.events.len() > 1 {
            // The progress write that ends it.
            assert_eq!(single.next_offset, 3);
            assert_eq!(single.passed, vec![("b".to_string(), 1)]);
            assert!(
                single.dead_lettered.is_empty(),
                "the offset passes it: no mark"
            );
            h.write_ok(single);
            break;
        }
        assert_eq!(single.next_offset, 0);
        let offset = single.events[0].offset;
        sent.push(offset);
        if offset == 1 {
            h.m.written(h.now, single, Err(refused()));
            let out = h.effects();
            let [Effect::DeadLetter(letter)] = &out[..] else {
                panic!("{out:?}");
            };
            assert!(letter.why.contains("refused"), "{}", letter.why);
            letters.push(letter.record.offset);
            h.m.dead_lettered(h.now, Ok(()));
            effects = h.effects();
        } else {
            effects = h.write_ok(single);
        }
    }
    assert_eq!(sent, vec![0, 1, 2]);
    assert_eq!(letters, vec![1]);
    assert_eq!(h.m.stored(), Some(3));
    assert_eq!(h.m.counts().dead_lettered, 1);
}

#[test]
fn skip_records_a_gap_and_releases_what_waited() {
    let mut h = Harness::new(config(BoundPolicy::Skip, 2, 100));
    h.m.buffer.learn("a".into(), Some(1));
    h.feed(&[("a", 3, 0), ("a", 4, 1), ("a", 5, 2)]);
    let batch = one_write(h.later());
    assert_eq!(offsets(&batch), vec![0, 1, 2]);
    assert_eq!(batch.gaps.len(), 1);
    assert_eq!(
        (batch.gaps[0].expected, batch.gaps[0].bound),
        (2, Bound::Events)
    );
    assert_eq!(batch.next_offset, 3);
    assert_eq!(h.m.counts().gaps, 1);
}

#[test]
fn dead_letter_sends_the_waiting_key_and_passes_it_once_acknowledged() {
    let mut h = Harness::new(config(BoundPolicy::DeadLetter, 2, 100));
    h.m.buffer.learn("a".into(), Some(1));
    let records: Vec<_> = (0..3).map(record).collect();
    h.m.fetched(h.now, records.clone());
    let Some(Effect::Decode(run)) = h.m.poll_effect() else {
        panic!()
    };
    let results = (0..3)
        .map(|i| {
            let mut e = Event::for_test("a", 3 + i, i);
            e.source = Some(records[i as usize].clone());
            Ok(Some(e))
        })
        .collect();
    decode_run(&mut h.m, h.now, run, results);
    let mut lettered = vec![];
    loop {
        let effects = h.effects();
        let Some(Effect::DeadLetter(l)) = effects
            .into_iter()
            .find(|e| matches!(e, Effect::DeadLetter(_)))
        else {
            break;
        };
        assert!(l.why.contains("max_buffered_events"), "{}", l.why);
        lettered.push(l.record.offset);
        // Nothing is written while a letter is in flight.
        assert!(!h.m.reading());
        h.m.dead_lettered(h.now, Ok(()));
    }
    assert_eq!(lettered, vec![0, 1, 2]);
    let batch = one_write(h.later());
    assert!(batch.events.is_empty());
    assert_eq!(batch.next_offset, 3);
}

#[test]
fn wait_pauses_the_partition_and_names_the_bound_reached() {
    let mut h = Harness::new(config(BoundPolicy::Wait, 2, 100));
    h.m.buffer.learn("a".into(), Some(1));
    let effects = h.feed(&[("a", 3, 0), ("a", 4, 1)]);
    assert!(has(&effects, |e| matches!(e, Effect::Pause)));
    assert!(has(&effects, |e| matches!(
        e,
        Effect::Note(Note::BufferFull {
            bound: Bound::Events,
            held_events: 2,
            ..
        })
    )));
    assert_eq!(h.m.state(), State::Waiting);
    assert!(!h.m.reading());
    // What it holds is not passed.
    let batch = one_write(h.later());
    assert_eq!(batch.next_offset, 0);
}

#[test]
fn a_drain_during_a_write_waits_for_it_then_answers_with_the_stored_offset() {
    let mut h = Harness::new(config(BoundPolicy::Wait, 100, 100));
    h.m.buffer.learn("a".into(), None);
    h.feed(&[("a", 1, 0), ("a", 2, 1)]);
    let batch = one_write(h.later());
    let deadline = h.now + Duration::from_secs(25);
    h.m.drain(h.now, deadline);
    assert!(
        h.effects().is_empty(),
        "nothing more while the write is in flight"
    );
    let effects = h.write_ok(batch);
    assert!(
        matches!(effects.last(), Some(Effect::Drained(Some(2)))),
        "{effects:?}"
    );
}

#[test]
fn a_drain_writes_what_is_in_hand_within_its_deadline() {
    let mut h = Harness::new(config(BoundPolicy::Wait, 100, 100));
    h.m.buffer.learn("a".into(), None);
    h.feed(&[("a", 1, 0)]);
    let deadline = h.now + Duration::from_secs(25);
    h.m.drain(h.now, deadline);
    let effects = h.effects();
    let [Effect::Write {
        deadline: Some(d), ..
    }] = &effects[..]
    else {
        panic!("{effects:?}");
    };
    assert_eq!(*d, deadline);
}

#[test]
fn the_breaker_opening_during_a_write_pauses_at_once_and_resumes_when_it_closes() {
    let mut h = Harness::new(config(BoundPolicy::Wait, 100, 100));
    h.m.buffer.learn("a".into(), None);
    h.feed(&[("a", 1, 0)]);
    let batch = one_write(h.later());
    h.m.breaker(h.now, BreakerState::Open);
    let effects = h.effects();
    assert!(matches!(effects[..], [Effect::Pause]), "{effects:?}");
    h.write_ok(batch);
    assert!(!h.m.reading(), "still held by the breaker");
    h.m.breaker(h.now, BreakerState::Closed);
    assert!(matches!(h.effects()[..], [Effect::Resume]));
    assert!(h.m.reading());
}

fn undecodable(offset: i64, transient: bool) -> DecodeError {
    let reason = if transient {
        DecodeReason::Avro(AvroError::RegistryUnavailable {
            id: 7,
            detail: "connection refused".into(),
        })
    } else {
        DecodeReason::NoPayload
    };
    DecodeError {
        location: record(offset).location(),
        reason,
    }
}

#[test]
fn a_dead_letter_that_fails_stops_the_partition_in_front_of_its_record() {
    let mut h = Harness::new(config(BoundPolicy::Wait, 100, 100));
    h.m.buffer.learn("a".into(), None);
    h.m.fetched(h.now, vec![record(0), record(1), record(2)]);
    let Some(Effect::Decode(run)) = h.m.poll_effect() else {
        panic!()
    };
    let results = vec![
        Ok(Some(Event::for_test("a", 1, 0))),
        Err(undecodable(1, false)),
    ];
    decode_run(&mut h.m, h.now, run, results);
    let effects = h.effects();
    assert!(
        matches!(effects[..], [Effect::DeadLetter(_)]),
        "{effects:?}"
    );
    h.m.dead_lettered(
        h.now,
        Err(DeadLetterError {
            topic: "t.dlq".into(),
            reason: "topic authorization failed".into(),
            permanent: true,
        }),
    );
    // The progress before the record is saved, then the partition stops.
    let batch = one_write(h.effects());
    assert_eq!((offsets(&batch), batch.next_offset), (vec![0], 1));
    let effects = h.write_ok(batch);
    assert!(has(&effects, |e| matches!(e, Effect::Pause)));
    assert!(has(
        &effects,
        |e| matches!(e, Effect::Note(Note::Stopped { reason, .. })
        if reason.contains("authorization") && reason.contains("does not pass it"))
    ));
    assert_eq!(h.m.state(), State::Stopped);
    assert_eq!(h.m.stored(), Some(1));
    h.m.drain(h.now, h.now);
    assert!(matches!(h.effects()[..], [Effect::Drained(Some(1))]));
}

#[test]
fn a_dead_letter_that_succeeds_passes_its_record_and_is_not_sent_again_after_a_restart() {
    let mut h = Harness::new(config(BoundPolicy::Wait, 100, 100));
    h.m.fetched(h.now, vec![record(0)]);
    let Some(Effect::Decode(run)) = h.m.poll_effect() else {
        panic!()
    };
    decode_run(&mut h.m, h.now, run, vec![Err(undecodable(0, false))]);
    assert!(matches!(h.effects()[..], [Effect::DeadLetter(_)]));
    h.m.dead_lettered(h.now, Ok(()));
    let batch = one_write(h.later());
    assert_eq!(
        (batch.next_offset, batch.dead_lettered.clone()),
        (1, vec![])
    );
    // A restart whose lease holds the mark: the record is not sent again.
    let mut h = Harness::with_lease(config(BoundPolicy::Wait, 100, 100), lease(Some(0), vec![0]));
    h.m.fetched(h.now, vec![record(0)]);
    let Some(Effect::Decode(run)) = h.m.poll_effect() else {
        panic!()
    };
    decode_run(&mut h.m, h.now, run, vec![Err(undecodable(0, false))]);
    let effects = h.later();
    assert!(!has(&effects, |e| matches!(e, Effect::DeadLetter(_))));
    assert_eq!(one_write(effects).next_offset, 1);
}

#[test]
fn a_record_that_cannot_be_decoded_yet_pauses_and_is_tried_again() {
    let mut h = Harness::new(config(BoundPolicy::Wait, 100, 100));
    h.m.buffer.learn("a".into(), None);
    h.m.fetched(h.now, vec![record(0), record(1)]);
    let Some(Effect::Decode(run)) = h.m.poll_effect() else {
        panic!()
    };
    decode_run(
        &mut h.m,
        h.now,
        run,
        vec![
            Ok(Some(Event::for_test("a", 1, 0))),
            Err(undecodable(1, true)),
        ],
    );
    // What came before is written first.
    let batch = one_write(h.effects());
    assert_eq!(batch.next_offset, 1);
    let effects = h.write_ok(batch);
    assert!(has(&effects, |e| matches!(e, Effect::Pause)));
    assert_eq!(h.m.state(), State::Retrying);
    // After the backoff, the record is decoded again; then the partition resumes.
    h.now += Duration::from_millis(20);
    h.m.timeout(h.now);
    let effects = h.effects();
    let [Effect::Decode(run)] = &effects[..] else {
        panic!("{effects:?}");
    };
    assert_eq!(run.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![1]);
    decode_run(
        &mut h.m,
        h.now,
        run.clone(),
        vec![Ok(Some(Event::for_test("a", 2, 1)))],
    );
    assert!(has(&h.effects(), |e| matches!(e, Effect::Resume)));
    assert!(h.m.reading());
}

#[test]
fn records_below_the_stored_offset_are_ignored() {
    let mut h = Harness::with_lease(config(BoundPolicy::Wait, 100, 100), lease(Some(5), vec![]));
    h.m.fetched(h.now, vec![record(3), record(4)]);
    let effects = h.effects();
    assert!(effects
        .iter()
        .all(|e| matches!(e, Effect::Note(Note::BelowStored { .. }))));
    assert!(h.m.reading());
}

#[test]
fn a_replayed_event_below_its_key_state_is_written_out_of_order() {
    let mut h = Harness::new(config(BoundPolicy::Wait, 100, 100));
    h.m.buffer.learn("a".into(), Some(5));
    h.m.fetched(h.now, vec![record(0)]);
    let Some(Effect::Decode(run)) = h.m.poll_effect() else {
        panic!()
    };
    let mut e = Event::for_test("a", 3, 0);
    e.replayed = true;
    decode_run(&mut h.m, h.now, run, vec![Ok(Some(e))]);
    let batch = one_write(h.later());
    assert_eq!(offsets(&batch), vec![0]);
    assert_eq!(h.m.counts().replayed_late, 1);
}

#[test]
fn a_key_state_read_that_fails_stops_the_partition_without_writing() {
    let mut h = Harness::new(config(BoundPolicy::Wait, 100, 100));
    h.feed(&[("a", 1, 0)]);
    assert!(matches!(h.later()[..], [Effect::ReadKeyStates { .. }]));
    h.m.key_states(h.now, Err(SinkError::Fatal("permission denied".into())));
    let effects = h.effects();
    assert!(writes(effects).is_empty());
    assert_eq!(h.m.state(), State::Stopped);
}

#[test]
fn a_fenced_write_is_a_handover_not_a_stop() {
    let mut h = Harness::new(config(BoundPolicy::Wait, 100, 100));
    h.m.buffer.learn("a".into(), None);
    h.feed(&[("a", 1, 0)]);
    let batch = one_write(h.later());
    let fenced = SinkError::Fenced {
        topic: "t".into(),
        partition: 0,
        epoch: 1,
    };
    h.m.written(h.now, batch, Err(fenced));
    let effects = h.effects();
    assert!(has(&effects, |e| matches!(e, Effect::Pause)));
    assert!(has(&effects, |e| matches!(
        e,
        Effect::Note(Note::HandedOver { epoch: 1, .. })
    )));
    assert!(!has(&effects, |e| matches!(
        e,
        Effect::Note(Note::Stopped { .. })
    )));
    // Nothing more is written; the drain answers with what this owner stored.
    h.feed_nothing_more();
    h.m.drain(h.now, h.now);
    assert!(matches!(h.effects()[..], [Effect::Drained(None)]));
}

#[test]
fn a_former_owner_sends_no_dead_letter_it_hands_over() {
    let mut h = Harness::new(config(BoundPolicy::Wait, 100, 100));
    h.m.fetched(h.now, vec![record(0), record(1)]);
    let Some(Effect::Decode(run)) = h.m.poll_effect() else {
        panic!()
    };
    decode_run(&mut h.m, h.now, run, vec![Err(undecodable(0, false))]);
    assert!(matches!(h.effects()[..], [Effect::DeadLetter(_)]));
    // The shell found the lease taken before sending.
    let fenced = SinkError::Fenced {
        topic: "t".into(),
        partition: 0,
        epoch: 1,
    };
    h.m.sink_failed(h.now, fenced);
    let effects = h.effects();
    assert!(has(&effects, |e| matches!(
        e,
        Effect::Note(Note::HandedOver { .. })
    )));
    assert!(!has(&effects, |e| matches!(
        e,
        Effect::DeadLetter(_) | Effect::Write { .. } | Effect::Decode(_)
    )));
    assert_eq!(h.m.counts().dead_lettered, 0);
}
