//! The PostgreSQL operator end to end, on a real PostgreSQL 15 server made for each test: the
//! orchestrator runs the operator's 2 replicas (the `process` runtime), resources are applied
//! with `opctl`, and the server is read (and changed by hand) through its own client. Creating,
//! updating, drift put back or only reported, both deletion policies, passwords kept out of
//! every log and output, and a killed leader replaced. Skips, saying so, without PostgreSQL.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use operator_tests::postgres::*;
use operator_tests::*;
use serde_json::Value;

/// The database `name` on the server: its owner and connection limit.
async fn database(pg: &Postgres, name: &str) -> anyhow::Result<Option<(String, i32)>> {
    let client = pg.superuser().await?;
    let row = client
        .query_opt(
            "SELECT pg_get_userbyid(datdba)::text, datconnlimit FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// The role `name`: whether it may log in, and the roles it is a member of.
async fn role(pg: &Postgres, name: &str) -> anyhow::Result<Option<(bool, Vec<String>)>> {
    let client = pg.superuser().await?;
    let Some(row) = client
        .query_opt(
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1",
            &[&name],
        )
        .await?
    else {
        return Ok(None);
    };
    let parents = client
        .query(
            "SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid \
             JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = $1 ORDER BY 1",
            &[&name],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Some((row.get(0), parents)))
}

/// Runs `sql` as the superuser: a change made by hand, outside the operator.
async fn by_hand(pg: &Postgres, sql: &str) -> anyhow::Result<()> {
    pg.superuser().await?.batch_execute(sql).await?;
    Ok(())
}

/// Reads the server with `read` until `done`, for [`WAIT`] at most.
async fn eventually<T: std::fmt::Debug>(
    what: &str,
    mut read: impl AsyncFnMut() -> anyhow::Result<T>,
    done: impl Fn(&T) -> bool,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        let value = read().await?;
        if done(&value) {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}; last seen: {value:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The example resources: the readers group, the app login role, the orders database.
async fn apply_examples(system: &PgSystem) -> anyhow::Result<()> {
    system.apply(&example("postgres-readers.yaml"))?;
    system.apply(&example("postgres-role.yaml"))?;
    system.apply(&example("postgres-database.yaml"))?;
    for name in ["readers-role", "app-role", "orders-db"] {
        system.wait_ready(name, 1).await?;
    }
    Ok(())
}

#[tokio::test]
async fn databases_and_roles_are_created_and_then_updated_as_their_specs_say() -> anyhow::Result<()>
{
    let Some(system) = PgSystem::start().await? else {
        return Ok(());
    };
    let pg = &system.postgres;
    apply_examples(&system).await?;
    assert_eq!(database(pg, "orders").await?, Some(("app".into(), 20)));
    assert_eq!(role(pg, "app").await?, Some((true, vec!["readers".into()])));
    assert_eq!(role(pg, "readers").await?, Some((false, vec![])));
    // The password is the Secret's: the role logs in with it.
    pg.connect_as("app", APP_PASSWORD, "orders").await?;
    let record = system.wait_ready("orders-db", 1).await?;
    assert_eq!(record["status"]["status"], "active", "{record}");
    assert!(
        record["status"]["runtime"].is_null(),
        "long-lived: {record}"
    );
    let details = &record["status"]["details"];
    assert_eq!(details["owner"], "app", "{record}");
    assert_eq!(details["encoding"], "UTF8", "{record}");
    assert_eq!(details["connectionLimit"], 20, "{record}");

    system.apply(
        &example("postgres-database.yaml")
            .replace("connectionLimit: 20", "connectionLimit: 5")
            .replace("owner: app", "owner: postgres"),
    )?;
    system.apply(
        &example("postgres-role.yaml")
            .replace("    memberOf:\n      - readers\n", "")
            .replace("login: true", "login: false"),
    )?;
    system.wait_ready("orders-db", 2).await?;
    system.wait_ready("app-role", 2).await?;
    assert_eq!(database(pg, "orders").await?, Some(("postgres".into(), 5)));
    assert_eq!(role(pg, "app").await?, Some((false, vec![])));
    let refused = pg.connect_as("app", APP_PASSWORD, "orders").await;
    assert!(refused.is_err(), "NOLOGIN refuses the role");
    Ok(())
}

#[tokio::test]
async fn changes_made_by_hand_are_put_back_at_the_next_resync() -> anyhow::Result<()> {
    let Some(system) = PgSystem::start().await? else {
        return Ok(());
    };
    let pg = &system.postgres;
    apply_examples(&system).await?;
    by_hand(
        pg,
        "ALTER DATABASE orders CONNECTION LIMIT 99; ALTER DATABASE orders OWNER TO postgres; \
         ALTER ROLE app NOLOGIN PASSWORD 'changed-by-hand'; REVOKE readers FROM app; \
         CREATE ROLE admins; GRANT admins TO app",
    )
    .await?;
    eventually(
        "the database put back",
        async || database(pg, "orders").await,
        |db| *db == Some(("app".into(), 20)),
    )
    .await?;
    eventually(
        "the role put back",
        async || role(pg, "app").await,
        |r| *r == Some((true, vec!["readers".into()])),
    )
    .await?;
    // The password too: the Secret's works again, the one set by hand no longer does.
    eventually(
        "the password put back",
        async || Ok(pg.connect_as("app", APP_PASSWORD, "orders").await.is_ok()),
        |ok| *ok,
    )
    .await?;
    assert!(pg
        .connect_as("app", "changed-by-hand", "orders")
        .await
        .is_err());

    by_hand(pg, "DROP DATABASE orders").await?;
    eventually(
        "the dropped database created again",
        async || database(pg, "orders").await,
        |db| *db == Some(("app".into(), 20)),
    )
    .await?;
    let record = system.wait_ready("orders-db", 1).await?;
    assert_eq!(reason(&record, "Ready"), Some("InSync"), "{record}");
    let described = system.opctl.run(&[
        "get",
        "-t",
        "resource",
        "-w",
        "public",
        "-n",
        "orders-db",
        "-d",
    ])?;
    assert!(
        described.stdout.contains("DriftCorrected"),
        "the history says what was put back: {}",
        described.stdout
    );
    Ok(())
}

#[tokio::test]
async fn with_drift_policy_report_changes_made_by_hand_are_only_reported() -> anyhow::Result<()> {
    let Some(system) = PgSystem::start().await? else {
        return Ok(());
    };
    let pg = &system.postgres;
    let spec = "{name: reports, connectionLimit: 3, driftPolicy: report}";
    system.apply(&resource("reports-db", "database", spec))?;
    system.wait_ready("reports-db", 1).await?;
    by_hand(pg, "ALTER DATABASE reports CONNECTION LIMIT 99").await?;
    let record = system
        .wait("reports-db", |r| {
            reason(r, "Ready") == Some("DriftDetected")
        })
        .await?;
    assert_eq!(condition(&record, "Ready"), Some("False"), "{record}");
    let drift = &record["status"]["details"]["drift"][0];
    assert_eq!(drift["field"], "connectionLimit", "{record}");
    assert_eq!(drift["desired"], "3", "{record}");
    assert_eq!(drift["actual"], "99", "{record}");
    // The reconcile that reported it is the one that would have put it back: it did not.
    assert_eq!(
        record["status"]["details"]["connectionLimit"], 99,
        "{record}"
    );
    assert_eq!(applied_generation(&record), Some(1));
    assert_eq!(
        database(pg, "reports").await?,
        Some(("postgres".into(), 99))
    );

    by_hand(pg, "DROP DATABASE reports").await?;
    let record = system
        .wait("reports-db", |r| {
            r["status"]["details"]["drift"][0]["field"] == "exists"
        })
        .await?;
    assert_eq!(condition(&record, "Ready"), Some("False"), "{record}");
    assert_eq!(database(pg, "reports").await?, None);

    // A new spec is applied whatever the drift policy.
    system.apply(&resource(
        "reports-db",
        "database",
        "{name: reports, connectionLimit: 4, driftPolicy: report}",
    ))?;
    system.wait_ready("reports-db", 2).await?;
    assert_eq!(database(pg, "reports").await?, Some(("postgres".into(), 4)));
    Ok(())
}

#[tokio::test]
async fn deleting_a_resource_drops_or_keeps_the_object_as_its_deletion_policy_says(
) -> anyhow::Result<()> {
    let Some(system) = PgSystem::start().await? else {
        return Ok(());
    };
    let pg = &system.postgres;
    system.apply(&resource("kept-db", "database", "{name: kept}"))?;
    system.apply(&resource(
        "dropped-db",
        "database",
        "{name: dropped, deletionPolicy: Delete}",
    ))?;
    system.apply(&resource(
        "kept-role",
        "role",
        "{name: keeper, deletionPolicy: Retain}",
    ))?;
    system.apply(&resource(
        "dropped-role",
        "role",
        "{name: leaver, deletionPolicy: Delete}",
    ))?;
    for name in ["kept-db", "dropped-db", "kept-role", "dropped-role"] {
        system.wait_ready(name, 1).await?;
    }
    for name in ["kept-db", "dropped-db", "kept-role", "dropped-role"] {
        let run = system
            .opctl
            .run(&["delete", "-t", "resource", "-w", "public", "-n", name])?;
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    for name in ["kept-db", "dropped-db", "kept-role", "dropped-role"] {
        system.wait_gone(name).await?;
    }
    assert!(
        database(pg, "kept").await?.is_some(),
        "Retain (the default)"
    );
    assert_eq!(database(pg, "dropped").await?, None);
    assert!(role(pg, "keeper").await?.is_some());
    assert_eq!(role(pg, "leaver").await?, None);
    Ok(())
}

#[tokio::test]
async fn passwords_appear_in_no_log_and_no_opctl_output() -> anyhow::Result<()> {
    let Some(system) = PgSystem::start().await? else {
        return Ok(());
    };
    apply_examples(&system).await?;
    // Set again by the operator after a change by hand: a second statement that could leak.
    by_hand(
        &system.postgres,
        "ALTER ROLE app PASSWORD 'changed-by-hand'",
    )
    .await?;
    eventually(
        "the password put back",
        async || {
            Ok(system
                .postgres
                .connect_as("app", APP_PASSWORD, "orders")
                .await
                .is_ok())
        },
        |ok| *ok,
    )
    .await?;
    let mut outputs = vec![
        ("component logs", system.logs()?),
        ("orchestrator log", system.orchestrator.log()),
    ];
    for args in [
        vec!["get", "-t", "resource", "-w", "public", "-a"],
        vec![
            "get", "-t", "resource", "-w", "public", "-n", "app-role", "-d",
        ],
        vec![
            "get", "-t", "resource", "-w", "public", "-n", "app-role", "-o", "json",
        ],
        vec![
            "get",
            "-t",
            "secret",
            "-w",
            "user-system",
            "-n",
            "postgres-operator",
            "-d",
        ],
        vec![
            "get",
            "-t",
            "secret",
            "-w",
            "user-system",
            "-n",
            "postgres-operator",
            "-o",
            "json",
        ],
        vec![
            "get",
            "-t",
            "operator",
            "-n",
            "postgres-operator",
            "-d",
            "-o",
            "json",
        ],
    ] {
        let run = system.opctl.run(&args)?;
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        outputs.push(("opctl get", run.stdout + &run.stderr));
    }
    // The server logs every statement: the operator sent verifiers, never a password.
    let server_log = system.postgres.log();
    assert!(
        server_log.contains("ALTER ROLE \"app\" PASSWORD 'SCRAM-SHA-256$"),
        "the statements are logged: {server_log}"
    );
    outputs.push(("server log", server_log));
    for (what, text) in &outputs {
        for password in [APP_PASSWORD, SUPERUSER_PASSWORD] {
            assert!(!text.contains(password), "{what} shows a password:\n{text}");
        }
    }
    assert!(
        outputs[0].1.contains("postgres-operator"),
        "{}",
        outputs[0].1
    );
    Ok(())
}

#[tokio::test]
async fn two_replicas_elect_one_leader_and_a_killed_leader_is_replaced() -> anyhow::Result<()> {
    let Some(system) = PgSystem::start().await? else {
        return Ok(());
    };
    system.apply(&resource("first-db", "database", "{name: first}"))?;
    system.wait_ready("first-db", 1).await?;
    // Both replicas running, and the election settled: one leader, one follower.
    let view = eventually(
        "one leader and one follower",
        async || {
            let run = system.opctl.run(&[
                "get",
                "-t",
                "operator",
                "-n",
                "postgres-operator",
                "-d",
                "-o",
                "json",
            ])?;
            Ok(serde_json::from_str::<Value>(&run.stdout)?)
        },
        |view| {
            let statuses: Vec<&str> = view["details"]["election"]["postgres-controller"]
                ["replicas"]
                .as_array()
                .map(|rs| rs.iter().filter_map(|r| r["status"].as_str()).collect())
                .unwrap_or_default();
            statuses.contains(&"leader") && statuses.contains(&"follower")
        },
    )
    .await?;
    let replicas = view["details"]["components"]["replicas"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let running: Vec<&Value> = replicas
        .iter()
        .filter(|r| r["state"] == "running")
        .collect();
    assert_eq!(running.len(), 2, "{view:#}");

    let election = &view["details"]["election"]["postgres-controller"];
    let holder = election["leader"].as_str().unwrap_or_default().to_string();
    let index: u64 = holder
        .rsplit('-')
        .next()
        .and_then(|i| i.parse().ok())
        .with_context(|| format!("leader {holder}"))?;
    let pid = running
        .iter()
        .find(|r| r["replica"] == index)
        .and_then(|r| r["id"].as_str())
        .with_context(|| format!("the leader {holder} among {view:#}"))?;
    let killed = std::process::Command::new("kill")
        .args(["-9", pid])
        .status()?;
    assert!(killed.success());

    system.apply(&resource("second-db", "database", "{name: second}"))?;
    system.wait_ready("second-db", 1).await?;
    assert!(database(&system.postgres, "second").await?.is_some());
    Ok(())
}
