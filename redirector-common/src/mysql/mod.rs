//! The MySQL/MariaDB client/server protocol state machine, shared by the
//! userspace relay and the eBPF programs.
//!
//! Everything here is `no_std`, allocation free, recursion free, panic free
//! (no indexing that can fail, no unwrap, no division), with bounded loops and
//! small `#[repr(C)]` plain-integer state, so that it can later be compiled for
//! `bpfel-unknown-none` and stored in BPF maps (every bit pattern is valid).
//!
//! # Layers
//!
//! 1. [`Framer`] — turns one direction's byte stream, delivered in arbitrary
//!    chunks, into one [`PacketInfo`] per *logical* packet: the first
//!    fragment's length and sequence id plus the first up-to-[`PREFIX_LEN`]
//!    payload bytes. A payload of exactly `0xFFFFFF` bytes continues in the
//!    next packet; those continuation fragments belong to the same logical
//!    packet and produce no event. The event is produced as soon as the prefix
//!    is complete (the rest of the payload may still be on its way), and
//!    [`Framer::at_boundary`] tells whether the stream stands between packets.
//!    - [`Framer::next_event`]`(data) -> (consumed, Option<PacketInfo>)`:
//!      streaming primitive, at most one event per call, at most
//!      [`FRAMER_STEPS`] fragments walked per call, always consumes at least
//!      one byte of non-empty input. Loop on it (bounded) in eBPF.
//!    - [`Framer::feed`]`(data, &mut |p| ..) -> u32`: consumes the whole chunk,
//!      calls back once per logical packet; at most `data.len() / 4 + 1`
//!      events per call. Returns the number of events.
//!    - Callers that already hold whole packets skip the framer and build
//!      [`PacketInfo::from_payload`]`(seq, payload)`.
//! 2. [`Tracker`] — the per-session protocol state. Feed it client packets
//!    with [`Tracker::on_client_packet`] (returns a [`ClientPacket`]) and
//!    server packets with [`Tracker::on_server_packet`] (returns a
//!    [`ServerPacket`]), *in the real-time order in which the relay sees
//!    them* (a command must be fed before its response; this holds naturally
//!    when each direction is fed as soon as it is read). It keeps a FIFO of
//!    [`FIFO_CAP`] outstanding commands (pipelining), follows each response
//!    to its exact last packet (OK/ERR/EOF, result sets with and without
//!    CLIENT_DEPRECATE_EOF, MORE_RESULTS chains, CALL OUT parameters,
//!    PREPARE_OK + parameter/column definitions, binary rows, cursors and
//!    COM_STMT_FETCH, COM_FIELD_LIST, COM_STATISTICS, LOCAL INFILE, the
//!    COM_CHANGE_USER authentication exchange, MariaDB progress reports and
//!    MARIADB_CLIENT_CACHE_METADATA), and exposes:
//!    - counters: [`Tracker::commands_sent`], [`Tracker::commands_completed`],
//!      [`Tracker::errors`], [`Tracker::state_changes`] (sticky count of
//!      OK/EOF packets carrying SESSION_STATE_CHANGED);
//!    - [`Tracker::in_flight`] (a command awaits or is receiving its
//!      response), [`Tracker::idle`] (nothing in flight, not in LOCAL INFILE,
//!      not in an auth exchange, not lost), [`Tracker::lost_sync`] (sticky:
//!      the tracker cannot follow this session any more; see
//!      [`Tracker::lost_reason`]), [`Tracker::in_infile`],
//!      [`Tracker::in_auth`], [`Tracker::quit_sent`];
//!    - the last server status flags [`Tracker::status`] and
//!      [`Tracker::in_transaction`], last warnings, last error code;
//!    - [`Tracker::open_cursors`], [`Tracker::pending_long_data`] (small
//!      per-statement-id tables; overflow is sticky and reported as "some");
//!    - [`Tracker::last_prepare`] (statement id, columns, params of the last
//!      PREPARE_OK).
//! 3. [`Session`] — both framers plus the tracker, for callers that just push
//!    bytes: [`Session::feed_client`] / [`Session::feed_server`] (and the
//!    `_with` variants that also report each classified packet), and
//!    [`Session::idle`] = tracker idle and both streams between packets.
//! 4. Parsing helpers on a payload prefix: [`parse_ok`], [`parse_eof`],
//!    [`parse_err`], [`parse_prepare_ok`], [`read_lenenc`].
//!
//! # Semantics worth knowing
//!
//! - Effects of commands are applied in protocol order, when the command
//!   reaches the head of the FIFO (commands without a response —
//!   COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA, COM_QUIT — retire as soon as
//!   every earlier response is complete).
//! - Statement id `0xFFFFFFFF` ("the statement prepared last", MariaDB) is
//!   resolved to the last PREPARE_OK's id at that point.
//! - A cursor is counted open for a statement when its COM_STMT_EXECUTE
//!   response ends with CURSOR_EXISTS; it is closed by a COM_STMT_FETCH
//!   response ending with LAST_ROW_SENT, by COM_STMT_RESET (OK),
//!   COM_STMT_CLOSE, a successful re-execution of that statement, or
//!   COM_RESET_CONNECTION / COM_CHANGE_USER (OK).
//! - Long data is pending for a statement after COM_STMT_SEND_LONG_DATA and
//!   until a successful COM_STMT_EXECUTE, COM_STMT_RESET (OK) or
//!   COM_STMT_CLOSE of that statement, or a connection reset. A failed
//!   execute conservatively leaves it pending.
//! - An ERR with no command outstanding (e.g. the server reporting a killed
//!   connection) is counted and reported, but does not lose sync; any other
//!   unsolicited server packet does.
//! - After lost sync every packet is [`ClientPacket::Ignored`] /
//!   [`ServerPacket::Ignored`] and the state stays frozen.

mod consts;
mod framer;
mod kernel;
mod packets;
mod tracker;

pub(crate) use consts::PREFIX_MASK;
pub use consts::*;
pub use framer::*;
pub use kernel::*;
pub use packets::*;
#[allow(unused_imports)]
pub(crate) use packets::{byte_at, le16, le32};
pub use tracker::*;

// ---------------------------------------------------------------------------
// Both directions together.

/// Framers for both directions plus the tracker.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    pub tracker: Tracker,
    pub client: Framer,
    pub server: Framer,
}

impl Session {
    pub const fn new(capabilities: u64, initial_status: u16) -> Self {
        Session {
            tracker: Tracker::new(capabilities, initial_status),
            client: Framer::new(),
            server: Framer::new(),
        }
    }

    /// Bytes the client sent, in order.
    pub fn feed_client(&mut self, chunk: &[u8]) {
        self.feed_client_with(chunk, &mut |_, _| {});
    }

    /// Bytes the server sent, in order.
    pub fn feed_server(&mut self, chunk: &[u8]) {
        self.feed_server_with(chunk, &mut |_, _| {});
    }

    /// As [`Session::feed_client`], reporting each classified packet.
    pub fn feed_client_with<F: FnMut(&PacketInfo, ClientPacket)>(
        &mut self,
        chunk: &[u8],
        on_packet: &mut F,
    ) {
        let tracker = &mut self.tracker;
        self.client.feed(chunk, &mut |p: &PacketInfo| {
            let kind = tracker.on_client_packet(p);
            on_packet(p, kind);
        });
    }

    /// As [`Session::feed_server`], reporting each classified packet.
    pub fn feed_server_with<F: FnMut(&PacketInfo, ServerPacket)>(
        &mut self,
        chunk: &[u8],
        on_packet: &mut F,
    ) {
        let tracker = &mut self.tracker;
        self.server.feed(chunk, &mut |p: &PacketInfo| {
            let kind = tracker.on_server_packet(p);
            on_packet(p, kind);
        });
    }

    /// Tracker idle and both streams between packets.
    pub fn idle(&self) -> bool {
        self.tracker.idle() && self.client.at_boundary() && self.server.at_boundary()
    }
}

// The daemon reads these from BPF maps: plain integers only, every bit pattern valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Framer {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for Tracker {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for Session {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for PacketInfo {}

#[cfg(test)]
mod tests;
