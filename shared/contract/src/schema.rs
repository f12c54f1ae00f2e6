//! JSON Schema for resource specs: compiled when an operator is applied, used to validate every
//! resource's `spec`, every violation reported with its JSON pointer.
//!
//! Schemas are accepted as the seed writes them: an empty `$schema` or `$id` is dropped, and
//! OpenAPI's `nullable: true` lets the value also be `null`.

use jsonschema::error::ValidationErrorKind;
use serde_json::Value;
use thiserror::Error;

/// Why a schema could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SchemaError {
    /// The schema text is not JSON.
    #[error("the JSON Schema is not valid JSON: {0}")]
    NotJson(String),
    /// The schema is JSON but not a usable JSON Schema.
    #[error("the JSON Schema is invalid: {0}")]
    Invalid(String),
}

/// One way a spec fails its schema.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Violation {
    /// JSON pointer into the spec, `/` for the spec itself.
    pub pointer: String,
    pub reason: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "spec{}: {}", self.pointer, self.reason)
    }
}

/// A compiled schema for a resource type's spec.
#[derive(Debug)]
pub struct SpecSchema {
    validator: jsonschema::Validator,
}

impl SpecSchema {
    /// Compiles a schema from its text.
    pub fn compile(text: &str) -> Result<Self, SchemaError> {
        let mut schema: Value =
            serde_json::from_str(text).map_err(|e| SchemaError::NotJson(e.to_string()))?;
        if !schema.is_object() && !schema.is_boolean() {
            return Err(SchemaError::Invalid(
                "a schema is an object or a boolean".into(),
            ));
        }
        normalize(&mut schema);
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .map_err(|e| SchemaError::Invalid(e.to_string()))?;
        Ok(Self { validator })
    }

    /// Every violation of the schema by `spec`, empty when it is valid.
    pub fn validate(&self, spec: &Value) -> Vec<Violation> {
        self.validator
            .iter_errors(spec)
            .map(|error| {
                let base = error.instance_path().to_string();
                let pointer = match error.kind() {
                    ValidationErrorKind::Required { property } => {
                        let name = property
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| property.to_string());
                        format!("{base}/{name}")
                    }
                    ValidationErrorKind::AdditionalProperties { unexpected }
                        if unexpected.len() == 1 =>
                    {
                        format!("{base}/{}", unexpected[0])
                    }
                    _ if base.is_empty() => "/".to_string(),
                    _ => base,
                };
                Violation {
                    pointer,
                    reason: error.to_string(),
                }
            })
            .collect()
    }
}

/// Drops empty `$schema`/`$id` and turns `nullable: true` into a type that admits `null`.
fn normalize(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            for key in ["$schema", "$id"] {
                if map
                    .get(key)
                    .and_then(Value::as_str)
                    .is_some_and(str::is_empty)
                {
                    map.remove(key);
                }
            }
            if map.remove("nullable") == Some(Value::Bool(true)) {
                match map.get_mut("type") {
                    Some(Value::String(t)) => {
                        let t = std::mem::take(t);
                        map.insert(
                            "type".into(),
                            Value::Array(vec![Value::String(t), "null".into()]),
                        );
                    }
                    Some(Value::Array(types)) if !types.iter().any(|t| t == "null") => {
                        types.push("null".into());
                    }
                    _ => {}
                }
            }
            map.values_mut().for_each(normalize);
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SEED_SCHEMA: &str = r#"{
        "$schema": "", "$id": "", "title": "pipeline-run", "type": "object",
        "properties": {
          "factoryName": { "type": "string" },
          "pipelineName": { "type": "string" },
          "resourceGroupName": { "type": "string" },
          "parameters": { "type": "object", "additionalProperties": true },
          "referencePipelineRunID": { "type": "string", "nullable": true },
          "startFromFailure": { "type": "boolean", "nullable": true }
        },
        "required": ["factoryName", "pipelineName", "resourceGroupName"],
        "additionalProperties": false
    }"#;

    #[test]
    fn the_seed_schema_compiles_and_accepts_the_seed_spec() {
        let schema = SpecSchema::compile(SEED_SCHEMA).expect("seed schema compiles");
        let spec = json!({"factoryName": "f", "pipelineName": "p", "resourceGroupName": "g",
                          "referencePipelineRunID": null});
        assert_eq!(schema.validate(&spec), vec![]);
    }

    #[test]
    fn every_violation_is_reported_with_its_pointer() {
        let schema = SpecSchema::compile(SEED_SCHEMA).expect("seed schema compiles");
        let spec = json!({"pipelineName": 3, "resourceGroupName": "g", "colour": "red"});
        let pointers: Vec<String> = schema
            .validate(&spec)
            .into_iter()
            .map(|v| v.pointer)
            .collect();
        assert!(
            pointers.contains(&"/factoryName".to_string()),
            "{pointers:?}"
        );
        assert!(
            pointers.contains(&"/pipelineName".to_string()),
            "{pointers:?}"
        );
        assert!(pointers.contains(&"/colour".to_string()), "{pointers:?}");
    }

    #[test]
    fn nullable_admits_null_only_where_declared() {
        let schema = SpecSchema::compile(SEED_SCHEMA).expect("seed schema compiles");
        let spec = json!({"factoryName": null, "pipelineName": "p", "resourceGroupName": "g"});
        let violations = schema.validate(&spec);
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].pointer, "/factoryName");
    }

    #[test]
    fn broken_schemas_are_refused() {
        assert!(matches!(
            SpecSchema::compile("{not json"),
            Err(SchemaError::NotJson(_))
        ));
        assert!(matches!(
            SpecSchema::compile(r#"{"type": "no-such-type"}"#),
            Err(SchemaError::Invalid(_))
        ));
    }
}
