//! eBPF programs of redirector (built for `bpfel-unknown-none`).
//!
//! `redirector_verdict` (sk_skb/stream_verdict, attached to [`SOCKS`]) moves
//! the bytes of spliced sessions from one socket straight to the peer socket's
//! egress, without waking the daemon. See `redirector_common::maps` for the map
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
    use redirector_common::maps::{SessionSide, SideCounters, MAX_SOCKETS, MODE_FORWARD};

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

    // ----- kernel session path (see redirector_common::maps) -----------------

    use aya_ebpf::{
        bindings::{
            BPF_F_INGRESS, BPF_NOEXIST, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_STATE_CB,
            BPF_SOCK_OPS_STATE_CB_FLAG,
        },
        helpers::generated::{bpf_msg_apply_bytes, bpf_msg_pull_data},
        macros::{sk_msg, sock_ops},
        maps::{Array, ProgramArray},
        programs::{SkMsgContext, SockOpsContext},
    };
    use redirector_common::maps::{
        app_key, KernelTrack, ListenConfig, SessionCounters, SessionCtl, StmtKey, MAX_SESSIONS,
        PUNT_FRAMING, PUNT_HOLD, PUNT_NO_BACKEND, PUNT_PIPELINED, PUNT_SLOW_COMMAND,
        SESSION_FORWARD,
    };
    use redirector_common::mysql::{self, PacketInfo, PREFIX_LEN};

    const AF_INET: u32 = 2;
    /// include/net/tcp_states.h
    const TCP_CLOSE: u32 = 7;
    const HEADER: usize = 4;
    /// Header plus the prefix the tracker looks at.
    const PEEK: usize = HEADER + PREFIX_LEN;

    #[map(name = "APPS")]
    static APPS: SockHash<u64> = SockHash::with_max_entries(MAX_SESSIONS, 0);
    #[map(name = "BACKENDS")]
    static BACKENDS: SockHash<u64> = SockHash::with_max_entries(MAX_SESSIONS, 0);
    #[map(name = "LOCAL_APPS")]
    static LOCAL_APPS: HashMap<u64, u64> = HashMap::with_max_entries(MAX_SESSIONS, 0);
    #[map(name = "CTL")]
    static CTL: HashMap<u64, SessionCtl> = HashMap::with_max_entries(MAX_SESSIONS, 0);
    #[map(name = "TRACK")]
    static TRACK: HashMap<u64, KernelTrack> = HashMap::with_max_entries(MAX_SESSIONS, 0);
    #[map(name = "SESSION_COUNTERS")]
    static SESSION_COUNTERS: HashMap<u64, SessionCounters> =
        HashMap::with_max_entries(MAX_SESSIONS, 0);
    #[map(name = "BSIDES")]
    static BSIDES: HashMap<u64, u64> = HashMap::with_max_entries(MAX_SESSIONS, 0);
    #[map(name = "TYPED")]
    static TYPED: HashMap<StmtKey, u32> = HashMap::with_max_entries(MAX_SESSIONS * 4, 0);
    #[map(name = "CONFIG")]
    static CONFIG: Array<ListenConfig> = Array::with_max_entries(1, 0);

    /// A port field of bpf_sock_ops: network order, in the low or (older
    /// layout) high 16 bits.
    #[inline(always)]
    fn port_of(field: u32) -> u32 {
        let raw = if field > 0xFFFF { field >> 16 } else { field };
        u32::from((raw as u16).swap_bytes())
    }

    /// Puts application sockets connecting to our listener into APPS, with
    /// zeroed counters so that every byte they send is accounted for, and
    /// removes the session's entries when such a socket closes.
    #[sock_ops]
    pub fn redirector_sockops(ctx: SockOpsContext) -> u32 {
        let op = ctx.op();
        if ctx.family() != AF_INET {
            return 0;
        }
        if op == BPF_SOCK_OPS_STATE_CB {
            // args[1] is the new state.
            if ctx.arg(1) == TCP_CLOSE {
                let key = app_key(ctx.local_ip4(), ctx.local_port());
                // Only ours: the flag is set below on our sockets only.
                let _ = LOCAL_APPS.remove(&key);
                let _ = CTL.remove(&key);
                let _ = TRACK.remove(&key);
                let _ = SESSION_COUNTERS.remove(&key);
            }
            return 0;
        }
        if op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
            return 0;
        }
        let Some(cfg) = CONFIG.get(0) else {
            return 0;
        };
        if cfg.port == 0 || port_of(ctx.remote_port()) != cfg.port {
            return 0;
        }
        if cfg.ip4 != 0 && ctx.remote_ip4() != cfg.ip4 {
            return 0;
        }
        let mut key = app_key(ctx.local_ip4(), ctx.local_port());
        // SAFETY: the helper only reads the socket.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
        if SESSION_COUNTERS
            .insert(&key, &SessionCounters::default(), u64::from(BPF_NOEXIST))
            .is_err()
        {
            return 0;
        }
        let _ = LOCAL_APPS.insert(&key, &cookie, 0);
        // SAFETY: ctx.ops is the program's context.
        if APPS
            .update(&mut key, unsafe { &mut *ctx.ops }, u64::from(BPF_NOEXIST))
            .is_err()
        {
            let _ = LOCAL_APPS.remove(&key);
            let _ = SESSION_COUNTERS.remove(&key);
            return 0;
        }
        let _ = ctx.set_cb_flags(BPF_SOCK_OPS_STATE_CB_FLAG as i32);
        0
    }

    /// Passes a client message to the daemon and remembers that this arming
    /// is over.
    #[inline(always)]
    fn punt(
        t: *mut KernelTrack,
        c: *mut SessionCounters,
        epoch: u64,
        reason: u32,
        size: u32,
    ) -> u32 {
        // SAFETY: map value pointers valid for this run.
        unsafe {
            if (*t).punt_epoch != epoch {
                (*t).punt_epoch = epoch;
                (*t).punt_reason = reason;
                add(&raw mut (*c).punts, 1);
            }
            add(&raw mut (*c).client_passed_bytes, u64::from(size));
        }
        sk_action::SK_PASS
    }

    #[sk_msg]
    pub fn redirector_msg(ctx: SkMsgContext) -> u32 {
        // SAFETY: ctx.msg is the program's context.
        let (ip, port) = unsafe { ((*ctx.msg).local_ip4, (*ctx.msg).local_port) };
        let key = app_key(ip, port);
        let Some(c) = SESSION_COUNTERS.get_ptr_mut(&key) else {
            return sk_action::SK_PASS;
        };
        // SAFETY: valid map value pointer; the add is a full barrier that
        // orders it before the CTL read below (see SessionCounters).
        unsafe { add(&raw mut (*c).msg_runs_started, 1) };
        let verdict = msg_verdict(&ctx, key, c);
        // SAFETY: as above.
        unsafe { add(&raw mut (*c).msg_runs_done, 1) };
        verdict
    }

    #[inline(always)]
    fn msg_verdict(ctx: &SkMsgContext, key: u64, c: *mut SessionCounters) -> u32 {
        let size = ctx.size();
        // SAFETY: copied out at once.
        let Some(ctl) = (unsafe { CTL.get(&key) }).copied() else {
            unsafe { add(&raw mut (*c).client_passed_bytes, u64::from(size)) };
            return sk_action::SK_PASS;
        };
        let Some(t) = TRACK.get_ptr_mut(&key) else {
            unsafe { add(&raw mut (*c).client_passed_bytes, u64::from(size)) };
            return sk_action::SK_PASS;
        };
        // SAFETY: valid map value pointers for this run.
        let (punted, passed) = unsafe {
            (
                (*t).punt_epoch == ctl.epoch,
                core::ptr::read_volatile(&raw const (*c).client_passed_bytes),
            )
        };
        if ctl.mode != SESSION_FORWARD || punted || passed != ctl.forward_at {
            unsafe { add(&raw mut (*c).client_passed_bytes, u64::from(size)) };
            return sk_action::SK_PASS;
        }
        if ctl.hold != 0 {
            return punt(t, c, ctl.epoch, PUNT_HOLD, size);
        }
        // Look at the header and the first payload bytes.
        let want = if (size as usize) < PEEK {
            size
        } else {
            PEEK as u32
        };
        // SAFETY: helper on our context.
        if want < (HEADER as u32 + 1) || unsafe { bpf_msg_pull_data(ctx.msg, 0, want, 0) } != 0 {
            return punt(t, c, ctl.epoch, PUNT_FRAMING, size);
        }
        let mut buf = [0u8; PEEK];
        let data = ctx.data();
        let end = ctx.data_end();
        let mut n = 0usize;
        while n < PEEK {
            if data + n + 1 > end {
                break;
            }
            // SAFETY: bounds checked against data_end just above.
            buf[n] = unsafe { *((data + n) as *const u8) };
            n += 1;
        }
        if n < HEADER + 1 {
            return punt(t, c, ctl.epoch, PUNT_FRAMING, size);
        }
        let len = u32::from(buf[0]) | (u32::from(buf[1]) << 8) | (u32::from(buf[2]) << 16);
        if len == 0 || len >= mysql::MAX_PACKET {
            return punt(t, c, ctl.epoch, PUNT_FRAMING, size);
        }
        let mut p = PacketInfo::EMPTY;
        p.len = len;
        p.seq = buf[3];
        let mut i = 0usize;
        while i < PREFIX_LEN && HEADER + i < n && i < len as usize {
            p.prefix[i] = buf[HEADER + i];
            i += 1;
        }
        p.prefix_len = i as u8;
        // SAFETY: valid map value pointer; only this socket's sk_msg runs
        // write the client side, and the backend verdict only runs while a
        // response is in flight (then we punt below).
        let tracker = unsafe { &mut (*t).tracker };
        if tracker.in_infile() {
            // LOCAL INFILE data: part of the command in flight.
        } else {
            if !tracker.idle() {
                return punt(t, c, ctl.epoch, PUNT_PIPELINED, size);
            }
            if !mysql::kernel_path_command(p.prefix()) {
                return punt(t, c, ctl.epoch, PUNT_SLOW_COMMAND, size);
            }
            if p.prefix[0] == mysql::command::COM_STMT_EXECUTE {
                let stmt_id =
                    u32::from_le_bytes([p.prefix[1], p.prefix[2], p.prefix[3], p.prefix[4]]);
                let sk = StmtKey {
                    app_key: key,
                    stmt_id,
                    _pad: 0,
                };
                // SAFETY: presence check only.
                if unsafe { TYPED.get(&sk) }.is_none() {
                    return punt(t, c, ctl.epoch, PUNT_SLOW_COMMAND, size);
                }
            }
        }
        let total = len + HEADER as u32;
        let mut bkey = ctl.backend_cookie;
        // Redirect first: if the backend is gone, the daemon gets the bytes.
        if BACKENDS.redirect_msg(ctx, &mut bkey, 0) != i64::from(sk_action::SK_PASS) {
            return punt(t, c, ctl.epoch, PUNT_NO_BACKEND, size);
        }
        if total != size {
            // The verdict covers exactly this packet: the program runs again
            // at the next packet (pipelined: then punted), or not until the
            // rest of a long packet has gone by.
            // SAFETY: helper on our context.
            unsafe { bpf_msg_apply_bytes(ctx.msg, total) };
        }
        tracker.on_client_packet(&p);
        // SAFETY: valid map value pointer.
        unsafe {
            add(&raw mut (*c).client_redirected_bytes, u64::from(total));
            add(&raw mut (*c).commands, 1);
        }
        sk_action::SK_PASS
    }

    /// Loads `min(avail, PEEK)` bytes of the skb from `off` into `out`, in
    /// power-of-two chunks: the helper wants a length the verifier knows to
    /// be non-zero and bounded. Returns the bytes loaded.
    #[inline(always)]
    fn load_window(ctx: &SkBuffContext, off: u32, avail: u32, out: &mut [u8; PEEK]) -> usize {
        let skb = ctx.as_ptr().cast();
        let dst = out.as_mut_ptr();
        if avail >= PEEK as u32 {
            // SAFETY: `dst` holds PEEK bytes.
            let rc = unsafe {
                aya_ebpf::helpers::generated::bpf_skb_load_bytes(skb, off, dst.cast(), PEEK as u32)
            };
            return if rc == 0 { PEEK } else { 0 };
        }
        let avail = avail as usize & 63;
        let mut got = 0usize;
        macro_rules! chunk {
            ($n:expr) => {
                if avail & $n != 0 {
                    // SAFETY: the set bits of avail (< PEEK) below this one
                    // sum to `got`, so got + $n <= PEEK.
                    let rc = unsafe {
                        aya_ebpf::helpers::generated::bpf_skb_load_bytes(
                            skb,
                            off + got as u32,
                            dst.add(got).cast(),
                            $n,
                        )
                    };
                    if rc != 0 {
                        return got;
                    }
                    got += $n as usize;
                }
            };
        }
        chunk!(32);
        chunk!(16);
        chunk!(8);
        chunk!(4);
        chunk!(2);
        chunk!(1);
        got
    }

    /// Loads `n` (1..=PREFIX_LEN) bytes of the skb from `off` into `out`.
    #[inline(always)]
    fn load_prefix(ctx: &SkBuffContext, off: u32, n: u32, out: &mut [u8; PREFIX_LEN]) -> usize {
        let mut win = [0u8; PEEK];
        let got = load_window(ctx, off, n, &mut win);
        let mut i = 0usize;
        while i < PREFIX_LEN && i < got {
            out[i] = win[i];
            i += 1;
        }
        i
    }

    /// Slot 0: `redirector_backend`, slot 1: `redirector_backend_full` (set by the daemon).
    #[map(name = "BACKEND_JUMP")]
    static BACKEND_JUMP: ProgramArray = ProgramArray::with_max_entries(3, 0);

    /// Rows and column definitions walked per run of the head walker.
    const HEAD_STEPS: u32 = 256;
    /// Slots of BACKEND_JUMP.
    const JUMP_HEAD: u32 = 0;
    const JUMP_FULL: u32 = 1;
    const JUMP_STRADDLE: u32 = 2;

    /// The session a backend segment belongs to, and where this run starts.
    struct Segment {
        key: u64,
        c: *mut SessionCounters,
        t: *mut KernelTrack,
        off: u32,
        len: u32,
    }

    /// Looks up the segment's session; `None` = pass it to the daemon.
    #[inline(always)]
    fn segment(ctx: &SkBuffContext) -> Option<Segment> {
        // SAFETY: the helper only reads the skb's socket.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
        // SAFETY: copied out at once.
        let key = (unsafe { BSIDES.get(cookie) }).copied()?;
        let c = SESSION_COUNTERS.get_ptr_mut(&key)?;
        let t = TRACK.get_ptr_mut(&key)?;
        // SAFETY: valid map value pointer; verdict runs of this socket (and
        // the tail calls of one run) are serialised by the socket's lock.
        let resumed = unsafe { (*t).resume_active != 0 };
        let off = if resumed {
            unsafe { (*t).resume_off }
        } else {
            0
        };
        unsafe { (*t).resume_active = 0 };
        let len = ctx.len();
        if !resumed {
            // SAFETY: the pending packet belongs to an earlier chain only.
            unsafe { (*t).has_pending = 0 };
            // SAFETY: copied out at once.
            let mode = match unsafe { CTL.get(&key) } {
                Some(ctl) => ctl.mode,
                None => 0,
            };
            // SAFETY: valid map value pointer.
            if mode != SESSION_FORWARD || !unsafe { (*t).tracker.in_flight() } {
                // Bytes for the daemon: answers to what it sent itself, or
                // the server's unsolicited notice.
                unsafe { add(&raw mut (*c).server_passed_bytes, u64::from(len)) };
                return None;
            }
        }
        Some(Segment {
            key,
            c,
            t,
            off,
            len,
        })
    }

    /// Continues in another program of BACKEND_JUMP at `seg.off`, or, when
    /// the segment is done (or the tail call budget is spent), redirects it
    /// into the application's receive queue.
    #[inline(always)]
    fn continue_or_finish(ctx: &SkBuffContext, seg: &Segment, next: u32) -> u32 {
        // SAFETY: valid map value pointer (see redirector_backend).
        let tr = unsafe { &mut *seg.t };
        if seg.off < seg.len && !tr.tracker.lost_sync() {
            // SAFETY: valid map value pointer, see `segment`.
            unsafe {
                (*seg.t).resume_off = seg.off;
                (*seg.t).resume_active = 1;
                BACKEND_JUMP.tail_call(ctx, next);
                // Only reached when the tail call failed (limit reached).
                (*seg.t).resume_active = 0;
            }
            tr.tracker.give_up();
        }
        let mut akey = seg.key;
        let ret = APPS.redirect_skb(ctx, &mut akey, u64::from(BPF_F_INGRESS));
        // SAFETY: valid map value pointer.
        unsafe {
            add(
                &raw mut (*seg.c).server_redirected_bytes,
                u64::from(seg.len),
            )
        };
        ret as u32
    }

    /// Backend → application. While a response to a command the kernel
    /// forwarded is in flight, walks the segment's MySQL packets through the
    /// shared framer and tracker and redirects the segment into the
    /// application socket's receive queue; otherwise passes it to the daemon.
    ///
    /// This program walks rows and column definitions (first byte and length
    /// suffice) and tail-calls `redirector_backend_full` for a packet that
    /// needs the whole state machine, which tail-calls back. Two programs,
    /// so that the verifier sees the walk and the state machine apart; a
    /// segment may need up to 16 full packets (beyond that the tracker gives
    /// up and the session is no longer followed).
    #[stream_verdict]
    pub fn redirector_backend(ctx: SkBuffContext) -> u32 {
        let Some(mut seg) = segment(&ctx) else {
            return sk_action::SK_PASS;
        };
        // SAFETY: valid map value pointer; while a response is in flight
        // only this socket's verdict runs (serialised) write the tracker.
        let tr = unsafe { &mut *seg.t };
        let (off, full) = mysql::walk_heads(
            &mut tr.server,
            &mut tr.tracker,
            seg.off,
            seg.len,
            HEAD_STEPS,
            |o| ctx.load::<[u8; HEADER + 1]>(o as usize).ok(),
        );
        seg.off = off;
        continue_or_finish(&ctx, &seg, if full { JUMP_FULL } else { JUMP_HEAD })
    }

    /// One packet of a backend segment through the whole state machine
    /// (see `redirector_backend`): taken from the segment when its header
    /// and prefix are in it, else `redirector_backend_straddle` assembles it.
    #[stream_verdict]
    pub fn redirector_backend_full(ctx: SkBuffContext) -> u32 {
        let Some(mut seg) = segment(&ctx) else {
            return sk_action::SK_PASS;
        };
        // SAFETY: as in redirector_backend.
        let tr = unsafe { &mut *seg.t };
        // SAFETY: valid map value pointer, see `segment`.
        let pending = unsafe { (*seg.t).has_pending != 0 };
        if pending {
            unsafe { (*seg.t).has_pending = 0 };
            let p = unsafe { (*seg.t).pending };
            tr.tracker.on_server_packet(&p);
            return continue_or_finish(&ctx, &seg, JUMP_HEAD);
        }
        if seg.off >= seg.len {
            return continue_or_finish(&ctx, &seg, JUMP_HEAD);
        }
        let next = mysql::full_packet(
            &mut tr.server,
            &mut tr.tracker,
            seg.off,
            seg.len,
            |o| ctx.load::<[u8; HEADER]>(o as usize).ok(),
            |o, buf, n| load_prefix(&ctx, o, n, buf),
        );
        match next {
            Some(off) => {
                seg.off = off;
                continue_or_finish(&ctx, &seg, JUMP_HEAD)
            }
            None => continue_or_finish(&ctx, &seg, JUMP_STRADDLE),
        }
    }

    /// A packet whose header or prefix straddles segments: fed byte-wise to
    /// the shared framer, which keeps the partial bytes until the next
    /// segment. A completed packet goes to `redirector_backend_full`.
    #[stream_verdict]
    pub fn redirector_backend_straddle(ctx: SkBuffContext) -> u32 {
        let Some(mut seg) = segment(&ctx) else {
            return sk_action::SK_PASS;
        };
        // SAFETY: as in redirector_backend.
        let tr = unsafe { &mut *seg.t };
        let mut next = JUMP_HEAD;
        if seg.off < seg.len {
            let mut win = [0u8; PEEK];
            let n = load_window(&ctx, seg.off, seg.len - seg.off, &mut win);
            if n == 0 {
                tr.tracker.give_up();
            } else {
                let (used, ev) = tr.server.next_event(win.get(..n).unwrap_or(&[]));
                seg.off += used as u32;
                if let Some(p) = ev {
                    // SAFETY: valid map value pointer, see `segment`.
                    unsafe {
                        (*seg.t).pending = p;
                        (*seg.t).has_pending = 1;
                    }
                    next = JUMP_FULL;
                    if seg.off >= seg.len {
                        // The packet's tracker step must still run.
                        return full_then_finish(&ctx, &seg);
                    }
                }
            }
        }
        continue_or_finish(&ctx, &seg, next)
    }

    /// The last packet of the segment completed in the straddle step: run
    /// the full step on it before finishing.
    #[inline(always)]
    fn full_then_finish(ctx: &SkBuffContext, seg: &Segment) -> u32 {
        // SAFETY: valid map value pointer, see `segment`.
        unsafe {
            (*seg.t).resume_off = seg.off;
            (*seg.t).resume_active = 1;
            BACKEND_JUMP.tail_call(ctx, JUMP_FULL);
            (*seg.t).resume_active = 0;
            (*seg.t).has_pending = 0;
            (*seg.t).tracker.give_up();
        }
        continue_or_finish(ctx, seg, JUMP_HEAD)
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
