//! Operator surfaces on `[admin]`: the REST API and Prometheus `/metrics`
//! ([`http`], on `admin.http_address`).

pub mod http;
