//! The kernel data path: splicing two TCP sockets with a sockhash and an
//! `sk_skb/stream_verdict` program (`redirector-ebpf`, see
//! `redirector_common::maps` for the map layout).
//!
//! # Splicing without losing or reordering bytes
//!
//! A spliced pair has two *sides*, one per socket, each with a control word
//! (`SIDES`, written by us) and counters (`COUNTERS`, written by the kernel).
//! [`EbpfDatapath::splice`]:
//!
//! 1. writes both sides' entries in HOLD mode (the verdict passes every skb
//!    up to the socket's own receive queue and counts it in `passed_bytes`);
//! 2. notes each socket's TCP read position (`copied` = `tcpi_bytes_received`
//!    − `SIOCINQ`), then inserts it into `SOCKS` (the verdict is already
//!    attached to `SOCKS`, so the socket inherits it);
//! 3. per side: reads everything queued (bytes that arrived before the insert,
//!    and bytes passed in HOLD) and writes it to the peer, then switches the
//!    side to FORWARD. The switch is guarded: the verdict redirects only while
//!    `passed_bytes == forward_at`. We arm it only at a consistent point where
//!    every byte TCP received since step 2 is either read by us or redirected
//!    (`bytes_received − copied == read + redirected_bytes`): passed skbs can
//!    still sit in the psock's backlog queue, invisible to `recv`, when the
//!    other direction is busy. After arming, one more `recv` takes the socket
//!    lock, which the verdict runs under, so any verdict that saw the old
//!    HOLD word has finished; if `passed_bytes` still equals `forward_at`, no
//!    byte can be overtaken. Otherwise the late bytes are read, written to the
//!    peer, and the switch is re-armed with the new total.
//!
//! The caller must not read or write the two sockets while they are spliced.

use std::borrow::Cow;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aya::maps::{HashMap, MapData, SockHash};
use aya::programs::{sk_skb::SkSkbLinkId, ProgramError, SkSkb};
use aya::Ebpf;
use redirector_common::maps::{
    SessionSide, SideCounters, COUNTERS, MODE_FORWARD, MODE_HOLD, SIDES, SOCKS, VERDICT_PROGRAM,
};
use tracing::{debug, info};

/// Environment variable naming the eBPF object (at build time: embedded; at
/// run time: loaded instead of the embedded copy).
pub const OBJECT_ENV: &str = "REDIRECTOR_EBPF_OBJECT";

/// The object embedded at build time (empty when none was built).
static EMBEDDED_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/redirector-ebpf.o"));

/// How long a HOLD→FORWARD switch may keep retrying before giving up.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Large enough to take any pre-insert skb in one read (see `drain`).
const DRAIN_BUF: usize = 256 * 1024;
/// `SO_COOKIE` (linux/asm-generic/socket.h); not exported by libc.
const SO_COOKIE: libc::c_int = 57;
/// `BPF_FS_MAGIC` (linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const BPFFS_ROOT: &str = "/sys/fs/bpf";

/// Errors of the eBPF data path.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "eBPF object not built: run `cargo xtask build` (or set {OBJECT_ENV} to the object's path)"
    )]
    ObjectNotBuilt,
    #[error("reading eBPF object {path}: {source}")]
    ObjectRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("loading eBPF programs needs root (CAP_BPF and CAP_NET_ADMIN): {0}")]
    Permission(String),
    #[error("loading the eBPF object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("the kernel verifier rejected program {program}: {source}\nverifier log:\n{log}")]
    Verifier {
        program: &'static str,
        #[source]
        source: io::Error,
        log: String,
    },
    #[error("eBPF program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("eBPF object has no {kind} named {name}")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("socket with cookie {0} is already spliced")]
    AlreadySpliced(u64),
    #[error("{0}")]
    Socket(String, #[source] io::Error),
    #[error("peer closed the connection (socket cookie {0}) while splicing")]
    PeerClosed(u64),
    #[error(
        "socket cookie {0}: bytes passed to userspace were not delivered within {SETTLE_TIMEOUT:?}"
    )]
    SettleTimeout(u64),
    #[error("bpffs: {0}")]
    Bpffs(String, #[source] io::Error),
    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
}

pub(crate) fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> EbpfError {
    move |source| EbpfError::Map { map, source }
}

pub(crate) fn sock_err(what: &str) -> impl FnOnce(io::Error) -> EbpfError + '_ {
    move |e| EbpfError::Socket(what.to_string(), e)
}

/// Maps a program load failure to permission, verifier or other errors.
pub(crate) fn load_error(program: &'static str, source: ProgramError) -> EbpfError {
    match source {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            if matches!(io_error.raw_os_error(), Some(libc::EPERM)) {
                EbpfError::Permission(io_error.to_string())
            } else {
                EbpfError::Verifier {
                    program,
                    source: io_error,
                    log: verifier_log.to_string(),
                }
            }
        }
        source => EbpfError::Program { program, source },
    }
}

/// True if an error chain bottoms out in EPERM/EACCES.
pub(crate) fn is_permission(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// The eBPF object's bytes: `path` if given, else the file named by
/// `$REDIRECTOR_EBPF_OBJECT`, else the copy embedded at build time.
pub fn object_bytes(path: Option<&Path>) -> Result<Cow<'static, [u8]>, EbpfError> {
    let from_env = std::env::var_os(OBJECT_ENV).map(PathBuf::from);
    let path = path.map(Path::to_path_buf).or(from_env);
    match path {
        Some(path) => match std::fs::read(&path) {
            Ok(bytes) => Ok(Cow::Owned(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(EbpfError::ObjectNotBuilt),
            Err(source) => Err(EbpfError::ObjectRead { path, source }),
        },
        None if EMBEDDED_OBJECT.is_empty() => Err(EbpfError::ObjectNotBuilt),
        None => Ok(Cow::Borrowed(EMBEDDED_OBJECT)),
    }
}

/// The kernel socket cookie (`SO_COOKIE`): the key of every map.
pub fn socket_cookie(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: the buffer and its length describe `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

fn tcp_bytes_received(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: tcp_info is plain integers; all-zero is valid.
    let mut ti: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the buffer and its length describe `ti`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut ti).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ti.tcpi_bytes_received)
}

fn inq(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCINQ writes one int.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::try_from(n).unwrap_or(0))
}

/// TCP stream offset up to which the application has read, measured before
/// the socket enters the sockhash (afterwards SIOCINQ means something else).
pub(crate) fn copied_offset(fd: BorrowedFd<'_>) -> io::Result<u64> {
    loop {
        let before = tcp_bytes_received(fd)?;
        let queued = inq(fd)?;
        // Retry if bytes arrived in between: the two reads must agree.
        if tcp_bytes_received(fd)? == before {
            return Ok(before.saturating_sub(queued));
        }
    }
}

enum Recv {
    Data(usize),
    WouldBlock,
    Eof,
}

fn recv_nonblocking(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Recv> {
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n > 0 {
            return Ok(Recv::Data(n as usize));
        }
        if n == 0 {
            return Ok(Recv::Eof);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(Recv::WouldBlock),
            _ => return Err(e),
        }
    }
}

fn poll_fd(fd: BorrowedFd<'_>, events: libc::c_short, timeout: Duration) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// Writes all of `data`, waiting for room if the socket is nonblocking.
fn send_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: `data` is valid for reads of its length.
        let n = unsafe {
            libc::send(
                fd.as_raw_fd(),
                data.as_ptr().cast(),
                data.len(),
                libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            data = &data[n as usize..];
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => poll_fd(fd, libc::POLLOUT, Duration::from_millis(100))?,
            _ => return Err(e),
        }
    }
    Ok(())
}

/// Final and running totals of one spliced pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpliceStats {
    /// Kernel counters of side A (bytes arriving on socket `a`).
    pub a: SideCounters,
    /// Kernel counters of side B (bytes arriving on socket `b`).
    pub b: SideCounters,
    /// Bytes we read from `a` and wrote to `b` in userspace.
    pub user_a_to_b: u64,
    /// Bytes we read from `b` and wrote to `a` in userspace.
    pub user_b_to_a: u64,
}

/// Per-side bookkeeping of a splice.
#[derive(Clone, Copy, Debug)]
struct SideState {
    cookie: u64,
    peer: u64,
    /// TCP stream offset read by the application before the insert.
    copied_at_insert: u64,
    /// Bytes we read from this socket since the insert (and wrote to the peer).
    user_read: u64,
}

/// A spliced socket pair. Does not own the sockets; pass it to
/// [`EbpfDatapath::unsplice`] before closing them.
#[derive(Debug)]
pub struct SpliceHandle {
    a: SideState,
    b: SideState,
}

impl SpliceHandle {
    /// Socket cookie of `a` (the key of side A in every map).
    pub fn a_cookie(&self) -> u64 {
        self.a.cookie
    }
    /// Socket cookie of `b`.
    pub fn b_cookie(&self) -> u64 {
        self.b.cookie
    }
    /// Bytes moved `a`→`b` by userspace (queued before or during the switch).
    pub fn user_a_to_b(&self) -> u64 {
        self.a.user_read
    }
    /// Bytes moved `b`→`a` by userspace.
    pub fn user_b_to_a(&self) -> u64 {
        self.b.user_read
    }
}

/// What [`EbpfDatapath::unsplice`] hands back.
#[derive(Debug, Default)]
pub struct Unspliced {
    /// Bytes that had been passed to `a`'s receive queue and were read while
    /// detaching; they were sent by `a`'s peer and are not yet delivered.
    pub pending_from_a: Vec<u8>,
    /// Same for `b`.
    pub pending_from_b: Vec<u8>,
    /// Totals at detach time.
    pub stats: SpliceStats,
}

/// Keys currently present in each map (for diagnostics and tests).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapKeys {
    pub socks: Vec<u64>,
    pub sides: Vec<u64>,
    pub counters: Vec<u64>,
}

struct Maps {
    socks: SockHash<MapData, u64>,
    sides: HashMap<MapData, u64, SessionSide>,
    counters: HashMap<MapData, u64, SideCounters>,
}

/// The loaded eBPF data path: programs attached, maps open.
pub struct EbpfDatapath {
    maps: Mutex<Maps>,
    // Owns the verdict program and its attachment to SOCKS (detached on drop).
    _ebpf: Ebpf,
}

impl std::fmt::Debug for EbpfDatapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbpfDatapath").finish_non_exhaustive()
    }
}

fn load_object(object: Option<&Path>) -> Result<(Ebpf, Maps, SkSkbLinkId), EbpfError> {
    let bytes = object_bytes(object)?;
    let mut ebpf = Ebpf::load(&bytes).map_err(|e| {
        if is_permission(&e) {
            EbpfError::Permission(e.to_string())
        } else {
            EbpfError::Load(e)
        }
    })?;
    let take = |ebpf: &mut Ebpf, name: &'static str| {
        ebpf.take_map(name)
            .ok_or(EbpfError::Missing { kind: "map", name })
    };
    let socks: SockHash<MapData, u64> =
        SockHash::try_from(take(&mut ebpf, SOCKS)?).map_err(map_err(SOCKS))?;
    let sides: HashMap<MapData, u64, SessionSide> =
        HashMap::try_from(take(&mut ebpf, SIDES)?).map_err(map_err(SIDES))?;
    let counters: HashMap<MapData, u64, SideCounters> =
        HashMap::try_from(take(&mut ebpf, COUNTERS)?).map_err(map_err(COUNTERS))?;

    let program = ebpf
        .program_mut(VERDICT_PROGRAM)
        .ok_or(EbpfError::Missing {
            kind: "program",
            name: VERDICT_PROGRAM,
        })?;
    let verdict: &mut SkSkb = program.try_into().map_err(|source| EbpfError::Program {
        program: VERDICT_PROGRAM,
        source,
    })?;
    verdict
        .load()
        .map_err(|source| load_error(VERDICT_PROGRAM, source))?;
    // Attach before any insert: sockets inherit the verdict when inserted,
    // and a sockhash socket without a verdict misses wakeups.
    let link = verdict
        .attach(socks.fd())
        .map_err(|source| EbpfError::Program {
            program: VERDICT_PROGRAM,
            source,
        })?;
    Ok((
        ebpf,
        Maps {
            socks,
            sides,
            counters,
        },
        link,
    ))
}

impl EbpfDatapath {
    /// Loads the object (see [`object_bytes`]) and attaches the verdict.
    pub fn load(object: Option<&Path>) -> Result<Self, EbpfError> {
        let (ebpf, maps, _link) = load_object(object)?;
        info!("eBPF data path loaded (sk_skb stream_verdict on sockhash)");
        Ok(Self {
            maps: Mutex::new(maps),
            _ebpf: ebpf,
        })
    }

    fn maps(&self) -> MutexGuard<'_, Maps> {
        // A panic while holding the lock leaves the maps themselves intact.
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Kernel counters of one side, if it is spliced.
    pub fn counters(&self, cookie: u64) -> Result<Option<SideCounters>, EbpfError> {
        match self.maps().counters.get(&cookie, 0) {
            Ok(c) => Ok(Some(c)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(COUNTERS)(e)),
        }
    }

    /// Every key present in the maps.
    pub fn map_keys(&self) -> Result<MapKeys, EbpfError> {
        let maps = self.maps();
        let socks = maps.socks.keys().collect::<Result<Vec<_>, _>>();
        let sides = maps.sides.keys().collect::<Result<Vec<_>, _>>();
        let counters = maps.counters.keys().collect::<Result<Vec<_>, _>>();
        Ok(MapKeys {
            socks: socks.map_err(map_err(SOCKS))?,
            sides: sides.map_err(map_err(SIDES))?,
            counters: counters.map_err(map_err(COUNTERS))?,
        })
    }

    /// Current totals of a splice.
    pub fn stats(&self, h: &SpliceHandle) -> Result<SpliceStats, EbpfError> {
        Ok(SpliceStats {
            a: self.counters(h.a.cookie)?.unwrap_or_default(),
            b: self.counters(h.b.cookie)?.unwrap_or_default(),
            user_a_to_b: h.a.user_read,
            user_b_to_a: h.b.user_read,
        })
    }

    /// Splices two connected TCP sockets in the kernel: from now on bytes
    /// arriving on `a` leave through `b` and vice versa. Bytes already queued
    /// on either socket are forwarded first, in order. Blocks until both
    /// directions run in the kernel (normally well under a millisecond).
    pub fn splice(&self, a: &impl AsFd, b: &impl AsFd) -> Result<SpliceHandle, EbpfError> {
        let (a, b) = (a.as_fd(), b.as_fd());
        let ca = socket_cookie(a).map_err(sock_err("SO_COOKIE of socket a"))?;
        let cb = socket_cookie(b).map_err(sock_err("SO_COOKIE of socket b"))?;
        let mut h = SpliceHandle {
            a: SideState {
                cookie: ca,
                peer: cb,
                copied_at_insert: 0,
                user_read: 0,
            },
            b: SideState {
                cookie: cb,
                peer: ca,
                copied_at_insert: 0,
                user_read: 0,
            },
        };
        {
            let mut maps = self.maps();
            for c in [ca, cb] {
                if maps.sides.get(&c, 0).is_ok() {
                    return Err(EbpfError::AlreadySpliced(c));
                }
            }
            let hold = |peer| SessionSide {
                peer_cookie: peer,
                mode: MODE_HOLD,
                ..Default::default()
            };
            // Control words and counters first: a socket in SOCKS must find them.
            let r = (|| {
                maps.counters
                    .insert(ca, SideCounters::default(), 0)
                    .map_err(map_err(COUNTERS))?;
                maps.counters
                    .insert(cb, SideCounters::default(), 0)
                    .map_err(map_err(COUNTERS))?;
                maps.sides.insert(ca, hold(cb), 0).map_err(map_err(SIDES))?;
                maps.sides.insert(cb, hold(ca), 0).map_err(map_err(SIDES))?;
                h.a.copied_at_insert = copied_offset(a).map_err(sock_err("TCP position of a"))?;
                maps.socks
                    .insert(ca, a.as_raw_fd(), 0)
                    .map_err(map_err(SOCKS))?;
                h.b.copied_at_insert = copied_offset(b).map_err(sock_err("TCP position of b"))?;
                maps.socks
                    .insert(cb, b.as_raw_fd(), 0)
                    .map_err(map_err(SOCKS))?;
                Ok(())
            })();
            if let Err(e) = r {
                remove_all(&mut maps, &[ca, cb]);
                return Err(e);
            }
        }
        let r = self
            .settle(&mut h.a, a, b)
            .and_then(|()| self.settle(&mut h.b, b, a));
        if let Err(e) = r {
            let mut maps = self.maps();
            remove_all(&mut maps, &[ca, cb]);
            return Err(e);
        }
        debug!(
            a = ca,
            b = cb,
            user_a_to_b = h.a.user_read,
            user_b_to_a = h.b.user_read,
            "spliced"
        );
        Ok(h)
    }

    /// Re-runs the HOLD→FORWARD switch of both sides: forwards bytes that were
    /// passed to userspace (e.g. because a redirect failed) and re-arms.
    /// Call it if `a` or `b` becomes readable while spliced.
    pub fn resync(
        &self,
        h: &mut SpliceHandle,
        a: &impl AsFd,
        b: &impl AsFd,
    ) -> Result<(), EbpfError> {
        self.settle(&mut h.a, a.as_fd(), b.as_fd())?;
        self.settle(&mut h.b, b.as_fd(), a.as_fd())
    }

    /// Reads what `src` has queued for us and writes it to `dst`. Returns the
    /// byte count.
    fn drain(
        &self,
        side: &mut SideState,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        buf: &mut [u8],
    ) -> Result<u64, EbpfError> {
        let mut total = 0u64;
        loop {
            match recv_nonblocking(src, buf).map_err(sock_err("reading a spliced socket"))? {
                Recv::Data(n) => {
                    send_all(dst, &buf[..n]).map_err(sock_err("writing a spliced socket"))?;
                    side.user_read += n as u64;
                    total += n as u64;
                }
                Recv::WouldBlock => return Ok(total),
                Recv::Eof => return Err(EbpfError::PeerClosed(side.cookie)),
            }
        }
    }

    /// Switches one side to FORWARD once no passed byte is left unread (see
    /// the module docs for why each step is needed).
    fn settle(
        &self,
        side: &mut SideState,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
    ) -> Result<(), EbpfError> {
        let mut buf = vec![0u8; DRAIN_BUF];
        // The deadline only runs while nothing moves: a sender that keeps
        // streaming delays the switch (we forward meanwhile) but never fails
        // it, since rolling back would drop bytes passed but not yet read.
        let mut deadline = Instant::now() + SETTLE_TIMEOUT;
        let cookie = side.cookie;
        let counters = |s: &Self| -> Result<SideCounters, EbpfError> {
            s.counters(cookie)?.ok_or(EbpfError::Map {
                map: COUNTERS,
                source: aya::maps::MapError::KeyNotFound,
            })
        };
        loop {
            if Instant::now() > deadline {
                return Err(EbpfError::SettleTimeout(side.cookie));
            }
            if self.drain(side, src, dst, &mut buf)? > 0 {
                deadline = Instant::now() + SETTLE_TIMEOUT;
            }
            // A consistent snapshot: TCP advances bytes_received and the
            // verdict counts the skb under one socket lock hold.
            let before = counters(self)?;
            let received = tcp_bytes_received(src).map_err(sock_err("TCP_INFO"))?;
            let after = counters(self)?;
            if before != after {
                continue;
            }
            let since_insert = received.saturating_sub(side.copied_at_insert);
            if since_insert != side.user_read + after.redirected_bytes {
                // Passed skbs still in the psock backlog: wait for them.
                poll_fd(src, libc::POLLIN, Duration::from_millis(1)).map_err(sock_err("poll"))?;
                continue;
            }
            let word = SessionSide {
                peer_cookie: side.peer,
                mode: MODE_FORWARD,
                flags: 0,
                forward_at: after.passed_bytes,
            };
            self.maps()
                .sides
                .insert(side.cookie, word, 0)
                .map_err(map_err(SIDES))?;
            // This recv takes the socket lock: a verdict that read the old
            // word has finished (and counted) once it returns.
            let late = self.drain(side, src, dst, &mut buf)?;
            let now = counters(self)?;
            if late == 0 && now.passed_bytes == after.passed_bytes {
                return Ok(());
            }
            debug!(
                cookie = side.cookie,
                late, "bytes passed during the switch; re-arming"
            );
        }
    }

    /// Stops kernel forwarding and removes every map entry of the pair. Bytes
    /// passed to userspace meanwhile are returned in [`Unspliced`]; deliver
    /// them before anything else. Call it while the pair is quiet: bytes that
    /// arrive in the instant between the last read and the removal from the
    /// sockhash are dropped by the kernel with the socket's psock.
    pub fn unsplice(
        &self,
        h: SpliceHandle,
        a: &impl AsFd,
        b: &impl AsFd,
    ) -> Result<Unspliced, EbpfError> {
        let (a, b) = (a.as_fd(), b.as_fd());
        let mut out = Unspliced::default();
        {
            let mut maps = self.maps();
            for s in [&h.a, &h.b] {
                let word = SessionSide {
                    peer_cookie: s.peer,
                    mode: MODE_HOLD,
                    ..Default::default()
                };
                maps.sides
                    .insert(s.cookie, word, 0)
                    .map_err(map_err(SIDES))?;
            }
        }
        let mut buf = vec![0u8; DRAIN_BUF];
        for (side, fd, pending) in [
            (&h.a, a, &mut out.pending_from_a),
            (&h.b, b, &mut out.pending_from_b),
        ] {
            while let Recv::Data(n) =
                recv_nonblocking(fd, &mut buf).map_err(sock_err("reading a spliced socket"))?
            {
                pending.extend_from_slice(&buf[..n]);
            }
            debug!(
                cookie = side.cookie,
                pending = pending.len(),
                "unsplice drained"
            );
        }
        out.stats = self.stats(&h)?;
        let mut maps = self.maps();
        remove_all(&mut maps, &[h.a.cookie, h.b.cookie]);
        Ok(out)
    }
}

/// Removes the cookies from every map; missing entries are fine.
fn remove_all(maps: &mut Maps, cookies: &[u64]) {
    for c in cookies {
        // The sockhash first: stops redirects before the control words go.
        let _ = maps.socks.remove(c);
    }
    for c in cookies {
        let _ = maps.sides.remove(c);
        let _ = maps.counters.remove(c);
    }
}

/// Makes sure `/sys/fs/bpf` is a bpffs, mounting it if needed.
fn ensure_bpffs() -> Result<(), EbpfError> {
    let root = std::ffi::CString::new(BPFFS_ROOT).map_err(|e| {
        EbpfError::Bpffs(
            BPFFS_ROOT.into(),
            io::Error::new(io::ErrorKind::InvalidInput, e),
        )
    })?;
    // SAFETY: statfs is plain integers; zero is valid.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    if unsafe { libc::statfs(root.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    std::fs::create_dir_all(BPFFS_ROOT)
        .map_err(|e| EbpfError::Bpffs(format!("creating {BPFFS_ROOT}"), e))?;
    let fstype = c"bpf";
    // SAFETY: valid C strings; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            root.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(EbpfError::Bpffs(
            format!("{BPFFS_ROOT} is not a bpffs and mounting one failed (needs root)"),
            io::Error::last_os_error(),
        ));
    }
    info!("mounted bpffs on {BPFFS_ROOT}");
    Ok(())
}

/// Loads the programs, attaches the verdict to `SOCKS` and pins the program
/// and the maps under `dir` (created; `/sys/fs/bpf` mounted if missing).
/// Existing pins of the same names are replaced. The attachment outlives
/// this process because it belongs to the pinned map.
pub fn pin_programs(dir: &Path) -> Result<(), EbpfError> {
    pin_programs_from(dir, None)
}

/// [`pin_programs`] with an explicit object path (see [`object_bytes`]).
pub fn pin_programs_from(dir: &Path, object: Option<&Path>) -> Result<(), EbpfError> {
    if dir.starts_with(BPFFS_ROOT) {
        ensure_bpffs()?;
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| EbpfError::Bpffs(format!("creating {}", dir.display()), e))?;
    let (mut ebpf, maps, link) = load_object(object)?;
    fn pin(
        path: PathBuf,
        r: impl FnOnce(&Path) -> Result<(), aya::pin::PinError>,
    ) -> Result<(), EbpfError> {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(EbpfError::Bpffs(
                    format!("removing stale pin {}", path.display()),
                    e,
                ))
            }
        }
        r(&path).map_err(|source| EbpfError::Pin { path, source })
    }
    let Maps {
        socks,
        sides,
        counters,
    } = maps;
    pin(dir.join(SOCKS), |p| socks.pin(p))?;
    pin(dir.join(SIDES), |p| sides.pin(p))?;
    pin(dir.join(COUNTERS), |p| counters.pin(p))?;
    let program = ebpf
        .program_mut(VERDICT_PROGRAM)
        .ok_or(EbpfError::Missing {
            kind: "program",
            name: VERDICT_PROGRAM,
        })?;
    let path = dir.join(VERDICT_PROGRAM);
    pin(path, |p| program.pin(p))?;
    // Keep the attachment when our handles close: dropping the program would
    // detach it from SOCKS.
    let verdict: &mut SkSkb = program.try_into().map_err(|source| EbpfError::Program {
        program: VERDICT_PROGRAM,
        source,
    })?;
    let link = verdict
        .take_link(link)
        .map_err(|source| EbpfError::Program {
            program: VERDICT_PROGRAM,
            source,
        })?;
    std::mem::forget(link);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datapath_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<EbpfDatapath>();
    }

    #[test]
    fn cookies_are_distinct_per_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let (x, y) = (
            socket_cookie(c.as_fd()).unwrap(),
            socket_cookie(s.as_fd()).unwrap(),
        );
        assert_ne!(x, 0);
        assert_ne!(x, y);
        assert_eq!(x, socket_cookie(c.as_fd()).unwrap());
    }
}
