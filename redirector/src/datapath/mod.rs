//! Moving bytes between a client socket and its backend socket.
//!
//! - [`ebpf`]: the kernel path. Both sockets go into a sockhash; an
//!   `sk_skb/stream_verdict` program redirects each side's bytes to the other
//!   socket's egress, so payload never crosses into userspace.

pub mod ebpf;
pub mod userspace;
