#![no_std]
//! Code shared by the eBPF programs (`redirector-ebpf`) and the daemon
//! (`redirector`), in the aya template's `-common` convention: one MySQL
//! protocol state machine for both data paths, and the map keys and values
//! both sides read and write.
pub mod maps;
pub mod mysql;
