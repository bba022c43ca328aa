//! The session mover: move sessions between servers, drain and rebalance.
//!
//! A move is carried out by the session's own relay task, at a moment the
//! session is idle and outside a transaction: the relay stops reading the
//! client (HOLD), reads the state on the source connection
//! ([`state::read_source`]), logs in to the target as the same user,
//! rebuilds and verifies the state there ([`state::rebuild`]) and only then
//! switches. This module asks for moves, waits for them (with a timeout,
//! optionally killing the running statement), and keeps the move log.

pub mod conn;
pub mod state;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::oneshot;

use crate::backend::{Backend, BackendError};
use crate::metrics::{move_reason, move_result};
use crate::policy::{plan_rebalance, Candidate, ServerLoad, SessionInfo};
use crate::proxy::{login_backend, Shared};
use crate::session::{MoveReply, MoveRequest, Session};

/// Wait for a session to become movable when the request names none.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// After FORCE killed a statement, time allowed for the move to finish.
const FORCE_GRACE: Duration = Duration::from_secs(10);
/// Entries kept for `SELECT * FROM moves`.
const MOVE_LOG_LEN: usize = 1000;
/// How often draining servers are swept for sessions that can now move.
const DRAIN_SWEEP: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum MoverError {
    #[error("unknown server '{0}'")]
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

fn join_ids(ids: &[u64]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which sessions a move request covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Ids(Vec<u64>),
    /// Every session (of `from`, if given).
    All,
    /// Sessions idle and movable right now (of `from`, if given).
    AllInactive,
}

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

/// How one session's move ended.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MoveRecord {
    pub session_id: u64,
    pub from_server: String,
    pub to_server: String,
    /// `ok`, `timeout`, `not_movable` or `failed`.
    pub result: &'static str,
    /// Why it was asked for: `operator`, `drain`, `rebalance`.
    pub requested_by: &'static str,
    /// For a move that did not happen: why.
    pub reason: Option<String>,
    pub duration_ms: f64,
    /// Unix time (seconds) when the move ended.
    pub finished_at: f64,
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
                    r.reason.as_deref().unwrap_or(r.result)
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
        if r.result == move_result::OK {
            self.moved.push(r)
        } else {
            self.not_moved.push(r)
        }
    }
}

/// Recent moves, newest last.
#[derive(Debug, Default)]
pub struct MoveLog {
    entries: Mutex<VecDeque<MoveRecord>>,
}

impl MoveLog {
    pub fn record(&self, r: MoveRecord) {
        let mut e = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if e.len() == MOVE_LOG_LEN {
            e.pop_front();
        }
        e.push_back(r);
    }

    pub fn snapshot(&self) -> Vec<MoveRecord> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Records a finished move in the log and the metrics (called by the relay
/// for moves it carried out, by the mover for those that never started).
pub fn record(shared: &Shared, r: MoveRecord) {
    shared.metrics.record_move(
        r.result,
        r.requested_by,
        Duration::from_secs_f64(r.duration_ms / 1000.0),
    );
    shared.moves.record(r);
}

/// A record for a move attempt that ended with `reply`.
pub fn record_for(
    session: &Session,
    from: &str,
    to: &str,
    requested_by: &'static str,
    reply: &MoveReply,
    started: Instant,
) -> MoveRecord {
    let (result, reason) = match reply {
        MoveReply::Moved { .. } => (move_result::OK, None),
        MoveReply::NotMovable(r) => (move_result::NOT_MOVABLE, Some(r.clone())),
        MoveReply::Failed(r) => (move_result::FAILED, Some(r.clone())),
    };
    MoveRecord {
        session_id: session.id,
        from_server: from.to_string(),
        to_server: to.to_string(),
        result,
        requested_by,
        reason,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        finished_at: unix_now(),
    }
}

/// Checks that `name` can take sessions now.
fn usable_target(shared: &Shared, name: &str) -> Result<Arc<Backend>, MoverError> {
    let b = shared
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
    shared: &Arc<Shared>,
    spec: &MoveSpec,
    requested_by: &'static str,
) -> Result<MoveReport, MoverError> {
    if let Some(from) = &spec.from {
        shared
            .backends
            .get(from)
            .map_err(|_| MoverError::UnknownServer(from.clone()))?;
    }
    if let Some(to) = &spec.to {
        usable_target(shared, to)?;
    }
    let in_scope = |s: &Arc<Session>| spec.from.as_ref().is_none_or(|f| s.server() == *f);
    let sessions: Vec<Arc<Session>> = match &spec.sessions {
        Selection::Ids(ids) => {
            let found: Vec<_> = ids.iter().map(|&i| (i, shared.sessions.get(i))).collect();
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
        Selection::All => shared.sessions.all().into_iter().filter(in_scope).collect(),
        Selection::AllInactive => shared
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
    let plan = assign_targets(shared, &sessions, spec.to.as_deref())?;
    Ok(run_moves(shared, plan, spec.wait, spec.force, requested_by, None).await)
}

/// Pairs each session with its target: the named one, or the policy's
/// choice counting the sessions already assigned in this request.
fn assign_targets(
    shared: &Shared,
    sessions: &[Arc<Session>],
    to: Option<&str>,
) -> Result<Vec<(Arc<Session>, String)>, MoverError> {
    if let Some(to) = to {
        return Ok(sessions
            .iter()
            .map(|s| (s.clone(), to.to_string()))
            .collect());
    }
    let backends = shared.backends.all();
    let mut counts = shared.sessions.count_by_server();
    let mut out = Vec::with_capacity(sessions.len());
    for s in sessions {
        let current = s.server();
        let candidates: Vec<Candidate<'_>> = backends
            .iter()
            .map(|b| Candidate {
                name: &b.name,
                sessions: counts.get(&b.name).copied().unwrap_or(0),
                eligible: b.accepts_new_sessions() && b.name != current,
            })
            .collect();
        let order = shared
            .placement
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .order(&candidates);
        let Some(target) = order.first().and_then(|&i| backends.get(i)) else {
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
    shared: &Arc<Shared>,
    plan: Vec<(Arc<Session>, String)>,
    wait: Duration,
    force: bool,
    requested_by: &'static str,
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
        let shared = shared.clone();
        tasks.spawn(
            async move { move_one(&shared, &session, &to, wait, force, requested_by).await },
        );
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
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    to: &str,
    wait: Duration,
    force: bool,
    requested_by: &'static str,
) -> MoveRecord {
    move_one_logged(shared, session, to, wait, force, requested_by, true).await
}

/// `log_timeout = false` for the drain sweep's repeated short attempts,
/// which would otherwise fill the log with timeouts of busy sessions.
async fn move_one_logged(
    shared: &Arc<Shared>,
    session: &Arc<Session>,
    to: &str,
    wait: Duration,
    force: bool,
    requested_by: &'static str,
    log_timeout: bool,
) -> MoveRecord {
    let started = Instant::now();
    let from = session.server();
    let finish = |result: &'static str, reason: String| {
        let r = MoveRecord {
            session_id: session.id,
            from_server: from.clone(),
            to_server: to.to_string(),
            result,
            requested_by,
            reason: Some(reason),
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            finished_at: unix_now(),
        };
        if log_timeout || result != move_result::TIMEOUT {
            record(shared, r.clone());
        }
        r
    };
    if from == to {
        return MoveRecord {
            session_id: session.id,
            from_server: from.clone(),
            to_server: to.to_string(),
            result: move_result::OK,
            requested_by,
            reason: Some("already on the target".into()),
            duration_ms: 0.0,
            finished_at: unix_now(),
        };
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
            if let Err(e) = kill_query(shared, session).await {
                return finish(move_result::FAILED, format!("FORCE could not kill: {e}"));
            }
            match tokio::time::timeout(FORCE_GRACE, &mut rx).await {
                Ok(r) => r,
                Err(_) => return finish(move_result::TIMEOUT, busy_reason(session)),
            }
        }
        Err(_) => return finish(move_result::TIMEOUT, busy_reason(session)),
    };
    match reply {
        Ok(MoveReply::Failed(why)) if why == crate::session::SUPERSEDED => {
            finish(move_result::FAILED, why)
        }
        // The relay recorded the attempt itself.
        Ok(reply) => record_for(session, &from, to, requested_by, &reply, started),
        Err(_) => finish(move_result::FAILED, "session ended".into()),
    }
}

fn busy_reason(session: &Session) -> String {
    let snap = session.snapshot();
    match snap.not_movable_reason {
        Some(r) => format!("timed out: {r}"),
        None => format!("timed out: session {}", snap.state.as_str()),
    }
}

/// FORCE: kills the statement the session is running, on its backend, by
/// logging in as the session's own user (who may kill its own threads).
async fn kill_query(shared: &Shared, session: &Session) -> Result<(), String> {
    let mut params = session
        .login_params()
        .ok_or("the session has not finished logging in")?;
    params.database = None;
    let backend = shared
        .backends
        .get(&session.server())
        .map_err(|e| e.to_string())?;
    let thread = session.backend_thread();
    let (stream, login, _) =
        tokio::time::timeout(Duration::from_secs(5), login_backend(&backend, params))
            .await
            .map_err(|_| "login for KILL timed out".to_string())?
            .map_err(|e| e.to_string())?;
    let mut c = conn::BackendConn::new(stream, login.capabilities());
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
        Err(e) => Err(e.to_string()),
    }
}

/// Marks `server` draining (no new sessions) and moves its sessions to
/// others by policy. Sessions that do not move within `wait` are named in
/// the error; the background sweep keeps moving them as they become able.
pub async fn drain(
    shared: &Arc<Shared>,
    server: &str,
    wait: Duration,
    force: bool,
) -> Result<MoveReport, MoverError> {
    let b = shared
        .backends
        .get(server)
        .map_err(|_| MoverError::UnknownServer(server.to_string()))?;
    b.set_draining(true);
    tracing::info!(server, "draining");
    let sessions = sessions_on(shared, server);
    let plan = assign_targets(shared, &sessions, None)?;
    run_moves(shared, plan, wait, force, move_reason::DRAIN, None)
        .await
        .all_moved()
}

pub fn undrain(shared: &Shared, server: &str) -> Result<(), MoverError> {
    let b = shared
        .backends
        .get(server)
        .map_err(|_| MoverError::UnknownServer(server.to_string()))?;
    b.set_draining(false);
    tracing::info!(server, "undrained");
    Ok(())
}

fn sessions_on(shared: &Shared, server: &str) -> Vec<Arc<Session>> {
    shared
        .sessions
        .all()
        .into_iter()
        .filter(|s| s.server() == server)
        .collect()
}

/// Spreads sessions over the non-draining servers by the policy's weights,
/// moving as few as possible, at most `rate` per second.
pub async fn rebalance(
    shared: &Arc<Shared>,
    wait: Duration,
    rate: u32,
) -> Result<MoveReport, MoverError> {
    let sessions = shared.sessions.all();
    let weights: BTreeMap<String, u32> = {
        let placement = shared.placement.read().unwrap_or_else(|e| e.into_inner());
        let uses_weights = placement.policy().uses_weights();
        placement
            .members()
            .iter()
            .map(|m| (m.name.clone(), if uses_weights { m.weight } else { 1 }))
            .collect()
    };
    let mut loads: Vec<ServerLoad> = Vec::new();
    for b in shared.backends.all() {
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
    Ok(run_moves(
        shared,
        moves,
        wait,
        false,
        move_reason::REBALANCE,
        Some(rate),
    )
    .await)
}

/// Drains `server`, then forgets it. Fails (the server stays, draining)
/// if sessions are left after `wait`.
pub async fn remove_server(
    shared: &Arc<Shared>,
    server: &str,
    wait: Duration,
    force: bool,
) -> Result<MoveReport, MoverError> {
    let report = drain(shared, server, wait, force).await?;
    if !sessions_on(shared, server).is_empty() {
        return Err(MoverError::NotAllMoved(report));
    }
    shared.backends.remove(server).map_err(|e| match e {
        BackendError::Unknown(n) => MoverError::UnknownServer(n),
        BackendError::Exists(n) => MoverError::ServerExists(n),
    })?;
    tracing::info!(server, "server removed");
    Ok(report)
}

/// Keeps moving sessions off draining servers as they become able (the
/// drain command itself may have timed out on busy sessions).
pub async fn drain_sweep(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(DRAIN_SWEEP);
    loop {
        tick.tick().await;
        for b in shared.backends.all() {
            if !b.is_draining() {
                continue;
            }
            let waiting: Vec<Arc<Session>> = sessions_on(&shared, &b.name)
                .into_iter()
                .filter(|s| !s.has_pending_move())
                .collect();
            if waiting.is_empty() {
                continue;
            }
            let Ok(plan) = assign_targets(&shared, &waiting, None) else {
                continue;
            };
            for (s, to) in plan {
                let shared = shared.clone();
                tokio::spawn(async move {
                    move_one_logged(
                        &shared,
                        &s,
                        &to,
                        DRAIN_SWEEP * 4,
                        false,
                        move_reason::DRAIN,
                        false,
                    )
                    .await
                });
            }
        }
    }
}
