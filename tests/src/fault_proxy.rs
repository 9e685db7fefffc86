//! A loopback HTTP/1.1 proxy for fault-injection tests: put it between a client (the Azure
//! lease backend, or a `leased` daemon in another process) and its upstream (Azurite),
//! and make chosen requests slow, unanswered, reset or refused, while the rest pass.
//!
//! ```no_run
//! use integration_tests::azurite::{self, Azurite};
//! use integration_tests::fault_proxy::{Action, FaultProxy, Match, Rule};
//!
//! let azurite = Azurite::start();
//! let proxy = FaultProxy::start(azurite.addr());
//! // The client under test talks to Azurite through the proxy.
//! let connection_string = azurite::connection_string_at(proxy.addr());
//! // … start it, then fail its next two renewals:
//! proxy.set_rule(Rule::new(
//!     Match::LeaseAction("renew".into()),
//!     Action::Status { code: 503, retry_after: None },
//! ).times(2));
//! // … later, assert on what happened:
//! let renewed = proxy.last_success("renew");
//! ```
//!
//! Each request is matched against the rules in the order they were set; the first match
//! decides its [`Action`], unmatched requests get the default (pass, unless
//! [`FaultProxy::set_default`] says otherwise). Rules can change at any time from any
//! thread. Every request is logged ([`FaultProxy::log`]) with what was done to it and
//! what the upstream answered, so a test can prove that a fault happened and that the
//! upstream did or did not see a request.
//!
//! The proxy forwards requests unchanged: method, path and query (signatures cover
//! them), headers including `Host` (Azurite takes the account from the path) and body.
//! It runs on its own thread with its own runtime, so synchronous tests, async tests and
//! other processes can all use it; a held or slow request stalls only its own
//! connection. It must never listen beyond 127.0.0.1, and never answers for the upstream
//! except as a rule says.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::http::request;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{oneshot, watch, Notify};

/// Which requests a [`Rule`] applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// Every request.
    All,
    /// Requests whose `x-ms-lease-action` header is this, ignoring case: `acquire`,
    /// `renew`, `change`, `release` or `break`.
    LeaseAction(String),
    /// Requests with this method.
    Method(Method),
    /// Requests whose path contains this, e.g. a blob's name.
    PathContains(String),
    /// Requests whose query string contains this, e.g. `comp=lease`.
    QueryContains(String),
    /// Requests that match all of these.
    AllOf(Vec<Match>),
}

/// What the proxy does with a matching request, after reading it whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Action {
    /// Forward it and return the upstream's answer.
    #[default]
    Pass,
    /// Wait this long, then forward it.
    Delay(Duration),
    /// Never forward it and never answer; keep the connection open until the client gives
    /// up or the proxy stops: a storage endpoint that stopped responding.
    BlackHole,
    /// Never forward it; close the connection with a TCP RST: a connection broken
    /// mid-request.
    Reset,
    /// Never forward it; answer with this status and an error body in Azure Storage's
    /// shape (see [`storage_error_code`]), with `Retry-After: <seconds>` if given.
    Status { code: u16, retry_after: Option<u64> },
}

/// A matcher and an action, for every matching request or only the next few.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    matcher: Match,
    action: Action,
    /// Matching requests this rule still applies to; `None` is unlimited.
    remaining: Option<u32>,
}

impl Rule {
    pub fn new(matcher: Match, action: Action) -> Rule {
        Rule {
            matcher,
            action,
            remaining: None,
        }
    }

    /// Applies the rule to the next `n` matching requests only; then it is removed
    /// (`times(0)` is never set).
    pub fn times(mut self, n: u32) -> Rule {
        self.remaining = Some(n);
        self
    }
}

/// One request the proxy received, in [`FaultProxy::log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedRequest {
    /// When its head arrived.
    pub at: Instant,
    /// When the proxy returned an answer (the upstream's, or a [`Action::Status`]); `None`
    /// while it is in flight, and for ever if it was black-holed or reset.
    pub responded_at: Option<Instant>,
    pub method: Method,
    pub path_and_query: String,
    /// Its `x-ms-lease-action` header, as sent.
    pub lease_action: Option<String>,
    /// What the proxy did: `pass`, `delay 250ms`, `black-hole`, `reset` or `status 503`.
    pub action_taken: String,
    /// The upstream's status, if the request was forwarded and answered.
    pub upstream_status: Option<u16>,
    /// Why forwarding failed, if it did; the client's connection was then reset.
    pub upstream_error: Option<String>,
}

impl ProxiedRequest {
    fn succeeded_as(&self, lease_action: &str) -> bool {
        self.lease_action
            .as_deref()
            .is_some_and(|a| a.eq_ignore_ascii_case(lease_action))
            && self
                .upstream_status
                .is_some_and(|s| (200..300).contains(&s))
    }
}

/// The running proxy; it stops, closing every connection, when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` on a free port of 127.0.0.1, passing everything.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("bind the fault proxy on loopback");
        listener
            .set_nonblocking(true)
            .expect("make the fault proxy's listener non-blocking");
        let addr = listener.local_addr().expect("the fault proxy's address");
        let shared = Arc::new(Shared {
            upstream,
            state: Mutex::new(State::default()),
            next_request_id: AtomicU64::new(1),
            release: watch::Sender::new(0),
            received: watch::Sender::new(0),
        });
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn({
                let shared = Arc::clone(&shared);
                move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("the fault proxy's runtime");
                    runtime.block_on(accept(listener, shared, stopped));
                    // Dropping the runtime drops every connection's task, closing its
                    // socket: held requests end with the proxy.
                }
            })
            .expect("start the fault proxy's thread");
        FaultProxy {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Adds `rule` after the rules already set: earlier rules win.
    pub fn set_rule(&self, rule: Rule) {
        check_action(&rule.action);
        if rule.remaining == Some(0) {
            return;
        }
        self.shared.state().rules.push(rule);
    }

    /// Resets the connection of every request black-holed so far, as a storage endpoint
    /// that comes back drops what it never answered. Clients that gave up on them long ago
    /// have closed their end; this frees the proxy's. Later requests are unaffected.
    pub fn release_held(&self) {
        self.shared
            .release
            .send_modify(|generation| *generation += 1);
    }

    /// Removes every rule; the default action stays.
    pub fn clear_rules(&self) {
        self.shared.state().rules.clear();
    }

    /// What to do with requests no rule matches ([`Action::Pass`] until set).
    pub fn set_default(&self, action: Action) {
        check_action(&action);
        self.shared.state().default = action;
    }

    /// Every request received so far, in the order their bodies were read.
    pub fn log(&self) -> Vec<ProxiedRequest> {
        self.shared.state().log.clone()
    }

    /// Waits until the proxy has received `n` requests in all (each read whole, its action
    /// chosen and logged; a delayed request's delay has begun), for at most `timeout`; the
    /// log then. Panics, with the log, if it has not. For a test that must know a request
    /// reached the proxy before it sends the next.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<ProxiedRequest> {
        let mut received = self.shared.received.subscribe();
        // The borrow `wait_for` returns ends with this statement, before the log is read.
        let reached = matches!(
            tokio::time::timeout(timeout, received.wait_for(|&count| count >= n)).await,
            Ok(Ok(_))
        );
        let log = self.log();
        assert!(
            reached,
            "the fault proxy received {} of {n} requests within {timeout:?}: {log:?}",
            log.len()
        );
        log
    }

    /// When the proxy received the last request with this `x-ms-lease-action` (any case)
    /// that it forwarded and the upstream answered with a 2xx.
    pub fn last_success(&self, lease_action: &str) -> Option<Instant> {
        let state = self.shared.state();
        state
            .log
            .iter()
            .filter(|r| r.succeeded_as(lease_action))
            .map(|r| r.at)
            .max()
    }

    /// Like [`FaultProxy::last_success`], but when the answer went back to the client.
    pub fn last_success_responded(&self, lease_action: &str) -> Option<Instant> {
        let state = self.shared.state();
        state
            .log
            .iter()
            .filter(|r| r.succeeded_as(lease_action))
            .filter_map(|r| r.responded_at)
            .max()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The `x-ms-error-code` (and `<Code>`) an [`Action::Status`] answer carries.
///
/// Blob Storage signals throttling with 503 `ServerBusy` (and overload with 500), never
/// 429; a 429 here (`TooManyRequests`, the code Azure Resource Manager uses) tests a
/// client against a status Storage does not send. Other statuses get `InjectedFault`,
/// which no Azure service sends.
pub fn storage_error_code(status: u16) -> &'static str {
    match status {
        500 => "InternalError",
        503 => "ServerBusy",
        429 => "TooManyRequests",
        _ => "InjectedFault",
    }
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    state: Mutex<State>,
    next_request_id: AtomicU64,
    /// Bumped by [`FaultProxy::release_held`]: black-holed requests then reset.
    release: watch::Sender<u64>,
    /// How many requests the log holds, for [`FaultProxy::wait_for_requests`].
    received: watch::Sender<usize>,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<Rule>,
    default: Action,
    log: Vec<ProxiedRequest>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock leaves consistent data behind.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Picks the action for a request, consuming a use of a counted rule, and logs the
    /// request; the log entry's index.
    fn admit(&self, head: &request::Parts, at: Instant) -> (Action, usize) {
        let mut state = self.state();
        let position = state.rules.iter().position(|r| r.matcher.matches(head));
        let action = match position {
            Some(i) => {
                let rule = &mut state.rules[i];
                let action = rule.action.clone();
                if let Some(remaining) = rule.remaining.as_mut() {
                    *remaining = remaining.saturating_sub(1);
                    if *remaining == 0 {
                        state.rules.remove(i);
                    }
                }
                action
            }
            None => state.default.clone(),
        };
        state.log.push(ProxiedRequest {
            at,
            responded_at: None,
            method: head.method.clone(),
            path_and_query: head
                .uri
                .path_and_query()
                .map_or_else(|| head.uri.path().to_owned(), |pq| pq.as_str().to_owned()),
            lease_action: header_text(&head.headers, LEASE_ACTION).map(str::to_owned),
            action_taken: action.describe(),
            upstream_status: None,
            upstream_error: None,
        });
        let received = state.log.len();
        // Not under the state's lock: the two locks are never held together.
        drop(state);
        self.received
            .send_modify(|count| *count = (*count).max(received));
        (action, received - 1)
    }

    fn record(&self, index: usize, update: impl FnOnce(&mut ProxiedRequest)) {
        if let Some(entry) = self.state().log.get_mut(index) {
            update(entry);
        }
    }
}

const LEASE_ACTION: &str = "x-ms-lease-action";

impl Match {
    fn matches(&self, head: &request::Parts) -> bool {
        match self {
            Match::All => true,
            Match::LeaseAction(action) => header_text(&head.headers, LEASE_ACTION)
                .is_some_and(|a| a.eq_ignore_ascii_case(action)),
            Match::Method(method) => head.method == method,
            Match::PathContains(part) => head.uri.path().contains(part.as_str()),
            Match::QueryContains(part) => head.uri.query().unwrap_or("").contains(part.as_str()),
            Match::AllOf(all) => all.iter().all(|m| m.matches(head)),
        }
    }
}

impl Action {
    fn describe(&self) -> String {
        match self {
            Action::Pass => "pass".into(),
            Action::Delay(by) => format!("delay {by:?}"),
            Action::BlackHole => "black-hole".into(),
            Action::Reset => "reset".into(),
            Action::Status { code, .. } => format!("status {code}"),
        }
    }
}

/// Refuses, in the test's thread, a status the proxy could not send.
fn check_action(action: &Action) {
    if let Action::Status { code, .. } = action {
        assert!(
            StatusCode::from_u16(*code).is_ok_and(|s| !s.is_informational()),
            "the fault proxy cannot answer with status {code}"
        );
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn accept(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = TcpListener::from_std(listener).expect("register the fault proxy's listener");
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve(stream, Arc::clone(&shared)));
                }
                // Out of descriptors, or a connection gone before it was accepted.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
}

/// Serves one client connection until it closes, the proxy stops, or a request asks for
/// it to be reset.
async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    // hyper owns the stream; a second descriptor for the same socket lets us set
    // SO_LINGER 0 on it, so that the close on reset sends an RST rather than a FIN.
    let linger_handle = stream
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(|fd| TcpSocket::from_std_stream(std::net::TcpStream::from(fd)));
    let reset = Arc::new(Notify::new());
    let service = {
        let reset = Arc::clone(&reset);
        service_fn(move |request| handle(request, Arc::clone(&shared), Arc::clone(&reset)))
    };
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = connection => {}
        () = reset.notified() => {
            // The connection (and hyper's descriptor) is dropped without a shutdown; the
            // last descriptor closes below with linger 0.
            if let Some(socket) = &linger_handle {
                let _ = socket.set_zero_linger();
            }
        }
    }
    drop(linger_handle);
}

async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
    reset: Arc<Notify>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let at = Instant::now();
    let (head, body) = request.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        // The client went away mid-body; nobody reads this answer.
        return Ok(bare(StatusCode::BAD_REQUEST));
    };
    let (action, index) = shared.admit(&head, at);
    match action {
        Action::Pass => {}
        Action::Delay(by) => tokio::time::sleep(by).await,
        Action::BlackHole => {
            let mut released = shared.release.subscribe();
            // Held until released; the proxy's stop drops it with its connection.
            let _ = released.changed().await;
            reset.notify_one();
            return std::future::pending().await;
        }
        Action::Reset => {
            reset.notify_one();
            return std::future::pending().await;
        }
        Action::Status { code, retry_after } => {
            let request_id = shared.next_request_id.fetch_add(1, Ordering::Relaxed);
            let answer = storage_error(code, retry_after, &head.headers, request_id);
            shared.record(index, |r| r.responded_at = Some(Instant::now()));
            return Ok(answer);
        }
    }
    match forward(shared.upstream, head, body).await {
        Ok(answer) => {
            let status = answer.status().as_u16();
            shared.record(index, |r| {
                r.upstream_status = Some(status);
                r.responded_at = Some(Instant::now());
            });
            Ok(answer)
        }
        Err(error) => {
            // An unreachable storage endpoint is a transport failure to the client, not an
            // HTTP answer it might mistake for the service's.
            shared.record(index, |r| r.upstream_error = Some(error));
            reset.notify_one();
            std::future::pending().await
        }
    }
}

/// Hop-by-hop headers, which describe one connection and are not passed on.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    // The proxy has the whole body already; the upstream need not ask for it.
    "expect",
];

/// Sends the request to `upstream` on a connection of its own and reads the whole answer.
async fn forward(
    upstream: SocketAddr,
    mut head: request::Parts,
    body: Bytes,
) -> Result<Response<Full<Bytes>>, String> {
    let stream = TcpStream::connect(upstream)
        .await
        .map_err(|e| format!("connect to {upstream}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake with {upstream}: {e}"))?;
    // Ends once the sender is dropped and the answer read.
    tokio::spawn(connection);

    // Origin form, as the client sent it (or the path of an absolute-form request).
    head.uri = head
        .uri
        .path_and_query()
        .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
    head.version = hyper::Version::HTTP_11;
    strip_hop_by_hop(&mut head.headers);
    let answer = sender
        .send_request(Request::from_parts(head, Full::new(body)))
        .await
        .map_err(|e| format!("request to {upstream}: {e}"))?;
    let (mut parts, body) = answer.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("answer from {upstream}: {e}"))?
        .to_bytes();
    strip_hop_by_hop(&mut parts.headers);
    // Buffered, so hyper frames it with a length.
    parts.headers.remove(hyper::header::TRANSFER_ENCODING);
    Ok(Response::from_parts(parts, Full::new(body)))
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// An error answer as Blob Storage shapes them: an XML `<Error>` body, `x-ms-error-code`,
/// `x-ms-request-id`, and the request's `x-ms-version` echoed.
fn storage_error(
    code: u16,
    retry_after: Option<u64>,
    request_headers: &HeaderMap,
    request_id: u64,
) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(code).expect("checked by check_action");
    let error_code = storage_error_code(code);
    let request_id = format!("00000000-0000-0000-0000-{request_id:012x}");
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{error_code}</Code>\
         <Message>Status {code} injected by the fault proxy.\nRequestId:{request_id}</Message></Error>"
    );
    let mut answer = Response::new(Full::new(Bytes::from(body)));
    *answer.status_mut() = status;
    let headers = answer.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml"),
    );
    headers.insert("x-ms-error-code", HeaderValue::from_static(error_code));
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        headers.insert("x-ms-request-id", id);
    }
    if let Some(version) = request_headers.get("x-ms-version") {
        headers.insert("x-ms-version", version.clone());
    }
    if let Some(seconds) = retry_after {
        headers.insert(hyper::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    answer
}

fn bare(status: StatusCode) -> Response<Full<Bytes>> {
    let mut answer = Response::new(Full::new(Bytes::new()));
    *answer.status_mut() = status;
    answer
}
