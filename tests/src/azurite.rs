//! Azurite's Blob service, the Azure Storage emulator the Azure lease backend is tested
//! against: one private instance per test, on a free loopback port, in memory, stopped
//! with its whole process group when the handle is dropped.
//!
//! Also the well-known emulator account (`devstoreaccount1`), its connection strings,
//! account SAS tokens for tests that talk to Azurite over plain HTTP without an SDK, and
//! the operator's tools over plain REST: delete a container or a blob, break a lease, as
//! someone outside the daemons would.
//!
//! Azurite must never be reachable from outside the machine nor phone home: it listens on
//! 127.0.0.1 only and runs with `--disableTelemetry`. A missing Azurite is a panic naming
//! the install step (`tools::azurite_blob`), never a skipped test.
//!
//! Azurite 3.35 closes a keep-alive connection after about 5 s idle, and ignores
//! `--blobKeepAliveTimeout` (it reads another flag); a client that reuses pooled
//! connections at about that interval can race the close. Through a
//! [`crate::fault_proxy::FaultProxy`] it cannot: the proxy keeps client connections open
//! and opens one upstream connection per request.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::tools;

/// The emulator's built-in account.
pub const ACCOUNT_NAME: &str = "devstoreaccount1";

/// The built-in account's key, published in Microsoft's Azurite documentation. It is not
/// a secret: it opens nothing but local emulators.
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How long Azurite may take to answer HTTP after being started.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long Azurite may take to exit after SIGTERM before it is SIGKILLed.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// Fresh ports tried when another process takes the one picked before Azurite binds it.
const BIND_ATTEMPTS: usize = 5;

/// A running Azurite Blob service. Dropping it stops Azurite and deletes its directory.
#[derive(Debug)]
pub struct Azurite {
    child: Child,
    port: u16,
    logs: Logs,
    started_in: Duration,
    options: AzuriteOptions,
    /// Azurite was stopped by [`Azurite::stop`] and not started again yet.
    down: bool,
    // Removed after the process is gone: fields drop after `Drop::drop`.
    _dir: tempfile::TempDir,
}

/// How [`Azurite::start_with`] runs Azurite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AzuriteOptions {
    /// Keep containers, blobs and leases on disk (Azurite's `--location`, in its private
    /// directory) rather than in memory, so that they survive [`Azurite::stop`] and
    /// [`Azurite::start_again`].
    pub persistent: bool,
    /// Write Azurite's debug log (every request and why it was refused).
    pub debug_log: bool,
}

impl Default for AzuriteOptions {
    /// In memory, with the debug log: what [`Azurite::start`] runs.
    fn default() -> Self {
        Self {
            persistent: false,
            debug_log: true,
        }
    }
}

/// Azurite's two log files.
#[derive(Debug)]
struct Logs {
    /// stdout and stderr: start-up, listening address, fatal errors.
    output: PathBuf,
    /// `--debug`: every request, with the reason for each refusal.
    debug: PathBuf,
}

impl Azurite {
    /// Starts Azurite's Blob service on a free port of 127.0.0.1 and waits until it answers
    /// HTTP. Panics, with the end of Azurite's logs, if it does not within 30 s.
    pub fn start() -> Azurite {
        Self::start_with(AzuriteOptions::default())
    }

    /// [`Azurite::start`], run as `options` say.
    pub fn start_with(options: AzuriteOptions) -> Azurite {
        let begun = Instant::now();
        let launcher = tools::azurite_blob();
        let dir = tempfile::Builder::new()
            .prefix("azurite-")
            .tempdir()
            .expect("create Azurite's directory");
        for attempt in 1..=BIND_ATTEMPTS {
            let port = free_port();
            let logs = Logs {
                output: dir.path().join(format!("output-{attempt}.log")),
                debug: dir.path().join(format!("debug-{attempt}.log")),
            };
            let mut child = spawn(&launcher, dir.path(), port, &logs, options);
            match wait_ready(&mut child, port, &logs, READY_TIMEOUT) {
                Ok(()) => {
                    return Azurite {
                        child,
                        port,
                        logs,
                        started_in: begun.elapsed(),
                        options,
                        down: false,
                        _dir: dir,
                    }
                }
                // Another process bound the port between our probe and Azurite's bind.
                Err(NotReady::PortTaken) => stop(&mut child),
                Err(NotReady::Exited(status)) => panic!(
                    "Azurite exited during start-up ({status})\n{}",
                    logs.tail(40)
                ),
                Err(NotReady::TimedOut) => {
                    stop(&mut child);
                    panic!(
                        "Azurite did not answer HTTP on 127.0.0.1:{port} within {READY_TIMEOUT:?}\n{}",
                        logs.tail(40)
                    )
                }
            }
        }
        panic!("Azurite lost the race for a free port {BIND_ATTEMPTS} times")
    }

    /// `http://127.0.0.1:PORT/devstoreaccount1`: Azurite addresses accounts by path.
    pub fn blob_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT_NAME}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where Azurite listens, e.g. the upstream of a [`crate::fault_proxy::FaultProxy`].
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The standard connection string for the emulator account at this instance.
    pub fn connection_string(&self) -> String {
        connection_string_at(self.addr())
    }

    pub fn account_name(&self) -> &'static str {
        ACCOUNT_NAME
    }

    pub fn account_key(&self) -> &'static str {
        ACCOUNT_KEY
    }

    /// How long [`Azurite::start`] took, from spawning to the first HTTP answer.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Azurite's debug log: every request it received and why it refused any.
    pub fn debug_log_path(&self) -> &Path {
        &self.logs.debug
    }

    /// The last `lines` lines of Azurite's output and of its debug log, for failure
    /// messages.
    pub fn log_tail(&self, lines: usize) -> String {
        self.logs.tail(lines)
    }
}

impl Azurite {
    /// Stops Azurite as its service manager would (SIGTERM, SIGKILL after 2 s): storage is
    /// down until [`Azurite::start_again`]. What it stored survives only if it is
    /// [`AzuriteOptions::persistent`].
    pub fn stop(&mut self) {
        stop(&mut self.child);
        self.down = true;
    }

    /// Starts a stopped Azurite again on the same port, with the same options and data,
    /// without waiting for it: [`Azurite::poll_ready`] says when it answers.
    pub fn start_again(&mut self) {
        assert!(self.down, "Azurite is running");
        let launcher = tools::azurite_blob();
        let dir = self._dir.path().to_path_buf();
        self.child = spawn(&launcher, &dir, self.port, &self.logs, self.options);
        self.down = false;
    }

    /// After [`Azurite::start_again`]: whether Azurite answers HTTP yet. Panics, with the
    /// end of its logs, if it exited.
    pub fn poll_ready(&mut self) -> bool {
        match wait_ready(&mut self.child, self.port, &self.logs, Duration::ZERO) {
            Ok(()) => true,
            Err(NotReady::TimedOut) => false,
            Err(other) => panic!(
                "Azurite did not come back on port {}: {other:?}\n{}",
                self.port,
                self.logs.tail(40)
            ),
        }
    }

    /// Azurite's private directory (its data, with [`AzuriteOptions::persistent`], and logs).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Deletes `container` like [`Azurite::delete_container`]; Azurite's refusal as an error
    /// rather than a panic.
    pub fn try_delete_container(&self, container: &str) -> Result<(), String> {
        let answer = self.rest("DELETE", &format!("{container}?restype=container"), &[]);
        if answer.status == 202 {
            Ok(())
        } else {
            Err(format!(
                "delete container {container}: Azurite answered {} ({})",
                answer.status_line,
                answer.error_code.as_deref().unwrap_or("no error code")
            ))
        }
    }

    /// Whether Azurite was stopped and not started again.
    pub fn is_down(&self) -> bool {
        self.down
    }

    /// The process id of Azurite's launcher, which leads Azurite's process group.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

impl Logs {
    fn tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for path in [&self.output, &self.debug] {
            let text = fs::read_to_string(path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            out.push_str(&format!(
                "--- {} (last {} lines)\n",
                path.display(),
                tail.len()
            ));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

#[derive(Debug)]
enum NotReady {
    PortTaken,
    Exited(String),
    TimedOut,
}

fn wait_ready(
    child: &mut Child,
    port: u16,
    logs: &Logs,
    timeout: Duration,
) -> Result<(), NotReady> {
    let deadline = Instant::now() + timeout;
    loop {
        let output = fs::read_to_string(&logs.output).unwrap_or_default();
        if let Ok(Some(status)) = child.try_wait() {
            return Err(if output.contains("EADDRINUSE") {
                NotReady::PortTaken
            } else {
                NotReady::Exited(status.to_string())
            });
        }
        // The line proves that the listener on the port is Azurite's, not a process that
        // won the port; the HTTP answer, that it serves requests.
        if output.contains("successfully listens on")
            && answers_http(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(NotReady::TimedOut);
        }
        sleep(Duration::from_millis(25));
    }
}

/// SIGTERM to Azurite's process group, SIGKILL after [`TERM_GRACE`], then reaps Azurite.
fn stop(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    // Azurite leads its own group (process_group(0)), so its id is the group's.
    let group = Pid::from_raw(child.id() as i32);
    let _ = killpg(group, Signal::SIGTERM);
    let deadline = Instant::now() + TERM_GRACE;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        sleep(Duration::from_millis(20));
    }
    let _ = killpg(group, Signal::SIGKILL);
    let _ = child.wait();
}

/// The standard connection string for the emulator account with its Blob endpoint at
/// `addr`: Azurite's own address, or a proxy in front of it.
pub fn connection_string_at(addr: SocketAddr) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};\
         BlobEndpoint=http://{addr}/{ACCOUNT_NAME};"
    )
}

fn spawn(launcher: &Path, dir: &Path, port: u16, logs: &Logs, options: AzuriteOptions) -> Child {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&logs.output)
        .expect("create Azurite's output log");
    let err = out.try_clone().expect("share Azurite's output log");
    let mut command = Command::new(launcher);
    command
        .arg("--blobHost")
        .arg("127.0.0.1")
        .arg("--blobPort")
        .arg(port.to_string());
    if options.debug_log {
        command.arg("--debug").arg(&logs.debug);
    }
    if options.persistent {
        command.arg("--location").arg(dir.join("data"));
    } else {
        command.arg("--inMemoryPersistence");
    }
    command
        .args([
            // The SDK may send a newer x-ms-version than this Azurite knows.
            "--skipApiVersionCheck",
            "--loose",
            // No access log on stdout; the debug log above has every request.
            "--silent",
            "--disableTelemetry",
            // The account always comes from the path, whatever Host a proxy passes on.
            "--disableProductStyleUrl",
        ])
        // Azurite refuses --location with --inMemoryPersistence; anything else it
        // writes lands in its working directory, the private one.
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own group, so that Drop stops Azurite and anything it started, and a
        // Ctrl-C meant for the test runner does not reach it first.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", launcher.display()))
}

/// A port of 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Whether `addr` answers a `GET /` with any HTTP status, within 500 ms to connect and
/// 2 s in all.
fn answers_http(addr: SocketAddr) -> bool {
    crate::on_own_runtime(async move {
        let client = shared::net::loopback_http_client(Duration::from_millis(500), PROBE_TIMEOUT)
            .unwrap_or_else(|e| panic!("an HTTP client for the readiness probe: {e}"));
        client.get(format!("http://{addr}/")).send().await.is_ok()
    })
}

/// How long the readiness probe waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Azurite {
    /// An account SAS for the emulator account's Blob service, as a query string without
    /// the leading `?`, for tests that talk to Azurite over plain HTTP.
    ///
    /// Signed by [`shared::azure::sas::account_sas`], the signer the `blob:` backend uses
    /// for the emulator, so these tests and the daemons authenticate alike: permissions
    /// `rwdlac` (leases need `w`), valid for an hour from now.
    pub fn account_sas(&self) -> String {
        shared::azure::sas::account_sas_for_base64_key(ACCOUNT_NAME, ACCOUNT_KEY)
            .expect("the emulator's account key is base64")
    }

    /// Deletes `container` and every blob and lease in it, as `az storage container
    /// delete` would. Panics unless Azurite accepts (202).
    pub fn delete_container(&self, container: &str) {
        self.rest("DELETE", &format!("{container}?restype=container"), &[])
            .expect_status(202, &format!("delete container {container}"));
    }

    /// Deletes `blob` of `container`, as an operator would: a leased blob is refused
    /// without its lease id, so its lease is first broken with period 0 (`az storage blob
    /// lease break --lease-break-period 0`). Panics unless the blob is gone.
    pub fn delete_blob(&self, container: &str, blob: &str) {
        let broken = self.request_break(container, blob, 0);
        // An unleased blob has nothing to break.
        if broken.error_code.as_deref() != Some("LeaseNotPresentWithLeaseOperation") {
            broken.expect_status(202, &format!("break the lease on {container}/{blob}"));
        }
        self.rest("DELETE", &format!("{container}/{blob}"), &[])
            .expect_status(202, &format!("delete blob {container}/{blob}"));
    }

    /// Breaks the lease on `blob` of `container`: it ends `period_secs` (0–60) from now,
    /// or at once with 0, and cannot be renewed meanwhile. Panics unless Azurite accepts
    /// (202).
    pub fn break_lease(&self, container: &str, blob: &str, period_secs: u32) {
        self.request_break(container, blob, period_secs)
            .expect_status(202, &format!("break the lease on {container}/{blob}"));
    }

    fn request_break(&self, container: &str, blob: &str, period_secs: u32) -> RestAnswer {
        self.rest(
            "PUT",
            &format!("{container}/{blob}?comp=lease"),
            &[
                ("x-ms-lease-action", "break"),
                ("x-ms-lease-break-period", &period_secs.to_string()),
            ],
        )
    }

    /// One SAS-signed request to this emulator, straight to its port (never through a
    /// proxy a test put in front of it), on a connection of its own. Panics if Azurite
    /// does not answer within [`REST_TIMEOUT`].
    fn rest(&self, method: &str, resource: &str, headers: &[(&str, &str)]) -> RestAnswer {
        let separator = if resource.contains('?') { '&' } else { '?' };
        let url = format!(
            "http://{}/{ACCOUNT_NAME}/{resource}{separator}{}",
            self.addr(),
            self.account_sas()
        );
        let what = format!("{method} /{ACCOUNT_NAME}/{resource}");
        let method = hyper::Method::from_bytes(method.as_bytes())
            .unwrap_or_else(|e| panic!("{what}: not an HTTP method: {e}"));
        crate::on_own_runtime(async move {
            let client = shared::net::loopback_http_client(REST_TIMEOUT, REST_TIMEOUT)?;
            let mut request = client
                .request(method, url)
                .header("x-ms-version", REST_VERSION)
                .header(hyper::header::CONTENT_LENGTH, "0");
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            // Without the URL, which carries the SAS.
            let answer = request
                .send()
                .await
                .map_err(|e| crate::error_chain(&e.without_url()))?;
            Ok(RestAnswer::of(
                answer.status(),
                answer.extensions().get::<hyper::ext::ReasonPhrase>(),
                answer.headers(),
            ))
        })
        .unwrap_or_else(|e: String| {
            panic!("{what}: no answer from Azurite: {e}\n{}", self.log_tail(20))
        })
    }
}

/// The `x-ms-version` of [`Azurite`]'s own REST requests.
const REST_VERSION: &str = "2021-06-08";

/// How long one of [`Azurite`]'s own REST requests may take, connecting included.
const REST_TIMEOUT: Duration = Duration::from_secs(10);

/// What Azurite answered to one of [`Azurite`]'s own REST requests.
#[derive(Debug)]
struct RestAnswer {
    status: u16,
    /// `x-ms-error-code`, on a refusal.
    error_code: Option<String>,
    /// The status and Azurite's reason phrase, e.g. `409 There is currently no lease on
    /// the blob.`
    status_line: String,
}

impl RestAnswer {
    fn of(
        status: hyper::StatusCode,
        reason: Option<&hyper::ext::ReasonPhrase>,
        headers: &hyper::HeaderMap,
    ) -> RestAnswer {
        let reason = reason
            .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
            .or_else(|| status.canonical_reason().map(str::to_owned))
            .unwrap_or_default();
        RestAnswer {
            status: status.as_u16(),
            error_code: headers
                .get("x-ms-error-code")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            status_line: format!("{} {reason}", status.as_u16()),
        }
    }

    fn expect_status(&self, status: u16, what: &str) {
        assert!(
            self.status == status,
            "{what}: Azurite answered {} ({})",
            self.status_line,
            self.error_code.as_deref().unwrap_or("no error code")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The REST helpers against a real Azurite: a 2xx, and a refusal's status, reason and
    /// `x-ms-error-code` (what `delete_blob` tells an unleased blob by), from plain code
    /// and from inside a test's runtime alike.
    #[test]
    fn rest_answers_carry_status_and_error_code() {
        let azurite = Azurite::start();
        azurite
            .rest("PUT", "rest?restype=container", &[])
            .expect_status(201, "create container");
        azurite
            .rest("PUT", "rest/b", &[("x-ms-blob-type", "BlockBlob")])
            .expect_status(201, "put blob");

        let refused = azurite.request_break("rest", "b", 0);
        assert_eq!(refused.status, 409, "{refused:?}");
        assert_eq!(
            refused.error_code.as_deref(),
            Some("LeaseNotPresentWithLeaseOperation")
        );
        assert!(
            refused.status_line.starts_with("409 ") && refused.status_line.len() > 4,
            "{refused:?}"
        );

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let missing = runtime.block_on(async {
            azurite.delete_blob("rest", "b");
            azurite.try_delete_container("absent")
        });
        let missing = missing.expect_err("deleted a container that is not there");
        assert!(
            missing.contains("404") && missing.contains("ContainerNotFound"),
            "{missing}"
        );
        azurite.delete_container("rest");
    }
}
