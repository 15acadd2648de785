//! The per-record cost of Ordo's telemetry, as the worker pays it for a
//! record that decodes and lands: the clock reads around the decode and order
//! stages, their histogram observations and the end-to-end observation. For
//! comparison, the span per record that Ordo does not make eagerly (its log
//! lines about a record make it when needed): the record's span with its
//! header lookups, formatted by the JSON subscriber at `info`. The baseline,
//! measured in the same run, is decoding the same record: Ordo's Avro format
//! on an order event written and read with schema v3.
//!
//! `cargo bench --bench telemetry`; figures in BENCHMARKS.md.

mod support;

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ordo::config::LogFormat;
use ordo::record::Record;
use ordo::telemetry::{logging, metrics::metrics, span};
use support::AvroOrders;
use tracing_subscriber::EnvFilter;

/// What the worker does for telemetry around one record that lands.
fn per_record() {
    let m = metrics();
    let decode_time = m.stage_seconds.with_label_values(&["decode"]);
    let order_time = m.stage_seconds.with_label_values(&["order"]);
    let e2e = m.end_to_end_seconds.with_label_values(&["orders"]);
    let started = Instant::now();
    decode_time.observe(started.elapsed().as_secs_f64());
    let started = Instant::now();
    order_time.observe(started.elapsed().as_secs_f64());
    e2e.observe(0.25);
}

/// A span per record, made eagerly with its key and entered once.
fn eager_span(record: &Record) {
    let span = span::record_span(record, Some("acct-0042"), "correlation-id", "causation-id");
    let _entered = span.enter();
}

/// A span per record made before decoding, the key recorded into it after,
/// and a clone instrumenting the decode.
fn eager_span_key_recorded(record: &Record) {
    let span = span::record_span(record, None, "correlation-id", "causation-id");
    let instrumented = span.clone();
    drop(instrumented.enter());
    span.record("key", "acct-0042");
}

fn bench(c: &mut Criterion) {
    let avro = AvroOrders::start();
    let framed = avro.record(3);
    let record = Record {
        topic: "orders".into(),
        partition: 3,
        offset: 123_456,
        key: Some(b"acct-0042".to_vec()),
        payload: Some(framed.clone()),
        headers: vec![
            (
                "traceparent".into(),
                Some(b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_vec()),
            ),
            (
                "correlation-id".into(),
                Some(b"3f1c2a9e-1b7d-4a51-9e0b-5d2c8f6a7b10".to_vec()),
            ),
        ],
        timestamp_ms: Some(1_795_000_000_000),
    };

    let mut group = c.benchmark_group("per_record");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_avro_v3", |b| {
        b.iter(|| avro.decode(black_box(&framed)))
    });
    let subscriber = logging::subscriber(
        EnvFilter::new("info"),
        LogFormat::Json,
        false,
        std::io::sink,
    );
    tracing::subscriber::with_default(subscriber, || {
        group.bench_function("ordo_telemetry", |b| b.iter(per_record));
        group.bench_function("eager_record_span_json_info", |b| {
            b.iter(|| eager_span(black_box(&record)))
        });
        group.bench_function("eager_record_span_key_recorded_json_info", |b| {
            b.iter(|| eager_span_key_recorded(black_box(&record)))
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
