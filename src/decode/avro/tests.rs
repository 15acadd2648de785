//! The Avro decoder against an in-process registry: evolution, logical types,
//! every error case, outages, and fuzzed input.

use std::collections::HashMap;
use std::path::Path;

use ordo_registry::{Level, Registry, Running};
use proptest::prelude::*;

use super::*;
use crate::demo::orders;

const TOPIC: &str = "orders";

struct Fixture {
    registry: Registry,
    server: Running,
    ids: [u32; 3],
}

fn fixture() -> Fixture {
    let registry = Registry::new();
    let server = registry.spawn("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut ids = [0; 3];
    for (i, text) in orders::SCHEMAS.iter().enumerate() {
        ids[i] = registry.register("orders-value", text).unwrap();
    }
    Fixture {
        registry,
        server,
        ids,
    }
}

fn registry_config(url: &str) -> RegistryConfig {
    serde_json::from_value(serde_json::json!({ "urls": [url], "timeout_ms": 2000 })).unwrap()
}

fn format(url: &str, reader_version: usize) -> AvroFormat {
    let file = format!("schemas/orders-v{reader_version}.avsc");
    let reader =
        ReaderSchema::parse(Path::new(&file), orders::SCHEMAS[reader_version - 1]).unwrap();
    AvroFormat::new(
        &registry_config(url),
        HashMap::from([(TOPIC.to_string(), reader)]),
    )
    .unwrap()
}

/// The JSON text a decode rendered, as a value to compare.
fn value(text: String) -> serde_json::Value {
    serde_json::from_str(&text).expect("the rendering is JSON")
}

#[tokio::test]
async fn every_version_resolves_to_reader_v3() {
    let f = fixture();
    let avro = format(&f.server.url(), 3);
    for writer in 1..=3 {
        for seq in [1, 2, 5, 6, 1000] {
            let bytes = orders::encode(writer, f.ids[writer - 1], "s-1", seq);
            let json = value(avro.decode(TOPIC, &bytes).await.unwrap());
            assert_eq!(
                json,
                orders::expected(writer, 3, "s-1", seq),
                "writer v{writer} seq {seq}"
            );
        }
    }
}

#[tokio::test]
async fn reader_v1_reads_v1_and_v2_and_refuses_v3() {
    let f = fixture();
    let avro = format(&f.server.url(), 1);
    for writer in 1..=2 {
        let bytes = orders::encode(writer, f.ids[writer - 1], "s-1", 4);
        let json = value(avro.decode(TOPIC, &bytes).await.unwrap());
        assert_eq!(json, orders::expected(writer, 1, "s-1", 4));
    }
    let bytes = orders::encode(3, f.ids[2], "s-1", 4);
    let e = avro.decode(TOPIC, &bytes).await.unwrap_err();
    assert!(
        matches!(e, AvroError::Incompatible { id, .. } if id == f.ids[2]),
        "{e}"
    );
    let text = e.to_string();
    assert!(text.contains(&format!("schema id {}", f.ids[2])), "{text}");
    assert!(text.contains("orders-v1.avsc"), "{text}");
    assert!(!e.is_transient());
}

#[tokio::test]
async fn framing_errors_are_named() {
    let f = fixture();
    let avro = format(&f.server.url(), 3);
    let e = avro.decode(TOPIC, b"").await.unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    let e = avro.decode(TOPIC, &[1, 0, 0, 0, 1, 2]).await.unwrap_err();
    assert!(e.to_string().contains("magic byte is 0x01"), "{e}");
    let e = avro.decode(TOPIC, &[0, 0, 1]).await.unwrap_err();
    assert!(e.to_string().contains("too short"), "{e}");
}

#[tokio::test]
async fn unknown_id_and_truncated_body() {
    let f = fixture();
    let avro = format(&f.server.url(), 3);
    let e = avro
        .decode(TOPIC, &orders::frame(999, &[2, 0]))
        .await
        .unwrap_err();
    assert!(matches!(e, AvroError::UnknownSchema { id: 999, .. }), "{e}");
    assert!(!e.is_transient());
    // Cut anywhere, including inside the optional note (`apache_avro` reads a
    // string cut short as null, which a union would accept): always an error.
    let whole = orders::encode(2, f.ids[1], "s-1", 4);
    for cut in 1..whole.len() - 5 {
        let bytes = &whole[..whole.len() - cut];
        let e = avro.decode(TOPIC, bytes).await.unwrap_err();
        assert!(
            matches!(e, AvroError::Body { id, .. } if id == f.ids[1]),
            "cut {cut}: {e}"
        );
    }
}

#[tokio::test]
async fn an_outage_stops_only_ids_not_yet_cached() {
    let f = fixture();
    let addr = f.server.addr();
    let avro = format(&f.server.url(), 3);
    let v1 = orders::encode(1, f.ids[0], "s-1", 3);
    avro.decode(TOPIC, &v1).await.unwrap();
    f.server.stop();
    // Seen before: decodes from the cache.
    assert_eq!(
        value(avro.decode(TOPIC, &v1).await.unwrap()),
        orders::expected(1, 3, "s-1", 3)
    );
    // Not seen: a transient error naming the id.
    let v2 = orders::encode(2, f.ids[1], "s-1", 3);
    let e = avro.decode(TOPIC, &v2).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(
        e.to_string().contains(&format!("schema id {}", f.ids[1])),
        "{e}"
    );
    // Back on the same port: the same record decodes.
    let _back = f.registry.spawn(addr).unwrap();
    assert_eq!(
        value(avro.decode(TOPIC, &v2).await.unwrap()),
        orders::expected(2, 3, "s-1", 3)
    );
}

#[tokio::test]
async fn second_url_is_used_when_the_first_is_down_and_basic_auth_works() {
    let registry = Registry::new().with_basic_auth("ordo", "pw");
    let server = registry.spawn("127.0.0.1:0".parse().unwrap()).unwrap();
    let id = registry
        .register("orders-value", orders::SCHEMAS[0])
        .unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let reader = ReaderSchema::parse(Path::new("v1.avsc"), orders::SCHEMAS[0]).unwrap();
    let config: RegistryConfig = serde_json::from_value(serde_json::json!({
        "urls": [dead_url, server.url()], "username": "ordo", "password": "pw",
    }))
    .unwrap();
    let avro = AvroFormat::new(&config, HashMap::from([(TOPIC.into(), reader)])).unwrap();
    let json = avro
        .decode(TOPIC, &orders::encode(1, id, "k", 1))
        .await
        .unwrap();
    assert_eq!(value(json), orders::expected(1, 1, "k", 1));

    // Wrong password: the registry refuses; retried later, not taken as an unknown id.
    let reader = ReaderSchema::parse(Path::new("v1.avsc"), orders::SCHEMAS[0]).unwrap();
    let config: RegistryConfig = serde_json::from_value(serde_json::json!({
        "urls": [server.url()], "username": "ordo", "password": "wrong",
    }))
    .unwrap();
    let avro = AvroFormat::new(&config, HashMap::from([(TOPIC.into(), reader)])).unwrap();
    let e = avro
        .decode(TOPIC, &orders::encode(1, id, "k", 1))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("401"), "{e}");
}

#[tokio::test]
async fn avro_keys_decode_to_text() {
    let f = fixture();
    f.registry.set_level(Level::None);
    let key_id = f.registry.register("orders-key", r#""string""#).unwrap();
    let record_key_id = f
        .registry
        .register(
            "other-key",
            r#"{"type":"record","name":"K","fields":[{"name":"tenant","type":"string"},{"name":"n","type":"long"}]}"#,
        )
        .unwrap();
    let avro = format(&f.server.url(), 3);
    let s = orders::datum(
        &Schema::parse_str(r#""string""#).unwrap(),
        apache_avro::types::Value::String("acct-7".into()),
    );
    assert_eq!(
        avro.decode_key(&orders::frame(key_id, &s)).await.unwrap(),
        "acct-7"
    );
    let schema = Schema::parse_str(
        r#"{"type":"record","name":"K","fields":[{"name":"tenant","type":"string"},{"name":"n","type":"long"}]}"#,
    )
    .unwrap();
    let body = orders::datum(
        &schema,
        apache_avro::types::Value::Record(vec![
            (
                "tenant".into(),
                apache_avro::types::Value::String("t1".into()),
            ),
            ("n".into(), apache_avro::types::Value::Long(9)),
        ]),
    );
    assert_eq!(
        avro.decode_key(&orders::frame(record_key_id, &body))
            .await
            .unwrap(),
        r#"{"n":9,"tenant":"t1"}"#
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random bytes, and valid records with bytes flipped, cut or appended:
    /// the decoder returns a value or an error, never panics, never hangs.
    #[test]
    fn fuzzed_input_never_panics(
        random in proptest::collection::vec(any::<u8>(), 0..64),
        writer in 1usize..=3,
        seq in 1i64..100_000,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
        tail in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        thread_local! {
            static FIXTURE: (tokio::runtime::Runtime, Fixture, AvroFormat) = {
                let f = fixture();
                let avro = format(&f.server.url(), 3);
                (runtime(), f, avro)
            };
        }
        FIXTURE.with(|(rt, f, avro)| {
            rt.block_on(async {
                let _ = avro.decode(TOPIC, &random).await;
                // Random bytes behind a valid header with a known id.
                let mut framed = orders::frame(f.ids[writer - 1], &random);
                let _ = avro.decode(TOPIC, &framed).await;
                let _ = avro.decode_key(&framed).await;
                // A valid record, mutated.
                let mut bytes = orders::encode(writer, f.ids[writer - 1], "s-9", seq);
                for (at, b) in &flips {
                    let i = 5 + at.index(bytes.len() - 5);
                    bytes[i] ^= b | 1;
                }
                let _ = avro.decode(TOPIC, &bytes).await;
                bytes.truncate(cut.index(bytes.len() + 1));
                let _ = avro.decode(TOPIC, &bytes).await;
                framed.extend_from_slice(&tail);
                let _ = avro.decode(TOPIC, &framed).await;
            });
        });
    }
}

#[tokio::test]
async fn a_registry_that_never_answers_times_out_as_transient() {
    let f = fixture();
    // Accepts connections and never replies.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let reader = ReaderSchema::parse(Path::new("v3.avsc"), orders::SCHEMAS[2]).unwrap();
    let config: RegistryConfig =
        serde_json::from_value(serde_json::json!({ "urls": [url], "timeout_ms": 300 })).unwrap();
    let avro = AvroFormat::new(&config, HashMap::from([(TOPIC.into(), reader)])).unwrap();
    let started = std::time::Instant::now();
    let e = avro
        .decode(TOPIC, &orders::encode(3, f.ids[2], "s", 1))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    drop(silent);
}

/// Serves `registry` over HTTPS with a certificate issued by a fresh private CA;
/// returns the URL and the CA's PEM.
async fn https_registry(registry: &Registry) -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let tls = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = registry.router();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(router);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("https://localhost:{port}"), ca_cert.pem())
}

#[tokio::test]
async fn https_with_a_private_ca() {
    let registry = Registry::new();
    let id = registry
        .register("orders-value", orders::SCHEMAS[2])
        .unwrap();
    let (url, ca_pem) = https_registry(&registry).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let bytes = orders::encode(3, id, "s", 1);
    let reader = || ReaderSchema::parse(Path::new("v3.avsc"), orders::SCHEMAS[2]).unwrap();

    let trusted: RegistryConfig =
        serde_json::from_value(serde_json::json!({ "urls": [url], "ca_file": ca_file })).unwrap();
    let avro = AvroFormat::new(&trusted, HashMap::from([(TOPIC.into(), reader())])).unwrap();
    assert_eq!(
        value(avro.decode(TOPIC, &bytes).await.unwrap()),
        orders::expected(3, 3, "s", 1)
    );

    // Without the CA the server's certificate is not trusted: nothing is decoded.
    let untrusted: RegistryConfig =
        serde_json::from_value(serde_json::json!({ "urls": [url] })).unwrap();
    let avro = AvroFormat::new(&untrusted, HashMap::from([(TOPIC.into(), reader())])).unwrap();
    let e = avro.decode(TOPIC, &bytes).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
}

#[tokio::test]
async fn a_pair_without_a_plan_decodes_through_the_general_path() {
    // A promotion inside a union (int to long in ["null", ...]) has no plan.
    let writer_text = r#"{"type":"record","name":"R","fields":[
        {"name":"n","type":["null","int"]},{"name":"s","type":"string"}]}"#;
    let reader_text = r#"{"type":"record","name":"R","fields":[
        {"name":"n","type":["null","long"]},{"name":"s","type":"string"},
        {"name":"added","type":"string","default":"d"}]}"#;
    let registry = Registry::new();
    let server = registry.spawn("127.0.0.1:0".parse().unwrap()).unwrap();
    let id = registry.register("orders-value", writer_text).unwrap();
    let writer = Schema::parse_str(writer_text).unwrap();
    let names = json::names_of(&writer).unwrap();
    let reader = ReaderSchema::parse(Path::new("r.avsc"), reader_text).unwrap();
    assert!(direct::Plan::new(&writer, &names, &reader.schema, &reader.names).is_err());
    let avro = AvroFormat::new(
        &registry_config(&server.url()),
        HashMap::from([(TOPIC.to_string(), reader)]),
    )
    .unwrap();
    let body = orders::datum(
        &writer,
        apache_avro::types::Value::Record(vec![
            (
                "n".into(),
                apache_avro::types::Value::Union(1, Box::new(apache_avro::types::Value::Int(7))),
            ),
            ("s".into(), apache_avro::types::Value::String("x".into())),
        ]),
    );
    let json = value(avro.decode(TOPIC, &orders::frame(id, &body)).await.unwrap());
    assert_eq!(json, serde_json::json!({"n": 7, "s": "x", "added": "d"}));
    // Its truncated body is refused on that path too.
    let e = avro
        .decode(TOPIC, &orders::frame(id, &body[..body.len() - 1]))
        .await
        .unwrap_err();
    assert!(matches!(e, AvroError::Body { .. }), "{e}");
}
