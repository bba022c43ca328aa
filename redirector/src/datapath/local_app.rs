//! The kernel session path for applications on this host (see
//! `redirector_common::maps` for the programs and maps).
//!
//! The daemon logs each session in itself, then whenever the relay is idle
//! it *arms* the session: from then on the application's commands go from
//! its socket straight to the backend socket (sk_msg) and the responses
//! straight back into the application's receive queue (stream verdict),
//! each packet fed to the same `mysql::Framer` and `mysql::Tracker` the
//! userspace relay runs, kept in a map. The kernel *punts* (passes bytes to the daemon's
//! accepted socket) on a command the daemon must handle; the relay then
//! *disarms* the session, continues from the kernel's tracker, and arms it
//! again at the next idle point.
//!
//! # No byte lost or reordered
//!
//! - Every byte the application sends either goes to the backend (counted
//!   in `client_redirected_bytes`) or is passed to the accepted socket
//!   (`client_passed_bytes`, counted from the socket's first byte: sock_ops
//!   creates the counters at ESTABLISHED). The daemon arms only when it has
//!   read every passed byte (`client_passed_bytes` = the accepted socket's
//!   read offset), and the kernel redirects only while `client_passed_bytes`
//!   still equals the value the daemon armed with: a byte passed in between
//!   makes every later byte pass too, so nothing overtakes it.
//! - HOLD: the daemon sets `hold`, then waits until every sk_msg run that may
//!   have seen the old control word has finished (`msg_runs_started` =
//!   `msg_runs_done`; the program counts the start before reading the
//!   control word), then until no kernel-forwarded response is in flight.
//!   From then on the kernel passes everything both ways.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, RingBuf, SockHash};
use aya::programs::{CgroupAttachMode, SkMsg, SkSkb, SockOps};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use redirector_common::maps::{
    FlowKey, KernelTrack, ListenConfig, SessionCounters, SessionCtl, StmtKey, APPS,
    APP_PASS_PROGRAM, BACKENDS, BACKEND_VERDICT_PROGRAM, BSIDES, CONFIG, CTL, KSTATS, KSTAT_NAMES,
    LOCAL_APPS, MSG_PROGRAM, PUNT_NONE, PUNT_PIPELINED, SESSION_COUNTERS, SESSION_FORWARD,
    SOCKOPS_PROGRAM, TRACK, TYPED, WAKES,
};
use redirector_common::mysql::{self, Tracker};
use tokio::net::TcpStream;

use super::loader::Programs;
use super::wake::{Wakes, Watch};
use super::{map_err, sock_err, DatapathError};
use crate::metrics::KernelFallback;
use crate::net::{copied_offset, has_input, has_input_fd, hung_up, peer_closed, socket_cookie};

/// How often a session the kernel carries reports its counters and state.
const KERNEL_PUBLISH_INTERVAL: Duration = Duration::from_secs(1);
/// Client bytes the daemon may read between two armings before the kernel
/// path gives the session up. When a client's send fills its socket buffer
/// (the daemon's receive window and the client's send buffer both full),
/// the kernel keeps the last sk_msg verdict for the client's next send
/// without running the program (`tcp_bpf_send_verdict` resets it only
/// after a successful push), so the program's count of passed bytes, which
/// arming relies on to prove the daemon read everything, drifts. The
/// smallest receive window plus send buffer on loopback is well above this.
pub const PASSED_BURST_LIMIT: usize = 16 * 1024;
/// HOLD waiting longer than this for a kernel-forwarded response is logged.
const KERNEL_SLOW_HOLD: Duration = Duration::from_secs(5);

struct Maps {
    apps: SockHash<MapData, u64>,
    backends: SockHash<MapData, u64>,
    local_apps: HashMap<MapData, FlowKey, u64>,
    ctl: HashMap<MapData, u64, SessionCtl>,
    track: HashMap<MapData, u64, KernelTrack>,
    counters: HashMap<MapData, u64, SessionCounters>,
    bsides: HashMap<MapData, u64, u64>,
    typed: HashMap<MapData, StmtKey, u32>,
    kstats: PerCpuArray<MapData, u64>,
}

/// Number of entries in each map (tests and the `ebpf_map_entries` metric).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapEntries {
    pub apps: usize,
    pub backends: usize,
    pub local_apps: usize,
    pub ctl: usize,
    pub track: usize,
    pub counters: usize,
    pub bsides: usize,
    pub typed: usize,
}

impl MapEntries {
    pub fn total(&self) -> usize {
        self.apps
            + self.backends
            + self.local_apps
            + self.ctl
            + self.track
            + self.counters
            + self.bsides
            + self.typed
    }

    /// (map name, entries) pairs.
    pub fn by_name(&self) -> [(&'static str, usize); 8] {
        [
            (APPS, self.apps),
            (BACKENDS, self.backends),
            (LOCAL_APPS, self.local_apps),
            (CTL, self.ctl),
            (TRACK, self.track),
            (SESSION_COUNTERS, self.counters),
            (BSIDES, self.bsides),
            (TYPED, self.typed),
        ]
    }
}

/// The loaded kernel session path: its maps, and the programs (attached)
/// that it owns.
pub struct LocalApp {
    maps: Mutex<Maps>,
    wakes: Arc<Wakes>,
    // Owns the programs and their attachments (detached on drop).
    _programs: Programs,
}

impl std::fmt::Debug for LocalApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalApp").finish_non_exhaustive()
    }
}

fn prog_err(program: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> DatapathError {
    move |source| DatapathError::Program {
        program: program.to_string(),
        source,
    }
}

impl LocalApp {
    /// Loads the programs ([`Programs::load`]), attaches sock_ops to
    /// `cgroup` (alongside any other programs there) for connections to
    /// `listen`, the sk_msg program to the application sockhash and the
    /// tracking verdict to the backend sockhash. IPv4 listeners only.
    pub fn load(
        object: Option<&Path>,
        cgroup: &Path,
        listen: SocketAddr,
    ) -> Result<Self, DatapathError> {
        let ip4 = match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => 0,
            IpAddr::V4(ip) => u32::from_ne_bytes(ip.octets()),
            IpAddr::V6(_) => {
                return Err(DatapathError::Unsupported(format!(
                    "listener {listen}: the kernel session path supports IPv4 listeners only"
                )))
            }
        };
        let mut programs = Programs::load(object)?;
        let apps: SockHash<MapData, u64> = programs.take_map(APPS, SockHash::try_from)?;
        let backends: SockHash<MapData, u64> = programs.take_map(BACKENDS, SockHash::try_from)?;
        let mut config: Array<MapData, ListenConfig> =
            programs.take_map(CONFIG, Array::try_from)?;
        let maps = Maps {
            apps,
            backends,
            local_apps: programs.take_map(LOCAL_APPS, HashMap::try_from)?,
            ctl: programs.take_map(CTL, HashMap::try_from)?,
            track: programs.take_map(TRACK, HashMap::try_from)?,
            counters: programs.take_map(SESSION_COUNTERS, HashMap::try_from)?,
            bsides: programs.take_map(BSIDES, HashMap::try_from)?,
            typed: programs.take_map(TYPED, HashMap::try_from)?,
            kstats: programs.take_map(KSTATS, PerCpuArray::try_from)?,
        };
        let wakes = Arc::new(Wakes::new(programs.take_map(WAKES, RingBuf::try_from)?)?);
        config
            .set(
                0,
                ListenConfig {
                    ip4,
                    port: u32::from(listen.port()),
                },
                0,
            )
            .map_err(map_err(CONFIG))?;

        // Programs on the maps first: sockets inherit them when inserted.
        let msg: &mut SkMsg = programs.program(MSG_PROGRAM)?;
        msg.attach(maps.apps.fd()).map_err(prog_err(MSG_PROGRAM))?;
        // A pass-through verdict on application sockets: what the daemon
        // writes to the application (slow-path answers, errors) then queues
        // behind what the backend verdict redirected there, in one FIFO.
        // Without it, TCP bytes are read before redirected ones still in the
        // psock's queue.
        let pass: &mut SkSkb = programs.program(APP_PASS_PROGRAM)?;
        pass.attach(maps.apps.fd())
            .map_err(prog_err(APP_PASS_PROGRAM))?;
        let verdict: &mut SkSkb = programs.program(BACKEND_VERDICT_PROGRAM)?;
        verdict
            .attach(maps.backends.fd())
            .map_err(prog_err(BACKEND_VERDICT_PROGRAM))?;
        let sockops: &mut SockOps = programs.program(SOCKOPS_PROGRAM)?;
        let cg = std::fs::File::open(cgroup).map_err(|e| {
            DatapathError::Socket(format!("opening cgroup {}", cgroup.display()), e)
        })?;
        sockops
            .attach(cg, CgroupAttachMode::Single)
            .map_err(prog_err(SOCKOPS_PROGRAM))?;
        tracing::info!(cgroup = %cgroup.display(), %listen, "eBPF kernel session path loaded (sock_ops + sk_msg + stream verdicts)");
        Ok(Self {
            maps: Mutex::new(maps),
            wakes,
            _programs: programs,
        })
    }

    /// The offload of a client that connected from `peer` to our `local`
    /// address, if it is a socket on this host that sock_ops put in the
    /// application map.
    pub fn session_for(
        self: &Arc<Self>,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Option<LocalAppSession> {
        let flow = flow_key(peer, local)?;
        let cookie = self.maps().local_apps.get(&flow, 0).ok()?;
        Some(LocalAppSession::new(self.clone(), cookie, flow))
    }

    fn maps(&self) -> MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes the entries of the session of the application socket
    /// `cookie` (call when the session ends, whether it was ever armed or
    /// not). The application socket itself stays in `APPS` until the
    /// application closes it: removing it would free what its queue still
    /// holds (our last answer, an error) before the application read it.
    pub fn forget(
        &self,
        cookie: u64,
        flow: &FlowKey,
        backend_cookie: Option<u64>,
        typed: &BTreeSet<u32>,
    ) {
        let mut m = self.maps();
        let _ = m.ctl.remove(&cookie);
        let _ = m.track.remove(&cookie);
        let _ = m.counters.remove(&cookie);
        // Only our own flow entry: a newer connection may own it now.
        if m.local_apps.get(flow, 0).is_ok_and(|c| c == cookie) {
            let _ = m.local_apps.remove(flow);
        }
        if let Some(c) = backend_cookie {
            let _ = m.bsides.remove(&c);
            let _ = m.backends.remove(&c);
        }
        for &stmt_id in typed {
            let _ = m.typed.remove(&StmtKey {
                app_cookie: cookie,
                stmt_id,
                _pad: 0,
            });
        }
    }

    /// Puts a backend socket (idle: nothing unread) in the backend map for
    /// the session `key`. Returns its cookie.
    pub fn attach_backend(&self, app: u64, backend: BorrowedFd<'_>) -> Result<u64, DatapathError> {
        let cookie = socket_cookie(backend).map_err(sock_err("SO_COOKIE of the backend socket"))?;
        let mut m = self.maps();
        m.bsides.insert(cookie, app, 0).map_err(map_err(BSIDES))?;
        if let Err(e) = m.backends.insert(cookie, backend.as_raw_fd(), 0) {
            let _ = m.bsides.remove(&cookie);
            return Err(map_err(BACKENDS)(e));
        }
        Ok(cookie)
    }

    /// Takes a backend socket out of the maps (before it is closed or moved away from).
    pub fn detach_backend(&self, cookie: u64) {
        let mut m = self.maps();
        let _ = m.backends.remove(&cookie);
        let _ = m.bsides.remove(&cookie);
    }

    /// Session counters (zero if the entry is gone).
    pub fn counters(&self, key: u64) -> SessionCounters {
        self.maps().counters.get(&key, 0).unwrap_or_default()
    }

    /// The kernel's protocol state of the session.
    pub fn track(&self, key: u64) -> Option<KernelTrack> {
        self.maps().track.get(&key, 0).ok()
    }

    /// Whether every byte the application passed to the accepted socket
    /// `client` has been read (the precondition of [`LocalApp::arm`]).
    pub fn caught_up(&self, key: u64, client: BorrowedFd<'_>) -> bool {
        let Ok(read) = copied_offset(client) else {
            return false;
        };
        self.maps()
            .counters
            .get(&key, 0)
            .is_ok_and(|c| c.client_passed_bytes == read)
    }

    /// Arms the session if every byte the application passed to the
    /// accepted socket `client` has been read. Returns the arming epoch, or
    /// `None` when there are unread bytes (read them, then try again).
    pub fn arm(
        &self,
        key: u64,
        client: BorrowedFd<'_>,
        tracker: &Tracker,
        backend_cookie: u64,
        epoch: u64,
    ) -> Result<Option<u64>, DatapathError> {
        let read = copied_offset(client).map_err(sock_err("TCP position of the client"))?;
        let mut m = self.maps();
        let Ok(c) = m.counters.get(&key, 0) else {
            // The application's socket is gone (closed): nothing to arm.
            return Ok(None);
        };
        if c.client_passed_bytes != read {
            return Ok(None);
        }
        // Armed only between responses: both streams at a packet boundary.
        m.track
            .insert(key, KernelTrack::armed(*tracker), 0)
            .map_err(map_err(TRACK))?;
        m.ctl
            .insert(
                key,
                SessionCtl {
                    backend_cookie,
                    mode: SESSION_FORWARD,
                    hold: 0,
                    epoch,
                    forward_at: read,
                },
                0,
            )
            .map_err(map_err(CTL))?;
        Ok(Some(epoch))
    }

    /// Changes the armed control word.
    fn set_ctl(&self, key: u64, change: impl FnOnce(&mut SessionCtl)) {
        let mut m = self.maps();
        if let Ok(mut ctl) = m.ctl.get(&key, 0) {
            change(&mut ctl);
            let _ = m.ctl.insert(key, ctl, 0);
        }
    }

    /// Disarms: from now on every byte either side sends is passed to the
    /// daemon (in-flight verdict runs finish first: see the barrier in
    /// [`LocalAppSession::park`]).
    fn disarm(&self, key: u64) {
        self.set_ctl(key, |ctl| ctl.mode = 0);
    }

    /// HOLD: from now on client bytes are passed to the daemon. Returns once
    /// no sk_msg run can still act on the armed control word.
    pub async fn hold(&self, key: u64) {
        self.set_ctl(key, |ctl| ctl.hold = 1);
        for _ in 0..10_000 {
            let c = self.counters(key);
            if c.msg_runs_started == c.msg_runs_done {
                return;
            }
            tokio::task::yield_now().await;
        }
        tracing::warn!(key, "sk_msg runs did not settle after HOLD");
    }

    /// Marks statement ids whose COM_STMT_EXECUTE the kernel may carry.
    pub fn set_typed(&self, key: u64, add: &[u32], remove: &[u32]) {
        let mut m = self.maps();
        for &stmt_id in add {
            let _ = m.typed.insert(
                StmtKey {
                    app_cookie: key,
                    stmt_id,
                    _pad: 0,
                },
                1,
                0,
            );
        }
        for &stmt_id in remove {
            let _ = m.typed.remove(&StmtKey {
                app_cookie: key,
                stmt_id,
                _pad: 0,
            });
        }
    }

    /// The kernel's tracker of the session of app socket `key`, while the
    /// session is armed.
    pub fn armed_tracker(&self, key: u64) -> Option<Tracker> {
        let m = self.maps();
        let ctl = m.ctl.get(&key, 0).ok()?;
        if ctl.mode != SESSION_FORWARD {
            return None;
        }
        m.track.get(&key, 0).ok().map(|t| t.tracker)
    }

    /// Program events by name (summed over CPUs), for `/metrics`.
    pub fn events(&self) -> Vec<(&'static str, u64)> {
        let m = self.maps();
        KSTAT_NAMES
            .iter()
            .map(|&(slot, name)| {
                let n = m
                    .kstats
                    .get(&slot, 0)
                    .map(|per_cpu| per_cpu.iter().sum())
                    .unwrap_or(0);
                (name, n)
            })
            .collect()
    }

    /// Entries currently in each map.
    pub fn map_entries(&self) -> MapEntries {
        let m = self.maps();
        MapEntries {
            apps: m.apps.keys().count(),
            backends: m.backends.keys().count(),
            local_apps: m.local_apps.keys().count(),
            ctl: m.ctl.keys().count(),
            track: m.track.keys().count(),
            counters: m.counters.keys().count(),
            bsides: m.bsides.keys().count(),
            typed: m.typed.keys().count(),
        }
    }
}

/// The flow of an application's connection as sock_ops recorded it:
/// `peer` is the application's address, `local` the listener's. IPv4 only.
pub fn flow_key(peer: SocketAddr, local: SocketAddr) -> Option<FlowKey> {
    match (peer, local) {
        (SocketAddr::V4(p), SocketAddr::V4(l)) => Some(FlowKey {
            app_ip4: u32::from_ne_bytes(p.ip().octets()),
            listen_ip4: u32::from_ne_bytes(l.ip().octets()),
            app_port: u32::from(p.port()),
            listen_port: u32::from(l.port()),
        }),
        _ => None,
    }
}

/// Whether the kernel finished a response it forwarded (or will not
/// finish it: the server side passed, the tracker gave up, LOCAL INFILE
/// data must come from the client through the daemon).
fn settled(t: &KernelTrack, epoch: u64) -> bool {
    t.response_done()
        || t.server_punt_epoch == epoch
        || t.tracker.in_infile()
        || t.tracker.lost_sync()
}

/// `ioctl(FIONREAD)` on the backend socket: it takes the socket's lock, so
/// when it returns every verdict run that had started on that socket has
/// finished, including its redirect into the application's queue. After
/// it, what the daemon writes to the application queues behind.
fn verdict_barrier(backend: BorrowedFd<'_>) {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    let _ = unsafe { libc::ioctl(backend.as_raw_fd(), libc::FIONREAD, &mut n) };
}

/// What [`LocalAppSession::arm`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Armed {
    /// The kernel carries the session until [`LocalAppSession::park`].
    Yes,
    /// A side sent bytes the daemon has not read yet: read them, then try
    /// again.
    NotCaughtUp,
    /// The kernel path failed for this session; it stays in userspace.
    Disabled,
}

/// Why the kernel handed the session back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wake {
    /// The client's bytes reached the daemon's socket (a punted command, or
    /// the client closing).
    #[default]
    Client,
    /// The backend spoke unasked or closed.
    Backend,
    /// A move was requested.
    Move,
}

/// The session given back by the kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct Parked {
    /// The kernel's protocol state: the tracker and the backend stream's
    /// framing, exactly where the kernel stopped (None: its entry was gone,
    /// the application socket closed).
    pub state: Option<(Tracker, mysql::Framer)>,
    pub wake: Wake,
    /// Why the kernel passed client bytes (a `PUNT_*` value).
    pub punt: u32,
    /// Why the kernel passed backend bytes (a `SPASS_*` value, 0: none).
    pub server_pass: u32,
}

/// Progress of a kernel-carried session since the last report.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// The kernel's tracker now.
    pub tracker: Tracker,
    /// Bytes the kernel carried client → server and back since the last
    /// report.
    pub up: u64,
    pub down: u64,
}

/// One session's handle on the kernel path: which backend socket is in the
/// map, which statements are marked, what was already reported. Dropping
/// it removes the session's entries, whatever became of the session.
pub struct LocalAppSession {
    path: Arc<LocalApp>,
    /// Cookie of the application's socket: the key of its entries.
    key: u64,
    flow: FlowKey,
    backend: Option<u64>,
    typed: BTreeSet<u32>,
    epoch: u64,
    /// Counters already reported.
    reported: SessionCounters,
    /// Set after a map error or a pipelining client (with the reason, until
    /// reported): the session stays in userspace.
    disabled: bool,
    fallback: Option<KernelFallback>,
}

impl LocalAppSession {
    fn new(path: Arc<LocalApp>, key: u64, flow: FlowKey) -> Self {
        Self {
            path,
            key,
            flow,
            backend: None,
            typed: BTreeSet::new(),
            epoch: 0,
            reported: SessionCounters::default(),
            disabled: false,
            fallback: None,
        }
    }

    pub fn disabled(&self) -> bool {
        self.disabled
    }

    /// The key of the session's kernel state (the app socket's cookie).
    pub fn key(&self) -> u64 {
        self.key
    }

    /// The session stays in userspace from now on.
    pub fn disable(&mut self, why: KernelFallback) {
        if !self.disabled {
            self.fallback = Some(why);
        }
        self.disabled = true;
    }

    /// Why the session left the kernel path, once.
    pub fn take_fallback(&mut self) -> Option<KernelFallback> {
        self.fallback.take()
    }

    /// Counter increments since the last call (kernel bytes each way).
    fn take_deltas(&mut self) -> (u64, u64) {
        let now = self.path.counters(self.key);
        let up = now
            .client_redirected_bytes
            .saturating_sub(self.reported.client_redirected_bytes);
        let down = now
            .server_redirected_bytes
            .saturating_sub(self.reported.server_redirected_bytes);
        if now.client_redirected_bytes >= self.reported.client_redirected_bytes {
            self.reported = now;
        }
        (up, down)
    }

    /// Brings the marked statements in line with `typed` (ids whose
    /// parameter types the daemon knows).
    fn sync_typed(&mut self, typed: BTreeSet<u32>) {
        if typed == self.typed {
            return;
        }
        let add: Vec<u32> = typed.difference(&self.typed).copied().collect();
        let remove: Vec<u32> = self.typed.difference(&typed).copied().collect();
        self.path.set_typed(self.key, &add, &remove);
        self.typed = typed;
    }

    /// What the kernel did since the last report, and its tracker.
    fn report(&mut self) -> Option<Report> {
        let (up, down) = self.take_deltas();
        let t = self.path.track(self.key)?;
        Some(Report {
            tracker: t.tracker,
            up,
            down,
        })
    }

    /// Hands the idle session to the kernel (see the contract in
    /// `crate::datapath`).
    pub fn arm(
        &mut self,
        client: &TcpStream,
        backend: &TcpStream,
        tracker: &Tracker,
        typed: BTreeSet<u32>,
    ) -> Armed {
        if self.disabled {
            return Armed::Disabled;
        }
        let cookie = match socket_cookie(backend.as_fd()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "kernel path: no socket cookie; staying in userspace");
                self.disable(KernelFallback::Socket);
                return Armed::Disabled;
            }
        };
        // Unread bytes on either side belong to the daemon first: client
        // bytes passed to it, or backend bytes (an answer to what it sent,
        // the server's kill or shutdown notice) it has not read yet.
        if !self.path.caught_up(self.key, client.as_fd()) || has_input(backend) {
            let read = copied_offset(client.as_fd()).ok();
            let counters = self.path.counters(self.key);
            tracing::trace!(read, ?counters, "not armed: unread bytes");
            if read.is_some_and(|r| counters.client_passed_bytes < r) {
                // The daemon read more than the kernel counted as passed:
                // the count can no longer show that nothing is unread.
                tracing::debug!(
                    read,
                    passed = counters.client_passed_bytes,
                    "kernel path: passed-byte count behind the bytes read; staying in userspace"
                );
                self.disable(KernelFallback::Accounting);
                return Armed::Disabled;
            }
            return Armed::NotCaughtUp;
        }
        if self.backend != Some(cookie) {
            if let Some(old) = self.backend.take() {
                self.path.detach_backend(old);
            }
            match self.path.attach_backend(self.key, backend.as_fd()) {
                Ok(c) => self.backend = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "kernel path: backend socket not accepted; staying in userspace");
                    self.disable(KernelFallback::Map);
                    return Armed::Disabled;
                }
            }
        }
        self.sync_typed(typed);
        self.epoch += 1;
        tracing::trace!(backend = cookie, "arming");
        match self
            .path
            .arm(self.key, client.as_fd(), tracker, cookie, self.epoch)
        {
            Ok(Some(_)) => {
                tracing::trace!(epoch = self.epoch, "armed");
                Armed::Yes
            }
            Ok(None) => {
                tracing::trace!(counters = ?self.path.counters(self.key), "not armed: unread client bytes");
                Armed::NotCaughtUp
            }
            Err(e) => {
                tracing::warn!(error = %e, "kernel path: arming failed; staying in userspace");
                self.disable(KernelFallback::Map);
                Armed::Disabled
            }
        }
    }

    /// Lets the kernel carry the armed session until it punts (a client
    /// command the daemon must see, or the client closing), the backend
    /// sends something unasked (or closes), or a move is requested; then
    /// takes the session back with the kernel's protocol state.
    ///
    /// The backend socket leaves tokio's reactor meanwhile (see
    /// `datapath::wake`): kernel-carried responses do not wake the daemon.
    /// It comes back registered again, or as the error that prevented it.
    pub async fn park(
        &mut self,
        client: &TcpStream,
        backend: TcpStream,
        move_requested: Pin<&mut (dyn Future<Output = ()> + Send)>,
        report: &mut (dyn FnMut(Report) + Send),
    ) -> (Parked, std::io::Result<TcpStream>) {
        let backend = match backend.into_std() {
            Ok(b) => b,
            Err(e) => {
                // The socket is gone with the reactor's registration: stop
                // the kernel and end the session.
                self.path.hold(self.key).await;
                self.path.disarm(self.key);
                return (Parked::default(), Err(e));
            }
        };
        let watch = match self.path.wakes.watch(self.key, backend.as_fd()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "kernel path: cannot watch the backend socket; staying in userspace");
                self.disable(KernelFallback::Socket);
                None
            }
        };
        let parked = self
            .park_watched(client, &backend, watch, move_requested, report)
            .await;
        (parked, TcpStream::from_std(backend))
    }

    /// Whether the backend needs the daemon: the kernel passed its bytes
    /// (the server spoke unasked, or a response was given up), or it closed.
    fn backend_woke(&self, backend: BorrowedFd<'_>) -> bool {
        hung_up(backend)
            || has_input_fd(backend)
            || self
                .path
                .track(self.key)
                .is_some_and(|t| t.server_punt_epoch == self.epoch)
    }

    async fn park_watched(
        &mut self,
        client: &TcpStream,
        backend: &std::net::TcpStream,
        watch: Option<Watch>,
        mut move_requested: Pin<&mut (dyn Future<Output = ()> + Send)>,
        report: &mut (dyn FnMut(Report) + Send),
    ) -> Parked {
        let mut tick = tokio::time::interval(KERNEL_PUBLISH_INTERVAL);
        tick.tick().await;
        // A pass between arming and the watch found no one to wake.
        let mut woke = self.backend_woke(backend.as_fd());
        let wake = loop {
            let Some(w) = watch.as_ref().filter(|_| !woke) else {
                break Wake::Backend;
            };
            tokio::select! {
                r = client.readable() => {
                    if r.is_err() || has_input(client) {
                        break Wake::Client;
                    }
                }
                _ = w.notified() => woke = self.backend_woke(backend.as_fd()),
                _ = &mut move_requested => break Wake::Move,
                _ = tick.tick() => {
                    if let Some(r) = self.report() {
                        report(r);
                    }
                    // A wake-up the ring could not take is found here.
                    woke = self.backend_woke(backend.as_fd());
                }
            }
        };
        drop(watch);
        if matches!(wake, Wake::Client) && peer_closed(client.as_fd()) {
            // The client has gone, maybe mid-statement: the server learns it
            // now (as it would directly) instead of finishing a response
            // no one reads while the HOLD below waits for it.
            let _ = backend.shutdown(std::net::Shutdown::Write);
        }
        tracing::trace!(?wake, counters = ?self.path.counters(self.key), "disarming");
        self.path.hold(self.key).await;
        // A response the kernel forwarded is finished by the kernel.
        let epoch = self.epoch;
        let mut waited = Duration::ZERO;
        while let Some(t) = self.path.track(self.key) {
            if settled(&t, epoch) || hung_up(backend) {
                break;
            }
            if waited > KERNEL_SLOW_HOLD && waited.as_millis().is_multiple_of(1000) {
                tracing::debug!(?waited, "HOLD waits for a response the kernel forwards");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            waited += Duration::from_millis(1);
        }
        // From here the kernel passes every byte of either side to us; the
        // barrier lets a verdict run still under way finish its redirect, so
        // what we write to the application queues behind it.
        self.path.disarm(self.key);
        verdict_barrier(backend.as_fd());
        let track = self.path.track(self.key);
        // Counts the commands the kernel carried (against our stale copy).
        if let Some(r) = self.report() {
            report(r);
        }
        let punt = track.map_or(PUNT_NONE, |t| {
            if t.punt_epoch == epoch {
                t.punt_reason
            } else {
                PUNT_NONE
            }
        });
        let server_pass = track.map_or(0, |t| {
            if t.server_punt_epoch == epoch {
                t.server_punt_reason
            } else {
                0
            }
        });
        if punt == PUNT_PIPELINED {
            // Pipelining clients stay in userspace: the kernel forwards one
            // command at a time, and each pipelined command would park.
            self.disable(KernelFallback::Pipelining);
        }
        if let Some(t) = &track {
            tracing::trace!(
                punt,
                server_pass,
                idle = t.tracker.idle(),
                at_boundary = t.server.at_boundary(),
                "disarmed"
            );
        }
        Parked {
            state: track.map(|t| (t.tracker, t.server)),
            wake,
            punt,
            server_pass,
        }
    }
}

impl Drop for LocalAppSession {
    fn drop(&mut self) {
        self.path
            .forget(self.key, &self.flow, self.backend, &self.typed);
    }
}

/// `kernel_events_total{event}`: why the programs passed, gave up or left
/// an entry alone (`redirector_common::maps::KSTAT_NAMES`).
#[derive(Debug)]
pub struct EventsCollector(pub Arc<LocalApp>);

impl Collector for EventsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut m = encoder.encode_descriptor(
            "kernel_events",
            "Decisions of the kernel session path's programs, by event",
            None,
            MetricType::Counter,
        )?;
        for (event, n) in self.0.events() {
            m.encode_family(&[("event", event)])?
                .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&n, None)?;
        }
        Ok(())
    }
}

/// `ebpf_map_entries{map}`: entries in each kernel session map, read at
/// scrape time (every session's entries go when it ends; a leak shows here).
#[derive(Debug)]
pub struct MapEntriesCollector(pub Arc<LocalApp>);

impl Collector for MapEntriesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let entries = self.0.map_entries();
        let mut m = encoder.encode_descriptor(
            "kernel_map_entries",
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
