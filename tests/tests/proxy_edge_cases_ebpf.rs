//! Edge cases of the proxy: each test checks one behaviour
//! (half-close, capabilities, CHANGE_USER, reloads, TLS …). Every test that talks to the proxy
//! also checks the same thing directly against MariaDB as the reference.
//!
//! Datapath `auto` (the default: the kernel session path, which loads on
//! this machine; key tests check that sessions were carried by it);
//! `proxy_edge_cases.rs` runs the same suite in `userspace`.

const DATAPATH: redirector_tests::Datapath = redirector_tests::Datapath::Auto;
include!("suites/proxy_edge_cases.rs");
