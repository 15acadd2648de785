//! What the benchmarks share: Ordo's Avro format reading order events with
//! reader schema v3, its writer schemas registered in an in-process registry.

use std::collections::HashMap;
use std::path::Path;

use ordo::decode::avro::{AvroFormat, ReaderSchema, RegistryConfig};
use ordo::demo::orders;

/// The format, the ids of writer schemas v1..v3 (subject `orders-value`), the
/// registry serving them (kept running) and a runtime to decode on.
pub struct AvroOrders {
    pub format: AvroFormat,
    pub ids: Vec<u32>,
    pub runtime: tokio::runtime::Runtime,
    _server: ordo_registry::Running,
}

impl AvroOrders {
    pub fn start() -> AvroOrders {
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
        let format = AvroFormat::new(&config, HashMap::from([("orders".to_string(), reader)]))
            .expect("format");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        AvroOrders {
            format,
            ids,
            runtime,
            _server: server,
        }
    }

    /// An order event written with schema `writer`, framed, its writer schema
    /// already cached (steady state).
    pub fn record(&self, writer: usize) -> Vec<u8> {
        let framed = orders::encode(writer, self.ids[writer - 1], "acct-0042", 1234);
        self.decode(&framed);
        framed
    }

    /// Decodes one framed record of topic `orders`.
    pub fn decode(&self, framed: &[u8]) -> String {
        self.runtime
            .block_on(self.format.decode("orders", framed))
            .expect("decodes")
    }
}
