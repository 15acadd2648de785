//! The `ordo` binary as a child process, with a generated config file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// What a test's Ordo consumes and where it writes.
#[derive(Clone, Default)]
pub struct Setup {
    pub bootstrap: String,
    pub group: String,
    pub topic: String,
    pub db_url: String,
    /// `sink.postgres.mode`; empty: no `mode` nor `table` (routes given in `tail`).
    pub mode: &'static str,
    pub table: String,
    /// Extra TOML lines appended to `[ordering]`.
    pub ordering: String,
    /// Extra TOML lines appended to `[source]`.
    pub source: String,
    /// `ordering.sequence`; `field:version` when empty.
    pub sequence: String,
    /// `ordering.key`; `message_key` when empty.
    pub key: String,
    /// Extra TOML (whole sections) appended at the end.
    pub tail: String,
    /// Send undecodable records to `<topic>.dlq` (which must exist) instead
    /// of stopping their partition.
    pub dead_letter: bool,
    /// `http.listen`; empty: no listener.
    pub http: String,
    /// Extra TOML lines appended to `[http]`.
    pub http_extra: String,
    /// Extra TOML lines appended to `[kafka]` (security settings, ...).
    pub kafka: String,
    /// Extra TOML lines appended to `[sink.postgres]`.
    pub postgres: String,
    /// Extra TOML lines appended to `[dead_letter]`.
    pub dead_letter_extra: String,
}

impl Setup {
    /// An event store in `table`, with a fresh consumer group and topic name.
    pub fn event_store(bootstrap: String, db_url: String, table: &str) -> Setup {
        Setup {
            bootstrap,
            group: super::unique("ordo"),
            topic: super::unique("events"),
            db_url,
            mode: "event_store",
            table: table.into(),
            ..Setup::default()
        }
    }

    pub fn toml(&self) -> String {
        format!(
            r#"[kafka]
"bootstrap.servers" = "{bootstrap}"
"group.id" = "{group}"
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
"topic.metadata.refresh.interval.ms" = "2000"
{kafka}

[source]
topics = ["{topic}"]
{source}

[ordering]
key = "{key}"
sequence = "{sequence}"
{ordering}

[sink]
batch_max_events = 500
batch_max_wait_ms = 50

[sink.postgres]
{target}url = "{db}"
pool_size = 8
{postgres}

[log]
level = "info,rdkafka=warn"
format = "text"

[dead_letter]
enabled = {dead_letter}
{dead_letter_extra}

[http]
listen = "{http}"
measure_interval_ms = 200
{http_extra}

{tail}
"#,
            bootstrap = self.bootstrap,
            group = self.group,
            topic = self.topic,
            ordering = self.ordering,
            source = self.source,
            tail = self.tail,
            dead_letter = self.dead_letter,
            http = self.http,
            http_extra = self.http_extra,
            kafka = self.kafka,
            dead_letter_extra = self.dead_letter_extra,
            postgres = self.postgres,
            key = if self.key.is_empty() {
                "message_key"
            } else {
                &self.key
            },
            sequence = if self.sequence.is_empty() {
                "field:version"
            } else {
                &self.sequence
            },
            target = if self.mode.is_empty() {
                String::new()
            } else {
                format!("mode = \"{}\"\ntable = \"{}\"\n", self.mode, self.table)
            },
            db = self.db_url,
        )
    }

    /// The config with Ordo's default sink settings instead of the tests'
    /// small batches (for benchmarks), written to `dir/name`.
    pub fn write_with_default_sink(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        let text = self
            .toml()
            .replace("batch_max_events = 500\n", "")
            .replace("batch_max_wait_ms = 50\n", "");
        std::fs::write(&path, text).expect("write config");
        path
    }

    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.toml()).expect("write config");
        path
    }

    /// Configs of `n` replicas of this setup, each with its own HTTP listener
    /// on a free port: `ordo<i>.toml` in `dir`.
    pub fn replicas(&self, dir: &Path, n: usize) -> Vec<Replica> {
        (0..n)
            .map(|i| {
                let addr = format!("127.0.0.1:{}", super::postgres::free_port());
                let config = Setup {
                    http: addr.clone(),
                    ..self.clone()
                }
                .write(dir, &format!("ordo{i}.toml"));
                Replica { config, addr }
            })
            .collect()
    }
}

/// One replica's config file and the address of its HTTP listener.
pub struct Replica {
    pub config: PathBuf,
    pub addr: String,
}

impl Replica {
    /// `http://<addr>`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts it, logging to `<config>.log`.
    pub fn start(&self) -> Ordo {
        Ordo::start(&self.config, self.config.with_extension("log"))
    }
}

/// `/readyz` of the listener at `addr`: status and body (0 and empty while
/// nothing answers).
pub async fn readyz(addr: &str) -> (u16, String) {
    match reqwest::get(format!("http://{addr}/readyz")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

/// Waits until `/readyz` at `addr` answers 503 with every one of `texts` in
/// its reasons, asserting all along that `ordo` runs; returns the body.
pub async fn wait_not_ready_with(ordo: &mut Ordo, addr: &str, texts: &[&str]) -> String {
    let deadline = super::Deadline::new(
        format!("/readyz to name {texts:?}"),
        Duration::from_secs(60),
    );
    loop {
        assert!(ordo.running(), "ordo exited:\n{}", ordo.log_text());
        let (code, body) = readyz(addr).await;
        if code == 503 && texts.iter().all(|t| body.contains(t)) {
            return body;
        }
        deadline.tick().await;
    }
}

/// A running `ordo` process; killed when dropped.
pub struct Ordo {
    child: Option<Child>,
    pub log: PathBuf,
}

/// The `ordo` binary run: this build's, or the one `BENCH_ORDO_BINARY`
/// names (the end-to-end bench compares two builds side by side with
/// `BENCH_VARIANTS=";BENCH_ORDO_BINARY=/path/to/ordo"`).
pub fn binary() -> String {
    std::env::var("BENCH_ORDO_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ordo").to_string())
}

/// Runs `ordo <args>` to completion: (status, stdout, stderr).
pub fn run_to_end(args: &[&str]) -> (ExitStatus, String, String) {
    run_to_end_with_env(args, &[])
}

/// [`run_to_end`] with these environment variables set (`PGPASSWORD` is
/// removed unless given).
pub fn run_to_end_with_env(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let out = Command::new(binary())
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("PGPASSWORD")
        .envs(env.iter().copied())
        .output()
        .expect("run ordo");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Ordo {
    pub fn start(config: &Path, log: PathBuf) -> Ordo {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(binary())
            .args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("spawn ordo");
        Ordo {
            child: Some(child),
            log,
        }
    }

    /// (user + system CPU seconds, peak resident MiB) of the process so far.
    pub fn cpu_and_peak_rss(&self) -> (f64, f64) {
        let pid = self.pid().as_raw();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // After the command name: utime and stime are the 12th and 13th fields.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let cpu = (ticks(11) + ticks(12)) / 100.0;
        let peak_kb = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        (cpu, peak_kb / 1024.0)
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// True once the process handles SIGTERM itself (`SigCgt` in
    /// `/proc/<pid>/status`): before that, the kernel's default kills it.
    fn catches_sigterm(&self) -> bool {
        let pid = self.pid().as_raw();
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
    }

    /// Sends SIGTERM, once the process listens for it (a process stopped
    /// in its first milliseconds would die of the signal, not stop), and
    /// waits for the exit (panics after `timeout`).
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        while !self.catches_sigterm() && self.running() && start.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = kill(self.pid(), Signal::SIGTERM);
        self.wait(timeout)
    }

    /// Stops the process (SIGSTOP) where it is, as a long pause (a stalled
    /// VM, a stop-the-world) would: its Kafka session expires meanwhile.
    pub fn pause(&mut self) {
        kill(self.pid(), Signal::SIGSTOP).expect("SIGSTOP");
    }

    /// Lets a paused process go on (SIGCONT).
    pub fn resume(&mut self) {
        kill(self.pid(), Signal::SIGCONT).expect("SIGCONT");
    }

    /// Kills the process at once, as a crash would.
    pub fn crash(&mut self) {
        let _ = kill(self.pid(), Signal::SIGKILL);
        self.wait(Duration::from_secs(10));
    }

    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                self.child = None;
                return status;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                panic!(
                    "ordo did not exit within {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Ordo {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
