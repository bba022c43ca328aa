//! The userspace data path: the daemon copies bytes between the client and
//! its backend, feeding both directions to the shared protocol state machine
//! (`redirector_common::mysql`) so that it always knows whether the session is
//! idle, in a transaction, holding cursors and so on.
//!
//! One task per session drives both directions with `select!`, reading a
//! side only once what was read from it before has been written out, so
//! memory per session stays bounded and neither side can stall the other.
//! Client packets are handled whole (the daemon must see COM_CHANGE_USER and
//! the SQL of COM_STMT_PREPARE); server bytes are forwarded as they come.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use redirector_common::mysql::{self, ClientPacket, ServerPacket};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::datapath::kernel::{KernelPath, KernelSession};
use crate::mover::conn::BackendConn;
use crate::mover::state::{self as move_state, Hints, StateError};
use crate::protocol::command::ChangeUser;
use crate::protocol::constants::capability::{CLIENT_CONNECT_WITH_DB, CLIENT_MYSQL, CLIENT_SSL};
use crate::protocol::constants::command::{
    COM_CHANGE_USER, COM_QUERY, COM_RESET_CONNECTION, COM_STMT_BULK_EXECUTE, COM_STMT_CLOSE,
    COM_STMT_EXECUTE, COM_STMT_FETCH, COM_STMT_PREPARE, COM_STMT_RESET, COM_STMT_SEND_LONG_DATA,
};
use crate::protocol::{self, recover_sha1_password, scramble_response, ErrPacket, PacketHeader};
use crate::proxy::{ClientStream, LoginState, PacketIo, Shared};
use crate::session::{DatapathKind, MoveReply, MoveRequest, Session, SessionState};
use redirector_common::maps::{PUNT_NONE, PUNT_PIPELINED, PUNT_SLOW_COMMAND};

/// Time allowed for the state queries on the source; past it the source
/// connection's state is unknown and the session is closed.
const SOURCE_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed to log in to the target and rebuild the state there.
const TARGET_TIMEOUT: Duration = Duration::from_secs(10);

const READ_CHUNK: usize = 64 * 1024;
/// How often a session the kernel carries reports its counters and state.
const KERNEL_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// Time given to the kernel's work queue to deliver redirected segments to
/// the application before the daemon writes to it (see `kernel_phase`).
const KERNEL_DELIVERY_GRACE: Duration = Duration::from_millis(10);
/// HOLD waiting longer than this for a kernel-forwarded response is logged.
const KERNEL_SLOW_HOLD: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("client i/o: {0}")]
    Client(std::io::Error),
    #[error("backend i/o: {0}")]
    Backend(std::io::Error),
    #[error("backend closed the connection")]
    BackendClosed,
    #[error("protocol: {0}")]
    Protocol(#[from] protocol::ProtocolError),
}

/// What the relay remembers about prepared statements (for the mover:
/// statements are re-prepared on a new backend under the same ids).
#[derive(Debug, Default, Clone)]
pub struct Statements {
    /// SQL of COM_STMT_PREPARE commands whose response has not arrived yet.
    pending: VecDeque<Vec<u8>>,
    /// Statement id → what is known about it.
    pub by_id: BTreeMap<u32, Statement>,
}

#[derive(Debug, Default, Clone)]
pub struct Statement {
    pub sql: Vec<u8>,
    pub params: u16,
    /// Parameter types the client last bound (COM_STMT_EXECUTE with
    /// new-params-bound = 1): a statement re-prepared on another server
    /// has none, and clients send them only when they change.
    pub types: Option<Vec<u8>>,
}

/// Relays until either side closes.
pub async fn relay(
    shared: &Arc<Shared>,
    client: PacketIo<ClientStream>,
    backend: TcpStream,
    session: Arc<Session>,
    proto: mysql::Session,
    login: LoginState,
    kernel: Option<(Arc<KernelPath>, u64)>,
) -> Result<(), RelayError> {
    let mut kernel = kernel.map(|(path, key)| KernelSession::new(path, key, session.client_addr));
    // Set when arming found unread client bytes: read before trying again.
    let mut arm_blocked = false;
    let PacketIo {
        io: client,
        buf: client_leftover,
    } = client;
    let mut r = Relay {
        shared: shared.clone(),
        proto,
        session,
        login,
        statements: Statements::default(),
        client_continues: false,
        hints: Hints::default(),
        rebind: BTreeSet::new(),
        ids: None,
        snapshot: None,
    };
    // Right after login the state is the login's (schema, collation), plus
    // the state tracking if it was turned on.
    r.snapshot = Some(Snapshot {
        state: move_state::SessionState {
            schema: r.session.snapshot().schema,
            variables: if r.login.state_tracked {
                vec![move_state::Variable {
                    name: "SESSION_TRACK_STATE_CHANGE".into(),
                    value: Some("ON".into()),
                    kind: "BOOLEAN".into(),
                }]
            } else {
                Vec::new()
            },
            // As `SELECT @@SESSION.session_track_state_change` shows it.
            checks: if r.login.state_tracked {
                vec![("SESSION_TRACK_STATE_CHANGE".into(), Some("1".into()))]
            } else {
                Vec::new()
            },
            user_variables: Vec::new(),
        },
        state_changes: r.proto.tracker.state_changes(),
        commands: r.proto.tracker.commands_sent(),
    });
    use crate::metrics::Direction;
    let up_bytes = shared
        .metrics
        .bytes(Direction::ClientToServer, DatapathKind::Userspace)
        .clone();
    let down_bytes = shared
        .metrics
        .bytes(Direction::ServerToClient, DatapathKind::Userspace)
        .clone();
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut br, mut bw) = backend.into_split();
    let mut cbuf = client_leftover;
    let mut sbuf = BytesMut::with_capacity(READ_CHUNK);
    let mut to_backend = BytesMut::new();
    let mut to_client = BytesMut::new();
    // A COM_CHANGE_USER waits here until everything before it is answered.
    let mut held: Option<BytesMut> = None;
    // The client shut its sending side: answer what it sent, then close.
    let mut client_eof = false;
    r.take_client_packets(&mut cbuf, &mut to_backend, &mut held);
    loop {
        if client_eof
            && held.is_none()
            && to_backend.is_empty()
            && to_client.is_empty()
            && (r.proto.idle() || r.proto.tracker.quit_sent())
        {
            let _ = bw.shutdown().await;
            let _ = cw.shutdown().await;
            return Ok(());
        }
        if let Some(req) = r.session.take_move() {
            let quiet = held.is_none()
                && to_backend.is_empty()
                && to_client.is_empty()
                && !client_eof
                && r.proto.idle()
                && not_movable_reason(&r.proto).is_none();
            if quiet {
                // HOLD: the client is not read until the move is done.
                let stream = br
                    .reunite(bw)
                    .map_err(|e| RelayError::Backend(std::io::Error::other(e.to_string())))?;
                let stream = r.execute_move(stream, req).await?;
                (br, bw) = stream.into_split();
                continue;
            }
            r.session.defer_move(req);
        }
        if let Some(packet) = held.take() {
            if to_backend.is_empty() && to_client.is_empty() && r.proto.idle() {
                r.change_user(packet, &mut cw, &mut br, &mut bw).await?;
                r.take_client_packets(&mut cbuf, &mut to_backend, &mut held);
                continue;
            }
            held = Some(packet);
        }
        if let Some(ks) = kernel.as_mut().filter(|k| !k.disabled) {
            let quiet = !arm_blocked
                && held.is_none()
                && to_backend.is_empty()
                && to_client.is_empty()
                && cbuf.is_empty()
                && sbuf.is_empty()
                && !client_eof
                && !r.client_continues
                && r.proto.idle()
                && r.ids.is_none()
                && !r.session.has_pending_move();
            if quiet {
                let client = cr.unsplit(cw);
                let stream = br
                    .reunite(bw)
                    .map_err(|e| RelayError::Backend(std::io::Error::other(e.to_string())))?;
                let ran = r.kernel_phase(ks, &client, &stream).await;
                (cr, cw) = tokio::io::split(client);
                (br, bw) = stream.into_split();
                if !ran {
                    arm_blocked = true;
                }
                // From the top: a move request may have woken the kernel phase.
                continue;
            }
        }
        let client_readable = to_backend.is_empty() && held.is_none() && !client_eof;
        tokio::select! {
            n = cr.read_buf(&mut cbuf), if client_readable => {
                let n = n.map_err(RelayError::Client)?;
                arm_blocked = false;
                if n == 0 {
                    tracing::debug!(quit = r.proto.tracker.quit_sent(), "client closed");
                    client_eof = true;
                    continue;
                }
                up_bytes.inc_by(n as u64);
                r.take_client_packets(&mut cbuf, &mut to_backend, &mut held);
            }
            n = br.read_buf(&mut sbuf), if to_client.is_empty() => {
                // Bytes while no command is outstanding are the server's
                // notice that it is shutting down or killed the connection.
                let idle = r.proto.idle() && held.is_none() && to_backend.is_empty();
                let lost = match n {
                    Ok(0) | Err(_) => true,
                    Ok(_) => idle,
                };
                if lost {
                    tracing::debug!(quit = r.proto.tracker.quit_sent(), "backend closed");
                    if r.proto.tracker.quit_sent() {
                        return Ok(());
                    }
                    if !idle {
                        return Err(RelayError::BackendClosed);
                    }
                    sbuf.clear();
                    if let Some(stream) = r.failover().await {
                        (br, bw) = stream.into_split();
                        continue;
                    }
                    let server = r.session.server();
                    tracing::info!(session = r.session.id, server = %server, "server lost; the session's state is not known well enough to carry it over");
                    return fail_next_command(&mut cr, &mut cw, &mut cbuf, &server, r.login.capabilities).await;
                }
                let n = n.map_err(RelayError::Backend)?;
                down_bytes.inc_by(n as u64);
                if r.ids.is_some() {
                    to_client = r.server_packets_mapped(&mut sbuf);
                } else {
                    r.server_bytes(&sbuf);
                    to_client = sbuf.split();
                }
                if sbuf.capacity() < READ_CHUNK {
                    sbuf.reserve(READ_CHUNK);
                }
            }
            w = bw.write(&to_backend), if !to_backend.is_empty() => {
                let n = w.map_err(RelayError::Backend)?;
                to_backend.advance(n);
            }
            w = cw.write(&to_client), if !to_client.is_empty() => {
                let n = w.map_err(RelayError::Client)?;
                to_client.advance(n);
                if to_client.is_empty() {
                    cw.flush().await.map_err(RelayError::Client)?;
                }
            }
            _ = r.session.move_requested() => {}
        }
    }
}

struct Relay {
    shared: Arc<Shared>,
    proto: mysql::Session,
    session: Arc<Session>,
    login: LoginState,
    statements: Statements,
    /// The last client packet was a full 0xFFFFFF fragment.
    client_continues: bool,
    /// What the client's SQL says about state the server cannot list.
    hints: Hints,
    /// Statements re-prepared by a move whose parameter types the server
    /// has not been given yet.
    rebind: BTreeSet<u32>,
    /// Client statement id -> server statement id, once a move made them
    /// differ (None: the same).
    ids: Option<IdMap>,
    /// What the session's state is known to be, for failover.
    snapshot: Option<Snapshot>,
}

/// Statement ids as the client knows them and as the current server does.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IdMap {
    to_server: BTreeMap<u32, u32>,
}

impl IdMap {
    /// The map after a move (None when every id is unchanged).
    pub fn from_moved(prepared: &BTreeMap<u32, (u32, u16)>) -> Option<IdMap> {
        if prepared.iter().all(|(c, (s, _))| c == s) {
            return None;
        }
        Some(IdMap {
            to_server: prepared.iter().map(|(&c, &(s, _))| (c, s)).collect(),
        })
    }

    pub fn server_id(&self, client_id: u32) -> Option<u32> {
        self.to_server.get(&client_id).copied()
    }

    /// A client id for a statement the server just prepared as `server_id`:
    /// the same number if the client does not use it, else the next free one.
    pub fn assign(&mut self, server_id: u32) -> u32 {
        let client_id = if self.to_server.contains_key(&server_id) {
            self.to_server
                .keys()
                .next_back()
                .map_or(1, |m| m.wrapping_add(1))
        } else {
            server_id
        };
        self.to_server.insert(client_id, server_id);
        client_id
    }

    pub fn forget(&mut self, client_id: u32) {
        self.to_server.remove(&client_id);
    }
}

impl Relay {
    /// Moves every complete client packet from `cbuf` to `out`, feeding the
    /// state machine, and stops at a COM_CHANGE_USER (put in `held`).
    fn take_client_packets(
        &mut self,
        cbuf: &mut BytesMut,
        out: &mut BytesMut,
        held: &mut Option<BytesMut>,
    ) {
        while held.is_none() {
            let Some(total) = protocol::frame_len(cbuf) else {
                break;
            };
            let starts_command = !self.client_continues
                && !self.proto.tracker.in_infile()
                && !self.proto.tracker.in_auth()
                && !self.proto.tracker.lost_sync();
            let first = cbuf.get(4).copied();
            let mut packet = cbuf.split_to(total);
            self.client_continues = total - 4 == protocol::MAX_FRAGMENT;
            if starts_command && first == Some(COM_CHANGE_USER) {
                *held = Some(packet);
                break;
            }
            if starts_command {
                match first {
                    Some(COM_STMT_PREPARE) => {
                        let sql = packet.get(5..).unwrap_or(&[]).to_vec();
                        self.statements.pending.push_back(sql);
                    }
                    Some(COM_STMT_CLOSE) => {
                        if let Some(&[a, b, c, d]) = packet.get(5..9) {
                            self.statements
                                .by_id
                                .remove(&u32::from_le_bytes([a, b, c, d]));
                        }
                    }
                    Some(COM_RESET_CONNECTION) => {
                        self.statements.by_id.clear();
                        self.hints.reset();
                        self.ids = None;
                    }
                    Some(COM_QUERY) => self.hints.observe_query(packet.get(5..).unwrap_or(&[])),
                    Some(COM_STMT_EXECUTE) if total - 4 < protocol::MAX_FRAGMENT => {
                        self.bind_types(&mut packet)
                    }
                    _ => {}
                }
                self.translate_statement_id(&mut packet);
            }
            let session = &self.session;
            let metrics = &self.shared.metrics;
            self.proto.feed_client_with(&packet, &mut |_, kind| {
                if let ClientPacket::Command(_) = kind {
                    session.count_command();
                    metrics.command();
                }
            });
            out.unsplit(packet);
        }
        self.publish();
    }

    /// Feeds server bytes to the state machine. Returns the client-visible
    /// id of a statement whose PREPARE_OK was in `chunk` when it differs from
    /// the server's (only meaningful when `chunk` is one whole packet).
    fn server_bytes(&mut self, chunk: &[u8]) -> Option<u32> {
        let statements = &mut self.statements;
        let tracker = &mut self.proto.tracker;
        let ids = &mut self.ids;
        let mut patch = None;
        self.proto.server.feed(chunk, &mut |p| {
            let head = tracker.head_command();
            let kind = tracker.on_server_packet(p);
            if head != Some(COM_STMT_PREPARE) {
                return;
            }
            match kind {
                ServerPacket::PrepareOk => {
                    if let (Some(sql), Some(ok)) = (
                        statements.pending.pop_front(),
                        mysql::parse_prepare_ok(p.prefix()),
                    ) {
                        let client_id = match ids.as_mut() {
                            Some(map) => map.assign(ok.stmt_id),
                            None => ok.stmt_id,
                        };
                        if client_id != ok.stmt_id {
                            patch = Some(client_id);
                        }
                        statements.by_id.insert(
                            client_id,
                            Statement {
                                sql,
                                params: ok.num_params,
                                types: None,
                            },
                        );
                    }
                }
                ServerPacket::Err => {
                    statements.pending.pop_front();
                }
                _ => {}
            }
        });
        self.publish();
        patch
    }

    /// With translated statement ids, server bytes go to the client in whole
    /// packets so that a PREPARE_OK's id can be rewritten.
    fn server_packets_mapped(&mut self, sbuf: &mut BytesMut) -> BytesMut {
        let mut out = BytesMut::new();
        while let Some(total) = protocol::frame_len(sbuf) {
            let mut packet = sbuf.split_to(total);
            if let Some(client_id) = self.server_bytes(&packet) {
                if let Some(id) = packet.get_mut(5..9) {
                    id.copy_from_slice(&client_id.to_le_bytes());
                }
            }
            out.unsplit(packet);
        }
        out
    }

    /// Tells the registry what the state machine knows now.
    fn publish(&self) {
        let t = &self.proto.tracker;
        let state = if self.proto.idle() {
            SessionState::Idle
        } else {
            SessionState::Busy
        };
        // XA first: an XA transaction also shows as an open transaction.
        let reason = if self.hints.xa {
            self.hints.reason()
        } else {
            not_movable_reason(&self.proto).or_else(|| self.hints.reason())
        };
        self.session.observe(state, t.in_transaction(), reason);
    }

    /// Lets the kernel carry the idle session until it punts (a client
    /// command the daemon must see, or the client closing), the backend
    /// sends something unasked (or closes), or a move is requested; then
    /// takes the session back with the kernel's protocol state. Returns
    /// false when the session could not be armed (unread client bytes, or
    /// the kernel path failed: then it stays in userspace).
    async fn kernel_phase(
        &mut self,
        ks: &mut KernelSession,
        client: &ClientStream,
        backend: &TcpStream,
    ) -> bool {
        use std::os::fd::AsFd;
        let Some(client) = client.plain() else {
            ks.disabled = true;
            return false;
        };
        let cookie = match crate::datapath::ebpf::socket_cookie(backend.as_fd()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(session = self.session.id, error = %e, "kernel path: no socket cookie; staying in userspace");
                ks.disabled = true;
                return false;
            }
        };
        if !ks.path.caught_up(ks.key, client.as_fd()) {
            return false;
        }
        if ks.backend != Some(cookie) {
            if let Some(old) = ks.backend.take() {
                ks.path.detach_backend(old);
            }
            match ks.path.attach_backend(ks.key, backend.as_fd()) {
                Ok(c) => ks.backend = Some(c),
                Err(e) => {
                    tracing::warn!(session = self.session.id, error = %e, "kernel path: backend socket not accepted; staying in userspace");
                    ks.disabled = true;
                    return false;
                }
            }
        }
        ks.sync_typed(
            self.statements
                .by_id
                .iter()
                .filter(|(_, s)| s.params == 0 || s.types.is_some())
                .map(|(&id, _)| id)
                .collect(),
        );
        ks.epoch += 1;
        tracing::trace!(session = self.session.id, backend = cookie, "arming");
        match ks.path.arm(
            ks.key,
            client.as_fd(),
            &self.proto.tracker,
            cookie,
            ks.epoch,
        ) {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::trace!(session = self.session.id, counters = ?ks.path.counters(ks.key), "not armed: unread client bytes");
                return false;
            }
            Err(e) => {
                tracing::warn!(session = self.session.id, error = %e, "kernel path: arming failed; staying in userspace");
                ks.disabled = true;
                return false;
            }
        }
        tracing::trace!(session = self.session.id, epoch = ks.epoch, "armed");
        let mut tick = tokio::time::interval(KERNEL_PUBLISH_INTERVAL);
        tick.tick().await;
        let woke = loop {
            tokio::select! {
                r = client.readable() => {
                    if r.is_err() || has_input(client) {
                        break "client";
                    }
                }
                r = backend.readable() => {
                    if r.is_err() || has_input(backend) {
                        break "backend";
                    }
                }
                _ = self.session.move_requested() => break "move",
                _ = tick.tick() => {
                    self.publish_kernel(ks);
                }
            }
        };
        tracing::trace!(session = self.session.id, woke, counters = ?ks.path.counters(ks.key), "disarming");
        ks.path.hold(ks.key).await;
        // A response the kernel forwarded is finished by the kernel.
        let mut waited = Duration::ZERO;
        let track = loop {
            let Some(t) = ks.path.track(ks.key) else {
                break None;
            };
            let tr = &t.tracker;
            if !tr.in_flight() || tr.in_infile() || tr.lost_sync() {
                break Some(t);
            }
            if crate::datapath::kernel::hung_up(backend) {
                break Some(t);
            }
            if waited > KERNEL_SLOW_HOLD && waited.as_millis().is_multiple_of(1000) {
                tracing::debug!(
                    session = self.session.id,
                    ?waited,
                    "HOLD waits for a response the kernel forwards"
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            waited += Duration::from_millis(1);
        };
        // Counts the commands the kernel carried (against our stale copy).
        let redirected_before = ks.reported.server_redirected_bytes;
        self.publish_kernel(ks);
        let redirected = ks.reported.server_redirected_bytes != redirected_before;
        let punt = track.map_or(PUNT_NONE, |t| t.punt_reason);
        if redirected && (woke != "client" || punt != PUNT_SLOW_COMMAND) {
            // The kernel hands redirected segments to the application through
            // a work queue; what we write (or the FIN) goes by TCP and could
            // overtake a segment still queued there. A request/response
            // client has read the whole response before it sends a slow-path
            // command; a pipelining client, a closing client or a move has
            // not, so let the queue drain first.
            tokio::time::sleep(KERNEL_DELIVERY_GRACE).await;
        }
        if punt == PUNT_PIPELINED {
            // Pipelining clients stay in userspace: their next command can
            // arrive while a kernel-forwarded response is still queued.
            ks.disabled = true;
        }
        if let Some(t) = track {
            self.proto = mysql::Session {
                tracker: t.tracker,
                client: mysql::Framer::new(),
                server: mysql::Framer::new(),
            };
            tracing::trace!(
                session = self.session.id,
                punt = t.punt_reason,
                punt_epoch = t.punt_epoch,
                idle = t.tracker.idle(),
                "disarmed"
            );
        }
        self.publish();
        true
    }

    /// Adds the kernel's byte counts to the metrics and shows its state.
    fn publish_kernel(&mut self, ks: &mut KernelSession) {
        use crate::metrics::Direction;
        let (up, down) = ks.take_deltas();
        let m = &self.shared.metrics;
        m.bytes(Direction::ClientToServer, DatapathKind::Ebpf)
            .inc_by(up);
        m.bytes(Direction::ServerToClient, DatapathKind::Ebpf)
            .inc_by(down);
        if let Some(t) = ks.path.track(ks.key) {
            let n = t
                .tracker
                .commands_sent()
                .wrapping_sub(self.proto.tracker.commands_sent());
            self.session.count_commands(u64::from(n));
            m.commands(u64::from(n));
            self.proto.tracker = t.tracker;
            self.publish();
        }
    }

    /// Re-authenticates COM_CHANGE_USER: checks the client's response
    /// against our scramble, recomputes it for the backend's scramble.
    async fn change_user<W, R, BW>(
        &mut self,
        packet: BytesMut,
        cw: &mut W,
        br: &mut R,
        bw: &mut BW,
    ) -> Result<(), RelayError>
    where
        W: AsyncWrite + Unpin,
        R: AsyncRead + Unpin,
        BW: AsyncWrite + Unpin,
    {
        let header = PacketHeader::parse(&packet).unwrap_or(PacketHeader { len: 0, seq: 0 });
        let reply_seq = header.seq.wrapping_add(1);
        let caps = self.login.capabilities;
        let parsed = ChangeUser::parse(packet.get(4..).unwrap_or(&[]), caps);
        let denied = |user: &str| {
            ErrPacket::access_denied(user, &self.session.client_addr.ip().to_string(), true)
        };
        let mut cu = match parsed {
            Ok(cu) => cu,
            Err(_) => {
                write_packet(cw, reply_seq, &ErrPacket::bad_handshake().to_payload(caps)).await?;
                return Err(RelayError::Protocol(protocol::ProtocolError::Malformed(
                    "COM_CHANGE_USER",
                )));
            }
        };
        let servers: Vec<_> = self
            .shared
            .backends
            .all()
            .iter()
            .map(|b| b.address)
            .collect();
        let stored = self.shared.accounts.lookup(&cu.user, &servers).await;
        let sha1 = match stored {
            Some(None) if cu.auth_response.is_empty() => Some(None),
            Some(Some(h)) => {
                recover_sha1_password(&cu.auth_response, &self.login.client_scramble, &h).map(Some)
            }
            _ => None,
        };
        let Some(sha1) = sha1 else {
            // Like MariaDB: refuse, and keep the session as the old user.
            // The packet never reached the backend or the state machine.
            write_packet(cw, reply_seq, &denied(&cu.user).to_payload(caps)).await?;
            self.shared.metrics.auth_failure();
            return Ok(());
        };
        cu.auth_response = match &sha1 {
            Some(pw) => bytes::Bytes::copy_from_slice(&scramble_response(
                pw,
                &self.login.backend_scramble[..20.min(self.login.backend_scramble.len())],
            )),
            None => bytes::Bytes::new(),
        };
        cu.auth_plugin = Some(protocol::constants::auth_plugin::MYSQL_NATIVE_PASSWORD.to_string());
        self.proto.feed_client(&packet);
        write_packet(bw, 0, &cu.encode(caps))
            .await
            .map_err(|e| match e {
                RelayError::Client(e) => RelayError::Backend(e),
                other => other,
            })?;
        let mut io = PacketIo::new(Joined { r: br, w: bw });
        // The backend may answer with an AuthSwitchRequest (new scramble):
        // we answer it ourselves; the client only sees the final OK/ERR.
        let mut switched = false;
        loop {
            let p = io
                .read(1 << 20)
                .await
                .map_err(|e| RelayError::Backend(std::io::Error::other(e.to_string())))?;
            match p.payload.first() {
                Some(0xfe) if !switched => {
                    switched = true;
                    let sw = protocol::AuthSwitchRequest::parse(&p.payload)?;
                    let data = match (&sha1, sw.data.get(..20)) {
                        (Some(pw), Some(salt)) => scramble_response(pw, salt).to_vec(),
                        _ => Vec::new(),
                    };
                    io.write(p.seq.wrapping_add(1), &data)
                        .await
                        .map_err(RelayError::Backend)?;
                }
                _ => {
                    let info = mysql::PacketInfo::from_payload(reply_seq, &p.payload);
                    self.proto.tracker.on_server_packet(&info);
                    write_packet(cw, reply_seq, &p.payload).await?;
                    if p.payload.first() == Some(&0x00) {
                        self.login.user = cu.user.clone();
                        self.login.sha1_password = sha1;
                        self.session.set_user(&cu.user);
                        self.session
                            .set_schema((!cu.database.is_empty()).then(|| cu.database.clone()));
                        self.statements = Statements::default();
                        self.hints.reset();
                        self.rebind.clear();
                        self.ids = None;
                        if let Some(mut params) = self.session.login_params() {
                            params.user = cu.user.clone();
                            params.sha1_password = sha1;
                            params.database =
                                (!cu.database.is_empty()).then(|| cu.database.clone());
                            self.session.set_login_params(params);
                        }
                    }
                    self.publish();
                    return Ok(());
                }
            }
        }
    }
}

impl Relay {
    /// Rewrites the client's statement id in a COM_STMT_* command to the
    /// server's, when a move made them differ.
    fn translate_statement_id(&mut self, packet: &mut BytesMut) {
        let Some(map) = self.ids.as_mut() else {
            return;
        };
        let Some(&cmd) = packet.get(4) else { return };
        if !matches!(
            cmd,
            COM_STMT_EXECUTE
                | COM_STMT_SEND_LONG_DATA
                | COM_STMT_CLOSE
                | COM_STMT_RESET
                | COM_STMT_FETCH
                | COM_STMT_BULK_EXECUTE
        ) {
            return;
        }
        let Some(&[a, b, c, d]) = packet.get(5..9) else {
            return;
        };
        let client_id = u32::from_le_bytes([a, b, c, d]);
        // 0xFFFFFFFF: MariaDB's "the statement just prepared".
        if client_id == u32::MAX {
            return;
        }
        if let Some(server_id) = map.server_id(client_id) {
            packet[5..9].copy_from_slice(&server_id.to_le_bytes());
        }
        if cmd == COM_STMT_CLOSE {
            map.forget(client_id);
        }
    }

    /// Remembers the parameter types a COM_STMT_EXECUTE binds, and gives
    /// them to a statement that a move re-prepared and that the client
    /// executes without types (it bound them on the old server).
    fn bind_types(&mut self, packet: &mut BytesMut) {
        let payload = &packet[4..];
        let Some(&[a, b, c, d]) = payload.get(1..5) else {
            return;
        };
        let id = u32::from_le_bytes([a, b, c, d]);
        let Some(stmt) = self.statements.by_id.get_mut(&id) else {
            return;
        };
        let params = usize::from(stmt.params);
        if params == 0 {
            return;
        }
        let flag_at = 10 + params.div_ceil(8);
        let types_end = flag_at + 1 + 2 * params;
        match payload.get(flag_at) {
            Some(1) => {
                if let Some(t) = payload.get(flag_at + 1..types_end) {
                    stmt.types = Some(t.to_vec());
                }
                self.rebind.remove(&id);
            }
            Some(0) if self.rebind.remove(&id) => {
                let Some(types) = &stmt.types else {
                    return;
                };
                let mut out = BytesMut::with_capacity(packet.len() + types.len());
                let seq = packet[3];
                let mut body = Vec::with_capacity(payload.len() + types.len());
                body.extend_from_slice(&payload[..flag_at]);
                body.push(1);
                body.extend_from_slice(types);
                body.extend_from_slice(&payload[flag_at + 1..]);
                protocol::write_packet(&mut out, seq, &body);
                *packet = out;
            }
            _ => {}
        }
    }

    /// Carries out a move on the quiet session: reads the state on the
    /// source, rebuilds and verifies it on the target, then switches.
    /// Returns the backend connection the session continues on. An error
    /// means the source connection can no longer be trusted.
    async fn execute_move(
        &mut self,
        source: TcpStream,
        req: MoveRequest,
    ) -> Result<TcpStream, RelayError> {
        let started = Instant::now();
        let from = self.session.server();
        self.session.set_state(SessionState::Moving);
        let caps = self.login.capabilities;
        let mut src = BackendConn::new(source, caps);
        let (reply, next) = self.try_move(&mut src, &req.target).await?;
        let stream = match next {
            Some(target) => {
                src.quit().await;
                target
            }
            None => src
                .into_inner()
                .map_err(|e| RelayError::Backend(std::io::Error::other(e.to_string())))?,
        };
        let rec = crate::mover::record_for(
            &self.session,
            &from,
            &req.target,
            req.requested_by,
            &reply,
            started,
        );
        match &reply {
            MoveReply::Moved { .. } => {
                tracing::info!(session = self.session.id, from = %from, to = %req.target, ms = rec.duration_ms, "session moved")
            }
            MoveReply::NotMovable(why) | MoveReply::Failed(why) => {
                tracing::info!(session = self.session.id, from = %from, to = %req.target, reason = %why, "session not moved")
            }
        }
        crate::mover::record(&self.shared, rec);
        let _ = req.reply.send(reply);
        self.publish();
        Ok(stream)
    }

    /// The move itself; `Ok((reply, Some(target)))` when it switched.
    async fn try_move(
        &mut self,
        src: &mut BackendConn<TcpStream>,
        target_name: &str,
    ) -> Result<(MoveReply, Option<TcpStream>), RelayError> {
        let fail = |m: String| Ok((MoveReply::Failed(m), None));
        let Ok(target) = self.shared.backends.get(target_name) else {
            return fail(format!("unknown server '{target_name}'"));
        };
        if !target.is_up() {
            return fail(format!("server '{target_name}' is down"));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        // The target login runs while the source's state is read: the two
        // take about as long, and the move's latency is the longer one.
        let Some(mut params) = self.session.login_params() else {
            return fail("the session has no login parameters".into());
        };
        params.database = None;
        let login =
            tokio::time::timeout(TARGET_TIMEOUT, crate::proxy::login_backend(&target, params));
        let read = tokio::time::timeout(
            SOURCE_READ_TIMEOUT,
            move_state::read_source(src, &mut self.hints, now),
        );
        let (read, login) = tokio::join!(read, login);
        let login = match login {
            Ok(Ok((stream, login, _))) => Ok((stream, login)),
            Ok(Err(e)) => Err(format!("login to the target failed: {e}")),
            Err(_) => Err(format!(
                "login to the target timed out after {TARGET_TIMEOUT:?}"
            )),
        };
        let state = match read {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                if let Ok((stream, _)) = login {
                    BackendConn::new(stream, self.login.capabilities)
                        .quit()
                        .await;
                }
                return match e {
                    StateError::NotMovable(why) => Ok((MoveReply::NotMovable(why), None)),
                    StateError::Failed(why) => fail(why),
                };
            }
            Err(_) => {
                return Err(RelayError::Backend(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the source server did not answer the state queries",
                )))
            }
        };
        let logged_in = match login {
            Ok(x) => x,
            Err(why) => return fail(why),
        };
        match self.open_on(&target, &state, Some(logged_in)).await {
            Ok((stream, login, prepared)) => {
                self.adopt(target_name, &login, prepared, state);
                Ok((
                    MoveReply::Moved {
                        from: String::new(),
                        to: target_name.to_string(),
                        duration: Duration::ZERO,
                    },
                    Some(stream),
                ))
            }
            Err(StateError::NotMovable(why)) => Ok((MoveReply::NotMovable(why), None)),
            Err(StateError::Failed(why)) => fail(why),
        }
    }

    /// Logs in to `target` as the session's user, rebuilds `state` and the
    /// prepared statements there and verifies the result. Returns the
    /// connection, its login and client id -> (server id, params).
    async fn open_on(
        &self,
        target: &crate::backend::Backend,
        state: &move_state::SessionState,
        logged_in: Option<(TcpStream, protocol::BackendLogin)>,
    ) -> Result<(TcpStream, protocol::BackendLogin, BTreeMap<u32, (u32, u16)>), StateError> {
        let Some(mut params) = self.session.login_params() else {
            return Err(StateError::Failed(
                "the session has no login parameters".into(),
            ));
        };
        // `rebuild` selects the schema.
        params.database = None;
        let statements: BTreeMap<u32, (Vec<u8>, u16)> = self
            .statements
            .by_id
            .iter()
            .map(|(&id, s)| (id, (s.sql.clone(), s.params)))
            .collect();
        let source_fp =
            state.fingerprint(&statements.iter().map(|(&id, (_, p))| (id, *p)).collect());
        let caps = self.login.capabilities;
        let attempt = async {
            let (stream, login) = match logged_in {
                Some(x) => x,
                None => {
                    let (stream, login, _) = crate::proxy::login_backend(target, params)
                        .await
                        .map_err(|e| {
                            StateError::Failed(format!("login to the target failed: {e}"))
                        })?;
                    (stream, login)
                }
            };
            let wanted = caps & !(CLIENT_SSL | CLIENT_CONNECT_WITH_DB | CLIENT_MYSQL);
            if login.capabilities() & wanted != wanted {
                return Err(StateError::NotMovable(format!(
                    "the target lacks capabilities 0x{:08x}",
                    wanted & !login.capabilities()
                )));
            }
            let mut conn = BackendConn::new(stream, caps);
            let (rebuilt, prepared) = match move_state::rebuild(&mut conn, state, &statements).await
            {
                Ok(x) => x,
                Err(e) => {
                    conn.quit().await;
                    return Err(e);
                }
            };
            let params = prepared.iter().map(|(&c, &(_, p))| (c, p)).collect();
            if rebuilt.fingerprint(&params) != source_fp {
                let why = state.first_difference(&rebuilt);
                conn.quit().await;
                return Err(StateError::Failed(format!(
                    "state verification failed on the target: {why}"
                )));
            }
            let stream = conn
                .into_inner()
                .map_err(|_| StateError::Failed("the target sent unsolicited data".into()))?;
            Ok((stream, login, prepared))
        };
        match tokio::time::timeout(TARGET_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err(StateError::Failed(format!(
                "the target did not finish in {TARGET_TIMEOUT:?}"
            ))),
        }
    }

    /// Bookkeeping once the session runs on `target_name`.
    fn adopt(
        &mut self,
        target_name: &str,
        login: &protocol::BackendLogin,
        prepared: BTreeMap<u32, (u32, u16)>,
        state: move_state::SessionState,
    ) {
        self.session.record_move(target_name);
        self.session
            .set_backend_thread(login.greeting().connection_id);
        self.session.set_schema(state.schema.clone());
        self.login.backend_scramble = login.greeting().scramble.clone();
        self.ids = IdMap::from_moved(&prepared);
        self.rebind = self
            .statements
            .by_id
            .iter()
            .filter(|(_, s)| s.params > 0)
            .map(|(&id, _)| id)
            .collect();
        self.snapshot = Some(Snapshot {
            state,
            state_changes: self.proto.tracker.state_changes(),
            commands: self.proto.tracker.commands_sent(),
        });
    }

    /// The session's server is gone while the session was idle: if the
    /// state last read is still current (no state change reported since),
    /// carry the session to another server. Returns the new connection.
    async fn failover(&mut self) -> Option<TcpStream> {
        let started = Instant::now();
        tracing::debug!(
            tracked = self.login.state_tracked,
            snapshot_changes = ?self.snapshot.as_ref().map(|s| s.state_changes),
            changes = self.proto.tracker.state_changes(),
            "failover check"
        );
        let snap = self.snapshot.as_ref()?;
        if !snap.current(self.login.state_tracked, &self.proto.tracker)
            || not_movable_reason(&self.proto).is_some()
            || self.hints.reason().is_some()
        {
            return None;
        }
        let state = snap.state.clone();
        let from = self.session.server();
        if let Ok(b) = self.shared.backends.get(&from) {
            // The health check brings it back when it answers again.
            b.set_up(false);
        }
        let candidates: Vec<_> = crate::proxy::placement_order(&self.shared)
            .into_iter()
            .filter(|b| b.name != from)
            .take(2)
            .collect();
        for target in candidates {
            match self.open_on(&target, &state, None).await {
                Ok((stream, login, prepared)) => {
                    self.adopt(&target.name, &login, prepared, state);
                    let reply = MoveReply::Moved {
                        from: from.clone(),
                        to: target.name.clone(),
                        duration: Duration::ZERO,
                    };
                    let rec = crate::mover::record_for(
                        &self.session,
                        &from,
                        &target.name,
                        crate::metrics::move_reason::FAILOVER,
                        &reply,
                        started,
                    );
                    tracing::info!(session = self.session.id, from = %from, to = %target.name, "server lost; session carried over");
                    crate::mover::record(&self.shared, rec);
                    self.publish();
                    return Some(stream);
                }
                Err(e) => {
                    tracing::info!(session = self.session.id, to = %target.name, error = %e, "failover attempt failed");
                }
            }
        }
        None
    }
}

/// The state last read (or known since login) and the tracker's count of
/// state changes at that moment: current while the count has not moved.
#[derive(Debug, Clone)]
struct Snapshot {
    state: move_state::SessionState,
    state_changes: u32,
    /// Commands sent by then: with no command since, the state is current
    /// even without state tracking (clients without CLIENT_SESSION_TRACK).
    commands: u32,
}

impl Snapshot {
    fn current(&self, tracked: bool, t: &mysql::Tracker) -> bool {
        t.commands_sent() == self.commands || (tracked && t.state_changes() == self.state_changes)
    }
}

/// The server went away: answer the client's next command with a clear
/// error (its session state could not be carried over), then close.
/// Whether a socket has bytes to read or reached end of stream (a peek;
/// clears tokio's stale readiness when it has neither).
fn has_input(s: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let r = s.try_io(tokio::io::Interest::READABLE, || {
        let mut b = [0u8; 1];
        // SAFETY: one-byte buffer.
        let n = unsafe {
            libc::recv(
                s.as_raw_fd(),
                b.as_mut_ptr().cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    });
    match r {
        Ok(()) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

async fn fail_next_command<R, W>(
    cr: &mut R,
    cw: &mut W,
    cbuf: &mut BytesMut,
    server: &str,
    caps: u32,
) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        if protocol::frame_len(cbuf).is_some() {
            let seq = cbuf.get(3).copied().unwrap_or(0).wrapping_add(1);
            let err = ErrPacket::new(
                protocol::constants::error::CR_SERVER_LOST,
                b"HY000",
                format!(
                    "Lost connection to backend server '{server}'; the session could not be carried to another server"
                ),
            );
            write_packet(cw, seq, &err.to_payload(caps)).await?;
            let _ = cw.shutdown().await;
            return Err(RelayError::BackendClosed);
        }
        if cr.read_buf(cbuf).await.map_err(RelayError::Client)? == 0 {
            return Err(RelayError::BackendClosed);
        }
    }
}

/// Writes one packet to the client side.
async fn write_packet<W: AsyncWrite + Unpin>(
    w: &mut W,
    seq: u8,
    payload: &[u8],
) -> Result<(), RelayError> {
    let mut out = BytesMut::with_capacity(payload.len() + 4);
    protocol::write_packet(&mut out, seq, payload);
    w.write_all(&out).await.map_err(RelayError::Client)?;
    w.flush().await.map_err(RelayError::Client)
}

/// Why the session could not move now (None = it could).
pub fn not_movable_reason(s: &mysql::Session) -> Option<String> {
    let t = &s.tracker;
    let reason = if t.lost_sync() {
        "protocol state unknown"
    } else if t.in_transaction() {
        "open transaction"
    } else if t.open_cursors() > 0 {
        "open cursor"
    } else if t.pending_long_data() {
        "pending long data"
    } else {
        return None;
    };
    Some(reason.to_string())
}

/// A read half and a write half used as one stream.
struct Joined<'a, R, W> {
    r: &'a mut R,
    w: &'a mut W,
}

impl<R: AsyncRead + Unpin, W: Unpin> AsyncRead for Joined<'_, R, W> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.get_mut().r).poll_read(cx, buf)
    }
}

impl<R: Unpin, W: AsyncWrite + Unpin> AsyncWrite for Joined<'_, R, W> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut *self.get_mut().w).poll_write(cx, buf)
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.get_mut().w).poll_flush(cx)
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.get_mut().w).poll_shutdown(cx)
    }
}
