//! Client accounts: who may log in through the redirector, and how each
//! proves it.
//!
//! Accounts come from `[[auth.users]]` (by name, any host) and/or are read
//! from the backends' `mysql.user` with the service account. Loaded
//! accounts keep their host part and are matched like the server does
//! (see [`HostPattern`] and [`Loaded::find`]): entries sorted by host
//! specificity, then named before anonymous, the first one matching the
//! client's user name and address wins.
//!
//! A login that names an unknown account (or whose password does not
//! verify) asks for a reload that started after it asked
//! ([`AccountStore::reload_after`]): reloads are serialised, callers that
//! arrive while one runs share the next, and consecutive reloads are at
//! least [`RELOAD_MIN_INTERVAL`] apart, so a flood of wrong passwords
//! cannot hammer the backends and no session is refused for arriving at
//! the wrong moment.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use crate::config::{parse_native_hash, Config, Credential, ServiceAccount, UserPlugin};
use crate::protocol::auth::double_sha1;
use crate::protocol::ed25519::Ed25519Password;

/// Least time between the starts of two reloads.
pub const RELOAD_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest a login waits for a reload (queue, interval and the reload).
pub const RELOAD_WAIT: Duration = Duration::from_secs(5);

/// Stage-2 hash; `None` is an account without a password.
pub type StoredHash = Option<[u8; 20]>;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("loading accounts from {server} as '{user}': {source}")]
    Load {
        server: String,
        user: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("no server reachable to load accounts from")]
    NoServer,
}

/// How an account authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountAuth {
    /// mysql_native_password (or no plugin): the stage-2 hash.
    Native(StoredHash),
    /// ed25519 with its password known (configured): clients are
    /// verified against its public key, backends logged in with it.
    Ed25519(Ed25519Password),
    /// A plugin the redirector cannot serve (ed25519 without a configured
    /// password, unix_socket, pam …): refused with an error naming it.
    Unsupported(String),
    /// A native account whose stored string is no native hash (e.g.
    /// 'invalid' on a fresh root): no password matches, as on the server.
    NoValidPassword,
}

/// The account a login matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// `user@host` as the server would name it (for logs and errors);
    /// configured accounts show host `%`.
    pub name: String,
    pub auth: AccountAuth,
}

/// A `mysql.user.Host` value, matched like MariaDB's `compare_hostname`:
/// an IPv4 `address/netmask`, or a pattern with `%` and `_` wildcards
/// (`\` escapes) compared with the client's host name (case-insensitive)
/// or its IP address text (case-sensitive). An empty host matches any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    text: String,
    mask: Option<(u32, u32)>,
}

impl HostPattern {
    pub fn new(text: &str) -> Self {
        let mask = text.split_once('/').and_then(|(ip, mask)| {
            let ip: std::net::Ipv4Addr = ip.parse().ok()?;
            let mask: std::net::Ipv4Addr = mask.parse().ok()?;
            Some((u32::from(ip), u32::from(mask)))
        });
        Self {
            text: text.to_owned(),
            mask,
        }
    }

    /// Whether a client at `ip`, known by `hostname` if any, matches.
    pub fn matches(&self, hostname: Option<&str>, ip: IpAddr) -> bool {
        if let (Some((net, mask)), IpAddr::V4(v4)) = (self.mask, ip) {
            return u32::from(v4) & mask == net;
        }
        if self.text.is_empty() {
            return true;
        }
        let pattern = self.text.as_bytes();
        hostname.is_some_and(|h| wild_match(h.as_bytes(), pattern, true))
            || wild_match(ip.to_string().as_bytes(), pattern, false)
    }

    /// MariaDB's `get_sort` for one string: 128 without wildcards (exact),
    /// the 1-based position of the first wildcard otherwise (later = more
    /// specific), 0 when empty.
    fn specificity(s: &str) -> u32 {
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'\\' if i + 1 < b.len() => i += 2,
                b'%' | b'_' => return (i as u32 + 1).min(127),
                _ => i += 1,
            }
        }
        if b.is_empty() {
            0
        } else {
            128
        }
    }
}

/// SQL LIKE-style matching with `%`, `_` and `\` escapes (MariaDB's
/// `wild_compare` / `wild_case_compare`).
fn wild_match(s: &[u8], p: &[u8], ignore_case: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if ignore_case {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    // Iterative matcher with backtracking to the last '%'.
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'%') => {
                star = Some((pi, si));
                pi += 1;
                continue;
            }
            Some(b'_') => {
                si += 1;
                pi += 1;
                continue;
            }
            Some(&c) => {
                let (lit, step) = match (c, p.get(pi + 1)) {
                    (b'\\', Some(&next)) => (next, 2),
                    _ => (c, 1),
                };
                if eq(s[si], lit) {
                    si += 1;
                    pi += step;
                    continue;
                }
            }
            None => {}
        }
        match star {
            Some((sp, ss)) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'%')
}

/// One loaded `mysql.user` row.
#[derive(Debug, Clone)]
struct Entry {
    user: String,
    host: HostPattern,
    auth: AccountAuth,
    sort: u32,
}

/// The accounts loaded from a backend, in the server's matching order.
#[derive(Debug, Default)]
pub struct Loaded {
    entries: Vec<Entry>,
    /// Indexes into `entries` by user name ("" = anonymous).
    by_user: HashMap<String, Vec<usize>>,
    /// The server resolves client addresses to names (`skip_name_resolve`
    /// off): a loopback client is then `localhost` too.
    resolves_names: bool,
}

impl Loaded {
    /// `rows` are (user, host, auth); sorted here like the server's ACL.
    fn new(rows: Vec<(String, String, AccountAuth)>, resolves_names: bool) -> Self {
        let mut entries: Vec<Entry> = rows
            .into_iter()
            .map(|(user, host, auth)| Entry {
                sort: (HostPattern::specificity(&host) << 8) | HostPattern::specificity(&user),
                host: HostPattern::new(&host),
                user,
                auth,
            })
            .collect();
        // Most specific first; equal ones by host name descending (so
        // 'localhost' precedes '127.0.0.1', as in MariaDB).
        entries.sort_by(|a, b| {
            b.sort
                .cmp(&a.sort)
                .then_with(|| b.host.text.cmp(&a.host.text))
        });
        let mut by_user: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            by_user.entry(e.user.clone()).or_default().push(i);
        }
        Self {
            entries,
            by_user,
            resolves_names,
        }
    }

    /// The first entry for `user` (or anonymous) matching `ip`.
    pub fn find(&self, user: &str, ip: IpAddr) -> Option<Account> {
        let ip = canonical(ip);
        let hostname = (self.resolves_names && ip.is_loopback()).then_some("localhost");
        let named = self.by_user.get(user).map(Vec::as_slice).unwrap_or(&[]);
        let anon = if user.is_empty() {
            &[][..]
        } else {
            self.by_user.get("").map(Vec::as_slice).unwrap_or(&[])
        };
        let mut candidates: Vec<usize> = named.iter().chain(anon).copied().collect();
        candidates.sort_unstable();
        candidates
            .into_iter()
            .filter_map(|i| self.entries.get(i))
            .find(|e| e.host.matches(hostname, ip))
            .map(|e| Account {
                name: format!("{}@{}", e.user, e.host.text),
                auth: e.auth.clone(),
            })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// IPv4-mapped IPv6 addresses as IPv4 (how the server shows them).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// When reloads ran: guarded by an async mutex held during a reload, so
/// reloads never overlap and callers queue behind the one running.
#[derive(Debug, Default)]
struct ReloadGate {
    /// Start of the last reload attempt (for the minimum interval).
    last_start: Option<Instant>,
    /// Start of the last reload that finished: it saw every account
    /// created before then.
    covered_since: Option<Instant>,
}

#[derive(Debug)]
pub struct AccountStore {
    configured: HashMap<String, AccountAuth>,
    loaded: RwLock<Loaded>,
    service: Option<ServiceAccount>,
    gate: tokio::sync::Mutex<ReloadGate>,
}

impl AccountStore {
    pub fn from_config(config: &Config) -> Result<Self, AccountError> {
        let configured = config
            .auth
            .users
            .iter()
            .map(|u| {
                let auth = match (&u.plugin, &u.credential) {
                    (UserPlugin::Ed25519, Credential::Password(p)) => {
                        AccountAuth::Ed25519(Ed25519Password::new(p.as_bytes()))
                    }
                    (_, Credential::Password(p)) if p.is_empty() => AccountAuth::Native(None),
                    (_, Credential::Password(p)) => {
                        AccountAuth::Native(Some(double_sha1(p.as_bytes())))
                    }
                    (_, Credential::NativeHash(h)) => AccountAuth::Native(Some(*h)),
                };
                (u.name.clone(), auth)
            })
            .collect();
        Ok(Self {
            configured,
            loaded: RwLock::new(Loaded::default()),
            service: config.auth.service.clone(),
            gate: tokio::sync::Mutex::new(ReloadGate::default()),
        })
    }

    /// The account `user` from `ip` logs in as: a configured one by name
    /// first, then the loaded ones by the server's rules. `None` = unknown.
    pub fn find(&self, user: &str, ip: IpAddr) -> Option<Account> {
        if let Some(auth) = self.configured.get(user) {
            return Some(Account {
                name: format!("{user}@%"),
                auth: auth.clone(),
            });
        }
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .find(user, ip)
    }

    /// Whether reloading could change what [`AccountStore::find`] says
    /// about `user` (configured accounts never change).
    pub fn may_reload(&self, user: &str) -> bool {
        self.service.is_some() && !self.configured.contains_key(user)
    }

    /// Makes sure a reload that started at or after `asked` has finished:
    /// waits for the one running if it started late enough, else runs the
    /// next one (shared with every caller queued behind it), at least
    /// [`RELOAD_MIN_INTERVAL`] after the previous start. Gives up after
    /// [`RELOAD_WAIT`]; the accounts then stay as they were.
    pub async fn reload_after(&self, asked: Instant, servers: &[std::net::SocketAddr]) {
        if self.service.is_none() {
            return;
        }
        let wait = async {
            let mut gate = self.gate.lock().await;
            if gate.covered_since.is_some_and(|t| t >= asked) {
                return;
            }
            if let Some(last) = gate.last_start {
                tokio::time::sleep_until((last + RELOAD_MIN_INTERVAL).into()).await;
            }
            let start = Instant::now();
            gate.last_start = Some(start);
            if let Err(e) = self.reload(servers).await {
                tracing::warn!(error = %e, "could not reload accounts");
            }
            // Set only once finished: a caller cancelled mid-reload (its
            // handshake timed out) leaves the next caller to reload.
            gate.covered_since = Some(start);
        };
        if tokio::time::timeout(RELOAD_WAIT, wait).await.is_err() {
            tracing::warn!(wait = ?RELOAD_WAIT, "gave up waiting for an account reload");
        }
    }

    /// Reads the accounts from the first server that answers.
    pub async fn reload(&self, servers: &[std::net::SocketAddr]) -> Result<usize, AccountError> {
        let Some(svc) = &self.service else {
            return Ok(0);
        };
        let mut last_err = None;
        for addr in servers {
            match load_from(addr, svc).await {
                Ok(accounts) => {
                    let n = accounts.len();
                    *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = accounts;
                    tracing::info!(server = %addr, accounts = n, "loaded accounts from backend");
                    return Ok(n);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or(AccountError::NoServer))
    }
}

/// What a `mysql.user` row's plugin and authentication string mean here.
fn account_auth(plugin: &str, auth: &str) -> AccountAuth {
    match plugin {
        "" | "mysql_native_password" if auth.is_empty() => AccountAuth::Native(None),
        "" | "mysql_native_password" => match parse_native_hash(auth) {
            Ok(h) => AccountAuth::Native(Some(h)),
            Err(_) => AccountAuth::NoValidPassword,
        },
        // The public key alone cannot sign toward the backends: the
        // password must be configured (then the configured entry wins).
        other => AccountAuth::Unsupported(other.to_owned()),
    }
}

async fn load_from(
    addr: &std::net::SocketAddr,
    svc: &ServiceAccount,
) -> Result<Loaded, AccountError> {
    let err = |source| AccountError::Load {
        server: addr.to_string(),
        user: svc.user.clone(),
        source,
    };
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some(svc.user.clone()))
        .pass(Some(svc.password.clone()))
        .prefer_socket(false)
        .conn_ttl(Some(Duration::from_secs(5)));
    let mut conn = mysql_async::Conn::new(opts).await.map_err(err)?;
    // Every account, whatever its plugin: a row the redirector cannot
    // serve still decides which account a client matches (and the error).
    let rows: Vec<(String, String, String, String)> = conn
        .query(
            "SELECT User, Host, plugin, authentication_string FROM mysql.user \
             WHERE is_role = 'N'",
        )
        .await
        .map_err(err)?;
    let skip_name_resolve: Option<i64> = conn
        .query_first("SELECT @@skip_name_resolve")
        .await
        .map_err(err)?;
    let _ = conn.disconnect().await;
    let rows = rows
        .into_iter()
        .map(|(user, host, plugin, auth)| {
            let a = account_auth(&plugin, &auth);
            (user, host, a)
        })
        .collect();
    Ok(Loaded::new(rows, skip_name_resolve == Some(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn native(n: u8) -> AccountAuth {
        AccountAuth::Native(Some([n; 20]))
    }

    fn loaded(rows: &[(&str, &str, u8)], resolves: bool) -> Loaded {
        Loaded::new(
            rows.iter()
                .map(|(u, h, n)| (u.to_string(), h.to_string(), native(*n)))
                .collect(),
            resolves,
        )
    }

    #[test]
    fn wildcards() {
        assert!(wild_match(b"127.0.0.1", b"127.0.0.%", false));
        assert!(wild_match(b"127.0.0.1", b"%", false));
        assert!(wild_match(b"127.0.0.1", b"127.0.0._", false));
        assert!(!wild_match(b"127.0.0.10", b"127.0.0._", false));
        assert!(wild_match(b"LocalHost", b"localhost", true));
        assert!(!wild_match(b"LocalHost", b"localhost", false));
        assert!(wild_match(b"a%b", b"a\\%b", false));
        assert!(!wild_match(b"axb", b"a\\%b", false));
        assert!(wild_match(b"10.1.2.3", b"10.%.3", false));
        assert!(!wild_match(b"10.1.2.4", b"10.%.3", false));
        assert!(wild_match(b"", b"%", false));
    }

    #[test]
    fn netmask() {
        let p = HostPattern::new("127.0.0.0/255.0.0.0");
        assert!(p.matches(None, ip("127.1.2.3")));
        assert!(!p.matches(None, ip("10.0.0.1")));
    }

    /// The order MariaDB 10.11 showed for a TCP client from 127.0.0.1
    /// (see the proxy_edge_cases test `host_specific_accounts`).
    #[test]
    fn most_specific_host_wins() {
        let l = loaded(
            &[
                ("u", "%", 1),
                ("u", "localhost", 2),
                ("u", "127.0.0.1", 3),
                ("w", "%", 1),
                ("w", "127.0.0.%", 4),
                ("z", "127.%", 5),
                ("z", "127.0.0.0/255.0.0.0", 6),
            ],
            false,
        );
        let auth = |u: &str| l.find(u, ip("127.0.0.1")).map(|a| a.auth);
        assert_eq!(auth("u"), Some(native(3)));
        assert_eq!(auth("w"), Some(native(4)));
        assert_eq!(auth("z"), Some(native(6)));
        // An anonymous account at the exact address beats a@'%' (and
        // every named account at a less specific host).
        let anon = loaded(
            &[("a", "%", 1), ("", "127.0.0.1", 7), ("w", "127.0.0.%", 4)],
            false,
        );
        assert_eq!(
            anon.find("a", ip("127.0.0.1")).map(|a| a.auth),
            Some(native(7))
        );
        assert_eq!(
            anon.find("w", ip("127.0.0.1")).map(|a| a.auth),
            Some(native(7))
        );
        assert_eq!(
            anon.find("a", ip("10.0.0.1")).map(|a| a.auth),
            Some(native(1))
        );
        assert_eq!(l.find("u", ip("10.0.0.1")).map(|a| a.auth), Some(native(1)));
        assert_eq!(l.find("nobody", ip("10.0.0.1")), None);
        // With name resolution, loopback is 'localhost', which sorts first.
        let r = loaded(
            &[("u", "%", 1), ("u", "127.0.0.1", 3), ("u", "localhost", 2)],
            true,
        );
        assert_eq!(
            r.find("u", ip("127.0.0.1")).map(|a| a.auth),
            Some(native(2))
        );
        assert_eq!(
            r.find("u", ip("::ffff:127.0.0.1")).map(|a| a.name),
            Some("u@localhost".into())
        );
    }
}
