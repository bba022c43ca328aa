//! Parsing helpers on a payload prefix (OK, EOF, ERR, PREPARE_OK, lenenc).

use super::*;

// ---------------------------------------------------------------------------
// Little helpers (panic free).

#[inline(always)]
pub(crate) fn byte_at(buf: &[u8], pos: usize) -> Option<u8> {
    buf.get(pos).copied()
}

#[inline(always)]
pub(crate) fn le16(buf: &[u8], pos: usize) -> Option<u16> {
    let a = byte_at(buf, pos)?;
    let b = byte_at(buf, pos.wrapping_add(1))?;
    Some(u16::from_le_bytes([a, b]))
}

#[inline(always)]
pub(crate) fn le32(buf: &[u8], pos: usize) -> Option<u32> {
    let a = byte_at(buf, pos)?;
    let b = byte_at(buf, pos.wrapping_add(1))?;
    let c = byte_at(buf, pos.wrapping_add(2))?;
    let d = byte_at(buf, pos.wrapping_add(3))?;
    Some(u32::from_le_bytes([a, b, c, d]))
}

/// Reads a length-encoded integer at `pos`; returns the value and the position after it.
/// `0xFB` (NULL) and `0xFF` are not integers and give `None`, as does a truncated buffer.
pub fn read_lenenc(buf: &[u8], pos: usize) -> Option<(u64, usize)> {
    let first = byte_at(buf, pos)?;
    let n: usize = match first {
        0..=0xFA => return Some((u64::from(first), pos.wrapping_add(1))),
        0xFC => 2,
        0xFD => 3,
        0xFE => 8,
        _ => return None,
    };
    let mut v: u64 = 0;
    let mut i: usize = 0;
    while i < n {
        let b = byte_at(buf, pos.wrapping_add(1).wrapping_add(i))?;
        v |= u64::from(b) << (8 * i);
        i += 1;
    }
    Some((v, pos.wrapping_add(1).wrapping_add(n)))
}

// ---------------------------------------------------------------------------
// Packet parsing helpers.

/// The fixed part of an OK packet (header 0x00, or 0xFE as a result-set terminator).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OkInfo {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
}

/// Parses an OK packet from (a prefix of) its payload. Needs at most 23 bytes.
/// Without CLIENT_PROTOCOL_41 the status is present only with
/// CLIENT_TRANSACTIONS and there are no warnings.
pub fn parse_ok(payload: &[u8], capabilities: u64) -> Option<OkInfo> {
    parse_ok_fixed(payload, capabilities).map(|(ok, _)| ok)
}

/// The fixed part of an OK packet and the offset where its variable part
/// (info string, session-state block) starts: the one OK parser, which the
/// daemon's full `OkPacket` parser continues from.
pub fn parse_ok_fixed(payload: &[u8], capabilities: u64) -> Option<(OkInfo, usize)> {
    let h = byte_at(payload, 0)?;
    if h != 0x00 && h != 0xFE {
        return None;
    }
    let (affected_rows, p) = read_lenenc(payload, 1)?;
    let (last_insert_id, p) = read_lenenc(payload, p)?;
    let mut ok = OkInfo {
        affected_rows,
        last_insert_id,
        status: 0,
        warnings: 0,
    };
    let mut end = p;
    if capabilities & caps64(capability::CLIENT_PROTOCOL_41, 0) != 0 {
        ok.status = le16(payload, p)?;
        ok.warnings = le16(payload, p.wrapping_add(2))?;
        end = p.wrapping_add(4);
    } else if capabilities & caps64(capability::CLIENT_TRANSACTIONS, 0) != 0 {
        ok.status = le16(payload, p)?;
        end = p.wrapping_add(2);
    }
    Some((ok, end))
}

/// An EOF packet (0xFE, payload < 9 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EofInfo {
    pub warnings: u16,
    pub status: u16,
}

/// Parses an EOF packet: `0xFE warnings:u16 status:u16` (protocol 4.1; an
/// old 1-byte EOF yields zeros).
pub fn parse_eof(payload: &[u8]) -> Option<EofInfo> {
    if byte_at(payload, 0)? != 0xFE {
        return None;
    }
    Some(EofInfo {
        warnings: le16(payload, 1).unwrap_or(0),
        status: le16(payload, 3).unwrap_or(0),
    })
}

/// An ERR packet's code and SQLSTATE.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrInfo {
    pub code: u16,
    /// 1 when `sqlstate` is present (protocol 4.1 and not a progress report).
    pub has_sqlstate: u8,
    pub sqlstate: [u8; 5],
}

impl ErrInfo {
    /// MariaDB progress reports travel as ERR packets with code 0xFFFF.
    pub fn is_progress(&self) -> bool {
        self.code == 0xFFFF
    }
}

/// Parses an ERR packet: `0xFF code:u16 ['#' sqlstate:5] message`.
pub fn parse_err(payload: &[u8]) -> Option<ErrInfo> {
    if byte_at(payload, 0)? != 0xFF {
        return None;
    }
    let code = le16(payload, 1)?;
    let mut e = ErrInfo {
        code,
        has_sqlstate: 0,
        sqlstate: [0; 5],
    };
    if code != 0xFFFF && byte_at(payload, 3) == Some(b'#') {
        let mut i = 0usize;
        let mut complete = true;
        while i < 5 {
            match (byte_at(payload, 4 + i), e.sqlstate.get_mut(i)) {
                (Some(b), Some(slot)) => *slot = b,
                _ => complete = false,
            }
            i += 1;
        }
        e.has_sqlstate = u8::from(complete);
    }
    Some(e)
}

/// COM_STMT_PREPARE_OK.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrepareOk {
    pub stmt_id: u32,
    pub num_columns: u16,
    pub num_params: u16,
    pub warnings: u16,
    pub _pad: u16,
}

/// Parses `0x00 stmt_id:u32 num_columns:u16 num_params:u16 0x00 warnings:u16`.
pub fn parse_prepare_ok(payload: &[u8]) -> Option<PrepareOk> {
    if byte_at(payload, 0)? != 0x00 {
        return None;
    }
    Some(PrepareOk {
        stmt_id: le32(payload, 1)?,
        num_columns: le16(payload, 5)?,
        num_params: le16(payload, 7)?,
        warnings: le16(payload, 10).unwrap_or(0),
        _pad: 0,
    })
}
