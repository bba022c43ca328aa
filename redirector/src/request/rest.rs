//! The REST API's JSON request bodies and how they are checked before a
//! handler acts on them. An empty (all-whitespace) body is the default for
//! the bodies that are optional.

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::Selection;
use crate::peer_text::escaped;

/// Why a body was refused (the API answers 400 with this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not JSON, or not the body's shape; `line`/`column` point at it.
    #[error("invalid JSON body: {message}")]
    Json {
        message: String,
        line: usize,
        column: usize,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Body of `POST /v1/servers`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddServer {
    pub name: String,
    pub address: String,
    #[serde(default)]
    pub weight: Option<i64>,
}

/// Optional body of `DELETE /v1/servers/{name}` and `POST …/drain`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitBody {
    #[serde(default)]
    pub wait_timeout_s: Option<f64>,
    #[serde(default)]
    pub force: bool,
}

/// Body of `POST /v1/rebalance` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebalanceBody {
    #[serde(default)]
    pub wait_timeout_s: Option<f64>,
}

/// `"sessions"`: a list of ids, `"all"` or `"all_inactive"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SessionsField {
    Ids(Vec<u64>),
    Keyword(String),
}

impl SessionsField {
    /// The sessions the field asks for.
    pub fn selection(self) -> Result<Selection, BodyError> {
        match self {
            SessionsField::Ids(ids) if ids.is_empty() => {
                Err(BodyError::Invalid("\"sessions\" lists no session".into()))
            }
            SessionsField::Ids(ids) => Ok(Selection::Ids(ids)),
            SessionsField::Keyword(k) if k == "all" => Ok(Selection::All),
            SessionsField::Keyword(k) if k == "all_inactive" => Ok(Selection::AllInactive),
            SessionsField::Keyword(k) => Err(BodyError::Invalid(format!(
                "\"sessions\": {:?} is neither a list of ids, \"all\" nor \"all_inactive\"",
                escaped(&k).to_string()
            ))),
        }
    }
}

/// Body of `POST /v1/sessions/move`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveBody {
    pub sessions: SessionsField,
    #[serde(default)]
    pub from: Option<String>,
    pub to: String,
    #[serde(default)]
    pub wait_timeout_s: Option<f64>,
    #[serde(default)]
    pub force: bool,
}

/// A required JSON body.
pub fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, BodyError> {
    serde_json::from_slice(body).map_err(|e| BodyError::Json {
        message: e.to_string(),
        line: e.line(),
        column: e.column(),
    })
}

/// An optional JSON body: empty or whitespace is `T::default()`.
pub fn optional<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        json(body)
    }
}

/// The policy document of `PUT /v1/policy`, as text.
pub fn policy_text(body: &[u8]) -> Result<&str, BodyError> {
    std::str::from_utf8(body)
        .map_err(|e| BodyError::Invalid(format!("policy body is not UTF-8: {e}")))
}

/// The API's JSON request bodies (the `rest_json` fuzz target drives
/// [`check`]).
#[derive(Debug, Clone, Copy)]
pub enum RequestBody {
    /// `POST /v1/servers`
    AddServer,
    /// `DELETE /v1/servers/{name}`, `POST /v1/servers/{name}/drain`
    Wait,
    /// `POST /v1/rebalance`
    Rebalance,
    /// `POST /v1/sessions/move`
    MoveSessions,
    /// `PUT /v1/policy` (checked against servers `db1` and `db2`)
    Policy,
}

/// Parses and checks a request body as its handler does before it touches
/// the daemon's state. `Err`: the message of the 400 answer.
pub fn check(kind: RequestBody, body: &[u8]) -> Result<(), String> {
    let message = |e: BodyError| e.to_string();
    match kind {
        RequestBody::AddServer => {
            let req: AddServer = json(body).map_err(message)?;
            crate::config::validate_server_name(&req.name)
        }
        RequestBody::Wait => optional::<WaitBody>(body).map(drop).map_err(message),
        RequestBody::Rebalance => optional::<RebalanceBody>(body).map(drop).map_err(message),
        RequestBody::MoveSessions => {
            let req: MoveBody = json(body).map_err(message)?;
            req.sessions.selection().map(drop).map_err(message)
        }
        RequestBody::Policy => {
            let text = policy_text(body).map_err(message)?;
            crate::config::parse_policy(text, &["db1", "db2"])
                .map(drop)
                .map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bodies_are_checked_as_the_handlers_do() {
        let ok = [
            (
                RequestBody::AddServer,
                &br#"{"name":"db3","address":"h:1"}"#[..],
            ),
            (RequestBody::Wait, b" "),
            (RequestBody::Rebalance, br#"{"wait_timeout_s":5}"#),
            (
                RequestBody::MoveSessions,
                br#"{"sessions":"all","to":"db2"}"#,
            ),
            (
                RequestBody::Policy,
                br#"{"version":1,"clusterResourceGroups":[{"groupId":"g","clusters":[{"clusterId":"db1","weight":1}],"scalingPolicy":"session-weighted"}]}"#,
            ),
        ];
        for (kind, body) in ok {
            assert_eq!(check(kind, body), Ok(()), "{kind:?}");
        }
        let bad = [
            (
                RequestBody::AddServer,
                &br#"{"name":"","address":"h:1"}"#[..],
            ),
            (RequestBody::Wait, br#"{"force":1}"#),
            (RequestBody::MoveSessions, br#"{"sessions":[],"to":"db2"}"#),
            (
                RequestBody::MoveSessions,
                br#"{"sessions":"some","to":"db2"}"#,
            ),
            (RequestBody::Policy, b"\xff"),
            (RequestBody::Policy, br#"{"version":1,"clusterResourceGroups":[{"groupId":"g","clusters":[{"clusterId":"db9","weight":1}],"scalingPolicy":"session-weighted"}]}"#),
        ];
        for (kind, body) in bad {
            let refused = check(kind, body);
            assert!(
                refused.as_ref().is_err_and(|m| !m.is_empty()),
                "{kind:?}: {refused:?}"
            );
        }
    }

    #[test]
    fn json_errors_point_at_the_text() {
        let e = json::<AddServer>(b"{\n  \"name\": 1}").unwrap_err();
        let BodyError::Json { line, column, .. } = e else {
            panic!("{e:?}")
        };
        assert_eq!((line, column), (2, 11));
    }
}
