//! A test double of the Azure Key Vault data plane, secrets only, for tests that cannot
//! reach a real vault: no Key Vault emulator exists. It speaks the service's REST wire
//! protocol closely enough that the official clients (azure-keyvault-secrets for Python,
//! azure_security_keyvault_secrets for Rust) run against it unchanged, except that they
//! must be told not to match the challenge resource against the host (the double lives on
//! 127.0.0.1, not `*.vault.azure.net`).
//!
//! It owns one HTTPS listener on 127.0.0.1 with a certificate from a CA made fresh for each
//! start, an in-memory vault, and a record of every request. It must never listen beyond
//! loopback, never speak plain HTTP, and never be linked into a shipped binary.
//!
//! Faithful (checked against recorded exchanges with the real service in the Azure SDK
//! repositories and the SDK sources):
//! - the authentication challenge: a request without a bearer token gets 401 with
//!   `WWW-Authenticate: Bearer authorization="…/{tenant}", resource="https://vault.azure.net"`
//!   and `{"error":{"code":"Unauthorized","message":"AKV10000: …"}}`, before its body is
//!   read (clients send the first request bodiless on purpose); any bearer token is then
//!   accepted;
//! - routes, JSON field names, Unix-second timestamps, 32-hex-digit versions, ids of the form
//!   `{vault}/secrets/{name}/{version}`, `recoveryId`/`deletedDate`/`scheduledPurgeDate`;
//! - status and error codes: 404 `SecretNotFound` (two message shapes: live and deleted),
//!   403 `Forbidden` with inner `SecretDisabled` for reads of a disabled version, 409
//!   `Conflict` with inner `ObjectIsDeletedButRecoverable` for a set on a soft-deleted name,
//!   400 `BadParameter` for invalid names, 405 `MethodNotAllowed`, 204 for purge, 429
//!   `Throttled`;
//! - paging: at most 25 items, `nextLink` an absolute URL carrying `api-version`,
//!   `$skiptoken` and the caller's `maxresults`, `null` on the last page; versions of an
//!   unknown secret are an empty list, not 404;
//! - object names compare case-insensitively; recovery returns the bundle without its value;
//!   a PATCH or GET with an empty version (`/secrets/{name}/`) means the latest version;
//!   429 responses do not count towards the throttle window. The throttle always sends
//!   `Retry-After`; the service may not (one captured 429 of a vault carries none), which
//!   [`KvDouble::fail_next`] with no delay reproduces.
//!
//! Deliberately not modelled: `nbf`/`exp` enforcement (stored and echoed only), access
//! policies and RBAC (any bearer token is fully privileged), purge protection, the
//! asynchronous completion of delete, recover and purge (they take effect at once), the
//! service's empty pages, backup and restore (501), certificate-backed (`managed`) secrets,
//! `outContentType`, and real token validation. The messages of errors the recordings do not
//! show (missing `api-version`, oversized value, too many tags, malformed JSON, bad
//! `maxresults` or `$skiptoken`, unknown route, body too large) are our own wording under
//! the service's error shape.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use crate::tls::TestCa;

/// The tenant named in the authentication challenge (made up). Fixed, so tests can check
/// that the client asked its credential for a token in this tenant.
pub const TENANT_ID: &str = "11111111-2222-3333-4444-555555555555";
/// The resource named in the authentication challenge, as the public cloud's vaults send it.
pub const CHALLENGE_RESOURCE: &str = "https://vault.azure.net";
/// Largest secret value the service accepts, in bytes (25 KiB).
pub const MAX_VALUE_BYTES: usize = 25 * 1024;
/// Most tags an object may carry.
pub const MAX_TAGS: usize = 15;
/// Largest request body the double reads; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The service's page size, and the largest `maxresults` it accepts.
pub const SERVICE_PAGE_SIZE: usize = 25;
/// The secret a managed-identity token request must carry in `X-IDENTITY-HEADER` (the App
/// Service flavour of managed identity: `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`).
pub const IDENTITY_HEADER_SECRET: &str = "kv-double-identity-header";
/// Where the double's token endpoints live, beside the vault routes: Entra ID's
/// client-credentials endpoint `/{tenant}/oauth2/v2.0/token` (point `authority_host` at
/// [`KvDouble::url`]) and the managed-identity endpoint `/msi/token` (point
/// `IDENTITY_ENDPOINT` at [`KvDouble::msi_endpoint`]).
pub const MSI_PATH: &str = "/msi/token";

const UNAUTHORIZED_MESSAGE: &str = "AKV10000: Request is missing a Bearer or PoP token.";
const THROTTLED_MESSAGE: &str = "Request was not processed because too many requests were \
                                 received. Reason: VaultRequestTypeLimitReached";
/// The service sends its build in this header; ours is made up, in the same dotted form.
const SERVICE_VERSION: &str = "1.9.0.0";
const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";
const SECONDS_PER_DAY: u64 = 86_400;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an oversized body the double reads and throws away before answering 413.
const DRAIN_LIMIT_BYTES: usize = 4 * 1024 * 1024;
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// How a [`KvDouble`] behaves beyond the defaults of a fresh vault.
#[derive(Debug, Clone)]
pub struct KvDoubleOptions {
    /// Largest page any list returns (1 to 25); the service's is 25. Small values make
    /// clients page.
    pub page_size: usize,
    /// Writes (PUT, PATCH, DELETE, POST) allowed per sliding window before 429.
    pub throttle: Option<Throttle>,
    /// Soft-delete retention in days: 90 gives `Recoverable+Purgeable`, anything else
    /// `CustomizedRecoverable+Purgeable`, as vaults with a custom retention report.
    pub recoverable_days: u32,
}

impl Default for KvDoubleOptions {
    fn default() -> Self {
        Self {
            page_size: SERVICE_PAGE_SIZE,
            throttle: None,
            recoverable_days: 90,
        }
    }
}

/// A write budget: at most `max_writes` accepted writes within any `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// Writes accepted within one window.
    pub max_writes: usize,
    /// Length of the sliding window.
    pub window: Duration,
}

/// One request as the double saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// The bearer token was one the double's own token endpoints issued.
    pub token_issued_here: bool,
    /// `GET`, `PUT`, …
    pub method: String,
    /// The path, as sent (percent-encoding kept).
    pub path: String,
    /// The query string without `?`, as sent.
    pub query: String,
    /// The `api-version` query parameter, if there was one.
    pub api_version: Option<String>,
    /// Whether it carried `Authorization: Bearer <non-empty>`.
    pub authorized: bool,
    /// The status the double answered with.
    pub status: u16,
}

/// One version of a secret, as the double holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// 32 lower-case hex digits.
    pub version: String,
    /// `attributes.enabled`.
    pub enabled: bool,
    /// `attributes.created`, Unix seconds.
    pub created: u64,
    /// The secret value (test data only).
    pub value: String,
}

/// A running Key Vault double; stops when dropped.
pub struct KvDouble {
    addr: SocketAddr,
    shared: Arc<Shared>,
    ca_file: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    // Holds the CA file; removed with the double.
    _dir: tempfile::TempDir,
}

impl fmt::Debug for KvDouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvDouble")
            .field("url", &self.url())
            .field("ca_file", &self.ca_file)
            .field("running", &self.thread.is_some())
            .finish_non_exhaustive()
    }
}

impl KvDouble {
    /// Starts a double with the default options.
    pub fn start() -> KvDouble {
        Self::start_with(KvDoubleOptions::default())
    }

    /// Starts a double on 127.0.0.1 (a free port) in a thread with its own runtime, so sync
    /// and async tests alike can use it. Panics if it cannot.
    pub fn start_with(options: KvDoubleOptions) -> KvDouble {
        assert!(
            (1..=SERVICE_PAGE_SIZE).contains(&options.page_size),
            "page_size must be 1 to {SERVICE_PAGE_SIZE}, not {}",
            options.page_size
        );
        if let Some(t) = options.throttle {
            assert!(
                t.max_writes > 0 && !t.window.is_zero(),
                "a throttle needs max_writes > 0 and a non-zero window: {t:?}"
            );
        }
        let listener =
            std::net::TcpListener::bind(("127.0.0.1", 0)).expect("kv double: bind a loopback port");
        listener
            .set_nonblocking(true)
            .expect("kv double: make the listener non-blocking");
        let addr = listener.local_addr().expect("kv double: local address");

        let tls = TestCa::generate("kv-double");
        let dir = tempfile::tempdir().expect("kv double: create a temporary directory");
        let ca_file = dir.path().join("kv-double-ca.pem");
        tls.write_ca_file(&ca_file);
        let acceptor = TlsAcceptor::from(tls.server_config);

        let shared = Arc::new(Shared {
            base_url: format!("https://{addr}"),
            options,
            inner: Mutex::new(Inner::default()),
        });
        let (shutdown, shutdown_rx) = oneshot::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("kv-double".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("kv-double-worker")
                    .enable_all()
                    .build()
                    .expect("kv double: build a tokio runtime");
                runtime.block_on(serve(listener, acceptor, thread_shared, shutdown_rx));
                // Dropping the runtime here cancels the connection tasks still running.
            })
            .expect("kv double: spawn its thread");

        KvDouble {
            addr,
            shared,
            ca_file,
            shutdown: Some(shutdown),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// `https://127.0.0.1:PORT`, without a trailing slash: the vault URL to give clients.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The PEM file of this run's CA, which clients must trust.
    /// The managed-identity token endpoint, for `IDENTITY_ENDPOINT`.
    pub fn msi_endpoint(&self) -> String {
        format!("{}{MSI_PATH}", self.url())
    }

    /// Soft-deletes `name` as `DELETE /secrets/{name}` would, for tests that need a
    /// deleted-but-recoverable name without a client. False if there was no such secret.
    pub fn delete_secret(&self, name: &str) -> bool {
        let days = u64::from(self.shared.options.recoverable_days);
        let now = unix_now();
        let mut inner = self.shared.lock();
        let key = name.to_ascii_lowercase();
        let Some(secret) = inner.vault.live.remove(&key) else {
            return false;
        };
        inner.vault.deleted.insert(
            key,
            DeletedSecret {
                secret,
                deleted_date: now,
                scheduled_purge_date: now + days * SECONDS_PER_DAY,
            },
        );
        true
    }

    /// The `client_id` each managed-identity token request named, in order (`None` for a
    /// system-assigned identity).
    pub fn msi_client_ids(&self) -> Vec<Option<String>> {
        self.shared.lock().msi_client_ids.clone()
    }

    /// How many tokens the double's token endpoints issued.
    pub fn tokens_issued(&self) -> usize {
        self.shared.lock().issued.len()
    }

    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Every request so far, in the order the double answered them.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The versions of `name` (live or soft-deleted), oldest first; empty if there is none.
    pub fn versions(&self, name: &str) -> Vec<VersionInfo> {
        let inner = self.shared.lock();
        let key = name.to_ascii_lowercase();
        let secret = inner
            .vault
            .live
            .get(&key)
            .or_else(|| inner.vault.deleted.get(&key).map(|d| &d.secret));
        secret
            .map(|s| {
                s.versions
                    .iter()
                    .map(|v| VersionInfo {
                        version: v.version.clone(),
                        enabled: v.enabled,
                        created: v.created,
                        value: v.value.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many 429 responses the double has sent, from its throttle or from
    /// [`KvDouble::fail_next`].
    pub fn throttled_count(&self) -> usize {
        self.shared.lock().throttled
    }

    /// Answers the next `n` authorized requests with `status` (and `Retry-After` if given)
    /// instead of serving them, replacing any fault still pending. Requests without a token
    /// get their 401 challenge as usual and do not use up the fault.
    pub fn fail_next(&self, n: usize, status: u16, retry_after: Option<u64>) {
        let status = StatusCode::from_u16(status)
            .unwrap_or_else(|e| panic!("fail_next: {status} is not an HTTP status: {e}"));
        self.shared.lock().fault = (n > 0).then_some(Fault {
            remaining: n,
            status,
            retry_after,
        });
    }

    /// Stops the listener and closes open connections; idempotent.
    pub fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() && !std::thread::panicking() {
                panic!("kv double: its server thread panicked");
            }
        }
    }
}

impl Drop for KvDouble {
    fn drop(&mut self) {
        self.stop();
    }
}

/// State shared by the handle and the server's connections.
struct Shared {
    base_url: String,
    options: KvDoubleOptions,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A handler that panicked mid-update leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct Inner {
    vault: Vault,
    requests: Vec<RecordedRequest>,
    /// When each write inside the current throttle window was accepted.
    writes: VecDeque<Instant>,
    fault: Option<Fault>,
    throttled: usize,
    /// Tokens the token endpoints handed out.
    issued: std::collections::BTreeSet<String>,
    /// The `client_id` of every managed-identity token request (`None`: system-assigned).
    msi_client_ids: Vec<Option<String>>,
}

struct Fault {
    remaining: usize,
    status: StatusCode,
    retry_after: Option<u64>,
}

/// Secrets keyed by lower-cased name: Key Vault object names are case-insensitive.
#[derive(Default)]
struct Vault {
    live: BTreeMap<String, Secret>,
    deleted: BTreeMap<String, DeletedSecret>,
    /// Orders versions by creation, for listing and paging.
    next_seq: u64,
}

struct Secret {
    /// The name as first created.
    name: String,
    /// Oldest first; the last one is the latest.
    versions: Vec<Version>,
}

struct DeletedSecret {
    secret: Secret,
    deleted_date: u64,
    scheduled_purge_date: u64,
}

struct Version {
    version: String,
    seq: u64,
    value: String,
    content_type: Option<String>,
    tags: Option<Map<String, Value>>,
    enabled: bool,
    nbf: Option<i64>,
    exp: Option<i64>,
    created: u64,
    updated: u64,
}

impl Secret {
    fn latest(&self) -> &Version {
        self.versions.last().expect("a stored secret has a version")
    }

    fn version(&self, version: &str) -> Option<&Version> {
        let wanted = version.to_ascii_lowercase();
        self.versions.iter().find(|v| v.version == wanted)
    }
}

async fn serve(
    listener: std::net::TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut shutdown: oneshot::Receiver<()>,
) {
    let listener =
        tokio::net::TcpListener::from_std(listener).expect("kv double: adopt the listener");
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                // Out of descriptors or similar: back off rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
            else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            });
            // Connection errors (a client hanging up) are the client's business.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// An answer before the common headers are added.
struct Reply {
    status: StatusCode,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(status: StatusCode, body: Value) -> Self {
        Reply {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }

    fn ok(body: Value) -> Self {
        Self::json(StatusCode::OK, body)
    }

    fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self::json(
            status,
            json!({ "error": { "code": code, "message": message.into() } }),
        )
    }

    fn error_with_inner(status: StatusCode, code: &str, message: String, inner: &str) -> Self {
        Self::json(
            status,
            json!({ "error": { "code": code, "message": message, "innererror": { "code": inner } } }),
        )
    }

    fn bad_parameter(message: impl Into<String>) -> Self {
        Self::error(StatusCode::BAD_REQUEST, "BadParameter", message)
    }

    fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let params = parse_query(&query);
    let api_version = param(&params, "api-version").map(str::to_owned);
    let authorized = has_bearer_token(&req);
    let bearer = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .map(|(_, t)| t.trim().to_owned());
    let client_request_id = req
        .headers()
        .get("x-ms-client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);

    let reply = respond(shared, req, &params, api_version.as_deref(), authorized).await;

    let status = reply.status;
    let mut response = Response::new(Full::new(match &reply.body {
        Some(body) => Bytes::from(serde_json::to_vec(body).expect("JSON values serialise")),
        None => Bytes::new(),
    }));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if reply.body.is_some() {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE));
    }
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    headers.insert("pragma", HeaderValue::from_static("no-cache"));
    headers.insert("expires", HeaderValue::from_static("-1"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        "x-ms-keyvault-service-version",
        HeaderValue::from_static(SERVICE_VERSION),
    );
    headers.insert("x-ms-keyvault-region", HeaderValue::from_static("local"));
    if let Ok(v) = HeaderValue::from_str(&random_uuid()) {
        headers.insert("x-ms-request-id", v);
    }
    if let Some(id) = client_request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        headers.insert("x-ms-client-request-id", id);
    }
    for (name, value) in reply.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }

    let mut inner = shared.lock();
    if status == StatusCode::TOO_MANY_REQUESTS {
        inner.throttled += 1;
    }
    let token_issued_here = bearer.is_some_and(|t| inner.issued.contains(&t));
    inner.requests.push(RecordedRequest {
        token_issued_here,
        method: method.to_string(),
        path,
        query,
        api_version,
        authorized,
        status: status.as_u16(),
    });
    response
}

/// The token endpoints (see [`MSI_PATH`]); `None` for any other path. They issue a random
/// token per request and remember it, so a test can tell that a client authenticated
/// through its real credential rather than any bearer string.
async fn token_endpoint(
    shared: &Shared,
    req: &Request<Incoming>,
    params: &[(String, String)],
) -> Option<Reply> {
    let path = req.uri().path();
    let entra = path.ends_with("/oauth2/v2.0/token") && req.method() == Method::POST;
    let msi = path == MSI_PATH && req.method() == Method::GET;
    if !entra && !msi {
        return None;
    }
    let token = format!("kvdouble-{}", random_uuid());
    if msi {
        let client_id = param(params, "client_id").map(str::to_owned);
        shared.lock().msi_client_ids.push(client_id);
    }
    let reply = if msi {
        let secret = req
            .headers()
            .get("x-identity-header")
            .and_then(|v| v.to_str().ok());
        match (secret, param(params, "resource")) {
            (Some(IDENTITY_HEADER_SECRET), Some(resource)) => Reply::ok(json!({
                "access_token": token,
                "expires_on": (unix_now() + 3600).to_string(),
                "resource": resource,
                "token_type": "Bearer",
            })),
            (Some(IDENTITY_HEADER_SECRET), None) => Reply::error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "resource is required",
            ),
            _ => Reply::error(
                StatusCode::UNAUTHORIZED,
                "invalid_request",
                "the X-IDENTITY-HEADER secret is missing or wrong",
            ),
        }
    } else {
        // The client-credentials grant; the form body (client id and secret) is not checked:
        // the double trusts any caller, as it trusts any bearer token.
        Reply::ok(json!({
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": token,
        }))
    };
    if reply.status == StatusCode::OK {
        shared.lock().issued.insert(token);
    }
    Some(reply)
}

fn has_bearer_token<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .is_some_and(|(scheme, token)| {
            scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()
        })
}

/// Which operation a request asks for, once its path and method are understood.
enum Route {
    ListSecrets,
    SetSecret(String),
    GetSecret(String, Option<String>),
    UpdateSecret(String, Option<String>),
    DeleteSecret(String),
    ListVersions(String),
    ListDeleted,
    GetDeleted(String),
    PurgeDeleted(String),
    RecoverDeleted(String),
}

async fn respond(
    shared: &Shared,
    req: Request<Incoming>,
    params: &[(String, String)],
    api_version: Option<&str>,
    authorized: bool,
) -> Reply {
    if let Some(reply) = token_endpoint(shared, &req, params).await {
        return reply;
    }
    // Before anything else, and before reading the body: clients send their first request
    // bodiless to collect this challenge.
    if !authorized {
        return Reply::error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            UNAUTHORIZED_MESSAGE,
        )
        .header(
            "www-authenticate",
            format!(
                "Bearer authorization=\"https://login.microsoftonline.com/{TENANT_ID}\", \
                     resource=\"{CHALLENGE_RESOURCE}\""
            ),
        );
    }
    if let Some(reply) = injected_fault(shared) {
        return reply;
    }
    let Some(api_version) = api_version.filter(|v| !v.is_empty()) else {
        return Reply::bad_parameter("The api-version query parameter is required.");
    };
    let route = match route(req.method(), req.uri().path()) {
        Ok(route) => route,
        Err(reply) => return reply,
    };
    let is_write = matches!(
        *req.method(),
        Method::PUT | Method::PATCH | Method::DELETE | Method::POST
    );
    if is_write {
        if let Some(reply) = throttled(shared) {
            return reply;
        }
    }
    let body = match route {
        Route::SetSecret(_) | Route::UpdateSecret(..) => match read_json_body(req).await {
            Ok(body) => Some(body),
            Err(reply) => return reply,
        },
        _ => None,
    };
    // Paging parameters mean something only to lists; other routes ignore them.
    let paging = || Paging::from_params(shared, params, api_version);
    let now = unix_now();
    let mut inner = shared.lock();
    let vault = &mut inner.vault;
    let ctx = Ctx {
        base: &shared.base_url,
        options: &shared.options,
    };
    match route {
        Route::ListSecrets => paging().map_or_else(|e| e, |p| list_secrets(&ctx, vault, &p)),
        Route::SetSecret(name) => set_secret(&ctx, vault, &name, body.unwrap_or_default(), now),
        Route::GetSecret(name, version) => get_secret(&ctx, vault, &name, version.as_deref()),
        Route::UpdateSecret(name, version) => update_secret(
            &ctx,
            vault,
            &name,
            version.as_deref(),
            body.unwrap_or_default(),
            now,
        ),
        Route::DeleteSecret(name) => delete_secret(&ctx, vault, &name, now),
        Route::ListVersions(name) => {
            paging().map_or_else(|e| e, |p| list_versions(&ctx, vault, &name, &p))
        }
        Route::ListDeleted => paging().map_or_else(|e| e, |p| list_deleted(&ctx, vault, &p)),
        Route::GetDeleted(name) => match vault.deleted.get(&name.to_ascii_lowercase()) {
            Some(deleted) => Reply::ok(deleted_bundle(&ctx, deleted)),
            None => deleted_not_found(&name),
        },
        Route::PurgeDeleted(name) => match vault.deleted.remove(&name.to_ascii_lowercase()) {
            Some(_) => Reply {
                status: StatusCode::NO_CONTENT,
                body: None,
                headers: Vec::new(),
            },
            None => deleted_not_found(&name),
        },
        Route::RecoverDeleted(name) => recover_secret(&ctx, vault, &name),
    }
}

fn injected_fault(shared: &Shared) -> Option<Reply> {
    let mut inner = shared.lock();
    let fault = inner.fault.as_mut()?;
    fault.remaining -= 1;
    let (status, retry_after) = (fault.status, fault.retry_after);
    if fault.remaining == 0 {
        inner.fault = None;
    }
    let reply = match status {
        StatusCode::TOO_MANY_REQUESTS => Reply::error(status, "Throttled", THROTTLED_MESSAGE),
        StatusCode::SERVICE_UNAVAILABLE => Reply::error(
            status,
            "ServiceUnavailable",
            "The service is temporarily unavailable (injected by the test).",
        ),
        _ => Reply::error(
            status,
            status.canonical_reason().unwrap_or("Error"),
            format!("Injected failure {} (by the test).", status.as_u16()),
        ),
    };
    Some(match retry_after {
        Some(secs) => reply.header("retry-after", secs.to_string()),
        None => reply,
    })
}

/// Admits a write or answers 429. Throttled writes do not count towards the window, as the
/// service documents.
fn throttled(shared: &Shared) -> Option<Reply> {
    let throttle = shared.options.throttle?;
    let now = Instant::now();
    let mut inner = shared.lock();
    while inner
        .writes
        .front()
        .is_some_and(|t| now.duration_since(*t) >= throttle.window)
    {
        inner.writes.pop_front();
    }
    if inner.writes.len() < throttle.max_writes {
        inner.writes.push_back(now);
        return None;
    }
    let oldest = *inner.writes.front().expect("the window is full");
    let wait = throttle.window.saturating_sub(now.duration_since(oldest));
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Some(
        Reply::error(
            StatusCode::TOO_MANY_REQUESTS,
            "Throttled",
            THROTTLED_MESSAGE,
        )
        .header(RETRY_AFTER.as_str(), secs.max(1).to_string()),
    )
}

fn route(method: &Method, path: &str) -> Result<Route, Reply> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let not_allowed = || {
        Reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("HTTP {method} not allowed"),
        )
    };
    match segments.as_slice() {
        ["secrets"] | ["secrets", ""] => match *method {
            Method::GET => Ok(Route::ListSecrets),
            _ => Err(not_allowed()),
        },
        ["secrets", "restore"] | ["secrets", _, "backup"] if *method == Method::POST => {
            Err(Reply::error(
                StatusCode::NOT_IMPLEMENTED,
                "NotImplemented",
                "Backup and restore are not modelled by the Key Vault double.",
            ))
        }
        ["secrets", name] => {
            let name = valid_name(name)?;
            match *method {
                Method::PUT => Ok(Route::SetSecret(name)),
                Method::GET => Ok(Route::GetSecret(name, None)),
                Method::DELETE => Ok(Route::DeleteSecret(name)),
                _ => Err(not_allowed()),
            }
        }
        ["secrets", name, "versions"] if *method == Method::GET => {
            Ok(Route::ListVersions(valid_name(name)?))
        }
        ["secrets", name, version] => {
            let name = valid_name(name)?;
            let version = (!version.is_empty()).then(|| version.to_string());
            match *method {
                Method::GET => Ok(Route::GetSecret(name, version)),
                Method::PATCH => Ok(Route::UpdateSecret(name, version)),
                _ => Err(not_allowed()),
            }
        }
        ["deletedsecrets"] | ["deletedsecrets", ""] => match *method {
            Method::GET => Ok(Route::ListDeleted),
            _ => Err(not_allowed()),
        },
        ["deletedsecrets", name] => {
            let name = valid_name(name)?;
            match *method {
                Method::GET => Ok(Route::GetDeleted(name)),
                Method::DELETE => Ok(Route::PurgeDeleted(name)),
                _ => Err(not_allowed()),
            }
        }
        ["deletedsecrets", name, "recover"] => {
            let name = valid_name(name)?;
            match *method {
                Method::POST => Ok(Route::RecoverDeleted(name)),
                _ => Err(not_allowed()),
            }
        }
        _ => Err(Reply::error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("No Key Vault secrets operation is served at {path}."),
        )),
    }
}

/// Secret names: 1 to 127 of `[0-9a-zA-Z-]`.
fn valid_name(name: &str) -> Result<String, Reply> {
    let ok = (1..=127).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(name.to_owned())
    } else {
        Err(Reply::bad_parameter(format!(
            "The request URI contains an invalid name: {name}"
        )))
    }
}

async fn read_json_body(req: Request<Incoming>) -> Result<Map<String, Value>, Reply> {
    let too_large = || {
        Reply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("The request body exceeds {MAX_BODY_BYTES} bytes."),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > DRAIN_LIMIT_BYTES as u64) {
        return Err(too_large());
    }
    let body = match tokio::time::timeout(BODY_TIMEOUT, read_body(req.into_body())).await {
        Ok(Ok(ReadBody::Complete(bytes))) => bytes,
        Ok(Ok(ReadBody::TooLarge)) => return Err(too_large()),
        Ok(Err(e)) => {
            return Err(Reply::bad_parameter(format!(
                "The request body could not be read: {e}"
            )))
        }
        Err(_) => {
            return Err(Reply::error(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeout",
                "The request body did not arrive in time.",
            ))
        }
    };
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Reply::bad_parameter(
            "The request body must be a JSON object.",
        )),
        Err(e) => Err(Reply::bad_parameter(format!(
            "The request body is not valid JSON: {e}"
        ))),
    }
}

enum ReadBody {
    Complete(Vec<u8>),
    TooLarge,
}

/// Reads up to [`MAX_BODY_BYTES`]. A larger body is still read to its end (up to
/// [`DRAIN_LIMIT_BYTES`]) and discarded, so that a client that writes its whole body before
/// reading sees the 413 instead of a reset connection.
async fn read_body(mut body: Incoming) -> Result<ReadBody, hyper::Error> {
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        seen += data.len();
        if seen <= MAX_BODY_BYTES {
            kept.extend_from_slice(&data);
        } else if seen > DRAIN_LIMIT_BYTES {
            break;
        }
    }
    Ok(if seen > MAX_BODY_BYTES {
        ReadBody::TooLarge
    } else {
        ReadBody::Complete(kept)
    })
}

/// What a list request asked for: where to start and how many to return.
struct Paging {
    /// The caller's `maxresults`, echoed into `nextLink`.
    max_results: Option<usize>,
    page_size: usize,
    skip_token: Option<String>,
    api_version: String,
}

impl Paging {
    fn from_params(
        shared: &Shared,
        params: &[(String, String)],
        api_version: &str,
    ) -> Result<Self, Reply> {
        let max_results = match param(params, "maxresults") {
            None => None,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=SERVICE_PAGE_SIZE).contains(&n) => Some(n),
                _ => {
                    return Err(Reply::bad_parameter(format!(
                        "maxresults must be an integer from 1 to {SERVICE_PAGE_SIZE}: {raw}"
                    )))
                }
            },
        };
        let skip_token = match param(params, "$skiptoken") {
            None => None,
            Some(raw) => match hex::decode(raw)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
            {
                Some(marker) => Some(marker),
                None => return Err(Reply::bad_parameter(format!("Invalid $skiptoken: {raw}"))),
            },
        };
        Ok(Paging {
            max_results,
            page_size: max_results
                .unwrap_or(SERVICE_PAGE_SIZE)
                .min(shared.options.page_size),
            skip_token,
            api_version: api_version.to_owned(),
        })
    }

    /// The items after the skip token, at most a page of them, and the `nextLink` value:
    /// an absolute URL to the rest, or `null`. `items` are `(marker, item)` sorted by marker.
    fn page(&self, base: &str, path: &str, items: Vec<(String, Value)>) -> Value {
        let mut rest = items
            .into_iter()
            .filter(|(marker, _)| self.skip_token.as_ref().is_none_or(|after| marker > after))
            .peekable();
        let mut page = Vec::new();
        let mut last_marker = None;
        while page.len() < self.page_size {
            let Some((marker, item)) = rest.next() else {
                break;
            };
            page.push(item);
            last_marker = Some(marker);
        }
        let next_link = match (rest.peek(), last_marker) {
            (Some(_), Some(marker)) => {
                let mut link = format!(
                    "{base}{path}?api-version={}&$skiptoken={}",
                    self.api_version,
                    hex::encode(marker)
                );
                if let Some(n) = self.max_results {
                    link.push_str(&format!("&maxresults={n}"));
                }
                Value::String(link)
            }
            _ => Value::Null,
        };
        json!({ "value": page, "nextLink": next_link })
    }
}

/// What every operation needs besides the vault.
struct Ctx<'a> {
    base: &'a str,
    options: &'a KvDoubleOptions,
}

impl Ctx<'_> {
    fn recovery_level(&self) -> &'static str {
        if self.options.recoverable_days == 90 {
            "Recoverable+Purgeable"
        } else {
            "CustomizedRecoverable+Purgeable"
        }
    }

    fn attributes(&self, v: &Version) -> Value {
        let mut a = Map::new();
        a.insert("enabled".into(), json!(v.enabled));
        if let Some(nbf) = v.nbf {
            a.insert("nbf".into(), json!(nbf));
        }
        if let Some(exp) = v.exp {
            a.insert("exp".into(), json!(exp));
        }
        a.insert("created".into(), json!(v.created));
        a.insert("updated".into(), json!(v.updated));
        a.insert("recoveryLevel".into(), json!(self.recovery_level()));
        a.insert(
            "recoverableDays".into(),
            json!(self.options.recoverable_days),
        );
        Value::Object(a)
    }

    /// SecretBundle; `with_value` is false for updates, deletes and recovery, as the
    /// service answers them.
    fn bundle(&self, name: &str, v: &Version, with_value: bool) -> Map<String, Value> {
        let mut b = Map::new();
        if with_value {
            b.insert("value".into(), json!(v.value));
        }
        if let Some(ct) = &v.content_type {
            b.insert("contentType".into(), json!(ct));
        }
        b.insert(
            "id".into(),
            json!(format!("{}/secrets/{name}/{}", self.base, v.version)),
        );
        b.insert("attributes".into(), self.attributes(v));
        if let Some(tags) = &v.tags {
            b.insert("tags".into(), Value::Object(tags.clone()));
        }
        b
    }

    /// SecretItem: the id carries the version only in a versions listing.
    fn item(&self, name: &str, v: &Version, versioned: bool) -> Map<String, Value> {
        let mut item = Map::new();
        let id = if versioned {
            format!("{}/secrets/{name}/{}", self.base, v.version)
        } else {
            format!("{}/secrets/{name}", self.base)
        };
        item.insert("id".into(), json!(id));
        item.insert("attributes".into(), self.attributes(v));
        if let Some(ct) = &v.content_type {
            item.insert("contentType".into(), json!(ct));
        }
        if let Some(tags) = &v.tags {
            item.insert("tags".into(), Value::Object(tags.clone()));
        }
        item
    }

    fn deleted_fields(&self, mut m: Map<String, Value>, d: &DeletedSecret) -> Value {
        m.insert(
            "recoveryId".into(),
            json!(format!("{}/deletedsecrets/{}", self.base, d.secret.name)),
        );
        m.insert("deletedDate".into(), json!(d.deleted_date));
        m.insert("scheduledPurgeDate".into(), json!(d.scheduled_purge_date));
        Value::Object(m)
    }
}

fn deleted_bundle(ctx: &Ctx<'_>, d: &DeletedSecret) -> Value {
    ctx.deleted_fields(ctx.bundle(&d.secret.name, d.secret.latest(), false), d)
}

fn secret_not_found(name: &str, version: Option<&str>) -> Reply {
    let id = match version {
        Some(v) => format!("{name}/{v}"),
        None => name.to_owned(),
    };
    Reply::error(
        StatusCode::NOT_FOUND,
        "SecretNotFound",
        format!(
            "A secret with (name/id) {id} was not found in this key vault. If you recently \
             deleted this secret you may be able to recover it using the correct recovery \
             command. For help resolving this issue, please see \
             https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
    )
}

fn deleted_not_found(name: &str) -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        "SecretNotFound",
        format!("Deleted Secret not found: {name}"),
    )
}

fn list_secrets(ctx: &Ctx<'_>, vault: &Vault, paging: &Paging) -> Reply {
    let items = vault
        .live
        .iter()
        .map(|(key, s)| {
            let item = ctx.item(&s.name, s.latest(), false);
            (key.clone(), Value::Object(item))
        })
        .collect();
    Reply::ok(paging.page(ctx.base, "/secrets", items))
}

fn list_versions(ctx: &Ctx<'_>, vault: &Vault, name: &str, paging: &Paging) -> Reply {
    let items = vault
        .live
        .get(&name.to_ascii_lowercase())
        .map(|s| {
            s.versions
                .iter()
                .map(|v| {
                    // Zero-padded so that markers sort as the sequence does.
                    let marker = format!("{:020}", v.seq);
                    (marker, Value::Object(ctx.item(&s.name, v, true)))
                })
                .collect()
        })
        .unwrap_or_default();
    Reply::ok(paging.page(ctx.base, &format!("/secrets/{name}/versions"), items))
}

fn list_deleted(ctx: &Ctx<'_>, vault: &Vault, paging: &Paging) -> Reply {
    let items = vault
        .deleted
        .iter()
        .map(|(key, d)| {
            let item = ctx.item(&d.secret.name, d.secret.latest(), false);
            (key.clone(), ctx.deleted_fields(item, d))
        })
        .collect();
    Reply::ok(paging.page(ctx.base, "/deletedsecrets", items))
}

fn get_secret(ctx: &Ctx<'_>, vault: &Vault, name: &str, version: Option<&str>) -> Reply {
    let Some(secret) = vault.live.get(&name.to_ascii_lowercase()) else {
        return secret_not_found(name, version);
    };
    let found = match version {
        None => Some(secret.latest()),
        Some(v) => secret.version(v),
    };
    let Some(v) = found else {
        return secret_not_found(name, version);
    };
    if !v.enabled {
        return Reply::error_with_inner(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Operation get is not allowed on a disabled secret.".into(),
            "SecretDisabled",
        );
    }
    Reply::ok(Value::Object(ctx.bundle(&secret.name, v, true)))
}

/// The optional, writable attributes of a request body; `None` for absent or null.
struct AttributeUpdate {
    enabled: Option<bool>,
    nbf: Option<i64>,
    exp: Option<i64>,
}

fn parse_attributes(body: &Map<String, Value>) -> Result<AttributeUpdate, Reply> {
    let mut update = AttributeUpdate {
        enabled: None,
        nbf: None,
        exp: None,
    };
    let attributes = match body.get("attributes") {
        None | Some(Value::Null) => return Ok(update),
        Some(Value::Object(a)) => a,
        Some(_) => return Err(Reply::bad_parameter("attributes must be a JSON object.")),
    };
    update.enabled = match attributes.get("enabled") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(Reply::bad_parameter(
                "attributes.enabled must be a boolean.",
            ))
        }
    };
    let time = |field: &str| match attributes.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
        Some(_) => Err(Reply::bad_parameter(format!(
            "attributes.{field} must be an integer number of seconds since 1970."
        ))),
    };
    update.nbf = time("nbf")?;
    update.exp = time("exp")?;
    Ok(update)
}

/// `Ok(None)` when absent or null.
fn parse_content_type(body: &Map<String, Value>) -> Result<Option<String>, Reply> {
    match body.get("contentType") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Reply::bad_parameter("contentType must be a string.")),
    }
}

/// `Ok(None)` when absent or null.
fn parse_tags(body: &Map<String, Value>) -> Result<Option<Map<String, Value>>, Reply> {
    match body.get("tags") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(tags)) => {
            if tags.len() > MAX_TAGS {
                return Err(Reply::bad_parameter(format!(
                    "Too many tags: {} (at most {MAX_TAGS}).",
                    tags.len()
                )));
            }
            if tags.values().any(|v| !v.is_string()) {
                return Err(Reply::bad_parameter("Tag values must be strings."));
            }
            Ok(Some(tags.clone()))
        }
        Some(_) => Err(Reply::bad_parameter("tags must be a JSON object.")),
    }
}

fn set_secret(
    ctx: &Ctx<'_>,
    vault: &mut Vault,
    name: &str,
    body: Map<String, Value>,
    now: u64,
) -> Reply {
    let key = name.to_ascii_lowercase();
    if let Some(deleted) = vault.deleted.get(&key) {
        return Reply::error_with_inner(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Secret {} is currently in a deleted but recoverable state, and its name \
                 cannot be reused; in this state, the secret can only be recovered or purged.",
                deleted.secret.name
            ),
            "ObjectIsDeletedButRecoverable",
        );
    }
    let value = match body.get("value") {
        Some(Value::String(v)) => v.clone(),
        _ => return Reply::bad_parameter("The secret value is required and must be a string."),
    };
    if value.len() > MAX_VALUE_BYTES {
        return Reply::bad_parameter(format!(
            "The secret value is {} bytes; at most {MAX_VALUE_BYTES} are allowed.",
            value.len()
        ));
    }
    let (content_type, tags, attributes) = match parse_properties(&body) {
        Ok(parsed) => parsed,
        Err(reply) => return reply,
    };
    vault.next_seq += 1;
    let version = Version {
        version: random_version(),
        seq: vault.next_seq,
        value,
        content_type,
        tags,
        enabled: attributes.enabled.unwrap_or(true),
        nbf: attributes.nbf,
        exp: attributes.exp,
        created: now,
        updated: now,
    };
    let secret = vault.live.entry(key).or_insert_with(|| Secret {
        name: name.to_owned(),
        versions: Vec::new(),
    });
    secret.versions.push(version);
    Reply::ok(Value::Object(ctx.bundle(
        &secret.name,
        secret.latest(),
        true,
    )))
}

/// The content type, tags and attributes of a set or update body.
#[allow(clippy::type_complexity)]
fn parse_properties(
    body: &Map<String, Value>,
) -> Result<(Option<String>, Option<Map<String, Value>>, AttributeUpdate), Reply> {
    Ok((
        parse_content_type(body)?,
        parse_tags(body)?,
        parse_attributes(body)?,
    ))
}

fn update_secret(
    ctx: &Ctx<'_>,
    vault: &mut Vault,
    name: &str,
    version: Option<&str>,
    body: Map<String, Value>,
    now: u64,
) -> Reply {
    let (content_type, tags, attributes) = match parse_properties(&body) {
        Ok(parsed) => parsed,
        Err(reply) => return reply,
    };
    let Some(secret) = vault.live.get_mut(&name.to_ascii_lowercase()) else {
        return secret_not_found(name, version);
    };
    let target = match version {
        None => secret.versions.last_mut(),
        Some(wanted) => {
            let wanted = wanted.to_ascii_lowercase();
            secret.versions.iter_mut().find(|v| v.version == wanted)
        }
    };
    let Some(v) = target else {
        return secret_not_found(name, version);
    };
    if let Some(ct) = content_type {
        v.content_type = Some(ct);
    }
    if let Some(tags) = tags {
        v.tags = Some(tags);
    }
    if let Some(enabled) = attributes.enabled {
        v.enabled = enabled;
    }
    if let Some(nbf) = attributes.nbf {
        v.nbf = Some(nbf);
    }
    if let Some(exp) = attributes.exp {
        v.exp = Some(exp);
    }
    v.updated = now;
    let bundle = ctx.bundle(&secret.name, v, false);
    Reply::ok(Value::Object(bundle))
}

fn delete_secret(ctx: &Ctx<'_>, vault: &mut Vault, name: &str, now: u64) -> Reply {
    let key = name.to_ascii_lowercase();
    let Some(secret) = vault.live.remove(&key) else {
        return secret_not_found(name, None);
    };
    let deleted = DeletedSecret {
        secret,
        deleted_date: now,
        scheduled_purge_date: now + u64::from(ctx.options.recoverable_days) * SECONDS_PER_DAY,
    };
    let body = deleted_bundle(ctx, &deleted);
    vault.deleted.insert(key, deleted);
    Reply::ok(body)
}

fn recover_secret(ctx: &Ctx<'_>, vault: &mut Vault, name: &str) -> Reply {
    let key = name.to_ascii_lowercase();
    let Some(deleted) = vault.deleted.remove(&key) else {
        return deleted_not_found(name);
    };
    let secret = vault.live.entry(key).or_insert(deleted.secret);
    // The service answers a recovery without the value.
    Reply::ok(Value::Object(ctx.bundle(
        &secret.name,
        secret.latest(),
        false,
    )))
}

/// Query pairs, percent-decoded (`+` is left alone: no parameter here carries spaces).
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(digits, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut buf)
        .expect("kv double: the system random source failed");
    buf
}

/// A new version identifier: 32 random lower-case hex digits.
fn random_version() -> String {
    hex::encode(random_bytes::<16>())
}

/// A random (version 4) UUID, as the service's request ids look: the same form as a
/// lease id.
fn random_uuid() -> String {
    shared::lease::LeaseId::random().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_service_rules() {
        assert!(valid_name("a").is_ok());
        assert!(valid_name("Validator-Key-01").is_ok());
        assert!(valid_name(&"a".repeat(127)).is_ok());
        assert!(valid_name(&"a".repeat(128)).is_err());
        assert!(valid_name("").is_err());
        assert!(valid_name("under_score").is_err());
        assert!(valid_name("dot.ted").is_err());
        assert!(valid_name("per%2Fcent").is_err());
    }

    #[test]
    fn query_pairs_are_percent_decoded() {
        let params = parse_query("api-version=7.6&%24skiptoken=6162&maxresults=2");
        assert_eq!(param(&params, "api-version"), Some("7.6"));
        assert_eq!(param(&params, "$skiptoken"), Some("6162"));
        assert_eq!(param(&params, "maxresults"), Some("2"));
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn versions_and_request_ids_have_the_service_shape() {
        let v = random_version();
        assert_eq!(v.len(), 32);
        assert!(v
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_ne!(v, random_version());
        let id = random_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
    }
}
