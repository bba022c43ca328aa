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
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use aya::maps::{Array, HashMap, MapData, ProgramArray, SockHash};
use aya::programs::{CgroupAttachMode, SkMsg, SkSkb, SockOps};
use aya::Ebpf;
use redirector_common::maps::{
    app_key, KernelTrack, ListenConfig, SessionCounters, SessionCtl, StmtKey, APPS, BACKENDS,
    BACKEND_FULL_PROGRAM, BACKEND_JUMP, BACKEND_STRADDLE_PROGRAM, BACKEND_VERDICT_PROGRAM, BSIDES,
    CONFIG, CTL, LOCAL_APPS, MSG_PROGRAM, SESSION_COUNTERS, SESSION_FORWARD, SOCKOPS_PROGRAM,
    TRACK, TYPED,
};
use redirector_common::mysql::Tracker;

use super::ebpf::{
    copied_offset, is_permission, load_error, map_err, object_bytes, sock_err, socket_cookie,
    EbpfError,
};

struct Maps {
    apps: SockHash<MapData, u64>,
    backends: SockHash<MapData, u64>,
    local_apps: HashMap<MapData, u64, u64>,
    ctl: HashMap<MapData, u64, SessionCtl>,
    track: HashMap<MapData, u64, KernelTrack>,
    counters: HashMap<MapData, u64, SessionCounters>,
    bsides: HashMap<MapData, u64, u64>,
    typed: HashMap<MapData, StmtKey, u32>,
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

/// The loaded kernel session path.
pub struct KernelPath {
    maps: Mutex<Maps>,
    // Owns the programs and their attachments (detached on drop).
    _ebpf: Ebpf,
}

impl std::fmt::Debug for KernelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelPath").finish_non_exhaustive()
    }
}

fn take<T>(
    ebpf: &mut Ebpf,
    name: &'static str,
    conv: impl FnOnce(aya::maps::Map) -> Result<T, aya::maps::MapError>,
) -> Result<T, EbpfError> {
    let map = ebpf
        .take_map(name)
        .ok_or(EbpfError::Missing { kind: "map", name })?;
    conv(map).map_err(map_err(name))
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, EbpfError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let p = ebpf.program_mut(name).ok_or(EbpfError::Missing {
        kind: "program",
        name,
    })?;
    p.try_into().map_err(|source| EbpfError::Program {
        program: name,
        source,
    })
}

fn prog_err(program: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> EbpfError {
    move |source| EbpfError::Program { program, source }
}

impl KernelPath {
    /// Loads the programs, attaches sock_ops to `cgroup` (alongside any
    /// other programs there) for connections to `listen`, the sk_msg program
    /// and a pass-through verdict to the application sockhash and the
    /// tracking verdict to the backend sockhash. IPv4 listeners only.
    pub fn load(
        object: Option<&Path>,
        cgroup: &Path,
        listen: SocketAddr,
    ) -> Result<Self, EbpfError> {
        let ip4 = match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => 0,
            IpAddr::V4(ip) => u32::from_ne_bytes(ip.octets()),
            IpAddr::V6(_) => {
                return Err(EbpfError::Socket(
                    format!(
                        "listener {listen}: the kernel session path supports IPv4 listeners only"
                    ),
                    std::io::Error::from(std::io::ErrorKind::Unsupported),
                ))
            }
        };
        let bytes = object_bytes(object)?;
        // REDIRECTOR_VERIFIER_LOG=verbose: the whole verifier trace in a
        // rejection (to see which instruction failed).
        let mut loader = aya::EbpfLoader::new();
        if std::env::var("REDIRECTOR_VERIFIER_LOG").is_ok_and(|v| v == "verbose") {
            loader
                .verifier_log_level(aya::VerifierLogLevel::VERBOSE | aya::VerifierLogLevel::STATS);
        }
        let mut ebpf = loader.load(&bytes).map_err(|e| {
            if is_permission(&e) {
                EbpfError::Permission(e.to_string())
            } else {
                EbpfError::Load(e)
            }
        })?;
        let apps: SockHash<MapData, u64> = take(&mut ebpf, APPS, SockHash::try_from)?;
        let backends: SockHash<MapData, u64> = take(&mut ebpf, BACKENDS, SockHash::try_from)?;
        let mut config: Array<MapData, ListenConfig> = take(&mut ebpf, CONFIG, Array::try_from)?;
        let maps = Maps {
            apps,
            backends,
            local_apps: take(&mut ebpf, LOCAL_APPS, HashMap::try_from)?,
            ctl: take(&mut ebpf, CTL, HashMap::try_from)?,
            track: take(&mut ebpf, TRACK, HashMap::try_from)?,
            counters: take(&mut ebpf, SESSION_COUNTERS, HashMap::try_from)?,
            bsides: take(&mut ebpf, BSIDES, HashMap::try_from)?,
            typed: take(&mut ebpf, TYPED, HashMap::try_from)?,
        };
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
        let msg: &mut SkMsg = program(&mut ebpf, MSG_PROGRAM)?;
        msg.load().map_err(|e| load_error(MSG_PROGRAM, e))?;
        msg.attach(maps.apps.fd()).map_err(prog_err(MSG_PROGRAM))?;
        // No stream verdict on application sockets: what the daemon writes
        // to the application (greeting, errors, slow-path answers) takes the
        // plain TCP path. With a pass-through verdict there, an error written
        // just before close could be overtaken by the FIN and lost.
        let verdict: &mut SkSkb = program(&mut ebpf, BACKEND_VERDICT_PROGRAM)?;
        verdict
            .load()
            .map_err(|e| load_error(BACKEND_VERDICT_PROGRAM, e))?;
        // The two backend verdicts tail-call each other (see the programs).
        {
            let mut jump: ProgramArray<MapData> =
                take(&mut ebpf, BACKEND_JUMP, ProgramArray::try_from)?;
            for (slot, name) in [
                (0, BACKEND_VERDICT_PROGRAM),
                (1, BACKEND_FULL_PROGRAM),
                (2, BACKEND_STRADDLE_PROGRAM),
            ] {
                let p: &mut SkSkb = program(&mut ebpf, name)?;
                if name != BACKEND_VERDICT_PROGRAM {
                    p.load().map_err(|e| load_error(name, e))?;
                }
                let fd = p.fd().map_err(prog_err(name))?;
                jump.set(slot, fd, 0).map_err(map_err(BACKEND_JUMP))?;
            }
            // The map must outlive this scope; the programs reference it.
            std::mem::forget(jump);
        }
        let verdict: &mut SkSkb = program(&mut ebpf, BACKEND_VERDICT_PROGRAM)?;
        verdict
            .attach(maps.backends.fd())
            .map_err(prog_err(BACKEND_VERDICT_PROGRAM))?;
        let sockops: &mut SockOps = program(&mut ebpf, SOCKOPS_PROGRAM)?;
        sockops.load().map_err(|e| load_error(SOCKOPS_PROGRAM, e))?;
        let cg = std::fs::File::open(cgroup)
            .map_err(|e| EbpfError::Socket(format!("opening cgroup {}", cgroup.display()), e))?;
        sockops
            .attach(cg, CgroupAttachMode::Single)
            .map_err(prog_err(SOCKOPS_PROGRAM))?;
        tracing::info!(cgroup = %cgroup.display(), %listen, "eBPF kernel session path loaded (sock_ops + sk_msg + stream verdicts)");
        Ok(Self {
            maps: Mutex::new(maps),
            _ebpf: ebpf,
        })
    }

    fn maps(&self) -> MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The application key of a client that connected from `peer`, if it is
    /// a socket on this host that sock_ops put in the application map.
    pub fn local_app(&self, peer: SocketAddr) -> Option<u64> {
        let SocketAddr::V4(v4) = peer else {
            return None;
        };
        let key = app_key(u32::from_ne_bytes(v4.ip().octets()), u32::from(v4.port()));
        self.maps().local_apps.get(&key, 0).ok().map(|_| key)
    }

    /// Removes every entry of the session of `peer` (call when the session
    /// ends, whether it was ever armed or not).
    pub fn forget(&self, peer: SocketAddr, backend_cookie: Option<u64>, typed: &BTreeSet<u32>) {
        let SocketAddr::V4(v4) = peer else {
            return;
        };
        let key = app_key(u32::from_ne_bytes(v4.ip().octets()), u32::from(v4.port()));
        let mut m = self.maps();
        let _ = m.ctl.remove(&key);
        let _ = m.track.remove(&key);
        let _ = m.counters.remove(&key);
        let _ = m.local_apps.remove(&key);
        let _ = m.apps.remove(&key);
        if let Some(c) = backend_cookie {
            let _ = m.bsides.remove(&c);
            let _ = m.backends.remove(&c);
        }
        for &stmt_id in typed {
            let _ = m.typed.remove(&StmtKey {
                app_key: key,
                stmt_id,
                _pad: 0,
            });
        }
    }

    /// Puts a backend socket (idle: nothing unread) in the backend map for
    /// the session `key`. Returns its cookie.
    pub fn attach_backend(&self, key: u64, backend: BorrowedFd<'_>) -> Result<u64, EbpfError> {
        let cookie = socket_cookie(backend).map_err(sock_err("SO_COOKIE of the backend socket"))?;
        let mut m = self.maps();
        m.bsides.insert(cookie, key, 0).map_err(map_err(BSIDES))?;
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
    /// `client` has been read (the precondition of [`KernelPath::arm`]).
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
    ) -> Result<Option<u64>, EbpfError> {
        let read = copied_offset(client).map_err(sock_err("TCP position of the client"))?;
        let mut m = self.maps();
        let Ok(c) = m.counters.get(&key, 0) else {
            // The application's socket is gone (closed): nothing to arm.
            return Ok(None);
        };
        if c.client_passed_bytes != read {
            return Ok(None);
        }
        m.track
            .insert(
                key,
                KernelTrack {
                    tracker: *tracker,
                    punt_epoch: 0,
                    punt_reason: 0,
                    resume_active: 0,
                    resume_off: 0,
                    has_pending: 0,
                    pending: redirector_common::mysql::PacketInfo::EMPTY,
                    // Armed only between responses: at a packet boundary.
                    server: redirector_common::mysql::Framer::new(),
                },
                0,
            )
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

    /// HOLD: from now on client bytes are passed to the daemon. Returns once
    /// no sk_msg run can still act on the armed control word.
    pub async fn hold(&self, key: u64) {
        {
            let mut m = self.maps();
            if let Ok(mut ctl) = m.ctl.get(&key, 0) {
                ctl.hold = 1;
                let _ = m.ctl.insert(key, ctl, 0);
            }
        }
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
                    app_key: key,
                    stmt_id,
                    _pad: 0,
                },
                1,
                0,
            );
        }
        for &stmt_id in remove {
            let _ = m.typed.remove(&StmtKey {
                app_key: key,
                stmt_id,
                _pad: 0,
            });
        }
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

/// Whether `fd` has a pending error or hang-up (the backend went away).
pub fn hung_up(fd: impl AsFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_fd().as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
    rc > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// One relay's handle on the kernel path: which backend socket is in the
/// map, which statements are marked, what was already reported to metrics.
/// Dropping it removes the session's entries.
pub struct KernelSession {
    pub path: std::sync::Arc<KernelPath>,
    pub key: u64,
    pub peer: SocketAddr,
    pub backend: Option<u64>,
    pub typed: BTreeSet<u32>,
    pub epoch: u64,
    /// Counters already added to the metrics.
    pub reported: SessionCounters,
    /// Set after a map error: the session stays in userspace.
    pub disabled: bool,
}

impl KernelSession {
    pub fn new(path: std::sync::Arc<KernelPath>, key: u64, peer: SocketAddr) -> Self {
        Self {
            path,
            key,
            peer,
            backend: None,
            typed: BTreeSet::new(),
            epoch: 0,
            reported: SessionCounters::default(),
            disabled: false,
        }
    }

    /// Counter increments since the last call (kernel bytes each way).
    pub fn take_deltas(&mut self) -> (u64, u64) {
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
    pub fn sync_typed(&mut self, typed: BTreeSet<u32>) {
        if typed == self.typed {
            return;
        }
        let add: Vec<u32> = typed.difference(&self.typed).copied().collect();
        let remove: Vec<u32> = self.typed.difference(&typed).copied().collect();
        self.path.set_typed(self.key, &add, &remove);
        self.typed = typed;
    }
}

impl Drop for KernelSession {
    fn drop(&mut self) {
        self.path.forget(self.peer, self.backend, &self.typed);
    }
}
