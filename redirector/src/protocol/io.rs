//! Whole-packet reads and writes over any async stream: the connection
//! phase, the admin SQL listener and the mover's queries on a backend
//! connection all speak through this one type. The stream owns the bytes;
//! [`PacketIo`] owns the read buffer and the framing (as mini-redis's
//! `Connection` does), so a clean end of stream is its own outcome.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{parse_logical, write_packet, ErrPacket, Packet, ProtocolError};
use crate::protocol::constants::capability::CLIENT_PROTOCOL_41;

/// Why a packet could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PacketIoError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// The peer closed the connection (end of stream) before a whole packet.
    #[error("the peer closed the connection")]
    Closed,
}

/// Reads and writes whole packets.
pub struct PacketIo<S> {
    pub io: S,
    pub buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> PacketIo<S> {
    pub fn new(io: S) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(4096),
        }
    }

    /// Reads one logical packet (at most `max` bytes of payload).
    pub async fn read(&mut self, max: usize) -> Result<Packet, PacketIoError> {
        loop {
            if let Some((p, used)) = parse_logical(&self.buf, max)? {
                self.buf.advance(used);
                return Ok(p);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(PacketIoError::Closed);
            }
        }
    }

    /// Reads exactly one physical packet without reading past it (so that
    /// the TLS handshake after an SSLRequest finds its bytes on the socket).
    pub async fn read_exact_packet(&mut self, max: usize) -> Result<Packet, PacketIoError> {
        let mut h = [0u8; 4];
        self.io
            .read_exact(&mut h)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => PacketIoError::Closed,
                _ => PacketIoError::Io(e),
            })?;
        let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        if len > max {
            return Err(ProtocolError::PacketTooLarge { size: len, max }.into());
        }
        let mut payload = vec![0u8; len];
        self.io.read_exact(&mut payload).await?;
        Ok(Packet::new(h[3], payload))
    }

    pub async fn write(&mut self, seq: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut out = BytesMut::with_capacity(payload.len() + 4);
        write_packet(&mut out, seq, payload);
        self.io.write_all(&out).await?;
        self.io.flush().await
    }

    /// Sends an ERR packet and shuts the connection down.
    pub async fn fail(&mut self, seq: u8, err: &ErrPacket) {
        let payload = err.to_payload(CLIENT_PROTOCOL_41);
        let _ = self.write(seq, &payload).await;
        let _ = self.io.shutdown().await;
    }

    /// The stream back, or `None` if bytes past the last packet read are
    /// buffered (the peer said more than it was asked).
    pub fn into_inner_if_drained(self) -> Option<S> {
        self.buf.is_empty().then_some(self.io)
    }
}
