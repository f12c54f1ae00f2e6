//! The operator details' `streams`: each JetStream stream an operator's messages and state live
//! in, with its replication factor, the node leading it and the replicas' health, as JetStream
//! reports them, so a user sees what losing one NATS node would cost.

use async_nats::jetstream;
use serde_json::{json, Value};

use crate::bridge::StreamPlan;

/// The streams of `plan` (commands and events) and the component's entity bucket, each as
/// `{name, replicas, leader, replicasCurrent, messages}`, or `{name, error}` when it cannot be read.
pub async fn stream_details(
    js: &jetstream::Context,
    plan: &StreamPlan,
    entity_bucket: &str,
) -> Value {
    let mut names: Vec<String> = plan.command_streams.keys().cloned().collect();
    names.push(operator_contract::subject::event_stream(&plan.operator));
    names.push(format!("KV_{entity_bucket}"));
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        out.push(describe(js, &name).await);
    }
    Value::Array(out)
}

async fn describe(js: &jetstream::Context, name: &str) -> Value {
    let info = match js.get_stream(name).await {
        Ok(mut stream) => stream.info().await.cloned(),
        Err(e) => return json!({ "name": name, "error": e.to_string() }),
    };
    let info = match info {
        Ok(info) => info,
        Err(e) => return json!({ "name": name, "error": e.to_string() }),
    };
    let cluster = info.cluster.as_ref();
    let current = cluster
        .map(|c| c.replicas.iter().filter(|r| r.current).count())
        .unwrap_or(0);
    json!({
        "name": name,
        "replicas": info.config.num_replicas,
        "leader": cluster.and_then(|c| c.leader.clone()),
        "followersCurrent": current,
        "messages": info.state.messages,
    })
}
