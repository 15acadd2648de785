//! Telemetry: logging.

pub mod logging;
