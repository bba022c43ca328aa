//! One client session from accept to close: the connection phase (greeting,
//! optional TLS, authentication by the redirector, placement and login to
//! the backend as the same user), then the relay.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::accounts::AccountStore;
use crate::backend::{Backend, Backends};
use crate::config::Config;
use crate::policy::{Candidate, Placement};
use crate::protocol::constants::capability::*;
use crate::protocol::{
    self, parse_client_hello, parse_logical, verify_native_password, AuthSwitchRequest,
    BackendLogin, BackendLoginParams, ClientHello, ErrPacket, HandshakeResponse, InitialHandshake,
    LoginStep, ProtocolError, Sha1Hash,
};
use crate::session::{DatapathKind, SessionGuard, SessionRegistry};

/// Largest packet accepted during the connection phase (connect attributes
/// are at most 64 KiB).
const HANDSHAKE_MAX_PACKET: usize = 1 << 20;
/// Time allowed to connect and log in to one backend.
const BACKEND_LOGIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Greeting version when no backend has been seen yet. The "5.5.5-" prefix
/// is what MariaDB itself sends, for old clients' version checks.
pub const DEFAULT_SERVER_VERSION: &str = "5.5.5-10.11.0-MariaDB-redirector";

/// State shared by all sessions.
pub struct Shared {
    pub config: Config,
    pub backends: Arc<Backends>,
    pub sessions: Arc<SessionRegistry>,
    pub accounts: AccountStore,
    pub placement: RwLock<Placement>,
    pub tls: Option<TlsAcceptor>,
    pub slots: Arc<Semaphore>,
    /// Version string and capabilities of the backends, learnt from their
    /// greetings, presented to clients.
    pub greeting: RwLock<GreetingTemplate>,
    /// Prometheus metrics; the relay and the mover update them.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The placement policy document in effect (`GET|PUT /v1/policy`).
    pub policy: RwLock<crate::config::PolicyDocument>,
    /// Recent moves (`SELECT * FROM moves`).
    pub moves: crate::mover::MoveLog,
    /// The kernel session path, when `datapath.mode` selected it and the
    /// programs loaded.
    pub kernel: Option<Arc<crate::datapath::kernel::KernelPath>>,
}

/// What our greeting advertises.
#[derive(Debug, Clone)]
pub struct GreetingTemplate {
    pub server_version: String,
    pub capabilities: u32,
    pub collation: u8,
}

impl Default for GreetingTemplate {
    fn default() -> Self {
        Self {
            server_version: DEFAULT_SERVER_VERSION.to_string(),
            capabilities: RELAYABLE,
            collation: protocol::constants::collation::UTF8MB4_GENERAL_CI,
        }
    }
}

impl GreetingTemplate {
    /// Adopts a backend's greeting: its version, and the capabilities both
    /// it and the relay support.
    pub fn from_backend(g: &InitialHandshake) -> Self {
        Self {
            server_version: g.server_version.clone(),
            capabilities: (g.capabilities & RELAYABLE)
                | CLIENT_PROTOCOL_41
                | CLIENT_SECURE_CONNECTION
                | CLIENT_PLUGIN_AUTH,
            collation: g.collation,
        }
    }
}

/// Why a session ended during the connection phase.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("client closed the connection during the handshake")]
    ClientClosed,
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("refused: {0}")]
    Refused(String),
}

impl SessionError {
    /// The `errors_total{kind}` label for this failure.
    pub fn metric_kind(&self) -> &'static str {
        use crate::metrics::error_kind;
        match self {
            SessionError::Tls(_) => error_kind::TLS,
            SessionError::Refused(_) => error_kind::BACKEND_LOGIN,
            SessionError::Protocol(_) => error_kind::PROTOCOL,
            SessionError::Io(_) | SessionError::ClientClosed => error_kind::CLIENT_HANDSHAKE,
        }
    }
}

/// The client's socket, plain or TLS.
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl ClientStream {
    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }

    /// The TCP socket of a plain connection.
    pub fn plain(&self) -> Option<&TcpStream> {
        match self {
            ClientStream::Plain(s) => Some(s),
            ClientStream::Tls(_) => None,
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Reads and writes whole packets during the connection phase.
pub struct PacketIo<S> {
    pub io: S,
    pub buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> PacketIo<S> {
    pub fn new(io: S) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(4096),
        }
    }

    /// Reads one logical packet (at most `max` bytes of payload).
    pub async fn read(&mut self, max: usize) -> Result<protocol::Packet, SessionError> {
        loop {
            if let Some((p, used)) = parse_logical(&self.buf, max)? {
                self.buf.advance(used);
                return Ok(p);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(SessionError::ClientClosed);
            }
        }
    }

    /// Reads exactly one physical packet without reading past it (so that
    /// the TLS handshake after an SSLRequest finds its bytes on the socket).
    pub async fn read_exact_packet(
        &mut self,
        max: usize,
    ) -> Result<protocol::Packet, SessionError> {
        let mut h = [0u8; 4];
        self.io
            .read_exact(&mut h)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => SessionError::ClientClosed,
                _ => SessionError::Io(e),
            })?;
        let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        if len > max {
            return Err(ProtocolError::PacketTooLarge { size: len, max }.into());
        }
        let mut payload = vec![0u8; len];
        self.io.read_exact(&mut payload).await?;
        Ok(protocol::Packet::new(h[3], payload))
    }

    pub async fn write(&mut self, seq: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut out = BytesMut::with_capacity(payload.len() + 4);
        protocol::write_packet(&mut out, seq, payload);
        self.io.write_all(&out).await?;
        self.io.flush().await
    }

    /// Sends an ERR packet and shuts the connection down.
    pub async fn fail(&mut self, seq: u8, err: &ErrPacket) {
        let payload = err.to_payload(CLIENT_PROTOCOL_41);
        let _ = self.write(seq, &payload).await;
        let _ = self.io.shutdown().await;
    }
}

/// Serves one accepted client until it disconnects.
pub async fn serve_client(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let _forget = KernelForget {
        shared: shared.clone(),
        peer,
    };
    let _ = stream.set_nodelay(true);
    let mut io = PacketIo::new(ClientStream::Plain(stream));
    let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
        tracing::warn!(client = %peer, "too many connections");
        io.fail(0, &ErrPacket::too_many_connections()).await;
        return;
    };
    let id = shared.sessions.next_id();
    let timeout = shared.config.listen.handshake_timeout;
    let span = tracing::info_span!("session", id, client = %peer);
    let _enter = span.enter();
    drop(_enter);
    let established = match tokio::time::timeout(timeout, connect(&shared, io, peer, id)).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => {
            tracing::info!(parent: &span, error = %e, "connection phase failed");
            shared.metrics.error(e.metric_kind());
            return;
        }
        Err(_) => {
            shared
                .metrics
                .error(crate::metrics::error_kind::CLIENT_HANDSHAKE);
            tracing::info!(parent: &span, ?timeout, "client did not finish the handshake in time");
            return;
        }
    };
    let Established {
        client,
        backend,
        guard,
        tracker,
        login,
    } = established;
    tracing::info!(parent: &span, user = %guard.session().user(), server = %guard.session().server(), datapath = guard.session().datapath.as_str(), "session established");
    let kernel = match (&shared.kernel, guard.session().datapath) {
        (Some(k), DatapathKind::Ebpf) => k.local_app(peer).map(|key| (k.clone(), key)),
        _ => None,
    };
    let result = crate::datapath::userspace::relay(
        &shared,
        client,
        backend,
        guard.session().clone(),
        tracker,
        login,
        kernel,
    )
    .await;
    match result {
        Ok(()) => tracing::info!(parent: &span, "session closed"),
        Err(e) => {
            tracing::info!(parent: &span, error = %e, "session ended");
            shared.metrics.error(crate::metrics::error_kind::RELAY_IO);
        }
    }
    drop(guard);
    drop(permit);
}

/// Removes the kernel map entries of a client connection, whatever became
/// of it (refused, failed login, or ended).
struct KernelForget {
    shared: Arc<Shared>,
    peer: SocketAddr,
}

impl Drop for KernelForget {
    fn drop(&mut self) {
        if let Some(k) = &self.shared.kernel {
            k.forget(self.peer, None, &std::collections::BTreeSet::new());
        }
    }
}

/// What the relay needs about how the session logged in (to answer
/// COM_CHANGE_USER and, later, to log in elsewhere).
#[derive(Debug, Clone)]
pub struct LoginState {
    /// Our greeting's scramble (clients hash COM_CHANGE_USER with it).
    pub client_scramble: [u8; 20],
    /// The backend greeting's scramble.
    pub backend_scramble: Vec<u8>,
    /// Capabilities of the session (client ∩ ours ∩ backend).
    pub capabilities: u32,
    pub user: String,
    pub sha1_password: Option<Sha1Hash>,
    /// `session_track_state_change` is on for the backend connection.
    pub state_tracked: bool,
}

/// Statement that turns on state-change tracking on a backend connection.
pub const TRACK_STATE_CHANGES: &str = "SET SESSION session_track_state_change = ON";

/// Turns on `session_track_state_change` on a fresh backend connection.
async fn enable_state_tracking(stream: TcpStream, caps: u32) -> Result<TcpStream, LoginError> {
    let mut conn = crate::mover::conn::BackendConn::new(stream, caps);
    conn.query(TRACK_STATE_CHANGES)
        .await
        .map_err(|e| LoginError::Io(std::io::Error::other(e.to_string())))?;
    conn.into_inner()
        .map_err(|e| LoginError::Io(std::io::Error::other(e.to_string())))
}

struct Established {
    client: PacketIo<ClientStream>,
    backend: TcpStream,
    guard: SessionGuard,
    tracker: redirector_common::mysql::Session,
    login: LoginState,
}

async fn connect(
    shared: &Arc<Shared>,
    mut io: PacketIo<ClientStream>,
    peer: SocketAddr,
    id: u64,
) -> Result<Established, SessionError> {
    let template = shared
        .greeting
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut offered = template.capabilities & !CLIENT_MYSQL;
    if shared.tls.is_some() {
        offered |= CLIENT_SSL;
    }
    let greeting = InitialHandshake::for_client(
        template.server_version.clone(),
        id as u32,
        offered,
        0,
        template.collation,
        protocol::constants::status::SERVER_STATUS_AUTOCOMMIT,
    );
    let scramble = greeting.scramble20()?;
    io.write(0, &greeting.to_payload()).await?;

    // SSLRequest or HandshakeResponse41.
    let first = match io.read_exact_packet(HANDSHAKE_MAX_PACKET).await {
        Ok(p) => p,
        Err(e) => return Err(reject_protocol(&mut io, 2, e).await),
    };
    let mut seq = first.seq.wrapping_add(1);
    let hello = match parse_client_hello(&first.payload) {
        Ok(h) => h,
        Err(e) => return Err(reject_protocol(&mut io, seq, e.into()).await),
    };
    let response: HandshakeResponse = match hello {
        ClientHello::Response(r) => r,
        ClientHello::SslRequest(_) => {
            let Some(acceptor) = shared.tls.clone() else {
                let err = ErrPacket::new(
                    1043,
                    b"08S01",
                    "SSL connection requested, but TLS is not configured on the redirector",
                );
                io.fail(seq, &err).await;
                return Err(SessionError::Refused(
                    "SSL requested without TLS configured".into(),
                ));
            };
            let ClientStream::Plain(tcp) = io.io else {
                return Err(SessionError::Refused("second SSLRequest".into()));
            };
            let tls = acceptor.accept(tcp).await.map_err(SessionError::Tls)?;
            io = PacketIo::new(ClientStream::Tls(Box::new(tls)));
            let p = match io.read(HANDSHAKE_MAX_PACKET).await {
                Ok(p) => p,
                Err(e) => return Err(reject_protocol(&mut io, seq, e).await),
            };
            seq = p.seq.wrapping_add(1);
            match HandshakeResponse::parse(&p.payload) {
                Ok(r) => r,
                Err(e) => return Err(reject_protocol(&mut io, seq, e.into()).await),
            }
        }
    };
    let caps = response.capabilities & (offered | CLIENT_MYSQL);
    let user = response.user.clone();
    let host = peer.ip().to_string();

    // Native password only: ask a client that started with another plugin
    // to switch, with the same scramble.
    let mut auth_response = response.auth_response.to_vec();
    if response.needs_native_switch() {
        io.write(seq, &AuthSwitchRequest::native(&scramble).to_payload())
            .await?;
        let p = io.read(HANDSHAKE_MAX_PACKET).await?;
        seq = p.seq.wrapping_add(1);
        auth_response = p.payload.to_vec();
    }

    let servers: Vec<SocketAddr> = shared.backends.all().iter().map(|b| b.address).collect();
    // None: unknown user; Some(None): known, without a password.
    let check = |stored: Option<crate::accounts::StoredHash>| {
        stored.and_then(|s| verify_native_password(&auth_response, &scramble, s.as_ref()))
    };
    let mut sha1_password = check(shared.accounts.lookup(&user, &servers).await);
    if sha1_password.is_none() {
        // The password may have changed on the backends since we loaded it.
        if let Some(fresh) = shared.accounts.refresh(&user, &servers).await {
            sha1_password = check(Some(fresh));
        }
    }
    let Some(sha1_password) = sha1_password else {
        tracing::info!(user = %user, client = %peer, "access denied");
        shared.metrics.auth_failure();
        io.fail(
            seq,
            &ErrPacket::access_denied(&user, &host, !auth_response.is_empty()),
        )
        .await;
        return Err(SessionError::Refused(format!("access denied for '{user}'")));
    };

    // Local applications over plain TCP are carried by the kernel path.
    let datapath = match &shared.kernel {
        Some(k) if !io.io.is_tls() && k.local_app(peer).is_some() => DatapathKind::Ebpf,
        _ => DatapathKind::Userspace,
    };
    // Placement: register first so that concurrent placements see this
    // session in the counts.
    let guard = shared.sessions.register(id, &user, peer, "", datapath);
    guard
        .session()
        .set_state(crate::session::SessionState::Connecting);
    let order = placement_order(shared);
    if order.is_empty() {
        io.fail(
            seq,
            &ErrPacket::new(
                1105,
                b"HY000",
                "no backend server is available (all down or draining)",
            ),
        )
        .await;
        return Err(SessionError::Refused("no backend available".into()));
    }
    let params = BackendLoginParams {
        capabilities: caps & !CLIENT_SSL,
        mariadb_capabilities: 0,
        max_packet_size: response.max_packet_size,
        collation: response.collation,
        user: user.clone(),
        database: response.database.clone(),
        sha1_password,
        connect_attrs: response.connect_attrs.clone(),
    };
    let mut last_problem = String::new();
    for backend in order {
        guard.session().set_server(&backend.name);
        match tokio::time::timeout(
            BACKEND_LOGIN_TIMEOUT,
            login_backend(&backend, params.clone()),
        )
        .await
        {
            Ok(Ok((stream, login, ok_payload))) => {
                let session_caps = login.capabilities();
                // The backend must carry the session with exactly the
                // client's flags (bytes pass through unchanged).
                let wanted = caps & !(CLIENT_SSL | CLIENT_CONNECT_WITH_DB | CLIENT_MYSQL);
                if session_caps & wanted != wanted {
                    last_problem = format!(
                        "server {} lacks capabilities 0x{:08x}",
                        backend.name,
                        wanted & !session_caps
                    );
                    continue;
                }
                // Session tracking lets the relay know when the state changes,
                // so a session whose state is known can survive the loss of
                // its server (the mover keeps the last state it read).
                let state_tracked = caps & CLIENT_SESSION_TRACK != 0;
                let stream = if state_tracked {
                    match enable_state_tracking(stream, caps & !CLIENT_SSL).await {
                        Ok(s) => s,
                        Err(e) => {
                            last_problem = format!("{}: {e}", backend.name);
                            continue;
                        }
                    }
                } else {
                    stream
                };
                *shared.greeting.write().unwrap_or_else(|e| e.into_inner()) =
                    GreetingTemplate::from_backend(login.greeting());
                let status = protocol::OkPacket::parse(&ok_payload, session_caps)
                    .map(|ok| ok.status)
                    .unwrap_or(0);
                io.write(seq, &ok_payload).await?;
                shared.metrics.session_accepted();
                let tracker =
                    redirector_common::mysql::Session::new(u64::from(caps & !CLIENT_SSL), status);
                guard.session().set_schema(response.database.clone());
                guard.session().set_login_params(params.clone());
                guard
                    .session()
                    .set_backend_thread(login.greeting().connection_id);
                guard
                    .session()
                    .set_state(crate::session::SessionState::Idle);
                let login = LoginState {
                    client_scramble: scramble,
                    backend_scramble: login.greeting().scramble.clone(),
                    capabilities: caps & !CLIENT_SSL,
                    user: user.clone(),
                    sha1_password,
                    state_tracked,
                };
                return Ok(Established {
                    client: io,
                    backend: stream,
                    guard,
                    tracker,
                    login,
                });
            }
            Ok(Err(LoginError::Server(err))) => {
                // The backend refused this user (bad database, account
                // locked …): any server would; tell the client as is.
                io.fail(seq, &err).await;
                return Err(SessionError::Refused(format!(
                    "backend {}: {}",
                    backend.name, err.message
                )));
            }
            Ok(Err(e)) => {
                tracing::warn!(server = %backend.name, error = %e, "backend login failed; trying the next server");
                last_problem = format!("{}: {e}", backend.name);
            }
            Err(_) => {
                tracing::warn!(server = %backend.name, "backend login timed out; trying the next server");
                last_problem = format!("{}: login timed out", backend.name);
            }
        }
    }
    io.fail(
        seq,
        &ErrPacket::new(
            1105,
            b"HY000",
            format!("no backend server accepted the session ({last_problem})"),
        ),
    )
    .await;
    Err(SessionError::Refused(last_problem))
}

/// Sends the ERR that fits a protocol failure in the handshake.
async fn reject_protocol(
    io: &mut PacketIo<ClientStream>,
    seq: u8,
    e: SessionError,
) -> SessionError {
    let err = match &e {
        SessionError::Protocol(ProtocolError::PacketTooLarge { .. }) => {
            Some(ErrPacket::packet_too_large())
        }
        SessionError::Protocol(_) => Some(ErrPacket::bad_handshake()),
        _ => None,
    };
    if let Some(err) = err {
        io.fail(seq, &err).await;
    }
    e
}

/// Eligible servers in the policy's order of preference.
pub fn placement_order(shared: &Shared) -> Vec<Arc<Backend>> {
    let backends = shared.backends.all();
    let counts = shared.sessions.count_by_server();
    let candidates: Vec<Candidate<'_>> = backends
        .iter()
        .map(|b| Candidate {
            name: &b.name,
            sessions: counts.get(&b.name).copied().unwrap_or(0),
            eligible: b.accepts_new_sessions(),
        })
        .collect();
    tracing::debug!(?counts, "placement");
    let placement = shared.placement.read().unwrap_or_else(|e| e.into_inner());
    placement
        .order(&candidates)
        .into_iter()
        .filter_map(|i| backends.get(i).cloned())
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("server refused: {}", .0.message)]
    Server(ErrPacket),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl From<SessionError> for LoginError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Io(e) | SessionError::Tls(e) => LoginError::Io(e),
            SessionError::Protocol(ProtocolError::Server(err)) => LoginError::Server(err),
            SessionError::Protocol(p) => LoginError::Protocol(p),
            SessionError::ClientClosed => LoginError::Io(std::io::ErrorKind::UnexpectedEof.into()),
            SessionError::Refused(m) => LoginError::Io(std::io::Error::other(m)),
        }
    }
}

/// Connects to `backend` and logs in as the client's user. Returns the
/// stream, the login state and the backend's OK payload.
pub async fn login_backend(
    backend: &Backend,
    params: BackendLoginParams,
) -> Result<(TcpStream, BackendLogin, Vec<u8>), LoginError> {
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
                if !io.buf.is_empty() {
                    return Err(ProtocolError::Malformed("data after the login OK").into());
                }
                return Ok((io.io, login, p.payload.to_vec()));
            }
            Err(ProtocolError::Server(err)) => return Err(LoginError::Server(err)),
            Err(e) => return Err(e.into()),
        }
    }
}
