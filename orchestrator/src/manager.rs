//! `OperatorManager`: the root of the orchestrator's actor tree. It owns the operator and secret
//! records, starts one `OperatorRuntime` per operator (restoring all of them and their resources
//! from the store at start), and routes every resource request to the runtime that owns it.

use std::collections::BTreeMap;

use actix::prelude::*;
use async_nats::jetstream;
use futures::future::join_all;
use operator_contract::{EntityKey, Manifest, ManifestKind};
use serde_json::json;
use tracing::{info, warn};

use crate::bridge::{ensure_streams, ComponentTransport};
use crate::error::ControlError;
use crate::records::{Applied, Outcome, Record, RecordView};
use crate::replicas;
use crate::runtime::{
    ApplyResource, DeleteResource, FindResource, ListKeys, ListResources, Listed, OperatorPlan,
    OperatorRuntime, ReplacePlan, RestoreResources, RuntimeTimings, Shutdown,
};
use crate::store::{workspaced_key, Bucket, Store, StoreError, Stored};
use crate::stream_view;
use crate::supervisor::{ComponentSupervisor, GetComponents, StopComponents, SupervisorSetup};

mod components;
#[cfg(test)]
mod tests;
mod watch;
pub use components::{FollowOperatorLogs, GetOperatorLogs, RenderOperator, StopAllComponents};
pub use watch::{GetHistory, OpenWatch};

/// Apply an operator manifest.
#[derive(Message)]
#[rtype(result = "Result<Applied, ControlError>")]
pub struct ApplyOperator {
    pub manifest: Manifest,
    /// Validate and answer what the apply would do; store nothing, create no stream.
    pub dry_run: bool,
}

/// Apply a secret manifest in a workspace.
#[derive(Message)]
#[rtype(result = "Result<Applied, ControlError>")]
pub struct ApplySecret {
    pub manifest: Manifest,
    pub workspace: String,
    /// Validate and answer what the apply would do; store nothing.
    pub dry_run: bool,
}

/// Apply a resource manifest in a workspace, through the runtime of its operator.
#[derive(Message)]
#[rtype(result = "Result<Applied, ControlError>")]
pub struct RouteResource {
    pub manifest: Manifest,
    pub workspace: String,
    /// Validate and answer what the apply would do; store nothing, send no command.
    pub dry_run: bool,
    /// Who applied it, for the resource's history.
    pub applied_by: String,
    /// The request's span: what the work is done for, in traces.
    pub span: tracing::Span,
    /// In a dry run, the operator manifest the same batch holds above this resource: a
    /// resource of an operator not yet applied is checked against it.
    pub pending_operator: Option<std::sync::Arc<Manifest>>,
}

/// One record by type and name.
#[derive(Message)]
#[rtype(result = "Result<RecordView, ControlError>")]
pub struct GetRecord {
    pub kind: ManifestKind,
    pub workspace: Option<String>,
    pub name: String,
    pub details: bool,
    /// The request's span: what the work is done for, in traces.
    pub span: tracing::Span,
}

/// Every record of a type, in one workspace or all, sorted by workspace and name.
#[derive(Message)]
#[rtype(result = "Vec<RecordView>")]
pub struct ListRecords {
    pub kind: ManifestKind,
    pub workspace: Option<String>,
}

/// The same as [`ListRecords`], sleeping resources left as their stored bytes for the caller to
/// read as it goes (a streamed list).
#[derive(Message)]
#[rtype(result = "Vec<Listed>")]
pub struct ListStored {
    pub kind: ManifestKind,
    pub workspace: Option<String>,
}

/// Delete a resource by key, through the runtime that has it.
#[derive(Message)]
#[rtype(result = "Result<Applied, ControlError>")]
pub struct DeleteResourceByKey {
    pub key: EntityKey,
    /// The request's span: what the work is done for, in traces.
    pub span: tracing::Span,
}

/// Delete an operator; refused while it manages resources.
#[derive(Message)]
#[rtype(result = "Result<Applied, ControlError>")]
pub struct DeleteOperator {
    pub name: String,
}

/// Delete a secret; refused while an operator refers to it.
#[derive(Message)]
#[rtype(result = "Result<Applied, ControlError>")]
pub struct DeleteSecret {
    pub workspace: String,
    pub name: String,
}

struct OperatorEntry {
    stored: Stored,
    runtime: Addr<OperatorRuntime>,
    supervisor: Addr<ComponentSupervisor>,
}

/// The manager actor.
pub struct OperatorManager {
    store: Store,
    js: jetstream::Context,
    /// How runtimes reach their components.
    transport: ComponentTransport,
    timings: RuntimeTimings,
    operators: BTreeMap<String, OperatorEntry>,
    secrets: BTreeMap<String, Stored>,
    to_restore: Option<(Vec<Stored>, Vec<Stored>)>,
    /// How operators' components are run.
    components: SupervisorSetup,
}

impl OperatorManager {
    /// Reads every record from the store; the actor tree is rebuilt from them when started.
    /// Runtimes reach their components through NATS.
    pub async fn restore(
        store: Store,
        client: async_nats::Client,
        timings: RuntimeTimings,
    ) -> Result<Self, StoreError> {
        let js = jetstream::new(client.clone());
        Self::load(store, js, ComponentTransport::Nats(client), timings).await
    }

    /// [`restore`](Self::restore) with the runtimes' transport given (the actors' tests).
    pub async fn load(
        store: Store,
        js: jetstream::Context,
        transport: ComponentTransport,
        timings: RuntimeTimings,
    ) -> Result<Self, StoreError> {
        // The history is for people: an orchestrator that cannot keep it still runs.
        if let Err(e) = crate::history::History::new(js.clone())
            .ensure(store.replicas())
            .await
        {
            warn!(error = %e, "resource history unavailable");
        }
        let operators = store.load_all(Bucket::Operators).await?;
        let resources = store.load_all(Bucket::Resources).await?;
        let secrets = store.load_all(Bucket::Secrets).await?;
        info!(
            operators = operators.len(),
            resources = resources.len(),
            secrets = secrets.len(),
            "state read from store"
        );
        Ok(Self {
            js,
            transport,
            store,
            timings,
            operators: BTreeMap::new(),
            secrets: secrets.into_iter().map(|s| (s.key.clone(), s)).collect(),
            to_restore: Some((operators, resources)),
            components: SupervisorSetup::external(),
        })
    }

    /// An operator's plan, its streams replicated like the store's buckets.
    fn compile(&self, manifest: &Manifest) -> Result<OperatorPlan, ControlError> {
        let mut plan = OperatorPlan::compile(manifest)?;
        plan.streams.replicas = self.store.replicas();
        Ok(plan)
    }

    fn start_runtime(&self, plan: OperatorPlan) -> Addr<OperatorRuntime> {
        OperatorRuntime::new(
            plan,
            self.store.clone(),
            self.transport.clone(),
            self.timings,
        )
        .start()
    }

    /// Every secret reference of an operator must name an existing secret and its keys.
    fn check_secret_refs(&self, manifest: &Manifest) -> Result<(), ControlError> {
        let Some(section) = &manifest.operator else {
            return Ok(());
        };
        let mut problems = Vec::new();
        for (i, component) in section.components.iter().enumerate() {
            for (j, reference) in component.secrets.iter().enumerate() {
                let at = format!("operator.components[{i}].secrets[{j}]");
                match self
                    .secrets
                    .get(&workspaced_key(&reference.workspace, &reference.name))
                {
                    None => problems.push(format!(
                        "{at}: secret {}/{} does not exist; apply it first",
                        reference.workspace, reference.name
                    )),
                    Some(stored) => {
                        let data = stored.record.manifest.secret.as_ref().map(|s| &s.data);
                        for key in &reference.keys {
                            if !data.is_some_and(|d| d.contains_key(key)) {
                                problems.push(format!(
                                    "{at}.keys: secret {}/{} has no key {key}",
                                    reference.workspace, reference.name
                                ));
                            }
                        }
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ControlError::Invalid {
                reason: "refers to secrets that are missing".to_string(),
                details: problems,
            })
        }
    }

    fn operators_using_secret(&self, workspace: &str, name: &str) -> Vec<String> {
        self.operators
            .values()
            .filter(|entry| {
                entry
                    .stored
                    .record
                    .manifest
                    .operator
                    .as_ref()
                    .is_some_and(|op| {
                        op.components
                            .iter()
                            .flat_map(|c| &c.secrets)
                            .any(|s| s.workspace == workspace && s.name == name)
                    })
            })
            .map(|entry| entry.stored.record.manifest.name.clone())
            .collect()
    }

    fn apply_operator(
        &mut self,
        manifest: Manifest,
        dry_run: bool,
    ) -> AtomicResponse<Self, Result<Applied, ControlError>> {
        let prepared = self.compile(&manifest).and_then(|plan| {
            self.check_secret_refs(&manifest)?;
            Ok(plan)
        });
        let plan = match prepared {
            Ok(plan) => plan,
            Err(e) => return AtomicResponse::new(Box::pin(fut::ready(Err(e)))),
        };
        if dry_run {
            let existing = self.operators.get(&manifest.name).map(|e| &e.stored.record);
            let applied = crate::records::preview(existing, manifest, None);
            return AtomicResponse::new(Box::pin(fut::ready(Ok(applied))));
        }
        let existing = self.operators.get(&manifest.name).map(|e| e.stored.clone());
        let (store, js, name) = (self.store.clone(), self.js.clone(), manifest.name.clone());
        let write = async move {
            ensure_streams(&js, &plan.streams).await?;
            let (stored, outcome) =
                store_manifest(&store, Bucket::Operators, name, existing, manifest, None).await?;
            Ok::<_, ControlError>((plan, stored, outcome))
        };
        AtomicResponse::new(Box::pin(write.into_actor(self).map(|result, act, _ctx| {
            let (plan, stored, outcome) = result?;
            let applied = stored.record.applied(outcome);
            let name = stored.key.clone();
            match act.operators.get_mut(&name) {
                Some(entry) => {
                    if outcome == Outcome::Updated {
                        entry.runtime.do_send(ReplacePlan { plan });
                    }
                    entry.stored = stored;
                }
                None => {
                    let runtime = act.start_runtime(plan);
                    let supervisor = act.start_supervisor(&name);
                    act.operators.insert(
                        name.clone(),
                        OperatorEntry {
                            stored,
                            runtime,
                            supervisor,
                        },
                    );
                }
            }
            if let Some(entry) = act.operators.get(&name) {
                act.supervise(entry, true);
            }
            info!(operator = %name, outcome = ?outcome, "operator applied");
            Ok(applied)
        })))
    }

    fn apply_secret(
        &mut self,
        manifest: Manifest,
        workspace: String,
        dry_run: bool,
    ) -> AtomicResponse<Self, Result<Applied, ControlError>> {
        let key = workspaced_key(&workspace, &manifest.name);
        if dry_run {
            let existing = self.secrets.get(&key).map(|s| &s.record);
            let applied = crate::records::preview(existing, manifest, Some(workspace));
            return AtomicResponse::new(Box::pin(fut::ready(Ok(applied))));
        }
        let existing = self.secrets.get(&key).cloned();
        let store = self.store.clone();
        let write = async move {
            let (stored, outcome) = store_manifest(
                &store,
                Bucket::Secrets,
                key,
                existing,
                manifest,
                Some(workspace),
            )
            .await?;
            Ok::<_, ControlError>((stored, outcome))
        };
        AtomicResponse::new(Box::pin(write.into_actor(self).map(|result, act, _ctx| {
            let (stored, outcome) = result?;
            let applied = stored.record.applied(outcome);
            let (workspace, name) = (
                stored.record.workspace.clone().unwrap_or_default(),
                stored.record.manifest.name.clone(),
            );
            act.secrets.insert(stored.key.clone(), stored);
            if outcome == Outcome::Updated {
                act.secret_changed(&workspace, &name);
            }
            Ok(applied)
        })))
    }

    fn runtimes(&self) -> Vec<Addr<OperatorRuntime>> {
        self.operators.values().map(|e| e.runtime.clone()).collect()
    }
}

impl Actor for OperatorManager {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        let Some((operators, resources)) = self.to_restore.take() else {
            return;
        };
        let mut by_operator: BTreeMap<String, Vec<Stored>> = BTreeMap::new();
        for stored in resources {
            let operator = stored
                .record
                .manifest
                .resource
                .as_ref()
                .map(|r| r.operator.clone())
                .unwrap_or_default();
            by_operator.entry(operator).or_default().push(stored);
        }
        for stored in operators {
            let plan = match self.compile(&stored.record.manifest) {
                Ok(plan) => plan,
                Err(e) => {
                    warn!(operator = %stored.key, error = %e, "operator not restored");
                    continue;
                }
            };
            let runtime = self.start_runtime(plan);
            if let Some(resources) = by_operator.remove(&stored.key) {
                runtime.do_send(RestoreResources { resources });
            }
            let entry = OperatorEntry {
                supervisor: self.start_supervisor(&stored.key),
                stored,
                runtime,
            };
            self.supervise(&entry, false);
            self.operators.insert(entry.stored.key.clone(), entry);
        }
        for (operator, resources) in by_operator {
            warn!(operator = %operator, resources = resources.len(), "resources of a missing operator not restored");
        }
        info!(operators = self.operators.len(), "operator manager started");
    }
}

impl Handler<ApplyOperator> for OperatorManager {
    type Result = AtomicResponse<Self, Result<Applied, ControlError>>;

    fn handle(&mut self, msg: ApplyOperator, _ctx: &mut Self::Context) -> Self::Result {
        self.apply_operator(msg.manifest, msg.dry_run)
    }
}

impl Handler<ApplySecret> for OperatorManager {
    type Result = AtomicResponse<Self, Result<Applied, ControlError>>;

    fn handle(&mut self, msg: ApplySecret, _ctx: &mut Self::Context) -> Self::Result {
        self.apply_secret(msg.manifest, msg.workspace, msg.dry_run)
    }
}

impl Handler<RouteResource> for OperatorManager {
    /// Not atomic: the runtime and the entity serialize per resource, so the manager lets
    /// applies of different resources run at once.
    type Result = ResponseFuture<Result<Applied, ControlError>>;

    fn handle(&mut self, msg: RouteResource, _ctx: &mut Self::Context) -> Self::Result {
        let operator = msg
            .manifest
            .resource
            .as_ref()
            .map(|r| r.operator.clone())
            .unwrap_or_default();
        let pending = msg
            .pending_operator
            .as_ref()
            .filter(|pending| msg.dry_run && pending.name == operator);
        if let (None, Some(pending)) = (self.operators.get(&operator), pending) {
            // Every resource of an operator not yet applied is new.
            let checked = OperatorPlan::compile(pending)
                .and_then(|plan| plan.validate(&msg.manifest, &msg.workspace).map(drop))
                .map(|()| {
                    crate::records::Record::new(msg.manifest, Some(msg.workspace))
                        .applied(crate::records::Outcome::Created)
                });
            return Box::pin(async move { checked });
        }
        let Some(entry) = self.operators.get(&operator) else {
            return Box::pin(async move {
                Err(ControlError::Invalid {
                    reason: format!("resource.operator: operator '{operator}' is not applied"),
                    details: vec![
                        "apply the operator first (opctl get -t operator lists them)".into(),
                    ],
                })
            });
        };
        let runtime = entry.runtime.clone();
        // An apply finds a resource of the same key under another operator when it writes
        // (create-if-absent); a dry run writes nothing, so it asks the other runtimes.
        let others: Vec<_> = if msg.dry_run {
            self.operators
                .iter()
                .filter(|(name, _)| **name != operator)
                .map(|(_, e)| e.runtime.clone())
                .collect()
        } else {
            Vec::new()
        };
        let key = EntityKey::new(&msg.workspace, &msg.manifest.name);
        Box::pin(async move {
            if !others.is_empty() {
                let key = key?;
                for other in others {
                    let found = other
                        .send(FindResource {
                            key: key.clone(),
                            details: false,
                            span: msg.span.clone(),
                        })
                        .await;
                    if let Ok(Some(_)) = found {
                        return Err(ControlError::Conflict {
                            reason: format!("a resource named {key} already exists under another operator; delete it first"),
                            details: vec![],
                        });
                    }
                }
            }
            runtime
                .send(ApplyResource {
                    manifest: msg.manifest,
                    workspace: msg.workspace,
                    dry_run: msg.dry_run,
                    applied_by: msg.applied_by,
                    span: msg.span,
                })
                .await?
        })
    }
}

impl Handler<GetRecord> for OperatorManager {
    type Result = ResponseFuture<Result<RecordView, ControlError>>;

    fn handle(&mut self, msg: GetRecord, _ctx: &mut Self::Context) -> Self::Result {
        let kind = msg.kind;
        let not_found =
            move |what: String| ControlError::NotFound(format!("{kind} {what} not found"));
        match msg.kind {
            ManifestKind::Operator => {
                let found = self.operators.get(&msg.name).map(|e| {
                    let mut view = e.stored.record.view();
                    let plan = msg
                        .details
                        .then(|| self.compile(&e.stored.record.manifest).ok())
                        .flatten();
                    view.details = plan.as_ref().map(wiring);
                    (
                        view,
                        e.supervisor.clone(),
                        e.stored.record.manifest.clone(),
                        plan,
                    )
                });
                let js = self.js.clone();
                Box::pin(async move {
                    let (mut view, supervisor, manifest, plan) =
                        found.ok_or_else(|| not_found(msg.name))?;
                    if let Some(serde_json::Value::Object(details)) = view.details.as_mut() {
                        if let Ok(components) = supervisor.send(GetComponents).await {
                            details.insert("components".into(), json!(components));
                        }
                        if let Some(plan) = &plan {
                            let bucket = entity_bucket(&manifest);
                            let streams =
                                stream_view::stream_details(&js, &plan.streams, &bucket).await;
                            details.insert("streams".into(), streams);
                        }
                        // Replica health, from the components' election bucket.
                        if let Some(mut election) = replicas::election_details(&js, &manifest).await
                        {
                            if let Some(published) = replicas::take_operator_details(&mut election)
                            {
                                details.insert("operatorDetails".into(), published);
                            }
                            details.insert("election".into(), election);
                        }
                    }
                    Ok(view)
                })
            }
            ManifestKind::Secret => {
                let ws = msg.workspace.unwrap_or_default();
                let found = self
                    .secrets
                    .get(&workspaced_key(&ws, &msg.name))
                    .map(|s| s.record.view());
                Box::pin(
                    async move { found.ok_or_else(|| not_found(format!("{ws}/{}", msg.name))) },
                )
            }
            ManifestKind::Resource => {
                let ws = msg.workspace.unwrap_or_default();
                let key = EntityKey::new(&ws, &msg.name);
                let runtimes = self.runtimes();
                Box::pin(async move {
                    let key = key?;
                    for runtime in runtimes {
                        if let Ok(Some(view)) = runtime
                            .send(FindResource {
                                key: key.clone(),
                                details: msg.details,
                                span: msg.span.clone(),
                            })
                            .await
                        {
                            return Ok(view);
                        }
                    }
                    Err(not_found(key.to_string()))
                })
            }
        }
    }
}

/// Stores a manifest under `key`: created at generation 1, or replacing `existing` with the
/// generation raised, or left alone when it is the manifest already stored.
async fn store_manifest(
    store: &Store,
    bucket: Bucket,
    key: String,
    existing: Option<Stored>,
    mut manifest: Manifest,
    workspace: Option<String>,
) -> Result<(Stored, Outcome), StoreError> {
    if let Some(current) = &existing {
        crate::records::keep_owner(&current.record.manifest, &mut manifest);
    }
    let (record, outcome, revision) = match existing {
        Some(current) if current.record.manifest == manifest => {
            (current.record, Outcome::Unchanged, current.revision)
        }
        Some(current) => {
            let mut record = current.record;
            record.manifest = manifest;
            record.generation += 1;
            record.updated_at = chrono::Utc::now();
            let revision = store
                .update(bucket, &key, &record, current.revision)
                .await?;
            (record, Outcome::Updated, revision)
        }
        None => {
            let record = Record::new(manifest, workspace);
            match store.create(bucket, &key, &record).await {
                Ok(revision) => (record, Outcome::Created, revision),
                // A create whose acknowledgement was lost (its NATS node died or was cut off
                // under it) may have landed all the same: adopted when it holds this manifest.
                Err(StoreError::AlreadyExists {
                    bucket: name,
                    key: k,
                }) => match store.get(bucket, &key).await? {
                    Some(stored) if stored.record.manifest == record.manifest => {
                        (stored.record, Outcome::Created, stored.revision)
                    }
                    _ => {
                        return Err(StoreError::AlreadyExists {
                            bucket: name,
                            key: k,
                        })
                    }
                },
                Err(e) => return Err(e),
            }
        }
    };
    Ok((
        Stored {
            key,
            record,
            revision,
        },
        outcome,
    ))
}

/// The KV bucket the operator's components keep their entities in: the one a component's
/// `OPERATOR_STATE_STORE_BUCKET` names, else the default for the operator.
fn entity_bucket(manifest: &Manifest) -> String {
    manifest
        .operator
        .iter()
        .flat_map(|o| o.components.iter())
        .find_map(|c| {
            c.environment_vars
                .get("OPERATOR_STATE_STORE_BUCKET")
                .cloned()
        })
        .unwrap_or_else(|| operator_contract::subject::default_entity_bucket(&manifest.name))
}

/// The NATS wiring of an operator's resource types, shown by `opctl get -t operator -d`, so a
/// component run by hand can be pointed at the right stream and subjects.
fn wiring(plan: &OperatorPlan) -> serde_json::Value {
    let types: serde_json::Map<String, serde_json::Value> = plan
        .types
        .iter()
        .map(|(name, t)| {
            (
                name.clone(),
                json!({
                    "ENTITY_OF_INTEREST_MESSAGE_STREAM": t.subjects.command_stream,
                    "commandSubject": t.subjects.command_subject,
                    "ENTITY_OF_INTEREST_MESSAGE_QUERY_SUBJECT": t.subjects.query_subject,
                    "ENTITY_OF_INTEREST_MESSAGE_QUERY_REPLY_SUBJECT": t.subjects.reply_subject,
                }),
            )
        })
        .collect();
    json!({ "resourceTypes": types })
}

impl Handler<ListRecords> for OperatorManager {
    type Result = ResponseFuture<Vec<RecordView>>;

    fn handle(&mut self, msg: ListRecords, _ctx: &mut Self::Context) -> Self::Result {
        let listed = self.listed(msg.kind, msg.workspace);
        Box::pin(async move { listed.await.into_iter().filter_map(Listed::view).collect() })
    }
}

impl Handler<ListStored> for OperatorManager {
    type Result = ResponseFuture<Vec<Listed>>;

    fn handle(&mut self, msg: ListStored, _ctx: &mut Self::Context) -> Self::Result {
        Box::pin(self.listed(msg.kind, msg.workspace))
    }
}

impl OperatorManager {
    /// Every record of `kind` (in `workspace`, or all), sorted by workspace and name, sleeping
    /// resources as their stored bytes.
    fn listed(
        &self,
        kind: ManifestKind,
        workspace: Option<String>,
    ) -> impl std::future::Future<Output = Vec<Listed>> + 'static {
        let view = |record: &crate::records::Record| Listed::View(Box::new(record.view()));
        let (mut ready, asks): (Vec<Listed>, Vec<_>) = match kind {
            ManifestKind::Operator => (
                self.operators
                    .values()
                    .map(|e| view(&e.stored.record))
                    .collect(),
                Vec::new(),
            ),
            ManifestKind::Secret => (
                self.secrets
                    .values()
                    .filter(|s| workspace.is_none() || s.record.workspace == workspace)
                    .map(|s| view(&s.record))
                    .collect(),
                Vec::new(),
            ),
            ManifestKind::Resource => (
                Vec::new(),
                self.runtimes()
                    .into_iter()
                    .map(|r| {
                        r.send(ListResources {
                            workspace: workspace.clone(),
                        })
                    })
                    .collect(),
            ),
        };
        async move {
            for answer in join_all(asks).await {
                ready.extend(answer.unwrap_or_default());
            }
            Listed::sort(&mut ready);
            ready
        }
    }
}

impl Handler<DeleteResourceByKey> for OperatorManager {
    type Result = ResponseFuture<Result<Applied, ControlError>>;

    fn handle(&mut self, msg: DeleteResourceByKey, _ctx: &mut Self::Context) -> Self::Result {
        let runtimes = self.runtimes();
        Box::pin(async move {
            for runtime in runtimes {
                if let Ok(Some(result)) = runtime
                    .send(DeleteResource {
                        key: msg.key.clone(),
                        span: msg.span.clone(),
                    })
                    .await
                {
                    return result;
                }
            }
            Err(ControlError::NotFound(format!(
                "resource {} not found",
                msg.key
            )))
        })
    }
}

impl Handler<DeleteSecret> for OperatorManager {
    type Result = AtomicResponse<Self, Result<Applied, ControlError>>;

    fn handle(&mut self, msg: DeleteSecret, _ctx: &mut Self::Context) -> Self::Result {
        let ready = |r: Result<Applied, ControlError>| AtomicResponse::new(Box::pin(fut::ready(r)));
        let ws = msg.workspace;
        let key = workspaced_key(&ws, &msg.name);
        let Some(stored) = self.secrets.get(&key).cloned() else {
            return ready(Err(ControlError::NotFound(format!(
                "secret {ws}/{} not found",
                msg.name
            ))));
        };
        let users = self.operators_using_secret(&ws, &msg.name);
        if !users.is_empty() {
            return ready(Err(ControlError::Conflict {
                reason: format!(
                    "secret {ws}/{} is used by {} operator(s); delete them first",
                    msg.name,
                    users.len()
                ),
                details: users.into_iter().map(|o| format!("operator {o}")).collect(),
            }));
        }
        let store = self.store.clone();
        let delete = async move {
            store
                .delete(Bucket::Secrets, &key, stored.revision)
                .await
                .map(|()| stored)
        };
        AtomicResponse::new(Box::pin(delete.into_actor(self).map(|result, act, _| {
            let stored = result?;
            act.secrets.remove(&stored.key);
            Ok(stored.record.applied(Outcome::Deleted))
        })))
    }
}

impl Handler<DeleteOperator> for OperatorManager {
    type Result = AtomicResponse<Self, Result<Applied, ControlError>>;

    fn handle(&mut self, msg: DeleteOperator, _ctx: &mut Self::Context) -> Self::Result {
        let Some(entry) = self.operators.get(&msg.name) else {
            return AtomicResponse::new(Box::pin(fut::ready(Err(ControlError::NotFound(
                format!("operator {} not found", msg.name),
            )))));
        };
        let (runtime, supervisor, stored, store) = (
            entry.runtime.clone(),
            entry.supervisor.clone(),
            entry.stored.clone(),
            self.store.clone(),
        );
        let delete = async move {
            let dependents = runtime.send(ListKeys).await?;
            if !dependents.is_empty() {
                return Err(ControlError::Conflict {
                    reason: format!(
                        "operator {} still manages {} resource(s); delete them first",
                        stored.key,
                        dependents.len()
                    ),
                    details: dependents.iter().map(|k| format!("resource {k}")).collect(),
                });
            }
            store
                .delete(Bucket::Operators, &stored.key, stored.revision)
                .await?;
            supervisor.send(StopComponents).await?;
            runtime.send(Shutdown).await?;
            Ok(stored)
        };
        AtomicResponse::new(Box::pin(delete.into_actor(self).map(|result, act, _| {
            let stored = result?;
            act.operators.remove(&stored.key);
            info!(operator = %stored.key, "operator deleted");
            Ok(stored.record.applied(Outcome::Deleted))
        })))
    }
}
