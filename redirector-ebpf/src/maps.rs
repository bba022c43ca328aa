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
