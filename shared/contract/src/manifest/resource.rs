//! The `resource` section: which operator manages it, its type, and the spec its operator's
//! JSON Schema validates.

use serde::{Deserialize, Serialize};

use crate::names::validate_name;

/// The Resource-specific section of a manifest of type `resource`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceSection {
    pub operator: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    #[serde(default = "empty_object")]
    pub spec: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

impl ResourceSection {
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        validate_name("operator", &self.operator)
            .map_err(|e| ("operator".into(), e.to_string()))?;
        validate_name("type", &self.resource_type).map_err(|e| ("type".into(), e.to_string()))?;
        if !self.spec.is_object() {
            return Err(("spec".into(), "must be a mapping".into()));
        }
        Ok(())
    }
}
