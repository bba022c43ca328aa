//! Connection-phase parsers over arbitrary payloads: greeting, client
//! hello, auth switch, OK/ERR/EOF, session state, and the backend login
//! state machine. None may panic; whatever parses must re-encode and parse
//! back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use redirector::protocol::constants::capability::*;
use redirector::protocol::handshake::{
    parse_client_hello, AuthSwitchRequest, BackendLogin, BackendLoginParams, ClientHello,
    HandshakeResponse, InitialHandshake,
};
use redirector::protocol::response::{parse_session_state, EofPacket, ErrPacket, OkPacket};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let caps = CLIENT_PROTOCOL_41 | CLIENT_TRANSACTIONS | CLIENT_SESSION_TRACK;
    match selector % 8 {
        0 => {
            if let Ok(g) = InitialHandshake::parse(payload) {
                let _ = InitialHandshake::parse(&g.to_payload());
            }
        }
        1 => {
            if let Ok(ClientHello::Response(r)) = parse_client_hello(payload) {
                let again = HandshakeResponse::parse(&r.to_payload());
                assert!(again.is_ok(), "re-encoded response does not parse");
            }
        }
        2 => {
            if let Ok(sw) = AuthSwitchRequest::parse(payload) {
                assert!(AuthSwitchRequest::parse(&sw.to_payload()).is_ok());
            }
        }
        3 => {
            if let Ok(ok) = OkPacket::parse(payload, caps) {
                let _ = ok.session_changes();
            }
            let _ = EofPacket::parse(payload, caps);
        }
        4 => {
            if let Ok(e) = ErrPacket::parse(payload) {
                let _ = e.to_string();
            }
        }
        5 => {
            let _ = parse_session_state(payload);
        }
        _ => {
            // Greeting then any number of server replies, split at 0xAA bytes.
            let mut parts = payload.split(|&b| b == 0xAA);
            let Some(greeting) = parts.next() else { return };
            let params = BackendLoginParams {
                capabilities: u32::MAX,
                mariadb_capabilities: u32::MAX,
                max_packet_size: 1 << 24,
                collation: 45,
                user: "u".into(),
                database: Some("d".into()),
                sha1_password: Some([7; 20]),
                connect_attrs: vec![("k".into(), "v".into())],
            };
            if let Ok((mut login, _)) = BackendLogin::start(greeting, params) {
                for reply in parts {
                    if login.on_packet(reply).is_err() {
                        break;
                    }
                }
            }
        }
    }
});
