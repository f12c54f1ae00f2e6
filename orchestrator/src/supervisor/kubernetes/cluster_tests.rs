//! The `kubernetes` runtime against a small fake API server that records every request:
//! server-side apply of each object with the orchestrator as field manager, pruning of what the
//! operator no longer has (and nothing else), and pods read back as replicas.

use std::sync::Mutex;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use super::*;
use crate::supervisor::spec::fixtures::{seed_secret, seed_spec};

/// One request the fake API server received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    content_type: String,
}

type Log = web::Data<Mutex<Vec<Seen>>>;

fn labels() -> Value {
    json!({"operator.io/operator": "adf-operator", "operator.io/component": "adf-controller",
           "app.kubernetes.io/managed-by": "operator-orchestrator"})
}

/// Answers as the API server would, enough for the runtime: applies echo the object, lists
/// hold one stale Deployment and two pods, deletes succeed.
async fn api(request: HttpRequest, body: web::Bytes, log: Log) -> HttpResponse {
    let seen = Seen {
        method: request.method().to_string(),
        path: request.path().to_string(),
        query: request.query_string().to_string(),
        content_type: request
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    };
    log.lock().map(|mut l| l.push(seen.clone())).ok();
    let ok = |v: Value| HttpResponse::Ok().json(v);
    match (
        seen.method.as_str(),
        seen.path.rsplit('/').next().unwrap_or_default(),
    ) {
        ("PATCH", _) => HttpResponse::Ok()
            .content_type("application/json")
            .body(body),
        ("DELETE", _) => {
            ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}))
        }
        ("GET", "deployments") => ok(
            json!({"kind": "DeploymentList", "apiVersion": "apps/v1", "metadata": {},
            "items": [{"metadata": {"name": "adf-operator-retired", "labels": labels()},
                       "spec": {"selector": {}, "template": {}}}]}),
        ),
        ("GET", "pods") => ok(
            json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [
            {"metadata": {"name": "adf-a", "labels": labels()},
             "status": {"containerStatuses": [{"name": "adf-controller", "image": "i", "imageID": "",
                 "ready": true, "restartCount": 0, "state": {"running": {}}}]}},
            {"metadata": {"name": "adf-b", "labels": labels()},
             "status": {"containerStatuses": [{"name": "adf-controller", "image": "i", "imageID": "",
                 "ready": false, "restartCount": 3,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 2, "reason": "Error"}}}]}}]}),
        ),
        ("GET", kind) => ok(
            json!({"kind": format!("{kind}List"), "apiVersion": "v1", "metadata": {}, "items": []}),
        ),
        _ => HttpResponse::NotFound().finish(),
    }
}

/// A fake API server on a free port, and a runtime pointed at it.
async fn fake_cluster() -> (KubeLauncher, Log) {
    let log: Log = web::Data::new(Mutex::new(Vec::new()));
    let data = log.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .default_service(web::to(api))
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .expect("a free port");
    let port = server.addrs()[0].port();
    actix_rt::spawn(server.run());
    let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().expect("a URL"));
    let client = kube::Client::try_from(config).expect("a client");
    let launcher = KubeLauncher {
        client: Some(client),
        namespace: "operators".into(),
        unavailable: None,
    };
    (launcher, log)
}

fn seen(log: &Log) -> Vec<Seen> {
    log.lock().map(|l| l.clone()).unwrap_or_default()
}

#[actix_rt::test]
async fn applying_patches_every_object_as_the_orchestrator_and_prunes_only_what_is_gone() {
    let (cluster, log) = fake_cluster().await;
    let secret = seed_secret(1, true, &[("AZURE_CLIENT_SECRET", "s3cr3t-value")]);
    cluster
        .apply("adf-operator", &[seed_spec(|_| {}, secret)])
        .await
        .expect("applied");
    let requests = seen(&log);
    let patches: Vec<&Seen> = requests.iter().filter(|s| s.method == "PATCH").collect();
    let paths: Vec<&str> = patches.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/namespaces/operators/secrets/adf-operator-user-system-adf-operator",
            "/apis/apps/v1/namespaces/operators/deployments/adf-operator-adf-controller",
            "/api/v1/namespaces/operators/services/adf-operator-adf-controller",
        ]
    );
    for patch in &patches {
        assert!(
            patch.query.contains("fieldManager=operator-orchestrator")
                && patch.query.contains("force=true"),
            "{patch:?}"
        );
        assert_eq!(patch.content_type, "application/apply-patch+yaml");
    }
    let lists: Vec<&Seen> = requests.iter().filter(|s| s.method == "GET").collect();
    assert_eq!(lists.len(), 3, "one list per kind: {requests:#?}");
    assert!(lists.iter().all(|l| l
        .query
        .contains("labelSelector=operator.io%2Foperator%3Dadf-operator")));
    let deletes: Vec<&str> = requests
        .iter()
        .filter(|s| s.method == "DELETE")
        .map(|s| s.path.as_str())
        .collect();
    assert_eq!(
        deletes,
        ["/apis/apps/v1/namespaces/operators/deployments/adf-operator-retired"]
    );
}

#[actix_rt::test]
async fn pods_read_back_as_running_or_restarting_replicas_with_their_last_exit() {
    let (cluster, _log) = fake_cluster().await;
    let replicas = cluster.replicas("adf-operator").await.expect("pods");
    assert_eq!(replicas.len(), 2);
    assert_eq!(
        (replicas[0].state, replicas[0].id.as_deref()),
        (ReplicaState::Running, Some("adf-a"))
    );
    let crashing = &replicas[1];
    assert_eq!(crashing.state, ReplicaState::Restarting);
    assert_eq!((crashing.replica, crashing.restarts), (1, 3));
    assert_eq!(crashing.exit_code, Some(2));
}
