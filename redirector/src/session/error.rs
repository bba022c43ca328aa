//! Why a session cannot move, and why a move that was tried failed: typed,
//! with the server and the source, so the mover, the registry and the logs
//! say the same thing and nothing is matched by string.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::client::ConnError;
use crate::backend::login::LoginTimeout;
use crate::peer_text::escaped as peer;

/// State that stops a session from moving (shown per session as
/// `NOT_MOVABLE_REASON`); the session stays where it is, unharmed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotMovable {
    #[error("protocol state unknown")]
    LostSync,
    #[error("open transaction")]
    OpenTransaction,
    #[error("open cursor")]
    OpenCursor,
    #[error("pending long data")]
    PendingLongData,
    #[error("XA transaction")]
    Xa,
    /// A temporary table (its name as written, if it could be parsed).
    #[error("temporary table{}", .0.as_ref().map(|n| format!(" {}", peer(n))).unwrap_or_default())]
    TempTable(Option<String>),
    #[error("temporary table {} (could not check: {source})", peer(.name))]
    TempTableUnchecked {
        name: String,
        #[source]
        source: Arc<ConnError>,
    },
    /// `PREPARE name FROM …`: its text cannot be read back from the server.
    #[error("SQL prepared statement {}", peer(.0))]
    SqlPrepared(String),
    /// GET_LOCK / LOCK TABLES seen in the session's SQL, not yet checked.
    #[error("may hold a GET_LOCK or LOCK TABLES lock")]
    MayHoldLock,
    #[error("GET_LOCK lock held")]
    UserLock,
    #[error("LOCK TABLES in effect")]
    TableLock,
    /// A lock hint that cannot be checked on this server.
    #[error("{0} (install the metadata_lock_info plugin to check)")]
    LockUnchecked(Box<NotMovable>),
    #[error("state could not be read ({what}: {source})")]
    StateUnreadable {
        what: &'static str,
        #[source]
        source: Arc<ConnError>,
    },
    #[error("state could not be read (variable {} = '{}')", peer(.name), peer(.value))]
    VariableValue { name: String, value: String },
    #[error("state could not be read (user variable value)")]
    UserVariableValue,
    #[error("user variable @{} of type {} cannot be carried", peer(.name), peer(.kind))]
    UserVariableType { name: String, kind: String },
    #[error("the target lacks capabilities 0x{0:08x}")]
    TargetCapabilities(u32),
    #[error("the target lacks MariaDB capabilities 0x{0:08x}")]
    TargetMariadbCapabilities(u32),
}

/// A move that was tried and did not happen; the session stays on its
/// server.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("unknown server '{0}'")]
    UnknownServer(String),
    #[error("server '{0}' is down")]
    ServerDown(String),
    #[error("the session has no login parameters")]
    NoLoginParams,
    #[error("login to the target failed: {source}")]
    TargetLogin {
        server: String,
        #[source]
        source: LoginTimeout,
    },
    #[error("the target did not finish in {after:?}")]
    TargetTimeout { server: String, after: Duration },
    #[error("schema '{}' could not be selected on the target: {source}", peer(.schema))]
    Schema {
        schema: String,
        server: String,
        #[source]
        source: ConnError,
    },
    #[error("state could not be applied on the target: {source}")]
    Apply {
        server: String,
        #[source]
        source: ConnError,
    },
    #[error("target state could not be read: {source}")]
    ReadTarget {
        server: String,
        #[source]
        source: ConnError,
    },
    #[error("target {0}")]
    ReadTargetState(NotMovable),
    #[error("statement {id} could not be prepared on the target: {source}")]
    Prepare {
        id: u32,
        server: String,
        #[source]
        source: ConnError,
    },
    #[error("statement {id} has {target} parameters on the target, {source_params} on the source")]
    ParamCount {
        id: u32,
        target: u16,
        source_params: u16,
    },
    #[error("state verification failed on the target: {}", peer(.difference))]
    Verify { server: String, difference: String },
    #[error("the target sent unsolicited data")]
    Unsolicited { server: String },
}

/// Why the state could not be captured or rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{0}")]
    NotMovable(#[from] NotMovable),
    #[error("{0}")]
    Failed(#[from] MoveError),
}
