//! What operators send: admin SQL statements ([`sql`]; queries run over
//! the tables by SQLite, [`table`]) and the REST API's JSON bodies ([`rest`]), parsed
//! and checked without the daemon. Nothing here touches the daemon's
//! state, so the fuzz targets `admin_sql` and `rest_json` build without
//! the `daemon` feature; the admin ports turn the results into actions.

pub mod rest;
pub mod sql;
pub mod table;

/// Which sessions a move request covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Ids(Vec<u64>),
    /// Every session (of `from`, if given).
    All,
    /// Sessions idle and movable right now (of `from`, if given).
    AllInactive,
}

/// Parses `sql` as the admin SQL port does and runs a query with the
/// engine the port uses (SQLite) over small `sessions`, `servers` and
/// `moves` tables with every kind of value (text, integers, doubles, NULL),
/// under a short time budget. The `admin_sql` fuzz target drives this: any
/// text gets a result or an error, never a panic. `Err`: the error's
/// message.
pub fn check_sql(sql: &str) -> Result<(), String> {
    use table::{Table, Value};
    let stmt = sql::parse(sql).map_err(|e| e.to_string())?;
    if let sql::Statement::Query(text) = stmt {
        let text_or_null = |s: Option<&str>| Value::opt_text(s);
        let mut sessions = Table::new(&table::SESSION_COLUMNS);
        for (id, server, reason) in [(1, "db1", None), (2, "DB2", Some("temporary table"))] {
            sessions.rows.push(vec![
                Value::Int(id),
                Value::Text("app".into()),
                Value::Text("127.0.0.1:40000".into()),
                Value::Text(server.into()),
                Value::Text("idle".into()),
                Value::bool(false),
                Value::bool(reason.is_none()),
                text_or_null(reason),
                Value::Int(i64::MAX),
                Value::Text("".into()),
            ]);
        }
        let mut servers = Table::new(&table::SERVER_COLUMNS);
        servers.rows.push(vec![
            Value::Text("db1".into()),
            Value::Text("127.0.0.1:3307".into()),
            Value::Int(-3),
            Value::Text("active".into()),
            Value::Int(1),
        ]);
        let mut moves = Table::new(&table::MOVE_COLUMNS);
        for duration in [1.5, f64::NAN, -0.0] {
            moves.rows.push(vec![
                Value::Int(1),
                Value::Text("db1".into()),
                Value::Text("DB2".into()),
                Value::Text("ok".into()),
                Value::Null,
                Value::Double(duration),
            ]);
        }
        let limits = table::Limits {
            time: std::time::Duration::from_millis(100),
            max_result_bytes: 1 << 20,
        };
        table::query(
            &[
                ("sessions", &sessions),
                ("servers", &servers),
                ("moves", &moves),
            ],
            &[("DATABASE", Value::Null)],
            &text,
            &limits,
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_checked_without_a_daemon() {
        assert_eq!(
            check_sql(
                "SELECT SERVER_NAME FROM servers WHERE WEIGHT = -3 ORDER BY ADDRESS DESC LIMIT 1"
            ),
            Ok(())
        );
        assert_eq!(
            check_sql(
                "select s.*, m.* from sessions s join moves m using (session_id) order by reason"
            ),
            Ok(())
        );
        assert_eq!(
            check_sql("SELECT NOPE FROM sessions"),
            Err("no such column: NOPE".into())
        );
        assert!(
            check_sql("INSERT INTO sessions VALUES (1)").is_ok(),
            "refused by the parser, not run"
        );
        assert!(check_sql("CONTROL MOVE").is_err());
    }
}
