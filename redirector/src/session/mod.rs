//! Sessions: what the daemon knows about each client connection, the
//! registry the admin surfaces and the mover read, each session's move
//! mailbox, and the record of every move.
//!
//! A session is served by one task running [`driver::run`]: the relay
//! ([`relay`]) pumps bytes and stops at a step the driver hands to a module
//! of its own: moves and failover ([`migrate`]), COM_CHANGE_USER
//! ([`change_user`]), KILL ([`kill`]), the kernel offload (`crate::datapath`). The driver
//! updates a session's live fields as the protocol state machine sees
//! commands and responses; readers take a [`SessionSnapshot`].

pub mod budget;
pub mod change_user;
pub mod core;
pub mod driver;
pub mod error;
pub mod kill;
pub mod migrate;
pub mod relay;
pub mod state;
pub mod statements;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::{oneshot, Notify};

use crate::accounts::AccountStore;
use crate::backend::routing::Routing;
use crate::backend::{Backend, Backends};
pub use crate::metrics::DatapathKind;
use crate::metrics::{Metrics, MoveReason, MoveResult};
use crate::protocol::BackendLoginParams;
pub use error::{MoveError, NotMovable, StateError};
use redirector_common::mysql::Tracker;

/// Where a session's protocol state lives while the kernel carries it, so
/// that listings, metrics and the mover see it live rather than as of the
/// last report.
pub trait KernelState: Send + Sync + std::fmt::Debug {
    /// The kernel's tracker of session `key`, if the kernel carries it now.
    fn carried(&self, key: u64) -> Option<Tracker>;
}

/// What a session is doing right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Logging in (client handshake or backend login).
    Connecting,
    /// No command in flight, the whole response read.
    Idle,
    /// A command is in flight or its response is being read.
    Busy,
    /// Being moved to another server.
    Moving,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Connecting => "connecting",
            SessionState::Idle => "idle",
            SessionState::Busy => "busy",
            SessionState::Moving => "moving",
        }
    }
}

#[derive(Debug, Clone)]
struct Live {
    user: String,
    server: String,
    state: SessionState,
    in_transaction: bool,
    /// Why the protocol state stops a move right now, if it does.
    protocol_reason: Option<NotMovable>,
    /// What the session's SQL revealed that stops a move (temporary table,
    /// lock, XA, SQL-level PREPARE).
    hint_reason: Option<NotMovable>,
    moves: u32,
    schema: Option<String>,
    commands: u64,
    /// The kernel path's sessions become `Userspace` when it gives them up.
    datapath: DatapathKind,
    /// The kernel carries the session right now (armed, the daemon asleep).
    in_kernel: bool,
}

/// A request to move a session, waiting in its mailbox for the session's
/// driver to carry it out at the next moment the session is idle and
/// outside a transaction.
#[derive(Debug)]
pub struct MoveRequest {
    /// Name of the target server.
    pub target: String,
    /// Why the move was asked for (the `reason` label of the move metrics).
    pub requested_by: MoveReason,
    /// Answered by the driver; dropped (the requester sees "session ended")
    /// if the session closes first.
    pub reply: oneshot::Sender<MoveReply>,
}

/// What the driver did with a [`MoveRequest`].
#[derive(Debug)]
pub enum MoveReply {
    /// Now served by the target.
    Moved,
    /// State that cannot be carried over (temporary table, lock …).
    NotMovable(NotMovable),
    /// The target could not take the session; it stays where it was.
    Failed(MoveError),
    /// A newer request for the same session replaced this one.
    Superseded,
}

impl MoveReply {
    /// The result and reason a [`MoveRecord`] shows for this reply.
    pub fn outcome(&self) -> (MoveResult, Option<String>) {
        match self {
            MoveReply::Moved => (MoveResult::Ok, None),
            MoveReply::NotMovable(r) => (MoveResult::NotMovable, Some(r.to_string())),
            MoveReply::Failed(e) => (MoveResult::Failed, Some(e.to_string())),
            MoveReply::Superseded => (
                MoveResult::Failed,
                Some("superseded by a newer move request for the session".into()),
            ),
        }
    }
}

/// Why the protocol state stops a move now (None = it does not).
pub fn protocol_reason(t: &Tracker) -> Option<NotMovable> {
    if t.lost_sync() {
        Some(NotMovable::LostSync)
    } else if t.in_transaction() {
        Some(NotMovable::OpenTransaction)
    } else if t.open_cursors() > 0 {
        Some(NotMovable::OpenCursor)
    } else if t.pending_long_data() {
        Some(NotMovable::PendingLongData)
    } else {
        None
    }
}

/// One client session.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub client_addr: SocketAddr,
    pub started: SystemTime,
    live: Mutex<Live>,
    /// A pending move; the relay takes it when it can act on it.
    pending_move: Mutex<Option<MoveRequest>>,
    move_wakeup: Notify,
    /// The kernel path's handle on the session, once it has one.
    kernel: OnceLock<(Arc<dyn KernelState>, u64)>,
    /// The backend's connection id (for KILL QUERY when a move is forced).
    backend_thread: AtomicU32,
    /// How to log in to a backend as this session's user (set after login,
    /// updated by COM_CHANGE_USER); used by the mover to kill a statement.
    login: Mutex<Option<BackendLoginParams>>,
}

/// A copy of a session's fields at one moment (what SELECT * FROM sessions shows).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SessionSnapshot {
    pub session_id: u64,
    pub user: String,
    pub client_address: String,
    pub server_name: String,
    pub state: SessionState,
    pub in_transaction: bool,
    pub movable: bool,
    pub not_movable_reason: Option<String>,
    pub moves: u32,
    pub datapath: DatapathKind,
    /// The kernel carries the session right now: its next command goes
    /// through the kernel unless it needs the daemon.
    pub in_kernel: bool,
    pub schema: Option<String>,
    pub commands: u64,
}

impl Session {
    fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        // A panic while holding this lock cannot leave `Live` half-updated in a
        // way that matters (plain field stores), so recover from poisoning.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The data path carrying the session now.
    pub fn datapath(&self) -> DatapathKind {
        self.live().datapath
    }

    /// The kernel path gave the session up: it is carried by the relay.
    pub fn set_datapath(&self, datapath: DatapathKind) {
        self.live().datapath = datapath;
    }

    /// The kernel takes the session over (`true`) or hands it back.
    pub fn set_in_kernel(&self, in_kernel: bool) {
        self.live().in_kernel = in_kernel;
    }

    pub fn user(&self) -> String {
        self.live().user.clone()
    }

    /// After a successful COM_CHANGE_USER.
    pub fn set_user(&self, user: &str) {
        self.live().user = user.to_string();
    }

    pub fn server(&self) -> String {
        self.live().server.clone()
    }

    pub fn set_server(&self, server: &str) {
        self.live().server = server.to_string();
    }

    pub fn set_state(&self, state: SessionState) {
        self.live().state = state;
    }

    /// Records what the protocol state machine says after a response or
    /// command, and what the session's SQL revealed.
    pub fn observe(&self, tracker: &Tracker, idle: bool, hint_reason: Option<NotMovable>) {
        let mut l = self.live();
        l.state = if idle {
            SessionState::Idle
        } else {
            SessionState::Busy
        };
        l.in_transaction = tracker.in_transaction();
        l.protocol_reason = protocol_reason(tracker);
        l.hint_reason = hint_reason;
    }

    /// From now on the session's protocol state is read from the kernel
    /// while it carries the session.
    pub fn attach_kernel(&self, state: Arc<dyn KernelState>, key: u64) {
        let _ = self.kernel.set((state, key));
    }

    pub fn count_command(&self) {
        self.live().commands += 1;
    }

    /// `n` commands at once (those the kernel carried).
    pub fn count_commands(&self, n: u64) {
        self.live().commands += n;
    }

    pub fn set_schema(&self, schema: Option<String>) {
        self.live().schema = schema;
    }

    /// Asks the relay to move the session. A request still pending is
    /// replaced (its requester sees the session as gone).
    pub fn request_move(&self, req: MoveRequest) {
        let old = self
            .pending_move
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(req);
        if let Some(old) = old {
            let _ = old.reply.send(MoveReply::Superseded);
        }
        self.move_wakeup.notify_one();
    }

    /// The pending move, if any and if its requester still waits.
    pub fn take_move(&self) -> Option<MoveRequest> {
        let mut p = self.pending_move.lock().unwrap_or_else(|e| e.into_inner());
        match p.take() {
            Some(r) if !r.reply.is_closed() => Some(r),
            _ => None,
        }
    }

    /// Puts back a request the relay cannot act on yet.
    pub fn defer_move(&self, req: MoveRequest) {
        let mut p = self.pending_move.lock().unwrap_or_else(|e| e.into_inner());
        if p.is_none() {
            *p = Some(req);
        } else {
            let _ = req.reply.send(MoveReply::Superseded);
        }
    }

    pub fn has_pending_move(&self) -> bool {
        self.pending_move
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|r| !r.reply.is_closed())
    }

    /// Resolves when a move has been requested.
    pub async fn move_requested(&self) {
        self.move_wakeup.notified().await
    }

    pub fn backend_thread(&self) -> u32 {
        self.backend_thread.load(Ordering::Relaxed)
    }

    pub fn set_backend_thread(&self, id: u32) {
        self.backend_thread.store(id, Ordering::Relaxed)
    }

    pub fn login_params(&self) -> Option<BackendLoginParams> {
        self.login.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_login_params(&self, p: BackendLoginParams) {
        *self.login.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
    }

    pub fn record_move(&self, to: &str) {
        let mut l = self.live();
        l.server = to.to_string();
        l.moves += 1;
    }

    pub fn snapshot(&self) -> SessionSnapshot {
        let live = self.kernel.get().and_then(|(k, key)| k.carried(*key));
        let l = self.live();
        let (mut state, mut in_transaction, mut protocol) =
            (l.state, l.in_transaction, l.protocol_reason.clone());
        if let (Some(t), SessionState::Idle | SessionState::Busy) = (live, l.state) {
            state = if t.idle() {
                SessionState::Idle
            } else {
                SessionState::Busy
            };
            in_transaction = t.in_transaction();
            protocol = protocol_reason(&t);
        }
        // XA first: an XA transaction also shows as an open transaction.
        let reason = match &l.hint_reason {
            Some(NotMovable::Xa) => l.hint_reason.clone(),
            _ => protocol.or_else(|| l.hint_reason.clone()),
        };
        let not_movable_reason = reason
            .as_ref()
            .map(ToString::to_string)
            .or_else(|| in_transaction.then(|| NotMovable::OpenTransaction.to_string()));
        SessionSnapshot {
            session_id: self.id,
            user: l.user.clone(),
            client_address: self.client_addr.to_string(),
            server_name: l.server.clone(),
            state,
            in_transaction,
            movable: not_movable_reason.is_none() && state != SessionState::Connecting,
            not_movable_reason,
            moves: l.moves,
            datapath: l.datapath,
            in_kernel: l.in_kernel,
            schema: l.schema.clone(),
            commands: l.commands,
        }
    }
}

/// All live sessions, by id. Ids start at 1 and are never reused while the
/// daemon runs, so an operator's `MOVE SESSION 12` cannot hit a newcomer.
#[derive(Debug, Default)]
pub struct SessionRegistry {
    next_id: AtomicU64,
    sessions: RwLock<BTreeMap<u64, Arc<Session>>>,
}

impl SessionRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands out the next session id (also used as the connection id the
    /// client sees in the handshake).
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers a session; it is removed when the returned guard drops.
    pub fn register(
        self: &Arc<Self>,
        id: u64,
        user: &str,
        client_addr: SocketAddr,
        server: &str,
        datapath: DatapathKind,
    ) -> SessionGuard {
        let session = Arc::new(Session {
            id,
            client_addr,
            started: SystemTime::now(),
            live: Mutex::new(Live {
                user: user.to_string(),
                server: server.to_string(),
                state: SessionState::Idle,
                in_transaction: false,
                protocol_reason: None,
                hint_reason: None,
                moves: 0,
                schema: None,
                commands: 0,
                datapath,
                in_kernel: false,
            }),
            pending_move: Mutex::new(None),
            move_wakeup: Notify::new(),
            kernel: OnceLock::new(),
            backend_thread: AtomicU32::new(0),
            login: Mutex::new(None),
        });
        self.write().insert(id, session.clone());
        SessionGuard {
            registry: self.clone(),
            session,
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, Arc<Session>>> {
        self.sessions.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Arc<Session>>> {
        self.sessions.read().unwrap_or_else(|e| e.into_inner())
    }

    /// All sessions, ordered by id.
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.read().values().cloned().collect()
    }

    pub fn get(&self, id: u64) -> Option<Arc<Session>> {
        self.read().get(&id).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Snapshots of all sessions, ordered by id.
    pub fn snapshot(&self) -> Vec<SessionSnapshot> {
        self.read().values().map(|s| s.snapshot()).collect()
    }

    /// Number of sessions per server name.
    pub fn count_by_server(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for s in self.read().values() {
            *m.entry(s.server()).or_insert(0) += 1;
        }
        m
    }
}

/// Keeps a session registered for as long as it lives.
#[derive(Debug)]
pub struct SessionGuard {
    registry: Arc<SessionRegistry>,
    session: Arc<Session>,
}

impl SessionGuard {
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.registry.write().remove(&self.session.id);
    }
}

/// How one session's move attempt ended (`SELECT * FROM moves`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MoveRecord {
    pub session_id: u64,
    pub from_server: String,
    pub to_server: String,
    pub result: MoveResult,
    /// Why it was asked for.
    pub requested_by: MoveReason,
    /// For a move that did not happen: why.
    pub reason: Option<String>,
    pub duration_ms: f64,
    /// Unix time (seconds) when the move ended.
    pub finished_at: f64,
}

impl MoveRecord {
    /// The one constructor: every outcome (moved, not movable, failed,
    /// timed out, failover) is recorded through it.
    pub fn new(
        session_id: u64,
        from: &str,
        to: &str,
        requested_by: MoveReason,
        (result, reason): (MoveResult, Option<String>),
        started: Instant,
    ) -> Self {
        MoveRecord {
            session_id,
            from_server: from.to_string(),
            to_server: to.to_string(),
            result,
            requested_by,
            reason,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            finished_at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        }
    }
}

/// Entries kept for `SELECT * FROM moves`.
const MOVE_LOG_LEN: usize = 1000;

/// Recent moves, newest last, and their metrics: recording a move is one
/// call that does both.
#[derive(Debug)]
pub struct MoveLog {
    entries: Mutex<VecDeque<MoveRecord>>,
    metrics: Arc<Metrics>,
}

impl MoveLog {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            entries: Mutex::new(VecDeque::new()),
            metrics,
        }
    }

    pub fn record(&self, r: MoveRecord) {
        self.metrics.record_move(
            r.result,
            r.requested_by,
            Duration::from_secs_f64(r.duration_ms / 1000.0),
        );
        let mut e = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if e.len() == MOVE_LOG_LEN {
            e.pop_front();
        }
        e.push_back(r);
    }

    pub fn snapshot(&self) -> Vec<MoveRecord> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// What a session needs of the daemon: servers, where to place it, whom to
/// trust, where to count and record. Narrow on purpose: a session never
/// sees the daemon-wide state.
#[derive(Debug, Clone)]
pub struct SessionCtx {
    pub backends: Arc<Backends>,
    pub routing: Arc<Routing>,
    pub sessions: Arc<SessionRegistry>,
    pub accounts: Arc<AccountStore>,
    pub metrics: Arc<Metrics>,
    pub moves: Arc<MoveLog>,
    /// `listen.net_read_timeout_ms`: see the relay.
    pub net_read_timeout: std::time::Duration,
    /// `listen.max_buffered_bytes`, shared by every session.
    pub buffers: Arc<budget::BufferBudget>,
}

impl SessionCtx {
    /// Addresses of every configured server (where accounts are loaded from).
    pub fn server_addresses(&self) -> Vec<SocketAddr> {
        self.backends.all().iter().map(|b| b.address).collect()
    }

    /// Servers that may take a session, in the policy's order; never
    /// `exclude`.
    pub fn placement_order(&self, exclude: Option<&str>) -> Vec<Arc<Backend>> {
        let counts = self.sessions.count_by_server();
        self.routing.order(&self.backends.all(), &counts, exclude)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_snapshot_and_remove_on_drop() {
        let reg = Arc::new(SessionRegistry::new());
        let addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let id1 = reg.next_id();
        let id2 = reg.next_id();
        assert_eq!((id1, id2), (1, 2));
        let g1 = reg.register(id1, "app", addr, "db1", DatapathKind::Userspace);
        let g2 = reg.register(id2, "app", addr, "db2", DatapathKind::Ebpf);
        let in_trans = Tracker::new(0, redirector_common::mysql::status::SERVER_STATUS_IN_TRANS);
        g2.session().observe(&in_trans, true, None);
        let snap = reg.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!(snap[0].client_address, "127.0.0.1:40000");
        assert!(snap[0].movable);
        assert!(!snap[1].movable);
        assert_eq!(
            snap[1].not_movable_reason.as_deref(),
            Some("open transaction")
        );
        assert_eq!(reg.count_by_server().get("db2"), Some(&1));
        g1.session().record_move("db2");
        assert_eq!(reg.count_by_server().get("db2"), Some(&2));
        assert_eq!(reg.get(id1).map(|s| s.snapshot().moves), Some(1));
        drop(g1);
        assert!(reg.get(id1).is_none());
        drop(g2);
        assert!(reg.is_empty());
    }
}
