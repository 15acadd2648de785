//! A small in-memory server speaking the Confluent Schema Registry REST API
//! (Avro schemas), for Ordo's embedded demo and its tests.
//!
//! It keeps Confluent's semantics: global, stable schema ids; per-subject
//! versions; soft and permanent deletes; compatibility levels BACKWARD,
//! FORWARD, FULL, their `_TRANSITIVE` forms and NONE, globally or per subject;
//! error bodies `{"error_code", "message"}` with Confluent's codes; optional
//! HTTP basic auth. State lives in memory and is shared between restarts of
//! the same [`Registry`] value, so a test can stop the server and bring it
//! back on the same port with the same schemas.

pub mod compat;
pub mod error;
pub mod http;
pub mod store;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use base64::Engine;

pub use compat::Level;
pub use error::ApiError;
pub use store::Store;

/// A registry's state and settings; cheap to clone (clones share the state).
#[derive(Clone, Default)]
pub struct Registry {
    store: Arc<RwLock<Store>>,
    authorization: Option<Arc<str>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Requires HTTP basic auth with this user and password on every request.
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> Registry {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.authorization = Some(format!("Basic {token}").into());
        self
    }

    /// Registers a schema directly (as `POST /subjects/{subject}/versions` would).
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32, ApiError> {
        self.store
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .register(subject, schema)
    }

    /// Sets the global compatibility level.
    pub fn set_level(&self, level: Level) {
        self.store
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .set_global_level(level);
    }

    /// The HTTP router serving this registry.
    pub fn router(&self) -> axum::Router {
        http::router(http::AppState {
            store: self.store.clone(),
            authorization: self.authorization.clone(),
        })
    }

    /// Serves on a listener until `shutdown` completes.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    /// Starts serving on `addr` (port 0 picks a free one) on a thread of its own.
    pub fn spawn(&self, addr: SocketAddr) -> std::io::Result<Running> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let registry = self.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name(format!("registry-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(std_listener)?;
                    registry
                        .serve(listener, async move {
                            let _ = stopped.await;
                        })
                        .await
                })
            })?;
        Ok(Running {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM: when a program serving a
/// registry (`ordo-registry`, `ordo demo --keep`) stops.
pub async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// A registry being served; stops when dropped.
pub struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Running {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits until the port is closed.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}
