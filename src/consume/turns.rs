//! Fetch turns: how many partitions librdkafka may fetch at once, so that
//! what their fetches materialise stays within the memory budget; and the
//! same for the records taken from the queues on their way to the sink.
//!
//! librdkafka turns every record of a fetched record batch into a message
//! of its own (a few hundred bytes besides the payload), and a fetch returns
//! at least one whole batch per partition: with producers that batch 10,000
//! records, each fetching partition holds megabytes whatever the prefetch
//! limits say. So a partition is fetched only while it holds a *turn*: a
//! reservation of its estimated cost (what its bursts of records occupied
//! lately, see [`Estimate`]) from the budget's prefetch share. When other
//! partitions wait for a turn, a partition gives its turn back once nothing
//! came for [`IDLE_TURN`] or after [`LONGEST_TURN`] (it is paused; nothing
//! is lost: its next fetch starts after the last record it took). With
//! small producer batches every partition's turn fits at once and nothing
//! is ever paused for a turn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::flow::Action;

/// What a record costs in librdkafka's queue besides its key, payload and
/// headers: the message and its op (measured: about 0.5 KiB).
pub const RECORD_OVERHEAD: u64 = 512;
/// The first estimate of a partition's burst, before one was seen:
/// librdkafka-based producers batch up to 10,000 records.
const FIRST_BURST_RECORDS: u64 = 10_000;
const FIRST_BURST_PAYLOAD: u64 = 100;

/// The prefetch share, handed out as turns. Cheap to clone.
#[derive(Clone)]
pub struct Turns {
    /// Permits are KiB of the share.
    share: Arc<Semaphore>,
    capacity_kb: u32,
    waiting: Arc<AtomicUsize>,
    /// The share's name in `ordo_memory_waiting_partitions`.
    name: &'static str,
}

/// A partition's turn: while held, the partition may be fetched.
pub struct Turn {
    _permit: OwnedSemaphorePermit,
}

impl Turns {
    /// Turns out of a share of `bytes`, counted as `name` in
    /// `ordo_memory_waiting_partitions` while partitions wait.
    pub fn new(bytes: u64, name: &'static str) -> Turns {
        let capacity_kb = (bytes / 1024).clamp(1, u64::from(u32::MAX >> 4)) as u32;
        Turns {
            share: Arc::new(Semaphore::new(capacity_kb as usize)),
            capacity_kb,
            waiting: Arc::new(AtomicUsize::new(0)),
            name,
        }
    }

    /// A turn costing `bytes` (at most the whole share, so one partition can
    /// always be fetched), if the share has room now.
    pub fn try_take(&self, bytes: u64) -> Option<Turn> {
        self.share
            .clone()
            .try_acquire_many_owned(self.kb(bytes))
            .ok()
            .map(|permit| Turn { _permit: permit })
    }

    /// Waits for a turn costing `bytes`; turns are handed out in the order
    /// they were asked for.
    pub async fn take(&self, bytes: u64) -> Turn {
        if !self.contended() {
            if let Some(turn) = self.try_take(bytes) {
                return turn;
            }
        }
        let _waiting = Waiting::new(&self.waiting, self.name);
        let permit = self.share.clone().acquire_many_owned(self.kb(bytes)).await;
        match permit {
            Ok(permit) => Turn { _permit: permit },
            // The semaphore is never closed.
            Err(_) => std::future::pending().await,
        }
    }

    /// Whether a partition waits for a turn.
    pub fn contended(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) > 0
    }

    fn kb(&self, bytes: u64) -> u32 {
        (bytes.div_ceil(1024)).clamp(1, u64::from(self.capacity_kb)) as u32
    }
}

/// Counts a waiter for as long as it waits (also when its future is
/// dropped), in the share and in its metric.
struct Waiting<'a>(&'a AtomicUsize, &'static str);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize, name: &'static str) -> Waiting<'a> {
        let now = count.fetch_add(1, Ordering::SeqCst) + 1;
        Self::publish(name, now);
        Waiting(count, name)
    }

    fn publish(name: &str, count: usize) {
        crate::telemetry::metrics::metrics()
            .memory_waiting
            .with_label_values(&[name])
            .set(count as i64);
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let now = self.0.fetch_sub(1, Ordering::SeqCst) - 1;
        Self::publish(self.1, now);
    }
}

/// What a partition's fetches occupy in librdkafka's queue: the largest of
/// its last [`WINDOW`] bursts (the records taken from the queue between two
/// moments it stayed empty for [`BURST_GAP`]). Bursts vary (a fetch resumed
/// in the middle of a producer batch brings its rest only), so one small
/// burst does not make the estimate small.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    bursts: [u64; WINDOW],
    next: usize,
    burst: u64,
    empty_since: Option<Instant>,
}

/// How many bursts the estimate remembers.
pub const WINDOW: usize = 8;
/// How long a queue stays empty before the burst counts as over.
pub const BURST_GAP: Duration = Duration::from_millis(5);

impl Default for Estimate {
    fn default() -> Self {
        Estimate {
            bursts: [FIRST_BURST_RECORDS * (FIRST_BURST_PAYLOAD + RECORD_OVERHEAD); WINDOW],
            next: 0,
            burst: 0,
            empty_since: None,
        }
    }
}

impl Estimate {
    /// What a turn for this partition costs.
    pub fn bytes(&self) -> u64 {
        self.bursts.iter().copied().max().unwrap_or(0)
    }

    /// A record of `size` bytes (key, payload, headers) was taken.
    pub fn took(&mut self, size: usize, now: Instant) {
        self.tick(now);
        self.empty_since = None;
        self.burst += size as u64 + RECORD_OVERHEAD;
    }

    /// The queue was found empty.
    pub fn emptied(&mut self, now: Instant) {
        self.empty_since.get_or_insert(now);
    }

    /// Time passed: a queue empty for [`BURST_GAP`] ends the burst.
    pub fn tick(&mut self, now: Instant) {
        let over = self
            .empty_since
            .is_some_and(|since| now.duration_since(since) >= BURST_GAP);
        if over && self.burst > 0 {
            self.bursts[self.next] = self.burst;
            self.next = (self.next + 1) % WINDOW;
            self.burst = 0;
        }
    }
}

/// Whether librdkafka fetches one partition: the partition's flow allows
/// it (its worker runs, the breaker does not hold it) and it holds a turn.
/// Pure: each change says what librdkafka must be told.
pub struct Fetch {
    flow: bool,
    turn: Option<Turn>,
    /// librdkafka's state: resumed (fetching) or paused.
    fetching: bool,
    turn_since: Option<Instant>,
    /// When a record was last taken during this turn.
    last_taken: Option<Instant>,
    estimate: Estimate,
}

/// How long a partition keeps its turn while others wait and records keep
/// coming (then what is queued is dropped and fetched again later).
const LONGEST_TURN: Duration = Duration::from_secs(3);
/// How long a partition keeps its turn while others wait and nothing comes
/// (it reached the end of its partition, or its next fetch is slow).
pub const IDLE_TURN: Duration = Duration::from_millis(100);

impl Fetch {
    /// A partition just assigned: fetched if it got a turn, else paused.
    pub fn new(turn: Option<Turn>, now: Instant) -> Fetch {
        Fetch {
            flow: true,
            fetching: turn.is_some(),
            turn_since: turn.as_ref().map(|_| now),
            last_taken: None,
            turn,
            estimate: Estimate::default(),
        }
    }

    /// Whether it holds a turn.
    pub fn holds_turn(&self) -> bool {
        self.turn.is_some()
    }

    /// The cost of the turn to ask for, if one is wanted.
    pub fn wants_turn(&self) -> Option<u64> {
        (self.flow && self.turn.is_none()).then(|| self.estimate.bytes())
    }

    /// The flow allows fetching or not. A paused flow gives its turn back.
    pub fn flow(&mut self, allow: bool) -> Action {
        self.flow = allow;
        if !allow {
            self.give_back();
        }
        self.apply()
    }

    /// A turn was granted.
    pub fn granted(&mut self, turn: Turn, now: Instant) -> Action {
        if !self.flow {
            return Action::Nothing;
        }
        self.turn = Some(turn);
        self.turn_since = Some(now);
        self.last_taken = None;
        self.apply()
    }

    fn give_back(&mut self) {
        self.turn = None;
        self.turn_since = None;
        self.last_taken = None;
    }

    /// A record of `size` bytes was taken from the queue.
    pub fn took(&mut self, size: usize, now: Instant) {
        self.estimate.took(size, now);
    }

    /// The records taken were all the queue held (`emptied`) or not; with
    /// others waiting (`contended`), a turn held for [`LONGEST_TURN`] is
    /// given back.
    pub fn taken(&mut self, emptied: bool, contended: bool, now: Instant) -> Action {
        if emptied {
            self.estimate.emptied(now);
        }
        self.last_taken = Some(now);
        self.tick(contended, now)
    }

    /// Time passed: with others waiting, a turn during which nothing came
    /// for [`IDLE_TURN`], or that lasted [`LONGEST_TURN`], is given back.
    pub fn tick(&mut self, contended: bool, now: Instant) -> Action {
        self.estimate.tick(now);
        let Some(since) = self.turn_since else {
            return Action::Nothing;
        };
        let quiet_since = self.last_taken.unwrap_or(since);
        if contended
            && (now.duration_since(quiet_since) >= IDLE_TURN
                || now.duration_since(since) >= LONGEST_TURN)
        {
            self.give_back();
        }
        self.apply()
    }

    /// The partition was paused apart from this state (an operator's move)
    /// and its flow starts afresh.
    pub fn paused_for_move(&mut self) {
        self.fetching = false;
        self.flow = true;
    }

    /// Brings librdkafka's state in line.
    pub fn apply(&mut self) -> Action {
        let want = self.flow && self.turn.is_some();
        if want == self.fetching {
            return Action::Nothing;
        }
        self.fetching = want;
        if want {
            Action::Resume
        } else {
            Action::Pause
        }
    }
}

/// What one partition's records on their way to the sink occupy (the
/// records and their decoded events): the largest pull lately, forgotten by
/// halves. A partition takes records from its queue only while it holds a
/// share of that size ([`Shared::hand`](super::Shared)), given back once
/// they are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InHand {
    bytes: u64,
}

/// What a record on its way costs besides twice its size (the record and
/// its decoded event).
const EVENT_OVERHEAD: u64 = 512;

impl InHand {
    /// Before the first pull: `batch` records of a small event.
    pub fn new(batch: usize) -> InHand {
        InHand {
            bytes: batch as u64 * (2 * FIRST_BURST_PAYLOAD + EVENT_OVERHEAD),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// A pull took records of these sizes.
    pub fn pulled(&mut self, sizes: impl Iterator<Item = usize>) {
        let cost: u64 = sizes.map(|s| 2 * s as u64 + EVENT_OVERHEAD).sum();
        self.bytes = cost.max(self.bytes / 2).max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_fetches_only_with_its_flow_and_a_turn() {
        let turns = Turns::new(8 << 20, "fetch");
        let t0 = Instant::now();
        let mut f = Fetch::new(None, t0);
        assert!(f.wants_turn().is_some());
        assert_eq!(
            f.granted(turns.try_take(1 << 20).unwrap(), t0),
            Action::Resume
        );
        assert_eq!(f.wants_turn(), None);
        // The breaker holds it: paused, and the turn goes back.
        assert_eq!(f.flow(false), Action::Pause);
        assert_eq!(f.wants_turn(), None, "a paused flow asks for no turn");
        assert!(turns.try_take(8 << 20).is_some(), "the turn was given back");
        assert_eq!(f.flow(true), Action::Nothing, "no turn yet");
        assert!(f.wants_turn().is_some());
        assert_eq!(
            f.granted(turns.try_take(1 << 20).unwrap(), t0),
            Action::Resume
        );
        // Uncontended, the turn is kept however long.
        f.took(100, t0);
        assert_eq!(
            f.taken(true, false, t0 + Duration::from_secs(5)),
            Action::Nothing
        );
        assert_eq!(f.tick(false, t0 + Duration::from_secs(9)), Action::Nothing);
        // Contended: kept while records come (an empty queue for a moment
        // included)...
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(
            f.granted(turns.try_take(1 << 20).unwrap(), t1),
            Action::Nothing
        );
        assert_eq!(f.taken(true, true, t1 + IDLE_TURN / 2), Action::Nothing);
        assert_eq!(f.tick(true, t1 + IDLE_TURN), Action::Nothing);
        // ...given back after nothing came for the idle time...
        assert_eq!(f.tick(true, t1 + IDLE_TURN / 2 + IDLE_TURN), Action::Pause);
        assert!(f.wants_turn().is_some());
        // ...or after the longest turn, records or not.
        assert_eq!(
            f.granted(turns.try_take(1 << 20).unwrap(), t0),
            Action::Resume
        );
        assert_eq!(f.taken(false, true, t0 + LONGEST_TURN), Action::Pause);
        // An operator's move paused it: resumed once it has a turn again.
        f.paused_for_move();
        assert_eq!(f.apply(), Action::Nothing);
        assert_eq!(
            f.granted(turns.try_take(1 << 20).unwrap(), t0),
            Action::Resume
        );
        f.paused_for_move();
        assert_eq!(f.apply(), Action::Resume, "it kept its turn");
    }

    #[test]
    fn an_estimate_is_the_largest_of_the_last_bursts() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut e = Estimate::default();
        assert_eq!(e.bytes(), 10_000 * 612);
        // A queue empty for an instant while a batch is added does not end
        // the burst.
        for i in 0..200 {
            e.took(88, ms(0));
            if i == 100 {
                e.emptied(ms(0));
            }
        }
        e.emptied(ms(1));
        e.tick(ms(2));
        e.tick(ms(1) + BURST_GAP);
        assert_eq!(
            e.bytes(),
            10_000 * 612,
            "the first estimate until the window is full"
        );
        for round in 1..WINDOW as u64 {
            for _ in 0..200 {
                e.took(88, ms(100 * round));
            }
            e.emptied(ms(100 * round));
        }
        e.tick(ms(10_000));
        assert_eq!(e.bytes(), 200 * 600, "small bursts only: small");
        for _ in 0..10_000 {
            e.took(88, ms(20_000));
        }
        e.emptied(ms(20_000));
        e.took(88, ms(20_001));
        e.emptied(ms(20_001));
        e.tick(ms(30_000));
        assert_eq!(e.bytes(), 10_001 * 600, "a larger burst counts at once");
        for round in 1..WINDOW as u64 {
            e.took(88, ms(30_000 + 100 * round));
            e.emptied(ms(30_000 + 100 * round));
        }
        e.tick(ms(40_000));
        assert_eq!(
            e.bytes(),
            10_001 * 600,
            "and for the next bursts of the window"
        );
        e.took(88, ms(40_001));
        e.emptied(ms(40_001));
        e.tick(ms(50_000));
        assert_eq!(e.bytes(), 600, "until it leaves the window");
    }

    #[test]
    fn what_is_in_hand_follows_the_largest_pull() {
        let mut h = InHand::new(4000);
        assert_eq!(h.bytes(), 4000 * 712);
        h.pulled(std::iter::repeat_n(100, 10));
        assert_eq!(h.bytes(), 4000 * 712 / 2);
        h.pulled(std::iter::repeat_n(100, 4000));
        assert_eq!(h.bytes(), 4000 * 712);
    }

    #[tokio::test]
    async fn turns_fit_the_share_and_wait_in_order() {
        let turns = Turns::new(10 << 20, "fetch");
        let a = turns.try_take(4 << 20).expect("fits");
        let b = turns.try_take(4 << 20).expect("fits");
        assert!(turns.try_take(4 << 20).is_none(), "would pass the share");
        assert!(!turns.contended());
        let waiter = {
            let turns = turns.clone();
            tokio::spawn(async move { turns.take(4 << 20).await })
        };
        tokio::task::yield_now().await;
        while !turns.contended() {
            tokio::task::yield_now().await;
        }
        drop(a);
        let c = waiter.await.unwrap();
        assert!(!turns.contended());
        drop((b, c));
        // A turn larger than the share costs the whole share: one partition
        // can always be fetched.
        let whole = turns.try_take(1 << 40).expect("the whole share");
        assert!(turns.try_take(1).is_none());
        drop(whole);
        assert!(turns.try_take(1).is_some());
    }
}
