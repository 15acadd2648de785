//! The Kubernetes kit in deploy/kubernetes cannot be applied here, so it is
//! checked by reading it: every file its kustomizations name exists; the
//! Kubernetes resources validate against the API schemas offline
//! (`kubernetes-validate`); the KEDA and Prometheus Operator resources carry
//! their required fields; and every port, probe path, config key, secret,
//! metric and file they refer to exists in Ordo.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ordo::config::Settings;
use serde_yaml::Value;

const ROOT: &str = "deploy/kubernetes";

/// Every resource file of a kustomization (its resources and components,
/// recursively), and the files its generators read.
fn kustomize(dir: &Path, resources: &mut Vec<PathBuf>, generated: &mut Vec<PathBuf>) {
    let file = dir.join("kustomization.yaml");
    let k: Value = yaml(&file);
    for key in ["resources", "components"] {
        for entry in k[key].as_sequence().into_iter().flatten() {
            let path = dir.join(entry.as_str().expect("a path"));
            assert!(
                path.exists(),
                "{}: {key} entry {path:?} missing",
                file.display()
            );
            if path.is_dir() {
                kustomize(&path, resources, generated);
            } else {
                resources.push(path);
            }
        }
    }
    for generator in ["configMapGenerator", "secretGenerator"] {
        for g in k[generator].as_sequence().into_iter().flatten() {
            for f in g["files"].as_sequence().into_iter().flatten() {
                let path = dir.join(f.as_str().expect("a file"));
                assert!(
                    path.exists(),
                    "{}: {generator} file {path:?} missing",
                    file.display()
                );
                generated.push(path);
            }
        }
    }
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path:?} is not YAML: {e}"))
}

/// The kit's resources, by kind.
struct Kit {
    resources: Vec<(PathBuf, Value)>,
    generated: Vec<PathBuf>,
}

impl Kit {
    fn load() -> Kit {
        let (mut files, mut generated) = (vec![], vec![]);
        kustomize(Path::new(ROOT), &mut files, &mut generated);
        Kit {
            resources: files.into_iter().map(|f| (f.clone(), yaml(&f))).collect(),
            generated,
        }
    }

    fn one(&self, kind: &str) -> &Value {
        let found: Vec<&Value> = self
            .resources
            .iter()
            .map(|(_, v)| v)
            .filter(|v| v["kind"].as_str() == Some(kind))
            .collect();
        assert_eq!(found.len(), 1, "one {kind} in the kit");
        found[0]
    }

    fn generated(&self, name: &str) -> &Path {
        self.generated
            .iter()
            .find(|p| p.file_name().is_some_and(|n| n == name))
            .unwrap_or_else(|| panic!("{name} is not in a generated ConfigMap"))
    }
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v:?}"))
}

/// Ordo's config from the ConfigMap, loaded as Ordo would in the pod (the
/// Secret's files written where the pod mounts them, under a temp dir).
fn settings(kit: &Kit, secret_dir: &str, mount: &Path) -> Settings {
    let text = std::fs::read_to_string(kit.generated("ordo.toml")).unwrap();
    let text = text.replace(secret_dir, &mount.display().to_string());
    let dir = kit.generated("ordo.toml").parent().unwrap();
    let config = dir.join(".ordo-test.toml");
    std::fs::write(&config, text).unwrap();
    let loaded = Settings::load_with_env(Some(&config), &[]);
    let _ = std::fs::remove_file(&config);
    loaded.unwrap_or_else(|e| panic!("ordo.toml in the ConfigMap does not load: {e}"))
}

/// Metric names an expression refers to.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("ordo_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(family.to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_kit_refers_only_to_what_ordo_has() {
    let kit = Kit::load();
    let deployment = kit.one("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // The config: mounted from the generated ConfigMap where --config points.
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| str_of(a, "arg"))
        .collect();
    let config_path = Path::new(args[args.iter().position(|a| *a == "--config").unwrap() + 1]);
    let mount = |volume: &str| -> PathBuf {
        let m = c["volumeMounts"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|m| m["name"].as_str() == Some(volume))
            .unwrap_or_else(|| panic!("volume {volume} not mounted"));
        PathBuf::from(str_of(&m["mountPath"], "mountPath"))
    };
    let volume = |name: &str| -> &Value {
        pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("volume {name} missing"))
    };
    assert_eq!(config_path.parent().unwrap(), mount("config"));
    assert_eq!(
        volume("config")["configMap"]["name"].as_str(),
        Some("ordo-config")
    );
    kit.generated(config_path.file_name().unwrap().to_str().unwrap());

    // Secrets: every file the config reads from the Secret's mount is a key of the Secret.
    let secret = kit.one("Secret");
    assert_eq!(
        volume("secrets")["secret"]["secretName"].as_str(),
        secret["metadata"]["name"].as_str()
    );
    let secret_dir = mount("secrets");
    let keys: BTreeSet<&str> = secret["stringData"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| str_of(k, "key"))
        .collect();
    let toml_text = std::fs::read_to_string(kit.generated("ordo.toml")).unwrap();
    let prefix = format!("{}/", secret_dir.display());
    let mut read_from_secret = 0;
    for line in toml_text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
    {
        if let Some(i) = line.find(&prefix) {
            let key = line[i + prefix.len()..].trim_end_matches('"');
            assert!(
                keys.contains(key),
                "ordo.toml reads {key}, not in the Secret"
            );
            read_from_secret += 1;
        }
    }
    assert!(read_from_secret >= 2, "passwords come from the Secret");
    let tmp = tempfile::tempdir().unwrap();
    for key in &keys {
        std::fs::write(tmp.path().join(key), "x\n").unwrap();
    }
    let settings = settings(&kit, &secret_dir.display().to_string(), tmp.path());

    // The reader schema: shipped in the ConfigMap, the same as schemas/.
    for r in &settings.source.reader_schemas {
        let file = r.file.as_ref().expect("the reader schema is a file");
        let name = file.file_name().unwrap().to_str().unwrap();
        let shipped = std::fs::read_to_string(kit.generated(name)).unwrap();
        assert_eq!(
            shipped,
            std::fs::read_to_string(Path::new("schemas").join(name)).unwrap(),
            "{name} in the ConfigMap differs from schemas/{name}"
        );
    }

    // Ports and probes: the container port is the one Ordo listens on; the
    // probes ask Ordo's health paths on it.
    let port: u16 = settings
        .http
        .listen
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let ports = c["ports"].as_sequence().unwrap();
    let metrics_port = ports
        .iter()
        .find(|p| p["containerPort"].as_u64() == Some(port as u64))
        .unwrap_or_else(|| panic!("no container port {port}"));
    let port_name = str_of(&metrics_port["name"], "port name");
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"].as_str(), Some(path), "{probe}");
        assert_eq!(
            c[probe]["httpGet"]["port"].as_str(),
            Some(port_name),
            "{probe}"
        );
    }
    let service = kit.one("Service");
    let sport = &service["spec"]["ports"][0];
    assert_eq!(sport["targetPort"].as_str(), Some(port_name));
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for selector in [
        &service["spec"]["selector"],
        &deployment["spec"]["selector"]["matchLabels"],
        &kit.one("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ] {
        for (k, v) in selector.as_mapping().unwrap() {
            assert_eq!(labels.get(k), Some(v), "selector {k:?} matches the pods");
        }
    }

    // Shutdown within the grace period; memory limit above the budget.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        settings.shutdown.deadline_ms / 1000 + 5 <= grace,
        "shutdown.deadline_ms {} must end well within terminationGracePeriodSeconds {grace}",
        settings.shutdown.deadline_ms
    );
    let limit = str_of(&c["resources"]["limits"]["memory"], "memory limit");
    let limit_mib: u64 = match limit.strip_suffix("Gi") {
        Some(g) => g.parse::<u64>().unwrap() * 1024,
        None => limit.strip_suffix("Mi").unwrap().parse().unwrap(),
    };
    assert!(
        limit_mib >= settings.memory.budget_mb + 64,
        "memory limit {limit}"
    );

    // Non-root, as the image's user.
    let dockerfile = std::fs::read_to_string("Dockerfile").unwrap();
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .unwrap()
        .trim();
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        pod["securityContext"]["runAsUser"]
            .as_u64()
            .map(|u| u.to_string()),
        Some(user.to_string())
    );
    assert_eq!(
        c["securityContext"]["allowPrivilegeEscalation"].as_bool(),
        Some(false)
    );

    // Prometheus Operator: the ServiceMonitor scrapes the Service's port at
    // /metrics; the PrometheusRule holds exactly deploy/prometheus/alerts.yml.
    let monitor = kit.one("ServiceMonitor");
    assert_eq!(
        monitor["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap()
    {
        assert_eq!(service["metadata"]["labels"].get(k), Some(v));
    }
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"].as_str(), sport["name"].as_str());
    assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
    let rule = kit.one("PrometheusRule");
    assert_eq!(
        rule["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    let alerts = yaml(Path::new("deploy/prometheus/alerts.yml"));
    assert_eq!(
        rule["spec"]["groups"], alerts["groups"],
        "the PrometheusRule differs from deploy/prometheus/alerts.yml"
    );
    let mut exprs = vec![];
    for group in rule["spec"]["groups"].as_sequence().unwrap() {
        assert!(
            group["name"].as_str().is_some(),
            "a rule group needs a name"
        );
        for r in group["rules"].as_sequence().unwrap() {
            assert!(r["alert"].as_str().is_some() && r["expr"].as_str().is_some());
            assert!(r["annotations"]["runbook"].as_str().is_some());
            exprs.push(str_of(&r["expr"], "expr").to_string());
        }
    }

    // KEDA: scales this Deployment on one of Ordo's metrics, up to a
    // partition count, never below one replica.
    let scaled = kit.one("ScaledObject");
    assert_eq!(scaled["apiVersion"].as_str(), Some("keda.sh/v1alpha1"));
    assert_eq!(
        scaled["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    let (min, max) = (
        scaled["spec"]["minReplicaCount"].as_u64().unwrap(),
        scaled["spec"]["maxReplicaCount"].as_u64().unwrap(),
    );
    assert!(1 <= min && min <= max);
    let triggers = scaled["spec"]["triggers"].as_sequence().unwrap();
    assert!(!triggers.is_empty());
    for t in triggers {
        assert_eq!(t["type"].as_str(), Some("prometheus"));
        for field in ["serverAddress", "query", "threshold"] {
            assert!(t["metadata"][field].as_str().is_some(), "trigger {field}");
        }
        let query = str_of(&t["metadata"]["query"], "query");
        assert!(query.contains("ordo_consumer_lag"), "{query}");
        exprs.push(query.to_string());
    }

    // Every metric the rules and the scaler use is one Ordo exports.
    let m = ordo::telemetry::metrics::metrics();
    m.lag_offsets.with_label_values(&["t", "0"]).set(0);
    m.lag_committed_offsets
        .with_label_values(&["t", "0"])
        .set(0);
    m.lag_seconds.with_label_values(&["t", "0"]).set(0.0);
    m.held_oldest_age_seconds
        .with_label_values(&["t", "0"])
        .set(0.0);
    m.buffered_events.with_label_values(&["t", "0"]).set(0);
    m.dlq_depth.with_label_values(&["t.dlq"]).set(0);
    let exported = m.render();
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(
                exported.contains(&format!("# TYPE {name} ")),
                "{name} (in {expr}) is not a metric Ordo exports"
            );
        }
    }
}

#[test]
fn the_kubernetes_resources_validate_against_the_api_schemas() {
    let kit = Kit::load();
    let core: Vec<&PathBuf> = kit
        .resources
        .iter()
        .filter(|(_, v)| {
            let api = v["apiVersion"].as_str().unwrap_or_default();
            !api.contains(".coreos.com") && !api.starts_with("keda.sh")
        })
        .map(|(p, _)| p)
        .collect();
    assert!(core.len() >= 5, "{core:?}");
    let out = std::process::Command::new(support::python())
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "--kubernetes-version",
            "1.30.0",
        ])
        .args(&core)
        .output()
        .expect("python with kubernetes-validate (scripts/setup.sh test installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    for file in core {
        assert!(
            text.contains(&format!("{} passed", file.display())),
            "{} not validated:\n{text}",
            file.display()
        );
    }
}
