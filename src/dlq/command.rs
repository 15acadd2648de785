//! `ordo dlq inspect` and `ordo dlq replay`: what they print. The letters are
//! read by [`super::read`] and sent back by [`super::replay`]; this module
//! only shows them, a line (or a JSON object) per letter and a summary per topic.

use std::collections::hash_map::{Entry, HashMap};

use rdkafka::ClientConfig;

use super::read::{Filter, ReadError, Scan};
use super::replay::{ReplayError, ReplayOptions};
use super::sources::Source;

/// Why a `dlq` command stopped.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("cannot render a letter as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("reading the dead-letter topic stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Prints the letters of `topics` that `filter` selects, at most `limit`,
/// each source record once (the first letter written for it) unless
/// `all_copies`; a summary per topic goes to stderr.
pub async fn inspect(
    client: &ClientConfig,
    topics: Vec<String>,
    filter: &Filter,
    json: bool,
    limit: Option<usize>,
    all_copies: bool,
) -> Result<(), CommandError> {
    let mut shown = 0usize;
    if !json {
        println!(
            "{:<24} {:<40} {:>7}  error",
            "dead letter", "source", "replays"
        );
    }
    for topic in topics {
        let client = client.clone();
        let mut scan =
            tokio::task::spawn_blocking(move || Scan::open(&client, &topic, None)).await??;
        // The first letter of each source record seen.
        let mut first: HashMap<Source, (i32, i64)> = HashMap::new();
        let (mut letters, mut copies) = (0u64, 0u64);
        while let Some(letter) = tokio::task::block_in_place(|| scan.next_letter())? {
            if !filter.matches(&letter) {
                continue;
            }
            letters += 1;
            let copy_of = match first.entry(letter.source()) {
                Entry::Occupied(e) => Some(*e.get()),
                Entry::Vacant(e) => {
                    e.insert((letter.partition, letter.offset));
                    None
                }
            };
            if copy_of.is_some() {
                copies += 1;
            }
            if (copy_of.is_some() && !all_copies) || limit.is_some_and(|l| shown >= l) {
                continue;
            }
            shown += 1;
            if json {
                let mut value = serde_json::to_value(&letter)?;
                if let (Some((p, o)), Some(object)) = (copy_of, value.as_object_mut()) {
                    object.insert(
                        "copy_of".into(),
                        serde_json::json!({ "partition": p, "offset": o }),
                    );
                }
                println!("{value}");
                continue;
            }
            let source = format!(
                "{}/{}/{}",
                letter.source_topic.as_deref().unwrap_or("?"),
                letter
                    .source_partition
                    .map_or("?".into(), |p| p.to_string()),
                letter.source_offset.map_or("?".into(), |o| o.to_string()),
            );
            let mut error = letter.error_message.clone().unwrap_or_default();
            if error.chars().count() > 160 {
                error = error.chars().take(157).collect::<String>() + "...";
            }
            if let Some((p, o)) = copy_of {
                error = format!("(a copy of {}/{p}/{o}) {error}", scan.topic);
            }
            println!(
                "{:<24} {source:<40} {:>7}  {error}",
                format!("{}/{}/{}", scan.topic, letter.partition, letter.offset),
                letter.replays
            );
        }
        eprintln!(
            "{}: {letters} letters, {} source records{}",
            scan.topic,
            letters - copies,
            match (copies, all_copies) {
                (0, _) => String::new(),
                (n, false) => format!(
                    "; {n} letters repeat a source record lettered before them and are not shown (--all-copies shows them)"
                ),
                (n, true) => format!("; {n} letters repeat a source record lettered before them"),
            }
        );
    }
    Ok(())
}

/// Replays the letters of `topics` as `options` say, with a progress bar
/// and a summary line per topic.
pub async fn replay(
    client: &ClientConfig,
    topics: Vec<String>,
    options: &ReplayOptions,
) -> Result<(), CommandError> {
    let dry_run = options.dry_run;
    for topic in topics {
        let progress = indicatif::ProgressBar::new(0).with_message(topic.clone());
        let report = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(super::replay::replay(
                client,
                &topic,
                options,
                &progress,
                |letter, what| {
                    progress.suspend(|| {
                        println!("{what}: {topic}/{}/{}", letter.partition, letter.offset)
                    })
                },
            ))
        })?;
        progress.finish_and_clear();
        let left_alone = report.filtered_out + report.looping + report.unroutable;
        println!(
            "{topic}: scanned {}, {} {}, filtered out {}, left alone by the loop guard {}, without a source topic {}, handled by an earlier replay {}, copies of a source record seen before {}; {}",
            report.scanned,
            if dry_run { "would replay" } else { "replayed" },
            report.replayed,
            report.filtered_out,
            report.looping,
            report.unroutable,
            report.already_handled,
            report.copies,
            match (options.skip_unreplayed, dry_run) {
                (true, false) => format!("{} left alone marked handled (--skip-unreplayed)", report.skipped),
                (true, true) => format!("{} left alone would be marked handled (--skip-unreplayed)", report.skipped),
                (false, _) => format!("{left_alone} left alone stay for a later replay"),
            }
        );
        if let Some(why) = &report.stopped_early {
            println!("{topic}: stopped before the end: {why}");
        }
    }
    Ok(())
}
