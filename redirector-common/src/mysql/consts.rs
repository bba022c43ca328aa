//! Protocol constants: capability and status flags, command bytes (values
//! from MariaDB's `include/mysql_com.h`), and the tracker's own state codes.
//! The daemon re-exports them (`redirector::protocol::constants`).

/// Number of payload bytes of each logical packet reported by the framer.
pub const PREFIX_LEN: usize = 32;
pub(crate) const PREFIX_MASK: usize = PREFIX_LEN - 1;
const _: () = assert!(PREFIX_LEN.is_power_of_two());
/// Largest packet payload; a payload of exactly this size continues in the next packet.
pub const MAX_PACKET: u32 = 0x00FF_FFFF;
/// Commands that can be outstanding at once (pipelining). A power of two.
pub const FIFO_CAP: usize = 16;
/// Statement ids remembered per table (open cursors, pending long data).
pub const ID_SET_CAP: usize = 4;
/// Fragments walked at most by one [`Framer::next_event`] call.
pub const FRAMER_STEPS: usize = 8;

/// Lower 32 capability bits (`CLIENT_*`), shared by MySQL and MariaDB.
pub mod capability {
    /// Also called `CLIENT_MYSQL` by MariaDB: a MariaDB server clears it in
    /// its greeting to announce that the last 4 filler bytes carry the
    /// MariaDB extended capabilities; a MariaDB client clears it likewise.
    pub const CLIENT_LONG_PASSWORD: u32 = 1;
    pub const CLIENT_MYSQL: u32 = 1;
    pub const CLIENT_FOUND_ROWS: u32 = 1 << 1;
    pub const CLIENT_LONG_FLAG: u32 = 1 << 2;
    pub const CLIENT_CONNECT_WITH_DB: u32 = 1 << 3;
    pub const CLIENT_NO_SCHEMA: u32 = 1 << 4;
    pub const CLIENT_COMPRESS: u32 = 1 << 5;
    pub const CLIENT_ODBC: u32 = 1 << 6;
    pub const CLIENT_LOCAL_FILES: u32 = 1 << 7;
    pub const CLIENT_IGNORE_SPACE: u32 = 1 << 8;
    pub const CLIENT_PROTOCOL_41: u32 = 1 << 9;
    pub const CLIENT_INTERACTIVE: u32 = 1 << 10;
    pub const CLIENT_SSL: u32 = 1 << 11;
    pub const CLIENT_IGNORE_SIGPIPE: u32 = 1 << 12;
    pub const CLIENT_TRANSACTIONS: u32 = 1 << 13;
    pub const CLIENT_RESERVED: u32 = 1 << 14;
    pub const CLIENT_SECURE_CONNECTION: u32 = 1 << 15;
    pub const CLIENT_MULTI_STATEMENTS: u32 = 1 << 16;
    pub const CLIENT_MULTI_RESULTS: u32 = 1 << 17;
    pub const CLIENT_PS_MULTI_RESULTS: u32 = 1 << 18;
    pub const CLIENT_PLUGIN_AUTH: u32 = 1 << 19;
    pub const CLIENT_CONNECT_ATTRS: u32 = 1 << 20;
    pub const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 1 << 21;
    pub const CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS: u32 = 1 << 22;
    pub const CLIENT_SESSION_TRACK: u32 = 1 << 23;
    pub const CLIENT_DEPRECATE_EOF: u32 = 1 << 24;
    /// MySQL 8 only.
    pub const CLIENT_OPTIONAL_RESULTSET_METADATA: u32 = 1 << 25;
    /// MySQL 8 only.
    pub const CLIENT_ZSTD_COMPRESSION_ALGORITHM: u32 = 1 << 26;
    /// MySQL 8 only.
    pub const CLIENT_QUERY_ATTRIBUTES: u32 = 1 << 27;
    /// MySQL 8 only.
    pub const MULTI_FACTOR_AUTHENTICATION: u32 = 1 << 28;
    /// MariaDB: `CLIENT_PROGRESS_OBSOLETE`; MySQL: `CLIENT_CAPABILITY_EXTENSION`.
    pub const CLIENT_PROGRESS_OBSOLETE: u32 = 1 << 29;
    pub const CLIENT_SSL_VERIFY_SERVER_CERT: u32 = 1 << 30;
    pub const CLIENT_REMEMBER_OPTIONS: u32 = 1 << 31;

    /// Capabilities the redirector can relay transparently when both the
    /// client and the backend agree on them. Compression is deliberately
    /// absent (not implemented on either data path), as is SSL (the caller
    /// adds it when it terminates TLS).
    pub const RELAYABLE: u32 = CLIENT_LONG_PASSWORD
        | CLIENT_FOUND_ROWS
        | CLIENT_LONG_FLAG
        | CLIENT_CONNECT_WITH_DB
        | CLIENT_NO_SCHEMA
        | CLIENT_ODBC
        | CLIENT_LOCAL_FILES
        | CLIENT_IGNORE_SPACE
        | CLIENT_PROTOCOL_41
        | CLIENT_INTERACTIVE
        | CLIENT_IGNORE_SIGPIPE
        | CLIENT_TRANSACTIONS
        | CLIENT_RESERVED
        | CLIENT_SECURE_CONNECTION
        | CLIENT_MULTI_STATEMENTS
        | CLIENT_MULTI_RESULTS
        | CLIENT_PS_MULTI_RESULTS
        | CLIENT_PLUGIN_AUTH
        | CLIENT_CONNECT_ATTRS
        | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS
        | CLIENT_SESSION_TRACK
        | CLIENT_DEPRECATE_EOF
        | CLIENT_REMEMBER_OPTIONS;
}

/// MariaDB extended capabilities (`MARIADB_CLIENT_*`). MariaDB defines them
/// as bits 32.. of a 64-bit mask; on the wire they travel as a separate u32,
/// so the values here are already shifted down by 32.
pub mod mariadb_capability {
    pub const MARIADB_CLIENT_PROGRESS: u32 = 1;
    /// Formerly `MARIADB_CLIENT_COM_MULTI`, now reserved.
    pub const MARIADB_CLIENT_RESERVED_1: u32 = 1 << 1;
    pub const MARIADB_CLIENT_STMT_BULK_OPERATIONS: u32 = 1 << 2;
    pub const MARIADB_CLIENT_EXTENDED_METADATA: u32 = 1 << 3;
    pub const MARIADB_CLIENT_CACHE_METADATA: u32 = 1 << 4;
    pub const MARIADB_CLIENT_BULK_UNIT_RESULTS: u32 = 1 << 5;
}

/// Server status flags (`SERVER_*`) carried by OK and EOF packets.
pub mod status {
    pub const SERVER_STATUS_IN_TRANS: u16 = 0x0001;
    pub const SERVER_STATUS_AUTOCOMMIT: u16 = 0x0002;
    pub const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
    pub const SERVER_QUERY_NO_GOOD_INDEX_USED: u16 = 0x0010;
    pub const SERVER_QUERY_NO_INDEX_USED: u16 = 0x0020;
    pub const SERVER_STATUS_CURSOR_EXISTS: u16 = 0x0040;
    pub const SERVER_STATUS_LAST_ROW_SENT: u16 = 0x0080;
    pub const SERVER_STATUS_DB_DROPPED: u16 = 0x0100;
    pub const SERVER_STATUS_NO_BACKSLASH_ESCAPES: u16 = 0x0200;
    pub const SERVER_STATUS_METADATA_CHANGED: u16 = 0x0400;
    pub const SERVER_QUERY_WAS_SLOW: u16 = 0x0800;
    pub const SERVER_PS_OUT_PARAMS: u16 = 0x1000;
    pub const SERVER_STATUS_IN_TRANS_READONLY: u16 = 0x2000;
    pub const SERVER_SESSION_STATE_CHANGED: u16 = 0x4000;
    /// MariaDB only.
    pub const SERVER_STATUS_ANSI_QUOTES: u16 = 0x8000;
}

/// Command bytes (first payload byte of a client command packet).
pub mod command {
    pub const COM_SLEEP: u8 = 0x00;
    pub const COM_QUIT: u8 = 0x01;
    pub const COM_INIT_DB: u8 = 0x02;
    pub const COM_QUERY: u8 = 0x03;
    pub const COM_FIELD_LIST: u8 = 0x04;
    pub const COM_CREATE_DB: u8 = 0x05;
    pub const COM_DROP_DB: u8 = 0x06;
    pub const COM_REFRESH: u8 = 0x07;
    pub const COM_SHUTDOWN: u8 = 0x08;
    pub const COM_STATISTICS: u8 = 0x09;
    pub const COM_PROCESS_INFO: u8 = 0x0a;
    pub const COM_CONNECT: u8 = 0x0b;
    pub const COM_PROCESS_KILL: u8 = 0x0c;
    pub const COM_DEBUG: u8 = 0x0d;
    pub const COM_PING: u8 = 0x0e;
    pub const COM_TIME: u8 = 0x0f;
    pub const COM_DELAYED_INSERT: u8 = 0x10;
    pub const COM_CHANGE_USER: u8 = 0x11;
    pub const COM_BINLOG_DUMP: u8 = 0x12;
    pub const COM_TABLE_DUMP: u8 = 0x13;
    pub const COM_CONNECT_OUT: u8 = 0x14;
    pub const COM_REGISTER_SLAVE: u8 = 0x15;
    pub const COM_STMT_PREPARE: u8 = 0x16;
    pub const COM_STMT_EXECUTE: u8 = 0x17;
    pub const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const COM_STMT_CLOSE: u8 = 0x19;
    pub const COM_STMT_RESET: u8 = 0x1a;
    pub const COM_SET_OPTION: u8 = 0x1b;
    pub const COM_STMT_FETCH: u8 = 0x1c;
    pub const COM_DAEMON: u8 = 0x1d;
    pub const COM_BINLOG_DUMP_GTID: u8 = 0x1e;
    pub const COM_RESET_CONNECTION: u8 = 0x1f;
    /// MariaDB only.
    pub const COM_STMT_BULK_EXECUTE: u8 = 0xfa;
    /// MariaDB only (obsolete).
    pub const COM_MULTI: u8 = 0xfe;
}

/// The 64-bit capability value the tracker keeps: the lower 32 bits as on
/// the wire, MariaDB's extended capabilities (`mariadb_capability`) above.
pub const fn caps64(lower: u32, mariadb: u32) -> u64 {
    (lower as u64) | ((mariadb as u64) << 32)
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
