//! Client accounts: who may log in through the redirector, with the
//! mysql_native_password stage-2 hash SHA1(SHA1(password)) of each.
//!
//! Accounts come from `[[auth.users]]` and/or are read from the backends'
//! `mysql.user` with the service account. An unknown user triggers a reload,
//! at most once per [`RELOAD_MIN_INTERVAL`], so a client guessing names
//! cannot hammer the backends.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use crate::config::{parse_native_hash, Config, Credential, ServiceAccount};
use crate::protocol::auth::double_sha1;

pub const RELOAD_MIN_INTERVAL: Duration = Duration::from_secs(2);

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

#[derive(Debug)]
pub struct AccountStore {
    configured: HashMap<String, StoredHash>,
    loaded: RwLock<HashMap<String, StoredHash>>,
    service: Option<ServiceAccount>,
    /// When the last reload started; held while one runs so that
    /// concurrent logins of a new user wait for it instead of failing.
    last_reload: tokio::sync::Mutex<Option<Instant>>,
}

impl AccountStore {
    pub fn from_config(config: &Config) -> Result<Self, AccountError> {
        let configured = config
            .auth
            .users
            .iter()
            .map(|u| {
                let h = match &u.credential {
                    Credential::Password(p) if p.is_empty() => None,
                    Credential::Password(p) => Some(double_sha1(p.as_bytes())),
                    Credential::NativeHash(h) => Some(*h),
                };
                (u.name.clone(), h)
            })
            .collect();
        Ok(Self {
            configured,
            loaded: RwLock::new(HashMap::new()),
            service: config.auth.service.clone(),
            last_reload: tokio::sync::Mutex::new(None),
        })
    }

    /// The stored hash of `user`: configured accounts first, then those
    /// loaded from the backends. `None` = unknown user.
    pub fn get(&self, user: &str) -> Option<StoredHash> {
        if let Some(h) = self.configured.get(user) {
            return Some(*h);
        }
        self.loaded
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(user)
            .copied()
    }

    /// Looks `user` up, reloading from the backends once if it is unknown
    /// (rate-limited; concurrent callers wait for the reload in progress).
    pub async fn lookup(&self, user: &str, servers: &[std::net::SocketAddr]) -> Option<StoredHash> {
        if let Some(h) = self.get(user) {
            return Some(h);
        }
        self.service.as_ref()?;
        let asked = Instant::now();
        let mut last = self.last_reload.lock().await;
        if let Some(h) = self.get(user) {
            // Loaded by the reload we waited for.
            return Some(h);
        }
        if last.is_some_and(|t| t >= asked) {
            // A reload that started after our request did not find it.
            return None;
        }
        if last.is_none_or(|t| t.elapsed() >= RELOAD_MIN_INTERVAL) {
            *last = Some(Instant::now());
            if let Err(e) = self.reload(servers).await {
                tracing::warn!(error = %e, "could not reload accounts");
            }
        }
        self.get(user)
    }

    /// After a failed password check on a loaded account: the password may
    /// have changed on the backends since the last load. Reloads (rate-
    /// limited) and returns the hash now known, if it differs.
    pub async fn refresh(
        &self,
        user: &str,
        servers: &[std::net::SocketAddr],
    ) -> Option<StoredHash> {
        if self.configured.contains_key(user) || self.service.is_none() {
            return None;
        }
        let before = self.get(user);
        let mut last = self.last_reload.lock().await;
        if last.is_some_and(|t| t.elapsed() < RELOAD_MIN_INTERVAL) {
            let now = self.get(user);
            return (now != before).then_some(now).flatten();
        }
        *last = Some(Instant::now());
        if let Err(e) = self.reload(servers).await {
            tracing::warn!(error = %e, "could not reload accounts");
            return None;
        }
        let after = self.get(user);
        (after != before).then_some(after).flatten()
    }

    /// Reads mysql_native_password accounts (and password-less ones) from the
    /// first server that answers.
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

async fn load_from(
    addr: &std::net::SocketAddr,
    svc: &ServiceAccount,
) -> Result<HashMap<String, StoredHash>, AccountError> {
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
    // Host patterns are not evaluated: a user name maps to one hash. When an
    // account exists for several hosts, '%' wins, then the first seen. The
    // backend still checks its own host rules (against our address) when we
    // log in there as that user.
    let rows: Vec<(String, String, String, String)> = conn
        .query(
            "SELECT User, Host, plugin, authentication_string FROM mysql.user \
             WHERE plugin IN ('mysql_native_password', '') ORDER BY Host = '%' DESC",
        )
        .await
        .map_err(err)?;
    let _ = conn.disconnect().await;
    let mut out = HashMap::new();
    for (user, host, _plugin, auth) in rows {
        if user.is_empty() || out.contains_key(&user) {
            continue;
        }
        let hash = if auth.is_empty() {
            // A password-less account tied to a host (root@localhost on a
            // fresh install) must not become a password-less login for
            // every client of the redirector.
            if host != "%" {
                continue;
            }
            None
        } else {
            match parse_native_hash(&auth) {
                Ok(h) => Some(h),
                Err(_) => continue,
            }
        };
        out.insert(user, hash);
    }
    Ok(out)
}
