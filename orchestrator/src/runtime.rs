//! `OperatorRuntime`: one actor per applied operator. It owns the operator's compiled plan (its
//! resource types, their JSON Schemas and subjects), the entity actors of its resources and its
//! link to the components (a NATS bridge, see `bridge::ComponentTransport`); it validates every resource applied to it before an entity sees it. It also
//! probes the operator's components (a query every [`PROBE_INTERVAL`] while it has resources)
//! and tells its entities when no replica has answered for [`ANSWER_BOUND`], and when one does
//! again, so an idle resource whose component died does not look fresh.
//!
//! A resource with nothing in flight does not keep its actor: once settled and quiet for
//! [`RuntimeTimings::entity_idle`], its entity offers to sleep, and the runtime keeps its record
//! as the stored JSON bytes until the next message for it wakes it. The runtime counts the
//! messages it routes to each awake entity, and takes the record only when none was routed after
//! its `Passivate` (the mailbox is first in, first out, so the entity handled all before it).

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::future::join_all;
use operator_contract::schema::SpecSchema;
use operator_contract::subject::TypeSubjects;
use operator_contract::{EntityKey, Envelope, EnvelopeKind, Manifest, Operation};
use tracing::{debug, info, warn};

use crate::bridge::{
    ComponentLink, ComponentTransport, RemoveStreams, SendQuery, StatusReported, StreamPlan,
};
use crate::entity::{
    follow_liveness, ApplySpec, ComponentLiveness, EntityContext, EntityGone, Gauged, GetView,
    MaySleep, Passivate, RequestDelete, ResourceEntity, Sleep, ANSWER_BOUND,
};
use crate::error::ControlError;
use crate::records::{Applied, Record, RecordView};
use crate::store::{Store, Stored};

/// What the runtime knows of one resource type.
#[derive(Debug)]
pub struct TypePlan {
    pub subjects: TypeSubjects,
    pub schema: Option<SpecSchema>,
}

/// An operator's manifest, compiled.
#[derive(Debug)]
pub struct OperatorPlan {
    pub name: String,
    pub types: BTreeMap<String, TypePlan>,
    pub enabled_workspaces: Vec<String>,
    pub streams: StreamPlan,
}

impl OperatorPlan {
    /// Compiles an operator manifest (parsing already checked that its schemas compile).
    pub fn compile(manifest: &Manifest) -> Result<Self, ControlError> {
        let section = manifest.operator.as_ref().ok_or_else(|| {
            ControlError::invalid("an operator manifest needs its operator section")
        })?;
        let mut types = BTreeMap::new();
        for resource_type in &section.resources {
            let schema = match &resource_type.spec_schema {
                Some(source) => Some(SpecSchema::compile(&source.json_schema).map_err(|e| {
                    ControlError::invalid(format!("resource type '{}': {e}", resource_type.name))
                })?),
                None => None,
            };
            types.insert(
                resource_type.name.clone(),
                TypePlan {
                    subjects: TypeSubjects::for_type(&manifest.name, resource_type),
                    schema,
                },
            );
        }
        let streams = StreamPlan::new(&manifest.name, types.values().map(|t| &t.subjects));
        Ok(Self {
            name: manifest.name.clone(),
            types,
            enabled_workspaces: section.enabled_workspaces.clone(),
            streams,
        })
    }

    /// Checks a resource manifest against this operator: its type, workspace and spec.
    pub fn validate(
        &self,
        manifest: &Manifest,
        workspace: &str,
    ) -> Result<&TypePlan, ControlError> {
        let resource = manifest.resource.as_ref().ok_or_else(|| {
            ControlError::invalid("a resource manifest needs its resource section")
        })?;
        let plan =
            self.types
                .get(&resource.resource_type)
                .ok_or_else(|| ControlError::Invalid {
                    reason: format!(
                        "resource.type: operator {} manages no resource type '{}'",
                        self.name, resource.resource_type
                    ),
                    details: vec![format!(
                        "known types: {}",
                        self.types.keys().cloned().collect::<Vec<_>>().join(", ")
                    )],
                })?;
        if !self.enabled_workspaces.iter().any(|w| w == workspace) {
            return Err(ControlError::Invalid {
                reason: format!(
                    "operator {} is not enabled in workspace {workspace}",
                    self.name
                ),
                details: vec![format!(
                    "enabled workspaces: {}",
                    self.enabled_workspaces.join(", ")
                )],
            });
        }
        if let Some(schema) = &plan.schema {
            let violations = schema.validate(&resource.spec);
            if !violations.is_empty() {
                return Err(ControlError::Invalid {
                    reason: format!(
                        "resource.spec does not match the schema of {} ({} violation{})",
                        resource.resource_type,
                        violations.len(),
                        if violations.len() == 1 { "" } else { "s" }
                    ),
                    details: violations.iter().map(ToString::to_string).collect(),
                });
            }
        }
        Ok(plan)
    }
}

/// Apply a resource manifest in a workspace.
#[derive(Message)]
#[rtype(result = "Result<Applied, ControlError>")]
pub struct ApplyResource {
    pub manifest: Manifest,
    pub workspace: String,
    /// Answer what the apply would do, storing nothing and sending no command.
    pub dry_run: bool,
    /// Who applied it, for the history.
    pub applied_by: String,
    /// The request's span: what the work is done for, in traces.
    pub span: tracing::Span,
}

/// The view of one resource, if this runtime has it.
#[derive(Message)]
#[rtype(result = "Option<RecordView>")]
pub struct FindResource {
    pub key: EntityKey,
    pub details: bool,
    /// The request's span: what the work is done for, in traces.
    pub span: tracing::Span,
}

/// This runtime's resources, in one workspace or all, as a list takes them.
#[derive(Message)]
#[rtype(result = "Vec<Listed>")]
pub struct ListResources {
    pub workspace: Option<String>,
}

/// Delete a resource; `None` if this runtime does not have it.
#[derive(Message)]
#[rtype(result = "Option<Result<Applied, ControlError>>")]
pub struct DeleteResource {
    pub key: EntityKey,
    /// The request's span: what the work is done for, in traces.
    pub span: tracing::Span,
}

/// The keys of every resource of this operator.
#[derive(Message)]
#[rtype(result = "Vec<EntityKey>")]
pub struct ListKeys;

/// The operator's manifest changed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReplacePlan {
    pub plan: OperatorPlan,
}

/// The operator is deleted: remove its streams and stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Start entities for resources read from the store.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RestoreResources {
    pub resources: Vec<Stored>,
}

/// How often the components are probed while the operator has resources.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(3);

/// Time to probe the components.
#[derive(Message)]
#[rtype(result = "()")]
struct ProbeTick;

/// A probe ended: `answered` when a replica answered it.
#[derive(Message)]
#[rtype(result = "()")]
struct ProbeEnded {
    answered: bool,
}

/// What the runtime knows of its components' liveness.
#[derive(Debug)]
struct Liveness {
    /// When a replica last answered (a probe or a status event), or the runtime started.
    last_answer: chrono::DateTime<chrono::Utc>,
    probing: bool,
    /// The entities were told no replica answers.
    silent: bool,
}

/// How long the runtime waits on components and keeps quiet entities awake.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeTimings {
    /// How long `get -d` waits for a component to answer.
    pub query_timeout: Duration,
    /// How long a settled entity stays quiet before it sleeps.
    pub entity_idle: Duration,
}

/// One resource of the runtime: its type, and either its actor or its sleeping record.
struct Slot {
    resource_type: Arc<str>,
    state: SlotState,
}

enum SlotState {
    /// An actor holds the record; `routed` counts the messages sent to it.
    Awake {
        entity: Addr<ResourceEntity>,
        routed: u64,
    },
    /// Settled: no actor, only the record.
    Asleep(SleepingRecord),
}

/// A settled resource's record as stored (JSON) at `revision`, and what it adds to the gauges.
struct SleepingRecord {
    /// Shared with the lists under way, which read it a page at a time.
    record: Arc<[u8]>,
    revision: u64,
    gauged: Arc<Gauged>,
}

impl SleepingRecord {
    fn decode(&self) -> Result<Record, serde_json::Error> {
        serde_json::from_slice(&self.record)
    }
}

/// A record as a list takes it: the view of an awake entity (or an operator, a secret), or the
/// stored bytes of a sleeping resource, read only when the list reaches it; a streamed list of
/// 100,000 resources then sends its first lines before it has read the rest.
pub enum Listed {
    View(Box<RecordView>),
    Stored { key: EntityKey, record: Arc<[u8]> },
}

impl Listed {
    /// Workspace and name: the order of lists.
    pub fn sort_key(&self) -> (&str, &str) {
        match self {
            Self::View(view) => (view.workspace.as_deref().unwrap_or(""), &view.name),
            Self::Stored { key, .. } => (&key.workspace, &key.name),
        }
    }

    /// The record's workspace, if it has one.
    pub fn workspace(&self) -> Option<&str> {
        match self {
            Self::View(view) => view.workspace.as_deref(),
            Self::Stored { key, .. } => Some(&key.workspace),
        }
    }

    /// The record's view; `None` (logged) for stored bytes that do not read back.
    pub fn view(self) -> Option<RecordView> {
        match self {
            Self::View(view) => Some(*view),
            Self::Stored { key, record } => serde_json::from_slice::<Record>(&record)
                .map(|r| r.view())
                .map_err(
                    |e| warn!(entity.key = %key, error = %e, "a sleeping record is unreadable"),
                )
                .ok(),
        }
    }

    /// Sorts `listed` by workspace and name.
    pub fn sort(listed: &mut [Listed]) {
        listed.sort_unstable_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    }
}

/// The runtime actor.
pub struct OperatorRuntime {
    plan: OperatorPlan,
    store: Store,
    transport: ComponentTransport,
    timings: RuntimeTimings,
    /// Where commands and queries go (set when started).
    link: Option<ComponentLink>,
    entities: HashMap<EntityKey, Slot>,
    /// Resource types and gauge label sets, held once for all the slots that share them.
    type_names: HashSet<Arc<str>>,
    gauge_sets: HashSet<Arc<Gauged>>,
    /// What the entities of each resource type share, made with the first of them.
    contexts: HashMap<String, Arc<EntityContext>>,
    /// Where all its entities keep their history (set when started).
    history: Option<crate::history::HistoryWriter>,
    liveness: Liveness,
    /// Its own address, for the entities' contexts (set when started).
    address: Option<Addr<OperatorRuntime>>,
}

impl OperatorRuntime {
    pub fn new(
        plan: OperatorPlan,
        store: Store,
        transport: ComponentTransport,
        timings: RuntimeTimings,
    ) -> Self {
        Self {
            plan,
            store,
            transport,
            timings,
            link: None,
            entities: HashMap::new(),
            type_names: HashSet::new(),
            gauge_sets: HashSet::new(),
            contexts: HashMap::new(),
            history: None,
            liveness: Liveness {
                last_answer: chrono::Utc::now(),
                probing: false,
                silent: false,
            },
            address: None,
        }
    }

    /// Tells every entity whether a replica answers.
    fn tell_liveness(&mut self, reachable: bool) {
        self.liveness.silent = !reachable;
        let liveness = ComponentLiveness {
            reachable,
            last_answer: self.liveness.last_answer,
        };
        if reachable {
            info!(operator = %self.plan.name, "a replica of the operator's components answers again");
        } else {
            warn!(operator = %self.plan.name, since = %self.liveness.last_answer, "no replica of the operator's components has answered: its resources are marked ComponentReachable=False");
        }
        let now = chrono::Utc::now();
        let mut to_wake = Vec::new();
        for (key, slot) in self.entities.iter_mut() {
            match &mut slot.state {
                SlotState::Awake { entity, routed } => {
                    *routed += 1;
                    entity.do_send(liveness);
                }
                // A sleeping resource is woken only if its condition changes.
                SlotState::Asleep(sleeping) => {
                    let changes = sleeping
                        .decode()
                        .is_ok_and(|r| follow_liveness(&r, liveness, now).is_some());
                    if changes {
                        to_wake.push(key.clone());
                    }
                }
            }
        }
        for key in to_wake {
            if let Some(Ok(entity)) = self.route(&key) {
                entity.do_send(liveness);
            }
        }
    }

    fn intern_type(&mut self, resource_type: &str) -> Arc<str> {
        if let Some(name) = self.type_names.get(resource_type) {
            return name.clone();
        }
        let name: Arc<str> = Arc::from(resource_type);
        self.type_names.insert(name.clone());
        name
    }

    fn intern_gauge(&mut self, gauged: Gauged) -> Arc<Gauged> {
        if let Some(set) = self.gauge_sets.get(&gauged) {
            return set.clone();
        }
        let set = Arc::new(gauged);
        self.gauge_sets.insert(set.clone());
        set
    }

    /// The actor of `key`, woken if it sleeps, counting the message about to be sent to it;
    /// `None` when the runtime has no such resource.
    fn route(&mut self, key: &EntityKey) -> Option<Result<Addr<ResourceEntity>, ControlError>> {
        let slot = self.entities.get_mut(key)?;
        let (record, revision, gauged) = match &mut slot.state {
            SlotState::Awake { entity, routed } => {
                *routed += 1;
                return Some(Ok(entity.clone()));
            }
            SlotState::Asleep(sleeping) => match sleeping.decode() {
                Ok(record) => (record, sleeping.revision, (*sleeping.gauged).clone()),
                Err(e) => {
                    return Some(Err(ControlError::Internal(format!(
                        "the sleeping record of {key} is unreadable: {e}"
                    ))))
                }
            },
        };
        let resource_type = slot.resource_type.clone();
        Some(self.wake(key.clone(), resource_type, record, revision, gauged))
    }

    /// Starts the actor of a sleeping resource, for a message about to be sent to it.
    fn wake(
        &mut self,
        key: EntityKey,
        resource_type: Arc<str>,
        record: Record,
        revision: u64,
        gauged: Gauged,
    ) -> Result<Addr<ResourceEntity>, ControlError> {
        let shared = self.context_for(&resource_type)?;
        let entity = ResourceEntity::woken(key.clone(), record, revision, gauged, shared);
        Ok(self.start_held(key, resource_type, entity, 1))
    }

    /// Holds `key` asleep as `record` (its JSON) at `revision`, counted in the gauges as
    /// `gauged`.
    fn hold_asleep(
        &mut self,
        key: EntityKey,
        resource_type: Arc<str>,
        record: Box<[u8]>,
        revision: u64,
        gauged: Gauged,
    ) {
        let gauged = self.intern_gauge(gauged);
        let state = SlotState::Asleep(SleepingRecord {
            record: Arc::from(record),
            revision,
            gauged,
        });
        self.entities.insert(
            key,
            Slot {
                resource_type,
                state,
            },
        );
    }

    /// Starts `entity` and holds it as the actor of `key`, with `routed` messages counted.
    fn start_held(
        &mut self,
        key: EntityKey,
        resource_type: Arc<str>,
        entity: ResourceEntity,
        routed: u64,
    ) -> Addr<ResourceEntity> {
        let entity = entity.start();
        let state = SlotState::Awake {
            entity: entity.clone(),
            routed,
        };
        self.entities.insert(
            key,
            Slot {
                resource_type,
                state,
            },
        );
        entity
    }

    /// The view of a sleeping record without waking it; `None` for an awake one.
    fn sleeping_view(key: &EntityKey, slot: &Slot) -> Option<RecordView> {
        match &slot.state {
            SlotState::Asleep(sleeping) => Listed::Stored {
                key: key.clone(),
                record: sleeping.record.clone(),
            }
            .view(),
            SlotState::Awake { .. } => None,
        }
    }

    /// A replica answered: the entities hear of it if they were told none does.
    fn heard_from_components(&mut self) {
        self.liveness.last_answer = chrono::Utc::now();
        if self.liveness.silent {
            self.tell_liveness(true);
        }
    }

    fn spawn_entity(
        &mut self,
        key: EntityKey,
        resource_type: &str,
        stored: Option<(crate::records::Record, u64)>,
    ) -> Result<Addr<ResourceEntity>, ControlError> {
        let resource_type = self.intern_type(resource_type);
        let shared = self.context_for(&resource_type)?;
        let entity = ResourceEntity::new(key.clone(), stored, shared);
        Ok(self.start_held(key, resource_type, entity, 0))
    }

    /// What the entities of `resource_type` share, made with the first of them.
    fn context_for(&mut self, resource_type: &str) -> Result<Arc<EntityContext>, ControlError> {
        let shared = match self.contexts.get(resource_type) {
            Some(shared) => shared.clone(),
            None => {
                let (subjects, link, history) = match (
                    self.plan.types.get(resource_type),
                    &self.link,
                    &self.history,
                ) {
                    (Some(t), Some(l), Some(h)) => (t.subjects.clone(), l.clone(), h.clone()),
                    _ => {
                        return Err(ControlError::Internal(format!(
                            "operator {} cannot host type {resource_type}",
                            self.plan.name
                        )))
                    }
                };
                let Some(runtime) = self.address.clone() else {
                    return Err(ControlError::Internal(format!(
                        "operator {} is not started",
                        self.plan.name
                    )));
                };
                let shared = Arc::new(EntityContext {
                    operator: self.plan.name.clone(),
                    subjects,
                    store: self.store.clone(),
                    link,
                    runtime: runtime.clone().recipient(),
                    sleep_requests: runtime.recipient(),
                    idle_after: self.timings.entity_idle,
                    history,
                });
                self.contexts
                    .insert(resource_type.to_string(), shared.clone());
                shared
            }
        };
        Ok(shared)
    }
}

impl Actor for OperatorRuntime {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.address = Some(ctx.address());
        let (link, history) = self.transport.connect(
            &self.plan.streams,
            ctx.address().recipient(),
            self.timings.query_timeout,
        );
        self.link = Some(link);
        self.history = Some(history);
        ctx.run_interval(PROBE_INTERVAL, |_, ctx| ctx.notify(ProbeTick));
        info!(operator = %self.plan.name, types = self.plan.types.len(), "operator runtime started");
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        // Awake entities take their own gauges back when they stop; sleeping ones have none.
        for slot in self.entities.values() {
            if let SlotState::Asleep(sleeping) = &slot.state {
                sleeping.gauged.add(-1.0);
            }
        }
    }
}

impl Handler<ProbeTick> for OperatorRuntime {
    type Result = ();

    fn handle(&mut self, _: ProbeTick, ctx: &mut Self::Context) {
        let silent_for = (chrono::Utc::now() - self.liveness.last_answer)
            .to_std()
            .unwrap_or_default();
        if silent_for > ANSWER_BOUND && !self.liveness.silent && !self.entities.is_empty() {
            self.tell_liveness(false);
        }
        if self.liveness.probing {
            return;
        }
        // Any resource will do: a replica that answers for it answers for all.
        let Some((key, Slot { resource_type, .. })) = self.entities.iter().next() else {
            // Nothing to be stale: the silence starts counting with the first resource.
            self.liveness.last_answer = chrono::Utc::now();
            return;
        };
        let (Some(link), Some(plan)) = (&self.link, self.plan.types.get(&**resource_type)) else {
            return;
        };
        let probe = Envelope::new(
            EnvelopeKind::Query,
            Operation::Get,
            &self.plan.name,
            resource_type,
            key.clone(),
            0,
            serde_json::json!({}),
        );
        let ask = link.queries.send(SendQuery {
            subject: plan.subjects.query_subject.clone(),
            envelope: probe,
            parent: tracing::Span::none(),
        });
        self.liveness.probing = true;
        let runtime = ctx.address();
        actix::spawn(async move {
            // Any answer, even an error about the entity, comes from a live replica.
            let answered = matches!(ask.await, Ok(Ok(_)));
            runtime.do_send(ProbeEnded { answered });
        });
    }
}

impl Handler<ProbeEnded> for OperatorRuntime {
    type Result = ();

    fn handle(&mut self, msg: ProbeEnded, _ctx: &mut Self::Context) {
        self.liveness.probing = false;
        if msg.answered {
            self.heard_from_components();
        }
    }
}

impl Handler<ApplyResource> for OperatorRuntime {
    type Result = ResponseFuture<Result<Applied, ControlError>>;

    fn handle(&mut self, msg: ApplyResource, _ctx: &mut Self::Context) -> Self::Result {
        let checked = self
            .plan
            .validate(&msg.manifest, &msg.workspace)
            .map(|_| ());
        let entity = checked.and_then(|()| {
            let key = EntityKey::new(&msg.workspace, &msg.manifest.name)?;
            let resource_type = msg
                .manifest
                .resource
                .as_ref()
                .map(|r| r.resource_type.clone())
                .unwrap_or_default();
            match self.entities.get(&key) {
                Some(Slot { resource_type: existing_type, .. }) if **existing_type != *resource_type => Err(ControlError::Conflict {
                    reason: format!("resource {key} is of type {existing_type}; delete it before applying it as {resource_type}"),
                    details: vec![],
                }),
                Some(_) => self.route(&key).transpose(),
                // A dry run of a new resource starts no entity: it would be created.
                None if msg.dry_run => Ok(None),
                None => self.spawn_entity(key, &resource_type, None).map(Some),
            }
        });
        Box::pin(async move {
            match entity? {
                Some(entity) => {
                    entity
                        .send(ApplySpec {
                            manifest: msg.manifest,
                            dry_run: msg.dry_run,
                            applied_by: msg.applied_by,
                            span: msg.span,
                        })
                        .await?
                }
                None => {
                    let record = crate::records::Record::new(msg.manifest, Some(msg.workspace));
                    Ok(record.applied(crate::records::Outcome::Created))
                }
            }
        })
    }
}

impl Handler<StatusReported> for OperatorRuntime {
    type Result = ResponseFuture<Result<(), ControlError>>;

    fn handle(&mut self, msg: StatusReported, _ctx: &mut Self::Context) -> Self::Result {
        self.heard_from_components();
        match self.route(&msg.envelope.key) {
            Some(Ok(entity)) => {
                let ask = entity.send(msg);
                Box::pin(async move { ask.await? })
            }
            Some(Err(e)) => Box::pin(async { Err(e) }),
            None => {
                debug!(entity.key = %msg.envelope.key, "status for an unknown resource; dropped");
                Box::pin(async { Ok(()) })
            }
        }
    }
}

impl Handler<FindResource> for OperatorRuntime {
    type Result = ResponseFuture<Option<RecordView>>;

    fn handle(&mut self, msg: FindResource, _ctx: &mut Self::Context) -> Self::Result {
        if !msg.details {
            let slot = self.entities.get(&msg.key);
            if let Some(view) = slot.and_then(|slot| Self::sleeping_view(&msg.key, slot)) {
                return Box::pin(async move { Some(view) });
            }
        }
        let entity = self.route(&msg.key).and_then(Result::ok);
        Box::pin(async move {
            match entity {
                Some(e) => e
                    .send(GetView {
                        details: msg.details,
                        span: msg.span,
                    })
                    .await
                    .ok()
                    .flatten(),
                None => None,
            }
        })
    }
}

impl Handler<ListResources> for OperatorRuntime {
    type Result = ResponseFuture<Vec<Listed>>;

    fn handle(&mut self, msg: ListResources, _ctx: &mut Self::Context) -> Self::Result {
        let mut sleeping = Vec::new();
        let mut asks = Vec::new();
        for (key, slot) in self.entities.iter_mut() {
            if msg.workspace.as_ref().is_some_and(|w| *w != key.workspace) {
                continue;
            }
            match &mut slot.state {
                SlotState::Awake { entity, routed } => {
                    *routed += 1;
                    asks.push(entity.send(GetView {
                        details: false,
                        span: tracing::Span::none(),
                    }));
                }
                SlotState::Asleep(asleep) => sleeping.push(Listed::Stored {
                    key: key.clone(),
                    record: asleep.record.clone(),
                }),
            }
        }
        Box::pin(async move {
            sleeping.extend(
                join_all(asks)
                    .await
                    .into_iter()
                    .filter_map(|r| r.ok().flatten())
                    .map(|view| Listed::View(Box::new(view))),
            );
            sleeping
        })
    }
}

impl Handler<DeleteResource> for OperatorRuntime {
    type Result = ResponseFuture<Option<Result<Applied, ControlError>>>;

    fn handle(&mut self, msg: DeleteResource, _ctx: &mut Self::Context) -> Self::Result {
        let entity = self.route(&msg.key);
        Box::pin(async move {
            let entity = match entity? {
                Ok(entity) => entity,
                Err(e) => return Some(Err(e)),
            };
            Some(
                entity
                    .send(RequestDelete { span: msg.span })
                    .await
                    .map_err(ControlError::from)
                    .and_then(|r| r),
            )
        })
    }
}

impl Handler<ListKeys> for OperatorRuntime {
    type Result = MessageResult<ListKeys>;

    fn handle(&mut self, _: ListKeys, _ctx: &mut Self::Context) -> Self::Result {
        let mut keys: Vec<EntityKey> = self.entities.keys().cloned().collect();
        keys.sort();
        MessageResult(keys)
    }
}

impl Handler<EntityGone> for OperatorRuntime {
    type Result = ();

    fn handle(&mut self, msg: EntityGone, _ctx: &mut Self::Context) {
        let held = self.entities.get(&msg.key).is_some_and(
            |slot| matches!(&slot.state, SlotState::Awake { entity, .. } if *entity == msg.entity),
        );
        if held {
            self.entities.remove(&msg.key);
        }
    }
}

impl Handler<MaySleep> for OperatorRuntime {
    type Result = ();

    fn handle(&mut self, msg: MaySleep, ctx: &mut Self::Context) {
        let at = match self.entities.get(&msg.key).map(|slot| &slot.state) {
            Some(SlotState::Awake { entity, routed }) if *entity == msg.entity => *routed,
            _ => return,
        };
        let entity = msg.entity;
        let key = msg.key;
        entity
            .send(Passivate)
            .into_actor(self)
            .map(move |answer, act, _| {
                let Ok(Some(sleeping)) = answer else {
                    return;
                };
                // Anything sent to the entity after `Passivate` would be lost with it.
                let untouched = act.entities.get(&key).filter(|slot| {
                    matches!(&slot.state, SlotState::Awake { entity: held, routed } if *held == entity && *routed == at)
                });
                let Some(slot) = untouched else {
                    return;
                };
                let resource_type = slot.resource_type.clone();
                act.hold_asleep(key, resource_type, sleeping.record, sleeping.revision, sleeping.gauged);
                entity.do_send(Sleep);
            })
            .spawn(ctx);
    }
}

impl Handler<ReplacePlan> for OperatorRuntime {
    type Result = ();

    fn handle(&mut self, msg: ReplacePlan, _ctx: &mut Self::Context) {
        info!(operator = %self.plan.name, "operator plan replaced");
        self.plan = msg.plan;
        // Entities started from now on take the new plan's types; running ones keep theirs.
        self.contexts.clear();
    }
}

impl Handler<RestoreResources> for OperatorRuntime {
    type Result = ();

    fn handle(&mut self, msg: RestoreResources, _ctx: &mut Self::Context) {
        let count = msg.resources.len();
        for stored in msg.resources {
            let Some(workspace) = stored.record.workspace.clone() else {
                continue;
            };
            let Ok(key) = EntityKey::new(workspace, stored.record.manifest.name.clone()) else {
                continue;
            };
            let resource_type = stored
                .record
                .manifest
                .resource
                .as_ref()
                .map(|r| r.resource_type.clone())
                .unwrap_or_default();
            // A settled resource is restored asleep: no actor until a message comes for it.
            if crate::entity::settled(&stored.record) {
                if let Ok(bytes) = serde_json::to_vec(&stored.record) {
                    let gauged = Gauged::of(&stored.record);
                    gauged.add(1.0);
                    let resource_type = self.intern_type(&resource_type);
                    let record = bytes.into_boxed_slice();
                    self.hold_asleep(key, resource_type, record, stored.revision, gauged);
                    continue;
                }
            }
            if let Err(e) = self.spawn_entity(
                key.clone(),
                &resource_type,
                Some((stored.record, stored.revision)),
            ) {
                tracing::warn!(entity.key = %key, error = %e, "resource not restored");
            }
        }
        info!(operator = %self.plan.name, resources = count, "resources restored");
    }
}

impl Handler<Shutdown> for OperatorRuntime {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _ctx: &mut Self::Context) -> Self::Result {
        let link = self.link.take();
        let plan = self.plan.streams.clone();
        Box::pin(
            async move {
                if let Some(link) = link {
                    let _ = link.streams.send(RemoveStreams { plan }).await;
                }
            }
            .into_actor(self)
            .map(|(), act, ctx| {
                info!(operator = %act.plan.name, "operator runtime stopped");
                ctx.stop();
            }),
        )
    }
}
