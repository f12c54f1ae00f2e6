//! What the orchestrator stores for each operator, resource and secret, and the view of it the
//! API returns.

use chrono::{DateTime, Utc};
pub use operator_contract::api::{Applied, Outcome, RecordView};
use operator_contract::{Condition, EntityStatus, Envelope, Manifest, ResourceStatus};
use serde::{Deserialize, Serialize};

/// A stored manifest of any type, with its generation and, for resources, its status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub manifest: Manifest,
    /// `None` for operators, which are instance-level.
    pub workspace: Option<String>,
    /// Raised on every change of the manifest (and, for resources, on delete).
    pub generation: u64,
    /// A delete was asked; the resource waits for its component to clean up.
    #[serde(default)]
    pub deleting: bool,
    /// The last command sent for this resource, resent as it is (same id, so JetStream
    /// de-duplicates it) when the orchestrator restarts before the component has seen it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_command: Option<Envelope>,
    /// What the component last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<EntityStatus>,
    /// Conditions the orchestrator sets itself (`ComponentReachable`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Record {
    /// A record for a manifest applied for the first time.
    pub fn new(manifest: Manifest, workspace: Option<String>) -> Self {
        let now = Utc::now();
        Self {
            manifest,
            workspace,
            generation: 1,
            deleting: false,
            last_command: None,
            status: None,
            conditions: Vec::new(),
            created_at: now,
            updated_at: now,
        }
    }

    /// The status column: what the component reported, `deleting` while a delete is under way,
    /// `active` for operators and secrets, which need no component to be usable.
    pub fn status_word(&self) -> String {
        if self.deleting {
            return ResourceStatus::Deleting.to_string();
        }
        match (&self.status, self.manifest.kind) {
            (Some(status), _) => status.status.to_string(),
            (None, operator_contract::ManifestKind::Resource) => {
                ResourceStatus::Pending.to_string()
            }
            (None, _) => ResourceStatus::Active.to_string(),
        }
    }

    /// The view the API returns, secrets redacted.
    pub fn view(&self) -> RecordView {
        let mut manifest = self.manifest.clone();
        if let Some(secret) = &manifest.secret {
            manifest.secret = Some(secret.redacted());
        }
        RecordView {
            name: self.manifest.name.clone(),
            version: self.manifest.version.clone(),
            kind: self.manifest.kind.to_string(),
            workspace: self.workspace.clone(),
            owner: self.manifest.owner.clone(),
            status: self.status_word(),
            runtime: self
                .status
                .as_ref()
                .and_then(|s| s.runtime)
                .map(|r| r.to_string()),
            generation: self.generation,
            created_at: self.created_at,
            updated_at: self.updated_at,
            message: self.status.as_ref().and_then(|s| s.message.clone()),
            conditions: self
                .status
                .iter()
                .flat_map(|s| s.conditions.iter())
                .chain(&self.conditions)
                .cloned()
                .collect(),
            manifest,
            entity_status: self.status.clone(),
            details: None,
            details_error: None,
        }
    }

    /// The answer for this record with `outcome`.
    pub fn applied(&self, outcome: Outcome) -> Applied {
        Applied {
            kind: self.manifest.kind.to_string(),
            name: self.manifest.name.clone(),
            version: self.manifest.version.clone(),
            workspace: self.workspace.clone(),
            generation: self.generation,
            outcome,
        }
    }
}

/// A later apply keeps the record's owner: who applied it first, not who changed it last.
pub fn keep_owner(current: &Manifest, manifest: &mut Manifest) {
    if current.owner.is_some() {
        manifest.owner = current.owner.clone();
    }
}

/// What storing `manifest` over `existing` would do, without storing it (a dry run): the same
/// decisions as an apply, the owner kept and the generation raised on a change.
pub fn preview(
    existing: Option<&Record>,
    mut manifest: Manifest,
    workspace: Option<String>,
) -> Applied {
    match existing {
        None => Record::new(manifest, workspace).applied(Outcome::Created),
        Some(current) => {
            keep_owner(&current.manifest, &mut manifest);
            if current.manifest == manifest {
                return current.applied(Outcome::Unchanged);
            }
            let mut record = current.clone();
            record.manifest = manifest;
            record.generation += 1;
            record.applied(Outcome::Updated)
        }
    }
}
