//! Primitive field readers and writers: fixed-width little-endian integers,
//! length-encoded integers and strings, NUL-terminated strings.
//!
//! [`Reader`] works on a borrowed `&[u8]` so parsers stay pure functions that
//! a fuzz target can call; every read is bounds-checked and returns
//! [`ProtocolError::Truncated`] instead of panicking.

use super::error::{ProtocolError, Result};

/// A bounds-checked cursor over one packet payload.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Offset of the next byte to read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The next byte without consuming it.
    pub fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(ProtocolError::Truncated(what))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, what)?);
        Ok(out)
    }

    pub fn skip(&mut self, n: usize, what: &'static str) -> Result<()> {
        self.bytes(n, what).map(|_| ())
    }

    /// Everything left (string<EOF>).
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub fn u24(&mut self, what: &'static str) -> Result<u32> {
        let b: [u8; 3] = self.array(what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Length-encoded integer. 0xFB (NULL) and 0xFF (ERR marker) are not
    /// integers and are rejected; use [`Reader::lenenc_int_or_null`] where
    /// NULL is allowed.
    pub fn lenenc_int(&mut self, what: &'static str) -> Result<u64> {
        self.lenenc_int_or_null(what)?
            .ok_or(ProtocolError::Malformed(
                "NULL (0xfb) where a length-encoded integer was expected",
            ))
    }

    /// Length-encoded integer where 0xFB means NULL (`None`).
    pub fn lenenc_int_or_null(&mut self, what: &'static str) -> Result<Option<u64>> {
        match self.u8(what)? {
            n @ 0..=0xFA => Ok(Some(u64::from(n))),
            0xFB => Ok(None),
            0xFC => Ok(Some(u64::from(self.u16(what)?))),
            0xFD => Ok(Some(u64::from(self.u24(what)?))),
            0xFE => Ok(Some(self.u64(what)?)),
            0xFF => Err(ProtocolError::Malformed(
                "0xff is not a length-encoded integer",
            )),
        }
    }

    /// Length-encoded string (bytes).
    pub fn lenenc_bytes(&mut self, what: &'static str) -> Result<&'a [u8]> {
        let len = self.lenenc_int(what)?;
        let len = usize::try_from(len).map_err(|_| ProtocolError::Truncated(what))?;
        self.bytes(len, what)
    }

    /// NUL-terminated string; the terminator is consumed but not returned.
    pub fn nul_bytes(&mut self, what: &'static str) -> Result<&'a [u8]> {
        let rest = &self.buf[self.pos..];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(ProtocolError::Truncated(what))?;
        self.pos += nul + 1;
        Ok(&rest[..nul])
    }

    /// NUL-terminated string that may instead run to the end of the packet
    /// (clients differ on whether the last field carries its terminator).
    pub fn nul_or_eof_bytes(&mut self) -> &'a [u8] {
        let rest = &self.buf[self.pos..];
        match rest.iter().position(|&b| b == 0) {
            Some(nul) => {
                self.pos += nul + 1;
                &rest[..nul]
            }
            None => {
                self.pos = self.buf.len();
                rest
            }
        }
    }
}

/// Strict UTF-8 conversion for identifiers (user, schema, plugin).
pub fn utf8(bytes: &[u8], what: &'static str) -> Result<String> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| ProtocolError::InvalidUtf8(what))
}

/// Size in bytes of `n` as a length-encoded integer.
pub fn lenenc_int_len(n: u64) -> usize {
    match n {
        0..=0xFA => 1,
        0xFB..=0xFFFF => 3,
        0x1_0000..=0xFF_FFFF => 4,
        _ => 9,
    }
}

/// Append-only writer helpers for payload building (works on `Vec<u8>`
/// and `BytesMut` alike).
pub trait WriteExt {
    fn put_bytes_raw(&mut self, b: &[u8]);

    fn put_u8_le(&mut self, v: u8) {
        self.put_bytes_raw(&[v]);
    }
    fn put_u16_le(&mut self, v: u16) {
        self.put_bytes_raw(&v.to_le_bytes());
    }
    fn put_u24_le(&mut self, v: u32) {
        self.put_bytes_raw(&v.to_le_bytes()[..3]);
    }
    fn put_u32_le(&mut self, v: u32) {
        self.put_bytes_raw(&v.to_le_bytes());
    }
    fn put_u64_le(&mut self, v: u64) {
        self.put_bytes_raw(&v.to_le_bytes());
    }
    fn put_zeros(&mut self, n: usize) {
        for _ in 0..n {
            self.put_u8_le(0);
        }
    }
    fn put_lenenc_int(&mut self, n: u64) {
        match n {
            0..=0xFA => self.put_u8_le(n as u8),
            0xFB..=0xFFFF => {
                self.put_u8_le(0xFC);
                self.put_u16_le(n as u16);
            }
            0x1_0000..=0xFF_FFFF => {
                self.put_u8_le(0xFD);
                self.put_u24_le(n as u32);
            }
            _ => {
                self.put_u8_le(0xFE);
                self.put_u64_le(n);
            }
        }
    }
    fn put_lenenc_bytes(&mut self, b: &[u8]) {
        self.put_lenenc_int(b.len() as u64);
        self.put_bytes_raw(b);
    }
    /// Writes `b` and a NUL terminator. The caller guarantees `b` has no NUL.
    fn put_nul_bytes(&mut self, b: &[u8]) {
        self.put_bytes_raw(b);
        self.put_u8_le(0);
    }
}

impl WriteExt for Vec<u8> {
    fn put_bytes_raw(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

impl WriteExt for bytes::BytesMut {
    fn put_bytes_raw(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_int_round_trip_at_boundaries() {
        for n in [
            0u64,
            1,
            0xFA,
            0xFB,
            0xFC,
            0xFFFF,
            0x1_0000,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut v = Vec::new();
            v.put_lenenc_int(n);
            assert_eq!(v.len(), lenenc_int_len(n), "encoded length of {n}");
            let mut r = Reader::new(&v);
            assert_eq!(r.lenenc_int("n").unwrap(), n);
            assert!(r.is_empty());
            // Every strict prefix is truncated, never a panic.
            for cut in 0..v.len() {
                assert!(matches!(
                    Reader::new(&v[..cut]).lenenc_int("n"),
                    Err(ProtocolError::Truncated(_))
                ));
            }
        }
    }

    #[test]
    fn lenenc_null_and_ff() {
        assert_eq!(Reader::new(&[0xFB]).lenenc_int_or_null("n").unwrap(), None);
        assert!(matches!(
            Reader::new(&[0xFB]).lenenc_int("n"),
            Err(ProtocolError::Malformed(_))
        ));
        assert!(matches!(
            Reader::new(&[0xFF]).lenenc_int_or_null("n"),
            Err(ProtocolError::Malformed(_))
        ));
    }

    #[test]
    fn lenenc_string_length_beyond_packet_is_truncated() {
        // Claims 2^64-1 bytes: must not overflow or allocate.
        let mut v = vec![0xFE];
        v.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            Reader::new(&v).lenenc_bytes("s"),
            Err(ProtocolError::Truncated("s"))
        ));
        let mut v = Vec::new();
        v.put_lenenc_bytes(b"hello");
        assert_eq!(Reader::new(&v).lenenc_bytes("s").unwrap(), b"hello");
        assert!(Reader::new(&v[..5]).lenenc_bytes("s").is_err());
    }

    #[test]
    fn nul_strings() {
        let mut r = Reader::new(b"abc\0def");
        assert_eq!(r.nul_bytes("a").unwrap(), b"abc");
        assert!(matches!(
            r.clone().nul_bytes("d"),
            Err(ProtocolError::Truncated("d"))
        ));
        assert_eq!(r.nul_or_eof_bytes(), b"def");
        assert!(r.is_empty());
        assert_eq!(r.nul_or_eof_bytes(), b"");
    }

    #[test]
    fn fixed_ints() {
        let mut r = Reader::new(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(r.u16("a").unwrap(), 0x0201);
        assert_eq!(r.u24("b").unwrap(), 0x050403);
        assert_eq!(r.u32("c").unwrap(), 0x0908_0706);
        assert!(r.u16("d").is_err());
        assert_eq!(r.u8("e").unwrap(), 10);
        assert!(r.u8("f").is_err());
    }
}
