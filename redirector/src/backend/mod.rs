//! Backend servers: the configured set (changeable at runtime), their
//! administrative state (active / draining) and health; which server a
//! session goes to ([`routing`]); logging in there as the client's user
//! ([`login`]); and a small client over a session's own connection
//! ([`client`]).

pub mod client;
pub mod login;
pub mod routing;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How a server is reported (`SELECT * FROM servers`, STATE column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    Active,
    Draining,
    Drained,
    Down,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::Active => "active",
            ServerState::Draining => "draining",
            ServerState::Drained => "drained",
            ServerState::Down => "down",
        }
    }
}

#[derive(Debug)]
pub struct Backend {
    pub name: String,
    pub address: SocketAddr,
    weight: AtomicU32,
    draining: AtomicBool,
    up: AtomicBool,
}

impl Backend {
    pub fn new(name: &str, address: SocketAddr, weight: u32) -> Self {
        Self {
            name: name.to_string(),
            address,
            weight: AtomicU32::new(weight),
            draining: AtomicBool::new(false),
            // Optimistic until the first health check says otherwise, so the
            // first clients after start are not refused.
            up: AtomicBool::new(true),
        }
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    pub fn set_weight(&self, w: u32) {
        self.weight.store(w, Ordering::Relaxed)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn set_draining(&self, d: bool) {
        self.draining.store(d, Ordering::Relaxed)
    }

    /// May new sessions be placed here?
    pub fn accepts_new_sessions(&self) -> bool {
        self.is_up() && !self.is_draining()
    }

    /// The reported state given how many sessions the server holds.
    pub fn state(&self, sessions: usize) -> ServerState {
        if !self.is_up() {
            ServerState::Down
        } else if self.is_draining() {
            if sessions == 0 {
                ServerState::Drained
            } else {
                ServerState::Draining
            }
        } else {
            ServerState::Active
        }
    }
}

/// The configured servers, in configuration order.
#[derive(Debug, Default)]
pub struct Backends {
    list: RwLock<Vec<Arc<Backend>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("unknown server '{0}'")]
    Unknown(String),
    #[error("server '{0}' already exists")]
    Exists(String),
}

impl Backends {
    pub fn new(servers: impl IntoIterator<Item = Backend>) -> Self {
        Self {
            list: RwLock::new(servers.into_iter().map(Arc::new).collect()),
        }
    }

    pub fn all(&self) -> Vec<Arc<Backend>> {
        self.list.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn get(&self, name: &str) -> Result<Arc<Backend>, BackendError> {
        self.all()
            .into_iter()
            .find(|b| b.name == name)
            .ok_or_else(|| BackendError::Unknown(name.to_string()))
    }

    pub fn add(&self, backend: Backend) -> Result<Arc<Backend>, BackendError> {
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        if list.iter().any(|b| b.name == backend.name) {
            return Err(BackendError::Exists(backend.name));
        }
        let b = Arc::new(backend);
        list.push(b.clone());
        Ok(b)
    }

    pub fn remove(&self, name: &str) -> Result<Arc<Backend>, BackendError> {
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        let pos = list
            .iter()
            .position(|b| b.name == name)
            .ok_or_else(|| BackendError::Unknown(name.to_string()))?;
        Ok(list.remove(pos))
    }
}

/// One health probe: the server accepts a TCP connection and greets with a
/// protocol-10 handshake (not an ERR such as "host blocked" or "too many
/// connections"). Closing right after is what a port scanner does; MariaDB
/// counts it as an aborted connect but keeps no other state.
pub async fn probe(address: SocketAddr, timeout: Duration) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(address).await?;
        let mut header = [0u8; 5];
        s.read_exact(&mut header).await?;
        Ok::<bool, std::io::Error>(header[4] == 0x0a)
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Ok(true)))
}

/// Probes every server forever at `interval`, marking each up or down.
pub async fn health_loop(backends: Arc<Backends>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for b in backends.all() {
            let up = probe(b.address, interval.min(Duration::from_secs(2))).await;
            if up != b.is_up() {
                if up {
                    tracing::info!(server = %b.name, address = %b.address, "server is up");
                } else {
                    tracing::warn!(server = %b.name, address = %b.address, "server is down");
                }
            }
            b.set_up(up);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states() {
        let b = Backend::new("db1", "127.0.0.1:1".parse().unwrap(), 10);
        assert_eq!(b.state(3), ServerState::Active);
        b.set_draining(true);
        assert_eq!(b.state(3), ServerState::Draining);
        assert_eq!(b.state(0), ServerState::Drained);
        assert!(!b.accepts_new_sessions());
        b.set_up(false);
        assert_eq!(b.state(0), ServerState::Down);
    }

    #[test]
    fn add_remove() {
        let bs = Backends::new([Backend::new("db1", "127.0.0.1:1".parse().unwrap(), 1)]);
        assert!(bs
            .add(Backend::new("db1", "127.0.0.1:2".parse().unwrap(), 1))
            .is_err());
        assert!(bs
            .add(Backend::new("db2", "127.0.0.1:2".parse().unwrap(), 1))
            .is_ok());
        assert_eq!(bs.all().len(), 2);
        assert!(bs.remove("db3").is_err());
        assert_eq!(
            bs.remove("db1").map(|b| b.name.clone()).ok(),
            Some("db1".into())
        );
        assert!(bs.get("db1").is_err());
    }

    #[tokio::test]
    async fn probe_closed_port_is_down() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        assert!(!probe(addr, Duration::from_millis(500)).await);
    }
}
