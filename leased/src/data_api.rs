//! The Data API on the optional public listener (`[http] public`): `GET /networkinfo`, and
//! nothing else. The document is the one `orchestrator init --publish` (or `join
//! --publish`) put into the lease store, with its `bootnodes` replaced by the live list
//! (the enodes of the held leases, [`shared::enode::live`]) when there is one. It is read
//! again every [`REFRESH`]; a failed read keeps the last good copy, which is always what is
//! served. Responses carry an `ETag` (and answer `If-None-Match` with 304) and a
//! `Cache-Control` of the refresh period.
//!
//! Everything else the daemon serves (`/status`, `/metrics`, …) stays on the loopback
//! listener: the public one has no route to it.

use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use shared::lease::LeaseStore;
use tokio::net::TcpListener;

/// How often the document and the live bootnodes are read again.
pub const REFRESH: Duration = Duration::from_secs(15);
/// Largest document read from the store (the network info's own limit).
pub const MAX_DOCUMENT: usize = 1 << 20;

/// What is served: the last good document and its entity tag.
#[derive(Debug, Default)]
pub struct Served {
    current: Mutex<Option<(Bytes, String)>>,
}

impl Served {
    fn get(&self) -> Option<(Bytes, String)> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, body: Vec<u8>) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut h);
        let tag = format!("\"{:016x}-{:x}\"", h.finish(), body.len());
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some((Bytes::from(body), tag));
    }
}

/// The published document with the live bootnodes, or why not.
pub async fn render(store: &dyn LeaseStore) -> Result<Option<Vec<u8>>, String> {
    let Some(bytes) = store
        .get_network_info(MAX_DOCUMENT)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let mut doc: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("the published network info is not JSON: {e}"))?;
    if !doc.is_object() {
        return Err("the published network info is not a JSON object".into());
    }
    let records = store.list().await.map_err(|e| e.to_string())?;
    let live: Vec<String> = shared::enode::live(&records)
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    if !live.is_empty() {
        doc["bootnodes"] = live.into();
    }
    let mut out = serde_json::to_vec_pretty(&doc).expect("a JSON value serialises");
    out.push(b'\n');
    Ok(Some(out))
}

/// Reads the document now and every [`REFRESH`], keeping the last good copy.
pub async fn refresh(store: Arc<dyn LeaseStore>, served: Arc<Served>) {
    let mut said = None::<String>;
    loop {
        // A store that does not answer keeps the last good copy until the next round.
        let rendered = tokio::time::timeout(REFRESH, render(store.as_ref()))
            .await
            .unwrap_or_else(|_| Err(format!("the lease store did not answer within {REFRESH:?}")));
        match rendered {
            Ok(Some(body)) => {
                served.set(body);
                said = None;
            }
            Ok(None) => {
                let line = "no network info is published in the lease store yet \
                            (orchestrator init --publish); /networkinfo answers 503"
                    .to_string();
                if said.as_ref() != Some(&line) {
                    tracing::warn!("{line}");
                    said = Some(line);
                }
            }
            Err(e) => {
                let line = format!("/networkinfo keeps its last good copy: {e}");
                if said.as_ref() != Some(&line) {
                    tracing::warn!("{line}");
                    said = Some(line);
                }
            }
        }
        tokio::time::sleep(REFRESH).await;
    }
}

/// Serves `/networkinfo` on `listener` until the runtime shuts down.
pub async fn serve(listener: TcpListener, served: Arc<Served>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let served = served.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let served = served.clone();
                async move { Ok::<_, Infallible>(respond(&req, &served)) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(req: &Request<Incoming>, served: &Served) -> Response<Full<Bytes>> {
    if req.uri().path() != "/networkinfo" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found; this listener serves /networkinfo\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    let Some((body, tag)) = served.get() else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "no network info is published yet\n",
        );
    };
    let matches = req
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut r = match matches {
        true => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        }
        false => {
            let mut r = Response::new(Full::new(body));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
    };
    if let Ok(v) = HeaderValue::from_str(&tag) {
        r.headers_mut().insert(ETAG, v);
    }
    r.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=15"),
    );
    r
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
