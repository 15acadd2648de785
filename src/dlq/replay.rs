//! `ordo dlq replay`: sends dead letters back to their source topic and
//! partition (or to another topic), resumably, with a loop guard.
//!
//! Progress is the replay group's committed offsets on the dead-letter topic
//! (see [`super::handled`]), committed after each batch's sends are
//! acknowledged: an interrupted replay run again with the same `--group`
//! continues where it stopped. A letter a replay leaves alone (filtered out,
//! held by the loop guard, without a source topic) keeps the committed offset
//! in front of it, so a later replay still finds it, unless `skip_unreplayed`
//! says to mark it handled; letters replayed past it are remembered and not
//! sent again. A replayed record carries `ordo.replay.count`; a dead letter
//! whose record was already replayed `max_replays` times is not replayed again.
//! A letter repeating a source record seen before it in the scan (see
//! [`super::sources`]) is never sent: the record is replayed once.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use super::headers;
use super::read::{Filter, Letter, ReadError, Scan};

const BATCH: usize = 500;

/// What a replay does.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Another topic to send to; by default each letter's source topic and partition.
    pub to: Option<String>,
    pub filter: Filter,
    /// Show what would be replayed; send and commit nothing.
    pub dry_run: bool,
    /// A letter whose record was replayed this many times already is left alone.
    pub max_replays: u32,
    /// The consumer group holding the replay's progress.
    pub group: String,
    /// Mark the letters this replay does not send (filtered out, looping,
    /// unroutable) handled, so later replays pass them by.
    pub skip_unreplayed: bool,
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub scanned: u64,
    pub replayed: u64,
    pub filtered_out: u64,
    /// Left alone by the loop guard.
    pub looping: u64,
    /// Without a source topic header (and no `--to`).
    pub unroutable: u64,
    /// Handled by an earlier replay of the same group: not sent again.
    pub already_handled: u64,
    /// Not replayed but marked handled (`skip_unreplayed`).
    pub skipped: u64,
    /// Letters repeating a source record seen before them in the scan: they
    /// share its fate (marked handled when it was replayed or handled, left
    /// alone when it was), and are never sent.
    pub copies: u64,
    /// Why the replay stopped before the end, if it did.
    pub stopped_early: Option<String>,
}

/// A replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("cannot create the producer: {0}")]
    Producer(#[source] rdkafka::error::KafkaError),
    #[error("cannot send dead letter {partition}/{offset} to {topic}: {reason}; progress up to the previous batch is saved")]
    Send {
        partition: i32,
        offset: i64,
        topic: String,
        reason: String,
    },
}

/// The record a letter becomes: its original key, value and headers (without
/// Ordo's dead-letter headers), `ordo.replay.count` one higher.
fn record_headers(letter: &Letter) -> OwnedHeaders {
    let ours = [
        headers::SOURCE_TOPIC,
        headers::SOURCE_PARTITION,
        headers::SOURCE_OFFSET,
        headers::SOURCE_TIMESTAMP,
        headers::ERROR_CLASS,
        headers::ERROR_MESSAGE,
        headers::ATTEMPTS,
        headers::ORDO_VERSION,
        headers::REPLAYS,
        headers::LEASE_EPOCH,
        headers::EVENT_TYPE,
        headers::ROUTE,
    ];
    let mut hs = OwnedHeaders::new();
    for (k, v) in letter
        .raw_headers
        .iter()
        .filter(|(k, _)| !ours.contains(&k.as_str()))
    {
        hs = hs.insert(Header {
            key: k,
            value: v.as_deref(),
        });
    }
    let count = (letter.replays + 1).to_string();
    hs.insert(Header {
        key: headers::REPLAYS,
        value: Some(&count),
    })
}

/// Replays the letters of `dlq_topic` that `options` select; `progress` is told
/// of each letter scanned.
pub async fn replay(
    client: &ClientConfig,
    dlq_topic: &str,
    options: &ReplayOptions,
    progress: &indicatif::ProgressBar,
    mut on_letter: impl FnMut(&Letter, &str),
) -> Result<ReplayReport, ReplayError> {
    let mut scan = Scan::open(client, dlq_topic, Some(&options.group))?;
    progress.set_length(scan.len());
    let mut producer_cfg = client.clone();
    producer_cfg
        .set("enable.idempotence", "true")
        .set("acks", "all");
    let producer: FutureProducer = producer_cfg.create().map_err(ReplayError::Producer)?;
    let mut report = ReplayReport::default();
    let mut pending = Vec::new();
    // Each source record seen: whether its letter was (or, dry, would be) handled.
    let mut seen: std::collections::HashMap<super::sources::Source, bool> =
        std::collections::HashMap::new();
    loop {
        let letter = scan.next_letter()?;
        let mut done = letter.is_none();
        if let Some(letter) = letter {
            report.scanned += 1;
            progress.inc(1);
            let source = letter.source();
            let copy_of_handled = seen.get(&source).copied();
            if scan.was_handled(&letter) {
                report.already_handled += 1;
                seen.insert(source, true);
            } else if !options.dry_run && !scan.can_handle(&letter) {
                report.stopped_early = Some(format!(
                    "partition {} has too many letters handled out of order above its committed offset to record more; replay what was left alone (or use --skip-unreplayed), then run again",
                    letter.partition
                ));
                done = true;
            } else if let Some(handled) = copy_of_handled {
                report.copies += 1;
                on_letter(
                    &letter,
                    "not replayed: a copy of a letter of the same source record",
                );
                if handled && !options.dry_run {
                    scan.handle(&letter);
                }
            } else {
                let target = options.to.clone().or(letter.source_topic.clone());
                let left_alone = if !options.filter.matches(&letter) {
                    report.filtered_out += 1;
                    true
                } else if letter.replays >= options.max_replays {
                    report.looping += 1;
                    on_letter(
                        &letter,
                        "not replayed: its record was replayed max_replays times already",
                    );
                    true
                } else if letter.headers.get(headers::PAYLOAD).map(String::as_str)
                    == Some("withheld")
                {
                    report.unroutable += 1;
                    on_letter(
                        &letter,
                        "not replayed: its payload was withheld (masking is on and the record could not be parsed); the record is in the source topic at ordo.source.*",
                    );
                    true
                } else if target.is_none() {
                    report.unroutable += 1;
                    on_letter(
                        &letter,
                        "not replayed: no ordo.source.topic header; use --to",
                    );
                    true
                } else {
                    false
                };
                seen.insert(source, !left_alone || options.skip_unreplayed);
                if left_alone {
                    if options.skip_unreplayed {
                        report.skipped += 1;
                        if !options.dry_run {
                            scan.handle(&letter);
                        }
                    }
                } else if let Some(target) = target {
                    report.replayed += 1;
                    on_letter(
                        &letter,
                        if options.dry_run {
                            "would replay"
                        } else {
                            "replayed"
                        },
                    );
                    if !options.dry_run {
                        scan.handle(&letter);
                        pending.push((letter, target));
                    }
                }
            }
        }
        if pending.len() >= BATCH || (done && !pending.is_empty()) {
            send_all(&producer, &pending, options.to.is_none()).await?;
            pending.clear();
            scan.commit()?;
        }
        if done {
            if !options.dry_run {
                scan.commit()?;
            }
            return Ok(report);
        }
    }
}

async fn send_all(
    producer: &FutureProducer,
    letters: &[(Letter, String)],
    same_partition: bool,
) -> Result<(), ReplayError> {
    let sends = letters.iter().map(|(letter, topic)| {
        let mut rec: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).headers(record_headers(letter));
        if let Some(k) = &letter.raw_key {
            rec = rec.key(k);
        }
        if let Some(v) = &letter.raw_value {
            rec = rec.payload(v);
        }
        if same_partition {
            if let Some(p) = letter.source_partition {
                rec = rec.partition(p);
            }
        }
        if let Some(t) = letter
            .headers
            .get(headers::SOURCE_TIMESTAMP)
            .and_then(|t| t.parse().ok())
        {
            rec = rec.timestamp(t);
        }
        async move {
            producer
                .send(rec, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| ReplayError::Send {
                    partition: letter.partition,
                    offset: letter.offset,
                    topic: topic.clone(),
                    reason: e.to_string(),
                })
        }
    });
    futures::future::try_join_all(sends).await?;
    Ok(())
}
