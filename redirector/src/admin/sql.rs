//! Admin SQL on `admin.sql_address`: any MySQL/MariaDB client logs in as
//! `admin.user` and runs `CONTROL …` statements, `ALTER SYSTEM SET
//! AUTO_SCALING_POLICY` and queries over the `sessions`, `servers` and
//! `moves` tables (grammar in [`crate::request::sql`], tables in [`table`]).
//! Queries run on SQLite ([`crate::request::table`]) over a snapshot taken
//! for the statement, on a blocking thread (never on the runtime's
//! workers), under `admin.sql_query_timeout_ms`.
//!
//! The server side of the protocol reuses the client-facing pieces of
//! [`crate::protocol`]: the greeting, `mysql_native_password`
//! (the password is `admin.password`; none configured = empty password,
//! which config validation allows on loopback only), OK/ERR packets and a
//! text result-set encoder. Each connection is its own task; a malformed
//! packet ends only that connection. No TLS, no compression, no prepared
//! statements (ERR 1047): the admin port is meant for loopback or a trusted
//! network.
//!
//! Bounds (`[admin]`): a client must log in within `sql_login_timeout_ms`;
//! at most `sql_max_connections` sessions are logged in at once, and as
//! many connections may be in the handshake; when those are all taken, the
//! oldest handshake is dropped for the new one, so silent connections
//! cannot keep an operator out. Failed logins back off per address
//! ([`super::throttle`]). Operations are logged by verb and target with
//! peer text escaped ([`crate::peer_text`]), never as raw statement text.

mod table;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

use self::table::{Kind, Limits, QueryError, Table, Value};
use super::control::{self, ControlError};
use super::throttle::{AuthThrottle, BackingOff};
use crate::app::App;
use crate::config::{AdminConfig, PolicyDocument};
use crate::metrics::AdminSurface;
use crate::mover::{MoveReport, MoveSpec};
use crate::peer_text::escaped;
use crate::protocol::constants::capability::*;
use crate::protocol::constants::command::{COM_INIT_DB, COM_PING, COM_QUERY, COM_QUIT};
use crate::protocol::constants::{collation, error as er, status};
use crate::protocol::{
    double_sha1, parse_client_hello, text_result_set, verify_native_password, write_packet,
    AuthSwitchRequest, ClientHello, ErrPacket, InitialHandshake, OkPacket, ProtocolError,
};
use crate::protocol::{PacketIo, PacketIoError};
use crate::request::sql::{
    self as parse, Expr, Literal, SelectItem, Statement, SyntaxError, WaitOpts,
};

/// Capabilities we offer: protocol 4.1 with plugin auth. Not offered: TLS,
/// compression, multi-statements, session tracking, query attributes (the
/// statements are small and stand alone). `CLIENT_MYSQL` (bit 0) is clear,
/// so we present ourselves as MariaDB without extended capabilities.
const OFFERED: u32 = CLIENT_FOUND_ROWS
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_PROTOCOL_41
    | CLIENT_INTERACTIVE
    | CLIENT_IGNORE_SIGPIPE
    | CLIENT_TRANSACTIONS
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_DEPRECATE_EOF;
/// "MariaDB" in the version makes client libraries use MariaDB's dialect;
/// the "5.5.5-" prefix is what MariaDB itself sends for old clients.
const SERVER_VERSION: &str = "5.5.5-10.11.0-MariaDB-redirector-admin";
const VERSION_COMMENT: &str = concat!("redirector admin SQL ", env!("CARGO_PKG_VERSION"));
/// Why an admin SQL connection ended badly.
#[derive(Debug, thiserror::Error)]
enum AdminConnError {
    #[error("{0}")]
    Packet(#[from] PacketIoError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("SSL requested")]
    SslRequested,
    #[error("access denied for '{}'", escaped(.0))]
    AccessDenied(String),
    #[error("{0}")]
    BackingOff(BackingOff),
}

/// Largest statement accepted (policy documents are the big ones).
const MAX_PACKET: usize = 4 << 20;
/// Largest packet before login: a handshake response is a user name, a
/// scramble and at most 64 KiB of connect attributes, so unauthenticated
/// peers cannot make us buffer statement-sized packets.
const MAX_LOGIN_PACKET: usize = 128 << 10;
/// Largest query result (SQLite values' bytes); past it the query fails
/// and asks for a narrower one.
const MAX_RESULT_BYTES: usize = 64 << 20;
/// The database name clients see (`SHOW DATABASES`, `DATABASE()` when none
/// was chosen is NULL, as in MariaDB).
const DATABASE_NAME: &str = "redirector";
/// Reported by `@@wait_timeout` (clients use it to expire idle connections;
/// we never close idle admin connections ourselves).
const WAIT_TIMEOUT_S: i64 = 28_800;
const OK_STATUS: u16 = status::SERVER_STATUS_AUTOCOMMIT;

/// Why the admin SQL listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    // `error` (not `source`): the reason is part of this one-line message.
    #[error("cannot bind the admin SQL listener on {address} (admin.sql_address): {error}")]
    Bind {
        address: SocketAddr,
        error: std::io::Error,
    },
}

/// The running listener; stops accepting when dropped.
#[derive(Debug)]
pub struct SqlServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl SqlServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for SqlServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `admin.sql_address` and serves admin SQL in a background task
/// until the returned handle is dropped. Failed logins count in `throttle`.
pub async fn start(app: Arc<App>, throttle: Arc<AuthThrottle>) -> Result<SqlServer, SqlError> {
    let address = app.config.admin.sql_address;
    let bind_err = |error| SqlError::Bind { address, error };
    let listener = TcpListener::bind(address).await.map_err(bind_err)?;
    let local_addr = listener.local_addr().map_err(bind_err)?;
    tracing::info!(address = %local_addr, "admin SQL listening");
    let task = tokio::spawn(accept_loop(listener, app, throttle));
    Ok(SqlServer { local_addr, task })
}

/// Connections in the handshake, oldest first (ids grow); each holds the
/// sender whose drop tells it to give up its place.
struct Handshakes {
    max: usize,
    waiting: Mutex<BTreeMap<u32, oneshot::Sender<()>>>,
}

/// A place among the handshakes; leaving it (drop) frees it.
struct HandshakeSlot {
    handshakes: Arc<Handshakes>,
    id: u32,
}

impl Handshakes {
    fn waiting(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, oneshot::Sender<()>>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a place for connection `id`, evicting the oldest when all are
    /// taken; the receiver completes when `id` itself is evicted.
    fn enter(self: &Arc<Self>, id: u32) -> (HandshakeSlot, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let mut waiting = self.waiting();
        while waiting.len() >= self.max {
            // Dropping the sender wakes the evicted connection's receiver.
            if waiting.pop_first().is_none() {
                break;
            }
        }
        waiting.insert(id, tx);
        drop(waiting);
        let slot = HandshakeSlot {
            handshakes: self.clone(),
            id,
        };
        (slot, rx)
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.handshakes.waiting().remove(&self.id);
    }
}

/// What every connection shares.
struct Listener {
    app: Arc<App>,
    throttle: Arc<AuthThrottle>,
    /// Logged-in sessions (`admin.sql_max_connections`).
    sessions: Arc<Semaphore>,
    handshakes: Arc<Handshakes>,
}

async fn accept_loop(listener: TcpListener, app: Arc<App>, throttle: Arc<AuthThrottle>) {
    let max = app.config.admin.limits.sql_max_connections as usize;
    let shared = Arc::new(Listener {
        app,
        throttle,
        sessions: Arc::new(Semaphore::new(max)),
        handshakes: Arc::new(Handshakes {
            max,
            waiting: Mutex::new(BTreeMap::new()),
        }),
    });
    let ids = AtomicU32::new(1);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: keep the connections we have.
                tracing::warn!(error = %e, "admin SQL accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let id = ids.fetch_add(1, Ordering::Relaxed);
        // Taken here, in accept order, so "oldest" is well defined.
        let handshake = shared.handshakes.enter(id);
        let shared = shared.clone();
        tokio::spawn(async move {
            serve_connection(&shared, PacketIo::new(stream), peer, id, handshake).await;
        });
    }
}

/// One logged-in admin connection.
struct Conn {
    id: u32,
    user: String,
    peer: SocketAddr,
    caps: u32,
    /// Set by COM_INIT_DB / the handshake; only `SELECT DATABASE()` uses it.
    database: Option<String>,
}

async fn serve_connection(
    shared: &Listener,
    mut io: PacketIo<TcpStream>,
    peer: SocketAddr,
    id: u32,
    (slot, evicted): (HandshakeSlot, oneshot::Receiver<()>),
) {
    let app = &shared.app;
    let _ = io.io.set_nodelay(true);
    let timeout = app.config.admin.limits.sql_login_timeout;
    let login = login(&app.config.admin, &shared.throttle, &mut io, peer, id);
    let outcome = tokio::select! {
        r = tokio::time::timeout(timeout, login) => r,
        _ = evicted => {
            tracing::debug!(client = %peer, "admin SQL handshake dropped for a newer connection (all handshake places taken)");
            return;
        }
    };
    drop(slot);
    let (conn, seq) = match outcome {
        Ok(Ok(x)) => x,
        // Port probes (health checks) connect and leave: not worth a line.
        Ok(Err(AdminConnError::Packet(PacketIoError::Closed))) => {
            tracing::debug!(client = %peer, "admin SQL client left before logging in");
            return;
        }
        // Logged once per burst by the throttle.
        Ok(Err(e @ (AdminConnError::AccessDenied(_) | AdminConnError::BackingOff(_)))) => {
            tracing::debug!(client = %peer, error = %e, "admin SQL login refused");
            return;
        }
        Ok(Err(e)) => {
            tracing::info!(client = %peer, error = %e, "admin SQL login failed");
            return;
        }
        Err(_) => {
            tracing::info!(client = %peer, ?timeout, "admin SQL client did not log in in time (admin.sql_login_timeout_ms)");
            return;
        }
    };
    let Ok(_session) = shared.sessions.clone().try_acquire_owned() else {
        tracing::warn!(client = %peer, "too many admin SQL sessions (admin.sql_max_connections)");
        io.fail(seq, &ErrPacket::too_many_connections()).await;
        return;
    };
    if let Err(e) = io.write(seq, &ok_payload(conn.caps, 0, "")).await {
        tracing::debug!(client = %peer, error = %e, "admin SQL client left while logging in");
        return;
    }
    tracing::info!(client = %peer, user = %escaped(&conn.user), "admin SQL session started");
    match command_loop(app, &mut io, conn).await {
        Ok(()) => tracing::debug!(client = %peer, "admin SQL session closed"),
        Err(e) => tracing::info!(client = %peer, error = %e, "admin SQL session ended"),
    }
}

// ---- connection phase -------------------------------------------------------

/// Greets the client and checks `admin.user` / `admin.password`; the
/// connection and the sequence number of the OK it is owed.
async fn login(
    admin: &AdminConfig,
    throttle: &AuthThrottle,
    io: &mut PacketIo<TcpStream>,
    peer: SocketAddr,
    id: u32,
) -> Result<(Conn, u8), AdminConnError> {
    let greeting = InitialHandshake::for_client(
        SERVER_VERSION,
        id,
        OFFERED,
        0,
        collation::UTF8MB4_GENERAL_CI,
        OK_STATUS,
    );
    let scramble = greeting.scramble20()?;
    io.write(0, &greeting.to_payload()).await?;
    let first = read_or_reject(io, 2).await?;
    let mut seq = first.seq.wrapping_add(1);
    let response = match parse_client_hello(&first.payload) {
        Ok(ClientHello::Response(r)) => r,
        Ok(ClientHello::SslRequest(_)) => {
            let err = ErrPacket::new(
                er::ER_HANDSHAKE_ERROR,
                er::SQLSTATE_COMMUNICATION,
                "TLS is not available on the admin SQL port",
            );
            io.fail(seq, &err).await;
            return Err(AdminConnError::SslRequested);
        }
        Err(e) => {
            io.fail(seq, &ErrPacket::bad_handshake()).await;
            return Err(e.into());
        }
    };
    // Native password only: a client that started with another plugin
    // is asked to switch, with the same scramble.
    let mut auth = response.auth_response.to_vec();
    if response.needs_native_switch() {
        io.write(seq, &AuthSwitchRequest::native(&scramble).to_payload())
            .await?;
        let p = read_or_reject(io, seq.wrapping_add(1)).await?;
        seq = p.seq.wrapping_add(1);
        auth = p.payload.to_vec();
    }
    if let Err(b) = throttle.check(peer.ip(), AdminSurface::Sql) {
        let err = ErrPacket::new(
            er::ER_ACCESS_DENIED_ERROR,
            er::SQLSTATE_ACCESS_DENIED,
            format!("Access denied: {b}"),
        );
        io.fail(seq, &err).await;
        return Err(AdminConnError::BackingOff(b));
    }
    if !credentials_ok(admin, &response.user, &auth, &scramble) {
        throttle.failed(peer.ip(), AdminSurface::Sql);
        let host = peer.ip().to_string();
        let err = ErrPacket::access_denied(&response.user, &host, !auth.is_empty());
        io.fail(seq, &err).await;
        return Err(AdminConnError::AccessDenied(response.user));
    }
    throttle.succeeded(peer.ip());
    let conn = Conn {
        id,
        user: response.user,
        peer,
        caps: response.capabilities & OFFERED,
        database: response.database,
    };
    Ok((conn, seq))
}

/// Reads one packet; a malformed or oversized one gets the fitting ERR.
async fn read_or_reject(
    io: &mut PacketIo<TcpStream>,
    seq: u8,
) -> Result<crate::protocol::Packet, AdminConnError> {
    match io.read(MAX_LOGIN_PACKET).await {
        Ok(p) => Ok(p),
        Err(PacketIoError::Protocol(e)) => {
            let err = match e {
                ProtocolError::PacketTooLarge { .. } => ErrPacket::packet_too_large(),
                _ => ErrPacket::bad_handshake(),
            };
            io.fail(seq, &err).await;
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The admin user with its password (or an empty one when none is set).
fn credentials_ok(admin: &AdminConfig, user: &str, auth: &[u8], scramble: &[u8]) -> bool {
    let stored = admin
        .password
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(|p| double_sha1(p.as_bytes()));
    // Evaluate both so the timing does not tell a wrong user from a wrong password.
    let password_ok = verify_native_password(auth, scramble, stored.as_ref()).is_some();
    user == admin.user && password_ok
}

// ---- command phase ------------------------------------------------------------

async fn command_loop(
    app: &Arc<App>,
    io: &mut PacketIo<TcpStream>,
    mut conn: Conn,
) -> Result<(), AdminConnError> {
    loop {
        let packet = match io.read(MAX_PACKET).await {
            Ok(p) => p,
            Err(PacketIoError::Closed) => return Ok(()),
            Err(PacketIoError::Protocol(e @ ProtocolError::PacketTooLarge { .. })) => {
                io.fail(1, &ErrPacket::packet_too_large()).await;
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let seq = packet.seq.wrapping_add(1);
        let Some((&command, body)) = packet.payload.split_first() else {
            io.fail(seq, &ErrPacket::unknown_command()).await;
            return Err(ProtocolError::EmptyPacket("command").into());
        };
        let reply = match command {
            COM_QUIT => return Ok(()),
            COM_PING => Reply::ok(0, ""),
            COM_INIT_DB => {
                // There are no databases; accept any so clients given one connect.
                conn.database = Some(String::from_utf8_lossy(body).into_owned());
                Reply::ok(0, "")
            }
            COM_QUERY => match std::str::from_utf8(body) {
                Ok(sql) => execute(app, &mut conn, sql).await,
                Err(_) => Reply::Err(ErrPacket::new(
                    er::ER_PARSE_ERROR,
                    er::SQLSTATE_SYNTAX_OR_ACCESS,
                    "the statement is not valid UTF-8",
                )),
            },
            _ => Reply::Err(ErrPacket::unknown_command()),
        };
        send(io, seq, &reply.payloads(conn.caps)).await?;
    }
}

/// What a statement answers.
enum Reply {
    Ok { affected: u64, info: String },
    Rows(Table),
    Err(ErrPacket),
}

impl Reply {
    fn ok(affected: u64, info: impl Into<String>) -> Self {
        Reply::Ok {
            affected,
            info: info.into(),
        }
    }

    /// OK for a move-like operation: affected rows = sessions moved.
    fn moved(report: &MoveReport, info: String) -> Self {
        Self::ok(report.moved.len() as u64, info)
    }

    fn payloads(&self, caps: u32) -> Vec<Vec<u8>> {
        match self {
            Reply::Ok { affected, info } => vec![ok_payload(caps, *affected, info)],
            Reply::Rows(t) => text_result_set(&t.definitions(), &t.wire_rows(), caps, OK_STATUS),
            Reply::Err(e) => vec![e.to_payload(caps)],
        }
    }
}

fn ok_payload(caps: u32, affected_rows: u64, info: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + info.len());
    // The info is length-encoded whatever the client's flags: the manual
    // says string<EOF>, but MySQL and MariaDB servers send string<lenenc>
    // and the client libraries (libmariadb, mysql_common) parse it so.
    OkPacket {
        affected_rows,
        status: OK_STATUS,
        info: bytes::Bytes::copy_from_slice(info.as_bytes()),
        ..Default::default()
    }
    .encode(caps | CLIENT_SESSION_TRACK, &mut out);
    out
}

/// Writes `payloads` as consecutive packets from `seq` on, in one write.
async fn send(io: &mut PacketIo<TcpStream>, seq: u8, payloads: &[Vec<u8>]) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(payloads.iter().map(|p| p.len() + 4).sum());
    let mut seq = seq;
    for p in payloads {
        seq = write_packet(&mut out, seq, p);
    }
    io.io.write_all(&out).await?;
    io.io.flush().await
}

// ---- statements ---------------------------------------------------------------

/// An operation's verb and target for its log line, built from the parsed
/// statement (never the raw text), names escaped and cut.
fn operation(stmt: &Statement) -> Option<(&'static str, String)> {
    let quoted = |name: &str| format!("'{}'", escaped(name));
    let op = match stmt {
        Statement::Move(m) => {
            let sessions = match &m.sessions {
                crate::request::Selection::Ids(ids) => {
                    let list: Vec<String> = ids.iter().take(8).map(u64::to_string).collect();
                    let more = ids.len().saturating_sub(8);
                    let more = if more > 0 {
                        format!(" (+{more} more)")
                    } else {
                        String::new()
                    };
                    format!("sessions {}{more}", list.join(", "))
                }
                crate::request::Selection::All => "all sessions".to_string(),
                crate::request::Selection::AllInactive => "all inactive sessions".to_string(),
            };
            let from = m.from.as_deref().map(|f| format!(" from {}", quoted(f)));
            let target = format!(
                "{sessions}{} to {}",
                from.unwrap_or_default(),
                quoted(&m.to)
            );
            ("CONTROL MOVE", target)
        }
        Statement::Drain { server, .. } => ("CONTROL DRAIN SERVER", quoted(server)),
        Statement::Undrain { server } => ("CONTROL UNDRAIN SERVER", quoted(server)),
        Statement::Rebalance { .. } => ("CONTROL REBALANCE", String::new()),
        Statement::AddServer { name, address, .. } => (
            "CONTROL ADD SERVER",
            format!("{} address {}", quoted(name), quoted(address)),
        ),
        Statement::RemoveServer { server, .. } => ("CONTROL REMOVE SERVER", quoted(server)),
        Statement::SetPolicy(json) => (
            "ALTER SYSTEM SET AUTO_SCALING_POLICY",
            format!("({} bytes)", json.len()),
        ),
        Statement::Query(_)
        | Statement::SelectExprs { .. }
        | Statement::ShowTables
        | Statement::ShowDatabases
        | Statement::Use(_)
        | Statement::Write(_)
        | Statement::Ignored
        | Statement::Empty => return None,
    };
    Some(op)
}

async fn execute(app: &Arc<App>, conn: &mut Conn, sql: &str) -> Reply {
    let stmt = match parse::parse(sql) {
        Ok(s) => s,
        Err(e) => return Reply::Err(syntax_error(&e)),
    };
    let op = operation(&stmt);
    let result = match stmt {
        Statement::Query(text) => return run_query(app, conn, text).await,
        Statement::SelectExprs { items, limit } => return select_exprs(conn, &items, limit),
        Statement::ShowTables => return Reply::Rows(show_tables()),
        Statement::ShowDatabases => return Reply::Rows(show_databases()),
        Statement::Use(db) => {
            conn.database = Some(db);
            return Reply::ok(0, "");
        }
        Statement::Write(verb) => {
            return Reply::Err(query_error(&QueryError::ReadOnly(verb)));
        }
        Statement::Ignored => return Reply::ok(0, ""),
        Statement::Empty => {
            return Reply::Err(ErrPacket::new(
                er::ER_EMPTY_QUERY,
                er::SQLSTATE_SYNTAX_OR_ACCESS,
                er::MSG_EMPTY_QUERY,
            ))
        }
        Statement::Move(m) => move_sessions(app, m).await,
        Statement::Drain { server, opts } => drain(app, &server, opts).await,
        Statement::Undrain { server } => control::undrain(app, &server)
            .map(|()| Reply::ok(0, format!("server '{server}' accepts new sessions again"))),
        Statement::Rebalance { wait } => rebalance(app, wait).await,
        Statement::AddServer {
            name,
            address,
            weight,
        } => add_server(app, &name, &address, weight).await,
        Statement::RemoveServer { server, opts } => remove_server(app, &server, opts).await,
        Statement::SetPolicy(json) => {
            control::set_policy(app, &json).map(|doc| Reply::ok(0, policy_summary(&doc)))
        }
    };
    // Only operations reach here: log each with its outcome. The error
    // can quote peer text (an unknown server's name), so it is escaped too.
    let (verb, target) = op.unwrap_or_default();
    match result {
        Ok(reply) => {
            tracing::info!(client = %conn.peer, user = %escaped(&conn.user), verb = %verb, target = %target, "admin SQL operation done");
            reply
        }
        Err(e) => {
            let error = e.to_string();
            tracing::info!(client = %conn.peer, user = %escaped(&conn.user), verb = %verb, target = %target, error = %escaped(&error).max_chars(200), "admin SQL operation failed");
            Reply::Err(control_error(&e))
        }
    }
}

async fn move_sessions(app: &Arc<App>, m: parse::MoveStmt) -> Result<Reply, ControlError> {
    let spec = MoveSpec {
        sessions: m.sessions,
        from: m.from,
        to: Some(m.to),
        wait: control::wait_timeout(app, m.opts.wait)?,
        force: m.opts.force,
    };
    let report = control::move_sessions(app, &spec).await?;
    Ok(Reply::moved(&report, report.summary()))
}

async fn drain(app: &Arc<App>, server: &str, opts: WaitOpts) -> Result<Reply, ControlError> {
    let wait = control::wait_timeout(app, opts.wait)?;
    let report = control::drain(app, server, wait, opts.force).await?;
    let info = format!("server '{server}' drained: {}", report.summary());
    Ok(Reply::moved(&report, info))
}

async fn rebalance(app: &Arc<App>, wait: Option<f64>) -> Result<Reply, ControlError> {
    let wait = control::wait_timeout(app, wait)?;
    let report = control::rebalance(app, wait).await?;
    Ok(Reply::moved(
        &report,
        format!("rebalanced: {}", report.summary()),
    ))
}

async fn add_server(
    app: &Arc<App>,
    name: &str,
    address: &str,
    weight: Option<i64>,
) -> Result<Reply, ControlError> {
    let row = control::add_server(app, name, address, weight).await?;
    let info = format!(
        "server '{}' added at {} with weight {}",
        row.server_name, row.address, row.weight
    );
    Ok(Reply::ok(1, info))
}

async fn remove_server(
    app: &Arc<App>,
    server: &str,
    opts: WaitOpts,
) -> Result<Reply, ControlError> {
    let wait = control::wait_timeout(app, opts.wait)?;
    let report = control::remove_server(app, server, wait, opts.force).await?;
    let info = format!("server '{server}' removed: {}", report.summary());
    Ok(Reply::moved(&report, info))
}

fn policy_summary(doc: &PolicyDocument) -> String {
    let Some(group) = doc.group() else {
        return "AUTO_SCALING_POLICY set".into();
    };
    let clusters = group
        .clusters
        .iter()
        .map(|c| format!("{} ({})", c.cluster_id, c.weight))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "AUTO_SCALING_POLICY set: {} over {clusters}",
        group.scaling_policy.as_str()
    )
}

/// Runs a query with SQLite over a snapshot of the tables taken now. The
/// engine works on a blocking thread: a slow query (up to its time budget)
/// holds no runtime worker.
async fn run_query(app: &App, conn: &Conn, sql: String) -> Reply {
    let sessions = table::sessions(&app.sessions.snapshot());
    let servers = table::servers(&control::server_rows(app));
    let moves = table::moves(&app.moves.snapshot());
    let functions = session_functions(conn);
    let limits = Limits {
        time: app.config.admin.limits.sql_query_timeout,
        max_result_bytes: MAX_RESULT_BYTES,
    };
    let run = tokio::task::spawn_blocking(move || {
        let tables = [
            ("sessions", &sessions),
            ("servers", &servers),
            ("moves", &moves),
        ];
        table::query(&tables, &functions, &sql, &limits)
    });
    match run.await {
        Ok(Ok(t)) => Reply::Rows(t),
        Ok(Err(e)) => {
            if let QueryError::Interrupted(_) | QueryError::ResultTooLarge(_) = e {
                tracing::info!(client = %conn.peer, user = %escaped(&conn.user), error = %e, "admin SQL query stopped");
            }
            Reply::Err(query_error(&e))
        }
        Err(e) => {
            tracing::warn!(client = %conn.peer, error = %e, "admin SQL query task failed");
            Reply::Err(ErrPacket::new(
                er::ER_UNKNOWN_ERROR,
                er::SQLSTATE_GENERAL,
                "the query failed inside the engine",
            ))
        }
    }
}

/// The functions of this session (`DATABASE()`, `USER()` …) as SQLite
/// functions with fixed values.
fn session_functions(conn: &Conn) -> Vec<(&'static str, Value)> {
    [
        "DATABASE",
        "SCHEMA",
        "USER",
        "CURRENT_USER",
        "SESSION_USER",
        "SYSTEM_USER",
        "VERSION",
        "CONNECTION_ID",
    ]
    .into_iter()
    .filter_map(|name| function(conn, name).map(|v| (name, v)))
    .collect()
}

fn show_databases() -> Table {
    Table {
        columns: vec![("Database".into(), Kind::Text)],
        rows: vec![vec![Value::Text(DATABASE_NAME.into())]],
    }
}

fn show_tables() -> Table {
    Table {
        columns: vec![("Tables_in_redirector".into(), Kind::Text)],
        rows: table::TABLE_NAMES
            .iter()
            .map(|t| vec![Value::Text(t.to_string())])
            .collect(),
    }
}

/// `SELECT @@var, FUNC(), literal …` without a table: one row.
fn select_exprs(conn: &Conn, items: &[SelectItem], limit: Option<u64>) -> Reply {
    let mut columns = Vec::with_capacity(items.len());
    let mut row = Vec::with_capacity(items.len());
    for item in items {
        let value = match expr_value(conn, &item.expr) {
            Ok(v) => v,
            Err(e) => return Reply::Err(e),
        };
        let kind = match value {
            Value::Int(_) => Kind::Int,
            Value::Double(_) => Kind::Double,
            Value::Text(_) | Value::Null => Kind::Text,
        };
        columns.push((item.label.clone(), kind));
        row.push(value);
    }
    let rows = if limit == Some(0) { vec![] } else { vec![row] };
    Reply::Rows(Table { columns, rows })
}

fn expr_value(conn: &Conn, expr: &Expr) -> Result<Value, ErrPacket> {
    match expr {
        Expr::Variable(name) => variable(name).ok_or_else(|| {
            ErrPacket::new(
                er::ER_UNKNOWN_SYSTEM_VARIABLE,
                er::SQLSTATE_GENERAL,
                format!("Unknown system variable '{name}'"),
            )
        }),
        Expr::Call(name) => function(conn, name).ok_or_else(|| {
            ErrPacket::new(
                er::ER_UNKNOWN_ERROR,
                er::SQLSTATE_GENERAL,
                format!("function {name}() is not available on the admin SQL port"),
            )
        }),
        Expr::Literal(Literal::Null) => Ok(Value::Null),
        Expr::Literal(Literal::Str(s)) => Ok(Value::Text(s.clone())),
        Expr::Literal(Literal::Number(n)) => Ok(n
            .parse()
            .map(Value::Int)
            .or_else(|_| n.parse().map(Value::Double))
            .unwrap_or_else(|_| Value::Text(n.clone()))),
        Expr::Column(c) => Err(ErrPacket::new(
            er::ER_BAD_FIELD_ERROR,
            er::SQLSTATE_BAD_FIELD,
            format!("Unknown column '{c}' in 'field list'"),
        )),
    }
}

/// The server variables client libraries read on connect.
fn variable(name: &str) -> Option<Value> {
    let text = |s: &str| Some(Value::Text(s.to_string()));
    match name {
        "version_comment" => text(VERSION_COMMENT),
        "version" => text(SERVER_VERSION.trim_start_matches("5.5.5-")),
        "max_allowed_packet" => Some(Value::Int(MAX_PACKET as i64)),
        "wait_timeout" | "interactive_timeout" => Some(Value::Int(WAIT_TIMEOUT_S)),
        "autocommit" => Some(Value::Int(1)),
        "tx_read_only" | "transaction_read_only" | "lower_case_table_names" => Some(Value::Int(0)),
        // No unix socket: clients that look for one stay on TCP.
        "socket" => Some(Value::Null),
        "sql_mode" => text(""),
        "character_set_client"
        | "character_set_connection"
        | "character_set_results"
        | "character_set_server"
        | "character_set_database" => text("utf8mb4"),
        "collation_connection" | "collation_server" | "collation_database" => {
            text("utf8mb4_general_ci")
        }
        "tx_isolation" | "transaction_isolation" => text("REPEATABLE-READ"),
        "time_zone" => text("SYSTEM"),
        "system_time_zone" => text("UTC"),
        _ => None,
    }
}

fn function(conn: &Conn, name: &str) -> Option<Value> {
    match name {
        "DATABASE" | "SCHEMA" => Some(
            conn.database
                .clone()
                .filter(|d| !d.is_empty())
                .map_or(Value::Null, Value::Text),
        ),
        "USER" | "CURRENT_USER" | "SESSION_USER" | "SYSTEM_USER" => {
            Some(Value::Text(format!("{}@{}", conn.user, conn.peer.ip())))
        }
        "VERSION" => variable("version"),
        "CONNECTION_ID" => Some(Value::Int(i64::from(conn.id))),
        _ => None,
    }
}

// ---- errors ---------------------------------------------------------------------

fn syntax_error(e: &SyntaxError) -> ErrPacket {
    ErrPacket::new(
        er::ER_PARSE_ERROR,
        er::SQLSTATE_SYNTAX_OR_ACCESS,
        e.to_string(),
    )
}

/// An engine error with its MariaDB number and SQLite's message.
fn query_error(e: &QueryError) -> ErrPacket {
    let (code, state) = e.code();
    ErrPacket::new(code, state, e.to_string())
}

/// Error numbers by kind: a bad argument is 1210, a rejected policy 1231
/// (a variable that cannot take the value); unknown sessions or servers,
/// conflicts and moves that did not all happen are 1105, with a message
/// that names what is wrong.
fn control_error(e: &ControlError) -> ErrPacket {
    match e {
        ControlError::BadRequest(m) => {
            ErrPacket::new(er::ER_WRONG_ARGUMENTS, er::SQLSTATE_GENERAL, m.clone())
        }
        ControlError::Policy(p) => ErrPacket::new(
            er::ER_WRONG_VALUE_FOR_VAR,
            er::SQLSTATE_SYNTAX_OR_ACCESS,
            format!("Variable 'AUTO_SCALING_POLICY' can't be set: {p}"),
        ),
        ControlError::NotFound(_)
        | ControlError::Conflict(_)
        | ControlError::NotAllMoved(_)
        | ControlError::Internal(_) => {
            ErrPacket::new(er::ER_UNKNOWN_ERROR, er::SQLSTATE_GENERAL, e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{scramble_response, sha1_password};

    fn admin(password: Option<&str>) -> AdminConfig {
        AdminConfig {
            sql_address: "127.0.0.1:0".parse().unwrap(),
            http_address: "127.0.0.1:0".parse().unwrap(),
            user: "admin".into(),
            password: password.map(str::to_string),
            token: None,
            limits: Default::default(),
        }
    }

    #[test]
    fn credentials() {
        let salt = crate::protocol::generate_scramble();
        let good = scramble_response(&sha1_password(b"pw"), &salt);
        let bad = scramble_response(&sha1_password(b"px"), &salt);
        let a = admin(Some("pw"));
        assert!(credentials_ok(&a, "admin", &good, &salt));
        assert!(!credentials_ok(&a, "admin", &bad, &salt));
        assert!(!credentials_ok(&a, "root", &good, &salt));
        assert!(!credentials_ok(&a, "admin", &[], &salt));
        // No password (or an empty one): only the empty response.
        for a in [admin(None), admin(Some(""))] {
            assert!(credentials_ok(&a, "admin", &[], &salt));
            assert!(!credentials_ok(&a, "admin", &good, &salt));
        }
    }

    #[test]
    fn error_numbers() {
        assert_eq!(
            control_error(&ControlError::NotFound("unknown server 'x'".into())).code,
            1105
        );
        assert_eq!(
            control_error(&ControlError::BadRequest("w".into())).code,
            1210
        );
        let e = syntax_error(&parse::parse("CONTROL X").unwrap_err());
        assert_eq!((e.code, e.sql_state_str()), (1064, "42000"));
        assert!(e.message.contains("near 'X'"), "{}", e.message);
    }

    #[test]
    fn connect_time_selects() {
        let conn = Conn {
            id: 7,
            user: "admin".into(),
            peer: "127.0.0.1:5000".parse().unwrap(),
            caps: OFFERED,
            database: None,
        };
        let Statement::SelectExprs { items, limit } = parse::parse(
            "SELECT @@max_allowed_packet, @@wait_timeout, @@socket, CONNECTION_ID(), DATABASE()",
        )
        .unwrap() else {
            panic!()
        };
        let Reply::Rows(t) = select_exprs(&conn, &items, limit) else {
            panic!("not rows")
        };
        assert_eq!(
            t.wire_rows(),
            vec![vec![
                Some(MAX_PACKET.to_string()),
                Some("28800".into()),
                None,
                Some("7".into()),
                None
            ]]
        );
        assert_eq!(t.columns[0], ("@@max_allowed_packet".into(), Kind::Int));
        let Statement::SelectExprs { items, limit } = parse::parse("SELECT @@nope").unwrap() else {
            panic!()
        };
        let Reply::Err(e) = select_exprs(&conn, &items, limit) else {
            panic!("no error")
        };
        assert_eq!(e.code, 1193);
    }
}
