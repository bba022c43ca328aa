//! Client authentication by the redirector: one path for the handshake and
//! for COM_CHANGE_USER, so both find accounts (and just-changed passwords)
//! the same way and ask the client for the plugin the server would.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::accounts::{Account, AccountAuth, AccountStore};
use crate::protocol::constants::auth_plugin::MYSQL_NATIVE_PASSWORD;
use crate::protocol::ed25519::{self, Ed25519Password, CLIENT_ED25519};
use crate::protocol::{verify_native_password, AuthSwitchRequest, Sha1Hash};

/// What a verified client proved, enough to log in to any backend as it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// SHA1(password), or `None` for an account without a password. It
    /// answers any backend's native scramble (the redirector never learns
    /// the plaintext of native accounts).
    pub sha1_password: Option<Sha1Hash>,
    /// An ed25519 account's (configured) password.
    pub ed25519: Option<Ed25519Password>,
}

/// How the client's login ended.
#[derive(Debug)]
pub enum Outcome {
    Verified(Proof),
    /// Unknown account or wrong password: 1045, "using password" as the
    /// client answered.
    Denied {
        using_password: bool,
    },
    /// The matched account uses a plugin the redirector cannot serve.
    Unsupported {
        account: String,
        plugin: String,
    },
}

/// The client's side of the conversation.
pub struct Client<'a> {
    pub user: &'a str,
    pub ip: IpAddr,
    /// The plugin the client's first response was made for (`None` =
    /// native: a client without CLIENT_PLUGIN_AUTH).
    pub plugin: Option<&'a str>,
    pub response: &'a [u8],
    /// The 20-byte scramble the first response answers.
    pub scramble: &'a [u8],
    /// Whether the client can follow an AuthSwitchRequest.
    pub can_switch: bool,
}

impl Client<'_> {
    fn spoke_native(&self) -> bool {
        self.plugin
            .is_none_or(|p| p.is_empty() || p == MYSQL_NATIVE_PASSWORD)
    }
}

/// The client's connection during authentication.
pub trait Conversation {
    type Error;
    /// Sends `req` and returns the client's answer.
    fn switch(
        &mut self,
        req: AuthSwitchRequest,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, Self::Error>> + Send;
}

/// Authenticates `client`. `conv.switch` sends an AuthSwitchRequest and returns
/// the client's answer (at most one switch per login, like the server).
/// An unknown account, or a password that does not verify, waits for an
/// account reload that started after the login began (shared with other
/// logins; see [`AccountStore::reload_after`]): the account may have been
/// created or changed on the backends since the last load.
pub async fn authenticate<C: Conversation>(
    accounts: &AccountStore,
    servers: &[SocketAddr],
    client: Client<'_>,
    conv: &mut C,
) -> Result<Outcome, C::Error> {
    let asked = Instant::now();
    let mut account = accounts.find(client.user, client.ip);
    let mut reloaded = false;
    if account.is_none() && accounts.may_reload(client.user) {
        accounts.reload_after(asked, servers).await;
        reloaded = true;
        account = accounts.find(client.user, client.ip);
    }
    match account {
        Some(Account {
            auth: AccountAuth::Ed25519(pw),
            ..
        }) => {
            if !client.can_switch {
                return Ok(Outcome::Unsupported {
                    account: format!("{}@%", client.user),
                    plugin: ed25519::ED25519.to_owned(),
                });
            }
            let nonce = ed25519::generate_nonce();
            let signature = conv
                .switch(AuthSwitchRequest {
                    plugin: CLIENT_ED25519.to_owned(),
                    data: nonce.to_vec(),
                })
                .await?;
            if ed25519::verify(&pw.public_key(), &nonce, &signature) {
                // The native proof too: a backend whose account is native
                // with the same password accepts it without a switch.
                return Ok(Outcome::Verified(Proof {
                    sha1_password: Some(pw.sha1_password()),
                    ed25519: Some(pw),
                }));
            }
            Ok(Outcome::Denied {
                using_password: !signature.is_empty(),
            })
        }
        Some(Account {
            name,
            auth: AccountAuth::Unsupported(plugin),
        }) => Ok(Outcome::Unsupported {
            account: name,
            plugin,
        }),
        other => {
            // Native, no valid password, or unknown: get a native answer
            // (switching a client that started with another plugin, with
            // the same scramble) and check it.
            let switched;
            let response = if client.spoke_native() || !client.can_switch {
                client.response
            } else {
                switched = conv
                    .switch(AuthSwitchRequest::native(client.scramble))
                    .await?;
                &switched[..]
            };
            let check = |a: &Option<Account>| match a {
                Some(Account {
                    auth: AccountAuth::Native(stored),
                    ..
                }) => verify_native_password(response, client.scramble, stored.as_ref()),
                _ => None,
            };
            if let Some(sha1) = check(&other) {
                return Ok(Outcome::Verified(Proof {
                    sha1_password: sha1,
                    ed25519: None,
                }));
            }
            if !reloaded && accounts.may_reload(client.user) {
                // The password may have changed on the backends.
                accounts.reload_after(asked, servers).await;
                if let Some(sha1) = check(&accounts.find(client.user, client.ip)) {
                    return Ok(Outcome::Verified(Proof {
                        sha1_password: sha1,
                        ed25519: None,
                    }));
                }
            }
            Ok(Outcome::Denied {
                using_password: !response.is_empty(),
            })
        }
    }
}
