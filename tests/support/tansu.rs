//! tansu, a Kafka-API broker that runs as a process of its own (sqlite
//! storage), for what librdkafka's mock cluster does not do: offsets by
//! timestamp (the mock answers every ListOffsets by time with -1).
//! `scripts/setup.sh test` installs it (`cargo install tansu`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A tansu broker on a free port, its storage in a temp dir; stopped when dropped.
pub struct Tansu {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

/// The `tansu` program: on the PATH or in cargo's bin directory.
fn program() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("tansu"));
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|h| h.join("bin/tansu"));
    on_path
        .chain(cargo_home)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("tansu (the Kafka-API broker these tests run) is not installed: run scripts/setup.sh test")
        })
}

impl Tansu {
    pub fn start() -> Tansu {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = super::postgres::free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("tansu.log")).expect("log");
        let child = Command::new(program())
            .current_dir(dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "sqlite://tansu.db",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start tansu");
        let t = Tansu {
            child,
            port,
            _dir: dir,
        };
        let until = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < until,
                "tansu did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        t
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
