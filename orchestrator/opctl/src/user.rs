//! `opctl user create|list|delete` and `opctl whoami`.

use anyhow::Result;
use serde_json::{json, Value};

use crate::args::UserCommand;
use crate::client::OrchestratorClient;
use crate::console::Console;
use crate::table;

pub async fn run(
    command: UserCommand,
    client: &OrchestratorClient,
    console: &Console,
) -> Result<()> {
    match command {
        UserCommand::Create(create) => {
            let roles: serde_json::Map<String, Value> = create
                .roles
                .into_iter()
                .map(|(ws, role)| (ws, Value::String(role)))
                .collect();
            let answer = client
                .put_user(
                    &create.name,
                    &json!({ "admin": create.admin, "roles": roles }),
                )
                .await?;
            let key = answer
                .get("apikey")
                .and_then(Value::as_str)
                .unwrap_or_default();
            console.info(&format!(
                "👤 user {} has a new API key (shown once):",
                create.name
            ));
            println!("{key}");
        }
        UserCommand::List => {
            let answer = client.users().await?;
            let rows: Vec<Vec<String>> = answer
                .get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|u| {
                    vec![
                        text(u, "name"),
                        if u.get("admin").and_then(Value::as_bool) == Some(true) {
                            "yes".into()
                        } else {
                            String::new()
                        },
                        roles(u),
                    ]
                })
                .collect();
            println!("{}", table::render(&["NAME", "ADMIN", "ROLES"], &rows));
        }
        UserCommand::Delete { name } => {
            client.delete_user(&name).await?;
            console.info(&format!("👤 user {name} deleted"));
        }
    }
    Ok(())
}

pub async fn whoami(client: &OrchestratorClient) -> Result<()> {
    let me = client.whoami().await?;
    let admin = if me.get("admin").and_then(Value::as_bool) == Some(true) {
        " (admin)"
    } else {
        ""
    };
    println!("{}{admin}", text(&me, "name"));
    let roles = roles(&me);
    if !roles.is_empty() {
        println!("roles: {roles}");
    }
    Ok(())
}

fn text(value: &Value, field: &str) -> String {
    value
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// `ws=role` pairs, comma-separated.
fn roles(user: &Value) -> String {
    user.get("roles")
        .and_then(Value::as_object)
        .map(|roles| {
            roles
                .iter()
                .map(|(ws, role)| format!("{ws}={}", role.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}
