//! Moving bytes between a client socket and its backend socket.
//!
//! - [`userspace`]: the relay task every session has. It runs the protocol
//!   state machine over what it relays, handles the slow path (commands the
//!   daemon must see), moves and failover.
//! - [`kernel`]: the kernel session path. While a session of a local
//!   application is idle, the relay arms it and the eBPF programs carry its
//!   commands and responses, feeding the same state machine in a map; the
//!   relay takes over again when the kernel punts or a move is requested.
//! - [`ebpf`]: loading the eBPF object, and splicing two sockets with an
//!   `sk_skb` verdict (the building block for remote clients).

pub mod ebpf;
pub mod kernel;
pub mod userspace;
