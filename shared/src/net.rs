//! Network addresses and HTTP clients: the one rule, used everywhere, for what counts as
//! this machine, and the one way to build an HTTP client.
//!
//! Loopback matters twice: a plain `http://` storage endpoint or connection string is
//! accepted only for an emulator on loopback, and the engine-signer RPC, which carries the
//! key, may only go to loopback.
//!
//! Every client is reqwest on rustls with the `ring` provider (no C or assembly build of
//! aws-lc), follows no redirect, and has a connect and a whole-request timeout chosen by
//! its caller: the Azure transport ([`https_client_builder`]), `orchestrator join`'s
//! consortium-data fetch, and the engine-signer RPC ([`loopback_http_client`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;

pub use url::Url;

use crate::fsutil;

/// Largest CA file read.
const MAX_CA_FILE: usize = 1 << 20;

/// A plain-HTTP client for a peer on loopback (the local Ethereum client's JSON-RPC): no
/// proxy, no redirects, `connect` for connecting and `timeout` for the whole request. It
/// trusts no certificate at all: a loopback peer is reached over `http://` only.
pub fn loopback_http_client(
    connect: Duration,
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    http_client_builder(connect, timeout)?
        .no_proxy()
        .build()
        .map_err(|e| format!("HTTP client set-up failed: {e}"))
}

/// The shared transport for `https://` peers: reqwest on rustls with the `ring` provider,
/// trusting the system's roots (or those `SSL_CERT_FILE` / `SSL_CERT_DIR` name) plus every
/// certificate in `ca_file`; no redirects; `connect` for the TCP and TLS connect and
/// `timeout` for the whole request. Callers add what their path needs (a read timeout, a
/// pool setting) and build it. Fails when no root is trusted at all.
pub fn https_client_builder(
    ca_file: Option<&Path>,
    connect: Duration,
    timeout: Duration,
) -> Result<reqwest::ClientBuilder, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A malformed system certificate is skipped, as every TLS client does.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let pem = fsutil::read_limited(path, MAX_CA_FILE)
            .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
        let mut added = 0;
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| {
                format!(
                    "ca_file {} is not a PEM certificate file: {e}",
                    path.display()
                )
            })?;
            roots.add(cert).map_err(|e| {
                format!(
                    "ca_file {} holds an unusable certificate: {e}",
                    path.display()
                )
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(format!(
                "ca_file {} holds no PEM certificate",
                path.display()
            ));
        }
    }
    if roots.is_empty() {
        return Err(
            "no trusted root certificates: install the system CA bundle (ca-certificates) or name a CA file"
                .into(),
        );
    }
    client_builder(roots, connect, timeout)
}

/// A client builder for `http://` peers alone: like [`https_client_builder`], but it
/// trusts no certificate, so it needs no CA bundle on the host.
pub fn http_client_builder(
    connect: Duration,
    timeout: Duration,
) -> Result<reqwest::ClientBuilder, String> {
    client_builder(rustls::RootCertStore::empty(), connect, timeout)
}

fn client_builder(
    roots: rustls::RootCertStore,
    connect: Duration,
    timeout: Duration,
) -> Result<reqwest::ClientBuilder, String> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS set-up failed: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect)
        .timeout(timeout))
}

/// True for `localhost` and addresses in `127.0.0.0/8` or `::1`: where only this machine
/// (an emulator, a test double, the local client) can be listening.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// True for an `http://` URL on loopback with an explicit port, like `http://127.0.0.1:8545`.
pub fn is_loopback_http(text: &str) -> bool {
    Url::parse(text).is_ok_and(|u| u.scheme() == "http" && u.port().is_some() && is_loopback(&u))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_localhost_127_8_and_ipv6_one() {
        for (u, want) in [
            ("http://127.0.0.1:10000/a", true),
            ("http://127.9.9.9:1/", true),
            ("https://localhost/a", true),
            ("https://LOCALHOST/a", true),
            ("https://[::1]:8443/", true),
            ("https://acct.blob.core.windows.net/c", false),
            ("https://10.0.0.1/", false),
            ("https://localhost.example.com/", false),
            ("https://[::2]/", false),
        ] {
            assert_eq!(is_loopback(&Url::parse(u).unwrap()), want, "{u}");
        }
    }

    #[test]
    fn loopback_http_needs_http_a_port_and_loopback() {
        assert!(is_loopback_http("http://127.0.0.1:8545"));
        assert!(is_loopback_http("http://localhost:8545/"));
        assert!(is_loopback_http("http://[::1]:8545"));
        for bad in [
            "https://127.0.0.1:8545",
            "http://127.0.0.1",
            "http://10.0.0.5:8545",
            "http://127.0.0.1.example.com:8545",
            "127.0.0.1:8545",
            "",
        ] {
            assert!(!is_loopback_http(bad), "{bad}");
        }
    }
}
