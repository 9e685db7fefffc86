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
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
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

/// Whether `addr` answers a `GET /` with any HTTP status.
fn answers_http(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut head = [0u8; 12];
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .and_then(|()| stream.read_exact(&mut head))
        .is_ok_and(|()| head.starts_with(b"HTTP/1."))
}

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
    /// proxy a test put in front of it), on a connection of its own.
    fn rest(&self, method: &str, resource: &str, headers: &[(&str, &str)]) -> RestAnswer {
        let separator = if resource.contains('?') { '&' } else { '?' };
        let target = format!(
            "/{ACCOUNT_NAME}/{resource}{separator}{}",
            self.account_sas()
        );
        let mut request = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nx-ms-version: {REST_VERSION}\r\n\
             Content-Length: 0\r\nConnection: close\r\n",
            self.addr()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let what = format!("{method} /{ACCOUNT_NAME}/{resource}");
        let mut stream = TcpStream::connect_timeout(&self.addr(), REST_TIMEOUT)
            .unwrap_or_else(|e| panic!("{what}: cannot connect to Azurite: {e}"));
        let mut answer = Vec::new();
        stream
            .set_read_timeout(Some(REST_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(REST_TIMEOUT)))
            .and_then(|()| stream.write_all(request.as_bytes()))
            .and_then(|()| stream.read_to_end(&mut answer))
            .unwrap_or_else(|e| panic!("{what}: no answer from Azurite: {e}"));
        RestAnswer::parse(&String::from_utf8_lossy(&answer))
            .unwrap_or_else(|| panic!("{what}: not an HTTP answer\n{}", self.log_tail(20)))
    }
}

/// The `x-ms-version` of [`Azurite`]'s own REST requests.
const REST_VERSION: &str = "2021-06-08";

/// How long one of [`Azurite`]'s own REST requests may take.
const REST_TIMEOUT: Duration = Duration::from_secs(10);

/// What Azurite answered to one of [`Azurite`]'s own REST requests.
#[derive(Debug)]
struct RestAnswer {
    status: u16,
    /// `x-ms-error-code`, on a refusal.
    error_code: Option<String>,
    status_line: String,
}

impl RestAnswer {
    fn parse(text: &str) -> Option<RestAnswer> {
        let head = text.split("\r\n\r\n").next()?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next()?.to_owned();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")?
            .get(..3)?
            .parse()
            .ok()?;
        let error_code = lines.find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("x-ms-error-code")
                .then(|| value.trim().to_owned())
        });
        Some(RestAnswer {
            status,
            error_code,
            status_line,
        })
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

    #[test]
    fn rest_answers_parse_status_and_error_code() {
        let answer = RestAnswer::parse(
            "HTTP/1.1 409 There is currently no lease on the blob.\r\nServer: Azurite-Blob/3.35.0\r\n\
             X-Ms-Error-Code: LeaseNotPresentWithLeaseOperation\r\n\r\n<?xml …",
        )
        .expect("an HTTP answer");
        assert_eq!(answer.status, 409);
        assert_eq!(
            answer.error_code.as_deref(),
            Some("LeaseNotPresentWithLeaseOperation")
        );
        let accepted = RestAnswer::parse("HTTP/1.1 202 Accepted\r\n\r\n").expect("an answer");
        assert_eq!((accepted.status, accepted.error_code), (202, None));
        assert!(RestAnswer::parse("garbage").is_none());
    }
}
