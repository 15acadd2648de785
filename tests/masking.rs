//! Field masking before the sink: stored rows hold redacted, hashed and
//! encrypted values (the hash stable across a restart, the ciphertext
//! decryptable with the key), and no clear value of a masked field appears in
//! any log line, dead letter payload or dead letter header, whether the
//! record was refused by PostgreSQL, undecodable, or not even parseable.

mod support;

use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use hmac::Mac;
use rdkafka::message::{Headers, Message};
use support::data;
use support::kafka::{produce_raw, Kafka, Raw};
use support::ordo::{Ordo, Setup};
use support::postgres::TestDb;
use support::unique;

const HASH_KEY: &str = "a-test-hash-key-0123456789abcdef";
const AES_KEY_HEX: &str = "8f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const KEYS: usize = 12;

fn email(k: usize) -> String {
    format!("person{k:02}@example.com")
}
fn card(k: usize) -> String {
    format!("4111-0000-0000-{k:04}")
}
fn ssn(k: usize) -> String {
    format!("SSN-{k:03}-77-1234")
}

fn event(k: usize, v: i64, amount: i64) -> Raw {
    Raw {
        partition: (k % 2) as i32,
        key: format!("acct-{k:02}").into_bytes(),
        payload: Some(
            serde_json::json!({
                "id": k, "version": v, "amount": amount,
                "customer": {"email": email(k), "card": card(k), "ssn": ssn(k)}
            })
            .to_string()
            .into_bytes(),
        ),
        headers: vec![],
    }
}

fn hmac_hex(value: &str) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::KeyInit>::new_from_slice(HASH_KEY.as_bytes())
        .expect("hmac key");
    mac.update(value.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("hmac-sha256:{hex}")
}

fn decrypt(text: &str) -> String {
    let rest = text.strip_prefix("enc:v1:k2026:").expect("ciphertext form");
    let blob = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .expect("base64");
    let key: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&AES_KEY_HEX[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    let cipher = Aes256Gcm::new_from_slice(&key).expect("key");
    let (nonce, sealed) = blob.split_at(12);
    String::from_utf8(
        cipher
            .decrypt(&Nonce::try_from(nonce).expect("nonce"), sealed)
            .expect("decrypts"),
    )
    .expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_fields_are_stored_masked_and_never_appear_in_logs_or_dead_letters() {
    let kafka = Kafka::start();
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("hash.key"), format!("{HASH_KEY}\n")).expect("key");
    std::fs::write(dir.path().join("aes.key"), AES_KEY_HEX).expect("key");
    let setup = Setup {
        bootstrap: kafka.bootstrap(),
        group: unique("ordo"),
        topic: unique("customers"),
        db_url: db.url.clone(),
        mode: "event_store",
        table: "events".into(),
        dead_letter: true,
        tail: r#"[mask]
hash_key = { file = "hash.key" }
encryption_key = { file = "aes.key" }
encryption_key_id = "k2026"
fields = [
  { path = "customer.email", action = "hash" },
  { path = "customer.card", action = "encrypt" },
  { path = "customer.ssn", action = "redact" },
]
"#
        .into(),
        ..Setup::default()
    };
    let dlq = format!("{}.dlq", setup.topic);
    kafka.create_topic(&setup.topic, 2);
    kafka.create_topic(&dlq, 1);
    let config = setup.write(dir.path(), "ordo.toml");
    let client = db.client().await;

    // First run: versions 1 and 2 of every key; the database refuses
    // negative amounts.
    let mut ordo = Ordo::start(&config, dir.path().join("ordo-1.log"));
    support::postgres::refuse_negative_amounts(&client).await;
    let mut first = vec![];
    for k in 0..KEYS {
        first.push(event(k, 1, 10));
        first.push(event(k, 2, 20));
    }
    // Decodable but without a version; and not parseable at all.
    let mut no_version = event(5, 0, 1);
    no_version.payload = Some(
        serde_json::json!({"id": 5, "customer": {"email": email(5), "card": card(5), "ssn": ssn(5)}})
            .to_string()
            .into_bytes(),
    );
    first.push(no_version);
    let mut garbled = event(7, 0, 1);
    garbled.payload = Some(format!("{{\"customer\": {{\"email\": \"{}\"", email(7)).into_bytes());
    first.push(garbled);
    produce_raw(&kafka.bootstrap(), &setup.topic, &first);
    let hw = kafka.high_watermarks(&setup.topic, 2);
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &hw).await;
    assert!(ordo.terminate(Duration::from_secs(30)).success());

    // Second run, after a restart: versions 3 (key 3's refused: its last).
    let mut ordo = Ordo::start(&config, dir.path().join("ordo-2.log"));
    let second: Vec<Raw> = (0..KEYS)
        .map(|k| event(k, 3, if k == 3 { -1 } else { 30 }))
        .collect();
    produce_raw(&kafka.bootstrap(), &setup.topic, &second);
    let hw = kafka.high_watermarks(&setup.topic, 2);
    data::wait_stored_offsets(&client, &mut ordo, &setup.group, &setup.topic, &hw).await;
    assert!(ordo.terminate(Duration::from_secs(30)).success());

    // The rows hold the masked values: the hash the same in both runs.
    let rows = client
        .query(
            "SELECT stream, version, payload FROM events ORDER BY 1, 2",
            &[],
        )
        .await
        .expect("rows");
    assert_eq!(rows.len(), KEYS * 3 - 1, "one event refused");
    for r in &rows {
        let stream: String = r.get(0);
        let k: usize = stream["acct-".len()..].parse().expect("key number");
        let payload: serde_json::Value = r.get(2);
        let c = &payload["customer"];
        assert_eq!(c["email"], hmac_hex(&email(k)), "{stream}");
        assert_eq!(c["ssn"], serde_json::Value::Null, "{stream}");
        let clear_card = decrypt(c["card"].as_str().expect("a string"));
        assert_eq!(clear_card, format!("\"{}\"", card(k)), "{stream}");
        assert_eq!(payload["id"], k, "other fields stay");
    }

    // Three dead letters: refused, undecodable, unparseable; none clear.
    let letters = kafka.read_all(&dlq, 3);
    assert_eq!(letters.len(), 3);
    let mut how: Vec<String> = vec![];
    let mut everything = String::new();
    for m in &letters {
        let payload = m.payload().map(String::from_utf8_lossy).unwrap_or_default();
        everything.push_str(&payload);
        for h in m.headers().expect("headers").iter() {
            everything.push_str(h.key);
            everything.push_str(&String::from_utf8_lossy(h.value.unwrap_or_default()));
            if h.key == "ordo.payload" {
                how.push(String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned());
            }
        }
        if !payload.is_empty() {
            let v: serde_json::Value = serde_json::from_str(&payload).expect("masked JSON");
            let k = v["id"].as_u64().expect("id") as usize;
            assert_eq!(v["customer"]["email"], hmac_hex(&email(k)));
        }
    }
    how.sort();
    assert_eq!(how, ["masked", "masked", "withheld"]);
    for log in ["ordo-1.log", "ordo-2.log"] {
        everything.push_str(&std::fs::read_to_string(dir.path().join(log)).expect("log"));
    }
    assert!(
        everything.contains("amount_not_negative"),
        "the refusal is explained"
    );
    for k in 0..KEYS {
        for clear in [email(k), card(k), ssn(k)] {
            assert!(
                !everything.contains(&clear),
                "{clear} appears:\n{everything}"
            );
        }
    }
}

#[test]
fn a_masked_sequence_or_a_key_masked_other_than_by_hash_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("hash.key"), HASH_KEY).expect("key");
    let base = Setup {
        bootstrap: "127.0.0.1:9".into(),
        group: unique("ordo"),
        topic: unique("customers"),
        db_url: "postgres://ordo@127.0.0.1:9/x".into(),
        mode: "event_store",
        table: "events".into(),
        key: "field:customer.email".into(),
        ..Setup::default()
    };
    let cases = [
        (
            "{ path = \"version\", action = \"hash\" }",
            "`version` is ordering.sequence",
        ),
        (
            "{ path = \"customer.email\", action = \"redact\" }",
            "`customer.email` is ordering.key: only `hash`",
        ),
        (
            "{ path = \"customer.card\", action = \"encrypt\" }",
            "mask.encryption_key",
        ),
    ];
    for (i, (rule, why)) in cases.iter().enumerate() {
        let setup = Setup {
            tail: format!("[mask]\nhash_key = {{ file = \"hash.key\" }}\nfields = [{rule}]\n"),
            ..base.clone()
        };
        let path = setup.write(dir.path(), &format!("bad-{i}.toml"));
        let (status, _, stderr) =
            support::ordo::run_to_end(&["check", "--config", path.to_str().expect("path")]);
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(why), "{why} in: {stderr}");
    }
}
