//! The baselines a throughput case is measured against in the same run: a
//! bare librdkafka consumer reading the topic, and `COPY` (text and binary)
//! of the very same rows into a table of the event store's shape.

use super::*;

/// Records a bare consumer reads per second, from the start of every partition to its high watermark.
pub(super) fn bare_consumer_rate(bootstrap: &str, topic: &str, hw: &[i64]) -> f64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-bare")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..hw.len() as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let total: i64 = hw.iter().sum();
    let mut read = 0i64;
    let started = Instant::now();
    while read < total {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(_)) => read += 1,
            Some(Err(e)) => panic!("bare consumer: {e}"),
            None => panic!("bare consumer: nothing for 10 s at {read} of {total}"),
        }
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// Rows per second of `COPY ... FROM STDIN` of `data` into a fresh table.
async fn copy_rate(
    client: &tokio_postgres::Client,
    table: &str,
    format: &str,
    data: &[u8],
    rows: i64,
) -> f64 {
    client
        .batch_execute(&format!("CREATE TABLE {table} {}", copy_table()))
        .await
        .unwrap();
    quiesce(client).await;
    let started = Instant::now();
    let sink = client
        .copy_in::<_, bytes::Bytes>(&format!(
            "COPY {table} {COPY_COLUMNS} FROM STDIN (FORMAT {format})"
        ))
        .await
        .unwrap();
    futures::pin_mut!(sink);
    for chunk in data.chunks(1 << 20) {
        sink.send(bytes::Bytes::copy_from_slice(chunk))
            .await
            .unwrap();
    }
    let copied = sink.finish().await.unwrap() as i64;
    assert_eq!(copied, rows);
    copied as f64 / started.elapsed().as_secs_f64()
}

/// Everything `COPY ... TO STDOUT` of `query` writes.
async fn copy_out(client: &tokio_postgres::Client, query: &str, format: &str) -> Vec<u8> {
    let stream = client
        .copy_out(&format!("COPY ({query}) TO STDOUT (FORMAT {format})"))
        .await
        .unwrap();
    futures::pin_mut!(stream);
    let mut out = vec![];
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

/// Text and binary `COPY` rates of the case's rows: the landed event store
/// itself, or (projection) every version of every key as the JSON producer
/// writes them.
pub(super) async fn copy_rates(
    client: &tokio_postgres::Client,
    case: &Case,
    topic: &str,
    expected: &HashMap<String, i64>,
) -> (f64, f64) {
    let rows: i64 = expected.values().sum();
    if case.projection {
        // The same events as rows, staged (untimed) by text COPY.
        let mut text = String::with_capacity(rows as usize * 160);
        for (key, last) in expected {
            for v in 1..=*last {
                let payload = if case.typed {
                    String::from_utf8(ordo::demo::order_events::payload(key, v)).unwrap()
                } else if case.orders {
                    ordo::demo::orders::expected(3, 3, key, v).to_string()
                } else {
                    String::from_utf8(ordo::demo::data::payload(key, v)).unwrap()
                };
                text.push_str(&format!(
                    "{key}\t{v}\t{}\t{topic}\t0\t{v}\t\\N\n",
                    payload.replace('\\', "\\\\")
                ));
            }
        }
        client
            .batch_execute(&format!("CREATE TABLE events {}", copy_table()))
            .await
            .unwrap();
        let sink = client
            .copy_in::<_, bytes::Bytes>(&format!("COPY events {COPY_COLUMNS} FROM STDIN"))
            .await
            .unwrap();
        futures::pin_mut!(sink);
        sink.send(bytes::Bytes::from(text)).await.unwrap();
        sink.finish().await.unwrap();
    }
    let query = "SELECT stream, version, payload, topic, partition, \"offset\", event_time FROM events ORDER BY position";
    let text = copy_out(client, query, "text").await;
    let binary = copy_out(client, query, "binary").await;
    let text_rate = copy_rate(client, "copied_text", "text", &text, rows).await;
    let binary_rate = copy_rate(client, "copied_binary", "binary", &binary, rows).await;
    (text_rate, binary_rate)
}
