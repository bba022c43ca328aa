//! The per-session protocol state machine.

use super::*;

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
        self.last_status
            & (status::SERVER_STATUS_IN_TRANS | status::SERVER_STATUS_IN_TRANS_READONLY)
            != 0
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
    /// Keeps pending long data only for the statements `prepared` says
    /// exist: the server ignores long data for an unknown id, and only the
    /// daemon knows which ids are prepared.
    pub fn retain_long_data(&mut self, prepared: impl Fn(u32) -> bool) {
        if self.long_data.overflowed() {
            return;
        }
        let held = self.long_data.len as usize;
        let ids = self.long_data.ids;
        for id in ids.iter().take(held).copied() {
            if !prepared(id) {
                self.long_data.remove(id);
            }
        }
    }
    /// Another command can be followed now; a client pipelining more than
    /// [`FIFO_CAP`] commands waits until the oldest are answered.
    pub fn can_take_command(&self) -> bool {
        (self.fifo_len as usize) < FIFO_CAP
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
        self.capabilities & caps64(capability::CLIENT_DEPRECATE_EOF, 0) != 0
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
            command::COM_QUERY
            | command::COM_PROCESS_INFO
            | command::COM_STMT_EXECUTE
            | command::COM_STMT_BULK_EXECUTE => resp::FIRST,
            command::COM_STMT_PREPARE => resp::PREPARE_FIRST,
            command::COM_FIELD_LIST => resp::FIELDS,
            command::COM_STATISTICS => resp::STATISTICS,
            command::COM_CHANGE_USER => resp::AUTH,
            command::COM_STMT_FETCH => resp::ROWS,
            _ => resp::SIMPLE,
        }
    }

    fn no_response(command: u8) -> bool {
        matches!(
            command,
            command::COM_QUIT | command::COM_STMT_CLOSE | command::COM_STMT_SEND_LONG_DATA
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
                command::COM_STMT_SEND_LONG_DATA => self.long_data.insert(id),
                command::COM_STMT_CLOSE => {
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
        let command = self.head_command().unwrap_or(command::COM_SLEEP);
        let id = self.head_stmt();
        if success {
            match command {
                command::COM_STMT_EXECUTE | command::COM_STMT_BULK_EXECUTE => {
                    self.long_data.remove(id);
                    // Re-executing closes the statement's previous cursor.
                    self.cursors.remove(id);
                    if self.resp_flags & RF_CURSOR_OPENED != 0 {
                        self.cursors.insert(id);
                    }
                }
                command::COM_STMT_RESET => {
                    self.cursors.remove(id);
                    self.long_data.remove(id);
                }
                command::COM_RESET_CONNECTION | command::COM_CHANGE_USER => {
                    self.cursors.clear();
                    self.long_data.clear();
                }
                _ => {}
            }
        }
        if command == command::COM_STMT_FETCH && self.resp_flags & RF_LAST_ROW != 0 {
            self.cursors.remove(id);
        }
        self.pop();
        self.advance();
    }

    fn note_status(&mut self, st: u16, warnings: u16) {
        self.last_status = st;
        self.last_warnings = warnings;
        if st & status::SERVER_SESSION_STATE_CHANGED != 0 {
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
        let command = self.head_command().unwrap_or(command::COM_SLEEP);
        if st & status::SERVER_STATUS_CURSOR_EXISTS != 0
            && matches!(
                command,
                command::COM_STMT_EXECUTE | command::COM_STMT_BULK_EXECUTE
            )
        {
            self.resp_flags |= RF_CURSOR_OPENED;
        }
        if command == command::COM_STMT_FETCH && st & status::SERVER_STATUS_LAST_ROW_SENT != 0 {
            self.resp_flags |= RF_LAST_ROW;
        }
        // Older MariaDB omit MORE_RESULTS on the OUT-parameter result set of a
        // CALL (MDEV-4604), yet the final OK follows.
        if st & (status::SERVER_MORE_RESULTS_EXISTS | status::SERVER_PS_OUT_PARAMS) != 0 {
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
        let command = p.first().unwrap_or(command::COM_SLEEP);
        self.commands_sent = self.commands_sent.wrapping_add(1);
        // COM_TABLE_DUMP is not among them: MariaDB answers it with one
        // ERR (unknown command), like any command it does not know.
        if matches!(
            command,
            command::COM_BINLOG_DUMP | command::COM_BINLOG_DUMP_GTID | command::COM_MULTI
        ) {
            self.lose(lost::UNTRACKABLE_COMMAND);
            return ClientPacket::Command(command);
        }
        if self.fifo_len as usize >= FIFO_CAP {
            self.lose(lost::FIFO_OVERFLOW);
            return ClientPacket::Command(command);
        }
        let stmt = match command {
            command::COM_STMT_EXECUTE
            | command::COM_STMT_BULK_EXECUTE
            | command::COM_STMT_FETCH
            | command::COM_STMT_RESET
            | command::COM_STMT_CLOSE
            | command::COM_STMT_SEND_LONG_DATA => le32(p.prefix(), 1).unwrap_or(0),
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
                        if st & status::SERVER_MORE_RESULTS_EXISTS == 0 {
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
                    let metadata = if self.capabilities
                        & caps64(0, mariadb_capability::MARIADB_CLIENT_CACHE_METADATA)
                        != 0
                    {
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
                let command = self.head_command().unwrap_or(command::COM_SLEEP);
                if st & status::SERVER_STATUS_CURSOR_EXISTS != 0
                    && matches!(
                        command,
                        command::COM_STMT_EXECUTE | command::COM_STMT_BULK_EXECUTE
                    )
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
