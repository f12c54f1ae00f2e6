//! What the actors' tests put around the actor under test: the memory store, an actor in place
//! of the operator's components (it records the commands and queries it is sent and answers
//! them), and recorders for what an actor tells its parent. A test waits on them for a
//! condition with a deadline: each change wakes the waiters, nothing is polled on a timer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use operator_contract::{
    EntityKey, EntityStatus, Envelope, EnvelopeKind, Manifest, Operation, ResourceStatus,
    RuntimeStatus,
};
use tokio::sync::watch;

use crate::bridge::{
    ComponentLink, ComponentTransport, PublishCommand, RemoveStreams, SendQuery, StatusReported,
};
use crate::error::ControlError;
use crate::history::HistoryWriter;

/// How long a test waits for what it expects before failing.
pub const WAIT: Duration = Duration::from_secs(10);

/// A list that grows, and wakes whoever waits on it.
pub struct Recorded<T> {
    items: Mutex<Vec<T>>,
    changed: watch::Sender<u64>,
}

impl<T: Clone> Recorded<T> {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            items: Mutex::new(Vec::new()),
            changed: watch::Sender::new(0),
        })
    }

    pub fn push(&self, item: T) {
        self.lock().push(item);
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn all(&self) -> Vec<T> {
        self.lock().clone()
    }

    /// Waits until `done` holds for the items recorded (within [`WAIT`]); returns them.
    pub async fn wait_until(&self, what: &str, done: impl Fn(&[T]) -> bool) -> Vec<T> {
        let mut changes = self.changed.subscribe();
        let waited = tokio::time::timeout(WAIT, async {
            loop {
                changes.borrow_and_update();
                let items = self.all();
                if done(&items) {
                    return items;
                }
                if changes.changed().await.is_err() {
                    return items;
                }
            }
        })
        .await;
        waited.unwrap_or_else(|_| panic!("not within {WAIT:?}: {what}"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<T>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the stand-in for the components does with the next commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publishing {
    Accept,
    /// As JetStream unreachable would answer.
    Refuse,
}

/// Stands where the operator's components are: records commands and queries, answers queries
/// with the last status it was told, and sends status events back like a component would.
pub struct Components {
    pub commands: Arc<Recorded<Envelope>>,
    pub queries: Arc<Recorded<Envelope>>,
    pub removed_streams: Arc<Recorded<String>>,
    publishing: Arc<Mutex<Publishing>>,
    /// Where status events go (the runtime), once connected.
    events: Arc<Mutex<Option<Recipient<StatusReported>>>>,
}

impl Components {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            commands: Recorded::new(),
            queries: Recorded::new(),
            removed_streams: Recorded::new(),
            publishing: Arc::new(Mutex::new(Publishing::Accept)),
            events: Arc::default(),
        })
    }

    pub fn set_publishing(&self, publishing: Publishing) {
        *self.publishing.lock().unwrap_or_else(|e| e.into_inner()) = publishing;
    }

    /// A link to a new actor standing for these components.
    pub fn link(self: &Arc<Self>) -> ComponentLink {
        let actor = ComponentsActor {
            components: self.clone(),
        }
        .start();
        ComponentLink {
            commands: actor.clone().recipient(),
            queries: actor.clone().recipient(),
            streams: actor.recipient(),
        }
    }

    /// A transport that links every runtime to these components, history kept in `history`.
    pub fn transport(self: &Arc<Self>, history: HistoryWriter) -> ComponentTransport {
        let components = self.clone();
        ComponentTransport::Custom {
            connect: Arc::new(move |_plan, events| {
                *components.events.lock().unwrap_or_else(|e| e.into_inner()) = Some(events);
                components.link()
            }),
            history,
        }
    }

    /// Reports `status` for what `command` asked, as the component would on its event stream.
    pub async fn report(
        &self,
        command: &Envelope,
        status: ResourceStatus,
        runtime: Option<RuntimeStatus>,
    ) -> Result<(), ControlError> {
        let events = self
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let events = events.expect("a runtime is connected");
        events
            .send(status_event(command, status, runtime))
            .await
            .map_err(ControlError::from)?
    }
}

/// The status event a component sends after handling `command`.
pub fn status_event(
    command: &Envelope,
    status: ResourceStatus,
    runtime: Option<RuntimeStatus>,
) -> StatusReported {
    let mut reported = EntityStatus::pending(
        command.key.clone(),
        &command.operator,
        &command.resource_type,
    );
    reported.observed_generation = command.generation;
    reported.status = status;
    reported.runtime = runtime;
    reported.updated_at = chrono::Utc::now();
    StatusReported {
        envelope: Envelope::new(
            EnvelopeKind::Event,
            Operation::Status,
            &command.operator,
            &command.resource_type,
            command.key.clone(),
            command.generation,
            serde_json::to_value(reported).expect("a status encodes"),
        ),
        span: tracing::Span::none(),
    }
}

struct ComponentsActor {
    components: Arc<Components>,
}

impl Actor for ComponentsActor {
    type Context = Context<Self>;
}

impl Handler<PublishCommand> for ComponentsActor {
    type Result = Result<(), ControlError>;

    fn handle(&mut self, msg: PublishCommand, _ctx: &mut Self::Context) -> Self::Result {
        let publishing = *self
            .components
            .publishing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match publishing {
            Publishing::Accept => {
                self.components.commands.push(msg.envelope);
                Ok(())
            }
            Publishing::Refuse => Err(ControlError::Unavailable(
                "publish failed: no responders".into(),
            )),
        }
    }
}

impl Handler<SendQuery> for ComponentsActor {
    type Result = Result<Envelope, ControlError>;

    fn handle(&mut self, msg: SendQuery, _ctx: &mut Self::Context) -> Self::Result {
        let query = msg.envelope;
        self.components.queries.push(query.clone());
        Ok(Envelope::new(
            EnvelopeKind::Reply,
            Operation::Get,
            &query.operator,
            &query.resource_type,
            query.key.clone(),
            query.generation,
            serde_json::json!({ "answeredFor": query.key.to_string() }),
        ))
    }
}

impl Handler<RemoveStreams> for ComponentsActor {
    type Result = ();

    fn handle(&mut self, msg: RemoveStreams, _ctx: &mut Self::Context) {
        self.components.removed_streams.push(msg.plan.operator);
    }
}

/// A manifest parsed from YAML.
pub fn manifest(yaml: &str) -> Manifest {
    Manifest::parse_one(yaml).expect("a manifest")
}

/// A demo job named `name` with `spec` (YAML flow).
pub fn job(name: &str, spec: &str) -> Manifest {
    manifest(&format!(
        "name: {name}\nversion: v1\ntype: resource\nresource: {{operator: demo, type: job, spec: {spec}}}\n"
    ))
}

/// The demo operator, as the examples ship it.
pub fn demo_operator() -> Manifest {
    manifest(include_str!("../../deploy/examples/demo-operator.yaml"))
}

/// The key of `name` in the public workspace.
pub fn public(name: &str) -> EntityKey {
    EntityKey::new("public", name).expect("a valid key")
}
