//! The admin SQL tables (`sessions`, `servers`, `moves`), built from a
//! snapshot per statement; [`query`] evaluates a `SELECT` over them.

pub use crate::request::table::{query, Kind, QueryError, Table, Value};

use crate::admin::control::ServerRow;
use crate::session::MoveRecord;
use crate::session::SessionSnapshot;

/// The tables `SHOW TABLES` lists.
pub const TABLE_NAMES: [&str; 3] = ["moves", "servers", "sessions"];

const SESSION_COLUMNS: [(&str, Kind); 10] = [
    ("SESSION_ID", Kind::Int),
    ("USER", Kind::Text),
    ("CLIENT_ADDRESS", Kind::Text),
    ("SERVER_NAME", Kind::Text),
    ("STATE", Kind::Text),
    ("IN_TRANSACTION", Kind::Int),
    ("MOVABLE", Kind::Int),
    ("NOT_MOVABLE_REASON", Kind::Text),
    ("MOVES", Kind::Int),
    ("DATAPATH", Kind::Text),
];

const SERVER_COLUMNS: [(&str, Kind); 5] = [
    ("SERVER_NAME", Kind::Text),
    ("ADDRESS", Kind::Text),
    ("WEIGHT", Kind::Int),
    ("STATE", Kind::Text),
    ("SESSIONS", Kind::Int),
];

const MOVE_COLUMNS: [(&str, Kind); 6] = [
    ("SESSION_ID", Kind::Int),
    ("FROM_SERVER", Kind::Text),
    ("TO_SERVER", Kind::Text),
    ("RESULT", Kind::Text),
    ("REASON", Kind::Text),
    ("DURATION_MS", Kind::Double),
];

pub fn sessions(snapshots: &[SessionSnapshot]) -> Table {
    let mut t = Table::new(&SESSION_COLUMNS);
    t.rows = snapshots
        .iter()
        .map(|s| {
            vec![
                Value::int(s.session_id),
                Value::Text(s.user.clone()),
                Value::Text(s.client_address.clone()),
                Value::Text(s.server_name.clone()),
                Value::Text(s.state.as_str().to_string()),
                Value::bool(s.in_transaction),
                Value::bool(s.movable),
                Value::opt_text(s.not_movable_reason.as_deref()),
                Value::int(s.moves),
                Value::Text(s.datapath.as_str().to_string()),
            ]
        })
        .collect();
    t
}

pub fn servers(rows: &[ServerRow]) -> Table {
    let mut t = Table::new(&SERVER_COLUMNS);
    t.rows = rows
        .iter()
        .map(|r| {
            vec![
                Value::Text(r.server_name.clone()),
                Value::Text(r.address.clone()),
                Value::int(r.weight),
                Value::Text(r.state.clone()),
                Value::int(r.sessions),
            ]
        })
        .collect();
    t
}

pub fn moves(records: &[MoveRecord]) -> Table {
    let mut t = Table::new(&MOVE_COLUMNS);
    t.rows = records
        .iter()
        .map(|m| {
            vec![
                Value::int(m.session_id),
                Value::Text(m.from_server.clone()),
                Value::Text(m.to_server.clone()),
                Value::Text(m.result.as_str().to_string()),
                Value::opt_text(m.reason.as_deref()),
                // Milliseconds to the microsecond are plenty.
                Value::Double((m.duration_ms * 1000.0).round() / 1000.0),
            ]
        })
        .collect();
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_types() {
        let defs = servers(&[]).definitions();
        assert_eq!(defs.len(), SERVER_COLUMNS.len());
        assert_eq!(
            defs[2].column_type,
            crate::protocol::constants::column_type::LONGLONG
        );
    }
}
