//! Prepared statements as the client knows them: their SQL and parameter
//! types (to re-prepare them on another server), and the translation of
//! statement ids once a move made the server's ids differ from the
//! client's.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::BytesMut;
use redirector_common::mysql::PrepareOk;

use crate::protocol;
use crate::protocol::constants::command::{
    COM_STMT_BULK_EXECUTE, COM_STMT_CLOSE, COM_STMT_EXECUTE, COM_STMT_FETCH, COM_STMT_RESET,
    COM_STMT_SEND_LONG_DATA,
};

#[derive(Debug, Default, Clone)]
pub struct Statement {
    pub sql: Vec<u8>,
    pub params: u16,
    /// Parameter types the client last bound (COM_STMT_EXECUTE with
    /// new-params-bound = 1): a statement re-prepared on another server
    /// has none, and clients send them only when they change.
    pub types: Option<Vec<u8>>,
}

/// Statement ids as the client knows them and as the current server does.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IdMap {
    to_server: BTreeMap<u32, u32>,
}

impl IdMap {
    /// The map after a move (None when every id is unchanged).
    pub fn from_moved(prepared: &BTreeMap<u32, (u32, u16)>) -> Option<IdMap> {
        if prepared.iter().all(|(c, (s, _))| c == s) {
            return None;
        }
        Some(IdMap {
            to_server: prepared.iter().map(|(&c, &(s, _))| (c, s)).collect(),
        })
    }

    pub fn server_id(&self, client_id: u32) -> Option<u32> {
        self.to_server.get(&client_id).copied()
    }

    /// A client id for a statement the server just prepared as `server_id`:
    /// the same number if the client does not use it, else the next free one.
    pub fn assign(&mut self, server_id: u32) -> u32 {
        let client_id = if self.to_server.contains_key(&server_id) {
            self.to_server
                .keys()
                .next_back()
                .map_or(1, |m| m.wrapping_add(1))
        } else {
            server_id
        };
        self.to_server.insert(client_id, server_id);
        client_id
    }

    pub fn forget(&mut self, client_id: u32) {
        self.to_server.remove(&client_id);
    }
}

/// What the session remembers about prepared statements (statements are
/// re-prepared on a new backend under the same client ids).
#[derive(Debug, Default, Clone)]
pub struct Statements {
    /// SQL of COM_STMT_PREPARE commands whose response has not arrived yet.
    pending: VecDeque<Vec<u8>>,
    /// Client statement id → what is known about it.
    pub by_id: BTreeMap<u32, Statement>,
    /// Statements re-prepared by a move whose parameter types the server
    /// has not been given yet.
    rebind: BTreeSet<u32>,
    /// Client statement id → server statement id, once a move made them
    /// differ (None: the same).
    ids: Option<IdMap>,
}

impl Statements {
    /// A COM_STMT_PREPARE of `sql` went to the server.
    pub fn on_prepare(&mut self, sql: Vec<u8>) {
        self.pending.push_back(sql);
    }

    /// A COM_STMT_CLOSE of the client's `id`.
    pub fn on_close(&mut self, id: u32) {
        self.by_id.remove(&id);
    }

    /// COM_RESET_CONNECTION: the server forgets every statement.
    pub fn on_reset_connection(&mut self) {
        self.by_id.clear();
        self.ids = None;
    }

    /// The server answered a COM_STMT_PREPARE with PREPARE_OK. Returns the
    /// id the client must see when it differs from the server's.
    pub fn on_prepare_ok(&mut self, ok: &PrepareOk) -> Option<u32> {
        let sql = self.pending.pop_front()?;
        let client_id = match self.ids.as_mut() {
            Some(map) => map.assign(ok.stmt_id),
            None => ok.stmt_id,
        };
        self.by_id.insert(
            client_id,
            Statement {
                sql,
                params: ok.num_params,
                types: None,
            },
        );
        (client_id != ok.stmt_id).then_some(client_id)
    }

    /// The server refused a COM_STMT_PREPARE.
    pub fn on_prepare_err(&mut self) {
        self.pending.pop_front();
    }

    /// Whether the server knows statement `server_id` as prepared by this
    /// session (0xFFFFFFFF, "the last prepared", counts as known).
    pub fn knows_server_id(&self, server_id: u32) -> bool {
        server_id == u32::MAX
            || match &self.ids {
                Some(map) => map.to_server.values().any(|&s| s == server_id),
                None => self.by_id.contains_key(&server_id),
            }
    }

    /// Whether the client's statement ids must be rewritten (the kernel
    /// cannot carry such a session).
    pub fn translated(&self) -> bool {
        self.ids.is_some()
    }

    /// Ids whose COM_STMT_EXECUTE can go to the server as the client sends
    /// it: no parameters, or parameter types the daemon has seen (so it can
    /// re-send them after a move) and the current server has been given (a
    /// statement re-prepared by a move has none until the daemon adds them
    /// to an execute; sent raw, MariaDB answers 1210).
    pub fn typed(&self) -> BTreeSet<u32> {
        self.by_id
            .iter()
            .filter(|(id, s)| s.params == 0 || (s.types.is_some() && !self.rebind.contains(id)))
            .map(|(&id, _)| id)
            .collect()
    }

    /// Client id → (SQL, parameter count), to re-prepare on a new server.
    pub fn for_rebuild(&self) -> BTreeMap<u32, (Vec<u8>, u16)> {
        self.by_id
            .iter()
            .map(|(&id, s)| (id, (s.sql.clone(), s.params)))
            .collect()
    }

    /// The session continues on a server where the statements were
    /// re-prepared as `prepared` (client id → (server id, parameters)).
    pub fn after_move(&mut self, prepared: &BTreeMap<u32, (u32, u16)>) {
        self.ids = IdMap::from_moved(prepared);
        self.rebind = self
            .by_id
            .iter()
            .filter(|(_, s)| s.params > 0)
            .map(|(&id, _)| id)
            .collect();
    }

    /// Rewrites the client's statement id in a COM_STMT_* command to the
    /// server's, when a move made them differ.
    pub fn translate(&mut self, packet: &mut BytesMut) {
        let Some(map) = self.ids.as_mut() else {
            return;
        };
        let Some(&cmd) = packet.get(4) else { return };
        if !matches!(
            cmd,
            COM_STMT_EXECUTE
                | COM_STMT_SEND_LONG_DATA
                | COM_STMT_CLOSE
                | COM_STMT_RESET
                | COM_STMT_FETCH
                | COM_STMT_BULK_EXECUTE
        ) {
            return;
        }
        let Some(&[a, b, c, d]) = packet.get(5..9) else {
            return;
        };
        let client_id = u32::from_le_bytes([a, b, c, d]);
        // 0xFFFFFFFF: MariaDB's "the statement just prepared".
        if client_id == u32::MAX {
            return;
        }
        if let (Some(server_id), Some(field)) = (map.server_id(client_id), packet.get_mut(5..9)) {
            field.copy_from_slice(&server_id.to_le_bytes());
        }
        if cmd == COM_STMT_CLOSE {
            map.forget(client_id);
        }
    }

    /// Remembers the parameter types a COM_STMT_EXECUTE (one whole packet)
    /// binds, and gives them to a statement that a move re-prepared and
    /// that the client executes without types (it bound them on the old
    /// server).
    pub fn bind_types(&mut self, packet: &mut BytesMut) {
        let Some(payload) = packet.get(4..) else {
            return;
        };
        let Some(&[a, b, c, d]) = payload.get(1..5) else {
            return;
        };
        let id = u32::from_le_bytes([a, b, c, d]);
        let Some(stmt) = self.by_id.get_mut(&id) else {
            return;
        };
        let params = usize::from(stmt.params);
        if params == 0 {
            return;
        }
        let flag_at = 10 + params.div_ceil(8);
        let types_end = flag_at + 1 + 2 * params;
        match payload.get(flag_at) {
            Some(1) => {
                if let Some(t) = payload.get(flag_at + 1..types_end) {
                    stmt.types = Some(t.to_vec());
                }
                self.rebind.remove(&id);
            }
            Some(0) if self.rebind.remove(&id) => {
                let (Some(types), Some(head), Some(tail), Some(&seq)) = (
                    &stmt.types,
                    payload.get(..flag_at),
                    payload.get(flag_at + 1..),
                    packet.get(3),
                ) else {
                    return;
                };
                let mut body = Vec::with_capacity(payload.len() + types.len());
                body.extend_from_slice(head);
                body.push(1);
                body.extend_from_slice(types);
                body.extend_from_slice(tail);
                let mut out = BytesMut::with_capacity(body.len() + 4);
                protocol::write_packet(&mut out, seq, &body);
                *packet = out;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepare_ok(id: u32, params: u16) -> PrepareOk {
        PrepareOk {
            stmt_id: id,
            num_params: params,
            ..Default::default()
        }
    }

    /// COM_STMT_EXECUTE of `id` with one parameter, types bound or not.
    fn execute(id: u32, bound: bool) -> BytesMut {
        let mut body = vec![COM_STMT_EXECUTE];
        body.extend_from_slice(&id.to_le_bytes());
        body.extend_from_slice(&[0, 1, 0, 0, 0]); // flags, iteration count
        body.push(0); // NULL bitmap (1 parameter)
        body.push(u8::from(bound));
        if bound {
            body.extend_from_slice(&[0x08, 0x00]); // LONGLONG
        }
        body.extend_from_slice(&7u64.to_le_bytes());
        let mut out = BytesMut::new();
        protocol::write_packet(&mut out, 0, &body);
        out
    }

    #[test]
    fn statements_moved_to_a_new_server_are_not_typed_until_rebound() {
        let mut s = Statements::default();
        s.on_prepare(b"SELECT ?".to_vec());
        assert_eq!(s.on_prepare_ok(&prepare_ok(1, 1)), None);
        s.on_prepare(b"SELECT 1".to_vec());
        assert_eq!(s.on_prepare_ok(&prepare_ok(2, 0)), None);
        // No types seen yet: only the parameterless statement may go raw.
        assert_eq!(s.typed(), BTreeSet::from([2]));
        let mut p = execute(1, true);
        s.bind_types(&mut p);
        assert_eq!(s.typed(), BTreeSet::from([1, 2]));
        // Re-prepared under the same ids elsewhere: the new server has not
        // seen the types, so statement 1 must go through the daemon, which
        // adds them to the client's type-less execute.
        s.after_move(&BTreeMap::from([(1, (1, 1)), (2, (2, 0))]));
        assert!(!s.translated());
        assert_eq!(s.typed(), BTreeSet::from([2]));
        let mut p = execute(1, false);
        let before = p.len();
        s.bind_types(&mut p);
        assert_eq!(p.len(), before + 2, "types added to the execute");
        assert_eq!(s.typed(), BTreeSet::from([1, 2]));
    }

    #[test]
    fn ids_are_translated_after_a_move_that_changed_them() {
        let mut s = Statements::default();
        s.on_prepare(b"SELECT 1".to_vec());
        s.on_prepare_ok(&prepare_ok(5, 0));
        s.after_move(&BTreeMap::from([(5, (9, 0))]));
        assert!(s.translated());
        let mut p = BytesMut::new();
        protocol::write_packet(&mut p, 0, &[COM_STMT_RESET, 5, 0, 0, 0]);
        s.translate(&mut p);
        assert_eq!(p.get(5..9), Some(&9u32.to_le_bytes()[..]));
        // A new statement the server numbers 5 gets a free client id (the
        // client's 5 is the moved statement); one numbered 10 keeps its id.
        s.on_prepare(b"SELECT 2".to_vec());
        assert_eq!(s.on_prepare_ok(&prepare_ok(5, 0)), Some(6));
        s.on_prepare(b"SELECT 3".to_vec());
        assert_eq!(s.on_prepare_ok(&prepare_ok(10, 0)), None);
        assert_eq!(s.by_id.keys().copied().collect::<Vec<_>>(), vec![5, 6, 10]);
    }
}
