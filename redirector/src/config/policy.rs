//! The placement policy document (same JSON shape as Exasol's AUTO_SCALING_POLICY).
//!
//! ```json
//! { "version": 1,
//!   "clusterResourceGroups": [ { "groupId": "default",
//!       "clusters": [ { "clusterId": "db1", "weight": 10 } ],
//!       "scalingPolicy": "session-autobalance" } ] }
//! ```
//!
//! It is used in the config file (`[policy] file` / `inline`), by
//! `ALTER SYSTEM SET AUTO_SCALING_POLICY = '<json>'` and by `PUT /v1/policy`,
//! so parsing and validation live here, independent of the TOML file.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// The only document version this build understands.
pub const POLICY_VERSION: u32 = 1;

/// How new sessions are placed on the clusters (servers) of a resource group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScalingPolicy {
    /// Weighted random choice.
    SessionWeighted,
    /// The server whose share of connected sessions is furthest below its
    /// normalised weight.
    SessionAutobalance,
    /// In turn; weights are ignored.
    SessionRoundRobin,
}

impl ScalingPolicy {
    /// The name used in the policy JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ScalingPolicy::SessionWeighted => "session-weighted",
            ScalingPolicy::SessionAutobalance => "session-autobalance",
            ScalingPolicy::SessionRoundRobin => "session-round-robin",
        }
    }
}

impl fmt::Display for ScalingPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One backend server in a resource group, by its configured name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterWeight {
    pub cluster_id: String,
    /// Relative weight (> 0); weights are normalised over the group.
    #[serde(deserialize_with = "positive_u32")]
    pub weight: u32,
}

/// A set of servers sharing one placement policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterResourceGroup {
    pub group_id: String,
    pub clusters: Vec<ClusterWeight>,
    pub scaling_policy: ScalingPolicy,
}

/// The whole policy document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyDocument {
    pub version: u32,
    pub cluster_resource_groups: Vec<ClusterResourceGroup>,
}

/// Why a policy document was rejected. Every message is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not JSON, or not the expected shape; `message` ends with serde_json's
    /// "at line L column C".
    #[error("invalid policy JSON: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("policy version {0} is not supported (expected \"version\": {POLICY_VERSION})")]
    UnsupportedVersion(u32),
    #[error("policy has no clusterResourceGroups (exactly one is required)")]
    NoResourceGroups,
    #[error(
        "policy has {0} clusterResourceGroups; this version supports exactly one resource group"
    )]
    TooManyResourceGroups(usize),
    #[error("policy resource group has an empty groupId")]
    EmptyGroupId,
    #[error("policy resource group {group:?} lists no clusters")]
    NoClusters { group: String },
    #[error("policy resource group {group:?} has a cluster with an empty clusterId")]
    EmptyClusterId { group: String },
    #[error("policy resource group {group:?} lists clusterId {cluster_id:?} more than once")]
    DuplicateCluster { group: String, cluster_id: String },
    #[error("policy clusterId {cluster_id:?} has weight 0; weights must be > 0")]
    ZeroWeight { cluster_id: String },
    #[error(
        "policy clusterId {cluster_id:?} (group {group:?}) is not a configured server (known servers: {known})"
    )]
    UnknownServer {
        group: String,
        cluster_id: String,
        /// Comma-separated configured server names, for the message.
        known: String,
    },
}

/// Accepts any JSON integer and reports negatives and overflow with a clear
/// message (serde's default would say "expected u32").
fn positive_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = i64::deserialize(d)?;
    u32::try_from(v).map_err(|_| {
        serde::de::Error::custom(format!(
            "weight must be an integer between 1 and {}, got {v}",
            u32::MAX
        ))
    })
}

impl PolicyDocument {
    /// Parses the JSON text without checking it (see [`PolicyDocument::validate`]).
    pub fn from_json(json: &str) -> Result<Self, PolicyError> {
        serde_json::from_str(json).map_err(|e| PolicyError::Json {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })
    }

    /// The policy used when the config has no `[policy]`: session-autobalance
    /// over the given `(name, weight)` pairs.
    pub fn default_for<'a>(servers: impl IntoIterator<Item = (&'a str, u32)>) -> Self {
        PolicyDocument {
            version: POLICY_VERSION,
            cluster_resource_groups: vec![ClusterResourceGroup {
                group_id: "default".to_owned(),
                clusters: servers
                    .into_iter()
                    .map(|(name, weight)| ClusterWeight {
                        cluster_id: name.to_owned(),
                        weight,
                    })
                    .collect(),
                scaling_policy: ScalingPolicy::SessionAutobalance,
            }],
        }
    }

    /// Checks what can be checked without knowing the servers: version, exactly
    /// one resource group, non-empty and unique ids, weights > 0.
    pub fn validate_structure(&self) -> Result<(), PolicyError> {
        if self.version != POLICY_VERSION {
            return Err(PolicyError::UnsupportedVersion(self.version));
        }
        let group = match self.cluster_resource_groups.as_slice() {
            [] => return Err(PolicyError::NoResourceGroups),
            [one] => one,
            many => return Err(PolicyError::TooManyResourceGroups(many.len())),
        };
        if group.group_id.trim().is_empty() {
            return Err(PolicyError::EmptyGroupId);
        }
        if group.clusters.is_empty() {
            return Err(PolicyError::NoClusters {
                group: group.group_id.clone(),
            });
        }
        let mut seen = HashSet::new();
        for c in &group.clusters {
            if c.cluster_id.trim().is_empty() {
                return Err(PolicyError::EmptyClusterId {
                    group: group.group_id.clone(),
                });
            }
            if !seen.insert(c.cluster_id.as_str()) {
                return Err(PolicyError::DuplicateCluster {
                    group: group.group_id.clone(),
                    cluster_id: c.cluster_id.clone(),
                });
            }
            if c.weight == 0 {
                return Err(PolicyError::ZeroWeight {
                    cluster_id: c.cluster_id.clone(),
                });
            }
        }
        Ok(())
    }

    /// Full validation: [`validate_structure`](Self::validate_structure) plus
    /// every clusterId naming one of `servers` (the configured server names).
    pub fn validate<S: AsRef<str>>(&self, servers: &[S]) -> Result<(), PolicyError> {
        self.validate_structure()?;
        let known: HashSet<&str> = servers.iter().map(|s| s.as_ref()).collect();
        for group in &self.cluster_resource_groups {
            for c in &group.clusters {
                if !known.contains(c.cluster_id.as_str()) {
                    let mut names: Vec<&str> = servers.iter().map(|s| s.as_ref()).collect();
                    names.sort_unstable();
                    return Err(PolicyError::UnknownServer {
                        group: group.group_id.clone(),
                        cluster_id: c.cluster_id.clone(),
                        known: if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        },
                    });
                }
            }
        }
        Ok(())
    }

    /// The single resource group (a validated document has exactly one).
    pub fn group(&self) -> Option<&ClusterResourceGroup> {
        self.cluster_resource_groups.first()
    }

    /// The scaling policy of the resource group.
    pub fn scaling_policy(&self) -> Option<ScalingPolicy> {
        self.group().map(|g| g.scaling_policy)
    }

    /// The weight of a server in the policy; `None` if it is not listed
    /// (unlisted servers receive no new sessions).
    pub fn weight_of(&self, server: &str) -> Option<u32> {
        self.group()?
            .clusters
            .iter()
            .find(|c| c.cluster_id == server)
            .map(|c| c.weight)
    }

    /// Pretty JSON, as shown by `GET /v1/policy`.
    pub fn to_json_pretty(&self) -> String {
        // Serializing plain structs of strings and integers cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Parses and fully validates a policy JSON string against the given server
/// names: what `ALTER SYSTEM SET AUTO_SCALING_POLICY` and `PUT /v1/policy` use.
pub fn parse_policy<S: AsRef<str>>(
    json: &str,
    servers: &[S],
) -> Result<PolicyDocument, PolicyError> {
    let doc = PolicyDocument::from_json(json)?;
    doc.validate(servers)?;
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVERS: &[&str] = &["db1", "db2"];

    #[test]
    fn parses_the_contract_example() {
        let doc = parse_policy(
            r#"{ "version": 1,
              "clusterResourceGroups": [ { "groupId": "default",
                  "clusters": [ { "clusterId": "db1", "weight": 10 }, { "clusterId": "db2", "weight": 20 } ],
                  "scalingPolicy": "session-autobalance" } ] }"#,
            SERVERS,
        )
        .unwrap();
        assert_eq!(
            doc.scaling_policy(),
            Some(ScalingPolicy::SessionAutobalance)
        );
        assert_eq!(doc.weight_of("db2"), Some(20));
        assert_eq!(doc.weight_of("db3"), None);
        // Round trip keeps the camelCase names.
        let again = PolicyDocument::from_json(&doc.to_json_pretty()).unwrap();
        assert_eq!(again, doc);
        assert!(doc.to_json_pretty().contains("\"clusterResourceGroups\""));
    }

    #[test]
    fn all_scaling_policies_parse() {
        for p in [
            ScalingPolicy::SessionWeighted,
            ScalingPolicy::SessionAutobalance,
            ScalingPolicy::SessionRoundRobin,
        ] {
            let json = format!(
                r#"{{"version":1,"clusterResourceGroups":[{{"groupId":"g","clusters":[{{"clusterId":"db1","weight":1}}],"scalingPolicy":"{p}"}}]}}"#
            );
            assert_eq!(
                parse_policy(&json, SERVERS).unwrap().scaling_policy(),
                Some(p)
            );
        }
    }

    #[test]
    fn json_errors_carry_line_and_column() {
        let err = PolicyDocument::from_json("{\n  \"version\": 1,\n  oops\n}").unwrap_err();
        match &err {
            PolicyError::Json { line, column, .. } => {
                assert_eq!(*line, 3);
                assert_eq!(*column, 3);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("line 3 column 3"), "{err}");
    }

    #[test]
    fn rejects_unknown_fields_and_scaling_policies() {
        let err =
            PolicyDocument::from_json(r#"{"version":1,"clusterResourceGroups":[],"extra":1}"#)
                .unwrap_err();
        assert!(err.to_string().contains("unknown field `extra`"), "{err}");
        let err = PolicyDocument::from_json(
            r#"{"version":1,"clusterResourceGroups":[{"groupId":"g","clusters":[],"scalingPolicy":"random"}]}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `random`"),
            "{err}"
        );
    }

    #[test]
    fn rejects_bad_weights() {
        let json = |w: &str| {
            format!(
                r#"{{"version":1,"clusterResourceGroups":[{{"groupId":"g","clusters":[{{"clusterId":"db1","weight":{w}}}],"scalingPolicy":"session-weighted"}}]}}"#
            )
        };
        assert_eq!(
            parse_policy(&json("0"), SERVERS).unwrap_err(),
            PolicyError::ZeroWeight {
                cluster_id: "db1".into()
            }
        );
        let err = parse_policy(&json("-5"), SERVERS).unwrap_err();
        assert!(err.to_string().contains("got -5"), "{err}");
        assert!(matches!(err, PolicyError::Json { .. }));
        assert!(parse_policy(&json("1.5"), SERVERS).is_err());
    }

    #[test]
    fn rejects_version_group_count_and_duplicates() {
        let err = parse_policy(r#"{"version":2,"clusterResourceGroups":[]}"#, SERVERS).unwrap_err();
        assert_eq!(err, PolicyError::UnsupportedVersion(2));
        let err = parse_policy(r#"{"version":1,"clusterResourceGroups":[]}"#, SERVERS).unwrap_err();
        assert_eq!(err, PolicyError::NoResourceGroups);
        let g = r#"{"groupId":"g","clusters":[{"clusterId":"db1","weight":1}],"scalingPolicy":"session-weighted"}"#;
        let err = parse_policy(
            &format!(r#"{{"version":1,"clusterResourceGroups":[{g},{g}]}}"#),
            SERVERS,
        )
        .unwrap_err();
        assert_eq!(err, PolicyError::TooManyResourceGroups(2));
        assert!(err.to_string().contains("exactly one resource group"));
        let err = parse_policy(
            r#"{"version":1,"clusterResourceGroups":[{"groupId":"g","clusters":[{"clusterId":"db1","weight":1},{"clusterId":"db1","weight":2}],"scalingPolicy":"session-weighted"}]}"#,
            SERVERS,
        )
        .unwrap_err();
        assert!(matches!(err, PolicyError::DuplicateCluster { .. }));
        let err = parse_policy(
            r#"{"version":1,"clusterResourceGroups":[{"groupId":"g","clusters":[],"scalingPolicy":"session-weighted"}]}"#,
            SERVERS,
        )
        .unwrap_err();
        assert!(matches!(err, PolicyError::NoClusters { .. }));
    }

    #[test]
    fn rejects_unknown_servers() {
        let err = parse_policy(
            r#"{"version":1,"clusterResourceGroups":[{"groupId":"g","clusters":[{"clusterId":"db9","weight":1}],"scalingPolicy":"session-weighted"}]}"#,
            SERVERS,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "policy clusterId \"db9\" (group \"g\") is not a configured server (known servers: db1, db2)"
        );
    }

    #[test]
    fn default_policy_is_autobalance_over_all_servers() {
        let doc = PolicyDocument::default_for([("db1", 1), ("db2", 3)]);
        doc.validate(SERVERS).unwrap();
        assert_eq!(
            doc.scaling_policy(),
            Some(ScalingPolicy::SessionAutobalance)
        );
        assert_eq!(doc.weight_of("db2"), Some(3));
    }
}
