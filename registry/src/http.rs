//! The HTTP API: routes, request bodies and response shapes of the Confluent
//! Schema Registry, over the [`Store`](crate::store::Store).

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::compat::Level;
use crate::error::{ApiError, ErrorBody};
use crate::store::{Store, VersionRef};

/// The content type the registry answers with.
pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<RwLock<Store>>,
    /// The expected `Authorization` header value, when basic auth is on.
    pub authorization: Option<Arc<str>>,
}

impl AppState {
    fn read(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(|p| p.into_inner())
    }
}

type ApiResult = Result<Response, ApiError>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            error_code: self.code,
            message: &self.message,
        };
        reply(status, &serde_json::to_value(body).unwrap_or(Value::Null))
    }
}

fn reply(status: StatusCode, body: &Value) -> Response {
    let mut r = (status, body.to_string()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    r
}

fn ok(body: Value) -> ApiResult {
    Ok(reply(StatusCode::OK, &body))
}

/// The router with every endpoint.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { ok(json!({})) }))
        .route("/schemas/types", get(|| async { ok(json!(["AVRO"])) }))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_of_id))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(raw_version),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(compatibility_all),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility_one),
        )
        .route("/config", get(global_config).put(set_global_config))
        .route(
            "/config/{subject}",
            get(subject_config)
                .put(set_subject_config)
                .delete(delete_subject_config),
        )
        .fallback(|| async { ApiError::not_found() })
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(expected) = &state.authorization {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(&**expected) {
            let mut r = ApiError::unauthorized().into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"SchemaRegistry\""),
            );
            return r;
        }
    }
    next.run(request).await
}

type Params = Query<HashMap<String, String>>;

fn flag(params: &Params, name: &str) -> bool {
    params
        .get(name)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn parse_id(id: &str) -> Result<u32, ApiError> {
    id.parse()
        .map_err(|_| ApiError::schema_not_found(format!("Schema {id} not found")))
}

/// Body of register, lookup and compatibility requests.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaRequest {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

fn schema_request(body: &Bytes) -> Result<SchemaRequest, ApiError> {
    let req: SchemaRequest = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::unprocessable(format!("Unprocessable entity: {e}"))
        } else {
            ApiError::bad_request(format!("Request body is not valid JSON: {e}"))
        }
    })?;
    if let Some(t) = req.schema_type.as_deref().filter(|t| *t != "AVRO") {
        return Err(ApiError::invalid_schema(format!(
            "Invalid schema type {t}: this registry holds AVRO schemas only"
        )));
    }
    if !req.references.is_empty() {
        return Err(ApiError::invalid_schema(
            "Schema references are not supported by this registry".into(),
        ));
    }
    Ok(req)
}

async fn schema_by_id(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let store = s.read();
    let stored = store.schema_by_id(parse_id(&id)?)?;
    ok(json!({ "schema": stored.text }))
}

async fn raw_schema_by_id(State(s): State<AppState>, Path(id): Path<String>) -> ApiResult {
    let store = s.read();
    let stored = store.schema_by_id(parse_id(&id)?)?;
    ok(serde_json::from_str(&stored.text).unwrap_or(Value::Null))
}

async fn versions_of_id(
    State(s): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult {
    let found = s
        .read()
        .versions_of_id(parse_id(&id)?, flag(&params, "deleted"))?;
    let list: Vec<Value> = found
        .into_iter()
        .map(|(subject, version)| json!({ "subject": subject, "version": version }))
        .collect();
    ok(Value::Array(list))
}

async fn subjects_of_id(
    State(s): State<AppState>,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult {
    let found = s
        .read()
        .versions_of_id(parse_id(&id)?, flag(&params, "deleted"))?;
    let mut subjects: Vec<String> = found.into_iter().map(|(s, _)| s).collect();
    subjects.dedup();
    ok(json!(subjects))
}

async fn subjects(State(s): State<AppState>, params: Params) -> ApiResult {
    ok(json!(s.read().subjects(flag(&params, "deleted"))))
}

async fn versions(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    params: Params,
) -> ApiResult {
    ok(json!(s
        .read()
        .versions(&subject, flag(&params, "deleted"))?))
}

async fn register(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req = schema_request(&body)?;
    let id = s.write().register(&subject, &req.schema)?;
    ok(json!({ "id": id }))
}

async fn version(
    State(s): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    params: Params,
) -> ApiResult {
    let v = s.read().version(
        &subject,
        VersionRef::parse(&version)?,
        flag(&params, "deleted"),
    )?;
    ok(json!({ "subject": v.subject, "version": v.version, "id": v.id, "schema": v.schema }))
}

async fn raw_version(
    State(s): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    params: Params,
) -> ApiResult {
    let v = s.read().version(
        &subject,
        VersionRef::parse(&version)?,
        flag(&params, "deleted"),
    )?;
    ok(serde_json::from_str(&v.schema).unwrap_or(Value::Null))
}

async fn lookup(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    params: Params,
    body: Bytes,
) -> ApiResult {
    let req = schema_request(&body)?;
    let v = s
        .read()
        .lookup(&subject, &req.schema, flag(&params, "deleted"))?;
    ok(json!({ "subject": v.subject, "version": v.version, "id": v.id, "schema": v.schema }))
}

async fn delete_subject(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    params: Params,
) -> ApiResult {
    ok(json!(s
        .write()
        .delete_subject(&subject, flag(&params, "permanent"))?))
}

async fn delete_version(
    State(s): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    params: Params,
) -> ApiResult {
    let v = VersionRef::parse(&version)?;
    ok(json!(s.write().delete_version(
        &subject,
        v,
        flag(&params, "permanent")
    )?))
}

fn compatibility_reply(problems: Vec<String>, params: &Params) -> ApiResult {
    if flag(params, "verbose") {
        ok(json!({ "is_compatible": problems.is_empty(), "messages": problems }))
    } else {
        ok(json!({ "is_compatible": problems.is_empty() }))
    }
}

async fn compatibility_all(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    params: Params,
    body: Bytes,
) -> ApiResult {
    let req = schema_request(&body)?;
    let problems = s.read().test_compatibility(&subject, None, &req.schema)?;
    compatibility_reply(problems, &params)
}

async fn compatibility_one(
    State(s): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    params: Params,
    body: Bytes,
) -> ApiResult {
    let v = VersionRef::parse(&version)?;
    let req = schema_request(&body)?;
    let problems = s
        .read()
        .test_compatibility(&subject, Some(v), &req.schema)?;
    compatibility_reply(problems, &params)
}

/// Body of `PUT /config`.
#[derive(Debug, Deserialize)]
struct ConfigRequest {
    compatibility: String,
}

fn level_request(body: &Bytes) -> Result<Level, ApiError> {
    let req: ConfigRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::unprocessable(format!("Unprocessable entity: {e}")))?;
    Level::parse(&req.compatibility).ok_or_else(|| ApiError::invalid_level(&req.compatibility))
}

async fn global_config(State(s): State<AppState>) -> ApiResult {
    ok(json!({ "compatibilityLevel": s.read().global_level() }))
}

async fn set_global_config(State(s): State<AppState>, body: Bytes) -> ApiResult {
    let level = level_request(&body)?;
    s.write().set_global_level(level);
    ok(json!({ "compatibility": level }))
}

async fn subject_config(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    params: Params,
) -> ApiResult {
    let store = s.read();
    let level = match store.subject_level(&subject) {
        Some(l) => l,
        None if flag(&params, "defaultToGlobal") => store.global_level(),
        None => return Err(ApiError::subject_level_not_configured(&subject)),
    };
    ok(json!({ "compatibilityLevel": level }))
}

async fn set_subject_config(
    State(s): State<AppState>,
    Path(subject): Path<String>,
    body: Bytes,
) -> ApiResult {
    let level = level_request(&body)?;
    s.write().set_subject_level(&subject, Some(level));
    ok(json!({ "compatibility": level }))
}

async fn delete_subject_config(
    State(s): State<AppState>,
    Path(subject): Path<String>,
) -> ApiResult {
    let mut store = s.write();
    if store.subject_level(&subject).is_none() {
        return Err(ApiError::subject_level_not_configured(&subject));
    }
    let previous = store.set_subject_level(&subject, None);
    ok(json!({ "compatibilityLevel": previous }))
}
