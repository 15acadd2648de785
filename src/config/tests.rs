use super::*;
use std::io::Write;

/// The table of valid values is what each enum really accepts.
#[test]
fn enum_values_listed_are_the_enums_values() {
    fn check<T: serde::de::DeserializeOwned>(name: &str) {
        let (_, values) = ENUM_VALUES.iter().find(|(n, _)| *n == name).unwrap();
        for v in *values {
            assert!(
                serde_json::from_str::<T>(&format!("\"{v}\"")).is_ok(),
                "{name}: {v}"
            );
        }
        let err = serde_json::from_str::<T>("\"zzz\"")
            .err()
            .unwrap()
            .to_string();
        let listed: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
        for v in &listed {
            assert!(err.contains(v.as_str()), "{name}: {err}");
        }
        assert_eq!(
            err.matches('`').count(),
            2 * (listed.len() + 1),
            "{name}: {err}"
        );
    }
    check::<SinkMode>("SinkMode");
    check::<SinkKind>("SinkKind");
    check::<StartFrom>("StartFrom");
    check::<Tombstones>("Tombstones");
    check::<LogFormat>("LogFormat");
    check::<crate::order::BoundPolicy>("BoundPolicy");
    check::<crate::decode::FormatKind>("FormatKind");
    check::<crate::decode::avro::KeyFormat>("KeyFormat");
    check::<crate::decode::avro::registry::SubjectNameStrategy>("SubjectNameStrategy");
    check::<crate::sink::postgres::columns::PgType>("PgType");
}

#[test]
fn errors_name_the_key_the_valid_values_and_where_the_value_came_from() {
    let base = "[kafka]\n\"bootstrap.servers\" = \"b:9092\"\n[source]\ntopics = [\"t\"]\n[sink.postgres]\nmode = \"event_store\"\ntable = \"x\"\nurl = \"postgres://h/d\"\n";
    let e = Settings::load_embedded(&base.replace("\"event_store\"", "\"eventstore\""), &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("key `sink.postgres.mode`: `eventstore` is not a valid value; valid values: `event_store`, `projection`"),
        "{e}"
    );
    let e = Settings::load_embedded(base, &[("ORDO_SINKK__TABLE".into(), "x".into())])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("environment variable ORDO_SINKK__TABLE: key `sinkk`"),
        "{e}"
    );
    let e = Settings::load_embedded(
        &base.replace("[kafka]\n\"bootstrap.servers\" = \"b:9092\"\n", ""),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("key `kafka`: required, but not set"), "{e}");
    let e = Settings::load_embedded(
        &GOOD
            .replace("table = \"events\"\n", "")
            .replace("mode = \"event_store\"\n", ""),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("key `sink.postgres.mode`: required, but not set"),
        "{e}"
    );
}

const GOOD: &str = r#"
[kafka]
"bootstrap.servers" = "127.0.0.1:9092"
"group.id" = "ordo"

[source]
topics = ["orders"]

[ordering]
key = "field:order.id"
sequence = "header:seq"

[sink.postgres]
mode = "event_store"
table = "events"
url = "postgres://ordo@127.0.0.1:5432/ordo"
"#;

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn load(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let f = file(text);
    let vars: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::load_with_env(Some(f.path()), &vars)
}

#[test]
fn good_file_loads_with_defaults() {
    let s = load(GOOD, &[]).unwrap();
    assert_eq!(s.group_id(), "ordo");
    assert_eq!(
        s.ordering.key,
        KeySource::Field(FieldPath(vec!["order".into(), "id".into()]))
    );
    assert_eq!(s.ordering.sequence, SequenceSource::Header("seq".into()));
    assert_eq!(s.sink.batch_max_events, 4000);
    assert_eq!(s.sink.postgres.as_ref().unwrap().schema, "public");
    assert_eq!(s.ordering.on_bound, BoundPolicy::Wait);
}

#[test]
fn env_overrides_file_and_maps_kafka_underscores() {
    let s = load(
        GOOD,
        &[
            ("ORDO_SINK__POSTGRES__TABLE", "other"),
            ("ORDO_KAFKA__SESSION_TIMEOUT_MS", "7000"),
            ("ORDO_SOURCE__TOPICS", "a,b"),
        ],
    )
    .unwrap();
    assert_eq!(
        s.sink.postgres.as_ref().unwrap().routes[0].table.as_deref(),
        Some("other")
    );
    assert_eq!(s.kafka.get("session.timeout.ms").unwrap(), "7000");
    assert_eq!(s.source.topics, vec!["a".to_string(), "b".to_string()]);
}

#[test]
fn an_unquoted_kafka_key_in_a_file_is_refused_with_its_dotted_form() {
    let text = GOOD.replace(
        "\"bootstrap.servers\" = \"127.0.0.1:9092\"",
        "\"bootstrap.servers\" = \"127.0.0.1:9092\"\nbootstrap_servers = \"other:9092\"",
    );
    let e = load(&text, &[]).unwrap_err().to_string();
    assert!(e.contains("key `kafka.bootstrap_servers`"), "{e}");
    assert!(
        e.contains("write `\"bootstrap.servers\" = ...` (quoted)"),
        "{e}"
    );
    assert!(e.contains(".toml"), "{e}");
    // The file form of a property stays as it is written.
    let f = file("secret");
    let with = |line: String| {
        GOOD.replace(
            "\"group.id\" = \"ordo\"",
            &format!("\"group.id\" = \"ordo\"\n{line}"),
        )
    };
    let path = f.path().display().to_string();
    assert!(load(&with(format!("\"sasl.password_file\" = \"{path}\"")), &[]).is_ok());
    let e = load(&with(format!("sasl_password_file = \"{path}\"")), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("write `\"sasl.password_file\" = ...`"), "{e}");
}

#[test]
fn a_bad_column_type_lists_the_valid_types() {
    let text = GOOD.replace("mode = \"event_store\"", "mode = \"projection\"")
        + "columns = [{ name = \"total\", type = \"money\", path = \"total\" }]\n";
    let e = load(&text, &[]).unwrap_err().to_string();
    assert!(e.contains("`money` is not a valid value"), "{e}");
    assert!(
        e.contains("`double precision`") && e.contains("`timestamptz`"),
        "{e}"
    );
    assert!(!e.contains("PgType"), "{e}");
}

#[test]
fn a_directory_given_as_the_config_file_is_named_as_one() {
    let dir = tempfile::tempdir().unwrap();
    let e = Settings::load_with_env(Some(dir.path()), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("is a directory"), "{e}");
    assert!(!e.contains("no such file"), "{e}");
}

#[test]
fn unknown_key_is_named_with_the_file() {
    let text = GOOD.replace("table = \"events\"", "tabel = \"events\"");
    let e = load(&text, &[]).unwrap_err().to_string();
    assert!(e.contains("sink.postgres.tabel"), "{e}");
    assert!(e.contains(".toml"), "{e}");
}

#[test]
fn unknown_env_key_is_named_with_the_variable() {
    let e = load(GOOD, &[("ORDO_SINK__TABEL", "x")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("sink.tabel"), "{e}");
    assert!(e.contains("ORDO_SINK__TABEL"), "{e}");
}

#[test]
fn missing_required_value_is_named() {
    let text = GOOD.replace("mode = \"event_store\"", "");
    let e = load(&text, &[]).unwrap_err().to_string();
    assert!(e.contains("sink.postgres.mode"), "{e}");
}

#[test]
fn bad_values_are_named() {
    let cases = [
        (
            GOOD.replace("header:seq", "column:seq"),
            "ordering.sequence",
        ),
        (
            GOOD.replace("\"event_store\"", "\"ledger\""),
            "sink.postgres.mode",
        ),
        (
            GOOD.replace(
                "\"group.id\" = \"ordo\"",
                "\"group.id\" = \"ordo\"\n\"no.such.prop\" = \"1\"",
            ),
            "kafka.no.such.prop",
        ),
        (
            GOOD.replace("\"group.id\" = \"ordo\"", ""),
            "kafka.group.id",
        ),
        (
            GOOD.replace("[\"orders\"]", "[\"bad topic\"]"),
            "source.topics",
        ),
        (
            GOOD.replace(
                "postgres://ordo@127.0.0.1:5432/ordo",
                "postgres://x:notaport/",
            ),
            "sink.postgres.url",
        ),
        (
            format!("{GOOD}\n[sink]\nbatch_max_events = 0\n"),
            "sink.batch_max_events",
        ),
        (
            GOOD.replace(
                "\"group.id\" = \"ordo\"",
                "\"group.id\" = \"ordo\"\n\"enable.auto.offset.store\" = \"true\"",
            ),
            "kafka.enable.auto.offset.store",
        ),
        (
            format!("{GOOD}\n[dead_letter]\ntopic = \"bad topic {{topic}}\"\n"),
            "dead_letter.topic",
        ),
        (
            format!("{GOOD}\n[dead_letter]\ntopic = \"{{topic}}\"\n"),
            "dead_letter.topic",
        ),
        (
            format!("{GOOD}\n[dead_letter.producer]\n\"no.such.prop\" = \"1\"\n"),
            "dead_letter.producer.no.such.prop",
        ),
        (
            format!("{GOOD}\n[http]\nlisten = \":9464\"\n"),
            "http.listen",
        ),
        (format!("{GOOD}\n[http]\nlisten = 9464\n"), "http.listen"),
    ];
    for (text, key) in cases {
        let e = load(&text, &[]).unwrap_err().to_string();
        assert!(e.contains(key), "expected `{key}` in: {e}");
        assert!(e.contains("config file"), "expected the file in: {e}");
    }
}

#[test]
fn shipped_configurations_load() {
    let example = include_str!("../../config/ordo.example.toml");
    let s = Settings::load_embedded(example, &[]).unwrap();
    assert_eq!(
        s.sink.postgres.unwrap().routes[0].mode,
        Some(SinkMode::EventStore)
    );
    let vars = [(
        "ORDO_SINK__POSTGRES__URL".to_string(),
        "postgres://ordo@db/ordo".to_string(),
    )];
    let demo = crate::demo::settings(&vars).unwrap();
    assert_eq!(demo.source.topics, vec!["demo.orders".to_string()]);
    assert_eq!(demo.source.format, crate::decode::FormatKind::Avro);
}

#[test]
fn moved_keys_say_where_they_went() {
    let old = r#"
[kafka]
"bootstrap.servers" = "127.0.0.1:9092"
"group.id" = "ordo"

[source]
topics = ["orders"]

[ordering]
sequence = "header:seq"

[sink]
mode = "event_store"
table = "events"

[postgres]
url = "postgres://ordo@127.0.0.1:5432/ordo"
"#;
    let e = load(old, &[]).unwrap_err().to_string();
    assert!(e.contains("config file"), "{e}");
    assert!(
        e.contains("key `postgres`: moved to `sink.postgres`"),
        "{e}"
    );
    assert!(
        e.contains("ORDO_POSTGRES is now ORDO_SINK__POSTGRES"),
        "{e}"
    );
    let half = old.replace("[postgres]", "[sink.postgres]");
    let e = load(&half, &[]).unwrap_err().to_string();
    assert!(
        e.contains("key `sink.mode`: moved to `sink.postgres.mode`"),
        "{e}"
    );
    // An old variable is blamed by name, with its new name.
    let e = load(GOOD, &[("ORDO_POSTGRES__PASSWORD", "pw-Secret-1")])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("environment variable ORDO_POSTGRES__PASSWORD: key `postgres`"),
        "{e}"
    );
    assert!(!e.contains("pw-Secret-1"), "{e}");
    let e = load(GOOD, &[("ORDO_SINK__TABLE", "t")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ORDO_SINK__TABLE: key `sink.table`: moved to `sink.postgres.table`"),
        "{e}"
    );
}

#[test]
fn a_sink_kind_needs_its_section() {
    let text = GOOD.replace(
        "[sink.postgres]\nmode = \"event_store\"\ntable = \"events\"\nurl = \"postgres://ordo@127.0.0.1:5432/ordo\"\n",
        "[sink]\nkind = \"postgres\"\n",
    );
    let e = load(&text, &[]).unwrap_err().to_string();
    assert!(
        e.contains("key `sink.postgres`: required, but not set"),
        "{e}"
    );
}

#[test]
fn missing_file_is_named() {
    let e = Settings::load_with_env(Some(Path::new("/nonexistent/ordo.toml")), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/ordo.toml"), "{e}");
}

const ROUTED: &str = r#"
[kafka]
"bootstrap.servers" = "127.0.0.1:9092"
"group.id" = "ordo"

[source]
topics = ["orders"]
format = "json"
event_type = "field:type"

[ordering]
key = "field:id"
sequence = "field:version"

[sink.postgres]
url = "postgres://ordo@127.0.0.1:5432/ordo"

[[sink.postgres.routes]]
name = "all_events"
table = "order_events"
mode = "event_store"

[[sink.postgres.routes]]
name = "orders"
event_types = ["order.*"]
table = "orders"
mode = "projection"

[[sink.postgres.routes]]
name = "customer_totals"
event_types = ["order.placed"]
sql = """
INSERT INTO customer_totals (customer, orders, amount)
VALUES (${data.customer}, 1, ${data.amount}::numeric)
ON CONFLICT (customer) DO UPDATE
SET orders = customer_totals.orders + 1, amount = customer_totals.amount + EXCLUDED.amount
"""
"#;

#[test]
fn routes_load_in_the_documented_shape() {
    let s = Settings::load_embedded(ROUTED, &[]).unwrap();
    let pg = s.sink.postgres.unwrap();
    let names: Vec<&str> = pg.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["all_events", "orders", "customer_totals"]);
    assert!(pg.single_table().is_none());
    assert!(s.source.event_type.is_some());
    // The section's own table is the one route, taking everything.
    let s = Settings::load_embedded(GOOD, &[]).unwrap();
    let pg = s.sink.postgres.unwrap();
    assert!(pg.single_table().is_some() && pg.routes[0].implicit);
}

#[test]
fn route_errors_name_the_route_and_the_key() {
    let cases = [
        (
            ROUTED.replace("name = \"orders\"", "name = \"all_events\""),
            "key `sink.postgres.routes[1].name`: `all_events` is named twice",
        ),
        (
            ROUTED.replace("[\"order.*\"]", "[\"or*der\"]"),
            "key `sink.postgres.routes[1].event_types[0]`",
        ),
        (
            ROUTED.replace("${data.customer}", "$1"),
            "key `sink.postgres.routes[2].sql`: statement 1: positional parameters",
        ),
        (
            ROUTED.replace("table = \"orders\"\n", ""),
            "key `sink.postgres.routes[1].table`: required",
        ),
        (
            ROUTED.replace("event_type = \"field:type\"\n", ""),
            "key `sink.postgres.routes[1].event_types`: events have no type",
        ),
        (
            ROUTED.replace("table = \"orders\"", "table = \"order_events\""),
            "key `sink.postgres.routes[1].table`: `order_events` is route `all_events`'s table already",
        ),
        (
            ROUTED.replace(
                "name = \"customer_totals\"",
                "name = \"customer_totals\"\ntable = \"t\"",
            ),
            "key `sink.postgres.routes[2].table`: an SQL route",
        ),
        (
            ROUTED.replace("name = \"orders\"", "name = \"orders\"\ntopics = [\"payments\"]"),
            "key `sink.postgres.routes[1].topics`: `payments` is not one of source.topics",
        ),
        (
            ROUTED.replace(
                "url = \"postgres://ordo@127.0.0.1:5432/ordo\"",
                "url = \"postgres://ordo@127.0.0.1:5432/ordo\"\ntable = \"x\"",
            ),
            "key `sink.postgres.table`: with [[sink.postgres.routes]]",
        ),
        (
            ROUTED.replace("mode = \"projection\"", "mode = \"view\""),
            "key `sink.postgres.routes[1].mode`: `view` is not a valid value",
        ),
    ];
    for (text, expected) in cases {
        let e = Settings::load_embedded(&text, &[]).unwrap_err().to_string();
        assert!(e.contains(expected), "expected {expected:?} in: {e}");
    }
}

/// A file of the repository, read when the test runs (the image's build
/// compiles the sources without them).
fn repo_file(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The keys the reference's table documents, as dotted paths: each
/// backticked key of a row's first cell (`.password` after
/// `schema_registry.username` is `schema_registry.password`;
/// `[[sink.postgres.routes]]` is `sink.postgres.routes`).
fn documented_keys() -> Vec<String> {
    let reference = repo_file("docs/configuration.md");
    let mut keys = Vec::new();
    let rows = reference
        .lines()
        .skip_while(|l| !l.starts_with("| key |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'));
    for row in rows {
        let first = row
            .trim_start_matches('|')
            .split(" | ")
            .next()
            .unwrap_or_default();
        let mut parent = String::new();
        for item in first.split('`').skip(1).step_by(2) {
            let item = item.trim_start_matches("[[").trim_end_matches("]]");
            let key = match item.strip_prefix('.') {
                Some(rest) => format!("{parent}.{rest}"),
                None => item.to_string(),
            };
            parent = key
                .rsplit_once('.')
                .map(|(p, _)| p.to_string())
                .unwrap_or_default();
            keys.push(key);
        }
    }
    keys
}

#[test]
fn every_key_the_reference_documents_is_one_ordo_knows() {
    let keys = documented_keys();
    assert!(keys.len() > 60, "{keys:?}");
    for key in keys.iter().filter(|k| !k.ends_with(".*")) {
        let var = format!("ORDO_{}", key.to_uppercase().replace('.', "__"));
        // A value of the wrong type is refused for its type; a key Ordo does
        // not know is refused as unknown.
        if let Err(e) = load(GOOD, &[(&var, "x")]) {
            let e = e.to_string();
            assert!(
                !e.contains("unknown field"),
                "{key} is documented but unknown: {e}"
            );
        }
    }
}

/// Dotted paths of every value in `value`, stopping at arrays and at the
/// pass-through sections.
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) if prefix != "kafka" && prefix != "dead_letter.producer" => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&path, v, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn every_key_of_the_shipped_configurations_is_documented() {
    let documented = documented_keys();
    let covered = |key: &str| {
        documented.iter().any(|d| {
            let d = d.trim_end_matches(".*");
            key == d || key.starts_with(&format!("{d}."))
        })
    };
    for file in [
        "config/ordo.example.toml",
        "config/demo.toml",
        "examples/orders/ordo.toml",
        "deploy/ordo/ordo.toml",
        "deploy/kubernetes/base/ordo.toml",
    ] {
        let text = repo_file(file);
        let value: serde_json::Value = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let mut keys = Vec::new();
        flatten("", &value, &mut keys);
        assert!(keys.len() > 5, "{file}: {keys:?}");
        for key in keys {
            assert!(
                covered(&key),
                "{file}: `{key}` is not in docs/configuration.md"
            );
        }
    }
}
