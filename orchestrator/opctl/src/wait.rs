//! `opctl wait`: follows one resource's stream of changes until a condition holds (exit 0),
//! the resource ends in a state that can no longer meet it, or the timeout passes (exit 1,
//! with the last status and its reason).

use std::fmt;
use std::time::Duration;

use anyhow::{bail, Result};
use operator_contract::{ManifestKind, RuntimeStatus};
use serde_json::Value;

use crate::args::Wait;
use crate::client::OrchestratorClient;
use crate::console::Console;
use crate::watch::Changes;

/// What `--for` asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitFor {
    /// `condition=TYPE`: the condition of that type is `True` for the current generation.
    Condition(String),
    /// `runtime=STATE`: the run reached that state for the current generation.
    Runtime(RuntimeStatus),
    /// `delete`: the resource is gone.
    Delete,
}

impl fmt::Display for WaitFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Condition(t) => write!(f, "condition={t}"),
            Self::Runtime(r) => write!(f, "runtime={r}"),
            Self::Delete => f.write_str("delete"),
        }
    }
}

/// Parses `--for`: `condition=TYPE`, `runtime=STATE` or `delete`.
pub fn parse_for(text: &str) -> Result<WaitFor, String> {
    let unknown = || {
        format!("'{text}' is not condition=TYPE, runtime=STATE or delete (for example condition=Ready, runtime=succeeded)")
    };
    match text.split_once('=') {
        None if text == "delete" => Ok(WaitFor::Delete),
        Some(("condition", t)) if !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric()) => {
            Ok(WaitFor::Condition(t.to_string()))
        }
        Some(("runtime", state)) => serde_json::from_value(Value::String(state.to_string()))
            .map(WaitFor::Runtime)
            .map_err(|_| {
                format!("runtime '{state}' is not one of pending, inprogress, succeeded, failed, cancelled")
            }),
        _ => Err(unknown()),
    }
}

/// Parses `--timeout`: a number with `ms`, `s`, `m` or `h` (a bare number is seconds).
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    if text.starts_with('-') {
        return Err(format!(
            "'{text}' is negative: give a duration such as 30s or 2m"
        ));
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration such as 30s, 500ms, 2m or 1h"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("'{text}' has an unknown unit: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("'{text}' is out of range"))
}

/// Where a wait stands after an event.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Waiting,
    /// The resource can no longer meet the condition; why.
    Never(String),
}

/// Judges the resource's view (`None`: it does not exist) against what is waited for.
pub fn judge(wanted: &WaitFor, view: Option<&Value>) -> Verdict {
    let Some(view) = view else {
        return match wanted {
            WaitFor::Delete => Verdict::Met,
            _ => Verdict::Never("the resource does not exist (or was deleted)".into()),
        };
    };
    let status = view["status"].as_str().unwrap_or_default();
    let runtime = view["runtime"].as_str();
    let message = view["message"].as_str().unwrap_or("no message");
    let generation = view["generation"].as_u64().unwrap_or_default();
    let observed = view["entityStatus"]["observedGeneration"]
        .as_u64()
        .unwrap_or_default();
    let current = observed >= generation;
    match wanted {
        WaitFor::Delete => Verdict::Waiting,
        _ if status == "deleting" => Verdict::Never("the resource is being deleted".into()),
        _ if current && status == "error" => Verdict::Never(format!("status is error: {message}")),
        WaitFor::Runtime(state) => match runtime {
            Some(now) if current && now == state.to_string() => Verdict::Met,
            Some(now) if current && is_final(now) => Verdict::Never(format!(
                "the run ended {now} and will not become {state}: {message}"
            )),
            _ => Verdict::Waiting,
        },
        WaitFor::Condition(kind) => match condition(view, kind) {
            Some(found) => {
                let at = found["observedGeneration"].as_u64().unwrap_or(observed);
                match found["status"].as_str() {
                    Some("True") if at >= generation => Verdict::Met,
                    Some("False") if at >= generation && terminal(kind, runtime) => {
                        Verdict::Never(format!(
                            "{kind} is False ({}): {}",
                            found["reason"].as_str().unwrap_or("no reason"),
                            found["message"].as_str().unwrap_or("no message")
                        ))
                    }
                    _ => Verdict::Waiting,
                }
            }
            // Before a component reports conditions: Ready is an active resource,
            // Succeeded a succeeded run.
            None if kind.eq_ignore_ascii_case("ready") => {
                if current && status == "active" {
                    Verdict::Met
                } else {
                    Verdict::Waiting
                }
            }
            None if kind.eq_ignore_ascii_case("succeeded") => {
                judge(&WaitFor::Runtime(RuntimeStatus::Succeeded), Some(view))
            }
            None => Verdict::Waiting,
        },
    }
}

/// The condition of a type in the view's status, if reported.
fn condition<'a>(view: &'a Value, kind: &str) -> Option<&'a Value> {
    view["conditions"].as_array()?.iter().find(|c| {
        c["type"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case(kind))
    })
}

fn is_final(runtime: &str) -> bool {
    matches!(runtime, "succeeded" | "failed" | "cancelled")
}

/// A False condition is final when the run it describes has ended.
fn terminal(kind: &str, runtime: Option<&str>) -> bool {
    kind.eq_ignore_ascii_case("succeeded") && runtime.is_some_and(is_final)
}

/// The last status, said in one line for a failure.
fn last_seen(view: Option<&Value>) -> String {
    match view {
        None => "the resource does not exist".into(),
        Some(v) => format!(
            "last status {}, runtime {}, generation {} (observed {}){}",
            v["status"].as_str().unwrap_or("unknown"),
            v["runtime"].as_str().unwrap_or("none"),
            v["generation"],
            v["entityStatus"]["observedGeneration"]
                .as_u64()
                .unwrap_or_default(),
            v["message"]
                .as_str()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ),
    }
}

pub async fn run(wait: Wait, client: &OrchestratorClient, console: &Console) -> Result<()> {
    if wait.kind != ManifestKind::Resource {
        bail!("wait follows resources: use -t resource");
    }
    let workspace = wait.workspace();
    let target = format!("resource {workspace}/{}", wait.name);
    console.info(&format!("⏳ wait...{target} for {}", wait.condition));
    let deadline = tokio::time::Instant::now() + wait.timeout;
    let mut last: Option<Value> = None;
    let mut synced = false;
    let followed = async {
        let mut changes =
            Changes::open(client, wait.kind, Some(workspace), Some(&wait.name), true).await?;
        loop {
            let event = changes.next().await?;
            match event["type"].as_str() {
                Some("synced") => synced = true,
                Some("deleted") => last = None,
                _ => last = Some(event["item"].clone()),
            }
            if !synced {
                continue;
            }
            match judge(&wait.condition, last.as_ref()) {
                Verdict::Met => return Ok(()),
                Verdict::Waiting => {}
                Verdict::Never(why) => bail!(
                    "{target} will not meet {}: {why}; {}",
                    wait.condition,
                    last_seen(last.as_ref())
                ),
            }
        }
    };
    match tokio::time::timeout_at(deadline, followed).await {
        Ok(Ok(())) => {
            console.info(&format!("⏳ wait...{target} met {}", wait.condition));
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => bail!(
            "timed out after {:?} waiting for {target} to meet {}; {}",
            wait.timeout,
            wait.condition,
            last_seen(last.as_ref())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view(status: &str, runtime: Option<&str>, generation: u64, observed: u64) -> Value {
        json!({"status": status, "runtime": runtime, "generation": generation,
               "message": "activity copy failed", "entityStatus": {"observedGeneration": observed}})
    }

    #[test]
    fn for_accepts_the_three_forms_and_names_them_when_refused() {
        assert_eq!(
            parse_for("condition=Ready"),
            Ok(WaitFor::Condition("Ready".into()))
        );
        assert_eq!(
            parse_for("runtime=succeeded"),
            Ok(WaitFor::Runtime(RuntimeStatus::Succeeded))
        );
        assert_eq!(parse_for("delete"), Ok(WaitFor::Delete));
        for bad in [
            "ready",
            "condition=",
            "runtime=done",
            "status=active",
            "deleted",
        ] {
            let error = parse_for(bad).expect_err(bad);
            assert!(!error.contains('\n'), "{error}");
        }
    }

    #[test]
    fn timeouts_take_units_and_refuse_negatives() {
        assert_eq!(parse_timeout("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_timeout("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_timeout("5"), Ok(Duration::from_secs(5)));
        assert!(parse_timeout("-5s")
            .expect_err("negative")
            .contains("negative"));
        assert!(parse_timeout("5d").is_err());
        assert!(parse_timeout("soon").is_err());
    }

    #[test]
    fn a_run_meets_its_state_only_for_the_current_generation() {
        let wanted = WaitFor::Runtime(RuntimeStatus::Succeeded);
        assert_eq!(
            judge(&wanted, Some(&view("active", Some("succeeded"), 1, 1))),
            Verdict::Met
        );
        assert_eq!(
            judge(&wanted, Some(&view("active", Some("succeeded"), 2, 1))),
            Verdict::Waiting
        );
        assert_eq!(
            judge(&wanted, Some(&view("active", Some("inprogress"), 1, 1))),
            Verdict::Waiting
        );
    }

    #[test]
    fn a_failed_run_never_succeeds_and_says_why_at_once() {
        let wanted = WaitFor::Runtime(RuntimeStatus::Succeeded);
        match judge(&wanted, Some(&view("active", Some("failed"), 1, 1))) {
            Verdict::Never(why) => assert!(
                why.contains("failed") && why.contains("copy failed"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            judge(
                &WaitFor::Condition("Ready".into()),
                Some(&view("error", None, 1, 1))
            ),
            Verdict::Never(_)
        ));
    }

    #[test]
    fn conditions_are_judged_by_status_and_generation() {
        let with = |status: &str, at: u64, runtime: &str| {
            json!({"status": "active", "runtime": runtime, "generation": 2,
                   "entityStatus": {"observedGeneration": 2}, "conditions": [
                       {"type": "Succeeded", "status": status, "reason": "ActivityFailed",
                        "message": "copy failed", "observedGeneration": at}]})
        };
        let succeeded = WaitFor::Condition("Succeeded".into());
        assert_eq!(
            judge(&succeeded, Some(&with("True", 2, "succeeded"))),
            Verdict::Met
        );
        assert_eq!(
            judge(&succeeded, Some(&with("True", 1, "succeeded"))),
            Verdict::Waiting
        );
        assert_eq!(
            judge(&succeeded, Some(&with("Unknown", 2, "inprogress"))),
            Verdict::Waiting
        );
        assert!(matches!(
            judge(&succeeded, Some(&with("False", 2, "failed"))),
            Verdict::Never(_)
        ));
    }

    #[test]
    fn delete_is_met_when_the_resource_is_gone() {
        assert_eq!(judge(&WaitFor::Delete, None), Verdict::Met);
        assert_eq!(
            judge(&WaitFor::Delete, Some(&view("deleting", None, 2, 1))),
            Verdict::Waiting
        );
        assert!(matches!(
            judge(&WaitFor::Condition("Ready".into()), None),
            Verdict::Never(_)
        ));
    }
}
