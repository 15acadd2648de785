//! Kafka for tests: librdkafka's in-process mock cluster (with the group's
//! initial rebalance delay set to 0), or an external broker when
//! `TEST_KAFKA_BOOTSTRAP_SERVERS` is set.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

pub use ordo::demo::mock::MockCluster;

pub enum Kafka {
    Mock(MockCluster),
    External(String),
}

impl Kafka {
    /// The mock cluster, or the external broker if the env var names one.
    pub fn start() -> Kafka {
        match std::env::var("TEST_KAFKA_BOOTSTRAP_SERVERS") {
            Ok(s) if !s.trim().is_empty() => Kafka::External(s),
            _ => Kafka::Mock(MockCluster::start(3).expect("mock cluster")),
        }
    }

    pub fn bootstrap(&self) -> String {
        match self {
            Kafka::Mock(m) => m.bootstrap_servers().to_string(),
            Kafka::External(s) => s.clone(),
        }
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        match self {
            Kafka::Mock(m) => m.create_topic(name, partitions).expect("create topic"),
            Kafka::External(servers) => {
                let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
                    .set("bootstrap.servers", servers)
                    .create()
                    .expect("admin client");
                let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
                // On a thread of its own: callers may be inside a runtime.
                std::thread::scope(|s| {
                    s.spawn(|| {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .expect("runtime");
                        let res = rt
                            .block_on(admin.create_topics([&topic], &AdminOptions::new()))
                            .expect("create topics");
                        for r in res {
                            r.expect("topic created");
                        }
                    })
                    .join()
                    .expect("topic creation")
                });
            }
        }
    }

    /// Produces records to their partitions in order and waits for all.
    pub fn produce(&self, topic: &str, records: &[super::data::Produced]) {
        ordo::demo::produce(&self.bootstrap(), topic, records).expect("produce");
    }

    /// Writes `m` again, key, value and headers, to its topic and partition:
    /// a second letter for one source record, as a crash after the broker's
    /// acknowledgement leaves.
    pub fn produce_copy(&self, m: &rdkafka::message::OwnedMessage) {
        use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
        use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("producer");
        let mut headers = OwnedHeaders::new();
        if let Some(hs) = m.headers() {
            for h in hs.iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(m.topic())
            .partition(m.partition())
            .headers(headers);
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        if let Some(v) = m.payload() {
            record = record.payload(v);
        }
        producer.send(record).map_err(|(e, _)| e).expect("send");
        producer.flush(Duration::from_secs(30)).expect("flush");
    }

    /// High watermark of each partition.
    pub fn high_watermarks(&self, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("consumer");
        (0..partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .expect("watermarks")
                    .1
            })
            .collect()
    }

    /// Every record of `topic` (all partitions, up to their high
    /// watermarks), once at least `count` are there (waiting up to 60 s for
    /// them; fewer are returned after that).
    pub fn read_all(&self, topic: &str, count: usize) -> Vec<rdkafka::message::OwnedMessage> {
        use rdkafka::Message;
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", super::unique("reader"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let start = std::time::Instant::now();
        let partitions = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata")
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len() as i32);
        let highs = loop {
            let highs: Vec<i64> = (0..partitions)
                .map(|p| {
                    consumer
                        .fetch_watermarks(topic, p, Duration::from_secs(10))
                        .expect("watermarks")
                        .1
                })
                .collect();
            if highs.iter().sum::<i64>() as usize >= count
                || start.elapsed() > Duration::from_secs(60)
            {
                break highs;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        let mut next = vec![0i64; partitions as usize];
        let mut out = Vec::new();
        while next.iter().zip(&highs).any(|(n, h)| n < h) {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "reading {topic}: at {next:?} of {highs:?} after 120 s"
            );
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    next[m.partition() as usize] = m.offset() + 1;
                    out.push(m.detach());
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        out.retain(|m| m.offset() < highs[m.partition() as usize]);
        out.sort_by_key(|m| (m.partition(), m.offset()));
        out
    }

    /// The group's committed offsets (Kafka's advisory copy).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", group)
            .create()
            .expect("consumer");
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let got = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed");
        (0..partitions)
            .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
                Some(rdkafka::Offset::Offset(o)) => o,
                _ => -1,
            })
            .collect()
    }
}

/// Produces `records` at `per_second`, in order per partition.
pub fn produce_at(
    bootstrap: &str,
    topic: &str,
    records: &[super::data::Produced],
    per_second: usize,
) {
    let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let start = std::time::Instant::now();
    for (i, r) in records.iter().enumerate() {
        let due = start + Duration::from_secs_f64(i as f64 / per_second as f64);
        if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
            producer.poll(wait);
        }
        let mut rec = rdkafka::producer::BaseRecord::to(topic)
            .partition(r.partition)
            .payload(&r.payload);
        if let Some(k) = &r.key {
            rec = rec.key(k);
        }
        producer.send(rec).map_err(|(e, _)| e).unwrap();
        producer.poll(Duration::ZERO);
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(60)).unwrap();
}

/// One record as produced: partition, key, payload (None: a tombstone), headers.
#[derive(Clone)]
pub struct Raw {
    pub partition: i32,
    pub key: Vec<u8>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(&'static str, Vec<u8>)>,
}

/// Produces `records` in order per partition, headers and tombstones as given.
pub fn produce_raw(bootstrap: &str, topic: &str, records: &[Raw]) {
    let producer: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for r in records {
        let mut hs = rdkafka::message::OwnedHeaders::new();
        for (k, v) in &r.headers {
            hs = hs.insert(rdkafka::message::Header {
                key: k,
                value: Some(v),
            });
        }
        let mut rec: rdkafka::producer::BaseRecord<'_, [u8], [u8]> =
            rdkafka::producer::BaseRecord::to(topic)
                .partition(r.partition)
                .key(&r.key[..])
                .headers(hs);
        if let Some(p) = &r.payload {
            rec = rec.payload(&p[..]);
        }
        producer.send(rec).map_err(|(e, _)| e).unwrap();
        producer.poll(Duration::ZERO);
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).unwrap();
}
