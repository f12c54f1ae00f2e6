//! A small jobs platform over HTTP for the demo operator to drive in tests. It records every
//! call, so tests can count what the operator did to the outside world.
//!
//! It fences: a call carrying a term (header `X-Fencing-Term`) lower than the highest term it
//! has seen is refused with 409 Conflict and counted, so a deposed leader cannot act on it once
//! its successor has.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Clone)]
struct Job {
    generation: u64,
    spec: Value,
    started: Instant,
    started_at: chrono::DateTime<chrono::Utc>,
}

impl Job {
    fn view(&self, workspace: &str, name: &str) -> Value {
        let duration = Duration::from_millis(
            self.spec
                .get("durationMs")
                .and_then(Value::as_u64)
                .unwrap_or(0),
        );
        let fail = self
            .spec
            .get("fail")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let ended = self.started.elapsed() >= duration;
        let state = match (ended, fail) {
            (false, _) => "running",
            (true, false) => "succeeded",
            (true, true) => "failed",
        };
        let message = (ended && fail).then(|| {
            self.spec
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the job failed")
                .to_string()
        });
        json!({
            "workspace": workspace, "name": name, "generation": self.generation, "state": state,
            "message": message, "startedAt": self.started_at,
            "endedAt": ended.then(|| self.started_at + chrono::Duration::from_std(duration).unwrap_or_default()),
        })
    }
}

/// Every call the platform has seen, by key (`workspace/name`).
#[derive(Debug, Default, Clone)]
pub struct Calls {
    /// PUTs that started a job (a new job, or a new generation of one).
    pub starts: BTreeMap<String, u32>,
    /// The same starts by generation: a count above 1 is a job of that generation started again.
    pub starts_by_generation: BTreeMap<String, BTreeMap<u64, u32>>,
    /// PUTs of a generation already running: the idempotent no-ops.
    pub repeated_puts: BTreeMap<String, u32>,
    pub gets: BTreeMap<String, u32>,
    pub deletes: BTreeMap<String, u32>,
    /// Calls refused because their term was below the highest seen, by key.
    pub fenced: BTreeMap<String, u32>,
    /// Every call that carried a term: (key, term, when), in arrival order.
    pub terms: Vec<(String, u64, Instant)>,
    /// The term of the call that started each job (the last start of the key).
    pub started_by: BTreeMap<String, u64>,
    /// The highest term seen.
    pub highest_term: u64,
}

impl Calls {
    /// When a call of `term` first arrived.
    pub fn first_call_of_term(&self, term: u64) -> Option<Instant> {
        self.terms.iter().find(|(_, t, _)| *t == term).map(|c| c.2)
    }

    /// Calls of `term` that arrived after `after`.
    pub fn calls_of_term_after(&self, term: u64, after: Instant) -> usize {
        self.terms
            .iter()
            .filter(|(_, t, at)| *t == term && *at > after)
            .count()
    }
}

/// The header a caller's term comes in.
pub const FENCING_TERM_HEADER: &str = "X-Fencing-Term";

#[derive(Default)]
struct State {
    jobs: BTreeMap<String, Job>,
    calls: Calls,
}

impl State {
    /// Records the call's term; a refusal when it is below the highest seen.
    fn fence(&mut self, request: &HttpRequest, key: &str) -> Option<HttpResponse> {
        let term = request
            .headers()
            .get(FENCING_TERM_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())?;
        self.calls
            .terms
            .push((key.to_string(), term, Instant::now()));
        if term < self.calls.highest_term {
            *self.calls.fenced.entry(key.to_string()).or_default() += 1;
            return Some(HttpResponse::Conflict().json(json!({
                "error": "fenced", "term": term, "highestTerm": self.calls.highest_term
            })));
        }
        self.calls.highest_term = term;
        None
    }
}

type Shared = Arc<Mutex<State>>;

/// The running platform.
pub struct Platform {
    pub url: String,
    state: Shared,
    server: actix_web::dev::ServerHandle,
}

#[derive(Deserialize)]
struct PutJob {
    generation: u64,
    #[serde(default)]
    spec: Value,
}

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn put_job(
    request: HttpRequest,
    state: web::Data<Shared>,
    path: web::Path<(String, String)>,
    body: web::Json<PutJob>,
) -> HttpResponse {
    let (ws, name) = path.into_inner();
    let key = format!("{ws}/{name}");
    let mut s = lock(&state);
    if let Some(refused) = s.fence(&request, &key) {
        return refused;
    }
    let same = s
        .jobs
        .get(&key)
        .is_some_and(|j| j.generation == body.generation);
    if same {
        *s.calls.repeated_puts.entry(key.clone()).or_default() += 1;
    } else {
        *s.calls.starts.entry(key.clone()).or_default() += 1;
        *s.calls
            .starts_by_generation
            .entry(key.clone())
            .or_default()
            .entry(body.generation)
            .or_default() += 1;
        let term = s.calls.highest_term;
        s.calls.started_by.insert(key.clone(), term);
        let job = Job {
            generation: body.generation,
            spec: body.spec.clone(),
            started: Instant::now(),
            started_at: chrono::Utc::now(),
        };
        s.jobs.insert(key.clone(), job);
    }
    let view = s.jobs[&key].view(&ws, &name);
    HttpResponse::Ok().json(view)
}

async fn get_job(
    request: HttpRequest,
    state: web::Data<Shared>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (ws, name) = path.into_inner();
    let key = format!("{ws}/{name}");
    let mut s = lock(&state);
    if let Some(refused) = s.fence(&request, &key) {
        return refused;
    }
    *s.calls.gets.entry(key.clone()).or_default() += 1;
    match s.jobs.get(&key) {
        Some(job) => HttpResponse::Ok().json(job.view(&ws, &name)),
        None => HttpResponse::NotFound().json(json!({"error": "no such job"})),
    }
}

async fn delete_job(
    request: HttpRequest,
    state: web::Data<Shared>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let (ws, name) = path.into_inner();
    let key = format!("{ws}/{name}");
    let mut s = lock(&state);
    if let Some(refused) = s.fence(&request, &key) {
        return refused;
    }
    *s.calls.deletes.entry(key.clone()).or_default() += 1;
    match s.jobs.remove(&key) {
        Some(_) => HttpResponse::NoContent().finish(),
        None => HttpResponse::NotFound().json(json!({"error": "no such job"})),
    }
}

impl Platform {
    /// Starts the platform on a free loopback port, in its own thread.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1")
    }

    /// Starts the platform on a free port of address `ip` (a cluster's bridge, where the
    /// components on its hosts reach it), in its own thread.
    pub fn start_on(ip: &str) -> anyhow::Result<Self> {
        let state: Shared = Arc::default();
        let listener = std::net::TcpListener::bind((ip, 0))?;
        let url = format!("http://{}", listener.local_addr()?);
        let data = web::Data::new(state.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let system = actix_web::rt::System::new();
            system.block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .route("/jobs/{ws}/{name}", web::put().to(put_job))
                        .route("/jobs/{ws}/{name}", web::get().to(get_job))
                        .route("/jobs/{ws}/{name}", web::delete().to(delete_job))
                })
                .workers(1)
                .disable_signals()
                .listen(listener);
                match server {
                    Ok(server) => {
                        let server = server.run();
                        let _ = tx.send(Ok(server.handle()));
                        let _ = server.await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        });
        let server = rx.recv()??;
        Ok(Self { url, state, server })
    }

    /// A copy of every call recorded so far.
    pub fn calls(&self) -> Calls {
        lock(&self.state).calls.clone()
    }

    /// The jobs that exist now: key → generation.
    pub fn jobs(&self) -> BTreeMap<String, u64> {
        lock(&self.state)
            .jobs
            .iter()
            .map(|(key, job)| (key.clone(), job.generation))
            .collect()
    }

    /// How many jobs exist now.
    pub fn job_count(&self) -> usize {
        lock(&self.state).jobs.len()
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        // The stop command is sent at once; its future only reports completion.
        drop(self.server.stop(false));
    }
}
