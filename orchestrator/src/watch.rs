//! Streams of changes for `opctl get --watch` and `opctl wait`: JSON lines fed by a JetStream
//! KV watch on the records' bucket. The stream opens with the records as they are (`added`),
//! then `synced`, then one line per change (`added`, `modified`, `deleted`), and a
//! `heartbeat` line when nothing changed for a while, so a client can tell a quiet stream from
//! a dead one. The watch is opened before the records are read, so no change falls between.
//! A followed log (`opctl logs -f`) is sent the same way.

use std::collections::HashSet;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use operator_contract::ManifestKind;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::error::ControlError;
use crate::manager::{GetRecord, ListRecords, OpenWatch, OperatorManager};
use crate::records::{Record, RecordView};
use crate::store::{workspaced_key, OPERATORS_BUCKET, RESOURCES_BUCKET};
use crate::supervisor::{LogFollow, LogLine};
use operator_contract::election::FENCE_KEY;

/// How long a stream stays silent before it says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// How many lines may wait for a slow reader before the stream is ended.
const BUFFERED_LINES: usize = 256;

/// One line of a watch stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum WatchEvent {
    Added {
        item: Box<RecordView>,
    },
    Modified {
        item: Box<RecordView>,
    },
    Deleted {
        workspace: Option<String>,
        name: String,
    },
    /// The records as they were when the watch began have all been sent.
    Synced,
    Heartbeat,
    /// The watch failed; the stream ends after this line.
    Error {
        error: String,
    },
}

#[derive(Deserialize)]
pub struct WatchQuery {
    workspace: Option<String>,
    name: Option<String>,
    /// Every owner's records, not only the caller's.
    #[serde(default)]
    all: bool,
}

/// What a stream lets through: the caller's readable records, theirs only unless `all`.
struct Filter {
    caller: Caller,
    all: bool,
}

impl Filter {
    fn admits(&self, view: &RecordView) -> bool {
        view.workspace
            .as_deref()
            .is_none_or(|ws| self.caller.can_read(ws))
            && (self.all || view.owner.as_deref() == Some(self.caller.name.as_str()))
    }
}

/// `GET /api/v1/watch/{collection}`: operators or resources, optionally one workspace or name.
pub async fn watch(
    manager: web::Data<actix::Addr<OperatorManager>>,
    caller: web::ReqData<Caller>,
    path: web::Path<String>,
    query: web::Query<WatchQuery>,
) -> Result<HttpResponse, ControlError> {
    let query = query.into_inner();
    let (kind, bucket) = match path.as_str() {
        "resources" => (ManifestKind::Resource, RESOURCES_BUCKET),
        "operators" => (ManifestKind::Operator, OPERATORS_BUCKET),
        other => {
            return Err(ControlError::invalid(format!(
                "cannot watch {other}: operators and resources can be watched"
            )))
        }
    };
    let workspace = match kind {
        ManifestKind::Resource => query.workspace.clone(),
        _ => None,
    };
    if let Some(ws) = &workspace {
        operator_contract::names::validate_name("workspace", ws)?;
        caller.require_read(ws)?;
    }
    if let Some(name) = &query.name {
        operator_contract::names::validate_name("name", name)?;
    }
    let filter = match (&workspace, &query.name) {
        (Some(ws), Some(name)) => workspaced_key(ws, name),
        (Some(ws), None) => format!("{ws}.>"),
        (None, Some(name)) if kind == ManifestKind::Operator => name.clone(),
        (None, Some(_)) => {
            return Err(ControlError::invalid(
                "a resource is named with its workspace",
            ))
        }
        (None, None) => ">".to_string(),
    };
    let changes = manager.send(OpenWatch { bucket, filter }).await??;
    let current = match &query.name {
        Some(name) => match manager
            .send(GetRecord {
                kind,
                workspace: workspace.clone(),
                name: name.clone(),
                details: false,
                span: tracing::Span::current(),
            })
            .await?
        {
            Ok(view) => vec![view],
            Err(ControlError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e),
        },
        None => manager.send(ListRecords { kind, workspace }).await?,
    };
    let filter = Filter {
        caller: caller.into_inner(),
        // One named record is shown whoever owns it, as `get -n` shows it.
        all: query.all || query.name.is_some(),
    };
    let (sender, lines) = mpsc::channel::<Bytes>(BUFFERED_LINES);
    actix_web::rt::spawn(forward(current, changes, filter, sender));
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(lines.map(Ok::<_, actix_web::Error>)))
}

/// Sends the current records, `synced`, then every change, until the client goes away or the
/// watch fails.
async fn forward(
    current: Vec<RecordView>,
    mut changes: kv::Watch,
    filter: Filter,
    mut sender: mpsc::Sender<Bytes>,
) {
    // The records shown, so a delete is shown to whoever saw the record (a deleted key has no owner).
    let mut shown: HashSet<(Option<String>, String)> = HashSet::new();
    for view in current.into_iter().filter(|v| filter.admits(v)) {
        shown.insert((view.workspace.clone(), view.name.clone()));
        if send(
            &mut sender,
            &WatchEvent::Added {
                item: Box::new(view),
            },
        )
        .await
        .is_err()
        {
            return;
        }
    }
    if send(&mut sender, &WatchEvent::Synced).await.is_err() {
        return;
    }
    loop {
        let event = match tokio::time::timeout(HEARTBEAT, changes.next()).await {
            Err(_) => WatchEvent::Heartbeat,
            Ok(None) => WatchEvent::Error {
                error: "the store's watch ended".into(),
            },
            Ok(Some(Err(e))) => WatchEvent::Error {
                error: format!("the store's watch failed: {e}"),
            },
            Ok(Some(Ok(entry))) => match entry_event(&entry, &filter, &mut shown) {
                Some(event) => event,
                None => continue,
            },
        };
        let last = matches!(event, WatchEvent::Error { .. });
        if send(&mut sender, &event).await.is_err() || last {
            return;
        }
    }
}

/// The line a bucket entry makes for this client, if any.
fn entry_event(
    entry: &kv::Entry,
    filter: &Filter,
    shown: &mut HashSet<(Option<String>, String)>,
) -> Option<WatchEvent> {
    if entry.key == FENCE_KEY {
        // A leading replica's fence (see `store`), not a record.
        return None;
    }
    match entry.operation {
        kv::Operation::Put => {
            let record: Record = match serde_json::from_slice(&entry.value) {
                Ok(record) => record,
                Err(e) => {
                    tracing::warn!(key = %entry.key, error = %e, "watched record is not a record; skipped");
                    return None;
                }
            };
            let view = record.view();
            if !filter.admits(&view) {
                return None;
            }
            let id = (view.workspace.clone(), view.name.clone());
            let event = if !shown.insert(id) {
                WatchEvent::Modified {
                    item: Box::new(view),
                }
            } else {
                WatchEvent::Added {
                    item: Box::new(view),
                }
            };
            Some(event)
        }
        kv::Operation::Delete | kv::Operation::Purge => {
            let (workspace, name) = match entry.key.split_once('.') {
                Some((ws, name)) => (Some(ws.to_string()), name.to_string()),
                None => (None, entry.key.clone()),
            };
            shown
                .remove(&(workspace.clone(), name.clone()))
                .then_some(WatchEvent::Deleted { workspace, name })
        }
    }
}

/// One line of a followed log (`GET /api/v1/operators/NAME/logs?follow=true`).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum LogEvent {
    Line(LogLine),
    Heartbeat,
    /// The log ended (the followed containers are gone); the stream ends after this line.
    Error {
        error: String,
    },
}

/// A followed log as JSON lines, with a heartbeat when the replicas are quiet.
pub fn log_lines(
    lines: LogFollow,
) -> impl futures::Stream<Item = Result<Bytes, actix_web::Error>> + 'static {
    let (mut sender, out) = mpsc::channel::<Bytes>(BUFFERED_LINES);
    actix_web::rt::spawn(async move {
        let mut lines = lines;
        loop {
            let event = match tokio::time::timeout(HEARTBEAT, lines.next()).await {
                Err(_) => LogEvent::Heartbeat,
                Ok(Some(line)) => LogEvent::Line(line),
                Ok(None) => LogEvent::Error {
                    error: "the followed replicas' output ended".into(),
                },
            };
            let last = matches!(event, LogEvent::Error { .. });
            if send(&mut sender, &event).await.is_err() || last {
                return;
            }
        }
    });
    out.map(Ok::<_, actix_web::Error>)
}

async fn send(sender: &mut mpsc::Sender<Bytes>, event: &impl Serialize) -> Result<(), ()> {
    let mut line = serde_json::to_vec(event).map_err(|_| ())?;
    line.push(b'\n');
    sender.send(Bytes::from(line)).await.map_err(|_| ())
}
