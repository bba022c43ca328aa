//! MySQL client sessions for tests (mysql_async): through the redirector,
//! straight to a server, or to the admin SQL port.
//!
//! Every connection is made with `prefer_socket(false)`: mysql_async would
//! otherwise read `@@socket` after login and reconnect over the backend's
//! unix socket, and the test would silently bypass the redirector.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use mysql_async::prelude::*;
use mysql_async::{Conn, OptsBuilder};

use crate::{MariaDb, APP_PASSWORD, APP_USER, TEST_DB};

/// Options for `user` / `password` at `addr`, default database [`TEST_DB`].
pub fn opts(addr: SocketAddr, user: &str, password: &str) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some(user))
        .pass(Some(password))
        .db_name(Some(TEST_DB))
        .prefer_socket(false)
}

/// Options for the [`APP_USER`] account at `addr`.
pub fn app_opts(addr: SocketAddr) -> OptsBuilder {
    opts(addr, APP_USER, APP_PASSWORD)
}

/// Options for the admin SQL port: no default database, and `password`
/// `None` sends none (the login tests need both cases).
pub fn admin_opts(addr: SocketAddr, user: &str, password: Option<&str>) -> OptsBuilder {
    OptsBuilder::default()
        .ip_or_hostname(addr.ip().to_string())
        .tcp_port(addr.port())
        .user(Some(user))
        .pass(password)
        .prefer_socket(false)
}

/// A session as [`APP_USER`] at `addr`.
pub async fn connect(addr: SocketAddr) -> Result<Conn> {
    Conn::new(app_opts(addr))
        .await
        .with_context(|| format!("{APP_USER} login at {addr}"))
}

/// `@@port` of the server the session is on now: after a move it names the
/// new server, because the redirector keeps the client connection.
pub async fn port(c: &mut Conn) -> Result<u16> {
    c.query_first("SELECT @@port")
        .await?
        .context("SELECT @@port returned no row")
}

/// The name of the server (of `servers`) the session is on now.
pub async fn server_of(c: &mut Conn, servers: &[MariaDb]) -> Result<String> {
    let port = port(c).await?;
    server_on_port(servers, port).map(|s| s.name.clone())
}

/// The server of `servers` listening on `port`.
pub fn server_on_port(servers: &[MariaDb], port: u16) -> Result<&MariaDb> {
    servers
        .iter()
        .find(|s| s.port == port)
        .with_context(|| format!("no test server on port {port}"))
}

/// The redirector's session id of `c`: the connection id it gave the client
/// (the REST API and admin SQL list sessions by it).
pub fn session_id(c: &Conn) -> u64 {
    u64::from(c.id())
}
