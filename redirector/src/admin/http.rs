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
//!
//! Bounds (`[admin]`), so that idle or half-sent requests cannot pile up:
//! at most `http_max_connections` connections (more get 503 and are
//! closed); request line and headers within `http_header_timeout_ms`
//! (hyper's own header-read timeout, which also ends idle keep-alive
//! connections); the body within `http_body_timeout_ms` and at most
//! `http_max_body_bytes` (408 / 413). A wrong bearer token backs the
//! address off ([`super::throttle`]; 429 with `Retry-After` meanwhile).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::control::{self, ControlError, ServerRow};
use super::throttle::AuthThrottle;
use crate::app::App;
use crate::config::{AdminLimits, PolicyDocument, PolicyError};
use crate::metrics::AdminSurface;
use crate::mover::{MoveReport, MoveSpec};
use crate::request::rest::{self, BodyError};
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
/// the returned handle is dropped. Wrong tokens count in `throttle`.
pub async fn start(app: Arc<App>, throttle: Arc<AuthThrottle>) -> Result<HttpServer, HttpError> {
    let address = app.config.admin.http_address;
    let bind_err = |error| HttpError::Bind { address, error };
    let listener = TcpListener::bind(address).await.map_err(bind_err)?;
    let local_addr = listener.local_addr().map_err(bind_err)?;
    let limits = app.config.admin.limits.clone();
    let routes = router(app, throttle, is_loopback(local_addr.ip()));
    tracing::info!(address = %local_addr, "admin HTTP API (REST /v1, /metrics) listening");
    let task = tokio::spawn(serve(listener, routes, limits));
    Ok(HttpServer { local_addr, task })
}

/// How long a refused connection gets to send its request and read its 503.
const REFUSAL_TIME: Duration = Duration::from_secs(2);
/// At most one "connection limit reached" warning in this time.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The accept loop: hyper's HTTP/1 server per connection, with the
/// connection limit and header-read timeout that `axum::serve` lacks.
async fn serve(listener: TcpListener, routes: Router, limits: AdminLimits) {
    let max = limits.http_max_connections as usize;
    let slots = Arc::new(Semaphore::new(max));
    // Refusals are bounded too: past this many, a connection is just closed.
    let refusals = Arc::new(Semaphore::new(max));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.http_header_timeout);
    let mut last_warning: Option<Instant> = None;
    let mut refused = 0u64;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: keep the connections we have.
                tracing::warn!(error = %e, "admin HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if last_warning.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
                tracing::warn!(client = %peer, refused, limit = max, "admin HTTP connection limit reached (admin.http_max_connections); refusing connections with 503");
                last_warning = Some(Instant::now());
                refused = 0;
            }
            if let Ok(permit) = refusals.clone().try_acquire_owned() {
                tokio::spawn(async move {
                    let _permit = permit;
                    let _ = tokio::time::timeout(REFUSAL_TIME, refuse(stream)).await;
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(routes.clone());
        // The peer for the token back-off, as axum's ConnectInfo.
        let service = hyper::service::service_fn(move |mut req| {
            req.extensions_mut().insert(ConnectInfo(peer));
            hyper::service::Service::call(&service, req)
        });
        let conn = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(client = %peer, error = %e, "admin HTTP connection ended");
            }
        });
    }
}

/// Answers 503 once the request's head is in (an HTTP client does not
/// expect an answer before it has sent its request), then reads what else
/// the client sends until it closes, so the close is not a reset that
/// loses the 503. The caller bounds the time.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str =
        r#"{"error":"too many admin HTTP connections (admin.http_max_connections)"}"#;
    const MAX_READ: usize = 64 << 10;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let mut head_seen = false;
    while buf.len() < MAX_READ {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if !head_seen && buf.windows(4).any(|w| w == b"\r\n\r\n") {
            head_seen = true;
            let response = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{BODY}",
                BODY.len()
            );
            if stream.write_all(response.as_bytes()).await.is_err()
                || stream.shutdown().await.is_err()
            {
                return;
            }
        }
    }
}

#[derive(Clone)]
struct Api {
    app: Arc<App>,
    throttle: Arc<AuthThrottle>,
    /// Bound to a loopback address: no token needed when none is configured,
    /// and never for `/metrics`.
    loopback: bool,
}

/// The routes, for a server bound to a loopback address or not.
pub fn router(app: Arc<App>, throttle: Arc<AuthThrottle>, loopback: bool) -> Router {
    let limits = app.config.admin.limits.clone();
    let api = Api {
        app,
        throttle,
        loopback,
    };
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
        // `read_body` enforces the size; the extractors need not again.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(limits, read_body))
        .with_state(api)
}

/// Reads the whole body, within `http_body_timeout_ms` and
/// `http_max_body_bytes`, before any handler runs: every body here is a
/// small JSON document, and a handler that waits (a move) must not hold a
/// half-sent request.
async fn read_body(State(limits): State<AdminLimits>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(body, limits.http_max_body_bytes);
    let bytes = match tokio::time::timeout(limits.http_body_timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            let too_large = e.into_inner().is::<http_body_util::LengthLimitError>();
            return closing(if too_large {
                let msg = format!(
                    "request body larger than {} bytes (admin.http_max_body_bytes)",
                    limits.http_max_body_bytes
                );
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, msg)
            } else {
                ApiError::bad_request("could not read the request body")
            });
        }
        Err(_) => {
            let msg = format!(
                "request body not received within {} ms (admin.http_body_timeout_ms)",
                limits.http_body_timeout.as_millis()
            );
            return closing(ApiError::new(StatusCode::REQUEST_TIMEOUT, msg));
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// An error after which the connection is closed: the rest of the
/// request's body was not read.
fn closing(e: ApiError) -> Response {
    let mut resp = e.into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

// ---- errors ---------------------------------------------------------------

/// A JSON error response: `{"error": message, ...extra}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    body: serde_json::Map<String, Value>,
    /// `Retry-After` in seconds.
    retry_after: Option<u64>,
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        let error = ApiError::bad_request(e.to_string());
        match e {
            BodyError::Json { line, column, .. } => error
                .with("line", line as u64)
                .with("column", column as u64),
            BodyError::Invalid(_) => error,
        }
    }
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let mut body = serde_json::Map::new();
        body.insert("error".into(), Value::String(message.into()));
        Self {
            status,
            body,
            retry_after: None,
        }
    }

    fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
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
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
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

/// Checks the bearer token of a request from `peer` (None only in tests
/// that call the router directly). A wrong token backs `peer` off; while it
/// does, its tokens are not checked (429). A missing token is a
/// misconfigured client, not a guess, and is not counted.
fn check_token(api: &Api, headers: &HeaderMap, peer: Option<IpAddr>) -> Result<(), ApiError> {
    let token = match api.app.config.admin.token.as_deref() {
        None if api.loopback => return Ok(()),
        None => {
            return Err(ApiError::unauthorized(
                "no admin.token is configured, so the API is refused on a non-loopback address",
            ))
        }
        Some(token) => token,
    };
    let Some(given) = bearer(headers) else {
        return Err(ApiError::unauthorized(
            "missing bearer token: send 'Authorization: Bearer <admin.token>'",
        ));
    };
    if let Some(ip) = peer {
        if let Err(b) = api.throttle.check(ip, AdminSurface::Http) {
            let secs = b.retry_in.as_secs() + 1;
            return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, b.to_string())
                .with("retry_after_s", secs)
                .retry_after(secs));
        }
    }
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        if let Some(ip) = peer {
            api.throttle.succeeded(ip);
        }
        Ok(())
    } else {
        if let Some(ip) = peer {
            api.throttle.failed(ip, AdminSurface::Http);
        }
        Err(ApiError::unauthorized("invalid bearer token"))
    }
}

fn peer_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

async fn require_token(State(api): State<Api>, req: Request, next: Next) -> Response {
    match check_token(&api, req.headers(), peer_ip(&req)) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

// ---- /metrics -----------------------------------------------------------------

async fn get_metrics(State(api): State<Api>, req: Request) -> Result<Response, ApiError> {
    if !api.loopback {
        check_token(&api, req.headers(), peer_ip(&req))?;
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

async fn add_server(State(api): State<Api>, body: Bytes) -> Result<Response, ApiError> {
    let req: rest::AddServer = rest::json(&body)?;
    let row = control::add_server(&api.app, &req.name, &req.address, req.weight).await?;
    Ok((StatusCode::CREATED, Json(row)).into_response())
}

async fn remove_server(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<MoveReport>, ApiError> {
    let req: rest::WaitBody = rest::optional(&body)?;
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
    let req: rest::WaitBody = rest::optional(&body)?;
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

async fn rebalance(State(api): State<Api>, body: Bytes) -> Result<Json<MoveReport>, ApiError> {
    let req: rest::RebalanceBody = rest::optional(&body)?;
    let wait = control::wait_timeout(&api.app, req.wait_timeout_s)?;
    Ok(Json(control::rebalance(&api.app, wait).await?))
}

// ---- /v1/sessions/move ----------------------------------------------------------

async fn move_sessions(State(api): State<Api>, body: Bytes) -> Result<Json<MoveReport>, ApiError> {
    let req: rest::MoveBody = rest::json(&body)?;
    let sessions = req.sessions.selection()?;
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
    let text = rest::policy_text(&body)?;
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
