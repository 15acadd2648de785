//! The worker of one partition: the I/O shell around its machine
//! ([`super::partition`]). consume -> decode -> order -> sink -> commit:
//! it reads the partition's own queue in offset order and hands the records
//! to the machine, and carries out what the machine asks (decode, read key
//! states, write a batch with its next offset, send a dead letter, pause,
//! resume, store the advisory offset). One I/O effect is in flight at a
//! time; a drain request or a breaker change is heard while it is.
//! Nothing is acknowledged to Kafka before the sink has committed it.
//!
//! An operator may move the partition's stored offset (`ordo offsets set`
//! or `skip`): the worker looks for that every [`MOVE_CHECK`] and at once
//! when a write is fenced, and then drops everything it holds, moves the
//! partition to the new offset and goes on from there under a new lease.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use rdkafka::consumer::stream_consumer::StreamPartitionQueue;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};

use super::partition::{Config, Effect, Letter, Partition};
use super::{OrdoConsumer, OrdoContext, Shared};
use crate::dlq::DeadLetterError;
use crate::record::Record;
use crate::sink::retry::retry;
use crate::sink::{Batch, Lease, SinkError, Written};
use crate::telemetry::metrics::operation;
use crate::telemetry::partition::Reporter;

/// How long a draining worker keeps retrying its last batch.
const DRAIN_WRITE_BUDGET: Duration = Duration::from_secs(25);

/// How often a worker looks whether an operator moved its partition's
/// offset (a fenced write makes it look at once).
pub const MOVE_CHECK: Duration = Duration::from_secs(3);

type Asking = Pin<Box<dyn Future<Output = super::turns::Turn> + Send>>;

type MoveCheck = Pin<
    Box<
        dyn Future<Output = Result<Option<crate::sink::postgres::offsets::TakenMove>, SinkError>>
            + Send,
    >,
>;

/// Why one attempt at a dead letter failed: the worker is not (or cannot
/// tell it is) the partition's owner, or the send failed.
enum LetterAttempt {
    Owner(SinkError),
    Send(DeadLetterError),
}

impl std::fmt::Display for LetterAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LetterAttempt::Owner(e) => e.fmt(f),
            LetterAttempt::Send(e) => e.fmt(f),
        }
    }
}

/// Messages from the rebalance callback to a worker.
pub enum Control {
    /// Finish the batch in flight, commit it, reply with the stored next offset, and stop.
    Drain(oneshot::Sender<Option<i64>>),
}

/// The outcome of the I/O effect in flight.
enum Done {
    Keys(Result<HashMap<String, i64>, SinkError>),
    Written(Batch, Result<Written, SinkError>, Duration),
    Lettered(Letter, Result<(), DeadLetterError>),
    /// The effect could not be carried out for a reason of the sink's (a
    /// lease another worker took).
    Failed(SinkError),
}

type InFlight = Pin<Box<dyn Future<Output = Done> + Send>>;

/// The worker of one partition.
pub struct Worker {
    shared: Arc<Shared>,
    consumer: Arc<OrdoConsumer>,
    lease: Arc<Lease>,
    topic: Arc<str>,
    machine: Partition,
    cfg: Arc<Config>,
    report: Reporter,
    /// Whether librdkafka fetches the partition: its flow and its turn.
    fetch: super::turns::Fetch,
    /// Its share of what records on their way to the sink may occupy:
    /// held from a pull until everything taken is written.
    hand: Option<super::turns::Turn>,
    in_hand: super::turns::InHand,
}

impl Worker {
    /// The worker of a leased partition, fetched if `turn` is given (see
    /// [`super::turns`]), else paused until it gets one.
    pub fn new(
        shared: Arc<Shared>,
        consumer: Arc<OrdoConsumer>,
        lease: Lease,
        turn: Option<super::turns::Turn>,
    ) -> Self {
        let cfg = Config {
            buffer: shared.buffer.clone(),
            policy: shared.policy,
            dead_letters: shared.dead_letters.is_some(),
            max_cached_keys: shared.max_cached_keys,
            batch_max_events: shared.batch_max_events,
            batch_max_wait: shared.batch_max_wait,
            retry: shared.retry.clone(),
            max_event_types: shared.max_event_types,
        };
        let topic: Arc<str> = lease.topic.as_str().into();
        let cfg = Arc::new(cfg);
        let in_hand = super::turns::InHand::new(shared.batch_max_events);
        Self {
            machine: Partition::new(cfg.clone(), &lease, Instant::now()),
            cfg,
            report: Reporter::new(
                topic.clone(),
                lease.partition,
                &shared.correlation_header,
                &shared.causation_header,
                shared.max_event_types,
            ),
            topic,
            lease: Arc::new(lease),
            shared,
            consumer,
            fetch: super::turns::Fetch::new(turn, Instant::now()),
            hand: None,
            in_hand,
        }
    }

    /// Runs until told to drain.
    pub async fn run(
        mut self,
        queue: StreamPartitionQueue<OrdoContext>,
        mut control: mpsc::Receiver<Control>,
    ) {
        let mut breaker = self.shared.breaker.subscribe();
        let mut breaker_open = true;
        let state = *breaker.borrow_and_update();
        self.machine.breaker(Instant::now(), state);
        let mut in_flight: Option<InFlight> = None;
        let mut published = None;
        let mut drain: Option<(Option<oneshot::Sender<Option<i64>>>, tokio::time::Instant)> = None;
        let mut move_check: Option<MoveCheck> = None;
        let mut next_move_check = tokio::time::Instant::now() + MOVE_CHECK;
        let mut asking: Option<Asking> = None;
        let mut asking_hand: Option<Asking> = None;
        // The first record of a pull, taken before the pull had its share of
        // what records in hand may occupy: the rest waits for the share.
        let mut first: Option<Arc<Record>> = None;
        let mut next_turn_tick = tokio::time::Instant::now() + super::turns::IDLE_TURN;
        loop {
            while let Some(effect) = self.machine.poll_effect() {
                match effect {
                    Effect::Decode(run) => self.decode(run).await,
                    Effect::ReadKeyStates { keys, deadline } => {
                        in_flight = Some(self.read_keys(keys, deadline));
                    }
                    Effect::Write { batch, deadline } => {
                        in_flight = Some(self.write(batch, deadline));
                    }
                    Effect::DeadLetter(letter) => in_flight = Some(self.send(letter)),
                    Effect::Pause => {
                        let act = self.fetch.flow(false);
                        self.act(act);
                    }
                    Effect::Resume => {
                        let act = self.fetch.flow(true);
                        self.act(act);
                    }
                    Effect::StoreAdvisory(next) => self.store_advisory(next),
                    Effect::Note(note) => {
                        if matches!(note, super::partition::Note::HandedOver { .. }) {
                            // A move fences the owner too: look at once.
                            next_move_check = tokio::time::Instant::now();
                        }
                        self.report.note(note)
                    }
                    Effect::Drained(next) => return self.drained(drain.and_then(|d| d.0), next),
                }
            }
            self.report
                .counts(&self.machine.counts(), self.machine.typed_counts());
            if self.machine.last_consumed() != published {
                // The next offset to process, for lag; and the buffer's gauges.
                published = self.machine.last_consumed();
                self.report.position(
                    published,
                    self.machine.held_events(),
                    self.machine.held_bytes(),
                );
            }
            // Records taken are written: their share goes back. A partition
            // that would read asks for a share first (in order, as turns).
            if self.hand.is_some() && first.is_none() && self.machine.settled() {
                self.hand = None;
            }
            if first.is_some() && self.hand.is_none() && asking_hand.is_none() {
                let (hand, bytes) = (self.shared.hand.clone(), self.in_hand.bytes());
                match (!hand.contended()).then(|| hand.try_take(bytes)).flatten() {
                    Some(share) => self.hand = Some(share),
                    None => asking_hand = Some(Box::pin(async move { hand.take(bytes).await })),
                }
            }
            if self.hand.is_some() && self.machine.reading() {
                if let Some(record) = first.take() {
                    self.pull(record, &queue);
                    continue;
                }
            }
            // A partition whose flow allows fetching asks for a turn (once;
            // the question keeps its place while the loop turns).
            match self.fetch.wants_turn() {
                Some(bytes) if asking.is_none() && drain.is_none() => {
                    // Turns are handed out in order: no taking past a waiter.
                    let now = (!self.shared.turns.contended())
                        .then(|| self.shared.turns.try_take(bytes))
                        .flatten();
                    match now {
                        Some(turn) => {
                            let act = self.fetch.granted(turn, Instant::now());
                            self.act(act);
                        }
                        None => {
                            let turns = self.shared.turns.clone();
                            asking = Some(Box::pin(async move { turns.take(bytes).await }));
                        }
                    }
                }
                None => asking = None,
                _ => {}
            }
            let timeout = tokio::time::Instant::from_std(self.machine.poll_timeout());
            let abandon_at = drain.as_ref().map(|d| d.1);
            tokio::select! {
                biased;
                c = control.recv(), if drain.is_none() => {
                    asking = None;
                    let ack = c.map(|Control::Drain(ack)| ack);
                    let deadline = Instant::now() + DRAIN_WRITE_BUDGET;
                    drain = Some((ack, tokio::time::Instant::from_std(deadline)));
                    self.machine.drain(Instant::now(), deadline);
                }
                Some(done) = futures::future::OptionFuture::from(in_flight.as_mut()),
                    if in_flight.is_some() => {
                    in_flight = None;
                    self.done(done);
                }
                _ = tokio::time::sleep_until(abandon_at.unwrap_or(timeout)),
                    if abandon_at.is_some() && in_flight.is_some() => {
                    // What was not committed is re-read by the next owner.
                    tracing::warn!(topic = %self.topic, partition = self.lease.partition,
                        "the operation in flight (a write, a key-state read or a dead letter) did not finish in the drain's time; abandoned");
                    let stored = self.machine.stored();
                    return self.drained(drain.and_then(|d| d.0), stored);
                }
                changed = breaker.changed(), if breaker_open => match changed {
                    Ok(()) => {
                        let state = *breaker.borrow_and_update();
                        self.machine.breaker(Instant::now(), state);
                    }
                    Err(_) => breaker_open = false,
                },
                _ = tokio::time::sleep_until(next_move_check),
                    if drain.is_none() && move_check.is_none() => {
                    let (sink, owner, lease) =
                        (self.shared.sink.clone(), self.shared.owner.clone(), self.lease.clone());
                    move_check = Some(Box::pin(async move { sink.take_moved(&lease, &owner).await }));
                }
                Some(share) = futures::future::OptionFuture::from(asking_hand.as_mut()),
                    if asking_hand.is_some() => {
                    asking_hand = None;
                    self.hand = Some(share);
                }
                Some(turn) = futures::future::OptionFuture::from(asking.as_mut()),
                    if asking.is_some() => {
                    asking = None;
                    let act = self.fetch.granted(turn, Instant::now());
                    self.act(act);
                    next_turn_tick = tokio::time::Instant::now() + super::turns::IDLE_TURN;
                }
                _ = tokio::time::sleep_until(next_turn_tick), if self.fetch.holds_turn() => {
                    next_turn_tick = tokio::time::Instant::now() + super::turns::IDLE_TURN;
                    let act = self.fetch.tick(self.shared.turns.contended(), Instant::now());
                    self.act(act);
                }
                Some(checked) = futures::future::OptionFuture::from(move_check.as_mut()),
                    if move_check.is_some() => {
                    move_check = None;
                    next_move_check = tokio::time::Instant::now() + MOVE_CHECK;
                    match checked {
                        Ok(Some(taken)) => {
                            if drain.is_some() {
                                continue;
                            }
                            // What was in flight was fenced by the move's epoch;
                            // a record taken before the move is read again.
                            in_flight = None;
                            published = None;
                            first = None;
                            if !self.take_up(taken).await {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => tracing::debug!(topic = %self.topic, partition = self.lease.partition,
                            error = %e, "cannot look whether the partition's offset was moved"),
                    }
                }
                _ = tokio::time::sleep_until(timeout) => {
                    let now = Instant::now();
                    self.machine.timeout(now);
                    self.report.held_age(self.machine.oldest_held_since(), now);
                }
                msg = queue.recv(), if self.machine.reading() && first.is_none() => {
                    match msg {
                        Ok(m) => {
                            let record = self.record_of(&m);
                            if self.hand.is_some() {
                                self.pull(record, &queue);
                            } else {
                                first = Some(record);
                            }
                        }
                        Err(e) => {
                            let permanent = e
                                .rdkafka_error_code()
                                .is_some_and(crate::kafka::fetch_error_is_permanent);
                            self.machine.fetch_error(Instant::now(), permanent, e.to_string());
                        }
                    }
                }
            }
        }
    }

    /// Takes what the queue holds after `first`, up to a batch, and hands
    /// it to the machine.
    fn pull(&mut self, first: Arc<Record>, queue: &StreamPartitionQueue<OrdoContext>) {
        let mut records = vec![first];
        let mut emptied = false;
        while records.len() < self.shared.batch_max_events {
            match queue.recv().now_or_never() {
                Some(Ok(m)) => records.push(self.record_of(&m)),
                Some(Err(_)) => break,
                None => {
                    emptied = true;
                    break;
                }
            }
        }
        let now = Instant::now();
        for r in &records {
            self.fetch.took(r.size(), now);
        }
        self.in_hand.pulled(records.iter().map(|r| r.size()));
        let act = self
            .fetch
            .taken(emptied, self.shared.turns.contended(), now);
        self.act(act);
        self.machine.fetched(now, records);
    }

    fn record_of(&self, m: &BorrowedMessage<'_>) -> Arc<Record> {
        Arc::new(Record {
            topic: self.topic.clone(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
            timestamp_ms: m.timestamp().to_millis(),
        })
    }

    /// Decodes a run of records, each handed to the machine (which orders
    /// it) as soon as it is decoded, until one fails.
    async fn decode(&mut self, run: Vec<Arc<Record>>) {
        let shared = self.shared.clone();
        let decoder = &shared.decoder;
        let mut records = run.into_iter();
        // One clock read per stage: each ends a record's decode or ordering
        // and starts what follows.
        let mut started = Instant::now();
        for r in records.by_ref() {
            let result = if decoder.ignores(&r) {
                Ok(None)
            } else {
                let result = decoder.decode(&r).await.map(Some);
                let ended = Instant::now();
                self.report.decoded(ended.duration_since(started));
                started = ended;
                result
            };
            let go_on = self.machine.decoded(started, r, result);
            let ended = Instant::now();
            self.report.ordered(ended.duration_since(started));
            started = ended;
            if !go_on {
                break;
            }
        }
        self.machine.decode_ended(started, records.collect());
    }

    /// Reads key states with retries, through the breaker.
    fn read_keys(&self, keys: Vec<String>, deadline: Option<Instant>) -> InFlight {
        let p = self.shared.clone();
        Box::pin(async move {
            let states = retry(
                "reading key state",
                operation::SINK_READ_KEY_STATE,
                deadline,
                &p.retry,
                &p.breaker,
                || p.sink.key_states(&keys),
            )
            .await;
            Done::Keys(states)
        })
    }

    /// Writes a batch with retries, through the breaker.
    fn write(&self, batch: Batch, deadline: Option<Instant>) -> InFlight {
        let (p, lease) = (self.shared.clone(), self.lease.clone());
        Box::pin(async move {
            let started = Instant::now();
            let written = retry(
                "writing a batch",
                operation::SINK_WRITE_BATCH,
                deadline,
                &p.retry,
                &p.breaker,
                || p.sink.write(&lease, &batch),
            )
            .await;
            Done::Written(batch, written, started.elapsed())
        })
    }

    /// Sends a letter, written again while the failure is transient; with
    /// `[mask]` on, the letter never carries a clear value. Only the
    /// partition's owner sends: the lease is checked (through the breaker,
    /// like a write) before every attempt, so a worker that waited for the
    /// dead-letter topic while another replica took the partition is fenced
    /// instead of sending a second letter for the record.
    fn send(&self, letter: Letter) -> InFlight {
        let (p, lease) = (self.shared.clone(), self.lease.clone());
        Box::pin(async move {
            let Some(dl) = &p.dead_letters else {
                let off = DeadLetterError {
                    topic: String::new(),
                    reason: "dead letters are off (dead_letter.enabled = false)".into(),
                    permanent: true,
                };
                return Done::Lettered(letter, Err(off));
            };
            let record = crate::dlq::letter_record(
                p.masker.as_deref(),
                &letter.record,
                letter.masked.as_ref(),
                &[
                    (
                        crate::record::headers::EVENT_TYPE,
                        letter.event_type.as_deref(),
                    ),
                    (crate::record::headers::ROUTE, letter.route.as_deref()),
                ],
            );
            let (shared, lease_ref, record_ref, why) = (&p, &*lease, &*record, &letter.why);
            let sent = crate::sink::retry::wait_for(
                "dead_letter_topic",
                &format!("partition {}/{}", lease.topic, lease.partition),
                &p.retry,
                |e: &LetterAttempt| matches!(e, LetterAttempt::Send(e) if !e.permanent),
                || async move {
                    let holds = retry(
                        "checking the lease before a dead letter",
                        operation::SINK_CHECK_LEASE,
                        None,
                        &shared.retry,
                        &shared.breaker,
                        || shared.sink.holds(lease_ref),
                    )
                    .await
                    .map_err(LetterAttempt::Owner)?;
                    if !holds {
                        return Err(LetterAttempt::Owner(SinkError::Fenced {
                            topic: lease_ref.topic.clone(),
                            partition: lease_ref.partition,
                            epoch: lease_ref.epoch,
                        }));
                    }
                    dl.send(
                        record_ref,
                        crate::dlq::ErrorClass::Permanent,
                        why,
                        1,
                        lease_ref.epoch,
                    )
                    .await
                    .map_err(LetterAttempt::Send)
                },
            )
            .await;
            match sent {
                Ok(()) => Done::Lettered(letter, Ok(())),
                Err(LetterAttempt::Send(e)) => Done::Lettered(letter, Err(e)),
                Err(LetterAttempt::Owner(e)) => Done::Failed(e),
            }
        })
    }

    /// Hands the outcome of the effect in flight to the machine.
    fn done(&mut self, done: Done) {
        let now = Instant::now();
        match done {
            Done::Keys(states) => self.machine.key_states(now, states),
            Done::Written(batch, written, elapsed) => {
                if written.is_ok() {
                    self.report.written(&batch, elapsed);
                }
                self.machine.written(now, batch, written);
            }
            Done::Lettered(letter, sent) => {
                if sent.is_ok() {
                    if let Some(dl) = &self.shared.dead_letters {
                        self.report
                            .dead_lettered(&letter, &dl.config().topic_for(&self.topic));
                    }
                }
                self.machine.dead_lettered(now, sent);
            }
            Done::Failed(e) => self.machine.sink_failed(now, e),
        }
    }

    /// Takes up an operator's move of the partition's offset: everything
    /// held is dropped (nothing of it was written after the move: the
    /// move's epoch fenced it), the partition is moved to the new offset
    /// and a fresh machine goes on from there. False if the partition could
    /// not be moved: it stays paused and stopped.
    async fn take_up(&mut self, taken: crate::sink::postgres::offsets::TakenMove) -> bool {
        let partition = self.lease.partition;
        self.pause();
        let (offset, position) = super::lease::start_offset(&taken.lease, self.shared.start_from);
        tracing::info!(topic = %self.topic, partition, kind = %taken.kind,
            from_offset = taken.from, to_offset = taken.to, epoch = taken.lease.epoch,
            held_events = self.machine.held_events(),
            "the partition's offset was moved by an operator: what was held is dropped, and the partition resumes from the new offset");
        let m = crate::telemetry::metrics::metrics();
        m.offset_moves
            .with_label_values(&[&*self.topic, taken.kind.as_str()])
            .inc();
        if taken.kind == "skip" {
            let skipped = taken.to - taken.from.unwrap_or(taken.to);
            m.skipped_offsets
                .with_label_values(&[&*self.topic])
                .inc_by(skipped.max(0) as u64);
        }
        if let Err(e) = super::lease::seek(&self.consumer, &self.topic, partition, offset).await {
            let why = format!(
                "cannot move the partition to the offset an operator set ({offset:?}): {e}"
            );
            crate::telemetry::health::health().stopped(&self.topic, partition, &why);
            tracing::error!(topic = %self.topic, partition, error = %why, "partition stopped");
            return false;
        }
        self.machine = Partition::new(self.cfg.clone(), &taken.lease, Instant::now());
        self.lease = Arc::new(taken.lease);
        super::lease::announce(&self.lease, position);
        let state = *self.shared.breaker.subscribe().borrow();
        self.machine.breaker(Instant::now(), state);
        self.fetch.paused_for_move();
        let act = self.fetch.apply();
        self.act(act);
        true
    }

    /// Answers the drain and says what the partition did.
    fn drained(&mut self, ack: Option<oneshot::Sender<Option<i64>>>, next: Option<i64>) {
        let counts = self.machine.counts();
        self.report.counts(&counts, self.machine.typed_counts());
        self.report
            .drained(&counts, next, self.machine.held_events());
        if let Some(ack) = ack {
            let _ = ack.send(next);
        }
    }

    /// Hands the sink's offset to librdkafka for its next (advisory) commit.
    fn store_advisory(&self, next: i64) {
        let mut tpl = TopicPartitionList::new();
        let stored = tpl
            .add_partition_offset(&self.topic, self.lease.partition, Offset::Offset(next))
            .and_then(|_| self.consumer.store_offsets(&tpl));
        if let Err(e) = stored {
            tracing::debug!(topic = %self.topic, partition = self.lease.partition, error = %e,
                "cannot store advisory offset");
        }
    }

    /// Tells librdkafka what [`super::turns::Fetch`] decided.
    fn act(&self, action: super::flow::Action) {
        match action {
            super::flow::Action::Pause => self.pause(),
            super::flow::Action::Resume => self.resume(),
            super::flow::Action::Nothing => {}
        }
    }

    fn resume(&self) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, self.lease.partition);
        if let Err(e) = self.consumer.resume(&tpl) {
            tracing::warn!(topic = %self.topic, partition = self.lease.partition, error = %e,
                "cannot resume partition");
        }
    }

    fn pause(&self) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, self.lease.partition);
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::warn!(topic = %self.topic, partition = self.lease.partition, error = %e,
                "cannot pause partition");
        }
    }
}
