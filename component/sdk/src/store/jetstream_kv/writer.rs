//! The KV writer task: writes behind for the store, pipelining across keys and ordered per key
//! ([`WriteQueue`]). A leader's write is *fenced*: it is sent only while the [`Fence`] allows,
//! and it carries the expected sequence of the fence key, so JetStream refuses it once a newer
//! leader has written its fence. A refused write is not retried; the controller is told, and
//! the replica steps down.

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info_span, warn, Instrument};

use super::write_queue::{Completion, WriteQueue, WriteStart};
use super::StoreEvent;
use crate::backoff::Backoff;
pub(crate) use crate::election::WriteFence;
use crate::election::{fenced_write, Fence, FencedOperation, FencedWriteError};
use crate::store::StoreError;

/// The delays between retries of a failed write.
const WRITE_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// What to write under a key: a value or a deletion, fenced or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WriteValue {
    pub value: Option<Bytes>,
    pub fence: Option<WriteFence>,
}

pub(crate) type Done = oneshot::Sender<Result<(), StoreError>>;

pub(crate) enum WriterCommand {
    Write {
        key: String,
        value: WriteValue,
        done: Done,
    },
    Idle(Done),
    /// Resolves with the write pending for `key` (at once when none is), and fails when a
    /// write fenced like `fence` was refused: what the copy holds for the key may never have
    /// landed.
    Confirm {
        key: String,
        fence: Option<WriteFence>,
        done: Done,
    },
}

impl std::fmt::Debug for WriterCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Write { key, value, .. } => f
                .debug_struct("Write")
                .field("key", key)
                .field("delete", &value.value.is_none())
                .field("fence", &value.fence)
                .finish(),
            Self::Idle(_) => f.write_str("Idle"),
            Self::Confirm { key, fence, .. } => f
                .debug_struct("Confirm")
                .field("key", key)
                .field("fence", fence)
                .finish(),
        }
    }
}

/// Starts the writer; it runs until every sender is dropped and every write has ended.
pub(crate) fn spawn(
    js: jetstream::Context,
    kv: kv::Store,
    fence: Fence,
    events: Option<mpsc::UnboundedSender<StoreEvent>>,
) -> mpsc::UnboundedSender<WriterCommand> {
    let (writer, commands) = mpsc::unbounded_channel();
    let target = Target { js, kv };
    tokio::spawn(run(target, fence, events, commands));
    writer
}

/// Where writes go: the bucket, and the JetStream context fenced writes are published with.
#[derive(Clone)]
struct Target {
    js: jetstream::Context,
    kv: kv::Store,
}

async fn run(
    kv: Target,
    fence: Fence,
    events: Option<mpsc::UnboundedSender<StoreEvent>>,
    mut commands: mpsc::UnboundedReceiver<WriterCommand>,
) {
    let mut queue: WriteQueue<WriteValue, Done> = WriteQueue::default();
    let mut writes = FuturesUnordered::new();
    let mut idle_waiters: Vec<Done> = Vec::new();
    // Writes fenced at or below this sequence are refused without being sent.
    let mut refused_up_to = 0u64;
    let mut open = true;
    loop {
        tokio::select! {
            command = commands.recv(), if open => match command {
                Some(WriterCommand::Write { key, value, done }) => {
                    if let Some(start) = queue.submit(key, value, done) {
                        writes.push(write(kv.clone(), fence.clone(), start, refused_up_to));
                    }
                }
                Some(WriterCommand::Idle(done)) => idle_waiters.push(done),
                Some(WriterCommand::Confirm { key, fence, done }) => {
                    if fence.is_some_and(|f| f.sequence <= refused_up_to) {
                        let _ = done.send(Err(StoreError::Fenced {
                            reason: "an earlier write of this term was refused".into(),
                        }));
                    } else if let Some(done) = queue.wait_for(&key, done) {
                        let _ = done.send(Ok(()));
                    }
                }
                None => open = false,
            },
            Some((key, outcome)) = writes.next(), if !writes.is_empty() => {
                let completion = match &outcome {
                    Outcome::Durable => Completion::Durable,
                    Outcome::Failed => Completion::Failed,
                    Outcome::Refused { .. } => Completion::Refused,
                };
                let (resolved, next) = queue.completed(&key, completion);
                let result = match outcome {
                    Outcome::Refused { sequence, reason } => {
                        if sequence > refused_up_to {
                            refused_up_to = sequence;
                            warn!(kv.key = %key, reason = %reason, "store write refused: this replica no longer leads");
                            if let Some(events) = &events {
                                let _ = events.send(StoreEvent::Refused { sequence, reason: reason.clone() });
                            }
                        }
                        Err(StoreError::Fenced { reason })
                    }
                    _ => Ok(()),
                };
                for done in resolved {
                    let _ = done.send(result.clone());
                }
                if let Some(start) = next {
                    writes.push(write(kv.clone(), fence.clone(), start, refused_up_to));
                }
            }
            else => {}
        }
        if queue.is_idle() {
            for done in idle_waiters.drain(..) {
                let _ = done.send(Ok(()));
            }
            if !open {
                break;
            }
        }
    }
    debug!("entity store writer stopped");
}

enum Outcome {
    Durable,
    Failed,
    Refused { sequence: u64, reason: String },
}

async fn write(
    target: Target,
    fence: Fence,
    start: WriteStart<WriteValue>,
    refused_up_to: u64,
) -> (String, Outcome) {
    if start.failures > 0 {
        tokio::time::sleep(WRITE_BACKOFF.delay_with_random_jitter(start.failures)).await;
    }
    let WriteValue {
        value,
        fence: write_fence,
    } = start.value;
    let span = info_span!(
        "store.put",
        kv.key = %start.key,
        delete = value.is_none(),
        failures = start.failures,
        term = write_fence.map(|f| f.term),
    );
    let outcome = match write_fence {
        None => {
            unfenced(&target.kv, &start.key, value)
                .instrument(span)
                .await
        }
        Some(f) if f.sequence <= refused_up_to => Outcome::Refused {
            sequence: f.sequence,
            reason: "an earlier write of this term was refused".into(),
        },
        Some(f) => match fence.check() {
            Ok(term) if term == f.term => {
                fenced(&target, &start.key, value, f).instrument(span).await
            }
            Ok(term) => Outcome::Refused {
                sequence: f.sequence,
                reason: format!(
                    "written in term {} but this replica now leads in {term}",
                    f.term
                ),
            },
            Err(e) => Outcome::Refused {
                sequence: f.sequence,
                reason: e.to_string(),
            },
        },
    };
    if matches!(outcome, Outcome::Failed) {
        warn!(kv.key = %start.key, failures = start.failures + 1, "entity store write failed; retrying");
    }
    (start.key, outcome)
}

async fn unfenced(kv: &kv::Store, key: &str, value: Option<Bytes>) -> Outcome {
    let result = match value {
        Some(value) => kv
            .put(key, value)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        None => kv.delete(key).await.map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => Outcome::Durable,
        Err(e) => {
            debug!(kv.key = %key, error = %e, "write failed");
            Outcome::Failed
        }
    }
}

/// A write that JetStream accepts only while the fence key is still at `fence.sequence`.
async fn fenced(target: &Target, key: &str, value: Option<Bytes>, fence: WriteFence) -> Outcome {
    let operation = match value {
        Some(value) => FencedOperation::Put(value),
        None => FencedOperation::Delete,
    };
    match fenced_write(&target.js, &target.kv, key, operation, fence).await {
        Ok(_) => Outcome::Durable,
        Err(FencedWriteError::Fenced { reason }) => Outcome::Refused {
            sequence: fence.sequence,
            reason,
        },
        Err(FencedWriteError::Unavailable { reason }) => {
            debug!(kv.key = %key, error = %reason, "write failed");
            Outcome::Failed
        }
    }
}
