//! Client authentication by the redirector: one path for the handshake and
//! for COM_CHANGE_USER, so both find a just-changed password the same way.

use std::net::SocketAddr;

use crate::accounts::{AccountStore, StoredHash};
use crate::protocol::{verify_native_password, Sha1Hash};

/// What a verified client proved: SHA1(password), or `None` for an account
/// without a password. It answers any backend's scramble (the redirector
/// never learns the plaintext).
pub type Proof = Option<Sha1Hash>;

/// Checks `user`'s mysql_native_password `response` to our `scramble`.
/// `servers` are where accounts are loaded from. A response that does not
/// match the stored hash triggers one (rate-limited) reload: the password
/// may have changed on the backends since we loaded it. `None` = refused.
pub async fn verify(
    accounts: &AccountStore,
    servers: &[SocketAddr],
    user: &str,
    response: &[u8],
    scramble: &[u8],
) -> Option<Proof> {
    let check = |stored: Option<StoredHash>| {
        stored.and_then(|s| verify_native_password(response, scramble, s.as_ref()))
    };
    if let Some(proof) = check(accounts.lookup(user, servers).await) {
        return Some(proof);
    }
    let fresh = accounts.refresh(user, servers).await?;
    check(Some(fresh))
}
