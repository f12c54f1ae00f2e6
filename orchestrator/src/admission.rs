//! Admission: a bound on the API requests under way at once. Past it, a request is answered
//! at once with 429 and `Retry-After` instead of queueing in the actors' mailboxes, so an
//! overload costs the callers a retry, not the orchestrator's memory, and no accepted request
//! is dropped: what was admitted runs to its end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};

use crate::error::ControlError;

/// How long a refused caller is told to wait.
const RETRY_AFTER_S: u64 = 1;

/// Counter `{route}`: requests refused because too many were under way.
pub const REFUSED_BUSY: &str = "orchestrator_http_requests_refused_busy_total";
/// Gauge: requests under way.
pub const IN_FLIGHT: &str = "orchestrator_http_requests_in_flight";

/// The bound and the count; shared by every HTTP worker.
#[derive(Debug, Clone)]
pub struct Admission {
    limit: usize,
    in_flight: Arc<AtomicUsize>,
}

/// Holds one place until dropped (when the response is ready, or the caller went away).
struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        let now = self.0.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!(IN_FLIGHT).set(now as f64);
    }
}

impl Admission {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn try_enter(&self) -> Result<Place, usize> {
        let mut current = self.in_flight.load(Ordering::Acquire);
        loop {
            if current >= self.limit {
                return Err(current);
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    metrics::gauge!(IN_FLIGHT).set((current + 1) as f64);
                    return Ok(Place(self.in_flight.clone()));
                }
                Err(seen) => current = seen,
            }
        }
    }
}

/// Middleware: admits the request or answers 429. Health checks and scrapes always pass, so
/// an overloaded orchestrator still shows that it lives and what it is doing.
pub async fn admit(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let exempt = matches!(request.path(), "/healthz" | "/readyz" | "/metrics");
    let admission = request.app_data::<web::Data<Admission>>().cloned();
    let place = match admission {
        Some(admission) if !exempt => match admission.try_enter() {
            Ok(place) => Some(place),
            Err(in_flight) => {
                let route = request
                    .match_pattern()
                    .unwrap_or_else(|| "unmatched".into());
                metrics::counter!(REFUSED_BUSY, "route" => route).increment(1);
                let refusal = ControlError::Busy {
                    in_flight,
                    retry_after_s: RETRY_AFTER_S,
                };
                return Ok(request.into_response(refusal.error_response()));
            }
        },
        _ => None,
    };
    let response = next.call(request).await;
    drop(place);
    Ok(response?.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_limited_and_given_back() {
        let admission = Admission::new(2);
        let a = admission.try_enter().expect("first");
        let _b = admission.try_enter().expect("second");
        assert_eq!(admission.try_enter().err(), Some(2));
        drop(a);
        assert!(admission.try_enter().is_ok());
    }
}
