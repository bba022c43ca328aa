//! `redirector ctl`: the operator CLI over the REST API (`/v1` on
//! `admin.http_address`). Prints aligned tables, or the API's JSON with
//! `--json`; an API error goes to stderr with a non-zero exit.
//!
//! The HTTP client is hyper's connection-level HTTP/1.1 client (hyper comes
//! with axum already): one connection per command, which is all a CLI
//! needs, without the build time of a full client crate.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{ArgGroup, Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;

/// Where the REST API listens by default (`admin.http_address`'s default).
pub const DEFAULT_URL: &str = "http://127.0.0.1:9104";
/// Time to connect, and to answer a read-only request. Operations (moves,
/// drains) get no client-side limit: they end by their own wait timeout on
/// the server, which the client cannot know when none is given.
const QUICK_TIMEOUT: Duration = Duration::from_secs(30);
/// Help heading of the options every subcommand takes.
const GLOBAL: &str = "Global options";

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Base URL of the REST API (admin.http_address).
    #[arg(long, global = true, env = "REDIRECTOR_URL", default_value = DEFAULT_URL, help_heading = GLOBAL)]
    pub url: String,
    /// Bearer token (admin.token).
    #[arg(long, global = true, env = "REDIRECTOR_TOKEN", hide_env_values = true, help_heading = GLOBAL)]
    pub token: Option<String>,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// List client sessions.
    Sessions,
    /// List backend servers with their state and session counts.
    Servers,
    /// List recent session moves.
    Moves,
    /// Move sessions to another server (each moves when idle, outside a transaction).
    Move(MoveArgs),
    /// Stop placing new sessions on a server and move its sessions away.
    Drain {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Let a drained server take new sessions again.
    Undrain { name: String },
    /// Spread sessions over the servers by the policy's weights.
    Rebalance {
        /// Seconds to wait for sessions to become movable (default: the daemon's).
        #[arg(long, value_name = "SECS")]
        wait: Option<f64>,
    },
    /// Show or replace the placement policy (JSON).
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Add a backend server (listed in the policy with its weight).
    AddServer {
        name: String,
        /// host:port
        address: String,
        #[arg(long)]
        weight: Option<i64>,
    },
    /// Drain a server, then remove it.
    RemoveServer {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["sessions", "all", "all_inactive"])))]
pub struct MoveArgs {
    /// Target server.
    #[arg(long)]
    pub to: String,
    /// Session ids, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub sessions: Vec<u64>,
    /// Every session (of --from, if given).
    #[arg(long)]
    pub all: bool,
    /// Every session idle right now (of --from, if given).
    #[arg(long)]
    pub all_inactive: bool,
    /// Only sessions on this server.
    #[arg(long)]
    pub from: Option<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Seconds to wait for sessions to become movable (default: the daemon's).
    #[arg(long, value_name = "SECS")]
    pub wait: Option<f64>,
    /// Past the wait, kill the statements still running so the sessions move.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum PolicyAction {
    /// Print the policy in effect.
    Get,
    /// Replace the policy: a file name, or the JSON itself.
    Set {
        #[arg(value_name = "FILE_OR_JSON")]
        source: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("invalid --url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot reach the REST API at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("no answer from the REST API at {0} in time")]
    Timeout(String),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The API refused the request; `message` is its `error`.
    #[error("{message} (HTTP {status})")]
    Api { status: StatusCode, message: String },
    #[error("{0}")]
    Input(String),
}

/// Runs one `ctl` command; prints the result or the error.
pub fn main(args: CtlArgs) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CtlError::Input(format!("starting the runtime: {e}")))
        .and_then(|rt| rt.block_on(run(&args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &CtlArgs) -> Result<(), CtlError> {
    let api = Api::new(&args.url, args.token.clone())?;
    let out = Output { json: args.json };
    match &args.command {
        CtlCommand::Sessions => out.table(&api.get("/v1/sessions").await?, SESSION_COLUMNS),
        CtlCommand::Servers => out.table(&api.get("/v1/servers").await?, SERVER_COLUMNS),
        CtlCommand::Moves => out.table(&api.get("/v1/moves").await?, MOVE_COLUMNS),
        CtlCommand::Move(m) => {
            let report = api
                .send(Method::POST, "/v1/sessions/move", Some(move_body(m)))
                .await?;
            out.report(&report, "")
        }
        CtlCommand::Drain { name, wait } => {
            let path = format!("/v1/servers/{}/drain", segment(name));
            let report = api.send(Method::POST, &path, Some(wait_body(wait))).await?;
            out.report(&report, &format!("server '{name}' drained: "))
        }
        CtlCommand::Undrain { name } => {
            let path = format!("/v1/servers/{}/drain", segment(name));
            let rows = api.send(Method::DELETE, &path, None).await?;
            out.message(&format!("server '{name}' accepts new sessions again"));
            out.table(&rows, SERVER_COLUMNS)
        }
        CtlCommand::Rebalance { wait } => {
            let body = json!({ "wait_timeout_s": wait });
            let report = api.send(Method::POST, "/v1/rebalance", Some(body)).await?;
            out.report(&report, "rebalanced: ")
        }
        CtlCommand::Policy { action } => policy(&api, action).await?,
        CtlCommand::AddServer {
            name,
            address,
            weight,
        } => {
            let body = json!({ "name": name, "address": address, "weight": weight });
            let row = api.send(Method::POST, "/v1/servers", Some(body)).await?;
            out.message(&format!("server '{name}' added"));
            out.table(&Value::Array(vec![row]), SERVER_COLUMNS)
        }
        CtlCommand::RemoveServer { name, wait } => {
            let path = format!("/v1/servers/{}", segment(name));
            let report = api
                .send(Method::DELETE, &path, Some(wait_body(wait)))
                .await?;
            out.report(&report, &format!("server '{name}' removed: "))
        }
    }
    Ok(())
}

fn move_body(m: &MoveArgs) -> Value {
    let sessions = if m.all {
        json!("all")
    } else if m.all_inactive {
        json!("all_inactive")
    } else {
        json!(m.sessions)
    };
    json!({
        "sessions": sessions,
        "from": m.from,
        "to": m.to,
        "wait_timeout_s": m.wait.wait,
        "force": m.wait.force,
    })
}

fn wait_body(w: &WaitArgs) -> Value {
    json!({ "wait_timeout_s": w.wait, "force": w.force })
}

/// A server name as a path segment (names are validated by the daemon;
/// this only keeps an odd one from changing the path).
fn segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `policy get` prints the document; `policy set` reads a file (or takes
/// the argument itself when it looks like JSON) and prints the new one.
async fn policy(api: &Api, action: &PolicyAction) -> Result<(), CtlError> {
    let doc = match action {
        PolicyAction::Get => api.get("/v1/policy").await?,
        PolicyAction::Set { source } => {
            let text = if source.trim_start().starts_with('{') {
                source.clone()
            } else {
                std::fs::read_to_string(source).map_err(|e| {
                    CtlError::Input(format!("cannot read the policy file {source:?}: {e}"))
                })?
            };
            api.send_raw(Method::PUT, "/v1/policy", Some(text)).await?
        }
    };
    println!("{}", pretty(&doc));
    Ok(())
}

// ---- HTTP -----------------------------------------------------------------------

struct Api {
    url: String,
    host: String,
    port: u16,
    /// Header `Host:` (host[:port] as given).
    authority: String,
    /// Path prefix of the URL (for an API behind a reverse proxy), no trailing '/'.
    base: String,
    token: Option<String>,
}

impl Api {
    fn new(url: &str, token: Option<String>) -> Result<Self, CtlError> {
        let bad = |reason: &str| CtlError::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "https is not supported (the admin API speaks plain HTTP)",
                ))
            }
            _ => return Err(bad("expected http://host:port")),
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        Ok(Self {
            url: url.to_string(),
            host: authority.host().trim_matches(['[', ']']).to_string(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.to_string(),
            base: uri.path().trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
        })
    }

    async fn get(&self, path: &str) -> Result<Value, CtlError> {
        tokio::time::timeout(QUICK_TIMEOUT, self.send_raw(Method::GET, path, None))
            .await
            .map_err(|_| CtlError::Timeout(self.url.clone()))?
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CtlError> {
        self.send_raw(method, path, body.map(|b| b.to_string()))
            .await
    }

    /// One request on a fresh connection; the JSON answer, or the API's
    /// `error` for a non-2xx status.
    async fn send_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<Value, CtlError> {
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let stream = tokio::time::timeout(QUICK_TIMEOUT, connect)
            .await
            .map_err(|_| CtlError::Timeout(self.url.clone()))?
            .map_err(|e| CtlError::Connect {
                url: self.url.clone(),
                reason: e.to_string(),
            })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The connection task drives the socket while we wait for the answer.
        let driver = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(HOST, &self.authority);
        if let Some(t) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| CtlError::Input(format!("building the request: {e}")))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        driver.abort();
        parse_answer(status, &bytes)
    }
}

fn parse_answer(status: StatusCode, body: &[u8]) -> Result<Value, CtlError> {
    let value: Option<Value> = serde_json::from_slice(body).ok();
    if status.is_success() {
        return value.ok_or_else(|| {
            CtlError::Input(format!(
                "the API answered {status} with something that is not JSON: {}",
                String::from_utf8_lossy(body)
            ))
        });
    }
    let message = value
        .as_ref()
        .and_then(|v| v.get("error"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    Err(CtlError::Api { status, message })
}

// ---- output -----------------------------------------------------------------------

/// (header, JSON field) of each table.
type Columns = &'static [(&'static str, &'static str)];

const SESSION_COLUMNS: Columns = &[
    ("SESSION_ID", "session_id"),
    ("USER", "user"),
    ("CLIENT_ADDRESS", "client_address"),
    ("SERVER_NAME", "server_name"),
    ("STATE", "state"),
    ("IN_TRANSACTION", "in_transaction"),
    ("MOVABLE", "movable"),
    ("NOT_MOVABLE_REASON", "not_movable_reason"),
    ("MOVES", "moves"),
    ("DATAPATH", "datapath"),
];

const SERVER_COLUMNS: Columns = &[
    ("SERVER_NAME", "server_name"),
    ("ADDRESS", "address"),
    ("WEIGHT", "weight"),
    ("STATE", "state"),
    ("SESSIONS", "sessions"),
    ("IN_POLICY", "in_policy"),
];

const MOVE_COLUMNS: Columns = &[
    ("SESSION_ID", "session_id"),
    ("FROM_SERVER", "from_server"),
    ("TO_SERVER", "to_server"),
    ("RESULT", "result"),
    ("REQUESTED_BY", "requested_by"),
    ("REASON", "reason"),
    ("DURATION_MS", "duration_ms"),
];

struct Output {
    json: bool,
}

impl Output {
    /// A list of objects as a table (or as JSON).
    fn table(&self, value: &Value, columns: Columns) {
        if self.json {
            println!("{}", pretty(value));
            return;
        }
        let rows = value.as_array().map(Vec::as_slice).unwrap_or_default();
        print!("{}", render_table(rows, columns));
    }

    fn message(&self, text: &str) {
        if !self.json {
            println!("{text}");
        }
    }

    /// A move report: the moves as a table, then a summary line.
    fn report(&self, report: &Value, prefix: &str) {
        if self.json {
            println!("{}", pretty(report));
            return;
        }
        let list = |key: &str| {
            report
                .get(key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let moved = list("moved");
        let not_moved = list("not_moved");
        let all: Vec<Value> = moved.iter().chain(&not_moved).cloned().collect();
        if !all.is_empty() {
            print!("{}", render_table(&all, MOVE_COLUMNS));
        }
        println!("{prefix}{} session(s) moved", moved.len());
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.to_string(),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) => format!("{f:.1}"),
            _ => n.to_string(),
        },
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Columns padded to their widest cell, numbers right-aligned, two spaces
/// apart; a header line first.
fn render_table(rows: &[Value], columns: Columns) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|(_, key)| cell(r.get(*key))).collect())
        .collect();
    let numeric: Vec<bool> = columns
        .iter()
        .map(|(_, key)| {
            rows.iter()
                .any(|r| r.get(*key).is_some_and(Value::is_number))
                && rows
                    .iter()
                    .all(|r| r.get(*key).is_none_or(|v| v.is_number() || v.is_null()))
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .fold(h.len(), usize::max)
        })
        .collect();
    let mut out = String::new();
    let mut line = |texts: Vec<&str>, header: bool| {
        let parts: Vec<String> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if numeric[i] && !header {
                    format!("{t:>w$}", w = widths[i])
                } else {
                    format!("{t:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(columns.iter().map(|(h, _)| *h).collect(), true);
    for r in &cells {
        line(r.iter().map(String::as_str).collect(), false);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parsing() {
        let a = Api::new("http://127.0.0.1:9104", None).unwrap();
        assert_eq!(
            (a.host.as_str(), a.port, a.base.as_str()),
            ("127.0.0.1", 9104, "")
        );
        let a = Api::new("http://[::1]:80/admin/", Some(String::new())).unwrap();
        assert_eq!(
            (a.host.as_str(), a.base.as_str(), a.token),
            ("::1", "/admin", None)
        );
        assert!(Api::new("https://h:1", None).is_err());
        assert!(Api::new("127.0.0.1:9104", None).is_err());
        assert!(Api::new("http://", None).is_err());
    }

    #[test]
    fn tables_align() {
        let rows = vec![
            json!({"server_name": "db1", "address": "127.0.0.1:3307", "weight": 10, "state": "active", "sessions": 2, "in_policy": true}),
            json!({"server_name": "db10", "address": "h:1", "weight": 5, "state": "drained", "sessions": 0, "in_policy": false}),
        ];
        let text = render_table(&rows, SERVER_COLUMNS);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "SERVER_NAME  ADDRESS         WEIGHT  STATE    SESSIONS  IN_POLICY"
        );
        assert_eq!(
            lines[1],
            "db1          127.0.0.1:3307      10  active          2  yes"
        );
        assert_eq!(
            lines[2],
            "db10         h:1                  5  drained         0  no"
        );
    }

    #[test]
    fn api_errors_carry_the_message() {
        let e =
            parse_answer(StatusCode::NOT_FOUND, br#"{"error":"unknown server 'x'"}"#).unwrap_err();
        assert_eq!(e.to_string(), "unknown server 'x' (HTTP 404 Not Found)");
        let e = parse_answer(StatusCode::BAD_GATEWAY, b"oops").unwrap_err();
        assert!(e.to_string().starts_with("oops"));
        assert_eq!(parse_answer(StatusCode::OK, b"[1]").unwrap(), json!([1]));
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }
}
