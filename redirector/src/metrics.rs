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

use std::time::Duration;

use serde::Serialize;

use prometheus_client::collector::Collector;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

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

/// Which data path carries a session's bytes (`sessions.DATAPATH`, and the
/// `datapath` / `mode` label of the byte and mode metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DatapathKind {
    Userspace,
    Ebpf,
}

impl DatapathKind {
    pub const ALL: [DatapathKind; 2] = [DatapathKind::Userspace, DatapathKind::Ebpf];

    pub fn as_str(self) -> &'static str {
        match self {
            DatapathKind::Userspace => "userspace",
            DatapathKind::Ebpf => "ebpf",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

const DIRECTIONS: [Direction; 2] = [Direction::ClientToServer, Direction::ServerToClient];

/// How a move attempt ended (`result` label of `redirector_moves_total`,
/// `RESULT` of `SELECT * FROM moves`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveResult {
    /// The session now runs on the target server.
    Ok,
    /// The session did not become idle before the wait timeout.
    Timeout,
    /// The session has state that cannot be carried over (temp table, lock …).
    NotMovable,
    /// Any other failure (target login refused, target down, I/O error …).
    Failed,
}

impl MoveResult {
    pub const ALL: [MoveResult; 4] = [
        MoveResult::Ok,
        MoveResult::Timeout,
        MoveResult::NotMovable,
        MoveResult::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MoveResult::Ok => "ok",
            MoveResult::Timeout => "timeout",
            MoveResult::NotMovable => "not_movable",
            MoveResult::Failed => "failed",
        }
    }
}

/// Why a move was asked for (`reason` label of `redirector_moves_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveReason {
    /// `CONTROL MOVE SESSION …` / `POST /v1/sessions/move`.
    Operator,
    /// `CONTROL DRAIN SERVER` / `POST /v1/servers/{name}/drain`.
    Drain,
    /// `CONTROL REBALANCE` / `POST /v1/rebalance`.
    Rebalance,
    /// The session's server failed; the session was carried to another.
    Failover,
}

impl MoveReason {
    pub const ALL: [MoveReason; 4] = [
        MoveReason::Operator,
        MoveReason::Drain,
        MoveReason::Rebalance,
        MoveReason::Failover,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MoveReason::Operator => "operator",
            MoveReason::Drain => "drain",
            MoveReason::Rebalance => "rebalance",
            MoveReason::Failover => "failover",
        }
    }
}

/// Why a session that could have used the kernel path stays in userspace
/// (`redirector_kernel_fallbacks_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFallback {
    /// The client negotiated TLS: the kernel cannot read its bytes.
    Tls,
    /// The client pipelines commands.
    Pipelining,
    /// A socket fact (cookie) could not be read.
    Socket,
    /// A kernel map refused an entry (full, or the socket went away).
    Map,
    /// The client library is listed in `datapath.relay_clients`.
    Client,
    /// The kernel's count of client bytes passed to the daemon fell behind
    /// what the daemon read: after a send that filled the client's socket
    /// buffer, the kernel reuses the last sk_msg verdict for the next send
    /// without running the program. The daemon can then no longer prove it
    /// read every passed byte, so the kernel never carries the session again.
    Accounting,
}

impl KernelFallback {
    pub const ALL: [KernelFallback; 6] = [
        KernelFallback::Tls,
        KernelFallback::Pipelining,
        KernelFallback::Socket,
        KernelFallback::Map,
        KernelFallback::Client,
        KernelFallback::Accounting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KernelFallback::Tls => "tls",
            KernelFallback::Pipelining => "pipelining",
            KernelFallback::Socket => "socket",
            KernelFallback::Map => "map",
            KernelFallback::Client => "client",
            KernelFallback::Accounting => "accounting",
        }
    }
}

/// Kinds of `redirector_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// accept(2) failed on the client listener.
    Accept,
    /// A client broke the connection phase (bad packets, closed early).
    ClientHandshake,
    /// TLS handshake with a client failed.
    Tls,
    /// No backend could be connected to.
    BackendConnect,
    /// A backend refused the login as the client's user.
    BackendLogin,
    /// I/O error while relaying an established session.
    RelayIo,
    /// Protocol violation seen while relaying.
    Protocol,
    /// The eBPF data path failed for a session (it fell back or closed).
    Ebpf,
    /// A client was turned away or cut off by a configured bound
    /// (`listen.max_handshakes`, `max_connections`, `net_read_timeout_ms`,
    /// `max_buffered_bytes`).
    Limit,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::Accept,
        ErrorKind::ClientHandshake,
        ErrorKind::Tls,
        ErrorKind::BackendConnect,
        ErrorKind::BackendLogin,
        ErrorKind::RelayIo,
        ErrorKind::Protocol,
        ErrorKind::Ebpf,
        ErrorKind::Limit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Accept => "accept",
            ErrorKind::ClientHandshake => "client_handshake",
            ErrorKind::Tls => "tls",
            ErrorKind::BackendConnect => "backend_connect",
            ErrorKind::BackendLogin => "backend_login",
            ErrorKind::RelayIo => "relay_io",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Ebpf => "ebpf",
            ErrorKind::Limit => "limit",
        }
    }
}

/// Which admin surface refused a login (`surface` label of
/// `redirector_admin_auth_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminSurface {
    /// Admin SQL: wrong user or password.
    Sql,
    /// REST / `/metrics`: a wrong bearer token.
    Http,
}

impl AdminSurface {
    pub const ALL: [AdminSurface; 2] = [AdminSurface::Sql, AdminSurface::Http];

    pub fn as_str(self) -> &'static str {
        match self {
            AdminSurface::Sql => "sql",
            AdminSurface::Http => "http",
        }
    }
}

/// Why an admin login was refused (`reason` label of
/// `redirector_admin_auth_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAuthFailure {
    /// The credential was checked and is wrong.
    Invalid,
    /// The address is backing off after failures; the credential was not checked.
    Throttled,
}

impl AdminAuthFailure {
    pub const ALL: [AdminAuthFailure; 2] = [AdminAuthFailure::Invalid, AdminAuthFailure::Throttled];

    pub fn as_str(self) -> &'static str {
        match self {
            AdminAuthFailure::Invalid => "invalid",
            AdminAuthFailure::Throttled => "throttled",
        }
    }
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
    admin_auth_failures: Family<Labels2, Counter>,
    /// `[direction][datapath]`, pre-created so adding bytes is one atomic op.
    bytes: [[Counter; 2]; 2],
    moves: Family<Labels2, Counter>,
    move_duration: Histogram,
    errors: Family<Labels1, Counter>,
    kernel_fallbacks: Family<Labels1, Counter>,
    datapath_mode: [Gauge; 2],
    heap_in_use: Gauge,
}

impl Metrics {
    /// Registers every metric. `mode` is the data path new sessions use
    /// (see [`Metrics::set_datapath_mode`]); `collectors` compute gauges at
    /// scrape time from state this module does not know (sessions, servers,
    /// kernel maps), so those can never drift from what the admin surfaces
    /// show.
    pub fn new(mode: DatapathKind, collectors: Vec<Box<dyn Collector>>) -> Self {
        let mut registry = Registry::with_prefix("redirector");

        let sessions_accepted = Counter::default();
        registry.register(
            "sessions_accepted",
            "Client sessions that completed login (backend chosen and logged in)",
            sessions_accepted.clone(),
        );

        let moves = Family::<Labels2, Counter>::default();
        for result in MoveResult::ALL {
            for reason in MoveReason::ALL {
                drop(
                    moves
                        .get_or_create(&[("result", result.as_str()), ("reason", reason.as_str())]),
                );
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
            DatapathKind::ALL.map(|dp| {
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
            DatapathKind::ALL.map(|dp| mode_family.get_or_create(&[("mode", dp.as_str())]).clone());
        registry.register(
            "datapath_mode",
            "1 for the data path new sessions use, 0 for the others",
            mode_family,
        );

        let heap_in_use = Gauge::default();
        registry.register(
            "heap_in_use_bytes",
            "Bytes the daemon's allocator has handed out and not got back (glibc mallinfo2: \
             in-use heap chunks plus mmapped blocks), sampled every 2 s. Unlike the resident \
             size it does not count free memory the allocator keeps, so it is what grows \
             when something leaks",
            heap_in_use.clone(),
        );

        let auth_failures = Counter::default();
        registry.register(
            "auth_failures",
            "Client logins refused by the redirector (unknown user or wrong password)",
            auth_failures.clone(),
        );

        let admin_auth_failures = Family::<Labels2, Counter>::default();
        for surface in AdminSurface::ALL {
            for reason in AdminAuthFailure::ALL {
                drop(
                    admin_auth_failures.get_or_create(&[
                        ("surface", surface.as_str()),
                        ("reason", reason.as_str()),
                    ]),
                );
            }
        }
        registry.register(
            "admin_auth_failures",
            "Admin logins refused (admin SQL password, REST token), by surface and reason",
            admin_auth_failures.clone(),
        );

        let errors = Family::<Labels1, Counter>::default();
        for kind in ErrorKind::ALL {
            drop(errors.get_or_create(&[("kind", kind.as_str())]));
        }
        registry.register("errors", "Errors, by kind", errors.clone());

        let kernel_fallbacks = Family::<Labels1, Counter>::default();
        for r in KernelFallback::ALL {
            drop(kernel_fallbacks.get_or_create(&[("reason", r.as_str())]));
        }
        registry.register(
            "kernel_fallbacks",
            "Sessions that left (or never took) the kernel path although it is loaded, by reason",
            kernel_fallbacks.clone(),
        );

        for c in collectors {
            registry.register_collector(c);
        }

        let metrics = Metrics {
            registry,
            sessions_accepted,
            commands,
            auth_failures,
            admin_auth_failures,
            bytes,
            moves,
            move_duration,
            errors,
            kernel_fallbacks,
            datapath_mode,
            heap_in_use,
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

    /// An admin login refused on `surface`.
    pub fn admin_auth_failure(&self, surface: AdminSurface, reason: AdminAuthFailure) {
        self.admin_auth_failures
            .get_or_create(&[("surface", surface.as_str()), ("reason", reason.as_str())])
            .inc();
    }

    /// `n` bytes relayed in `direction` on `datapath`.
    pub fn add_bytes(&self, direction: Direction, datapath: DatapathKind, n: u64) {
        self.bytes[direction.index()][datapath.index()].inc_by(n);
    }

    /// The counter behind [`Metrics::add_bytes`], for callers that want to
    /// keep the handle (cloning it is an `Arc` clone; `inc_by` is one atomic add).
    pub fn bytes(&self, direction: Direction, datapath: DatapathKind) -> &Counter {
        &self.bytes[direction.index()][datapath.index()]
    }

    /// One error of `kind`.
    pub fn error(&self, kind: ErrorKind) {
        self.errors.get_or_create(&[("kind", kind.as_str())]).inc();
    }

    /// A session left the kernel path.
    pub fn kernel_fallback(&self, why: KernelFallback) {
        self.kernel_fallbacks
            .get_or_create(&[("reason", why.as_str())])
            .inc();
    }

    /// One finished move attempt and how long it took from request to outcome.
    pub fn record_move(&self, result: MoveResult, reason: MoveReason, duration: Duration) {
        self.moves
            .get_or_create(&[("result", result.as_str()), ("reason", reason.as_str())])
            .inc();
        self.move_duration.observe(duration.as_secs_f64());
    }

    /// Sets `redirector_datapath_mode{mode}` to 1 for `mode`, 0 for the others.
    pub fn set_datapath_mode(&self, mode: DatapathKind) {
        for dp in DatapathKind::ALL {
            self.datapath_mode[dp.index()].set(i64::from(dp == mode));
        }
    }

    /// `heap_in_use_bytes`.
    pub fn set_heap_in_use(&self, bytes: u64) {
        self.heap_in_use
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The whole exposition (OpenMetrics text, ends with `# EOF`).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The value of one sample in an exposition (for tests).
#[cfg(test)]
pub(crate) fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_labels_and_values() {
        let m = Metrics::new(DatapathKind::Userspace, Vec::new());
        m.session_accepted();
        m.session_accepted();
        m.command();
        m.commands(4);
        m.auth_failure();
        m.admin_auth_failure(AdminSurface::Http, AdminAuthFailure::Throttled);
        m.add_bytes(Direction::ClientToServer, DatapathKind::Userspace, 100);
        m.bytes(Direction::ServerToClient, DatapathKind::Ebpf)
            .inc_by(7);
        m.error(ErrorKind::RelayIo);
        m.record_move(MoveResult::Ok, MoveReason::Drain, Duration::from_millis(30));
        m.set_datapath_mode(DatapathKind::Ebpf);

        let t = m.encode().unwrap();
        let v = |s: &str| sample(&t, s);
        assert_eq!(v("redirector_sessions_accepted_total"), Some(2.0), "{t}");
        assert_eq!(v("redirector_commands_total"), Some(5.0));
        assert_eq!(v("redirector_auth_failures_total"), Some(1.0));
        assert_eq!(
            v(r#"redirector_admin_auth_failures_total{surface="http",reason="throttled"}"#),
            Some(1.0)
        );
        assert_eq!(
            v(r#"redirector_admin_auth_failures_total{surface="sql",reason="invalid"}"#),
            Some(0.0)
        );
        assert_eq!(
            v(r#"redirector_bytes_total{direction="client_to_server",datapath="userspace"}"#),
            Some(100.0)
        );
        assert_eq!(
            v(r#"redirector_bytes_total{direction="server_to_client",datapath="ebpf"}"#),
            Some(7.0)
        );
        assert_eq!(v(r#"redirector_errors_total{kind="relay_io"}"#), Some(1.0));
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
        assert!(t.contains("# TYPE redirector_move_duration_seconds histogram"));
        assert!(t.ends_with("# EOF\n"));
    }
}
