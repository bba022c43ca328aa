//! Operations app by the admin surfaces (REST, admin SQL): one
//! implementation of each command, so both answer the same way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::backend::routing::RoutingError;
use crate::backend::{Backend, BackendError};
use crate::config::{
    parse_policy, resolve_socket_addr, validate_server_name, ClusterWeight, PolicyDocument,
    PolicyError,
};
use crate::metrics::MoveReason;
use crate::mover::{self, MoveReport, MoveSpec, MoverError};
use crate::peer_text::escaped;

/// Weight of a server added without one (the same default as `[[servers]]`).
pub const DEFAULT_WEIGHT: u32 = 1;

/// What went wrong, by kind (REST maps kinds to status codes, admin SQL to
/// error numbers).
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A policy document was rejected (with its JSON position if a syntax error).
    #[error("{0}")]
    Policy(PolicyError),
    /// Some sessions did not move; the report says which and why.
    #[error("{}", .0.summary())]
    NotAllMoved(MoveReport),
    #[error("{0}")]
    Internal(String),
}

impl From<RoutingError> for ControlError {
    fn from(e: RoutingError) -> Self {
        match e {
            RoutingError::Document(p) => ControlError::Policy(p),
            RoutingError::Placement(p) => ControlError::BadRequest(p.to_string()),
        }
    }
}

impl From<MoverError> for ControlError {
    fn from(e: MoverError) -> Self {
        match e {
            MoverError::UnknownServer(_) | MoverError::UnknownSessions(_) => {
                ControlError::NotFound(e.to_string())
            }
            MoverError::TargetUnavailable(..) | MoverError::NoTarget => {
                ControlError::Conflict(e.to_string())
            }
            MoverError::NotAllMoved(r) => ControlError::NotAllMoved(r),
            MoverError::Policy(m) => ControlError::BadRequest(m),
            MoverError::ServerExists(_) => ControlError::Conflict(e.to_string()),
        }
    }
}

/// One row of `GET /v1/servers` / `SELECT * FROM servers`.
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

pub fn server_rows(app: &App) -> Vec<ServerRow> {
    let counts = app.sessions.count_by_server();
    let policy = app.routing.document();
    app.backends
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

/// Wait timeout of a move, drain or rebalance request (seconds; None = the
/// configured default).
pub fn wait_timeout(app: &App, seconds: Option<f64>) -> Result<Duration, ControlError> {
    match seconds {
        None => Ok(app.config.mover.default_wait_timeout),
        Some(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(ControlError::BadRequest(format!(
            "wait timeout {s}: must be between 0 and 86400 seconds"
        ))),
    }
}

pub async fn move_sessions(app: &Arc<App>, spec: &MoveSpec) -> Result<MoveReport, ControlError> {
    let report = mover::move_sessions(app, spec, MoveReason::Operator).await?;
    Ok(report.all_moved()?)
}

pub async fn drain(
    app: &Arc<App>,
    server: &str,
    wait: Duration,
    force: bool,
) -> Result<MoveReport, ControlError> {
    Ok(mover::drain(app, server, wait, force).await?)
}

pub fn undrain(app: &App, server: &str) -> Result<(), ControlError> {
    Ok(mover::undrain(app, server)?)
}

pub async fn rebalance(app: &Arc<App>, wait: Duration) -> Result<MoveReport, ControlError> {
    let report = mover::rebalance(app, wait, app.config.mover.rebalance_rate).await?;
    Ok(report.all_moved()?)
}

/// Drains the server, then removes it from the servers and the policy.
pub async fn remove_server(
    app: &Arc<App>,
    server: &str,
    wait: Duration,
    force: bool,
) -> Result<MoveReport, ControlError> {
    let report = mover::remove_server(app, server, wait, force).await?;
    app.routing.update(|current| {
        let mut doc = current.clone();
        for g in &mut doc.cluster_resource_groups {
            g.clusters.retain(|c| c.cluster_id != server);
        }
        // A policy left without members keeps the old document (the
        // server is gone from the server set either way).
        let keep = doc.group().is_some_and(|g| !g.clusters.is_empty());
        Ok::<_, ControlError>((keep.then_some(doc), ()))
    })?;
    Ok(report)
}

/// Adds a server (listed in the policy with `weight`, so it gets new
/// sessions). `address` may be a host name.
pub async fn add_server(
    app: &App,
    name: &str,
    address: &str,
    weight: Option<i64>,
) -> Result<ServerRow, ControlError> {
    validate_server_name(name)
        .map_err(|e| ControlError::BadRequest(format!("name '{}': {e}", escaped(name))))?;
    let weight = match weight {
        None => DEFAULT_WEIGHT,
        Some(w) => u32::try_from(w).ok().filter(|w| *w > 0).ok_or_else(|| {
            ControlError::BadRequest(format!("weight {w}: must be between 1 and {}", u32::MAX))
        })?,
    };
    // Host names resolve with blocking getaddrinfo.
    let text = address.to_string();
    let resolved = tokio::task::spawn_blocking(move || resolve_socket_addr(&text))
        .await
        .map_err(|e| ControlError::Internal(format!("resolving the address: {e}")))?
        .map_err(|e| ControlError::BadRequest(format!("address '{}': {e}", escaped(address))))?;
    if let Some(why) = crate::config::server_address_problem(resolved) {
        return Err(ControlError::BadRequest(format!(
            "address '{}': {why}",
            escaped(address)
        )));
    }
    add_server_to(app, name, resolved, weight)?;
    tracing::info!(server = %name, address = %resolved, weight, "server added");
    server_rows(app)
        .into_iter()
        .find(|r| r.server_name == name)
        .ok_or_else(|| ControlError::Internal("the added server disappeared".into()))
}

/// Adds the server and lists it in the policy under the routing lock, so a
/// concurrent policy change cannot interleave.
fn add_server_to(
    app: &App,
    name: &str,
    address: SocketAddr,
    weight: u32,
) -> Result<(), ControlError> {
    app.routing.update(|current| {
        if app.backends.get(name).is_ok() {
            return Err(ControlError::Conflict(
                BackendError::Exists(name.to_string()).to_string(),
            ));
        }
        let mut doc = current.clone();
        if let Some(group) = doc.cluster_resource_groups.first_mut() {
            if !group.clusters.iter().any(|c| c.cluster_id == name) {
                group.clusters.push(ClusterWeight {
                    cluster_id: name.to_string(),
                    weight,
                });
            }
        }
        // Validate the new placement before the server is added.
        crate::policy::Placement::from_document(&doc).map_err(RoutingError::from)?;
        app.backends
            .add(Backend::new(name, address, weight))
            .map_err(|e| ControlError::Conflict(e.to_string()))?;
        Ok((Some(doc), ()))
    })
}

/// Replaces the placement policy with the JSON document `text`.
pub fn set_policy(app: &App, text: &str) -> Result<PolicyDocument, ControlError> {
    let doc = app.routing.update(|_| {
        let names: Vec<String> = app.backends.all().iter().map(|b| b.name.clone()).collect();
        let doc = parse_policy(text, &names).map_err(ControlError::Policy)?;
        Ok::<_, ControlError>((Some(doc.clone()), doc))
    })?;
    // JSON escapes control characters; a group id can still be long.
    let json = serde_json::to_string(&doc).unwrap_or_default();
    tracing::info!(policy = %escaped(&json).max_chars(1000), "placement policy replaced");
    Ok(doc)
}
