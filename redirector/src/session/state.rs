//! Session state read from the source connection, rebuilt on the target,
//! and compared before the switch (DESIGN.md §5).
//!
//! State is *read* (information_schema on the session's own connection),
//! not replayed from command history: what the server holds is the truth,
//! whatever statements, procedures or triggers produced it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncWrite};

use super::error::{MoveError, NotMovable, StateError};
use crate::backend::client::{BackendConn, ConnError, Row};

/// Session-only variables worth carrying when they differ from their
/// default. The rest of that scope are per-connection facts (thread id,
/// random seeds, GTID sequence) that must not be copied.
const SESSION_ONLY_CARRIED: &[(&str, &str)] = &[
    ("LAST_INSERT_ID", "0"),
    ("INSERT_ID", "0"),
    ("SKIP_REPLICATION", "OFF"),
    ("PSEUDO_SLAVE_MODE", "OFF"),
    ("SKIP_PARALLEL_REPLICATION", "OFF"),
    ("DEFAULT_MASTER_CONNECTION", ""),
    ("TIMESTAMP", ""),
];

fn unreadable(what: &'static str, e: ConnError) -> StateError {
    StateError::NotMovable(NotMovable::StateUnreadable {
        what,
        source: Arc::new(e),
    })
}

/// A system variable as read from the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub name: String,
    pub value: Option<String>,
    pub kind: String,
}

/// A user variable (`@name`) with its type and character set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserVariable {
    pub name: String,
    /// Exact bytes for strings (read with HEX()), text for numbers.
    pub value: Option<Vec<u8>>,
    pub kind: String,
    pub charset: String,
}

/// The state that makes up a session, as far as the client can tell: read
/// on the source, rebuilt and read back on the target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapturedState {
    pub schema: Option<String>,
    pub variables: Vec<Variable>,
    /// The carried variables as `SELECT @@SESSION.name` shows them: what
    /// the source and the target are compared on (a by-name read, much
    /// cheaper than scanning information_schema again).
    pub checks: Vec<(String, Option<String>)>,
    pub user_variables: Vec<UserVariable>,
}

/// What the relay saw in the client's SQL that the server cannot list
/// (temporary tables) or may not be able to show (locks, when the
/// metadata_lock_info plugin is absent).
#[derive(Debug, Clone, Default)]
pub struct Hints {
    /// Names from CREATE TEMPORARY TABLE, as written.
    pub temp_tables: BTreeSet<String>,
    /// A temporary table whose name could not be parsed.
    pub unnamed_temp_table: bool,
    /// Locks the session may hold: set when GET_LOCK / LOCK TABLES is seen,
    /// made exact or cleared by the mover's check.
    pub locks: Option<NotMovable>,
    /// Inside XA START … XA COMMIT/ROLLBACK.
    pub xa: bool,
    /// Names of SQL-level prepared statements (PREPARE name FROM …): their
    /// text cannot be read back from the server.
    pub sql_prepared: BTreeSet<String>,
}

impl Hints {
    /// Updates the hints from a COM_QUERY's SQL.
    pub fn observe_query(&mut self, sql: &[u8]) {
        let head = &sql[..sql.len().min(4096)];
        let text = String::from_utf8_lossy(head).to_ascii_lowercase();
        // Multi-statements: each one (a ';' inside a string literal only
        // makes the scan more cautious).
        for statement in text.split(';') {
            self.observe_statement(statement);
        }
    }

    fn observe_statement(&mut self, text: &str) {
        let words: Vec<&str> = text
            .split(|c: char| c.is_whitespace() || c == '(')
            .filter(|w| !w.is_empty())
            .collect();
        let starts = |a: &[&str]| words.len() >= a.len() && words[..a.len()] == *a;
        if words.first() == Some(&"prepare") {
            if let Some(name) = words.get(1) {
                self.sql_prepared.insert(name.to_string());
            }
        } else if (starts(&["deallocate", "prepare"]) || starts(&["drop", "prepare"]))
            && words.len() > 2
        {
            self.sql_prepared.remove(words[2]);
        }
        if starts(&["xa", "start"]) || starts(&["xa", "begin"]) {
            self.xa = true;
        } else if starts(&["xa", "commit"]) || starts(&["xa", "rollback"]) {
            self.xa = false;
        }
        if text.contains("get_lock") || starts(&["lock", "table"]) || starts(&["lock", "tables"]) {
            self.locks = Some(NotMovable::MayHoldLock);
        }
        if starts(&["drop"]) && !self.temp_tables.is_empty() {
            // DROP [TEMPORARY] TABLE[S] [IF EXISTS] a, b
            let names = words
                .iter()
                .skip_while(|w| **w != "table" && **w != "tables")
                .skip(1)
                .filter(|w| !matches!(**w, "if" | "exists"))
                .flat_map(|w| w.split(','))
                .filter(|w| !w.is_empty());
            for n in names {
                self.temp_tables.remove(n);
            }
        }
        if starts(&["create"]) {
            if let Some(pos) = words.iter().position(|w| *w == "temporary") {
                // CREATE [OR REPLACE] TEMPORARY TABLE [IF NOT EXISTS] name
                let mut rest = words[pos + 1..].iter();
                let name = match (rest.next(), rest.next()) {
                    (Some(&"table"), Some(&"if")) => rest.nth(2),
                    (Some(&"table"), n) => n,
                    _ => None,
                };
                match name.filter(|n| is_plain_identifier(n)) {
                    Some(n) => {
                        self.temp_tables.insert(n.to_string());
                    }
                    None => self.unnamed_temp_table = true,
                }
            }
        }
    }

    /// After COM_RESET_CONNECTION / COM_CHANGE_USER: the server dropped
    /// temporary tables, locks and XA state.
    pub fn reset(&mut self) {
        *self = Hints::default();
    }

    /// What the hints say stops a move (shown per session).
    pub fn reason(&self) -> Option<NotMovable> {
        if self.xa {
            Some(NotMovable::Xa)
        } else if let Some(t) = self.temp_tables.first() {
            Some(NotMovable::TempTable(Some(t.clone())))
        } else if self.unnamed_temp_table {
            Some(NotMovable::TempTable(None))
        } else if let Some(name) = self.sql_prepared.first() {
            Some(NotMovable::SqlPrepared(name.clone()))
        } else {
            self.locks.clone()
        }
    }
}

/// `db.table`, `` `t` `` and the like, without anything that could end a
/// statement.
fn is_plain_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.matches('`').count().is_multiple_of(2)
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '$' | '.' | '`'))
}

fn text(v: &Option<Vec<u8>>) -> Option<String> {
    v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
}

fn col(row: &Row, i: usize) -> Option<String> {
    row.get(i).and_then(text)
}

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02X}");
    }
    s
}

fn unhex(s: &[u8]) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

fn is_number(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'))
}

fn is_charset_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Reads the source session's state and checks what would stop a move.
/// `now_unix` is the real time, to tell a fixed `timestamp` from the clock.
pub async fn read_source<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BackendConn<S>,
    hints: &mut Hints,
    now_unix: f64,
) -> Result<CapturedState, StateError> {
    if hints.xa {
        return Err(NotMovable::Xa.into());
    }
    // Locks: the metadata_lock_info plugin lists them per connection.
    match conn
        .query(
            "SELECT LOCK_TYPE FROM information_schema.METADATA_LOCK_INFO \
             WHERE THREAD_ID = CONNECTION_ID()",
        )
        .await
    {
        Ok(r) => {
            if let Some(row) = r.rows.first() {
                let kind = col(row, 0).unwrap_or_default();
                let reason = if kind.eq_ignore_ascii_case("User lock") {
                    NotMovable::UserLock
                } else {
                    NotMovable::TableLock
                };
                hints.locks = Some(reason.clone());
                return Err(reason.into());
            }
            hints.locks = None;
        }
        // 1109: unknown table, the plugin is not installed.
        Err(e) if e.server_code() == Some(1109) => {
            if let Some(l) = &hints.locks {
                return Err(NotMovable::LockUnchecked(Box::new(l.clone())).into());
            }
        }
        Err(e) => return Err(unreadable("locks", e)),
    }
    if hints.unnamed_temp_table {
        return Err(NotMovable::TempTable(None).into());
    }
    let mut gone = Vec::new();
    for name in &hints.temp_tables {
        match conn.query(&format!("SHOW CREATE TABLE {name}")).await {
            Ok(r) => {
                let create = r
                    .rows
                    .first()
                    .and_then(|row| col(row, 1))
                    .unwrap_or_default();
                if create.starts_with("CREATE TEMPORARY TABLE") {
                    return Err(NotMovable::TempTable(Some(name.clone())).into());
                }
                gone.push(name.clone());
            }
            // 1146: no such table (dropped); 1049: its database is gone.
            Err(e) if matches!(e.server_code(), Some(1146 | 1049)) => gone.push(name.clone()),
            Err(e) => {
                return Err(NotMovable::TempTableUnchecked {
                    name: name.clone(),
                    source: Arc::new(e),
                }
                .into())
            }
        }
    }
    for g in gone {
        hints.temp_tables.remove(&g);
    }
    if let Some(name) = hints.sql_prepared.first() {
        return Err(NotMovable::SqlPrepared(name.clone()).into());
    }
    let variables = read_variables(conn, now_unix).await?;
    let (schema, checks) = read_checks(conn, &variables)
        .await
        .map_err(|e| unreadable("schema and variables", e))?;
    let user_variables = read_user_variables(conn).await?;
    Ok(CapturedState {
        schema,
        variables,
        checks,
        user_variables,
    })
}

/// `SELECT DATABASE(), @@SESSION.a, …` for the carried variables.
async fn read_checks<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BackendConn<S>,
    variables: &[Variable],
) -> Result<(Option<String>, Vec<(String, Option<String>)>), ConnError> {
    let mut sql = String::from("SELECT DATABASE()");
    for v in variables {
        let _ = write!(sql, ", @@SESSION.{}", quote_ident(&v.name));
    }
    let r = conn.query(&sql).await?;
    let row = r.rows.first().cloned().unwrap_or_default();
    let checks = variables
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.clone(), col(&row, i + 1)))
        .collect();
    Ok((col(&row, 0), checks))
}

/// Session variables that differ from their global value (or, for
/// session-only ones, from their default), sorted by name.
async fn read_variables<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BackendConn<S>,
    now_unix: f64,
) -> Result<Vec<Variable>, StateError> {
    let carried: Vec<String> = SESSION_ONLY_CARRIED
        .iter()
        .map(|(n, _)| format!("'{n}'"))
        .collect();
    // No ORDER BY: sorting ~650 rows server-side costs more than here.
    let sql = format!(
        "SELECT VARIABLE_NAME, SESSION_VALUE, VARIABLE_TYPE FROM information_schema.SYSTEM_VARIABLES \
         WHERE READ_ONLY = 'NO' AND ((VARIABLE_SCOPE = 'SESSION' AND NOT (SESSION_VALUE <=> GLOBAL_VALUE)) \
         OR VARIABLE_NAME IN ({}))",
        carried.join(",")
    );
    let r = conn
        .query(&sql)
        .await
        .map_err(|e| unreadable("session variables", e))?;
    let mut out = Vec::new();
    for row in &r.rows {
        let (Some(name), value, Some(kind)) = (col(row, 0), col(row, 1), col(row, 2)) else {
            continue;
        };
        if let Some((_, default)) = SESSION_ONLY_CARRIED.iter().find(|(n, _)| *n == name) {
            let v = value.as_deref().unwrap_or("");
            let skip = if name == "TIMESTAMP" {
                // A timestamp that follows the clock was not SET.
                v.parse::<f64>()
                    .map(|t| (t - now_unix).abs() < 1.0)
                    .unwrap_or(true)
            } else {
                v == *default
            };
            if skip {
                continue;
            }
        }
        out.push(Variable { name, value, kind });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

async fn read_user_variables<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BackendConn<S>,
) -> Result<Vec<UserVariable>, StateError> {
    let r = conn
        .query(
            "SELECT VARIABLE_NAME, VARIABLE_VALUE, VARIABLE_TYPE, CHARACTER_SET_NAME \
             FROM information_schema.USER_VARIABLES ORDER BY VARIABLE_NAME",
        )
        .await
        .map_err(|e| unreadable("user variables", e))?;
    let mut vars: Vec<UserVariable> = r
        .rows
        .iter()
        .filter_map(|row| {
            Some(UserVariable {
                name: col(row, 0)?,
                value: row.get(1).cloned().flatten(),
                kind: col(row, 2).unwrap_or_default(),
                charset: col(row, 3).unwrap_or_default(),
            })
        })
        .collect();
    // Strings: the I_S text is converted to the connection's character
    // set (lossy for binary data), so read the exact bytes.
    let strings: Vec<usize> = vars
        .iter()
        .enumerate()
        .filter(|(_, v)| v.kind == "VARCHAR" && v.value.is_some())
        .map(|(i, _)| i)
        .collect();
    if !strings.is_empty() {
        let sql = format!(
            "SELECT {}",
            strings
                .iter()
                .map(|&i| format!("HEX(@{})", quote_ident(&vars[i].name)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let r = conn
            .query(&sql)
            .await
            .map_err(|e| unreadable("user variable values", e))?;
        let row = r.rows.first().cloned().unwrap_or_default();
        for (k, &i) in strings.iter().enumerate() {
            let bytes = row
                .get(k)
                .cloned()
                .flatten()
                .and_then(|h| unhex(&h))
                .ok_or(NotMovable::UserVariableValue)?;
            vars[i].value = Some(bytes);
        }
    }
    Ok(vars)
}

impl CapturedState {
    /// The SET statement that rebuilds variables and user variables on a
    /// fresh connection (None if there is nothing to set). Values go as
    /// numbers or hex literals, so no escaping rule (sql_mode
    /// NO_BACKSLASH_ESCAPES, ANSI_QUOTES) can change their meaning; one
    /// statement is parsed before any of it runs.
    pub fn set_statement(&self) -> Result<Option<String>, StateError> {
        let mut items = Vec::new();
        for v in &self.variables {
            let value = match &v.value {
                None => "NULL".to_string(),
                Some(s) if is_numeric_kind(&v.kind) => {
                    if !is_number(s) {
                        return Err(NotMovable::VariableValue {
                            name: v.name.clone(),
                            value: s.clone(),
                        }
                        .into());
                    }
                    s.clone()
                }
                Some(s) => format!("_utf8mb4 X'{}'", hex(s.as_bytes())),
            };
            items.push(format!("@@SESSION.{} = {value}", quote_ident(&v.name)));
        }
        for u in &self.user_variables {
            let value = match &u.value {
                None => "NULL".to_string(),
                Some(b) => {
                    let s = String::from_utf8_lossy(b);
                    match u.kind.as_str() {
                        "INT" | "INT UNSIGNED" | "DECIMAL" if is_number(&s) => s.into_owned(),
                        "DOUBLE" if is_number(&s) => format!("CAST({s} AS DOUBLE)"),
                        "VARCHAR" if is_charset_name(&u.charset) => {
                            format!("_{} X'{}'", u.charset, hex(b))
                        }
                        _ => {
                            return Err(NotMovable::UserVariableType {
                                name: u.name.clone(),
                                kind: u.kind.clone(),
                            }
                            .into())
                        }
                    }
                }
            };
            items.push(format!("@{} = {value}", quote_ident(&u.name)));
        }
        if items.is_empty() {
            return Ok(None);
        }
        Ok(Some(format!("SET {}", items.join(", "))))
    }

    /// A digest of everything compared before the switch.
    pub fn fingerprint(&self, statements: &BTreeMap<u32, u16>) -> String {
        let mut h = Sha1::new();
        h.update(format!("schema={:?}\n", self.schema));
        for (name, value) in &self.checks {
            h.update(format!("var {name}={value:?}\n"));
        }
        for u in &self.user_variables {
            h.update(format!(
                "user {} {} {} {:?}\n",
                u.name, u.kind, u.charset, u.value
            ));
        }
        for (id, params) in statements {
            h.update(format!("stmt {id} {params}\n"));
        }
        hex(&h.finalize())
    }

    /// The first difference from `other`, for the move log.
    pub fn first_difference(&self, other: &CapturedState) -> String {
        if self.schema != other.schema {
            return format!("schema {:?} vs {:?}", self.schema, other.schema);
        }
        for (a, b) in self.checks.iter().zip(&other.checks) {
            if a != b {
                return format!("variable {} {:?} vs {:?}", a.0, a.1, b.1);
            }
        }
        if self.checks.len() != other.checks.len() {
            return "variable list differs".into();
        }
        for (a, b) in self.user_variables.iter().zip(&other.user_variables) {
            if a != b {
                return format!("user variable @{}", a.name);
            }
        }
        if self.user_variables.len() != other.user_variables.len() {
            return "user variable list differs".into();
        }
        "prepared statements differ".into()
    }
}

fn is_numeric_kind(kind: &str) -> bool {
    kind.contains("INT") || kind == "DOUBLE" || kind == "DECIMAL"
}

/// Rebuilds `state` on the target `server` (logged in without a schema)
/// and re-prepares `statements` (client id → (SQL, parameter count)).
/// Returns the target's state as read back, for verification, and the
/// statements' new server ids.
pub async fn rebuild<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BackendConn<S>,
    server: &str,
    state: &CapturedState,
    statements: &BTreeMap<u32, (Vec<u8>, u16)>,
) -> Result<(CapturedState, BTreeMap<u32, (u32, u16)>), StateError> {
    // Logged in without a schema (the login ran while the source was still
    // being read): select it first, statements are prepared in it.
    if let Some(schema) = &state.schema {
        conn.init_db(schema)
            .await
            .map_err(|source| MoveError::Schema {
                schema: schema.clone(),
                server: server.to_string(),
                source,
            })?;
    }
    let prepared = reprepare(conn, server, statements).await?;
    if let Some(set) = state.set_statement()? {
        conn.query(&set).await.map_err(|source| MoveError::Apply {
            server: server.to_string(),
            source,
        })?;
    }
    let (schema, checks) = read_checks(conn, &state.variables)
        .await
        .map_err(|source| MoveError::ReadTarget {
            server: server.to_string(),
            source,
        })?;
    let user_variables = read_user_variables(conn).await.map_err(|e| match e {
        StateError::NotMovable(n) => StateError::Failed(MoveError::ReadTargetState(n)),
        other => other,
    })?;
    Ok((
        CapturedState {
            schema,
            variables: Vec::new(),
            checks,
            user_variables,
        },
        prepared,
    ))
}

/// Prepares each statement again on the target. The server picks new
/// ids (on MariaDB the per-connection counter does not restart at 1 when
/// the server reuses a THD, so the old ids cannot be reproduced); the relay
/// translates the client's ids from then on. Returns client id → (server
/// id, parameter count).
async fn reprepare<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BackendConn<S>,
    server: &str,
    statements: &BTreeMap<u32, (Vec<u8>, u16)>,
) -> Result<BTreeMap<u32, (u32, u16)>, MoveError> {
    let mut out = BTreeMap::new();
    for (&client_id, (sql, params)) in statements {
        let p = conn
            .prepare(sql)
            .await
            .map_err(|source| MoveError::Prepare {
                id: client_id,
                server: server.to_string(),
                source,
            })?;
        if p.params != *params {
            return Err(MoveError::ParamCount {
                id: client_id,
                target: p.params,
                source_params: *params,
            });
        }
        out.insert(client_id, (p.id, p.params));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_follow_temp_tables_locks_and_xa() {
        let mut h = Hints::default();
        h.observe_query(b"CREATE TEMPORARY TABLE IF NOT EXISTS t1 (a int)");
        h.observe_query(b"create or replace temporary table `db`.`t2`(a int)");
        h.observe_query(b"CREATE TABLE t3 (a int)");
        assert_eq!(
            h.temp_tables.iter().cloned().collect::<Vec<_>>(),
            vec!["`db`.`t2`".to_string(), "t1".to_string()]
        );
        assert!(h.locks.is_none() && !h.xa && !h.unnamed_temp_table);
        assert_eq!(
            h.reason().map(|r| r.to_string()).as_deref(),
            Some("temporary table `db`.`t2`")
        );
        h.observe_query(b"DROP TEMPORARY TABLE IF EXISTS `db`.`t2`");
        assert_eq!(
            h.reason().map(|r| r.to_string()).as_deref(),
            Some("temporary table t1")
        );
        h.observe_query(b"SELECT GET_LOCK('x', 1)");
        assert!(h.locks.is_some());
        let mut ps = Hints::default();
        ps.observe_query(b"PREPARE s1 FROM 'SELECT 1'");
        assert_eq!(
            ps.reason().map(|r| r.to_string()).as_deref(),
            Some("SQL prepared statement s1")
        );
        ps.observe_query(b"DEALLOCATE PREPARE s1");
        assert!(ps.reason().is_none());
        let mut multi = Hints::default();
        multi.observe_query(b"CREATE TABLE t (a INT); LOCK TABLES t READ");
        assert!(multi.locks.is_some());
        h.observe_query(b"XA START 'a'");
        assert!(h.xa);
        h.observe_query(b"xa commit 'a'");
        assert!(!h.xa);
        h.observe_query(b"CREATE TEMPORARY TABLE `a b` (x int)");
        assert!(h.unnamed_temp_table);
        h.reset();
        assert!(h.temp_tables.is_empty() && !h.unnamed_temp_table);
    }

    #[test]
    fn set_statement_uses_literals_that_survive_any_sql_mode() {
        let s = CapturedState {
            schema: Some("test".into()),
            checks: Vec::new(),
            variables: vec![
                Variable {
                    name: "AUTOCOMMIT".into(),
                    value: Some("OFF".into()),
                    kind: "BOOLEAN".into(),
                },
                Variable {
                    name: "SQL_MODE".into(),
                    value: Some("ANSI_QUOTES".into()),
                    kind: "SET".into(),
                },
                Variable {
                    name: "SORT_BUFFER_SIZE".into(),
                    value: Some("1048576".into()),
                    kind: "BIGINT UNSIGNED".into(),
                },
            ],
            user_variables: vec![
                UserVariable {
                    name: "s".into(),
                    value: Some(b"it's\\".to_vec()),
                    kind: "VARCHAR".into(),
                    charset: "latin1".into(),
                },
                UserVariable {
                    name: "d".into(),
                    value: Some(b"1.5e100".to_vec()),
                    kind: "DOUBLE".into(),
                    charset: "latin1".into(),
                },
                UserVariable {
                    name: "n".into(),
                    value: None,
                    kind: "VARCHAR".into(),
                    charset: "binary".into(),
                },
            ],
        };
        let set = s.set_statement().unwrap().unwrap();
        assert!(set.contains("@`s` = _latin1 X'697427735C'"), "{set}");
        assert!(set.contains("@`d` = CAST(1.5e100 AS DOUBLE)"), "{set}");
        assert!(set.contains("@`n` = NULL"), "{set}");
        assert!(
            set.starts_with("SET @@SESSION.`AUTOCOMMIT` = _utf8mb4 X'4F4646', "),
            "{set}"
        );
        assert!(
            set.contains("@@SESSION.`SORT_BUFFER_SIZE` = 1048576"),
            "{set}"
        );
        let bad = CapturedState {
            variables: vec![Variable {
                name: "X".into(),
                value: Some("1; DROP".into()),
                kind: "INT".into(),
            }],
            ..Default::default()
        };
        assert!(bad.set_statement().is_err());
        assert_ne!(
            s.fingerprint(&BTreeMap::new()),
            CapturedState::default().fingerprint(&BTreeMap::new())
        );
    }

    #[test]
    fn hex_roundtrip() {
        assert_eq!(
            unhex(hex(&[0, 0xff, 0x41]).as_bytes()),
            Some(vec![0, 0xff, 0x41])
        );
        assert_eq!(unhex(b"0"), None);
    }
}
