//! JSON log lines whose fields keep their types: numbers as numbers, lists
//! as arrays.
//!
//! tracing-subscriber's JSON format writes every value it cannot type as
//! its `Debug` text, and `tracing` has no stable way to record a list. A
//! list is recorded here as a [`List`] (through `record_error`, the one
//! stable visitor method that hands over a value that can be downcast), and
//! this formatter writes it as a JSON array; text lines show it as
//! `[a, b]`. Everything else is laid out as tracing-subscriber's flattened
//! JSON lays it out: `timestamp`, `level`, the event's fields, `target`,
//! and `span` (the current span's fields and `name`).

use std::fmt;

use serde::ser::{SerializeMap, Serializer as _};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// A list field: `topics = List::strings(&topics).field()`.
#[derive(Debug, Clone, PartialEq)]
pub struct List(Vec<serde_json::Value>);

impl List {
    /// A list of texts.
    pub fn strings<I>(items: I) -> List
    where
        I: IntoIterator,
        I::Item: fmt::Display,
    {
        List(
            items
                .into_iter()
                .map(|i| serde_json::Value::String(i.to_string()))
                .collect(),
        )
    }

    /// A list of numbers.
    pub fn numbers<I: IntoIterator<Item = i64>>(items: I) -> List {
        List(items.into_iter().map(serde_json::Value::from).collect())
    }

    /// The value to give a `tracing` field.
    pub fn field(&self) -> &(dyn std::error::Error + 'static) {
        self
    }
}

impl fmt::Display for List {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match v {
                serde_json::Value::String(s) => f.write_str(s)?,
                other => write!(f, "{other}")?,
            }
        }
        f.write_str("]")
    }
}

/// Not an error: `record_error` is how a list reaches the formatter.
impl std::error::Error for List {}

/// The JSON line format.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        // Records of crates logging through `log` carry their own target.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        let span = span.map(|span| {
            let mut fields = span
                .extensions()
                .get::<FormattedFields<N>>()
                .and_then(|f| {
                    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(f).ok()
                })
                .unwrap_or_default();
            fields.insert("name".into(), span.name().into());
            fields
        });

        let mut out = Vec::with_capacity(256);
        let mut ser = serde_json::Serializer::new(&mut out);
        let write = |ser: &mut serde_json::Serializer<&mut Vec<u8>>| -> serde_json::Result<()> {
            let mut map = ser.serialize_map(None)?;
            map.serialize_entry("timestamp", &timestamp)?;
            map.serialize_entry("level", meta.level().as_str())?;
            let mut fields = Fields { map, state: Ok(()) };
            event.record(&mut fields);
            fields.state?;
            let mut map = fields.map;
            map.serialize_entry("target", meta.target())?;
            if let Some(span) = &span {
                map.serialize_entry("span", span)?;
            }
            map.end()
        };
        write(&mut ser).map_err(|_| fmt::Error)?;
        let line = std::str::from_utf8(&out).map_err(|_| fmt::Error)?;
        writeln!(writer, "{line}")
    }
}

/// Writes an event's fields into the line's map, each with its type.
struct Fields<M> {
    map: M,
    state: serde_json::Result<()>,
}

impl<M: SerializeMap<Error = serde_json::Error>> Fields<M> {
    fn entry<V: serde::Serialize + ?Sized>(&mut self, field: &Field, value: &V) {
        if self.state.is_ok() {
            self.state = self.map.serialize_entry(field.name(), value);
        }
    }
}

impl<M: SerializeMap<Error = serde_json::Error>> Visit for Fields<M> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.entry(field, &value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, &value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, &value);
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.entry(field, &value);
    }
    fn record_u128(&mut self, field: &Field, value: u128) {
        self.entry(field, &value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, &value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, value);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        match value.downcast_ref::<List>() {
            Some(list) => self.entry(field, &list.0),
            None => self.entry(field, &value.to_string()),
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, &format_args!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::logging::{subscriber, LogFormat};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(format: LogFormat, f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let sub = subscriber(
            tracing_subscriber::EnvFilter::new("info"),
            format,
            false,
            move || buf.clone(),
        );
        tracing::subscriber::with_default(sub, f);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn fields_keep_their_types_and_lists_are_arrays() {
        let topics = vec!["accounts".to_string(), "orders".to_string()];
        let text = logged(LogFormat::Json, || {
            let span = tracing::info_span!("record", topic = "orders", partition = 3_i32);
            let _g = span.enter();
            tracing::info!(
                topics = List::strings(&topics).field(),
                high_watermarks = List::numbers([12, 0]).field(),
                next_offset = 25_720_i64,
                paused = true,
                ratio = 0.5,
                error = %"a text",
                "consuming"
            );
        });
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect(&text);
        assert_eq!(line["message"], "consuming");
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["topics"], serde_json::json!(["accounts", "orders"]));
        assert_eq!(line["high_watermarks"], serde_json::json!([12, 0]));
        assert_eq!(line["next_offset"], 25_720);
        assert_eq!(line["paused"], true);
        assert_eq!(line["ratio"], 0.5);
        assert_eq!(line["error"], "a text");
        assert_eq!(line["target"], module_path!());
        assert_eq!(line["span"]["name"], "record");
        assert_eq!(line["span"]["partition"], 3);
        assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }

    #[test]
    fn text_lines_show_a_list_in_brackets() {
        let text = logged(LogFormat::Text, || {
            tracing::info!(topics = List::strings(["a", "b"]).field(), "consuming");
        });
        assert!(text.contains("topics=[a, b]"), "{text}");
    }
}
