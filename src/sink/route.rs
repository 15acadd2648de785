//! Routes: which of a sink's targets an event goes to, by its topic and its
//! event type (`source.event_type`). An event goes to every route it
//! matches; one that matches none is handled as `source.unrouted` says.
//! Pure: no I/O, so the rules are tested here.

use std::fmt;

/// An `event_types` entry: an exact type, or a prefix (`order.*`, `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypePattern {
    Exact(String),
    /// What comes before the trailing `*`.
    Prefix(String),
}

impl TypePattern {
    /// Parses an entry; a `*` anywhere but at the end is refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("an event type cannot be empty".into());
        }
        match text.find('*') {
            None => Ok(TypePattern::Exact(text.to_string())),
            Some(i) if i == text.len() - 1 => Ok(TypePattern::Prefix(text[..i].to_string())),
            Some(_) => Err(format!(
                "`{text}`: a `*` may only end a pattern (`order.*`), as a prefix"
            )),
        }
    }

    /// Whether `event_type` is one this entry names.
    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            TypePattern::Exact(t) => t == event_type,
            TypePattern::Prefix(p) => event_type.starts_with(p.as_str()),
        }
    }
}

impl fmt::Display for TypePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypePattern::Exact(t) => f.write_str(t),
            TypePattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

/// Which events a route takes: `None` for either list means all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub topics: Option<Vec<String>>,
    pub event_types: Option<Vec<TypePattern>>,
}

impl Filter {
    /// A filter of a route's `topics` and `event_types` as configured; the
    /// error names the entry at fault (`event_types[1]`) and why.
    pub fn new(
        topics: Option<&[String]>,
        event_types: Option<&[String]>,
    ) -> Result<Self, (String, String)> {
        if topics.is_some_and(<[String]>::is_empty) {
            return Err((
                "topics".into(),
                "is empty, so the route takes nothing: leave it out to take every topic".into(),
            ));
        }
        if event_types.is_some_and(<[String]>::is_empty) {
            return Err((
                "event_types".into(),
                "is empty, so the route takes nothing: leave it out to take every type".into(),
            ));
        }
        let event_types = event_types
            .map(|types| {
                types
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        TypePattern::parse(t).map_err(|why| (format!("event_types[{i}]"), why))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(Self {
            topics: topics.map(<[String]>::to_vec),
            event_types,
        })
    }

    /// Whether an event of `topic` with `event_type` goes to the route. An
    /// event without a type matches only a route that names no types.
    pub fn matches(&self, topic: &str, event_type: Option<&str>) -> bool {
        if let Some(topics) = &self.topics {
            if !topics.iter().any(|t| t == topic) {
                return false;
            }
        }
        match (&self.event_types, event_type) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(patterns), Some(t)) => patterns.iter().any(|p| p.matches(t)),
        }
    }

    /// Whether the route takes every event.
    pub fn takes_all(&self) -> bool {
        self.topics.is_none() && self.event_types.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(topics: Option<&[&str]>, types: Option<&[&str]>) -> Filter {
        let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let topics = topics.map(own);
        let types = types.map(own);
        Filter::new(topics.as_deref(), types.as_deref()).unwrap()
    }

    #[test]
    fn exact_types_prefixes_and_topics() {
        let f = filter(None, Some(&["order.*", "refund.issued"]));
        assert!(f.matches("orders", Some("order.placed")));
        assert!(f.matches("payments", Some("refund.issued")));
        assert!(!f.matches("orders", Some("refund.requested")));
        assert!(!f.matches("orders", Some("orders.placed")));
        // No type: only a route naming no types takes it.
        assert!(!f.matches("orders", None));
        assert!(filter(None, None).matches("orders", None));
        let t = filter(Some(&["orders"]), None);
        assert!(t.matches("orders", Some("x")) && !t.matches("payments", Some("x")));
        assert!(filter(None, Some(&["*"])).matches("orders", Some("anything")));
        assert!(filter(None, None).takes_all() && !t.takes_all());
    }

    #[test]
    fn bad_patterns_name_the_entry() {
        let types = vec!["order.*".to_string(), "or*der".to_string()];
        let (key, why) = Filter::new(None, Some(&types)).unwrap_err();
        assert_eq!(key, "event_types[1]");
        assert!(why.contains("may only end"), "{why}");
        let (key, _) = Filter::new(Some(&[]), None).unwrap_err();
        assert_eq!(key, "topics");
        let (key, _) = Filter::new(None, Some(&[String::new()])).unwrap_err();
        assert_eq!(key, "event_types[0]");
    }
}
