//! The admin SQL query engine: SQLite (the bundled library, through
//! `rusqlite`) runs each query over an in-memory database that holds one
//! snapshot of the tables, built for that statement alone and dropped after
//! it. Any query SQLite supports works (aggregates, GROUP BY, joins, CTEs,
//! window functions, expressions); the daemon's state is never written.
//!
//! What keeps a query harmless (each layer on its own would stop a write):
//! - only `SELECT`, `WITH`, `VALUES` and `EXPLAIN` reach the engine
//!   ([`super::sql`] refuses the rest by name);
//! - an authorizer admits reads, functions and recursive CTEs only: no
//!   `ATTACH` (files), no `PRAGMA`, no DDL or DML, no `load_extension`;
//! - the prepared statement must be read-only (`sqlite3_stmt_readonly`);
//! - a progress handler interrupts it once [`Limits::time`] has passed,
//!   strings and blobs are capped at [`MAX_VALUE_BYTES`] and the result at
//!   [`Limits::max_result_bytes`].
//!
//! Daemon-free, so the `admin_sql` fuzz target runs the same engine.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::functions::FunctionFlags;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, ErrorCode};

use crate::protocol::ColumnDefinition;

/// What a column holds (decides its SQLite type and its wire type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SQLite INTEGER, sent as LONGLONG.
    Int,
    /// SQLite REAL, sent as DOUBLE.
    Double,
    /// SQLite TEXT (compared case-insensitively, as MariaDB's default
    /// collation does), sent as VAR_STRING.
    Text,
}

impl Kind {
    fn sql_type(self) -> &'static str {
        match self {
            Kind::Int => "INTEGER",
            Kind::Double => "REAL",
            Kind::Text => "TEXT COLLATE NOCASE",
        }
    }

    /// The kind of a declared column type (for result columns with no
    /// value to look at).
    fn of_declared(decl: Option<&str>) -> Self {
        match decl.map(str::to_ascii_uppercase).as_deref() {
            Some(d) if d.starts_with("INT") => Kind::Int,
            Some(d) if d.starts_with("REAL") => Kind::Double,
            _ => Kind::Text,
        }
    }
}

/// The `sessions` table's columns (names fixed by the contract).
pub const SESSION_COLUMNS: [(&str, Kind); 10] = [
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

/// The `servers` table's columns.
pub const SERVER_COLUMNS: [(&str, Kind); 5] = [
    ("SERVER_NAME", Kind::Text),
    ("ADDRESS", Kind::Text),
    ("WEIGHT", Kind::Int),
    ("STATE", Kind::Text),
    ("SESSIONS", Kind::Int),
];

/// The `moves` table's columns.
pub const MOVE_COLUMNS: [(&str, Kind); 6] = [
    ("SESSION_ID", Kind::Int),
    ("FROM_SERVER", Kind::Text),
    ("TO_SERVER", Kind::Text),
    ("RESULT", Kind::Text),
    ("REASON", Kind::Text),
    ("DURATION_MS", Kind::Double),
];

/// The tables `SHOW TABLES` lists, in its order.
pub const TABLE_NAMES: [&str; 3] = ["moves", "servers", "sessions"];

/// Largest string or blob a query may build (`SQLITE_LIMIT_LENGTH`), so
/// `zeroblob(1e9)` or a runaway `group_concat` fails early.
pub const MAX_VALUE_BYTES: i32 = 16 << 20;

/// How often (in SQLite VM instructions) the time budget is checked.
const PROGRESS_STEPS: i32 = 10_000;

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

    fn kind(&self) -> Option<Kind> {
        match self {
            Value::Null => None,
            Value::Int(_) => Some(Kind::Int),
            Value::Double(_) => Some(Kind::Double),
            Value::Text(_) => Some(Kind::Text),
        }
    }

    fn to_sql(&self) -> SqlValue {
        match self {
            Value::Null => SqlValue::Null,
            Value::Int(n) => SqlValue::Integer(*n),
            Value::Double(d) => SqlValue::Real(*d),
            Value::Text(s) => SqlValue::Text(s.clone()),
        }
    }

    fn from_sql(v: ValueRef<'_>) -> Self {
        match v {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(n) => Value::Int(n),
            ValueRef::Real(d) => Value::Double(d),
            // Blobs (zeroblob(), randomblob()) go out as their bytes read
            // as UTF-8; the tables hold no blobs.
            ValueRef::Text(b) | ValueRef::Blob(b) => Value::Text(String::from_utf8_lossy(b).into()),
        }
    }

    /// Bytes this value adds to a result (for the result cap).
    fn size(&self) -> usize {
        match self {
            Value::Text(s) => s.len() + 9,
            _ => 9,
        }
    }
}

/// A table or a result: named, typed columns and rows of values.
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
}

/// Bounds on one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Past this the query is interrupted.
    pub time: Duration,
    /// Largest result (values' bytes, roughly as sent).
    pub max_result_bytes: usize,
}

/// Why a query failed. The messages are SQLite's where SQLite found the
/// problem; [`QueryError::code`] gives the MariaDB error number for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Syntax(String),
    #[error("{0} (the tables are sessions, servers and moves)")]
    NoSuchTable(String),
    #[error("{0}")]
    NoSuchColumn(String),
    #[error("{0}")]
    NoSuchFunction(String),
    #[error("the admin tables are read-only: {0} is not allowed (queries only: SELECT, WITH, VALUES, EXPLAIN)")]
    ReadOnly(String),
    #[error("Query execution was interrupted: it ran longer than the admin SQL time budget of {} ms (admin.sql_query_timeout_ms)", .0.as_millis())]
    Interrupted(Duration),
    #[error("the result is larger than {0} bytes; narrow it with WHERE, GROUP BY or LIMIT")]
    ResultTooLarge(usize),
    #[error("{0}")]
    Engine(String),
}

impl QueryError {
    /// MariaDB error number and SQLSTATE.
    pub fn code(&self) -> (u16, &'static [u8; 5]) {
        match self {
            QueryError::Syntax(_) => (1064, b"42000"), // ER_PARSE_ERROR
            QueryError::NoSuchTable(_) => (1146, b"42S02"), // ER_NO_SUCH_TABLE
            QueryError::NoSuchColumn(_) => (1054, b"42S22"), // ER_BAD_FIELD_ERROR
            QueryError::NoSuchFunction(_) => (1305, b"42000"), // ER_SP_DOES_NOT_EXIST
            // ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
            QueryError::ReadOnly(_) => (1792, b"25006"),
            QueryError::Interrupted(_) => (1969, b"70100"), // ER_STATEMENT_TIMEOUT
            QueryError::ResultTooLarge(_) | QueryError::Engine(_) => (1105, b"HY000"),
        }
    }
}

/// Why the authorizer refused something (read back for the error message).
type Refused = Arc<Mutex<Option<String>>>;

/// Runs `sql` (one statement) over `tables` with SQLite. `functions` are
/// zero-argument functions with fixed values (`DATABASE()`, `USER()` …).
pub fn query(
    tables: &[(&str, &Table)],
    functions: &[(&str, Value)],
    sql: &str,
    limits: &Limits,
) -> Result<Table, QueryError> {
    let started = Instant::now();
    let conn = Connection::open_in_memory().map_err(engine)?;
    load(&conn, tables).map_err(engine)?;
    for (name, value) in functions {
        let value = value.to_sql();
        conn.create_scalar_function(
            *name,
            0,
            FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
            move |_| Ok(value.clone()),
        )
        .map_err(engine)?;
    }
    conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
        .map_err(engine)?;
    conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)
        .map_err(engine)?;
    let refused: Refused = Arc::default();
    let seen = refused.clone();
    conn.authorizer(Some(move |ctx: AuthContext<'_>| authorize(&ctx, &seen)));
    // The budget counts from the statement's start, the snapshot included.
    let deadline = started + limits.time;
    conn.progress_handler(PROGRESS_STEPS, Some(move || Instant::now() >= deadline));

    let classify = |e: rusqlite::Error| classify(e, &refused, limits.time);
    let mut stmt = conn.prepare(sql).map_err(classify)?;
    if !stmt.readonly() {
        return Err(QueryError::ReadOnly("a statement that writes".into()));
    }
    let columns: Vec<(String, Option<Kind>)> = stmt
        .columns()
        .iter()
        .map(|c| {
            (
                c.name().to_string(),
                c.decl_type().map(|d| Kind::of_declared(Some(d))),
            )
        })
        .collect();
    let width = columns.len();
    let mut rows = Vec::new();
    let mut bytes = 0usize;
    let mut cursor = stmt.query([]).map_err(classify)?;
    while let Some(row) = cursor.next().map_err(classify)? {
        let mut values = Vec::with_capacity(width);
        for i in 0..width {
            let v = Value::from_sql(row.get_ref(i).map_err(classify)?);
            bytes += v.size();
            values.push(v);
        }
        if bytes > limits.max_result_bytes {
            return Err(QueryError::ResultTooLarge(limits.max_result_bytes));
        }
        rows.push(values);
    }
    // A column's kind: that of its values (SQLite types each value, not
    // the column); integers with reals are reals, anything with text is
    // text; with no value to look at, the declared type.
    let columns = columns
        .into_iter()
        .enumerate()
        .map(|(i, (name, declared))| {
            let kind = rows
                .iter()
                .filter_map(|r: &Vec<Value>| r.get(i).and_then(Value::kind))
                .reduce(|a, b| match (a, b) {
                    (a, b) if a == b => a,
                    (Kind::Int, Kind::Double) | (Kind::Double, Kind::Int) => Kind::Double,
                    _ => Kind::Text,
                })
                .or(declared)
                .unwrap_or(Kind::Text);
            (name, kind)
        })
        .collect();
    Ok(Table { columns, rows })
}

/// Creates and fills the tables (before the authorizer is installed).
fn load(conn: &Connection, tables: &[(&str, &Table)]) -> rusqlite::Result<()> {
    let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    conn.execute_batch("BEGIN")?;
    for (name, table) in tables {
        let columns: Vec<String> = table
            .columns
            .iter()
            .map(|(c, k)| format!("{} {}", quote(c), k.sql_type()))
            .collect();
        conn.execute_batch(&format!(
            "CREATE TABLE {} ({})",
            quote(name),
            columns.join(", ")
        ))?;
        let marks = vec!["?"; table.columns.len()].join(", ");
        let mut insert = conn.prepare(&format!("INSERT INTO {} VALUES ({marks})", quote(name)))?;
        for row in &table.rows {
            insert.execute(rusqlite::params_from_iter(row.iter().map(Value::to_sql)))?;
        }
    }
    conn.execute_batch("COMMIT")
}

/// Reads, functions (but `load_extension` and `fts3_tokenizer`), `SELECT`
/// and recursive CTEs; everything else is refused, and what it was is kept
/// for the error message.
fn authorize(ctx: &AuthContext<'_>, refused: &Refused) -> Authorization {
    let what = match ctx.action {
        AuthAction::Select | AuthAction::Read { .. } | AuthAction::Recursive => {
            return Authorization::Allow
        }
        AuthAction::Function { function_name } => {
            let name = function_name.to_ascii_lowercase();
            if name != "load_extension" && name != "fts3_tokenizer" {
                return Authorization::Allow;
            }
            format!("the function {name}()")
        }
        AuthAction::Attach { .. } => "ATTACH".into(),
        AuthAction::Detach { .. } => "DETACH".into(),
        AuthAction::Pragma { pragma_name, .. } => format!("PRAGMA {pragma_name}"),
        // CREATE and DROP first ask to change the schema table.
        AuthAction::Insert { table_name }
        | AuthAction::Update { table_name, .. }
        | AuthAction::Delete { table_name }
            if table_name.starts_with("sqlite_") =>
        {
            "changing the schema (CREATE, DROP, ALTER)".into()
        }
        AuthAction::Insert { .. } => "INSERT".into(),
        AuthAction::Update { .. } => "UPDATE".into(),
        AuthAction::Delete { .. } => "DELETE".into(),
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => "a transaction".into(),
        other => format!("{other:?}"),
    };
    if let Ok(mut r) = refused.lock() {
        r.get_or_insert(what);
    }
    Authorization::Deny
}

fn engine(e: rusqlite::Error) -> QueryError {
    QueryError::Engine(e.to_string())
}

fn classify(e: rusqlite::Error, refused: &Refused, budget: Duration) -> QueryError {
    let (failure, message) = match &e {
        rusqlite::Error::SqliteFailure(failure, message) => (
            failure,
            message.clone().unwrap_or_else(|| failure.to_string()),
        ),
        // A prepare error that points at a token: the message alone (the
        // statement is the client's own).
        rusqlite::Error::SqlInputError { error, msg, .. } => (error, msg.clone()),
        rusqlite::Error::MultipleStatement => {
            return QueryError::Syntax("one statement at a time, please".into())
        }
        _ => return engine(e),
    };
    // The authorizer's refusal comes back as SQLITE_AUTH, or as a plain
    // error for functions ("not authorized to use function").
    if let Some(what) = refused.lock().ok().and_then(|r| r.clone()) {
        return QueryError::ReadOnly(what);
    }
    match failure.code {
        ErrorCode::OperationInterrupted => return QueryError::Interrupted(budget),
        ErrorCode::AuthorizationForStatementDenied => {
            return QueryError::ReadOnly("this statement".into());
        }
        _ => {}
    }
    if message.starts_with("no such table") {
        QueryError::NoSuchTable(message)
    } else if message.starts_with("no such column") {
        QueryError::NoSuchColumn(message)
    } else if message.starts_with("no such function") {
        QueryError::NoSuchFunction(message)
    } else if message.contains("syntax error")
        || message.starts_with("incomplete input")
        || message.starts_with("unrecognized token")
    {
        QueryError::Syntax(message)
    } else {
        QueryError::Engine(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers() -> Table {
        let mut t = Table::new(&SERVER_COLUMNS);
        for (name, weight, state, sessions) in [
            ("db1", 10, "active", 2),
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

    fn sessions() -> Table {
        let mut t = Table::new(&SESSION_COLUMNS);
        for (id, server, reason) in [
            (1, "db1", None),
            (2, "db1", Some("temporary table")),
            (3, "db3", None),
        ] {
            t.rows.push(vec![
                Value::Int(id),
                Value::Text("app".into()),
                Value::Text(format!("127.0.0.1:{}", 40000 + id)),
                Value::Text(server.into()),
                Value::Text("idle".into()),
                Value::bool(false),
                Value::bool(reason.is_none()),
                Value::opt_text(reason),
                Value::Int(0),
                Value::Text("userspace".into()),
            ]);
        }
        t
    }

    const LIMITS: Limits = Limits {
        time: Duration::from_secs(5),
        max_result_bytes: 1 << 20,
    };

    fn run_with(sql: &str, limits: &Limits) -> Result<Table, QueryError> {
        let (s, v) = (sessions(), servers());
        query(
            &[("sessions", &s), ("servers", &v)],
            &[("DATABASE", Value::Text("redirector".into()))],
            sql,
            limits,
        )
    }

    fn run(sql: &str) -> Result<Table, QueryError> {
        run_with(sql, &LIMITS)
    }

    fn wire(t: &Table) -> Vec<Vec<Option<String>>> {
        t.wire_rows()
    }

    fn row(cells: &[&str]) -> Vec<Option<String>> {
        cells.iter().map(|c| Some(c.to_string())).collect()
    }

    #[test]
    fn star_keeps_every_column_and_type() {
        let t = run("SELECT * FROM servers").unwrap();
        let names: Vec<&str> = t.columns.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, SERVER_COLUMNS.map(|(n, _)| n));
        assert_eq!(t.columns[2].1, Kind::Int);
        assert_eq!(t.rows.len(), 3);
        // No rows: the declared types.
        let t = run("SELECT * FROM servers WHERE 0").unwrap();
        assert_eq!(
            t.columns.iter().map(|c| c.1).collect::<Vec<_>>(),
            SERVER_COLUMNS.map(|c| c.1)
        );
    }

    #[test]
    fn group_by_join_order_limit() {
        let t = run("SELECT SERVER_NAME, COUNT(*) FROM sessions GROUP BY SERVER_NAME ORDER BY 1")
            .unwrap();
        assert_eq!(
            t.columns,
            [
                ("SERVER_NAME".into(), Kind::Text),
                ("COUNT(*)".into(), Kind::Int)
            ]
        );
        assert_eq!(wire(&t), [row(&["db1", "2"]), row(&["db3", "1"])]);
        let t = run(
            "SELECT s.SESSION_ID, v.ADDRESS, v.WEIGHT FROM sessions s JOIN servers v USING (SERVER_NAME) \
             WHERE v.state = 'ACTIVE' ORDER BY s.session_id DESC LIMIT 2",
        )
        .unwrap();
        assert_eq!(
            wire(&t),
            [
                row(&["3", "127.0.0.1:5", "5"]),
                row(&["2", "127.0.0.1:10", "10"])
            ]
        );
        let t = run("SELECT AVG(WEIGHT) AS w, SUM(SESSIONS) FROM servers").unwrap();
        assert_eq!(t.columns[0], ("w".into(), Kind::Double));
        assert_eq!(wire(&t), [row(&["11.666666666666666", "3"])]);
        let t = run("select not_movable_reason from sessions where session_id = 1").unwrap();
        assert_eq!(wire(&t), [vec![None]]);
        let t = run("SELECT DATABASE(), database()").unwrap();
        assert_eq!(wire(&t), [row(&["redirector", "redirector"])]);
        // Mixed kinds in one column are text.
        let t = run("SELECT CASE WHEN WEIGHT > 9 THEN WEIGHT ELSE 'low' END FROM servers").unwrap();
        assert_eq!(t.columns[0].1, Kind::Text);
    }

    #[test]
    fn errors_are_classified() {
        let code = |sql: &str| run(sql).unwrap_err().code().0;
        assert_eq!(code("SELECT nope FROM sessions"), 1054);
        assert_eq!(code("SELECT * FROM nope"), 1146);
        assert_eq!(code("SELEC 1"), 1064);
        assert_eq!(code("SELECT * FROM sessions WHERE"), 1064);
        assert_eq!(code("SELECT nope(1)"), 1305);
        assert_eq!(code("SELECT 1; SELECT 2"), 1064);
        let e = run("SELECT * FROM nope").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no such table: nope (the tables are sessions, servers and moves)"
        );
    }

    #[test]
    fn writes_files_and_extensions_are_refused() {
        for (sql, what) in [
            ("INSERT INTO sessions (SESSION_ID) VALUES (9)", "INSERT"),
            ("WITH x AS (SELECT 1) DELETE FROM sessions", "DELETE"),
            ("UPDATE servers SET WEIGHT = 0", "UPDATE"),
            ("CREATE TABLE t (a)", "changing the schema"),
            ("DROP TABLE servers", "changing the schema"),
            ("CREATE TEMP VIEW v AS SELECT 1", "changing the schema"),
            ("ATTACH DATABASE '/tmp/redirector-x' AS x", "ATTACH"),
            ("PRAGMA writable_schema = 1", "PRAGMA writable_schema"),
            (
                "SELECT * FROM pragma_table_info('servers')",
                "PRAGMA table_info",
            ),
            ("SELECT load_extension('/tmp/x.so')", "load_extension"),
            ("BEGIN", "a transaction"),
        ] {
            let e = run(sql).unwrap_err();
            assert_eq!(e.code().0, 1792, "{sql}: {e}");
            assert!(e.to_string().contains(what), "{sql}: {e}");
        }
        assert!(!std::path::Path::new("/tmp/redirector-x").exists());
        let e = run("VACUUM INTO '/tmp/redirector-y'").unwrap_err();
        assert!(!std::path::Path::new("/tmp/redirector-y").exists(), "{e}");
    }

    #[test]
    fn runaway_queries_are_stopped() {
        let limits = Limits {
            time: Duration::from_millis(200),
            ..LIMITS
        };
        let started = Instant::now();
        let e = run_with(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
            &limits,
        )
        .unwrap_err();
        assert_eq!(e, QueryError::Interrupted(limits.time));
        assert_eq!(e.code(), (1969, b"70100"));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // Values past the length cap, results past the byte cap.
        assert_eq!(
            run("SELECT zeroblob(100000000)").unwrap_err().code().0,
            1105
        );
        let e = run("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 1000000) SELECT printf('%100d', x) FROM c")
            .unwrap_err();
        assert_eq!(e, QueryError::ResultTooLarge(LIMITS.max_result_bytes));
    }

    #[test]
    fn wire_forms() {
        assert_eq!(Value::Null.to_wire(), None);
        assert_eq!(Value::bool(true).to_wire().as_deref(), Some("1"));
        assert_eq!(Value::Double(1.5).to_wire().as_deref(), Some("1.5"));
        assert_eq!(Value::int(u64::MAX), Value::Int(i64::MAX));
        let defs = servers().definitions();
        assert_eq!(
            defs[2].column_type,
            crate::protocol::constants::column_type::LONGLONG
        );
    }
}
