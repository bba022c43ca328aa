//! Waking a parked session without watching its backend socket.
//!
//! While the kernel carries a session, every segment the backend verdict
//! redirects still runs the socket's `data_ready`, which would wake the
//! daemon's epoll once per response if the backend socket were registered
//! there. So an armed session's backend socket is taken out of tokio's
//! reactor, and the session waits for what actually needs it:
//!
//! - the server spoke unasked or the kernel gave a response up: the verdict
//!   writes the session's key to the `WAKES` ring buffer (once per arming);
//! - the server closed or reset the connection: the socket is in a private
//!   epoll set for `EPOLLRDHUP` only (hang-ups and errors are always
//!   reported), whose wake-ups for plain input are filtered out in the
//!   kernel before they reach any thread.
//!
//! One task reads both and notifies the session by key.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

use super::{sock_err, DatapathError};

/// Epoll events read per `epoll_wait` by the dispatcher.
const EPOLL_BATCH: usize = 64;

/// The wake-up sources of parked sessions, and who waits on them.
pub struct Wakes {
    ring: Mutex<Option<RingBuf<MapData>>>,
    epoll: OwnedFd,
    waiting: Mutex<HashMap<u64, Arc<Notify>>>,
    started: AtomicBool,
}

impl std::fmt::Debug for Wakes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakes").finish_non_exhaustive()
    }
}

impl Wakes {
    pub fn new(ring: RingBuf<MapData>) -> Result<Self, DatapathError> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(sock_err("epoll_create1")(io::Error::last_os_error()));
        }
        Ok(Self {
            ring: Mutex::new(Some(ring)),
            // SAFETY: a new descriptor that nothing else owns.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            waiting: Mutex::new(HashMap::new()),
            started: AtomicBool::new(false),
        })
    }

    /// Starts watching the backend socket of the session `key` for a
    /// hang-up, and routes its ring wake-ups to the returned [`Watch`].
    /// The socket must stay open while the watch lives.
    pub fn watch(self: &Arc<Self>, key: u64, backend: BorrowedFd<'_>) -> io::Result<Watch> {
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(self.clone().dispatch());
        }
        let notify = Arc::new(Notify::new());
        self.waiting().insert(key, notify.clone());
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32,
            u64: key,
        };
        let fd = backend.as_raw_fd();
        // SAFETY: valid descriptors and event.
        let rc =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            self.waiting().remove(&key);
            return Err(e);
        }
        Ok(Watch {
            wakes: self.clone(),
            key,
            fd,
            notify,
        })
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Notify>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(&self, key: u64) {
        if let Some(n) = self.waiting().get(&key) {
            n.notify_one();
        }
    }

    /// Reads the ring and the epoll set for as long as the daemon runs.
    async fn dispatch(self: Arc<Self>) {
        if let Err(e) = self.clone().dispatch_inner().await {
            // Sessions still find passes and hang-ups on their periodic
            // check, only later.
            tracing::error!(error = %e, "kernel path: wake-up dispatcher stopped");
        }
    }

    async fn dispatch_inner(self: Arc<Self>) -> io::Result<()> {
        let ring = self
            .ring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| io::Error::other("wake ring already taken"))?;
        // SAFETY: the AsyncFds own what they register (the ring map and a
        // duplicate of the epoll descriptor): neither closes while registered.
        let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }?;
        let epoll = unsafe {
            AsyncFd::register_with_interest(self.epoll.try_clone()?, Interest::READABLE)
        }?;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EPOLL_BATCH];
        loop {
            tokio::select! {
                g = ring.readable_mut() => {
                    let mut g = g?;
                    while let Some(item) = g.get_inner_mut().next() {
                        let key = item
                            .get(..8)
                            .and_then(|b| <[u8; 8]>::try_from(b).ok())
                            .map(u64::from_ne_bytes);
                        drop(item);
                        if let Some(key) = key {
                            self.wake(key);
                        }
                    }
                    g.clear_ready();
                }
                g = epoll.readable() => {
                    let mut g = g?;
                    loop {
                        // SAFETY: the buffer holds EPOLL_BATCH events; zero timeout.
                        let n = unsafe {
                            libc::epoll_wait(
                                self.epoll.as_raw_fd(),
                                events.as_mut_ptr(),
                                EPOLL_BATCH as libc::c_int,
                                0,
                            )
                        };
                        if n <= 0 {
                            break;
                        }
                        for ev in events.iter().take(n as usize) {
                            self.wake(ev.u64);
                        }
                    }
                    g.clear_ready();
                }
            }
        }
    }
}

/// A parked session's registration; dropping it stops the watch (drop it
/// before the socket closes).
pub struct Watch {
    wakes: Arc<Wakes>,
    key: u64,
    fd: RawFd,
    notify: Arc<Notify>,
}

impl Watch {
    /// Returns at the next wake-up (one stored if it came earlier).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: valid descriptors; the socket is still open (see above).
        unsafe {
            libc::epoll_ctl(
                self.wakes.epoll.as_fd().as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                self.fd,
                &mut ev,
            )
        };
        let mut w = self.wakes.waiting();
        if w.get(&self.key)
            .is_some_and(|n| Arc::ptr_eq(n, &self.notify))
        {
            w.remove(&self.key);
        }
    }
}
