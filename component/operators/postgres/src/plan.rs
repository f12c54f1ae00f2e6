//! From a spec and what the server holds to what differs and the statements that put it right:
//! pure, no I/O. A difference is shown by field, desired and actual value — for a password only
//! whether it matches, never a value.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::scram;
use crate::spec::{DatabaseSpec, RoleSpec};
use crate::sql::{self, SqlText};

/// A database as the server holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseState {
    pub owner: String,
    pub encoding: String,
    pub connection_limit: i32,
}

/// A role's password as far as the operator can see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredPassword {
    /// No password.
    None,
    /// `rolpassword` (a SCRAM verifier or an MD5 hash).
    Hash(String),
    /// `pg_authid` is not readable by the operator's login role (not a superuser).
    Unreadable,
}

/// A role as the server holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleState {
    pub login: bool,
    pub password: StoredPassword,
    /// The roles it is a member of, sorted.
    pub member_of: Vec<String>,
}

/// One way the server differs from the spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Difference {
    /// The spec field: `owner`, `connectionLimit`, `encoding`, `login`, `password`, `memberOf`.
    pub field: &'static str,
    pub desired: String,
    pub actual: String,
    /// The statement that puts it right; `None` when nothing can (a database's encoding).
    #[serde(skip)]
    pub fix: Option<SqlText>,
}

impl Difference {
    fn new(field: &'static str, desired: String, actual: String, fix: Option<SqlText>) -> Self {
        Self {
            field,
            desired,
            actual,
            fix,
        }
    }

    /// `field: actual (desired: …)`, for messages and events.
    pub fn describe(&self) -> String {
        format!("{} is {} (spec: {})", self.field, self.actual, self.desired)
    }
}

/// What the server holds compared with the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The object does not exist: these statements create it.
    Missing { create: Vec<SqlText> },
    /// It exists; these are the differences (none: in sync).
    Present { differences: Vec<Difference> },
}

/// The database `spec` asks for against `observed`; `default_owner` owns it when the spec
/// names no owner.
pub fn plan_database(
    spec: &DatabaseSpec,
    default_owner: &str,
    observed: Option<&DatabaseState>,
) -> Plan {
    let owner = spec.owner.as_deref().unwrap_or(default_owner);
    let encoding = spec.encoding();
    let Some(observed) = observed else {
        return Plan::Missing {
            create: vec![sql::create_database(
                &spec.name,
                owner,
                &encoding,
                spec.connection_limit,
            )],
        };
    };
    let mut differences = Vec::new();
    if observed.owner != owner {
        differences.push(Difference::new(
            "owner",
            owner.to_string(),
            observed.owner.clone(),
            Some(sql::alter_database_owner(&spec.name, owner)),
        ));
    }
    if !observed.encoding.eq_ignore_ascii_case(&encoding) {
        differences.push(Difference::new(
            "encoding",
            encoding,
            observed.encoding.clone(),
            None,
        ));
    }
    if observed.connection_limit != spec.connection_limit {
        differences.push(Difference::new(
            "connectionLimit",
            spec.connection_limit.to_string(),
            observed.connection_limit.to_string(),
            Some(sql::alter_database_limit(&spec.name, spec.connection_limit)),
        ));
    }
    Plan::Present { differences }
}

/// The role `spec` asks for against `observed`, with `password` the value of its
/// `passwordSecretKey` (when it has one).
pub fn plan_role(spec: &RoleSpec, password: Option<&str>, observed: Option<&RoleState>) -> Plan {
    let Some(observed) = observed else {
        let mut create = vec![sql::create_role(&spec.name, spec.login)];
        if let Some(password) = password {
            create.push(sql::alter_role_password(
                &spec.name,
                &scram::verifier(password),
            ));
        }
        create.extend(
            spec.member_of
                .iter()
                .map(|parent| sql::grant_membership(parent, &spec.name)),
        );
        return Plan::Missing { create };
    };
    let mut differences = Vec::new();
    if observed.login != spec.login {
        differences.push(Difference::new(
            "login",
            spec.login.to_string(),
            observed.login.to_string(),
            Some(sql::alter_role_login(&spec.name, spec.login)),
        ));
    }
    if let Some(password) = password {
        let actual = match &observed.password {
            StoredPassword::Hash(hash) if scram::matches(hash, password) => None,
            StoredPassword::Hash(_) => Some("another password"),
            StoredPassword::None => Some("no password"),
            // Not readable: cannot be compared, so it is not taken as a difference.
            StoredPassword::Unreadable => None,
        };
        if let Some(actual) = actual {
            differences.push(Difference::new(
                "password",
                "the Secret's value".to_string(),
                actual.to_string(),
                Some(sql::alter_role_password(
                    &spec.name,
                    &scram::verifier(password),
                )),
            ));
        }
    }
    for parent in &spec.member_of {
        if !observed.member_of.contains(parent) {
            differences.push(Difference::new(
                "memberOf",
                format!("member of {parent}"),
                "not a member".to_string(),
                Some(sql::grant_membership(parent, &spec.name)),
            ));
        }
    }
    for parent in &observed.member_of {
        if !spec.member_of.contains(parent) {
            differences.push(Difference::new(
                "memberOf",
                format!("not a member of {parent}"),
                format!("member of {parent}"),
                Some(sql::revoke_membership(parent, &spec.name)),
            ));
        }
    }
    Plan::Present { differences }
}

/// The details a database's status shows: what the server holds.
pub fn database_details(name: &str, state: &DatabaseState) -> Map<String, Value> {
    let mut details = Map::new();
    details.insert("name".into(), json!(name));
    details.insert("owner".into(), json!(state.owner));
    details.insert("encoding".into(), json!(state.encoding));
    details.insert("connectionLimit".into(), json!(state.connection_limit));
    details
}

/// The details a role's status shows: what the server holds, the password only as whether
/// one is set.
pub fn role_details(name: &str, state: &RoleState) -> Map<String, Value> {
    let mut details = Map::new();
    details.insert("name".into(), json!(name));
    details.insert("login".into(), json!(state.login));
    let password = match state.password {
        StoredPassword::None => json!(false),
        StoredPassword::Hash(_) => json!(true),
        StoredPassword::Unreadable => Value::Null,
    };
    details.insert("passwordSet".into(), password);
    details.insert("memberOf".into(), json!(state.member_of));
    details
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn database(spec: Value) -> DatabaseSpec {
        DatabaseSpec::parse(&spec).expect("valid")
    }

    fn role(spec: Value) -> RoleSpec {
        RoleSpec::parse(&spec).expect("valid")
    }

    #[test]
    fn a_missing_database_is_created_with_everything_the_spec_says() {
        let spec = database(json!({"name": "orders", "owner": "app", "connectionLimit": 5}));
        let Plan::Missing { create } = plan_database(&spec, "postgres", None) else {
            panic!("missing");
        };
        assert_eq!(
            create[0].sql(),
            "CREATE DATABASE \"orders\" OWNER \"app\" ENCODING 'UTF8' TEMPLATE template0 CONNECTION LIMIT 5"
        );
    }

    #[test]
    fn a_database_differs_field_by_field_and_its_encoding_cannot_be_fixed() {
        let spec = database(json!({"name": "orders", "connectionLimit": 5}));
        let observed = DatabaseState {
            owner: "someone".into(),
            encoding: "SQL_ASCII".into(),
            connection_limit: -1,
        };
        let Plan::Present { differences } = plan_database(&spec, "postgres", Some(&observed))
        else {
            panic!("present");
        };
        let fields: Vec<_> = differences.iter().map(|d| d.field).collect();
        assert_eq!(fields, ["owner", "encoding", "connectionLimit"]);
        assert_eq!(
            differences[0].fix.as_ref().map(SqlText::sql),
            Some("ALTER DATABASE \"orders\" OWNER TO \"postgres\"")
        );
        assert!(differences[1].fix.is_none());
        assert_eq!(differences[2].describe(), "connectionLimit is -1 (spec: 5)");
        let same = DatabaseState {
            owner: "postgres".into(),
            encoding: "UTF8".into(),
            connection_limit: 5,
        };
        assert_eq!(
            plan_database(&spec, "postgres", Some(&same)),
            Plan::Present {
                differences: vec![]
            }
        );
    }

    #[test]
    fn a_role_is_created_with_its_password_as_a_verifier_and_its_memberships() {
        let spec = role(json!({"name": "app", "login": true, "memberOf": ["readers"]}));
        let Plan::Missing { create } = plan_role(&spec, Some("s3cret"), None) else {
            panic!("missing");
        };
        let sql: Vec<_> = create.iter().map(|s| s.sql().to_string()).collect();
        assert_eq!(sql[0], "CREATE ROLE \"app\" LOGIN");
        assert!(sql[1].starts_with("ALTER ROLE \"app\" PASSWORD 'SCRAM-SHA-256$4096:"));
        assert!(!sql.concat().contains("s3cret"));
        assert_eq!(sql[2], "GRANT \"readers\" TO \"app\"");
    }

    #[test]
    fn a_role_changed_by_hand_shows_each_difference_without_the_password() {
        let spec = role(json!({"name": "app", "login": true, "memberOf": ["readers"]}));
        let observed = RoleState {
            login: false,
            password: StoredPassword::Hash(scram::verifier("changed by hand")),
            member_of: vec!["admins".into()],
        };
        let Plan::Present { differences } = plan_role(&spec, Some("s3cret"), Some(&observed))
        else {
            panic!("present");
        };
        let shown: Vec<_> = differences.iter().map(Difference::describe).collect();
        assert_eq!(
            shown,
            [
                "login is false (spec: true)",
                "password is another password (spec: the Secret's value)",
                "memberOf is not a member (spec: member of readers)",
                "memberOf is member of admins (spec: not a member of admins)",
            ]
        );
        let text = serde_json::to_string(&differences).expect("json");
        assert!(
            !text.contains("s3cret") && !text.contains("SCRAM"),
            "{text}"
        );

        let in_sync = RoleState {
            login: true,
            password: StoredPassword::Hash(scram::verifier("s3cret")),
            member_of: vec!["readers".into()],
        };
        assert_eq!(
            plan_role(&spec, Some("s3cret"), Some(&in_sync)),
            Plan::Present {
                differences: vec![]
            }
        );
        let unreadable = RoleState {
            password: StoredPassword::Unreadable,
            ..in_sync
        };
        assert_eq!(
            plan_role(&spec, Some("s3cret"), Some(&unreadable)),
            Plan::Present {
                differences: vec![]
            },
            "a password that cannot be read is not a difference"
        );
    }
}
