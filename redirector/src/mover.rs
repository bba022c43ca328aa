//! The session mover: orchestration only. Moves sessions between servers,
//! drains and rebalances by asking each session, through its mailbox, to
//! move (request + oneshot reply), waiting for the answer (with a timeout,
//! optionally killing the running statement), and recording every outcome.
//!
//! The move itself is carried out by the session's own task
//! (`session::migrate`), at a moment the session is idle and outside a
//! transaction.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;

use crate::app::App;
use crate::backend::client::BackendConn;
use crate::backend::{login, Backend, BackendError};
use crate::metrics::{MoveReason, MoveResult};
use crate::peer_text::escaped;
use crate::policy::{plan_rebalance, ServerLoad, SessionInfo};
use crate::session::{MoveRecord, MoveRequest, Session};

/// Wait for a session to become movable when the request names none.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// After FORCE killed a statement, time allowed for the move to finish.
const FORCE_GRACE: Duration = Duration::from_secs(10);
/// How often draining servers are swept for sessions that can now move.
const DRAIN_SWEEP: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum MoverError {
    /// The name is as the operator typed it: shown escaped and cut.
    #[error("unknown server '{}'", escaped(.0))]
    UnknownServer(String),
    #[error("unknown session{} {}", if .0.len() > 1 { "s" } else { "" }, join_ids(.0))]
    UnknownSessions(Vec<u64>),
    #[error("server '{0}' does not accept sessions ({1})")]
    TargetUnavailable(String, &'static str),
    #[error("no server can take the sessions (all down, draining or unlisted)")]
    NoTarget,
    #[error("{}", .0.summary())]
    NotAllMoved(MoveReport),
    #[error("{0}")]
    Policy(String),
    #[error("server '{0}' already exists")]
    ServerExists(String),
}

/// The ids, the first 20 of them when there are more (a statement may
/// list thousands).
fn join_ids(ids: &[u64]) -> String {
    const SHOWN: usize = 20;
    let mut text = ids
        .iter()
        .take(SHOWN)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > SHOWN {
        text.push_str(&format!(" and {} more", ids.len() - SHOWN));
    }
    text
}

pub use crate::request::Selection;

/// A move request (`CONTROL MOVE …`, `POST /v1/sessions/move`).
#[derive(Debug, Clone)]
pub struct MoveSpec {
    pub sessions: Selection,
    pub from: Option<String>,
    /// None: the policy picks a server for each session.
    pub to: Option<String>,
    pub wait: Duration,
    pub force: bool,
}

/// The outcome of a request covering several sessions.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MoveReport {
    pub moved: Vec<MoveRecord>,
    pub not_moved: Vec<MoveRecord>,
}

impl MoveReport {
    pub fn summary(&self) -> String {
        if self.not_moved.is_empty() {
            return format!("{} session(s) moved", self.moved.len());
        }
        let list = self
            .not_moved
            .iter()
            .map(|r| {
                format!(
                    "{} ({})",
                    r.session_id,
                    r.reason.as_deref().unwrap_or(r.result.as_str())
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!("{} session(s) moved; not moved: {list}", self.moved.len())
    }

    /// The report if every session moved, else the error naming the rest.
    pub fn all_moved(self) -> Result<MoveReport, MoverError> {
        if self.not_moved.is_empty() {
            Ok(self)
        } else {
            Err(MoverError::NotAllMoved(self))
        }
    }

    fn push(&mut self, r: MoveRecord) {
        if r.result == MoveResult::Ok {
            self.moved.push(r)
        } else {
            self.not_moved.push(r)
        }
    }
}

/// Checks that `name` can take sessions now.
fn usable_target(app: &App, name: &str) -> Result<Arc<Backend>, MoverError> {
    let b = app
        .backends
        .get(name)
        .map_err(|_| MoverError::UnknownServer(name.to_string()))?;
    if !b.is_up() {
        return Err(MoverError::TargetUnavailable(name.to_string(), "down"));
    }
    if b.is_draining() {
        return Err(MoverError::TargetUnavailable(name.to_string(), "draining"));
    }
    Ok(b)
}

/// Moves the sessions `spec` selects; waits until each has moved or could
/// not. Errors only for a bad request; sessions that did not move are in
/// the report's `not_moved`.
pub async fn move_sessions(
    app: &Arc<App>,
    spec: &MoveSpec,
    requested_by: MoveReason,
) -> Result<MoveReport, MoverError> {
    if let Some(from) = &spec.from {
        app.backends
            .get(from)
            .map_err(|_| MoverError::UnknownServer(from.clone()))?;
    }
    if let Some(to) = &spec.to {
        usable_target(app, to)?;
    }
    let in_scope = |s: &Arc<Session>| spec.from.as_ref().is_none_or(|f| s.server() == *f);
    let sessions: Vec<Arc<Session>> = match &spec.sessions {
        Selection::Ids(ids) => {
            let found: Vec<_> = ids.iter().map(|&i| (i, app.sessions.get(i))).collect();
            let missing: Vec<u64> = found
                .iter()
                .filter(|(_, s)| s.is_none())
                .map(|(i, _)| *i)
                .collect();
            if !missing.is_empty() {
                return Err(MoverError::UnknownSessions(missing));
            }
            found.into_iter().filter_map(|(_, s)| s).collect()
        }
        Selection::All => app.sessions.all().into_iter().filter(in_scope).collect(),
        Selection::AllInactive => app
            .sessions
            .all()
            .into_iter()
            .filter(in_scope)
            .filter(|s| {
                let snap = s.snapshot();
                snap.movable && snap.state == crate::session::SessionState::Idle
            })
            .collect(),
    };
    let plan = assign_targets(app, &sessions, spec.to.as_deref())?;
    Ok(run_moves(app, plan, spec.wait, spec.force, requested_by, None).await)
}

/// Pairs each session with its target: the named one, or the policy's
/// choice counting the sessions already assigned in this request.
fn assign_targets(
    app: &App,
    sessions: &[Arc<Session>],
    to: Option<&str>,
) -> Result<Vec<(Arc<Session>, String)>, MoverError> {
    if let Some(to) = to {
        return Ok(sessions
            .iter()
            .map(|s| (s.clone(), to.to_string()))
            .collect());
    }
    let backends = app.backends.all();
    let mut counts = app.sessions.count_by_server();
    let mut out = Vec::with_capacity(sessions.len());
    for s in sessions {
        let current = s.server();
        let order = app.routing.order(&backends, &counts, Some(&current));
        let Some(target) = order.first() else {
            return Err(MoverError::NoTarget);
        };
        *counts.entry(target.name.clone()).or_insert(0) += 1;
        if let Some(c) = counts.get_mut(&current) {
            *c = c.saturating_sub(1);
        }
        out.push((s.clone(), target.name.clone()));
    }
    Ok(out)
}

/// Runs the moves concurrently (or at most `rate` per second), waiting for
/// each.
async fn run_moves(
    app: &Arc<App>,
    plan: Vec<(Arc<Session>, String)>,
    wait: Duration,
    force: bool,
    requested_by: MoveReason,
    rate: Option<u32>,
) -> MoveReport {
    let mut tasks = tokio::task::JoinSet::new();
    let interval = rate
        .filter(|r| *r > 0)
        .map(|r| Duration::from_secs_f64(1.0 / f64::from(r)));
    let mut ticker = interval.map(tokio::time::interval);
    for (session, to) in plan {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        let app = app.clone();
        tasks.spawn(async move { move_one(&app, &session, &to, wait, force, requested_by).await });
    }
    let mut report = MoveReport::default();
    while let Some(r) = tasks.join_next().await {
        if let Ok(r) = r {
            report.push(r);
        }
    }
    report.moved.sort_by_key(|r| r.session_id);
    report.not_moved.sort_by_key(|r| r.session_id);
    report
}

/// Asks one session's relay to move it and waits for the answer.
pub async fn move_one(
    app: &Arc<App>,
    session: &Arc<Session>,
    to: &str,
    wait: Duration,
    force: bool,
    requested_by: MoveReason,
) -> MoveRecord {
    move_one_logged(app, session, to, wait, force, requested_by, true).await
}

/// `log_timeout = false` for the drain sweep's repeated short attempts,
/// which would otherwise fill the log with timeouts of busy sessions.
async fn move_one_logged(
    app: &Arc<App>,
    session: &Arc<Session>,
    to: &str,
    wait: Duration,
    force: bool,
    requested_by: MoveReason,
    log_timeout: bool,
) -> MoveRecord {
    let started = Instant::now();
    let from = session.server();
    let finish = |outcome: (MoveResult, Option<String>)| {
        let r = MoveRecord::new(session.id, &from, to, requested_by, outcome, started);
        if log_timeout || r.result != MoveResult::Timeout {
            app.moves.record(r.clone());
        }
        r
    };
    if from == to {
        // Nothing to do, and nothing to log.
        return MoveRecord::new(
            session.id,
            &from,
            to,
            requested_by,
            (MoveResult::Ok, Some("already on the target".into())),
            started,
        );
    }
    let (tx, mut rx) = oneshot::channel();
    session.request_move(MoveRequest {
        target: to.to_string(),
        requested_by,
        reply: tx,
    });
    let reply = match tokio::time::timeout(wait, &mut rx).await {
        Ok(r) => r,
        Err(_) if force => {
            if let Err(e) = kill_query(app, session).await {
                return finish((
                    MoveResult::Failed,
                    Some(format!("FORCE could not kill: {e}")),
                ));
            }
            match tokio::time::timeout(FORCE_GRACE, &mut rx).await {
                Ok(r) => r,
                Err(_) => return finish((MoveResult::Timeout, Some(busy_reason(session)))),
            }
        }
        Err(_) => return finish((MoveResult::Timeout, Some(busy_reason(session)))),
    };
    match reply {
        Ok(reply) => finish(reply.outcome()),
        Err(_) => finish((MoveResult::Failed, Some("session ended".into()))),
    }
}

fn busy_reason(session: &Session) -> String {
    let snap = session.snapshot();
    match snap.not_movable_reason {
        Some(r) => format!("timed out: {r}"),
        None => format!("timed out: session {}", snap.state.as_str()),
    }
}

/// Why FORCE could not kill a session's statement.
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("the session has not finished logging in")]
    NotLoggedIn,
    #[error("{0}")]
    Server(#[from] BackendError),
    #[error("login for KILL on {server}: {source}")]
    Login {
        server: String,
        #[source]
        source: login::LoginTimeout,
    },
    #[error("KILL QUERY on {server}: {source}")]
    Kill {
        server: String,
        #[source]
        source: crate::backend::client::ConnError,
    },
}

/// FORCE: kills the statement the session is running, on its backend, by
/// logging in as the session's own user (who may kill its own threads).
async fn kill_query(app: &App, session: &Session) -> Result<(), KillError> {
    let mut params = session.login_params().ok_or(KillError::NotLoggedIn)?;
    params.database = None;
    let backend = app.backends.get(&session.server())?;
    let thread = session.backend_thread();
    let l = login::login_within(&backend, params, Duration::from_secs(5))
        .await
        .map_err(|source| KillError::Login {
            server: backend.name.clone(),
            source,
        })?;
    let mut c = BackendConn::new(l.stream, l.login.capabilities());
    let r = c.query(&format!("KILL QUERY {thread}")).await;
    c.quit().await;
    tracing::info!(
        session = session.id,
        thread,
        "FORCE: killed the running statement"
    );
    // 1094: unknown thread — the statement finished meanwhile.
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.server_code() == Some(1094) => Ok(()),
        Err(source) => Err(KillError::Kill {
            server: backend.name.clone(),
            source,
        }),
    }
}

/// Marks `server` draining (no new sessions) and moves its sessions to
/// others by policy. Sessions that do not move within `wait` are named in
/// the error; the background sweep keeps moving them as they become able.
pub async fn drain(
    app: &Arc<App>,
    server: &str,
    wait: Duration,
    force: bool,
) -> Result<MoveReport, MoverError> {
    let b = app
        .backends
        .get(server)
        .map_err(|_| MoverError::UnknownServer(server.to_string()))?;
    b.set_draining(true);
    tracing::info!(server, "draining");
    let sessions = sessions_on(app, server);
    let plan = assign_targets(app, &sessions, None)?;
    run_moves(app, plan, wait, force, MoveReason::Drain, None)
        .await
        .all_moved()
}

pub fn undrain(app: &App, server: &str) -> Result<(), MoverError> {
    let b = app
        .backends
        .get(server)
        .map_err(|_| MoverError::UnknownServer(server.to_string()))?;
    b.set_draining(false);
    tracing::info!(server, "undrained");
    Ok(())
}

fn sessions_on(app: &App, server: &str) -> Vec<Arc<Session>> {
    app.sessions
        .all()
        .into_iter()
        .filter(|s| s.server() == server)
        .collect()
}

/// Spreads sessions over the non-draining servers by the policy's weights,
/// moving as few as possible, at most `rate` per second.
pub async fn rebalance(
    app: &Arc<App>,
    wait: Duration,
    rate: u32,
) -> Result<MoveReport, MoverError> {
    let sessions = app.sessions.all();
    let weights: BTreeMap<String, u32> = app.routing.rebalance_weights();
    let mut loads: Vec<ServerLoad> = Vec::new();
    for b in app.backends.all() {
        let on: Vec<SessionInfo> = sessions
            .iter()
            .filter(|s| s.server() == b.name)
            .map(|s| {
                let snap = s.snapshot();
                SessionInfo {
                    id: s.id,
                    movable: snap.movable,
                }
            })
            .collect();
        let weight = weights.get(&b.name).copied();
        let eligible = b.is_up() && weight.is_some();
        if !eligible && on.is_empty() {
            continue;
        }
        loads.push(ServerLoad {
            name: b.name.clone(),
            weight: weight.unwrap_or(1).max(1),
            draining: b.is_draining() || !eligible,
            sessions: on,
        });
    }
    if loads.iter().all(|l| l.draining) {
        return Err(MoverError::NoTarget);
    }
    let plan = plan_rebalance(&loads).map_err(|e| MoverError::Policy(e.to_string()))?;
    let by_id: BTreeMap<u64, Arc<Session>> = sessions.into_iter().map(|s| (s.id, s)).collect();
    let moves: Vec<(Arc<Session>, String)> = plan
        .moves
        .iter()
        .filter_map(|m| by_id.get(&m.session).map(|s| (s.clone(), m.to.clone())))
        .collect();
    tracing::info!(moves = moves.len(), "rebalance planned");
    Ok(run_moves(app, moves, wait, false, MoveReason::Rebalance, Some(rate)).await)
}

/// Drains `server`, then forgets it. Fails (the server stays, draining)
/// if sessions are left after `wait`.
pub async fn remove_server(
    app: &Arc<App>,
    server: &str,
    wait: Duration,
    force: bool,
) -> Result<MoveReport, MoverError> {
    let report = drain(app, server, wait, force).await?;
    if !sessions_on(app, server).is_empty() {
        return Err(MoverError::NotAllMoved(report));
    }
    app.backends.remove(server).map_err(|e| match e {
        BackendError::Unknown(n) => MoverError::UnknownServer(n),
        BackendError::Exists(n) => MoverError::ServerExists(n),
    })?;
    tracing::info!(server, "server removed");
    Ok(report)
}

/// Keeps moving sessions off draining servers as they become able (the
/// drain command itself may have timed out on busy sessions).
pub async fn drain_sweep(app: Arc<App>) {
    let mut tick = tokio::time::interval(DRAIN_SWEEP);
    loop {
        tick.tick().await;
        for b in app.backends.all() {
            if !b.is_draining() {
                continue;
            }
            let waiting: Vec<Arc<Session>> = sessions_on(&app, &b.name)
                .into_iter()
                .filter(|s| !s.has_pending_move())
                .collect();
            if waiting.is_empty() {
                continue;
            }
            let Ok(plan) = assign_targets(&app, &waiting, None) else {
                continue;
            };
            for (s, to) in plan {
                let app = app.clone();
                tokio::spawn(async move {
                    move_one_logged(
                        &app,
                        &s,
                        &to,
                        DRAIN_SWEEP * 4,
                        false,
                        MoveReason::Drain,
                        false,
                    )
                    .await
                });
            }
        }
    }
}
