//! The fault proxy's own tests: each action against an upstream the test controls, which
//! records what reached it, then the lease faults that matter through a real Azurite.
//!
//! Every test asserts both what the client got and whether the upstream saw the request,
//! so that a proxy that forwarded everything, or nothing, fails.

use std::future::Future;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use integration_tests::azurite::Azurite;
use integration_tests::fault_proxy::{Action, FaultProxy, Match, ProxiedRequest, Rule};

/// A request as the test upstream received it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A loopback HTTP server that answers every request 200 (`seen <path>`) and records it.
/// A HEAD gets `content-length: 42` and no body, as a blob's properties do.
#[derive(Debug)]
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    async fn start() -> Upstream {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the test upstream");
        let addr = listener.local_addr().expect("upstream address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let seen = Arc::clone(&seen);
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let seen = Arc::clone(&seen);
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let seen = Arc::clone(&seen);
                        async move {
                            let (head, body) = request.into_parts();
                            let body = body.collect().await?.to_bytes();
                            let path_and_query = head.uri.to_string();
                            let mut answer = if head.method == Method::HEAD {
                                let mut answer = Response::new(Full::new(Bytes::new()));
                                answer.headers_mut().insert("content-length", 42.into());
                                answer
                            } else {
                                Response::new(Full::new(Bytes::from(format!(
                                    "seen {path_and_query}"
                                ))))
                            };
                            answer
                                .headers_mut()
                                .insert("x-upstream", "yes".parse().expect("header"));
                            seen.lock().expect("seen").push(Seen {
                                method: head.method,
                                path_and_query,
                                headers: head.headers,
                                body,
                            });
                            Ok::<_, hyper::Error>(answer)
                        }
                    });
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service),
                    );
                }
            }
        });
        Upstream { addr, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    fn saw(&self, path: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.path_and_query.starts_with(path))
            .count()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a client got back.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One request on a fresh connection to `addr`; `Host` is `addr` unless `headers` has one.
async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Answer, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    let mut request = Request::builder().method(method).uri(path);
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request = request.header("host", addr.to_string());
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .map_err(|e| format!("request: {e}"))?;
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let (head, body) = answer.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Answer {
        status: head.status.as_u16(),
        headers: head.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    send(addr, Method::GET, path, &[], "")
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// Sends a GET on a new connection and returns its outcome unawaited, for watching how the
/// proxy ends a request, or never does. The request goes out at once; a connection closed
/// without an answer ends it in an error that `is_incomplete_message`, a reset in one with
/// [`ErrorKind::ConnectionReset`] among its causes ([`io_error_kind`]).
async fn start_get(
    addr: SocketAddr,
    path: &str,
) -> impl Future<Output = Result<Response<Incoming>, hyper::Error>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let request = Request::get(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))
        .expect("request");
    let answer = sender.send_request(request);
    async move {
        // The connection lives as long as its sender.
        let _sender = sender;
        answer.await
    }
}

/// The kind of the I/O error among `error`'s causes, if there is one.
fn io_error_kind(error: &hyper::Error) -> Option<ErrorKind> {
    let mut cause = std::error::Error::source(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cause = e.source();
    }
    None
}

fn entry(proxy: &FaultProxy, path: &str) -> ProxiedRequest {
    proxy
        .log()
        .into_iter()
        .find(|r| r.path_and_query.starts_with(path))
        .unwrap_or_else(|| panic!("the proxy logged no request for {path}"))
}

fn status(code: u16) -> Action {
    Action::Status {
        code,
        retry_after: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_forwards_the_request_and_the_answer_unchanged() {
    let upstream = Upstream::start().await;
    let proxy = FaultProxy::start(upstream.addr);

    let path = "/devstoreaccount1/leases/m0-v0?comp=lease&sig=a%2Bb%3D";
    let answer = send(
        proxy.addr(),
        Method::PUT,
        path,
        &[
            ("host", "client-chosen.test:1234"),
            ("x-ms-lease-action", "Acquire"),
            ("x-ms-version", "2021-08-06"),
            ("content-length", "5"),
        ],
        "hello",
    )
    .await
    .expect("PUT through the proxy");

    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-upstream"), Some("yes"));
    assert_eq!(answer.body, format!("seen {path}"));
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let seen = &seen[0];
    assert_eq!(seen.method, Method::PUT);
    assert_eq!(seen.path_and_query, path);
    assert_eq!(seen.body, "hello");
    let header = |name: &str| seen.headers.get(name).and_then(|v| v.to_str().ok());
    assert_eq!(header("host"), Some("client-chosen.test:1234"));
    assert_eq!(header("x-ms-lease-action"), Some("Acquire"));
    assert_eq!(header("x-ms-version"), Some("2021-08-06"));
    assert_eq!(header("content-length"), Some("5"));

    let logged = entry(&proxy, "/devstoreaccount1/leases/m0-v0");
    assert_eq!(logged.method, Method::PUT);
    assert_eq!(logged.path_and_query, path);
    assert_eq!(logged.lease_action.as_deref(), Some("Acquire"));
    assert_eq!(logged.action_taken, "pass");
    assert_eq!(logged.upstream_status, Some(200));
    assert!(logged.responded_at.is_some_and(|t| t >= logged.at));
    assert_eq!(proxy.last_success("acquire"), Some(logged.at));
    assert_eq!(proxy.last_success_responded("ACQUIRE"), logged.responded_at);
    assert_eq!(proxy.last_success("renew"), None);

    // A HEAD answer keeps its content-length though it has no body.
    let head = send(proxy.addr(), Method::HEAD, "/blob", &[], "")
        .await
        .expect("HEAD through the proxy");
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("42"));
    assert_eq!(upstream.saw("/blob"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_answers_in_storage_shape_without_forwarding() {
    let upstream = Upstream::start().await;
    let proxy = FaultProxy::start(upstream.addr);
    proxy.set_rule(Rule::new(
        Match::LeaseAction("renew".into()),
        Action::Status {
            code: 503,
            retry_after: Some(3),
        },
    ));

    // The header's case does not matter.
    let renew = send(
        proxy.addr(),
        Method::PUT,
        "/c/b?comp=lease",
        &[
            ("x-ms-lease-action", "RENEW"),
            ("x-ms-version", "2021-08-06"),
        ],
        "",
    )
    .await
    .expect("renew through the proxy");
    assert_eq!(renew.status, 503);
    assert_eq!(renew.header("x-ms-error-code"), Some("ServerBusy"));
    assert_eq!(renew.header("retry-after"), Some("3"));
    assert_eq!(renew.header("x-ms-version"), Some("2021-08-06"));
    assert_eq!(renew.header("content-type"), Some("application/xml"));
    assert!(renew.header("x-ms-request-id").is_some());
    assert!(
        renew.body.starts_with(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>ServerBusy</Code><Message>"
        ) && renew.body.ends_with("</Message></Error>"),
        "{}",
        renew.body
    );
    assert_eq!(
        upstream.saw("/c/b"),
        0,
        "a refused renew reached the upstream"
    );

    // Another lease action is not matched and passes.
    let acquire = send(
        proxy.addr(),
        Method::PUT,
        "/c/b?comp=lease",
        &[("x-ms-lease-action", "acquire")],
        "",
    )
    .await
    .expect("acquire through the proxy");
    assert_eq!(acquire.status, 200);
    assert_eq!(upstream.saw("/c/b"), 1);

    let log = proxy.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0].action_taken, "status 503");
    assert_eq!(log[0].upstream_status, None);
    assert!(log[0].responded_at.is_some());
    assert_eq!(log[1].action_taken, "pass");
    assert_eq!(proxy.last_success("renew"), None);
    assert_eq!(proxy.last_success("acquire"), Some(log[1].at));

    // 429 is not Storage's throttling status; it gets the code Azure uses elsewhere.
    proxy.set_rule(Rule::new(
        Match::PathContains("/throttled".into()),
        status(429),
    ));
    let throttled = get(proxy.addr(), "/throttled").await;
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.header("x-ms-error-code"), Some("TooManyRequests"));
    assert_eq!(throttled.header("retry-after"), None);
    assert_eq!(upstream.saw("/throttled"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counted_rule_applies_n_times_then_is_removed() {
    let upstream = Upstream::start().await;
    let proxy = FaultProxy::start(upstream.addr);
    // Applies to no request at all.
    proxy.set_rule(Rule::new(Match::All, Action::Reset).times(0));
    proxy.set_rule(Rule::new(Match::All, status(500)).times(2));

    let mut statuses = Vec::new();
    for i in 0..3 {
        statuses.push(get(proxy.addr(), &format!("/n/{i}")).await.status);
    }
    assert_eq!(statuses, [500, 500, 200]);
    assert_eq!(upstream.saw("/n/0"), 0);
    assert_eq!(upstream.saw("/n/1"), 0);
    assert_eq!(upstream.saw("/n/2"), 1);
    let taken: Vec<String> = proxy.log().into_iter().map(|r| r.action_taken).collect();
    assert_eq!(taken, ["status 500", "status 500", "pass"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_matching_rule_wins_and_the_default_takes_the_rest() {
    let upstream = Upstream::start().await;
    let proxy = FaultProxy::start(upstream.addr);
    proxy.set_rule(Rule::new(Match::PathContains("/m0-v1".into()), status(503)));
    proxy.set_rule(Rule::new(Match::Method(Method::PUT), status(500)));
    proxy.set_rule(Rule::new(
        Match::AllOf(vec![
            Match::Method(Method::GET),
            Match::QueryContains("comp=lease".into()),
        ]),
        Action::Pass,
    ));
    proxy.set_default(status(502));

    let addr = proxy.addr();
    let put = move |path: &'static str| async move {
        send(addr, Method::PUT, path, &[], "")
            .await
            .expect("PUT")
            .status
    };
    // Both the path and the method rule match: the earlier one decides.
    assert_eq!(put("/c/m0-v1").await, 503);
    assert_eq!(put("/c/m0-v2").await, 500);
    assert_eq!(get(proxy.addr(), "/c/m0-v2?comp=lease").await.status, 200);
    let unmatched = get(proxy.addr(), "/c/m0-v2?comp=metadata").await;
    assert_eq!(unmatched.status, 502);
    assert_eq!(unmatched.header("x-ms-error-code"), Some("InjectedFault"));
    assert_eq!(upstream.saw("/c/m0-v1"), 0);
    assert_eq!(upstream.saw("/c/m0-v2"), 1);

    // Without rules the default decides alone, and Pass restores forwarding.
    proxy.clear_rules();
    assert_eq!(put("/c/m0-v1").await, 502);
    assert_eq!(upstream.saw("/c/m0-v1"), 0);
    proxy.set_default(Action::Pass);
    assert_eq!(put("/c/m0-v1").await, 200);
    assert_eq!(upstream.saw("/c/m0-v1"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_holds_only_its_own_request() {
    const DELAY: Duration = Duration::from_millis(1500);
    let upstream = Upstream::start().await;
    let proxy = FaultProxy::start(upstream.addr);
    proxy.set_rule(Rule::new(
        Match::PathContains("/slow".into()),
        Action::Delay(DELAY),
    ));

    let addr = proxy.addr();
    let begun = Instant::now();
    let slow = tokio::spawn(async move { get(addr, "/slow").await });
    // The slow request has reached the proxy, and its delay begun, before the fast one.
    proxy.wait_for_requests(1, Duration::from_secs(5)).await;
    assert_eq!(get(addr, "/fast").await.status, 200);
    assert!(
        !slow.is_finished(),
        "the delayed request finished no later than one sent after it"
    );
    assert_eq!(
        upstream.saw("/slow"),
        0,
        "forwarded before the delay ran out"
    );

    let slow = slow.await.expect("slow request");
    assert_eq!(slow.status, 200);
    assert!(begun.elapsed() >= DELAY);
    assert_eq!(upstream.saw("/slow"), 1);
    let logged = entry(&proxy, "/slow");
    assert_eq!(logged.action_taken, "delay 1.5s");
    assert!(logged
        .responded_at
        .is_some_and(|t| t.duration_since(logged.at) >= DELAY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_never_answers_nor_forwards_and_holds_nothing_else() {
    let upstream = Upstream::start().await;
    let proxy = FaultProxy::start(upstream.addr);
    proxy.set_rule(Rule::new(
        Match::PathContains("/hole".into()),
        Action::BlackHole,
    ));

    let timed_out = tokio::time::timeout(Duration::from_millis(700), get(proxy.addr(), "/hole"))
        .await
        .is_err();
    assert!(timed_out, "a black-holed request was answered");
    assert_eq!(get(proxy.addr(), "/open").await.status, 200);

    // The connection stays open: no answer, no close, no reset.
    let held = start_get(proxy.addr(), "/hole/held").await;
    tokio::pin!(held);
    let early = tokio::time::timeout(Duration::from_millis(500), &mut held).await;
    assert!(early.is_err(), "the held request ended: {early:?}");

    assert_eq!(
        upstream.saw("/hole"),
        0,
        "a black-holed request was forwarded"
    );
    assert_eq!(upstream.saw("/open"), 1);
    let logged = entry(&proxy, "/hole/held");
    assert_eq!(logged.action_taken, "black-hole");
    assert_eq!(logged.responded_at, None);
    assert_eq!(logged.upstream_status, None);

    // Stopping the proxy closes the held connection: no answer, and no reset.
    drop(proxy);
    let ended = tokio::time::timeout(Duration::from_secs(5), held)
        .await
        .expect("the held request outlived the proxy");
    assert!(
        matches!(&ended, Err(e) if e.is_incomplete_message() && io_error_kind(e).is_none()),
        "expected the connection closed without an answer once the proxy stopped, got {ended:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_closes_the_connection_with_an_rst() {
    let upstream = Upstream::start().await;
    let proxy = FaultProxy::start(upstream.addr);
    proxy.set_rule(Rule::new(
        Match::PathContains("/reset".into()),
        Action::Reset,
    ));

    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        start_get(proxy.addr(), "/reset").await,
    )
    .await
    .expect("the proxy neither answered nor closed the connection");
    // An answer would be Ok, a FIN an incomplete message with no I/O error.
    assert_eq!(
        answer.map(|_| ()).map_err(|e| io_error_kind(&e)),
        Err(Some(ErrorKind::ConnectionReset))
    );
    assert_eq!(upstream.saw("/reset"), 0, "a reset request was forwarded");
    assert_eq!(entry(&proxy, "/reset").action_taken, "reset");

    // Other connections are untouched.
    assert_eq!(get(proxy.addr(), "/after").await.status, 200);
    assert_eq!(upstream.saw("/after"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_resets_the_client() {
    let closed = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let proxy = FaultProxy::start(closed);

    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        start_get(proxy.addr(), "/anything").await,
    )
    .await
    .expect("the proxy neither answered nor closed the connection");
    assert_eq!(
        answer.map(|_| ()).map_err(|e| io_error_kind(&e)),
        Err(Some(ErrorKind::ConnectionReset))
    );
    let logged = entry(&proxy, "/anything");
    assert_eq!(logged.action_taken, "pass");
    assert_eq!(logged.upstream_status, None);
    assert!(
        logged
            .upstream_error
            .as_deref()
            .is_some_and(|e| e.contains("connect")),
        "{logged:?}"
    );
}

/// No runtime in the test: the proxy brings its own. It is started, set and read here
/// outside any runtime; only the client, started after it, runs on one of its own.
#[test]
fn works_from_synchronous_code() {
    let closed = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let proxy = FaultProxy::start(closed);
    proxy.set_default(status(503));

    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the client's runtime");
    let answer = client
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(5), get(proxy.addr(), "/sync")).await
        })
        .expect("an answer within 5 s");
    assert_eq!(answer.status, 503, "{answer:?}");
    assert!(
        answer.body.contains("<Code>ServerBusy</Code>"),
        "{answer:?}"
    );
    assert_eq!(entry(&proxy, "/sync").action_taken, "status 503");
}

/// Through a real Azurite, with a second, passing proxy in front of it recording what
/// Azurite received: a 503 on renew never reaches Azurite and leaves the lease renewable,
/// and a black-holed renew runs into the client's timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_faults_through_azurite() {
    const VERSION: &str = "2021-08-06";
    let azurite = Azurite::start();
    let azurite_sees = FaultProxy::start(azurite.addr());
    let proxy = FaultProxy::start(azurite_sees.addr());
    let sas = azurite.account_sas();
    let account = format!("/{}", azurite.account_name());
    let blob = format!("{account}/leases/m0-v0");
    let lease_path = format!("{blob}?comp=lease&{sas}");
    let addr = proxy.addr();
    let fail = |what: &str, e: String| -> Answer {
        panic!("{what}: {e}\n{}", azurite.log_tail(30));
    };
    let expect = |answer: &Answer, status: u16, what: &str| {
        assert_eq!(
            answer.status,
            status,
            "{what}: {answer:?}\n{}",
            azurite.log_tail(30)
        );
    };
    let renews_seen = || {
        azurite_sees
            .log()
            .iter()
            .filter(|r| r.lease_action.as_deref() == Some("renew"))
            .count()
    };

    // A signature that does not verify is refused: the SAS below is what opens Azurite.
    let forged = sas.replace("&sig=", "&sig=AAAA");
    let refused = send(
        addr,
        Method::PUT,
        &format!("{account}/leases?restype=container&{forged}"),
        &[("x-ms-version", VERSION)],
        "",
    )
    .await
    .unwrap_or_else(|e| fail("create container", e));
    expect(&refused, 403, "create container with a forged SAS");

    let created = send(
        addr,
        Method::PUT,
        &format!("{account}/leases?restype=container&{sas}"),
        &[("x-ms-version", VERSION)],
        "",
    )
    .await
    .unwrap_or_else(|e| fail("create container", e));
    expect(&created, 201, "create container");
    let uploaded = send(
        addr,
        Method::PUT,
        &format!("{blob}?{sas}"),
        &[
            ("x-ms-version", VERSION),
            ("x-ms-blob-type", "BlockBlob"),
            ("content-length", "5"),
        ],
        "hello",
    )
    .await
    .unwrap_or_else(|e| fail("put blob", e));
    expect(&uploaded, 201, "put blob");

    let acquired = send(
        addr,
        Method::PUT,
        &lease_path,
        &[
            ("x-ms-version", VERSION),
            ("x-ms-lease-action", "acquire"),
            ("x-ms-lease-duration", "15"),
        ],
        "",
    )
    .await
    .unwrap_or_else(|e| fail("acquire", e));
    expect(&acquired, 201, "acquire");
    let lease_id = acquired
        .header("x-ms-lease-id")
        .expect("acquire returns the lease id")
        .to_owned();
    let renew = || async {
        send(
            addr,
            Method::PUT,
            &lease_path,
            &[
                ("x-ms-version", VERSION),
                ("x-ms-lease-action", "renew"),
                ("x-ms-lease-id", &lease_id),
            ],
            "",
        )
        .await
    };
    let renewed = renew().await.unwrap_or_else(|e| fail("renew", e));
    expect(&renewed, 200, "renew");
    assert_eq!(renews_seen(), 1);

    // A 503 on renew: answered by the proxy, never seen by Azurite.
    proxy.set_rule(Rule::new(Match::LeaseAction("renew".into()), status(503)));
    let busy = renew().await.unwrap_or_else(|e| fail("renew", e));
    expect(&busy, 503, "renew under a 503 rule");
    assert_eq!(busy.header("x-ms-error-code"), Some("ServerBusy"));
    assert_eq!(renews_seen(), 1, "Azurite saw a renew the proxy refused");
    proxy.clear_rules();
    let renewed = renew().await.unwrap_or_else(|e| fail("renew", e));
    expect(&renewed, 200, "renew after the 503s stopped");
    assert_eq!(renewed.header("x-ms-lease-id"), Some(lease_id.as_str()));
    assert_eq!(renews_seen(), 2);

    // A black-holed renew: the client's own timeout is what ends it.
    proxy.set_rule(Rule::new(
        Match::LeaseAction("renew".into()),
        Action::BlackHole,
    ));
    let timed_out = tokio::time::timeout(Duration::from_secs(1), renew())
        .await
        .is_err();
    assert!(timed_out, "a black-holed renew was answered");
    assert_eq!(renews_seen(), 2, "Azurite saw a black-holed renew");
    proxy.clear_rules();
    let renewed = renew().await.unwrap_or_else(|e| fail("renew", e));
    expect(&renewed, 200, "renew after the black hole");
    assert_eq!(renews_seen(), 3);

    // The blob's properties pass through intact, HEAD's content-length included.
    let properties = send(
        addr,
        Method::HEAD,
        &format!("{blob}?{sas}"),
        &[("x-ms-version", VERSION)],
        "",
    )
    .await
    .unwrap_or_else(|e| fail("get properties", e));
    expect(&properties, 200, "get properties");
    assert_eq!(properties.header("x-ms-lease-state"), Some("leased"));
    assert_eq!(properties.header("content-length"), Some("5"));

    let last_renew = proxy
        .log()
        .into_iter()
        .rev()
        .find(|r| r.lease_action.as_deref() == Some("renew") && r.action_taken == "pass")
        .expect("a passed renew");
    assert_eq!(proxy.last_success("renew"), Some(last_renew.at));
    assert_eq!(
        proxy.last_success_responded("renew"),
        last_renew.responded_at
    );
    let taken: Vec<String> = proxy
        .log()
        .into_iter()
        .filter(|r| r.lease_action.as_deref() == Some("renew"))
        .map(|r| r.action_taken)
        .collect();
    assert_eq!(taken, ["pass", "status 503", "pass", "black-hole", "pass"]);
}
