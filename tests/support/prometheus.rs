//! A real Prometheus (the Debian package's `prometheus` binary) in a temp dir
//! on a free port, scraping the test's Ordo replicas and evaluating rules;
//! queried through its HTTP API.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::postgres::free_port;
use super::Deadline;

pub struct Prometheus {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

/// One series of a query result: its labels and its value (NaN included).
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: serde_json::Map<String, Value>,
    pub value: f64,
}

/// An active alert: its name, state (pending or firing) and labels.
#[derive(Debug, Clone)]
pub struct Alert {
    pub name: String,
    pub state: String,
    pub labels: serde_json::Map<String, Value>,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (host:port) as job `job` every
    /// second and evaluating `rules` (a rule file's YAML) every second.
    pub async fn start(job: &str, targets: &[String], rules: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("rules.yml"), rules).expect("rules");
        let config = serde_json::json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["rules.yml"],
            "scrape_configs": [{
                "job_name": job,
                "static_configs": [{"targets": targets}],
            }],
        });
        // JSON is YAML.
        std::fs::write(dir.path().join("prometheus.yml"), config.to_string()).expect("config");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run prometheus: {e} (apt-get install prometheus)"));
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = Deadline::new("prometheus ready", Duration::from_secs(60));
        loop {
            if let Ok(r) = reqwest::get(format!("{}/-/ready", p.url)).await {
                if r.status().is_success() {
                    return p;
                }
            }
            deadline.tick().await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.url), query)
            .expect("API URL");
        let r = reqwest::get(url)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let body: Value = r.json().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(body["status"], "success", "{path} {query:?}: {body}");
        body["data"].clone()
    }

    /// Evaluates an instant query now.
    pub async fn query(&self, expr: &str) -> Vec<Sample> {
        let data = self.api("/api/v1/query", &[("query", expr)]).await;
        assert_eq!(data["resultType"], "vector", "{expr}: {data}");
        data["result"]
            .as_array()
            .expect("result")
            .iter()
            .map(|s| Sample {
                labels: s["metric"].as_object().cloned().unwrap_or_default(),
                value: s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN),
            })
            .collect()
    }

    /// The alerts now pending or firing.
    pub async fn alerts(&self) -> Vec<Alert> {
        let data = self.api("/api/v1/alerts", &[]).await;
        data["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .map(|a| {
                let labels = a["labels"].as_object().cloned().unwrap_or_default();
                Alert {
                    name: labels["alertname"].as_str().unwrap_or_default().to_string(),
                    state: a["state"].as_str().unwrap_or_default().to_string(),
                    labels,
                }
            })
            .collect()
    }

    /// The names of the alerts firing now.
    pub async fn firing(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .alerts()
            .await
            .into_iter()
            .filter(|a| a.state == "firing")
            .map(|a| a.name)
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rule file at `path` with every alert's `for` set to `wait`, so a test
/// sees in seconds what waits minutes in production; expressions unchanged.
pub fn rules_with_for(path: &Path, wait: &str) -> String {
    let text = std::fs::read_to_string(path).expect("rule file");
    let mut rules: serde_yaml::Value = serde_yaml::from_str(&text).expect("rule YAML");
    for group in rules["groups"].as_sequence_mut().expect("groups") {
        for rule in group["rules"].as_sequence_mut().expect("rules") {
            if rule.get("alert").is_some() {
                rule["for"] = serde_yaml::Value::String(wait.to_string());
            }
        }
    }
    serde_yaml::to_string(&rules).expect("rule YAML")
}
