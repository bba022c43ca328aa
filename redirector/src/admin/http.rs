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
use std::sync::{Arc, PoisonError};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::backend::{Backend, BackendError};
use crate::config::{
    parse_policy, resolve_socket_addr, validate_server_name, ClusterWeight, PolicyDocument,
    PolicyError,
};
use crate::policy::{Placement, ScalingPolicy};
use crate::proxy::Shared;
use crate::session::SessionSnapshot;

/// Weight of a server added without one (the same default as `[[servers]]`).
pub const DEFAULT_WEIGHT: u32 = 1;

/// Message of the endpoints that need the session mover.
const NEEDS_MOVER: &str = "requires the session mover (not available in this version)";

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
pub async fn start(shared: Arc<Shared>) -> Result<HttpServer, HttpError> {
    let address = shared.config.admin.http_address;
    let bind_err = |error| HttpError::Bind { address, error };
    let listener = TcpListener::bind(address).await.map_err(bind_err)?;
    let local_addr = listener.local_addr().map_err(bind_err)?;
    let app = router(shared, is_loopback(local_addr.ip()));
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
    shared: Arc<Shared>,
    /// Bound to a loopback address: no token needed when none is configured,
    /// and never for `/metrics`.
    loopback: bool,
}

/// The routes, for a server bound to a loopback address or not.
pub fn router(shared: Arc<Shared>, loopback: bool) -> Router {
    let api = Api { shared, loopback };
    let v1 = Router::new()
        .route("/sessions", get(get_sessions))
        .route("/sessions/move", post(needs_mover))
        .route("/servers", get(get_servers).post(add_server))
        .route("/servers/{name}", axum::routing::delete(needs_mover))
        .route(
            "/servers/{name}/drain",
            post(needs_mover).delete(needs_mover),
        )
        .route("/rebalance", post(needs_mover))
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

async fn needs_mover() -> ApiError {
    ApiError::new(StatusCode::NOT_IMPLEMENTED, NEEDS_MOVER)
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
    match api.shared.config.admin.token.as_deref() {
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
        .shared
        .metrics
        .encode()
        .map_err(|e| ApiError::internal(format!("encoding metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

// ---- /v1/sessions ---------------------------------------------------------------

async fn get_sessions(State(api): State<Api>) -> Json<Vec<SessionSnapshot>> {
    Json(api.shared.sessions.snapshot())
}

// ---- /v1/servers ----------------------------------------------------------------

/// One row of `GET /v1/servers` (the columns of `SELECT * FROM servers`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerRow {
    pub server_name: String,
    pub address: String,
    /// The weight in the policy in effect; the server's own weight if the
    /// policy does not list it.
    pub weight: u32,
    /// `active`, `draining`, `drained` or `down`.
    pub state: String,
    pub sessions: usize,
    /// Whether the policy lists the server (unlisted servers get no new sessions).
    pub in_policy: bool,
}

fn server_rows(shared: &Shared) -> Vec<ServerRow> {
    let counts = shared.sessions.count_by_server();
    let policy = shared.policy.read().unwrap_or_else(PoisonError::into_inner);
    shared
        .backends
        .all()
        .iter()
        .map(|b| {
            let sessions = counts.get(&b.name).copied().unwrap_or(0);
            let listed = policy.weight_of(&b.name);
            ServerRow {
                server_name: b.name.clone(),
                address: b.address.to_string(),
                weight: listed.unwrap_or_else(|| b.weight()),
                state: b.state(sessions).as_str().to_string(),
                sessions,
                in_policy: listed.is_some(),
            }
        })
        .collect()
}

async fn get_servers(State(api): State<Api>) -> Json<Vec<ServerRow>> {
    Json(server_rows(&api.shared))
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
    validate_server_name(&req.name)
        .map_err(|e| ApiError::bad_request(format!("name {:?}: {e}", req.name)))?;
    let weight = match req.weight {
        None => DEFAULT_WEIGHT,
        Some(w) => u32::try_from(w).ok().filter(|w| *w > 0).ok_or_else(|| {
            ApiError::bad_request(format!("weight {w}: must be between 1 and {}", u32::MAX))
        })?,
    };
    // Hostnames resolve with blocking getaddrinfo.
    let text = req.address.clone();
    let address = tokio::task::spawn_blocking(move || resolve_socket_addr(&text))
        .await
        .map_err(|e| ApiError::internal(format!("resolving the address: {e}")))?
        .map_err(|e| ApiError::bad_request(format!("address {:?}: {e}", req.address)))?;

    add_server_locked(&api.shared, &req.name, address, weight)?;
    tracing::info!(server = %req.name, %address, weight, "server added over REST");
    let row = server_rows(&api.shared)
        .into_iter()
        .find(|r| r.server_name == req.name)
        .ok_or_else(|| ApiError::internal("the added server disappeared"))?;
    Ok((StatusCode::CREATED, Json(row)).into_response())
}

/// Adds the backend and lists it in the policy with `weight`, so new
/// sessions can be placed on it. Holds the policy lock throughout so a
/// concurrent `PUT /v1/policy` cannot interleave.
fn add_server_locked(
    shared: &Shared,
    name: &str,
    address: SocketAddr,
    weight: u32,
) -> Result<(), ApiError> {
    let mut policy = shared
        .policy
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    if shared.backends.get(name).is_ok() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            BackendError::Exists(name.to_string()).to_string(),
        ));
    }
    let mut doc = policy.clone();
    if let Some(group) = doc.cluster_resource_groups.first_mut() {
        if !group.clusters.iter().any(|c| c.cluster_id == name) {
            group.clusters.push(ClusterWeight {
                cluster_id: name.to_string(),
                weight,
            });
        }
    }
    let placement = {
        let current = shared
            .placement
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        placement_for(&current, &doc)?
    };
    shared
        .backends
        .add(Backend::new(name, address, weight))
        .map_err(|e| match e {
            BackendError::Exists(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            BackendError::Unknown(_) => ApiError::internal(e.to_string()),
        })?;
    *shared
        .placement
        .write()
        .unwrap_or_else(PoisonError::into_inner) = placement;
    *policy = doc;
    Ok(())
}

// ---- /v1/policy ---------------------------------------------------------------

async fn get_policy(State(api): State<Api>) -> Json<PolicyDocument> {
    Json(
        api.shared
            .policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
    )
}

/// The placement for `doc`, continuing `current`'s round-robin rotation.
fn placement_for(current: &Placement, doc: &PolicyDocument) -> Result<Placement, ApiError> {
    let group = doc
        .group()
        .ok_or_else(|| ApiError::policy(&PolicyError::NoResourceGroups))?;
    let kind: ScalingPolicy = group
        .scaling_policy
        .as_str()
        .parse()
        .map_err(|e: crate::policy::PolicyError| ApiError::bad_request(e.to_string()))?;
    current
        .reconfigure(
            kind,
            group
                .clusters
                .iter()
                .map(|c| (c.cluster_id.clone(), c.weight)),
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn put_policy(State(api): State<Api>, body: Bytes) -> Result<Json<PolicyDocument>, ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::bad_request(format!("policy body is not UTF-8: {e}")))?;
    let shared = &api.shared;
    let mut policy = shared
        .policy
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    let names: Vec<String> = shared
        .backends
        .all()
        .iter()
        .map(|b| b.name.clone())
        .collect();
    let doc = parse_policy(text, &names).map_err(|e| ApiError::policy(&e))?;
    let placement = {
        let current = shared
            .placement
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        placement_for(&current, &doc)?
    };
    *shared
        .placement
        .write()
        .unwrap_or_else(PoisonError::into_inner) = placement;
    *policy = doc.clone();
    drop(policy);
    tracing::info!(policy = %serde_json::to_string(&doc).unwrap_or_default(), "placement policy replaced over REST");
    Ok(Json(doc))
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
