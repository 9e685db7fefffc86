//! The Key Vault double (`integration_tests::kv_double`) checked two ways: the official
//! Python client (azure-keyvault-secrets, pinned in `ops/test-deps/`) runs a whole secret
//! life cycle against it through `tests/interop/keyvault_double_conformance.py`, and a small
//! HTTPS client here pins the HTTP behaviour the SDK run cannot reach (error shapes, the
//! throttle, paging links, the CLI).
//!
//! The Python environment is required: without it the conformance test fails and names the
//! install step.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use integration_tests::kv_double::{
    KvDouble, KvDoubleOptions, RecordedRequest, Throttle, CHALLENGE_RESOURCE, MAX_TAGS,
    MAX_VALUE_BYTES, TENANT_ID,
};
use integration_tests::tools;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio_rustls::TlsConnector;

const API_VERSION: &str = "7.6";
const TOKEN: &str = "Bearer test-token";
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A bare HTTPS client that trusts only the double's CA; one connection per request, so
/// nothing the double does to one request can leak into the next.
struct Client {
    connector: TlsConnector,
    addr: String,
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body of a {} answer is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error.code in {}", self.json()))
            .to_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Client {
    fn new(kv: &KvDouble) -> Self {
        Self::for_url(&kv.url(), kv.ca_file())
    }

    fn for_url(url: &str, ca_file: &Path) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        let ca = CertificateDer::from_pem_file(ca_file).expect("read the double's CA file");
        roots.add(ca).expect("trust the double's CA");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Client {
            connector: TlsConnector::from(Arc::new(config)),
            addr: url
                .strip_prefix("https://")
                .expect("the double's URL is https")
                .to_owned(),
        }
    }

    async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        auth: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Answer {
        tokio::time::timeout(
            IO_TIMEOUT,
            self.send_inner(method, path_and_query, auth, body),
        )
        .await
        .unwrap_or_else(|_| panic!("{method} {path_and_query} timed out"))
    }

    async fn send_inner(
        &self,
        method: &str,
        path_and_query: &str,
        auth: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Answer {
        let tcp = tokio::net::TcpStream::connect(&self.addr)
            .await
            .expect("connect to the double");
        let server = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let tls = self
            .connector
            .connect(server, tcp)
            .await
            .expect("TLS handshake with the double (certificate for 127.0.0.1)");
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .expect("HTTP handshake");
        tokio::spawn(conn);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path_and_query)
            .header("host", &self.addr)
            .header("x-ms-client-request-id", "test-request-1");
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .expect("build the request");
        let response = sender
            .send_request(request)
            .await
            .expect("send the request");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("read the body")
            .to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path_and_query: &str) -> Answer {
        self.send("GET", path_and_query, Some(TOKEN), None).await
    }

    async fn put_json(&self, path: &str, body: &Value) -> Answer {
        let path = format!("{path}?api-version={API_VERSION}");
        let bytes = serde_json::to_vec(body).expect("serialise");
        self.send("PUT", &path, Some(TOKEN), Some(bytes)).await
    }

    async fn set(&self, name: &str, value: &str) -> Answer {
        self.put_json(&format!("/secrets/{name}"), &json!({ "value": value }))
            .await
    }
}

fn with_page_size(page_size: usize) -> KvDouble {
    KvDouble::start_with(KvDoubleOptions {
        page_size,
        ..KvDoubleOptions::default()
    })
}

fn run_conformance_script(kv: &KvDouble, phase: &str) -> String {
    let script = tools::workspace_root()
        .join("tests")
        .join("interop")
        .join("keyvault_double_conformance.py");
    let out = Command::new(tools::python())
        .arg(&script)
        .arg(kv.url())
        .arg(kv.ca_file())
        .arg(phase)
        .output()
        .expect("run keyvault_double_conformance.py");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the Python client's {phase} phase failed ({}):\n{stdout}\n{}\nrequests: {:#?}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        kv.requests()
    );
    stdout
}

fn describe(requests: &[RecordedRequest]) -> String {
    requests
        .iter()
        .map(|r| {
            format!(
                "{} {}?{} -> {} (authorized: {})\n",
                r.method, r.path, r.query, r.status, r.authorized
            )
        })
        .collect()
}

#[test]
fn the_official_python_client_runs_a_secret_life_cycle_against_the_double() {
    // Pages of two, so every listing the client makes has to follow nextLink.
    let kv = with_page_size(2);

    let stdout = run_conformance_script(&kv, "main");
    assert!(stdout.contains("all main checks passed"), "{stdout}");
    let requests = kv.requests();
    let log = describe(&requests);
    let first = &requests[0];
    assert!(
        !first.authorized && first.status == 401 && first.method == "PUT",
        "the client's first request must be a bodiless, unauthorized PUT that gets the \
         challenge:\n{log}"
    );
    assert!(
        requests[1..].iter().all(|r| r.authorized),
        "every request after the challenge must carry the bearer token:\n{log}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.api_version.as_deref().is_some_and(|v| !v.is_empty())),
        "every request must carry api-version:\n{log}"
    );
    let api_versions: std::collections::BTreeSet<_> = requests
        .iter()
        .filter_map(|r| r.api_version.clone())
        .collect();
    assert_eq!(
        api_versions.len(),
        1,
        "one client, one api-version (next links included): {api_versions:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.path == "/secrets" && r.query.contains("skiptoken")),
        "listing secrets must have followed a nextLink:\n{log}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.path.ends_with("/versions") && r.query.contains("skiptoken")),
        "listing versions must have followed a nextLink:\n{log}"
    );
    assert!(
        requests.iter().any(|r| r.status == 409) && requests.iter().any(|r| r.status == 403),
        "the conflict and the disabled read must have reached the double:\n{log}"
    );
    let versions = kv.versions("validator-key-1");
    assert_eq!(versions.len(), 1, "purge removed the old versions");
    assert_eq!(versions[0].value, "fresh-value");
    assert!(versions[0].enabled);
    assert_eq!(kv.throttled_count(), 0);

    // A new client (new process): the challenge again, then the armed 429, then the retry.
    let before = requests.len();
    kv.fail_next(1, 429, Some(1));
    let stdout = run_conformance_script(&kv, "retry");
    assert!(stdout.contains("all retry checks passed"), "{stdout}");
    let requests = kv.requests();
    let retry_run = &requests[before..];
    let log = describe(retry_run);
    assert!(
        !retry_run[0].authorized && retry_run[0].status == 401,
        "a new client starts with the challenge, which the fault must not consume:\n{log}"
    );
    let throttled = retry_run
        .iter()
        .position(|r| r.status == 429)
        .unwrap_or_else(|| panic!("the injected 429 was never served:\n{log}"));
    let (hit, retry) = (&retry_run[throttled], &retry_run[throttled + 1]);
    assert!(hit.authorized && hit.method == "PUT" && hit.path == "/secrets/retry-probe");
    assert_eq!(
        (retry.method.as_str(), retry.path.as_str(), retry.status),
        ("PUT", "/secrets/retry-probe", 200),
        "the client must retry the throttled request itself:\n{log}"
    );
    assert_eq!(kv.throttled_count(), 1);
    assert_eq!(kv.versions("retry-probe").len(), 1);
}

#[tokio::test]
async fn a_request_without_a_token_gets_the_service_challenge_before_its_body_is_read() {
    let kv = KvDouble::start();
    let client = Client::new(&kv);
    let expected_challenge = format!(
        "Bearer authorization=\"https://login.microsoftonline.com/{TENANT_ID}\", \
         resource=\"{CHALLENGE_RESOURCE}\""
    );
    let path = format!("/secrets/a?api-version={API_VERSION}");
    for auth in [
        None,
        Some("Bearer "),
        Some("Bearer    "),
        Some("Basic dXNlcg=="),
    ] {
        // A malformed body: a 401 (not a 400) shows the body was never looked at.
        let answer = client
            .send("PUT", &path, auth, Some(b"{not json".to_vec()))
            .await;
        assert_eq!(answer.status, 401, "authorization {auth:?}");
        assert_eq!(
            answer.header("www-authenticate"),
            Some(&*expected_challenge)
        );
        assert_eq!(
            answer.json(),
            json!({ "error": { "code": "Unauthorized",
                "message": "AKV10000: Request is missing a Bearer or PoP token." } })
        );
        assert_eq!(
            answer.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        assert!(answer.header("x-ms-request-id").is_some());
        assert_eq!(
            answer.header("x-ms-client-request-id"),
            Some("test-request-1")
        );
    }
    // Even a request the double could not route is challenged first.
    let answer = client.send("GET", "/nowhere", None, None).await;
    assert_eq!(answer.status, 401);
    assert!(kv
        .requests()
        .iter()
        .all(|r| !r.authorized && r.status == 401));
    assert!(kv.versions("a").is_empty());
}

#[tokio::test]
async fn api_version_is_required_on_every_route() {
    let kv = KvDouble::start();
    let client = Client::new(&kv);
    for (method, path) in [
        ("GET", "/secrets"),
        ("GET", "/secrets/a"),
        ("PUT", "/secrets/a"),
        ("GET", "/deletedsecrets"),
        ("GET", "/secrets?api-version="),
    ] {
        let answer = client
            .send(
                method,
                path,
                Some(TOKEN),
                Some(br#"{"value":"v"}"#.to_vec()),
            )
            .await;
        assert_eq!(answer.status, 400, "{method} {path}");
        assert_eq!(answer.error_code(), "BadParameter");
    }
    let answer = client
        .get(&format!("/secrets?api-version={API_VERSION}"))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), json!({ "value": [], "nextLink": null }));
    let recorded = kv.requests();
    assert_eq!(recorded[0].api_version, None);
    assert_eq!(
        recorded.last().unwrap().api_version.as_deref(),
        Some(API_VERSION)
    );
}

#[tokio::test]
async fn secret_names_follow_the_service_rules() {
    let kv = KvDouble::start();
    let client = Client::new(&kv);
    let too_long = "a".repeat(128);
    for name in ["bad_name", "dot.ted", "sp%20ace", too_long.as_str()] {
        let answer = client.set(name, "v").await;
        assert_eq!(answer.status, 400, "{name}");
        assert_eq!(answer.error_code(), "BadParameter");
        let message = answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            message,
            format!("The request URI contains an invalid name: {name}")
        );
        let answer = client
            .get(&format!("/secrets/{name}?api-version={API_VERSION}"))
            .await;
        assert_eq!(answer.status, 400, "GET {name}");
    }
    let longest = "a".repeat(127);
    assert_eq!(client.set(&longest, "v").await.status, 200);

    // Names compare case-insensitively; the id keeps the casing of the first set.
    assert_eq!(client.set("Mixed-Case", "one").await.status, 200);
    let second = client.set("mixed-case", "two").await;
    assert_eq!(second.status, 200);
    let id = second.json()["id"].as_str().unwrap().to_owned();
    assert!(
        id.starts_with(&format!("{}/secrets/Mixed-Case/", kv.url())),
        "{id}"
    );
    let got = client
        .get(&format!("/secrets/MIXED-CASE?api-version={API_VERSION}"))
        .await;
    assert_eq!(got.json()["value"], "two");
    assert_eq!(kv.versions("mixed-case").len(), 2);
}

#[tokio::test]
async fn bodies_are_validated_like_the_service() {
    let kv = KvDouble::start();
    let client = Client::new(&kv);
    let path = format!("/secrets/s?api-version={API_VERSION}");
    for body in [
        &b"{not json"[..],
        b"[1, 2]",
        b"",
        br#"{"contentType": "text/plain"}"#,
        br#"{"value": 7}"#,
        br#"{"value": "v", "tags": ["x"]}"#,
        br#"{"value": "v", "tags": {"k": 1}}"#,
        br#"{"value": "v", "attributes": {"enabled": "yes"}}"#,
        br#"{"value": "v", "attributes": {"exp": "tomorrow"}}"#,
    ] {
        let answer = client
            .send("PUT", &path, Some(TOKEN), Some(body.to_vec()))
            .await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (400, "BadParameter"),
            "body {:?}",
            String::from_utf8_lossy(body)
        );
    }

    let largest = "x".repeat(MAX_VALUE_BYTES);
    assert_eq!(client.set("s", &largest).await.status, 200);
    let answer = client.set("s", &format!("{largest}x")).await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (400, "BadParameter")
    );

    let tags = |n: usize| -> Value {
        (0..n)
            .map(|i| (format!("tag{i}"), json!("v")))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let answer = client
        .put_json(
            "/secrets/t",
            &json!({ "value": "v", "tags": tags(MAX_TAGS) }),
        )
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["tags"], tags(MAX_TAGS));
    let answer = client
        .put_json(
            "/secrets/t",
            &json!({ "value": "v", "tags": tags(MAX_TAGS + 1) }),
        )
        .await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (400, "BadParameter")
    );

    let huge = format!(r#"{{"value": "{}"}}"#, "x".repeat(70 * 1024));
    let answer = client
        .send("PUT", &path, Some(TOKEN), Some(huge.into_bytes()))
        .await;
    assert_eq!(answer.status, 413);
    assert_eq!(
        kv.versions("s").len(),
        1,
        "only the valid set stored a version"
    );
}

#[tokio::test]
async fn bundles_carry_the_service_fields() {
    let kv = KvDouble::start();
    let client = Client::new(&kv);
    let answer = client
        .put_json(
            "/secrets/full",
            &json!({
                "value": "secret-value",
                "contentType": "text/plain",
                "tags": { "k": "v" },
                "attributes": { "enabled": true, "nbf": 1_700_000_000, "exp": 4_102_444_800_i64 },
            }),
        )
        .await;
    assert_eq!(answer.status, 200);
    let bundle = answer.json();
    let version = kv.versions("full")[0].version.clone();
    assert_eq!(bundle["id"], format!("{}/secrets/full/{version}", kv.url()));
    assert_eq!(bundle["value"], "secret-value");
    assert_eq!(bundle["contentType"], "text/plain");
    assert_eq!(bundle["tags"], json!({ "k": "v" }));
    let attributes = &bundle["attributes"];
    assert_eq!(attributes["enabled"], true);
    assert_eq!(attributes["nbf"], 1_700_000_000);
    assert_eq!(attributes["exp"], 4_102_444_800_i64);
    assert!(attributes["created"].is_u64() && attributes["updated"] == attributes["created"]);
    assert_eq!(attributes["recoveryLevel"], "Recoverable+Purgeable");
    assert_eq!(attributes["recoverableDays"], 90);

    // PATCH answers without the value; an empty version means the latest.
    let answer = client
        .send(
            "PATCH",
            &format!("/secrets/full/?api-version={API_VERSION}"),
            Some(TOKEN),
            Some(br#"{"attributes": {"enabled": false}}"#.to_vec()),
        )
        .await;
    assert_eq!(answer.status, 200);
    let updated = answer.json();
    assert!(updated.get("value").is_none(), "{updated}");
    assert_eq!(updated["attributes"]["enabled"], false);
    assert_eq!(
        updated["contentType"], "text/plain",
        "absent fields are kept"
    );
    let answer = client
        .get(&format!(
            "/secrets/full/{version}?api-version={API_VERSION}"
        ))
        .await;
    assert_eq!(answer.status, 403);
    assert_eq!(
        answer.json(),
        json!({ "error": { "code": "Forbidden",
            "message": "Operation get is not allowed on a disabled secret.",
            "innererror": { "code": "SecretDisabled" } } })
    );

    let answer = client
        .send(
            "DELETE",
            &format!("/secrets/full?api-version={API_VERSION}"),
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(answer.status, 200);
    let deleted = answer.json();
    assert!(deleted.get("value").is_none());
    assert_eq!(
        deleted["recoveryId"],
        format!("{}/deletedsecrets/full", kv.url())
    );
    let (deleted_at, purge_at) = (
        deleted["deletedDate"].as_u64().unwrap(),
        deleted["scheduledPurgeDate"].as_u64().unwrap(),
    );
    assert_eq!(purge_at - deleted_at, 90 * 86_400);
    let answer = client
        .get(&format!("/secrets/full?api-version={API_VERSION}"))
        .await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.error_code(), "SecretNotFound");
    assert!(answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("A secret with (name/id) full was not found in this key vault."));

    let answer = client
        .send(
            "POST",
            &format!("/deletedsecrets/full/recover?api-version={API_VERSION}"),
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(answer.status, 200);
    assert!(
        answer.json().get("value").is_none(),
        "recovery omits the value"
    );
    assert_eq!(answer.json()["id"], bundle["id"]);
}

#[tokio::test]
async fn routes_and_methods_answer_as_the_service_does() {
    let kv = KvDouble::start();
    let client = Client::new(&kv);
    assert_eq!(client.set("present", "v").await.status, 200);
    let q = format!("api-version={API_VERSION}");

    let answer = client
        .send(
            "PUT",
            &format!("/secrets/?{q}"),
            Some(TOKEN),
            Some(b"{}".to_vec()),
        )
        .await;
    assert_eq!(answer.status, 405);
    assert_eq!(
        answer.json(),
        json!({ "error": { "code": "MethodNotAllowed", "message": "HTTP PUT not allowed" } })
    );
    let answer = client
        .send("POST", &format!("/secrets/present?{q}"), Some(TOKEN), None)
        .await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (405, "MethodNotAllowed")
    );
    let answer = client.get(&format!("/keys/k?{q}")).await;
    assert_eq!(answer.status, 404);
    assert_eq!(
        answer.header("content-type"),
        Some("application/json; charset=utf-8")
    );

    let answer = client
        .get(&format!("/secrets/present/{}?{q}", "0".repeat(32)))
        .await;
    assert_eq!(
        (answer.status, answer.error_code().as_str()),
        (404, "SecretNotFound")
    );
    let answer = client.get(&format!("/deletedsecrets/present?{q}")).await;
    assert_eq!(
        answer.json(),
        json!({ "error": { "code": "SecretNotFound",
            "message": "Deleted Secret not found: present" } })
    );
    let answer = client
        .send("DELETE", &format!("/secrets/absent?{q}"), Some(TOKEN), None)
        .await;
    assert_eq!(answer.status, 404);

    // Set on a soft-deleted name: 409 until purged; purge answers 204 without a body.
    let answer = client
        .send(
            "DELETE",
            &format!("/secrets/present?{q}"),
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(answer.status, 200);
    let answer = client.set("present", "again").await;
    assert_eq!(answer.status, 409);
    assert_eq!(answer.error_code(), "Conflict");
    assert_eq!(
        answer.json()["error"]["innererror"]["code"],
        "ObjectIsDeletedButRecoverable"
    );
    let answer = client
        .send(
            "DELETE",
            &format!("/deletedsecrets/present?{q}"),
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(answer.status, 204);
    assert!(answer.body.is_empty());
    assert!(answer.header("content-type").is_none());
    assert!(kv.versions("present").is_empty());
    assert_eq!(client.set("present", "again").await.status, 200);

    let answer = client
        .send(
            "POST",
            &format!("/secrets/present/backup?{q}"),
            Some(TOKEN),
            None,
        )
        .await;
    assert_eq!(answer.status, 501, "backup is deliberately not modelled");
}

#[tokio::test]
async fn lists_page_through_next_links() {
    let kv = KvDouble::start();
    let client = Client::new(&kv);
    // Inserted out of order and in mixed case: the service lists names case-insensitively
    // sorted.
    for name in ["e-five", "B-two", "a-one", "D-four", "c-three"] {
        assert_eq!(client.set(name, "v").await.status, 200);
    }
    let mut names = Vec::new();
    let mut link = Some(format!(
        "{}/secrets?api-version={API_VERSION}&maxresults=2",
        kv.url()
    ));
    let mut pages = 0;
    while let Some(url) = link.take() {
        let path = url
            .strip_prefix(&kv.url())
            .unwrap_or_else(|| panic!("nextLink {url} is not absolute on the double"));
        let answer = client.get(path).await;
        assert_eq!(answer.status, 200, "{url}");
        let page = answer.json();
        let items = page["value"].as_array().unwrap();
        assert!(items.len() <= 2);
        for item in items {
            let id = item["id"].as_str().unwrap();
            names.push(id.rsplit('/').next().unwrap().to_owned());
            assert!(item.get("value").is_none(), "listings never carry values");
        }
        pages += 1;
        link = match &page["nextLink"] {
            Value::Null => None,
            Value::String(next) => {
                assert!(
                    next.contains(&format!("api-version={API_VERSION}")),
                    "{next}"
                );
                assert!(next.contains("$skiptoken="), "{next}");
                assert!(next.contains("maxresults=2"), "{next}");
                Some(next.clone())
            }
            other => panic!("nextLink must be a string or null: {other}"),
        };
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["a-one", "B-two", "c-three", "D-four", "e-five"]);

    // Without maxresults: the service's 25, and a null nextLink.
    let answer = client
        .get(&format!("/secrets?api-version={API_VERSION}"))
        .await;
    assert_eq!(answer.json()["value"].as_array().unwrap().len(), 5);
    assert_eq!(answer.json()["nextLink"], Value::Null);

    for bad in [
        "maxresults=0",
        "maxresults=26",
        "maxresults=x",
        "$skiptoken=zz",
    ] {
        let answer = client
            .get(&format!("/secrets?api-version={API_VERSION}&{bad}"))
            .await;
        assert_eq!(
            (answer.status, answer.error_code().as_str()),
            (400, "BadParameter"),
            "{bad}"
        );
    }

    // Paging parameters are only read by lists.
    let answer = client
        .send(
            "PUT",
            &format!("/secrets/f-six?api-version={API_VERSION}&maxresults=x"),
            Some(TOKEN),
            Some(br#"{"value": "v"}"#.to_vec()),
        )
        .await;
    assert_eq!(answer.status, 200);

    // Versions of an unknown secret: an empty page, not 404.
    let answer = client
        .get(&format!(
            "/secrets/unknown/versions?api-version={API_VERSION}"
        ))
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), json!({ "value": [], "nextLink": null }));
}

#[tokio::test]
async fn the_throttle_answers_429_with_retry_after_until_the_window_slides() {
    // Wide enough that the first three writes land in one window on a loaded machine.
    let window = Duration::from_secs(3);
    let kv = KvDouble::start_with(KvDoubleOptions {
        throttle: Some(Throttle {
            max_writes: 2,
            window,
        }),
        ..KvDoubleOptions::default()
    });
    let client = Client::new(&kv);
    let started = std::time::Instant::now();
    assert_eq!(client.set("w", "1").await.status, 200);
    assert_eq!(client.set("w", "2").await.status, 200);
    let answer = client.set("w", "3").await;
    assert_eq!(answer.status, 429);
    let retry_after: u64 = answer
        .header("retry-after")
        .expect("a throttled answer says when to retry")
        .parse()
        .expect("Retry-After in whole seconds");
    assert!((1..=3).contains(&retry_after), "{retry_after}");
    assert_eq!(
        answer.json(),
        json!({ "error": { "code": "Throttled", "message":
            "Request was not processed because too many requests were received. \
             Reason: VaultRequestTypeLimitReached" } })
    );
    // Reads are not writes; an unauthorized write is challenged, not throttled.
    let read = client
        .get(&format!("/secrets/w?api-version={API_VERSION}"))
        .await;
    assert_eq!(read.status, 200);
    let unauthorized = client
        .send(
            "PUT",
            &format!("/secrets/w?api-version={API_VERSION}"),
            None,
            None,
        )
        .await;
    assert_eq!(unauthorized.status, 401);
    assert_eq!(kv.throttled_count(), 1);
    assert_eq!(kv.versions("w").len(), 2);

    tokio::time::sleep(window.saturating_sub(started.elapsed()) + Duration::from_millis(100)).await;
    assert_eq!(
        client.set("w", "4").await.status,
        200,
        "the window has slid"
    );
    assert_eq!(kv.versions("w").len(), 3);
}

#[tokio::test]
async fn injected_faults_hit_only_authorized_requests() {
    let kv = KvDouble::start();
    let client = Client::new(&kv);
    let path = format!("/secrets?api-version={API_VERSION}");
    kv.fail_next(2, 503, None);
    let answer = client.send("GET", &path, None, None).await;
    assert_eq!(
        answer.status, 401,
        "the challenge does not use up the fault"
    );
    for _ in 0..2 {
        let answer = client.get(&path).await;
        assert_eq!(answer.status, 503);
        assert_eq!(answer.error_code(), "ServiceUnavailable");
        assert!(answer.header("retry-after").is_none());
    }
    assert_eq!(client.get(&path).await.status, 200);

    kv.fail_next(1, 429, Some(7));
    let answer = client.set("f", "v").await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("retry-after"), Some("7"));
    assert_eq!(answer.error_code(), "Throttled");
    assert!(kv.versions("f").is_empty(), "a failed write stores nothing");
    assert_eq!(client.set("f", "v").await.status, 200);
    assert_eq!(kv.throttled_count(), 1);
}

#[tokio::test]
async fn concurrent_writes_each_create_a_version() {
    let kv = KvDouble::start();
    let client = Arc::new(Client::new(&kv));
    let writers: Vec<_> = (0..16)
        .map(|i| {
            let client = Arc::clone(&client);
            tokio::spawn(async move { client.set("shared", &format!("value-{i}")).await })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for writer in writers {
        let answer = writer.await.expect("writer task");
        assert_eq!(answer.status, 200);
        ids.insert(answer.json()["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 16, "every write made its own version");
    let versions = kv.versions("shared");
    assert_eq!(versions.len(), 16);
    let mut values: Vec<_> = versions.iter().map(|v| v.value.clone()).collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 16);
}

#[tokio::test]
async fn the_double_stops_when_dropped() {
    let kv = KvDouble::start();
    let url = kv.url();
    let ca_file = kv.ca_file().to_owned();
    assert!(url.starts_with("https://127.0.0.1:") && !url.ends_with('/'));
    let pem = std::fs::read_to_string(&ca_file).expect("the CA file exists");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let addr = url.strip_prefix("https://").unwrap().to_owned();
    drop(kv);
    assert!(!ca_file.exists(), "the CA file goes with the double");
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "nothing listens on {addr} after drop"
    );
}

#[test]
fn the_cli_prints_its_address_and_stops_when_stdin_closes() {
    let mut child = Command::new(integration_tests::bin_path("kv-double"))
        .args(["--page-size", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kv-double");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .expect("read the address line");
    let (url, ca_file) = line
        .trim_end()
        .strip_prefix("url=")
        .and_then(|rest| rest.split_once(" ca_file="))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let (url, ca_file) = (url.to_owned(), std::path::PathBuf::from(ca_file));
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = Client::for_url(&url, &ca_file);
        for name in ["a", "b", "c"] {
            assert_eq!(client.set(name, "v").await.status, 200);
        }
        let answer = client
            .get(&format!("/secrets?api-version={API_VERSION}"))
            .await;
        assert_eq!(
            answer.json()["value"].as_array().unwrap().len(),
            2,
            "--page-size 2"
        );
    });

    drop(child.stdin.take());
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll kv-double") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("kv-double did not exit after its stdin closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "kv-double exited with {status}");
    assert!(!ca_file.exists(), "kv-double removes its CA file on exit");
}
