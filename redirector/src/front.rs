//! One client from accept to an established session: greeting, optional
//! TLS, authentication by the redirector, placement and login to a backend
//! as the same user. Then the session loop (`session::driver`) takes over.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use crate::app::App;
use crate::backend::login::{self, LoginError, LoginTimeout, HANDSHAKE_MAX_PACKET};
use crate::datapath::Offload;
use crate::metrics::ErrorKind;
use crate::net::ClientStream;
use crate::peer_text;
use crate::protocol::constants::capability::*;
use crate::protocol::{
    self, parse_client_hello, BackendLoginParams, ClientHello, ErrPacket, GreetingTemplate,
    HandshakeResponse, InitialHandshake, PacketIo, PacketIoError, ProtocolError,
};
use crate::session::core::{Core, LoginState};
use crate::session::relay::Pair;
use crate::session::{SessionGuard, SessionState};

/// Time allowed to connect and log in to one backend.
const BACKEND_LOGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a client was turned away during the connection phase.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("SSL requested without TLS configured")]
    NoTls,
    #[error("second SSLRequest")]
    SecondSslRequest,
    /// The user name as the client sent it (shown escaped and cut).
    #[error("access denied for '{}'", peer_text::escaped(.0))]
    AccessDenied(String),
    #[error("too many connections (listen.max_connections)")]
    TooManyConnections,
    #[error("no backend available")]
    NoBackend,
    /// The backend's error, which may quote the client's names.
    #[error("backend {server}: {}", peer_text::escaped(.message))]
    BackendRefused { server: String, message: String },
    #[error("{0}")]
    AllBackendsFailed(String),
}

/// Why a session ended during the connection phase.
#[derive(Debug, thiserror::Error)]
pub enum FrontError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("client closed the connection during the handshake")]
    ClientClosed,
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
}

impl From<PacketIoError> for FrontError {
    fn from(e: PacketIoError) -> Self {
        match e {
            PacketIoError::Io(e) => FrontError::Io(e),
            PacketIoError::Protocol(p) => FrontError::Protocol(p),
            PacketIoError::Closed => FrontError::ClientClosed,
        }
    }
}

impl FrontError {
    /// The `errors_total{kind}` this failure counts as.
    pub fn metric_kind(&self) -> ErrorKind {
        match self {
            FrontError::Tls(_) => ErrorKind::Tls,
            FrontError::Refused(Refusal::TooManyConnections) => ErrorKind::Limit,
            FrontError::Refused(_) => ErrorKind::BackendLogin,
            FrontError::Protocol(_) => ErrorKind::Protocol,
            FrontError::Io(_) | FrontError::ClientClosed => ErrorKind::ClientHandshake,
        }
    }
}

/// The kernel path as the session registry reads it: a session's live
/// tracker while the kernel carries it.
#[derive(Debug)]
struct KernelView(Arc<crate::datapath::LocalApp>);

impl crate::session::KernelState for KernelView {
    fn carried(&self, key: u64) -> Option<redirector_common::mysql::Tracker> {
        self.0.armed_tracker(key)
    }
}

/// A logged-in session, ready for the session loop.
struct Established {
    client: PacketIo<ClientStream>,
    backend: TcpStream,
    guard: SessionGuard,
    tracker: redirector_common::mysql::Session,
    login: LoginState,
    /// The session's slot of `listen.max_connections`.
    slot: OwnedSemaphorePermit,
}

/// Serves one accepted client until it disconnects.
pub async fn serve_client(app: Arc<App>, stream: TcpStream, peer: SocketAddr) {
    // Decided here, once: dropping it (refused, failed login, or ended)
    // removes every kernel entry of the connection.
    let local = stream.local_addr().ok();
    let mut offload = match (&app.kernel, local) {
        (Some(k), Some(local)) => k
            .session_for(peer, local)
            .map_or(Offload::None, Offload::LocalApp),
        _ => Offload::None,
    };
    let _ = stream.set_nodelay(true);
    let mut io = PacketIo::new(ClientStream::Plain(stream));
    // Held until the client is logged in or gone: connections that never
    // log in are bounded apart from the sessions.
    let Ok(handshake) = app.handshakes.clone().try_acquire_owned() else {
        tracing::warn!(client = %peer, limit = app.config.listen.max_handshakes, "too many connections in the handshake (listen.max_handshakes)");
        app.metrics.error(ErrorKind::Limit);
        io.fail(0, &ErrPacket::too_many_handshakes()).await;
        return;
    };
    let id = app.sessions.next_id();
    let timeout = app.config.listen.handshake_timeout;
    let span = tracing::info_span!("session", id, client = %peer);
    let connected = tokio::time::timeout(timeout, connect(&app, io, peer, id, &mut offload)).await;
    drop(handshake);
    let established = match connected {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => {
            tracing::info!(parent: &span, error = %e, "connection phase failed");
            app.metrics.error(e.metric_kind());
            return;
        }
        Err(_) => {
            app.metrics.error(ErrorKind::ClientHandshake);
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
        slot,
    } = established;
    let session = guard.session().clone();
    tracing::info!(parent: &span, user = %peer_text::escaped(&session.user()), server = %session.server(), datapath = session.datapath().as_str(), "session established");
    let PacketIo {
        io: client,
        buf: leftover,
    } = client;
    let core = Core::new(app.session_ctx(), session, tracker, login);
    let pair = Pair { client, backend };
    let driven = crate::session::driver::run(core, pair, leftover, offload);
    match tracing::Instrument::instrument(driven, span.clone()).await {
        Ok(()) => tracing::info!(parent: &span, "session closed"),
        Err(e) => {
            tracing::info!(parent: &span, error = %e, "session ended");
            app.metrics.error(e.metric_kind());
        }
    }
    drop(guard);
    drop(slot);
}

async fn connect(
    app: &Arc<App>,
    mut io: PacketIo<ClientStream>,
    peer: SocketAddr,
    id: u64,
    offload: &mut Offload,
) -> Result<Established, FrontError> {
    let template = app
        .greeting
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut offered = template.capabilities & !CLIENT_MYSQL;
    if app.tls.is_some() {
        offered |= CLIENT_SSL;
    }
    let greeting = InitialHandshake::for_client(
        template.server_version.clone(),
        id as u32,
        offered,
        template.mariadb_capabilities,
        template.collation,
        protocol::constants::status::SERVER_STATUS_AUTOCOMMIT,
    );
    let scramble = greeting.scramble20()?;
    io.write(0, &greeting.to_payload()).await?;

    // SSLRequest or HandshakeResponse41.
    let first = match io.read_exact_packet(HANDSHAKE_MAX_PACKET).await {
        Ok(p) => p,
        Err(e) => return Err(reject_protocol(&mut io, 2, e.into()).await),
    };
    let mut seq = first.seq.wrapping_add(1);
    let hello = match parse_client_hello(&first.payload) {
        Ok(h) => h,
        Err(e) => return Err(reject_protocol(&mut io, seq, e.into()).await),
    };
    let response: HandshakeResponse = match hello {
        ClientHello::Response(r) => r,
        ClientHello::SslRequest(_) => {
            let Some(acceptor) = app.tls.clone() else {
                let err = ErrPacket::new(
                    1043,
                    b"08S01",
                    "SSL connection requested, but TLS is not configured on the redirector",
                );
                io.fail(seq, &err).await;
                return Err(Refusal::NoTls.into());
            };
            let ClientStream::Plain(tcp) = io.io else {
                return Err(Refusal::SecondSslRequest.into());
            };
            let tls = acceptor.accept(tcp).await.map_err(FrontError::Tls)?;
            io = PacketIo::new(ClientStream::Tls(Box::new(tls)));
            // TLS clients stay on the relay: the kernel cannot read their bytes.
            if matches!(offload, Offload::LocalApp(_)) {
                app.metrics
                    .kernel_fallback(crate::metrics::KernelFallback::Tls);
            }
            *offload = Offload::None;
            let p = match io.read(HANDSHAKE_MAX_PACKET).await {
                Ok(p) => p,
                Err(e) => return Err(reject_protocol(&mut io, seq, e.into()).await),
            };
            seq = p.seq.wrapping_add(1);
            match HandshakeResponse::parse(&p.payload) {
                Ok(r) => r,
                Err(e) => return Err(reject_protocol(&mut io, seq, e.into()).await),
            }
        }
    };
    // Client libraries that read with blocking recv() without poll() get
    // spurious EAGAINs from sockets in a sockhash (kernel): keep them on the
    // relay.
    if let Offload::LocalApp(_) = offload {
        let relayed = &app.config.datapath.relay_clients;
        let name = response
            .connect_attrs
            .iter()
            .filter(|(k, _)| k == "_client_name")
            .map(|(_, v)| v.as_str())
            .find(|n| relayed.iter().any(|c| c == n));
        if let Some(name) = name {
            tracing::debug!(client_library = name, "kept on the userspace relay");
            app.metrics
                .kernel_fallback(crate::metrics::KernelFallback::Client);
            *offload = Offload::None;
        }
    }
    let caps = response.capabilities & (offered | CLIENT_MYSQL);
    // What the client took of the MariaDB extensions we offered; every
    // backend connection of the session must agree (bytes pass unchanged).
    let mariadb_caps = if caps & CLIENT_MYSQL == 0 {
        response.mariadb_capabilities & template.mariadb_capabilities
    } else {
        0
    };
    let user = response.user.clone();
    let host = peer.ip().to_string();

    // The account decides the plugin, as on the server: native (a client
    // that started with another plugin is switched to it, same scramble)
    // or ed25519 (switched to client_ed25519 with a fresh nonce).
    let servers = app.server_addresses();
    let client = crate::auth::Client {
        user: &user,
        ip: peer.ip(),
        // Without CLIENT_PLUGIN_AUTH a client always speaks native.
        plugin: response
            .auth_plugin
            .as_deref()
            .filter(|_| response.supports_auth_switch()),
        response: &response.auth_response,
        scramble: &scramble,
        can_switch: response.supports_auth_switch(),
    };
    let mut conv = Handshake {
        io: &mut io,
        seq: &mut seq,
    };
    let outcome = crate::auth::authenticate(&app.accounts, &servers, client, &mut conv).await?;
    let proof = match outcome {
        crate::auth::Outcome::Verified(p) => p,
        crate::auth::Outcome::Denied { using_password } => {
            tracing::info!(user = %peer_text::escaped(&user), client = %peer, "access denied");
            app.metrics.auth_failure();
            io.fail(seq, &ErrPacket::access_denied(&user, &host, using_password))
                .await;
            return Err(Refusal::AccessDenied(user).into());
        }
        crate::auth::Outcome::Unsupported { account, plugin } => {
            tracing::info!(user = %peer_text::escaped(&user), client = %peer, account = %peer_text::escaped(&account), plugin = %peer_text::escaped(&plugin), "access denied: the account's authentication plugin is not served");
            app.metrics.auth_failure();
            io.fail(seq, &ErrPacket::unsupported_plugin(&account, &plugin))
                .await;
            return Err(Refusal::AccessDenied(user).into());
        }
    };
    let sha1_password = proof.sha1_password;

    // A session slot only now: clients that have not proved who they are
    // never hold one.
    let Ok(slot) = app.slots.clone().try_acquire_owned() else {
        io.fail(seq, &ErrPacket::too_many_connections()).await;
        return Err(Refusal::TooManyConnections.into());
    };

    // Placement: register first so that concurrent placements see this
    // session in the counts.
    let guard = app.sessions.register(id, &user, peer, "", offload.kind());
    guard.session().set_state(SessionState::Connecting);
    if let (Offload::LocalApp(s), Some(k)) = (&*offload, &app.kernel) {
        guard
            .session()
            .attach_kernel(Arc::new(KernelView(k.clone())), s.key());
    }
    let order = app
        .routing
        .order(&app.backends.all(), &app.sessions.count_by_server(), None);
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
        return Err(Refusal::NoBackend.into());
    }
    let params = BackendLoginParams {
        capabilities: caps & !CLIENT_SSL,
        mariadb_capabilities: mariadb_caps,
        max_packet_size: response.max_packet_size,
        collation: response.collation,
        user: user.clone(),
        database: response.database.clone(),
        sha1_password,
        ed25519: proof.ed25519.clone(),
        connect_attrs: response.connect_attrs.clone(),
    };
    let session_caps = caps & !CLIENT_SSL;
    let mut last_problem = String::new();
    for backend in order {
        guard.session().set_server(&backend.name);
        let mut l = match login::login_within(&backend, params.clone(), BACKEND_LOGIN_TIMEOUT).await
        {
            Ok(l) => l,
            Err(LoginTimeout::Login(LoginError::Server(err))) => {
                // The backend refused this user (bad database, account
                // locked …): any server would; tell the client as is.
                io.fail(seq, &err).await;
                return Err(Refusal::BackendRefused {
                    server: backend.name.clone(),
                    message: err.message,
                }
                .into());
            }
            Err(e) => {
                tracing::warn!(server = %backend.name, error = %e, "backend login failed; trying the next server");
                last_problem = format!("{}: {e}", backend.name);
                continue;
            }
        };
        let got = l.login.capabilities();
        let missing = login::missing_capabilities(caps, got);
        if missing != 0 {
            last_problem = format!("server {} lacks capabilities 0x{missing:08x}", backend.name);
            continue;
        }
        let missing = mariadb_caps & !l.login.mariadb_capabilities();
        if missing != 0 {
            last_problem = format!(
                "server {} lacks MariaDB capabilities 0x{missing:08x}",
                backend.name
            );
            continue;
        }
        // Session tracking would tell the relay when the state changes, so
        // that a session whose server dies can be carried over after
        // statements that left its state alone; but the client would see
        // it (the variable, the status flag, OK packet bytes). Only when
        // the operator chose that trade (`mover.failover_state_tracking`).
        let state_tracked = if app.config.mover.failover_state_tracking {
            match login::enable_state_tracking(&mut l.stream, session_caps).await {
                Ok(t) => t,
                Err(e) => {
                    last_problem = format!("{}: {e}", backend.name);
                    continue;
                }
            }
        } else {
            false
        };
        *app.greeting.write().unwrap_or_else(|e| e.into_inner()) =
            GreetingTemplate::from_backend(l.login.greeting());
        let status = protocol::OkPacket::parse(&l.ok_payload, got)
            .map(|ok| ok.status)
            .unwrap_or(0);
        io.write(seq, &l.ok_payload).await?;
        app.metrics.session_accepted();
        let tracker = redirector_common::mysql::Session::new(
            redirector_common::mysql::caps64(session_caps, mariadb_caps),
            status,
        );
        let s = guard.session();
        s.set_schema(response.database.clone());
        s.set_login_params(params.clone());
        s.set_backend_thread(l.login.greeting().connection_id);
        s.set_state(SessionState::Idle);
        let login = LoginState {
            client_scramble: scramble,
            backend_scramble: l.login.greeting().scramble.clone(),
            capabilities: session_caps,
            user: user.clone(),
            sha1_password,
            state_tracked,
        };
        return Ok(Established {
            client: io,
            backend: l.stream,
            guard,
            tracker,
            login,
            slot,
        });
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
    Err(Refusal::AllBackendsFailed(last_problem).into())
}

/// The handshake's auth switch: our request, the client's answer.
struct Handshake<'a> {
    io: &'a mut PacketIo<ClientStream>,
    seq: &'a mut u8,
}

impl crate::auth::Conversation for Handshake<'_> {
    type Error = PacketIoError;

    async fn switch(&mut self, req: protocol::AuthSwitchRequest) -> Result<Vec<u8>, PacketIoError> {
        self.io.write(*self.seq, &req.to_payload()).await?;
        let p = self.io.read(HANDSHAKE_MAX_PACKET).await?;
        *self.seq = p.seq.wrapping_add(1);
        Ok(p.payload.to_vec())
    }
}

/// Sends the ERR that fits a protocol failure in the handshake.
async fn reject_protocol(io: &mut PacketIo<ClientStream>, seq: u8, e: FrontError) -> FrontError {
    let err = match &e {
        FrontError::Protocol(ProtocolError::PacketTooLarge { .. }) => {
            Some(ErrPacket::packet_too_large())
        }
        FrontError::Protocol(_) => Some(ErrPacket::bad_handshake()),
        _ => None,
    };
    if let Some(err) = err {
        io.fail(seq, &err).await;
    }
    e
}
