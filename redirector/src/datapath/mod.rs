//! Taking bytes out of the daemon: the kernel *offloads* a quiet session;
//! userspace stays the control plane (slow path, CHANGE_USER, moves,
//! failover). One contract, [`Offload`], sits under the session loop
//! (`crate::session::driver`):
//!
//! ```text
//! loop {
//!     match relay.pump(..).await? {
//!         Step::Quiet => if offload.arm(..) == Armed::Yes {
//!             let parked = offload.park(..).await;   // the kernel carries the session
//!             core.resume(parked)                    // tracker state comes back
//!         },
//!         Step::Move(req)     => migrate::execute(..),
//!         Step::ChangeUser(p) => change_user::run(..),
//!         Step::BackendLost   => migrate::failover(..),
//!         Step::Closed        => break,
//!     }
//! }
//! ```
//!
//! # The offload contract
//!
//! - **arm** hands the session's protocol tracker to the kernel, and only
//!   at a point where userspace holds nothing: every byte the client sent
//!   was read and forwarded, every response byte delivered, the tracker
//!   idle, both streams at a packet boundary. Arming fails (nothing
//!   changes) when the client has sent bytes the daemon has not read yet.
//! - **park** returns the session to userspace with the kernel's tracker
//!   (the same state machine, `redirector_common::mysql`) and the reason.
//!   From the moment park begins the kernel passes every new client byte to
//!   the daemon; a response the kernel was forwarding is finished by the
//!   kernel first.
//! - **No byte lost, duplicated or reordered** across arm and park, in
//!   either direction, pipelined clients included: client bytes go either
//!   to the backend (counted by the kernel) or to the daemon's socket, and
//!   the kernel redirects only while the count of bytes passed to the
//!   daemon equals what the daemon had read when it armed.
//! - **A kernel give-up is a park with a reason**, never a dead session.
//! - Userspace mode is [`Offload::None`]: the relay carries every byte.
//!
//! Paths: [`local_app`] (sock_ops + sk_msg + stream verdicts, for
//! applications on this host), [`splice`] (sk_skb between two sockets, the
//! building block for remote clients; not wired to sessions yet). Both are
//! loaded by the one [`loader`].

pub mod loader;
pub mod local_app;
pub mod splice;
pub mod wake;

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;

use redirector_common::mysql::Tracker;
use tokio::net::TcpStream;

pub use local_app::{Armed, LocalApp, LocalAppSession, Parked, Report};

/// Errors of the kernel data paths.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "eBPF object not built: run `cargo xtask build` (or set {} to the object's path)",
        loader::OBJECT_ENV
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
        program: String,
        #[source]
        source: io::Error,
        log: String,
    },
    #[error("eBPF program {program}: {source}")]
    Program {
        program: String,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF program {program} has a type the daemon does not use ({kind})")]
    UnexpectedProgram { program: String, kind: String },
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
    #[error("{0}: {1}")]
    Socket(String, #[source] io::Error),
    #[error("peer closed the connection (socket cookie {0}) while splicing")]
    PeerClosed(u64),
    #[error("socket cookie {0}: bytes passed to userspace were not delivered within {1:?}")]
    SettleTimeout(u64, std::time::Duration),
    #[error("bpffs: {0}: {1}")]
    Bpffs(String, #[source] io::Error),
    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("{0}")]
    Unsupported(String),
}

pub(crate) fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map { map, source }
}

pub(crate) fn sock_err(what: &str) -> impl FnOnce(io::Error) -> DatapathError + '_ {
    move |e| DatapathError::Socket(what.to_string(), e)
}

/// How a session's bytes may leave the daemon. Decided once, when the
/// client connects (a local application on a plain connection, with the
/// kernel path loaded); dropping it removes every kernel entry of the
/// session.
pub enum Offload {
    /// The userspace relay carries every byte.
    None,
    /// An application on this host: sock_ops + sk_msg + stream verdicts.
    LocalApp(LocalAppSession),
}

impl Offload {
    /// The data path the session is reported as.
    pub fn kind(&self) -> crate::metrics::DatapathKind {
        match self {
            Offload::None => crate::metrics::DatapathKind::Userspace,
            Offload::LocalApp(_) => crate::metrics::DatapathKind::Ebpf,
        }
    }

    /// Why the session left the kernel path, once (for the metrics).
    pub fn take_fallback(&mut self) -> Option<crate::metrics::KernelFallback> {
        match self {
            Offload::LocalApp(s) => s.take_fallback(),
            Offload::None => None,
        }
    }

    /// Whether arming may be tried at the next quiet moment.
    pub fn can_arm(&self) -> bool {
        match self {
            Offload::None => false,
            Offload::LocalApp(s) => !s.disabled(),
        }
    }

    /// The client sent `bytes` through the daemon since the kernel last had
    /// the session. A client blocked on a full socket buffer can make the
    /// kernel's count of passed bytes drift (see
    /// [`local_app::PASSED_BURST_LIMIT`]); past that amount the session
    /// stays in userspace.
    pub fn note_passed(&mut self, bytes: usize) {
        if let Offload::LocalApp(s) = self {
            if bytes >= local_app::PASSED_BURST_LIMIT {
                s.disable(crate::metrics::KernelFallback::Accounting);
            }
        }
    }

    /// Hands the quiet session to the kernel (see the contract above).
    /// `typed`: statements whose COM_STMT_EXECUTE the kernel may carry.
    pub fn arm(
        &mut self,
        client: Option<&TcpStream>,
        backend: &TcpStream,
        tracker: &Tracker,
        typed: BTreeSet<u32>,
    ) -> Armed {
        match (self, client) {
            (Offload::LocalApp(s), Some(client)) => s.arm(client, backend, tracker, typed),
            (Offload::LocalApp(s), None) => {
                s.disable(crate::metrics::KernelFallback::Tls);
                Armed::Disabled
            }
            (Offload::None, _) => Armed::Disabled,
        }
    }

    /// Waits until the session needs the daemon (a command the kernel
    /// punts, the client or backend closing, `move_requested`), then takes
    /// it back from the kernel. `report` is called with the kernel's progress
    /// meanwhile (for metrics and the session listing).
    pub async fn park(
        &mut self,
        client: &TcpStream,
        backend: TcpStream,
        move_requested: Pin<&mut (dyn Future<Output = ()> + Send)>,
        report: &mut (dyn FnMut(Report) + Send),
    ) -> (Parked, io::Result<TcpStream>) {
        match self {
            Offload::LocalApp(s) => s.park(client, backend, move_requested, report).await,
            Offload::None => (Parked::default(), Ok(backend)),
        }
    }
}
