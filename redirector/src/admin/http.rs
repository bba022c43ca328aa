//! The REST API under `/v1` and Prometheus `GET /metrics`, on
//! `admin.http_address`.
//!
//! Authentication: `Authorization: Bearer <admin.token>` on every `/v1`
//! endpoint. Without a configured token the API is open only when bound to
//! loopback (config validation refuses a non-loopback address without a
//! token; this module refuses it again, defensively). `/metrics` needs no
//! token on loopback, the bearer token otherwise.
//!
//! Every error is JSON `{"error": "..."}` with a fitting status code.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::control::{self, ControlError, ServerRow};
use crate::app::App;
use crate::config::{PolicyDocument, PolicyError};
use crate::mover::{MoveReport, MoveSpec, Selection};
use crate::session::SessionSnapshot;

pub use super::control::DEFAULT_WEIGHT;

/// Why the HTTP server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    // `error` (not `source`): the reason is part of this one-line message,
    // so error chains do not print it twice.
    #[error("cannot bind the admin HTTP API (REST and /metrics) on {address} (admin.http_address): {error}")]
    Bind {
        address: SocketAddr,
        error: std::io::Error,
    },
}

/// The running HTTP server; stops when dropped.
#[derive(Debug)]
pub struct HttpServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `admin.http_address` and serves the API in a background task until
/// the returned handle is dropped.
pub async fn start(app: Arc<App>) -> Result<HttpServer, HttpError> {
    let address = app.config.admin.http_address;
    let bind_err = |error| HttpError::Bind { address, error };
    let listener = TcpListener::bind(address).await.map_err(bind_err)?;
    let local_addr = listener.local_addr().map_err(bind_err)?;
    let app = router(app, is_loopback(local_addr.ip()));
    tracing::info!(address = %local_addr, "admin HTTP API (REST /v1, /metrics) listening");
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin HTTP API stopped");
        }
    });
    Ok(HttpServer { local_addr, task })
}

#[derive(Clone)]
struct Api {
    app: Arc<App>,
    /// Bound to a loopback address: no token needed when none is configured,
    /// and never for `/metrics`.
    loopback: bool,
}

/// The routes, for a server bound to a loopback address or not.
pub fn router(app: Arc<App>, loopback: bool) -> Router {
    let api = Api { app, loopback };
    let v1 = Router::new()
        .route("/sessions", get(get_sessions))
        .route("/sessions/move", post(move_sessions))
        .route("/moves", get(get_moves))
        .route("/servers", get(get_servers).post(add_server))
        .route("/servers/{name}", axum::routing::delete(remove_server))
        .route("/servers/{name}/drain", post(drain).delete(undrain))
        .route("/rebalance", post(rebalance))
        .route("/policy", get(get_policy).put(put_policy))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_token));
    Router::new()
        .route("/metrics", get(get_metrics))
        .nest("/v1", v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api)
}

// ---- errors ---------------------------------------------------------------

/// A JSON error response: `{"error": message, ...extra}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    body: serde_json::Map<String, Value>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let mut body = serde_json::Map::new();
        body.insert("error".into(), Value::String(message.into()));
        Self { status, body }
    }

    fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.body.insert(key.into(), value.into());
        self
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// A policy rejection, with the JSON position when it is a syntax error.
    fn policy(e: &PolicyError) -> Self {
        let err = Self::bad_request(e.to_string());
        match e {
            PolicyError::Json { line, column, .. } => err
                .with("line", *line as u64)
                .with("column", *column as u64),
            _ => err,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(Value::Object(self.body))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::BadRequest(m) => ApiError::bad_request(m),
            ControlError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, m),
            ControlError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, m),
            ControlError::Policy(p) => ApiError::policy(&p),
            ControlError::Internal(m) => ApiError::internal(m),
            ControlError::NotAllMoved(report) => {
                // 409: the request was valid, the sessions' state did not allow it.
                let summary = report.summary();
                let err = ApiError::new(StatusCode::CONFLICT, summary);
                match serde_json::to_value(&report) {
                    Ok(v) => err.with("report", v),
                    Err(_) => err,
                }
            }
        }
    }
}

// ---- authentication ---------------------------------------------------------

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Compares without an early exit, so response timing does not reveal how
/// much of the token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    // The scheme is case-insensitive (RFC 9110 §11.1).
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn check_token(api: &Api, headers: &HeaderMap) -> Result<(), ApiError> {
    match api.app.config.admin.token.as_deref() {
        None if api.loopback => Ok(()),
        None => Err(ApiError::unauthorized(
            "no admin.token is configured, so the API is refused on a non-loopback address",
        )),
        Some(token) => match bearer(headers) {
            None => Err(ApiError::unauthorized(
                "missing bearer token: send 'Authorization: Bearer <admin.token>'",
            )),
            Some(t) if constant_time_eq(t.as_bytes(), token.as_bytes()) => Ok(()),
            Some(_) => Err(ApiError::unauthorized("invalid bearer token")),
        },
    }
}

async fn require_token(State(api): State<Api>, req: Request, next: Next) -> Response {
    match check_token(&api, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

// ---- /metrics -----------------------------------------------------------------

async fn get_metrics(State(api): State<Api>, headers: HeaderMap) -> Result<Response, ApiError> {
    if !api.loopback {
        check_token(&api, &headers)?;
    }
    let text = api
        .app
        .metrics
        .encode()
        .map_err(|e| ApiError::internal(format!("encoding metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

// ---- /v1/sessions ---------------------------------------------------------------

async fn get_sessions(State(api): State<Api>) -> Json<Vec<SessionSnapshot>> {
    Json(api.app.sessions.snapshot())
}

// ---- /v1/servers ----------------------------------------------------------------

async fn get_servers(State(api): State<Api>) -> Json<Vec<ServerRow>> {
    Json(control::server_rows(&api.app))
}

/// Body of `POST /v1/servers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddServer {
    name: String,
    address: String,
    #[serde(default)]
    weight: Option<i64>,
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("invalid JSON body: {e}"))
            .with("line", e.line() as u64)
            .with("column", e.column() as u64)
    })
}

async fn add_server(State(api): State<Api>, body: Bytes) -> Result<Response, ApiError> {
    let req: AddServer = json_body(&body)?;
    let row = control::add_server(&api.app, &req.name, &req.address, req.weight).await?;
    Ok((StatusCode::CREATED, Json(row)).into_response())
}

/// Optional body of `DELETE /v1/servers/{name}` and `POST …/drain`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitBody {
    #[serde(default)]
    wait_timeout_s: Option<f64>,
    #[serde(default)]
    force: bool,
}

fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        json_body(body)
    }
}

async fn remove_server(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<MoveReport>, ApiError> {
    let req: WaitBody = optional_body(&body)?;
    let wait = control::wait_timeout(&api.app, req.wait_timeout_s)?;
    Ok(Json(
        control::remove_server(&api.app, &name, wait, req.force).await?,
    ))
}

async fn drain(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<MoveReport>, ApiError> {
    let req: WaitBody = optional_body(&body)?;
    let wait = control::wait_timeout(&api.app, req.wait_timeout_s)?;
    Ok(Json(
        control::drain(&api.app, &name, wait, req.force).await?,
    ))
}

async fn undrain(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Result<Json<Vec<ServerRow>>, ApiError> {
    control::undrain(&api.app, &name)?;
    Ok(Json(control::server_rows(&api.app)))
}

/// Body of `POST /v1/rebalance` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RebalanceBody {
    #[serde(default)]
    wait_timeout_s: Option<f64>,
}

async fn rebalance(State(api): State<Api>, body: Bytes) -> Result<Json<MoveReport>, ApiError> {
    let req: RebalanceBody = optional_body(&body)?;
    let wait = control::wait_timeout(&api.app, req.wait_timeout_s)?;
    Ok(Json(control::rebalance(&api.app, wait).await?))
}

// ---- /v1/sessions/move ----------------------------------------------------------

/// `"sessions"`: a list of ids, `"all"` or `"all_inactive"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SessionsField {
    Ids(Vec<u64>),
    Keyword(String),
}

/// Body of `POST /v1/sessions/move`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveBody {
    sessions: SessionsField,
    #[serde(default)]
    from: Option<String>,
    to: String,
    #[serde(default)]
    wait_timeout_s: Option<f64>,
    #[serde(default)]
    force: bool,
}

async fn move_sessions(State(api): State<Api>, body: Bytes) -> Result<Json<MoveReport>, ApiError> {
    let req: MoveBody = json_body(&body)?;
    let sessions = match req.sessions {
        SessionsField::Ids(ids) if ids.is_empty() => {
            return Err(ApiError::bad_request("\"sessions\" lists no session"))
        }
        SessionsField::Ids(ids) => Selection::Ids(ids),
        SessionsField::Keyword(k) if k == "all" => Selection::All,
        SessionsField::Keyword(k) if k == "all_inactive" => Selection::AllInactive,
        SessionsField::Keyword(k) => {
            return Err(ApiError::bad_request(format!(
                "\"sessions\": {k:?} is neither a list of ids, \"all\" nor \"all_inactive\""
            )))
        }
    };
    let spec = MoveSpec {
        sessions,
        from: req.from,
        to: Some(req.to),
        wait: control::wait_timeout(&api.app, req.wait_timeout_s)?,
        force: req.force,
    };
    Ok(Json(control::move_sessions(&api.app, &spec).await?))
}

async fn get_moves(State(api): State<Api>) -> Json<Vec<crate::session::MoveRecord>> {
    Json(api.app.moves.snapshot())
}

// ---- /v1/policy ---------------------------------------------------------------

async fn get_policy(State(api): State<Api>) -> Json<PolicyDocument> {
    Json(api.app.routing.document())
}

async fn put_policy(State(api): State<Api>, body: Bytes) -> Result<Json<PolicyDocument>, ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::bad_request(format!("policy body is not UTF-8: {e}")))?;
    Ok(Json(control::set_policy(&api.app, text)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing_and_comparison() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn loopback_addresses() {
        assert!(is_loopback("127.0.0.1".parse().unwrap()));
        assert!(is_loopback("::1".parse().unwrap()));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!is_loopback("0.0.0.0".parse().unwrap()));
        assert!(!is_loopback("10.1.2.3".parse().unwrap()));
    }
}
