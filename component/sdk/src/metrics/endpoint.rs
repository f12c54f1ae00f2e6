//! The metrics endpoint: `GET /metrics` (Prometheus text) and `GET /healthz` on
//! `0.0.0.0:METRIC_PORT`, served by one actix-web worker beside the component.

use std::net::{Ipv4Addr, SocketAddr};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use operator_telemetry::render_metrics;
use thiserror::Error;
use tracing::{info, warn};

use crate::config::METRIC_PORT_ENV;

/// The content type of the Prometheus text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why the metrics endpoint could not start.
#[derive(Debug, Error)]
#[error("{METRIC_PORT_ENV}={port}: cannot serve metrics on {address}: {reason}")]
pub struct MetricsEndpointError {
    port: u16,
    address: SocketAddr,
    // Not a `source`: the message already says it, and error chains would repeat it.
    reason: std::io::Error,
}

/// The running endpoint; it stops when dropped.
pub(crate) struct MetricsEndpoint {
    handle: ServerHandle,
    address: SocketAddr,
}

impl MetricsEndpoint {
    /// Listens on all interfaces at `port` (0 picks a free one) and serves in the background
    /// on the current Tokio runtime.
    pub fn start(port: u16) -> Result<Self, MetricsEndpointError> {
        let wanted = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        let failed = |reason| MetricsEndpointError {
            port,
            address: wanted,
            reason,
        };
        let listener = std::net::TcpListener::bind(wanted).map_err(failed)?;
        let address = listener.local_addr().map_err(failed)?;
        let server = HttpServer::new(|| {
            App::new()
                .route("/metrics", web::get().to(metrics))
                .route("/healthz", web::get().to(healthz))
        })
        .workers(1)
        // The component handles SIGTERM and SIGINT itself, and stops this server after draining.
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .map_err(failed)?
        .run();
        let handle = server.handle();
        tokio::spawn(async move {
            if let Err(e) = server.await {
                warn!(error = %e, "metrics endpoint failed");
            }
        });
        info!(%address, "serving metrics at /metrics");
        Ok(Self { handle, address })
    }

    /// Where it listens.
    #[cfg(test)]
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        // The stop command is sent at once; its completion need not be awaited.
        drop(self.handle.stop(false));
        tracing::debug!(address = %self.address, "metrics endpoint stopped");
    }
}

async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(PROMETHEUS_CONTENT_TYPE)
        .body(render_metrics())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(address: SocketAddr, path: &str) -> (u16, String, String) {
        operator_telemetry::install_tls_provider();
        let response = reqwest::get(format!("http://127.0.0.1:{}{path}", address.port()))
            .await
            .expect("answered");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (status, content_type, response.text().await.expect("a body"))
    }

    #[actix::test]
    async fn metrics_and_health_are_served_and_a_taken_port_is_refused_by_name() {
        operator_telemetry::metrics_handle();
        metrics::counter!("endpoint_test_total").increment(2);
        let endpoint = MetricsEndpoint::start(0).expect("starts");
        let address = endpoint.address();

        let (status, content_type, body) = get(address, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{body}"
        );
        assert!(body.contains("endpoint_test_total 2"), "{body}");
        let (status, _, body) = get(address, "/healthz").await;
        assert_eq!(status, 200, "{body}");

        let err = MetricsEndpoint::start(address.port())
            .err()
            .expect("the port is taken");
        assert!(
            err.to_string()
                .starts_with(&format!("METRIC_PORT={}:", address.port())),
            "{err}"
        );
    }
}
