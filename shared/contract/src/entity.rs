//! The entity of interest a component keeps for each Resource: its key, desired spec and
//! generation.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::names::{validate_name, NameError};

/// A Resource's identity within an operator and type: `workspace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityKey {
    pub workspace: String,
    pub name: String,
}

impl EntityKey {
    /// Builds a key from names that have been validated.
    pub fn new(workspace: impl Into<String>, name: impl Into<String>) -> Result<Self, NameError> {
        let key = Self {
            workspace: workspace.into(),
            name: name.into(),
        };
        validate_name("workspace", &key.workspace)?;
        validate_name("name", &key.name)?;
        Ok(key)
    }

    /// The key as a token safe for KV keys: `workspace.name`.
    pub fn kv_token(&self) -> String {
        format!("{}.{}", self.workspace, self.name)
    }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.workspace, self.name)
    }
}

impl FromStr for EntityKey {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (workspace, name) = s.split_once('/').unwrap_or(("", s));
        Self::new(workspace, name)
    }
}

impl Serialize for EntityKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EntityKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What a component stores for a Resource: the desired state the orchestrator commanded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entity {
    pub key: EntityKey,
    pub operator: String,
    pub resource_type: String,
    /// Raised by the orchestrator on every change of spec; a command with a generation not
    /// above the stored one is a redelivery and changes nothing.
    pub generation: u64,
    pub spec: serde_json::Value,
    /// Set by a delete command: the reconciler cleans up on the platform, then the entity goes.
    #[serde(default)]
    pub deleting: bool,
    /// The envelope id of the last command applied to this entity.
    pub last_command: Uuid,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_print_and_parse_as_workspace_slash_name() {
        let key: EntityKey = "public/pipeline-run-1".parse().expect("valid key");
        assert_eq!(key.workspace, "public");
        assert_eq!(key.name, "pipeline-run-1");
        assert_eq!(key.to_string(), "public/pipeline-run-1");
        assert_eq!(key.kv_token(), "public.pipeline-run-1");
        assert!("public/a.b".parse::<EntityKey>().is_err());
        assert!("nokey".parse::<EntityKey>().is_err());
    }
}
