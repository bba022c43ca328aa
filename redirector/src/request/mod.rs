//! What operators send: admin SQL statements ([`sql`], evaluated over a
//! table by [`table`]) and the REST API's JSON bodies ([`rest`]), parsed
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

/// Parses `sql` as the admin SQL port does and runs a `SELECT … FROM` over
/// a small table with every kind of value (text, integers, doubles, NULL).
/// The `admin_sql` fuzz target drives this: any text gets a result or an
/// error, never a panic. `Err`: the error's message.
pub fn check_sql(sql: &str) -> Result<(), String> {
    use table::{Kind, Table, Value};
    let stmt = sql::parse(sql).map_err(|e| e.to_string())?;
    if let sql::Statement::Select(select) = stmt {
        let mut fixture = Table::new(&[
            ("NAME", Kind::Text),
            ("WEIGHT", Kind::Int),
            ("DURATION_MS", Kind::Double),
            ("REASON", Kind::Text),
        ]);
        fixture.rows = vec![
            vec![
                Value::Text("db1".into()),
                Value::Int(10),
                Value::Double(1.5),
                Value::Null,
            ],
            vec![
                Value::Text("DB2".into()),
                Value::Int(-3),
                Value::Double(f64::NAN),
                Value::Text("timeout".into()),
            ],
            vec![
                Value::Text("10".into()),
                Value::Int(i64::MAX),
                Value::Double(-0.0),
                Value::Text("".into()),
            ],
        ];
        table::query(fixture, &select).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_checked_without_a_daemon() {
        assert_eq!(
            check_sql("SELECT NAME FROM t WHERE WEIGHT = 10 ORDER BY DURATION_MS DESC LIMIT 1"),
            Ok(())
        );
        assert_eq!(check_sql("select * from t order by reason"), Ok(()));
        assert_eq!(
            check_sql("SELECT NOPE FROM t"),
            Err("Unknown column 'NOPE' in 'field list'".into())
        );
        assert!(check_sql("CONTROL MOVE").is_err());
    }
}
