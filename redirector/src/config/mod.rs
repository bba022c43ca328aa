//! The TOML configuration: parsing, defaults, resolution and validation.
//!
//! Loading is three steps, pingora-style:
//! 1. serde parses the file into raw structs (`deny_unknown_fields` everywhere,
//!    so typos are errors with toml's line and column);
//! 2. [`Config::parse`] resolves it: addresses (hostnames via `ToSocketAddrs`),
//!    relative paths (against the config file's directory), password hashes,
//!    the policy document (file or inline), defaults;
//! 3. [`Config::validate`] checks the cross-field rules (at least one server,
//!    unique names, weights > 0, client accounts present, policy naming known
//!    servers, admin security, files that must exist).
//!
//! Every error is a [`ConfigError`] whose message is one line that names the
//! config file and the offending key/value.

mod policy;

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use policy::{
    parse_policy, ClusterResourceGroup, ClusterWeight, PolicyDocument, PolicyError, ScalingPolicy,
    POLICY_VERSION,
};

/// Default client-facing listen address.
pub const DEFAULT_LISTEN_ADDRESS: &str = "127.0.0.1:3306";
/// Default admin SQL (MySQL protocol) address.
pub const DEFAULT_ADMIN_SQL_ADDRESS: &str = "127.0.0.1:6033";
/// Default REST API / metrics address.
pub const DEFAULT_ADMIN_HTTP_ADDRESS: &str = "127.0.0.1:9104";
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1000;
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// MariaDB's `net_read_timeout` default (30 s).
pub const DEFAULT_NET_READ_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_MAX_HANDSHAKES: u32 = 256;
/// 512 MiB: 32 clients sending a 16 MiB packet at once.
pub const DEFAULT_MAX_BUFFERED_BYTES: u64 = 512 << 20;
pub const DEFAULT_ADMIN_USER: &str = "admin";
/// Defaults of the `[admin]` limits (see [`AdminLimits`]).
pub const DEFAULT_ADMIN_SQL_MAX_CONNECTIONS: u32 = 64;
pub const DEFAULT_ADMIN_SQL_LOGIN_TIMEOUT_MS: u64 = 5_000;
/// Time budget of one admin SQL query (SQLite interrupts it past this).
pub const DEFAULT_ADMIN_SQL_QUERY_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_ADMIN_HTTP_MAX_CONNECTIONS: u32 = 64;
pub const DEFAULT_ADMIN_HTTP_HEADER_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_ADMIN_HTTP_BODY_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_ADMIN_HTTP_MAX_BODY_BYTES: u64 = 1 << 20;
pub const DEFAULT_ADMIN_AUTH_BACKOFF_INITIAL_MS: u64 = 100;
pub const DEFAULT_ADMIN_AUTH_BACKOFF_MAX_MS: u64 = 10_000;

/// A configuration error. Each message is a single line, prefixed by the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config file: {error}", file.display())]
    Read {
        file: PathBuf,
        error: std::io::Error,
    },
    /// TOML syntax, unknown keys, wrong types; position from toml.
    #[error("{}:{line}:{column}: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A value that is present but not acceptable (bad address, weight 0 …).
    #[error("{}: {key} = {value}: {reason}", file.display())]
    InvalidValue {
        file: PathBuf,
        /// Dotted key, e.g. `servers[1].weight`.
        key: String,
        /// The value as written (strings quoted).
        value: String,
        reason: String,
    },
    #[error("{}: missing {key}: {reason}", file.display())]
    Missing {
        file: PathBuf,
        key: String,
        reason: String,
    },
    #[error("{}: duplicate server name {name:?} (servers[{first}] and servers[{second}])", file.display())]
    DuplicateServer {
        file: PathBuf,
        name: String,
        first: usize,
        second: usize,
    },
    #[error("{}: no servers: configure at least one [[servers]] entry", file.display())]
    NoServers { file: PathBuf },
    #[error("{}: no client accounts: configure [[auth.users]] or auth.service_user", file.display())]
    NoClientAccounts { file: PathBuf },
    #[error("{}: duplicate user name {name:?} in [[auth.users]] (auth.users[{first}] and auth.users[{second}])", file.display())]
    DuplicateUser {
        file: PathBuf,
        name: String,
        first: usize,
        second: usize,
    },
    /// A user has both `password` and `password_hash`, or neither.
    #[error("{}: auth.users[{index}] ({name:?}): set exactly one of password or password_hash", file.display())]
    UserCredential {
        file: PathBuf,
        index: usize,
        name: String,
    },
    #[error("{}: auth.users[{index}] ({name:?}).plugin: {reason}", file.display())]
    UserPlugin {
        file: PathBuf,
        index: usize,
        name: String,
        reason: String,
    },
    /// The hash itself is not echoed: it is a credential.
    #[error("{}: auth.users[{index}] ({name:?}).password_hash: {reason}", file.display())]
    InvalidPasswordHash {
        file: PathBuf,
        index: usize,
        name: String,
        reason: String,
    },
    /// An admin listener on a non-loopback address without its credential.
    #[error("{}: {key} = \"{address}\" is not a loopback address, so {required} must be set", file.display())]
    InsecureAdmin {
        file: PathBuf,
        key: &'static str,
        address: SocketAddr,
        required: &'static str,
    },
    #[error("{}: {key} = {path:?}: {error}", file.display())]
    File {
        file: PathBuf,
        key: &'static str,
        path: PathBuf,
        error: String,
    },
    /// The policy document is invalid; `origin` says where it came from.
    #[error("{}: {origin}: {error}", file.display())]
    Policy {
        file: PathBuf,
        origin: String,
        error: PolicyError,
    },
}

/// Which data path moves the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatapathMode {
    /// eBPF when the programs can be loaded, else userspace.
    #[default]
    Auto,
    /// eBPF or fail at startup.
    Ebpf,
    /// Always copy in userspace.
    Userspace,
}

impl DatapathMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DatapathMode::Auto => "auto",
            DatapathMode::Ebpf => "ebpf",
            DatapathMode::Userspace => "userspace",
        }
    }
}

impl fmt::Display for DatapathMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[listen]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenConfig {
    pub address: SocketAddr,
    /// Client sessions accepted at once; further connects get a MySQL error.
    pub max_connections: u32,
    /// A client must finish the handshake within this time.
    pub handshake_timeout: Duration,
    /// Connections still in the handshake (not logged in) at once; they do
    /// not count toward `max_connections`.
    pub max_handshakes: u32,
    /// After login: longest wait for the rest of a packet the client has
    /// started (MariaDB's `net_read_timeout`); never applies between
    /// commands.
    pub net_read_timeout: Duration,
    /// Bytes of client packets larger than a session's own buffer held at
    /// once, over all sessions.
    pub max_buffered_bytes: usize,
}

/// `[datapath]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatapathConfig {
    pub mode: DatapathMode,
    /// cgroup v2 directory the sock_ops program is attached to.
    pub cgroup: PathBuf,
    /// Overrides the eBPF object embedded in / shipped with the daemon.
    pub ebpf_object: Option<PathBuf>,
    /// Client libraries (connect attribute `_client_name`) kept on the
    /// userspace relay: they read with blocking `recv` without `poll`, and
    /// a socket in a sockhash can return a spurious EAGAIN to such readers
    /// (a kernel bug, unfixed upstream).
    pub relay_clients: Vec<String>,
}

/// Client libraries that read with blocking `recv` without `poll`.
pub const DEFAULT_RELAY_CLIENTS: &[&str] = &["pymysql"];

/// `[admin]`
#[derive(Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub sql_address: SocketAddr,
    pub http_address: SocketAddr,
    pub user: String,
    /// Admin SQL password; `None` = no password (only allowed on loopback).
    pub password: Option<String>,
    /// REST bearer token; `None` = no token (only allowed on loopback).
    pub token: Option<String>,
    pub limits: AdminLimits,
}

/// Bounds on the admin listeners, so that unauthenticated peers cannot hold
/// them or guess credentials quickly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminLimits {
    /// Logged-in admin SQL sessions at once (as many more may be in the
    /// handshake; when those are all taken the oldest one is dropped).
    pub sql_max_connections: u32,
    /// An admin SQL client must be logged in within this time.
    pub sql_login_timeout: Duration,
    /// Time one admin SQL query may run before it is interrupted.
    pub sql_query_timeout: Duration,
    /// REST connections at once; beyond that a connection gets 503.
    pub http_max_connections: u32,
    /// Time to send a request's line and headers (and most a connection
    /// may idle between requests).
    pub http_header_timeout: Duration,
    /// Time to send a request's body once its headers are in.
    pub http_body_timeout: Duration,
    /// Largest request body (413 beyond).
    pub http_max_body_bytes: usize,
    /// Back-off after a failed admin login (SQL password or REST token)
    /// from one address: doubles with each failure, up to the maximum.
    /// Zero: no back-off (failures are still counted and logged).
    pub auth_backoff_initial: Duration,
    pub auth_backoff_max: Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        AdminLimits {
            sql_max_connections: DEFAULT_ADMIN_SQL_MAX_CONNECTIONS,
            sql_login_timeout: Duration::from_millis(DEFAULT_ADMIN_SQL_LOGIN_TIMEOUT_MS),
            sql_query_timeout: Duration::from_millis(DEFAULT_ADMIN_SQL_QUERY_TIMEOUT_MS),
            http_max_connections: DEFAULT_ADMIN_HTTP_MAX_CONNECTIONS,
            http_header_timeout: Duration::from_millis(DEFAULT_ADMIN_HTTP_HEADER_TIMEOUT_MS),
            http_body_timeout: Duration::from_millis(DEFAULT_ADMIN_HTTP_BODY_TIMEOUT_MS),
            http_max_body_bytes: DEFAULT_ADMIN_HTTP_MAX_BODY_BYTES as usize,
            auth_backoff_initial: Duration::from_millis(DEFAULT_ADMIN_AUTH_BACKOFF_INITIAL_MS),
            auth_backoff_max: Duration::from_millis(DEFAULT_ADMIN_AUTH_BACKOFF_MAX_MS),
        }
    }
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("sql_address", &self.sql_address)
            .field("http_address", &self.http_address)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("limits", &self.limits)
            .finish()
    }
}

/// How a configured client account proves its identity.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Clear-text password from the config.
    Password(String),
    /// mysql_native_password stage-2 hash, SHA1(SHA1(password)): the 20 bytes
    /// behind `*<40 hex>` in `mysql.user.authentication_string`.
    NativeHash([u8; 20]),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Password(_) => f.write_str("Password(<redacted>)"),
            Credential::NativeHash(_) => f.write_str("NativeHash(<redacted>)"),
        }
    }
}

/// The authentication plugin of a configured account (`plugin`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UserPlugin {
    /// `mysql_native_password` (the default).
    #[default]
    Native,
    /// `ed25519`: clients prove the password with an Ed25519 signature,
    /// and the redirector signs with it toward the backends.
    Ed25519,
}

/// One `[[auth.users]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAccount {
    pub name: String,
    pub credential: Credential,
    pub plugin: UserPlugin,
}

/// `auth.service_user` / `auth.service_password`: the account the redirector
/// uses to read mysql_native_password accounts from the backends.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// `[auth]`
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub service: Option<ServiceAccount>,
    pub users: Vec<UserAccount>,
}

/// One `[[servers]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub name: String,
    /// Resolved address (an IPv4 result is preferred for hostnames).
    pub address: SocketAddr,
    /// The address as written, e.g. `localhost:3307`, for display.
    pub address_text: String,
    /// Used by the default policy only; an explicit `[policy]` has its own weights.
    pub weight: u32,
}

/// `[tls]`: PEM files, resolved against the config file's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where the policy document came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// No `[policy]`: session-autobalance over all servers with their weights.
    Default,
    /// `[policy] file`, resolved path.
    File(PathBuf),
    /// `[policy] inline`.
    Inline,
}

/// A loaded, resolved and validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file this was loaded from (for messages and relative paths).
    pub file: PathBuf,
    pub listen: ListenConfig,
    pub datapath: DatapathConfig,
    pub admin: AdminConfig,
    pub auth: AuthConfig,
    pub servers: Vec<ServerConfig>,
    pub policy: PolicyDocument,
    pub policy_source: PolicySource,
    pub tls: Option<TlsConfig>,
    pub mover: MoverConfig,
}

/// `[mover]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoverConfig {
    /// How long a move, drain or rebalance waits for busy sessions when the
    /// request gives no WAIT TIMEOUT.
    pub default_wait_timeout: Duration,
    /// Most moves per second a rebalance starts.
    pub rebalance_rate: u32,
    /// `mover.failover_state_tracking`: turn on `session_track_state_change`
    /// on the backend connections of clients that negotiate session tracking,
    /// so that a session whose server dies can be carried over after
    /// statements that did not change its state. Off by default: the client
    /// then sees what it would not see directly (the variable reads 1, OK
    /// packets carry SESSION_STATE_CHANGED and its tracking data).
    pub failover_state_tracking: bool,
}

/// Default of `mover.default_wait_timeout_s`.
pub const DEFAULT_MOVE_WAIT_S: u64 = 60;
/// Default of `mover.rebalance_rate`.
pub const DEFAULT_REBALANCE_RATE: u32 = 1000;

// ---- raw (serde) form -------------------------------------------------------
// Numbers are read as i64 so that 0 and negatives get our own message rather
// than serde's "expected u32".

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    datapath: RawDatapath,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    servers: Vec<RawServer>,
    policy: Option<RawPolicy>,
    tls: Option<RawTls>,
    #[serde(default)]
    mover: RawMover,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMover {
    default_wait_timeout_s: Option<i64>,
    rebalance_rate: Option<i64>,
    failover_state_tracking: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    address: Option<String>,
    max_connections: Option<i64>,
    handshake_timeout_ms: Option<i64>,
    max_handshakes: Option<i64>,
    net_read_timeout_ms: Option<i64>,
    max_buffered_bytes: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatapath {
    mode: Option<DatapathMode>,
    cgroup: Option<PathBuf>,
    ebpf_object: Option<PathBuf>,
    relay_clients: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    sql_address: Option<String>,
    http_address: Option<String>,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    sql_max_connections: Option<i64>,
    sql_login_timeout_ms: Option<i64>,
    sql_query_timeout_ms: Option<i64>,
    http_max_connections: Option<i64>,
    http_header_timeout_ms: Option<i64>,
    http_body_timeout_ms: Option<i64>,
    http_max_body_bytes: Option<i64>,
    auth_backoff_initial_ms: Option<i64>,
    auth_backoff_max_ms: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    service_user: Option<String>,
    service_password: Option<String>,
    #[serde(default)]
    users: Vec<RawUser>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: String,
    password: Option<String>,
    password_hash: Option<String>,
    plugin: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    name: String,
    address: String,
    weight: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    file: Option<PathBuf>,
    inline: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

// ---- helpers -----------------------------------------------------------------

/// Resolves `host:port` (IP literal or hostname, IPv6 in brackets) to one
/// socket address, preferring IPv4 when a hostname has both. The error is a
/// short reason, without the value.
/// Why `address` cannot be a backend server's address, if it cannot: the
/// one check for the configuration, `CONTROL ADD SERVER` and
/// `POST /v1/servers`.
pub fn server_address_problem(address: SocketAddr) -> Option<&'static str> {
    if address.port() == 0 {
        Some("port 0 is not a valid server port")
    } else if address.ip().is_unspecified() {
        Some("an unspecified address (0.0.0.0 / ::) cannot be connected to")
    } else {
        None
    }
}

pub fn resolve_socket_addr(value: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err("expected host:port, e.g. 127.0.0.1:3306".to_owned());
    };
    if host.is_empty() {
        return Err("missing host (expected host:port, e.g. 127.0.0.1:3306)".to_owned());
    }
    if host.contains(':') && !host.starts_with('[') {
        return Err("IPv6 addresses need brackets, e.g. [::1]:3306".to_owned());
    }
    if host.chars().any(char::is_whitespace) {
        return Err("host contains whitespace".to_owned());
    }
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port {port:?} is not a number between 0 and 65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve host {host:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("host {host:?} resolves to no address"))
}

/// Parses a mysql_native_password hash: `*` followed by 40 hex digits (any case).
pub fn parse_native_hash(text: &str) -> Result<[u8; 20], String> {
    let hex = text.strip_prefix('*').ok_or_else(|| {
        "must start with '*' followed by 40 hex digits (mysql_native_password format, as in mysql.user.authentication_string)".to_owned()
    })?;
    if hex.len() != 40 {
        return Err(format!(
            "must be '*' followed by 40 hex digits, got {} characters after '*'",
            hex.chars().count()
        ));
    }
    let mut out = [0u8; 20];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = hex
            .get(i * 2..i * 2 + 2)
            .ok_or("contains a non-hex character")?;
        *byte = u8::from_str_radix(pair, 16)
            .map_err(|_| format!("contains a non-hex character near position {}", i * 2 + 1))?;
    }
    Ok(out)
}

/// Server names appear in admin SQL string literals, REST paths and metric
/// labels, so keep them to a safe alphabet.
pub fn validate_server_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("server name must not be empty".to_owned());
    }
    if name.len() > 64 {
        return Err("server name must be at most 64 characters".to_owned());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err("server name may only contain letters, digits, '_', '-' and '.'".to_owned());
    }
    Ok(())
}

/// The default cgroup: the v2 hierarchy where systemd hybrid setups mount it.
fn default_cgroup() -> PathBuf {
    let unified = Path::new("/sys/fs/cgroup/unified");
    if unified.is_dir() {
        unified.to_path_buf()
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit_once('\n')
        .map_or(before, |(_, tail)| tail)
        .chars()
        .count()
        + 1;
    (line, column)
}

/// One line, whatever the source message looked like.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

struct Resolver<'a> {
    file: &'a Path,
    base_dir: PathBuf,
}

impl Resolver<'_> {
    fn address(
        &self,
        key: &str,
        value: Option<&str>,
        default: &str,
    ) -> Result<SocketAddr, ConfigError> {
        let text = value.unwrap_or(default);
        resolve_socket_addr(text).map_err(|reason| self.invalid(key, format!("{text:?}"), reason))
    }

    fn positive(
        &self,
        key: &str,
        value: Option<i64>,
        default: u64,
        max: u64,
    ) -> Result<u64, ConfigError> {
        let Some(v) = value else { return Ok(default) };
        match u64::try_from(v) {
            Ok(u) if u >= 1 && u <= max => Ok(u),
            _ => Err(self.invalid(key, v.to_string(), format!("must be between 1 and {max}"))),
        }
    }

    /// A duration in milliseconds, 1 ms to one day (longer is a typo).
    fn millis(&self, key: &str, value: Option<i64>, default: u64) -> Result<Duration, ConfigError> {
        Ok(Duration::from_millis(
            self.positive(key, value, default, 86_400_000)?,
        ))
    }

    fn admin_limits(&self, raw: &RawAdmin) -> Result<AdminLimits, ConfigError> {
        let limits = AdminLimits {
            sql_max_connections: self.positive(
                "admin.sql_max_connections",
                raw.sql_max_connections,
                DEFAULT_ADMIN_SQL_MAX_CONNECTIONS.into(),
                100_000,
            )? as u32,
            sql_login_timeout: self.millis(
                "admin.sql_login_timeout_ms",
                raw.sql_login_timeout_ms,
                DEFAULT_ADMIN_SQL_LOGIN_TIMEOUT_MS,
            )?,
            sql_query_timeout: self.millis(
                "admin.sql_query_timeout_ms",
                raw.sql_query_timeout_ms,
                DEFAULT_ADMIN_SQL_QUERY_TIMEOUT_MS,
            )?,
            http_max_connections: self.positive(
                "admin.http_max_connections",
                raw.http_max_connections,
                DEFAULT_ADMIN_HTTP_MAX_CONNECTIONS.into(),
                100_000,
            )? as u32,
            http_header_timeout: self.millis(
                "admin.http_header_timeout_ms",
                raw.http_header_timeout_ms,
                DEFAULT_ADMIN_HTTP_HEADER_TIMEOUT_MS,
            )?,
            http_body_timeout: self.millis(
                "admin.http_body_timeout_ms",
                raw.http_body_timeout_ms,
                DEFAULT_ADMIN_HTTP_BODY_TIMEOUT_MS,
            )?,
            http_max_body_bytes: self.positive(
                "admin.http_max_body_bytes",
                raw.http_max_body_bytes,
                DEFAULT_ADMIN_HTTP_MAX_BODY_BYTES,
                64 << 20,
            )? as usize,
            // 0 turns the back-off off.
            auth_backoff_initial: match raw.auth_backoff_initial_ms {
                Some(0) => Duration::ZERO,
                v => self.millis(
                    "admin.auth_backoff_initial_ms",
                    v,
                    DEFAULT_ADMIN_AUTH_BACKOFF_INITIAL_MS,
                )?,
            },
            auth_backoff_max: self.millis(
                "admin.auth_backoff_max_ms",
                raw.auth_backoff_max_ms,
                DEFAULT_ADMIN_AUTH_BACKOFF_MAX_MS,
            )?,
        };
        if limits.auth_backoff_initial > limits.auth_backoff_max {
            return Err(self.invalid(
                "admin.auth_backoff_initial_ms",
                limits.auth_backoff_initial.as_millis().to_string(),
                "must not exceed admin.auth_backoff_max_ms",
            ));
        }
        Ok(limits)
    }

    fn path(&self, p: PathBuf) -> PathBuf {
        if p.is_absolute() {
            p
        } else {
            self.base_dir.join(p)
        }
    }

    fn invalid(&self, key: &str, value: String, reason: impl Into<String>) -> ConfigError {
        ConfigError::InvalidValue {
            file: self.file.to_path_buf(),
            key: key.to_owned(),
            value,
            reason: reason.into(),
        }
    }
}

impl Config {
    /// Reads, resolves and validates a config file.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            file: path.to_path_buf(),
            error,
        })?;
        Config::parse(&text, path)
    }

    /// Parses, resolves and validates TOML text; `file` names it in messages
    /// and its directory is the base for relative paths (it need not exist).
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map_or((0, 0), |span| line_column(text, span.start));
            ConfigError::Syntax {
                file: file.to_path_buf(),
                line,
                column,
                message: one_line(e.message()),
            }
        })?;
        let config = Config::resolve(raw, file)?;
        config.validate()?;
        Ok(config)
    }

    fn resolve(raw: RawConfig, file: &Path) -> Result<Config, ConfigError> {
        let base_dir = match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let r = Resolver { file, base_dir };

        let listen = ListenConfig {
            address: r.address(
                "listen.address",
                raw.listen.address.as_deref(),
                DEFAULT_LISTEN_ADDRESS,
            )?,
            max_connections: r.positive(
                "listen.max_connections",
                raw.listen.max_connections,
                DEFAULT_MAX_CONNECTIONS.into(),
                u32::MAX.into(),
            )? as u32,
            handshake_timeout: Duration::from_millis(r.positive(
                "listen.handshake_timeout_ms",
                raw.listen.handshake_timeout_ms,
                DEFAULT_HANDSHAKE_TIMEOUT_MS,
                // One day: anything longer is a typo.
                86_400_000,
            )?),
            max_handshakes: r.positive(
                "listen.max_handshakes",
                raw.listen.max_handshakes,
                DEFAULT_MAX_HANDSHAKES.into(),
                u32::MAX.into(),
            )? as u32,
            net_read_timeout: Duration::from_millis(r.positive(
                "listen.net_read_timeout_ms",
                raw.listen.net_read_timeout_ms,
                DEFAULT_NET_READ_TIMEOUT_MS,
                86_400_000,
            )?),
            max_buffered_bytes: r.positive(
                "listen.max_buffered_bytes",
                raw.listen.max_buffered_bytes,
                DEFAULT_MAX_BUFFERED_BYTES,
                // 1 TiB: anything larger is a typo.
                1 << 40,
            )? as usize,
        };

        let datapath = DatapathConfig {
            mode: raw.datapath.mode.unwrap_or_default(),
            cgroup: raw
                .datapath
                .cgroup
                .map_or_else(default_cgroup, |p| r.path(p)),
            ebpf_object: raw.datapath.ebpf_object.map(|p| r.path(p)),
            relay_clients: raw.datapath.relay_clients.unwrap_or_else(|| {
                DEFAULT_RELAY_CLIENTS
                    .iter()
                    .map(|s| (*s).to_string())
                    .collect()
            }),
        };

        let limits = r.admin_limits(&raw.admin)?;
        let admin = AdminConfig {
            sql_address: r.address(
                "admin.sql_address",
                raw.admin.sql_address.as_deref(),
                DEFAULT_ADMIN_SQL_ADDRESS,
            )?,
            http_address: r.address(
                "admin.http_address",
                raw.admin.http_address.as_deref(),
                DEFAULT_ADMIN_HTTP_ADDRESS,
            )?,
            user: raw
                .admin
                .user
                .unwrap_or_else(|| DEFAULT_ADMIN_USER.to_owned()),
            password: raw.admin.password,
            token: raw.admin.token,
            limits,
        };

        let service = match (raw.auth.service_user, raw.auth.service_password) {
            (Some(user), Some(password)) => Some(ServiceAccount { user, password }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    file: file.to_path_buf(),
                    key: "auth.service_password".to_owned(),
                    reason:
                        "required when auth.service_user is set (use \"\" for an empty password)"
                            .to_owned(),
                })
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    file: file.to_path_buf(),
                    key: "auth.service_user".to_owned(),
                    reason: "auth.service_password is set but auth.service_user is not".to_owned(),
                })
            }
        };
        let mut users = Vec::with_capacity(raw.auth.users.len());
        for (index, u) in raw.auth.users.into_iter().enumerate() {
            let credential = match (u.password, u.password_hash) {
                (Some(p), None) => Credential::Password(p),
                (None, Some(h)) => {
                    Credential::NativeHash(parse_native_hash(&h).map_err(|reason| {
                        ConfigError::InvalidPasswordHash {
                            file: file.to_path_buf(),
                            index,
                            name: u.name.clone(),
                            reason,
                        }
                    })?)
                }
                _ => {
                    return Err(ConfigError::UserCredential {
                        file: file.to_path_buf(),
                        index,
                        name: u.name,
                    })
                }
            };
            let plugin = match u.plugin.as_deref() {
                None | Some("mysql_native_password") => UserPlugin::Native,
                Some("ed25519") => UserPlugin::Ed25519,
                Some(other) => {
                    return Err(ConfigError::UserPlugin {
                        file: file.to_path_buf(),
                        index,
                        name: u.name,
                        reason: format!(
                            "unknown plugin {other:?} (mysql_native_password or ed25519)"
                        ),
                    })
                }
            };
            if plugin == UserPlugin::Ed25519 && !matches!(credential, Credential::Password(_)) {
                return Err(ConfigError::UserPlugin {
                    file: file.to_path_buf(),
                    index,
                    name: u.name,
                    reason: "plugin = \"ed25519\" needs the clear-text password (the redirector signs with it toward the backends), not password_hash".to_owned(),
                });
            }
            users.push(UserAccount {
                name: u.name,
                credential,
                plugin,
            });
        }

        let mut servers = Vec::with_capacity(raw.servers.len());
        for (i, s) in raw.servers.into_iter().enumerate() {
            let address = r.address(&format!("servers[{i}].address"), Some(&s.address), "")?;
            let weight = match s.weight {
                None => 1,
                Some(w) => u32::try_from(w).map_err(|_| {
                    r.invalid(
                        &format!("servers[{i}].weight"),
                        w.to_string(),
                        format!("must be between 1 and {}", u32::MAX),
                    )
                })?,
            };
            servers.push(ServerConfig {
                name: s.name,
                address,
                address_text: s.address,
                weight,
            });
        }

        let (policy, policy_source) = match raw.policy {
            None => (
                PolicyDocument::default_for(servers.iter().map(|s| (s.name.as_str(), s.weight))),
                PolicySource::Default,
            ),
            Some(RawPolicy {
                file: Some(_),
                inline: Some(_),
            }) => {
                return Err(ConfigError::Missing {
                    file: file.to_path_buf(),
                    key: "policy.file or policy.inline".to_owned(),
                    reason: "set exactly one of them, not both".to_owned(),
                })
            }
            Some(RawPolicy {
                file: None,
                inline: None,
            }) => {
                return Err(ConfigError::Missing {
                    file: file.to_path_buf(),
                    key: "policy.file or policy.inline".to_owned(),
                    reason: "[policy] needs one of them (or remove [policy] for the default)"
                        .to_owned(),
                })
            }
            Some(RawPolicy {
                file: Some(p),
                inline: None,
            }) => {
                let path = r.path(p);
                let json = std::fs::read_to_string(&path).map_err(|e| ConfigError::File {
                    file: file.to_path_buf(),
                    key: "policy.file",
                    path: path.clone(),
                    error: format!("cannot read policy file: {e}"),
                })?;
                let doc =
                    PolicyDocument::from_json(&json).map_err(|error| ConfigError::Policy {
                        file: file.to_path_buf(),
                        origin: format!("policy file {}", path.display()),
                        error,
                    })?;
                (doc, PolicySource::File(path))
            }
            Some(RawPolicy {
                file: None,
                inline: Some(json),
            }) => {
                let doc =
                    PolicyDocument::from_json(&json).map_err(|error| ConfigError::Policy {
                        file: file.to_path_buf(),
                        origin: "policy.inline".to_owned(),
                        error,
                    })?;
                (doc, PolicySource::Inline)
            }
        };

        let tls = raw.tls.map(|t| TlsConfig {
            cert: r.path(t.cert),
            key: r.path(t.key),
        });

        let mover = MoverConfig {
            default_wait_timeout: Duration::from_secs(r.positive(
                "mover.default_wait_timeout_s",
                raw.mover.default_wait_timeout_s,
                DEFAULT_MOVE_WAIT_S,
                86_400,
            )?),
            rebalance_rate: r.positive(
                "mover.rebalance_rate",
                raw.mover.rebalance_rate,
                DEFAULT_REBALANCE_RATE.into(),
                1_000_000,
            )? as u32,
            failover_state_tracking: raw.mover.failover_state_tracking.unwrap_or(false),
        };

        Ok(Config {
            file: file.to_path_buf(),
            listen,
            datapath,
            admin,
            auth: AuthConfig { service, users },
            servers,
            policy,
            policy_source,
            tls,
            mover,
        })
    }

    /// The placement policy document in effect.
    pub fn policy(&self) -> &PolicyDocument {
        &self.policy
    }

    /// The configured server names, in file order.
    pub fn server_names(&self) -> Vec<&str> {
        self.servers.iter().map(|s| s.name.as_str()).collect()
    }

    /// Checks the cross-field rules; the first violation is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let file = || self.file.clone();
        let invalid = |key: String, value: String, reason: String| ConfigError::InvalidValue {
            file: file(),
            key,
            value,
            reason,
        };

        if self.listen.max_connections == 0 {
            return Err(invalid(
                "listen.max_connections".into(),
                "0".into(),
                "must be > 0".into(),
            ));
        }
        if self.listen.handshake_timeout.is_zero() {
            return Err(invalid(
                "listen.handshake_timeout_ms".into(),
                "0".into(),
                "must be > 0".into(),
            ));
        }
        if self.listen.max_handshakes == 0 {
            return Err(invalid(
                "listen.max_handshakes".into(),
                "0".into(),
                "must be > 0".into(),
            ));
        }
        if self.listen.max_buffered_bytes == 0 {
            return Err(invalid(
                "listen.max_buffered_bytes".into(),
                "0".into(),
                "must be > 0".into(),
            ));
        }
        if self.listen.net_read_timeout.is_zero() {
            return Err(invalid(
                "listen.net_read_timeout_ms".into(),
                "0".into(),
                "must be > 0".into(),
            ));
        }

        // Servers.
        if self.servers.is_empty() {
            return Err(ConfigError::NoServers { file: file() });
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, s) in self.servers.iter().enumerate() {
            validate_server_name(&s.name).map_err(|reason| {
                invalid(
                    format!("servers[{i}].name"),
                    format!("{:?}", s.name),
                    reason,
                )
            })?;
            if let Some(&first) = seen.get(s.name.as_str()) {
                return Err(ConfigError::DuplicateServer {
                    file: file(),
                    name: s.name.clone(),
                    first,
                    second: i,
                });
            }
            seen.insert(&s.name, i);
            if s.weight == 0 {
                return Err(invalid(
                    format!("servers[{i}].weight"),
                    "0".into(),
                    format!("must be between 1 and {}", u32::MAX),
                ));
            }
            if let Some(why) = server_address_problem(s.address) {
                return Err(invalid(
                    format!("servers[{i}].address"),
                    format!("{:?}", s.address_text),
                    why.into(),
                ));
            }
        }

        // Client accounts.
        if self.auth.users.is_empty() && self.auth.service.is_none() {
            return Err(ConfigError::NoClientAccounts { file: file() });
        }
        if let Some(service) = &self.auth.service {
            if service.user.is_empty() {
                return Err(invalid(
                    "auth.service_user".into(),
                    "\"\"".into(),
                    "must not be empty".into(),
                ));
            }
        }
        let mut seen_users: HashMap<&str, usize> = HashMap::new();
        for (i, u) in self.auth.users.iter().enumerate() {
            if u.name.is_empty() {
                return Err(invalid(
                    format!("auth.users[{i}].name"),
                    "\"\"".into(),
                    "must not be empty".into(),
                ));
            }
            if let Some(&first) = seen_users.get(u.name.as_str()) {
                return Err(ConfigError::DuplicateUser {
                    file: file(),
                    name: u.name.clone(),
                    first,
                    second: i,
                });
            }
            seen_users.insert(&u.name, i);
        }

        // Admin: anything reachable from off-host needs its credential.
        if !is_loopback(self.admin.sql_address.ip())
            && self.admin.password.as_deref().is_none_or(str::is_empty)
        {
            return Err(ConfigError::InsecureAdmin {
                file: file(),
                key: "admin.sql_address",
                address: self.admin.sql_address,
                required: "admin.password",
            });
        }
        if !is_loopback(self.admin.http_address.ip())
            && self.admin.token.as_deref().is_none_or(str::is_empty)
        {
            return Err(ConfigError::InsecureAdmin {
                file: file(),
                key: "admin.http_address",
                address: self.admin.http_address,
                required: "admin.token",
            });
        }
        if self.admin.user.is_empty() {
            return Err(invalid(
                "admin.user".into(),
                "\"\"".into(),
                "must not be empty".into(),
            ));
        }

        // Two listeners on one address would fail at bind time with a less clear error.
        let listeners = [
            ("listen.address", self.listen.address),
            ("admin.sql_address", self.admin.sql_address),
            ("admin.http_address", self.admin.http_address),
        ];
        for (i, (key_a, a)) in listeners.iter().enumerate() {
            for (key_b, b) in &listeners[i + 1..] {
                if a == b && a.port() != 0 {
                    return Err(invalid(
                        (*key_b).to_owned(),
                        format!("\"{b}\""),
                        format!("same address as {key_a}"),
                    ));
                }
            }
        }

        // Policy.
        let names = self.server_names();
        self.policy
            .validate(&names)
            .map_err(|error| ConfigError::Policy {
                file: file(),
                origin: match &self.policy_source {
                    PolicySource::Default => "default policy".to_owned(),
                    PolicySource::File(p) => format!("policy file {}", p.display()),
                    PolicySource::Inline => "policy.inline".to_owned(),
                },
                error,
            })?;

        // Files.
        if let Some(tls) = &self.tls {
            check_file(&self.file, "tls.cert", &tls.cert)?;
            check_file(&self.file, "tls.key", &tls.key)?;
        }
        if self.datapath.mode != DatapathMode::Userspace {
            if let Some(obj) = &self.datapath.ebpf_object {
                check_file(&self.file, "datapath.ebpf_object", obj)?;
            }
        }
        if self.datapath.mode == DatapathMode::Ebpf && !self.datapath.cgroup.is_dir() {
            return Err(ConfigError::File {
                file: file(),
                key: "datapath.cgroup",
                path: self.datapath.cgroup.clone(),
                error: "not a directory (mode = \"ebpf\" needs a cgroup v2 directory)".to_owned(),
            });
        }
        Ok(())
    }
}

/// IPv4-mapped loopback (::ffff:127.0.0.1) counts as loopback too.
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn check_file(config: &Path, key: &'static str, path: &Path) -> Result<(), ConfigError> {
    let err = |error: String| ConfigError::File {
        file: config.to_path_buf(),
        key,
        path: path.to_path_buf(),
        error,
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(err("not a regular file".to_owned())),
        Err(e) => Err(err(format!("cannot access file: {e}"))),
    }
}

#[cfg(test)]
mod tests;
