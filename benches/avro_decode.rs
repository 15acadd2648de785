//! Decode + resolve of one Avro record, per record: Ordo's Avro format
//! (framing, cached writer schema, per-id compatibility check, decode,
//! resolution to the reader schema, JSON with logical types) against plain
//! `apache-avro` on the same bytes, measured in the same run.
//!
//! `cargo bench --bench avro_decode`; figures and how to read them in BENCHMARKS.md.

mod support;

use std::hint::black_box;

use apache_avro::reader::datum::GenericDatumReader;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ordo::demo::orders;
use support::AvroOrders;

fn bench(c: &mut Criterion) {
    let avro = AvroOrders::start();
    for writer in [1usize, 3] {
        let framed = avro.record(writer);
        let body = framed[5..].to_vec();
        let writer_schema = orders::schema(writer);

        let mut group = c.benchmark_group(format!("decode_v{writer}_as_v3"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("apache_avro_writer_only", |b| {
            let datum = GenericDatumReader::builder(&writer_schema)
                .build()
                .expect("reader");
            b.iter(|| datum.read_value(&mut black_box(&body[..])).expect("value"))
        });
        if writer == 3 {
            // The share of the JSON rendering (logical types as text) in Ordo's figure.
            let value = GenericDatumReader::builder(&writer_schema)
                .build()
                .and_then(|r| r.read_value(&mut &body[..]))
                .expect("value");
            let names = ordo::decode::avro::json::names_of(&writer_schema).expect("names");
            group.bench_function("ordo_to_json_only", |b| {
                b.iter(|| {
                    ordo::decode::avro::json::to_json(black_box(&value), &writer_schema, &names)
                })
            });
        }
        group.bench_function("block_on_empty_future", |b| {
            b.iter(|| avro.runtime.block_on(async {}))
        });
        group.bench_function("ordo_avro_format", |b| {
            b.iter(|| avro.decode(black_box(&framed)))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
