//! The daemon's HTTP endpoints, on hyper, loopback by default:
//!
//! - `/healthz`: 200 while the control loop runs (its heartbeat is fresh), else 503;
//! - `/readyz`: 200 only while holding an identity with the client running, else 503;
//! - `/status`: JSON with state, identity, address, epoch, lease expires-in, last renew and
//!   fence deadline;
//! - `/metrics`: OpenMetrics text (`prometheus-client`).
//!
//! Read-only: nothing here can change what the daemon does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::machine::MonoTime;
use crate::telemetry::Telemetry;

/// A heartbeat older than this makes `/healthz` fail.
pub const HEARTBEAT_STALE: Duration = Duration::from_secs(5);

/// Binds `listen`; the caller reports a bind failure before the daemon says READY.
pub async fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(listen).await
}

/// Serves until the runtime shuts down.
pub async fn serve(listener: TcpListener, telemetry: Arc<Telemetry>, now: fn() -> MonoTime) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let telemetry = telemetry.clone();
                async move { Ok::<_, Infallible>(respond(&req, &telemetry, now())) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(req: &Request<Incoming>, telemetry: &Telemetry, now: MonoTime) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    let snapshot = telemetry.snapshot();
    match req.uri().path() {
        "/healthz" => {
            let fresh = snapshot
                .heartbeat
                .is_some_and(|h| now.saturating_duration_since(h) < HEARTBEAT_STALE);
            if fresh {
                text(StatusCode::OK, "ok\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "control loop stalled\n")
            }
        }
        "/readyz" => {
            if snapshot.serving {
                text(StatusCode::OK, &format!("{}\n", snapshot.status_line()))
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("{}\n", snapshot.status_line()),
                )
            }
        }
        "/status" => {
            let mut body = snapshot.to_json(now).to_string();
            body.push('\n');
            with_type(StatusCode::OK, body, "application/json")
        }
        "/metrics" => with_type(
            StatusCode::OK,
            telemetry.render_metrics(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /healthz, /readyz, /status or /metrics\n",
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    with_type(status, body.to_string(), "text/plain; charset=utf-8")
}

fn with_type(
    status: StatusCode,
    body: String,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
