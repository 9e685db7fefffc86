//! Azurite's Blob service, the Azure Storage emulator the Azure lease backend is tested
//! against: one private instance per test, on a free loopback port, in memory, stopped
//! with its whole process group when the handle is dropped.
//!
//! Also the well-known emulator account (`devstoreaccount1`), its connection strings, and
//! account SAS tokens for tests that talk to Azurite over plain HTTP without an SDK.
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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::tools;

/// The emulator's built-in account.
pub const ACCOUNT_NAME: &str = "devstoreaccount1";

/// The built-in account's key, published in Microsoft's Azurite documentation. It is not
/// a secret: it opens nothing but local emulators.
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The service version [`account_sas`] signs for (`sv`): the 2020-12-06 string-to-sign,
/// which Azurite 3.35 supports.
pub const SAS_VERSION: &str = "2021-08-06";

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
    // Removed after the process is gone: fields drop after `Drop::drop`.
    _dir: tempfile::TempDir,
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
            let mut child = spawn(&launcher, dir.path(), port, &logs);
            match wait_ready(&mut child, port, &logs) {
                Ok(()) => {
                    return Azurite {
                        child,
                        port,
                        logs,
                        started_in: begun.elapsed(),
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

fn wait_ready(child: &mut Child, port: u16, logs: &Logs) -> Result<(), NotReady> {
    let deadline = Instant::now() + READY_TIMEOUT;
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

fn spawn(launcher: &Path, dir: &Path, port: u16, logs: &Logs) -> Child {
    let out = fs::File::create(&logs.output).expect("create Azurite's output log");
    let err = out.try_clone().expect("share Azurite's output log");
    Command::new(launcher)
        .arg("--blobHost")
        .arg("127.0.0.1")
        .arg("--blobPort")
        .arg(port.to_string())
        .arg("--debug")
        .arg(&logs.debug)
        .args([
            "--inMemoryPersistence",
            // The SDK may send a newer x-ms-version than this Azurite knows.
            "--skipApiVersionCheck",
            "--loose",
            // No access log on stdout; the debug log above has every request.
            "--silent",
            "--disableTelemetry",
            // The account always comes from the path, whatever Host a proxy passes on.
            "--disableProductStyleUrl",
        ])
        // Azurite refuses --location with --inMemoryPersistence; anything it still
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

/// An account SAS for the Blob service of `account`, valid until `expiry`, as a query
/// string without the leading `?`: `sv=…&ss=b&srt=sco&sp=…&se=…&sig=…`.
///
/// `key` is the account key in base64, as in connection strings; `permissions` is the
/// `sp` field (e.g. `"rwdlac"`; leases need `w`). Signed over the 2020-12-06 account-SAS
/// string-to-sign with [`SAS_VERSION`], no start time, IP range, protocol restriction
/// or encryption scope.
pub fn account_sas(account: &str, key: &str, permissions: &str, expiry: SystemTime) -> String {
    const SERVICES: &str = "b";
    const RESOURCE_TYPES: &str = "sco";
    let expiry = iso8601(expiry);
    let key = base64_decode(key).unwrap_or_else(|| panic!("the account key is not base64"));
    // account, sp, ss, srt, st, se, sip, spr, sv, ses, each followed by a newline.
    let string_to_sign = format!(
        "{account}\n{permissions}\n{SERVICES}\n{RESOURCE_TYPES}\n\n{expiry}\n\n\n{SAS_VERSION}\n\n"
    );
    let signature = base64_encode(&hmac_sha256(&key, string_to_sign.as_bytes()));
    format!(
        "sv={SAS_VERSION}&ss={SERVICES}&srt={RESOURCE_TYPES}&sp={}&se={}&sig={}",
        percent_encode(permissions),
        percent_encode(&expiry),
        percent_encode(&signature)
    )
}

/// HMAC-SHA256 by ring, through the HMAC rustls exposes for TLS 1.3's HKDF.
///
/// A stop-gap until `hmac` and `sha2` are dependencies of this crate: it takes keys of
/// at most 64 bytes (Azure account keys are exactly 64).
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use rustls::crypto::tls13::OkmBlock;
    assert!(
        key.len() <= OkmBlock::MAX_LEN,
        "HMAC keys over {} bytes are not supported here",
        OkmBlock::MAX_LEN
    );
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .expect("a TLS 1.3 suite");
    suite
        .hkdf_provider
        .hmac_sign(&OkmBlock::new(key), message)
        .as_ref()
        .to_vec()
}

/// `YYYY-MM-DDTHH:MM:SSZ` in UTC, the form SAS times take.
fn iso8601(at: SystemTime) -> String {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .expect("a time after 1970")
        .as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The proleptic Gregorian date `days` days after 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Count from 0000-03-01, so that the leap day ends each 4-, 100- and 400-year cycle.
    let days = days + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March: 153 days per five months.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

const BASE64_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(
                    BASE64_ALPHABET[(n >> (18 - 6 * i) & 63) as usize],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 with padding; `None` for anything else.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for (index, quad) in text.chunks(4).enumerate() {
        let last = index == text.len() / 4 - 1;
        let padding = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if padding > 2 || (padding > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - padding] {
            let value = BASE64_ALPHABET.iter().position(|&a| a == c)?;
            n = n << 6 | value as u32;
        }
        n <<= 6 * padding;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - padding]);
    }
    Some(out)
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231_case_2() {
        let tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn base64_round_trips_and_matches_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(base64_decode(ACCOUNT_KEY).map(|k| k.len()), Some(64));
        assert_eq!(base64_decode("Zg="), None);
        assert_eq!(base64_decode("Zg==Zg=="), None);
        assert_eq!(base64_decode("Z!=="), None);
    }

    #[test]
    fn iso8601_formats_utc_dates() {
        let at = |secs: u64| iso8601(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_709_251_199), "2024-02-29T23:59:59Z");
        assert_eq!(at(4_102_444_800), "2100-01-01T00:00:00Z");
    }

    #[test]
    fn account_sas_has_the_signed_fields() {
        let sas = account_sas(
            ACCOUNT_NAME,
            ACCOUNT_KEY,
            "rw",
            UNIX_EPOCH + Duration::from_secs(4_102_444_800),
        );
        assert!(
            sas.starts_with("sv=2021-08-06&ss=b&srt=sco&sp=rw&se=2100-01-01T00%3A00%3A00Z&sig="),
            "{sas}"
        );
    }
}
