//! Errors of the protocol layer.

/// ERR packet (its codec is in `response`; the type lives here so that
/// [`ProtocolError::Server`] can carry it without a module cycle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrPacket {
    pub code: u16,
    /// SQLSTATE (5 characters); absent from pre-4.1 ERR packets.
    pub sql_state: Option<[u8; 5]>,
    pub message: String,
}

/// Everything that can go wrong while framing or parsing MySQL packets.
///
/// Parsers never panic on peer input: every malformed or truncated packet
/// ends up as one of these.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The packet ended before a field could be read completely.
    #[error("truncated packet: {0} needs more bytes than the packet has")]
    Truncated(&'static str),

    /// A field has a value the protocol does not allow.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),

    /// A text field (user, schema, plugin name) is not valid UTF-8.
    #[error("malformed packet: {0} is not valid UTF-8")]
    InvalidUtf8(&'static str),

    /// The logical payload exceeds the configured maximum.
    #[error("packet of {size} bytes exceeds the maximum of {max} bytes")]
    PacketTooLarge { size: usize, max: usize },

    /// A continuation fragment carried the wrong sequence id.
    #[error("packets out of order: expected sequence id {expected}, got {got}")]
    OutOfOrder { expected: u8, got: u8 },

    /// The server greeting is not protocol version 10.
    #[error("unsupported protocol version {0} (only HandshakeV10 is supported)")]
    UnsupportedProtocolVersion(u8),

    /// A packet of an unexpected kind arrived (first payload byte shown).
    #[error("unexpected packet while waiting for {expected}: first byte 0x{first:02x}")]
    UnexpectedPacket { expected: &'static str, first: u8 },

    /// An empty payload arrived where a typed packet was required.
    #[error("unexpected empty packet while waiting for {0}")]
    EmptyPacket(&'static str),

    /// The peer asked for an authentication plugin we do not implement.
    #[error("authentication plugin '{}' is not supported (only mysql_native_password)", crate::peer_text::escaped(.0))]
    UnsupportedAuthPlugin(String),

    /// The peer lacks a capability we require.
    #[error("peer does not support required capability {0}")]
    MissingCapability(&'static str),

    /// The server answered with an ERR packet.
    #[error("server error {}: {}", .0.code, crate::peer_text::escaped(&.0.message))]
    Server(ErrPacket),

    /// Underlying I/O failure (from the codec's stream).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Shorthand used throughout the protocol module.
pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;
