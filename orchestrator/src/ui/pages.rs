//! The pages and the actions behind their forms. Each handler finds the signed-in user first;
//! reads and actions are checked with the same `Caller` rules as the API, and applies go
//! through the API's own `apply_one`.

use std::collections::{BTreeMap, BTreeSet};

use actix::Addr;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError as _};
use askama::Template;
use chrono::Utc;
use operator_contract::{EntityKey, Manifest, ManifestKind};
use serde::Deserialize;
use serde_json::Value;

use super::session::{cleared_cookie, session_cookie, Sessions, SignedIn};
use super::views::{age, duration_ms, encode_query, html, tone, Chrome, Time, UiError};
use crate::auth::{Caller, Users};
use crate::error::ControlError;
use crate::manager::{DeleteResourceByKey, GetHistory, GetRecord, ListRecords, OperatorManager};
use crate::records::RecordView;
use operator_contract::history::EventType;

type Manager = web::Data<Addr<OperatorManager>>;
type Page = Result<HttpResponse, UiError>;

/// The workspace the resources page opens on when the user may read it.
const DEFAULT_WORKSPACE: &str = "public";

async fn signed_in(
    request: &HttpRequest,
    sessions: &Sessions,
    users: &Users,
) -> Result<SignedIn, UiError> {
    sessions.signed_in(request, users).await
}

fn chrome(session: &SignedIn, title: String, section: &'static str, events: String) -> Chrome {
    Chrome {
        title,
        user: Some(session.caller.name.clone()),
        csrf: session.csrf.clone(),
        events,
        section,
    }
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// `/ui/`: the operators.
pub async fn home() -> HttpResponse {
    see_other("/ui/operators")
}

/// Any other `/ui/` path.
pub async fn not_found(request: HttpRequest) -> HttpResponse {
    UiError::Control(ControlError::NotFound(format!(
        "there is no page at {}",
        request.path()
    )))
    .error_response()
}

// ----- sign-in -----

#[derive(Template)]
#[template(path = "ui/sign_in.html")]
struct SignInPage {
    chrome: Chrome,
    next: String,
    error: String,
}

#[derive(Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// Only a page of this view is a place to come back to (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.contains("//") && !n.contains('\\') => n.into(),
        _ => "/ui/operators".into(),
    }
}

fn sign_in_page(status: StatusCode, next: String, error: String) -> HttpResponse {
    let page = SignInPage {
        chrome: Chrome {
            title: "Sign in".into(),
            user: None,
            csrf: String::new(),
            events: String::new(),
            section: "",
        },
        next,
        error,
    };
    html(status, &page)
}

pub async fn sign_in_form(query: web::Query<NextQuery>) -> HttpResponse {
    sign_in_page(
        StatusCode::OK,
        safe_next(query.next.as_deref()),
        String::new(),
    )
}

#[derive(Deserialize)]
pub struct SignInForm {
    apikey: String,
    next: Option<String>,
}

/// Checks the key like the API does, then keeps only a session naming the user.
pub async fn sign_in(
    request: HttpRequest,
    sessions: web::Data<Sessions>,
    users: web::Data<Users>,
    form: web::Form<SignInForm>,
) -> Page {
    // No session yet, so no token: a sign-in posted from another site's page is refused by
    // its origin instead.
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let info = request.connection_info();
        let own = format!("{}://{}", info.scheme(), info.host());
        if origin.as_bytes() != own.as_bytes() {
            return Err(UiError::Forgery);
        }
    }
    let next = safe_next(form.next.as_deref());
    let Some(caller) = users.authenticate(form.apikey.trim()) else {
        return Ok(sign_in_page(
            StatusCode::UNAUTHORIZED,
            next,
            "apikey: the API key is not valid".into(),
        ));
    };
    let id = sessions.create(&caller.name).await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, next))
        .insert_header((header::SET_COOKIE, session_cookie(&id, &request)))
        .finish())
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn sign_out(
    request: HttpRequest,
    sessions: web::Data<Sessions>,
    users: web::Data<Users>,
    form: web::Form<CsrfForm>,
) -> Page {
    let session = signed_in(&request, &sessions, &users).await?;
    session.check_csrf(&form.csrf)?;
    sessions.end(&session).await?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/ui/sign-in"))
        .insert_header((header::SET_COOKIE, cleared_cookie()))
        .finish())
}

// ----- operators -----

struct ComponentRow {
    name: String,
    /// The replicas its manifest asks for: what the scale form starts from.
    replicas: u32,
    running: usize,
    asked: String,
    leader: String,
    term: String,
}

struct OperatorRow {
    name: String,
    version: String,
    owner: String,
    status: String,
    tone: &'static str,
    resource_types: Vec<String>,
    runtime: String,
    components: Vec<ComponentRow>,
    warnings: Vec<String>,
    description: String,
    updated: Time,
}

#[derive(Template)]
#[template(path = "ui/operators.html")]
struct OperatorsPage {
    chrome: Chrome,
    operators: Vec<OperatorRow>,
    /// Admins may scale components.
    can_scale: bool,
}

pub async fn operators(
    request: HttpRequest,
    sessions: web::Data<Sessions>,
    users: web::Data<Users>,
    manager: Manager,
) -> Page {
    let session = signed_in(&request, &sessions, &users).await?;
    let records = manager
        .send(ListRecords {
            kind: ManifestKind::Operator,
            workspace: None,
        })
        .await?;
    let mut operators = Vec::new();
    for record in records {
        let view = match manager
            .send(GetRecord {
                kind: ManifestKind::Operator,
                workspace: None,
                name: record.name.clone(),
                details: true,
                span: tracing::Span::current(),
            })
            .await?
        {
            Ok(view) => view,
            // Deleted between the list and the get.
            Err(ControlError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        operators.push(operator_row(&view));
    }
    let page = OperatorsPage {
        chrome: chrome(
            &session,
            "Operators".into(),
            "operators",
            "/ui/events?collection=operators".into(),
        ),
        operators,
        can_scale: session.caller.admin,
    };
    Ok(html(StatusCode::OK, &page))
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn operator_row(view: &RecordView) -> OperatorRow {
    let details = view.details.clone().unwrap_or(Value::Null);
    let section = view.manifest.operator.as_ref();
    let components_view = &details["components"];
    let election = &details["election"];
    let replicas = components_view["replicas"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let asked: BTreeMap<String, u64> = components_view["desired"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            Some((
                d["component"].as_str()?.to_string(),
                d["replicas"].as_u64()?,
            ))
        })
        .collect();
    let mut warnings = Vec::new();
    if let Some(message) = components_view["message"].as_str() {
        warnings.push(message.to_string());
    }
    let components = section
        .map(|s| {
            s.components
                .iter()
                .map(|c| (c.name.clone(), c.replicas))
                .collect::<Vec<(String, u32)>>()
        })
        .unwrap_or_default()
        .into_iter()
        .map(|(name, replicas_asked)| {
            let running = replicas
                .iter()
                .filter(|r| r["component"] == name.as_str() && r["state"] == "running")
                .count();
            for r in replicas.iter().filter(|r| r["component"] == name.as_str()) {
                if r["state"] == "exited" || r["state"] == "restarting" {
                    warnings.push(format!(
                        "{name} replica {}: {} {}",
                        text(&r["replica"]),
                        text(&r["state"]),
                        text(&r["message"])
                    ));
                }
            }
            let leading = &election[name.as_str()];
            for key in ["warning", "message"] {
                if let Some(w) = leading[key].as_str() {
                    warnings.push(format!("{name}: {w}"));
                }
            }
            ComponentRow {
                replicas: replicas_asked,
                running,
                asked: asked.get(&name).map(u64::to_string).unwrap_or_default(),
                leader: text(&leading["leader"]),
                term: text(&leading["term"]),
                name,
            }
        })
        .collect();
    OperatorRow {
        name: view.name.clone(),
        version: view.version.clone(),
        owner: view.owner.clone().unwrap_or_default(),
        tone: tone(&view.status),
        status: view.status.clone(),
        resource_types: section
            .map(|s| s.resources.iter().map(|r| r.name.clone()).collect())
            .unwrap_or_default(),
        runtime: text(&components_view["runtime"]),
        components,
        warnings,
        description: view.manifest.description.clone().unwrap_or_default(),
        updated: Time::of(view.updated_at),
    }
}

#[derive(Deserialize)]
pub struct ScaleForm {
    csrf: String,
    component: String,
    replicas: u32,
}

/// Sets a component's replicas as `opctl scale` does: the stored manifest applied again with
/// the new count, through the API's own apply.
pub async fn scale(
    request: HttpRequest,
    sessions: web::Data<Sessions>,
    users: web::Data<Users>,
    manager: Manager,
    path: web::Path<String>,
    form: web::Form<ScaleForm>,
) -> Page {
    let session = signed_in(&request, &sessions, &users).await?;
    session.check_csrf(&form.csrf)?;
    session
        .caller
        .require_admin("scaling an operator's component")?;
    let operator = path.into_inner();
    let view = manager
        .send(GetRecord {
            kind: ManifestKind::Operator,
            workspace: None,
            name: operator.clone(),
            details: false,
            span: tracing::Span::current(),
        })
        .await??;
    let mut manifest = view.manifest;
    let component = manifest
        .operator
        .as_mut()
        .and_then(|s| s.components.iter_mut().find(|c| c.name == form.component))
        .ok_or_else(|| {
            ControlError::NotFound(format!(
                "operator {operator} has no component {}",
                form.component
            ))
        })?;
    component.replicas = form.replicas;
    crate::api::apply_one(&manager, &session.caller, manifest, None, false).await?;
    Ok(see_other(&format!(
        "/ui/operators#operator-{}",
        encode_query(&operator)
    )))
}

// ----- resources -----

/// The workspaces the user may read: their roles', or for an admin every workspace in use.
async fn readable_workspaces(manager: &Manager, caller: &Caller) -> Result<Vec<String>, UiError> {
    let mut workspaces: BTreeSet<String> = caller.roles.keys().cloned().collect();
    if caller.admin {
        workspaces.insert(DEFAULT_WORKSPACE.into());
        for kind in [ManifestKind::Resource, ManifestKind::Secret] {
            let records = manager
                .send(ListRecords {
                    kind,
                    workspace: None,
                })
                .await?;
            workspaces.extend(records.into_iter().filter_map(|r| r.workspace));
        }
    }
    Ok(workspaces.into_iter().collect())
}

#[derive(Template)]
#[template(path = "ui/no_workspace.html")]
struct NoWorkspacePage {
    chrome: Chrome,
}

#[derive(Deserialize)]
pub struct WorkspaceQuery {
    ws: Option<String>,
}

/// The resources of the picked workspace, else of the default one, else of the first one the
/// user may read.
pub async fn resources_home(
    request: HttpRequest,
    sessions: web::Data<Sessions>,
    users: web::Data<Users>,
    manager: Manager,
    query: web::Query<WorkspaceQuery>,
) -> Page {
    let session = signed_in(&request, &sessions, &users).await?;
    let workspaces = readable_workspaces(&manager, &session.caller).await?;
    let first = query
        .ws
        .as_ref()
        .or(workspaces.iter().find(|w| *w == DEFAULT_WORKSPACE))
        .or(workspaces.first());
    match first {
        Some(ws) => Ok(see_other(&format!(
            "/ui/workspaces/{}/resources",
            encode_query(ws)
        ))),
        None => Ok(html(
            StatusCode::OK,
            &NoWorkspacePage {
                chrome: chrome(&session, "Resources".into(), "resources", String::new()),
            },
        )),
    }
}

#[derive(Deserialize, Default)]
pub struct ResourceFilter {
    #[serde(default)]
    operator: String,
    #[serde(default, rename = "type")]
    resource_type: String,
    #[serde(default)]
    runtime: String,
    #[serde(default)]
    q: String,
}

struct ResourceRow {
    name: String,
    href: String,
    resource_type: String,
    operator: String,
    status: String,
    tone: &'static str,
    runtime: String,
    runtime_tone: &'static str,
    conditions: Vec<(String, String, &'static str)>,
    age: String,
    created: Time,
    owner: String,
}

#[derive(Template)]
#[template(path = "ui/resources.html")]
struct ResourcesPage {
    chrome: Chrome,
    workspace: String,
    workspaces: Vec<String>,
    filter: ResourceFilter,
    operators: Vec<String>,
    types: Vec<String>,
    runtimes: Vec<String>,
    counts: Vec<(String, usize, &'static str)>,
    rows: Vec<ResourceRow>,
    total: usize,
    can_write: bool,
}

fn resource_operator(view: &RecordView) -> (String, String) {
    view.manifest
        .resource
        .as_ref()
        .map(|r| (r.operator.clone(), r.resource_type.clone()))
        .unwrap_or_default()
}

pub async fn resources(
    request: HttpRequest,
    sessions: web::Data<Sessions>,
    users: web::Data<Users>,
    manager: Manager,
    path: web::Path<String>,
    filter: web::Query<ResourceFilter>,
) -> Page {
    let session = signed_in(&request, &sessions, &users).await?;
    let workspace = path.into_inner();
    operator_contract::names::validate_name("workspace", &workspace).map_err(ControlError::from)?;
    session.caller.require_read(&workspace)?;
    let filter = filter.into_inner();
    let records = manager
        .send(ListRecords {
            kind: ManifestKind::Resource,
            workspace: Some(workspace.clone()),
        })
        .await?;
    let mut operators = BTreeSet::new();
    let mut types = BTreeSet::new();
    let mut runtimes = BTreeSet::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let now = Utc::now();
    let needle = filter.q.trim().to_lowercase();
    let total = records.len();
    let mut rows = Vec::new();
    for view in &records {
        let (operator, resource_type) = resource_operator(view);
        let runtime = view.runtime.clone().unwrap_or_default();
        operators.insert(operator.clone());
        types.insert(resource_type.clone());
        if !runtime.is_empty() {
            runtimes.insert(runtime.clone());
        }
        *counts
            .entry(if runtime.is_empty() {
                "none".into()
            } else {
                runtime.clone()
            })
            .or_default() += 1;
        let matches = (filter.operator.is_empty() || filter.operator == operator)
            && (filter.resource_type.is_empty() || filter.resource_type == resource_type)
            && (filter.runtime.is_empty() || filter.runtime == runtime)
            && (needle.is_empty()
                || view.name.to_lowercase().contains(&needle)
                || view
                    .manifest
                    .description
                    .as_deref()
                    .is_some_and(|d| d.to_lowercase().contains(&needle))
                || view
                    .owner
                    .as_deref()
                    .is_some_and(|o| o.to_lowercase().contains(&needle)));
        if !matches {
            continue;
        }
        rows.push(ResourceRow {
            href: format!(
                "/ui/workspaces/{}/resources/{}",
                encode_query(&workspace),
                encode_query(&view.name)
            ),
            name: view.name.clone(),
            resource_type,
            operator,
            tone: tone(&view.status),
            status: view.status.clone(),
            runtime_tone: tone(&runtime),
            runtime,
            conditions: view
                .conditions
                .iter()
                .map(|c| {
                    let status = format!("{:?}", c.status);
                    let t = tone(&status);
                    (c.kind.clone(), status, t)
                })
                .collect(),
            age: age(view.created_at, now),
            created: Time::of(view.created_at),
            owner: view.owner.clone().unwrap_or_default(),
        });
    }
    let page = ResourcesPage {
        chrome: chrome(
            &session,
            format!("Resources in {workspace}"),
            "resources",
            format!(
                "/ui/events?collection=resources&workspace={}",
                encode_query(&workspace)
            ),
        ),
        workspaces: readable_workspaces(&manager, &session.caller).await?,
        can_write: session.caller.can_write(&workspace),
        workspace,
        filter,
        operators: operators.into_iter().collect(),
        types: types.into_iter().collect(),
        runtimes: runtimes.into_iter().collect(),
        counts: counts
            .into_iter()
            .map(|(runtime, n)| {
                let t = tone(&runtime);
                (runtime, n, t)
            })
            .collect(),
        rows,
        total,
    };
    Ok(html(StatusCode::OK, &page))
}

// ----- one resource -----

struct ActivityRow {
    name: String,
    activity_type: String,
    status: String,
    tone: &'static str,
    duration: String,
    start: Option<Time>,
    error: String,
}

/// A pipeline run's details, when the resource's component reports them.
struct RunView {
    run_id: String,
    status: String,
    tone: &'static str,
    start: Option<Time>,
    end: Option<Time>,
    duration: String,
    monitoring_url: String,
    activities: Vec<ActivityRow>,
}

struct ConditionRow {
    kind: String,
    status: String,
    tone: &'static str,
    reason: String,
    message: String,
    since: Time,
}

/// One event of a resource's history.
struct HistoryRow {
    time: Time,
    kind: &'static str,
    tone: &'static str,
    reason: String,
    message: String,
    generation: u64,
}

/// Events shown on a resource's page, newest first; `opctl events` has all it keeps.
const HISTORY_SHOWN: usize = 20;

#[derive(Template)]
#[template(path = "ui/resource.html")]
struct ResourcePage {
    chrome: Chrome,
    workspace: String,
    list_href: String,
    delete_href: String,
    name: String,
    description: String,
    operator: String,
    resource_type: String,
    owner: String,
    status: String,
    tone: &'static str,
    runtime: String,
    runtime_tone: &'static str,
    message: String,
    generation: u64,
    created: Time,
    updated: Time,
    conditions: Vec<ConditionRow>,
    history: Vec<HistoryRow>,
    /// Why the history could not be read, when it could not.
    history_error: String,
    run: Option<RunView>,
    details_yaml: String,
    details_error: String,
    spec_yaml: String,
    manifest_yaml: String,
    can_write: bool,
}

fn yaml(value: &impl serde::Serialize) -> String {
    serde_norway::to_string(value).unwrap_or_else(|e| format!("# cannot show as YAML: {e}"))
}

fn run_view(details: &Value) -> Option<RunView> {
    let run_id = details["runId"].as_str()?.to_string();
    let status = text(&details["status"]);
    // Only a link to Azure's own pages is shown as one.
    let monitoring_url = details["monitoringUrl"]
        .as_str()
        .filter(|u| u.starts_with("https://"))
        .unwrap_or_default()
        .to_string();
    let activities = details["activityRuns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let status = text(&a["status"]);
            ActivityRow {
                name: text(&a["name"]),
                activity_type: text(&a["type"]),
                tone: tone(&status),
                status,
                duration: a["durationInMs"]
                    .as_u64()
                    .map(duration_ms)
                    .unwrap_or_default(),
                start: a["activityRunStart"].as_str().and_then(Time::parse),
                error: match &a["error"] {
                    Value::Null => String::new(),
                    e => [text(&e["errorCode"]), text(&e["message"])]
                        .into_iter()
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join(": "),
                },
            }
        })
        .collect();
    Some(RunView {
        run_id,
        tone: tone(&status),
        status,
        start: details["runStart"].as_str().and_then(Time::parse),
        end: details["runEnd"].as_str().and_then(Time::parse),
        duration: details["durationInMs"]
            .as_u64()
            .map(duration_ms)
            .unwrap_or_default(),
        monitoring_url,
        activities,
    })
}

fn resource_path(ws: &str, name: &str) -> String {
    format!(
        "/ui/workspaces/{}/resources/{}",
        encode_query(ws),
        encode_query(name)
    )
}

async fn get_resource(
    manager: &Manager,
    caller: &Caller,
    ws: &str,
    name: &str,
    details: bool,
) -> Result<RecordView, UiError> {
    operator_contract::names::validate_name("workspace", ws).map_err(ControlError::from)?;
    caller.require_read(ws)?;
    Ok(manager
        .send(GetRecord {
            kind: ManifestKind::Resource,
            workspace: Some(ws.to_string()),
            name: name.to_string(),
            details,
            span: tracing::Span::current(),
        })
        .await??)
}

pub async fn resource(
    request: HttpRequest,
    sessions: web::Data<Sessions>,
    users: web::Data<Users>,
    manager: Manager,
    path: web::Path<(String, String)>,
) -> Page {
    let session = signed_in(&request, &sessions, &users).await?;
    let (ws, name) = path.into_inner();
    let view = get_resource(&manager, &session.caller, &ws, &name, true).await?;
    let (operator, resource_type) = resource_operator(&view);
    // The component's live answer, else what it last reported.
    let reported = view
        .entity_status
        .as_ref()
        .map(|s| Value::Object(s.details.clone()))
        .unwrap_or(Value::Null);
    let live = view.details.clone().unwrap_or(Value::Null);
    // The run as the component answers it now, else as it last reported it.
    let run = run_view(&live).or_else(|| run_view(&reported));
    let details = if live.is_null() { reported } else { live };
    let runtime = view.runtime.clone().unwrap_or_default();
    let key = EntityKey::new(ws.clone(), name.clone()).map_err(ControlError::from)?;
    let (history, history_error) = match manager.send(GetHistory).await {
        Ok(history) => match history.latest(&key, HISTORY_SHOWN).await {
            Ok(events) => (events, String::new()),
            Err(e) => (Vec::new(), e.to_string()),
        },
        Err(e) => (Vec::new(), e.to_string()),
    };
    let page = ResourcePage {
        chrome: chrome(
            &session,
            format!("{name} in {ws}"),
            "resources",
            format!(
                "/ui/events?collection=resources&workspace={}&name={}",
                encode_query(&ws),
                encode_query(&name)
            ),
        ),
        list_href: format!("/ui/workspaces/{}/resources", encode_query(&ws)),
        delete_href: format!("{}/delete", resource_path(&ws, &name)),
        can_write: session.caller.can_write(&ws),
        description: view.manifest.description.clone().unwrap_or_default(),
        owner: view.owner.clone().unwrap_or_default(),
        tone: tone(&view.status),
        status: view.status.clone(),
        runtime_tone: tone(&runtime),
        runtime,
        message: view.message.clone().unwrap_or_default(),
        generation: view.generation,
        created: Time::of(view.created_at),
        updated: Time::of(view.updated_at),
        conditions: view
            .conditions
            .iter()
            .map(|c| {
                let status = format!("{:?}", c.status);
                ConditionRow {
                    kind: c.kind.clone(),
                    tone: tone(&status),
                    status,
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    since: Time::of(c.last_transition_time),
                }
            })
            .collect(),
        history: history
            .into_iter()
            .map(|e| {
                let warning = e.kind == EventType::Warning;
                HistoryRow {
                    time: Time::of(e.time),
                    kind: if warning { "Warning" } else { "Normal" },
                    tone: if warning { "bad" } else { "plain" },
                    reason: e.reason,
                    message: e.message,
                    generation: e.generation,
                }
            })
            .collect(),
        history_error,
        run,
        details_yaml: match &details {
            Value::Null => String::new(),
            Value::Object(map) if map.is_empty() => String::new(),
            d => yaml(d),
        },
        details_error: view.details_error.clone().unwrap_or_default(),
        spec_yaml: view
            .manifest
            .resource
            .as_ref()
            .map(|r| yaml(&r.spec))
            .unwrap_or_default(),
        manifest_yaml: yaml(&view.manifest),
        operator,
        resource_type,
        workspace: ws,
        name,
    };
    Ok(html(StatusCode::OK, &page))
}

// ----- delete -----

#[derive(Template)]
#[template(path = "ui/delete.html")]
struct DeletePage {
    chrome: Chrome,
    workspace: String,
    name: String,
    back_href: String,
    action: String,
}

pub async fn delete_form(
    request: HttpRequest,
    sessions: web::Data<Sessions>,
    users: web::Data<Users>,
    manager: Manager,
    path: web::Path<(String, String)>,
) -> Page {
    let session = signed_in(&request, &sessions, &users).await?;
    let (ws, name) = path.into_inner();
    get_resource(&manager, &session.caller, &ws, &name, false).await?;
    session.caller.require_write(&ws)?;
    let href = resource_path(&ws, &name);
    let page = DeletePage {
        chrome: chrome(
            &session,
            format!("Delete {name}?"),
            "resources",
            String::new(),
        ),
        action: format!("{href}/delete"),
        back_href: href,
        workspace: ws,
        name,
    };
    Ok(html(StatusCode::OK, &page))
}

/// Deletes as `DELETE /api/v1/workspaces/{ws}/resources/{name}` does.
pub async fn delete(
    request: HttpRequest,
    sessions: web::Data<Sessions>,
    users: web::Data<Users>,
    manager: Manager,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> Page {
    let session = signed_in(&request, &sessions, &users).await?;
    session.check_csrf(&form.csrf)?;
    let (ws, name) = path.into_inner();
    session.caller.require_write(&ws)?;
    let key = EntityKey::new(ws.clone(), name).map_err(ControlError::from)?;
    manager
        .send(DeleteResourceByKey {
            key,
            span: tracing::Span::current(),
        })
        .await??;
    Ok(see_other(&format!(
        "/ui/workspaces/{}/resources",
        encode_query(&ws)
    )))
}

// ----- apply -----

#[derive(Template)]
#[template(path = "ui/apply.html")]
struct ApplyPage {
    chrome: Chrome,
    manifest: String,
    workspace: String,
    workspaces: Vec<String>,
    dry_run: bool,
    /// One line per document applied.
    applied: Vec<(String, &'static str)>,
    error: String,
    details: Vec<String>,
}

pub async fn apply_form(
    request: HttpRequest,
    sessions: web::Data<Sessions>,
    users: web::Data<Users>,
    manager: Manager,
) -> Page {
    let session = signed_in(&request, &sessions, &users).await?;
    let page = ApplyPage {
        workspaces: readable_workspaces(&manager, &session.caller).await?,
        chrome: chrome(&session, "Apply a manifest".into(), "apply", String::new()),
        manifest: String::new(),
        workspace: DEFAULT_WORKSPACE.into(),
        dry_run: false,
        applied: Vec::new(),
        error: String::new(),
        details: Vec::new(),
    };
    Ok(html(StatusCode::OK, &page))
}

#[derive(Deserialize)]
pub struct ApplyForm {
    csrf: String,
    manifest: String,
    #[serde(default)]
    workspace: String,
    dry_run: Option<String>,
}

/// Applies every document in order, as `opctl apply` does; stops at the first failure.
pub async fn apply(
    request: HttpRequest,
    sessions: web::Data<Sessions>,
    users: web::Data<Users>,
    manager: Manager,
    form: web::Form<ApplyForm>,
) -> Page {
    let session = signed_in(&request, &sessions, &users).await?;
    let form = form.into_inner();
    session.check_csrf(&form.csrf)?;
    let dry_run = form.dry_run.is_some();
    let workspace = Some(form.workspace.trim().to_string()).filter(|w| !w.is_empty());
    let mut applied = Vec::new();
    let mut error = String::new();
    let mut details = Vec::new();
    match Manifest::parse_all(&form.manifest) {
        Err(e) => error = e.to_string(),
        Ok(manifests) => {
            let count = manifests.len();
            for (i, manifest) in manifests.into_iter().enumerate() {
                let what = format!("{} {}", manifest.kind, manifest.name);
                match crate::api::apply_one(
                    &manager,
                    &session.caller,
                    manifest,
                    workspace.clone(),
                    dry_run,
                )
                .await
                {
                    Ok(a) => {
                        let line = format!(
                            "{} {}{} {}{}",
                            a.kind,
                            a.workspace.map(|w| format!("{w}/")).unwrap_or_default(),
                            a.name,
                            a.outcome,
                            if dry_run { " (dry run)" } else { "" }
                        );
                        applied.push((line, tone(&a.outcome.to_string())));
                    }
                    Err(e) => {
                        let prefix = if count > 1 {
                            format!("document {}: ", i + 1)
                        } else {
                            String::new()
                        };
                        error = format!("{prefix}{what}: {e}");
                        details = e.details().to_vec();
                        break;
                    }
                }
            }
        }
    }
    let status = if error.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let page = ApplyPage {
        workspaces: readable_workspaces(&manager, &session.caller).await?,
        chrome: chrome(&session, "Apply a manifest".into(), "apply", String::new()),
        manifest: form.manifest,
        workspace: workspace.unwrap_or_default(),
        dry_run,
        applied,
        error,
        details,
    };
    Ok(html(status, &page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pages_of_this_view_are_come_back_to() {
        assert_eq!(safe_next(Some("/ui/operators")), "/ui/operators");
        assert_eq!(
            safe_next(Some("https://elsewhere.example/")),
            "/ui/operators"
        );
        assert_eq!(safe_next(Some("/ui//elsewhere.example")), "/ui/operators");
        assert_eq!(safe_next(None), "/ui/operators");
    }

    #[test]
    fn a_pipeline_runs_details_show_its_activities_and_only_an_https_link() {
        let details = serde_json::json!({
            "runId": "r1", "status": "Succeeded", "durationInMs": 1500,
            "runStart": "2026-12-06T14:00:00Z",
            "monitoringUrl": "javascript:alert(1)",
            "activityRuns": [{"name": "Copy data", "type": "Copy", "status": "Succeeded",
                              "durationInMs": 900}]
        });
        let run = run_view(&details).expect("a run");
        assert_eq!(run.run_id, "r1");
        assert_eq!(run.duration, "1.5 s");
        assert!(run.monitoring_url.is_empty());
        assert_eq!(run.activities[0].name, "Copy data");
        assert_eq!(run.activities[0].tone, "ok");
        assert!(run_view(&serde_json::json!({"other": 1})).is_none());
    }
}
