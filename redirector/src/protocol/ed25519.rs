//! MariaDB's `ed25519` authentication plugin (client side `client_ed25519`).
//!
//! The server sends a 32-byte nonce; the client signs it with an Ed25519
//! key whose expanded secret is SHA-512(password) (the password takes the
//! place of the standard 32-byte seed); the server stores the public key,
//! base64 without padding, in `mysql.user.authentication_string`.
//! Signatures are standard Ed25519, so `ed25519-dalek` verifies them, and
//! its hazmat layer signs from the expanded key.

use std::fmt;

use base64::Engine;
use ed25519_dalek::hazmat::{raw_sign, ExpandedSecretKey};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use rand::Rng;
use sha2::{Digest, Sha512};

/// The client-side plugin name in AuthSwitchRequest / handshake packets.
pub const CLIENT_ED25519: &str = "client_ed25519";
/// The server-side plugin name in `mysql.user.plugin`.
pub const ED25519: &str = "ed25519";
/// Length of the nonce the server sends.
pub const NONCE_LEN: usize = 32;
/// Length of the client's answer (an Ed25519 signature).
pub const SIGNATURE_LEN: usize = 64;

/// An ed25519 account's password, kept as the expanded secret key it
/// derives (all that signing needs) and the public key.
#[derive(Clone, PartialEq, Eq)]
pub struct Ed25519Password {
    expanded: [u8; 64],
    public: [u8; 32],
    /// SHA1(password), for a backend whose account is native instead.
    sha1: super::auth::Sha1Hash,
}

impl fmt::Debug for Ed25519Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ed25519Password(<redacted>)")
    }
}

impl Ed25519Password {
    pub fn new(password: &[u8]) -> Self {
        let expanded: [u8; 64] = Sha512::digest(password).into();
        // from_bytes clamps the scalar half as the reference code does.
        let esk = ExpandedSecretKey::from_bytes(&expanded);
        let public = VerifyingKey::from(&esk).to_bytes();
        Self {
            expanded,
            public,
            sha1: super::auth::sha1_password(password),
        }
    }

    /// SHA1(password): the native proof of the same password.
    pub fn sha1_password(&self) -> super::auth::Sha1Hash {
        self.sha1
    }

    /// The public key, as the server stores it (decoded).
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The plugin's answer to the server's `nonce`.
    pub fn sign(&self, nonce: &[u8]) -> [u8; SIGNATURE_LEN] {
        let esk = ExpandedSecretKey::from_bytes(&self.expanded);
        let vk = VerifyingKey::from(&esk);
        raw_sign::<Sha512>(&esk, nonce, &vk).to_bytes()
    }
}

/// Whether `signature` is `public_key`'s signature of `nonce`.
pub fn verify(public_key: &[u8; 32], nonce: &[u8], signature: &[u8]) -> bool {
    let Ok(sig) = <&[u8; SIGNATURE_LEN]>::try_from(signature) else {
        return false;
    };
    let Ok(vk) = VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    vk.verify(nonce, &Signature::from_bytes(sig)).is_ok()
}

/// Decodes `mysql.user.authentication_string` of an ed25519 account (43
/// base64 characters without padding; padding tolerated).
pub fn parse_public_key(s: &str) -> Option<[u8; 32]> {
    let s = s.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(s)
        .ok()?;
    bytes.try_into().ok()
}

/// A fresh nonce for a client.
pub fn generate_nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    rand::rng().fill(&mut n[..]);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_round_trip() {
        let pw = Ed25519Password::new(b"secret");
        let nonce = generate_nonce();
        let sig = pw.sign(&nonce);
        assert!(verify(&pw.public_key(), &nonce, &sig));
        assert!(!verify(&pw.public_key(), &[0u8; 32], &sig));
        let other = Ed25519Password::new(b"secreT");
        assert!(!verify(&other.public_key(), &nonce, &sig));
        assert!(!verify(&pw.public_key(), &nonce, &sig[..63]));
    }

    #[test]
    fn public_key_matches_mariadb() {
        // SELECT ed25519_password('secret') on MariaDB 10.11.
        let stored = "ZIgUREUg5PVgQ6LskhXmO+eZLS0nC8be6HPjYWR4YJY";
        assert_eq!(
            parse_public_key(stored),
            Some(Ed25519Password::new(b"secret").public_key())
        );
        assert_eq!(parse_public_key("not base64!"), None);
        assert_eq!(parse_public_key("AAAA"), None);
    }
}
