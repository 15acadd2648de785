//! The HTTP listener: `/metrics` (Prometheus text format), `/healthz` (the
//! process is alive) and `/readyz` (connected, assigned, not stuck).

use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on (`0.0.0.0:9464`); empty: no listener.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// `/readyz` fails once the sink's breaker has been open this long.
    #[serde(default = "default_max_breaker_open_ms")]
    pub max_breaker_open_ms: u64,
    /// How often lag and dead-letter depth are measured from the broker.
    #[serde(default = "default_measure_interval_ms")]
    pub measure_interval_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_breaker_open_ms: default_max_breaker_open_ms(),
            measure_interval_ms: default_measure_interval_ms(),
        }
    }
}

impl HttpConfig {
    /// Checks values that parse but cannot work: the key (in full) and why.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let listen = self.listen.trim();
        if listen.is_empty() {
            return Ok(());
        }
        let valid = listen
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if valid {
            return Ok(());
        }
        Err((
            "http.listen".into(),
            format!(
                "`{listen}` is not an address to listen on: expected host:port, such as \
                 \"0.0.0.0:9464\" (every interface), \"127.0.0.1:9464\" or \"[::]:9464\"; \
                 empty turns the listener off"
            ),
        ))
    }
}

fn default_listen() -> String {
    "0.0.0.0:9464".into()
}
fn default_max_breaker_open_ms() -> u64 {
    60_000
}
fn default_measure_interval_ms() -> u64 {
    5000
}

/// The listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (http.listen): {reason}")]
pub struct HttpError {
    pub addr: String,
    pub reason: String,
}

/// The routes.
pub fn router(max_breaker_open: Duration) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || async move {
                let m = super::metrics::metrics();
                let ready = super::health::health().ready(max_breaker_open).is_ok();
                m.ready.set(i64::from(ready));
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    m.render(),
                )
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || async move {
                match super::health::health().ready(max_breaker_open) {
                    Ok(()) => (StatusCode::OK, "ready\n".to_string()).into_response(),
                    Err(why) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready:\n{}\n", why.join("\n")),
                    )
                        .into_response(),
                }
            }),
        )
}

/// Binds the listener and serves it in the background; `Ok(None)` when disabled.
pub async fn start(config: &HttpConfig) -> Result<Option<std::net::SocketAddr>, HttpError> {
    if config.listen.trim().is_empty() {
        return Ok(None);
    }
    let err = |reason: String| HttpError {
        addr: config.listen.clone(),
        reason,
    };
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .map_err(|e| err(e.to_string()))?;
    let addr = listener.local_addr().map_err(|e| err(e.to_string()))?;
    let app = router(Duration::from_millis(config.max_breaker_open_ms));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "http listener stopped");
        }
    });
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    Ok(Some(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listen_address_needs_a_host_and_a_port() {
        let with = |listen: &str| HttpConfig {
            listen: listen.into(),
            ..HttpConfig::default()
        };
        for good in [
            "0.0.0.0:9464",
            "127.0.0.1:0",
            "[::]:9464",
            "localhost:9464",
            "",
        ] {
            assert!(with(good).validate().is_ok(), "{good}");
        }
        for bad in [":9464", "9464", "0.0.0.0", "0.0.0.0:http", "0.0.0.0:70000"] {
            let (key, why) = with(bad).validate().unwrap_err();
            assert_eq!(key, "http.listen");
            assert!(why.contains(bad) && why.contains("0.0.0.0:9464"), "{why}");
        }
    }
}
