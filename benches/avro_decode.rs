//! Decode + resolve of one Avro record, per record: Ordo's Avro format
//! (framing, cached writer schema, per-id compatibility verdict and plan,
//! the body rendered to the reader schema's JSON with logical types) against
//! plain `apache-avro` decoding the same bytes into a value (no resolution,
//! no JSON), measured in the same run.
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
