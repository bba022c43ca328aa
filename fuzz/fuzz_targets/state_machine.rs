//! The shared no_std MySQL state machine (`redirector_common::mysql::Session`,
//! run by the eBPF programs and the userspace relay) over arbitrary traffic,
//! delivered in arbitrary chunks and interleavings.
//!
//! Input: 8 bytes of negotiated capabilities (little endian), then segments
//! of one header byte (bit 7: 1 = server → client, 0 = client → server; low
//! 7 bits: length) and that many bytes. Seeds in `fuzz/seeds/state_machine`
//! are real sessions captured from MariaDB 10.11.
//!
//! Checked: no panic; after every chunk, when sync is not lost, `idle()` is
//! consistent with the command FIFO and the counters; lost sync is sticky;
//! and chunking does not matter: a second session fed each same-direction
//! run in one piece sees the same packets and ends in the same state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redirector_common::mysql::{status, ClientPacket, ServerPacket, Session, FIFO_CAP};

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Client(ClientPacket),
    Server(ServerPacket),
}

fn check(s: &Session, was_lost: bool) {
    let t = &s.tracker;
    if was_lost {
        assert!(t.lost_sync(), "lost sync is not sticky");
    }
    if t.lost_sync() {
        assert!(
            !t.idle() && !s.idle(),
            "a lost session must never look idle"
        );
        return;
    }
    assert!(t.outstanding() as usize <= FIFO_CAP);
    assert_eq!(
        t.idle(),
        t.outstanding() == 0 && !t.in_infile(),
        "tracker idle() disagrees with outstanding()={} in_infile={}",
        t.outstanding(),
        t.in_infile()
    );
    if s.idle() {
        assert_eq!(t.outstanding(), 0, "idle session with commands outstanding");
        assert!(!t.in_flight() && !t.in_auth());
    }
    assert_eq!(t.in_flight(), t.outstanding() != 0);
    assert_eq!(
        t.commands_sent().wrapping_sub(t.commands_completed()),
        t.outstanding(),
        "sent - completed != outstanding"
    );
}

/// Feeds one direction, recording the classified packets.
fn feed(s: &mut Session, server: bool, chunk: &[u8], events: &mut Vec<Event>) {
    if server {
        s.feed_server_with(chunk, &mut |_, k| events.push(Event::Server(k)));
    } else {
        s.feed_client_with(chunk, &mut |_, k| events.push(Event::Client(k)));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((caps, mut rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let caps = u64::from_le_bytes(*caps);
    let mut chunked = Session::new(caps, status::SERVER_STATUS_AUTOCOMMIT);
    let mut whole = chunked;
    let mut chunked_events = Vec::new();
    let mut whole_events = Vec::new();
    // The current same-direction run, fed to `whole` in one piece when the
    // direction changes (or at the end).
    let mut run: Vec<u8> = Vec::new();
    let mut run_server = false;

    while let Some((&header, tail)) = rest.split_first() {
        let server = header & 0x80 != 0;
        let len = usize::from(header & 0x7f).min(tail.len());
        let (chunk, tail) = tail.split_at(len);
        rest = tail;

        if server != run_server && !run.is_empty() {
            feed(&mut whole, run_server, &run, &mut whole_events);
            run.clear();
            assert_eq!(
                whole, chunked,
                "state depends on how the bytes were chunked"
            );
            assert_eq!(whole_events, chunked_events);
        }
        run_server = server;
        run.extend_from_slice(chunk);

        let was_lost = chunked.tracker.lost_sync();
        feed(&mut chunked, server, chunk, &mut chunked_events);
        check(&chunked, was_lost);
    }
    feed(&mut whole, run_server, &run, &mut whole_events);
    assert_eq!(
        whole, chunked,
        "state depends on how the bytes were chunked"
    );
    assert_eq!(whole_events, chunked_events);
});
