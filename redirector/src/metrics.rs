//! Prometheus metrics (`GET /metrics`), all prefixed `redirector_`.
//!
//! Counters and the move histogram are updated by the data path and the
//! mover through the cheap methods on [`Metrics`]; the per-server gauges
//! (`redirector_sessions`, `redirector_backend_up`) are computed at scrape
//! time from the session registry and the backend set, so they can never
//! drift from what `SELECT * FROM sessions` / `servers` show.
//!
//! Hot-path cost: [`Metrics::add_bytes`], [`Metrics::command`] and
//! [`Metrics::session_accepted`] are one relaxed atomic add on a
//! pre-created counter (no lock, no allocation). Label families (moves,
//! errors) take a read lock and a hash lookup; they are for rare events.
//!
//! The exposition is OpenMetrics text (what `prometheus-client` writes and
//! Prometheus scrapes natively): counters are declared without `_total` in
//! `# TYPE` and sampled as `<name>_total`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::backend::Backends;
use crate::session::{DatapathKind, SessionRegistry, SessionState};

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Direction of relayed bytes (`direction` label of `redirector_bytes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToServer => "client_to_server",
            Direction::ServerToClient => "server_to_client",
        }
    }

    fn index(self) -> usize {
        match self {
            Direction::ClientToServer => 0,
            Direction::ServerToClient => 1,
        }
    }
}

fn datapath_index(d: DatapathKind) -> usize {
    match d {
        DatapathKind::Userspace => 0,
        DatapathKind::Ebpf => 1,
    }
}

const DATAPATHS: [DatapathKind; 2] = [DatapathKind::Userspace, DatapathKind::Ebpf];
const DIRECTIONS: [Direction; 2] = [Direction::ClientToServer, Direction::ServerToClient];
const SESSION_STATES: [SessionState; 4] = [
    SessionState::Connecting,
    SessionState::Idle,
    SessionState::Busy,
    SessionState::Moving,
];

/// Values of the `result` label of `redirector_moves_total`. Any
/// `&'static str` is accepted; these are pre-created (exported as 0 from the
/// start, so `rate()` and alerts see them before the first move).
pub mod move_result {
    /// The session now runs on the target server.
    pub const OK: &str = "ok";
    /// The session did not become idle before the wait timeout.
    pub const TIMEOUT: &str = "timeout";
    /// The session has state that cannot be carried over (temp table, lock …).
    pub const NOT_MOVABLE: &str = "not_movable";
    /// Any other failure (target login refused, target down, I/O error …).
    pub const FAILED: &str = "failed";
    pub const ALL: [&str; 4] = [OK, TIMEOUT, NOT_MOVABLE, FAILED];
}

/// Values of the `reason` label of `redirector_moves_total` (why the move
/// was requested). Any `&'static str` is accepted; these are pre-created.
pub mod move_reason {
    /// `CONTROL MOVE SESSION …` / `POST /v1/sessions/move`.
    pub const OPERATOR: &str = "operator";
    /// `CONTROL DRAIN SERVER` / `POST /v1/servers/{name}/drain`.
    pub const DRAIN: &str = "drain";
    /// `CONTROL REBALANCE` / `POST /v1/rebalance`.
    pub const REBALANCE: &str = "rebalance";
    /// The session's server failed; the session was carried to another.
    pub const FAILOVER: &str = "failover";
    pub const ALL: [&str; 4] = [OPERATOR, DRAIN, REBALANCE, FAILOVER];
}

/// Values of the `kind` label of `redirector_errors_total`. Any
/// `&'static str` is accepted; these are pre-created.
pub mod error_kind {
    /// accept(2) failed on the client listener.
    pub const ACCEPT: &str = "accept";
    /// A client broke the connection phase (bad packets, closed early).
    pub const CLIENT_HANDSHAKE: &str = "client_handshake";
    /// TLS handshake with a client failed.
    pub const TLS: &str = "tls";
    /// No backend could be connected to.
    pub const BACKEND_CONNECT: &str = "backend_connect";
    /// A backend refused the login as the client's user.
    pub const BACKEND_LOGIN: &str = "backend_login";
    /// I/O error while relaying an established session.
    pub const RELAY_IO: &str = "relay_io";
    /// Protocol violation seen while relaying.
    pub const PROTOCOL: &str = "protocol";
    /// The eBPF data path failed for a session (it fell back or closed).
    pub const EBPF: &str = "ebpf";
    pub const ALL: [&str; 8] = [
        ACCEPT,
        CLIENT_HANDSHAKE,
        TLS,
        BACKEND_CONNECT,
        BACKEND_LOGIN,
        RELAY_IO,
        PROTOCOL,
        EBPF,
    ];
}

type Labels1 = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// Move duration buckets: 1 ms … ~65 s (a move waits for the session to
/// become idle, up to its wait timeout).
fn move_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 17)
}

/// The daemon's metrics: a registry and typed handles into it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sessions_accepted: Counter,
    commands: Counter,
    auth_failures: Counter,
    /// `[direction][datapath]`, pre-created so adding bytes is one atomic op.
    bytes: [[Counter; 2]; 2],
    moves: Family<Labels2, Counter>,
    move_duration: Histogram,
    errors: Family<Labels1, Counter>,
    datapath_mode: [Gauge; 2],
}

impl Metrics {
    /// Registers every metric. `sessions` and `backends` are read at each
    /// scrape; `mode` is the data path new sessions use (see
    /// [`Metrics::set_datapath_mode`]).
    pub fn new(
        sessions: Arc<SessionRegistry>,
        backends: Arc<Backends>,
        mode: DatapathKind,
        kernel: Option<Arc<crate::datapath::kernel::KernelPath>>,
    ) -> Self {
        let mut registry = Registry::with_prefix("redirector");

        let sessions_accepted = Counter::default();
        registry.register(
            "sessions_accepted",
            "Client sessions that completed login (backend chosen and logged in)",
            sessions_accepted.clone(),
        );

        let moves = Family::<Labels2, Counter>::default();
        for result in move_result::ALL {
            for reason in move_reason::ALL {
                drop(moves.get_or_create(&[("result", result), ("reason", reason)]));
            }
        }
        registry.register(
            "moves",
            "Session moves attempted, by result and reason",
            moves.clone(),
        );

        let move_duration = Histogram::new(move_buckets());
        registry.register_with_unit(
            "move_duration",
            "Time from a move request to the session running on its target (including waiting for idle)",
            Unit::Seconds,
            move_duration.clone(),
        );

        let bytes_family = Family::<Labels2, Counter>::default();
        let bytes = DIRECTIONS.map(|dir| {
            DATAPATHS.map(|dp| {
                bytes_family
                    .get_or_create(&[("direction", dir.as_str()), ("datapath", dp.as_str())])
                    .clone()
            })
        });
        registry.register(
            "bytes",
            "Bytes relayed between clients and servers, by direction and data path",
            bytes_family,
        );

        let commands = Counter::default();
        registry.register(
            "commands",
            "Client commands (MySQL command packets) relayed to servers",
            commands.clone(),
        );

        let mode_family = Family::<Labels1, Gauge>::default();
        let datapath_mode =
            DATAPATHS.map(|dp| mode_family.get_or_create(&[("mode", dp.as_str())]).clone());
        registry.register(
            "datapath_mode",
            "1 for the data path new sessions use, 0 for the others",
            mode_family,
        );

        let auth_failures = Counter::default();
        registry.register(
            "auth_failures",
            "Client logins refused by the redirector (unknown user or wrong password)",
            auth_failures.clone(),
        );

        let errors = Family::<Labels1, Counter>::default();
        for kind in error_kind::ALL {
            drop(errors.get_or_create(&[("kind", kind)]));
        }
        registry.register("errors", "Errors, by kind", errors.clone());

        registry.register_collector(Box::new(LiveCollector { sessions, backends }));
        if let Some(kernel) = kernel {
            registry.register_collector(Box::new(KernelMapCollector { kernel }));
        }

        let metrics = Metrics {
            registry,
            sessions_accepted,
            commands,
            auth_failures,
            bytes,
            moves,
            move_duration,
            errors,
            datapath_mode,
        };
        metrics.set_datapath_mode(mode);
        metrics
    }

    /// A client session completed login and is being relayed.
    pub fn session_accepted(&self) {
        self.sessions_accepted.inc();
    }

    /// One client command relayed.
    pub fn command(&self) {
        self.commands.inc();
    }

    /// `n` client commands relayed (for batching on the hot path).
    pub fn commands(&self, n: u64) {
        self.commands.inc_by(n);
    }

    /// A client login refused by the redirector's own authentication.
    pub fn auth_failure(&self) {
        self.auth_failures.inc();
    }

    /// `n` bytes relayed in `direction` on `datapath`.
    pub fn add_bytes(&self, direction: Direction, datapath: DatapathKind, n: u64) {
        self.bytes[direction.index()][datapath_index(datapath)].inc_by(n);
    }

    /// The counter behind [`Metrics::add_bytes`], for callers that want to
    /// keep the handle (cloning it is an `Arc` clone; `inc_by` is one atomic add).
    pub fn bytes(&self, direction: Direction, datapath: DatapathKind) -> &Counter {
        &self.bytes[direction.index()][datapath_index(datapath)]
    }

    /// One error of `kind` (see [`error_kind`] for the usual kinds).
    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&[("kind", kind)]).inc();
    }

    /// One finished move attempt: `result` (see [`move_result`]), `reason`
    /// (see [`move_reason`]) and how long it took from request to outcome.
    pub fn record_move(&self, result: &'static str, reason: &'static str, duration: Duration) {
        self.moves
            .get_or_create(&[("result", result), ("reason", reason)])
            .inc();
        self.move_duration.observe(duration.as_secs_f64());
    }

    /// Sets `redirector_datapath_mode{mode}` to 1 for `mode`, 0 for the others.
    pub fn set_datapath_mode(&self, mode: DatapathKind) {
        for dp in DATAPATHS {
            self.datapath_mode[datapath_index(dp)].set(i64::from(dp == mode));
        }
    }

    /// The whole exposition (OpenMetrics text, ends with `# EOF`).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Computes the per-server gauges at scrape time.
#[derive(Debug)]
struct LiveCollector {
    sessions: Arc<SessionRegistry>,
    backends: Arc<Backends>,
}

/// `ebpf_map_entries{map}`: entries in each kernel session map, read at
/// scrape time (every session's entries go when it ends; a leak shows here).
#[derive(Debug)]
struct KernelMapCollector {
    kernel: Arc<crate::datapath::kernel::KernelPath>,
}

impl Collector for KernelMapCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let entries = self.kernel.map_entries();
        let mut m = encoder.encode_descriptor(
            "ebpf_map_entries",
            "Entries in each eBPF map of the kernel session path",
            None,
            MetricType::Gauge,
        )?;
        for (map, n) in entries.by_name() {
            m.encode_family(&[("map", map)])?
                .encode_gauge(&(n as u64))?;
        }
        Ok(())
    }
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
            counts.entry(s.server_name).or_insert([0; 4])[i] += 1;
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
    use crate::backend::Backend;

    fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    #[test]
    fn exposition_names_labels_and_values() {
        let sessions = Arc::new(SessionRegistry::new());
        let backends = Arc::new(Backends::new([
            Backend::new("db1", "127.0.0.1:1".parse().unwrap(), 1),
            Backend::new("db2", "127.0.0.1:2".parse().unwrap(), 1),
        ]));
        backends.get("db2").unwrap().set_up(false);
        let m = Metrics::new(sessions.clone(), backends, DatapathKind::Userspace, None);
        let addr = "127.0.0.1:5000".parse().unwrap();
        let _g1 = sessions.register(1, "app", addr, "db1", DatapathKind::Userspace);
        let g2 = sessions.register(2, "app", addr, "db1", DatapathKind::Userspace);
        g2.session().set_state(SessionState::Busy);

        m.session_accepted();
        m.session_accepted();
        m.command();
        m.commands(4);
        m.auth_failure();
        m.add_bytes(Direction::ClientToServer, DatapathKind::Userspace, 100);
        m.bytes(Direction::ServerToClient, DatapathKind::Ebpf)
            .inc_by(7);
        m.error(error_kind::RELAY_IO);
        m.error("something_new");
        m.record_move(
            move_result::OK,
            move_reason::DRAIN,
            Duration::from_millis(30),
        );
        m.set_datapath_mode(DatapathKind::Ebpf);

        let t = m.encode().unwrap();
        let v = |s: &str| sample(&t, s);
        assert_eq!(v("redirector_sessions_accepted_total"), Some(2.0), "{t}");
        assert_eq!(v("redirector_commands_total"), Some(5.0));
        assert_eq!(v("redirector_auth_failures_total"), Some(1.0));
        assert_eq!(
            v(r#"redirector_bytes_total{direction="client_to_server",datapath="userspace"}"#),
            Some(100.0)
        );
        assert_eq!(
            v(r#"redirector_bytes_total{direction="server_to_client",datapath="ebpf"}"#),
            Some(7.0)
        );
        assert_eq!(v(r#"redirector_errors_total{kind="relay_io"}"#), Some(1.0));
        assert_eq!(
            v(r#"redirector_errors_total{kind="something_new"}"#),
            Some(1.0)
        );
        assert_eq!(v(r#"redirector_errors_total{kind="tls"}"#), Some(0.0));
        assert_eq!(
            v(r#"redirector_moves_total{result="ok",reason="drain"}"#),
            Some(1.0)
        );
        assert_eq!(
            v(r#"redirector_moves_total{result="timeout",reason="rebalance"}"#),
            Some(0.0)
        );
        assert_eq!(v("redirector_move_duration_seconds_count"), Some(1.0));
        assert_eq!(
            v(r#"redirector_move_duration_seconds_bucket{le="0.032"}"#),
            Some(1.0)
        );
        assert_eq!(
            v(r#"redirector_move_duration_seconds_bucket{le="0.016"}"#),
            Some(0.0)
        );
        assert_eq!(v(r#"redirector_datapath_mode{mode="ebpf"}"#), Some(1.0));
        assert_eq!(
            v(r#"redirector_datapath_mode{mode="userspace"}"#),
            Some(0.0)
        );
        assert_eq!(
            v(r#"redirector_sessions{server="db1",state="idle"}"#),
            Some(1.0)
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
        assert!(t.contains("# TYPE redirector_move_duration_seconds histogram"));
        assert!(t.ends_with("# EOF\n"));
    }
}
