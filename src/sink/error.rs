//! The sink-neutral error: what the consumer needs to know of a sink's
//! failure is whether to retry it, to set the record aside, to stop the
//! worker (fenced), or to stop the partition. Each sink maps its own errors
//! to these, keeping its own message.

/// A sink's own error, kept whole for its message and source chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A failure of a sink operation.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// May pass if tried again: the sink unreachable, a lost connection, a
    /// timeout, a deadlock or serialization failure.
    #[error(transparent)]
    Transient(BoxError),
    /// The sink refused a record's data (a constraint, an invalid value):
    /// another record may well go through.
    #[error(transparent)]
    Refused(BoxError),
    /// The partition's lease was taken over by another consumer.
    #[error("topic {topic} partition {partition}: lease epoch {epoch} was taken over by another consumer; this worker stops")]
    Fenced {
        topic: String,
        partition: i32,
        epoch: i64,
    },
    /// Repeats whatever is retried: a table of the wrong shape, a permission, a bad setting.
    #[error(transparent)]
    Fatal(BoxError),
    /// No attempt was made: the breaker is open.
    #[error("the sink's circuit breaker is open (the sink kept failing); nothing was written")]
    BreakerOpen,
    /// Transient failures outlasted `sink.retry.max_attempts`.
    #[error("gave up after {attempts} attempts (sink.retry.max_attempts): {last}")]
    GaveUp {
        attempts: u32,
        #[source]
        last: Box<SinkError>,
    },
}

/// True when `e` (one link of an error chain) is a sink refusing Ordo's
/// login: a configuration to fix, not an outage to wait out.
pub fn is_authentication_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let postgres = |e: &(dyn std::error::Error + 'static)| {
        matches!(
            e.downcast_ref::<super::postgres::PostgresError>(),
            Some(super::postgres::PostgresError::Authentication { .. })
        )
    };
    match e.downcast_ref::<SinkError>() {
        Some(SinkError::Transient(inner) | SinkError::Refused(inner) | SinkError::Fatal(inner)) => {
            postgres(inner.as_ref())
        }
        Some(SinkError::GaveUp { last, .. }) => is_authentication_failure(last.as_ref()),
        Some(_) => false,
        None => postgres(e),
    }
}

impl SinkError {
    /// True when the sink refused the data itself: another record may well go through.
    pub fn is_record_error(&self) -> bool {
        matches!(self, SinkError::Refused(_))
    }

    /// True when trying again may succeed; false for errors that repeat.
    pub fn is_transient(&self) -> bool {
        matches!(self, SinkError::Transient(_) | SinkError::BreakerOpen)
    }

    /// The route whose statement failed, when a route's did (for the
    /// dead letter's `ordo.route` header).
    pub fn route(&self) -> Option<&str> {
        match self {
            SinkError::Transient(e) | SinkError::Refused(e) | SinkError::Fatal(e) => e
                .downcast_ref::<super::postgres::PostgresError>()
                .and_then(|p| p.route()),
            SinkError::GaveUp { last, .. } => last.route(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_errors_are_retried_and_only_refusals_set_a_record_aside() {
        let transient = SinkError::Transient("connection reset".into());
        let refused = SinkError::Refused("value too long".into());
        let fatal = SinkError::Fatal("permission denied".into());
        let fenced = SinkError::Fenced {
            topic: "t".into(),
            partition: 1,
            epoch: 2,
        };
        assert!(transient.is_transient() && !transient.is_record_error());
        assert!(refused.is_record_error() && !refused.is_transient());
        assert!(!fatal.is_transient() && !fatal.is_record_error());
        assert!(!fenced.is_transient() && !fenced.is_record_error());
        assert!(SinkError::BreakerOpen.is_transient());
        let gave_up = SinkError::GaveUp {
            attempts: 3,
            last: Box::new(transient),
        };
        assert!(!gave_up.is_transient());
        // The sink's own message is kept whole.
        assert_eq!(refused.to_string(), "value too long");
    }
}
