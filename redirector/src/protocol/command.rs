//! Command-phase packets the daemon must understand or rewrite.

use bytes::Bytes;

use super::constants::capability::*;
use super::constants::command::COM_CHANGE_USER;
use super::error::{ProtocolError, Result};
use super::wire::{utf8, Reader, WriteExt};

/// COM_CHANGE_USER. The redirector re-computes the auth response for the
/// backend's scramble, so it parses and re-encodes the packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangeUser {
    pub user: String,
    pub auth_response: Bytes,
    pub database: String,
    /// Present when the client sent more than the mandatory fields.
    pub collation: Option<u16>,
    pub auth_plugin: Option<String>,
    /// Raw connect-attributes block (lenenc length included), passed on.
    pub connect_attrs: Option<Bytes>,
}

impl ChangeUser {
    /// Parses a COM_CHANGE_USER payload (command byte included) as sent by a
    /// client that negotiated `caps`.
    pub fn parse(payload: &[u8], caps: u32) -> Result<Self> {
        let mut r = Reader::new(payload);
        if r.u8("command")? != COM_CHANGE_USER {
            return Err(ProtocolError::Malformed("not a COM_CHANGE_USER packet"));
        }
        let user = utf8(r.nul_bytes("user")?, "user")?;
        let auth = if caps & CLIENT_SECURE_CONNECTION != 0 {
            let n = r.u8("auth response length")?;
            r.bytes(usize::from(n), "auth response")?
        } else {
            r.nul_bytes("auth response")?
        };
        let database = utf8(r.nul_or_eof_bytes(), "database")?;
        let mut cu = ChangeUser {
            user,
            auth_response: Bytes::copy_from_slice(auth),
            database,
            ..Default::default()
        };
        if r.remaining() >= 2 {
            cu.collation = Some(r.u16("collation")?);
            if caps & CLIENT_PLUGIN_AUTH != 0 && !r.is_empty() {
                cu.auth_plugin = Some(utf8(r.nul_or_eof_bytes(), "auth plugin")?);
            }
            if caps & CLIENT_CONNECT_ATTRS != 0 && !r.is_empty() {
                cu.connect_attrs = Some(Bytes::copy_from_slice(r.rest()));
            }
        }
        Ok(cu)
    }

    /// Encodes the packet for a backend session with capabilities `caps`.
    pub fn encode(&self, caps: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.user.len() + self.database.len());
        out.put_u8_le(COM_CHANGE_USER);
        out.put_nul_bytes(self.user.as_bytes());
        if caps & CLIENT_SECURE_CONNECTION != 0 {
            out.put_u8_le(self.auth_response.len().min(255) as u8);
            out.put_bytes_raw(&self.auth_response[..self.auth_response.len().min(255)]);
        } else {
            out.put_nul_bytes(&self.auth_response);
        }
        out.put_nul_bytes(self.database.as_bytes());
        if let Some(c) = self.collation {
            out.put_u16_le(c);
            if caps & CLIENT_PLUGIN_AUTH != 0 {
                out.put_nul_bytes(
                    self.auth_plugin
                        .as_deref()
                        .unwrap_or(super::constants::auth_plugin::MYSQL_NATIVE_PASSWORD)
                        .as_bytes(),
                );
            }
            if let (true, Some(attrs)) = (caps & CLIENT_CONNECT_ATTRS != 0, &self.connect_attrs) {
                out.put_bytes_raw(attrs);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: u32 =
        CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH | CLIENT_CONNECT_ATTRS;

    #[test]
    fn round_trip() {
        let cu = ChangeUser {
            user: "app".into(),
            auth_response: Bytes::from_static(&[7u8; 20]),
            database: "test".into(),
            collation: Some(45),
            auth_plugin: Some("mysql_native_password".into()),
            connect_attrs: Some(Bytes::from_static(&[3, 1, b'a', 0])),
        };
        let p = cu.encode(CAPS);
        assert_eq!(ChangeUser::parse(&p, CAPS).unwrap(), cu);
    }

    #[test]
    fn minimal_and_truncated() {
        let p = [COM_CHANGE_USER, b'u', 0, 0];
        let cu = ChangeUser::parse(&p, CAPS).unwrap();
        assert_eq!((cu.user.as_str(), cu.auth_response.len()), ("u", 0));
        let full = ChangeUser {
            user: "app".into(),
            auth_response: Bytes::from_static(&[1u8; 20]),
            database: "db".into(),
            collation: Some(8),
            auth_plugin: None,
            connect_attrs: None,
        }
        .encode(CAPS);
        for cut in 0..full.len() {
            // Never panics; short inputs are errors or shorter packets.
            let _ = ChangeUser::parse(&full[..cut], CAPS);
        }
        assert!(ChangeUser::parse(&[COM_CHANGE_USER, b'u'], CAPS).is_err());
    }
}
