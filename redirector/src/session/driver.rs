//! THE session loop: the relay pumps bytes and stops at a step; each step
//! is another module's job. The kernel offload is tried at quiet moments
//! (see the contract in `crate::datapath`).

use bytes::BytesMut;
use redirector_common::mysql;
use tokio::io::AsyncWriteExt;

use super::change_user;
use super::core::Core;
use super::kill;
use super::migrate;
use super::relay::{Farewell, Pair, Relay, RelayError, Step};
use crate::datapath::{Armed, Offload, Parked, Report};
use crate::metrics::{DatapathKind, Direction};

/// Serves an established session until it ends. `leftover`: client bytes
/// read past the handshake.
pub async fn run(
    mut core: Core,
    pair: Pair,
    leftover: BytesMut,
    mut offload: Offload,
) -> Result<(), RelayError> {
    let mut pair = Some(pair);
    let result = drive(&mut core, &mut pair, leftover, &mut offload).await;
    if let Some(pair) = &pair {
        if !core.proto.idle() && !core.proto.tracker.quit_sent() {
            // The session ends in the middle of a response (the client went
            // away): the server must stop at once, as it would for its own
            // client, rather than finish writing into a closed connection.
            crate::net::reset_on_close(&pair.backend);
        }
    }
    result
}

/// `slot` holds the pair; it is empty only while the kernel carries the
/// session (the backend socket is handed to the offload) or after the
/// backend socket was lost on the way back.
async fn drive(
    core: &mut Core,
    slot: &mut Option<Pair>,
    leftover: BytesMut,
    offload: &mut Offload,
) -> Result<(), RelayError> {
    let mut relay = Relay::new(core, leftover);
    loop {
        let Some(pair) = slot.as_mut() else {
            return Err(RelayError::BackendClosed);
        };
        // Translated statement ids cannot be carried by the kernel; a session
        // that sent COM_QUIT only waits for the server to close.
        let offer_quiet =
            offload.can_arm() && !core.statements.translated() && !core.proto.tracker.quit_sent();
        match relay.pump(core, pair, offer_quiet).await? {
            Step::Quiet => {
                offload.note_passed(relay.take_largest_flight());
                let typed = core.statements.typed();
                let armed = offload.arm(
                    pair.client.plain(),
                    &pair.backend,
                    &core.proto.tracker,
                    typed,
                );
                if armed == Armed::Yes {
                    kernel_turn(core, slot, offload).await?;
                } else {
                    relay.block_quiet();
                }
                if let Some(why) = offload.take_fallback() {
                    core.ctx.metrics.kernel_fallback(why);
                    core.session.set_datapath(DatapathKind::Userspace);
                }
            }
            Step::Move(req) => migrate::execute(core, pair, req).await?,
            Step::ChangeUser(packet) => change_user::run(core, pair, packet).await?,
            Step::Kill(packet) => {
                if kill::run(core, pair, packet).await? {
                    // It killed its own connection: the server closed it.
                    let _ = pair.client.shutdown().await;
                    return Ok(());
                }
            }
            Step::BackendLost(Farewell::Error { code, packet }) => {
                // The server ended this connection only (a DBA's KILL, the
                // client's own protocol error): the client hears it as it
                // would directly, the session ends, the server stays up.
                tracing::info!(session = core.session.id, server = %core.session.server(), code, "the server ended the session's connection");
                let _ = pair.client.write_all(&packet).await;
                let _ = pair.client.shutdown().await;
                return Ok(());
            }
            Step::BackendLost(farewell) => {
                let server = core.session.server();
                let caps = core.login.capabilities;
                // One connection closing says nothing about the server: ask
                // it. A server that still answers closed this connection
                // only (a DBA's KILL, wait_timeout): the session ends, as it
                // would directly, instead of being re-created elsewhere.
                let down = match farewell {
                    Farewell::Shutdown => true,
                    _ => !server_answers(core, &server).await,
                };
                if !down {
                    tracing::info!(session = core.session.id, server = %server, "the server closed the session's connection and still answers; the session ends");
                    let message = format!(
                        "Lost connection to backend server '{server}': the server closed this session's connection (KILL or timeout)"
                    );
                    return Err(relay
                        .fail_next_command(
                            pair,
                            caps,
                            message,
                            RelayError::ConnectionClosed { server },
                            core.ctx.net_read_timeout,
                        )
                        .await);
                }
                if let Ok(b) = core.ctx.backends.get(&server) {
                    // The health check brings it back when it answers again.
                    b.set_up(false);
                }
                match migrate::failover(core).await {
                    Some(stream) => pair.backend = stream,
                    None => {
                        tracing::info!(session = core.session.id, server = %server, "server lost; the session's state is not known well enough to carry it over");
                        let message = format!(
                            "Lost connection to backend server '{server}'; the session could not be carried to another server"
                        );
                        return Err(relay
                            .fail_next_command(
                                pair,
                                caps,
                                message,
                                RelayError::ServerLost { server },
                                core.ctx.net_read_timeout,
                            )
                            .await);
                    }
                }
            }
            Step::Closed => return Ok(()),
        }
    }
}

/// The kernel carries the armed session until it needs the daemon; the
/// backend socket goes with it (out of the reactor) and comes back.
async fn kernel_turn(
    core: &mut Core,
    slot: &mut Option<Pair>,
    offload: &mut Offload,
) -> Result<(), RelayError> {
    let Some(Pair { client, backend }) = slot.take() else {
        return Err(RelayError::BackendClosed);
    };
    let session = core.session.clone();
    let move_requested = std::pin::pin!(session.move_requested());
    let (parked, backend) = match client.plain() {
        Some(plain) => {
            session.set_in_kernel(true);
            let parked = offload
                .park(plain, backend, move_requested, &mut |r| {
                    kernel_report(core, r)
                })
                .await;
            session.set_in_kernel(false);
            parked
        }
        // Armed only on plain connections.
        None => (Parked::default(), Ok(backend)),
    };
    let backend = backend.map_err(RelayError::Backend)?;
    *slot = Some(Pair { client, backend });
    resume(core, parked);
    Ok(())
}

/// The kernel's progress while it carries the session: its bytes to the
/// metrics, its commands to the session's count, its state to the listing.
fn kernel_report(core: &mut Core, r: Report) {
    let m = &core.ctx.metrics;
    m.bytes(Direction::ClientToServer, DatapathKind::Ebpf)
        .inc_by(r.up);
    m.bytes(Direction::ServerToClient, DatapathKind::Ebpf)
        .inc_by(r.down);
    let n = u64::from(
        r.tracker
            .commands_sent()
            .wrapping_sub(core.proto.tracker.commands_sent()),
    );
    core.session.count_commands(n);
    m.commands(n);
    core.proto.tracker = r.tracker;
    core.publish();
}

/// Continues in userspace exactly where the kernel stopped: its tracker,
/// and its framing of the backend stream (the client stream is at a packet
/// boundary: the kernel takes client bytes only whole packet by packet).
fn resume(core: &mut Core, parked: Parked) {
    if let Some((tracker, server)) = parked.state {
        core.proto = mysql::Session {
            tracker,
            client: mysql::Framer::new(),
            server,
        };
    }
    core.publish();
}

/// Whether the session's server still takes connections (one probe; the
/// evidence that decides between "this connection ended" and "the server
/// is gone").
async fn server_answers(core: &Core, server: &str) -> bool {
    match core.ctx.backends.get(server) {
        Ok(b) => crate::backend::probe(b.address, std::time::Duration::from_secs(1)).await,
        Err(_) => false,
    }
}
