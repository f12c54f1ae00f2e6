//! `OperatorRuntime`: one actor per applied operator. It owns the operator's compiled plan (its
//! resource types, their JSON Schemas and subjects), the entity actors of its resources and its
//! NATS bridge; it validates every resource applied to it before an entity sees it. It also
//! probes the operator's components (a query every [`PROBE_INTERVAL`] while it has resources)
//! and tells its entities when no replica has answered for [`ANSWER_BOUND`], and when one does
//! again, so an idle resource whose component died does not look fresh.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::future::join_all;
use operator_contract::schema::SpecSchema;
use operator_contract::subject::TypeSubjects;
use operator_contract::{EntityKey, Envelope, EnvelopeKind, Manifest, Operation};
use tracing::{debug, info, warn};

use crate::bridge::{NatsBridge, RemoveStreams, SendQuery, StatusReported, StreamPlan};
use crate::entity::{
    ApplySpec, ComponentLiveness, EntityContext, EntityGone, GetView, RequestDelete,
    ResourceEntity, ANSWER_BOUND,
};
use crate::error::ControlError;
use crate::records::{Applied, RecordView};
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

/// Views of this runtime's resources, in one workspace or all.
#[derive(Message)]
#[rtype(result = "Vec<RecordView>")]
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

/// The runtime actor.
pub struct OperatorRuntime {
    plan: OperatorPlan,
    store: Store,
    client: async_nats::Client,
    query_timeout: Duration,
    bridge: Option<Addr<NatsBridge>>,
    entities: HashMap<EntityKey, (String, Addr<ResourceEntity>)>,
    /// What the entities of each resource type share, made with the first of them.
    contexts: HashMap<String, Arc<EntityContext>>,
    /// One handle on the history stream for all its entities.
    history: Option<crate::history::History>,
    liveness: Liveness,
}

impl OperatorRuntime {
    pub fn new(
        plan: OperatorPlan,
        store: Store,
        client: async_nats::Client,
        query_timeout: Duration,
    ) -> Self {
        Self {
            plan,
            store,
            client,
            query_timeout,
            bridge: None,
            entities: HashMap::new(),
            contexts: HashMap::new(),
            history: None,
            liveness: Liveness {
                last_answer: chrono::Utc::now(),
                probing: false,
                silent: false,
            },
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
        for (_, entity) in self.entities.values() {
            entity.do_send(liveness);
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
        ctx: &mut Context<Self>,
    ) -> Result<Addr<ResourceEntity>, ControlError> {
        let shared = match self.contexts.get(resource_type) {
            Some(shared) => shared.clone(),
            None => {
                let (subjects, bridge, history) = match (
                    self.plan.types.get(resource_type),
                    &self.bridge,
                    &self.history,
                ) {
                    (Some(t), Some(b), Some(h)) => (t.subjects.clone(), b.clone(), h.clone()),
                    _ => {
                        return Err(ControlError::Internal(format!(
                            "operator {} cannot host type {resource_type}",
                            self.plan.name
                        )))
                    }
                };
                let shared = Arc::new(EntityContext {
                    subjects,
                    store: self.store.clone(),
                    bridge,
                    runtime: ctx.address().recipient(),
                    history,
                });
                self.contexts
                    .insert(resource_type.to_string(), shared.clone());
                shared
            }
        };
        let entity = ResourceEntity::new(key.clone(), stored, shared).start();
        self.entities
            .insert(key, (resource_type.to_string(), entity.clone()));
        Ok(entity)
    }
}

impl Actor for OperatorRuntime {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let bridge = NatsBridge::new(
            self.plan.streams.clone(),
            self.client.clone(),
            ctx.address().recipient(),
            self.query_timeout,
        );
        self.bridge = Some(bridge.start());
        self.history = Some(crate::history::History::new(async_nats::jetstream::new(
            self.client.clone(),
        )));
        ctx.run_interval(PROBE_INTERVAL, |_, ctx| ctx.notify(ProbeTick));
        info!(operator = %self.plan.name, types = self.plan.types.len(), "operator runtime started");
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
        let Some((key, (resource_type, _))) = self.entities.iter().next() else {
            // Nothing to be stale: the silence starts counting with the first resource.
            self.liveness.last_answer = chrono::Utc::now();
            return;
        };
        let (Some(bridge), Some(plan)) = (&self.bridge, self.plan.types.get(resource_type)) else {
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
        let ask = bridge.send(SendQuery {
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

    fn handle(&mut self, msg: ApplyResource, ctx: &mut Self::Context) -> Self::Result {
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
                Some((existing_type, _)) if *existing_type != resource_type => Err(ControlError::Conflict {
                    reason: format!("resource {key} is of type {existing_type}; delete it before applying it as {resource_type}"),
                    details: vec![],
                }),
                Some((_, entity)) => Ok(Some(entity.clone())),
                // A dry run of a new resource starts no entity: it would be created.
                None if msg.dry_run => Ok(None),
                None => self.spawn_entity(key, &resource_type, None, ctx).map(Some),
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
        match self.entities.get(&msg.envelope.key) {
            Some((_, entity)) => {
                let ask = entity.send(msg);
                Box::pin(async move { ask.await? })
            }
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
        let entity = self.entities.get(&msg.key).map(|(_, e)| e.clone());
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
    type Result = ResponseFuture<Vec<RecordView>>;

    fn handle(&mut self, msg: ListResources, _ctx: &mut Self::Context) -> Self::Result {
        let asks: Vec<_> = self
            .entities
            .iter()
            .filter(|(key, _)| msg.workspace.as_ref().is_none_or(|w| *w == key.workspace))
            .map(|(_, (_, e))| {
                e.send(GetView {
                    details: false,
                    span: tracing::Span::none(),
                })
            })
            .collect();
        Box::pin(async move {
            join_all(asks)
                .await
                .into_iter()
                .filter_map(|r| r.ok().flatten())
                .collect()
        })
    }
}

impl Handler<DeleteResource> for OperatorRuntime {
    type Result = ResponseFuture<Option<Result<Applied, ControlError>>>;

    fn handle(&mut self, msg: DeleteResource, _ctx: &mut Self::Context) -> Self::Result {
        let entity = self.entities.get(&msg.key).map(|(_, e)| e.clone());
        Box::pin(async move {
            let entity = entity?;
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
        if self
            .entities
            .get(&msg.key)
            .is_some_and(|(_, e)| *e == msg.entity)
        {
            self.entities.remove(&msg.key);
        }
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

    fn handle(&mut self, msg: RestoreResources, ctx: &mut Self::Context) {
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
            if let Err(e) = self.spawn_entity(
                key.clone(),
                &resource_type,
                Some((stored.record, stored.revision)),
                ctx,
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
        let bridge = self.bridge.take();
        let plan = self.plan.streams.clone();
        Box::pin(
            async move {
                if let Some(bridge) = bridge {
                    let _ = bridge.send(RemoveStreams { plan }).await;
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
