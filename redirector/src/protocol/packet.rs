//! Packet framing: 3-byte little-endian payload length + 1-byte sequence id.
//!
//! Two views of the same stream:
//! - *physical* packets, exactly as on the wire (header included), for the
//!   relay which forwards bytes untouched: [`frame_len`], [`split_raw_packet`],
//!   [`split_raw_packets`], [`RawPackets`];
//! - *logical* packets, with 0xFFFFFF continuation fragments reassembled into
//!   one payload: [`Packet`] and [`PacketCodec`] (a tokio-util codec).
//!
//! Decoding follows mini-redis: a cheap [`check_logical`] over `&[u8]` decides
//! whether a whole packet is buffered (and rejects oversized ones early, from
//! the headers alone), then the packet is split off the buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::error::{ProtocolError, Result};

/// Bytes in a packet header.
pub const HEADER_LEN: usize = 4;
/// Largest payload of one physical packet; a payload of exactly this size
/// means "continued in the next packet".
pub const MAX_FRAGMENT: usize = 0xFF_FFFF;
/// MariaDB's hard upper bound for `max_allowed_packet` (1 GiB).
pub const MAX_ALLOWED_PACKET_LIMIT: usize = 1 << 30;

/// Header of one physical packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    /// Payload length of this physical packet (0..=0xFFFFFF).
    pub len: usize,
    pub seq: u8,
}

impl PacketHeader {
    /// Parses the first 4 bytes of `buf`; `None` if fewer are buffered.
    pub fn parse(buf: &[u8]) -> Option<Self> {
        let h = buf.get(..HEADER_LEN)?;
        Some(Self {
            len: usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16,
            seq: h[3],
        })
    }

    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let l = self.len as u32;
        [l as u8, (l >> 8) as u8, (l >> 16) as u8, self.seq]
    }
}

/// Total size (header + payload) of the first physical packet in `buf`, if
/// it is completely buffered.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    let h = PacketHeader::parse(buf)?;
    let total = HEADER_LEN + h.len;
    (buf.len() >= total).then_some(total)
}

/// Splits the first complete physical packet (header included) off `buf`
/// without copying; `None` if it is not complete yet.
pub fn split_raw_packet(buf: &mut BytesMut) -> Option<BytesMut> {
    let n = frame_len(buf)?;
    Some(buf.split_to(n))
}

/// Splits every complete physical packet at the front of `buf` off in one
/// piece (zero-copy); a trailing partial packet stays in `buf`. `None` if
/// not even one packet is complete.
pub fn split_raw_packets(buf: &mut BytesMut) -> Option<BytesMut> {
    let n = complete_prefix_len(buf);
    (n > 0).then(|| buf.split_to(n))
}

/// Length of the longest prefix of `buf` made of complete physical packets.
pub fn complete_prefix_len(buf: &[u8]) -> usize {
    let mut it = RawPackets::new(buf);
    for _ in it.by_ref() {}
    it.consumed()
}

/// One physical packet borrowed from a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPacket<'a> {
    pub seq: u8,
    /// Payload without the header.
    pub payload: &'a [u8],
    /// Header + payload exactly as on the wire.
    pub raw: &'a [u8],
}

impl RawPacket<'_> {
    /// True when another fragment of the same logical packet follows.
    pub fn is_continued(&self) -> bool {
        self.payload.len() == MAX_FRAGMENT
    }
}

/// Iterator over the complete physical packets of a byte slice; stops at
/// the first incomplete one ([`RawPackets::remainder`] gives what is left).
#[derive(Debug, Clone)]
pub struct RawPackets<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> RawPackets<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed by the packets yielded so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }

    /// The bytes not yet yielded (a partial packet, or unread packets).
    pub fn remainder(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
}

impl<'a> Iterator for RawPackets<'a> {
    type Item = RawPacket<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.buf[self.pos..];
        let n = frame_len(rest)?;
        self.pos += n;
        Some(RawPacket {
            seq: rest[3],
            payload: &rest[HEADER_LEN..n],
            raw: &rest[..n],
        })
    }
}

/// Convenience: iterate the physical packets of `buf`.
pub fn raw_packets(buf: &[u8]) -> RawPackets<'_> {
    RawPackets::new(buf)
}

/// A logical packet: the reassembled payload and sequence ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Sequence id of the first (or only) fragment.
    pub seq: u8,
    pub payload: Bytes,
}

impl Packet {
    pub fn new(seq: u8, payload: impl Into<Bytes>) -> Self {
        Self {
            seq,
            payload: payload.into(),
        }
    }

    /// Number of physical packets this payload occupies on the wire
    /// (a payload that is an exact multiple of 0xFFFFFF ends with an empty
    /// fragment).
    pub fn fragment_count(&self) -> usize {
        self.payload.len() / MAX_FRAGMENT + 1
    }

    /// Sequence id the next packet of the exchange must carry.
    pub fn next_seq(&self) -> u8 {
        self.seq.wrapping_add(self.fragment_count() as u8)
    }
}

/// Result of [`check_logical`]: a whole logical packet is buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogicalFrame {
    /// Bytes the logical packet occupies in the buffer (all headers included).
    pub wire_len: usize,
    /// Reassembled payload length.
    pub payload_len: usize,
    /// Physical packets it is made of.
    pub fragments: usize,
    pub first_seq: u8,
}

/// Checks whether `buf` starts with a complete logical packet.
///
/// Returns `Ok(None)` when more bytes are needed, and an error as soon as the
/// headers seen so far add up to more than `max_payload` or a continuation
/// fragment's sequence id does not follow the previous one.
pub fn check_logical(buf: &[u8], max_payload: usize) -> Result<Option<LogicalFrame>> {
    let mut pos = 0usize;
    let mut payload_len = 0usize;
    let mut fragments = 0usize;
    let mut first_seq = 0u8;
    loop {
        let Some(h) = PacketHeader::parse(&buf[pos..]) else {
            return Ok(None);
        };
        if fragments == 0 {
            first_seq = h.seq;
        } else {
            let expected = first_seq.wrapping_add(fragments as u8);
            if h.seq != expected {
                return Err(ProtocolError::OutOfOrder {
                    expected,
                    got: h.seq,
                });
            }
        }
        payload_len += h.len;
        if payload_len > max_payload {
            return Err(ProtocolError::PacketTooLarge {
                size: payload_len,
                max: max_payload,
            });
        }
        fragments += 1;
        let end = pos + HEADER_LEN + h.len;
        if buf.len() < end {
            return Ok(None);
        }
        pos = end;
        if h.len < MAX_FRAGMENT {
            return Ok(Some(LogicalFrame {
                wire_len: pos,
                payload_len,
                fragments,
                first_seq,
            }));
        }
    }
}

/// Parses the first logical packet of `buf` (a pure function for fuzzing and
/// tests): returns the packet and the bytes it occupied, or `Ok(None)`.
pub fn parse_logical(buf: &[u8], max_payload: usize) -> Result<Option<(Packet, usize)>> {
    let Some(frame) = check_logical(buf, max_payload)? else {
        return Ok(None);
    };
    let mut payload = Vec::with_capacity(frame.payload_len);
    for p in RawPackets::new(&buf[..frame.wire_len]) {
        payload.extend_from_slice(p.payload);
    }
    Ok(Some((
        Packet::new(frame.first_seq, payload),
        frame.wire_len,
    )))
}

/// Appends `payload` as one logical packet starting at sequence id `seq`,
/// splitting it into 0xFFFFFF fragments. Returns the next sequence id.
pub fn write_packet(dst: &mut BytesMut, seq: u8, payload: &[u8]) -> u8 {
    dst.reserve(payload.len() + HEADER_LEN * (payload.len() / MAX_FRAGMENT + 1));
    let mut seq = seq;
    let mut chunks = payload.chunks(MAX_FRAGMENT);
    loop {
        let chunk = chunks.next().unwrap_or(&[]);
        dst.put_slice(
            &PacketHeader {
                len: chunk.len(),
                seq,
            }
            .to_bytes(),
        );
        dst.put_slice(chunk);
        seq = seq.wrapping_add(1);
        // A full-size fragment needs a follower, possibly empty.
        if chunk.len() < MAX_FRAGMENT {
            return seq;
        }
    }
}

/// Codec for MySQL packets.
///
/// With reassembly on (the default) `decode` yields logical packets whose
/// payload may span many fragments; with it off each physical packet comes
/// out on its own (`max_payload` then bounds a single fragment). Encoding
/// always splits payloads longer than 0xFFFFFF into fragments.
#[derive(Debug, Clone)]
pub struct PacketCodec {
    max_payload: usize,
    reassemble: bool,
}

impl PacketCodec {
    /// Reassembling codec refusing logical payloads above `max_payload`.
    pub fn new(max_payload: usize) -> Self {
        Self {
            max_payload,
            reassemble: true,
        }
    }

    /// Codec that yields each physical packet separately.
    pub fn physical(max_payload: usize) -> Self {
        Self {
            max_payload,
            reassemble: false,
        }
    }

    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    pub fn set_max_payload(&mut self, max_payload: usize) {
        self.max_payload = max_payload;
    }
}

impl Default for PacketCodec {
    /// 16 MiB, MariaDB's default `max_allowed_packet`.
    fn default() -> Self {
        Self::new(16 << 20)
    }
}

impl Decoder for PacketCodec {
    type Item = Packet;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>> {
        if !self.reassemble {
            let Some(h) = PacketHeader::parse(src) else {
                return Ok(None);
            };
            if h.len > self.max_payload {
                return Err(ProtocolError::PacketTooLarge {
                    size: h.len,
                    max: self.max_payload,
                });
            }
            let Some(mut frame) = split_raw_packet(src) else {
                src.reserve(HEADER_LEN + h.len - src.len());
                return Ok(None);
            };
            frame.advance(HEADER_LEN);
            return Ok(Some(Packet::new(h.seq, frame.freeze())));
        }
        let Some(frame) = check_logical(src, self.max_payload)? else {
            // Reserve for the fragment being received so reads don't regrow
            // the buffer byte by byte.
            if let Some(h) = PacketHeader::parse(src) {
                if h.len < MAX_FRAGMENT {
                    src.reserve((HEADER_LEN + h.len).saturating_sub(src.len()));
                }
            }
            return Ok(None);
        };
        if frame.fragments == 1 {
            // Common case: no copy, just split the buffer.
            let mut whole = src.split_to(frame.wire_len);
            whole.advance(HEADER_LEN);
            return Ok(Some(Packet::new(frame.first_seq, whole.freeze())));
        }
        let mut payload = BytesMut::with_capacity(frame.payload_len);
        for p in RawPackets::new(&src[..frame.wire_len]) {
            payload.extend_from_slice(p.payload);
        }
        src.advance(frame.wire_len);
        Ok(Some(Packet::new(frame.first_seq, payload.freeze())))
    }
}

impl Encoder<Packet> for PacketCodec {
    type Error = ProtocolError;

    fn encode(&mut self, item: Packet, dst: &mut BytesMut) -> Result<()> {
        if item.payload.len() > self.max_payload {
            return Err(ProtocolError::PacketTooLarge {
                size: item.payload.len(),
                max: self.max_payload,
            });
        }
        write_packet(dst, item.seq, &item.payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(seq: u8, payload: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        write_packet(&mut b, seq, payload);
        b
    }

    #[test]
    fn single_packet_round_trip_and_partial_input() {
        let bytes = wire(3, b"\x03SELECT 1");
        assert_eq!(&bytes[..4], &[9, 0, 0, 3]);
        let mut codec = PacketCodec::default();
        for cut in 0..bytes.len() {
            let mut partial = BytesMut::from(&bytes[..cut]);
            assert_eq!(codec.decode(&mut partial).unwrap(), None, "cut {cut}");
            assert_eq!(partial.len(), cut, "nothing consumed on partial input");
        }
        let mut buf = bytes.clone();
        buf.extend_from_slice(&[1, 0]); // start of the next packet
        let p = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(p.seq, 3);
        assert_eq!(&p.payload[..], b"\x03SELECT 1");
        assert_eq!(p.next_seq(), 4);
        assert_eq!(&buf[..], &[1, 0]);
    }

    #[test]
    fn empty_payload() {
        let mut buf = wire(0, b"");
        assert_eq!(&buf[..], &[0, 0, 0, 0]);
        let p = PacketCodec::default().decode(&mut buf).unwrap().unwrap();
        assert!(p.payload.is_empty());
        assert!(buf.is_empty());
    }

    #[test]
    fn large_payload_splits_and_reassembles() {
        let payload: Vec<u8> = (0..MAX_FRAGMENT + 10).map(|i| i as u8).collect();
        let mut codec = PacketCodec::new(32 << 20);
        let mut buf = BytesMut::new();
        codec
            .encode(Packet::new(7, payload.clone()), &mut buf)
            .unwrap();
        assert_eq!(buf.len(), payload.len() + 2 * HEADER_LEN);
        let frags: Vec<_> = raw_packets(&buf)
            .map(|p| (p.seq, p.payload.len()))
            .collect();
        assert_eq!(frags, vec![(7, MAX_FRAGMENT), (8, 10)]);
        // Incomplete second fragment: nothing decoded yet.
        let mut partial = BytesMut::from(&buf[..buf.len() - 1]);
        assert_eq!(codec.decode(&mut partial).unwrap(), None);
        let p = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(p.seq, 7);
        assert_eq!(p.next_seq(), 9);
        assert_eq!(p.payload.len(), payload.len());
        assert!(p.payload[..] == payload[..]);
        assert!(buf.is_empty());
    }

    #[test]
    fn exact_multiple_of_fragment_size_ends_with_empty_packet() {
        let payload = vec![0xAB; MAX_FRAGMENT];
        let buf = wire(0, &payload);
        let frags: Vec<_> = raw_packets(&buf)
            .map(|p| (p.seq, p.payload.len()))
            .collect();
        assert_eq!(frags, vec![(0, MAX_FRAGMENT), (1, 0)]);
        let (p, used) = parse_logical(&buf, MAX_FRAGMENT).unwrap().unwrap();
        assert_eq!(used, buf.len());
        assert_eq!(p.payload.len(), MAX_FRAGMENT);
        assert_eq!(p.next_seq(), 2);
        // Without the trailing empty packet the logical packet is incomplete.
        assert_eq!(
            check_logical(&buf[..buf.len() - 4], usize::MAX).unwrap(),
            None
        );
    }

    #[test]
    fn oversized_is_rejected_from_header_alone() {
        let mut codec = PacketCodec::new(1024);
        // Only the header of a 2000-byte packet has arrived.
        let mut buf = BytesMut::from(&[0xD0, 0x07, 0, 0][..]);
        match codec.decode(&mut buf) {
            Err(ProtocolError::PacketTooLarge {
                size: 2000,
                max: 1024,
            }) => {}
            other => panic!("expected PacketTooLarge, got {other:?}"),
        }
        // Same for the physical codec.
        let mut buf = BytesMut::from(&[0xD0, 0x07, 0, 0][..]);
        assert!(matches!(
            PacketCodec::physical(1024).decode(&mut buf),
            Err(ProtocolError::PacketTooLarge { .. })
        ));
        // Encoding refuses too.
        let mut out = BytesMut::new();
        assert!(matches!(
            codec.encode(Packet::new(0, vec![0u8; 1025]), &mut out),
            Err(ProtocolError::PacketTooLarge {
                size: 1025,
                max: 1024
            })
        ));
        assert!(out.is_empty());
        // Logical size accumulates over fragments: a first full fragment
        // already exceeds a max below 16 MiB.
        let hdr = [0xFF, 0xFF, 0xFF, 0];
        assert!(matches!(
            check_logical(&hdr, 1 << 20),
            Err(ProtocolError::PacketTooLarge { .. })
        ));
    }

    #[test]
    fn out_of_order_fragment_is_rejected() {
        let mut buf = BytesMut::new();
        buf.put_slice(&[0xFF, 0xFF, 0xFF, 5]);
        buf.put_slice(&vec![0u8; MAX_FRAGMENT]);
        buf.put_slice(&[0, 0, 0, 9]);
        assert!(matches!(
            check_logical(&buf, usize::MAX),
            Err(ProtocolError::OutOfOrder {
                expected: 6,
                got: 9
            })
        ));
    }

    #[test]
    fn physical_codec_does_not_reassemble() {
        let payload = vec![1u8; MAX_FRAGMENT + 1];
        let mut buf = wire(0, &payload);
        let mut codec = PacketCodec::physical(MAX_FRAGMENT);
        let a = codec.decode(&mut buf).unwrap().unwrap();
        let b = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!((a.seq, a.payload.len()), (0, MAX_FRAGMENT));
        assert_eq!((b.seq, b.payload.len()), (1, 1));
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
    }

    #[test]
    fn raw_split_helpers_keep_partial_tail() {
        let mut buf = wire(0, b"abc");
        buf.extend_from_slice(&wire(1, b"de"));
        buf.extend_from_slice(&[5, 0, 0, 2, b'x']); // partial third packet
        let all = buf.clone();
        assert_eq!(complete_prefix_len(&all), 13);
        let mut it = raw_packets(&all);
        let p1 = it.next().unwrap();
        assert_eq!((p1.seq, p1.payload, p1.raw), (0, &b"abc"[..], &all[..7]));
        let p2 = it.next().unwrap();
        assert_eq!((p2.seq, p2.payload), (1, &b"de"[..]));
        assert!(!p2.is_continued());
        assert!(it.next().is_none());
        assert_eq!(it.remainder(), &[5, 0, 0, 2, b'x']);

        let mut b2 = buf.clone();
        let one = split_raw_packet(&mut b2).unwrap();
        assert_eq!(&one[..], &all[..7]);
        let both = split_raw_packets(&mut buf).unwrap();
        assert_eq!(&both[..], &all[..13]);
        assert_eq!(&buf[..], &[5, 0, 0, 2, b'x']);
        assert!(split_raw_packets(&mut buf).is_none());
        assert!(split_raw_packet(&mut buf).is_none());
    }

    #[test]
    fn sequence_wraps() {
        let payload = vec![0u8; MAX_FRAGMENT + 1];
        let buf = wire(255, &payload);
        let seqs: Vec<_> = raw_packets(&buf).map(|p| p.seq).collect();
        assert_eq!(seqs, vec![255, 0]);
        let (p, _) = parse_logical(&buf, usize::MAX).unwrap().unwrap();
        assert_eq!(p.next_seq(), 1);
    }
}
