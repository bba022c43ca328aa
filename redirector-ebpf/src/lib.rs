#![no_std]
//! Types shared between the eBPF programs and the daemon.
pub mod maps;
pub mod mysql;
