//! The HTTP API: apply, get, list and delete of operators, resources and secrets. Handlers
//! parse and route; every piece of state answers from its actor.

use actix::Addr;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use operator_contract::api::{ApplyAnswer, ErrorBody};
use operator_contract::manifest::MAX_MANIFEST_BYTES;
use operator_contract::{EntityKey, Manifest, ManifestKind};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{Caller, Role, UserRecord, UserView, Users};
use crate::error::ControlError;
use crate::manager::{
    ApplyOperator, ApplySecret, DeleteOperator, DeleteResourceByKey, DeleteSecret,
    FollowOperatorLogs, GetOperatorLogs, GetRecord, ListStored, OperatorManager, RenderOperator,
    RouteResource,
};
use crate::records::{Applied, RecordView};
use crate::runtime::Listed;

mod batch;
mod list_stream;

impl ResponseError for ControlError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            Self::Unauthorized(_) => {
                response.insert_header((actix_web::http::header::WWW_AUTHENTICATE, "Bearer"));
            }
            Self::Busy { retry_after_s, .. } => {
                response.insert_header((
                    actix_web::http::header::RETRY_AFTER,
                    retry_after_s.to_string(),
                ));
            }
            _ => {}
        }
        response.json(ErrorBody {
            error: self.to_string(),
            details: self.details().to_vec(),
        })
    }
}

type Manager = web::Data<Addr<OperatorManager>>;
/// The authenticated caller, put in every request by [`crate::auth::authenticate`].
type Auth = web::ReqData<Caller>;

/// Mounts every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(MAX_MANIFEST_BYTES))
        .route(
            "/healthz",
            web::get().to(|| async { HttpResponse::Ok().body("ok") }),
        )
        .service(
            web::scope("/api/v1")
                .route("/apply", web::post().to(apply))
                .route("/batch", web::post().to(batch::apply))
                .route("/whoami", web::get().to(whoami))
                .route("/users", web::get().to(list_users))
                .route("/users/{name}", web::put().to(put_user))
                .route("/users/{name}", web::delete().to(delete_user))
                .route("/operators", web::get().to(list_operators))
                .route("/operators/{name}", web::get().to(get_operator))
                .route("/operators/{name}", web::delete().to(delete_operator))
                .route("/operators/{name}/logs", web::get().to(operator_logs))
                .route(
                    "/operators/{name}/kubernetes",
                    web::get().to(render_operator),
                )
                .route("/resources", web::get().to(list_resources))
                .route("/watch/{collection}", web::get().to(crate::watch::watch))
                .route("/secrets", web::get().to(list_secrets))
                .route(
                    "/workspaces/{ws}/resources/{name}",
                    web::get().to(get_resource),
                )
                .route(
                    "/workspaces/{ws}/resources/{name}",
                    web::delete().to(delete_resource),
                )
                .route(
                    "/workspaces/{ws}/resources/{name}/events",
                    web::get().to(crate::history::events),
                )
                .route("/workspaces/{ws}/secrets/{name}", web::get().to(get_secret))
                .route(
                    "/workspaces/{ws}/secrets/{name}",
                    web::delete().to(delete_secret),
                ),
        );
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApplyQuery {
    workspace: Option<String>,
    /// Validate fully and answer what would be done; store nothing, send no command.
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
struct ListQuery {
    workspace: Option<String>,
    /// Every owner's records, not only the caller's.
    #[serde(default)]
    all: bool,
    /// Answer JSON lines, one record a line, written as they are serialized.
    #[serde(default)]
    stream: bool,
}

#[derive(Deserialize)]
struct DetailsQuery {
    #[serde(default)]
    details: bool,
}

/// Applies every document of the body in order; stops at the first failure, whose answer says
/// which documents were applied before it.
async fn apply(
    manager: Manager,
    caller: Auth,
    query: web::Query<ApplyQuery>,
    body: String,
) -> HttpResponse {
    let manifests = match Manifest::parse_all(&body) {
        Ok(m) => m,
        Err(e) => return ControlError::invalid(e.to_string()).error_response(),
    };
    let count = manifests.len();
    let mut applied: Vec<Applied> = Vec::new();
    for (i, manifest) in manifests.into_iter().enumerate() {
        let name = format!("{} {}", manifest.kind, manifest.name);
        let workspace = query.workspace.clone();
        match apply_one(&manager, &caller, manifest, workspace, query.dry_run).await {
            Ok(a) => applied.push(a),
            Err(e) => {
                let prefix = if count > 1 {
                    format!("document {}: ", i + 1)
                } else {
                    String::new()
                };
                return HttpResponse::build(e.status_code()).json(json!({
                    "error": format!("{prefix}{name}: {e}"),
                    "details": e.details(),
                    "applied": applied,
                    "dryRun": query.dry_run,
                }));
            }
        }
    }
    HttpResponse::Ok().json(ApplyAnswer {
        applied,
        dry_run: query.dry_run,
    })
}

pub(crate) async fn apply_one(
    manager: &Manager,
    caller: &Caller,
    manifest: Manifest,
    workspace: Option<String>,
    dry_run: bool,
) -> Result<Applied, ControlError> {
    apply_one_after(manager, caller, manifest, workspace, dry_run, None).await
}

/// `apply_one`, where a dry run of a resource may be checked against `pending_operator`: its
/// operator's manifest, dry-run above it in the same batch and not applied yet.
pub(crate) async fn apply_one_after(
    manager: &Manager,
    caller: &Caller,
    mut manifest: Manifest,
    workspace: Option<String>,
    dry_run: bool,
    pending_operator: Option<std::sync::Arc<Manifest>>,
) -> Result<Applied, ControlError> {
    let workspace = manifest.effective_workspace(workspace.as_deref());
    if let Some(ws) = &workspace {
        operator_contract::names::validate_name("workspace", ws)?;
    }
    match (&manifest.kind, &workspace) {
        (ManifestKind::Operator, _) => caller.require_admin("applying an operator")?,
        (_, Some(ws)) => caller.require_write(ws)?,
        (_, None) => return Err(ControlError::invalid("no workspace for the manifest")),
    }
    // The owner is the caller, or whom an admin names; a later apply by someone else keeps
    // the first owner.
    match manifest.owner.as_deref() {
        Some(named) if named != caller.name && !caller.admin => {
            return Err(ControlError::Forbidden(format!(
                "owner: user {} cannot apply as {named}; leave owner out or name yourself",
                caller.name
            )))
        }
        Some(_) if caller.admin => {}
        _ => manifest.owner = Some(caller.name.clone()),
    }
    let workspace = workspace.unwrap_or_default();
    match manifest.kind {
        ManifestKind::Operator => manager.send(ApplyOperator { manifest, dry_run }).await?,
        ManifestKind::Secret => {
            manager
                .send(ApplySecret {
                    manifest,
                    workspace,
                    dry_run,
                })
                .await?
        }
        ManifestKind::Resource => {
            manager
                .send(RouteResource {
                    manifest,
                    workspace,
                    dry_run,
                    applied_by: caller.name.clone(),
                    span: tracing::Span::current(),
                    pending_operator,
                })
                .await?
        }
    }
}

/// The records of a type the caller may see: in workspaces they have a role in (operators are
/// instance-level: every user sees them), and only their own unless `all`.
async fn list(
    manager: Manager,
    caller: &Caller,
    kind: ManifestKind,
    query: ListQuery,
) -> Result<HttpResponse, ControlError> {
    if let Some(ws) = &query.workspace {
        caller.require_read(ws)?;
    }
    let items = manager
        .send(ListStored {
            kind,
            workspace: query.workspace,
        })
        .await?;
    let items: Vec<Listed> = items
        .into_iter()
        .filter(|r| r.workspace().is_none_or(|ws| caller.can_read(ws)))
        .collect();
    let (all, me) = (query.all, caller.name.clone());
    let shown = move |r: &RecordView| all || r.owner.as_deref() == Some(me.as_str());
    if query.stream {
        return Ok(list_stream::json_lines(items, shown));
    }
    let items: Vec<RecordView> = items
        .into_iter()
        .filter_map(Listed::view)
        .filter(|r| shown(r))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items })))
}

async fn list_operators(
    manager: Manager,
    caller: Auth,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ControlError> {
    let query = ListQuery {
        workspace: None,
        ..query.into_inner()
    };
    list(manager, &caller, ManifestKind::Operator, query).await
}

async fn list_resources(
    manager: Manager,
    caller: Auth,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ControlError> {
    list(manager, &caller, ManifestKind::Resource, query.into_inner()).await
}

async fn list_secrets(
    manager: Manager,
    caller: Auth,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ControlError> {
    list(manager, &caller, ManifestKind::Secret, query.into_inner()).await
}

async fn get(
    manager: Manager,
    kind: ManifestKind,
    workspace: Option<String>,
    name: String,
    details: bool,
) -> Result<HttpResponse, ControlError> {
    let view = manager
        .send(GetRecord {
            kind,
            workspace,
            name,
            details,
            span: tracing::Span::current(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(view))
}

async fn get_operator(
    manager: Manager,
    path: web::Path<String>,
    q: web::Query<DetailsQuery>,
) -> Result<HttpResponse, ControlError> {
    get(
        manager,
        ManifestKind::Operator,
        None,
        path.into_inner(),
        q.details,
    )
    .await
}

async fn get_resource(
    manager: Manager,
    caller: Auth,
    path: web::Path<(String, String)>,
    q: web::Query<DetailsQuery>,
) -> Result<HttpResponse, ControlError> {
    let (ws, name) = path.into_inner();
    caller.require_read(&ws)?;
    get(manager, ManifestKind::Resource, Some(ws), name, q.details).await
}

async fn get_secret(
    manager: Manager,
    caller: Auth,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ControlError> {
    let (ws, name) = path.into_inner();
    caller.require_read(&ws)?;
    get(manager, ManifestKind::Secret, Some(ws), name, false).await
}

async fn delete_operator(
    manager: Manager,
    caller: Auth,
    path: web::Path<String>,
) -> Result<HttpResponse, ControlError> {
    caller.require_admin("deleting an operator")?;
    let applied = manager
        .send(DeleteOperator {
            name: path.into_inner(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(applied))
}

/// The default and the most of `tail` in a logs request.
const DEFAULT_LOG_TAIL: usize = 200;
const MAX_LOG_TAIL: usize = 10_000;

#[derive(Deserialize)]
struct LogsQuery {
    component: Option<String>,
    replica: Option<u32>,
    tail: Option<usize>,
    /// Then every new line, as JSON lines (see `watch::log_lines`).
    #[serde(default)]
    follow: bool,
}

/// The last lines each of an operator's replicas wrote: `{"replicas": [{component, replica, lines}]}`;
/// with `follow=true`, JSON lines `{"type": "line", component, replica, line}` from the tail on.
async fn operator_logs(
    manager: Manager,
    caller: Auth,
    path: web::Path<String>,
    q: web::Query<LogsQuery>,
) -> Result<HttpResponse, ControlError> {
    caller.require_admin("reading an operator's logs")?;
    let q = q.into_inner();
    let request = GetOperatorLogs {
        operator: path.into_inner(),
        component: q.component,
        replica: q.replica,
        tail: q.tail.unwrap_or(DEFAULT_LOG_TAIL).min(MAX_LOG_TAIL),
    };
    if q.follow {
        let lines = manager.send(FollowOperatorLogs(request)).await??;
        return Ok(HttpResponse::Ok()
            .content_type("application/x-ndjson")
            .streaming(crate::watch::log_lines(lines)));
    }
    let replicas = manager.send(request).await??;
    Ok(HttpResponse::Ok().json(json!({ "replicas": replicas })))
}

#[derive(Deserialize)]
struct RenderQuery {
    namespace: Option<String>,
}

/// An operator's components as Kubernetes objects, YAML, secret values redacted.
async fn render_operator(
    manager: Manager,
    caller: Auth,
    path: web::Path<String>,
    q: web::Query<RenderQuery>,
) -> Result<HttpResponse, ControlError> {
    caller.require_admin("rendering an operator")?;
    let namespace = q.into_inner().namespace;
    if let Some(ns) = &namespace {
        operator_contract::names::validate_name("namespace", ns)?;
    }
    let yaml = manager
        .send(RenderOperator {
            operator: path.into_inner(),
            namespace,
        })
        .await??;
    Ok(HttpResponse::Ok()
        .content_type("application/yaml")
        .body(yaml))
}

async fn delete_resource(
    manager: Manager,
    caller: Auth,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ControlError> {
    let (ws, name) = path.into_inner();
    caller.require_write(&ws)?;
    let key = EntityKey::new(ws, name)?;
    let applied = manager
        .send(DeleteResourceByKey {
            key,
            span: tracing::Span::current(),
        })
        .await??;
    Ok(HttpResponse::Ok().json(applied))
}

async fn delete_secret(
    manager: Manager,
    caller: Auth,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ControlError> {
    let (workspace, name) = path.into_inner();
    caller.require_write(&workspace)?;
    let applied = manager.send(DeleteSecret { workspace, name }).await??;
    Ok(HttpResponse::Ok().json(applied))
}

/// The caller as the orchestrator knows them.
async fn whoami(caller: Auth) -> HttpResponse {
    let caller = caller.into_inner();
    HttpResponse::Ok().json(json!({
        "name": caller.name,
        "admin": caller.admin,
        "roles": caller.roles,
    }))
}

async fn list_users(users: web::Data<Users>, caller: Auth) -> Result<HttpResponse, ControlError> {
    caller.require_admin("listing users")?;
    Ok(HttpResponse::Ok().json(json!({ "items": users.list() })))
}

#[derive(Deserialize)]
struct UserRequest {
    #[serde(default)]
    admin: bool,
    /// Workspace → `read` or `write`.
    #[serde(default)]
    roles: std::collections::BTreeMap<String, Role>,
}

/// Creates a user, or replaces one's roles; either way gives them a new key (the old ones stop
/// working), answered once and never stored.
async fn put_user(
    users: web::Data<Users>,
    caller: Auth,
    path: web::Path<String>,
    request: web::Json<UserRequest>,
) -> Result<HttpResponse, ControlError> {
    caller.require_admin("managing users")?;
    let name = path.into_inner();
    operator_contract::names::validate_name("user name", &name)?;
    let request = request.into_inner();
    for ws in request.roles.keys() {
        operator_contract::names::validate_name("roles: workspace", ws)?;
    }
    let key = crate::auth::new_key();
    let created_at = users
        .get(&name)
        .map(|u| u.created_at)
        .unwrap_or_else(chrono::Utc::now);
    let user = UserRecord {
        name,
        admin: request.admin,
        roles: request.roles,
        key_hashes: vec![crate::auth::hash_key(&key)],
        created_at,
    };
    let view = UserView::from(&user);
    users.put(user).await?;
    Ok(HttpResponse::Ok().json(json!({ "user": view, "apikey": key })))
}

async fn delete_user(
    users: web::Data<Users>,
    caller: Auth,
    path: web::Path<String>,
) -> Result<HttpResponse, ControlError> {
    caller.require_admin("managing users")?;
    let name = path.into_inner();
    if name == caller.name {
        return Err(ControlError::invalid(
            "you cannot delete yourself; another admin can",
        ));
    }
    users.delete(&name).await?;
    Ok(HttpResponse::Ok().json(json!({ "deleted": name })))
}
