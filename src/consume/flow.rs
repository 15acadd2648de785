//! Whether a partition's worker reads: its state, the sink's breaker, and
//! when the partition is paused or resumed in librdkafka. Pure (unit-tested
//! here); the partition machine hands the [`Action`]s out as effects.
//!
//! A partition is fetched only while its worker runs and the breaker does
//! not hold it. Each transition says whether the partition must be paused
//! or resumed, so a pause is never undone by another cause's resume: a
//! closing breaker resumes only a running worker; a decode retry that
//! succeeds resumes only if the breaker is not holding the partition.

use crate::sink::breaker::BreakerState;

/// What a worker does with the records of its partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    /// The buffer is full and the policy is `wait`: the partition is paused
    /// until Ordo restarts or an operator steps in.
    Waiting,
    /// A record could not be decoded for a reason that may pass (the schema
    /// registry is unreachable): the partition is paused and the record is
    /// tried again after a backoff.
    Retrying,
    /// A record or the sink failed in a way retrying cannot fix: the
    /// partition is paused until the process restarts.
    Stopped,
}

/// What librdkafka must be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Action {
    Pause,
    Resume,
    Nothing,
}

/// A worker's state and whether the breaker holds its partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    state: State,
    held_by_breaker: bool,
}

impl Default for Flow {
    fn default() -> Self {
        Self {
            state: State::Running,
            held_by_breaker: false,
        }
    }
}

impl Flow {
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether records are taken from the partition's queue.
    pub fn reading(&self) -> bool {
        self.state == State::Running && !self.held_by_breaker
    }

    /// Whether batches are still written (a stopped worker writes nothing more).
    pub fn writing(&self) -> bool {
        self.state != State::Stopped
    }

    /// The sink's breaker changed.
    pub fn breaker(&mut self, breaker: BreakerState) -> Action {
        match breaker {
            BreakerState::Open | BreakerState::HalfOpen if !self.held_by_breaker => {
                self.held_by_breaker = true;
                if self.state == State::Running {
                    Action::Pause
                } else {
                    Action::Nothing
                }
            }
            BreakerState::Closed if self.held_by_breaker => {
                self.held_by_breaker = false;
                if self.state == State::Running {
                    Action::Resume
                } else {
                    Action::Nothing
                }
            }
            _ => Action::Nothing,
        }
    }

    /// The buffer is full under the `wait` policy.
    pub fn buffer_full(&mut self) -> Action {
        if self.state != State::Running {
            return Action::Nothing;
        }
        self.state = State::Waiting;
        Action::Pause
    }

    /// A record cannot be decoded yet; it is tried again later.
    pub fn decode_deferred(&mut self) -> Action {
        match self.state {
            State::Stopped => Action::Nothing,
            previous => {
                self.state = State::Retrying;
                if previous == State::Running && !self.held_by_breaker {
                    Action::Pause
                } else {
                    Action::Nothing
                }
            }
        }
    }

    /// The deferred records are tried again: reading is what they wait for.
    pub fn decode_retrying(&mut self) {
        if self.state == State::Retrying {
            self.state = State::Running;
        }
    }

    /// The deferred records went through: the partition resumes unless the
    /// breaker holds it or another state began meanwhile.
    pub fn decode_recovered(&mut self) -> Action {
        if self.state == State::Running && !self.held_by_breaker {
            Action::Resume
        } else {
            Action::Nothing
        }
    }

    /// The worker stops handling its partition. `None`: it had stopped already.
    pub fn stop(&mut self) -> Option<Action> {
        if self.state == State::Stopped {
            return None;
        }
        self.state = State::Stopped;
        Some(Action::Pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_pauses_a_running_partition_and_resumes_it_when_it_closes() {
        let mut f = Flow::default();
        assert!(f.reading());
        assert_eq!(f.breaker(BreakerState::Open), Action::Pause);
        assert!(!f.reading());
        assert_eq!(f.breaker(BreakerState::HalfOpen), Action::Nothing);
        assert_eq!(f.breaker(BreakerState::Open), Action::Nothing);
        assert_eq!(f.breaker(BreakerState::Closed), Action::Resume);
        assert!(f.reading());
        assert_eq!(f.breaker(BreakerState::Closed), Action::Nothing);
    }

    #[test]
    fn a_closing_breaker_does_not_resume_a_partition_paused_for_another_reason() {
        for (pause, state) in [
            (Flow::buffer_full as fn(&mut Flow) -> Action, State::Waiting),
            (Flow::decode_deferred, State::Retrying),
        ] {
            let mut f = Flow::default();
            assert_eq!(pause(&mut f), Action::Pause);
            assert_eq!(f.breaker(BreakerState::Open), Action::Nothing);
            assert_eq!(f.breaker(BreakerState::Closed), Action::Nothing);
            assert_eq!(f.state(), state);
            assert!(!f.reading());
        }
        let mut f = Flow::default();
        assert_eq!(f.stop(), Some(Action::Pause));
        assert_eq!(f.breaker(BreakerState::Open), Action::Nothing);
        assert_eq!(f.breaker(BreakerState::Closed), Action::Nothing);
        assert!(!f.reading() && !f.writing());
    }

    #[test]
    fn a_decode_retry_resumes_only_when_the_breaker_does_not_hold_the_partition() {
        let mut f = Flow::default();
        assert_eq!(f.decode_deferred(), Action::Pause);
        assert_eq!(f.decode_deferred(), Action::Nothing, "paused already");
        f.decode_retrying();
        assert_eq!(f.decode_recovered(), Action::Resume);
        assert!(f.reading());

        let mut f = Flow::default();
        assert_eq!(f.decode_deferred(), Action::Pause);
        assert_eq!(f.breaker(BreakerState::Open), Action::Nothing);
        f.decode_retrying();
        assert_eq!(
            f.decode_recovered(),
            Action::Nothing,
            "the breaker holds it"
        );
        assert_eq!(f.breaker(BreakerState::Closed), Action::Resume);

        // Held by the breaker first: already paused, the deferral adds no pause.
        let mut f = Flow::default();
        assert_eq!(f.breaker(BreakerState::Open), Action::Pause);
        assert_eq!(f.decode_deferred(), Action::Nothing);
    }

    #[test]
    fn a_stop_is_final() {
        let mut f = Flow::default();
        assert_eq!(f.buffer_full(), Action::Pause);
        assert_eq!(f.stop(), Some(Action::Pause));
        assert_eq!(f.stop(), None);
        assert_eq!(f.decode_deferred(), Action::Nothing);
        f.decode_retrying();
        assert_eq!(f.state(), State::Stopped);
        assert_eq!(f.buffer_full(), Action::Nothing);
        assert!(!f.writing());
    }
}
