//! The daemon: builds the [`App`], binds the listener, runs the background
//! tasks (health checks, the drain sweep) and serves each client until
//! SIGTERM/SIGINT.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::app::App;
use crate::backend;
use crate::config::Config;
use crate::datapath::local_app::LocalApp;
use crate::protocol::{GreetingTemplate, PacketIo};

/// How often servers are probed.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// How long a graceful stop waits for sessions to end on their own.
const DRAIN_ON_STOP: Duration = Duration::from_secs(5);

/// Connections the client listener queues before they are accepted.
const LISTEN_BACKLOG: u32 = 1024;

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let address = config.listen.address;
    // Bound at once, so a taken address fails the start before anything
    // else; listening only once every service a session uses is up.
    let socket = bind_client_socket(address)?;
    // The data path first: a client accepted before the kernel programs are
    // attached would never be carried by them.
    let app = build_app(config)?;
    let services = Services::start(&app).await?;
    let listener = socket
        .listen(LISTEN_BACKLOG)
        .with_context(|| format!("listening on {address}"))?;
    accept_loop(listener, app, services, shutdown_signal()).await
}

/// The client socket, bound but not yet listening: until it listens,
/// connection attempts are refused, not queued for a daemon still starting.
fn bind_client_socket(address: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpSocket> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .context("creating the client socket")?;
    // As std's listeners: a restart can bind while old connections linger.
    socket
        .set_reuseaddr(true)
        .context("setting SO_REUSEADDR on the client socket")?;
    socket
        .bind(address)
        .with_context(|| format!("binding the listener on {address}"))?;
    Ok(socket)
}

/// The daemon-wide state for a validated configuration, with the kernel
/// path loaded if `datapath.mode` asks for it.
pub fn build_app(config: Config) -> anyhow::Result<Arc<App>> {
    let kernel = load_datapath(&config)?;
    Ok(Arc::new(App::build(config, kernel)?))
}

/// Starts the daemon's services, then accepts clients on `listener` until
/// `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let services = Services::start(&app).await?;
    accept_loop(listener, app, services, shutdown).await
}

/// What must run before the first client is accepted: the admin listeners,
/// the greeting learnt from a backend (the version clients see), the
/// accounts, and the background tasks.
struct Services {
    _admin_http: crate::admin::http::HttpServer,
    _admin_sql: crate::admin::sql::SqlServer,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Services {
    async fn start(app: &Arc<App>) -> anyhow::Result<Self> {
        // One back-off for both surfaces: guesses count per address wherever made.
        let throttle = Arc::new(crate::admin::throttle::AuthThrottle::new(
            &app.config.admin.limits,
            app.metrics.clone(),
        ));
        let admin_http = crate::admin::http::start(app.clone(), throttle.clone()).await?;
        let admin_sql = crate::admin::sql::start(app.clone(), throttle).await?;
        learn_greeting(app).await;
        if let Err(e) = app.accounts.reload(&app.server_addresses()).await {
            tracing::warn!(error = %e, "could not load accounts from the backends (will retry on demand)");
        }
        let tasks = vec![
            tokio::spawn(backend::health_loop(app.backends.clone(), HEALTH_INTERVAL)),
            tokio::spawn(crate::mover::drain_sweep(app.clone())),
            tokio::spawn(trim_loop(app.clone())),
        ];
        Ok(Self {
            _admin_http: admin_http,
            _admin_sql: admin_sql,
            tasks,
        })
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Accepts clients on `listener` until `shutdown` completes, then gives the
/// sessions [`DRAIN_ON_STOP`] to end.
async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    services: Services,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    tracing::info!(address = %local, servers = app.backends.all().len(), "redirector listening");
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: keep serving the sessions we
                        // have, retry shortly.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let app = app.clone();
                tasks.spawn(async move { crate::front::serve_client(app, stream, peer).await });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    tracing::info!(
        sessions = app.sessions.len(),
        "stopping: no new connections; waiting for sessions to end"
    );
    let deadline = tokio::time::sleep(DRAIN_ON_STOP);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            next = tasks.join_next() => if next.is_none() { break },
        }
    }
    if !tasks.is_empty() {
        tracing::info!(sessions = tasks.len(), "closing remaining sessions");
        tasks.shutdown().await;
    }
    drop(services);
    tracing::info!("stopped");
    Ok(())
}

/// One glibc malloc arena per runtime worker thread. glibc's default (one
/// per thread that ever contended, up to 8 per core) gave the main thread,
/// which only waits for shutdown after start, an arena of its own; each
/// arena keeps pages pinned by a few live chunks after a burst of sessions
/// ends. Measured over four 20 s churns of 200 clients: resident memory
/// after each churn grew 13.2 → 14.4 → 15.4 → 14.8 MiB with three arenas,
/// 12.3 → 12.7 → 12.9 → 13.1 MiB with two. Each worker still has an arena
/// of its own, so allocations do not contend.
pub fn limit_malloc_arenas(workers: usize) {
    let arenas = libc::c_int::try_from(workers.max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets an allocator parameter; called before any
    // thread but the main one exists.
    if unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) } != 1 {
        tracing::warn!(arenas, "could not limit the malloc arenas");
    }
}

/// Gives memory freed by ended sessions back to the system. glibc keeps
/// what a burst of sessions freed in its per-thread arenas (after a churn
/// of 200 clients the daemon stayed at 22 MiB resident against 9 MiB
/// before it); `malloc_trim` releases the free pages of every arena. It
/// runs when many sessions ended since the last look, not on every close.
async fn trim_loop(app: Arc<App>) {
    const TRIM_CHECK: Duration = Duration::from_secs(2);
    const ENDED: usize = 16;
    let mut tick = tokio::time::interval(TRIM_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peak = 0usize;
    loop {
        tick.tick().await;
        app.metrics.set_heap_in_use(heap_in_use());
        let now = app.sessions.len();
        peak = peak.max(now);
        if peak >= now + ENDED || (now == 0 && peak > 0) {
            // SAFETY: malloc_trim has no preconditions; it only returns
            // free pages to the system.
            let released = unsafe { libc::malloc_trim(0) };
            tracing::debug!(
                sessions = now,
                peak,
                released,
                "freed memory returned to the system"
            );
            peak = now;
        }
    }
}

/// Bytes in use in the allocator (all arenas, mmapped blocks included).
fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let info = unsafe { libc::mallinfo2() };
    (info.uordblks as u64).saturating_add(info.hblkhd as u64)
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            tracing::warn!("could not install signal handlers; Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Presents the backends' version and capabilities in our greeting from the
/// first client on (later logins refresh it).
async fn learn_greeting(app: &App) {
    for b in app.backends.all() {
        let attempt = async {
            let stream = tokio::net::TcpStream::connect(b.address).await.ok()?;
            let mut io = PacketIo::new(stream);
            let p = io.read(1 << 16).await.ok()?;
            crate::protocol::InitialHandshake::parse(&p.payload).ok()
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Some(g)) => {
                tracing::info!(server = %b.name, version = %g.server_version, "backend greeting");
                *app.greeting.write().unwrap_or_else(|e| e.into_inner()) =
                    GreetingTemplate::from_backend(&g);
                return;
            }
            Ok(None) => tracing::warn!(server = %b.name, "no greeting from the server at start"),
            Err(_) => {
                tracing::warn!(server = %b.name, "the server did not greet within 2 s at start")
            }
        }
    }
    tracing::warn!("no backend reachable at start; greeting with defaults");
}

/// Loads the kernel session path as `datapath.mode` asks: `ebpf` requires
/// it (a load failure is an error); `auto` uses it whenever the programs
/// load, and otherwise falls back to the userspace relay with the reason
/// logged (not root, verifier, missing cgroup, IPv6 listener …).
fn load_datapath(config: &Config) -> anyhow::Result<Option<Arc<LocalApp>>> {
    use crate::config::DatapathMode;
    let load = || {
        LocalApp::load(
            config.datapath.ebpf_object.as_deref(),
            &config.datapath.cgroup,
            config.listen.address,
        )
    };
    match config.datapath.mode {
        DatapathMode::Userspace => {
            tracing::info!(mode = "userspace", "datapath");
            Ok(None)
        }
        DatapathMode::Auto => match load() {
            Ok(k) => {
                tracing::info!(
                    mode = "ebpf",
                    "datapath (auto): local applications' sessions are carried in the kernel"
                );
                Ok(Some(Arc::new(k)))
            }
            Err(e) => {
                tracing::warn!(
                    mode = "userspace",
                    reason = %e,
                    "datapath (auto): the kernel session path cannot be used; every session takes the userspace relay"
                );
                Ok(None)
            }
        },
        DatapathMode::Ebpf => match load() {
            Ok(k) => {
                tracing::info!(mode = "ebpf", "datapath");
                Ok(Some(Arc::new(k)))
            }
            Err(e) => Err(anyhow::anyhow!(
                "{}: datapath.mode = \"ebpf\" but the eBPF programs cannot be used: {e}",
                config.file.display()
            )),
        },
    }
}
