//! The docker-compose stack cannot run here, so its wiring is checked by
//! reading it: files it mounts exist, Ordo's config in it loads and points at
//! services and ports the stack defines, and the image builds from files that exist.

use std::collections::BTreeMap;
use std::path::Path;

use ordo::config::Settings;
use serde_yaml::Value;

fn compose() -> Value {
    let text = std::fs::read_to_string("docker-compose.yml").expect("docker-compose.yml");
    serde_yaml::from_str(&text).expect("docker-compose.yml is YAML")
}

fn service<'a>(c: &'a Value, name: &str) -> &'a Value {
    c["services"]
        .get(name)
        .unwrap_or_else(|| panic!("service {name} missing"))
}

fn env_of(svc: &Value) -> Vec<(String, String)> {
    match svc.get("environment") {
        Some(Value::Mapping(m)) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => serde_yaml::to_string(other).unwrap().trim().to_string(),
                };
                (k.as_str().unwrap().to_string(), v)
            })
            .collect(),
        _ => vec![],
    }
}

/// Container ports a service listens on, from its Kafka listeners or published ports.
fn listens(svc: &Value, port: u16) -> bool {
    let env: BTreeMap<String, String> = env_of(svc).into_iter().collect();
    let in_listeners = ["KAFKA_LISTENERS", "SCHEMA_REGISTRY_LISTENERS"]
        .iter()
        .filter_map(|k| env.get(*k))
        .any(|l| l.split(',').any(|x| x.ends_with(&format!(":{port}"))));
    let published = svc
        .get("ports")
        .and_then(Value::as_sequence)
        .is_some_and(|ps| {
            ps.iter()
                .any(|p| p.as_str().is_some_and(|p| p.ends_with(&format!(":{port}"))))
        });
    in_listeners || published
}

/// Copies a file, or a directory recursively.
fn copy(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
}

#[test]
fn mounted_files_exist_and_the_image_builds_from_this_tree() {
    let c = compose();
    for (name, svc) in c["services"].as_mapping().unwrap() {
        for vol in svc
            .get("volumes")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let host = vol.as_str().unwrap().split(':').next().unwrap();
            if host.starts_with("./") {
                assert!(Path::new(host).exists(), "{name:?} mounts missing {host}");
            }
        }
    }
    let ordo = service(&c, "ordo");
    assert_eq!(ordo["build"].as_str(), Some("."));
    let dockerfile = std::fs::read_to_string("Dockerfile").unwrap();
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(Path::new(src).exists(), "Dockerfile copies missing {src}");
        }
    }
}

#[test]
fn ordo_config_in_the_stack_loads_and_points_at_its_services() {
    let c = compose();
    let ordo = service(&c, "ordo");
    let volumes = ordo["volumes"].as_sequence().unwrap();
    let command: Vec<&str> = ordo["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let in_container = command[command.iter().position(|a| *a == "--config").unwrap() + 1];
    // Lay the mounts under the config's directory out as the container sees
    // them, so relative paths in the config (reader schemas) resolve as there.
    let config_dir = Path::new(in_container).parent().unwrap();
    let root = tempfile::tempdir().unwrap();
    let mut config_mounted = false;
    for v in volumes.iter().filter_map(Value::as_str) {
        let parts: Vec<&str> = v.split(':').collect();
        let Ok(rel) = Path::new(parts[1]).strip_prefix(config_dir) else {
            continue;
        };
        copy(Path::new(parts[0]), &root.path().join(rel));
        config_mounted |= parts[1] == in_container;
    }
    assert!(config_mounted, "the config file ordo runs with is mounted");
    let in_root = root
        .path()
        .join(Path::new(in_container).strip_prefix(config_dir).unwrap());
    let settings =
        Settings::load_with_env(Some(&in_root), &env_of(ordo)).unwrap_or_else(|e| panic!("{e}"));
    // Every reader schema file is inside a mount.
    for r in &settings.source.reader_schemas {
        if let Some(file) = &r.file {
            assert!(
                file.starts_with(root.path()),
                "{} is not mounted",
                file.display()
            );
        }
    }
    // The schema registry Ordo asks is the stack's, on a port it listens on.
    for url in &settings.schema_registry.as_ref().expect("registry").urls {
        let rest = url.strip_prefix("http://").expect("http URL");
        let (svc, port) = rest.trim_end_matches('/').rsplit_once(':').unwrap();
        assert!(listens(service(&c, svc), port.parse().unwrap()), "{url}");
    }

    for server in settings.bootstrap_servers().split(',') {
        let (svc, port) = server.rsplit_once(':').unwrap();
        assert!(
            listens(service(&c, svc), port.parse().unwrap()),
            "{server} is not a listener"
        );
    }
    let pg: tokio_postgres::Config = settings.postgres.url.parse().unwrap();
    let tokio_postgres::config::Host::Tcp(pg_host) = &pg.get_hosts()[0] else {
        panic!("expected a TCP host")
    };
    let postgres = service(&c, pg_host);
    assert!(listens(postgres, pg.get_ports()[0]));
    let env: BTreeMap<String, String> = env_of(postgres).into_iter().collect();
    assert_eq!(env.get("POSTGRES_USER").map(String::as_str), pg.get_user());
    assert_eq!(env.get("POSTGRES_DB").map(String::as_str), pg.get_dbname());
    assert_eq!(
        env.get("POSTGRES_PASSWORD").map(|p| p.as_bytes()),
        pg.get_password()
    );
    // The topic Ordo consumes is the one the init job creates.
    let init = serde_yaml::to_string(&service(&c, "kafka-init")["command"]).unwrap();
    for topic in &settings.source.topics {
        assert!(
            init.contains(&format!("--topic {topic} ")),
            "topic {topic} is not created"
        );
        if settings.dead_letter.enabled {
            let dlq = settings.dead_letter.topic_for(topic);
            assert!(
                init.contains(&format!("--topic {dlq} ")),
                "dead-letter topic {dlq} is not created"
            );
        }
    }
    // Ordo's grace period covers its drain timeout.
    assert_eq!(ordo["stop_grace_period"].as_str(), Some("45s"));
}
