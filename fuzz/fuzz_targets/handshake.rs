//! Connection-phase parsers over arbitrary payloads, both sides: the
//! server-side parsers of what clients send (client hello, handshake
//! response, COM_CHANGE_USER), the client-side ones of what backends send
//! (greeting, auth switch, OK/ERR/EOF, session state) and the backend login
//! state machine. None may panic; whatever parses must re-encode and parse
//! back to the same essentials.
//!
//! Input: one selector byte, then the payload (seeds in `fuzz/seeds/handshake`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use redirector::protocol::command::ChangeUser;
use redirector::protocol::constants::capability::*;
use redirector::protocol::handshake::{
    parse_client_hello, AuthSwitchRequest, BackendLogin, BackendLoginParams, ClientHello,
    HandshakeResponse, InitialHandshake, LoginStep,
};
use redirector::protocol::response::{parse_session_state, EofPacket, ErrPacket, OkPacket};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let caps = CLIENT_PROTOCOL_41 | CLIENT_TRANSACTIONS | CLIENT_SESSION_TRACK;
    match selector % 10 {
        0 => {
            if let Ok(g) = InitialHandshake::parse(payload) {
                let again = InitialHandshake::parse(&g.to_payload());
                assert!(again.is_ok(), "re-encoded greeting does not parse");
            }
        }
        1 => match parse_client_hello(payload) {
            Ok(ClientHello::Response(r)) => {
                // The full parser must agree with the first-packet parser.
                assert_eq!(HandshakeResponse::parse(payload).ok().as_ref(), Some(&r));
                let again = HandshakeResponse::parse(&r.to_payload());
                assert!(again.is_ok(), "re-encoded response does not parse");
            }
            Ok(ClientHello::SslRequest(s)) => {
                assert_eq!(payload.len(), 32, "SSLRequest is exactly 32 bytes");
                assert!(s.capabilities & CLIENT_SSL != 0);
            }
            Err(_) => {}
        },
        2 => {
            if let Ok(sw) = AuthSwitchRequest::parse(payload) {
                let again = AuthSwitchRequest::parse(&sw.to_payload());
                assert_eq!(again.ok().map(|a| a.plugin), Some(sw.plugin));
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
        6 => {
            // What a client sends after TLS: the full response only.
            if let Ok(r) = HandshakeResponse::parse(payload) {
                let again = HandshakeResponse::parse(&r.to_payload())
                    .unwrap_or_else(|e| panic!("re-encoded response does not parse: {e}"));
                assert_eq!(again.user, r.user);
                assert_eq!(again.capabilities, r.capabilities);
                assert_eq!(again.collation, r.collation);
                let _ = r.needs_native_switch();
            }
        }
        7 => {
            // COM_CHANGE_USER under the client's capabilities (4 bytes).
            let Some((caps_bytes, body)) = payload.split_first_chunk::<4>() else {
                return;
            };
            let client_caps = u32::from_le_bytes(*caps_bytes);
            if let Ok(cu) = ChangeUser::parse(body, client_caps) {
                let again = ChangeUser::parse(&cu.encode(client_caps), client_caps)
                    .unwrap_or_else(|e| panic!("re-encoded COM_CHANGE_USER does not parse: {e}"));
                assert_eq!(again.user, cu.user);
                assert_eq!(again.database, cu.database);
                assert_eq!(again.collation, cu.collation);
            }
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
                // Lets a client_ed25519 switch reach the signing path.
                ed25519: Some(redirector::protocol::ed25519::Ed25519Password::new(b"pw")),
                connect_attrs: vec![("k".into(), "v".into())],
            };
            if let Ok((mut login, response)) = BackendLogin::start(greeting, params) {
                // What we send must be what a server (and we) can parse.
                let parsed = HandshakeResponse::parse(&response)
                    .unwrap_or_else(|e| panic!("our handshake response does not parse: {e}"));
                assert_eq!(parsed.user, "u");
                assert_eq!(parsed.capabilities, login.capabilities());
                assert_eq!(parsed.capabilities & (CLIENT_SSL | CLIENT_COMPRESS), 0);
                for reply in parts {
                    match login.on_packet(reply) {
                        Ok(LoginStep::Send(_)) => {}
                        Ok(LoginStep::Done(_)) | Err(_) => break,
                    }
                }
            }
        }
    }
});
