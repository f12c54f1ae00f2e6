//! The reconcile flow through the SDK's harness (its controller over the memory store, no
//! NATS), on a memory server that runs the operator's own statements: create, update, drift
//! put back or reported, the error policy, and both deletion policies. The real server's
//! behaviour is checked end to end in `tests/tests/postgres.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use operator_sdk::testing::{block_on, Next, ReconcileHarness};
use operator_sdk::{EventType, ResourceStatus};
use serde_json::json;

use super::*;
use crate::plan::{DatabaseState, RoleState, StoredPassword};

#[derive(Default)]
struct State {
    databases: HashMap<String, DatabaseState>,
    roles: HashMap<String, RoleState>,
    statements: Vec<String>,
    refuse_next: Option<(&'static str, &'static str)>,
}

/// A server in memory that understands the statements of `crate::sql`.
#[derive(Clone, Default)]
struct MemoryServer(Arc<Mutex<State>>);

impl MemoryServer {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.0.lock().expect("lock"))
    }

    fn statements(&self) -> Vec<String> {
        self.with(|s| std::mem::take(&mut s.statements))
    }
}

fn unquote(token: &str) -> String {
    token.trim_matches('"').trim_matches('\'').to_string()
}

fn run_sql(state: &mut State, sql: &str) {
    let t: Vec<&str> = sql.split_whitespace().collect();
    match t.as_slice() {
        ["CREATE", "DATABASE", name, "OWNER", owner, "ENCODING", encoding, "TEMPLATE", _, "CONNECTION", "LIMIT", limit] =>
        {
            state.databases.insert(
                unquote(name),
                DatabaseState {
                    owner: unquote(owner),
                    encoding: unquote(encoding),
                    connection_limit: limit.parse().expect("limit"),
                },
            );
        }
        ["ALTER", "DATABASE", name, "OWNER", "TO", owner] => {
            if let Some(db) = state.databases.get_mut(&unquote(name)) {
                db.owner = unquote(owner);
            }
        }
        ["ALTER", "DATABASE", name, "CONNECTION", "LIMIT", limit] => {
            if let Some(db) = state.databases.get_mut(&unquote(name)) {
                db.connection_limit = limit.parse().expect("limit");
            }
        }
        ["DROP", "DATABASE", "IF", "EXISTS", name] => {
            state.databases.remove(&unquote(name));
        }
        ["CREATE", "ROLE", name, login] => {
            state.roles.insert(
                unquote(name),
                RoleState {
                    login: *login == "LOGIN",
                    password: StoredPassword::None,
                    member_of: Vec::new(),
                },
            );
        }
        ["ALTER", "ROLE", name, "PASSWORD", verifier] => {
            if let Some(role) = state.roles.get_mut(&unquote(name)) {
                role.password = StoredPassword::Hash(unquote(verifier));
            }
        }
        ["ALTER", "ROLE", name, login] => {
            if let Some(role) = state.roles.get_mut(&unquote(name)) {
                role.login = *login == "LOGIN";
            }
        }
        ["GRANT", parent, "TO", member] => {
            if let Some(role) = state.roles.get_mut(&unquote(member)) {
                role.member_of.push(unquote(parent));
                role.member_of.sort();
            }
        }
        ["REVOKE", parent, "FROM", member] => {
            if let Some(role) = state.roles.get_mut(&unquote(member)) {
                role.member_of.retain(|p| *p != unquote(parent));
            }
        }
        ["DROP", "ROLE", "IF", "EXISTS", name] => {
            state.roles.remove(&unquote(name));
        }
        _ => panic!("unexpected statement {sql}"),
    }
}

impl Server for MemoryServer {
    fn login_role(&self) -> &str {
        "postgres"
    }

    async fn database(&self, name: &str) -> Result<Option<DatabaseState>, ServerError> {
        Ok(self.with(|s| s.databases.get(name).cloned()))
    }

    async fn role(&self, name: &str) -> Result<Option<RoleState>, ServerError> {
        Ok(self.with(|s| s.roles.get(name).cloned()))
    }

    async fn execute(&self, statements: &[SqlText]) -> Result<(), ServerError> {
        self.with(|state| {
            for statement in statements {
                if let Some((code, message)) = state.refuse_next.take() {
                    return Err(ServerError::Refused {
                        statement: statement.to_string(),
                        code: code.into(),
                        message: message.into(),
                    });
                }
                state.statements.push(statement.to_string());
                run_sql(state, statement.sql());
            }
            Ok(())
        })
    }
}

const PASSWORD: &str = "s3cret-from-the-secret";

fn harness(operator: &str, server: &MemoryServer) -> ReconcileHarness {
    let secrets: SecretLookup =
        Arc::new(|key: &str| (key == "APP_PASSWORD").then(|| PASSWORD.to_string()));
    ReconcileHarness::new(operator, PostgresReconciler::new(server.clone(), secrets))
}

fn ready(status: &EntityStatus) -> (String, String) {
    let ready = operator_sdk::condition::find(&status.conditions, READY).expect("Ready");
    (format!("{:?}", ready.status), ready.reason.clone())
}

#[test]
fn a_new_database_is_created_and_reported_ready_with_what_the_server_holds() {
    block_on(async {
        let server = MemoryServer::default();
        let mut h = harness("pg-create", &server);
        h.apply(
            DATABASE,
            "public/orders",
            json!({"name": "orders", "connectionLimit": 5}),
        )
        .await;
        let run = h.reconcile(DATABASE, "public/orders").await;
        assert_eq!(run.next, Next::AwaitChange);
        assert_eq!(
            server.statements(),
            ["CREATE DATABASE \"orders\" OWNER \"postgres\" ENCODING 'UTF8' TEMPLATE template0 CONNECTION LIMIT 5"]
        );
        let status = run.last().expect("a status");
        assert_eq!(status.status, ResourceStatus::Active);
        assert_eq!(status.runtime, None, "long-lived");
        assert_eq!(ready(status), ("True".into(), "InSync".into()));
        assert_eq!(status.details["connectionLimit"], json!(5));
        assert_eq!(status.details["appliedGeneration"], json!(1));
        assert_eq!(status.events[0].reason, "Created");

        // In sync at a resync: no statement, no new status.
        let again = h.reconcile(DATABASE, "public/orders").await;
        assert!(server.statements().is_empty());
        assert!(again.published.is_empty(), "{:?}", again.published);
    });
}

#[test]
fn a_new_spec_is_applied_and_a_change_by_hand_is_put_back_with_a_warning() {
    block_on(async {
        let server = MemoryServer::default();
        let mut h = harness("pg-drift", &server);
        let spec = json!({"name": "app", "login": true, "passwordSecretKey": "APP_PASSWORD",
                          "memberOf": ["readers"], "driftPolicy": "correct"});
        server.with(|s| run_sql(s, "CREATE ROLE \"readers\" NOLOGIN"));
        h.apply(ROLE, "public/app", spec.clone()).await;
        h.reconcile(ROLE, "public/app").await;
        let created = server.statements();
        assert_eq!(created.len(), 3, "{created:?}");
        assert!(!created.concat().contains(PASSWORD));

        // By hand: login off, another password, out of readers.
        server.with(|s| {
            run_sql(s, "ALTER ROLE \"app\" NOLOGIN");
            run_sql(
                s,
                "ALTER ROLE \"app\" PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$YQ==:Yg=='",
            );
            run_sql(s, "REVOKE \"readers\" FROM \"app\"");
        });
        let run = h.reconcile(ROLE, "public/app").await;
        assert_eq!(server.statements().len(), 3);
        let status = run.last().expect("status");
        let event = &status.events[0];
        assert_eq!(event.reason, "DriftCorrected");
        assert_eq!(event.kind, EventType::Warning);
        assert!(
            event.message.contains("login is false (spec: true)"),
            "{}",
            event.message
        );
        assert!(!event.message.contains(PASSWORD));
        assert_eq!(ready(status), ("True".into(), "InSync".into()));

        // A new spec is an update, not drift.
        h.apply(
            ROLE,
            "public/app",
            json!({"name": "app", "login": true,
            "passwordSecretKey": "APP_PASSWORD"}),
        )
        .await;
        let run = h.reconcile(ROLE, "public/app").await;
        assert_eq!(server.statements(), ["REVOKE \"readers\" FROM \"app\""]);
        let status = run.last().expect("status");
        assert_eq!(status.events[0].reason, "Updated");
        assert_eq!(status.details["appliedGeneration"], json!(2));
    });
}

#[test]
fn with_drift_policy_report_a_change_by_hand_is_reported_once_and_left_alone() {
    block_on(async {
        let server = MemoryServer::default();
        let mut h = harness("pg-report", &server);
        h.apply(
            DATABASE,
            "public/reports",
            json!({"name": "reports", "connectionLimit": 3, "driftPolicy": "report"}),
        )
        .await;
        h.reconcile(DATABASE, "public/reports").await;
        server.statements();
        server.with(|s| run_sql(s, "ALTER DATABASE \"reports\" CONNECTION LIMIT 99"));
        let run = h.reconcile(DATABASE, "public/reports").await;
        assert!(server.statements().is_empty(), "nothing put back");
        let status = run.last().expect("status");
        assert_eq!(ready(status), ("False".into(), "DriftDetected".into()));
        assert_eq!(
            status.details["drift"],
            json!([{"field": "connectionLimit", "desired": "3", "actual": "99"}])
        );
        assert_eq!(status.events[0].reason, "DriftDetected");
        let again = h.reconcile(DATABASE, "public/reports").await;
        assert!(
            again.published.is_empty(),
            "the same drift is reported once"
        );

        server.with(|s| run_sql(s, "DROP DATABASE IF EXISTS \"reports\""));
        let run = h.reconcile(DATABASE, "public/reports").await;
        assert!(server.statements().is_empty(), "not created again");
        let status = run.last().expect("status");
        assert_eq!(status.details["drift"][0]["field"], json!("exists"));
    });
}

#[test]
fn a_password_key_the_component_lacks_is_retried_later_and_said_in_the_status() {
    block_on(async {
        let server = MemoryServer::default();
        let mut h = harness("pg-key", &server);
        h.apply(
            ROLE,
            "public/app",
            json!({"name": "app", "passwordSecretKey": "OTHER_PASSWORD"}),
        )
        .await;
        let run = h.reconcile(ROLE, "public/app").await;
        assert_eq!(
            run.next,
            Next::Retry {
                retry_after: Some(MISSING_KEY_RETRY)
            }
        );
        assert!(server.statements().is_empty());
        let status = run.last().expect("status");
        let synced = operator_sdk::condition::find(&status.conditions, SYNCED).expect("Synced");
        assert_eq!(synced.reason, "PasswordSecretKeyMissing");
        assert!(synced.message.contains("OTHER_PASSWORD"));
    });
}

#[test]
fn a_refusal_retries_cannot_fix_ends_in_error_and_a_passing_one_is_retried() {
    block_on(async {
        let server = MemoryServer::default();
        let mut h = harness("pg-refused", &server);
        h.apply(DATABASE, "public/orders", json!({"name": "orders"}))
            .await;
        server.with(|s| s.refuse_next = Some(("55006", "source database is being accessed")));
        let run = h.reconcile(DATABASE, "public/orders").await;
        assert_eq!(run.next, Next::Retry { retry_after: None });
        server.with(|s| s.refuse_next = Some(("42501", "permission denied to create database")));
        let run = h.reconcile(DATABASE, "public/orders").await;
        assert_eq!(run.next, Next::WaitForNewSpec);
        let status = run.last().expect("error status");
        assert_eq!(status.status, ResourceStatus::Error);
        assert!(status.message.as_deref().is_some_and(|m| m
            .contains("CREATE DATABASE \"orders\"")
            && m.contains("permission denied")));
    });
}

#[test]
fn a_renamed_spec_is_refused() {
    block_on(async {
        let server = MemoryServer::default();
        let mut h = harness("pg-rename", &server);
        h.apply(DATABASE, "public/orders", json!({"name": "orders"}))
            .await;
        h.reconcile(DATABASE, "public/orders").await;
        h.apply(DATABASE, "public/orders", json!({"name": "orders2"}))
            .await;
        let run = h.reconcile(DATABASE, "public/orders").await;
        assert_eq!(run.next, Next::WaitForNewSpec);
        let status = run.last().expect("error status");
        let message = status.message.clone().unwrap_or_default();
        assert!(message.contains("name cannot change"), "{message}");
        assert_eq!(status.details["name"], json!("orders"), "details kept");
        let synced = operator_sdk::condition::find(&status.conditions, SYNCED).expect("Synced");
        assert_eq!(synced.reason, "NameChanged");
        // Still refused at the next try: the name it was is not forgotten.
        h.apply(DATABASE, "public/orders", json!({"name": "orders3"}))
            .await;
        let run = h.reconcile(DATABASE, "public/orders").await;
        assert_eq!(run.next, Next::WaitForNewSpec);
    });
}

#[test]
fn deleting_drops_with_delete_keeps_with_retain_and_retries_a_refused_drop() {
    block_on(async {
        let server = MemoryServer::default();
        let mut h = harness("pg-delete", &server);
        h.apply(DATABASE, "public/kept", json!({"name": "kept"}))
            .await;
        h.apply(
            DATABASE,
            "public/gone",
            json!({"name": "gone", "deletionPolicy": "Delete"}),
        )
        .await;
        h.reconcile(DATABASE, "public/kept").await;
        h.reconcile(DATABASE, "public/gone").await;
        server.statements();

        h.delete(DATABASE, "public/kept").await;
        let run = h.reconcile(DATABASE, "public/kept").await;
        assert_eq!(run.next, Next::Deleted);
        assert!(server.statements().is_empty(), "Retain drops nothing");

        h.delete(DATABASE, "public/gone").await;
        server.with(|s| {
            s.refuse_next = Some((
                "55006",
                "database \"gone\" is being accessed by other users",
            ))
        });
        let run = h.reconcile(DATABASE, "public/gone").await;
        assert_eq!(run.next, Next::Retry { retry_after: None });
        assert_eq!(run.last().map(|s| s.status), Some(ResourceStatus::Deleting));
        let run = h.reconcile(DATABASE, "public/gone").await;
        assert_eq!(run.next, Next::Deleted);
        assert_eq!(server.statements(), ["DROP DATABASE IF EXISTS \"gone\""]);
        assert!(
            server.with(|s| s.databases.contains_key("kept") && !s.databases.contains_key("gone"))
        );
    });
}
