//! Network addresses: the one rule, used everywhere, for what counts as this machine.
//!
//! Loopback matters twice: a plain `http://` storage endpoint or connection string is
//! accepted only for an emulator on loopback, and the engine-signer RPC, which carries the
//! key, may only go to loopback.

use std::sync::Arc;
use std::time::Duration;

pub use url::Url;

/// A plain-HTTP client for a peer on loopback (the local Ethereum client's JSON-RPC): no
/// proxy, no redirects, and `timeout` for connecting and for the whole request. It trusts
/// no certificate at all: a loopback peer is reached over `http://` only.
pub fn loopback_http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS set-up failed: {e}"))?
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
        .map_err(|e| format!("HTTP client set-up failed: {e}"))
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
