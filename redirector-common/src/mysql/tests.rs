//! Byte-exact scenarios for the framer and the tracker. Every scenario is fed
//! whole, byte by byte and in random chunkings; all runs must agree.
extern crate std;

use std::vec;
use std::vec::Vec;

use super::*;

// ----- packet builders -------------------------------------------------------

fn lenenc(v: u64) -> Vec<u8> {
    if v < 0xFB {
        vec![v as u8]
    } else if v <= 0xFFFF {
        let mut o = vec![0xFC];
        o.extend_from_slice(&(v as u16).to_le_bytes());
        o
    } else if v <= 0xFF_FFFF {
        let mut o = vec![0xFD];
        o.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
        o
    } else {
        let mut o = vec![0xFE];
        o.extend_from_slice(&v.to_le_bytes());
        o
    }
}

fn lenstr(s: &[u8]) -> Vec<u8> {
    let mut o = lenenc(s.len() as u64);
    o.extend_from_slice(s);
    o
}

/// Wire bytes of one logical packet, split into 0xFFFFFF fragments as the protocol requires.
fn wire(seq: &mut u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_PACKET as usize);
        out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        out.push(*seq);
        *seq = seq.wrapping_add(1);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        if n < MAX_PACKET as usize {
            break;
        }
    }
    out
}

fn ok_with(header: u8, affected: u64, insert_id: u64, st: u16, warnings: u16) -> Vec<u8> {
    let mut o = vec![header];
    o.extend(lenenc(affected));
    o.extend(lenenc(insert_id));
    o.extend_from_slice(&st.to_le_bytes());
    o.extend_from_slice(&warnings.to_le_bytes());
    o
}

fn ok(st: u16) -> Vec<u8> {
    ok_with(0x00, 0, 0, st, 0)
}

/// OK with 0xFE header: result-set terminator under CLIENT_DEPRECATE_EOF.
fn ok_fe(st: u16) -> Vec<u8> {
    ok_with(0xFE, 0, 0, st, 0)
}

fn eof(warnings: u16, st: u16) -> Vec<u8> {
    let mut o = vec![0xFE];
    o.extend_from_slice(&warnings.to_le_bytes());
    o.extend_from_slice(&st.to_le_bytes());
    o
}

fn err(code: u16, state: &[u8; 5], msg: &str) -> Vec<u8> {
    let mut o = vec![0xFF];
    o.extend_from_slice(&code.to_le_bytes());
    o.push(b'#');
    o.extend_from_slice(state);
    o.extend_from_slice(msg.as_bytes());
    o
}

/// MariaDB progress report: ERR packet with code 0xFFFF.
fn progress(stage: u8, max_stage: u8, permille: u32) -> Vec<u8> {
    let mut o = vec![0xFF, 0xFF, 0xFF, 1, stage, max_stage];
    o.extend_from_slice(&permille.to_le_bytes()[..3]);
    o.extend(lenstr(b"altering table"));
    o
}

fn coldef(name: &str) -> Vec<u8> {
    let mut o = Vec::new();
    o.extend(lenstr(b"def"));
    o.extend(lenstr(b"test"));
    o.extend(lenstr(b"t"));
    o.extend(lenstr(b"t"));
    o.extend(lenstr(name.as_bytes()));
    o.extend(lenstr(name.as_bytes()));
    o.push(0x0c);
    o.extend_from_slice(&33u16.to_le_bytes()); // utf8 collation
    o.extend_from_slice(&255u32.to_le_bytes());
    o.push(0xfd); // VAR_STRING
    o.extend_from_slice(&0u16.to_le_bytes());
    o.push(0);
    o.extend_from_slice(&[0, 0]);
    o
}

fn text_row(cols: &[Option<&[u8]>]) -> Vec<u8> {
    let mut o = Vec::new();
    for c in cols {
        match c {
            Some(v) => o.extend(lenstr(v)),
            None => o.push(0xFB),
        }
    }
    o
}

/// Binary row of BIGINT columns: 0x00, NULL bitmap (offset 2), values.
fn bin_row(vals: &[i64]) -> Vec<u8> {
    let mut o = vec![0x00];
    o.resize(1 + (vals.len() + 7 + 2) / 8, 0);
    for v in vals {
        o.extend_from_slice(&v.to_le_bytes());
    }
    o
}

fn query(sql: &str) -> Vec<u8> {
    let mut o = vec![command::COM_QUERY];
    o.extend_from_slice(sql.as_bytes());
    o
}

fn simple(c: u8) -> Vec<u8> {
    vec![c]
}

fn prepare(sql: &str) -> Vec<u8> {
    let mut o = vec![command::COM_STMT_PREPARE];
    o.extend_from_slice(sql.as_bytes());
    o
}

fn prepare_ok(id: u32, cols: u16, params: u16, warnings: u16) -> Vec<u8> {
    let mut o = vec![0x00];
    o.extend_from_slice(&id.to_le_bytes());
    o.extend_from_slice(&cols.to_le_bytes());
    o.extend_from_slice(&params.to_le_bytes());
    o.push(0);
    o.extend_from_slice(&warnings.to_le_bytes());
    o
}

fn stmt_cmd(c: u8, id: u32) -> Vec<u8> {
    let mut o = vec![c];
    o.extend_from_slice(&id.to_le_bytes());
    o
}

fn execute(id: u32, flags: u8) -> Vec<u8> {
    let mut o = stmt_cmd(command::COM_STMT_EXECUTE, id);
    o.push(flags);
    o.extend_from_slice(&1u32.to_le_bytes());
    o
}

fn fetch(id: u32, rows: u32) -> Vec<u8> {
    let mut o = stmt_cmd(command::COM_STMT_FETCH, id);
    o.extend_from_slice(&rows.to_le_bytes());
    o
}

fn long_data(id: u32, param: u16, data: &[u8]) -> Vec<u8> {
    let mut o = stmt_cmd(command::COM_STMT_SEND_LONG_DATA, id);
    o.extend_from_slice(&param.to_le_bytes());
    o.extend_from_slice(data);
    o
}

const AC: u16 = status::SERVER_STATUS_AUTOCOMMIT;
const MORE: u16 = status::SERVER_MORE_RESULTS_EXISTS;
const BASE: u64 = caps64(capability::CLIENT_PROTOCOL_41, 0)
    | caps64(capability::CLIENT_TRANSACTIONS, 0)
    | caps64(capability::CLIENT_MULTI_STATEMENTS, 0)
    | caps64(capability::CLIENT_MULTI_RESULTS, 0)
    | caps64(capability::CLIENT_PS_MULTI_RESULTS, 0)
    | caps64(capability::CLIENT_SESSION_TRACK, 0)
    | caps64(capability::CLIENT_LOCAL_FILES, 0);
const DEP: u64 = BASE | caps64(capability::CLIENT_DEPRECATE_EOF, 0);

// ----- conversation scripts ----------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    C,
    S,
}

/// A conversation: steps of bytes in one direction, in real-time order.
struct Conv {
    steps: Vec<(Dir, Vec<u8>)>,
    seq: u8,
}

impl Conv {
    fn new() -> Self {
        Conv {
            steps: Vec::new(),
            seq: 0,
        }
    }
    /// Client commands sent back to back (pipelined when more than one).
    fn cmds(&mut self, payloads: &[Vec<u8>]) -> &mut Self {
        let mut bytes = Vec::new();
        for p in payloads {
            self.seq = 0;
            bytes.extend(wire(&mut self.seq, p));
        }
        self.steps.push((Dir::C, bytes));
        self
    }
    fn cmd(&mut self, payload: Vec<u8>) -> &mut Self {
        self.cmds(&[payload])
    }
    /// Client packets continuing the current exchange (file data, auth data).
    fn cli(&mut self, payloads: &[Vec<u8>]) -> &mut Self {
        let mut bytes = Vec::new();
        for p in payloads {
            bytes.extend(wire(&mut self.seq, p));
        }
        self.steps.push((Dir::C, bytes));
        self
    }
    fn srv(&mut self, payloads: &[Vec<u8>]) -> &mut Self {
        let mut bytes = Vec::new();
        for p in payloads {
            bytes.extend(wire(&mut self.seq, p));
        }
        self.steps.push((Dir::S, bytes));
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    C(PacketInfo, ClientPacket),
    S(PacketInfo, ServerPacket),
}

impl Ev {
    fn server_kind(&self) -> Option<ServerPacket> {
        match self {
            Ev::S(_, k) => Some(*k),
            Ev::C(..) => None,
        }
    }
    fn client_kind(&self) -> Option<ClientPacket> {
        match self {
            Ev::C(_, k) => Some(*k),
            Ev::S(..) => None,
        }
    }
}

struct Run {
    events: Vec<Ev>,
    /// Tracker after each step, and whether the session was idle then.
    after: Vec<(Tracker, bool)>,
}

impl Run {
    fn server_kinds(&self) -> Vec<ServerPacket> {
        self.events.iter().filter_map(Ev::server_kind).collect()
    }
    fn client_kinds(&self) -> Vec<ClientPacket> {
        self.events.iter().filter_map(Ev::client_kind).collect()
    }
    fn last(&self) -> &Tracker {
        &self.after.last().expect("script has steps").0
    }
    fn idle_after(&self, step: usize) -> bool {
        self.after[step].1
    }
}

/// Tiny deterministic PRNG (xorshift) for chunkings.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn run_with(
    capabilities: u64,
    steps: &[(Dir, Vec<u8>)],
    chunk: &mut dyn FnMut(usize) -> usize,
) -> Run {
    let mut s = Session::new(capabilities, AC);
    let mut events = Vec::new();
    let mut after = Vec::new();
    for (dir, bytes) in steps {
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = chunk(rest.len()).clamp(1, rest.len());
            let (now, later) = rest.split_at(n);
            match dir {
                Dir::C => s.feed_client_with(now, &mut |p, k| events.push(Ev::C(*p, k))),
                Dir::S => s.feed_server_with(now, &mut |p, k| events.push(Ev::S(*p, k))),
            }
            rest = later;
        }
        // Every step ends on a packet boundary.
        assert!(s.client.at_boundary() && s.server.at_boundary());
        after.push((s.tracker, s.idle()));
    }
    Run { events, after }
}

/// Runs the script whole, byte by byte and in random chunkings; all must agree.
fn check(capabilities: u64, conv: &Conv) -> Run {
    let steps = &conv.steps;
    let total: usize = steps.iter().map(|(_, b)| b.len()).sum();
    let whole = run_with(capabilities, steps, &mut |n| n);
    let bytewise = run_with(capabilities, steps, &mut |_| 1);
    assert_eq!(whole.events, bytewise.events, "byte-by-byte differs");
    assert_eq!(whole.after, bytewise.after, "byte-by-byte state differs");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ total as u64);
    // Streams of many MiB: byte by byte already splits every header; keep
    // the random rounds coarse so the suite stays fast.
    let big = total > 1 << 20;
    for round in 0..12 {
        if big && round % 3 != 2 {
            continue;
        }
        let max = match round % 3 {
            0 => 7,
            1 => 64,
            _ => 1 << 20,
        };
        let r = run_with(capabilities, steps, &mut |n| 1 + rng.below(max.min(n)));
        assert_eq!(whole.events, r.events, "chunking round {round} differs");
        assert_eq!(whole.after, r.after, "chunking round {round} state differs");
    }
    whole
}

use ClientPacket as C;
use ServerPacket as S;

// ----- helpers and framing -----------------------------------------------------

#[test]
fn lenenc_and_ok_err_parsing() {
    assert_eq!(read_lenenc(&[0xFA], 0), Some((250, 1)));
    assert_eq!(read_lenenc(&[0xFC, 0x34, 0x12], 0), Some((0x1234, 3)));
    assert_eq!(read_lenenc(&[0xFD, 1, 2, 3], 0), Some((0x030201, 4)));
    assert_eq!(
        read_lenenc(&[0xFE, 1, 2, 3, 4, 5, 6, 7, 8], 0),
        Some((0x0807060504030201, 9))
    );
    assert_eq!(read_lenenc(&[0xFE, 1, 2], 0), None);
    assert_eq!(read_lenenc(&[0xFB], 0), None);
    assert_eq!(read_lenenc(&[0xFF], 0), None);

    let p = ok_with(0x00, 70_000, 0x1_0000_0000, 0x4003, 2);
    assert_eq!(
        parse_ok(&p, BASE),
        Some(OkInfo {
            affected_rows: 70_000,
            last_insert_id: 0x1_0000_0000,
            status: 0x4003,
            warnings: 2
        })
    );
    // Largest fixed part (9 + 9 byte lenencs) fits in the prefix.
    let big = ok_with(0xFE, u64::MAX, u64::MAX - 1, 0x0022, 7);
    assert_eq!(big.len(), 23);
    let pi = PacketInfo::from_payload(5, &big);
    let okb = parse_ok(pi.prefix(), DEP).unwrap();
    assert_eq!(
        (okb.affected_rows, okb.last_insert_id),
        (u64::MAX, u64::MAX - 1)
    );
    assert_eq!((okb.status, okb.warnings), (0x0022, 7));
    // Pre-4.1 with CLIENT_TRANSACTIONS: status only.
    let old = parse_ok(&[0, 1, 0, 2, 0], caps64(capability::CLIENT_TRANSACTIONS, 0)).unwrap();
    assert_eq!((old.affected_rows, old.status, old.warnings), (1, 2, 0));
    assert_eq!(parse_ok(&[0x00, 0x01], BASE), None);
    assert_eq!(parse_ok(&[0xFF, 0, 0, 0, 0, 0, 0], BASE), None);

    let e = parse_err(&err(1146, b"42S02", "Table 'test.x' doesn't exist")).unwrap();
    assert_eq!((e.code, e.has_sqlstate, &e.sqlstate), (1146, 1, b"42S02"));
    let pre_auth = parse_err(&[0xFF, 0x13, 0x04, b'B', b'a', b'd']).unwrap();
    assert_eq!((pre_auth.code, pre_auth.has_sqlstate), (1043, 0));
    assert!(parse_err(&progress(1, 2, 500)).unwrap().is_progress());

    assert_eq!(
        parse_eof(&eof(3, 0x0022)),
        Some(EofInfo {
            warnings: 3,
            status: 0x0022
        })
    );
    let pok = parse_prepare_ok(&prepare_ok(0xDEAD_BEEF, 3, 2, 1)).unwrap();
    assert_eq!(
        (pok.stmt_id, pok.num_columns, pok.num_params, pok.warnings),
        (0xDEAD_BEEF, 3, 2, 1)
    );
}

/// Logical packets of random sizes (empty, around the prefix size, around
/// 0xFFFFFF) framed whole and in random chunkings equal `from_payload`.
#[test]
fn framer_matches_whole_packets_under_random_chunking() {
    let mut rng = Rng(12345);
    let sizes: Vec<usize> = vec![
        0,
        1,
        4,
        31,
        32,
        33,
        100,
        0,
        MAX_PACKET as usize - 1,
        MAX_PACKET as usize,
        MAX_PACKET as usize + 1,
        2 * MAX_PACKET as usize,
        7,
        0,
    ];
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..n)
            .map(|j| (j as u8) ^ (i as u8).wrapping_mul(37))
            .collect();
        let mut seq = i as u8;
        stream.extend(wire(&mut seq, &payload));
        expected.push(PacketInfo::from_payload(i as u8, &payload));
    }
    for round in 0..6 {
        let mut f = Framer::new();
        let mut got = Vec::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let max = if round == 0 {
                rest.len()
            } else if round % 2 == 0 {
                1 + rng.below(9)
            } else {
                1 + rng.below(3_000_000)
            };
            let n = max.min(rest.len());
            let (now, later) = rest.split_at(n);
            f.feed(now, &mut |p: &PacketInfo| got.push(*p));
            rest = later;
        }
        assert_eq!(got, expected, "round {round}");
        assert!(f.at_boundary());
        assert_eq!(f.packets() as usize, sizes.len());
    }
}

#[test]
fn framer_next_event_always_progresses_and_reports_partial_state() {
    let mut seq = 0;
    let mut stream = wire(&mut seq, &query("SELECT 1"));
    let mut seq = 0;
    stream.extend(wire(&mut seq, &[]));
    let mut f = Framer::new();
    // Partial header: no event, not at a boundary.
    assert_eq!(f.next_event(&stream[..2]), (2, None));
    assert!(!f.at_boundary());
    assert_eq!(f.next_event(&stream[2..4]), (2, None));
    assert_eq!(f.fragment_remaining(), 9);
    let (n, ev) = f.next_event(&stream[4..8]);
    assert_eq!((n, ev), (4, None));
    let (n, ev) = f.next_event(&stream[8..]);
    assert_eq!(n, 5);
    let ev = ev.unwrap();
    assert_eq!((ev.len, ev.seq, ev.prefix()), (9, 0, &b"\x03SELECT 1"[..]));
    assert!(f.at_boundary());
    let (n, ev) = f.next_event(&stream[13..]);
    assert_eq!(n, 4);
    assert_eq!(ev.unwrap().len, 0);
    assert_eq!(f.next_event(&[]), (0, None));
    // A long payload: the event comes once the prefix is there, before the rest.
    let payload = vec![b'x'; 1000];
    let mut seq = 3;
    let w = wire(&mut seq, &payload);
    let mut f = Framer::new();
    let (n, ev) = f.next_event(&w[..40]);
    assert_eq!(n, 40);
    assert_eq!(ev.unwrap().prefix_len as usize, PREFIX_LEN);
    assert_eq!(f.fragment_remaining(), 1000 - 36);
    assert!(!f.at_boundary());
    assert_eq!(f.next_event(&w[40..]), (w.len() - 40, None));
    assert!(f.at_boundary());
}

#[test]
fn state_sizes_fit_bpf_maps() {
    std::eprintln!(
        "sizes: Tracker {} Framer {} Session {} PacketInfo {}",
        core::mem::size_of::<Tracker>(),
        core::mem::size_of::<Framer>(),
        core::mem::size_of::<Session>(),
        core::mem::size_of::<PacketInfo>()
    );
    assert!(core::mem::size_of::<Tracker>() <= 256);
    assert!(core::mem::size_of::<Framer>() <= 64);
    assert!(core::mem::size_of::<Session>() <= 320);
    assert_eq!(core::mem::size_of::<PacketInfo>(), 40);
}

// ----- responses -----------------------------------------------------------------

#[test]
fn text_result_set_classic_eof() {
    let mut c = Conv::new();
    c.cmd(query("SELECT a, b FROM t"))
        .srv(&[vec![2], coldef("a"), coldef("b"), eof(0, AC)])
        .srv(&[
            text_row(&[Some(b"1"), Some(b"x")]),
            text_row(&[None, Some(b"")]),
            eof(0, AC | status::SERVER_STATUS_IN_TRANS),
        ]);
    let r = check(BASE, &c);
    assert_eq!(
        r.server_kinds(),
        [
            S::ColumnCount,
            S::ColumnDef,
            S::ColumnDef,
            S::Eof,
            S::Row,
            S::Row,
            S::Eof
        ]
    );
    let after_cmd = &r.after[0].0;
    assert!(after_cmd.in_flight() && !r.idle_after(0));
    assert_eq!(after_cmd.response_state(), resp::FIRST);
    assert!(r.after[1].0.in_flight() && r.after[1].0.response_state() == resp::ROWS);
    let t = r.last();
    assert!(r.idle_after(2) && t.idle());
    assert_eq!((t.commands_sent(), t.commands_completed()), (1, 1));
    assert_eq!(t.status(), AC | status::SERVER_STATUS_IN_TRANS);
    assert!(t.in_transaction());
}

#[test]
fn text_result_set_deprecate_eof() {
    // The terminator carries session-track data: 0xFE with length >= 9 is still OK.
    let mut terminator = ok_fe(AC | status::SERVER_SESSION_STATE_CHANGED);
    terminator.extend(lenstr(b"\x00\x0e\x0dautocommit\x02ON"));
    assert!(terminator.len() > 9);
    let mut c = Conv::new();
    c.cmd(query("SELECT a FROM t"))
        .srv(&[
            vec![1],
            coldef("a"),
            text_row(&[Some(b"1")]),
            text_row(&[None]),
            terminator,
        ])
        .cmd(query("SELECT 1"))
        .srv(&[vec![1], coldef("1"), text_row(&[Some(b"1")]), ok_fe(AC)]);
    let r = check(DEP, &c);
    assert_eq!(
        r.server_kinds(),
        [
            S::ColumnCount,
            S::ColumnDef,
            S::Row,
            S::Row,
            S::Ok,
            S::ColumnCount,
            S::ColumnDef,
            S::Row,
            S::Ok
        ]
    );
    assert!(r.idle_after(1) && r.idle_after(3));
    let t = r.last();
    assert_eq!(t.commands_completed(), 2);
    assert_eq!(t.state_changes(), 1);
    assert_eq!(t.status(), AC);
}

/// Text rows whose first column is a lenenc string announced with 0xFE
/// (length >= 2^24): the packet starts with 0xFE but is a row, in both modes.
#[test]
fn huge_text_row_starting_with_fe_is_a_row() {
    let value = vec![b'v'; (1 << 24) + 3];
    let row = text_row(&[Some(&value), Some(b"z")]);
    assert_eq!(row[0], 0xFE);
    assert!(row.len() > MAX_PACKET as usize);
    for capabilities in [BASE, DEP] {
        let mut c = Conv::new();
        let end = if capabilities == DEP {
            ok_fe(AC)
        } else {
            eof(0, AC)
        };
        c.cmd(query("SELECT big, z FROM t"));
        if capabilities == DEP {
            c.srv(&[vec![2], coldef("big"), coldef("z"), row.clone(), end]);
        } else {
            c.srv(&[
                vec![2],
                coldef("big"),
                coldef("z"),
                eof(0, AC),
                row.clone(),
                end,
            ]);
        }
        c.cmd(simple(command::COM_PING)).srv(&[ok(AC)]);
        let r = check(capabilities, &c);
        let kinds = r.server_kinds();
        assert_eq!(kinds.iter().filter(|k| **k == S::Row).count(), 1);
        assert_eq!(*kinds.last().unwrap(), S::Ok);
        assert!(r.idle_after(3));
        assert_eq!(r.last().commands_completed(), 2);
    }
}

/// Under classic EOF a 0xFE-led row shorter than 0xFFFFFF but >= 9 bytes is a row.
#[test]
fn classic_fe_row_of_nine_bytes_is_a_row() {
    let mut row = vec![0xFE];
    row.extend_from_slice(&3u64.to_le_bytes()); // non-minimal lenenc, legal
    row.extend_from_slice(b"abc");
    let mut c = Conv::new();
    c.cmd(query("SELECT s"))
        .srv(&[vec![1], coldef("s"), eof(0, AC), row, eof(0, AC)]);
    let r = check(BASE, &c);
    assert_eq!(
        r.server_kinds(),
        [S::ColumnCount, S::ColumnDef, S::Eof, S::Row, S::Eof]
    );
    assert!(r.idle_after(1));
}

#[test]
fn multi_statement_results_chain() {
    for capabilities in [BASE, DEP] {
        let dep = capabilities == DEP;
        let end = |st| if dep { ok_fe(st) } else { eof(0, st) };
        let mut c = Conv::new();
        c.cmd(query("SELECT 1; UPDATE t SET a=1; SELECT 2"));
        let mut rs1 = vec![vec![1], coldef("1")];
        if !dep {
            rs1.push(eof(0, AC | MORE));
        }
        rs1.push(text_row(&[Some(b"1")]));
        rs1.push(end(AC | MORE));
        c.srv(&rs1);
        c.srv(&[ok_with(0, 3, 0, AC | MORE, 0)]);
        let mut rs2 = vec![vec![1], coldef("2")];
        if !dep {
            rs2.push(eof(0, AC));
        }
        rs2.push(text_row(&[Some(b"2")]));
        rs2.push(end(AC));
        c.srv(&rs2);
        let r = check(capabilities, &c);
        assert!(!r.idle_after(1) && r.after[1].0.response_state() == resp::FIRST);
        assert!(!r.idle_after(2) && r.after[2].0.in_flight());
        assert!(r.idle_after(3));
        assert_eq!(r.last().commands_completed(), 1);
    }
}

/// CALL with OUT parameters through the binary protocol (PS_MULTI_RESULTS):
/// a result set from the procedure, the OUT-parameter result set (flagged
/// PS_OUT_PARAMS, MORE_RESULTS omitted as older MariaDB do), then the final OK.
#[test]
fn call_with_out_params_binary() {
    let pso = status::SERVER_PS_OUT_PARAMS;
    let mut c = Conv::new();
    c.cmd(prepare("CALL p(?, ?)"))
        .srv(&[prepare_ok(1, 0, 2, 0), coldef("?"), coldef("?"), eof(0, AC)])
        .cmd(execute(1, 0))
        .srv(&[
            vec![1],
            coldef("x"),
            eof(0, AC | MORE),
            bin_row(&[10]),
            bin_row(&[11]),
            eof(0, AC | MORE),
        ])
        .srv(&[
            vec![2],
            coldef("o1"),
            coldef("o2"),
            eof(0, AC | pso | MORE),
            bin_row(&[1, 2]),
            eof(0, AC | pso),
        ])
        .srv(&[ok(AC)]);
    let r = check(BASE, &c);
    assert!(r.idle_after(1));
    assert!(!r.idle_after(3) && !r.idle_after(4));
    assert!(r.idle_after(5));
    let t = r.last();
    assert_eq!((t.commands_sent(), t.commands_completed()), (2, 2));
    assert_eq!(t.last_prepare().num_params, 2);
    assert_eq!(t.status(), AC);
}

/// CALL through COM_QUERY: results then the final OK.
#[test]
fn call_text_protocol_results_then_ok() {
    let mut c = Conv::new();
    c.cmd(query("CALL p()"))
        .srv(&[
            vec![1],
            coldef("x"),
            text_row(&[Some(b"1")]),
            ok_fe(AC | MORE),
        ])
        .srv(&[ok_with(0, 0, 0, AC, 0)])
        .cmd(simple(command::COM_PING))
        .srv(&[ok(AC)]);
    let r = check(DEP, &c);
    assert!(!r.idle_after(1));
    assert!(r.idle_after(2) && r.idle_after(4));
    assert_eq!(r.last().commands_completed(), 2);
}

#[test]
fn prepare_ok_with_params_and_columns() {
    for capabilities in [BASE, DEP] {
        let dep = capabilities == DEP;
        let mut resp_pkts = vec![prepare_ok(7, 2, 3, 1)];
        for n in ["?", "?", "?"] {
            resp_pkts.push(coldef(n));
        }
        if !dep {
            resp_pkts.push(eof(0, AC));
        }
        resp_pkts.push(coldef("a"));
        resp_pkts.push(coldef("b"));
        if !dep {
            resp_pkts.push(eof(0, AC));
        }
        // PING pipelined behind PREPARE: its OK must not be taken for metadata.
        let mut c = Conv::new();
        c.cmds(&[
            prepare("SELECT a, b FROM t WHERE x=? AND y=? AND z=?"),
            simple(command::COM_PING),
        ]);
        let mut all = resp_pkts.clone();
        all.push(ok(AC | status::SERVER_STATUS_IN_TRANS));
        c.srv(&all);
        let r = check(capabilities, &c);
        let kinds = r.server_kinds();
        assert_eq!(kinds[0], S::PrepareOk);
        assert_eq!(kinds.iter().filter(|k| **k == S::ColumnDef).count(), 5);
        assert_eq!(*kinds.last().unwrap(), S::Ok);
        assert_eq!(r.after[0].0.outstanding(), 2);
        let t = r.last();
        assert!(r.idle_after(1));
        assert_eq!(t.commands_completed(), 2);
        assert_eq!(
            t.last_prepare(),
            PrepareOk {
                stmt_id: 7,
                num_columns: 2,
                num_params: 3,
                warnings: 1,
                _pad: 0
            }
        );
        assert!(t.in_transaction());
    }
}

#[test]
fn prepare_without_params_or_columns_and_prepare_error() {
    let mut c = Conv::new();
    c.cmd(prepare("DO 1"))
        .srv(&[prepare_ok(2, 0, 0, 0)])
        .cmd(prepare("SELEC"))
        .srv(&[err(1064, b"42000", "You have an error in your SQL syntax")]);
    let r = check(BASE, &c);
    assert!(r.idle_after(1) && r.idle_after(3));
    assert_eq!(r.last().errors(), 1);
    assert_eq!(r.last().last_error(), 1064);
    assert_eq!(r.last().last_prepare().stmt_id, 2);
}

#[test]
fn binary_result_set_rows_start_with_zero() {
    for capabilities in [BASE, DEP] {
        let dep = capabilities == DEP;
        let mut c = Conv::new();
        c.cmd(prepare("SELECT id, k FROM sbtest1 WHERE id=?"))
            .srv(&if dep {
                vec![
                    prepare_ok(1, 2, 1, 0),
                    coldef("?"),
                    coldef("id"),
                    coldef("k"),
                ]
            } else {
                vec![
                    prepare_ok(1, 2, 1, 0),
                    coldef("?"),
                    eof(0, AC),
                    coldef("id"),
                    coldef("k"),
                    eof(0, AC),
                ]
            })
            .cmd(execute(1, 0));
        let mut rs = vec![vec![2], coldef("id"), coldef("k")];
        if !dep {
            rs.push(eof(0, AC));
        }
        // A row whose NULL bitmap / values contain 0xFE bytes.
        rs.push(bin_row(&[0xFE, -2]));
        rs.push(bin_row(&[1, 2]));
        rs.push(if dep { ok_fe(AC) } else { eof(0, AC) });
        c.srv(&rs);
        let r = check(capabilities, &c);
        assert_eq!(r.server_kinds().iter().filter(|k| **k == S::Row).count(), 2);
        assert!(r.idle_after(3));
        assert_eq!(r.last().open_cursors(), 0);
    }
}

#[test]
fn cursor_open_fetch_last_row() {
    const CURSOR_READ_ONLY: u8 = 1;
    let ce = status::SERVER_STATUS_CURSOR_EXISTS;
    for capabilities in [BASE, DEP] {
        let dep = capabilities == DEP;
        let end = |st| if dep { ok_fe(st) } else { eof(0, st) };
        let mut c = Conv::new();
        c.cmd(prepare("SELECT id FROM t"))
            .srv(&if dep {
                vec![prepare_ok(3, 1, 0, 0), coldef("id")]
            } else {
                vec![prepare_ok(3, 1, 0, 0), coldef("id"), eof(0, AC)]
            })
            .cmd(execute(3, CURSOR_READ_ONLY))
            // Metadata, then the terminator announcing the cursor: no rows.
            .srv(&[vec![1], coldef("id"), end(AC | ce)])
            .cmd(fetch(3, 2))
            .srv(&[bin_row(&[1]), bin_row(&[2]), end(AC | ce)])
            .cmd(fetch(3, 2))
            .srv(&[bin_row(&[3]), end(AC | status::SERVER_STATUS_LAST_ROW_SENT)]);
        let r = check(capabilities, &c);
        assert!(r.idle_after(3));
        assert_eq!(r.after[3].0.open_cursors(), 1);
        assert!(r.after[3].0.cursor_open(3));
        assert!(r.idle_after(5));
        assert_eq!(r.after[5].0.open_cursors(), 1);
        assert!(r.idle_after(7));
        assert_eq!(r.last().open_cursors(), 0);
        assert_eq!(r.last().commands_completed(), 4);
    }
}

#[test]
fn cursor_closed_by_reset_and_close() {
    let ce = status::SERVER_STATUS_CURSOR_EXISTS;
    let mut c = Conv::new();
    c.cmd(execute(4, 1))
        .srv(&[vec![1], coldef("id"), eof(0, AC | ce)])
        .cmd(execute(5, 1))
        .srv(&[vec![1], coldef("id"), eof(0, AC | ce)])
        .cmd(stmt_cmd(command::COM_STMT_RESET, 4))
        .srv(&[ok(AC)])
        .cmd(stmt_cmd(command::COM_STMT_CLOSE, 5))
        .cmd(simple(command::COM_PING))
        .srv(&[ok(AC)]);
    let r = check(BASE, &c);
    assert_eq!(r.after[3].0.open_cursors(), 2);
    assert_eq!(r.after[5].0.open_cursors(), 1);
    assert!(r.after[5].0.cursor_open(5));
    assert_eq!(r.after[6].0.open_cursors(), 0);
    assert!(r.idle_after(6));
    assert_eq!(r.last().commands_completed(), 5);
}

#[test]
fn local_infile() {
    // The file data's first byte looks like COM_QUERY: it must not count as a command.
    let mut c = Conv::new();
    c.cmd(query("LOAD DATA LOCAL INFILE '/tmp/x.csv' INTO TABLE t"))
        .srv(&[{
            let mut p = vec![0xFB];
            p.extend_from_slice(b"/tmp/x.csv");
            p
        }])
        .cli(&[b"\x03,1\n2,2\n".to_vec(), b"3,3\n".to_vec()])
        .cli(&[vec![]])
        .srv(&[ok_with(0, 3, 0, AC, 0)]);
    let r = check(BASE, &c);
    assert!(r.after[1].0.in_infile() && !r.idle_after(1));
    assert!(r.after[2].0.in_infile());
    assert!(!r.after[3].0.in_infile() && r.after[3].0.in_flight());
    assert!(r.idle_after(4));
    assert_eq!(
        r.client_kinds(),
        [
            C::Command(command::COM_QUERY),
            C::InfileData,
            C::InfileData,
            C::InfileEnd
        ]
    );
    assert_eq!(r.last().commands_sent(), 1);
    assert_eq!(r.server_kinds(), [S::InfileRequest, S::Ok]);
}

#[test]
fn local_infile_in_multi_statement_then_error() {
    let mut c = Conv::new();
    c.cmd(query("SELECT 1; LOAD DATA LOCAL INFILE 'x' INTO TABLE t"))
        .srv(&[
            vec![1],
            coldef("1"),
            text_row(&[Some(b"1")]),
            ok_fe(AC | MORE),
        ])
        .srv(&[b"\xFBx".to_vec()])
        .cli(&[b"garbage".to_vec(), vec![]])
        .srv(&[err(
            1261,
            b"01000",
            "Row 1 doesn't contain data for all columns",
        )]);
    let r = check(DEP, &c);
    assert!(r.after[2].0.in_infile());
    assert!(r.idle_after(4));
    assert_eq!(r.last().errors(), 1);
}

/// 16 MiB payloads: a command and a row split over several packets, one of
/// them an exact multiple of 0xFFFFFF (followed by an empty fragment).
#[test]
fn split_packets_16mib() {
    let mut big_sql = query("SELECT '");
    big_sql.resize(MAX_PACKET as usize + 100, b'a');
    let mut exact_sql = query("SELECT '");
    exact_sql.resize(MAX_PACKET as usize, b'b');
    let big_row = text_row(&[Some(&vec![0u8; 2 * MAX_PACKET as usize])]);
    let mut c = Conv::new();
    c.cmds(&[big_sql, exact_sql])
        .srv(&[vec![1], coldef("s"), big_row.clone(), ok_fe(AC)])
        .srv(&[ok(AC)]);
    let r = check(DEP, &c);
    assert_eq!(
        r.client_kinds(),
        [
            C::Command(command::COM_QUERY),
            C::Command(command::COM_QUERY)
        ]
    );
    assert_eq!(
        r.server_kinds(),
        [S::ColumnCount, S::ColumnDef, S::Row, S::Ok, S::Ok]
    );
    assert!(r.after[1].0.in_flight() && r.idle_after(2));
    // The row's event is reported once, marked as continuing.
    let row_ev = r
        .events
        .iter()
        .find(|e| matches!(e, Ev::S(_, S::Row)))
        .unwrap();
    if let Ev::S(p, _) = row_ev {
        assert!(p.continues());
    }
}

#[test]
fn pipelined_commands_with_close_in_the_middle() {
    let mut c = Conv::new();
    c.cmds(&[
        query("SELECT 1"),
        simple(command::COM_PING),
        query("DO 1"),
        stmt_cmd(command::COM_STMT_CLOSE, 9),
        query("SET @a=1"),
    ])
    .srv(&[
        vec![1],
        coldef("1"),
        eof(0, AC),
        text_row(&[Some(b"1")]),
        eof(0, AC),
    ])
    .srv(&[ok(AC), ok(AC)])
    .srv(&[ok(AC | status::SERVER_SESSION_STATE_CHANGED)]);
    let r = check(BASE, &c);
    assert_eq!(r.after[0].0.outstanding(), 5);
    assert_eq!(r.after[0].0.commands_sent(), 5);
    let t1 = &r.after[1].0;
    assert_eq!((t1.commands_completed(), t1.outstanding()), (1, 4));
    // DO 1 done → the CLOSE behind it retires at once.
    let t2 = &r.after[2].0;
    assert_eq!((t2.commands_completed(), t2.outstanding()), (4, 1));
    assert_eq!(t2.head_command(), Some(command::COM_QUERY));
    assert!(r.idle_after(3));
    assert_eq!(r.last().commands_completed(), 5);
    assert_eq!(r.last().state_changes(), 1);
}

#[test]
fn fifo_overflow_loses_sync() {
    let pings: Vec<Vec<u8>> = (0..FIFO_CAP + 1)
        .map(|_| simple(command::COM_PING))
        .collect();
    let mut c = Conv::new();
    c.cmds(&pings).srv(&[ok(AC)]);
    let r = check(BASE, &c);
    let t = r.last();
    assert!(t.lost_sync() && !t.idle() && !r.idle_after(1));
    assert_eq!(t.lost_reason(), lost::FIFO_OVERFLOW);
    assert_eq!(r.server_kinds(), [S::Ignored]);
}

#[test]
fn err_mid_result_set_and_as_first_packet() {
    let mut c = Conv::new();
    c.cmd(query("SELECT SLEEP(10) FROM t"))
        .srv(&[
            vec![1],
            coldef("s"),
            eof(0, AC),
            text_row(&[Some(b"0")]),
            err(1317, b"70100", "Query execution was interrupted"),
        ])
        .cmd(query("SELECT * FROM nope"))
        .srv(&[err(1146, b"42S02", "Table 'test.nope' doesn't exist")])
        .cmd(simple(command::COM_PING))
        .srv(&[ok(AC)]);
    let r = check(BASE, &c);
    assert!(r.idle_after(1) && r.idle_after(3) && r.idle_after(5));
    let t = r.last();
    assert_eq!((t.errors(), t.last_error()), (2, 1146));
    assert_eq!(t.commands_completed(), 3);
    assert!(!t.lost_sync());
}

#[test]
fn close_and_long_data_need_no_response() {
    let mut c = Conv::new();
    c.cmd(prepare("INSERT INTO t VALUES (?)"))
        .srv(&[prepare_ok(6, 0, 1, 0), coldef("?")])
        .cmd(long_data(6, 0, b"chunk one"))
        .cmd(long_data(6, 0, b"chunk two"))
        .cmd(execute(6, 0))
        .srv(&[ok_with(0, 1, 0, AC, 0)])
        .cmd(long_data(6, 0, b"again"))
        .cmd(stmt_cmd(command::COM_STMT_CLOSE, 6))
        .cmd(simple(command::COM_PING))
        .srv(&[ok(AC)]);
    let r = check(DEP, &c);
    assert!(r.idle_after(2) && r.after[2].0.pending_long_data());
    assert_eq!(r.after[3].0.commands_completed(), 3);
    assert!(r.after[4].0.in_flight() && r.after[4].0.pending_long_data());
    assert!(r.idle_after(5) && !r.after[5].0.pending_long_data());
    assert!(r.after[6].0.pending_long_data());
    assert!(r.idle_after(7) && !r.after[7].0.pending_long_data());
    assert!(r.idle_after(9));
    assert_eq!(r.last().commands_completed(), 7);
}

#[test]
fn last_prepared_statement_id_minus_one() {
    // MariaDB: stmt id 0xFFFFFFFF means the statement prepared last.
    let mut c = Conv::new();
    c.cmds(&[prepare("SELECT ?"), long_data(u32::MAX, 0, b"x")])
        .srv(&[prepare_ok(11, 1, 1, 0), coldef("?"), coldef("?")])
        .cmd(stmt_cmd(command::COM_STMT_CLOSE, 11))
        .cmd(simple(command::COM_PING))
        .srv(&[ok(AC)]);
    let r = check(DEP, &c);
    assert!(r.after[1].0.pending_long_data());
    assert!(!r.last().pending_long_data());
}

#[test]
fn com_quit() {
    let mut c = Conv::new();
    c.cmd(simple(command::COM_QUIT));
    let r = check(BASE, &c);
    let t = r.last();
    assert!(t.quit_sent() && t.idle() && r.idle_after(0));
    assert_eq!((t.commands_sent(), t.commands_completed()), (1, 1));
}

#[test]
fn field_list_statistics_set_option_debug() {
    for capabilities in [BASE, DEP] {
        let dep = capabilities == DEP;
        let end = |st| if dep { ok_fe(st) } else { eof(0, st) };
        let mut field_list = vec![command::COM_FIELD_LIST];
        field_list.extend_from_slice(b"t\0");
        let mut set_option = vec![command::COM_SET_OPTION];
        set_option.extend_from_slice(&0u16.to_le_bytes());
        let mut c = Conv::new();
        c.cmd(field_list)
            .srv(&[coldef("a"), coldef("b"), end(AC)])
            .cmd(simple(command::COM_STATISTICS))
            .srv(&[b"Uptime: 10  Threads: 1  Questions: 5".to_vec()])
            .cmd(set_option)
            .srv(&[end(AC)])
            .cmd(simple(command::COM_DEBUG))
            .srv(&[end(AC)])
            .cmd(simple(command::COM_INIT_DB))
            .srv(&[ok(AC | status::SERVER_SESSION_STATE_CHANGED)]);
        let r = check(capabilities, &c);
        for i in [1, 3, 5, 7, 9] {
            assert!(r.idle_after(i), "step {i}");
        }
        assert_eq!(r.server_kinds()[3], S::Text);
        assert_eq!(r.last().commands_completed(), 5);
        assert_eq!(r.last().state_changes(), 1);
    }
}

#[test]
fn change_user_with_auth_switch() {
    let mut change_user = vec![command::COM_CHANGE_USER];
    change_user.extend_from_slice(b"u\0\x14");
    change_user.extend_from_slice(&[7u8; 20]);
    let mut switch = vec![0xFE];
    switch.extend_from_slice(b"mysql_native_password\0");
    switch.extend_from_slice(&[1u8; 20]);
    switch.push(0);
    let ce = status::SERVER_STATUS_CURSOR_EXISTS;
    let mut c = Conv::new();
    c.cmd(execute(2, 1))
        .srv(&[vec![1], coldef("id"), eof(0, AC | ce)])
        .cmd(change_user)
        .srv(&[switch])
        .cli(&[vec![0x03; 20]]) // auth data starting like COM_QUERY
        .srv(&[ok(AC)]);
    let r = check(BASE, &c);
    assert_eq!(r.after[1].0.open_cursors(), 1);
    assert!(r.after[3].0.in_auth() && !r.idle_after(3));
    assert!(r.after[4].0.in_auth());
    assert!(r.idle_after(5));
    let t = r.last();
    assert_eq!(t.open_cursors(), 0);
    assert_eq!(t.commands_sent(), 2);
    assert_eq!(
        r.client_kinds(),
        [
            C::Command(command::COM_STMT_EXECUTE),
            C::Command(command::COM_CHANGE_USER),
            C::AuthData
        ]
    );
    assert_eq!(*r.server_kinds().last().unwrap(), S::Ok);
}

#[test]
fn change_user_denied() {
    let mut c = Conv::new();
    c.cmd(vec![command::COM_CHANGE_USER, b'x', 0, 0]).srv(&[err(
        1045,
        b"28000",
        "Access denied for user 'x'",
    )]);
    let r = check(BASE, &c);
    assert!(r.idle_after(1));
    assert_eq!(r.last().last_error(), 1045);
}

#[test]
fn progress_reports_are_not_responses() {
    let caps = BASE | caps64(0, mariadb_capability::MARIADB_CLIENT_PROGRESS);
    let mut c = Conv::new();
    c.cmd(query("ALTER TABLE t ADD COLUMN c INT"))
        .srv(&[progress(1, 2, 100), progress(2, 2, 900)])
        .srv(&[ok(AC)]);
    let r = check(caps, &c);
    assert!(r.after[1].0.in_flight());
    assert!(r.idle_after(2));
    assert_eq!(r.last().errors(), 0);
    assert_eq!(r.server_kinds(), [S::Progress, S::Progress, S::Ok]);
}

#[test]
fn cache_metadata_skips_column_definitions() {
    let caps = BASE | caps64(0, mariadb_capability::MARIADB_CLIENT_CACHE_METADATA);
    let mut c = Conv::new();
    c.cmd(execute(1, 0))
        .srv(&[vec![2, 0], eof(0, AC), bin_row(&[1, 2]), eof(0, AC)])
        .cmd(execute(1, 0))
        .srv(&[
            vec![2, 1],
            coldef("a"),
            coldef("b"),
            eof(0, AC),
            bin_row(&[1, 2]),
            eof(0, AC),
        ]);
    let r = check(caps, &c);
    assert!(r.idle_after(1) && r.idle_after(3));
    let dep = DEP | caps64(0, mariadb_capability::MARIADB_CLIENT_CACHE_METADATA);
    let mut c = Conv::new();
    c.cmd(execute(1, 0))
        .srv(&[vec![2, 0], bin_row(&[1, 2]), ok_fe(AC)]);
    let r = check(dep, &c);
    assert_eq!(r.server_kinds(), [S::ColumnCount, S::Row, S::Ok]);
    assert!(r.idle_after(1));
}

#[test]
fn unsolicited_server_packets() {
    // An ERR with nothing outstanding (connection killed) does not lose sync.
    let mut c = Conv::new();
    c.srv(&[err(1927, b"70100", "Connection was killed")]);
    let r = check(BASE, &c);
    assert!(!r.last().lost_sync() && r.last().errors() == 1);
    let mut c = Conv::new();
    c.srv(&[ok(AC)]);
    let r = check(BASE, &c);
    assert!(r.last().lost_sync());
    assert_eq!(r.last().lost_reason(), lost::UNSOLICITED);
}

#[test]
fn untrackable_commands_lose_sync() {
    let mut dump = vec![command::COM_BINLOG_DUMP];
    dump.extend_from_slice(&4u32.to_le_bytes());
    let mut c = Conv::new();
    c.cmd(dump).srv(&[ok(AC)]).cmd(simple(command::COM_PING));
    let r = check(BASE, &c);
    assert!(r.last().lost_sync());
    assert_eq!(r.last().lost_reason(), lost::UNTRACKABLE_COMMAND);
    assert_eq!(r.client_kinds()[1], C::Ignored);
}

#[test]
fn table_dump_is_answered_by_one_packet() {
    // MariaDB does not know COM_TABLE_DUMP: one ERR 1047, then in sync.
    let mut c = Conv::new();
    c.cmd(simple(command::COM_TABLE_DUMP))
        .srv(&[err(1047, b"08S01", "Unknown command")])
        .cmd(simple(command::COM_PING))
        .srv(&[ok(AC)]);
    let r = check(BASE, &c);
    assert!(!r.last().lost_sync());
    assert!(r.idle_after(1) && r.idle_after(3));
}

#[test]
fn a_full_fifo_refuses_the_next_command() {
    let mut t = Tracker::new(BASE, AC);
    for i in 0..FIFO_CAP {
        assert!(t.can_take_command());
        t.on_client_packet(&PacketInfo::from_payload(i as u8, &[command::COM_PING]));
    }
    assert!(!t.can_take_command());
    assert!(!t.lost_sync());
}

#[test]
fn transaction_flags_follow_ok_packets() {
    let mut c = Conv::new();
    c.cmd(query("BEGIN"))
        .srv(&[ok(AC | status::SERVER_STATUS_IN_TRANS)])
        .cmd(query("COMMIT"))
        .srv(&[ok(AC)])
        .cmd(query("START TRANSACTION READ ONLY"))
        .srv(&[ok(AC
            | status::SERVER_STATUS_IN_TRANS
            | status::SERVER_STATUS_IN_TRANS_READONLY)]);
    let r = check(BASE, &c);
    assert!(r.after[1].0.in_transaction());
    assert!(!r.after[3].0.in_transaction());
    assert!(r.last().in_transaction());
    assert_eq!(
        r.last().status() & status::SERVER_STATUS_IN_TRANS_READONLY,
        status::SERVER_STATUS_IN_TRANS_READONLY
    );
}

/// Whole-packet callers (no framer) get the same classification.
#[test]
fn whole_packet_api_matches_streaming() {
    let mut c = Conv::new();
    c.cmds(&[query("SELECT 1"), simple(command::COM_PING)])
        .srv(&[
            vec![1],
            coldef("1"),
            eof(0, AC),
            text_row(&[Some(b"1")]),
            eof(0, AC),
            ok(AC),
        ]);
    let streamed = check(BASE, &c);
    let mut t = Tracker::new(BASE, AC);
    let mut kinds = Vec::new();
    for p in [query("SELECT 1"), simple(command::COM_PING)] {
        t.on_client_packet(&PacketInfo::from_payload(0, &p));
    }
    for (i, p) in [
        vec![1],
        coldef("1"),
        eof(0, AC),
        text_row(&[Some(b"1")]),
        eof(0, AC),
        ok(AC),
    ]
    .iter()
    .enumerate()
    {
        kinds.push(t.on_server_packet(&PacketInfo::from_payload(i as u8 + 1, p)));
    }
    assert_eq!(kinds, streamed.server_kinds());
    assert_eq!(&t, streamed.last());
}

// ----- the kernel's segment walk -------------------------------------------------

/// Feeds `server` to `t`/`f` the way the kernel's backend verdict does:
/// segment by segment (cut at `cuts`), [`walk_heads`] with a small step
/// budget, [`full_packet`], and the framer byte-wise for straddles.
fn kernel_walk(t: &mut Tracker, f: &mut Framer, server: &[u8], cuts: &[usize]) {
    let mut start = 0usize;
    let mut bounds: Vec<usize> = cuts
        .iter()
        .copied()
        .filter(|&c| c > 0 && c < server.len())
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    bounds.push(server.len());
    for end in bounds {
        let seg = &server[start..end];
        start = end;
        let len = seg.len() as u32;
        let mut off = 0u32;
        let load5 = |o: u32| {
            seg.get(o as usize..o as usize + 5)
                .map(|b| [b[0], b[1], b[2], b[3], b[4]])
        };
        let load4 = |o: u32| {
            seg.get(o as usize..o as usize + 4)
                .map(|b| [b[0], b[1], b[2], b[3]])
        };
        let load = |o: u32, buf: &mut [u8; PREFIX_LEN], n: u32| {
            let Some(src) = seg.get(o as usize..o as usize + n as usize) else {
                return 0;
            };
            buf[..src.len()].copy_from_slice(src);
            src.len()
        };
        let mut guard = 0;
        while off < len {
            guard += 1;
            assert!(guard < 100_000, "walk does not progress");
            let (o, full) = walk_heads(f, t, off, len, 7, load5);
            off = o;
            if !full {
                continue;
            }
            match full_packet(f, t, off, len, load4, load) {
                Some(o) => off = o,
                None => {
                    let win = &seg[off as usize..(off as usize + PREFIX_LEN + 4).min(seg.len())];
                    let (used, ev) = f.next_event(win);
                    if let Some(p) = ev {
                        t.on_server_packet(&p);
                    }
                    off += used as u32;
                }
            }
        }
    }
}

/// Deterministic cut points: small, odd and 64 KiB-ish segments.
fn cut_sets(total: usize) -> Vec<Vec<usize>> {
    let mut sets = vec![Vec::new(), (1..total).collect::<Vec<_>>()];
    for (seed, max) in [(7u64, 9usize), (11, 40), (13, 300), (17, 65_536)] {
        let mut x = seed;
        let mut at = 0usize;
        let mut cuts = Vec::new();
        while at < total {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            at += 1 + (x >> 33) as usize % max;
            cuts.push(at);
        }
        sets.push(cuts);
    }
    sets
}

fn result_set(seq: &mut u8, deprecate_eof: bool, rows: &[Vec<u8>], last_status: u16) -> Vec<u8> {
    let mut s = Vec::new();
    s.extend(wire(seq, &lenenc(3)));
    for name in ["a", "b", "c"] {
        s.extend(wire(seq, &coldef(name)));
    }
    if !deprecate_eof {
        s.extend(wire(seq, &eof(0, AC)));
    }
    for r in rows {
        s.extend(wire(seq, r));
    }
    if deprecate_eof {
        s.extend(wire(seq, &ok_fe(last_status)));
    } else {
        s.extend(wire(seq, &eof(0, last_status)));
    }
    s
}

#[test]
fn kernel_segment_walk_matches_the_state_machine() {
    let big = vec![b'q'; 70_000];
    let rows: Vec<Vec<u8>> = (0..60)
        .map(|i| match i % 7 {
            0 => text_row(&[Some(b"1"), Some(&big[..]), None]),
            1 => text_row(&[None, None, None]),
            _ => text_row(&[Some(b"x"), Some(&big[..i * 13]), Some(b"yz")]),
        })
        .collect();
    for caps in [DEP, BASE] {
        let dep = caps & caps64(capability::CLIENT_DEPRECATE_EOF, 0) != 0;
        // Each response answers one COM_QUERY, as the kernel forwards them.
        let mut responses: Vec<Vec<u8>> = Vec::new();
        let mut seq = 1u8;
        responses.push(result_set(&mut seq, dep, &rows, AC));
        seq = 1;
        responses.push(wire(&mut seq, &ok(AC | status::SERVER_STATUS_IN_TRANS)));
        seq = 1;
        responses.push(wire(&mut seq, &err(1064, b"42000", "syntax")));
        seq = 1;
        let mut multi = result_set(&mut seq, dep, &rows[..3], AC | MORE);
        multi.extend(result_set(&mut seq, dep, &rows[3..5], AC | MORE));
        multi.extend(wire(&mut seq, &ok(AC)));
        responses.push(multi);
        for response in &responses {
            for cuts in cut_sets(response.len()) {
                let fresh = || {
                    let mut t = Tracker::new(caps, AC);
                    t.on_client_packet(&PacketInfo::from_payload(0, &query("SELECT 1")));
                    t
                };
                let mut reference = fresh();
                let mut rf = Framer::new();
                rf.feed(response, &mut |p| {
                    reference.on_server_packet(p);
                });
                let (mut t, mut f) = (fresh(), Framer::new());
                kernel_walk(&mut t, &mut f, response, &cuts);
                assert!(reference.idle(), "reference not idle");
                assert_eq!(t, reference, "caps {caps:#x}, {} cuts", cuts.len());
                assert!(f.at_boundary());
            }
        }
    }
}

#[test]
fn kernel_path_commands() {
    assert!(kernel_path_command(&query("SELECT 1")));
    assert!(kernel_path_command(&query("select(1)")));
    assert!(kernel_path_command(&query("Insert into t values (1)")));
    assert!(kernel_path_command(&query("COMMIT")));
    assert!(kernel_path_command(&query("BEGIN")));
    assert!(kernel_path_command(&[command::COM_PING]));
    assert!(kernel_path_command(&execute(1, 0)));
    assert!(!kernel_path_command(&query("SELECTX 1")));
    assert!(!kernel_path_command(&query(
        "CREATE TEMPORARY TABLE t (a INT)"
    )));
    assert!(!kernel_path_command(&query("LOCK TABLES t WRITE")));
    assert!(!kernel_path_command(&query("SET @a = 1")));
    assert!(!kernel_path_command(&query("  SELECT 1")));
    assert!(!kernel_path_command(&prepare("SELECT ?")));
    assert!(!kernel_path_command(&simple(command::COM_QUIT)));
    assert!(!kernel_path_command(&simple(command::COM_INIT_DB)));
    assert!(!kernel_path_command(&simple(command::COM_CHANGE_USER)));
    assert!(!kernel_path_command(&simple(command::COM_RESET_CONNECTION)));
    assert!(!kernel_path_command(&stmt_cmd(command::COM_STMT_CLOSE, 1)));
    assert!(!kernel_path_command(&[]));
}
