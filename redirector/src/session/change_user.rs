//! COM_CHANGE_USER: the redirector checks the client's response against
//! its own scramble (the one client-auth path, `crate::auth`), then
//! re-authenticates on the backend with the client's SHA1(password) and
//! the backend's scramble. The client only sees the final OK or ERR.

use bytes::BytesMut;
use redirector_common::mysql;

use super::core::Core;
use super::relay::{write_packet, Pair, RelayError};
use crate::protocol::command::ChangeUser;
use crate::protocol::constants::capability::CLIENT_PLUGIN_AUTH;
use crate::protocol::ed25519::{CLIENT_ED25519, NONCE_LEN};
use crate::protocol::{self, scramble_response, ErrPacket, PacketHeader, PacketIo, PacketIoError};

fn client_err(e: PacketIoError) -> RelayError {
    match e {
        PacketIoError::Io(e) => RelayError::Client(e),
        PacketIoError::Protocol(p) => RelayError::Protocol(p),
        PacketIoError::Closed => RelayError::Client(std::io::ErrorKind::UnexpectedEof.into()),
    }
}

fn backend_err(e: PacketIoError) -> RelayError {
    match e {
        PacketIoError::Io(e) => RelayError::Backend(e),
        PacketIoError::Protocol(p) => RelayError::Protocol(p),
        PacketIoError::Closed => RelayError::BackendClosed,
    }
}

/// The client's side of an auth switch during COM_CHANGE_USER.
struct Conv<'a> {
    client: &'a mut crate::net::ClientStream,
    seq: &'a mut u8,
}

impl crate::auth::Conversation for Conv<'_> {
    type Error = RelayError;

    async fn switch(&mut self, req: protocol::AuthSwitchRequest) -> Result<Vec<u8>, RelayError> {
        write_packet(self.client, *self.seq, &req.to_payload())
            .await
            .map_err(RelayError::Client)?;
        let mut io = PacketIo::new(&mut *self.client);
        let p = io.read(1 << 20).await.map_err(client_err)?;
        if !io.buf.is_empty() {
            return Err(RelayError::Protocol(protocol::ProtocolError::Malformed(
                "data after the auth switch response",
            )));
        }
        *self.seq = p.seq.wrapping_add(1);
        Ok(p.payload.to_vec())
    }
}

/// Carries out the held COM_CHANGE_USER `packet` (everything before it is
/// answered). A refused change keeps the session as the old user, like
/// MariaDB; a malformed one ends the session.
pub async fn run(core: &mut Core, pair: &mut Pair, packet: BytesMut) -> Result<(), RelayError> {
    let header = PacketHeader::parse(&packet).unwrap_or(PacketHeader { len: 0, seq: 0 });
    let reply_seq = header.seq.wrapping_add(1);
    let caps = core.login.capabilities;
    let mut cu = match ChangeUser::parse(packet.get(4..).unwrap_or(&[]), caps) {
        Ok(cu) => cu,
        Err(_) => {
            write_packet(
                &mut pair.client,
                reply_seq,
                &ErrPacket::bad_handshake().to_payload(caps),
            )
            .await
            .map_err(RelayError::Client)?;
            return Err(RelayError::Protocol(protocol::ProtocolError::Malformed(
                "COM_CHANGE_USER",
            )));
        }
    };
    let servers = core.ctx.server_addresses();
    // Like the server: the account decides the plugin; a client that named
    // another one (caching_sha2_password from MySQL 8 connectors) or an
    // ed25519 account gets an AuthSwitchRequest, and the final answer
    // follows the client's switch response.
    let mut seq = reply_seq;
    let client = crate::auth::Client {
        user: &cu.user,
        ip: core.session.client_addr.ip(),
        plugin: cu.auth_plugin.as_deref(),
        response: &cu.auth_response,
        scramble: &core.login.client_scramble,
        can_switch: caps & CLIENT_PLUGIN_AUTH != 0,
    };
    let mut conv = Conv {
        client: &mut pair.client,
        seq: &mut seq,
    };
    let outcome =
        crate::auth::authenticate(&core.ctx.accounts, &servers, client, &mut conv).await?;
    let reply_seq = seq;
    let refusal = match outcome {
        crate::auth::Outcome::Verified(p) => Ok(p),
        crate::auth::Outcome::Unsupported { account, plugin } => {
            Err(ErrPacket::unsupported_plugin(&account, &plugin))
        }
        crate::auth::Outcome::Denied { using_password } => Err(ErrPacket::access_denied(
            &cu.user,
            &core.session.client_addr.ip().to_string(),
            using_password,
        )),
    };
    let proof = match refusal {
        Ok(p) => p,
        Err(err) => {
            // Like MariaDB: refuse, and keep the session as the old user.
            // The packet never reached the backend or the state machine.
            write_packet(&mut pair.client, reply_seq, &err.to_payload(caps))
                .await
                .map_err(RelayError::Client)?;
            core.ctx.metrics.auth_failure();
            return Ok(());
        }
    };
    let sha1 = proof.sha1_password;
    let backend_scramble = &core.login.backend_scramble;
    cu.auth_response = match &sha1 {
        Some(pw) => bytes::Bytes::copy_from_slice(&scramble_response(
            pw,
            &backend_scramble[..20.min(backend_scramble.len())],
        )),
        None => bytes::Bytes::new(),
    };
    cu.auth_plugin = Some(protocol::constants::auth_plugin::MYSQL_NATIVE_PASSWORD.to_string());
    core.proto.feed_client(&packet);
    let mut io = PacketIo::new(&mut pair.backend);
    io.write(0, &cu.encode(caps))
        .await
        .map_err(RelayError::Backend)?;
    // The backend may answer with an AuthSwitchRequest (new scramble): we
    // answer it ourselves.
    let mut switched = false;
    let p = loop {
        let p = io.read(1 << 20).await.map_err(backend_err)?;
        match p.payload.first() {
            Some(0xfe) if !switched => {
                switched = true;
                let sw = protocol::AuthSwitchRequest::parse(&p.payload)?;
                let data = if sw.plugin == CLIENT_ED25519 {
                    match (&proof.ed25519, sw.data.len() == NONCE_LEN) {
                        (Some(pw), true) => pw.sign(&sw.data).to_vec(),
                        _ => Vec::new(),
                    }
                } else {
                    match (&sha1, sw.data.get(..20)) {
                        (Some(pw), Some(salt)) => scramble_response(pw, salt).to_vec(),
                        _ => Vec::new(),
                    }
                };
                io.write(p.seq.wrapping_add(1), &data)
                    .await
                    .map_err(RelayError::Backend)?;
            }
            _ => break p,
        }
    };
    if io.into_inner_if_drained().is_none() {
        return Err(RelayError::Protocol(protocol::ProtocolError::Malformed(
            "data after the COM_CHANGE_USER reply",
        )));
    }
    let info = mysql::PacketInfo::from_payload(reply_seq, &p.payload);
    core.proto.tracker.on_server_packet(&info);
    write_packet(&mut pair.client, reply_seq, &p.payload)
        .await
        .map_err(RelayError::Client)?;
    if p.payload.first() == Some(&0x00) {
        let database = (!cu.database.is_empty()).then(|| cu.database.clone());
        core.login.user = cu.user.clone();
        core.login.sha1_password = sha1;
        core.session.set_user(&cu.user);
        core.session.set_schema(database.clone());
        core.statements = Default::default();
        core.hints.reset();
        if let Some(mut params) = core.session.login_params() {
            params.user = cu.user.clone();
            params.sha1_password = sha1;
            params.ed25519 = proof.ed25519.clone();
            params.database = database;
            core.session.set_login_params(params);
        }
    }
    core.publish();
    Ok(())
}
