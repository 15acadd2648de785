//! Reading a dead-letter topic: a bounded scan from a start position up to the
//! high watermarks taken when the scan begins, with the filters `ordo dlq`
//! offers, turning each record into a [`Letter`].

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;

use super::headers;

const TIMEOUT: Duration = Duration::from_secs(10);

/// One dead letter, as `ordo dlq` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Letter {
    pub partition: i32,
    pub offset: i64,
    pub source_topic: Option<String>,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    pub replays: u32,
    /// UTF-8 text, or `base64:` and the bytes.
    pub key: Option<String>,
    pub value: Option<String>,
    pub headers: BTreeMap<String, String>,
    #[serde(skip)]
    pub raw_key: Option<Vec<u8>>,
    #[serde(skip)]
    pub raw_value: Option<Vec<u8>>,
    #[serde(skip)]
    pub raw_headers: Vec<(String, Option<Vec<u8>>)>,
}

fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        ),
    }
}

impl Letter {
    /// The source record the letter is about (see [`super::sources`]).
    pub fn source(&self) -> super::sources::Source {
        super::sources::Source::new(
            self.source_topic.as_deref(),
            self.source_partition,
            self.source_offset,
            self.partition,
            self.offset,
        )
    }

    fn of(m: &BorrowedMessage<'_>) -> Letter {
        let raw_headers: Vec<(String, Option<Vec<u8>>)> = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        let headers: BTreeMap<String, String> = raw_headers
            .iter()
            .map(|(k, v)| (k.clone(), v.as_deref().map(text).unwrap_or_default()))
            .collect();
        let get = |name: &str| headers.get(name).cloned();
        Letter {
            partition: m.partition(),
            offset: m.offset(),
            source_topic: get(headers::SOURCE_TOPIC),
            source_partition: get(headers::SOURCE_PARTITION).and_then(|p| p.parse().ok()),
            source_offset: get(headers::SOURCE_OFFSET).and_then(|o| o.parse().ok()),
            error_class: get(headers::ERROR_CLASS),
            error_message: get(headers::ERROR_MESSAGE),
            replays: get(headers::REPLAYS)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            key: m.key().map(text),
            value: m.payload().map(text),
            raw_key: m.key().map(<[u8]>::to_vec),
            raw_value: m.payload().map(<[u8]>::to_vec),
            raw_headers,
            headers,
        }
    }
}

/// Which dead letters a command works on.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this dead-letter partition.
    pub partition: Option<i32>,
    /// Dead-letter offsets from (inclusive).
    pub from_offset: Option<i64>,
    /// Dead-letter offsets to (exclusive).
    pub to_offset: Option<i64>,
    /// Only letters whose error message contains this text.
    pub error_contains: Option<String>,
    /// Only letters from this source partition.
    pub source_partition: Option<i32>,
}

impl Filter {
    pub fn matches(&self, l: &Letter) -> bool {
        self.partition.is_none_or(|p| p == l.partition)
            && self.from_offset.is_none_or(|o| l.offset >= o)
            && self.to_offset.is_none_or(|o| l.offset < o)
            && self
                .source_partition
                .is_none_or(|p| Some(p) == l.source_partition)
            && self
                .error_contains
                .as_deref()
                .is_none_or(|t| l.error_message.as_deref().is_some_and(|m| m.contains(t)))
    }
}

/// A scan cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot create a Kafka client: {0}")]
    Client(#[source] rdkafka::error::KafkaError),
    #[error("dead-letter topic `{topic}`: {reason}")]
    Topic { topic: String, reason: String },
}

/// A bounded scan over one dead-letter topic.
pub struct Scan {
    pub topic: String,
    consumer: BaseConsumer,
    /// Per partition: (start, end) offsets; the scan stops at `end`.
    bounds: BTreeMap<i32, (i64, i64)>,
    /// Per partition, with a group: what the group has handled.
    progress: BTreeMap<i32, super::handled::Handled>,
}

impl Scan {
    /// Opens `topic` with the connection properties in `client`. With `group`,
    /// each partition starts at the group's committed offset (else at the start).
    pub fn open(
        client: &ClientConfig,
        topic: &str,
        group: Option<&str>,
    ) -> Result<Scan, ReadError> {
        let topic_err = |reason: String| ReadError::Topic {
            topic: topic.to_string(),
            reason,
        };
        let mut cfg = client.clone();
        cfg.set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("group.id", group.unwrap_or("ordo-dlq-inspect"));
        let consumer: BaseConsumer = cfg.create().map_err(ReadError::Client)?;
        let meta = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .map_err(|e| topic_err(e.to_string()))?;
        let partitions: Vec<i32> = meta
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(topic_err("does not exist".into()));
        }
        let committed = match group {
            Some(_) => {
                let mut tpl = TopicPartitionList::new();
                for p in &partitions {
                    tpl.add_partition(topic, *p);
                }
                Some(
                    consumer
                        .committed_offsets(tpl, TIMEOUT)
                        .map_err(|e| topic_err(format!("cannot read committed offsets: {e}")))?,
                )
            }
            None => None,
        };
        let mut bounds = BTreeMap::new();
        let mut progress = BTreeMap::new();
        for p in partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, TIMEOUT)
                .map_err(|e| topic_err(e.to_string()))?;
            let entry = committed.as_ref().and_then(|c| c.find_partition(topic, p));
            let start = entry
                .as_ref()
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(low)
                .max(low);
            if group.is_some() {
                let metadata = entry.as_ref().map(|e| e.metadata().to_string());
                progress.insert(
                    p,
                    super::handled::Handled::committed(start, metadata.as_deref().unwrap_or("")),
                );
            }
            bounds.insert(p, (start, high));
        }
        let mut tpl = TopicPartitionList::new();
        for (p, (start, end)) in &bounds {
            if start < end {
                tpl.add_partition_offset(topic, *p, Offset::Offset(*start))
                    .map_err(|e| topic_err(e.to_string()))?;
            }
        }
        consumer
            .assign(&tpl)
            .map_err(|e| topic_err(e.to_string()))?;
        Ok(Scan {
            topic: topic.to_string(),
            consumer,
            bounds,
            progress,
        })
    }

    /// Letters the scan will go through.
    pub fn len(&self) -> u64 {
        self.bounds
            .values()
            .map(|(s, e)| (e - s).max(0) as u64)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next letter, `None` once every partition reached its end.
    pub fn next_letter(&mut self) -> Result<Option<Letter>, ReadError> {
        loop {
            if self.bounds.values().all(|(s, e)| s >= e) {
                return Ok(None);
            }
            match self.consumer.poll(TIMEOUT) {
                None => {
                    return Err(ReadError::Topic {
                        topic: self.topic.clone(),
                        reason: format!("no records within {TIMEOUT:?} before the end of the scan"),
                    })
                }
                Some(Err(e)) => {
                    return Err(ReadError::Topic {
                        topic: self.topic.clone(),
                        reason: e.to_string(),
                    })
                }
                Some(Ok(m)) => {
                    let Some((pos, end)) = self.bounds.get_mut(&m.partition()) else {
                        continue;
                    };
                    if m.offset() >= *end {
                        continue;
                    }
                    *pos = m.offset() + 1;
                    return Ok(Some(Letter::of(&m)));
                }
            }
        }
    }

    /// True when the group handled the letter already (an earlier replay).
    pub fn was_handled(&self, letter: &Letter) -> bool {
        self.progress
            .get(&letter.partition)
            .is_some_and(|p| p.is_handled(letter.offset))
    }

    /// True when one more letter can be marked handled on the letter's
    /// partition (the commit's metadata has a size limit).
    pub fn can_handle(&self, letter: &Letter) -> bool {
        self.progress
            .get(&letter.partition)
            .is_none_or(|p| p.can_handle(letter.offset))
    }

    /// Marks a letter handled (saved at the next [`Scan::commit`]).
    pub fn handle(&mut self, letter: &Letter) {
        if let Some(p) = self.progress.get_mut(&letter.partition) {
            p.handle(letter.offset);
        }
    }

    /// Saves the group's progress: per partition, the first letter not
    /// handled and, in the commit's metadata, those handled above it.
    pub fn commit(&self) -> Result<(), ReadError> {
        let mut tpl = TopicPartitionList::new();
        for (p, progress) in &self.progress {
            tpl.add_partition_offset(&self.topic, *p, Offset::Offset(progress.next()))
                .map_err(|e| ReadError::Topic {
                    topic: self.topic.clone(),
                    reason: e.to_string(),
                })?;
            if let Some(mut e) = tpl.find_partition(&self.topic, *p) {
                e.set_metadata(progress.metadata());
            }
        }
        self.consumer
            .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .map_err(|e| ReadError::Topic {
                topic: self.topic.clone(),
                reason: format!("cannot commit replay progress: {e}"),
            })
    }
}
