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
    // The image's build sees every file the sources compile in.
    let copied: Vec<String> = dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
        .flat_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            parts[1..parts.len() - 1]
                .iter()
                .map(|p| p.trim_start_matches("./").trim_end_matches('/').to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for (file, included) in included_files(Path::new("src")) {
        assert!(
            copied
                .iter()
                .any(|c| included == *c || included.starts_with(&format!("{c}/"))),
            "{file} compiles in {included}, which the Dockerfile does not copy"
        );
    }
}

/// Each `include_str!`/`include_bytes!` under `dir`: (the including file,
/// the included path relative to the repository).
fn included_files(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(included_files(&path));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for macro_name in ["include_str!(\"", "include_bytes!(\""] {
            for (at, _) in text.match_indices(macro_name) {
                let rest = &text[at + macro_name.len()..];
                let Some(end) = rest.find('"') else { continue };
                let target = path.parent().unwrap().join(&rest[..end]);
                // Normalise `a/b/../../c` to a path from the repository root.
                let mut parts: Vec<String> = Vec::new();
                for c in target.components() {
                    match c {
                        std::path::Component::ParentDir => {
                            parts.pop();
                        }
                        std::path::Component::CurDir => {}
                        other => parts.push(other.as_os_str().to_string_lossy().into_owned()),
                    }
                }
                out.push((path.display().to_string(), parts.join("/")));
            }
        }
    }
    out
}

/// Ordo's settings as a replica of the stack loads them: the mounts under the
/// config's directory are laid out as the container sees them, so relative
/// paths in the config (reader schemas) resolve as there. The temp dir holds
/// that layout.
fn ordo_settings_in_stack() -> (Settings, tempfile::TempDir) {
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
    (settings, root)
}

#[test]
fn ordo_config_in_the_stack_loads_and_points_at_its_services() {
    let c = compose();
    let ordo = service(&c, "ordo");
    let (settings, root) = ordo_settings_in_stack();
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
    let pg: tokio_postgres::Config = settings
        .sink
        .postgres
        .as_ref()
        .unwrap()
        .url
        .parse()
        .unwrap();
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

/// The `host:port` a URL points at.
fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap();
    let (host, port) = authority.rsplit_once(':').expect("URL with a port");
    (host.to_string(), port.parse().expect("numeric port"))
}

/// The host directory mounted at `target` (or at a directory holding it) in `svc`.
fn mounted_at(svc: &Value, target: &str) -> std::path::PathBuf {
    for v in svc["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
    {
        let parts: Vec<&str> = v.split(':').collect();
        if let Ok(rel) = Path::new(target).strip_prefix(parts[1]) {
            return Path::new(parts[0]).join(rel);
        }
    }
    panic!("{target} is not mounted")
}

fn yaml_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn prometheus_in_the_stack_scrapes_every_replica_and_loads_the_alert_rules() {
    let c = compose();
    let prometheus = service(&c, "prometheus");
    let args: Vec<&str> = prometheus["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let config_in_container = args
        .iter()
        .find_map(|a| a.strip_prefix("--config.file="))
        .expect("--config.file");
    let config_path = mounted_at(prometheus, config_in_container);
    let config = yaml_file(&config_path);
    for rule_file in config["rule_files"].as_sequence().unwrap() {
        let path = config_path
            .parent()
            .unwrap()
            .join(rule_file.as_str().unwrap());
        assert!(path.exists(), "rule file {} is not mounted", path.display());
    }
    // Ordo's replicas listen where Prometheus looks for them.
    let listen_port = ordo_settings_in_stack()
        .0
        .http
        .listen
        .rsplit_once(':')
        .map(|(_, p)| p.parse::<u16>().unwrap())
        .expect("http.listen with a port");
    let ordo = service(&c, "ordo");
    let exposed: Vec<String> = ordo["expose"]
        .as_sequence()
        .expect("ordo exposes its metrics port")
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert!(exposed.contains(&listen_port.to_string()), "{exposed:?}");
    let health = serde_yaml::to_string(&ordo["healthcheck"]["test"]).unwrap();
    assert!(
        health.contains(&format!("localhost:{listen_port}/readyz")),
        "{health}"
    );
    let job = config["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|j| j["job_name"].as_str() == Some("ordo"))
        .expect("a scrape job named ordo (the alert rules select job=\"ordo\")");
    let sd = &job["dns_sd_configs"][0];
    assert_eq!(
        sd["names"][0].as_str(),
        Some("ordo"),
        "the compose service name"
    );
    assert_eq!(sd["port"].as_u64(), Some(u64::from(listen_port)));
    let rules = std::fs::read_to_string("deploy/prometheus/alerts.yml").unwrap();
    assert!(rules.contains("job=\"ordo\""));
}

#[test]
fn grafana_in_the_stack_provisions_the_data_source_and_the_dashboard() {
    let c = compose();
    let grafana = service(&c, "grafana");
    let provisioning = mounted_at(grafana, "/etc/grafana/provisioning");
    let sources = yaml_file(&provisioning.join("datasources/prometheus.yml"));
    let source = &sources["datasources"][0];
    assert_eq!(source["type"].as_str(), Some("prometheus"));
    let (host, port) = host_port(source["url"].as_str().unwrap());
    assert!(
        listens(service(&c, &host), port),
        "{host}:{port} is not Prometheus's port"
    );
    let providers = yaml_file(&provisioning.join("dashboards/ordo.yml"));
    let path = providers["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let dashboards = mounted_at(grafana, path);
    let env: BTreeMap<String, String> = env_of(grafana).into_iter().collect();
    let home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].as_str();
    assert!(mounted_at(grafana, home).exists(), "{home}");

    let metrics_source = std::fs::read_to_string("src/telemetry/metrics.rs").unwrap();
    let mut panels_seen = 0;
    for entry in std::fs::read_dir(&dashboards).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let dash: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let vars = dash["templating"]["list"].as_array().unwrap();
        let ds_var = vars
            .iter()
            .find(|v| v["type"] == "datasource")
            .expect("a data source variable");
        assert_eq!(ds_var["query"], source["type"].as_str().unwrap());
        let ds_ref = format!("${{{}}}", ds_var["name"].as_str().unwrap());
        for panel in dash["panels"].as_array().unwrap() {
            let Some(targets) = panel["targets"].as_array() else {
                continue;
            };
            panels_seen += 1;
            let title = panel["title"].as_str().unwrap();
            assert_eq!(panel["datasource"]["uid"], ds_ref.as_str(), "{title}");
            for t in targets {
                let expr = t["expr"].as_str().unwrap();
                // Every metric a panel reads is one Ordo defines.
                for name in expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| w.starts_with("ordo_"))
                {
                    let base = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| name.strip_suffix(s))
                        .unwrap_or(name);
                    assert!(
                        metrics_source.contains(&format!("\"{base}\"")),
                        "panel {title:?} reads {name}, which Ordo does not export"
                    );
                }
            }
        }
    }
    assert!(panels_seen >= 10, "{panels_seen} panels");
}

/// Runs promtool (from the Prometheus Debian package) with `args`.
fn promtool(args: &[&str]) {
    let out = std::process::Command::new("promtool")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("promtool: {e} (apt-get install prometheus)"));
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_config_and_the_rules_and_the_rules_pass_their_unit_tests() {
    promtool(&["check", "config", "deploy/prometheus/prometheus.yml"]);
    promtool(&["check", "rules", "deploy/prometheus/alerts.yml"]);
    promtool(&["test", "rules", "deploy/prometheus/alerts_test.yml"]);
}
