//! redirector: a MySQL/MariaDB session redirector.
//!
//! Layers (each uses only those before it; docs/architecture.md):
//! [`protocol`] ← [`net`] ← [`metrics`] ← [`backend`] ← [`session`] (mod)
//! ← [`datapath`] ← `session::{relay, migrate, change_user, driver}` ←
//! [`app`] ← [`front`] ← [`mover`] ← [`admin`] ← [`daemon`]. Beside them:
//! [`config`], [`policy`], [`accounts`], [`auth`], [`tls`], [`peer_text`]
//! (peer-supplied text made safe for logs), [`request`] (what operators
//! send: admin SQL statements and REST bodies, parsed without the daemon).

#[cfg(feature = "daemon")]
pub mod accounts;
#[cfg(feature = "daemon")]
pub mod admin;
#[cfg(feature = "daemon")]
pub mod app;
#[cfg(feature = "daemon")]
pub mod auth;
#[cfg(feature = "daemon")]
pub mod backend;
pub mod config;
#[cfg(feature = "daemon")]
pub mod daemon;
#[cfg(feature = "daemon")]
pub mod datapath;
#[cfg(feature = "daemon")]
pub mod front;
#[cfg(feature = "daemon")]
pub mod metrics;
#[cfg(feature = "daemon")]
pub mod mover;
#[cfg(feature = "daemon")]
pub mod net;
pub mod peer_text;
pub mod policy;
pub mod protocol;
pub mod request;
#[cfg(feature = "daemon")]
pub mod session;
#[cfg(feature = "daemon")]
pub mod tls;

#[cfg(feature = "daemon")]
pub use daemon::run;
