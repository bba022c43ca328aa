//! Connection phase: the HandshakeV10 greeting, SSLRequest /
//! HandshakeResponse41, AuthSwitchRequest / AuthSwitchResponse, for both
//! sides:
//! - server side (we greet an application): [`InitialHandshake::for_client`],
//!   [`parse_client_hello`], [`HandshakeResponse::needs_native_switch`],
//!   [`AuthSwitchRequest::native`], [`parse_native_auth_response`];
//! - client side (we log in to a backend): [`BackendLogin`].
//!
//! All parsers are pure functions over one packet payload (`&[u8]`).

use bytes::Bytes;

use super::auth::{scramble_response, Sha1Hash, SCRAMBLE_LEN};
use super::constants::{auth_plugin::MYSQL_NATIVE_PASSWORD, capability::*, header};
use super::ed25519::{Ed25519Password, CLIENT_ED25519, NONCE_LEN};
use super::error::{ProtocolError, Result};
use super::response::{ErrPacket, OkPacket};
use super::wire::{utf8, Reader, WriteExt};

/// The only protocol version spoken by MySQL ≥ 3.21 and MariaDB.
pub const PROTOCOL_VERSION: u8 = 10;
/// Size of an SSLRequest payload.
pub const SSL_REQUEST_LEN: usize = 32;

/// Protocol::HandshakeV10 — the server's greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialHandshake {
    pub server_version: String,
    pub connection_id: u32,
    /// auth-plugin-data without the trailing NUL (20 bytes for native).
    pub scramble: Vec<u8>,
    /// Lower 32 capability bits (`CLIENT_*`).
    pub capabilities: u32,
    /// MariaDB extended capabilities (`MARIADB_CLIENT_*`); on the wire only
    /// when `CLIENT_MYSQL` is clear, 0 otherwise.
    pub mariadb_capabilities: u32,
    pub collation: u8,
    pub status: u16,
    pub auth_plugin: String,
}

impl InitialHandshake {
    /// The greeting we send to an application: a fresh scramble and
    /// `mysql_native_password`. `capabilities` should include
    /// `CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH`
    /// and, to present ourselves as MariaDB, leave `CLIENT_MYSQL` clear.
    pub fn for_client(
        server_version: impl Into<String>,
        connection_id: u32,
        capabilities: u32,
        mariadb_capabilities: u32,
        collation: u8,
        status: u16,
    ) -> Self {
        Self {
            server_version: server_version.into(),
            connection_id,
            scramble: super::auth::generate_scramble().to_vec(),
            capabilities,
            mariadb_capabilities,
            collation,
            status,
            auth_plugin: MYSQL_NATIVE_PASSWORD.to_owned(),
        }
    }

    /// The scramble as the fixed 20-byte salt native auth needs.
    pub fn scramble20(&self) -> Result<[u8; SCRAMBLE_LEN]> {
        self.scramble
            .as_slice()
            .try_into()
            .map_err(|_| ProtocolError::Malformed("scramble is not 20 bytes"))
    }

    pub fn encode(&self, out: &mut impl WriteExt) {
        out.put_u8_le(PROTOCOL_VERSION);
        out.put_nul_bytes(strip_nul(self.server_version.as_bytes()));
        out.put_u32_le(self.connection_id);
        let mut part1 = [0u8; 8];
        let n1 = self.scramble.len().min(8);
        part1[..n1].copy_from_slice(&self.scramble[..n1]);
        out.put_bytes_raw(&part1);
        out.put_u8_le(0); // filler
        out.put_u16_le(self.capabilities as u16);
        out.put_u8_le(self.collation);
        out.put_u16_le(self.status);
        out.put_u16_le((self.capabilities >> 16) as u16);
        if self.capabilities & CLIENT_PLUGIN_AUTH != 0 {
            out.put_u8_le((self.scramble.len() + 1).min(255) as u8);
        } else {
            out.put_u8_le(0);
        }
        out.put_zeros(6);
        if self.capabilities & CLIENT_MYSQL == 0 {
            out.put_u32_le(self.mariadb_capabilities);
        } else {
            out.put_zeros(4);
        }
        if self.capabilities & CLIENT_SECURE_CONNECTION != 0 {
            // Part 2 is at least 13 bytes including its NUL terminator.
            let part2 = self.scramble.get(8..).unwrap_or(&[]);
            out.put_bytes_raw(part2);
            out.put_zeros(13usize.saturating_sub(part2.len()).max(1));
        }
        if self.capabilities & CLIENT_PLUGIN_AUTH != 0 {
            out.put_nul_bytes(strip_nul(self.auth_plugin.as_bytes()));
        }
    }

    pub fn to_payload(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(128);
        self.encode(&mut v);
        v
    }

    /// Parses a backend's greeting. An ERR packet in its place (e.g. "Too
    /// many connections", "Host is blocked") is returned as
    /// [`ProtocolError::Server`].
    pub fn parse(payload: &[u8]) -> Result<Self> {
        let mut r = Reader::new(payload);
        let version = r.u8("protocol version")?;
        if version == header::ERR {
            return Err(ProtocolError::Server(ErrPacket::parse(payload)?));
        }
        if version != PROTOCOL_VERSION {
            return Err(ProtocolError::UnsupportedProtocolVersion(version));
        }
        let server_version = String::from_utf8_lossy(r.nul_bytes("server version")?).into_owned();
        let connection_id = r.u32("connection id")?;
        let mut scramble = r.bytes(8, "scramble part 1")?.to_vec();
        r.skip(1, "filler")?;
        let mut capabilities = u32::from(r.u16("capability flags")?);
        let mut collation = 0;
        let mut status = 0;
        let mut mariadb_capabilities = 0;
        let mut auth_plugin = MYSQL_NATIVE_PASSWORD.to_owned();
        // Very old servers stop after the lower capability flags.
        if !r.is_empty() {
            collation = r.u8("collation")?;
            status = r.u16("status flags")?;
            capabilities |= u32::from(r.u16("upper capability flags")?) << 16;
            let data_len = usize::from(r.u8("auth plugin data length")?);
            r.skip(6, "reserved")?;
            let ext = r.u32("MariaDB capabilities")?;
            if capabilities & CLIENT_MYSQL == 0 {
                mariadb_capabilities = ext;
            }
            if capabilities & CLIENT_SECURE_CONNECTION != 0 {
                let len2 = 13usize.max(data_len.saturating_sub(8));
                // Some servers omit the NUL of part 2 at the end of the
                // packet; take what is there up to len2.
                let part2 = r.bytes(len2.min(r.remaining()), "scramble part 2")?;
                let part2 = part2.strip_suffix(&[0]).unwrap_or(part2);
                if part2.len() < 12 {
                    return Err(ProtocolError::Truncated("scramble part 2"));
                }
                scramble.extend_from_slice(part2);
                if data_len > 1 {
                    scramble.truncate(data_len - 1);
                }
            }
            if capabilities & CLIENT_PLUGIN_AUTH != 0 {
                let name = r.nul_or_eof_bytes();
                if name.is_empty() {
                    return Err(ProtocolError::Truncated("auth plugin name"));
                }
                auth_plugin = utf8(name, "auth plugin name")?;
            }
        }
        Ok(Self {
            server_version,
            connection_id,
            scramble,
            capabilities,
            mariadb_capabilities,
            collation,
            status,
            auth_plugin,
        })
    }

    /// True when the server announced itself as MariaDB with extended
    /// capabilities (`CLIENT_MYSQL` clear).
    pub fn is_mariadb(&self) -> bool {
        self.capabilities & CLIENT_MYSQL == 0
    }
}

fn strip_nul(b: &[u8]) -> &[u8] {
    // A NUL inside a NUL-terminated field would cut it short on the peer.
    b.iter().position(|&c| c == 0).map_or(b, |i| &b[..i])
}

/// The client's SSLRequest: the first 32 bytes of a HandshakeResponse41.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SslRequest {
    pub capabilities: u32,
    pub max_packet_size: u32,
    pub collation: u8,
    pub mariadb_capabilities: u32,
}

/// Protocol::HandshakeResponse41.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandshakeResponse {
    pub capabilities: u32,
    pub max_packet_size: u32,
    pub collation: u8,
    /// MariaDB extended capabilities; only on the wire when the client
    /// clears `CLIENT_MYSQL`.
    pub mariadb_capabilities: u32,
    pub user: String,
    pub auth_response: Bytes,
    pub database: Option<String>,
    /// Present only with `CLIENT_PLUGIN_AUTH`.
    pub auth_plugin: Option<String>,
    /// Key/value pairs, only with `CLIENT_CONNECT_ATTRS` (lossy UTF-8: they
    /// are informational).
    pub connect_attrs: Vec<(String, String)>,
}

/// First packet a client sends after our greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHello {
    /// The client wants TLS; the full response follows after the TLS
    /// handshake.
    SslRequest(SslRequest),
    Response(HandshakeResponse),
}

/// Reads the fixed 32-byte prefix shared by SSLRequest and
/// HandshakeResponse41.
fn parse_fixed_prefix(r: &mut Reader<'_>) -> Result<SslRequest> {
    let capabilities = r.u32("client capability flags")?;
    if capabilities & CLIENT_PROTOCOL_41 == 0 {
        // HandshakeResponse320 (pre-4.1 clients) is not supported.
        return Err(ProtocolError::MissingCapability("CLIENT_PROTOCOL_41"));
    }
    let max_packet_size = r.u32("max packet size")?;
    let collation = r.u8("collation")?;
    r.skip(19, "filler")?;
    let ext = r.u32("MariaDB capabilities")?;
    Ok(SslRequest {
        capabilities,
        max_packet_size,
        collation,
        mariadb_capabilities: if capabilities & CLIENT_MYSQL == 0 {
            ext
        } else {
            0
        },
    })
}

/// Parses the client's first packet: an SSLRequest (exactly 32 bytes with
/// `CLIENT_SSL`) or a HandshakeResponse41.
pub fn parse_client_hello(payload: &[u8]) -> Result<ClientHello> {
    let mut r = Reader::new(payload);
    let prefix = parse_fixed_prefix(&mut r)?;
    if r.is_empty() {
        if prefix.capabilities & CLIENT_SSL != 0 {
            return Ok(ClientHello::SslRequest(prefix));
        }
        return Err(ProtocolError::Truncated("user name"));
    }
    HandshakeResponse::parse_rest(prefix, &mut r).map(ClientHello::Response)
}

impl HandshakeResponse {
    /// Parses a full HandshakeResponse41 (an SSLRequest is an error here;
    /// use [`parse_client_hello`] for the first packet).
    pub fn parse(payload: &[u8]) -> Result<Self> {
        let mut r = Reader::new(payload);
        let prefix = parse_fixed_prefix(&mut r)?;
        Self::parse_rest(prefix, &mut r)
    }

    fn parse_rest(prefix: SslRequest, r: &mut Reader<'_>) -> Result<Self> {
        let caps = prefix.capabilities;
        let user = utf8(r.nul_bytes("user name")?, "user name")?;
        let auth_response = if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            r.lenenc_bytes("auth response")?
        } else if caps & CLIENT_SECURE_CONNECTION != 0 {
            let n = usize::from(r.u8("auth response length")?);
            r.bytes(n, "auth response")?
        } else {
            r.nul_bytes("auth response")?
        };
        let database = if caps & CLIENT_CONNECT_WITH_DB != 0 && !r.is_empty() {
            // Clients set CONNECT_WITH_DB without a schema; an empty name
            // means none.
            let db = utf8(r.nul_or_eof_bytes(), "database")?;
            (!db.is_empty()).then_some(db)
        } else {
            None
        };
        let auth_plugin = if caps & CLIENT_PLUGIN_AUTH != 0 && !r.is_empty() {
            Some(utf8(r.nul_or_eof_bytes(), "auth plugin name")?)
        } else {
            None
        };
        let mut connect_attrs = Vec::new();
        if caps & CLIENT_CONNECT_ATTRS != 0 && !r.is_empty() {
            let block = r.lenenc_bytes("connect attributes")?;
            let mut a = Reader::new(block);
            while !a.is_empty() {
                let k = a.lenenc_bytes("connect attribute name")?;
                let v = a.lenenc_bytes("connect attribute value")?;
                connect_attrs.push((
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                ));
            }
        }
        // Anything after (MySQL 8's zstd level) is ignored, as servers do.
        Ok(Self {
            capabilities: caps,
            max_packet_size: prefix.max_packet_size,
            collation: prefix.collation,
            mariadb_capabilities: prefix.mariadb_capabilities,
            user,
            auth_response: Bytes::copy_from_slice(auth_response),
            database,
            auth_plugin,
            connect_attrs,
        })
    }

    /// Encodes honouring `self.capabilities` (fields whose capability bit is
    /// clear are not written).
    pub fn encode(&self, out: &mut impl WriteExt) {
        let caps = self.capabilities;
        out.put_u32_le(caps);
        out.put_u32_le(self.max_packet_size);
        out.put_u8_le(self.collation);
        out.put_zeros(19);
        if caps & CLIENT_MYSQL == 0 {
            out.put_u32_le(self.mariadb_capabilities);
        } else {
            out.put_zeros(4);
        }
        out.put_nul_bytes(strip_nul(self.user.as_bytes()));
        if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            out.put_lenenc_bytes(&self.auth_response);
        } else if caps & CLIENT_SECURE_CONNECTION != 0 {
            let n = self.auth_response.len().min(255);
            out.put_u8_le(n as u8);
            out.put_bytes_raw(&self.auth_response[..n]);
        } else {
            out.put_nul_bytes(strip_nul(&self.auth_response));
        }
        if caps & CLIENT_CONNECT_WITH_DB != 0 {
            out.put_nul_bytes(strip_nul(self.database.as_deref().unwrap_or("").as_bytes()));
        }
        if caps & CLIENT_PLUGIN_AUTH != 0 {
            let plugin = self.auth_plugin.as_deref().unwrap_or(MYSQL_NATIVE_PASSWORD);
            out.put_nul_bytes(strip_nul(plugin.as_bytes()));
        }
        if caps & CLIENT_CONNECT_ATTRS != 0 {
            let mut block = Vec::new();
            for (k, v) in &self.connect_attrs {
                block.put_lenenc_bytes(k.as_bytes());
                block.put_lenenc_bytes(v.as_bytes());
            }
            out.put_lenenc_bytes(&block);
        }
    }

    pub fn to_payload(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(128 + self.auth_response.len());
        self.encode(&mut v);
        v
    }

    /// True when the client's auth response was made for another plugin
    /// (e.g. `caching_sha2_password`), so we must send an AuthSwitchRequest
    /// to `mysql_native_password` before checking its password. Without
    /// `CLIENT_PLUGIN_AUTH` a client always speaks native.
    pub fn needs_native_switch(&self) -> bool {
        self.capabilities & CLIENT_PLUGIN_AUTH != 0
            && self
                .auth_plugin
                .as_deref()
                .is_some_and(|p| !p.is_empty() && p != MYSQL_NATIVE_PASSWORD)
    }

    /// True when the client can follow an AuthSwitchRequest.
    pub fn supports_auth_switch(&self) -> bool {
        self.capabilities & CLIENT_PLUGIN_AUTH != 0
    }
}

/// AuthSwitchRequest (0xFE, plugin name, plugin data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSwitchRequest {
    pub plugin: String,
    /// Plugin data without the trailing NUL MariaDB appends.
    pub data: Vec<u8>,
}

impl AuthSwitchRequest {
    /// Switch to `mysql_native_password` reusing the greeting's scramble (a
    /// fresh one would be equally valid, but reusing it keeps a single salt
    /// per connection for the recovery of SHA1(pw)).
    pub fn native(scramble: &[u8]) -> Self {
        Self {
            plugin: MYSQL_NATIVE_PASSWORD.to_owned(),
            data: scramble.to_vec(),
        }
    }

    pub fn encode(&self, out: &mut impl WriteExt) {
        out.put_u8_le(header::AUTH_SWITCH);
        out.put_nul_bytes(strip_nul(self.plugin.as_bytes()));
        out.put_bytes_raw(&self.data);
        // MariaDB and MySQL terminate a scramble with NUL; client_ed25519
        // wants exactly its 32-byte nonce.
        if self.plugin != CLIENT_ED25519 {
            out.put_u8_le(0);
        }
    }

    pub fn to_payload(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.plugin.len() + self.data.len() + 3);
        self.encode(&mut v);
        v
    }

    pub fn parse(payload: &[u8]) -> Result<Self> {
        let mut r = Reader::new(payload);
        let first = r.u8("auth switch header")?;
        if first != header::AUTH_SWITCH {
            return Err(ProtocolError::UnexpectedPacket {
                expected: "AuthSwitchRequest",
                first,
            });
        }
        if r.is_empty() {
            // Old-password switch request (a lone 0xFE): pre-4.1 hashing.
            return Err(ProtocolError::UnsupportedAuthPlugin(
                "mysql_old_password".to_owned(),
            ));
        }
        let plugin = utf8(
            r.nul_bytes("auth switch plugin name")?,
            "auth switch plugin name",
        )?;
        let data = r.rest();
        // An ed25519 nonce is raw bytes (its last may be 0).
        let data = if plugin == CLIENT_ED25519 {
            data
        } else {
            data.strip_suffix(&[0]).unwrap_or(data)
        };
        Ok(Self {
            plugin,
            data: data.to_vec(),
        })
    }
}

/// Validates a native-password AuthSwitchResponse payload: 20 bytes, or
/// empty for an empty password.
pub fn parse_native_auth_response(payload: &[u8]) -> Result<&[u8]> {
    match payload.len() {
        0 | SCRAMBLE_LEN => Ok(payload),
        _ => Err(ProtocolError::Malformed(
            "mysql_native_password response must be 0 or 20 bytes",
        )),
    }
}

/// What the caller of [`BackendLogin`] must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginStep {
    /// Send this payload with sequence id = (received packet's seq + 1).
    Send(Vec<u8>),
    /// Logged in; the backend's OK packet.
    Done(OkPacket),
}

/// What we need to log in to a backend as the application's user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendLoginParams {
    /// Capabilities to request (normally the client session's own); they
    /// are intersected with the backend's (see
    /// [`BackendLogin::capabilities`]).
    pub capabilities: u32,
    pub mariadb_capabilities: u32,
    pub max_packet_size: u32,
    pub collation: u8,
    pub user: String,
    pub database: Option<String>,
    /// SHA1(password); `None` for an account without password.
    pub sha1_password: Option<Sha1Hash>,
    /// The password of an ed25519 account (configured): answers a
    /// `client_ed25519` switch.
    pub ed25519: Option<Ed25519Password>,
    pub connect_attrs: Vec<(String, String)>,
}

/// Client-side login state machine, I/O free:
/// ```text
/// greeting (seq 0) -> BackendLogin::start -> send response (seq 1)
/// loop { packet (seq n) -> on_packet -> Send(p) at seq n+1 | Done(ok) | Err }
/// ```
#[derive(Debug, Clone)]
pub struct BackendLogin {
    greeting: InitialHandshake,
    params: BackendLoginParams,
    capabilities: u32,
    mariadb_capabilities: u32,
    switched: bool,
}

impl BackendLogin {
    /// Parses the backend's greeting and builds our HandshakeResponse41.
    pub fn start(greeting_payload: &[u8], params: BackendLoginParams) -> Result<(Self, Vec<u8>)> {
        let greeting = InitialHandshake::parse(greeting_payload)?;
        Self::start_with(greeting, params)
    }

    /// As [`BackendLogin::start`] with an already parsed greeting.
    pub fn start_with(
        greeting: InitialHandshake,
        params: BackendLoginParams,
    ) -> Result<(Self, Vec<u8>)> {
        for (bit, name) in [
            (CLIENT_PROTOCOL_41, "CLIENT_PROTOCOL_41"),
            (CLIENT_SECURE_CONNECTION, "CLIENT_SECURE_CONNECTION"),
        ] {
            if greeting.capabilities & bit == 0 {
                return Err(ProtocolError::MissingCapability(name));
            }
        }
        // CLIENT_MYSQL is ours to choose (clear = we speak MariaDB
        // extensions); every other bit needs the server's agreement.
        let mut capabilities =
            (params.capabilities & greeting.capabilities) | (params.capabilities & CLIENT_MYSQL);
        capabilities |= CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION;
        // No TLS or compression toward backends: a set CLIENT_SSL would make
        // the server expect a TLS handshake.
        capabilities &= !(CLIENT_SSL | CLIENT_COMPRESS | CLIENT_SSL_VERIFY_SERVER_CERT);
        if params.database.is_some() {
            capabilities |= CLIENT_CONNECT_WITH_DB & greeting.capabilities;
        } else {
            capabilities &= !CLIENT_CONNECT_WITH_DB;
        }
        if !greeting.is_mariadb() {
            // Extended capabilities only exist between MariaDB peers.
            capabilities |= CLIENT_MYSQL;
        }
        let mariadb_capabilities = if capabilities & CLIENT_MYSQL == 0 {
            params.mariadb_capabilities & greeting.mariadb_capabilities
        } else {
            0
        };
        // With another default plugin (MySQL 8: caching_sha2_password) we
        // still answer native over the first 20 bytes of the same scramble;
        // a server whose account uses native accepts it, otherwise it sends
        // an AuthSwitchRequest.
        let salt = greeting
            .scramble
            .get(..SCRAMBLE_LEN)
            .ok_or(ProtocolError::Truncated("greeting scramble"))?;
        let auth_response = match &params.sha1_password {
            Some(pw) => scramble_response(pw, salt).to_vec(),
            None => Vec::new(),
        };
        let response = HandshakeResponse {
            capabilities,
            max_packet_size: params.max_packet_size,
            collation: params.collation,
            mariadb_capabilities,
            user: params.user.clone(),
            auth_response: Bytes::from(auth_response),
            database: params.database.clone(),
            auth_plugin: Some(MYSQL_NATIVE_PASSWORD.to_owned()),
            connect_attrs: params.connect_attrs.clone(),
        };
        let payload = response.to_payload();
        Ok((
            Self {
                greeting,
                params,
                capabilities,
                mariadb_capabilities,
                switched: false,
            },
            payload,
        ))
    }

    /// Feeds the backend's next packet.
    pub fn on_packet(&mut self, payload: &[u8]) -> Result<LoginStep> {
        let first = *payload
            .first()
            .ok_or(ProtocolError::EmptyPacket("authentication result"))?;
        match first {
            header::OK => Ok(LoginStep::Done(OkPacket::parse(
                payload,
                self.capabilities,
            )?)),
            header::ERR => Err(ProtocolError::Server(ErrPacket::parse(payload)?)),
            header::AUTH_SWITCH => {
                if self.switched {
                    return Err(ProtocolError::Malformed("second AuthSwitchRequest"));
                }
                self.switched = true;
                let switch = AuthSwitchRequest::parse(payload)?;
                if switch.plugin == CLIENT_ED25519 {
                    let Some(pw) = &self.params.ed25519 else {
                        return Err(ProtocolError::UnsupportedAuthPlugin(switch.plugin));
                    };
                    if switch.data.len() != NONCE_LEN {
                        return Err(ProtocolError::Malformed(
                            "client_ed25519 nonce is not 32 bytes",
                        ));
                    }
                    return Ok(LoginStep::Send(pw.sign(&switch.data).to_vec()));
                }
                if switch.plugin != MYSQL_NATIVE_PASSWORD {
                    return Err(ProtocolError::UnsupportedAuthPlugin(switch.plugin));
                }
                if switch.data.len() < SCRAMBLE_LEN {
                    return Err(ProtocolError::Truncated("auth switch scramble"));
                }
                let response = match &self.params.sha1_password {
                    Some(pw) => scramble_response(pw, &switch.data[..SCRAMBLE_LEN]).to_vec(),
                    None => Vec::new(),
                };
                Ok(LoginStep::Send(response))
            }
            first => Err(ProtocolError::UnexpectedPacket {
                expected: "OK, ERR or AuthSwitchRequest",
                first,
            }),
        }
    }

    /// The backend's greeting.
    pub fn greeting(&self) -> &InitialHandshake {
        &self.greeting
    }

    /// Capabilities actually sent to the backend (compare with the client's
    /// to decide whether the backend can carry the session unchanged).
    pub fn capabilities(&self) -> u32 {
        self.capabilities
    }

    pub fn mariadb_capabilities(&self) -> u32 {
        self.mariadb_capabilities
    }
}

/// Greeting version when no backend has been seen yet. The "5.5.5-" prefix
/// is what MariaDB itself sends, for old clients' version checks.
pub const DEFAULT_SERVER_VERSION: &str = "5.5.5-10.11.0-MariaDB-redirector";

/// What the redirector's own greeting advertises: the backends' version,
/// and the capabilities both they and the relay support.
#[derive(Debug, Clone)]
pub struct GreetingTemplate {
    pub server_version: String,
    pub capabilities: u32,
    /// MariaDB extended capabilities offered to clients (what the backend
    /// offers, of [`RELAYABLE_MARIADB`]).
    pub mariadb_capabilities: u32,
    pub collation: u8,
}

/// MariaDB extended capabilities the relay and the state machine follow:
/// progress reports, bulk execution, extended column metadata (JSON and
/// other type names) and cached result-set metadata. Bulk unit results
/// (11.5+) change the shape of bulk responses and are not offered.
pub const RELAYABLE_MARIADB: u32 = super::constants::mariadb_capability::MARIADB_CLIENT_PROGRESS
    | super::constants::mariadb_capability::MARIADB_CLIENT_STMT_BULK_OPERATIONS
    | super::constants::mariadb_capability::MARIADB_CLIENT_EXTENDED_METADATA
    | super::constants::mariadb_capability::MARIADB_CLIENT_CACHE_METADATA;

impl Default for GreetingTemplate {
    fn default() -> Self {
        Self {
            server_version: DEFAULT_SERVER_VERSION.to_string(),
            capabilities: RELAYABLE,
            mariadb_capabilities: 0,
            collation: super::constants::collation::UTF8MB4_GENERAL_CI,
        }
    }
}

impl GreetingTemplate {
    /// Adopts a backend's greeting.
    pub fn from_backend(g: &InitialHandshake) -> Self {
        Self {
            server_version: g.server_version.clone(),
            capabilities: (g.capabilities & RELAYABLE)
                | CLIENT_PROTOCOL_41
                | CLIENT_SECURE_CONNECTION
                | CLIENT_PLUGIN_AUTH,
            mariadb_capabilities: if g.is_mariadb() {
                g.mariadb_capabilities & RELAYABLE_MARIADB
            } else {
                0
            },
            collation: g.collation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::auth::{double_sha1, recover_sha1_password, sha1_password};
    use crate::protocol::constants::{collation, mariadb_capability::*, status};

    const SERVER_CAPS: u32 = CLIENT_FOUND_ROWS
        | CLIENT_LONG_FLAG
        | CLIENT_CONNECT_WITH_DB
        | CLIENT_PROTOCOL_41
        | CLIENT_TRANSACTIONS
        | CLIENT_SECURE_CONNECTION
        | CLIENT_MULTI_STATEMENTS
        | CLIENT_MULTI_RESULTS
        | CLIENT_PS_MULTI_RESULTS
        | CLIENT_PLUGIN_AUTH
        | CLIENT_CONNECT_ATTRS
        | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CLIENT_SESSION_TRACK
        | CLIENT_DEPRECATE_EOF;

    fn every_prefix_fails<T: std::fmt::Debug>(full: &[u8], f: impl Fn(&[u8]) -> Result<T>) {
        for cut in 0..full.len() {
            let r = f(&full[..cut]);
            assert!(
                r.is_err(),
                "prefix of {cut}/{} bytes parsed: {r:?}",
                full.len()
            );
        }
    }

    /// Every cut of a greeting fails, except: the (ancient but legal) cut
    /// right after the lower capability flags, and cuts inside the trailing
    /// plugin name, whose NUL terminator servers may omit.
    fn greeting_truncations(payload: &[u8], full: &InitialHandshake) {
        let short_legal = 1 + full.server_version.len() + 1 + 4 + 8 + 1 + 2;
        let plugin_start = payload.len() - full.auth_plugin.len() - 1;
        for cut in 0..payload.len() {
            let r = InitialHandshake::parse(&payload[..cut]);
            if cut == short_legal {
                assert_eq!(r.unwrap().scramble.len(), 8);
            } else if cut > plugin_start {
                let g = r.unwrap();
                assert_eq!(g.scramble, full.scramble);
                assert!(full.auth_plugin.starts_with(&g.auth_plugin));
            } else {
                assert!(r.is_err(), "cut {cut}/{}: {r:?}", payload.len());
            }
        }
    }

    /// A greeting laid out like MariaDB 10.11's (version prefix "5.5.5-",
    /// CLIENT_MYSQL clear, extended capabilities in the reserved bytes).
    const MARIADB_GREETING: &[u8] = b"\x0a5.5.5-10.11.6-MariaDB-0+deb12u1\0\x03\0\0\0\
        `Fy4T>ub\0\xfe\xf7\x2d\x02\0\xff\x81\x15\0\0\0\0\0\0\x1d\0\0\0\
        8Qj6:AGN4w{h\0mysql_native_password\0";

    #[test]
    fn parse_real_mariadb_greeting() {
        let g = InitialHandshake::parse(MARIADB_GREETING).unwrap();
        assert_eq!(g.server_version, "5.5.5-10.11.6-MariaDB-0+deb12u1");
        assert_eq!(g.connection_id, 3);
        assert_eq!(g.scramble, b"`Fy4T>ub8Qj6:AGN4w{h");
        assert_eq!(g.collation, collation::UTF8MB4_GENERAL_CI);
        assert_eq!(g.status, status::SERVER_STATUS_AUTOCOMMIT);
        assert!(g.is_mariadb());
        assert_eq!(g.capabilities & CLIENT_MYSQL, 0);
        assert_ne!(g.capabilities & CLIENT_DEPRECATE_EOF, 0);
        assert_eq!(
            g.mariadb_capabilities,
            MARIADB_CLIENT_PROGRESS
                | MARIADB_CLIENT_STMT_BULK_OPERATIONS
                | MARIADB_CLIENT_EXTENDED_METADATA
                | MARIADB_CLIENT_CACHE_METADATA
        );
        assert_eq!(g.auth_plugin, "mysql_native_password");
        // Re-encoding yields the same bytes.
        assert_eq!(g.to_payload(), MARIADB_GREETING);
        greeting_truncations(MARIADB_GREETING, &g);
    }

    #[test]
    fn greeting_round_trip_and_truncation() {
        let g = InitialHandshake::for_client(
            "10.11.6-MariaDB-redirector",
            42,
            SERVER_CAPS,
            MARIADB_CLIENT_STMT_BULK_OPERATIONS,
            collation::UTF8MB4_GENERAL_CI,
            status::SERVER_STATUS_AUTOCOMMIT,
        );
        assert_eq!(g.scramble.len(), 20);
        let payload = g.to_payload();
        let parsed = InitialHandshake::parse(&payload).unwrap();
        assert_eq!(parsed, g);
        assert_eq!(parsed.scramble20().unwrap().to_vec(), g.scramble);
        greeting_truncations(&payload, &g);
        // A MySQL-style greeting (CLIENT_MYSQL set) does not carry the
        // MariaDB capabilities.
        let mut mysql = g.clone();
        mysql.capabilities |= CLIENT_MYSQL;
        let parsed = InitialHandshake::parse(&mysql.to_payload()).unwrap();
        assert_eq!(parsed.mariadb_capabilities, 0);
        assert!(!parsed.is_mariadb());
    }

    #[test]
    fn greeting_errors() {
        assert!(matches!(
            InitialHandshake::parse(&[9, b'x', 0]),
            Err(ProtocolError::UnsupportedProtocolVersion(9))
        ));
        let err = crate::protocol::response::ErrPacket::too_many_connections()
            .to_payload(CLIENT_PROTOCOL_41);
        match InitialHandshake::parse(&err) {
            Err(ProtocolError::Server(e)) => assert_eq!(e.code, 1040),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            InitialHandshake::parse(&[]),
            Err(ProtocolError::Truncated(_))
        ));
    }

    fn sample_response() -> HandshakeResponse {
        HandshakeResponse {
            capabilities: SERVER_CAPS,
            max_packet_size: 16 << 20,
            collation: collation::UTF8MB4_GENERAL_CI,
            mariadb_capabilities: MARIADB_CLIENT_STMT_BULK_OPERATIONS | MARIADB_CLIENT_PROGRESS,
            user: "app".into(),
            auth_response: Bytes::from(vec![7u8; 20]),
            database: Some("shop".into()),
            auth_plugin: Some("mysql_native_password".into()),
            connect_attrs: vec![
                ("_client_name".into(), "libmariadb".into()),
                ("_pid".into(), "1234".into()),
            ],
        }
    }

    #[test]
    fn response_round_trip_and_truncation() {
        let resp = sample_response();
        let payload = resp.to_payload();
        assert_eq!(
            parse_client_hello(&payload).unwrap(),
            ClientHello::Response(resp.clone())
        );
        assert_eq!(HandshakeResponse::parse(&payload).unwrap(), resp);
        // Cuts before the end of the attribute block fail, except cuts that
        // land exactly at an optional trailing field boundary, where the
        // result must visibly lack that field.
        for cut in 0..payload.len() {
            match HandshakeResponse::parse(&payload[..cut]) {
                Err(_) => {}
                Ok(p) => assert_ne!(p, resp, "cut {cut} parsed as the full response"),
            }
        }
    }

    #[test]
    fn response_without_optional_fields_and_variants() {
        // SECURE_CONNECTION 1-byte length, no db, no plugin, no attrs,
        // MySQL-style client (CLIENT_MYSQL set → no MariaDB caps).
        let resp = HandshakeResponse {
            capabilities: CLIENT_MYSQL | CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION,
            max_packet_size: 1 << 24,
            collation: 8,
            mariadb_capabilities: 0,
            user: "root".into(),
            auth_response: Bytes::new(),
            database: None,
            auth_plugin: None,
            connect_attrs: vec![],
        };
        let payload = resp.to_payload();
        assert_eq!(payload.len(), 32 + 5 + 1);
        assert_eq!(HandshakeResponse::parse(&payload).unwrap(), resp);
        every_prefix_fails(&payload, HandshakeResponse::parse);

        // Plugin name without its NUL at the end of the packet is accepted.
        let mut r2 = resp.clone();
        r2.capabilities |= CLIENT_PLUGIN_AUTH;
        r2.auth_plugin = Some("caching_sha2_password".into());
        let mut p2 = r2.to_payload();
        p2.pop();
        let parsed = HandshakeResponse::parse(&p2).unwrap();
        assert_eq!(parsed, r2);
        assert!(parsed.needs_native_switch());
        assert!(parsed.supports_auth_switch());
        assert!(!sample_response().needs_native_switch());

        // Pre-4.1 clients are refused.
        let mut old = payload.clone();
        old[1] &= !((CLIENT_PROTOCOL_41 >> 8) as u8);
        assert!(matches!(
            parse_client_hello(&old),
            Err(ProtocolError::MissingCapability("CLIENT_PROTOCOL_41"))
        ));

        // Invalid UTF-8 user name.
        let mut bad = payload.clone();
        bad[32] = 0xFF;
        assert!(matches!(
            HandshakeResponse::parse(&bad),
            Err(ProtocolError::InvalidUtf8("user name"))
        ));

        // Attribute block claiming more bytes than present.
        let mut attrs = sample_response();
        attrs.connect_attrs = vec![("k".into(), "v".into())];
        let mut p = attrs.to_payload();
        let n = p.len();
        p[n - 5] = 50; // the block length byte
        assert!(HandshakeResponse::parse(&p).is_err());
    }

    #[test]
    fn ssl_request() {
        let mut v = Vec::new();
        v.put_u32_le(CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION);
        v.put_u32_le(1 << 24);
        v.put_u8_le(45);
        v.put_zeros(19);
        v.put_u32_le(MARIADB_CLIENT_PROGRESS);
        assert_eq!(v.len(), SSL_REQUEST_LEN);
        match parse_client_hello(&v).unwrap() {
            ClientHello::SslRequest(s) => {
                assert_eq!(s.collation, 45);
                assert_eq!(s.max_packet_size, 1 << 24);
                assert_eq!(s.mariadb_capabilities, MARIADB_CLIENT_PROGRESS);
            }
            other => panic!("{other:?}"),
        }
        every_prefix_fails(&v, parse_client_hello);
        // 32 bytes without CLIENT_SSL is a truncated response.
        v[1] &= !((CLIENT_SSL >> 8) as u8);
        assert!(matches!(
            parse_client_hello(&v),
            Err(ProtocolError::Truncated("user name"))
        ));
    }

    #[test]
    fn auth_switch_round_trip() {
        let scramble = crate::protocol::auth::generate_scramble();
        let sw = AuthSwitchRequest::native(&scramble);
        let payload = sw.to_payload();
        assert_eq!(payload[0], 0xFE);
        assert_eq!(payload.len(), 1 + 22 + 20 + 1);
        assert_eq!(AuthSwitchRequest::parse(&payload).unwrap(), sw);
        for cut in 0..23 {
            assert!(
                AuthSwitchRequest::parse(&payload[..cut]).is_err(),
                "cut {cut}"
            );
        }
        assert!(matches!(
            AuthSwitchRequest::parse(&[0xFE]),
            Err(ProtocolError::UnsupportedAuthPlugin(_))
        ));
        assert_eq!(parse_native_auth_response(&[1; 20]).unwrap(), &[1; 20]);
        assert!(parse_native_auth_response(&[]).unwrap().is_empty());
        assert!(parse_native_auth_response(&[1; 21]).is_err());
    }

    fn params(pw: Option<&[u8]>) -> BackendLoginParams {
        BackendLoginParams {
            capabilities: SERVER_CAPS | CLIENT_QUERY_ATTRIBUTES | CLIENT_SSL | CLIENT_COMPRESS,
            mariadb_capabilities: MARIADB_CLIENT_STMT_BULK_OPERATIONS
                | MARIADB_CLIENT_BULK_UNIT_RESULTS,
            max_packet_size: 16 << 20,
            collation: collation::UTF8MB4_GENERAL_CI,
            user: "app".into(),
            database: Some("shop".into()),
            sha1_password: pw.map(sha1_password),
            ed25519: None,
            connect_attrs: vec![("_client_name".into(), "redirector".into())],
        }
    }

    #[test]
    fn backend_login_direct_ok() {
        let (mut login, resp_payload) =
            BackendLogin::start(MARIADB_GREETING, params(Some(b"password"))).unwrap();
        // What the backend sees: a response whose native answer verifies
        // against the stored hash with the greeting's scramble.
        let resp = HandshakeResponse::parse(&resp_payload).unwrap();
        assert_eq!(resp.user, "app");
        assert_eq!(resp.database.as_deref(), Some("shop"));
        assert_eq!(resp.auth_plugin.as_deref(), Some("mysql_native_password"));
        let g = login.greeting().clone();
        assert_eq!(
            recover_sha1_password(&resp.auth_response, &g.scramble, &double_sha1(b"password")),
            Some(sha1_password(b"password"))
        );
        // QUERY_ATTRIBUTES was not offered by the server, so it is not
        // requested; SSL and COMPRESS are never requested toward backends.
        assert_eq!(login.capabilities() & CLIENT_QUERY_ATTRIBUTES, 0);
        assert_eq!(login.capabilities() & (CLIENT_SSL | CLIENT_COMPRESS), 0);
        assert_eq!(login.capabilities() & SERVER_CAPS, SERVER_CAPS);
        assert_eq!(resp.capabilities, login.capabilities());
        assert_eq!(
            login.mariadb_capabilities(),
            MARIADB_CLIENT_STMT_BULK_OPERATIONS
        );
        assert_eq!(
            resp.mariadb_capabilities,
            MARIADB_CLIENT_STMT_BULK_OPERATIONS
        );
        match login.on_packet(&[0, 0, 0, 2, 0, 0, 0]).unwrap() {
            LoginStep::Done(ok) => assert_eq!(ok.status, status::SERVER_STATUS_AUTOCOMMIT),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn backend_login_switch_err_and_unsupported() {
        let (mut login, _) = BackendLogin::start(MARIADB_GREETING, params(Some(b"pw"))).unwrap();
        let new_salt = *b"ABCDEFGHIJKLMNOPQRST";
        let step = login
            .on_packet(&AuthSwitchRequest::native(&new_salt).to_payload())
            .unwrap();
        assert_eq!(
            step,
            LoginStep::Send(
                crate::protocol::auth::scramble_response(&sha1_password(b"pw"), &new_salt).to_vec()
            )
        );
        // A second switch is a protocol violation.
        assert!(login
            .on_packet(&AuthSwitchRequest::native(&new_salt).to_payload())
            .is_err());

        let (mut login, _) = BackendLogin::start(MARIADB_GREETING, params(None)).unwrap();
        let err =
            ErrPacket::access_denied("app", "localhost", false).to_payload(CLIENT_PROTOCOL_41);
        match login.on_packet(&err) {
            Err(ProtocolError::Server(e)) => {
                assert_eq!(e.code, 1045);
                assert_eq!(
                    e.message,
                    "Access denied for user 'app'@'localhost' (using password: NO)"
                );
            }
            other => panic!("{other:?}"),
        }

        for plugin in ["caching_sha2_password", "client_ed25519"] {
            let (mut login, _) =
                BackendLogin::start(MARIADB_GREETING, params(Some(b"pw"))).unwrap();
            let sw = AuthSwitchRequest {
                plugin: plugin.into(),
                data: vec![1; 20],
            };
            match login.on_packet(&sw.to_payload()) {
                Err(ProtocolError::UnsupportedAuthPlugin(p)) => assert_eq!(p, plugin),
                other => panic!("{other:?}"),
            }
        }
        // With the ed25519 password: the nonce (ending in 0, kept) is signed.
        let pw = crate::protocol::ed25519::Ed25519Password::new(b"pw");
        let (mut login, _) = BackendLogin::start(
            MARIADB_GREETING,
            BackendLoginParams {
                ed25519: Some(pw.clone()),
                ..params(Some(b"pw"))
            },
        )
        .unwrap();
        let mut nonce = vec![7u8; 31];
        nonce.push(0);
        let sw = AuthSwitchRequest {
            plugin: "client_ed25519".into(),
            data: nonce.clone(),
        };
        assert_eq!(sw.to_payload().len(), 1 + 15 + 32, "no NUL after the nonce");
        match login.on_packet(&sw.to_payload()) {
            Ok(LoginStep::Send(sig)) => {
                assert!(crate::protocol::ed25519::verify(
                    &pw.public_key(),
                    &nonce,
                    &sig
                ))
            }
            other => panic!("{other:?}"),
        }
        let (mut login, _) = BackendLogin::start(MARIADB_GREETING, params(None)).unwrap();
        assert!(matches!(
            login.on_packet(&[]),
            Err(ProtocolError::EmptyPacket(_))
        ));
        assert!(matches!(
            login.on_packet(&[0x01, 4]),
            Err(ProtocolError::UnexpectedPacket { first: 1, .. })
        ));
    }

    #[test]
    fn backend_login_to_mysql8_style_server() {
        // MySQL-style greeting with caching_sha2_password as default plugin.
        let g = InitialHandshake {
            server_version: "8.0.36".into(),
            connection_id: 9,
            scramble: b"01234567890123456789".to_vec(),
            capabilities: SERVER_CAPS | CLIENT_MYSQL,
            mariadb_capabilities: 0,
            collation: 255,
            status: 2,
            auth_plugin: "caching_sha2_password".into(),
        };
        let (login, payload) = BackendLogin::start(&g.to_payload(), params(Some(b"x"))).unwrap();
        let resp = HandshakeResponse::parse(&payload).unwrap();
        assert_ne!(resp.capabilities & CLIENT_MYSQL, 0);
        assert_eq!(resp.mariadb_capabilities, 0);
        assert_eq!(login.mariadb_capabilities(), 0);
        assert_eq!(resp.auth_plugin.as_deref(), Some("mysql_native_password"));
        assert_eq!(resp.auth_response.len(), 20);
    }
}
