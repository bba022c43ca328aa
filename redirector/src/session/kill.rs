//! KILL through the redirector. A client knows itself and other clients by
//! the thread id of the redirector's greeting (the session id, stable
//! across moves), while the servers know backend thread ids that change
//! with every move and collide between servers. Passing `KILL <id>` on
//! unchanged would kill whatever backend connection has that number —
//! often another client's. So `KILL [HARD|SOFT] [CONNECTION|QUERY] <id>`
//! and COM_PROCESS_KILL are held until the session is idle and carried
//! out here, on the backend connection the id names:
//!
//! 1. the client's own greeting id → its own current backend connection;
//! 2. another live session's id → that session's current backend
//!    connection, run as the killing client's user (on its own connection
//!    when both are on the same server, else on a short-lived connection to
//!    the target's server), so the server applies its own privilege rules;
//! 3. one of the client's own backend ids (what `CONNECTION_ID()` returned
//!    on this or an earlier server) → its own connection;
//! 4. anything else → 1094 "Unknown thread id", never passed on.
//!
//! `KILL CONNECTION_ID()` is the client itself. `KILL QUERY ID <n>` and
//! `KILL USER <name>` pass unchanged (query ids and user names mean the
//! same to every connection of that server). Any other expression is
//! refused with a clear error: the server would evaluate it as a backend
//! thread id.

use bytes::BytesMut;
use redirector_common::mysql;

use super::core::Core;
use super::relay::{write_packet, Pair, RelayError};
use crate::backend::client::{BackendConn, ConnError};
use crate::backend::login;
use crate::protocol::constants::command::{COM_PROCESS_KILL, COM_QUERY};
use crate::protocol::constants::error::{
    CR_SERVER_LOST, ER_CONNECTION_KILLED, ER_KILL_DENIED_ERROR as ER_KILL_DENIED,
    ER_NOT_SUPPORTED_YET, ER_NO_SUCH_THREAD,
};
use crate::protocol::kill::{classify, Kill, Parsed, Target};
use crate::protocol::{self, ErrPacket, OkPacket, PacketIo, PacketIoError};

/// How long a KILL aimed at a session on another server may take to log in.
const SIDE_LOGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Backend ids a session remembers from earlier servers (rule 3).
pub const PAST_THREADS_KEPT: usize = 16;

/// Where a KILL goes.
enum Resolved {
    /// A backend thread on the session's own server.
    Here {
        thread: u32,
    },
    /// The current backend thread of a session on another server.
    Elsewhere {
        server: String,
        thread: u32,
    },
    Unknown,
}

fn resolve(core: &Core, target: Target) -> Resolved {
    let own = || Resolved::Here {
        thread: core.session.backend_thread(),
    };
    let n = match target {
        Target::Own => return own(),
        Target::Id(n) => n,
    };
    if n == core.session.id {
        return own();
    }
    if let Some(other) = core.ctx.sessions.get(n) {
        let server = other.server();
        let thread = other.backend_thread();
        if thread != 0 {
            return if server == core.session.server() {
                Resolved::Here { thread }
            } else {
                Resolved::Elsewhere { server, thread }
            };
        }
    }
    if n == u64::from(core.session.backend_thread())
        || core.past_threads.iter().any(|&t| u64::from(t) == n)
    {
        return own();
    }
    Resolved::Unknown
}

/// The server's KILL errors name its own thread id; the client named `id`.
fn client_error(e: ErrPacket, id: u64) -> ErrPacket {
    match e.code {
        ER_NO_SUCH_THREAD => ErrPacket::new(e.code, b"HY000", format!("Unknown thread id: {id}")),
        ER_KILL_DENIED => ErrPacket::new(
            e.code,
            b"HY000",
            format!("You are not owner of thread {id}"),
        ),
        _ => e,
    }
}

fn backend_err(e: PacketIoError) -> RelayError {
    match e {
        PacketIoError::Io(e) => RelayError::Backend(e),
        PacketIoError::Protocol(p) => RelayError::Protocol(p),
        PacketIoError::Closed => RelayError::BackendClosed,
    }
}

/// The command that kills backend thread `thread`, as `kill` asked.
fn command_for(kill: &Kill, thread: u32) -> Vec<u8> {
    if kill.words.is_empty() {
        let mut p = vec![COM_PROCESS_KILL];
        p.extend_from_slice(&thread.to_le_bytes());
        p
    } else {
        let mut p = vec![COM_QUERY];
        p.extend_from_slice(format!("{} {thread}", kill.words).as_bytes());
        p
    }
}

/// Carries out the held KILL `packet` (everything before it is answered).
/// Returns whether the session is over (it killed its own connection).
pub async fn run(core: &mut Core, pair: &mut Pair, packet: BytesMut) -> Result<bool, RelayError> {
    let reply_seq = packet.get(3).copied().unwrap_or(0).wrapping_add(1);
    let caps = core.login.capabilities;
    let kill = match classify(&packet) {
        Parsed::Kill(k) => k,
        Parsed::Unsupported | Parsed::Other => {
            let err = ErrPacket::new(
                ER_NOT_SUPPORTED_YET,
                b"42000",
                "KILL through the redirector takes a thread id (a number) or CONNECTION_ID(), \
                 alone in its statement",
            );
            write_packet(&mut pair.client, reply_seq, &err.to_payload(caps))
                .await
                .map_err(RelayError::Client)?;
            return Ok(false);
        }
    };
    let client_id = match kill.target {
        Target::Id(n) => n,
        Target::Own => core.session.id,
    };
    tracing::info!(session = core.session.id, kill = %kill.words, id = client_id, "KILL");
    let reply = match resolve(core, kill.target) {
        Resolved::Unknown => ErrPacket::new(
            ER_NO_SUCH_THREAD,
            b"HY000",
            format!("Unknown thread id: {client_id}"),
        )
        .to_payload(caps),
        Resolved::Here { thread } => {
            let own = thread == core.session.backend_thread();
            let reply = forward(core, pair, &command_for(&kill, thread)).await?;
            // The server answers a KILL of the connection it runs on with
            // 1927 and closes it: the session is over, as it would be.
            let killed_self = own
                && !kill.words.contains("QUERY")
                && ErrPacket::parse(&reply).is_ok_and(|e| e.code == ER_CONNECTION_KILLED);
            let reply = match ErrPacket::parse(&reply) {
                Ok(e) if reply.first() == Some(&protocol::constants::header::ERR) => {
                    client_error(e, client_id).to_payload(caps)
                }
                _ => reply,
            };
            write_packet(&mut pair.client, reply_seq, &reply)
                .await
                .map_err(RelayError::Client)?;
            core.publish();
            return Ok(killed_self);
        }
        Resolved::Elsewhere { server, thread } => {
            match elsewhere(core, &server, &command_for(&kill, thread)).await {
                Ok(()) => {
                    let mut out = BytesMut::new();
                    OkPacket {
                        status: core.proto.tracker.status(),
                        ..OkPacket::default()
                    }
                    .encode(caps, &mut out);
                    out.to_vec()
                }
                Err(ConnError::Server(e)) => client_error(e, client_id).to_payload(caps),
                Err(e) => {
                    tracing::warn!(session = core.session.id, server = %server, error = %e, "KILL on another server failed");
                    ErrPacket::new(
                        CR_SERVER_LOST,
                        b"HY000",
                        format!("KILL {client_id}: could not reach server '{server}': {e}"),
                    )
                    .to_payload(caps)
                }
            }
        }
    };
    write_packet(&mut pair.client, reply_seq, &reply)
        .await
        .map_err(RelayError::Client)?;
    Ok(false)
}

/// Sends `command` on the session's own backend connection as the client's
/// command (the state machine sees both) and returns the server's reply.
async fn forward(core: &mut Core, pair: &mut Pair, command: &[u8]) -> Result<Vec<u8>, RelayError> {
    let mut framed = BytesMut::with_capacity(command.len() + 4);
    protocol::write_packet(&mut framed, 0, command);
    core.client_packet(&mut framed, true);
    let mut io = PacketIo::new(&mut pair.backend);
    io.write(0, command).await.map_err(RelayError::Backend)?;
    let p = io.read(1 << 20).await.map_err(backend_err)?;
    if io.into_inner_if_drained().is_none() {
        return Err(RelayError::Protocol(protocol::ProtocolError::Malformed(
            "data after the KILL reply",
        )));
    }
    let info = mysql::PacketInfo::from_payload(p.seq, &p.payload);
    core.proto.tracker.on_server_packet(&info);
    Ok(p.payload.to_vec())
}

/// Runs `command` on `server` as the session's user, on a connection of its
/// own (the target session lives there).
async fn elsewhere(core: &Core, server: &str, command: &[u8]) -> Result<(), ConnError> {
    let unexpected = |what| ConnError::Unexpected(what);
    let backend = core
        .ctx
        .backends
        .get(server)
        .map_err(|_| unexpected("the target session's server is no longer configured"))?;
    let params = core
        .session
        .login_params()
        .ok_or_else(|| unexpected("the session's login is not known"))?;
    let caps = params.capabilities;
    let logged_in = login::login_within(&backend, params, SIDE_LOGIN_TIMEOUT)
        .await
        .map_err(|e| match e {
            login::LoginTimeout::Login(login::LoginError::Server(err)) => ConnError::Server(err),
            other => ConnError::Io(PacketIoError::Io(std::io::Error::other(other.to_string()))),
        })?;
    let mut conn = BackendConn::new(logged_in.stream, caps);
    let result = conn.ok_or_err(command).await;
    conn.quit().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewritten_commands() {
        let k = Kill {
            words: "KILL HARD QUERY".into(),
            target: Target::Id(1),
        };
        assert_eq!(command_for(&k, 77), b"\x03KILL HARD QUERY 77".to_vec());
        let k = Kill {
            words: String::new(),
            target: Target::Id(1),
        };
        assert_eq!(command_for(&k, 0x0102), vec![COM_PROCESS_KILL, 2, 1, 0, 0]);
    }
}
