//! `POST /api/v1/batch`: a text of many documents applied in one request, each document
//! checked and answered on its own, so one bad document refuses only itself.
//!
//! Order is kept where it matters: an operator or a secret is applied alone, after every
//! document before it and before any after it (a resource can name the operator or secret above
//! it); runs of resources between them are applied several at once, since each resource is
//! serialized by its own entity, except that a name met twice waits for the first. In a dry
//! run, the resources of an operator dry-run above them (and not applied yet) are checked
//! against that operator's manifest.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix_web::{web, HttpResponse, ResponseError};
use futures::StreamExt;
use operator_contract::api::{BatchAnswer, DocumentAnswer, ErrorBody};
use operator_contract::manifest::{BatchDocument, MAX_BATCH_BYTES};
use operator_contract::{Manifest, ManifestKind};

use super::{apply_one_after, ApplyQuery, Auth, Manager};
use crate::auth::Caller;
use crate::error::ControlError;

/// Resources of one run applied at once: enough to keep the store's writes pipelined, few
/// enough not to crowd the actors' mailboxes.
const RESOURCES_IN_FLIGHT: usize = 64;

/// Applies every document of the body and answers each.
pub(super) async fn apply(
    manager: Manager,
    caller: Auth,
    query: web::Query<ApplyQuery>,
    mut body: web::Payload,
) -> HttpResponse {
    let mut bytes = web::BytesMut::new();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) if bytes.len() + chunk.len() <= MAX_BATCH_BYTES => {
                bytes.extend_from_slice(&chunk)
            }
            Ok(_) => {
                return HttpResponse::PayloadTooLarge().json(ErrorBody {
                    error: format!("batch text is larger than {MAX_BATCH_BYTES} bytes"),
                    details: vec!["split it into several files".into()],
                })
            }
            Err(e) => {
                return ControlError::invalid(format!("cannot read the request body: {e}"))
                    .error_response()
            }
        }
    }
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => text,
        Err(e) => {
            return ControlError::invalid(format!("the batch text is not UTF-8: {e}"))
                .error_response()
        }
    };
    let documents = match Manifest::parse_batch(text) {
        Ok(documents) => documents,
        Err(e) => return ControlError::invalid(e.to_string()).error_response(),
    };
    let query = query.into_inner();
    let answers = apply_in_order(&manager, &caller, documents, &query).await;
    let failed = answers.iter().filter(|a| a.error.is_some()).count();
    HttpResponse::Ok().json(BatchAnswer {
        documents: answers,
        failed,
        dry_run: query.dry_run,
    })
}

/// A document ready to apply, with where its answer goes.
struct Ready {
    document: usize,
    kind: Option<String>,
    name: Option<String>,
    manifest: Manifest,
}

/// Applies the documents keeping their order where it matters (see the file's header); the
/// answers come back in the documents' order.
async fn apply_in_order(
    manager: &Manager,
    caller: &Caller,
    documents: Vec<BatchDocument>,
    query: &ApplyQuery,
) -> Vec<DocumentAnswer> {
    let mut answers: Vec<Option<DocumentAnswer>> = vec![None; documents.len()];
    let mut run: Vec<Ready> = Vec::new();
    let mut names_in_run: HashSet<(Option<String>, String)> = HashSet::new();
    // Operators a dry run passed above: what their resources below are checked against.
    let mut pending: Pending = HashMap::new();
    for BatchDocument {
        document,
        kind,
        name,
        manifest,
    } in documents
    {
        let manifest = match manifest {
            Ok(manifest) => manifest,
            Err(mut e) => {
                // The answer says the document already.
                e.document = None;
                answers[document - 1] = Some(refused(document, kind, name, e.to_string(), vec![]));
                continue;
            }
        };
        let ready = Ready {
            document,
            kind,
            name,
            manifest,
        };
        if ready.manifest.kind == ManifestKind::Resource {
            let key = (
                ready
                    .manifest
                    .effective_workspace(query.workspace.as_deref()),
                ready.manifest.name.clone(),
            );
            if names_in_run.insert(key.clone()) {
                run.push(ready);
                continue;
            }
            apply_run(
                manager,
                caller,
                std::mem::take(&mut run),
                query,
                &pending,
                &mut answers,
            )
            .await;
            names_in_run.clear();
            names_in_run.insert(key);
            run.push(ready);
            continue;
        }
        apply_run(
            manager,
            caller,
            std::mem::take(&mut run),
            query,
            &pending,
            &mut answers,
        )
        .await;
        names_in_run.clear();
        let document = ready.document;
        let operator = (query.dry_run && ready.manifest.kind == ManifestKind::Operator)
            .then(|| Arc::new(ready.manifest.clone()));
        apply_run(manager, caller, vec![ready], query, &pending, &mut answers).await;
        if let Some(operator) = operator {
            if answers[document - 1]
                .as_ref()
                .is_some_and(|a| a.error.is_none())
            {
                pending.insert(operator.name.clone(), operator);
            }
        }
    }
    apply_run(manager, caller, run, query, &pending, &mut answers).await;
    answers.into_iter().flatten().collect()
}

/// Operator manifests a dry run passed, by name.
type Pending = HashMap<String, Arc<Manifest>>;

/// Applies documents that do not depend on each other, several at once, and writes each
/// answer in its place.
async fn apply_run(
    manager: &Manager,
    caller: &Caller,
    run: Vec<Ready>,
    query: &ApplyQuery,
    pending: &Pending,
    answers: &mut [Option<DocumentAnswer>],
) {
    let mut applying = futures::stream::iter(run)
        .map(|ready| async move {
            let operator = ready
                .manifest
                .resource
                .as_ref()
                .and_then(|r| pending.get(&r.operator))
                .cloned();
            let result = apply_one_after(
                manager,
                caller,
                ready.manifest,
                query.workspace.clone(),
                query.dry_run,
                operator,
            )
            .await;
            (ready.document, ready.kind, ready.name, result)
        })
        .buffer_unordered(RESOURCES_IN_FLIGHT);
    while let Some((document, kind, name, result)) = applying.next().await {
        answers[document - 1] = Some(match result {
            Ok(applied) => DocumentAnswer {
                document,
                kind,
                name,
                applied: Some(applied),
                error: None,
            },
            Err(e) => refused(document, kind, name, e.to_string(), e.details().to_vec()),
        });
    }
}

fn refused(
    document: usize,
    kind: Option<String>,
    name: Option<String>,
    error: String,
    details: Vec<String>,
) -> DocumentAnswer {
    DocumentAnswer {
        document,
        kind,
        name,
        applied: None,
        error: Some(ErrorBody { error, details }),
    }
}
