//! Decode + resolve of one Avro record, per record: Ordo's Avro format
//! (framing, cached writer schema, per-id compatibility check, decode,
//! resolution to the reader schema, JSON with logical types) against plain
//! `apache-avro` on the same bytes, measured in the same run.
//!
//! `cargo bench --bench avro_decode`; figures and how to read them in BENCHMARKS.md.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;

use apache_avro::reader::datum::GenericDatumReader;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ordo::decode::avro::{AvroFormat, ReaderSchema, RegistryConfig};
use ordo::demo::orders;

fn bench(c: &mut Criterion) {
    let registry = ordo_registry::Registry::new();
    let server = registry
        .spawn(([127, 0, 0, 1], 0).into())
        .expect("registry");
    let ids: Vec<u32> = orders::SCHEMAS
        .iter()
        .map(|s| registry.register("orders-value", s).expect("register"))
        .collect();
    let config: RegistryConfig =
        serde_json::from_value(serde_json::json!({ "urls": [server.url()] })).expect("config");
    let reader =
        ReaderSchema::parse(Path::new("orders-v3.avsc"), orders::SCHEMAS[2]).expect("reader");
    let format =
        AvroFormat::new(&config, HashMap::from([("orders".to_string(), reader)])).expect("format");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    for writer in [1usize, 3] {
        let framed = orders::encode(writer, ids[writer - 1], "acct-0042", 1234);
        let body = framed[5..].to_vec();
        let writer_schema = orders::schema(writer);
        // Warm the writer schema cache, as in steady state.
        rt.block_on(format.decode("orders", &framed))
            .expect("decodes");

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
            b.iter(|| rt.block_on(async {}))
        });
        group.bench_function("ordo_avro_format", |b| {
            b.iter(|| {
                rt.block_on(format.decode("orders", black_box(&framed)))
                    .expect("decodes")
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
