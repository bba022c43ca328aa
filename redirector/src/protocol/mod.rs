//! MySQL/MariaDB wire protocol: packet framing, the connection-phase
//! handshake (both sides), `mysql_native_password` and generic response
//! packets.
//!
//! Everything that parses peer input is a pure function over `&[u8]`
//! returning [`ProtocolError`]; nothing here panics on malformed input, so
//! the parsers can be fuzzed directly.

pub mod auth;
pub mod command;
pub mod constants;
pub mod ed25519;
pub mod error;
pub mod handshake;
#[cfg(feature = "daemon")]
pub mod io;
pub mod kill;
pub mod packet;
pub mod response;
pub mod wire;

pub use auth::{
    double_sha1, format_native_hash, generate_scramble, parse_native_hash, recover_sha1_password,
    scramble_response, sha1_password, verify_native_password, Sha1Hash, SCRAMBLE_LEN,
};
pub use error::ProtocolError;
pub use handshake::{
    parse_client_hello, parse_native_auth_response, AuthSwitchRequest, BackendLogin,
    BackendLoginParams, ClientHello, GreetingTemplate, HandshakeResponse, InitialHandshake,
    LoginStep, SslRequest, DEFAULT_SERVER_VERSION,
};
#[cfg(feature = "daemon")]
pub use io::{PacketIo, PacketIoError};
pub use packet::{
    check_logical, complete_prefix_len, frame_len, parse_logical, raw_packets, split_raw_packet,
    split_raw_packets, write_packet, Packet, PacketCodec, PacketHeader, RawPacket, RawPackets,
    HEADER_LEN, MAX_FRAGMENT,
};
pub use response::{
    is_eof, parse_session_state, text_result_set, ColumnDefinition, EofPacket, ErrPacket, OkPacket,
    SessionStateChange,
};

#[cfg(test)]
mod robustness_tests {
    //! A cheap stand-in for the cargo-fuzz targets in `fuzz/`: random and
    //! mutated-valid inputs through every parser; the test passes when none
    //! panics and whatever parses re-encodes to something parsable.
    use super::constants::capability::*;
    use super::*;
    use bytes::BytesMut;
    use rand::{Rng, SeedableRng};
    use tokio_util::codec::Decoder;

    fn seeds() -> Vec<Vec<u8>> {
        let g = InitialHandshake::for_client(
            "10.11.6-MariaDB-redirector",
            7,
            0xF7FE | 0x81FF << 16,
            0x1D,
            45,
            2,
        );
        let resp = HandshakeResponse {
            capabilities: CLIENT_PROTOCOL_41
                | CLIENT_SECURE_CONNECTION
                | CLIENT_PLUGIN_AUTH
                | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
                | CLIENT_CONNECT_WITH_DB
                | CLIENT_CONNECT_ATTRS,
            user: "app".into(),
            auth_response: vec![1u8; 20].into(),
            database: Some("db".into()),
            auth_plugin: Some("caching_sha2_password".into()),
            connect_attrs: vec![("a".into(), "b".into())],
            ..Default::default()
        };
        let ok = OkPacket {
            affected_rows: 1,
            status: 0x4002,
            info: bytes::Bytes::from_static(b"x"),
            session_state: Some(bytes::Bytes::from_static(b"\x01\x03\x02db")),
            ..Default::default()
        };
        let mut okp = Vec::new();
        ok.encode(CLIENT_PROTOCOL_41 | CLIENT_SESSION_TRACK, &mut okp);
        vec![
            g.to_payload(),
            resp.to_payload(),
            AuthSwitchRequest::native(&g.scramble).to_payload(),
            okp,
            ErrPacket::bad_handshake().to_payload(CLIENT_PROTOCOL_41),
        ]
    }

    #[test]
    fn random_and_mutated_inputs_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5EED);
        let seeds = seeds();
        let caps = CLIENT_PROTOCOL_41 | CLIENT_TRANSACTIONS | CLIENT_SESSION_TRACK;
        let mut parsed = 0usize;
        for i in 0..20_000 {
            let mut input = if i % 4 == 0 {
                (0..rng.random_range(0..64))
                    .map(|_| rng.random())
                    .collect::<Vec<u8>>()
            } else {
                seeds[i % seeds.len()].clone()
            };
            for _ in 0..rng.random_range(1..4) {
                if input.is_empty() {
                    break;
                }
                let at = rng.random_range(0..input.len());
                match rng.random_range(0..3) {
                    0 => input[at] = rng.random(),
                    1 => input.truncate(at),
                    _ => input.insert(at, rng.random()),
                }
            }
            if let Ok(g) = InitialHandshake::parse(&input) {
                parsed += 1;
                let _ = InitialHandshake::parse(&g.to_payload());
            }
            if let Ok(ClientHello::Response(r)) = parse_client_hello(&input) {
                parsed += 1;
                assert!(HandshakeResponse::parse(&r.to_payload()).is_ok());
            }
            if let Ok(sw) = AuthSwitchRequest::parse(&input) {
                assert!(AuthSwitchRequest::parse(&sw.to_payload()).is_ok());
            }
            if let Ok(ok) = OkPacket::parse(&input, caps) {
                let _ = ok.session_changes();
            }
            let _ = ErrPacket::parse(&input);
            let _ = EofPacket::parse(&input, caps);
            let _ = parse_session_state(&input);
            // The same bytes as a framed stream.
            let mut codec = PacketCodec::new(1 << 12);
            let mut buf = BytesMut::from(&input[..]);
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
            assert_eq!(
                complete_prefix_len(&input),
                raw_packets(&input).map(|p| p.raw.len()).sum::<usize>()
            );
        }
        // The mutations must leave a fair share of inputs parsable, or the
        // test would only exercise the first few bytes of each parser.
        assert!(parsed > 1_000, "only {parsed} inputs parsed");
    }
}
