//! The userspace proxy against real MariaDB servers with real clients:
//! the mariadb CLI, mysql_async and sysbench.
//!
//! Datapath `userspace`; `proxy_ebpf.rs` runs the same suite in `ebpf`.

const DATAPATH: &str = "userspace";
include!("suites/proxy.rs");
