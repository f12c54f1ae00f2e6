//! The `secret` section: key-value properties that components consume, never printed in values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::scalar::scalar_map;

/// The secret's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretType {
    KeyValueProperties,
    KeyValue,
}

/// Who may use the secret: read, or read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretAcl {
    R,
    Rw,
}

/// The Secret-specific section of a manifest of type `secret`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretSection {
    #[serde(rename = "type")]
    pub secret_type: SecretType,
    pub acl: SecretAcl,
    #[serde(deserialize_with = "scalar_map")]
    pub data: BTreeMap<String, String>,
}

/// Prints keys only: a secret's values never reach a log through `{:?}`.
impl std::fmt::Debug for SecretSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSection")
            .field("secret_type", &self.secret_type)
            .field("acl", &self.acl)
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SecretSection {
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        if self.data.is_empty() {
            return Err(("data".into(), "must have at least one key".into()));
        }
        for key in self.data.keys() {
            let valid = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
            if !valid {
                return Err((
                    format!("data.{key}"),
                    "keys must be letters, digits, '_', '-' or '.'".into(),
                ));
            }
        }
        Ok(())
    }

    /// The same section with every value replaced, for showing to people.
    pub fn redacted(&self) -> Self {
        Self {
            data: self
                .data
                .keys()
                .map(|k| (k.clone(), REDACTED.to_string()))
                .collect(),
            ..self.clone()
        }
    }
}

/// What stands in for a secret value wherever one would be shown.
pub const REDACTED: &str = "********";
