//! Moving a quiet session to another server, and carrying an idle session
//! off a server that failed: read the state on the source (or use the last
//! state known), log in to the target as the same user, rebuild the state
//! and the prepared statements there, verify, and only then switch.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::core::{not_movable, Core};
use super::error::{MoveError, NotMovable, StateError};
use super::relay::{Pair, RelayError};
use super::state::{self, CapturedState};
use super::{MoveRecord, MoveReply, MoveRequest, SessionState};
use crate::backend::client::BackendConn;
use crate::backend::login::{self, LoggedIn};
use crate::backend::Backend;
use crate::metrics::MoveReason;
use crate::protocol::BackendLogin;

/// Time allowed for the state queries on the source; past it the source
/// connection's state is unknown and the session is closed.
const SOURCE_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed to log in to the target and rebuild the state there.
const TARGET_TIMEOUT: Duration = Duration::from_secs(10);

/// Carries out a move on the quiet session: reads the state on the source,
/// rebuilds and verifies it on the target, then switches `pair.backend`.
/// Answers the request (the mover records the outcome). An error means the
/// source connection can no longer be trusted (the session ends).
pub async fn execute(core: &mut Core, pair: &mut Pair, req: MoveRequest) -> Result<(), RelayError> {
    let started = Instant::now();
    let from = core.session.server();
    core.session.set_state(SessionState::Moving);
    let reply = match try_move(core, &mut pair.backend, &req.target).await? {
        Ok(target) => {
            let source = std::mem::replace(&mut pair.backend, target);
            BackendConn::new(source, core.login.capabilities)
                .quit()
                .await;
            tracing::info!(session = core.session.id, from = %from, to = %req.target, ms = started.elapsed().as_secs_f64() * 1000.0, "session moved");
            MoveReply::Moved
        }
        Err(StateError::NotMovable(why)) => {
            tracing::info!(session = core.session.id, from = %from, to = %req.target, reason = %why, "session not moved");
            MoveReply::NotMovable(why)
        }
        Err(StateError::Failed(why)) => {
            tracing::info!(session = core.session.id, from = %from, to = %req.target, reason = %why, "session not moved");
            MoveReply::Failed(why)
        }
    };
    let _ = req.reply.send(reply);
    core.publish();
    Ok(())
}

/// The move itself: `Ok(Ok(target connection))` when it can switch,
/// `Ok(Err(_))` when the session stays, `Err` when the source failed.
async fn try_move(
    core: &mut Core,
    source: &mut TcpStream,
    target_name: &str,
) -> Result<Result<TcpStream, StateError>, RelayError> {
    let Ok(target) = core.ctx.backends.get(target_name) else {
        return Ok(Err(MoveError::UnknownServer(target_name.into()).into()));
    };
    if !target.is_up() {
        return Ok(Err(MoveError::ServerDown(target_name.into()).into()));
    }
    let Some(mut params) = core.session.login_params() else {
        return Ok(Err(MoveError::NoLoginParams.into()));
    };
    params.database = None;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let caps = core.login.capabilities;
    // The target login runs while the source's state is read: the two take
    // about as long, and the move's latency is the longer one.
    let login = login::login_within(&target, params, TARGET_TIMEOUT);
    let mut src = BackendConn::new(source, caps);
    let read = tokio::time::timeout(
        SOURCE_READ_TIMEOUT,
        state::read_source(&mut src, &mut core.hints, now),
    );
    let (read, login) = tokio::join!(read, login);
    let login = login.map_err(|source| MoveError::TargetLogin {
        server: target_name.to_string(),
        source,
    });
    let state = match read {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            if let Ok(l) = login {
                BackendConn::new(l.stream, caps).quit().await;
            }
            if src.finish().is_err() {
                return Err(unsolicited_source());
            }
            return Ok(Err(e));
        }
        Err(_) => {
            return Err(RelayError::Backend(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the source server did not answer the state queries",
            )))
        }
    };
    if src.finish().is_err() {
        return Err(unsolicited_source());
    }
    let logged_in = match login {
        Ok(x) => x,
        Err(e) => return Ok(Err(e.into())),
    };
    Ok(
        match open_on(core, &target, &state, Some(logged_in)).await {
            Ok((stream, login, prepared)) => {
                adopt(core, target_name, &login, &prepared, state);
                Ok(stream)
            }
            Err(e) => Err(e),
        },
    )
}

fn unsolicited_source() -> RelayError {
    RelayError::Backend(std::io::Error::other(
        "the source server sent unsolicited data during the move",
    ))
}

/// Logs in to `target` as the session's user (unless `logged_in`), rebuilds
/// `state` and the prepared statements there and verifies the result.
/// Returns the connection, its login and client id → (server id, params).
async fn open_on(
    core: &Core,
    target: &Backend,
    state: &CapturedState,
    logged_in: Option<LoggedIn>,
) -> Result<(TcpStream, BackendLogin, BTreeMap<u32, (u32, u16)>), StateError> {
    let Some(mut params) = core.session.login_params() else {
        return Err(MoveError::NoLoginParams.into());
    };
    // `rebuild` selects the schema.
    params.database = None;
    let statements = core.statements.for_rebuild();
    let source_fp = state.fingerprint(&statements.iter().map(|(&id, (_, p))| (id, *p)).collect());
    let caps = core.login.capabilities;
    let mariadb_caps = params.mariadb_capabilities;
    let server = target.name.as_str();
    let attempt = async {
        let l = match logged_in {
            Some(x) => x,
            None => login::login(target, params)
                .await
                .map_err(|e| MoveError::TargetLogin {
                    server: server.to_string(),
                    source: e.into(),
                })?,
        };
        let missing = login::missing_capabilities(caps, l.login.capabilities());
        if missing != 0 {
            return Err(NotMovable::TargetCapabilities(missing).into());
        }
        let missing = mariadb_caps & !l.login.mariadb_capabilities();
        if missing != 0 {
            return Err(NotMovable::TargetMariadbCapabilities(missing).into());
        }
        let mut conn = BackendConn::new(l.stream, caps);
        let (rebuilt, prepared) = match state::rebuild(&mut conn, server, state, &statements).await
        {
            Ok(x) => x,
            Err(e) => {
                conn.quit().await;
                return Err(e);
            }
        };
        let params = prepared.iter().map(|(&c, &(_, p))| (c, p)).collect();
        if rebuilt.fingerprint(&params) != source_fp {
            let difference = state.first_difference(&rebuilt);
            conn.quit().await;
            return Err(MoveError::Verify {
                server: server.to_string(),
                difference,
            }
            .into());
        }
        let stream = conn.into_inner().map_err(|_| MoveError::Unsolicited {
            server: server.to_string(),
        })?;
        Ok((stream, l.login, prepared))
    };
    match tokio::time::timeout(TARGET_TIMEOUT, attempt).await {
        Ok(r) => r,
        Err(_) => Err(MoveError::TargetTimeout {
            server: server.to_string(),
            after: TARGET_TIMEOUT,
        }
        .into()),
    }
}

/// Bookkeeping once the session runs on `target_name`.
fn adopt(
    core: &mut Core,
    target_name: &str,
    login: &BackendLogin,
    prepared: &BTreeMap<u32, (u32, u16)>,
    state: CapturedState,
) {
    core.session.record_move(target_name);
    if core.past_threads.len() >= super::kill::PAST_THREADS_KEPT {
        core.past_threads.remove(0);
    }
    core.past_threads.push(core.session.backend_thread());
    core.session
        .set_backend_thread(login.greeting().connection_id);
    core.session.set_schema(state.schema.clone());
    core.login.backend_scramble = login.greeting().scramble.clone();
    core.statements.after_move(prepared);
    core.know(state);
}

/// The session's server is gone while the session was idle: if the state
/// last known is still current (no state change reported since), carries
/// the session to another server. Returns the new connection.
/// The caller established that the server is down (its shutdown notice,
/// or it refuses connections).
pub async fn failover(core: &mut Core) -> Option<TcpStream> {
    let started = Instant::now();
    tracing::debug!(
        tracked = core.login.state_tracked,
        known_changes = ?core.known.as_ref().map(|s| s.state_changes),
        changes = core.proto.tracker.state_changes(),
        "failover check"
    );
    let known = core.known.as_ref()?;
    if !known.current(core.login.state_tracked, &core.proto.tracker)
        || not_movable(&core.proto).is_some()
        || core.hints.reason().is_some()
    {
        return None;
    }
    let state = known.state.clone();
    let from = core.session.server();
    let candidates: Vec<_> = core
        .ctx
        .placement_order(Some(&from))
        .into_iter()
        .take(2)
        .collect();
    for target in candidates {
        match open_on(core, &target, &state, None).await {
            Ok((stream, login, prepared)) => {
                adopt(core, &target.name, &login, &prepared, state);
                core.ctx.moves.record(MoveRecord::new(
                    core.session.id,
                    &from,
                    &target.name,
                    MoveReason::Failover,
                    MoveReply::Moved.outcome(),
                    started,
                ));
                tracing::info!(session = core.session.id, from = %from, to = %target.name, "server lost; session carried over");
                core.publish();
                return Some(stream);
            }
            Err(e) => {
                tracing::info!(session = core.session.id, to = %target.name, error = %e, "failover attempt failed");
            }
        }
    }
    None
}
