//! The span of the log lines about one record: where it is (topic, partition,
//! offset), its key when decoded, and the correlation and causation ids taken
//! from the configured headers.
//!
//! It is made when there is something to say about the record (it failed to
//! decode, went to the dead-letter topic, stopped its partition), not for
//! every record: with a subscriber that formats span fields, as the JSON and
//! text formats do, an eager span per record costs 0.4x to 0.7x of decoding
//! an Avro record (BENCHMARKS.md, `cargo bench --bench telemetry`).

use crate::record::Record;

/// The record's span; `key` is Ordo's ordering key, once decoded.
pub fn record_span(
    r: &Record,
    key: Option<&str>,
    correlation_header: &str,
    causation_header: &str,
) -> tracing::Span {
    let text = |name: &str| {
        r.header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    tracing::info_span!(
        "record",
        topic = %r.topic,
        partition = r.partition,
        offset = r.offset,
        key,
        correlation_id = text(correlation_header),
        causation_id = text(causation_header),
    )
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::EnvFilter;

    use super::*;
    use crate::telemetry::logging::LogFormat;

    /// Log output kept in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    fn record(headers: Vec<(String, Option<Vec<u8>>)>) -> Record {
        Record {
            topic: "orders".into(),
            partition: 3,
            offset: 42,
            key: Some(b"acct-7".to_vec()),
            payload: None,
            headers,
            timestamp_ms: None,
        }
    }

    fn json_line_of(r: &Record, format: LogFormat) -> String {
        let out = Captured::default();
        let subscriber = crate::telemetry::logging::subscriber(
            EnvFilter::new("info"),
            format,
            false,
            out.clone(),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = record_span(r, Some("acct-7"), "x-correlation", "x-causation");
            span.in_scope(|| tracing::warn!("about this record"));
        });
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn json_lines_carry_the_record_span_with_its_ids() {
        let r = record(vec![
            ("x-correlation".into(), Some(b"corr-1".to_vec())),
            ("x-causation".into(), Some(b"cause-9".to_vec())),
        ]);
        let text = json_line_of(&r, LogFormat::Json);
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect(&text);
        assert_eq!(line["message"], "about this record");
        let span = &line["span"];
        assert_eq!(span["name"], "record");
        assert_eq!(span["topic"], "orders");
        assert_eq!(span["partition"], 3);
        assert_eq!(span["offset"], 42);
        assert_eq!(span["key"], "acct-7");
        assert_eq!(span["correlation_id"], "corr-1");
        assert_eq!(span["causation_id"], "cause-9");
    }

    #[test]
    fn a_record_without_the_headers_has_no_ids_and_text_lines_carry_the_span() {
        let r = record(vec![]);
        let text = json_line_of(&r, LogFormat::Json);
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect(&text);
        assert!(line["span"].get("correlation_id").is_none(), "{line}");
        let text = json_line_of(&r, LogFormat::Text);
        assert!(
            text.contains("record{topic=orders partition=3 offset=42 key=\"acct-7\"}"),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'), "no colour codes: {text}");
    }
}
