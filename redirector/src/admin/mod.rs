//! Operator surfaces on `[admin]`: the REST API and Prometheus `/metrics`
//! ([`http`], on `admin.http_address`), admin SQL over the MySQL protocol
//! ([`sql`], on `admin.sql_address`) and the `redirector ctl` client of the
//! REST API ([`ctl`]); [`control`] holds the operations they share,
//! [`throttle`] the back-off on failed logins.

pub mod control;
pub mod ctl;
pub mod http;
pub mod sql;
pub mod throttle;
