//! The daemon-wide state, built once from the configuration. Sessions get
//! a narrow [`SessionCtx`] out of it, never the whole thing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::accounts::{AccountError, AccountStore};
use crate::backend::routing::{Routing, RoutingError};
use crate::backend::{Backend, Backends};
use crate::config::Config;
use crate::datapath::local_app::{EventsCollector, LocalApp, MapEntriesCollector};
use crate::metrics::{DatapathKind, Metrics};
use crate::protocol::GreetingTemplate;
use crate::session::budget::BufferBudget;
use crate::session::{MoveLog, SessionCtx, SessionRegistry, SessionState};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("placement policy: {0}")]
    Routing(#[from] RoutingError),
    #[error("accounts: {0}")]
    Accounts(#[from] AccountError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// State shared by the listener, every session, the mover and the admin
/// surfaces.
pub struct App {
    pub config: Config,
    pub backends: Arc<Backends>,
    pub sessions: Arc<SessionRegistry>,
    pub accounts: Arc<AccountStore>,
    /// The policy document and the placement, under one lock.
    pub routing: Arc<Routing>,
    pub tls: Option<TlsAcceptor>,
    /// Session slots (`listen.max_connections`), taken once a client is
    /// authenticated.
    pub slots: Arc<Semaphore>,
    /// Slots for connections still in the handshake
    /// (`listen.max_handshakes`), so that clients that never log in cannot
    /// hold the session slots.
    pub handshakes: Arc<Semaphore>,
    /// Bytes of large client packets held at once
    /// (`listen.max_buffered_bytes`).
    pub buffers: Arc<BufferBudget>,
    /// Version string and capabilities of the backends, learnt from their
    /// greetings, presented to clients.
    pub greeting: RwLock<GreetingTemplate>,
    pub metrics: Arc<Metrics>,
    /// Recent moves (`SELECT * FROM moves`) and their metrics.
    pub moves: Arc<MoveLog>,
    /// The kernel session path, when `datapath.mode` selected it and the
    /// programs loaded.
    pub kernel: Option<Arc<LocalApp>>,
}

impl App {
    /// The state for a validated configuration, with the kernel path the
    /// caller loaded (or not).
    pub fn build(config: Config, kernel: Option<Arc<LocalApp>>) -> Result<Self, AppError> {
        let backends = Arc::new(Backends::new(
            config
                .servers
                .iter()
                .map(|s| Backend::new(&s.name, s.address, s.weight)),
        ));
        let routing = Arc::new(Routing::new(config.policy.clone())?);
        let accounts = Arc::new(AccountStore::from_config(&config)?);
        let tls = match &config.tls {
            Some(t) => Some(crate::tls::acceptor(&t.cert, &t.key)?),
            None => None,
        };
        let slots = Arc::new(Semaphore::new(config.listen.max_connections as usize));
        let handshakes = Arc::new(Semaphore::new(config.listen.max_handshakes as usize));
        let buffers = BufferBudget::new(config.listen.max_buffered_bytes);
        let sessions = Arc::new(SessionRegistry::new());
        let mut collectors: Vec<Box<dyn Collector>> = vec![Box::new(LiveCollector {
            sessions: sessions.clone(),
            backends: backends.clone(),
        })];
        if let Some(k) = &kernel {
            collectors.push(Box::new(MapEntriesCollector(k.clone())));
            collectors.push(Box::new(EventsCollector(k.clone())));
        }
        let mode = if kernel.is_some() {
            DatapathKind::Ebpf
        } else {
            DatapathKind::Userspace
        };
        let metrics = Arc::new(Metrics::new(mode, collectors));
        Ok(App {
            backends,
            sessions,
            moves: Arc::new(MoveLog::new(metrics.clone())),
            metrics,
            accounts,
            routing,
            tls,
            slots,
            handshakes,
            buffers,
            config,
            greeting: RwLock::new(GreetingTemplate::default()),
            kernel,
        })
    }

    /// What a session may use.
    pub fn session_ctx(&self) -> SessionCtx {
        SessionCtx {
            backends: self.backends.clone(),
            routing: self.routing.clone(),
            sessions: self.sessions.clone(),
            accounts: self.accounts.clone(),
            metrics: self.metrics.clone(),
            moves: self.moves.clone(),
            net_read_timeout: self.config.listen.net_read_timeout,
            buffers: self.buffers.clone(),
        }
    }

    /// Addresses of every configured server.
    pub fn server_addresses(&self) -> Vec<SocketAddr> {
        self.backends.all().iter().map(|b| b.address).collect()
    }
}

const SESSION_STATES: [SessionState; 4] = [
    SessionState::Connecting,
    SessionState::Idle,
    SessionState::Busy,
    SessionState::Moving,
];

/// `sessions{server,state}` and `backend_up{server}`, computed at scrape
/// time from the registry and the server set, so they never drift from
/// what `SELECT * FROM sessions` / `servers` show.
#[derive(Debug)]
struct LiveCollector {
    sessions: Arc<SessionRegistry>,
    backends: Arc<Backends>,
}

impl Collector for LiveCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let backends = self.backends.all();
        // Every configured server gets every state (zeros included) so
        // series do not vanish and reappear; servers that were removed
        // while sessions remain on them still show.
        let mut counts: BTreeMap<String, [u64; 4]> =
            backends.iter().map(|b| (b.name.clone(), [0; 4])).collect();
        for s in self.sessions.snapshot() {
            let i = SESSION_STATES
                .iter()
                .position(|st| *st == s.state)
                .unwrap_or(0);
            if let Some(n) = counts.entry(s.server_name).or_insert([0; 4]).get_mut(i) {
                *n += 1;
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "sessions",
                "Client sessions, by server and state",
                None,
                MetricType::Gauge,
            )?;
            for (server, by_state) in &counts {
                for (st, n) in SESSION_STATES.iter().zip(by_state) {
                    let labels = [("server", server.as_str()), ("state", st.as_str())];
                    m.encode_family(&labels)?.encode_gauge(n)?;
                }
            }
        }
        {
            let mut m = encoder.encode_descriptor(
                "backend_up",
                "1 if the server passes health checks, else 0",
                None,
                MetricType::Gauge,
            )?;
            for b in &backends {
                let labels = [("server", b.name.as_str())];
                m.encode_family(&labels)?
                    .encode_gauge(&u64::from(b.is_up()))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::sample;

    #[test]
    fn live_gauges_follow_sessions_and_servers() {
        let sessions = Arc::new(SessionRegistry::new());
        let backends = Arc::new(Backends::new([
            Backend::new("db1", "127.0.0.1:1".parse().unwrap(), 1),
            Backend::new("db2", "127.0.0.1:2".parse().unwrap(), 1),
        ]));
        backends.get("db2").unwrap().set_up(false);
        let m = Metrics::new(
            DatapathKind::Userspace,
            vec![Box::new(LiveCollector {
                sessions: sessions.clone(),
                backends,
            })],
        );
        let addr = "127.0.0.1:5000".parse().unwrap();
        let _g1 = sessions.register(1, "app", addr, "db1", DatapathKind::Userspace);
        let g2 = sessions.register(2, "app", addr, "db1", DatapathKind::Userspace);
        g2.session().set_state(SessionState::Busy);
        let t = m.encode().unwrap();
        let v = |s: &str| sample(&t, s);
        assert_eq!(
            v(r#"redirector_sessions{server="db1",state="idle"}"#),
            Some(1.0),
            "{t}"
        );
        assert_eq!(
            v(r#"redirector_sessions{server="db1",state="busy"}"#),
            Some(1.0)
        );
        assert_eq!(
            v(r#"redirector_sessions{server="db2",state="idle"}"#),
            Some(0.0)
        );
        assert_eq!(v(r#"redirector_backend_up{server="db1"}"#), Some(1.0));
        assert_eq!(v(r#"redirector_backend_up{server="db2"}"#), Some(0.0));
        assert!(t.contains("# TYPE redirector_sessions gauge"));
    }
}
