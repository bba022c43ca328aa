//! The splice path: splicing two TCP sockets with a sockhash and an
//! `sk_skb/stream_verdict` program (`redirector-ebpf`, see
//! `redirector_common::maps` for the map layout).
//!
//! # Splicing without losing or reordering bytes
//!
//! A spliced pair has two *sides*, one per socket, each with a control word
//! (`SIDES`, written by us) and counters (`COUNTERS`, written by the kernel).
//! [`SplicePath::splice`]:
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

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aya::maps::{HashMap, MapData, SockHash};
use aya::programs::SkSkb;
use redirector_common::maps::{
    SessionSide, SideCounters, COUNTERS, MODE_FORWARD, MODE_HOLD, SIDES, SOCKS, VERDICT_PROGRAM,
};
use tracing::{debug, info};

use super::loader::Programs;
use super::{map_err, sock_err, DatapathError};
use crate::net::{
    copied_offset, poll_fd, recv_nonblocking, send_all, socket_cookie, tcp_bytes_received, Recv,
};

/// How long a HOLD→FORWARD switch may keep retrying before giving up.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Large enough to take any pre-insert skb in one read (see `drain`).
const DRAIN_BUF: usize = 256 * 1024;
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
/// [`SplicePath::unsplice`] before closing them.
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

/// What [`SplicePath::unsplice`] hands back.
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

/// The splice path: its maps, and the programs (the verdict attached to
/// `SOCKS`) that it owns.
pub struct SplicePath {
    maps: Mutex<Maps>,
    // Owns the verdict and its attachment to SOCKS (detached on drop).
    _programs: Programs,
}

impl std::fmt::Debug for SplicePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplicePath").finish_non_exhaustive()
    }
}

impl SplicePath {
    /// Loads the programs ([`Programs::load`]) and attaches the splice
    /// verdict to `SOCKS`.
    pub fn load(object: Option<&Path>) -> Result<Self, DatapathError> {
        let mut programs = Programs::load(object)?;
        let socks: SockHash<MapData, u64> = programs.take_map(SOCKS, SockHash::try_from)?;
        let sides: HashMap<MapData, u64, SessionSide> =
            programs.take_map(SIDES, HashMap::try_from)?;
        let counters: HashMap<MapData, u64, SideCounters> =
            programs.take_map(COUNTERS, HashMap::try_from)?;
        let verdict: &mut SkSkb = programs.program(VERDICT_PROGRAM)?;
        // Attach before any insert: sockets inherit the verdict when
        // inserted, and a sockhash socket without a verdict misses wakeups.
        verdict
            .attach(socks.fd())
            .map_err(|source| DatapathError::Program {
                program: VERDICT_PROGRAM.to_string(),
                source,
            })?;
        info!("eBPF splice path loaded (sk_skb stream_verdict on sockhash)");
        Ok(Self {
            maps: Mutex::new(Maps {
                socks,
                sides,
                counters,
            }),
            _programs: programs,
        })
    }

    fn maps(&self) -> MutexGuard<'_, Maps> {
        // A panic while holding the lock leaves the maps themselves intact.
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Kernel counters of one side, if it is spliced.
    pub fn counters(&self, cookie: u64) -> Result<Option<SideCounters>, DatapathError> {
        match self.maps().counters.get(&cookie, 0) {
            Ok(c) => Ok(Some(c)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(COUNTERS)(e)),
        }
    }

    /// Every key present in the maps.
    pub fn map_keys(&self) -> Result<MapKeys, DatapathError> {
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
    pub fn stats(&self, h: &SpliceHandle) -> Result<SpliceStats, DatapathError> {
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
    pub fn splice(&self, a: &impl AsFd, b: &impl AsFd) -> Result<SpliceHandle, DatapathError> {
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
                    return Err(DatapathError::AlreadySpliced(c));
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
    ) -> Result<(), DatapathError> {
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
    ) -> Result<u64, DatapathError> {
        let mut total = 0u64;
        loop {
            match recv_nonblocking(src, buf).map_err(sock_err("reading a spliced socket"))? {
                Recv::Data(n) => {
                    send_all(dst, &buf[..n]).map_err(sock_err("writing a spliced socket"))?;
                    side.user_read += n as u64;
                    total += n as u64;
                }
                Recv::WouldBlock => return Ok(total),
                Recv::Eof => return Err(DatapathError::PeerClosed(side.cookie)),
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
    ) -> Result<(), DatapathError> {
        let mut buf = vec![0u8; DRAIN_BUF];
        // The deadline only runs while nothing moves: a sender that keeps
        // streaming delays the switch (we forward meanwhile) but never fails
        // it, since rolling back would drop bytes passed but not yet read.
        let mut deadline = Instant::now() + SETTLE_TIMEOUT;
        let cookie = side.cookie;
        let counters = |s: &Self| -> Result<SideCounters, DatapathError> {
            s.counters(cookie)?.ok_or(DatapathError::Map {
                map: COUNTERS,
                source: aya::maps::MapError::KeyNotFound,
            })
        };
        loop {
            if Instant::now() > deadline {
                return Err(DatapathError::SettleTimeout(side.cookie, SETTLE_TIMEOUT));
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
    ) -> Result<Unspliced, DatapathError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_path_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<SplicePath>();
    }
}
