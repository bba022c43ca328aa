//! Protocol constants: capability flags, server status flags, commands,
//! collations, session-tracking types and the error codes/messages we send.
//!
//! Values follow MariaDB's `include/mysql_com.h` and `errmsg-utf8.txt`.

pub use redirector_common::mysql::{capability, command, mariadb_capability, status};

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
    /// `ER_NO_SUCH_THREAD`, SQLSTATE HY000: "Unknown thread id: %lu".
    pub const ER_NO_SUCH_THREAD: u16 = 1094;
    /// `ER_KILL_DENIED_ERROR`, SQLSTATE HY000: "You are not owner of thread %lu".
    pub const ER_KILL_DENIED_ERROR: u16 = 1095;
    /// `ER_NOT_SUPPORTED_YET`, SQLSTATE 42000.
    pub const ER_NOT_SUPPORTED_YET: u16 = 1235;
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
    /// `ER_NET_READ_INTERRUPTED`, SQLSTATE 08S01 (`net_read_timeout`).
    pub const ER_NET_READ_INTERRUPTED: u16 = 1159;
    pub const MSG_NET_READ_INTERRUPTED: &str = "Got timeout reading communication packets";
    /// `ER_OUT_OF_RESOURCES`, SQLSTATE HY000.
    pub const ER_OUT_OF_RESOURCES: u16 = 1041;
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
