//! The integration tests' usual setup in one piece: MariaDB servers, the
//! real daemon in front of them, and clients for its MySQL port and REST
//! API ([`Bed`]); the daemon's configuration is written by [`BedBuilder`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use mysql_async::{Conn, OptsBuilder};

use crate::admin::AdminHttp;
use crate::client;
pub use crate::daemon::Datapath;
use crate::daemon::{app_users_toml, free_ports, servers_toml, Redirector};
use crate::{MariaDb, TestBed, SVC_PASSWORD, SVC_USER};

/// Servers, a daemon in front of them, and a REST client for it. Fields
/// are public so a test can reach what the helpers do not cover (adding a
/// server to the bed, the daemon's log, its directory).
pub struct Bed {
    pub bed: TestBed,
    pub daemon: Redirector,
    /// Carries the configured token, if any.
    pub http: AdminHttp,
    /// The data path the daemon was configured with.
    pub datapath: Datapath,
}

impl Bed {
    /// Choose servers, data path, policy and configuration; then
    /// [`BedBuilder::start`].
    pub fn builder() -> BedBuilder {
        BedBuilder::default()
    }

    /// `n` servers behind a daemon with the defaults of [`BedBuilder`].
    pub fn start(n: usize) -> Result<Bed> {
        Bed::builder().servers(n).start()
    }

    /// The daemon's client address.
    pub fn addr(&self) -> SocketAddr {
        self.daemon.addr
    }

    /// The daemon's admin SQL address.
    pub fn admin_sql_addr(&self) -> SocketAddr {
        self.daemon.admin_sql_addr()
    }

    pub fn servers(&self) -> &[MariaDb] {
        self.bed.servers()
    }

    /// Client options for [`crate::APP_USER`] through the daemon.
    pub fn opts(&self) -> OptsBuilder {
        client::app_opts(self.addr())
    }

    /// Client options for `user` through the daemon.
    pub fn opts_as(&self, user: &str, password: &str) -> OptsBuilder {
        client::opts(self.addr(), user, password)
    }

    /// A session as [`crate::APP_USER`] through the daemon.
    pub async fn conn(&self) -> Result<Conn> {
        client::connect(self.addr()).await
    }

    /// A session as [`crate::APP_USER`] and the name of the server it
    /// landed on.
    pub async fn conn_on(&self) -> Result<(Conn, String)> {
        let mut c = self.conn().await?;
        let server = self.server_of(&mut c).await?;
        Ok((c, server))
    }

    /// The name of the server the session is on now.
    pub async fn server_of(&self, c: &mut Conn) -> Result<String> {
        client::server_of(c, self.servers()).await
    }

    /// The port of the server called `name`.
    pub fn port_of(&self, name: &str) -> Result<u16> {
        self.bed
            .server(name)
            .map(|s| s.port)
            .with_context(|| format!("no test server {name}"))
    }

    /// The name of the server on `port`.
    pub fn name_of_port(&self, port: u16) -> Result<String> {
        client::server_on_port(self.servers(), port).map(|s| s.name.clone())
    }

    /// Bytes the daemon counted on `datapath` (`userspace` or `ebpf`), both
    /// directions.
    pub async fn bytes_on(&self, datapath: &str) -> Result<f64> {
        let scrape = self.http.scrape().await?;
        Ok(crate::admin::samples(&scrape)
            .iter()
            .filter(|(k, _)| {
                k.starts_with("redirector_bytes_total{")
                    && k.contains(&format!("datapath={datapath}"))
            })
            .map(|(_, v)| v)
            .sum())
    }

    /// With a kernel data path configured, checks that sessions were really
    /// carried by the kernel: the daemon reports it loaded (`datapath_mode`)
    /// and the kernel's byte counters moved. Sessions report their kernel
    /// bytes at least every second and when they end, so call it after the
    /// traffic (it waits up to 3 s). A no-op for userspace beds.
    pub async fn assert_kernel_carried(&self) -> Result<()> {
        if self.datapath == Datapath::Userspace {
            return Ok(());
        }
        let scrape = self.http.scrape().await?;
        let mode = crate::admin::metric(&scrape, "redirector_datapath_mode", &[("mode", "ebpf")]);
        anyhow::ensure!(
            mode == Some(1.0),
            "datapath {} configured but the kernel path is not in use (datapath_mode{{mode=ebpf}} = {mode:?}):\n{}",
            self.datapath.as_str(),
            self.daemon.log()
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            let kernel = self.bytes_on("ebpf").await?;
            if kernel > 0.0 {
                return Ok(());
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "no byte was carried by the kernel path; daemon log:\n{}",
                self.daemon.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// Waits until the kernel carries session `id` right now (`in_kernel`
    /// in `GET /v1/sessions`): the daemon re-arms a session when it is
    /// idle, and a client that sends its next command at once can beat it
    /// (the daemon then serves that command). Tests that need the kernel to
    /// carry a command call this first. Fails, with the kernel fallbacks
    /// and the daemon log, if the session never gets there.
    /// A no-op for userspace beds.
    pub async fn wait_in_kernel(&self, id: u32) -> Result<()> {
        if self.datapath == Datapath::Userspace {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let sessions = self.http.get("/v1/sessions").await?;
            let session = sessions
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["session_id"].as_u64() == Some(u64::from(id)));
            if session.is_some_and(|s| s["in_kernel"].as_bool() == Some(true)) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                let scrape = self.http.scrape().await?;
                let fallbacks: Vec<_> = crate::admin::samples(&scrape)
                    .into_iter()
                    .filter(|(k, v)| k.starts_with("redirector_kernel_fallbacks_total") && *v > 0.0)
                    .collect();
                anyhow::bail!(
                    "session {id} never carried by the kernel: {session:?}; fallbacks {fallbacks:?}; daemon log:\n{}",
                    self.daemon.log()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The first server that is not `name`: a move target.
    pub fn other_server(&self, name: &str) -> Result<String> {
        self.servers()
            .iter()
            .find(|s| s.name != name)
            .map(|s| s.name.clone())
            .with_context(|| format!("no test server other than {name}"))
    }
}

/// The daemon's configuration for a test. Defaults: one server, the data
/// path of `REDIRECTOR_TEST_DATAPATH` (else userspace), the daemon's
/// default placement policy, the `app` and `hashonly` accounts, admin SQL
/// and REST on free loopback ports, no token.
#[derive(Debug, Clone)]
pub struct BedBuilder {
    servers: usize,
    configured: Option<usize>,
    datapath: Option<Datapath>,
    policy: Option<Policy>,
    token: Option<String>,
    admin_login: Option<(String, String)>,
    sql_address: Option<String>,
    http_address: Option<String>,
    mover_wait_timeout_s: Option<u64>,
    failover_state_tracking: bool,
    service_account: bool,
    accounts: Option<String>,
    admin_extra: String,
    extra: String,
}

#[derive(Debug, Clone)]
enum Policy {
    /// `session-round-robin` over every configured server, weight 10 each.
    RoundRobin,
    /// A scaling policy with these weights.
    Weights(String, Vec<(String, u32)>),
}

impl Default for BedBuilder {
    fn default() -> Self {
        BedBuilder {
            servers: 1,
            configured: None,
            datapath: None,
            policy: None,
            token: None,
            admin_login: None,
            sql_address: None,
            http_address: None,
            mover_wait_timeout_s: None,
            failover_state_tracking: false,
            service_account: false,
            accounts: None,
            admin_extra: String::new(),
            extra: String::new(),
        }
    }
}

impl BedBuilder {
    /// Servers to start (db1..dbN).
    pub fn servers(mut self, n: usize) -> Self {
        self.servers = n;
        self
    }

    /// Configure only the first `k` servers in the daemon; the rest are
    /// running for a test to add (CONTROL ADD SERVER, POST /v1/servers).
    pub fn configured(mut self, k: usize) -> Self {
        self.configured = Some(k);
        self
    }

    /// `[datapath] mode` (instead of the environment's).
    pub fn datapath(mut self, mode: Datapath) -> Self {
        self.datapath = Some(mode);
        self
    }

    /// Inline policy `session-round-robin` over every configured server
    /// with weight 10: placement the test can predict.
    pub fn round_robin(mut self) -> Self {
        self.policy = Some(Policy::RoundRobin);
        self
    }

    /// Inline policy `scaling` (`session-weighted`, …) with these weights.
    pub fn policy(mut self, scaling: &str, weights: &[(&str, u32)]) -> Self {
        let weights = weights.iter().map(|(n, w)| (n.to_string(), *w)).collect();
        self.policy = Some(Policy::Weights(scaling.to_string(), weights));
        self
    }

    /// `admin.token`: the REST client sends it.
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_string());
        self
    }

    /// `admin.user` / `admin.password` for the admin SQL port.
    pub fn admin_login(mut self, user: &str, password: &str) -> Self {
        self.admin_login = Some((user.to_string(), password.to_string()));
        self
    }

    /// One more `[admin]` key (a limit, a timeout); `value` is TOML as
    /// written. May be called again.
    pub fn admin_option(mut self, key: &str, value: &str) -> Self {
        self.admin_extra.push_str(&format!("{key} = {value}\n"));
        self
    }

    /// `admin.sql_address` (default: a free loopback port).
    pub fn sql_address(mut self, address: &str) -> Self {
        self.sql_address = Some(address.to_string());
        self
    }

    /// `admin.http_address` (default: a free loopback port).
    pub fn http_address(mut self, address: &str) -> Self {
        self.http_address = Some(address.to_string());
        self
    }

    /// `[mover] default_wait_timeout_s`.
    pub fn mover_wait_timeout(mut self, seconds: u64) -> Self {
        self.mover_wait_timeout_s = Some(seconds);
        self
    }

    /// `[mover] failover_state_tracking = true`.
    pub fn failover_state_tracking(mut self) -> Self {
        self.failover_state_tracking = true;
        self
    }

    /// `[auth]` with the service account, so the daemon loads accounts
    /// from the backends.
    pub fn service_account(mut self) -> Self {
        self.service_account = true;
        self
    }

    /// `[[auth.users]]` entries replacing the default `app` and `hashonly`.
    pub fn accounts(mut self, toml: &str) -> Self {
        self.accounts = Some(toml.to_string());
        self
    }

    /// More configuration, appended as given (`[tls]`, `[listen]` with
    /// `{listen}` for the free client address, …). May be called again.
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    /// The configuration text for a daemon in front of `servers`; admin
    /// ports are picked here ([`Redirector::start`] adds `[listen]`).
    pub fn config(&self, servers: &[MariaDb]) -> Result<String> {
        let mode = match self.datapath {
            Some(m) => m,
            None => Datapath::from_env()?,
        };
        let ports = free_ports(2)?;
        let sql = self
            .sql_address
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{}", ports[0]));
        let http = self
            .http_address
            .clone()
            .unwrap_or_else(|| format!("127.0.0.1:{}", ports[1]));
        let mut cfg = format!(
            "[datapath]\nmode = \"{}\"\n\n[admin]\nsql_address = \"{sql}\"\nhttp_address = \"{http}\"\n",
            mode.as_str(),
        );
        if let Some(t) = &self.token {
            cfg.push_str(&format!("token = \"{t}\"\n"));
        }
        if let Some((user, password)) = &self.admin_login {
            cfg.push_str(&format!("user = \"{user}\"\npassword = \"{password}\"\n"));
        }
        cfg.push_str(&self.admin_extra);
        cfg.push('\n');
        if self.mover_wait_timeout_s.is_some() || self.failover_state_tracking {
            cfg.push_str("[mover]\n");
            if let Some(s) = self.mover_wait_timeout_s {
                cfg.push_str(&format!("default_wait_timeout_s = {s}\n"));
            }
            if self.failover_state_tracking {
                cfg.push_str("failover_state_tracking = true\n");
            }
            cfg.push('\n');
        }
        cfg.push_str(&self.extra);
        if let Some(p) = &self.policy {
            let weights: Vec<(String, u32)> = match p {
                Policy::RoundRobin => servers.iter().map(|s| (s.name.clone(), 10)).collect(),
                Policy::Weights(_, w) => w.clone(),
            };
            let scaling = match p {
                Policy::RoundRobin => "session-round-robin",
                Policy::Weights(s, _) => s,
            };
            cfg.push_str(&policy_toml(scaling, &weights));
            cfg.push('\n');
        }
        if self.service_account {
            cfg.push_str(&format!(
                "[auth]\nservice_user = \"{SVC_USER}\"\nservice_password = \"{SVC_PASSWORD}\"\n\n"
            ));
        }
        match &self.accounts {
            Some(a) => cfg.push_str(a),
            None => cfg.push_str(&app_users_toml()),
        }
        let servers: Vec<&MariaDb> = servers.iter().collect();
        cfg.push_str(&servers_toml(&servers));
        Ok(cfg)
    }

    /// A daemon with this configuration in front of `servers` (of a bed
    /// the caller owns: a Galera cluster, or a second daemon on the same
    /// servers).
    pub fn daemon(&self, servers: &[MariaDb]) -> Result<Redirector> {
        Redirector::start(&self.config(servers)?)
    }

    /// Starts the servers and the daemon (in front of the configured ones).
    pub fn start(self) -> Result<Bed> {
        let bed = TestBed::start(self.servers)?;
        let k = self.configured.unwrap_or(self.servers).min(self.servers);
        let daemon = self.daemon(&bed.servers()[..k])?;
        let mut http = AdminHttp::new(daemon.admin_http_addr())?;
        if let Some(t) = &self.token {
            http = http.with_token(t);
        }
        let datapath = match self.datapath {
            Some(m) => m,
            None => Datapath::from_env()?,
        };
        Ok(Bed {
            bed,
            daemon,
            http,
            datapath,
        })
    }
}

/// `[policy] inline` with one resource group `default` over `weights`.
fn policy_toml(scaling: &str, weights: &[(String, u32)]) -> String {
    let clusters: Vec<String> = weights
        .iter()
        .map(|(n, w)| format!("{{\"clusterId\":\"{n}\",\"weight\":{w}}}"))
        .collect();
    format!(
        "[policy]\ninline = '{{\"version\":1,\"clusterResourceGroups\":[{{\"groupId\":\"default\",\"clusters\":[{}],\"scalingPolicy\":\"{scaling}\"}}]}}'\n",
        clusters.join(",")
    )
}

/// A self-signed certificate for `localhost` in a directory of its own,
/// removed on drop: what `[tls]` needs to terminate client TLS.
pub struct TlsCert {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsCert {
    pub fn self_signed() -> Result<TlsCert> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "redirector-tls-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, generated.cert.pem())?;
        std::fs::write(&key, generated.key_pair.serialize_pem())?;
        Ok(TlsCert { dir, cert, key })
    }

    /// The `[tls]` section naming these files.
    pub fn toml(&self) -> String {
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n\n",
            self.cert.display(),
            self.key.display()
        )
    }
}

impl Drop for TlsCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
