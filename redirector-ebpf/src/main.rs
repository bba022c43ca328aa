//! eBPF programs of redirector (built for `bpfel-unknown-none`).
//!
//! `redirector_verdict` (sk_skb/stream_verdict, attached to [`SOCKS`]) moves
//! the bytes of spliced sessions from one socket straight to the peer socket's
//! egress, without waking the daemon. See `redirector_ebpf::maps` for the map
//! layout and the HOLD/FORWARD protocol.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// Atomic adds: core::sync::atomic has no fetch_add on the bpf target (no CAS),
// but the intrinsic lowers to the BPF atomic add instruction.
#![cfg_attr(target_arch = "bpf", allow(internal_features))]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]

#[cfg(target_arch = "bpf")]
mod prog {
    use core::intrinsics::{atomic_xadd, AtomicOrdering};

    use aya_ebpf::{
        bindings::sk_action,
        helpers::bpf_get_socket_cookie,
        macros::{map, stream_verdict},
        maps::{HashMap, SockHash},
        programs::SkBuffContext,
        EbpfContext,
    };
    use redirector_ebpf::maps::{SessionSide, SideCounters, MAX_SOCKETS, MODE_FORWARD};

    #[map(name = "SOCKS")]
    static SOCKS: SockHash<u64> = SockHash::with_max_entries(MAX_SOCKETS, 0);

    #[map(name = "SIDES")]
    static SIDES: HashMap<u64, SessionSide> = HashMap::with_max_entries(MAX_SOCKETS, 0);

    #[map(name = "COUNTERS")]
    static COUNTERS: HashMap<u64, SideCounters> = HashMap::with_max_entries(MAX_SOCKETS, 0);

    /// Atomically adds to a counter inside a map value (shared with other
    /// CPUs and read by userspace).
    ///
    /// # Safety
    /// `p` points into a live map value (RCU keeps it valid for the program
    /// run) and is 8-byte aligned (#[repr(C)] of u64s).
    #[inline(always)]
    unsafe fn add(p: *mut u64, n: u64) {
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, n) };
    }

    // The program is named after the function; it must differ from the
    // section name ("stream_verdict") or bpf-linker sees a duplicate symbol.
    #[stream_verdict]
    pub fn redirector_verdict(ctx: SkBuffContext) -> u32 {
        // SAFETY: the helper only reads the skb's socket.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
        // SAFETY: the value is copied out before any use.
        let side = match unsafe { SIDES.get(cookie) } {
            Some(side) => *side,
            None => return sk_action::SK_PASS,
        };
        let Some(c) = COUNTERS.get_ptr_mut(cookie) else {
            return sk_action::SK_PASS;
        };
        let len = u64::from(ctx.len());
        // SAFETY: `c` is a valid map value pointer for this run. Verdicts of
        // one socket run serialised under its socket lock, so this load
        // cannot race an add by another verdict of the same side.
        let passed = unsafe { core::ptr::read_volatile(&raw const (*c).passed_bytes) };
        if side.mode == MODE_FORWARD && passed == side.forward_at {
            let mut key = side.peer_cookie;
            let ret = SOCKS.redirect_skb(&ctx, &mut key, 0);
            if ret == i64::from(sk_action::SK_PASS) {
                // SAFETY: as above.
                unsafe {
                    add(&raw mut (*c).redirected_bytes, len);
                    add(&raw mut (*c).redirected_skbs, 1);
                }
                return sk_action::SK_PASS;
            }
            // The peer is gone from SOCKS: hand the bytes to the daemon
            // rather than dropping them. Counting them as passed also stops
            // further redirects (forward_at no longer matches).
        }
        // SAFETY: as above.
        unsafe {
            add(&raw mut (*c).passed_bytes, len);
            add(&raw mut (*c).passed_skbs, 1);
        }
        sk_action::SK_PASS
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
