//! Replica health of an operator's components, for `opctl get -t operator -n NAME -d`: for
//! each component with `ELECTION_CLUSTER_NAME`, the lease and the heartbeats its replicas keep
//! in the bucket `election-<cluster>` (see `operator_contract::election`), as the `election`
//! details: who leads, in which term and since when, and each replica with its last heartbeat.
//! A replica whose heartbeat is older than its lease TTL is `unresponsive`; fewer live replicas
//! than `ELECTION_CLUSTER_SIZE` gives a warning. What the leading replica publishes of its
//! operator (its heartbeat's `details`) becomes the `operatorDetails`, by component.

use async_nats::jetstream::{self, kv};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use operator_contract::election::{
    election_bucket, lease_key, replica_key_prefix, LeaseRecord, ReplicaHeartbeat, ReplicaRole,
};
use operator_contract::Manifest;
use serde_json::{json, Map, Value};
use tracing::debug;

// The component variables the election settings are read from.
use operator_contract::env::{
    ELECTION_CLUSTER_NAME_ENV as CLUSTER_ENV, ELECTION_CLUSTER_SIZE_ENV as SIZE_ENV,
    OPERATOR_NAME_ENV,
};

/// The lease as read, with the time the server stored its last write.
#[derive(Debug, Clone)]
pub struct Lease {
    pub record: LeaseRecord,
    pub revision: u64,
    pub written_at: DateTime<Utc>,
}

/// A heartbeat as read, with the time the server stored it.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub record: ReplicaHeartbeat,
    pub written_at: DateTime<Utc>,
}

/// The `election` details of the operator `manifest`, keyed by component; `None` when no
/// component elects.
pub async fn election_details(js: &jetstream::Context, manifest: &Manifest) -> Option<Value> {
    let section = manifest.operator.as_ref()?;
    let mut components = Map::new();
    for component in &section.components {
        let Some(cluster) = component
            .environment_vars
            .get(CLUSTER_ENV)
            .filter(|c| !c.trim().is_empty())
        else {
            continue;
        };
        let operator = component
            .environment_vars
            .get(OPERATOR_NAME_ENV)
            .unwrap_or(&manifest.name);
        let expected = component
            .environment_vars
            .get(SIZE_ENV)
            .and_then(|s| s.trim().parse::<u32>().ok());
        let view = match read(js, cluster, operator).await {
            Ok((lease, heartbeats)) => view(cluster, expected, lease, heartbeats, Utc::now()),
            Err(reason) => json!({
                "cluster": cluster,
                "expectedReplicas": expected,
                "message": reason,
            }),
        };
        components.insert(component.name.clone(), view);
    }
    (!components.is_empty()).then_some(Value::Object(components))
}

/// Reads the lease and every heartbeat of `operator` in `cluster`.
async fn read(
    js: &jetstream::Context,
    cluster: &str,
    operator: &str,
) -> Result<(Option<Lease>, Vec<Heartbeat>), String> {
    let bucket = election_bucket(cluster);
    let kv = js
        .get_key_value(&bucket)
        .await
        .map_err(|_| format!("no replica has joined the election yet (no bucket {bucket})"))?;
    let lease = entry(&kv, &lease_key(operator)).await.and_then(|(e, at)| {
        let record = serde_json::from_slice::<LeaseRecord>(&e.value).ok()?;
        Some(Lease {
            record,
            revision: e.revision,
            written_at: at,
        })
    });
    let prefix = replica_key_prefix(operator);
    let keys: Vec<String> = kv
        .keys()
        .await
        .map_err(|e| e.to_string())?
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    let mut heartbeats = Vec::new();
    for key in keys.iter().filter(|k| k.starts_with(&prefix)) {
        if let Some((e, at)) = entry(&kv, key).await {
            match serde_json::from_slice::<ReplicaHeartbeat>(&e.value) {
                Ok(record) => heartbeats.push(Heartbeat {
                    record,
                    written_at: at,
                }),
                Err(err) => debug!(key = %key, error = %err, "unreadable heartbeat ignored"),
            }
        }
    }
    Ok((lease, heartbeats))
}

async fn entry(kv: &kv::Store, key: &str) -> Option<(kv::Entry, DateTime<Utc>)> {
    let e = kv.entry(key).await.ok()??;
    if e.operation != kv::Operation::Put {
        return None;
    }
    let at = DateTime::<Utc>::from_timestamp(e.created.unix_timestamp(), e.created.nanosecond())
        .unwrap_or_else(Utc::now);
    Some((e, at))
}

/// The view of one component's election at `now`.
pub fn view(
    cluster: &str,
    expected: Option<u32>,
    lease: Option<Lease>,
    mut heartbeats: Vec<Heartbeat>,
    now: DateTime<Utc>,
) -> Value {
    heartbeats.sort_by(|a, b| a.record.replica.cmp(&b.record.replica));
    let age_ms = |at: DateTime<Utc>| (now - at).num_milliseconds().max(0) as u64;
    let holder = lease.as_ref().map(|l| l.record.holder.as_str());
    let term = lease.as_ref().map(|l| l.record.term.unwrap_or(l.revision));
    let lease_lapsed = lease
        .as_ref()
        .is_some_and(|l| age_ms(l.written_at) > l.record.ttl_ms);
    let mut alive = 0u32;
    let mut published = None;
    let replicas: Vec<Value> = heartbeats
        .iter()
        .map(|h| {
            let age = age_ms(h.written_at);
            let responsive = age <= h.record.ttl_ms;
            let named = holder == Some(h.record.replica.as_str());
            let claims = h.record.role == ReplicaRole::Leader;
            // A replica restarted under the same name is not the one whose lease it names.
            let leads = named && claims;
            alive += u32::from(responsive);
            let status = match (responsive, leads) {
                (false, _) => "unresponsive",
                (true, true) if lease_lapsed => "unresponsive",
                (true, true) => "leader",
                (true, false) => "follower",
            };
            let message = match (responsive, named, claims) {
                (false, _, _) => format!("no heartbeat for {:.1} s", age as f64 / 1000.0),
                (true, false, true) => "stepping down".to_string(),
                (true, true, false) => {
                    "restarted: the lease of its previous run lapses after its TTL".to_string()
                }
                _ => String::new(),
            };
            let mut row = json!({
                "name": h.record.replica,
                "status": status,
                "since": h.record.since,
                "lastHeartbeat": h.written_at,
                "startedAt": h.record.started_at,
            });
            if leads {
                row["term"] = json!(term);
                published = h.record.details.clone();
            }
            if !message.is_empty() {
                row["message"] = json!(message);
            }
            row
        })
        .collect();
    let mut view = json!({
        "cluster": cluster,
        "aliveReplicas": alive,
        "replicas": replicas,
    });
    if let Some(expected) = expected {
        view["expectedReplicas"] = json!(expected);
        if alive < expected {
            view["warning"] = json!(format!(
                "{alive} of {expected} expected replicas alive (ELECTION_CLUSTER_SIZE)"
            ));
        }
    }
    match &lease {
        Some(lease) => {
            view["leader"] = json!(lease.record.holder);
            view["term"] = json!(term);
            view["leaderSince"] = json!(lease.record.acquired_at);
            view["leaseRenewed"] = json!(lease.written_at);
            if lease_lapsed {
                view["message"] = json!(format!(
                    "the lease has not been renewed for {:.1} s: a new leader takes over",
                    age_ms(lease.written_at) as f64 / 1000.0
                ));
            }
        }
        None => view["message"] = json!("no leader: the lease is free"),
    }
    if let Some(published) = published {
        view[OPERATOR_DETAILS] = published;
    }
    view
}

/// The key, in a component's election view, of what its leader publishes of the operator.
const OPERATOR_DETAILS: &str = "operatorDetails";

/// Takes each component's `operatorDetails` out of the `election` details: keyed by
/// component, `None` when no leader published any.
pub fn take_operator_details(election: &mut Value) -> Option<Value> {
    let components = election.as_object_mut()?;
    let published: Map<String, Value> = components
        .iter_mut()
        .filter_map(|(component, view)| {
            let details = view.as_object_mut()?.remove(OPERATOR_DETAILS)?;
            Some((component.clone(), details))
        })
        .collect();
    (!published.is_empty()).then_some(Value::Object(published))
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn heartbeat(replica: &str, role: ReplicaRole, at: DateTime<Utc>) -> Heartbeat {
        Heartbeat {
            record: ReplicaHeartbeat {
                replica: replica.into(),
                role,
                term: None,
                since: at - Duration::minutes(5),
                started_at: at - Duration::minutes(10),
                heartbeat_at: at,
                interval_ms: 1000,
                ttl_ms: 5000,
                expected_replicas: Some(3),
                details: None,
            },
            written_at: at,
        }
    }

    #[test]
    fn only_the_leader_s_published_details_are_the_operator_s() {
        let now = Utc::now();
        let mut leader = heartbeat("r1", ReplicaRole::Leader, now);
        leader.record.details = Some(json!({"monitoringBudget": [{"factory": "rg.f"}]}));
        let mut follower = heartbeat("r2", ReplicaRole::Follower, now);
        follower.record.details = Some(json!({"monitoringBudget": "stale"}));
        let view = view(
            "azure-operators",
            None,
            Some(lease("r1", now)),
            vec![leader, follower],
            now,
        );
        let mut election = json!({ "adf-controller": view });
        assert_eq!(
            take_operator_details(&mut election),
            Some(json!({"adf-controller": {"monitoringBudget": [{"factory": "rg.f"}]}}))
        );
        assert!(election["adf-controller"].get(OPERATOR_DETAILS).is_none());
        assert_eq!(take_operator_details(&mut election), None);
    }

    fn lease(holder: &str, at: DateTime<Utc>) -> Lease {
        Lease {
            record: LeaseRecord {
                holder: holder.into(),
                term: Some(42),
                acquired_at: at - Duration::minutes(5),
                renewed_at: at,
                ttl_ms: 5000,
            },
            revision: 57,
            written_at: at,
        }
    }

    #[test]
    fn the_lease_holder_leads_and_a_silent_replica_is_unresponsive_with_a_warning() {
        let now = Utc::now();
        let view = view(
            "azure-operators",
            Some(3),
            Some(lease("r1", now - Duration::milliseconds(300))),
            vec![
                heartbeat(
                    "r2",
                    ReplicaRole::Follower,
                    now - Duration::milliseconds(800),
                ),
                heartbeat("r1", ReplicaRole::Leader, now - Duration::milliseconds(200)),
                heartbeat("r3", ReplicaRole::Follower, now - Duration::seconds(9)),
            ],
            now,
        );
        assert_eq!(view["leader"], "r1");
        assert_eq!(view["term"], 42);
        assert_eq!(view["aliveReplicas"], 2);
        let statuses: Vec<&str> = view["replicas"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r["status"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(statuses, ["leader", "follower", "unresponsive"]);
        assert!(view.get(OPERATOR_DETAILS).is_none(), "{view}");
        assert_eq!(view["replicas"][0]["term"], 42);
        assert_eq!(view["replicas"][2]["message"], "no heartbeat for 9.0 s");
        assert_eq!(
            view["warning"],
            "2 of 3 expected replicas alive (ELECTION_CLUSTER_SIZE)"
        );
    }

    #[test]
    fn a_replica_restarted_under_the_leaders_name_is_a_follower_until_the_lease_lapses() {
        let now = Utc::now();
        let view = view(
            "c",
            Some(2),
            Some(lease("r1", now - Duration::seconds(2))),
            vec![heartbeat("r1", ReplicaRole::Follower, now)],
            now,
        );
        assert_eq!(view["leader"], "r1");
        assert_eq!(view["replicas"][0]["status"], "follower");
        assert!(view["replicas"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("restarted")));
    }

    #[test]
    fn a_lapsed_lease_and_a_free_one_are_said_so() {
        let now = Utc::now();
        let lapsed = view(
            "c",
            None,
            Some(lease("r1", now - Duration::seconds(7))),
            vec![heartbeat("r1", ReplicaRole::Leader, now)],
            now,
        );
        assert_eq!(lapsed["replicas"][0]["status"], "unresponsive");
        assert!(lapsed["message"]
            .as_str()
            .is_some_and(|m| m.contains("not been renewed")));
        assert!(lapsed.get("warning").is_none(), "no size expected");
        let free = view("c", Some(1), None, vec![], now);
        assert_eq!(free["message"], "no leader: the lease is free");
        assert_eq!(
            free["warning"],
            "0 of 1 expected replicas alive (ELECTION_CLUSTER_SIZE)"
        );
    }
}
