//! Account shared access signatures for the storage emulator.
//!
//! `azure_storage_blob` authenticates with Entra ID tokens only, which the emulator does
//! not issue. With a connection string (emulator only: see [`super::ConnectionString`]),
//! every request instead carries an account SAS signed with the account key: a fresh one
//! per request, valid for an hour, so a long-running daemon never holds an expired one.
//! The string to sign is the one of signed version 2020-12-06 and later (ten fields, the
//! encryption scope last).

use std::sync::Arc;

use async_trait::async_trait;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::ConnectionString;

/// The SAS version we sign; the emulator and the service both accept it.
const SIGNED_VERSION: &str = "2021-06-08";
/// Read, write, delete, list, add, create: what lease records need.
const PERMISSIONS: &str = "rwdlac";
const VALIDITY_SECS: i64 = 3600;

/// The query of an account SAS for the blob service, expiring at `expiry` (ISO 8601 UTC,
/// whole seconds), signed with the account key's bytes. Public for test tools that talk to
/// the emulator without the SDK.
pub fn account_sas(account: &str, key: &[u8], expiry: &str) -> String {
    let string_to_sign =
        format!("{account}\n{PERMISSIONS}\nb\nsco\n\n{expiry}\n\nhttps,http\n{SIGNED_VERSION}\n\n");
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(string_to_sign.as_bytes());
    let sig = azure_core::base64::encode(mac.finalize().into_bytes());
    let mut q = azure_core::http::Url::parse("http://x/").expect("a constant URL");
    q.query_pairs_mut()
        .append_pair("sv", SIGNED_VERSION)
        .append_pair("ss", "b")
        .append_pair("srt", "sco")
        .append_pair("sp", PERMISSIONS)
        .append_pair("se", expiry)
        .append_pair("spr", "https,http")
        .append_pair("sig", &sig);
    q.query().unwrap_or_default().to_string()
}

/// [`account_sas`] for an account key as connection strings carry it (base64), expiring
/// an hour from now; for test tools that talk to the emulator without the SDK.
pub fn account_sas_for_base64_key(account: &str, key_base64: &str) -> Result<String, String> {
    let key = zeroize::Zeroizing::new(
        azure_core::base64::decode(key_base64).map_err(|_| "the account key is not base64")?,
    );
    Ok(account_sas(account, &key, &expiry_from_now()))
}

/// An hour from now, as a SAS expiry.
pub fn expiry_from_now() -> String {
    let at = azure_core::time::OffsetDateTime::now_utc()
        + azure_core::time::Duration::seconds(VALIDITY_SECS);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// A pipeline policy that signs each request with a fresh account SAS.
#[derive(Clone)]
pub(crate) struct SasPolicy {
    cs: Arc<ConnectionString>,
}

impl std::fmt::Debug for SasPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SasPolicy")
            .field("account", &self.cs.account)
            .finish_non_exhaustive()
    }
}

impl SasPolicy {
    pub(crate) fn new(cs: Arc<ConnectionString>) -> Self {
        Self { cs }
    }
}

#[async_trait]
impl Policy for SasPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let sas = account_sas(&self.cs.account, &self.cs.key, &expiry_from_now());
        let url = request.url_mut();
        let query = match url.query() {
            Some(q) if !q.is_empty() => format!("{q}&{sas}"),
            _ => sas,
        };
        url.set_query(Some(&query));
        next[0].send(ctx, request, &next[1..]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_of_the_documented_string() {
        // Recomputed independently: HMAC-SHA256 over the ten-line string, base64.
        let key = b"0123456789abcdef";
        let q = account_sas("acct", key, "2030-01-01T00:00:00Z");
        let pairs: std::collections::BTreeMap<String, String> =
            azure_core::http::Url::parse(&format!("http://x/?{q}"))
                .unwrap()
                .query_pairs()
                .into_owned()
                .collect();
        assert_eq!(pairs["sv"], SIGNED_VERSION);
        assert_eq!(pairs["se"], "2030-01-01T00:00:00Z");
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(b"acct\nrwdlac\nb\nsco\n\n2030-01-01T00:00:00Z\n\nhttps,http\n2021-06-08\n\n");
        assert_eq!(
            pairs["sig"],
            azure_core::base64::encode(mac.finalize().into_bytes())
        );
    }

    #[test]
    fn expiry_is_iso_8601_utc() {
        let e = expiry_from_now();
        assert_eq!(e.len(), 20, "{e}");
        assert!(e.ends_with('Z') && e.as_bytes()[10] == b'T', "{e}");
    }
}
