//! The state one session's task keeps between steps: the protocol state
//! machine, how the session logged in, its prepared statements, what its
//! SQL revealed, and the last state known for failover. The relay, the
//! migration and COM_CHANGE_USER all work on it; the driver owns it.

use std::sync::Arc;

use bytes::BytesMut;
use redirector_common::mysql::{self, ClientPacket, ServerPacket};

use super::error::NotMovable;
use super::state::{CapturedState, Hints, Variable};
use super::statements::Statements;
use super::{Session, SessionCtx};
use crate::protocol::constants::command::{
    COM_QUERY, COM_RESET_CONNECTION, COM_STMT_CLOSE, COM_STMT_EXECUTE, COM_STMT_PREPARE,
};
use crate::protocol::{self, Sha1Hash};

/// What the session needs about how it logged in (to answer
/// COM_CHANGE_USER and to log in elsewhere).
#[derive(Debug, Clone)]
pub struct LoginState {
    /// Our greeting's scramble (clients hash COM_CHANGE_USER with it).
    pub client_scramble: [u8; 20],
    /// The backend greeting's scramble.
    pub backend_scramble: Vec<u8>,
    /// Capabilities of the session (client ∩ ours ∩ backend).
    pub capabilities: u32,
    pub user: String,
    pub sha1_password: Option<Sha1Hash>,
    /// `session_track_state_change` is on for the backend connection.
    pub state_tracked: bool,
}

/// The state last read (or known since login) and the tracker's counts at
/// that moment: current while they have not moved.
#[derive(Debug, Clone)]
pub struct Known {
    pub state: CapturedState,
    pub state_changes: u32,
    /// Commands sent by then: with no command since, the state is current
    /// even without state tracking (clients without CLIENT_SESSION_TRACK).
    pub commands: u32,
}

impl Known {
    pub fn current(&self, tracked: bool, t: &mysql::Tracker) -> bool {
        t.commands_sent() == self.commands || (tracked && t.state_changes() == self.state_changes)
    }
}

pub struct Core {
    pub ctx: SessionCtx,
    pub session: Arc<Session>,
    pub proto: mysql::Session,
    pub login: LoginState,
    pub statements: Statements,
    /// What the client's SQL says about state the server cannot list.
    pub hints: Hints,
    /// What the session's state is known to be, for failover.
    pub known: Option<Known>,
    /// The last client packet was a full 0xFFFFFF fragment.
    pub client_continues: bool,
    /// Backend thread ids of the session's earlier connections (before
    /// moves): `CONNECTION_ID()` returned them, so a KILL naming one means
    /// the session itself (see `kill`). The newest last, a few kept.
    pub past_threads: Vec<u32>,
}

impl Core {
    pub fn new(
        ctx: SessionCtx,
        session: Arc<Session>,
        proto: mysql::Session,
        login: LoginState,
    ) -> Self {
        let mut core = Core {
            ctx,
            session,
            proto,
            login,
            statements: Statements::default(),
            hints: Hints::default(),
            known: None,
            client_continues: false,
            past_threads: Vec::new(),
        };
        // Right after login the state is the login's (schema, collation),
        // plus the state tracking if it was turned on.
        let tracked = core.login.state_tracked;
        core.known = Some(Known {
            state: CapturedState {
                schema: core.session.snapshot().schema,
                variables: if tracked {
                    vec![Variable {
                        name: "SESSION_TRACK_STATE_CHANGE".into(),
                        value: Some("ON".into()),
                        kind: "BOOLEAN".into(),
                    }]
                } else {
                    Vec::new()
                },
                // As `SELECT @@SESSION.session_track_state_change` shows it.
                checks: if tracked {
                    vec![("SESSION_TRACK_STATE_CHANGE".into(), Some("1".into()))]
                } else {
                    Vec::new()
                },
                user_variables: Vec::new(),
            },
            state_changes: core.proto.tracker.state_changes(),
            commands: core.proto.tracker.commands_sent(),
        });
        core
    }

    /// Remembers `state` as the session's current state.
    pub fn know(&mut self, state: CapturedState) {
        self.known = Some(Known {
            state,
            state_changes: self.proto.tracker.state_changes(),
            commands: self.proto.tracker.commands_sent(),
        });
    }

    /// Tells the registry what the state machine knows now.
    pub fn publish(&mut self) {
        if self.proto.idle() && self.proto.tracker.pending_long_data() {
            // Long data for a statement that does not exist is ignored by
            // the server; left pending it would keep the session unmovable.
            let statements = &self.statements;
            self.proto
                .tracker
                .retain_long_data(|id| statements.knows_server_id(id));
        }
        self.session
            .observe(&self.proto.tracker, self.proto.idle(), self.hints.reason());
    }

    /// Bookkeeping for one whole client packet on its way to the server
    /// (statements, hints, id translation), then the state machine.
    /// `starts_command`: the packet is a command (not a continuation,
    /// LOCAL INFILE data or an auth exchange).
    pub fn client_packet(&mut self, packet: &mut BytesMut, starts_command: bool) {
        if starts_command {
            match packet.get(4).copied() {
                Some(COM_STMT_PREPARE) => {
                    self.statements
                        .on_prepare(packet.get(5..).unwrap_or(&[]).to_vec());
                }
                Some(COM_STMT_CLOSE) => {
                    if let Some(&[a, b, c, d]) = packet.get(5..9) {
                        self.statements.on_close(u32::from_le_bytes([a, b, c, d]));
                    }
                }
                Some(COM_RESET_CONNECTION) => {
                    self.statements.on_reset_connection();
                    self.hints.reset();
                }
                Some(COM_QUERY) => self.hints.observe_query(packet.get(5..).unwrap_or(&[])),
                Some(COM_STMT_EXECUTE) if packet.len() - 4 < protocol::MAX_FRAGMENT => {
                    self.statements.bind_types(packet)
                }
                _ => {}
            }
            self.statements.translate(packet);
        }
        let session = &self.session;
        let metrics = &self.ctx.metrics;
        self.proto.feed_client_with(packet, &mut |_, kind| {
            if let ClientPacket::Command(_) = kind {
                session.count_command();
                metrics.command();
            }
        });
    }

    /// Feeds server bytes to the state machine. Returns the client-visible
    /// id of a statement whose PREPARE_OK was in `chunk` when it differs from
    /// the server's (only meaningful when `chunk` is one whole packet).
    pub fn server_bytes(&mut self, chunk: &[u8]) -> Option<u32> {
        let statements = &mut self.statements;
        let tracker = &mut self.proto.tracker;
        let mut patch = None;
        self.proto.server.feed(chunk, &mut |p| {
            let head = tracker.head_command();
            let kind = tracker.on_server_packet(p);
            if head != Some(COM_STMT_PREPARE) {
                return;
            }
            match kind {
                ServerPacket::PrepareOk => {
                    if let Some(ok) = mysql::parse_prepare_ok(p.prefix()) {
                        patch = statements.on_prepare_ok(&ok).or(patch);
                    }
                }
                ServerPacket::Err => statements.on_prepare_err(),
                _ => {}
            }
        });
        self.publish();
        patch
    }

    /// With translated statement ids, server bytes go to the client in whole
    /// packets so that a PREPARE_OK's id can be rewritten.
    pub fn server_packets_mapped(&mut self, sbuf: &mut BytesMut) -> BytesMut {
        let mut out = BytesMut::new();
        while let Some(total) = protocol::frame_len(sbuf) {
            let mut packet = sbuf.split_to(total);
            if let Some(client_id) = self.server_bytes(&packet) {
                if let Some(id) = packet.get_mut(5..9) {
                    id.copy_from_slice(&client_id.to_le_bytes());
                }
            }
            out.unsplit(packet);
        }
        out
    }
}

/// Why the protocol state stops a move now (None = it does not).
pub fn not_movable(s: &mysql::Session) -> Option<NotMovable> {
    super::protocol_reason(&s.tracker)
}
