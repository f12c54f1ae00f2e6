//! Manifests: the Resource meta section shared by every type and the `operator`, `resource`
//! and `secret` sections, parsed strictly from YAML or JSON, one or several documents a file.
//!
//! Parsing goes YAML → JSON value → typed manifest, so that every failure names the document,
//! the attribute path and the reason.

mod batch;
mod bounded;
mod operator;
mod resource;
mod scalar;
mod secret;

use std::fmt;

use serde::de::DeserializeSeed;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::names::{validate_name, MAX_DNS_LABEL_LEN};

pub use batch::{BatchDocument, MAX_BATCH_BYTES, MAX_BATCH_DOCUMENTS};
pub use bounded::MAX_NESTING_DEPTH;
pub use operator::{
    CommandApi, Component, ComponentKind, ConsumptionType, NatsApi, NatsClusterConfig,
    OperatorSection, Port, QueryApi, ResourceType, SecretRef, SpecSchemaSource,
};
pub use resource::ResourceSection;
pub use secret::{SecretAcl, SecretSection, SecretType, REDACTED};

/// The largest manifest text accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 1024 * 1024;

/// The type of a manifest, from its `type` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManifestKind {
    Operator,
    Resource,
    Secret,
}

impl ManifestKind {
    /// Whether manifests of this type live in a workspace (operators are instance-level).
    pub fn is_workspaced(self) -> bool {
        !matches!(self, Self::Operator)
    }
}

impl fmt::Display for ManifestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Operator => "operator",
            Self::Resource => "resource",
            Self::Secret => "secret",
        })
    }
}

impl std::str::FromStr for ManifestKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "operator" => Ok(Self::Operator),
            "resource" => Ok(Self::Resource),
            "secret" => Ok(Self::Secret),
            other => Err(format!(
                "unknown type '{other}': expected operator, resource or secret"
            )),
        }
    }
}

/// One manifest: the Resource meta section and the section of its type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    #[serde(rename = "type")]
    pub kind: ManifestKind,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<Layer>,
    /// The workspace a resource or secret lives in; `-w` on the command line wins over it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<OperatorSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceSection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretSection>,
}

/// The seed's `layer` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    User,
    System,
}

/// A manifest that could not be read, with where and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{}{}: {reason}", document_prefix(*.document), if path.is_empty() { "(top level)" } else { path.as_str() })]
pub struct ManifestError {
    /// 1-based index of the document in the file, when the file had several.
    pub document: Option<usize>,
    /// The attribute path, e.g. `operator.components[0].replicas`.
    pub path: String,
    pub reason: String,
}

fn document_prefix(document: Option<usize>) -> String {
    document
        .map(|d| format!("document {d}: "))
        .unwrap_or_default()
}

impl ManifestError {
    fn at(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            document: None,
            path: path.into(),
            reason: reason.into(),
        }
    }

    fn in_document(mut self, document: usize, of: usize) -> Self {
        if of > 1 {
            self.document = Some(document);
        }
        self
    }
}

impl Manifest {
    /// Parses every document of a YAML or JSON text. Empty documents are skipped; a text with
    /// no manifest at all is an error.
    pub fn parse_all(text: &str) -> Result<Vec<Manifest>, ManifestError> {
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::at(
                "",
                format!("manifest text is larger than {MAX_MANIFEST_BYTES} bytes"),
            ));
        }
        let mut values = Vec::new();
        // One budget for the whole text: aliases cannot make it much more than it reads.
        let budget = bounded::Budget::for_text(text.len());
        for document in serde_norway::Deserializer::from_str(text) {
            let value = bounded::Bounded {
                budget: &budget,
                depth: 0,
            }
            .deserialize(document)
            .map_err(|e| {
                ManifestError::at("", format!("not valid YAML or JSON: {}", with_position(&e)))
            })?;
            if !value.is_null() {
                values.push(value);
            }
        }
        if values.is_empty() {
            return Err(ManifestError::at("", "no manifest found in the text"));
        }
        let count = values.len();
        values
            .into_iter()
            .enumerate()
            .map(|(i, value)| Self::from_value(value).map_err(|e| e.in_document(i + 1, count)))
            .collect()
    }

    /// Parses exactly one manifest.
    pub fn parse_one(text: &str) -> Result<Manifest, ManifestError> {
        let mut all = Self::parse_all(text)?;
        if all.len() != 1 {
            return Err(ManifestError::at(
                "",
                format!("expected one manifest, found {}", all.len()),
            ));
        }
        Ok(all.remove(0))
    }

    /// Reads a manifest from a JSON value, then checks what types alone cannot say.
    pub fn from_value(value: serde_json::Value) -> Result<Manifest, ManifestError> {
        let not_a_mapping = match &value {
            serde_json::Value::Object(_) => None,
            serde_json::Value::Null => Some("null"),
            serde_json::Value::Bool(_) => Some("a boolean"),
            serde_json::Value::Number(_) => Some("a number"),
            serde_json::Value::String(_) => Some("a string"),
            serde_json::Value::Array(_) => Some("a sequence"),
        };
        if let Some(found) = not_a_mapping {
            return Err(ManifestError::at(
                "",
                format!("a manifest is a mapping of name, version, type and the section of its type, not {found}"),
            ));
        }
        let manifest: Manifest = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            ManifestError::at(
                if path == "." { String::new() } else { path },
                e.into_inner().to_string(),
            )
        })?;
        manifest.check()?;
        Ok(manifest)
    }

    /// Checks names and that the section present is the one the type asks for.
    fn check(&self) -> Result<(), ManifestError> {
        validate_name("name", &self.name).map_err(|e| ManifestError::at("name", e.to_string()))?;
        if self.version.trim().is_empty() {
            return Err(ManifestError::at("version", "must not be empty"));
        }
        if let Some(ws) = &self.workspace {
            validate_name("workspace", ws)
                .map_err(|e| ManifestError::at("workspace", e.to_string()))?;
        }
        let present = [
            (ManifestKind::Operator, self.operator.is_some()),
            (ManifestKind::Resource, self.resource.is_some()),
            (ManifestKind::Secret, self.secret.is_some()),
        ];
        if let Some((kind, _)) = present.iter().find(|(k, p)| *k == self.kind && !p) {
            return Err(ManifestError::at(
                kind.to_string(),
                format!("a manifest of type {kind} needs its `{kind}` section"),
            ));
        }
        for (kind, is_present) in present {
            if kind != self.kind && is_present {
                return Err(ManifestError::at(
                    kind.to_string(),
                    format!(
                        "a manifest of type {} cannot have a `{kind}` section",
                        self.kind
                    ),
                ));
            }
        }
        if let Some(op) = &self.operator {
            op.check()
                .map_err(|(path, reason)| ManifestError::at(format!("operator.{path}"), reason))?;
            for (i, component) in op.components.iter().enumerate() {
                let joined = format!("{}-{}", self.name, component.name);
                if joined.len() > MAX_DNS_LABEL_LEN {
                    return Err(ManifestError::at(
                        format!("operator.components[{i}].name"),
                        format!("'{joined}' (the operator's and the component's names joined) is longer than {MAX_DNS_LABEL_LEN} characters; it names the component's Deployment, Service and network alias"),
                    ));
                }
            }
        }
        if let Some(res) = &self.resource {
            res.check()
                .map_err(|(path, reason)| ManifestError::at(format!("resource.{path}"), reason))?;
        }
        if let Some(sec) = &self.secret {
            sec.check()
                .map_err(|(path, reason)| ManifestError::at(format!("secret.{path}"), reason))?;
        }
        Ok(())
    }

    /// The workspace this manifest lands in: the command line's, else its own, else `public`.
    pub fn effective_workspace(&self, from_command_line: Option<&str>) -> Option<String> {
        if !self.kind.is_workspaced() {
            return None;
        }
        Some(
            from_command_line
                .map(str::to_string)
                .or_else(|| self.workspace.clone())
                .unwrap_or_else(|| DEFAULT_WORKSPACE.to_string()),
        )
    }
}

/// A YAML error with its line and column, which the parser leaves out at the text's start.
fn with_position(e: &serde_norway::Error) -> String {
    let text = e.to_string();
    match e.location() {
        Some(at) if !text.contains(" at line ") => {
            format!("{text} at line {} column {}", at.line(), at.column())
        }
        _ => text,
    }
}

/// The workspace used when neither the command line nor the manifest names one.
pub const DEFAULT_WORKSPACE: &str = "public";

#[cfg(test)]
pub(crate) mod proptests;
#[cfg(test)]
mod tests;
