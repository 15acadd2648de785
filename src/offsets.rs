//! `ordo offsets`: the partitions' stored offsets under the operator's
//! hand. `show` lists each partition's stored next offset beside the
//! broker's watermarks, the lag and Kafka's committed copy; `set` and
//! `skip` move stored offsets (see `sink::postgres::offsets` for how a
//! running owner takes a move up). Kafka's committed offsets are only an
//! advisory copy: Ordo resumes from the offsets stored with the data.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Serialize;

use crate::config::Settings;
pub use crate::sink::postgres::offsets::Moved;
use crate::sink::postgres::offsets::{Move, StoredOffset};
use crate::sink::postgres::PostgresSink;

/// How long a call to the broker may take.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an `ordo offsets` command did nothing.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    /// The command's input is wrong (exit 2): which value, and why.
    #[error("{0}")]
    Input(String),
    #[error("Kafka: {0}")]
    Kafka(String),
    #[error(transparent)]
    Sink(#[from] crate::sink::postgres::PostgresError),
}

/// Where `set` moves the partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Earliest,
    Latest,
    Offset(i64),
    /// Milliseconds since the epoch.
    Timestamp(i64),
}

/// Parses `--to-timestamp`: RFC 3339, or milliseconds since the epoch; not
/// in the future.
pub fn parse_timestamp(text: &str, now_ms: i64) -> Result<i64, OffsetsError> {
    let ms = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<i64>().map_err(|_| {
            OffsetsError::Input(format!("--to-timestamp {text}: too large for milliseconds"))
        })?
    } else {
        chrono::DateTime::parse_from_rfc3339(text)
            .map_err(|e| {
                OffsetsError::Input(format!(
                    "--to-timestamp {text}: {e}; expected RFC 3339 (2026-12-06T10:00:00Z) or milliseconds since the epoch"
                ))
            })?
            .timestamp_millis()
    };
    if ms > now_ms {
        return Err(OffsetsError::Input(format!(
            "--to-timestamp {text}: in the future (now is {})",
            chrono::DateTime::from_timestamp_millis(now_ms)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default()
        )));
    }
    Ok(ms)
}

/// Parses `--partitions 0,3`.
pub fn parse_partitions(text: &str) -> Result<Vec<i32>, OffsetsError> {
    text.split(',')
        .map(|p| {
            p.trim()
                .parse::<i32>()
                .ok()
                .filter(|p| *p >= 0)
                .ok_or_else(|| {
                    OffsetsError::Input(format!(
                        "--partitions {text}: `{}` is not a partition number (expected e.g. 0,3)",
                        p.trim()
                    ))
                })
        })
        .collect()
}

/// One partition as `show` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionReport {
    pub topic: String,
    pub partition: i32,
    /// The stored next offset (`None`: never stored).
    pub next_offset: Option<i64>,
    pub low_watermark: i64,
    pub high_watermark: i64,
    /// Records not processed yet: high watermark - next offset.
    pub lag_offsets: Option<i64>,
    /// Age of the first record not processed yet (from its timestamp).
    pub lag_seconds: Option<f64>,
    /// Kafka's committed (advisory) copy.
    pub kafka_committed: Option<i64>,
    pub owner: Option<String>,
    pub epoch: Option<i64>,
    pub updated_at: Option<String>,
    /// Offsets passed over by `ordo offsets skip`, in all.
    pub skipped_offsets: i64,
    /// Moved, and not taken up by its owner yet.
    pub moved: bool,
}

/// The broker's view of the configured cluster, for one consumer group.
struct Kafka {
    consumer: BaseConsumer,
}

impl Kafka {
    fn new(settings: &Settings) -> Result<Self, OffsetsError> {
        let mut cfg: ClientConfig = crate::dlq::connection_config(&settings.kafka);
        cfg.set("group.id", settings.group_id())
            .set("enable.auto.commit", "false")
            .set("log_level", "3");
        let consumer = cfg
            .create()
            .map_err(|e| OffsetsError::Kafka(format!("cannot create a consumer: {e}")))?;
        Ok(Self { consumer })
    }

    /// The partitions of `topic`; an unknown topic is the input's fault.
    fn partitions(&self, topic: &str) -> Result<Vec<i32>, OffsetsError> {
        let md = self
            .consumer
            .fetch_metadata(Some(topic), KAFKA_TIMEOUT)
            .map_err(|e| OffsetsError::Kafka(format!("reading the metadata of {topic}: {e}")))?;
        let t = md.topics().iter().find(|t| t.name() == topic);
        match t {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                let mut ps: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
                ps.sort_unstable();
                Ok(ps)
            }
            _ => Err(OffsetsError::Input(format!(
                "topic {topic}: not in the cluster"
            ))),
        }
    }

    fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), OffsetsError> {
        self.consumer
            .fetch_watermarks(topic, partition, KAFKA_TIMEOUT)
            .map_err(|e| {
                OffsetsError::Kafka(format!(
                    "reading the watermarks of {topic}/{partition}: {e}"
                ))
            })
    }

    /// Kafka's committed offsets of the group.
    fn committed(&self, parts: &[(String, i32)]) -> HashMap<(String, i32), i64> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in parts {
            tpl.add_partition(t, *p);
        }
        match self.consumer.committed_offsets(tpl, KAFKA_TIMEOUT) {
            Ok(list) => list
                .elements()
                .iter()
                .filter_map(|e| match e.offset() {
                    Offset::Offset(o) => Some(((e.topic().to_string(), e.partition()), o)),
                    _ => None,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read Kafka's committed offsets");
                HashMap::new()
            }
        }
    }

    /// The first offset at or after `ms` in each partition (the broker's
    /// time index); `None` where the broker found no record that recent.
    fn offsets_for_time(
        &self,
        parts: &[(String, i32, i64)],
        ms: i64,
    ) -> Result<HashMap<(String, i32), Option<i64>>, OffsetsError> {
        let mut tpl = TopicPartitionList::new();
        for (t, p, _) in parts {
            tpl.add_partition_offset(t, *p, Offset::Offset(ms))
                .map_err(|e| OffsetsError::Kafka(e.to_string()))?;
        }
        let found = self
            .consumer
            .offsets_for_times(tpl, KAFKA_TIMEOUT)
            .map_err(|e| OffsetsError::Kafka(format!("looking up offsets by time: {e}")))?;
        let mut out = HashMap::new();
        for (t, p, _) in parts {
            let at = found
                .find_partition(t, *p)
                .map(|e| e.offset())
                .unwrap_or(Offset::End);
            let offset = match at {
                Offset::Offset(o) if o >= 0 => Some(o),
                _ => None,
            };
            out.insert((t.clone(), *p), offset);
        }
        Ok(out)
    }

    /// The timestamp of the record at each given offset (those the broker
    /// answers for within a few seconds).
    fn timestamps_at(&self, at: &[(String, i32, i64)]) -> HashMap<(String, i32), i64> {
        let mut out = HashMap::new();
        if at.is_empty() {
            return out;
        }
        let mut tpl = TopicPartitionList::new();
        for (t, p, o) in at {
            if tpl.add_partition_offset(t, *p, Offset::Offset(*o)).is_err() {
                return out;
            }
        }
        if self.consumer.assign(&tpl).is_err() {
            return out;
        }
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while out.len() < at.len() && std::time::Instant::now() < until {
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(200)) {
                let key = (m.topic().to_string(), m.partition());
                if let Some(ms) = m.timestamp().to_millis() {
                    out.entry(key).or_insert(ms);
                }
            }
        }
        let _ = self.consumer.unassign();
        out
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn sink(settings: &Settings) -> Result<PostgresSink, OffsetsError> {
    let pg = settings
        .sink
        .postgres
        .as_ref()
        .ok_or_else(|| OffsetsError::Input("sink.postgres: required, but not set".into()))?;
    let sink =
        PostgresSink::connect(pg, settings.group_id(), settings.sink.batch_max_events).await?;
    // Ordo's own tables as `ordo run` leaves them (the moves need the
    // newest): migrated first where they are older.
    if !sink.plan_own().await?.is_empty() {
        sink.migrate().await?;
    }
    Ok(sink)
}

/// The topics a command covers: `--topic`, or every configured topic.
fn topics(settings: &Settings, topic: Option<&str>) -> Result<Vec<String>, OffsetsError> {
    match topic {
        Some(t) if settings.source.topics.iter().any(|s| s == t) => Ok(vec![t.to_string()]),
        Some(t) => Err(OffsetsError::Input(format!(
            "--topic {t}: not one of source.topics ({})",
            settings.source.topics.join(", ")
        ))),
        None => Ok(settings.source.topics.clone()),
    }
}

/// `ordo offsets show`.
pub async fn show(settings: &Settings) -> Result<Vec<PartitionReport>, OffsetsError> {
    let sink = sink(settings).await?;
    let stored: HashMap<(String, i32), StoredOffset> = sink
        .list_offsets()
        .await?
        .into_iter()
        .map(|s| ((s.topic.clone(), s.partition), s))
        .collect();
    let topics = topics(settings, None)?;
    let settings = settings.clone();
    tokio::task::spawn_blocking(move || {
        let kafka = Kafka::new(&settings)?;
        let mut parts = Vec::new();
        for t in &topics {
            for p in kafka.partitions(t)? {
                parts.push((t.clone(), p));
            }
        }
        let committed = kafka.committed(&parts);
        let mut reports = Vec::new();
        for (t, p) in &parts {
            let (low, high) = kafka.watermarks(t, *p)?;
            let s = stored.get(&(t.clone(), *p));
            let next = s.and_then(|s| s.next_offset);
            reports.push(PartitionReport {
                topic: t.clone(),
                partition: *p,
                next_offset: next,
                low_watermark: low,
                high_watermark: high,
                lag_offsets: next.map(|n| (high - n.max(low)).max(0)),
                lag_seconds: None,
                kafka_committed: committed.get(&(t.clone(), *p)).copied(),
                owner: s.map(|s| s.owner.clone()),
                epoch: s.map(|s| s.epoch),
                updated_at: s.map(|s| s.updated_at.clone()),
                skipped_offsets: s.map_or(0, |s| s.skipped),
                moved: s.is_some_and(|s| s.moved),
            });
        }
        let behind: Vec<(String, i32, i64)> = reports
            .iter()
            .filter_map(|r| match r.lag_offsets {
                Some(l) if l > 0 => Some((
                    r.topic.clone(),
                    r.partition,
                    r.next_offset?.max(r.low_watermark),
                )),
                _ => None,
            })
            .collect();
        let at = kafka.timestamps_at(&behind);
        let now = now_ms();
        for r in &mut reports {
            r.lag_seconds = match r.lag_offsets {
                Some(0) => Some(0.0),
                Some(_) => at
                    .get(&(r.topic.clone(), r.partition))
                    .map(|ms| ((now - ms).max(0) as f64) / 1000.0),
                None => None,
            };
        }
        Ok(reports)
    })
    .await
    .map_err(|e| OffsetsError::Kafka(e.to_string()))?
}

/// What `set` or `skip` is asked to do.
#[derive(Debug, Clone)]
pub struct MoveRequest {
    pub topic: Option<String>,
    pub partitions: Option<Vec<i32>>,
    pub target: Target,
    /// `skip`: one partition, forward only.
    pub skip: bool,
    pub dry_run: bool,
}

/// `ordo offsets set` / `skip`: checks every partition's target against
/// the broker, then moves them all in one transaction (unless a dry run).
/// The moves, done or (dry run) planned.
pub async fn set(settings: &Settings, request: &MoveRequest) -> Result<Vec<Moved>, OffsetsError> {
    let sink = sink(settings).await?;
    let stored: HashMap<(String, i32), Option<i64>> = sink
        .list_offsets()
        .await?
        .into_iter()
        .map(|s| ((s.topic, s.partition), s.next_offset))
        .collect();
    let topics = topics(settings, request.topic.as_deref())?;
    let (settings2, req) = (settings.clone(), request.clone());
    let moves: Vec<Move> = tokio::task::spawn_blocking(move || {
        plan_moves(&Kafka::new(&settings2)?, &topics, &req, &stored)
    })
    .await
    .map_err(|e| OffsetsError::Kafka(e.to_string()))??;
    let planned: Vec<Moved> = moves
        .iter()
        .map(|m| Moved {
            topic: m.topic.clone(),
            partition: m.partition,
            from: None,
            to: m.to,
        })
        .collect();
    if request.dry_run {
        let current = sink.list_offsets().await?;
        return Ok(planned
            .into_iter()
            .map(|mut m| {
                m.from = current
                    .iter()
                    .find(|s| s.topic == m.topic && s.partition == m.partition)
                    .and_then(|s| s.next_offset);
                m
            })
            .collect());
    }
    let command: Vec<String> = std::env::args().collect();
    let kind = if request.skip { "skip" } else { "set" };
    let moved = sink
        .move_offsets(
            &moves,
            kind,
            &command.join(" "),
            &crate::process::owner_id(),
        )
        .await?;
    for m in &moved {
        tracing::info!(topic = %m.topic, partition = m.partition, from_offset = m.from,
            to_offset = m.to, kind, "stored offset moved");
    }
    Ok(moved)
}

/// Each partition's first offset at or after `ms`, from the broker's time
/// index; the high watermark where it has no record that recent. Each
/// answer is checked against the records themselves: a broker that answers
/// "none" while its last record is that recent, or an offset whose record is
/// older than `ms`, cannot look up by time (a move to the end would skip
/// everything, one to an earlier offset re-read more than asked), and the
/// move is refused.
fn by_time(
    kafka: &Kafka,
    parts: &[(String, i32, i64, i64)],
    ms: i64,
) -> Result<HashMap<(String, i32), i64>, OffsetsError> {
    let found = kafka.offsets_for_time(
        &parts
            .iter()
            .map(|(t, p, _, h)| (t.clone(), *p, *h))
            .collect::<Vec<_>>(),
        ms,
    )?;
    let none: Vec<(String, i32, i64)> = parts
        .iter()
        .filter(|(t, p, low, high)| found.get(&(t.clone(), *p)) == Some(&None) && high > low)
        .map(|(t, p, _, high)| (t.clone(), *p, high - 1))
        .collect();
    let last = kafka.timestamps_at(&none);
    for (t, p, at) in &none {
        match last.get(&(t.clone(), *p)) {
            Some(ts) if *ts < ms => {}
            Some(ts) => {
                return Err(OffsetsError::Kafka(format!(
                    "topic {t} partition {p}: the broker found no record at or after {ms} ms, \
                     but its record at offset {at} has timestamp {ts} ms: it cannot look offsets \
                     up by time; move with --to-offset instead"
                )))
            }
            None => {
                return Err(OffsetsError::Kafka(format!(
                    "topic {t} partition {p}: the broker found no record at or after {ms} ms, \
                     and its last record (offset {at}) could not be read to confirm it"
                )))
            }
        }
    }
    let answered: Vec<(String, i32, i64)> = parts
        .iter()
        .filter_map(|(t, p, _, high)| match found.get(&(t.clone(), *p)) {
            Some(Some(at)) if at < high => Some((t.clone(), *p, *at)),
            _ => None,
        })
        .collect();
    let stamps = kafka.timestamps_at(&answered);
    for (t, p, at) in &answered {
        match stamps.get(&(t.clone(), *p)) {
            Some(ts) if *ts >= ms => {}
            Some(ts) => {
                return Err(OffsetsError::Kafka(format!(
                    "topic {t} partition {p}: the broker answered offset {at} as the first record at or after {ms} ms, but that record has timestamp {ts} ms: \
                     it cannot look offsets up by time; move with --to-offset instead"
                )))
            }
            None => {
                return Err(OffsetsError::Kafka(format!(
                    "topic {t} partition {p}: the broker answered offset {at} for {ms} ms, and the record there \
                     could not be read to confirm it"
                )))
            }
        }
    }
    Ok(parts
        .iter()
        .map(|(t, p, _, high)| {
            let key = (t.clone(), *p);
            let at = found.get(&key).copied().flatten().unwrap_or(*high);
            (key, at)
        })
        .collect())
}

fn plan_moves(
    kafka: &Kafka,
    topics: &[String],
    req: &MoveRequest,
    stored: &HashMap<(String, i32), Option<i64>>,
) -> Result<Vec<Move>, OffsetsError> {
    let mut parts: Vec<(String, i32, i64, i64)> = Vec::new();
    for t in topics {
        let known = kafka.partitions(t)?;
        let chosen = match &req.partitions {
            Some(ps) => {
                if let Some(p) = ps.iter().find(|p| !known.contains(p)) {
                    return Err(OffsetsError::Input(format!(
                        "topic {t} partition {p}: no such partition (the topic has {})",
                        known.len()
                    )));
                }
                ps.clone()
            }
            None => known,
        };
        for p in chosen {
            let (low, high) = kafka.watermarks(t, p)?;
            parts.push((t.clone(), p, low, high));
        }
    }
    let by_time = match req.target {
        Target::Timestamp(ms) => Some(by_time(kafka, &parts, ms)?),
        _ => None,
    };
    let mut moves = Vec::new();
    for (t, p, low, high) in parts {
        let to = match req.target {
            Target::Earliest => low,
            Target::Latest => high,
            Target::Offset(n) => {
                if n > high || n < low {
                    return Err(OffsetsError::Input(format!(
                        "--to-offset {n}: outside topic {t} partition {p}, which holds offsets {low} to {high} (the high watermark)"
                    )));
                }
                n
            }
            Target::Timestamp(_) => by_time
                .as_ref()
                .and_then(|m| m.get(&(t.clone(), p)).copied())
                .unwrap_or(high),
        };
        if req.skip {
            let from = stored.get(&(t.clone(), p)).copied().flatten();
            if from.is_some_and(|f| to <= f) {
                return Err(OffsetsError::Input(format!(
                    "--to-offset {to}: topic {t} partition {p} is stored at {} already; skip moves forward (ordo offsets set rewinds)",
                    from.unwrap_or_default()
                )));
            }
        }
        moves.push(Move {
            topic: t,
            partition: p,
            to,
        });
    }
    Ok(moves)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc_3339_or_epoch_milliseconds_and_not_in_the_future() {
        let now = 1_765_000_000_000;
        assert_eq!(
            parse_timestamp("1764999999000", now).unwrap(),
            1_764_999_999_000
        );
        assert_eq!(
            parse_timestamp("2025-12-06T05:46:39Z", now).unwrap(),
            1_764_999_999_000
        );
        assert_eq!(
            parse_timestamp("2025-12-06T06:46:39+01:00", now).unwrap(),
            1_764_999_999_000
        );
        let future = parse_timestamp("1765000000001", now)
            .unwrap_err()
            .to_string();
        assert!(future.contains("in the future"), "{future}");
        let bad = parse_timestamp("yesterday", now).unwrap_err().to_string();
        assert!(
            bad.contains("--to-timestamp yesterday") && bad.contains("RFC 3339"),
            "{bad}"
        );
    }

    #[test]
    fn partitions_are_a_comma_list_of_numbers() {
        assert_eq!(parse_partitions("0,3, 5").unwrap(), vec![0, 3, 5]);
        for bad in ["0,x", "-1", "", "1,,2"] {
            let e = parse_partitions(bad).unwrap_err().to_string();
            assert!(e.contains("is not a partition number"), "{bad}: {e}");
        }
    }
}
