//! Generic response packets: OK, ERR, EOF, and the session-state-change
//! block of OK packets.

use bytes::Bytes;

use super::constants::{capability::*, column_flag, column_type, error as er, header, status};
use super::error::{ProtocolError, Result};
use super::wire::{Reader, WriteExt};

/// OK packet (also the 0xFE-headed OK that ends result sets under
/// `CLIENT_DEPRECATE_EOF`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OkPacket {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
    /// Human-readable info (e.g. "Rows matched: 1  Changed: 1  Warnings: 0").
    pub info: Bytes,
    /// Raw session-state-change block; present only with
    /// `CLIENT_SESSION_TRACK` and `SERVER_SESSION_STATE_CHANGED`.
    pub session_state: Option<Bytes>,
}

impl OkPacket {
    /// Encodes with header 0x00.
    pub fn encode(&self, caps: u32, out: &mut impl WriteExt) {
        self.encode_with_header(header::OK, caps, out);
    }

    /// Encodes with header 0xFE: the OK that replaces EOF at the end of a
    /// result set when `CLIENT_DEPRECATE_EOF` is negotiated.
    pub fn encode_as_eof(&self, caps: u32, out: &mut impl WriteExt) {
        self.encode_with_header(header::EOF, caps, out);
    }

    fn encode_with_header(&self, hdr: u8, caps: u32, out: &mut impl WriteExt) {
        out.put_u8_le(hdr);
        out.put_lenenc_int(self.affected_rows);
        out.put_lenenc_int(self.last_insert_id);
        if caps & CLIENT_PROTOCOL_41 != 0 {
            out.put_u16_le(self.status);
            out.put_u16_le(self.warnings);
        } else if caps & CLIENT_TRANSACTIONS != 0 {
            out.put_u16_le(self.status);
        }
        if caps & CLIENT_SESSION_TRACK != 0 {
            // The info string is always present (possibly empty) before
            // the state block.
            let has_state = self.session_state.is_some()
                && self.status & status::SERVER_SESSION_STATE_CHANGED != 0;
            if !self.info.is_empty() || has_state {
                out.put_lenenc_bytes(&self.info);
            }
            if let Some(state) = self.session_state.as_ref().filter(|_| has_state) {
                out.put_lenenc_bytes(state);
            }
        } else {
            out.put_bytes_raw(&self.info);
        }
    }

    /// Parses an OK packet whose header is 0x00 or 0xFE. The fixed part is
    /// read by the state machine's parser (one OK parser for both data
    /// paths); the info string and session-state block here.
    pub fn parse(payload: &[u8], caps: u32) -> Result<Self> {
        let first = *payload.first().ok_or(ProtocolError::EmptyPacket("OK"))?;
        if first != header::OK && first != header::EOF {
            return Err(ProtocolError::UnexpectedPacket {
                expected: "OK",
                first,
            });
        }
        let (fixed, end) = redirector_common::mysql::parse_ok_fixed(payload, u64::from(caps))
            .ok_or(ProtocolError::Truncated("OK packet"))?;
        let mut ok = OkPacket {
            affected_rows: fixed.affected_rows,
            last_insert_id: fixed.last_insert_id,
            status: fixed.status,
            warnings: fixed.warnings,
            ..Default::default()
        };
        let mut r = Reader::new(payload.get(end..).unwrap_or_default());
        if caps & CLIENT_SESSION_TRACK != 0 {
            if !r.is_empty() {
                ok.info = Bytes::copy_from_slice(r.lenenc_bytes("OK info")?);
            }
            if ok.status & status::SERVER_SESSION_STATE_CHANGED != 0 && !r.is_empty() {
                ok.session_state =
                    Some(Bytes::copy_from_slice(r.lenenc_bytes("OK session state")?));
            }
        } else {
            ok.info = Bytes::copy_from_slice(r.rest());
        }
        Ok(ok)
    }

    /// Parsed entries of [`OkPacket::session_state`] (empty when absent).
    pub fn session_changes(&self) -> Result<Vec<SessionStateChange>> {
        self.session_state
            .as_deref()
            .map_or(Ok(Vec::new()), parse_session_state)
    }
}

/// One entry of a session-state-change block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStateChange {
    /// `SESSION_TRACK_SYSTEM_VARIABLES`: name and new value.
    SystemVariable { name: Bytes, value: Bytes },
    /// `SESSION_TRACK_SCHEMA`: the new default schema.
    Schema(Bytes),
    /// `SESSION_TRACK_STATE_CHANGE`: "1" when session state changed.
    StateChange(bool),
    /// Any other type (GTIDs, transaction characteristics/state …), raw.
    Other { kind: u8, data: Bytes },
}

/// Parses a session-state-change block (a sequence of type, lenenc data).
pub fn parse_session_state(block: &[u8]) -> Result<Vec<SessionStateChange>> {
    use super::constants::session_track as st;
    let mut r = Reader::new(block);
    let mut out = Vec::new();
    while !r.is_empty() {
        let kind = r.u8("session state type")?;
        let data = r.lenenc_bytes("session state entry")?;
        let mut d = Reader::new(data);
        out.push(match kind {
            st::SYSTEM_VARIABLES => SessionStateChange::SystemVariable {
                name: Bytes::copy_from_slice(d.lenenc_bytes("tracked variable name")?),
                value: Bytes::copy_from_slice(d.lenenc_bytes("tracked variable value")?),
            },
            st::SCHEMA => SessionStateChange::Schema(Bytes::copy_from_slice(
                d.lenenc_bytes("tracked schema")?,
            )),
            st::STATE_CHANGE => {
                SessionStateChange::StateChange(d.lenenc_bytes("tracked state change")? == b"1")
            }
            kind => SessionStateChange::Other {
                kind,
                data: Bytes::copy_from_slice(data),
            },
        });
    }
    Ok(out)
}

pub use super::error::ErrPacket;
use crate::peer_text::escaped as peer;

impl ErrPacket {
    pub fn new(code: u16, sql_state: &[u8; 5], message: impl Into<String>) -> Self {
        Self {
            code,
            sql_state: Some(*sql_state),
            message: message.into(),
        }
    }

    /// 1045 / 28000: "Access denied for user 'u'@'h' (using password: YES)".
    /// Names are the peer's: escaped and cut here (see [`peer`]).
    pub fn access_denied(user: &str, host: &str, using_password: bool) -> Self {
        let yes = if using_password { "YES" } else { "NO" };
        let (user, host) = (peer(user), peer(host));
        Self::new(
            er::ER_ACCESS_DENIED_ERROR,
            er::SQLSTATE_ACCESS_DENIED,
            format!("Access denied for user '{user}'@'{host}' (using password: {yes})"),
        )
    }

    /// 1045 / 28000 for an account whose authentication plugin the
    /// redirector cannot serve, naming the plugin and what would help.
    pub fn unsupported_plugin(account: &str, plugin: &str) -> Self {
        let help = if plugin == super::ed25519::ED25519 {
            ": configure its password in [[auth.users]] with plugin = \"ed25519\""
        } else {
            ""
        };
        Self::new(
            er::ER_ACCESS_DENIED_ERROR,
            er::SQLSTATE_ACCESS_DENIED,
            format!(
                "Access denied: account {account} uses the {plugin} authentication plugin, which the redirector cannot serve{help}"
            ),
        )
    }

    /// 1044 / 42000: "Access denied for user 'u'@'h' to database 'd'".
    pub fn db_access_denied(user: &str, host: &str, db: &str) -> Self {
        let (user, host, db) = (peer(user), peer(host), peer(db));
        Self::new(
            er::ER_DBACCESS_DENIED_ERROR,
            er::SQLSTATE_SYNTAX_OR_ACCESS,
            format!("Access denied for user '{user}'@'{host}' to database '{db}'"),
        )
    }

    /// 1049 / 42000: "Unknown database 'd'".
    pub fn bad_db(db: &str) -> Self {
        let db = peer(db);
        Self::new(
            er::ER_BAD_DB_ERROR,
            er::SQLSTATE_SYNTAX_OR_ACCESS,
            format!("Unknown database '{db}'"),
        )
    }

    /// 1040 / 08004: "Too many connections".
    pub fn too_many_connections() -> Self {
        Self::new(
            er::ER_CON_COUNT_ERROR,
            er::SQLSTATE_CONNECTION_REJECTED,
            er::MSG_CON_COUNT_ERROR,
        )
    }

    /// 1040 / 08004 while too many clients are in the handshake
    /// (`listen.max_handshakes`): the logged-in sessions' limit is not
    /// reached, the client may try again shortly.
    pub fn too_many_handshakes() -> Self {
        Self::new(
            er::ER_CON_COUNT_ERROR,
            er::SQLSTATE_CONNECTION_REJECTED,
            "Too many connections (too many clients logging in at once)",
        )
    }

    /// 1041 / HY000: the daemon-wide buffer for large client packets
    /// (`listen.max_buffered_bytes`) has no room for this one.
    pub fn buffer_full() -> Self {
        Self::new(
            er::ER_OUT_OF_RESOURCES,
            er::SQLSTATE_GENERAL,
            "Out of resources: the redirector's buffer for large packets is full; try again later",
        )
    }

    /// 1159 / 08S01: "Got timeout reading communication packets": the
    /// client stopped in the middle of a packet (`net_read_timeout`).
    pub fn net_read_timeout() -> Self {
        Self::new(
            er::ER_NET_READ_INTERRUPTED,
            er::SQLSTATE_COMMUNICATION,
            er::MSG_NET_READ_INTERRUPTED,
        )
    }

    /// 1043 / 08S01: "Bad handshake".
    pub fn bad_handshake() -> Self {
        Self::new(
            er::ER_HANDSHAKE_ERROR,
            er::SQLSTATE_COMMUNICATION,
            er::MSG_HANDSHAKE_ERROR,
        )
    }

    /// 1153 / 08S01: "Got a packet bigger than 'max_allowed_packet' bytes".
    pub fn packet_too_large() -> Self {
        Self::new(
            er::ER_NET_PACKET_TOO_LARGE,
            er::SQLSTATE_COMMUNICATION,
            er::MSG_NET_PACKET_TOO_LARGE,
        )
    }

    /// 1047 / 08S01: "Unknown command".
    pub fn unknown_command() -> Self {
        Self::new(
            er::ER_UNKNOWN_COM_ERROR,
            er::SQLSTATE_COMMUNICATION,
            er::MSG_UNKNOWN_COM_ERROR,
        )
    }

    /// 1251 / 08004: the client cannot do the auth plugin we need.
    pub fn auth_mode_not_supported() -> Self {
        Self::new(
            er::ER_NOT_SUPPORTED_AUTH_MODE,
            er::SQLSTATE_CONNECTION_REJECTED,
            er::MSG_NOT_SUPPORTED_AUTH_MODE,
        )
    }

    /// 1317 / 70100: "Query execution was interrupted" (forced move).
    pub fn query_interrupted() -> Self {
        Self::new(
            er::ER_QUERY_INTERRUPTED,
            er::SQLSTATE_INTERRUPTED,
            er::MSG_QUERY_INTERRUPTED,
        )
    }

    /// 1927 / 70100: "Connection was killed".
    pub fn connection_killed() -> Self {
        Self::new(
            er::ER_CONNECTION_KILLED,
            er::SQLSTATE_INTERRUPTED,
            er::MSG_CONNECTION_KILLED,
        )
    }

    /// 1053 / 08S01: "Server shutdown in progress".
    pub fn server_shutdown() -> Self {
        Self::new(
            er::ER_SERVER_SHUTDOWN,
            er::SQLSTATE_COMMUNICATION,
            er::MSG_SERVER_SHUTDOWN,
        )
    }

    /// 2013 / HY000: "Lost connection to server during query" (the backend
    /// went away under a statement).
    pub fn server_lost() -> Self {
        Self::new(
            er::CR_SERVER_LOST,
            er::SQLSTATE_GENERAL,
            er::MSG_SERVER_LOST,
        )
    }

    pub fn encode(&self, caps: u32, out: &mut impl WriteExt) {
        out.put_u8_le(header::ERR);
        out.put_u16_le(self.code);
        if caps & CLIENT_PROTOCOL_41 != 0 {
            out.put_u8_le(b'#');
            out.put_bytes_raw(self.sql_state.as_ref().unwrap_or(er::SQLSTATE_GENERAL));
        }
        out.put_bytes_raw(self.message.as_bytes());
    }

    /// Encoded payload (protocol 4.1 form), for sending before capabilities
    /// are negotiated (e.g. "Too many connections" instead of a greeting).
    pub fn to_payload(&self, caps: u32) -> Vec<u8> {
        let mut v = Vec::with_capacity(9 + self.message.len());
        self.encode(caps, &mut v);
        v
    }

    /// Parses an ERR packet. The SQLSTATE marker is recognised whenever it
    /// is present (servers send it even before capabilities are agreed).
    pub fn parse(payload: &[u8]) -> Result<Self> {
        let mut r = Reader::new(payload);
        let first = r.u8("ERR header")?;
        if first != header::ERR {
            return Err(ProtocolError::UnexpectedPacket {
                expected: "ERR",
                first,
            });
        }
        let code = r.u16("ERR code")?;
        let sql_state = if r.peek() == Some(b'#') && r.remaining() >= 6 {
            r.skip(1, "ERR sqlstate marker")?;
            Some(r.array::<5>("ERR sqlstate")?)
        } else {
            None
        };
        Ok(Self {
            code,
            sql_state,
            message: String::from_utf8_lossy(r.rest()).into_owned(),
        })
    }

    pub fn sql_state_str(&self) -> &str {
        self.sql_state
            .as_ref()
            .and_then(|s| std::str::from_utf8(s).ok())
            .unwrap_or("HY000")
    }
}

impl std::fmt::Display for ErrPacket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ERROR {} ({}): {}",
            self.code,
            self.sql_state_str(),
            self.message
        )
    }
}

/// EOF packet (pre-`CLIENT_DEPRECATE_EOF`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EofPacket {
    pub warnings: u16,
    pub status: u16,
}

impl EofPacket {
    pub fn encode(&self, caps: u32, out: &mut impl WriteExt) {
        out.put_u8_le(header::EOF);
        if caps & CLIENT_PROTOCOL_41 != 0 {
            out.put_u16_le(self.warnings);
            out.put_u16_le(self.status);
        }
    }

    /// Parses an EOF packet: header 0xFE and shorter than 9 bytes (longer
    /// 0xFE packets are OK-as-EOF or row data).
    pub fn parse(payload: &[u8], caps: u32) -> Result<Self> {
        if !is_eof(payload) {
            return Err(match payload.first() {
                None => ProtocolError::EmptyPacket("EOF"),
                Some(&first) => ProtocolError::UnexpectedPacket {
                    expected: "EOF",
                    first,
                },
            });
        }
        let mut r = Reader::new(&payload[1..]);
        if caps & CLIENT_PROTOCOL_41 != 0 {
            Ok(Self {
                warnings: r.u16("EOF warnings")?,
                status: r.u16("EOF status")?,
            })
        } else {
            Ok(Self::default())
        }
    }
}

/// True for a classic EOF packet (0xFE header, payload < 9 bytes).
pub fn is_eof(payload: &[u8]) -> bool {
    payload.first() == Some(&header::EOF) && payload.len() < 9
}

/// One column of a text result set the daemon writes itself (admin SQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDefinition {
    pub name: String,
    /// `MYSQL_TYPE_*` ([`super::constants::column_type`]).
    pub column_type: u8,
    pub charset: u16,
    /// Display width clients may use to size the column.
    pub length: u32,
    pub flags: u16,
    pub decimals: u8,
}

/// Charset id of text columns (utf8mb4_general_ci) and of numbers (binary).
const CHARSET_UTF8MB4: u16 = super::constants::collation::UTF8MB4_GENERAL_CI as u16;
const CHARSET_BINARY: u16 = super::constants::collation::BINARY as u16;

impl ColumnDefinition {
    /// A VAR_STRING column (utf8mb4).
    pub fn text(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            column_type: column_type::VAR_STRING,
            charset: CHARSET_UTF8MB4,
            length: 1024,
            flags: 0,
            decimals: 0,
        }
    }

    /// A BIGINT column.
    pub fn integer(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            column_type: column_type::LONGLONG,
            charset: CHARSET_BINARY,
            length: 20,
            flags: column_flag::BINARY | column_flag::NUM,
            decimals: 0,
        }
    }

    /// A DOUBLE column.
    pub fn double(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            column_type: column_type::DOUBLE,
            charset: CHARSET_BINARY,
            length: 22,
            flags: column_flag::BINARY | column_flag::NUM,
            // 31 = NOT_FIXED_DEC: as many decimals as the value has.
            decimals: 31,
        }
    }

    /// Protocol::ColumnDefinition41. The column belongs to no table, like
    /// the columns of `SELECT 1`.
    pub fn encode(&self, out: &mut impl WriteExt) {
        out.put_lenenc_bytes(b"def");
        out.put_lenenc_bytes(b""); // schema
        out.put_lenenc_bytes(b""); // table
        out.put_lenenc_bytes(b""); // org_table
        out.put_lenenc_bytes(self.name.as_bytes());
        out.put_lenenc_bytes(self.name.as_bytes()); // org_name
        out.put_lenenc_int(0x0c); // length of the fixed fields
        out.put_u16_le(self.charset);
        out.put_u32_le(self.length);
        out.put_u8_le(self.column_type);
        out.put_u16_le(self.flags);
        out.put_u8_le(self.decimals);
        out.put_zeros(2);
    }
}

/// The payloads of a complete text-protocol result set: column count,
/// definitions, EOF (unless `CLIENT_DEPRECATE_EOF`), rows (NULL = `None`),
/// then EOF or, under `CLIENT_DEPRECATE_EOF`, an OK with header 0xFE.
pub fn text_result_set(
    columns: &[ColumnDefinition],
    rows: &[Vec<Option<String>>],
    caps: u32,
    status: u16,
) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(columns.len() + rows.len() + 3);
    let mut count = Vec::new();
    count.put_lenenc_int(columns.len() as u64);
    out.push(count);
    for c in columns {
        let mut p = Vec::with_capacity(32 + 2 * c.name.len());
        c.encode(&mut p);
        out.push(p);
    }
    let eof = EofPacket {
        warnings: 0,
        status,
    };
    let deprecate_eof = caps & CLIENT_DEPRECATE_EOF != 0;
    if !deprecate_eof {
        let mut p = Vec::new();
        eof.encode(caps, &mut p);
        out.push(p);
    }
    for row in rows {
        let mut p = Vec::new();
        for cell in row {
            match cell {
                Some(v) => p.put_lenenc_bytes(v.as_bytes()),
                None => p.put_u8_le(NULL_CELL),
            }
        }
        out.push(p);
    }
    let mut end = Vec::new();
    if deprecate_eof {
        OkPacket {
            status,
            ..Default::default()
        }
        .encode_as_eof(caps, &mut end);
    } else {
        eof.encode(caps, &mut end);
    }
    out.push(end);
    out
}

/// A NULL value in a text-protocol row.
const NULL_CELL: u8 = 0xfb;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::constants::session_track;

    const CAPS: u32 = CLIENT_PROTOCOL_41 | CLIENT_TRANSACTIONS | CLIENT_SESSION_TRACK;

    fn truncations_fail<T: std::fmt::Debug>(full: &[u8], f: impl Fn(&[u8]) -> Result<T>) {
        for cut in 0..full.len() {
            assert!(f(&full[..cut]).is_err(), "prefix of {cut} bytes parsed");
        }
    }

    #[test]
    fn ok_round_trip_with_session_state() {
        let mut state = Vec::new();
        // SCHEMA "db2"
        state.push(session_track::SCHEMA);
        state.put_lenenc_bytes(&[3, b'd', b'b', b'2']);
        // SYSTEM_VARIABLES autocommit=OFF
        let mut sv = Vec::new();
        sv.put_lenenc_bytes(b"autocommit");
        sv.put_lenenc_bytes(b"OFF");
        state.push(session_track::SYSTEM_VARIABLES);
        state.put_lenenc_bytes(&sv);
        state.push(session_track::STATE_CHANGE);
        state.put_lenenc_bytes(&[1, b'1']);
        state.push(session_track::TRANSACTION_STATE);
        state.put_lenenc_bytes(&[8, b'T', b'_', b'_', b'_', b'_', b'_', b'_', b'_']);

        let ok = OkPacket {
            affected_rows: 300,
            last_insert_id: 1 << 40,
            status: status::SERVER_STATUS_AUTOCOMMIT | status::SERVER_SESSION_STATE_CHANGED,
            warnings: 2,
            info: Bytes::from_static(b"hi"),
            session_state: Some(Bytes::from(state)),
        };
        let mut buf = Vec::new();
        ok.encode(CAPS, &mut buf);
        assert_eq!(OkPacket::parse(&buf, CAPS).unwrap(), ok);
        let changes = ok.session_changes().unwrap();
        assert_eq!(
            changes,
            vec![
                SessionStateChange::Schema(Bytes::from_static(b"db2")),
                SessionStateChange::SystemVariable {
                    name: Bytes::from_static(b"autocommit"),
                    value: Bytes::from_static(b"OFF"),
                },
                SessionStateChange::StateChange(true),
                SessionStateChange::Other {
                    kind: session_track::TRANSACTION_STATE,
                    data: Bytes::from_static(b"\x08T_______"),
                },
            ]
        );
        truncations_fail(&buf, |b| {
            OkPacket::parse(b, CAPS).and_then(|o| {
                // A cut inside the state block may still leave a parsable OK
                // header; the block itself must then fail or differ.
                if o == ok {
                    Ok(o)
                } else {
                    Err(ProtocolError::Malformed("differs"))
                }
            })
        });
        // Corrupted block: entry length beyond the block.
        assert!(parse_session_state(&[1, 9, 1]).is_err());

        // 0xFE-headed OK-as-EOF parses the same.
        let mut eof_ok = Vec::new();
        ok.encode_as_eof(CAPS, &mut eof_ok);
        assert_eq!(eof_ok[0], 0xFE);
        assert_eq!(OkPacket::parse(&eof_ok, CAPS).unwrap(), ok);
    }

    #[test]
    fn minimal_ok_bytes() {
        let ok = OkPacket {
            status: status::SERVER_STATUS_AUTOCOMMIT,
            ..Default::default()
        };
        let mut buf = Vec::new();
        ok.encode(CAPS, &mut buf);
        // What MariaDB sends after a successful login.
        assert_eq!(buf, [0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(OkPacket::parse(&buf, CAPS).unwrap(), ok);
        let mut old = Vec::new();
        ok.encode(0, &mut old);
        assert_eq!(old, [0, 0, 0]);
        assert_eq!(OkPacket::parse(&old, 0).unwrap().status, 0);
        assert!(matches!(
            OkPacket::parse(&[0xFF, 0, 0], CAPS),
            Err(ProtocolError::UnexpectedPacket { .. })
        ));
    }

    #[test]
    fn err_round_trip_and_wording() {
        let e = ErrPacket::access_denied("app", "127.0.0.1", true);
        assert_eq!(
            e.message,
            "Access denied for user 'app'@'127.0.0.1' (using password: YES)"
        );
        assert_eq!(e.code, 1045);
        assert_eq!(e.sql_state_str(), "28000");
        assert_eq!(
            ErrPacket::access_denied("a", "h", false).message,
            "Access denied for user 'a'@'h' (using password: NO)"
        );
        let payload = e.to_payload(CLIENT_PROTOCOL_41);
        assert_eq!(&payload[..9], b"\xff\x15\x04#28000");
        assert_eq!(ErrPacket::parse(&payload).unwrap(), e);
        truncations_fail(&payload[..3], ErrPacket::parse);
        // Pre-4.1 form: no SQLSTATE.
        let old = ErrPacket::too_many_connections().to_payload(0);
        assert_eq!(old, b"\xff\x10\x04Too many connections");
        let parsed = ErrPacket::parse(&old).unwrap();
        assert_eq!(parsed.sql_state, None);
        assert_eq!(parsed.message, "Too many connections");
        assert_eq!(
            format!("{}", ErrPacket::bad_handshake()),
            "ERROR 1043 (08S01): Bad handshake"
        );
        assert_eq!(ErrPacket::packet_too_large().code, 1153);
        assert_eq!(ErrPacket::unknown_command().sql_state_str(), "08S01");
        assert_eq!(ErrPacket::server_lost().code, 2013);
        assert!(matches!(
            ErrPacket::parse(&[0x00, 1, 2]),
            Err(ProtocolError::UnexpectedPacket { .. })
        ));
    }

    #[test]
    fn text_result_set_layout() {
        let cols = [
            ColumnDefinition::integer("ID"),
            ColumnDefinition::text("NAME"),
        ];
        let rows = vec![vec![Some("12".to_string()), None]];
        let status = status::SERVER_STATUS_AUTOCOMMIT;
        // Classic: count, 2 definitions, EOF, 1 row, EOF.
        let classic = text_result_set(&cols, &rows, CLIENT_PROTOCOL_41, status);
        assert_eq!(classic.len(), 6);
        assert_eq!(classic[0], [2]);
        assert!(is_eof(&classic[3]) && is_eof(&classic[5]));
        assert_eq!(classic[4], b"\x0212\xfb");
        // The definition: catalog "def", then the name twice, 0x0c, charset,
        // length, type, flags, decimals, filler.
        let mut r = Reader::new(&classic[2]);
        assert_eq!(r.lenenc_bytes("catalog").unwrap(), b"def");
        for _ in 0..3 {
            assert_eq!(r.lenenc_bytes("empty").unwrap(), b"");
        }
        assert_eq!(r.lenenc_bytes("name").unwrap(), b"NAME");
        assert_eq!(r.lenenc_bytes("org name").unwrap(), b"NAME");
        assert_eq!(r.lenenc_int("fixed").unwrap(), 0x0c);
        assert_eq!(r.u16("charset").unwrap(), 45);
        assert_eq!(r.u32("length").unwrap(), 1024);
        assert_eq!(r.u8("type").unwrap(), column_type::VAR_STRING);
        assert_eq!(r.remaining(), 5);
        // CLIENT_DEPRECATE_EOF: no EOF after the definitions, OK(0xFE) at the end.
        let caps = CLIENT_PROTOCOL_41 | CLIENT_DEPRECATE_EOF;
        let modern = text_result_set(&cols, &rows, caps, status);
        assert_eq!(modern.len(), 5);
        assert_eq!(modern[3], classic[4]);
        let end = &modern[4];
        assert_eq!(end[0], 0xFE);
        assert_eq!(OkPacket::parse(end, caps).unwrap().status, status);
    }

    #[test]
    fn eof_round_trip() {
        let eof = EofPacket {
            warnings: 1,
            status: status::SERVER_MORE_RESULTS_EXISTS,
        };
        let mut buf = Vec::new();
        eof.encode(CAPS, &mut buf);
        assert_eq!(buf, [0xFE, 1, 0, 8, 0]);
        assert!(is_eof(&buf));
        assert_eq!(EofPacket::parse(&buf, CAPS).unwrap(), eof);
        truncations_fail(&buf, |b| EofPacket::parse(b, CAPS));
        assert!(EofPacket::parse(&[0xFE; 9], CAPS).is_err());
        assert!(!is_eof(&[0xFE; 9]));
    }
}
