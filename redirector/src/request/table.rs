//! The evaluation of a [`Select`] over an admin SQL table: projection,
//! `WHERE col = value [AND …]`, `ORDER BY`, `LIMIT`. The daemon builds its
//! tables (`sessions`, `servers`, `moves`) from a snapshot per statement;
//! they are small (one row per session at most), so everything is in memory.

use std::cmp::Ordering;

use super::sql::{Expr, Literal, Select};
use crate::protocol::ColumnDefinition;

/// What a column holds (decides its wire type and how values compare).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Double,
    Text,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Double(f64),
    Text(String),
}

impl Value {
    pub fn int(n: impl TryInto<i64>) -> Self {
        Value::Int(n.try_into().unwrap_or(i64::MAX))
    }

    pub fn bool(b: bool) -> Self {
        // Like MySQL's BOOLEAN: 1 / 0.
        Value::Int(i64::from(b))
    }

    pub fn opt_text(s: Option<&str>) -> Self {
        s.map_or(Value::Null, |s| Value::Text(s.to_string()))
    }

    /// The text-protocol form (None = NULL).
    pub fn to_wire(&self) -> Option<String> {
        match self {
            Value::Null => None,
            Value::Int(n) => Some(n.to_string()),
            Value::Double(d) => Some(d.to_string()),
            Value::Text(s) => Some(s.clone()),
        }
    }

    fn as_number(&self) -> Option<f64> {
        match self {
            Value::Int(n) => Some(*n as f64),
            Value::Double(d) => Some(*d),
            Value::Text(s) => s.trim().parse().ok(),
            Value::Null => None,
        }
    }
}

/// A result: named, typed columns and rows of values.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub columns: Vec<(String, Kind)>,
    pub rows: Vec<Vec<Value>>,
}

impl Table {
    pub fn new(columns: &[(&str, Kind)]) -> Self {
        Self {
            columns: columns.iter().map(|(n, k)| (n.to_string(), *k)).collect(),
            rows: Vec::new(),
        }
    }

    /// Column definitions for the wire.
    pub fn definitions(&self) -> Vec<ColumnDefinition> {
        self.columns
            .iter()
            .map(|(name, kind)| match kind {
                Kind::Int => ColumnDefinition::integer(name.as_str()),
                Kind::Double => ColumnDefinition::double(name.as_str()),
                Kind::Text => ColumnDefinition::text(name.as_str()),
            })
            .collect()
    }

    /// Rows in their text-protocol form.
    pub fn wire_rows(&self) -> Vec<Vec<Option<String>>> {
        self.rows
            .iter()
            .map(|r| r.iter().map(Value::to_wire).collect())
            .collect()
    }

    /// Index of a column, by case-insensitive name.
    fn index(&self, name: &str, clause: &'static str) -> Result<usize, QueryError> {
        self.columns
            .iter()
            .position(|(c, _)| c.eq_ignore_ascii_case(name))
            .ok_or_else(|| QueryError::UnknownColumn {
                column: name.to_string(),
                clause,
            })
    }
}

/// Why a query over the tables failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    // MariaDB's wording (ER_BAD_FIELD_ERROR, ER_NO_SUCH_TABLE).
    #[error("Unknown column '{column}' in '{clause}'")]
    UnknownColumn {
        column: String,
        clause: &'static str,
    },
    #[error("Table '{0}' doesn't exist (the tables are sessions, servers and moves)")]
    NoSuchTable(String),
}

/// Applies `select` (filters, order, limit, projection) to `table`.
pub fn query(table: Table, select: &Select) -> Result<Table, QueryError> {
    let filters = select
        .filters
        .iter()
        .map(|(c, v)| Ok((table.index(c, "where clause")?, v)))
        .collect::<Result<Vec<_>, QueryError>>()?;
    let order = match &select.order {
        Some(o) => Some((table.index(&o.column, "order clause")?, o.descending)),
        None => None,
    };
    let projection = select
        .columns
        .iter()
        .map(|item| match &item.expr {
            Expr::Column(c) => Ok((table.index(c, "field list")?, item.label.clone())),
            _ => Err(QueryError::UnknownColumn {
                column: item.label.clone(),
                clause: "field list",
            }),
        })
        .collect::<Result<Vec<_>, QueryError>>()?;

    let mut rows: Vec<Vec<Value>> = table
        .rows
        .into_iter()
        .filter(|row| filters.iter().all(|(i, lit)| matches(&row[*i], lit)))
        .collect();
    if let Some((i, descending)) = order {
        rows.sort_by(|a, b| {
            let o = compare(&a[i], &b[i]);
            if descending {
                o.reverse()
            } else {
                o
            }
        });
    }
    if let Some(n) = select.limit {
        rows.truncate(usize::try_from(n).unwrap_or(usize::MAX));
    }
    if projection.is_empty() {
        return Ok(Table {
            columns: table.columns,
            rows,
        });
    }
    Ok(Table {
        columns: projection
            .iter()
            .map(|(i, label)| (label.clone(), table.columns[*i].1))
            .collect(),
        rows: rows
            .into_iter()
            .map(|row| projection.iter().map(|(i, _)| row[*i].clone()).collect())
            .collect(),
    })
}

/// `value = literal`, as MySQL compares: numerically when both sides are
/// numbers, else as case-insensitive text; NULL equals nothing.
fn matches(value: &Value, lit: &Literal) -> bool {
    let text = match lit {
        Literal::Null => return false,
        Literal::Number(t) | Literal::Str(t) => t,
    };
    if matches!(value, Value::Null) {
        return false;
    }
    let numeric_column = matches!(value, Value::Int(_) | Value::Double(_));
    if numeric_column || matches!(lit, Literal::Number(_)) {
        if let (Some(a), Ok(b)) = (value.as_number(), text.trim().parse::<f64>()) {
            return a == b;
        }
    }
    value
        .to_wire()
        .is_some_and(|v| v.eq_ignore_ascii_case(text))
}

/// Sort order: NULL first (as MySQL), numbers numerically, text
/// case-insensitively.
fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::Text(x), Value::Text(y)) => x.to_lowercase().cmp(&y.to_lowercase()),
        _ => match (a.as_number(), b.as_number()) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            _ => a.to_wire().cmp(&b.to_wire()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::sql::{parse, Statement};
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(&[
            ("SERVER_NAME", Kind::Text),
            ("ADDRESS", Kind::Text),
            ("WEIGHT", Kind::Int),
            ("STATE", Kind::Text),
            ("SESSIONS", Kind::Int),
        ]);
        for (name, weight, state, sessions) in [
            ("db1", 10, "active", 3),
            ("db2", 20, "drained", 0),
            ("db3", 5, "active", 1),
        ] {
            t.rows.push(vec![
                Value::Text(name.into()),
                Value::Text(format!("127.0.0.1:{weight}")),
                Value::Int(weight),
                Value::Text(state.into()),
                Value::Int(sessions),
            ]);
        }
        t
    }

    fn run(sql: &str) -> Result<Table, QueryError> {
        let Statement::Select(s) = parse(sql).unwrap() else {
            panic!("{sql} is not a select")
        };
        query(sample(), &s)
    }

    fn names(t: &Table) -> Vec<String> {
        t.rows.iter().map(|r| r[0].to_wire().unwrap()).collect()
    }

    #[test]
    fn star_keeps_every_column() {
        let t = run("SELECT * FROM servers").unwrap();
        assert_eq!(t.columns.len(), 5);
        assert_eq!(t.rows.len(), 3);
    }

    #[test]
    fn projection_filter_order_limit() {
        let t = run("select server_name, Sessions from servers where STATE = 'ACTIVE' order by sessions desc").unwrap();
        assert_eq!(
            t.columns,
            vec![
                ("server_name".to_string(), Kind::Text),
                ("Sessions".to_string(), Kind::Int)
            ]
        );
        assert_eq!(names(&t), ["db1", "db3"]);
        let t = run("SELECT * FROM servers ORDER BY weight LIMIT 2").unwrap();
        assert_eq!(names(&t), ["db3", "db1"]);
        let t = run("SELECT * FROM servers WHERE weight = '20' AND sessions = 0").unwrap();
        assert_eq!(names(&t), ["db2"]);
        let t = run("SELECT * FROM servers WHERE weight = NULL").unwrap();
        assert!(t.rows.is_empty());
        let t = run("SELECT * FROM servers WHERE sessions = TRUE").unwrap();
        assert_eq!(names(&t), ["db3"]);
    }

    #[test]
    fn unknown_columns_name_the_clause() {
        assert_eq!(
            run("SELECT nope FROM servers").unwrap_err().to_string(),
            "Unknown column 'nope' in 'field list'"
        );
        assert_eq!(
            run("SELECT * FROM servers WHERE x = 1")
                .unwrap_err()
                .to_string(),
            "Unknown column 'x' in 'where clause'"
        );
        assert_eq!(
            run("SELECT * FROM servers ORDER BY y")
                .unwrap_err()
                .to_string(),
            "Unknown column 'y' in 'order clause'"
        );
        assert!(run("SELECT @@port FROM servers").is_err());
    }

    #[test]
    fn wire_forms() {
        assert_eq!(Value::Null.to_wire(), None);
        assert_eq!(Value::bool(true).to_wire().as_deref(), Some("1"));
        assert_eq!(Value::Double(1.5).to_wire().as_deref(), Some("1.5"));
        assert_eq!(Value::int(u64::MAX), Value::Int(i64::MAX));
        let defs = sample().definitions();
        assert_eq!(
            defs[2].column_type,
            crate::protocol::constants::column_type::LONGLONG
        );
    }
}
