//! Framing one direction's byte stream into logical packets.

use super::*;

// ---------------------------------------------------------------------------
// Framing.

/// One logical packet as seen by the framer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketInfo {
    /// Payload length of the first fragment (0..=0xFFFFFF). `MAX_PACKET`
    /// means the logical packet continues in further fragments (and so is at
    /// least 16 MiB long).
    pub len: u32,
    /// Sequence id of the first fragment.
    pub seq: u8,
    /// Valid bytes in `prefix`: `min(len, PREFIX_LEN)`.
    pub prefix_len: u8,
    pub _pad: [u8; 2],
    /// The first payload bytes.
    pub prefix: [u8; PREFIX_LEN],
}

impl Default for PacketInfo {
    fn default() -> Self {
        Self::EMPTY
    }
}

impl PacketInfo {
    pub const EMPTY: PacketInfo = PacketInfo {
        len: 0,
        seq: 0,
        prefix_len: 0,
        _pad: [0; 2],
        prefix: [0; PREFIX_LEN],
    };

    /// For callers holding a whole (possibly reassembled, possibly > 16 MiB)
    /// payload.
    pub fn from_payload(seq: u8, payload: &[u8]) -> Self {
        let mut p = Self::EMPTY;
        p.seq = seq;
        p.len = if payload.len() >= MAX_PACKET as usize {
            MAX_PACKET
        } else {
            payload.len() as u32
        };
        let mut i = 0usize;
        while i < PREFIX_LEN {
            match (payload.get(i), p.prefix.get_mut(i)) {
                (Some(&b), Some(slot)) => *slot = b,
                _ => break,
            }
            i += 1;
        }
        p.prefix_len = i as u8;
        p
    }

    /// The valid prefix bytes.
    pub fn prefix(&self) -> &[u8] {
        self.prefix
            .get(..self.prefix_len as usize)
            .unwrap_or(&self.prefix)
    }

    /// First payload byte, `None` for an empty packet.
    pub fn first(&self) -> Option<u8> {
        byte_at(self.prefix(), 0)
    }

    /// True when the logical packet continues in further fragments.
    pub fn continues(&self) -> bool {
        self.len == MAX_PACKET
    }
}

/// Splits one direction of a connection into logical packets. See the module docs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framer {
    /// Payload length of the current fragment.
    frag_len: u32,
    /// Payload bytes of the current fragment already consumed.
    frag_pos: u32,
    /// Logical packets reported so far.
    packets: u32,
    hdr: [u8; 4],
    /// Header bytes collected for the current fragment (4 = in payload).
    hdr_len: u8,
    /// The current fragment continues a logical packet (no event for it).
    cont: u8,
    /// The next fragment will continue the current logical packet.
    next_cont: u8,
    /// The current logical packet has been reported.
    emitted: u8,
    prefix: [u8; PREFIX_LEN],
}

impl Default for Framer {
    fn default() -> Self {
        Self::new()
    }
}

impl Framer {
    pub const fn new() -> Self {
        Framer {
            frag_len: 0,
            frag_pos: 0,
            packets: 0,
            hdr: [0; 4],
            hdr_len: 0,
            cont: 0,
            next_cont: 0,
            emitted: 0,
            prefix: [0; PREFIX_LEN],
        }
    }

    /// True when the stream stands exactly between two logical packets.
    pub fn at_boundary(&self) -> bool {
        self.hdr_len == 0 && self.next_cont == 0
    }

    /// Logical packets reported so far.
    pub fn packets(&self) -> u32 {
        self.packets
    }

    /// Payload bytes still expected for the current fragment (0 between fragments).
    pub fn fragment_remaining(&self) -> u32 {
        if self.hdr_len == 4 {
            self.frag_len.saturating_sub(self.frag_pos)
        } else {
            0
        }
    }

    /// Skips up to `n` payload bytes of a packet whose prefix was already
    /// reported. Returns the bytes skipped (0 when not inside such a payload).
    pub fn skip_payload_bytes(&mut self, n: u32) -> u32 {
        if self.hdr_len != 4 || self.emitted == 0 {
            return 0;
        }
        let rest = self.frag_len.saturating_sub(self.frag_pos);
        let k = if rest < n { rest } else { n };
        self.frag_pos = self.frag_pos.saturating_add(k);
        if self.frag_pos >= self.frag_len {
            self.hdr_len = 0;
        }
        k
    }

    /// At a boundary, passes over a whole packet (`header`, payload shorter
    /// than 16 MiB) that needs no prefix, of which `available` bytes (header
    /// included) are at hand; the rest is skipped later by
    /// [`Framer::skip_payload_bytes`]. Returns the bytes consumed.
    pub fn skip_packet(&mut self, header: [u8; 4], available: u32) -> u32 {
        let len = u32::from_le_bytes([header[0], header[1], header[2], 0]);
        self.packets = self.packets.wrapping_add(1);
        let total = len.saturating_add(4);
        if available >= total {
            return total;
        }
        self.hdr = header;
        self.hdr_len = 4;
        self.frag_len = len;
        self.frag_pos = available.saturating_sub(4);
        self.cont = 0;
        self.next_cont = 0;
        self.emitted = 1;
        available
    }

    fn event(&self) -> PacketInfo {
        let want = if self.frag_len < PREFIX_LEN as u32 {
            self.frag_len as usize
        } else {
            PREFIX_LEN
        };
        // Only the valid bytes: stale ones from earlier packets would make
        // equal packets compare unequal.
        let mut prefix = [0u8; PREFIX_LEN];
        let mut i = 0usize;
        while i < want && i < PREFIX_LEN {
            prefix[i & PREFIX_MASK] = self.prefix[i & PREFIX_MASK];
            i += 1;
        }
        PacketInfo {
            len: self.frag_len,
            seq: self.hdr[3],
            prefix_len: want as u8,
            _pad: [0; 2],
            prefix,
        }
    }

    /// Consumes bytes from `data` until one logical packet's prefix is
    /// complete or `data` (or the step budget) is exhausted. Returns the
    /// number of bytes consumed (≥ 1 when `data` is non-empty) and the event,
    /// if any. Once an event is produced, the remainder of that fragment
    /// present in `data` is consumed too.
    pub fn next_event(&mut self, data: &[u8]) -> (usize, Option<PacketInfo>) {
        let mut used: usize = 0;
        let mut step = 0usize;
        while step < FRAMER_STEPS {
            step += 1;
            if self.hdr_len < 4 {
                let mut i = self.hdr_len as usize;
                while i < 4 {
                    let Some(b) = byte_at(data, used) else { break };
                    // Constant indices: LLVM drops a mask it can prove
                    // redundant, and the verifier then cannot bound `i`.
                    match i {
                        0 => self.hdr[0] = b,
                        1 => self.hdr[1] = b,
                        2 => self.hdr[2] = b,
                        _ => self.hdr[3] = b,
                    }
                    i += 1;
                    used += 1;
                }
                self.hdr_len = i as u8;
                if i < 4 {
                    return (used, None);
                }
                self.frag_len = u32::from_le_bytes([self.hdr[0], self.hdr[1], self.hdr[2], 0]);
                self.frag_pos = 0;
                self.cont = self.next_cont;
                self.next_cont = u8::from(self.frag_len == MAX_PACKET);
                // Continuation fragments are never reported.
                self.emitted = self.cont;
            }
            if self.emitted == 0 {
                let want = if self.frag_len < PREFIX_LEN as u32 {
                    self.frag_len
                } else {
                    PREFIX_LEN as u32
                };
                while self.frag_pos < want {
                    let Some(b) = byte_at(data, used) else { break };
                    // A volatile read keeps LLVM from turning the masked
                    // index into a running pointer the verifier cannot bound.
                    // SAFETY: reading our own field.
                    let pos = unsafe { core::ptr::read_volatile(&raw const self.frag_pos) };
                    self.prefix[pos as usize & PREFIX_MASK] = b;
                    self.frag_pos += 1;
                    used += 1;
                }
                if self.frag_pos < want {
                    return (used, None);
                }
                self.emitted = 1;
                self.packets = self.packets.wrapping_add(1);
                let ev = self.event();
                self.skip_payload(data, &mut used);
                return (used, Some(ev));
            }
            if !self.skip_payload(data, &mut used) {
                return (used, None);
            }
        }
        (used, None)
    }

    /// Skips payload bytes of the current fragment; true when it is finished.
    fn skip_payload(&mut self, data: &[u8], used: &mut usize) -> bool {
        let rest = self.frag_len.saturating_sub(self.frag_pos) as usize;
        let avail = data.len().saturating_sub(*used);
        let n = if rest < avail { rest } else { avail };
        self.frag_pos = self.frag_pos.saturating_add(n as u32);
        *used = used.saturating_add(n);
        if self.frag_pos >= self.frag_len {
            self.hdr_len = 0;
            true
        } else {
            false
        }
    }

    /// Consumes the whole chunk, calling `on_packet` once per logical packet
    /// whose prefix completes in it (at most `data.len() / 4 + 1` calls).
    /// Returns the number of packets reported.
    pub fn feed<F: FnMut(&PacketInfo)>(&mut self, data: &[u8], on_packet: &mut F) -> u32 {
        let mut rest = data;
        let mut n = 0u32;
        // Each round consumes at least one byte, so this ends.
        while !rest.is_empty() {
            let (used, ev) = self.next_event(rest);
            if let Some(p) = ev {
                n = n.wrapping_add(1);
                on_packet(&p);
            }
            if used == 0 {
                break;
            }
            rest = rest.get(used..).unwrap_or(&[]);
        }
        n
    }
}
