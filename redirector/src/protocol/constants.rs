//! Protocol constants: capability flags, server status flags, commands,
//! collations, session-tracking types and the error codes/messages we send.
//!
//! Values follow MariaDB's `include/mysql_com.h` and `errmsg-utf8.txt`.

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

/// Frequently used collation ids (the greeting carries only the low byte).
pub mod collation {
    pub const LATIN1_SWEDISH_CI: u8 = 8;
    pub const UTF8MB3_GENERAL_CI: u8 = 33;
    pub const UTF8MB4_GENERAL_CI: u8 = 45;
    pub const UTF8MB4_BIN: u8 = 46;
    pub const BINARY: u8 = 63;
}

/// Session-state-change entry types (OK packet, `CLIENT_SESSION_TRACK`).
pub mod session_track {
    pub const SYSTEM_VARIABLES: u8 = 0;
    pub const SCHEMA: u8 = 1;
    pub const STATE_CHANGE: u8 = 2;
    pub const GTIDS: u8 = 3;
    pub const TRANSACTION_CHARACTERISTICS: u8 = 4;
    pub const TRANSACTION_STATE: u8 = 5;
}

/// Packet header bytes.
pub mod header {
    pub const OK: u8 = 0x00;
    pub const AUTH_MORE_DATA: u8 = 0x01;
    pub const LOCAL_INFILE: u8 = 0xfb;
    pub const EOF: u8 = 0xfe;
    pub const AUTH_SWITCH: u8 = 0xfe;
    pub const ERR: u8 = 0xff;
}

/// Authentication plugin names.
pub mod auth_plugin {
    pub const MYSQL_NATIVE_PASSWORD: &str = "mysql_native_password";
    pub const CACHING_SHA2_PASSWORD: &str = "caching_sha2_password";
    pub const CLIENT_ED25519: &str = "client_ed25519";
    pub const MYSQL_CLEAR_PASSWORD: &str = "mysql_clear_password";
}

/// MariaDB error codes we send or must recognise, with their SQLSTATE and
/// message format exactly as `errmsg-utf8.txt` words them.
pub mod error {
    /// `ER_CON_COUNT_ERROR`, SQLSTATE 08004.
    pub const ER_CON_COUNT_ERROR: u16 = 1040;
    pub const MSG_CON_COUNT_ERROR: &str = "Too many connections";
    /// `ER_HANDSHAKE_ERROR`, SQLSTATE 08S01.
    pub const ER_HANDSHAKE_ERROR: u16 = 1043;
    pub const MSG_HANDSHAKE_ERROR: &str = "Bad handshake";
    /// `ER_DBACCESS_DENIED_ERROR`, SQLSTATE 42000:
    /// "Access denied for user '%s'@'%s' to database '%-.192s'".
    pub const ER_DBACCESS_DENIED_ERROR: u16 = 1044;
    /// `ER_ACCESS_DENIED_ERROR`, SQLSTATE 28000:
    /// "Access denied for user '%s'@'%s' (using password: %s)".
    pub const ER_ACCESS_DENIED_ERROR: u16 = 1045;
    /// `ER_UNKNOWN_COM_ERROR`, SQLSTATE 08S01.
    pub const ER_UNKNOWN_COM_ERROR: u16 = 1047;
    pub const MSG_UNKNOWN_COM_ERROR: &str = "Unknown command";
    /// `ER_BAD_DB_ERROR`, SQLSTATE 42000: "Unknown database '%-.192s'".
    pub const ER_BAD_DB_ERROR: u16 = 1049;
    /// `ER_BAD_FIELD_ERROR`, SQLSTATE 42S22: "Unknown column '%-.192s' in '%-.192s'".
    pub const ER_BAD_FIELD_ERROR: u16 = 1054;
    /// `ER_PARSE_ERROR`, SQLSTATE 42000: "%s near '%-.80T' at line %d".
    pub const ER_PARSE_ERROR: u16 = 1064;
    /// `ER_EMPTY_QUERY`, SQLSTATE 42000.
    pub const ER_EMPTY_QUERY: u16 = 1065;
    pub const MSG_EMPTY_QUERY: &str = "Query was empty";
    /// `ER_UNKNOWN_ERROR`, SQLSTATE HY000: the generic error.
    pub const ER_UNKNOWN_ERROR: u16 = 1105;
    /// `ER_NO_SUCH_TABLE`, SQLSTATE 42S02: "Table '%-.192s.%-.192s' doesn't exist".
    pub const ER_NO_SUCH_TABLE: u16 = 1146;
    /// `ER_UNKNOWN_SYSTEM_VARIABLE`, SQLSTATE HY000: "Unknown system variable '%-.*s'".
    pub const ER_UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;
    /// `ER_WRONG_ARGUMENTS`, SQLSTATE HY000: "Incorrect arguments to %s".
    pub const ER_WRONG_ARGUMENTS: u16 = 1210;
    /// `ER_WRONG_VALUE_FOR_VAR`, SQLSTATE 42000:
    /// "Variable '%-.64s' can't be set to the value of '%-.200T'".
    pub const ER_WRONG_VALUE_FOR_VAR: u16 = 1231;
    /// `ER_SERVER_SHUTDOWN`, SQLSTATE 08S01.
    pub const ER_SERVER_SHUTDOWN: u16 = 1053;
    pub const MSG_SERVER_SHUTDOWN: &str = "Server shutdown in progress";
    /// `ER_NET_PACKET_TOO_LARGE`, SQLSTATE 08S01.
    pub const ER_NET_PACKET_TOO_LARGE: u16 = 1153;
    pub const MSG_NET_PACKET_TOO_LARGE: &str =
        "Got a packet bigger than 'max_allowed_packet' bytes";
    /// `ER_NET_READ_ERROR`, SQLSTATE 08S01.
    pub const ER_NET_READ_ERROR: u16 = 1158;
    pub const MSG_NET_READ_ERROR: &str = "Got an error reading communication packets";
    /// `ER_NOT_SUPPORTED_AUTH_MODE`, SQLSTATE 08004.
    pub const ER_NOT_SUPPORTED_AUTH_MODE: u16 = 1251;
    pub const MSG_NOT_SUPPORTED_AUTH_MODE: &str = "Client does not support authentication protocol requested by server; consider upgrading MariaDB client";
    /// `ER_QUERY_INTERRUPTED`, SQLSTATE 70100.
    pub const ER_QUERY_INTERRUPTED: u16 = 1317;
    pub const MSG_QUERY_INTERRUPTED: &str = "Query execution was interrupted";
    /// `ER_CONNECTION_KILLED`, SQLSTATE 70100.
    pub const ER_CONNECTION_KILLED: u16 = 1927;
    pub const MSG_CONNECTION_KILLED: &str = "Connection was killed";
    /// Client-library `CR_SERVER_GONE_ERROR` (MariaDB Connector/C wording).
    pub const CR_SERVER_GONE_ERROR: u16 = 2006;
    pub const MSG_SERVER_GONE_ERROR: &str = "Server has gone away";
    /// Client-library `CR_SERVER_LOST` (MariaDB Connector/C wording),
    /// SQLSTATE HY000; sent by the proxy when a backend dies mid-statement.
    pub const CR_SERVER_LOST: u16 = 2013;
    pub const MSG_SERVER_LOST: &str = "Lost connection to server during query";

    pub const SQLSTATE_ACCESS_DENIED: &[u8; 5] = b"28000";
    pub const SQLSTATE_COMMUNICATION: &[u8; 5] = b"08S01";
    pub const SQLSTATE_CONNECTION_REJECTED: &[u8; 5] = b"08004";
    pub const SQLSTATE_SYNTAX_OR_ACCESS: &[u8; 5] = b"42000";
    pub const SQLSTATE_INTERRUPTED: &[u8; 5] = b"70100";
    pub const SQLSTATE_GENERAL: &[u8; 5] = b"HY000";
    pub const SQLSTATE_BAD_FIELD: &[u8; 5] = b"42S22";
    pub const SQLSTATE_NO_SUCH_TABLE: &[u8; 5] = b"42S02";
}

/// Column types (`MYSQL_TYPE_*`) of the result sets the daemon writes itself.
pub mod column_type {
    pub const DOUBLE: u8 = 0x05;
    pub const LONGLONG: u8 = 0x08;
    pub const VAR_STRING: u8 = 0xfd;
}

/// Column definition flags (`*_FLAG`).
pub mod column_flag {
    pub const NOT_NULL: u16 = 1;
    pub const BINARY: u16 = 128;
    pub const NUM: u16 = 32768;
}
