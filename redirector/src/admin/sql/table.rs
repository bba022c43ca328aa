//! The admin SQL tables (`sessions`, `servers`, `moves`) built from the
//! daemon's state: one snapshot per statement, which the engine
//! ([`crate::request::table`], SQLite) then queries.

pub use crate::request::table::{
    query, Kind, Limits, QueryError, Table, Value, MOVE_COLUMNS, SERVER_COLUMNS, SESSION_COLUMNS,
    TABLE_NAMES,
};

use crate::admin::control::ServerRow;
use crate::session::MoveRecord;
use crate::session::SessionSnapshot;

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
