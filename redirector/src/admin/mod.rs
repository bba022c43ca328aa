//! Operator surfaces on `[admin]`: the REST API and Prometheus `/metrics`
//! ([`http`], on `admin.http_address`); [`control`] holds the operations
//! they share.

pub mod control;
pub mod http;
