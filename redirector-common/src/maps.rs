//! Map names, keys and values shared by the eBPF programs and the daemon.
//!
//! Every map is keyed by the kernel's socket cookie (`SO_COOKIE`, a u64 that is
//! unique for the life of the host), so one lookup from an `sk_skb` program
//! (`bpf_get_socket_cookie`) finds the state of the socket the bytes arrived on.
//!
//! Layout (one "side" = one socket of a spliced pair, named by its cookie):
//! - [`SOCKS`]: `SockHash<u64>` cookie → socket; the redirect target table.
//! - [`SIDES`]: cookie → [`SessionSide`], the control word. Written only by the
//!   daemon (whole-value updates), read by the verdict program.
//! - [`COUNTERS`]: cookie → [`SideCounters`]. Written only by the eBPF program
//!   with atomic adds; the daemon creates it zeroed and reads it. Kept apart
//!   from [`SIDES`] because a userspace map update replaces the whole value,
//!   which would lose concurrent in-kernel increments.
//!
//! Later per-session MySQL protocol state (commands sent, responses complete,
//! last status flags) gets its own map keyed by the client-side cookie, so it
//! can evolve without changing these two values' layouts.

/// Map name of the socket hash (`SockHash<u64>`, key = socket cookie).
pub const SOCKS: &str = "SOCKS";
/// Map name of the per-side control map (`HashMap<u64, SessionSide>`).
pub const SIDES: &str = "SIDES";
/// Map name of the per-side counters map (`HashMap<u64, SideCounters>`).
pub const COUNTERS: &str = "COUNTERS";
/// Name of the `sk_skb/stream_verdict` program.
pub const VERDICT_PROGRAM: &str = "redirector_verdict";

/// Capacity of the maps (sockets; a session uses two).
pub const MAX_SOCKETS: u32 = 65_536;

/// Bytes arriving on this side are passed up to the socket's receive queue
/// (the daemon reads them).
pub const MODE_HOLD: u32 = 0;
/// Bytes arriving on this side are redirected to the peer socket's egress,
/// but only while [`SideCounters::passed_bytes`] still equals
/// [`SessionSide::forward_at`]; otherwise they are passed up, as in HOLD.
///
/// Why the guard: the daemon switches HOLD→FORWARD after reading everything
/// that was passed up. A skb passed after its last read but before the switch
/// would be overtaken by redirected bytes. With the guard, any such late pass
/// moves `passed_bytes` past `forward_at`, so the program keeps passing
/// everything (order preserved) until the daemon has read the late bytes and
/// re-arms with the new total.
pub const MODE_FORWARD: u32 = 1;

/// Control word of one side. Written by the daemon only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionSide {
    /// Cookie of the socket bytes from this side are redirected to.
    pub peer_cookie: u64,
    /// [`MODE_HOLD`] or [`MODE_FORWARD`].
    pub mode: u32,
    /// Reserved flags (zero).
    pub flags: u32,
    /// In FORWARD mode: redirect only while `passed_bytes == forward_at`.
    pub forward_at: u64,
}

/// Counters of one side. Written by the eBPF program only (atomic adds).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SideCounters {
    /// Bytes redirected to the peer's egress in the kernel.
    pub redirected_bytes: u64,
    /// Skbs redirected to the peer's egress in the kernel.
    pub redirected_skbs: u64,
    /// Bytes passed up to this socket's receive queue (for the daemon). Also
    /// the sequence number that guards the HOLD→FORWARD switch.
    pub passed_bytes: u64,
    /// Skbs passed up to this socket's receive queue.
    pub passed_skbs: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both are #[repr(C)], made of integers only, without padding.
    unsafe impl aya::Pod for super::SessionSide {}
    unsafe impl aya::Pod for super::SideCounters {}
}

// ---------------------------------------------------------------------------
// Kernel session path (local applications).
//
// An application on this host connects to the listener. `redirector_sockops`
// (sock_ops on the cgroup) sees its socket reach ESTABLISHED and puts it in
// [`APPS`] under its [`app_key`], and marks the key in [`LOCAL_APPS`]. The
// daemon accepts the other end, runs the handshake and login in userspace,
// and, whenever the session is idle, *arms* it: the backend socket goes into
// [`BACKENDS`] (stream verdict attached) and the session's entries
// in [`CTL`], [`TRACK`] and [`SESSION_COUNTERS`] are written. From then on:
//
// - `redirector_msg` (sk_msg on [`APPS`]) sees each client packet, feeds it
//   to the shared `mysql::Tracker` in [`TRACK`] and redirects it to the
//   backend socket's egress. A command the daemon must handle (the slow
//   path), a pipelined command, an oversized packet, or a daemon HOLD makes
//   it *punt*: the bytes are passed to the daemon's accepted socket and so
//   is everything after them, until the daemon arms the session again.
// - `redirector_backend` (stream verdict on [`BACKENDS`]) walks each
//   segment's MySQL packets through the shared framer and tracker and
//   redirects it into the application socket's receive queue
//   (`BPF_F_INGRESS`) while a kernel-forwarded command's response is in
//   flight, and passes it to the daemon otherwise. (A stream parser would
//   hand over one packet at a time, but BPF parsers see each segment from
//   its start, not from the message offset, so they cannot frame MySQL.)

/// Map name: application sockets (`SockHash<u64>`, key = [`app_key`]).
pub const APPS: &str = "APPS";
/// Map name: backend sockets of armed sessions (`SockHash<u64>`, key = socket cookie).
pub const BACKENDS: &str = "BACKENDS";
/// Map name: application keys sock_ops has seen (`HashMap<u64, u64>`, value = app socket cookie).
pub const LOCAL_APPS: &str = "LOCAL_APPS";
/// Map name: per-session control word (`HashMap<u64, SessionCtl>`), daemon-written.
pub const CTL: &str = "CTL";
/// Map name: per-session protocol state (`HashMap<u64, KernelTrack>`).
pub const TRACK: &str = "TRACK";
/// Map name: per-session counters (`HashMap<u64, SessionCounters>`), kernel-written.
pub const SESSION_COUNTERS: &str = "SESSION_COUNTERS";
/// Map name: backend socket cookie → app key (`HashMap<u64, u64>`).
pub const BSIDES: &str = "BSIDES";
/// Map name: `ProgramArray` whose slot 0 holds the backend verdict (it
/// tail-calls itself to walk long segments).
pub const BACKEND_JUMP: &str = "BACKEND_JUMP";
/// Map name: the listener the sock_ops program matches (`Array<ListenConfig>`, one entry).
pub const CONFIG: &str = "CONFIG";

pub const SOCKOPS_PROGRAM: &str = "redirector_sockops";
pub const MSG_PROGRAM: &str = "redirector_msg";
pub const BACKEND_VERDICT_PROGRAM: &str = "redirector_backend";
pub const BACKEND_FULL_PROGRAM: &str = "redirector_backend_full";
pub const BACKEND_STRADDLE_PROGRAM: &str = "redirector_backend_straddle";

/// Capacity of the session maps.
pub const MAX_SESSIONS: u32 = 65_536;

/// The key of an application socket: its own (local) IPv4 address and port,
/// which the daemon sees as the accepted socket's peer address. Unique among
/// live connections to one listener.
#[inline(always)]
pub const fn app_key(ip4_network_order: u32, port_host_order: u32) -> u64 {
    ((ip4_network_order as u64) << 16) | (port_host_order as u64 & 0xFFFF)
}

/// Which listener sock_ops matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenConfig {
    /// Listener IPv4 address in network order; 0 = any local address.
    pub ip4: u32,
    /// Listener port in host order; 0 = disabled.
    pub port: u32,
}

/// Session mode: the kernel carries the session (see [`SessionCtl::hold`]).
pub const SESSION_FORWARD: u32 = 1;

/// Control word of an armed session. Written by the daemon only (whole value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCtl {
    /// Socket cookie of the backend socket (key in [`BACKENDS`]).
    pub backend_cookie: u64,
    /// [`SESSION_FORWARD`], or 0 = pass everything to the daemon.
    pub mode: u32,
    /// Non-zero: HOLD. New client bytes are passed to the daemon; responses
    /// already in flight still complete in the kernel.
    pub hold: u32,
    /// Arming generation. The kernel punts by writing it into
    /// [`KernelTrack::punt_epoch`]; arming again uses a new epoch.
    pub epoch: u64,
    /// Client bytes are redirected only while
    /// [`SessionCounters::client_passed_bytes`] equals this (bytes passed to
    /// the daemon after it last looked must be read before any later byte
    /// may overtake them).
    pub forward_at: u64,
}

/// Protocol state of an armed session. Written by the kernel programs while
/// the session is armed; by the daemon only while it is disarmed and idle.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelTrack {
    /// The same state machine the userspace relay runs.
    pub tracker: crate::mysql::Tracker,
    /// Equals [`SessionCtl::epoch`] once the kernel has punted this arming.
    pub punt_epoch: u64,
    /// Why the kernel punted (a `PUNT_*` value).
    pub punt_reason: u32,
    /// Non-zero while a backend verdict chain (tail calls) walks a segment:
    /// `resume_off` is where the next program continues. Kept per session,
    /// not per CPU: verdict runs of one socket are serialised by its lock,
    /// while another socket's run may interrupt this one on the same CPU.
    pub resume_active: u32,
    pub resume_off: u32,
    /// A packet the straddle step completed, for the full step.
    pub has_pending: u32,
    pub pending: crate::mysql::PacketInfo,
    /// Framing of the backend's stream (packets straddle segments).
    pub server: crate::mysql::Framer,
}

pub const PUNT_NONE: u32 = 0;
/// A command the daemon handles itself (PREPARE, CHANGE_USER, …).
pub const PUNT_SLOW_COMMAND: u32 = 1;
/// A command sent while another one is outstanding.
pub const PUNT_PIPELINED: u32 = 2;
/// A packet that does not start a message, is too short to classify, or is
/// 16 MiB or larger.
pub const PUNT_FRAMING: u32 = 3;
/// The daemon asked for HOLD.
pub const PUNT_HOLD: u32 = 4;
/// The backend socket is not in [`BACKENDS`].
pub const PUNT_NO_BACKEND: u32 = 5;

/// Per-session counters, kernel-written (atomic adds), daemon-read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionCounters {
    /// Client bytes redirected to the backend in the kernel.
    pub client_redirected_bytes: u64,
    /// Client bytes passed to the daemon.
    pub client_passed_bytes: u64,
    /// Backend bytes redirected to the client in the kernel.
    pub server_redirected_bytes: u64,
    /// Backend bytes passed to the daemon.
    pub server_passed_bytes: u64,
    /// Commands the kernel forwarded.
    pub commands: u64,
    /// Runs of the sk_msg program on this session that started / finished
    /// (the daemon waits for equality after HOLD: no run still acts on the
    /// old control word).
    pub msg_runs_started: u64,
    pub msg_runs_done: u64,
    /// Times the kernel punted to the daemon.
    pub punts: u64,
}

#[cfg(feature = "user")]
mod session_pod {
    // SAFETY: #[repr(C)], integers (and the Pod tracker) only, no padding
    // holes that matter (every bit pattern is valid).
    unsafe impl aya::Pod for super::ListenConfig {}
    unsafe impl aya::Pod for super::SessionCtl {}
    unsafe impl aya::Pod for super::KernelTrack {}
    unsafe impl aya::Pod for super::SessionCounters {}
}

/// Map name: statements whose COM_STMT_EXECUTE the kernel may carry
/// (`HashMap<StmtKey, u32>`): the daemon has seen their parameter types (or
/// they have none), so it can re-send them after a move.
pub const TYPED: &str = "TYPED";

/// Key of [`TYPED`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StmtKey {
    pub app_key: u64,
    pub stmt_id: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] integers, explicit padding field.
unsafe impl aya::Pod for StmtKey {}
