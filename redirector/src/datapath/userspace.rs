//! The userspace data path: the daemon copies bytes between the client and
//! its backend, feeding both directions to the shared protocol state machine
//! (`redirector_ebpf::mysql`) so that it always knows whether the session is
//! idle, in a transaction, holding cursors and so on.
//!
//! One task per session drives both directions with `select!`, reading a
//! side only once what was read from it before has been written out, so
//! memory per session stays bounded and neither side can stall the other.
//! Client packets are handled whole (the daemon must see COM_CHANGE_USER and
//! the SQL of COM_STMT_PREPARE); server bytes are forwarded as they come.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use redirector_ebpf::mysql::{self, ClientPacket, ServerPacket};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::protocol::command::ChangeUser;
use crate::protocol::constants::command::{
    COM_CHANGE_USER, COM_RESET_CONNECTION, COM_STMT_CLOSE, COM_STMT_PREPARE,
};
use crate::protocol::{self, recover_sha1_password, scramble_response, ErrPacket, PacketHeader};
use crate::proxy::{ClientStream, LoginState, PacketIo, Shared};
use crate::session::{DatapathKind, Session, SessionState};

const READ_CHUNK: usize = 64 * 1024;

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
    /// Statement id → SQL.
    pub by_id: BTreeMap<u32, Vec<u8>>,
}

/// Relays until either side closes.
pub async fn relay(
    shared: &Arc<Shared>,
    client: PacketIo<ClientStream>,
    backend: TcpStream,
    session: Arc<Session>,
    proto: mysql::Session,
    login: LoginState,
) -> Result<(), RelayError> {
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
    };
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
        if let Some(packet) = held.take() {
            if to_backend.is_empty() && to_client.is_empty() && r.proto.idle() {
                r.change_user(packet, &mut cw, &mut br, &mut bw).await?;
                r.take_client_packets(&mut cbuf, &mut to_backend, &mut held);
                continue;
            }
            held = Some(packet);
        }
        let client_readable = to_backend.is_empty() && held.is_none() && !client_eof;
        tokio::select! {
            n = cr.read_buf(&mut cbuf), if client_readable => {
                let n = n.map_err(RelayError::Client)?;
                if n == 0 {
                    tracing::debug!(quit = r.proto.tracker.quit_sent(), "client closed");
                    client_eof = true;
                    continue;
                }
                up_bytes.inc_by(n as u64);
                r.take_client_packets(&mut cbuf, &mut to_backend, &mut held);
            }
            n = br.read_buf(&mut sbuf), if to_client.is_empty() => {
                let n = n.map_err(RelayError::Backend)?;
                if n == 0 {
                    tracing::debug!(quit = r.proto.tracker.quit_sent(), "backend closed");
                    if r.proto.tracker.quit_sent() {
                        return Ok(());
                    }
                    return Err(RelayError::BackendClosed);
                }
                down_bytes.inc_by(n as u64);
                r.server_bytes(&sbuf);
                to_client = sbuf.split();
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
            let packet = cbuf.split_to(total);
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
                    Some(COM_RESET_CONNECTION) => self.statements.by_id.clear(),
                    _ => {}
                }
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

    fn server_bytes(&mut self, chunk: &[u8]) {
        let statements = &mut self.statements;
        let tracker = &mut self.proto.tracker;
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
                        statements.by_id.insert(ok.stmt_id, sql);
                    }
                }
                ServerPacket::Err => {
                    statements.pending.pop_front();
                }
                _ => {}
            }
        });
        self.publish();
    }

    /// Tells the registry what the state machine knows now.
    fn publish(&self) {
        let t = &self.proto.tracker;
        let state = if self.proto.idle() {
            SessionState::Idle
        } else {
            SessionState::Busy
        };
        self.session
            .observe(state, t.in_transaction(), not_movable_reason(&self.proto));
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
                    }
                    self.publish();
                    return Ok(());
                }
            }
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
