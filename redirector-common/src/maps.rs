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
// [`APPS`] under its socket cookie, and records its flow ([`FlowKey`]) →
// cookie in [`LOCAL_APPS`] (the daemon finds the cookie from the accepted
// socket's addresses; sk_msg programs cannot read cookies). The daemon
// accepts the other end, runs the handshake and login in userspace, and,
// whenever the session is idle, *arms* it: the backend socket goes into
// [`BACKENDS`] (stream verdict attached) and the session's entries in
// [`CTL`], [`TRACK`] and [`SESSION_COUNTERS`] are written. From then on:
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
//   (`BPF_F_INGRESS`) while a response to a command the kernel forwarded is
//   unfinished (tracker in flight, or the framer inside a packet). Anything
//   else is passed to the daemon, and so is every later segment until the
//   daemon arms again (the server-side pass guard), so kernel and daemon
//   bytes never interleave. A segment the tracker cannot follow is passed
//   whole with the protocol state restored to the segment's start: the
//   daemon continues exactly there (a kernel give-up is a park, never a
//   dead session).
// - `redirector_app_pass` (stream verdict on [`APPS`]) passes what the
//   daemon writes to the application: with a verdict, those bytes queue
//   behind redirected ones (one FIFO into the application).
//
// Every per-session entry is keyed by a socket cookie, never by an address:
// a port reused by another connection, or another daemon's programs seeing
// our sockets close, cannot touch a live session's state.

/// Map name: application sockets (`SockHash<u64>`, key = app socket cookie).
pub const APPS: &str = "APPS";
/// Map name: backend sockets of armed sessions (`SockHash<u64>`, key = socket cookie).
pub const BACKENDS: &str = "BACKENDS";
/// Map name: flows sock_ops has seen (`HashMap<FlowKey, u64>`, value = app socket cookie).
pub const LOCAL_APPS: &str = "LOCAL_APPS";
/// Map name: per-session control word (`HashMap<u64, SessionCtl>`, key = app
/// cookie), daemon-written.
pub const CTL: &str = "CTL";
/// Map name: per-session protocol state (`HashMap<u64, KernelTrack>`, key = app cookie).
pub const TRACK: &str = "TRACK";
/// Map name: per-session counters (`HashMap<u64, SessionCounters>`, key =
/// app cookie), kernel-written.
pub const SESSION_COUNTERS: &str = "SESSION_COUNTERS";
/// Map name: backend socket cookie → app cookie (`HashMap<u64, u64>`).
pub const BSIDES: &str = "BSIDES";
/// Map name: `ProgramArray` of the backend verdicts (they tail-call each
/// other to walk long segments).
pub const BACKEND_JUMP: &str = "BACKEND_JUMP";
/// Map name: the listener the sock_ops program matches (`Array<ListenConfig>`, one entry).
pub const CONFIG: &str = "CONFIG";
/// Map name: why the programs did what they did (`PerCpuArray<u64>`,
/// index = a `KSTAT_*` value), summed by the daemon for `/metrics`.
pub const KSTATS: &str = "KSTATS";
/// Map name: ring buffer of wake-ups for the daemon (`u64` application
/// cookies). The backend verdict writes one when it starts passing a
/// session's backend bytes to the daemon: an armed session's backend socket
/// is not in the daemon's epoll (every redirected segment would wake it),
/// so this is how the daemon learns that the server spoke unasked or that
/// the kernel gave a response up.
pub const WAKES: &str = "WAKES";
/// Bytes of the WAKES ring (a power of two, a multiple of the page size).
pub const WAKES_BYTES: u32 = 256 * 1024;

pub const SOCKOPS_PROGRAM: &str = "redirector_sockops";
pub const MSG_PROGRAM: &str = "redirector_msg";
pub const APP_PASS_PROGRAM: &str = "redirector_app_pass";
pub const BACKEND_VERDICT_PROGRAM: &str = "redirector_backend";
pub const BACKEND_FULL_PROGRAM: &str = "redirector_backend_full";
pub const BACKEND_STRADDLE_PROGRAM: &str = "redirector_backend_straddle";

/// Capacity of the session maps.
pub const MAX_SESSIONS: u32 = 65_536;

/// An application's connection to our listener, as sock_ops (at
/// ESTABLISHED), sk_msg (each message) and the daemon (the accepted
/// socket's peer and local address) all see it. Addresses in network
/// order, ports in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub app_ip4: u32,
    pub listen_ip4: u32,
    pub app_port: u32,
    pub listen_port: u32,
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
    /// Non-zero: HOLD. New client bytes are passed to the daemon; a
    /// response already in flight still completes in the kernel.
    pub hold: u32,
    /// Arming generation. The kernel punts by writing it into
    /// [`KernelTrack::punt_epoch`] (client side) or
    /// [`KernelTrack::server_punt_epoch`] (server side); arming again uses
    /// a new epoch.
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
    /// Framing of the backend's stream (packets straddle segments).
    pub server: crate::mysql::Framer,
    /// Equals [`SessionCtl::epoch`] once the client side punted this arming.
    pub punt_epoch: u64,
    /// Equals [`SessionCtl::epoch`] once the server side passed a segment
    /// to the daemon in this arming: every later segment is passed too.
    pub server_punt_epoch: u64,
    /// Why the client side punted (a `PUNT_*` value).
    pub punt_reason: u32,
    /// Why the server side passed (a `SPASS_*` value).
    pub server_punt_reason: u32,
    /// Non-zero while a backend verdict chain (tail calls) walks a segment:
    /// `resume_off` is where the next program continues. Kept per session,
    /// not per CPU: verdict runs of one socket are serialised by its lock,
    /// while another socket's run may interrupt this one on the same CPU.
    pub resume_active: u32,
    pub resume_off: u32,
    /// A packet the straddle step completed, for the full step.
    pub has_pending: u32,
    pub _pad: u32,
    pub pending: crate::mysql::PacketInfo,
    /// The tracker and framer as they were at the start of the segment
    /// being walked: restored when the segment is given up, so the daemon
    /// continues exactly where the kernel stopped following.
    pub start_tracker: crate::mysql::Tracker,
    pub start_server: crate::mysql::Framer,
}

impl KernelTrack {
    /// Fresh state for an arming: the daemon's tracker, both streams at a
    /// packet boundary.
    pub const fn armed(tracker: crate::mysql::Tracker) -> Self {
        KernelTrack {
            tracker,
            server: crate::mysql::Framer::new(),
            punt_epoch: 0,
            server_punt_epoch: 0,
            punt_reason: 0,
            server_punt_reason: 0,
            resume_active: 0,
            resume_off: 0,
            has_pending: 0,
            _pad: 0,
            pending: crate::mysql::PacketInfo::EMPTY,
            start_tracker: tracker,
            start_server: crate::mysql::Framer::new(),
        }
    }

    /// The response to the last command the kernel forwarded is complete:
    /// the tracker has nothing in flight and the server stream stands
    /// between packets (the last packet's tail is not still to come).
    pub fn response_done(&self) -> bool {
        !self.tracker.in_flight() && self.server.at_boundary()
    }
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

/// Server side passed: bytes with no response outstanding (the server's
/// notice that it is shutting down or killed the connection).
pub const SPASS_UNSOLICITED: u32 = 1;
/// Server side passed: the tracker could not follow a segment (too many
/// packets needing the full state machine, or a packet that cannot occur).
pub const SPASS_GIVE_UP: u32 = 2;
/// Server side passed: the redirect into the application failed (its
/// socket is gone from [`APPS`]).
pub const SPASS_REDIRECT_FAILED: u32 = 3;

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

// Indices of KSTATS: why programs passed, gave up or skipped a delete.
/// sk_msg: a message on a socket with no session entry (passed).
pub const KSTAT_MSG_NO_SESSION: u32 = 0;
/// sk_msg punts, by `PUNT_*` reason (1..=5).
pub const KSTAT_MSG_PUNT_BASE: u32 = 1;
/// Backend verdict: a segment on a socket with no session (BSIDES/TRACK
/// miss) or a session not armed (passed).
pub const KSTAT_SEG_NOT_ARMED: u32 = 8;
/// Backend verdict: a segment passed because an earlier one was (the
/// server-side pass guard).
pub const KSTAT_SEG_AFTER_PASS: u32 = 9;
/// Backend verdict passes, by `SPASS_*` reason (1..=3).
pub const KSTAT_SEG_PASS_BASE: u32 = 10;
/// Backend verdict: segments redirected into the application.
pub const KSTAT_SEG_REDIRECTED: u32 = 14;
/// sock_ops at close: entries of this socket removed.
pub const KSTAT_CLOSE_CLEANED: u32 = 15;
/// sock_ops at close: the flow's entry belonged to another (newer) socket
/// and was left alone.
pub const KSTAT_CLOSE_NOT_OWNER: u32 = 16;
/// sock_ops at establish: the socket could not be put in the maps (full).
pub const KSTAT_ESTABLISH_FAILED: u32 = 17;
/// Backend verdict: the wake-up of the daemon for a pass could not be
/// queued (ring full); the daemon's periodic check finds the pass instead.
pub const KSTAT_WAKE_LOST: u32 = 18;
/// Number of KSTATS slots.
pub const KSTAT_SLOTS: u32 = 19;

/// Names of the KSTATS slots for `/metrics` (`redirector_kernel_events_total{event}`).
pub const KSTAT_NAMES: [(u32, &str); 16] = [
    (KSTAT_MSG_NO_SESSION, "msg_no_session"),
    (KSTAT_MSG_PUNT_BASE + PUNT_SLOW_COMMAND, "punt_slow_command"),
    (KSTAT_MSG_PUNT_BASE + PUNT_PIPELINED, "punt_pipelined"),
    (KSTAT_MSG_PUNT_BASE + PUNT_FRAMING, "punt_framing"),
    (KSTAT_MSG_PUNT_BASE + PUNT_HOLD, "punt_hold"),
    (KSTAT_MSG_PUNT_BASE + PUNT_NO_BACKEND, "punt_no_backend"),
    (KSTAT_SEG_NOT_ARMED, "segment_not_armed"),
    (KSTAT_SEG_AFTER_PASS, "segment_after_pass"),
    (
        KSTAT_SEG_PASS_BASE + SPASS_UNSOLICITED,
        "segment_unsolicited",
    ),
    (KSTAT_SEG_PASS_BASE + SPASS_GIVE_UP, "segment_give_up"),
    (
        KSTAT_SEG_PASS_BASE + SPASS_REDIRECT_FAILED,
        "segment_redirect_failed",
    ),
    (KSTAT_SEG_REDIRECTED, "segment_redirected"),
    (KSTAT_CLOSE_CLEANED, "close_cleaned"),
    (KSTAT_CLOSE_NOT_OWNER, "close_not_owner"),
    (KSTAT_ESTABLISH_FAILED, "establish_failed"),
    (KSTAT_WAKE_LOST, "wake_lost"),
];

#[cfg(feature = "user")]
mod session_pod {
    // SAFETY: #[repr(C)], integers (and the Pod tracker) only, no padding
    // holes that matter (every bit pattern is valid).
    unsafe impl aya::Pod for super::ListenConfig {}
    unsafe impl aya::Pod for super::SessionCtl {}
    unsafe impl aya::Pod for super::KernelTrack {}
    unsafe impl aya::Pod for super::SessionCounters {}
    unsafe impl aya::Pod for super::FlowKey {}
}

/// Map name: statements whose COM_STMT_EXECUTE the kernel may carry
/// (`HashMap<StmtKey, u32>`): the daemon has seen their parameter types (or
/// they have none) and the current server has them, so it can re-send them
/// after a move.
pub const TYPED: &str = "TYPED";

/// Key of [`TYPED`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StmtKey {
    /// Cookie of the application socket.
    pub app_cookie: u64,
    pub stmt_id: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] integers, explicit padding field.
unsafe impl aya::Pod for StmtKey {}
