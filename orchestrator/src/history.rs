//! Each resource's history: events kept in the JetStream stream `orchestrator-history` (the
//! last 100 per resource, file storage, so they survive restarts), written by the resource's
//! entity as things happen, read by `GET .../resources/{name}/events` (JSON, or with
//! `watch=true` JSON lines that follow new events).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpResponse};
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use operator_contract::condition::{self, COMPONENT_REACHABLE};
use operator_contract::history::{
    history_subject, HistoryEvent, HISTORY_PER_RESOURCE, HISTORY_STREAM, HISTORY_SUBJECTS,
};
use operator_contract::{ConditionStatus, EntityKey, ResourceStatus};
use serde::Deserialize;
use serde_json::json;
use tracing::warn;

use crate::auth::Caller;
use crate::error::ControlError;
use crate::manager::{GetHistory, OperatorManager};
use crate::records::Record;

/// Where entities write their events: the history stream, or a list in memory (the actors'
/// tests read it).
#[derive(Clone)]
pub enum HistoryWriter {
    Stream(Arc<History>),
    Kept(Arc<Mutex<Vec<(EntityKey, HistoryEvent)>>>),
}

impl HistoryWriter {
    /// A writer that keeps events in memory.
    pub fn kept() -> Self {
        Self::Kept(Arc::default())
    }

    /// The events kept in memory, in the order they were recorded (none for the stream).
    pub fn events(&self) -> Vec<(EntityKey, HistoryEvent)> {
        match self {
            Self::Stream(_) => Vec::new(),
            Self::Kept(kept) => kept.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    /// Appends events to a resource's history; see [`History::record`].
    pub fn record(&self, key: &EntityKey, events: Vec<HistoryEvent>) {
        match self {
            Self::Stream(history) => history.record(key, events),
            Self::Kept(kept) => kept
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(events.into_iter().map(|event| (key.clone(), event))),
        }
    }
}

/// A handle on the history stream; cheap to clone.
#[derive(Clone)]
pub struct History {
    js: jetstream::Context,
}

impl History {
    pub fn new(js: jetstream::Context) -> Self {
        Self { js }
    }

    /// Creates the stream with `replicas` (never fewer than it has), or brings its limits up to
    /// date.
    pub async fn ensure(&self, replicas: usize) -> Result<(), ControlError> {
        let mut config = stream::Config {
            name: HISTORY_STREAM.into(),
            subjects: vec![HISTORY_SUBJECTS.into()],
            storage: stream::StorageType::File,
            max_messages_per_subject: HISTORY_PER_RESOURCE,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        };
        let replicas =
            operator_nats_cluster::replicas_to_keep(&self.js, HISTORY_STREAM, replicas).await;
        operator_nats_cluster::apply_replication(&mut config, replicas);
        self.js
            .create_or_update_stream(config)
            .await
            .map(|_| ())
            .map_err(|e| {
                ControlError::Unavailable(format!("cannot create stream {HISTORY_STREAM}: {e}"))
            })
    }

    /// Appends events to a resource's history, in the background: history is for people,
    /// so a failure is logged and never holds up the work it describes.
    pub fn record(&self, key: &EntityKey, events: Vec<HistoryEvent>) {
        if events.is_empty() {
            return;
        }
        let (js, subject, key) = (self.js.clone(), history_subject(key), key.clone());
        tokio::spawn(async move {
            for event in events {
                let sent = match serde_json::to_vec(&event) {
                    Ok(body) => match js.publish(subject.clone(), body.into()).await {
                        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    },
                    Err(e) => Err(e.to_string()),
                };
                if let Err(error) = sent {
                    warn!(entity.key = %key, reason = %event.reason, error = %error, "history event not kept");
                }
            }
        });
    }

    /// The events kept for a resource, oldest first, and the consumer that follows newer ones.
    async fn read(
        &self,
        key: &EntityKey,
    ) -> Result<(Vec<HistoryEvent>, consumer::pull::Ordered), ControlError> {
        let unavailable =
            |e: String| ControlError::Unavailable(format!("cannot read the history of {key}: {e}"));
        let stream = self
            .js
            .get_stream(HISTORY_STREAM)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let ordered = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: history_subject(key),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let pending = ordered.cached_info().num_pending;
        let mut messages = ordered
            .messages()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let mut events = Vec::new();
        for _ in 0..pending {
            match messages.next().await {
                Some(Ok(message)) => events.extend(parse(&message.payload)),
                Some(Err(e)) => return Err(unavailable(e.to_string())),
                None => break,
            }
        }
        Ok((events, messages))
    }

    /// The last `count` events of `key`, newest first (the web view's history).
    pub async fn latest(
        &self,
        key: &EntityKey,
        count: usize,
    ) -> Result<Vec<HistoryEvent>, ControlError> {
        let (events, _) = self.read(key).await?;
        Ok(events.into_iter().rev().take(count).collect())
    }
}

fn parse(payload: &[u8]) -> Option<HistoryEvent> {
    serde_json::from_slice(payload).ok()
}

/// What a stored status change adds to the history.
pub fn status_events(before: &Record, after: &Record) -> Vec<HistoryEvent> {
    let mut events = Vec::new();
    let generation = after.generation;
    let (old, new) = (before.status.as_ref(), after.status.as_ref());
    if let Some(new) = new {
        if old.is_none_or(|o| o.observed_generation < new.observed_generation) {
            events.push(HistoryEvent::normal(
                "ReconcileStarted",
                format!("the component took generation {}", new.observed_generation),
                generation,
            ));
        }
        let status_changed = old.is_none_or(|o| o.status != new.status);
        match new.status {
            ResourceStatus::Error
                if status_changed || old.is_some_and(|o| o.message != new.message) =>
            {
                events.push(HistoryEvent::warning(
                    "ReconcileFailed",
                    new.message.clone().unwrap_or_default(),
                    generation,
                ))
            }
            ResourceStatus::Active if status_changed => events.push(HistoryEvent::normal(
                "Reconciled",
                "the component reconciled the resource",
                generation,
            )),
            _ => {}
        }
        let old_runtime = old.and_then(|o| o.runtime);
        if let Some(runtime) = new.runtime.filter(|r| Some(*r) != old_runtime) {
            let from = old_runtime
                .map(|r| r.to_string())
                .unwrap_or_else(|| "none".into());
            let message = match (&new.message, runtime.is_final()) {
                (Some(m), true) => format!("{from} → {runtime}: {m}"),
                _ => format!("{from} → {runtime}"),
            };
            events.push(HistoryEvent::normal("RuntimeChanged", message, generation));
        }
    }
    let reachable =
        |r: &Record| condition::find(&r.conditions, COMPONENT_REACHABLE).map(|c| c.status);
    match (reachable(before), reachable(after)) {
        (Some(ConditionStatus::False), Some(ConditionStatus::True)) => events.push(
            HistoryEvent::normal("ComponentBack", "the component answered again", generation),
        ),
        (before, Some(ConditionStatus::False)) if before != Some(ConditionStatus::False) => {
            let message = condition::find(&after.conditions, COMPONENT_REACHABLE)
                .map(|c| c.message.clone())
                .unwrap_or_default();
            events.push(HistoryEvent::warning(
                "ComponentUnreachable",
                message,
                generation,
            ))
        }
        _ => {}
    }
    events
}

/// How long an events stream stays silent before it says it is alive.
const HEARTBEAT: Duration = crate::watch::HEARTBEAT;

#[derive(Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    watch: bool,
}

/// `GET /api/v1/workspaces/{ws}/resources/{name}/events`: `{"items": [...]}`, oldest first; with
/// `watch=true`, JSON lines: each kept event (`{"type":"event","item":…}`), `synced`, then each
/// new one, and heartbeats.
pub async fn events(
    manager: web::Data<actix::Addr<OperatorManager>>,
    caller: web::ReqData<Caller>,
    path: web::Path<(String, String)>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ControlError> {
    let (ws, name) = path.into_inner();
    caller.require_read(&ws)?;
    let key = EntityKey::new(ws, name)?;
    let history = manager.send(GetHistory).await?;
    let (events, mut newer) = history.read(&key).await?;
    if !query.watch {
        return Ok(HttpResponse::Ok().json(json!({ "items": events })));
    }
    let (mut sender, lines) = mpsc::channel::<Bytes>(256);
    actix_web::rt::spawn(async move {
        let line = |value: serde_json::Value| {
            let mut bytes = value.to_string().into_bytes();
            bytes.push(b'\n');
            Bytes::from(bytes)
        };
        for event in events {
            if sender
                .send(line(json!({"type": "event", "item": event})))
                .await
                .is_err()
            {
                return;
            }
        }
        if sender.send(line(json!({"type": "synced"}))).await.is_err() {
            return;
        }
        loop {
            let next = match tokio::time::timeout(HEARTBEAT, newer.next()).await {
                Err(_) => json!({"type": "heartbeat"}),
                Ok(Some(Ok(message))) => match parse(&message.payload) {
                    Some(event) => json!({"type": "event", "item": event}),
                    None => continue,
                },
                Ok(Some(Err(e))) => {
                    json!({"type": "error", "error": format!("the history stream failed: {e}")})
                }
                Ok(None) => json!({"type": "error", "error": "the history stream ended"}),
            };
            let last = next["type"] == "error";
            if sender.send(line(next)).await.is_err() || last {
                return;
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(lines.map(Ok::<_, actix_web::Error>)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use operator_contract::{EntityStatus, Manifest, RuntimeStatus};

    fn record() -> Record {
        let manifest = Manifest::parse_all(
            "name: r\nversion: v1\ntype: resource\nresource: {operator: demo, type: job, spec: {}}\n",
        )
        .expect("parses")
        .remove(0);
        Record::new(manifest, Some("public".into()))
    }

    fn with_status(
        status: ResourceStatus,
        runtime: Option<RuntimeStatus>,
        message: Option<&str>,
    ) -> Record {
        let mut r = record();
        let key = EntityKey::new("public", "r").expect("key");
        let mut s = EntityStatus::pending(key, "demo", "job");
        s.observed_generation = 1;
        s.status = status;
        s.runtime = runtime;
        s.message = message.map(str::to_string);
        r.status = Some(s);
        r
    }

    fn reasons(events: &[HistoryEvent]) -> Vec<&str> {
        events.iter().map(|e| e.reason.as_str()).collect()
    }

    #[test]
    fn a_first_status_a_runtime_change_and_a_failure_each_leave_an_event() {
        let first = with_status(
            ResourceStatus::Active,
            Some(RuntimeStatus::InProgress),
            None,
        );
        assert_eq!(
            reasons(&status_events(&record(), &first)),
            ["ReconcileStarted", "Reconciled", "RuntimeChanged"]
        );
        let failed = with_status(
            ResourceStatus::Active,
            Some(RuntimeStatus::Failed),
            Some("disk full"),
        );
        let events = status_events(&first, &failed);
        assert_eq!(reasons(&events), ["RuntimeChanged"]);
        assert_eq!(events[0].message, "inprogress → failed: disk full");
        let error = with_status(ResourceStatus::Error, None, Some("bad spec"));
        assert_eq!(reasons(&status_events(&first, &error)), ["ReconcileFailed"]);
        assert!(
            status_events(&failed, &failed).is_empty(),
            "nothing changed"
        );
    }
}
