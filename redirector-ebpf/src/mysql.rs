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

/// Number of payload bytes of each logical packet reported by the framer.
pub const PREFIX_LEN: usize = 32;
const PREFIX_MASK: usize = PREFIX_LEN - 1;
const _: () = assert!(PREFIX_LEN.is_power_of_two());
/// Largest packet payload; a payload of exactly this size continues in the next packet.
pub const MAX_PACKET: u32 = 0x00FF_FFFF;
/// Commands that can be outstanding at once (pipelining). A power of two.
pub const FIFO_CAP: usize = 16;
/// Statement ids remembered per table (open cursors, pending long data).
pub const ID_SET_CAP: usize = 4;
/// Fragments walked at most by one [`Framer::next_event`] call.
pub const FRAMER_STEPS: usize = 8;

/// Capability flags (the 64-bit value: MariaDB's extended capabilities are the upper half).
pub mod caps {
    pub const CLIENT_LOCAL_FILES: u64 = 1 << 7;
    pub const CLIENT_PROTOCOL_41: u64 = 1 << 9;
    pub const CLIENT_TRANSACTIONS: u64 = 1 << 13;
    pub const CLIENT_MULTI_STATEMENTS: u64 = 1 << 16;
    pub const CLIENT_MULTI_RESULTS: u64 = 1 << 17;
    pub const CLIENT_PS_MULTI_RESULTS: u64 = 1 << 18;
    pub const CLIENT_SESSION_TRACK: u64 = 1 << 23;
    pub const CLIENT_DEPRECATE_EOF: u64 = 1 << 24;
    pub const MARIADB_CLIENT_PROGRESS: u64 = 1 << 32;
    pub const MARIADB_CLIENT_STMT_BULK_OPERATIONS: u64 = 1 << 34;
    pub const MARIADB_CLIENT_EXTENDED_METADATA: u64 = 1 << 35;
    pub const MARIADB_CLIENT_CACHE_METADATA: u64 = 1 << 36;
}

/// Server status flags.
pub mod status {
    pub const IN_TRANS: u16 = 0x0001;
    pub const AUTOCOMMIT: u16 = 0x0002;
    pub const MORE_RESULTS_EXISTS: u16 = 0x0008;
    pub const CURSOR_EXISTS: u16 = 0x0040;
    pub const LAST_ROW_SENT: u16 = 0x0080;
    pub const PS_OUT_PARAMS: u16 = 0x1000;
    pub const IN_TRANS_READONLY: u16 = 0x2000;
    pub const SESSION_STATE_CHANGED: u16 = 0x4000;
}

/// Command bytes (first payload byte of a client command packet).
pub mod cmd {
    pub const SLEEP: u8 = 0x00;
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const CREATE_DB: u8 = 0x05;
    pub const DROP_DB: u8 = 0x06;
    pub const REFRESH: u8 = 0x07;
    pub const SHUTDOWN: u8 = 0x08;
    pub const STATISTICS: u8 = 0x09;
    pub const PROCESS_INFO: u8 = 0x0a;
    pub const CONNECT: u8 = 0x0b;
    pub const PROCESS_KILL: u8 = 0x0c;
    pub const DEBUG: u8 = 0x0d;
    pub const PING: u8 = 0x0e;
    pub const TIME: u8 = 0x0f;
    pub const DELAYED_INSERT: u8 = 0x10;
    pub const CHANGE_USER: u8 = 0x11;
    pub const BINLOG_DUMP: u8 = 0x12;
    pub const TABLE_DUMP: u8 = 0x13;
    pub const CONNECT_OUT: u8 = 0x14;
    pub const REGISTER_SLAVE: u8 = 0x15;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_RESET: u8 = 0x1a;
    pub const SET_OPTION: u8 = 0x1b;
    pub const STMT_FETCH: u8 = 0x1c;
    pub const DAEMON: u8 = 0x1d;
    pub const BINLOG_DUMP_GTID: u8 = 0x1e;
    pub const RESET_CONNECTION: u8 = 0x1f;
    /// MariaDB.
    pub const STMT_BULK_EXECUTE: u8 = 0xfa;
    /// MariaDB 10.2–10.5 COM_MULTI (removed later); not trackable.
    pub const MULTI: u8 = 0xfe;
}

/// Response states ([`Tracker::response_state`]).
pub mod resp {
    /// No command outstanding.
    pub const IDLE: u8 = 0;
    /// Awaiting the first packet of a (next) result: OK, ERR, 0xFB, or a column count.
    pub const FIRST: u8 = 1;
    /// Column definitions of a result set.
    pub const COLUMNS: u8 = 2;
    /// The EOF after column definitions (no CLIENT_DEPRECATE_EOF).
    pub const COLUMNS_EOF: u8 = 3;
    /// Rows, until EOF / OK(0xFE) / ERR.
    pub const ROWS: u8 = 4;
    /// COM_FIELD_LIST: column definitions until EOF.
    pub const FIELDS: u8 = 5;
    /// A single OK / ERR / EOF packet.
    pub const SIMPLE: u8 = 6;
    /// COM_STATISTICS: a single string packet.
    pub const STATISTICS: u8 = 7;
    /// COM_STMT_PREPARE: awaiting PREPARE_OK or ERR.
    pub const PREPARE_FIRST: u8 = 8;
    pub const PREPARE_PARAMS: u8 = 9;
    pub const PREPARE_PARAMS_EOF: u8 = 10;
    pub const PREPARE_COLUMNS: u8 = 11;
    pub const PREPARE_COLUMNS_EOF: u8 = 12;
    /// COM_CHANGE_USER authentication exchange, until OK or ERR.
    pub const AUTH: u8 = 13;
}

/// Why the tracker lost sync ([`Tracker::lost_reason`]).
pub mod lost {
    pub const NONE: u8 = 0;
    /// More than [`super::FIFO_CAP`] commands outstanding.
    pub const FIFO_OVERFLOW: u8 = 1;
    /// A command whose response cannot be framed (binlog dump, COM_MULTI).
    pub const UNTRACKABLE_COMMAND: u8 = 2;
    /// A server packet (other than ERR) with no command outstanding.
    pub const UNSOLICITED: u8 = 3;
    /// A server packet that cannot occur in the current state.
    pub const MALFORMED: u8 = 4;
    /// The kernel could not follow every packet of a segment (too many
    /// packets needing the full state machine in one skb).
    pub const BUDGET: u8 = 5;
}

// ---------------------------------------------------------------------------
// Little helpers (panic free).

#[inline(always)]
fn byte_at(buf: &[u8], pos: usize) -> Option<u8> {
    buf.get(pos).copied()
}

#[inline(always)]
fn le16(buf: &[u8], pos: usize) -> Option<u16> {
    let a = byte_at(buf, pos)?;
    let b = byte_at(buf, pos.wrapping_add(1))?;
    Some(u16::from_le_bytes([a, b]))
}

#[inline(always)]
fn le32(buf: &[u8], pos: usize) -> Option<u32> {
    let a = byte_at(buf, pos)?;
    let b = byte_at(buf, pos.wrapping_add(1))?;
    let c = byte_at(buf, pos.wrapping_add(2))?;
    let d = byte_at(buf, pos.wrapping_add(3))?;
    Some(u32::from_le_bytes([a, b, c, d]))
}

/// Reads a length-encoded integer at `pos`; returns the value and the position after it.
/// `0xFB` (NULL) and `0xFF` are not integers and give `None`, as does a truncated buffer.
pub fn read_lenenc(buf: &[u8], pos: usize) -> Option<(u64, usize)> {
    let first = byte_at(buf, pos)?;
    let n: usize = match first {
        0..=0xFA => return Some((u64::from(first), pos.wrapping_add(1))),
        0xFC => 2,
        0xFD => 3,
        0xFE => 8,
        _ => return None,
    };
    let mut v: u64 = 0;
    let mut i: usize = 0;
    while i < n {
        let b = byte_at(buf, pos.wrapping_add(1).wrapping_add(i))?;
        v |= u64::from(b) << (8 * i);
        i += 1;
    }
    Some((v, pos.wrapping_add(1).wrapping_add(n)))
}

// ---------------------------------------------------------------------------
// Packet parsing helpers.

/// The fixed part of an OK packet (header 0x00, or 0xFE as a result-set terminator).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OkInfo {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
}

/// Parses an OK packet from (a prefix of) its payload. Needs at most 23 bytes.
/// Without CLIENT_PROTOCOL_41 the status is present only with
/// CLIENT_TRANSACTIONS and there are no warnings.
pub fn parse_ok(payload: &[u8], capabilities: u64) -> Option<OkInfo> {
    let h = byte_at(payload, 0)?;
    if h != 0x00 && h != 0xFE {
        return None;
    }
    let (affected_rows, p) = read_lenenc(payload, 1)?;
    let (last_insert_id, p) = read_lenenc(payload, p)?;
    let mut ok = OkInfo {
        affected_rows,
        last_insert_id,
        status: 0,
        warnings: 0,
    };
    if capabilities & caps::CLIENT_PROTOCOL_41 != 0 {
        ok.status = le16(payload, p)?;
        ok.warnings = le16(payload, p.wrapping_add(2))?;
    } else if capabilities & caps::CLIENT_TRANSACTIONS != 0 {
        ok.status = le16(payload, p)?;
    }
    Some(ok)
}

/// An EOF packet (0xFE, payload < 9 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EofInfo {
    pub warnings: u16,
    pub status: u16,
}

/// Parses an EOF packet: `0xFE warnings:u16 status:u16` (protocol 4.1; an
/// old 1-byte EOF yields zeros).
pub fn parse_eof(payload: &[u8]) -> Option<EofInfo> {
    if byte_at(payload, 0)? != 0xFE {
        return None;
    }
    Some(EofInfo {
        warnings: le16(payload, 1).unwrap_or(0),
        status: le16(payload, 3).unwrap_or(0),
    })
}

/// An ERR packet's code and SQLSTATE.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrInfo {
    pub code: u16,
    /// 1 when `sqlstate` is present (protocol 4.1 and not a progress report).
    pub has_sqlstate: u8,
    pub sqlstate: [u8; 5],
}

impl ErrInfo {
    /// MariaDB progress reports travel as ERR packets with code 0xFFFF.
    pub fn is_progress(&self) -> bool {
        self.code == 0xFFFF
    }
}

/// Parses an ERR packet: `0xFF code:u16 ['#' sqlstate:5] message`.
pub fn parse_err(payload: &[u8]) -> Option<ErrInfo> {
    if byte_at(payload, 0)? != 0xFF {
        return None;
    }
    let code = le16(payload, 1)?;
    let mut e = ErrInfo {
        code,
        has_sqlstate: 0,
        sqlstate: [0; 5],
    };
    if code != 0xFFFF && byte_at(payload, 3) == Some(b'#') {
        let mut i = 0usize;
        let mut complete = true;
        while i < 5 {
            match (byte_at(payload, 4 + i), e.sqlstate.get_mut(i)) {
                (Some(b), Some(slot)) => *slot = b,
                _ => complete = false,
            }
            i += 1;
        }
        e.has_sqlstate = u8::from(complete);
    }
    Some(e)
}

/// COM_STMT_PREPARE_OK.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrepareOk {
    pub stmt_id: u32,
    pub num_columns: u16,
    pub num_params: u16,
    pub warnings: u16,
    pub _pad: u16,
}

/// Parses `0x00 stmt_id:u32 num_columns:u16 num_params:u16 0x00 warnings:u16`.
pub fn parse_prepare_ok(payload: &[u8]) -> Option<PrepareOk> {
    if byte_at(payload, 0)? != 0x00 {
        return None;
    }
    Some(PrepareOk {
        stmt_id: le32(payload, 1)?,
        num_columns: le16(payload, 5)?,
        num_params: le16(payload, 7)?,
        warnings: le16(payload, 10).unwrap_or(0),
        _pad: 0,
    })
}

// ---------------------------------------------------------------------------
// Framing.

/// One logical packet as seen by the framer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    /// Payload length of the first fragment (0..=0xFFFFFF). `MAX_PACKET`
    /// means the logical packet continues in further fragments (and so is at
    /// least 16 MiB long).
    pub len: u32,
    /// Sequence id of the first fragment.
    pub seq: u8,
    /// Valid bytes in `prefix`: `min(len, PREFIX_LEN)`.
    pub prefix_len: u8,
    pub _pad: [u8; 2],
    /// The first payload bytes.
    pub prefix: [u8; PREFIX_LEN],
}

impl Default for PacketInfo {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl PacketInfo {
    pub const EMPTY: PacketInfo = PacketInfo {
        len: 0,
        seq: 0,
        prefix_len: 0,
        _pad: [0; 2],
        prefix: [0; PREFIX_LEN],
    };

    /// For callers holding a whole (possibly reassembled, possibly > 16 MiB)
    /// payload.
    pub fn from_payload(seq: u8, payload: &[u8]) -> Self {
        let mut p = Self::EMPTY;
        p.seq = seq;
        p.len = if payload.len() >= MAX_PACKET as usize {
            MAX_PACKET
        } else {
            payload.len() as u32
        };
        let mut i = 0usize;
        while i < PREFIX_LEN {
            match (payload.get(i), p.prefix.get_mut(i)) {
                (Some(&b), Some(slot)) => *slot = b,
                _ => break,
            }
            i += 1;
        }
        p.prefix_len = i as u8;
        p
    }

    /// The valid prefix bytes.
    pub fn prefix(&self) -> &[u8] {
        self.prefix
            .get(..self.prefix_len as usize)
            .unwrap_or(&self.prefix)
    }

    /// First payload byte, `None` for an empty packet.
    pub fn first(&self) -> Option<u8> {
        byte_at(self.prefix(), 0)
    }

    /// True when the logical packet continues in further fragments.
    pub fn continues(&self) -> bool {
        self.len == MAX_PACKET
    }
}

/// Splits one direction of a connection into logical packets. See the module docs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framer {
    /// Payload length of the current fragment.
    frag_len: u32,
    /// Payload bytes of the current fragment already consumed.
    frag_pos: u32,
    /// Logical packets reported so far.
    packets: u32,
    hdr: [u8; 4],
    /// Header bytes collected for the current fragment (4 = in payload).
    hdr_len: u8,
    /// The current fragment continues a logical packet (no event for it).
    cont: u8,
    /// The next fragment will continue the current logical packet.
    next_cont: u8,
    /// The current logical packet has been reported.
    emitted: u8,
    prefix: [u8; PREFIX_LEN],
}

impl Default for Framer {
    fn default() -> Self {
        Self::new()
    }
}

impl Framer {
    pub const fn new() -> Self {
        Framer {
            frag_len: 0,
            frag_pos: 0,
            packets: 0,
            hdr: [0; 4],
            hdr_len: 0,
            cont: 0,
            next_cont: 0,
            emitted: 0,
            prefix: [0; PREFIX_LEN],
        }
    }

    /// True when the stream stands exactly between two logical packets.
    pub fn at_boundary(&self) -> bool {
        self.hdr_len == 0 && self.next_cont == 0
    }

    /// Logical packets reported so far.
    pub fn packets(&self) -> u32 {
        self.packets
    }

    /// Payload bytes still expected for the current fragment (0 between fragments).
    pub fn fragment_remaining(&self) -> u32 {
        if self.hdr_len == 4 {
            self.frag_len.saturating_sub(self.frag_pos)
        } else {
            0
        }
    }

    /// Skips up to `n` payload bytes of a packet whose prefix was already
    /// reported. Returns the bytes skipped (0 when not inside such a payload).
    pub fn skip_payload_bytes(&mut self, n: u32) -> u32 {
        if self.hdr_len != 4 || self.emitted == 0 {
            return 0;
        }
        let rest = self.frag_len.saturating_sub(self.frag_pos);
        let k = if rest < n { rest } else { n };
        self.frag_pos = self.frag_pos.saturating_add(k);
        if self.frag_pos >= self.frag_len {
            self.hdr_len = 0;
        }
        k
    }

    /// At a boundary, passes over a whole packet (`header`, payload shorter
    /// than 16 MiB) that needs no prefix, of which `available` bytes (header
    /// included) are at hand; the rest is skipped later by
    /// [`Framer::skip_payload_bytes`]. Returns the bytes consumed.
    pub fn skip_packet(&mut self, header: [u8; 4], available: u32) -> u32 {
        let len = u32::from_le_bytes([header[0], header[1], header[2], 0]);
        self.packets = self.packets.wrapping_add(1);
        let total = len.saturating_add(4);
        if available >= total {
            return total;
        }
        self.hdr = header;
        self.hdr_len = 4;
        self.frag_len = len;
        self.frag_pos = available.saturating_sub(4);
        self.cont = 0;
        self.next_cont = 0;
        self.emitted = 1;
        available
    }

    fn event(&self) -> PacketInfo {
        let want = if self.frag_len < PREFIX_LEN as u32 {
            self.frag_len as usize
        } else {
            PREFIX_LEN
        };
        // Only the valid bytes: stale ones from earlier packets would make
        // equal packets compare unequal.
        let mut prefix = [0u8; PREFIX_LEN];
        let mut i = 0usize;
        while i < want && i < PREFIX_LEN {
            prefix[i & PREFIX_MASK] = self.prefix[i & PREFIX_MASK];
            i += 1;
        }
        PacketInfo {
            len: self.frag_len,
            seq: self.hdr[3],
            prefix_len: want as u8,
            _pad: [0; 2],
            prefix,
        }
    }

    /// Consumes bytes from `data` until one logical packet's prefix is
    /// complete or `data` (or the step budget) is exhausted. Returns the
    /// number of bytes consumed (≥ 1 when `data` is non-empty) and the event,
    /// if any. Once an event is produced, the remainder of that fragment
    /// present in `data` is consumed too.
    pub fn next_event(&mut self, data: &[u8]) -> (usize, Option<PacketInfo>) {
        let mut used: usize = 0;
        let mut step = 0usize;
        while step < FRAMER_STEPS {
            step += 1;
            if self.hdr_len < 4 {
                let mut i = self.hdr_len as usize;
                while i < 4 {
                    let Some(b) = byte_at(data, used) else { break };
                    // Constant indices: LLVM drops a mask it can prove
                    // redundant, and the verifier then cannot bound `i`.
                    match i {
                        0 => self.hdr[0] = b,
                        1 => self.hdr[1] = b,
                        2 => self.hdr[2] = b,
                        _ => self.hdr[3] = b,
                    }
                    i += 1;
                    used += 1;
                }
                self.hdr_len = i as u8;
                if i < 4 {
                    return (used, None);
                }
                self.frag_len = u32::from_le_bytes([self.hdr[0], self.hdr[1], self.hdr[2], 0]);
                self.frag_pos = 0;
                self.cont = self.next_cont;
                self.next_cont = u8::from(self.frag_len == MAX_PACKET);
                // Continuation fragments are never reported.
                self.emitted = self.cont;
            }
            if self.emitted == 0 {
                let want = if self.frag_len < PREFIX_LEN as u32 {
                    self.frag_len
                } else {
                    PREFIX_LEN as u32
                };
                while self.frag_pos < want {
                    let Some(b) = byte_at(data, used) else { break };
                    // A volatile read keeps LLVM from turning the masked
                    // index into a running pointer the verifier cannot bound.
                    // SAFETY: reading our own field.
                    let pos = unsafe { core::ptr::read_volatile(&raw const self.frag_pos) };
                    self.prefix[pos as usize & PREFIX_MASK] = b;
                    self.frag_pos += 1;
                    used += 1;
                }
                if self.frag_pos < want {
                    return (used, None);
                }
                self.emitted = 1;
                self.packets = self.packets.wrapping_add(1);
                let ev = self.event();
                self.skip_payload(data, &mut used);
                return (used, Some(ev));
            }
            if !self.skip_payload(data, &mut used) {
                return (used, None);
            }
        }
        (used, None)
    }

    /// Skips payload bytes of the current fragment; true when it is finished.
    fn skip_payload(&mut self, data: &[u8], used: &mut usize) -> bool {
        let rest = self.frag_len.saturating_sub(self.frag_pos) as usize;
        let avail = data.len().saturating_sub(*used);
        let n = if rest < avail { rest } else { avail };
        self.frag_pos = self.frag_pos.saturating_add(n as u32);
        *used = used.saturating_add(n);
        if self.frag_pos >= self.frag_len {
            self.hdr_len = 0;
            true
        } else {
            false
        }
    }

    /// Consumes the whole chunk, calling `on_packet` once per logical packet
    /// whose prefix completes in it (at most `data.len() / 4 + 1` calls).
    /// Returns the number of packets reported.
    pub fn feed<F: FnMut(&PacketInfo)>(&mut self, data: &[u8], on_packet: &mut F) -> u32 {
        let mut rest = data;
        let mut n = 0u32;
        // Each round consumes at least one byte, so this ends.
        while !rest.is_empty() {
            let (used, ev) = self.next_event(rest);
            if let Some(p) = ev {
                n = n.wrapping_add(1);
                on_packet(&p);
            }
            if used == 0 {
                break;
            }
            rest = rest.get(used..).unwrap_or(&[]);
        }
        n
    }
}

// ---------------------------------------------------------------------------
// Small statement-id sets.

/// A bounded set of statement ids; overflow is sticky until `clear`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdSet {
    ids: [u32; ID_SET_CAP],
    len: u8,
    overflow: u8,
    _pad: [u8; 2],
}

// Indices are masked (the capacity is a power of two) rather than checked
// with `get`: the BPF verifier follows a mask, while LLVM may move a bounds
// check onto a copy of the register that the verifier does not connect.
const ID_MASK: usize = ID_SET_CAP - 1;
const _: () = assert!(ID_SET_CAP.is_power_of_two());

impl IdSet {
    pub fn contains(&self, id: u32) -> bool {
        let mut i = 0usize;
        while i < ID_SET_CAP && i < self.len as usize {
            if self.ids[i & ID_MASK] == id {
                return true;
            }
            i += 1;
        }
        false
    }

    fn insert(&mut self, id: u32) {
        if self.contains(id) {
            return;
        }
        let len = self.len as usize;
        if len < ID_SET_CAP {
            self.ids[len & ID_MASK] = id;
            self.len += 1;
        } else {
            self.overflow = 1;
        }
    }

    fn remove(&mut self, id: u32) {
        let len = self.len as usize;
        if len == 0 || len > ID_SET_CAP {
            return;
        }
        let last = (len - 1) & ID_MASK;
        let mut i = 0usize;
        while i < ID_SET_CAP && i < len {
            if self.ids[i & ID_MASK] == id {
                self.ids[i & ID_MASK] = self.ids[last];
                self.len = last as u8;
                return;
            }
            i += 1;
        }
    }

    fn clear(&mut self) {
        *self = IdSet::default();
    }

    /// Ids held; an overflowed set counts as one more than it holds.
    pub fn count(&self) -> u32 {
        u32::from(self.len) + u32::from(self.overflow)
    }

    pub fn overflowed(&self) -> bool {
        self.overflow != 0
    }
}

// ---------------------------------------------------------------------------
// The tracker.

/// How the tracker classified a client packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientPacket {
    /// A command (its first byte; 0x00 for an empty packet).
    Command(u8),
    /// LOCAL INFILE file data.
    InfileData,
    /// The empty packet ending LOCAL INFILE data.
    InfileEnd,
    /// Authentication data during COM_CHANGE_USER.
    AuthData,
    /// Sync lost: not interpreted.
    Ignored,
}

/// How the tracker classified a server packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerPacket {
    /// OK (0x00, or 0xFE terminating a result set under CLIENT_DEPRECATE_EOF).
    Ok,
    /// ERR.
    Err,
    /// MariaDB progress report (ERR with code 0xFFFF): not a response.
    Progress,
    /// EOF (0xFE, < 9 bytes).
    Eof,
    /// LOCAL INFILE request (0xFB).
    InfileRequest,
    /// Result-set column count.
    ColumnCount,
    /// Column (or parameter) definition.
    ColumnDef,
    /// Result-set row (text or binary).
    Row,
    /// COM_STMT_PREPARE_OK.
    PrepareOk,
    /// COM_STATISTICS string.
    Text,
    /// Auth switch request (0xFE) during COM_CHANGE_USER.
    AuthSwitch,
    /// Other authentication data (0x01 …) during COM_CHANGE_USER.
    AuthData,
    /// A packet that cannot be followed: sync is now lost.
    Unexpected,
    /// Sync was already lost: not interpreted.
    Ignored,
}

// resp_flags bits.
const RF_CURSOR_OPENED: u8 = 1;
const RF_LAST_ROW: u8 = 2;

// flags bits.
const F_LOST: u8 = 1;
const F_INFILE: u8 = 2;
const F_QUIT: u8 = 4;

/// Per-session protocol state. See the module docs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracker {
    capabilities: u64,
    /// Definitions left in the current metadata block.
    remaining: u64,
    commands_sent: u32,
    commands_completed: u32,
    state_changes: u32,
    errors: u32,
    last_prepare: PrepareOk,
    fifo_stmt: [u32; FIFO_CAP],
    cursors: IdSet,
    long_data: IdSet,
    /// Column definitions still to come after the parameters of a PREPARE response.
    prep_columns: u16,
    last_status: u16,
    last_warnings: u16,
    last_error: u16,
    fifo_cmd: [u8; FIFO_CAP],
    fifo_head: u8,
    fifo_len: u8,
    resp: u8,
    resp_flags: u8,
    flags: u8,
    lost_reason: u8,
    _pad: [u8; 2],
}

impl Tracker {
    /// A tracker for a session in the command phase, with the negotiated
    /// capabilities (64-bit, MariaDB extended ones in the upper half) and the
    /// server status known from the login's OK packet.
    pub const fn new(capabilities: u64, initial_status: u16) -> Self {
        Tracker {
            capabilities,
            remaining: 0,
            commands_sent: 0,
            commands_completed: 0,
            state_changes: 0,
            errors: 0,
            last_prepare: PrepareOk {
                stmt_id: 0,
                num_columns: 0,
                num_params: 0,
                warnings: 0,
                _pad: 0,
            },
            fifo_stmt: [0; FIFO_CAP],
            cursors: IdSet {
                ids: [0; ID_SET_CAP],
                len: 0,
                overflow: 0,
                _pad: [0; 2],
            },
            long_data: IdSet {
                ids: [0; ID_SET_CAP],
                len: 0,
                overflow: 0,
                _pad: [0; 2],
            },
            prep_columns: 0,
            last_status: initial_status,
            last_warnings: 0,
            last_error: 0,
            fifo_cmd: [0; FIFO_CAP],
            fifo_head: 0,
            fifo_len: 0,
            resp: resp::IDLE,
            resp_flags: 0,
            flags: 0,
            lost_reason: lost::NONE,
            _pad: [0; 2],
        }
    }

    // ----- read-only view -------------------------------------------------

    pub fn capabilities(&self) -> u64 {
        self.capabilities
    }
    /// Commands seen (including those without a response).
    pub fn commands_sent(&self) -> u32 {
        self.commands_sent
    }
    /// Commands whose response is complete (or that need none) and whose effects are applied.
    pub fn commands_completed(&self) -> u32 {
        self.commands_completed
    }
    /// Responses that ended with ERR (plus unsolicited ERRs).
    pub fn errors(&self) -> u32 {
        self.errors
    }
    /// Code of the last ERR seen.
    pub fn last_error(&self) -> u16 {
        self.last_error
    }
    /// Sticky count of OK/EOF packets carrying SESSION_STATE_CHANGED.
    pub fn state_changes(&self) -> u32 {
        self.state_changes
    }
    /// Last server status flags seen (OK / EOF packets).
    pub fn status(&self) -> u16 {
        self.last_status
    }
    pub fn warnings(&self) -> u16 {
        self.last_warnings
    }
    /// IN_TRANS (or IN_TRANS_READONLY) in the last status.
    pub fn in_transaction(&self) -> bool {
        self.last_status & (status::IN_TRANS | status::IN_TRANS_READONLY) != 0
    }
    /// Commands awaiting (or receiving) their response.
    pub fn outstanding(&self) -> u32 {
        u32::from(self.fifo_len)
    }
    /// A response is expected or partially received.
    pub fn in_flight(&self) -> bool {
        self.fifo_len != 0
    }
    /// The current response state (see [`resp`]).
    pub fn response_state(&self) -> u8 {
        self.resp
    }
    /// The command at the head of the FIFO (whose response comes next).
    pub fn head_command(&self) -> Option<u8> {
        if self.fifo_len == 0 {
            None
        } else {
            self.fifo_cmd
                .get(self.fifo_head as usize & (FIFO_CAP - 1))
                .copied()
        }
    }
    /// The client is sending LOCAL INFILE data.
    pub fn in_infile(&self) -> bool {
        self.flags & F_INFILE != 0
    }
    /// A COM_CHANGE_USER authentication exchange is under way.
    pub fn in_auth(&self) -> bool {
        self.resp == resp::AUTH
    }
    /// The client sent COM_QUIT.
    pub fn quit_sent(&self) -> bool {
        self.flags & F_QUIT != 0
    }
    /// Sticky: the tracker no longer follows this session.
    pub fn lost_sync(&self) -> bool {
        self.flags & F_LOST != 0
    }
    /// See [`lost`].
    pub fn lost_reason(&self) -> u8 {
        self.lost_reason
    }
    /// Statements with an open cursor (an overflowed table counts one extra).
    pub fn open_cursors(&self) -> u32 {
        self.cursors.count()
    }
    pub fn cursor_open(&self, stmt_id: u32) -> bool {
        self.cursors.contains(stmt_id)
    }
    /// Some statement has long data sent but not yet consumed.
    pub fn pending_long_data(&self) -> bool {
        self.long_data.count() != 0
    }
    /// The last COM_STMT_PREPARE_OK (zeros before the first one).
    pub fn last_prepare(&self) -> PrepareOk {
        self.last_prepare
    }
    /// Nothing in flight, no LOCAL INFILE, no auth exchange, sync not lost.
    pub fn idle(&self) -> bool {
        self.fifo_len == 0 && self.flags & (F_LOST | F_INFILE) == 0
    }

    // ----- internals ------------------------------------------------------

    fn deprecate_eof(&self) -> bool {
        self.capabilities & caps::CLIENT_DEPRECATE_EOF != 0
    }

    fn lose(&mut self, reason: u8) {
        if self.flags & F_LOST == 0 {
            self.flags |= F_LOST;
            self.lost_reason = reason;
        }
    }

    fn head_stmt(&self) -> u32 {
        let raw = self
            .fifo_stmt
            .get(self.fifo_head as usize & (FIFO_CAP - 1))
            .copied()
            .unwrap_or(0);
        // MariaDB: -1 means the statement prepared last.
        if raw == u32::MAX {
            self.last_prepare.stmt_id
        } else {
            raw
        }
    }

    fn initial_state(command: u8) -> u8 {
        match command {
            cmd::QUERY | cmd::PROCESS_INFO | cmd::STMT_EXECUTE | cmd::STMT_BULK_EXECUTE => {
                resp::FIRST
            }
            cmd::STMT_PREPARE => resp::PREPARE_FIRST,
            cmd::FIELD_LIST => resp::FIELDS,
            cmd::STATISTICS => resp::STATISTICS,
            cmd::CHANGE_USER => resp::AUTH,
            cmd::STMT_FETCH => resp::ROWS,
            _ => resp::SIMPLE,
        }
    }

    fn no_response(command: u8) -> bool {
        matches!(
            command,
            cmd::QUIT | cmd::STMT_CLOSE | cmd::STMT_SEND_LONG_DATA
        )
    }

    /// Sets up the head's response state, retiring commands that need no
    /// response (applying their effects in order).
    fn advance(&mut self) {
        let mut i = 0usize;
        while i < FIFO_CAP {
            i += 1;
            let Some(command) = self.head_command() else {
                self.resp = resp::IDLE;
                return;
            };
            if !Self::no_response(command) {
                self.resp = Self::initial_state(command);
                self.resp_flags = 0;
                self.remaining = 0;
                return;
            }
            let id = self.head_stmt();
            match command {
                cmd::STMT_SEND_LONG_DATA => self.long_data.insert(id),
                cmd::STMT_CLOSE => {
                    self.cursors.remove(id);
                    self.long_data.remove(id);
                }
                _ => self.flags |= F_QUIT,
            }
            self.pop();
        }
        self.resp = resp::IDLE;
    }

    fn pop(&mut self) {
        if self.fifo_len == 0 {
            return;
        }
        self.fifo_head = (self.fifo_head.wrapping_add(1)) & (FIFO_CAP as u8 - 1);
        self.fifo_len -= 1;
        self.commands_completed = self.commands_completed.wrapping_add(1);
    }

    /// The head's response is complete: apply its effects and move on.
    fn complete(&mut self, success: bool) {
        let command = self.head_command().unwrap_or(cmd::SLEEP);
        let id = self.head_stmt();
        if success {
            match command {
                cmd::STMT_EXECUTE | cmd::STMT_BULK_EXECUTE => {
                    self.long_data.remove(id);
                    // Re-executing closes the statement's previous cursor.
                    self.cursors.remove(id);
                    if self.resp_flags & RF_CURSOR_OPENED != 0 {
                        self.cursors.insert(id);
                    }
                }
                cmd::STMT_RESET => {
                    self.cursors.remove(id);
                    self.long_data.remove(id);
                }
                cmd::RESET_CONNECTION | cmd::CHANGE_USER => {
                    self.cursors.clear();
                    self.long_data.clear();
                }
                _ => {}
            }
        }
        if command == cmd::STMT_FETCH && self.resp_flags & RF_LAST_ROW != 0 {
            self.cursors.remove(id);
        }
        self.pop();
        self.advance();
    }

    fn note_status(&mut self, st: u16, warnings: u16) {
        self.last_status = st;
        self.last_warnings = warnings;
        if st & status::SESSION_STATE_CHANGED != 0 {
            self.state_changes = self.state_changes.wrapping_add(1);
        }
    }

    /// Reads status from an OK packet; false if malformed.
    fn take_ok(&mut self, p: &PacketInfo) -> Option<u16> {
        let ok = parse_ok(p.prefix(), self.capabilities)?;
        self.note_status(ok.status, ok.warnings);
        Some(ok.status)
    }

    fn take_eof(&mut self, p: &PacketInfo) -> Option<u16> {
        let eof = parse_eof(p.prefix())?;
        self.note_status(eof.status, eof.warnings);
        Some(eof.status)
    }

    /// 0xFE packet ending rows / definitions: EOF, or OK under DEPRECATE_EOF.
    fn is_terminator(&self, p: &PacketInfo) -> bool {
        p.first() == Some(0xFE)
            && if self.deprecate_eof() {
                p.len < MAX_PACKET
            } else {
                p.len < 9
            }
    }

    /// Status of a terminator (EOF or OK-0xFE); `None` when malformed.
    fn take_terminator(&mut self, p: &PacketInfo) -> Option<(u16, ServerPacket)> {
        if self.deprecate_eof() {
            self.take_ok(p).map(|s| (s, ServerPacket::Ok))
        } else {
            self.take_eof(p).map(|s| (s, ServerPacket::Eof))
        }
    }

    fn take_err(&mut self, p: &PacketInfo) -> ServerPacket {
        match parse_err(p.prefix()) {
            Some(e) if e.is_progress() => ServerPacket::Progress,
            Some(e) => {
                self.errors = self.errors.wrapping_add(1);
                self.last_error = e.code;
                self.complete(false);
                ServerPacket::Err
            }
            None => self.unexpected(),
        }
    }

    fn unexpected(&mut self) -> ServerPacket {
        self.lose(lost::MALFORMED);
        ServerPacket::Unexpected
    }

    /// The end of a result set's rows (or of its metadata when a cursor opened).
    fn end_of_result(&mut self, st: u16, kind: ServerPacket) -> ServerPacket {
        let command = self.head_command().unwrap_or(cmd::SLEEP);
        if st & status::CURSOR_EXISTS != 0
            && matches!(command, cmd::STMT_EXECUTE | cmd::STMT_BULK_EXECUTE)
        {
            self.resp_flags |= RF_CURSOR_OPENED;
        }
        if command == cmd::STMT_FETCH && st & status::LAST_ROW_SENT != 0 {
            self.resp_flags |= RF_LAST_ROW;
        }
        // Older MariaDB omit MORE_RESULTS on the OUT-parameter result set of a
        // CALL (MDEV-4604), yet the final OK follows.
        if st & (status::MORE_RESULTS_EXISTS | status::PS_OUT_PARAMS) != 0 {
            self.resp = resp::FIRST;
        } else {
            self.complete(true);
        }
        kind
    }

    fn after_columns(&mut self) {
        self.resp = if self.deprecate_eof() {
            resp::ROWS
        } else {
            resp::COLUMNS_EOF
        };
    }

    fn prepare_columns_or_done(&mut self) {
        if self.prep_columns > 0 {
            self.remaining = u64::from(self.prep_columns);
            self.prep_columns = 0;
            self.resp = resp::PREPARE_COLUMNS;
        } else {
            self.complete(true);
        }
    }

    // ----- inputs ----------------------------------------------------------

    /// A logical packet from the client.
    pub fn on_client_packet(&mut self, p: &PacketInfo) -> ClientPacket {
        if self.lost_sync() {
            return ClientPacket::Ignored;
        }
        if self.in_infile() {
            if p.len == 0 {
                self.flags &= !F_INFILE;
                return ClientPacket::InfileEnd;
            }
            return ClientPacket::InfileData;
        }
        if self.resp == resp::AUTH {
            return ClientPacket::AuthData;
        }
        // An empty packet is dispatched by the server as COM_SLEEP (an ERR reply).
        let command = p.first().unwrap_or(cmd::SLEEP);
        self.commands_sent = self.commands_sent.wrapping_add(1);
        if matches!(
            command,
            cmd::BINLOG_DUMP | cmd::BINLOG_DUMP_GTID | cmd::TABLE_DUMP | cmd::MULTI
        ) {
            self.lose(lost::UNTRACKABLE_COMMAND);
            return ClientPacket::Command(command);
        }
        if self.fifo_len as usize >= FIFO_CAP {
            self.lose(lost::FIFO_OVERFLOW);
            return ClientPacket::Command(command);
        }
        let stmt = match command {
            cmd::STMT_EXECUTE
            | cmd::STMT_BULK_EXECUTE
            | cmd::STMT_FETCH
            | cmd::STMT_RESET
            | cmd::STMT_CLOSE
            | cmd::STMT_SEND_LONG_DATA => le32(p.prefix(), 1).unwrap_or(0),
            _ => 0,
        };
        let slot = (self.fifo_head as usize + self.fifo_len as usize) & (FIFO_CAP - 1);
        if let Some(c) = self.fifo_cmd.get_mut(slot) {
            *c = command;
        }
        if let Some(s) = self.fifo_stmt.get_mut(slot) {
            *s = stmt;
        }
        self.fifo_len += 1;
        if self.fifo_len == 1 {
            self.advance();
        }
        ClientPacket::Command(command)
    }

    /// The part of [`Tracker::on_server_packet`] that needs only the first
    /// payload byte and the length: a row in a result set, or a column
    /// definition that is not the last. `None` when the packet needs the
    /// whole prefix. (The kernel walks long result sets with this alone.)
    pub fn on_server_packet_head(&mut self, first: u8, len: u32) -> Option<ServerPacket> {
        if self.lost_sync() || self.fifo_len == 0 || first == 0xFF || len >= MAX_PACKET {
            return None;
        }
        match self.resp {
            resp::ROWS => {
                let terminator = first == 0xFE && (self.deprecate_eof() || len < 9);
                (!terminator).then_some(ServerPacket::Row)
            }
            resp::COLUMNS => {
                self.remaining = self.remaining.saturating_sub(1);
                if self.remaining == 0 {
                    self.after_columns();
                }
                Some(ServerPacket::ColumnDef)
            }
            _ => None,
        }
    }

    /// Stops following the session (the kernel could not see every packet).
    pub fn give_up(&mut self) {
        self.lose(lost::BUDGET);
    }

    /// A logical packet from the server.
    pub fn on_server_packet(&mut self, p: &PacketInfo) -> ServerPacket {
        if self.lost_sync() {
            return ServerPacket::Ignored;
        }
        if let Some(first) = p.first() {
            if let Some(kind) = self.on_server_packet_head(first, p.len) {
                return kind;
            }
        }
        let first = p.first();
        if self.fifo_len == 0 {
            if first == Some(0xFF) {
                // e.g. the server announcing that it kills the connection.
                if let Some(e) = parse_err(p.prefix()) {
                    if e.is_progress() {
                        return ServerPacket::Progress;
                    }
                    self.errors = self.errors.wrapping_add(1);
                    self.last_error = e.code;
                    return ServerPacket::Err;
                }
            }
            self.lose(lost::UNSOLICITED);
            return ServerPacket::Unexpected;
        }
        let Some(first) = first else {
            return self.unexpected();
        };
        match self.resp {
            resp::FIRST => match first {
                0x00 => match self.take_ok(p) {
                    Some(st) => {
                        if st & status::MORE_RESULTS_EXISTS == 0 {
                            self.complete(true);
                        }
                        ServerPacket::Ok
                    }
                    None => self.unexpected(),
                },
                0xFF => self.take_err(p),
                0xFB => {
                    // The client now sends the file; the server then answers OK/ERR.
                    self.flags |= F_INFILE;
                    ServerPacket::InfileRequest
                }
                _ => {
                    let Some((n, pos)) = read_lenenc(p.prefix(), 0) else {
                        return self.unexpected();
                    };
                    if n == 0 {
                        return self.unexpected();
                    }
                    let metadata = if self.capabilities & caps::MARIADB_CLIENT_CACHE_METADATA != 0 {
                        byte_at(p.prefix(), pos).unwrap_or(1) != 0
                    } else {
                        true
                    };
                    if metadata {
                        self.remaining = n;
                        self.resp = resp::COLUMNS;
                    } else {
                        self.after_columns();
                    }
                    ServerPacket::ColumnCount
                }
            },
            resp::COLUMNS => {
                if first == 0xFF {
                    return self.take_err(p);
                }
                self.remaining = self.remaining.saturating_sub(1);
                if self.remaining == 0 {
                    self.after_columns();
                }
                ServerPacket::ColumnDef
            }
            resp::COLUMNS_EOF => {
                if first == 0xFF {
                    return self.take_err(p);
                }
                if !self.is_terminator(p) {
                    return self.unexpected();
                }
                let Some(st) = self.take_eof(p) else {
                    return self.unexpected();
                };
                let command = self.head_command().unwrap_or(cmd::SLEEP);
                if st & status::CURSOR_EXISTS != 0
                    && matches!(command, cmd::STMT_EXECUTE | cmd::STMT_BULK_EXECUTE)
                {
                    // Cursor opened: no rows follow now, they come with COM_STMT_FETCH.
                    self.resp_flags |= RF_CURSOR_OPENED;
                    self.complete(true);
                } else {
                    self.resp = resp::ROWS;
                }
                ServerPacket::Eof
            }
            resp::ROWS => {
                if first == 0xFF {
                    return self.take_err(p);
                }
                if self.is_terminator(p) {
                    return match self.take_terminator(p) {
                        Some((st, kind)) => self.end_of_result(st, kind),
                        None => self.unexpected(),
                    };
                }
                ServerPacket::Row
            }
            resp::FIELDS => {
                if first == 0xFF {
                    return self.take_err(p);
                }
                if self.is_terminator(p) {
                    return match self.take_terminator(p) {
                        Some((_, kind)) => {
                            self.complete(true);
                            kind
                        }
                        None => self.unexpected(),
                    };
                }
                ServerPacket::ColumnDef
            }
            resp::SIMPLE => match first {
                0xFF => self.take_err(p),
                0x00 => match self.take_ok(p) {
                    Some(_) => {
                        self.complete(true);
                        ServerPacket::Ok
                    }
                    None => self.unexpected(),
                },
                // COM_DEBUG, COM_SET_OPTION, COM_SHUTDOWN answer with EOF (OK-0xFE).
                0xFE => match self.take_terminator(p) {
                    Some((_, kind)) => {
                        self.complete(true);
                        kind
                    }
                    None => self.unexpected(),
                },
                _ => self.unexpected(),
            },
            resp::STATISTICS => {
                if first == 0xFF {
                    return self.take_err(p);
                }
                self.complete(true);
                ServerPacket::Text
            }
            resp::PREPARE_FIRST => match first {
                0xFF => self.take_err(p),
                0x00 => {
                    let Some(ok) = parse_prepare_ok(p.prefix()) else {
                        return self.unexpected();
                    };
                    self.last_prepare = ok;
                    self.last_warnings = ok.warnings;
                    if ok.num_params > 0 {
                        self.remaining = u64::from(ok.num_params);
                        self.prep_columns = ok.num_columns;
                        self.resp = resp::PREPARE_PARAMS;
                    } else {
                        self.prep_columns = ok.num_columns;
                        self.prepare_columns_or_done();
                    }
                    ServerPacket::PrepareOk
                }
                _ => self.unexpected(),
            },
            resp::PREPARE_PARAMS | resp::PREPARE_COLUMNS => {
                if first == 0xFF {
                    return self.take_err(p);
                }
                self.remaining = self.remaining.saturating_sub(1);
                if self.remaining == 0 {
                    let params = self.resp == resp::PREPARE_PARAMS;
                    if !self.deprecate_eof() {
                        self.resp = if params {
                            resp::PREPARE_PARAMS_EOF
                        } else {
                            resp::PREPARE_COLUMNS_EOF
                        };
                    } else if params {
                        self.prepare_columns_or_done();
                    } else {
                        self.complete(true);
                    }
                }
                ServerPacket::ColumnDef
            }
            resp::PREPARE_PARAMS_EOF | resp::PREPARE_COLUMNS_EOF => {
                if !self.is_terminator(p) || self.take_eof(p).is_none() {
                    return self.unexpected();
                }
                if self.resp == resp::PREPARE_PARAMS_EOF {
                    self.prepare_columns_or_done();
                } else {
                    self.complete(true);
                }
                ServerPacket::Eof
            }
            resp::AUTH => match first {
                0x00 => match self.take_ok(p) {
                    Some(_) => {
                        self.complete(true);
                        ServerPacket::Ok
                    }
                    None => self.unexpected(),
                },
                0xFF => self.take_err(p),
                0xFE => ServerPacket::AuthSwitch,
                _ => ServerPacket::AuthData,
            },
            _ => self.unexpected(),
        }
    }
}

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

// ---------------------------------------------------------------------------
// Walking a backend stream segment by segment (the kernel's backend verdict).
//
// The kernel sees the backend's stream as TCP segments that start and end
// anywhere in a packet. It cannot loop over a segment's packets with the
// whole state machine inside (the verifier explores every iteration), so it
// alternates two steps, each its own program run:
// - [`walk_heads`]: rows and column definitions need only the first payload
//   byte and the length ([`Tracker::on_server_packet_head`]); payload is
//   skipped without reading it.
// - [`full_packet`]: one packet through [`Tracker::on_server_packet`], when
//   its header and prefix are in the segment; otherwise the caller feeds the
//   rest of the segment to [`Framer::next_event`], which keeps partial bytes
//   for the next segment (a straddle).
// Userspace tests drive the same functions over random segmentations.

/// Walks at most `steps` packets or payload skips of a segment of `len`
/// bytes from `off`, using only first bytes and lengths. `load5(off)` reads
/// 5 bytes of the segment (`None` past its end). Returns the new offset and
/// whether the packet at it needs [`full_packet`] (false: the segment, or
/// the step budget, is used up).
#[inline(always)]
pub fn walk_heads<L: Fn(u32) -> Option<[u8; 5]>>(
    framer: &mut Framer,
    tracker: &mut Tracker,
    mut off: u32,
    len: u32,
    steps: u32,
    load5: L,
) -> (u32, bool) {
    let mut i = 0u32;
    while i < steps && off < len {
        i += 1;
        let skipped = framer.skip_payload_bytes(len - off);
        if skipped > 0 {
            off += skipped;
            continue;
        }
        if !framer.at_boundary() {
            return (off, true);
        }
        let Some(h) = load5(off) else {
            return (off, true);
        };
        let plen = u32::from_le_bytes([h[0], h[1], h[2], 0]);
        if plen == 0 || tracker.on_server_packet_head(h[4], plen).is_none() {
            return (off, true);
        }
        off += framer.skip_packet([h[0], h[1], h[2], h[3]], len - off);
    }
    (off, false)
}

/// One packet at `off` through the whole state machine, if the framer is at
/// a boundary and the packet's header and prefix are within the segment.
/// `load(off, buf, n)` reads `n` (1..=PREFIX_LEN) bytes of the segment into
/// `buf` and returns how many it read. Returns the new offset, or `None`
/// when the caller must use the straddle step ([`Framer::next_event`]).
#[inline(always)]
pub fn full_packet<L4, L>(
    framer: &mut Framer,
    tracker: &mut Tracker,
    off: u32,
    len: u32,
    load4: L4,
    load: L,
) -> Option<u32>
where
    L4: Fn(u32) -> Option<[u8; 4]>,
    L: Fn(u32, &mut [u8; PREFIX_LEN], u32) -> usize,
{
    if !framer.at_boundary() || len.saturating_sub(off) < 4 {
        return None;
    }
    let h = load4(off)?;
    let plen = u32::from_le_bytes([h[0], h[1], h[2], 0]);
    let want = if plen < PREFIX_LEN as u32 {
        plen
    } else {
        PREFIX_LEN as u32
    };
    let avail = len - off;
    if plen >= MAX_PACKET || avail - 4 < want {
        return None;
    }
    let mut p = PacketInfo::EMPTY;
    p.len = plen;
    p.seq = h[3];
    if want > 0 {
        let n = load(off + 4, &mut p.prefix, want);
        if n != want as usize {
            return None;
        }
    }
    p.prefix_len = want as u8;
    tracker.on_server_packet(&p);
    Some(off + framer.skip_packet(h, avail))
}

/// Whether the kernel session path may carry a command itself (`prefix` =
/// the first payload bytes of the client packet), or must pass it to the
/// daemon (the slow path). The daemon must see what changes how it relays
/// or what the mover rebuilds and cannot read back from the server:
/// prepared statements (PREPARE/CLOSE/RESET), COM_INIT_DB, COM_CHANGE_USER,
/// COM_RESET_CONNECTION, COM_SET_OPTION, COM_QUIT, and SQL that may create
/// temporary tables, locks, XA or SQL-level prepared statements. Only plain
/// statements whose first keyword is one of a short list stay in the kernel.
/// COM_STMT_EXECUTE is decided by the caller too (parameter types must have
/// been seen by the daemon once).
pub fn kernel_path_command(prefix: &[u8]) -> bool {
    match byte_at(prefix, 0) {
        Some(cmd::PING) | Some(cmd::STMT_EXECUTE) | Some(cmd::STMT_FETCH) => true,
        Some(cmd::QUERY) => {
            let mut word = [0u8; 9];
            let mut i = 0usize;
            while i < word.len() {
                let b = byte_at(prefix, i + 1).unwrap_or(b' ');
                if let Some(slot) = word.get_mut(i) {
                    *slot = b.to_ascii_uppercase();
                }
                i += 1;
            }
            let starts = |w: &[u8]| {
                let mut j = 0usize;
                while j < w.len() {
                    if word.get(j) != w.get(j) {
                        return false;
                    }
                    j += 1;
                }
                // The keyword must end there (no `SELECTX`).
                matches!(word.get(w.len()), Some(b' ' | b'\t' | b'\n' | b'\r' | b'('))
            };
            starts(b"SELECT")
                || starts(b"INSERT")
                || starts(b"UPDATE")
                || starts(b"DELETE")
                || starts(b"BEGIN")
                || starts(b"COMMIT")
                || starts(b"ROLLBACK")
        }
        _ => false,
    }
}
