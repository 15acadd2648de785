//! Telemetry: logging, metrics, health, and the HTTP listener serving them.

pub mod health;
pub mod http;
pub mod json;
pub mod logging;
pub mod measure;
pub mod metrics;
pub mod partition;
pub mod span;
