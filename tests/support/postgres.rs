//! A throw-away PostgreSQL cluster for the whole test binary; a database per test.
//!
//! The cluster lives in a temp dir on a free port. As root it runs as the
//! `postgres` user (the server refuses root). A watchdog process stops it and
//! removes the dir when the test binary exits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tokio_postgres::NoTls;

pub struct PgCluster {
    pub port: u16,
    pub dir: PathBuf,
    bin: PathBuf,
    opts: String,
}

impl PgCluster {
    fn pg_ctl(&self, args: &[&str]) {
        let out = as_server_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(args)
            .output()
            .expect("pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server at once, as a crash or an outage would.
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "immediate", "stop"]);
    }

    /// Starts it again on the same port, with the same data.
    pub fn start_again(&self) {
        let log = self.dir.join("log").display().to_string();
        self.pg_ctl(&["-o", &self.opts, "-l", &log, "-w", "start"]);
    }
}

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();

fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TEST_PG_BIN") {
        return dir.into();
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    candidates.sort();
    candidates
        .into_iter()
        .rev()
        .find(|p| p.join("initdb").exists())
        .expect("PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql, or set TEST_PG_BIN)")
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

fn as_server_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn start() -> PgCluster {
    let bin = bin_dir();
    let dir = tempfile::Builder::new()
        .prefix("ordo-pg-")
        .tempdir()
        .expect("temp dir")
        .keep();
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(status.success(), "chown of {} failed", dir.display());
    }
    let data = dir.join("data");
    let out = as_server_user(&bin.join("initdb"))
        .args(["-D"])
        .arg(&data)
        .args(["-A", "trust", "-U", "ordo", "--no-sync"])
        .output()
        .expect("initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // TLS on, with a certificate for `localhost` from a CA of this run
    // (`ca.pem` in the cluster's dir); plain connections are accepted too.
    let ca = super::tls::Ca::new();
    let server = ca.issue(&["localhost"]);
    for (name, text) in [
        ("ca.pem", &ca.pem),
        ("server.crt", &server.cert_pem),
        ("server.key", &server.key_pem),
    ] {
        std::fs::write(dir.join(name), text).expect("write TLS file");
    }
    std::fs::set_permissions(
        dir.join("server.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("key permissions");
    if is_root() {
        let status = Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir.join("server.crt"))
            .arg(dir.join("server.key"))
            .status()
            .expect("chown");
        assert!(status.success());
    }
    let port = free_port();
    // TEST_PG_OPTS adds server options (e.g. for a profile of a benchmark).
    let opts = format!(
        "-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200 \
         -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key {extra}",
        dir = dir.display(),
        extra = std::env::var("TEST_PG_OPTS").unwrap_or_default()
    );
    let out = as_server_user(&bin.join("pg_ctl"))
        .arg("-D")
        .arg(&data)
        .args(["-o", &opts, "-l"])
        .arg(dir.join("log"))
        .args(["-w", "start"])
        .output()
        .expect("pg_ctl start");
    assert!(
        out.status.success(),
        "pg_ctl start failed: {} {}",
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(dir.join("log")).unwrap_or_default()
    );
    // Stop the cluster and remove its dir once this test process is gone.
    let pg_ctl = bin.join("pg_ctl");
    let stop = if is_root() {
        format!(
            "runuser -u postgres -- {} -D {} -m immediate stop",
            pg_ctl.display(),
            data.display()
        )
    } else {
        format!(
            "{} -D {} -m immediate stop",
            pg_ctl.display(),
            data.display()
        )
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        dir = dir.display()
    );
    // The watchdog outlives this process on purpose; it is never waited for.
    #[allow(clippy::zombie_processes)]
    Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("watchdog");
    PgCluster {
        port,
        dir,
        bin,
        opts,
    }
}

/// The cluster of this test run, started on first use.
pub fn cluster() -> &'static PgCluster {
    CLUSTER.get_or_init(start)
}

/// A fresh database in the test cluster.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let c = cluster();
        let name = crate::support::unique("ordo_test");
        let admin = connect(&format!("postgres://ordo@127.0.0.1:{}/postgres", c.port)).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create database");
        TestDb {
            url: format!("postgres://ordo@127.0.0.1:{}/{name}", c.port),
            name,
        }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    /// Drops the database and checkpoints the cluster, so that what it left
    /// (autovacuum's work on its tables, dirty pages) does not land on what
    /// runs next. Every connection to it must be closed.
    #[allow(dead_code)]
    pub async fn remove(self) {
        let c = cluster();
        let admin = connect(&format!("postgres://ordo@127.0.0.1:{}/postgres", c.port)).await;
        // One statement per call: neither may run in a transaction block.
        for statement in [
            format!("DROP DATABASE {} WITH (FORCE)", self.name),
            "CHECKPOINT".to_string(),
        ] {
            admin
                .batch_execute(&statement)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
    }
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(conn);
    client
}

/// Once Ordo has made the `events` table, adds a rule of the database's own
/// that refuses events with a negative `amount` (constraint
/// `amount_not_negative`): the sink then refuses those events for their data.
pub async fn refuse_negative_amounts(client: &tokio_postgres::Client) {
    let deadline = super::Deadline::new("the events table", std::time::Duration::from_secs(30));
    while client
        .batch_execute(
            "ALTER TABLE events ADD CONSTRAINT amount_not_negative \
             CHECK ((payload->>'amount')::bigint >= 0)",
        )
        .await
        .is_err()
    {
        deadline.tick().await;
    }
}
