//! The specs of the two resource types, `database` and `role`, as commanded, with the policies
//! both share (`driftPolicy`, `deletionPolicy`) and the names the operator refuses to manage.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

/// The resource type of a database.
pub const DATABASE: &str = "database";
/// The resource type of a role.
pub const ROLE: &str = "role";

/// PostgreSQL truncates identifiers past this many bytes (`NAMEDATALEN - 1`).
const MAX_IDENTIFIER_BYTES: usize = 63;

/// Databases the server needs: never created, changed or dropped through a resource.
const RESERVED_DATABASES: [&str; 3] = ["postgres", "template0", "template1"];

/// Why a spec cannot be reconciled.
#[derive(Debug, Error)]
pub enum SpecError {
    /// The spec does not have the schema's shape.
    #[error("invalid {resource_type} spec: {source}")]
    Malformed {
        resource_type: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A name PostgreSQL would refuse or truncate.
    #[error("invalid {field}: {reason}")]
    BadName { field: &'static str, reason: String },
    /// A name the server itself needs.
    #[error("{field} {name:?} is reserved: the operator does not manage it")]
    Reserved { field: &'static str, name: String },
    /// A role listed among its own parents.
    #[error("memberOf: role {0:?} cannot be a member of itself")]
    MemberOfItself(String),
}

/// What a difference found at a resync (not asked for by a new spec) leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftPolicy {
    /// Put the object back as the spec says (the default).
    #[default]
    Correct,
    /// Only report it: `Ready=False` (`DriftDetected`) and the differences in the details.
    Report,
}

/// What deleting the resource does to the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DeletionPolicy {
    /// Drop it.
    Delete,
    /// Keep it (the default: dropping a database loses its data, so it must be asked for).
    #[default]
    Retain,
}

/// The spec of a `database` resource.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatabaseSpec {
    /// The database's name on the server.
    pub name: String,
    /// The owning role; the operator's own login role when absent.
    #[serde(default)]
    pub owner: Option<String>,
    /// The character encoding, fixed at creation (`UTF8` when absent).
    #[serde(default)]
    pub encoding: Option<String>,
    /// Concurrent connections allowed; -1 (the default) for no limit.
    #[serde(default = "no_limit")]
    pub connection_limit: i32,
    #[serde(default)]
    pub drift_policy: DriftPolicy,
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn no_limit() -> i32 {
    -1
}

/// The spec of a `role` resource.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleSpec {
    /// The role's name on the server.
    pub name: String,
    /// Whether it may log in.
    #[serde(default)]
    pub login: bool,
    /// The key of a Secret the operator's component consumes whose value is the role's
    /// password (the component sees it as an environment variable of that name). Without it
    /// the password is left as it is.
    #[serde(default)]
    pub password_secret_key: Option<String>,
    /// The roles it is a member of (and only those: other memberships are revoked).
    #[serde(default)]
    pub member_of: Vec<String>,
    #[serde(default)]
    pub drift_policy: DriftPolicy,
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Either spec, with what both share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectSpec {
    Database(DatabaseSpec),
    Role(RoleSpec),
}

impl ObjectSpec {
    /// Reads and checks the spec of an entity of `resource_type` (`None`: not a type of this
    /// operator).
    pub fn parse(resource_type: &str, spec: &Value) -> Option<Result<Self, SpecError>> {
        match resource_type {
            DATABASE => Some(DatabaseSpec::parse(spec).map(Self::Database)),
            ROLE => Some(RoleSpec::parse(spec).map(Self::Role)),
            _ => None,
        }
    }

    /// The object's name on the server.
    pub fn name(&self) -> &str {
        match self {
            Self::Database(spec) => &spec.name,
            Self::Role(spec) => &spec.name,
        }
    }

    pub fn drift_policy(&self) -> DriftPolicy {
        match self {
            Self::Database(spec) => spec.drift_policy,
            Self::Role(spec) => spec.drift_policy,
        }
    }

    pub fn deletion_policy(&self) -> DeletionPolicy {
        match self {
            Self::Database(spec) => spec.deletion_policy,
            Self::Role(spec) => spec.deletion_policy,
        }
    }
}

impl DatabaseSpec {
    /// Reads and checks a `database` spec.
    pub fn parse(spec: &Value) -> Result<Self, SpecError> {
        let parsed = Self::deserialize(spec).map_err(|source| SpecError::Malformed {
            resource_type: DATABASE,
            source,
        })?;
        check_name("name", &parsed.name)?;
        if RESERVED_DATABASES.contains(&parsed.name.as_str()) {
            return Err(SpecError::Reserved {
                field: "name",
                name: parsed.name,
            });
        }
        if let Some(owner) = &parsed.owner {
            check_name("owner", owner)?;
        }
        if let Some(encoding) = &parsed.encoding {
            if encoding.is_empty()
                || !encoding
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(SpecError::BadName {
                    field: "encoding",
                    reason: format!("{encoding:?} is not an encoding name such as UTF8"),
                });
            }
        }
        if parsed.connection_limit < -1 {
            return Err(SpecError::BadName {
                field: "connectionLimit",
                reason: "must be -1 (no limit) or more".into(),
            });
        }
        Ok(parsed)
    }

    /// The encoding asked for, as the server names it (`UTF8` when absent).
    pub fn encoding(&self) -> String {
        self.encoding
            .as_deref()
            .unwrap_or("UTF8")
            .to_ascii_uppercase()
            .replace('-', "")
    }
}

impl RoleSpec {
    /// Reads and checks a `role` spec.
    pub fn parse(spec: &Value) -> Result<Self, SpecError> {
        let mut parsed = Self::deserialize(spec).map_err(|source| SpecError::Malformed {
            resource_type: ROLE,
            source,
        })?;
        check_name("name", &parsed.name)?;
        if parsed.name.starts_with("pg_") {
            return Err(SpecError::Reserved {
                field: "name",
                name: parsed.name,
            });
        }
        for parent in &parsed.member_of {
            check_name("memberOf", parent)?;
            if *parent == parsed.name {
                return Err(SpecError::MemberOfItself(parent.clone()));
            }
        }
        if let Some(key) = &parsed.password_secret_key {
            let valid = !key.is_empty()
                && !key.starts_with(|c: char| c.is_ascii_digit())
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(SpecError::BadName {
                    field: "passwordSecretKey",
                    reason: format!("{key:?} is not a Secret key (letters, digits and _)"),
                });
            }
        }
        parsed.member_of.sort();
        parsed.member_of.dedup();
        Ok(parsed)
    }
}

/// A name PostgreSQL takes as it is: not empty, at most 63 bytes, no NUL.
fn check_name(field: &'static str, name: &str) -> Result<(), SpecError> {
    let reason = if name.is_empty() {
        "must not be empty".to_string()
    } else if name.len() > MAX_IDENTIFIER_BYTES {
        format!("{name:?} is longer than {MAX_IDENTIFIER_BYTES} bytes")
    } else if name.contains('\0') {
        "must not contain NUL".to_string()
    } else {
        return Ok(());
    };
    Err(SpecError::BadName { field, reason })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_database_spec_takes_its_defaults() {
        let spec = DatabaseSpec::parse(&json!({"name": "orders"})).expect("valid");
        assert_eq!(spec.owner, None);
        assert_eq!(spec.encoding(), "UTF8");
        assert_eq!(spec.connection_limit, -1);
        assert_eq!(spec.drift_policy, DriftPolicy::Correct);
        assert_eq!(spec.deletion_policy, DeletionPolicy::Retain);
        let spec = DatabaseSpec::parse(&json!({"name": "orders", "encoding": "utf-8",
            "driftPolicy": "report", "deletionPolicy": "Delete", "connectionLimit": 5}))
        .expect("valid");
        assert_eq!(spec.encoding(), "UTF8");
        assert_eq!(spec.drift_policy, DriftPolicy::Report);
        assert_eq!(spec.deletion_policy, DeletionPolicy::Delete);
    }

    #[test]
    fn names_postgres_would_refuse_or_needs_itself_are_refused() {
        for (spec, said) in [
            (json!({"name": ""}), "must not be empty"),
            (json!({"name": "x".repeat(64)}), "longer than 63 bytes"),
            (json!({"name": "template1"}), "reserved"),
            (
                json!({"name": "a", "connectionLimit": -2}),
                "connectionLimit",
            ),
            (json!({"name": "a", "encoding": "UTF8'; --"}), "encoding"),
            (json!({"name": "a", "size": 3}), "unknown field"),
        ] {
            let err = DatabaseSpec::parse(&spec).expect_err("refused");
            assert!(err.to_string().contains(said), "{err} for {spec}");
        }
        for (spec, said) in [
            (json!({"name": "pg_monitor"}), "reserved"),
            (json!({"name": "app", "memberOf": ["app"]}), "itself"),
            (
                json!({"name": "app", "passwordSecretKey": "APP-PASSWORD"}),
                "passwordSecretKey",
            ),
        ] {
            let err = RoleSpec::parse(&spec).expect_err("refused");
            assert!(err.to_string().contains(said), "{err} for {spec}");
        }
    }

    #[test]
    fn memberships_are_a_set() {
        let spec =
            RoleSpec::parse(&json!({"name": "app", "memberOf": ["b", "a", "b"]})).expect("valid");
        assert_eq!(spec.member_of, ["a", "b"]);
        assert!(!spec.login);
    }

    #[test]
    fn only_this_operators_types_parse() {
        assert!(ObjectSpec::parse("pipeline-run", &json!({})).is_none());
        let role = ObjectSpec::parse(ROLE, &json!({"name": "app"}))
            .expect("a role")
            .expect("valid");
        assert_eq!(role.name(), "app");
    }
}
