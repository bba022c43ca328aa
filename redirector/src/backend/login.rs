//! Logging in to a backend as the client's user (no plaintext password:
//! the client's SHA1(password) answers the server's scramble), and the
//! capability check every backend connection must pass.

use std::time::Duration;

use tokio::net::TcpStream;

use super::client::{BackendConn, ConnError};
use super::Backend;
use crate::protocol::constants::capability::{
    CLIENT_CONNECT_WITH_DB, CLIENT_MYSQL, CLIENT_SESSION_TRACK, CLIENT_SSL,
};
use crate::protocol::{
    BackendLogin, BackendLoginParams, ErrPacket, LoginStep, PacketIo, PacketIoError, ProtocolError,
};

/// Largest packet accepted during the connection phase (connect attributes
/// are at most 64 KiB).
pub const HANDSHAKE_MAX_PACKET: usize = 1 << 20;

/// Statement that turns on state-change tracking on a backend connection.
pub const TRACK_STATE_CHANGES: &str = "SET SESSION session_track_state_change = ON";

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("server refused: {}", crate::peer_text::escaped(&.0.message))]
    Server(ErrPacket),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection during login")]
    Closed,
    #[error("turning on session state tracking: {0}")]
    StateTracking(#[source] ConnError),
}

impl From<PacketIoError> for LoginError {
    fn from(e: PacketIoError) -> Self {
        match e {
            PacketIoError::Io(e) => LoginError::Io(e),
            PacketIoError::Protocol(ProtocolError::Server(err)) => LoginError::Server(err),
            PacketIoError::Protocol(p) => LoginError::Protocol(p),
            PacketIoError::Closed => LoginError::Closed,
        }
    }
}

/// A logged-in backend connection.
pub struct LoggedIn {
    pub stream: TcpStream,
    pub login: BackendLogin,
    /// The server's OK payload (relayed to the client at connect time).
    pub ok_payload: Vec<u8>,
}

/// Connects to `backend` and logs in as the client's user.
pub async fn login(backend: &Backend, params: BackendLoginParams) -> Result<LoggedIn, LoginError> {
    let stream = TcpStream::connect(backend.address)
        .await
        .map_err(LoginError::Connect)?;
    stream.set_nodelay(true)?;
    let mut io = PacketIo::new(stream);
    let greeting = io.read(HANDSHAKE_MAX_PACKET).await?;
    let (mut login, response) = match BackendLogin::start(&greeting.payload, params) {
        Ok(x) => x,
        Err(ProtocolError::Server(err)) => return Err(LoginError::Server(err)),
        Err(e) => return Err(e.into()),
    };
    let mut seq = greeting.seq.wrapping_add(1);
    io.write(seq, &response).await?;
    loop {
        let p = io.read(HANDSHAKE_MAX_PACKET).await?;
        seq = p.seq.wrapping_add(1);
        match login.on_packet(&p.payload) {
            Ok(LoginStep::Send(data)) => io.write(seq, &data).await?,
            Ok(LoginStep::Done(_)) => {
                // Nothing may be buffered past the OK: the server speaks
                // only when asked.
                let Some(stream) = io.into_inner_if_drained() else {
                    return Err(ProtocolError::Malformed("data after the login OK").into());
                };
                return Ok(LoggedIn {
                    stream,
                    login,
                    ok_payload: p.payload.to_vec(),
                });
            }
            Err(ProtocolError::Server(err)) => return Err(LoginError::Server(err)),
            Err(e) => return Err(e.into()),
        }
    }
}

/// [`login`] within `timeout`.
pub async fn login_within(
    backend: &Backend,
    params: BackendLoginParams,
    timeout: Duration,
) -> Result<LoggedIn, LoginTimeout> {
    match tokio::time::timeout(timeout, login(backend, params)).await {
        Ok(r) => r.map_err(LoginTimeout::Login),
        Err(_) => Err(LoginTimeout::TimedOut(timeout)),
    }
}

/// A login that failed or did not finish in time.
#[derive(Debug, thiserror::Error)]
pub enum LoginTimeout {
    #[error("{0}")]
    Login(#[from] LoginError),
    #[error("login timed out after {0:?}")]
    TimedOut(Duration),
}

/// The capabilities of `session` (the client's, relayed unchanged) that a
/// backend connection logged in with `got` lacks; 0 = it can carry the
/// session. Bytes pass through unchanged, so the backend must agree on
/// every flag that shapes the protocol.
pub fn missing_capabilities(session: u32, got: u32) -> u32 {
    let wanted = session & !(CLIENT_SSL | CLIENT_CONNECT_WITH_DB | CLIENT_MYSQL);
    wanted & !got
}

/// Turns on `session_track_state_change` on a fresh backend connection of a
/// client that negotiated session tracking, so the relay learns from OK
/// packets when the session's state changes (for failover). Returns whether
/// it did.
pub async fn enable_state_tracking(stream: &mut TcpStream, caps: u32) -> Result<bool, LoginError> {
    if caps & CLIENT_SESSION_TRACK == 0 {
        return Ok(false);
    }
    let mut conn = BackendConn::new(stream, caps);
    conn.query(TRACK_STATE_CHANGES)
        .await
        .map_err(LoginError::StateTracking)?;
    conn.finish().map_err(LoginError::StateTracking)?;
    Ok(true)
}
