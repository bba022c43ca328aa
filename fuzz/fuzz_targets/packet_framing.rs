//! Packet framing over arbitrary bytes: the logical checker/parser, the
//! codec (both modes) and the raw splitting helpers must agree and never
//! panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use redirector::protocol::packet::{
    check_logical, complete_prefix_len, parse_logical, raw_packets, split_raw_packets, PacketCodec,
};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    // A small maximum so the size check is exercised too.
    let max = 1 << 16;
    let checked = check_logical(data, max);
    let parsed = parse_logical(data, max);
    match (&checked, &parsed) {
        (Ok(Some(frame)), Ok(Some((packet, used)))) => {
            assert_eq!(frame.wire_len, *used);
            assert_eq!(frame.payload_len, packet.payload.len());
        }
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
        _ => panic!("check_logical and parse_logical disagree"),
    }

    let mut codec = PacketCodec::new(max);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(p)) = codec.decode(&mut buf) {
        assert!(p.payload.len() <= max);
    }

    let mut physical = PacketCodec::physical(max);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = physical.decode(&mut buf) {}

    let prefix = complete_prefix_len(data);
    let summed: usize = raw_packets(data).map(|p| p.raw.len()).sum();
    assert_eq!(prefix, summed);
    let mut buf = BytesMut::from(data);
    let split = split_raw_packets(&mut buf).map_or(0, |b| b.len());
    assert_eq!(split, prefix);
    assert_eq!(buf.len(), data.len() - prefix);
});
