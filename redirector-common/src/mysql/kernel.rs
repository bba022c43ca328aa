//! Walking backend segments in the eBPF verdict programs (bounded steps
//! over the framer and tracker).

use super::*;

// ---------------------------------------------------------------------------
// Walking a backend stream segment by segment (the kernel's backend verdict).
//
// The kernel sees the backend's stream as TCP segments that start and end
// anywhere in a packet. It cannot loop over a segment's packets with the
// whole state machine inside (the verifier explores every iteration), so it
// alternates two steps, each its own program run:
// - [`walk_heads`]: rows and column definitions need only the first payload
//   byte and the length ([`Tracker::on_server_packet_head`]); payload is
//   skipped without reading it.
// - [`full_packet`]: one packet through [`Tracker::on_server_packet`], when
//   its header and prefix are in the segment; otherwise the caller feeds the
//   rest of the segment to [`Framer::next_event`], which keeps partial bytes
//   for the next segment (a straddle).
// Userspace tests drive the same functions over random segmentations.

/// Walks at most `steps` packets or payload skips of a segment of `len`
/// bytes from `off`, using only first bytes and lengths. `load5(off)` reads
/// 5 bytes of the segment (`None` past its end). Returns the new offset and
/// whether the packet at it needs [`full_packet`] (false: the segment, or
/// the step budget, is used up).
#[inline(always)]
pub fn walk_heads<L: Fn(u32) -> Option<[u8; 5]>>(
    framer: &mut Framer,
    tracker: &mut Tracker,
    mut off: u32,
    len: u32,
    steps: u32,
    load5: L,
) -> (u32, bool) {
    let mut i = 0u32;
    while i < steps && off < len {
        i += 1;
        let skipped = framer.skip_payload_bytes(len - off);
        if skipped > 0 {
            off += skipped;
            continue;
        }
        if !framer.at_boundary() {
            return (off, true);
        }
        let Some(h) = load5(off) else {
            return (off, true);
        };
        let plen = u32::from_le_bytes([h[0], h[1], h[2], 0]);
        if plen == 0 || tracker.on_server_packet_head(h[4], plen).is_none() {
            return (off, true);
        }
        off += framer.skip_packet([h[0], h[1], h[2], h[3]], len - off);
    }
    (off, false)
}

/// One packet at `off` through the whole state machine, if the framer is at
/// a boundary and the packet's header and prefix are within the segment.
/// `load(off, buf, n)` reads `n` (1..=PREFIX_LEN) bytes of the segment into
/// `buf` and returns how many it read. Returns the new offset, or `None`
/// when the caller must use the straddle step ([`Framer::next_event`]).
#[inline(always)]
pub fn full_packet<L4, L>(
    framer: &mut Framer,
    tracker: &mut Tracker,
    off: u32,
    len: u32,
    load4: L4,
    load: L,
) -> Option<u32>
where
    L4: Fn(u32) -> Option<[u8; 4]>,
    L: Fn(u32, &mut [u8; PREFIX_LEN], u32) -> usize,
{
    if !framer.at_boundary() || len.saturating_sub(off) < 4 {
        return None;
    }
    let h = load4(off)?;
    let plen = u32::from_le_bytes([h[0], h[1], h[2], 0]);
    let want = if plen < PREFIX_LEN as u32 {
        plen
    } else {
        PREFIX_LEN as u32
    };
    let avail = len - off;
    if plen >= MAX_PACKET || avail - 4 < want {
        return None;
    }
    let mut p = PacketInfo::EMPTY;
    p.len = plen;
    p.seq = h[3];
    if want > 0 {
        let n = load(off + 4, &mut p.prefix, want);
        if n != want as usize {
            return None;
        }
    }
    p.prefix_len = want as u8;
    tracker.on_server_packet(&p);
    Some(off + framer.skip_packet(h, avail))
}

/// Whether the kernel session path may carry a command itself (`prefix` =
/// the first payload bytes of the client packet), or must pass it to the
/// daemon (the slow path). The daemon must see what changes how it relays
/// or what the mover rebuilds and cannot read back from the server:
/// prepared statements (PREPARE/CLOSE/RESET), COM_INIT_DB, COM_CHANGE_USER,
/// COM_RESET_CONNECTION, COM_SET_OPTION, COM_QUIT, and SQL that may create
/// temporary tables, locks, XA or SQL-level prepared statements. Only plain
/// statements whose first keyword is one of a short list stay in the kernel.
/// COM_STMT_EXECUTE is decided by the caller too (parameter types must have
/// been seen by the daemon once).
pub fn kernel_path_command(prefix: &[u8]) -> bool {
    match byte_at(prefix, 0) {
        Some(command::COM_PING)
        | Some(command::COM_STMT_EXECUTE)
        | Some(command::COM_STMT_FETCH) => true,
        Some(command::COM_QUERY) => {
            let mut word = [0u8; 9];
            let mut i = 0usize;
            while i < word.len() {
                let b = byte_at(prefix, i + 1).unwrap_or(b' ');
                if let Some(slot) = word.get_mut(i) {
                    *slot = b.to_ascii_uppercase();
                }
                i += 1;
            }
            let starts = |w: &[u8]| {
                let mut j = 0usize;
                while j < w.len() {
                    if word.get(j) != w.get(j) {
                        return false;
                    }
                    j += 1;
                }
                // The keyword must end there (no `SELECTX`).
                matches!(word.get(w.len()), Some(b' ' | b'\t' | b'\n' | b'\r' | b'('))
            };
            starts(b"SELECT")
                || starts(b"INSERT")
                || starts(b"UPDATE")
                || starts(b"DELETE")
                || starts(b"BEGIN")
                || starts(b"COMMIT")
                || starts(b"ROLLBACK")
        }
        _ => false,
    }
}
