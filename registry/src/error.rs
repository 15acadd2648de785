//! API errors with the status codes and error codes of the Confluent Schema Registry.

use serde::Serialize;

/// An error the API returns: an HTTP status and a body `{"error_code", "message"}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: u32,
    pub message: String,
}

/// The JSON body of an error response.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error_code: u32,
    pub message: &'a str,
}

impl ApiError {
    fn new(status: u16, code: u32, message: String) -> ApiError {
        ApiError {
            status,
            code,
            message,
        }
    }

    pub fn subject_not_found(subject: &str) -> ApiError {
        Self::new(404, 40401, format!("Subject '{subject}' not found."))
    }

    pub fn version_not_found(version: &str) -> ApiError {
        Self::new(404, 40402, format!("Version {version} not found."))
    }

    pub fn schema_not_found(message: String) -> ApiError {
        Self::new(404, 40403, message)
    }

    pub fn subject_soft_deleted(subject: &str) -> ApiError {
        Self::new(
            404,
            40404,
            format!(
                "Subject '{subject}' was soft deleted.Set permanent=true to delete permanently"
            ),
        )
    }

    pub fn subject_not_soft_deleted(subject: &str) -> ApiError {
        Self::new(
            404,
            40405,
            format!("Subject '{subject}' was not deleted first before being permanently deleted"),
        )
    }

    pub fn version_not_soft_deleted(subject: &str, version: u32) -> ApiError {
        Self::new(
            404,
            40407,
            format!(
                "Subject '{subject}' Version {version} was not deleted first before being permanently deleted"
            ),
        )
    }

    pub fn subject_level_not_configured(subject: &str) -> ApiError {
        Self::new(
            404,
            40408,
            format!("Subject '{subject}' does not have subject-level compatibility configured"),
        )
    }

    pub fn incompatible(subject: &str, problems: &[String]) -> ApiError {
        Self::new(
            409,
            409,
            format!(
                "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}]",
                problems.join("; ")
            ),
        )
    }

    pub fn invalid_schema(message: String) -> ApiError {
        Self::new(422, 42201, message)
    }

    pub fn invalid_version(version: &str) -> ApiError {
        Self::new(
            422,
            42202,
            format!(
                "The specified version '{version}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
            ),
        )
    }

    pub fn invalid_level(level: &str) -> ApiError {
        Self::new(
            422,
            42203,
            format!("Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive (got '{level}')"),
        )
    }

    pub fn unprocessable(message: String) -> ApiError {
        Self::new(422, 422, message)
    }

    pub fn bad_request(message: String) -> ApiError {
        Self::new(400, 400, message)
    }

    pub fn not_found() -> ApiError {
        Self::new(404, 404, "HTTP 404 Not Found".into())
    }

    pub fn unauthorized() -> ApiError {
        Self::new(401, 401, "Unauthorized".into())
    }
}
