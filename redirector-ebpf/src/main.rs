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
        maps::{Array, PerCpuArray, ProgramArray, RingBuf},
        programs::{SkMsgContext, SockOpsContext},
    };
    use redirector_common::maps::{
        FlowKey, KernelTrack, ListenConfig, SessionCounters, SessionCtl, StmtKey,
        KSTAT_CLOSE_CLEANED, KSTAT_CLOSE_NOT_OWNER, KSTAT_ESTABLISH_FAILED, KSTAT_MSG_NO_SESSION,
        KSTAT_MSG_PUNT_BASE, KSTAT_SEG_AFTER_PASS, KSTAT_SEG_NOT_ARMED, KSTAT_SEG_PASS_BASE,
        KSTAT_SEG_REDIRECTED, KSTAT_SLOTS, KSTAT_WAKE_LOST, MAX_SESSIONS, PUNT_FRAMING, PUNT_HOLD,
        PUNT_NO_BACKEND, PUNT_PIPELINED, PUNT_SLOW_COMMAND, SESSION_FORWARD, SPASS_GIVE_UP,
        SPASS_REDIRECT_FAILED, SPASS_UNSOLICITED, WAKES_BYTES,
    };
    use redirector_common::mysql::{self, PacketInfo, PREFIX_LEN};

    const AF_INET: u32 = 2;
    /// `BPF_F_NO_PREALLOC`: elements the daemon replaces or deletes are
    /// freed after an RCU grace period, so a program still holding the old
    /// value writes into it instead of into a recycled element that now
    /// belongs to another session (a preallocated hash reuses at once).
    const NO_PREALLOC: u32 = 1;
    /// include/net/tcp_states.h
    const TCP_CLOSE: u32 = 7;
    const SOL_SOCKET: i32 = 1;
    const SO_RCVBUF: i32 = 8;
    /// Receive buffer asked for application sockets (capped by the kernel).
    const APP_RCVBUF: i32 = 4 << 20;
    const HEADER: usize = 4;
    /// Header plus the prefix the tracker looks at.
    const PEEK: usize = HEADER + PREFIX_LEN;

    #[map(name = "APPS")]
    static APPS: SockHash<u64> = SockHash::with_max_entries(MAX_SESSIONS, 0);
    #[map(name = "BACKENDS")]
    static BACKENDS: SockHash<u64> = SockHash::with_max_entries(MAX_SESSIONS, 0);
    #[map(name = "LOCAL_APPS")]
    static LOCAL_APPS: HashMap<FlowKey, u64> = HashMap::with_max_entries(MAX_SESSIONS, NO_PREALLOC);
    #[map(name = "CTL")]
    static CTL: HashMap<u64, SessionCtl> = HashMap::with_max_entries(MAX_SESSIONS, NO_PREALLOC);
    #[map(name = "TRACK")]
    static TRACK: HashMap<u64, KernelTrack> = HashMap::with_max_entries(MAX_SESSIONS, NO_PREALLOC);
    #[map(name = "SESSION_COUNTERS")]
    static SESSION_COUNTERS: HashMap<u64, SessionCounters> =
        HashMap::with_max_entries(MAX_SESSIONS, NO_PREALLOC);
    #[map(name = "BSIDES")]
    static BSIDES: HashMap<u64, u64> = HashMap::with_max_entries(MAX_SESSIONS, NO_PREALLOC);
    #[map(name = "TYPED")]
    static TYPED: HashMap<StmtKey, u32> = HashMap::with_max_entries(MAX_SESSIONS * 4, NO_PREALLOC);
    #[map(name = "CONFIG")]
    static CONFIG: Array<ListenConfig> = Array::with_max_entries(1, 0);
    #[map(name = "KSTATS")]
    static KSTATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(KSTAT_SLOTS, 0);
    #[map(name = "WAKES")]
    static WAKES: RingBuf = RingBuf::with_byte_size(WAKES_BYTES, 0);

    /// Counts one event (per CPU: no atomics needed).
    #[inline(always)]
    fn kstat(slot: u32) {
        if let Some(p) = KSTATS.get_ptr_mut(slot) {
            // SAFETY: valid per-CPU map value; programs on one CPU do not
            // preempt each other mid-instruction sequence here.
            unsafe { *p += 1 };
        }
    }

    /// A port field of bpf_sock_ops / sk_msg_md: network order, in the low or
    /// (older layout) high 16 bits.
    #[inline(always)]
    fn port_of(field: u32) -> u32 {
        let raw = if field > 0xFFFF { field >> 16 } else { field };
        u32::from((raw as u16).swap_bytes())
    }

    /// Whether a connection to `remote` is one to our listener.
    #[inline(always)]
    fn to_listener(remote_ip4: u32, remote_port: u32) -> bool {
        let Some(cfg) = CONFIG.get(0) else {
            return false;
        };
        cfg.port != 0 && remote_port == cfg.port && (cfg.ip4 == 0 || remote_ip4 == cfg.ip4)
    }

    /// Puts application sockets connecting to our listener into APPS under
    /// their cookie, with zeroed counters so that every byte they send is
    /// accounted for, and removes this socket's entries when it closes.
    /// Every sock_ops program of the cgroup runs for every flagged socket
    /// (another daemon's too): all keys are this socket's cookie, and the
    /// flow entry is removed only if it still names this socket.
    #[sock_ops]
    pub fn redirector_sockops(ctx: SockOpsContext) -> u32 {
        let op = ctx.op();
        if ctx.family() != AF_INET {
            return 0;
        }
        if op != BPF_SOCK_OPS_STATE_CB && op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
            return 0;
        }
        let remote_port = port_of(ctx.remote_port());
        if !to_listener(ctx.remote_ip4(), remote_port) {
            return 0;
        }
        let flow = FlowKey {
            app_ip4: ctx.local_ip4(),
            listen_ip4: ctx.remote_ip4(),
            app_port: ctx.local_port(),
            listen_port: remote_port,
        };
        // SAFETY: the helper only reads the socket.
        let mut cookie = unsafe { bpf_get_socket_cookie(ctx.ops.cast()) };
        if op == BPF_SOCK_OPS_STATE_CB {
            // args[1] is the new state.
            if ctx.arg(1) == TCP_CLOSE {
                // SAFETY: copied out at once.
                match unsafe { LOCAL_APPS.get(&flow) }.copied() {
                    Some(owner) if owner == cookie => {
                        let _ = LOCAL_APPS.remove(&flow);
                    }
                    Some(_) => kstat(KSTAT_CLOSE_NOT_OWNER),
                    None => {}
                }
                let _ = CTL.remove(&cookie);
                let _ = TRACK.remove(&cookie);
                if SESSION_COUNTERS.remove(&cookie).is_ok() {
                    kstat(KSTAT_CLOSE_CLEANED);
                }
            }
            return 0;
        }
        if SESSION_COUNTERS
            .insert(&cookie, &SessionCounters::default(), u64::from(BPF_NOEXIST))
            .is_err()
        {
            kstat(KSTAT_ESTABLISH_FAILED);
            return 0;
        }
        if LOCAL_APPS.insert(&flow, &cookie, 0).is_err() {
            let _ = SESSION_COUNTERS.remove(&cookie);
            kstat(KSTAT_ESTABLISH_FAILED);
            return 0;
        }
        // SAFETY: ctx.ops is the program's context.
        if APPS
            .update(
                &mut cookie,
                unsafe { &mut *ctx.ops },
                u64::from(BPF_NOEXIST),
            )
            .is_err()
        {
            let _ = LOCAL_APPS.remove(&flow);
            let _ = SESSION_COUNTERS.remove(&cookie);
            kstat(KSTAT_ESTABLISH_FAILED);
            return 0;
        }
        let _ = ctx.set_cb_flags(BPF_SOCK_OPS_STATE_CB_FLAG as i32);
        // Redirected bytes never advance the application's read position,
        // so TCP never grows its receive buffer: a response larger than it
        // is delivered in one-jiffy retry steps (~60 ms per MiB at the
        // default 128 KiB). Ask for more; the kernel caps it at
        // net.core.rmem_max (docs/configuration.md).
        let mut rcvbuf: i32 = APP_RCVBUF;
        // SAFETY: ctx.ops is the program's context; the value is an int.
        let _ = unsafe {
            aya_ebpf::helpers::generated::bpf_setsockopt(
                ctx.ops.cast(),
                SOL_SOCKET,
                SO_RCVBUF,
                (&raw mut rcvbuf).cast(),
                4,
            )
        };
        0
    }

    /// What the daemon writes to an application socket: passed, so it
    /// queues behind bytes the backend verdict redirected there (one FIFO).
    #[stream_verdict]
    pub fn redirector_app_pass(_ctx: SkBuffContext) -> u32 {
        sk_action::SK_PASS
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
                kstat(KSTAT_MSG_PUNT_BASE + reason);
            }
            add(&raw mut (*c).client_passed_bytes, u64::from(size));
        }
        sk_action::SK_PASS
    }

    #[sk_msg]
    pub fn redirector_msg(ctx: SkMsgContext) -> u32 {
        // sk_msg programs cannot read socket cookies: find the session by
        // the flow sock_ops recorded.
        // SAFETY: ctx.msg is the program's context.
        let flow = unsafe {
            let m = &*ctx.msg;
            FlowKey {
                app_ip4: m.local_ip4,
                listen_ip4: m.remote_ip4,
                app_port: m.local_port,
                listen_port: port_of(m.remote_port),
            }
        };
        // SAFETY: copied out at once.
        let Some(cookie) = (unsafe { LOCAL_APPS.get(&flow) }).copied() else {
            kstat(KSTAT_MSG_NO_SESSION);
            return sk_action::SK_PASS;
        };
        let Some(c) = SESSION_COUNTERS.get_ptr_mut(&cookie) else {
            kstat(KSTAT_MSG_NO_SESSION);
            return sk_action::SK_PASS;
        };
        // SAFETY: valid map value pointer; the add is a full barrier that
        // orders it before the CTL read below (see SessionCounters).
        unsafe { add(&raw mut (*c).msg_runs_started, 1) };
        let verdict = msg_verdict(&ctx, cookie, c);
        // SAFETY: as above.
        unsafe { add(&raw mut (*c).msg_runs_done, 1) };
        verdict
    }

    #[inline(always)]
    fn msg_verdict(ctx: &SkMsgContext, cookie: u64, c: *mut SessionCounters) -> u32 {
        let size = ctx.size();
        // SAFETY: copied out at once.
        let Some(ctl) = (unsafe { CTL.get(&cookie) }).copied() else {
            unsafe { add(&raw mut (*c).client_passed_bytes, u64::from(size)) };
            return sk_action::SK_PASS;
        };
        let Some(t) = TRACK.get_ptr_mut(&cookie) else {
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
            // Idle, and the last response's final packet wholly through:
            // anything else is a pipelined command.
            // SAFETY: as above.
            if !(tracker.idle() && unsafe { (*t).server.at_boundary() }) {
                return punt(t, c, ctl.epoch, PUNT_PIPELINED, size);
            }
            if !mysql::kernel_path_command(p.prefix()) {
                return punt(t, c, ctl.epoch, PUNT_SLOW_COMMAND, size);
            }
            if p.prefix[0] == mysql::command::COM_STMT_EXECUTE {
                let stmt_id =
                    u32::from_le_bytes([p.prefix[1], p.prefix[2], p.prefix[3], p.prefix[4]]);
                let sk = StmtKey {
                    app_cookie: cookie,
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

    /// Slot 0: `redirector_backend`, 1: `redirector_backend_full`, 2:
    /// `redirector_backend_straddle` (filled by the daemon's loader).
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
        app: u64,
        epoch: u64,
        c: *mut SessionCounters,
        t: *mut KernelTrack,
        off: u32,
        len: u32,
    }

    /// Passes a backend segment to the daemon, and every later one of this
    /// arming too (the server-side pass guard).
    #[inline(always)]
    fn server_pass(
        app: u64,
        t: *mut KernelTrack,
        c: *mut SessionCounters,
        epoch: u64,
        reason: u32,
        len: u32,
    ) -> u32 {
        // SAFETY: map value pointers valid for this run; verdict runs of one
        // socket are serialised by its lock.
        let first = unsafe { (*t).server_punt_epoch != epoch };
        unsafe {
            if first {
                (*t).server_punt_epoch = epoch;
                (*t).server_punt_reason = reason;
            }
            add(&raw mut (*c).server_passed_bytes, u64::from(len));
        }
        // The daemon does not watch an armed backend socket: wake it, once
        // per arming, after the pass is recorded in TRACK.
        if first && WAKES.output::<u64>(app, 0).is_err() {
            kstat(KSTAT_WAKE_LOST);
        }
        kstat(KSTAT_SEG_PASS_BASE + reason);
        sk_action::SK_PASS
    }

    /// Looks up the segment's session and decides, at the start of a
    /// segment, whether the kernel carries it. `Err(verdict)`: the segment
    /// is passed to the daemon.
    #[inline(always)]
    fn segment(ctx: &SkBuffContext) -> Result<Segment, u32> {
        // SAFETY: the helper only reads the skb's socket.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
        let not_armed = || {
            kstat(KSTAT_SEG_NOT_ARMED);
            sk_action::SK_PASS
        };
        // SAFETY: copied out at once.
        let app = (unsafe { BSIDES.get(cookie) })
            .copied()
            .ok_or_else(not_armed)?;
        let c = SESSION_COUNTERS.get_ptr_mut(&app).ok_or_else(not_armed)?;
        let t = TRACK.get_ptr_mut(&app).ok_or_else(not_armed)?;
        // SAFETY: copied out at once.
        let ctl = (unsafe { CTL.get(&app) }).copied().ok_or_else(not_armed)?;
        let len = ctx.len();
        // SAFETY: valid map value pointer; verdict runs of this socket (and
        // the tail calls of one run) are serialised by the socket's lock.
        let resumed = unsafe { (*t).resume_active != 0 };
        let off = if resumed {
            unsafe { (*t).resume_off }
        } else {
            0
        };
        unsafe { (*t).resume_active = 0 };
        if !resumed {
            if ctl.mode != SESSION_FORWARD {
                unsafe { add(&raw mut (*c).server_passed_bytes, u64::from(len)) };
                return Err(not_armed());
            }
            // SAFETY: valid map value pointer.
            if unsafe { (*t).server_punt_epoch } == ctl.epoch {
                unsafe { add(&raw mut (*c).server_passed_bytes, u64::from(len)) };
                kstat(KSTAT_SEG_AFTER_PASS);
                return Err(sk_action::SK_PASS);
            }
            // SAFETY: valid map value pointer.
            if unsafe { (*t).response_done() } {
                // Bytes with no response outstanding: the server's notice
                // that it is shutting down or killed the connection, or an
                // answer to what the daemon sent itself.
                return Err(server_pass(app, t, c, ctl.epoch, SPASS_UNSOLICITED, len));
            }
            // SAFETY: valid map value pointer. The state at the segment's
            // start, restored if the segment is given up.
            unsafe {
                (*t).has_pending = 0;
                (*t).start_tracker = (*t).tracker;
                (*t).start_server = (*t).server;
            }
        }
        Ok(Segment {
            app,
            epoch: ctl.epoch,
            c,
            t,
            off,
            len,
        })
    }

    /// The kernel cannot follow this segment: restores the protocol state
    /// to the segment's start and passes the whole segment to the daemon,
    /// which continues exactly there.
    #[inline(always)]
    fn give_up(seg: &Segment, reason: u32) -> u32 {
        // SAFETY: valid map value pointer (see `segment`).
        unsafe {
            (*seg.t).tracker = (*seg.t).start_tracker;
            (*seg.t).server = (*seg.t).start_server;
            (*seg.t).has_pending = 0;
            (*seg.t).resume_active = 0;
        }
        server_pass(seg.app, seg.t, seg.c, seg.epoch, reason, seg.len)
    }

    /// Continues in another program of BACKEND_JUMP at `seg.off`, or, when
    /// the segment is done, redirects it into the application's receive
    /// queue. A segment the tracker cannot follow (a packet that cannot
    /// occur, or more packets than the tail-call budget) is given up.
    #[inline(always)]
    fn continue_or_finish(ctx: &SkBuffContext, seg: &Segment, next: u32) -> u32 {
        // SAFETY: valid map value pointer (see `segment`).
        let lost = unsafe { (*seg.t).tracker.lost_sync() };
        if lost {
            return give_up(seg, SPASS_GIVE_UP);
        }
        if seg.off < seg.len {
            // SAFETY: valid map value pointer, see `segment`.
            unsafe {
                (*seg.t).resume_off = seg.off;
                (*seg.t).resume_active = 1;
                BACKEND_JUMP.tail_call(ctx, next);
            }
            // Only reached when the tail call failed (limit reached).
            return give_up(seg, SPASS_GIVE_UP);
        }
        let mut akey = seg.app;
        let ret = APPS.redirect_skb(ctx, &mut akey, u64::from(BPF_F_INGRESS));
        if ret != i64::from(sk_action::SK_PASS) {
            // The application's socket is gone: the daemon gets the bytes
            // (and ends the session) instead of the kernel dropping them.
            return give_up(seg, SPASS_REDIRECT_FAILED);
        }
        // SAFETY: valid map value pointer.
        unsafe {
            add(
                &raw mut (*seg.c).server_redirected_bytes,
                u64::from(seg.len),
            )
        };
        kstat(KSTAT_SEG_REDIRECTED);
        sk_action::SK_PASS
    }

    /// Backend → application. While a response to a command the kernel
    /// forwarded is unfinished, walks the segment's MySQL packets through
    /// the shared framer and tracker and redirects the segment into the
    /// application socket's receive queue; otherwise passes it to the daemon.
    ///
    /// This program walks rows and column definitions (first byte and length
    /// suffice) and tail-calls `redirector_backend_full` for a packet that
    /// needs the whole state machine, which tail-calls back. Two programs,
    /// so that the verifier sees the walk and the state machine apart.
    #[stream_verdict]
    pub fn redirector_backend(ctx: SkBuffContext) -> u32 {
        let mut seg = match segment(&ctx) {
            Ok(s) => s,
            Err(verdict) => return verdict,
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
        let mut seg = match segment(&ctx) {
            Ok(s) => s,
            Err(verdict) => return verdict,
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
        let mut seg = match segment(&ctx) {
            Ok(s) => s,
            Err(verdict) => return verdict,
        };
        // SAFETY: as in redirector_backend.
        let tr = unsafe { &mut *seg.t };
        let mut next = JUMP_HEAD;
        if seg.off < seg.len {
            let mut win = [0u8; PEEK];
            let n = load_window(&ctx, seg.off, seg.len - seg.off, &mut win);
            if n == 0 {
                return give_up(&seg, SPASS_GIVE_UP);
            }
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
        }
        // Only reached when the tail call failed.
        give_up(seg, SPASS_GIVE_UP)
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
