//! The userspace relay: copies bytes between the client and its backend,
//! feeding both directions to the session's state machine, until something
//! needs another part of the session: a quiet moment the kernel could take,
//! a move, a COM_CHANGE_USER, a lost backend, the end.
//!
//! Both directions are driven from one task with `select!`, reading a side
//! only once what was read from it before has been written out, so memory
//! per session stays bounded and neither side can stall the other. Client
//! packets are handled whole (the daemon must see COM_CHANGE_USER and the
//! SQL of COM_STMT_PREPARE); server bytes are forwarded as they come.

use bytes::{Buf, BytesMut};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant};

use super::budget::{Grant, FREE_PER_SESSION};
use super::core::{not_movable, Core};
use super::MoveRequest;
use crate::metrics::{DatapathKind, Direction, ErrorKind};
use crate::net::ClientStream;
use crate::protocol::constants::command::COM_CHANGE_USER;
use crate::protocol::{self, ErrPacket, ProtocolError};

const READ_CHUNK: usize = 64 * 1024;

/// Why the session ended with an error.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("client i/o: {0}")]
    Client(#[source] std::io::Error),
    #[error("backend i/o: {0}")]
    Backend(#[source] std::io::Error),
    #[error("backend closed the connection")]
    BackendClosed,
    #[error("backend {server} lost; the session's state could not be carried over")]
    ServerLost { server: String },
    #[error(
        "backend {server} closed the session's connection and still answers (KILL, wait_timeout …)"
    )]
    ConnectionClosed { server: String },
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
    #[error(
        "the client sent part of a packet and then nothing for {0:?} (listen.net_read_timeout_ms)"
    )]
    ReadTimeout(Duration),
    #[error("the client's {wanted}-byte packet does not fit in what is left of listen.max_buffered_bytes ({limit} bytes for all sessions)")]
    BufferFull { wanted: usize, limit: usize },
}

impl RelayError {
    /// The `errors_total{kind}` this ending counts as.
    pub fn metric_kind(&self) -> ErrorKind {
        match self {
            RelayError::ReadTimeout(_) | RelayError::BufferFull { .. } => ErrorKind::Limit,
            _ => ErrorKind::RelayIo,
        }
    }
}

/// The two sockets of a session.
pub struct Pair {
    pub client: ClientStream,
    pub backend: TcpStream,
}

/// Where the relay stopped.
#[derive(Debug)]
pub enum Step {
    /// Idle, nothing buffered either way, the client still connected: the
    /// kernel may carry the session now (only offered when asked for).
    Quiet,
    /// A move request at a moment the session can move.
    Move(MoveRequest),
    /// A COM_CHANGE_USER, everything before it answered.
    ChangeUser(BytesMut),
    /// A KILL (statement or COM_PROCESS_KILL), everything before it
    /// answered: the redirector maps the id it names.
    Kill(BytesMut),
    /// The backend closed (or spoke unasked) while the session was idle.
    BackendLost(Farewell),
    /// The session is over.
    Closed,
}

/// What the server said, unasked, when it ended an idle connection.
#[derive(Debug)]
pub enum Farewell {
    /// Nothing (a crash, a reset, a network fault): only the health
    /// check can say whether the server is down.
    Silent,
    /// ERR 1053: the server is shutting down.
    Shutdown,
    /// Another ERR (1927 "Connection was killed" after a DBA's KILL,
    /// 1156 "packets out of order" …): the server ended this connection
    /// only. The whole packet, to pass on to the client.
    Error { code: u16, packet: BytesMut },
}

impl Farewell {
    /// Classifies what the server sent before closing (`unasked`).
    fn of(unasked: &mut BytesMut) -> Farewell {
        let Some(total) = protocol::frame_len(unasked) else {
            return Farewell::Silent;
        };
        match unasked.get(4..7) {
            Some(&[0xFF, a, b]) => match u16::from_le_bytes([a, b]) {
                protocol::constants::error::ER_SERVER_SHUTDOWN => Farewell::Shutdown,
                code => Farewell::Error {
                    code,
                    packet: unasked.split_to(total),
                },
            },
            _ => Farewell::Silent,
        }
    }
}

pub struct Relay {
    cbuf: BytesMut,
    sbuf: BytesMut,
    to_backend: BytesMut,
    to_client: BytesMut,
    /// A COM_CHANGE_USER or KILL waits here until everything before it is
    /// answered.
    held: Option<BytesMut>,
    /// The client shut its sending side: answer what it sent, then close.
    client_eof: bool,
    /// The client's end was passed on to the server (FIN), once everything
    /// it sent before was: the server then treats the connection exactly as
    /// if its own client had gone (MariaDB aborts a running statement at its
    /// next check and closes), and a half-closed client still gets the
    /// answer to its last command.
    backend_shut: bool,
    /// A whole client command waits in `cbuf` until the tracker can follow
    /// one more (a client pipelining more than it holds is served in order).
    client_waits: bool,
    /// Set when the kernel could not take the quiet session (unread bytes
    /// on a side): read before offering it again.
    quiet_blocked: bool,
    /// Client bytes read since the client last had a whole response (what
    /// it may have sent without waiting), and the largest such amount since
    /// the last quiet moment offered.
    client_flight: usize,
    largest_flight: usize,
    /// This session's share of `listen.max_buffered_bytes`, while it holds
    /// a packet larger than its own buffer.
    grant: Option<Grant>,
    up_bytes: Counter,
    down_bytes: Counter,
}

impl Relay {
    /// `leftover`: client bytes read past the handshake.
    pub fn new(core: &Core, leftover: BytesMut) -> Self {
        let m = &core.ctx.metrics;
        Relay {
            cbuf: leftover,
            sbuf: BytesMut::with_capacity(READ_CHUNK),
            to_backend: BytesMut::new(),
            to_client: BytesMut::new(),
            held: None,
            client_eof: false,
            backend_shut: false,
            client_waits: false,
            quiet_blocked: false,
            client_flight: 0,
            largest_flight: 0,
            grant: None,
            up_bytes: m
                .bytes(Direction::ClientToServer, DatapathKind::Userspace)
                .clone(),
            down_bytes: m
                .bytes(Direction::ServerToClient, DatapathKind::Userspace)
                .clone(),
        }
    }

    /// The most client bytes read in one flight (between two responses)
    /// since the last [`Step::Quiet`] (then reset).
    pub fn take_largest_flight(&mut self) -> usize {
        let largest = self.largest_flight.max(self.client_flight);
        self.largest_flight = 0;
        self.client_flight = 0;
        largest
    }

    /// The kernel could not take the session: do not offer it again until
    /// something was read from a side.
    pub fn block_quiet(&mut self) {
        self.quiet_blocked = true;
    }

    /// Relays until a [`Step`]. `offer_quiet`: stop at quiet moments.
    pub async fn pump(
        &mut self,
        core: &mut Core,
        pair: &mut Pair,
        offer_quiet: bool,
    ) -> Result<Step, RelayError> {
        self.take_client_packets(core);
        let (mut cr, mut cw) = tokio::io::split(&mut pair.client);
        let (mut br, mut bw) = pair.backend.split();
        // MariaDB's net_read_timeout: once the client has started a packet,
        // each read must bring more of it within the timeout. Between
        // packets the client may stay silent as long as it likes.
        let read_timeout = core.ctx.net_read_timeout;
        let read_deadline = tokio::time::sleep(read_timeout);
        tokio::pin!(read_deadline);
        loop {
            if let Err(e) = self.fit_budget(core) {
                let seq = self.cbuf.get(3).map_or(0, |s| s.wrapping_add(1));
                fail_client(&mut cw, seq, &ErrPacket::buffer_full(), core, read_timeout).await;
                return Err(e);
            }
            let flushed = self.to_backend.is_empty() && self.to_client.is_empty();
            if self.client_eof
                && self.held.is_none()
                && flushed
                && (core.proto.idle() || core.proto.tracker.quit_sent())
            {
                let _ = bw.shutdown().await;
                let _ = cw.shutdown().await;
                return Ok(Step::Closed);
            }
            if self.client_eof
                && !self.backend_shut
                && self.held.is_none()
                && self.to_backend.is_empty()
            {
                // Mid-command (or with the protocol state unknown): the
                // server learns that the client has gone, as it would directly.
                tracing::debug!(
                    idle = core.proto.idle(),
                    lost_sync = core.proto.tracker.lost_sync(),
                    "client gone mid-command; passing its end to the server"
                );
                self.backend_shut = true;
                let _ = bw.shutdown().await;
            }
            if let Some(req) = core.session.take_move() {
                let quiet = self.held.is_none()
                    && flushed
                    && !self.client_eof
                    && core.proto.idle()
                    && not_movable(&core.proto).is_none();
                if quiet {
                    // HOLD: the client is not read until the move is done.
                    return Ok(Step::Move(req));
                }
                core.session.defer_move(req);
            }
            if flushed && core.proto.idle() {
                if let Some(packet) = self.held.take() {
                    return Ok(if packet.get(4) == Some(&COM_CHANGE_USER) {
                        Step::ChangeUser(packet)
                    } else {
                        Step::Kill(packet)
                    });
                }
            }
            let quiet = offer_quiet
                && !self.quiet_blocked
                && self.held.is_none()
                && flushed
                && self.cbuf.is_empty()
                && self.sbuf.is_empty()
                && !self.client_eof
                && !core.client_continues
                && core.proto.idle()
                && !core.session.has_pending_move();
            if quiet {
                return Ok(Step::Quiet);
            }
            let client_readable = self.to_backend.is_empty()
                && self.held.is_none()
                && !self.client_eof
                && !self.client_waits;
            // Every whole packet was taken: bytes left are a packet's start
            // (or the rest of a long packet is due). A whole command held
            // back by `client_waits` is not read from, so it is not timed.
            let mid_packet = client_readable && (!self.cbuf.is_empty() || core.client_continues);
            tokio::select! {
                n = cr.read_buf(&mut self.cbuf), if client_readable => {
                    let n = n.map_err(RelayError::Client)?;
                    read_deadline.as_mut().reset(Instant::now() + read_timeout);
                    self.quiet_blocked = false;
                    if n == 0 {
                        tracing::debug!(quit = core.proto.tracker.quit_sent(), "client closed");
                        self.client_eof = true;
                        continue;
                    }
                    self.up_bytes.inc_by(n as u64);
                    self.client_flight = self.client_flight.saturating_add(n);
                    self.take_client_packets(core);
                }
                n = br.read_buf(&mut self.sbuf), if self.to_client.is_empty() => {
                    // Bytes while no command is outstanding are the server's
                    // notice that it is shutting down or killed the connection.
                    let idle = core.proto.idle() && self.held.is_none() && self.to_backend.is_empty();
                    let lost = match n {
                        Ok(0) | Err(_) => true,
                        Ok(_) => idle,
                    };
                    if lost {
                        let t = &core.proto.tracker;
                        tracing::debug!(
                            quit = t.quit_sent(),
                            idle,
                            in_flight = t.in_flight(),
                            lost_sync = t.lost_sync(),
                            lost_reason = t.lost_reason(),
                            server_boundary = core.proto.server.at_boundary(),
                            client_boundary = core.proto.client.at_boundary(),
                            held = self.held.is_some(),
                            to_backend = self.to_backend.len(),
                            read = ?n.as_ref().ok(),
                            unasked = ?self.sbuf.get(..self.sbuf.len().min(16)),
                            "backend closed"
                        );
                        if core.proto.tracker.quit_sent() || self.client_eof {
                            // Either side's end was asked for.
                            return Ok(Step::Closed);
                        }
                        if !idle {
                            return Err(RelayError::BackendClosed);
                        }
                        let farewell = Farewell::of(&mut self.sbuf);
                        self.sbuf.clear();
                        return Ok(Step::BackendLost(farewell));
                    }
                    let n = n.map_err(RelayError::Backend)?;
                    self.quiet_blocked = false;
                    self.down_bytes.inc_by(n as u64);
                    if core.statements.translated() {
                        self.to_client = core.server_packets_mapped(&mut self.sbuf);
                    } else {
                        core.server_bytes(&self.sbuf);
                        self.to_client = self.sbuf.split();
                    }
                    if core.proto.idle() && self.cbuf.is_empty() {
                        // Answered, nothing more from the client yet: its
                        // next bytes start a new flight.
                        self.largest_flight = self.largest_flight.max(self.client_flight);
                        self.client_flight = 0;
                    }
                    if self.sbuf.capacity() < READ_CHUNK {
                        self.sbuf.reserve(READ_CHUNK);
                    }
                    if self.client_waits {
                        self.client_waits = false;
                        self.take_client_packets(core);
                    }
                }
                w = bw.write(&self.to_backend), if !self.to_backend.is_empty() => {
                    let n = w.map_err(RelayError::Backend)?;
                    self.to_backend.advance(n);
                }
                w = cw.write(&self.to_client), if !self.to_client.is_empty() => {
                    let n = w.map_err(RelayError::Client)?;
                    self.to_client.advance(n);
                    if self.to_client.is_empty() {
                        cw.flush().await.map_err(RelayError::Client)?;
                    }
                }
                _ = core.session.move_requested() => {}
                _ = &mut read_deadline, if mid_packet => {
                    let seq = self.cbuf.get(3).map_or(0, |s| s.wrapping_add(1));
                    fail_client(&mut cw, seq, &ErrPacket::net_read_timeout(), core, read_timeout).await;
                    return Err(RelayError::ReadTimeout(read_timeout));
                }
            }
        }
    }

    /// Holds a share of `listen.max_buffered_bytes` for the client bytes
    /// this session holds beyond its own buffer: the packet it is reading
    /// (as its header announces it, so that it is refused before it is
    /// read) and what waits for the backend. Room for the packet is made
    /// at once, so the read buffer does not grow past it by doubling.
    fn fit_budget(&mut self, core: &Core) -> Result<(), RelayError> {
        let reading = protocol::PacketHeader::parse(&self.cbuf)
            .map_or(0, |h| protocol::HEADER_LEN + h.len)
            .max(self.cbuf.len());
        let held = self.held.as_ref().map_or(0, BytesMut::len);
        let wanted = reading + self.to_backend.len() + held;
        if wanted <= FREE_PER_SESSION {
            self.grant = None;
            return Ok(());
        }
        let budget = &core.ctx.buffers;
        if !budget.grow(&mut self.grant, wanted) {
            return Err(RelayError::BufferFull {
                wanted,
                limit: budget.limit(),
            });
        }
        self.cbuf.reserve(reading - self.cbuf.len());
        Ok(())
    }

    /// Moves every complete client packet from the read buffer to the
    /// backend's queue, feeding the state machine, and stops at a
    /// COM_CHANGE_USER (held until everything before it is answered).
    fn take_client_packets(&mut self, core: &mut Core) {
        while self.held.is_none() {
            let Some(total) = protocol::frame_len(&self.cbuf) else {
                break;
            };
            let t = &core.proto.tracker;
            let starts_command =
                !core.client_continues && !t.in_infile() && !t.in_auth() && !t.lost_sync();
            if starts_command && !t.can_take_command() {
                self.client_waits = true;
                break;
            }
            let first = self.cbuf.get(4).copied();
            let mut packet = self.cbuf.split_to(total);
            core.client_continues = total - 4 == protocol::MAX_FRAGMENT;
            if starts_command
                && (first == Some(COM_CHANGE_USER)
                    || (!core.client_continues && protocol::kill::intercepts(&packet)))
            {
                self.held = Some(packet);
                break;
            }
            core.client_packet(&mut packet, starts_command);
            self.to_backend.unsplit(packet);
        }
        core.publish();
    }

    /// The session cannot go on (its server went away and it could not be
    /// carried over, or the server ended its connection): answers the
    /// client's next command with `message` (CR_SERVER_LOST), then closes.
    /// Returns `end`, or the client's error.
    pub async fn fail_next_command(
        &mut self,
        pair: &mut Pair,
        caps: u32,
        message: String,
        end: RelayError,
        read_timeout: Duration,
    ) -> RelayError {
        loop {
            if protocol::frame_len(&self.cbuf).is_some() {
                let seq = self.cbuf.get(3).copied().unwrap_or(0).wrapping_add(1);
                let err = ErrPacket::new(
                    protocol::constants::error::CR_SERVER_LOST,
                    b"HY000",
                    message,
                );
                if let Err(e) = write_packet(&mut pair.client, seq, &err.to_payload(caps)).await {
                    return RelayError::Client(e);
                }
                let _ = pair.client.shutdown().await;
                return end;
            }
            // As in `pump`: the client may wait before its next command,
            // not in the middle of one.
            let between_commands = self.cbuf.is_empty();
            let read = pair.client.read_buf(&mut self.cbuf);
            let read = if between_commands {
                read.await
            } else {
                match tokio::time::timeout(read_timeout, read).await {
                    Ok(r) => r,
                    Err(_) => return RelayError::ReadTimeout(read_timeout),
                }
            };
            match read {
                Ok(0) => return end,
                Ok(_) => {}
                Err(e) => return RelayError::Client(e),
            }
        }
    }
}

/// Sends `err` to a client the session is ending for, and closes; a client
/// that does not read is not waited for longer than `within`.
async fn fail_client(
    cw: &mut (impl AsyncWriteExt + Unpin),
    seq: u8,
    err: &ErrPacket,
    core: &Core,
    within: Duration,
) {
    let mut out = BytesMut::new();
    protocol::write_packet(&mut out, seq, &err.to_payload(core.login.capabilities));
    let _ = tokio::time::timeout(within, async {
        cw.write_all(&out).await?;
        cw.shutdown().await
    })
    .await;
}

/// Writes one packet to the client.
pub async fn write_packet(
    client: &mut ClientStream,
    seq: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(payload.len() + 4);
    protocol::write_packet(&mut out, seq, payload);
    client.write_all(&out).await?;
    client.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_packet(code: u16) -> BytesMut {
        let mut payload = vec![0xFF];
        payload.extend_from_slice(&code.to_le_bytes());
        payload.extend_from_slice(b"#70100Connection was killed");
        let mut out = BytesMut::new();
        protocol::write_packet(&mut out, 0, &payload);
        out
    }

    #[test]
    fn farewells() {
        let mut killed = err_packet(1927);
        let whole = killed.clone();
        match Farewell::of(&mut killed) {
            Farewell::Error { code, packet } => {
                assert_eq!(code, 1927);
                assert_eq!(packet, whole);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Farewell::of(&mut err_packet(1053)),
            Farewell::Shutdown
        ));
        assert!(matches!(
            Farewell::of(&mut BytesMut::new()),
            Farewell::Silent
        ));
        // A partial packet or an OK says nothing about why.
        let mut partial = err_packet(1927);
        partial.truncate(8);
        assert!(matches!(Farewell::of(&mut partial), Farewell::Silent));
        let mut ok = BytesMut::new();
        protocol::write_packet(&mut ok, 0, &[0, 0, 0, 2, 0, 0, 0]);
        assert!(matches!(Farewell::of(&mut ok), Farewell::Silent));
    }
}
