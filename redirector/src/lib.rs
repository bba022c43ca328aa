//! redirector: a MySQL/MariaDB session redirector.
//!
//! Module map (mirrors the architecture in docs/):
//! - [`config`]: the TOML configuration and its validation.
//! - [`protocol`]: MySQL packets, handshake and authentication.
//! - [`session`]: per-session state and the registry.
//! - [`backend`]: servers, health, logging in as the client's user.
//! - [`policy`]: placement of new sessions.
//! - [`datapath`]: moving bytes between client and backend (eBPF or userspace).
//! - [`proxy`]: the listener tying them together.

#[cfg(feature = "daemon")]
pub mod accounts;
#[cfg(feature = "daemon")]
pub mod admin;
#[cfg(feature = "daemon")]
pub mod backend;
pub mod config;
#[cfg(feature = "daemon")]
pub mod daemon;
#[cfg(feature = "daemon")]
pub mod datapath;
#[cfg(feature = "daemon")]
pub mod metrics;
#[cfg(feature = "daemon")]
pub mod mover;
pub mod policy;
pub mod protocol;
#[cfg(feature = "daemon")]
pub mod proxy;
pub mod session;
#[cfg(feature = "daemon")]
pub mod tls;

#[cfg(feature = "daemon")]
pub use daemon::run;
