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

pub mod accounts;
pub mod backend;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod policy;
pub mod protocol;
pub mod proxy;
pub mod session;
pub mod tls;

pub use daemon::run;
