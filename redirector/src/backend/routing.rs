//! Routing: the placement policy document in effect and the [`Placement`]
//! built from it, under one lock, so a policy change and a server change
//! can never interleave and readers never see a document that disagrees
//! with the placement.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use super::Backend;
use crate::config::{PolicyDocument, PolicyError};
use crate::policy::{Candidate, Placement, ScalingPolicy};

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    /// The document itself is invalid (no resource group …).
    #[error("{0}")]
    Document(#[from] PolicyError),
    /// The document is well formed but describes no usable placement.
    #[error("{0}")]
    Placement(#[from] crate::policy::PolicyError),
}

#[derive(Debug)]
struct Route {
    doc: PolicyDocument,
    placement: Placement,
}

/// The policy document and its placement.
#[derive(Debug)]
pub struct Routing {
    route: RwLock<Route>,
}

impl Routing {
    pub fn new(doc: PolicyDocument) -> Result<Self, RoutingError> {
        let placement = Placement::from_document(&doc)?;
        Ok(Self {
            route: RwLock::new(Route { doc, placement }),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Route> {
        self.route.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The document in effect.
    pub fn document(&self) -> PolicyDocument {
        self.read().doc.clone()
    }

    /// The weight the document gives `server`, if it lists it.
    pub fn weight_of(&self, server: &str) -> Option<u32> {
        self.read().doc.weight_of(server)
    }

    /// Each member's weight for rebalancing (1 each when the policy ignores
    /// weights).
    pub fn rebalance_weights(&self) -> BTreeMap<String, u32> {
        let r = self.read();
        let uses_weights = r.placement.policy().uses_weights();
        r.placement
            .members()
            .iter()
            .map(|m| (m.name.clone(), if uses_weights { m.weight } else { 1 }))
            .collect()
    }

    /// The servers that may take a session now, in the policy's order of
    /// preference, given how many sessions each holds; `exclude` (the
    /// session's current server) is never chosen. The one place candidates
    /// are built: placement at login, failover and move targets use it.
    pub fn order(
        &self,
        backends: &[Arc<Backend>],
        counts: &BTreeMap<String, usize>,
        exclude: Option<&str>,
    ) -> Vec<Arc<Backend>> {
        let candidates: Vec<Candidate<'_>> = backends
            .iter()
            .map(|b| Candidate {
                name: &b.name,
                sessions: counts.get(&b.name).copied().unwrap_or(0),
                eligible: b.accepts_new_sessions() && Some(b.name.as_str()) != exclude,
            })
            .collect();
        self.read()
            .placement
            .order(&candidates)
            .into_iter()
            .filter_map(|i| backends.get(i).cloned())
            .collect()
    }

    /// Replaces the document with what `edit` makes of the current one, and
    /// the placement with one built from it (continuing the round-robin
    /// rotation). `edit` runs under the lock, so whatever else it changes
    /// (adding a server) happens atomically with the policy change; `None`
    /// from `edit` keeps the current document.
    pub fn update<T, E>(
        &self,
        edit: impl FnOnce(&PolicyDocument) -> Result<(Option<PolicyDocument>, T), E>,
    ) -> Result<T, E>
    where
        E: From<RoutingError>,
    {
        let mut route = self.route.write().unwrap_or_else(PoisonError::into_inner);
        let (doc, out) = edit(&route.doc)?;
        if let Some(doc) = doc {
            let placement = placement_for(&route.placement, &doc)?;
            *route = Route { doc, placement };
        }
        Ok(out)
    }
}

/// The placement for `doc`, continuing `current`'s round-robin rotation.
fn placement_for(current: &Placement, doc: &PolicyDocument) -> Result<Placement, RoutingError> {
    let group = doc.group().ok_or(PolicyError::NoResourceGroups)?;
    let kind: ScalingPolicy = group.scaling_policy.as_str().parse()?;
    Ok(current.reconfigure(
        kind,
        group
            .clusters
            .iter()
            .map(|c| (c.cluster_id.clone(), c.weight)),
    )?)
}
