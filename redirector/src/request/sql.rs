//! The admin SQL dialect: a tokenizer and a hand-written recursive-descent
//! parser for the statements that are the redirector's own (`CONTROL …`,
//! `ALTER SYSTEM`, `SHOW`, `SET`, `USE`, and the `SELECT @@variable` that
//! clients send on connect). Queries over the tables (`SELECT`, `WITH`,
//! `VALUES`, `EXPLAIN`) are handed whole to SQLite ([`super::table`]);
//! statements that would write are refused by name. Keywords are
//! case-insensitive, whitespace and comments are free, a trailing `;` is
//! optional.
//!
//! Hand-written rather than a parser crate: the grammar is a dozen fixed
//! statement shapes, and a syntax error must point at the text that is wrong
//! ("near '...'"), which the token offsets give directly.

use super::Selection;

/// How much of the remaining text a syntax error quotes (MariaDB quotes 80).
const NEAR_CHARS: usize = 80;

/// A parsed admin statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    Move(MoveStmt),
    Drain {
        server: String,
        opts: WaitOpts,
    },
    Undrain {
        server: String,
    },
    Rebalance {
        wait: Option<f64>,
    },
    AddServer {
        name: String,
        address: String,
        weight: Option<i64>,
    },
    RemoveServer {
        server: String,
        opts: WaitOpts,
    },
    /// `ALTER SYSTEM SET AUTO_SCALING_POLICY = '<json>'`.
    SetPolicy(String),
    /// A query over the tables, run by SQLite: the statement's text.
    Query(String),
    /// `SELECT` of `@@variables` (and literals, `DATABASE()` …) without
    /// `FROM`: what client libraries ask on connect.
    SelectExprs {
        items: Vec<SelectItem>,
        limit: Option<u64>,
    },
    ShowTables,
    ShowDatabases,
    /// `USE db`: only `DATABASE()` reports it.
    Use(String),
    /// A statement that would write (`INSERT`, `CREATE`, `ATTACH` …): the
    /// verb, refused since the tables are read-only.
    Write(String),
    /// Session settings clients send on connect (`SET NAMES`, `SET
    /// autocommit`): accepted, nothing to do.
    Ignored,
    /// Only whitespace, comments or `;`.
    Empty,
}

/// `CONTROL MOVE …`.
#[derive(Debug, Clone, PartialEq)]
pub struct MoveStmt {
    pub sessions: Selection,
    pub from: Option<String>,
    pub to: String,
    pub opts: WaitOpts,
}

/// `[WAIT TIMEOUT n] [FORCE]`, in either order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WaitOpts {
    pub wait: Option<f64>,
    pub force: bool,
}

/// One item of a select list.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectItem {
    pub expr: Expr,
    /// The column header: the alias, else the item's text as written.
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Column(String),
    /// `@@name` (scope prefix such as `session.` removed, lower case).
    Variable(String),
    Literal(Literal),
    /// `NAME()` (upper case).
    Call(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// As written (integer or decimal).
    Number(String),
    Str(String),
    Null,
}

/// A syntax error: where (the rest of the statement) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("You have an error in your SQL syntax near '{near}': expected {expected}")]
pub struct SyntaxError {
    pub near: String,
    pub expected: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// Keyword or identifier (bare or `backquoted`; only bare words can be
    /// keywords, see [`Token::quoted`]).
    Word(String),
    /// `@@name` (without the `@@`).
    Var(String),
    Number(String),
    Str(String),
    Punct(char),
}

#[derive(Debug, Clone, PartialEq)]
struct Token {
    tok: Tok,
    /// Byte offsets in the statement text.
    start: usize,
    end: usize,
    /// A backquoted identifier.
    quoted: bool,
}

/// First words of the statements SQLite would run as writes (or that
/// touch files or the connection): refused by name, never run.
const WRITE_VERBS: [&str; 17] = [
    "INSERT",
    "UPDATE",
    "DELETE",
    "REPLACE",
    "UPSERT",
    "CREATE",
    "DROP",
    "ATTACH",
    "DETACH",
    "PRAGMA",
    "VACUUM",
    "REINDEX",
    "ANALYZE",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
];

/// First words of the queries SQLite runs.
const QUERY_VERBS: [&str; 4] = ["SELECT", "WITH", "VALUES", "EXPLAIN"];

/// Parses one statement.
pub fn parse(sql: &str) -> Result<Statement, SyntaxError> {
    let tokens = tokenize(sql)?;
    let mut p = Parser {
        src: sql,
        tokens,
        pos: 0,
    };
    p.statement()
}

// ---- tokenizer ----------------------------------------------------------------

fn near(src: &str, at: usize) -> String {
    src.get(at..)
        .unwrap_or("")
        .chars()
        .take(NEAR_CHARS)
        .collect()
}

fn syntax(src: &str, at: usize, expected: &str) -> SyntaxError {
    SyntaxError {
        near: near(src, at),
        expected: expected.to_string(),
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

fn tokenize(src: &str) -> Result<Vec<Token>, SyntaxError> {
    let mut out = Vec::new();
    let mut it = src.char_indices().peekable();
    while let Some(&(start, c)) = it.peek() {
        let rest = &src[start..];
        if c.is_whitespace() {
            it.next();
            continue;
        }
        if let Some(len) = comment_len(rest).map_err(|()| syntax(src, start, "'*/'"))? {
            while it.peek().is_some_and(|&(i, _)| i < start + len) {
                it.next();
            }
            continue;
        }
        let (tok, len, quoted) = match c {
            '\'' | '"' => {
                let (text, len) =
                    string_literal(rest, c).ok_or_else(|| syntax(src, start, "a closing quote"))?;
                (Tok::Str(text), len, false)
            }
            '`' => {
                let (text, len) =
                    backquoted(rest).ok_or_else(|| syntax(src, start, "a closing backquote"))?;
                (Tok::Word(text), len, true)
            }
            '@' if rest.starts_with("@@") => {
                let len = 2 + word_len(&rest[2..], true);
                (Tok::Var(rest[2..len].to_string()), len, false)
            }
            c if c.is_ascii_digit() => {
                let len = number_len(rest);
                (Tok::Number(rest[..len].to_string()), len, false)
            }
            c if is_word_char(c) => {
                let len = word_len(rest, false);
                (Tok::Word(rest[..len].to_string()), len, false)
            }
            c => (Tok::Punct(c), c.len_utf8(), false),
        };
        out.push(Token {
            tok,
            start,
            end: start + len,
            quoted,
        });
        while it.peek().is_some_and(|&(i, _)| i < start + len) {
            it.next();
        }
    }
    Ok(out)
}

/// Length of a comment at the start of `s` (`-- …`, `# …`, `/* … */`);
/// `Err` for an unterminated `/*`.
fn comment_len(s: &str) -> Result<Option<usize>, ()> {
    // "--" starts a comment only when followed by whitespace (MySQL rule).
    let dash = s.starts_with("--") && s[2..].chars().next().is_none_or(char::is_whitespace);
    if dash || s.starts_with('#') {
        return Ok(Some(s.find('\n').map_or(s.len(), |i| i + 1)));
    }
    if let Some(body) = s.strip_prefix("/*") {
        return body.find("*/").map(|i| Some(i + 4)).ok_or(());
    }
    Ok(None)
}

fn word_len(s: &str, dots: bool) -> usize {
    s.char_indices()
        .find(|&(_, c)| !(is_word_char(c) || (dots && c == '.')))
        .map_or(s.len(), |(i, _)| i)
}

fn number_len(s: &str) -> usize {
    let digits = |t: &str| t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let int = digits(s);
    match s[int..].strip_prefix('.') {
        Some(frac) if frac.starts_with(|c: char| c.is_ascii_digit()) => int + 1 + digits(frac),
        _ => int,
    }
}

/// A quoted string starting at `s[0]` (the quote): its value and length.
/// The quote doubled stands for itself; backslash escapes as in MySQL.
fn string_literal(s: &str, quote: char) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1).peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                let (_, e) = chars.next()?;
                out.push(match e {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '0' => '\0',
                    'b' => '\u{8}',
                    'Z' => '\u{1a}',
                    other => other,
                });
            }
            c if c == quote => {
                if chars.peek().is_some_and(|&(_, n)| n == quote) {
                    chars.next();
                    out.push(quote);
                } else {
                    return Some((out, i + 1));
                }
            }
            c => out.push(c),
        }
    }
    None
}

fn backquoted(s: &str) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1).peekable();
    while let Some((i, c)) = chars.next() {
        if c == '`' {
            if chars.peek().is_some_and(|&(_, n)| n == '`') {
                chars.next();
                out.push('`');
            } else {
                return Some((out, i + 1));
            }
        } else {
            out.push(c);
        }
    }
    None
}

// ---- parser -------------------------------------------------------------------

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<Token>,
    pos: usize,
}

type PResult<T> = Result<T, SyntaxError>;

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn error(&self, expected: &str) -> SyntaxError {
        let at = self.peek().map_or(self.src.len(), |t| t.start);
        syntax(self.src, at, expected)
    }

    fn at_keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Word(w), quoted: false, .. }) if w.eq_ignore_ascii_case(kw))
    }

    fn eat_keyword(&mut self, kw: &str) -> bool {
        let hit = self.at_keyword(kw);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn expect_keyword(&mut self, kw: &str) -> PResult<()> {
        if self.eat_keyword(kw) {
            Ok(())
        } else {
            Err(self.error(kw))
        }
    }

    fn eat_punct(&mut self, c: char) -> bool {
        let hit = matches!(self.peek(), Some(Token { tok: Tok::Punct(p), .. }) if *p == c);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn expect_punct(&mut self, c: char) -> PResult<()> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            Err(self.error(&format!("'{c}'")))
        }
    }

    /// A string literal.
    fn string(&mut self, what: &str) -> PResult<String> {
        match self.peek() {
            Some(Token {
                tok: Tok::Str(s), ..
            }) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.error(what)),
        }
    }

    /// A name: a string literal, a bare or a backquoted identifier.
    fn name(&mut self, what: &str) -> PResult<String> {
        match self.peek() {
            Some(Token {
                tok: Tok::Str(s) | Tok::Word(s),
                ..
            }) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.error(what)),
        }
    }

    fn number_text(&mut self, what: &str) -> PResult<String> {
        match self.peek() {
            Some(Token {
                tok: Tok::Number(n),
                ..
            }) => {
                let n = n.clone();
                self.pos += 1;
                Ok(n)
            }
            _ => Err(self.error(what)),
        }
    }

    fn integer(&mut self, what: &str) -> PResult<u64> {
        let before = self.pos;
        let text = self.number_text(what)?;
        text.parse().map_err(|_| {
            self.pos = before;
            self.error(what)
        })
    }

    fn seconds(&mut self) -> PResult<f64> {
        let before = self.pos;
        let text = self.number_text("a number of seconds")?;
        text.parse().map_err(|_| {
            self.pos = before;
            self.error("a number of seconds")
        })
    }

    /// An optional `;`, then the end of the text.
    fn finish(&mut self) -> PResult<()> {
        while self.eat_punct(';') {}
        if self.peek().is_some() {
            return Err(self.error("the end of the statement"));
        }
        Ok(())
    }

    fn statement(&mut self) -> PResult<Statement> {
        while self.eat_punct(';') {}
        if self.peek().is_none() {
            return Ok(Statement::Empty);
        }
        // `@@variables` are answered here; SQLite does not know them.
        let variables = self.tokens.iter().any(|t| matches!(t.tok, Tok::Var(_)));
        if self.at_keyword("SELECT") && variables {
            self.pos += 1;
            let stmt = self.select_exprs()?;
            self.finish()?;
            return Ok(stmt);
        }
        if QUERY_VERBS.iter().any(|v| self.at_keyword(v)) {
            return Ok(Statement::Query(self.src.to_string()));
        }
        if let Some(verb) = WRITE_VERBS.iter().find(|v| self.at_keyword(v)) {
            return Ok(Statement::Write(verb.to_string()));
        }
        let stmt = if self.eat_keyword("CONTROL") {
            self.control()?
        } else if self.eat_keyword("ALTER") {
            self.alter_system()?
        } else if self.eat_keyword("SHOW") {
            if self.eat_keyword("DATABASES") || self.eat_keyword("SCHEMAS") {
                Statement::ShowDatabases
            } else {
                self.eat_keyword("FULL");
                self.expect_keyword("TABLES")?;
                Statement::ShowTables
            }
        } else if self.eat_keyword("SET") {
            // Session settings change nothing here; accept them whole.
            self.pos = self.tokens.len();
            Statement::Ignored
        } else if self.eat_keyword("USE") {
            Statement::Use(self.name("a database name")?)
        } else {
            return Err(self
                .error("CONTROL, SELECT (WITH, VALUES, EXPLAIN), SHOW, ALTER SYSTEM, SET or USE"));
        };
        self.finish()?;
        Ok(stmt)
    }

    fn control(&mut self) -> PResult<Statement> {
        if self.eat_keyword("MOVE") {
            return self.move_stmt().map(Statement::Move);
        }
        if self.eat_keyword("DRAIN") {
            let server = self.server_name()?;
            let opts = self.wait_opts(true)?;
            return Ok(Statement::Drain { server, opts });
        }
        if self.eat_keyword("UNDRAIN") {
            let server = self.server_name()?;
            return Ok(Statement::Undrain { server });
        }
        if self.eat_keyword("REBALANCE") {
            let wait = self.wait_opts(false)?.wait;
            return Ok(Statement::Rebalance { wait });
        }
        if self.eat_keyword("ADD") {
            return self.add_server();
        }
        if self.eat_keyword("REMOVE") {
            let server = self.server_name()?;
            let opts = self.wait_opts(true)?;
            return Ok(Statement::RemoveServer { server, opts });
        }
        Err(self.error("MOVE, DRAIN, UNDRAIN, REBALANCE, ADD SERVER or REMOVE SERVER"))
    }

    /// `SERVER 'name'`.
    fn server_name(&mut self) -> PResult<String> {
        self.expect_keyword("SERVER")?;
        self.name("a server name")
    }

    fn add_server(&mut self) -> PResult<Statement> {
        let name = self.server_name()?;
        self.expect_keyword("ADDRESS")?;
        let address = self.string("an address in quotes ('host:port')")?;
        let weight = if self.eat_keyword("WEIGHT") {
            // Out of range for i64 is out of range for a weight too; the
            // operation names the valid range.
            Some(i64::try_from(self.integer("a weight")?).unwrap_or(i64::MAX))
        } else {
            None
        };
        Ok(Statement::AddServer {
            name,
            address,
            weight,
        })
    }

    fn move_stmt(&mut self) -> PResult<MoveStmt> {
        let sessions = if self.eat_keyword("ALL") {
            let inactive = self.eat_keyword("INACTIVE");
            if !(self.eat_keyword("SESSIONS") || self.eat_keyword("SESSION")) {
                return Err(self.error("SESSIONS"));
            }
            if inactive {
                Selection::AllInactive
            } else {
                Selection::All
            }
        } else {
            if !(self.eat_keyword("SESSION") || self.eat_keyword("SESSIONS")) {
                return Err(self.error("SESSION or ALL"));
            }
            Selection::Ids(self.id_list()?)
        };
        let from = if self.eat_keyword("FROM") {
            Some(self.name("a server name")?)
        } else {
            None
        };
        self.expect_keyword("TO")?;
        let to = self.name("a server name")?;
        let opts = self.wait_opts(true)?;
        Ok(MoveStmt {
            sessions,
            from,
            to,
            opts,
        })
    }

    fn id_list(&mut self) -> PResult<Vec<u64>> {
        let mut ids = vec![self.integer("a session id")?];
        while self.eat_punct(',') {
            ids.push(self.integer("a session id")?);
        }
        Ok(ids)
    }

    /// `[WAIT TIMEOUT n] [FORCE]` in any order, each at most once.
    fn wait_opts(&mut self, allow_force: bool) -> PResult<WaitOpts> {
        let mut opts = WaitOpts::default();
        loop {
            if opts.wait.is_none() && self.eat_keyword("WAIT") {
                self.expect_keyword("TIMEOUT")?;
                opts.wait = Some(self.seconds()?);
            } else if allow_force && !opts.force && self.eat_keyword("FORCE") {
                opts.force = true;
            } else {
                return Ok(opts);
            }
        }
    }

    fn alter_system(&mut self) -> PResult<Statement> {
        self.expect_keyword("SYSTEM")?;
        self.expect_keyword("SET")?;
        self.expect_keyword("AUTO_SCALING_POLICY")?;
        self.expect_punct('=')?;
        let json = self.string("the policy as a string literal")?;
        Ok(Statement::SetPolicy(json))
    }

    /// `SELECT @@var, FUNC(), literal … [LIMIT n]` (no `FROM`).
    fn select_exprs(&mut self) -> PResult<Statement> {
        let items = self.select_items()?;
        if self.at_keyword("FROM") {
            return Err(
                self.error("no FROM: @@variables are answered in a SELECT without tables only")
            );
        }
        let limit = self.limit()?;
        Ok(Statement::SelectExprs { items, limit })
    }

    fn limit(&mut self) -> PResult<Option<u64>> {
        if self.eat_keyword("LIMIT") {
            Ok(Some(self.integer("a row count")?))
        } else {
            Ok(None)
        }
    }

    fn select_items(&mut self) -> PResult<Vec<SelectItem>> {
        let mut items = vec![self.select_item()?];
        while self.eat_punct(',') {
            items.push(self.select_item()?);
        }
        Ok(items)
    }

    fn select_item(&mut self) -> PResult<SelectItem> {
        let start = self.peek().map_or(self.src.len(), |t| t.start);
        let expr = self.expr()?;
        let end = self.tokens[..self.pos].last().map_or(start, |t| t.end);
        let alias = if self.eat_keyword("AS") {
            Some(self.name("an alias")?)
        } else {
            None
        };
        let label = alias.unwrap_or_else(|| match &expr {
            Expr::Column(c) => c.clone(),
            _ => self.src.get(start..end).unwrap_or_default().to_string(),
        });
        Ok(SelectItem { expr, label })
    }

    fn expr(&mut self) -> PResult<Expr> {
        let Some(t) = self.peek().cloned() else {
            return Err(self.error("a column, @@variable or value"));
        };
        let expr = match t.tok {
            Tok::Var(v) => Expr::Variable(strip_scope(&v)),
            Tok::Number(n) => Expr::Literal(Literal::Number(n)),
            Tok::Str(s) => Expr::Literal(Literal::Str(s)),
            Tok::Word(w) if !t.quoted && w.eq_ignore_ascii_case("NULL") => {
                Expr::Literal(Literal::Null)
            }
            Tok::Word(w) => {
                self.pos += 1;
                if !t.quoted && self.eat_punct('(') {
                    self.expect_punct(')')?;
                    return Ok(Expr::Call(w.to_ascii_uppercase()));
                }
                return Ok(Expr::Column(w));
            }
            Tok::Punct(_) => return Err(self.error("a column, @@variable or value")),
        };
        self.pos += 1;
        Ok(expr)
    }
}

/// `session.autocommit` → `autocommit` (the scope makes no difference here).
fn strip_scope(var: &str) -> String {
    let lower = var.to_ascii_lowercase();
    for scope in ["session.", "global.", "local."] {
        if let Some(rest) = lower.strip_prefix(scope) {
            return rest.to_string();
        }
    }
    lower
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(sql: &str) -> Statement {
        parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn err(sql: &str) -> SyntaxError {
        match parse(sql) {
            Ok(s) => panic!("{sql}: parsed as {s:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn move_statements() {
        assert_eq!(
            ok("CONTROL MOVE SESSION 12, 13 TO 'db2' WAIT TIMEOUT 60 FORCE"),
            Statement::Move(MoveStmt {
                sessions: Selection::Ids(vec![12, 13]),
                from: None,
                to: "db2".into(),
                opts: WaitOpts {
                    wait: Some(60.0),
                    force: true
                },
            })
        );
        assert_eq!(
            ok("control move all sessions from 'db1' to \"db2\" force wait timeout 1.5;"),
            Statement::Move(MoveStmt {
                sessions: Selection::All,
                from: Some("db1".into()),
                to: "db2".into(),
                opts: WaitOpts {
                    wait: Some(1.5),
                    force: true
                },
            })
        );
        assert_eq!(
            ok("  CONTROL\n MOVE  ALL INACTIVE SESSIONS TO `db2`"),
            Statement::Move(MoveStmt {
                sessions: Selection::AllInactive,
                from: None,
                to: "db2".into(),
                opts: WaitOpts::default(),
            })
        );
        assert_eq!(
            ok("CONTROL MOVE ALL INACTIVE SESSIONS FROM db1 TO db2"),
            Statement::Move(MoveStmt {
                sessions: Selection::AllInactive,
                from: Some("db1".into()),
                to: "db2".into(),
                opts: WaitOpts::default(),
            })
        );
    }

    #[test]
    fn server_statements() {
        assert_eq!(
            ok("CONTROL DRAIN SERVER 'db1' WAIT TIMEOUT 5"),
            Statement::Drain {
                server: "db1".into(),
                opts: WaitOpts {
                    wait: Some(5.0),
                    force: false
                }
            }
        );
        assert_eq!(
            ok("control undrain server 'db1';"),
            Statement::Undrain {
                server: "db1".into()
            }
        );
        assert_eq!(ok("CONTROL REBALANCE"), Statement::Rebalance { wait: None });
        assert_eq!(
            ok("CONTROL REBALANCE WAIT TIMEOUT 0"),
            Statement::Rebalance { wait: Some(0.0) }
        );
        assert_eq!(
            ok("CONTROL ADD SERVER 'db3' ADDRESS '127.0.0.1:3309' WEIGHT 10"),
            Statement::AddServer {
                name: "db3".into(),
                address: "127.0.0.1:3309".into(),
                weight: Some(10)
            }
        );
        assert_eq!(
            ok("CONTROL REMOVE SERVER 'db3' FORCE"),
            Statement::RemoveServer {
                server: "db3".into(),
                opts: WaitOpts {
                    wait: None,
                    force: true
                }
            }
        );
    }

    #[test]
    fn policy_string_escapes() {
        assert_eq!(
            ok(r#"ALTER SYSTEM SET AUTO_SCALING_POLICY = '{"a": "it''s", "b": "x\ny\\z"}'"#),
            Statement::SetPolicy("{\"a\": \"it's\", \"b\": \"x\ny\\z\"}".into())
        );
        assert_eq!(
            ok(r"alter system set auto_scaling_policy='\'q\''"),
            Statement::SetPolicy("'q'".into())
        );
    }

    #[test]
    fn queries_go_to_the_engine_writes_are_refused() {
        for sql in [
            "SELECT * FROM sessions",
            "select SERVER_NAME, count(*) from sessions group by 1;",
            "  WITH x AS (SELECT 1) SELECT * FROM x",
            "VALUES (1)",
            "explain query plan select 1",
            "SELECT DATABASE()",
        ] {
            assert_eq!(ok(sql), Statement::Query(sql.to_string()));
        }
        assert_eq!(
            ok("insert into sessions values (1)"),
            Statement::Write("INSERT".into())
        );
        assert_eq!(
            ok("ATTACH DATABASE '/tmp/x' AS x"),
            Statement::Write("ATTACH".into())
        );
        assert_eq!(ok("Create Table t (a)"), Statement::Write("CREATE".into()));
        assert_eq!(
            ok("PRAGMA table_info(sessions)"),
            Statement::Write("PRAGMA".into())
        );
        // `SELECT @@x FROM t` is neither: the engine has no @@variables.
        assert_eq!(
            err("SELECT @@version FROM sessions").expected,
            "no FROM: @@variables are answered in a SELECT without tables only"
        );
    }

    #[test]
    fn client_connect_queries() {
        let Statement::SelectExprs { items, limit } = ok("SELECT @@version_comment LIMIT 1") else {
            panic!()
        };
        assert_eq!(limit, Some(1));
        assert_eq!(items[0].expr, Expr::Variable("version_comment".into()));
        assert_eq!(items[0].label, "@@version_comment");
        let Statement::SelectExprs { items, .. } =
            ok("SELECT @@max_allowed_packet,@@SESSION.wait_timeout, DATABASE(), 1, 'x', NULL")
        else {
            panic!()
        };
        assert_eq!(items[1].expr, Expr::Variable("wait_timeout".into()));
        assert_eq!(items[1].label, "@@SESSION.wait_timeout");
        assert_eq!(items[2].expr, Expr::Call("DATABASE".into()));
        assert_eq!(items[2].label, "DATABASE()");
        assert_eq!(items[5].expr, Expr::Literal(Literal::Null));
        assert_eq!(ok("SET NAMES utf8mb4"), Statement::Ignored);
        assert_eq!(ok("set autocommit=1"), Statement::Ignored);
        assert_eq!(ok("USE redirector"), Statement::Use("redirector".into()));
        assert_eq!(ok("show tables"), Statement::ShowTables);
        assert_eq!(ok("SHOW FULL TABLES"), Statement::ShowTables);
        assert_eq!(ok("show databases;"), Statement::ShowDatabases);
        assert_eq!(ok(" ; "), Statement::Empty);
        assert_eq!(ok("/* hi */ -- x\n"), Statement::Empty);
        assert_eq!(
            ok("# comment\nCONTROL /* c */ UNDRAIN SERVER 'a' -- done"),
            Statement::Undrain { server: "a".into() }
        );
    }

    #[test]
    fn syntax_errors_say_where() {
        let e = err("CONTROL MOVE SESSION TO 'db2'");
        assert_eq!(e.near, "TO 'db2'");
        assert_eq!(e.expected, "a session id");
        assert_eq!(
            e.to_string(),
            "You have an error in your SQL syntax near 'TO 'db2'': expected a session id"
        );
        assert_eq!(err("CONTROL MOVE SESSION 1").near, "");
        assert_eq!(err("CONTROL MOVE SESSION 1 TO 'x' WAIT 5").near, "5");
        assert_eq!(err("CONTROL MOVE SESSION 1.5 TO 'x'").near, "1.5 TO 'x'");
        assert_eq!(err("CONTROL JUMP").near, "JUMP");
        assert_eq!(err("CONTROL DRAIN SERVER 'x' extra").near, "extra");
        assert_eq!(err("CONTROL REBALANCE FORCE").near, "FORCE");
        assert_eq!(err("TRUNCATE sessions").near, "TRUNCATE sessions");
        assert_eq!(err("SELECT @@a b").near, "b");
        assert_eq!(err("SELECT 'abc").expected, "a closing quote");
        assert_eq!(err("SELECT 1 /* open").expected, "'*/'");
        assert_eq!(
            err("ALTER SYSTEM SET AUTO_SCALING_POLICY = {}").expected,
            "the policy as a string literal"
        );
        // Backquoted keywords are names, not keywords.
        assert!(parse("`CONTROL` UNDRAIN SERVER 'a'").is_err());
        let long = format!("CONTROL {}", "x".repeat(200));
        assert_eq!(err(&long).near.chars().count(), NEAR_CHARS);
    }

    #[test]
    fn tokenizer_never_panics_on_odd_text() {
        for sql in [
            "",
            "'",
            "\"",
            "`",
            "@@",
            "@",
            "\\",
            "SELECT 'é''ü'",
            "SELECT @@é",
            "1.",
            "1.x",
            "SELECT 1.2.3",
            "--",
            "--x",
            "/*",
            "é",
            "SELECT `a``b` FROM t",
            "'\\",
        ] {
            let _ = parse(sql);
        }
        assert_eq!(number_len("1.x"), 1);
        assert_eq!(number_len("12.50;"), 5);
    }
}
