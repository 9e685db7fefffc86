//! The `keyvault:` secret store: Azure Key Vault secrets through the official
//! `azure_security_keyvault_secrets` client.
//!
//! # Create-if-absent without an atomic create
//!
//! Key Vault has no "create unless it exists": every Set Secret adds a new *version*, and
//! a plain get returns the newest. Two orchestrator runs racing on one identity could each
//! see no secret, each set their own key, and each report their own address, leaving a
//! network whose genesis names one key while the daemons fetch the other.
//!
//! So the backend never trusts "latest". An identity's key is its **first version**: the
//! one with the earliest `created` time, ties broken by the smaller version id. Versions are
//! never deleted by us, so the first version, once settled, can never change, and every
//! reader ([`SecretStore::get`]) resolves the same one by listing the versions.
//!
//! `created` has one-second resolution, so "first" is settled only once no new version can
//! still be stamped with the same second. A creator therefore:
//!
//! 1. lists the versions; if there is any, the secret exists: it reports the first
//!    version's properties and writes nothing (if that version is less than a minute
//!    old, another creator may be mid-race, so it waits [`SETTLE`] and lists again first);
//! 2. sets its value, which adds a version stamped with second `s`;
//! 3. waits [`SETTLE`] (two seconds: one for the stamp's resolution, one for clock
//!    differences between the service's front ends), so that any version stamped `s` or
//!    earlier was written before its next step;
//! 4. lists the versions again. Every version that could precede its own is now in the
//!    list, and any version written later is stamped after `s` and cannot precede it, so
//!    the first version of this list is final. If it is its own, it reports `Created`.
//!    Otherwise it lost a race: it disables its own version, sets the winner's value and
//!    tags again so that "latest" agrees with the first version for people and other
//!    tools, and reports `AlreadyExists` with the winner's properties.
//!
//! Two concurrent runs thus both report the same address, and two different keys are never
//! both readable as the identity. A run that dies between steps 2 and 4 leaves an extra
//! version that readers ignore (`get` resolves the first); the next run finds the secret
//! existing and changes nothing. The rule assumes the service's per-secret consistency
//! (a version is listed once its set has returned), which Key Vault provides.
//!
//! # Throttling
//!
//! Every call goes through the SDK's retry policy with the interactive [`Budget`], which
//! honours `Retry-After` on 429. The orchestrator paces its creates below Key Vault's
//! 300-per-10-seconds limit itself (`orchestrator::provision::RateLimiter`).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::http::{RequestContent, Url};
use azure_core::time::OffsetDateTime;
use azure_security_keyvault_secrets::models::{
    Secret as KvSecret, SecretAttributes, SecretClientGetSecretOptions,
    SecretClientUpdateSecretPropertiesOptions, SecretProperties as KvProperties,
    SetSecretParameters, UpdateSecretPropertiesParameters,
};
use azure_security_keyvault_secrets::{ResourceExt, SecretClient, SecretClientOptions};
use futures::StreamExt;
use zeroize::Zeroizing;

use super::{
    check_tags, CreateOutcome, Secret, SecretError, SecretProperties, SecretStore, SecretValue,
    Tags,
};
use crate::azure::{self, AzureOptions, Budget, Failure};
use crate::name::Name;

/// How long a creator waits after its set before it decides who was first (module docs).
pub const SETTLE: Duration = Duration::from_secs(2);

/// A first version younger than this (by this host's clock, generously) may not have
/// settled yet; a creator that finds one waits [`SETTLE`] and looks again.
const RECENT: Duration = Duration::from_secs(60);

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Secrets in one Key Vault.
pub struct KeyVaultSecretStore {
    client: SecretClient,
    url: String,
    settle: Duration,
}

impl std::fmt::Debug for KeyVaultSecretStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVaultSecretStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// One version, as the version listing shows it.
#[derive(Debug, Clone)]
struct Version {
    id: String,
    created: i64,
    enabled: bool,
    content_type: Option<String>,
    tags: Tags,
}

fn backend(message: String) -> SecretError {
    SecretError::Backend {
        message,
        source: None,
    }
}

impl KeyVaultSecretStore {
    /// A client for the vault at `url` (`https://NAME.vault.azure.net`). No request is sent
    /// until the first call.
    ///
    /// The client checks that the vault's authentication challenge names a resource of the
    /// vault's own domain (so a token is never sent to an impostor's audience), except for a
    /// loopback vault, which can only be a local double and has no Entra ID resource.
    pub fn open(url: &str, azure: &AzureOptions, budget: Budget) -> Result<Self, SecretError> {
        let parsed = Url::parse(url)
            .map_err(|e| SecretError::Invalid(format!("keyvault: {url:?} is not a URL: {e}")))?;
        if parsed.scheme() != "https" {
            return Err(SecretError::Invalid(format!(
                "keyvault: {url} must be https://"
            )));
        }
        if parsed.query().is_some() {
            return Err(SecretError::Invalid(format!(
                "keyvault: {} must not carry a query",
                azure::redact(url)
            )));
        }
        let credential = azure::credential(azure, budget).map_err(backend)?;
        let options = SecretClientOptions {
            client_options: azure::client_options(budget, azure.ca_file.as_deref())
                .map_err(backend)?,
            verify_challenge_resource: Some(!azure::is_loopback(&parsed)),
            ..Default::default()
        };
        let client = SecretClient::new(url, credential, Some(options))
            .map_err(|e| backend(format!("keyvault: {url}: {}", azure::describe(&e))))?;
        Ok(Self {
            client,
            url: url.trim_end_matches('/').to_string(),
            settle: SETTLE,
        })
    }

    /// Overrides [`SETTLE`]; for tests of the race only.
    #[doc(hidden)]
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    fn error(&self, name: &Name, e: &azure_core::Error) -> SecretError {
        classify(&self.url, name, azure::failure(e))
    }

    /// Every version of `name`, oldest first by (created, id); empty when there is none.
    async fn versions(&self, name: &Name) -> Result<Vec<Version>, SecretError> {
        let mut pager = self
            .client
            .list_secret_properties_versions(name.as_str(), None)
            .map_err(|e| self.error(name, &e))?;
        let mut out = Vec::new();
        while let Some(item) = pager.next().await {
            let item = match item {
                Ok(item) => item,
                Err(e) => match self.error(name, &e) {
                    SecretError::NotFound { .. } => return Ok(Vec::new()),
                    other => return Err(other),
                },
            };
            out.push(version_of(&item).map_err(|e| backend(format!("{}: {e}", self.url)))?);
        }
        out.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(out)
    }

    fn properties(name: &Name, v: &Version) -> SecretProperties {
        SecretProperties {
            name: name.clone(),
            content_type: v.content_type.clone(),
            tags: v.tags.clone(),
        }
    }

    async fn get_version(&self, name: &Name, version: &str) -> Result<SecretValue, SecretError> {
        let options = SecretClientGetSecretOptions {
            secret_version: Some(version.to_string()),
            ..Default::default()
        };
        let rsp = self
            .client
            .get_secret(name.as_str(), Some(options))
            .await
            .map_err(|e| self.error(name, &e))?;
        let mut secret: KvSecret = model_wiping_body(rsp.into_body().into())
            .map_err(|e| backend(format!("{}: {name}: {e}", self.url)))?;
        let value = secret
            .value
            .take()
            .ok_or_else(|| backend(format!("{}: {name}: the service sent no value", self.url)))?;
        Ok(SecretValue::new(Zeroizing::new(value)))
    }

    async fn set(
        &self,
        name: &Name,
        value: &SecretValue,
        content_type: Option<&str>,
        tags: &Tags,
    ) -> Result<String, SecretError> {
        let params = SetSecretParameters {
            value: Some(value.expose().to_string()),
            content_type: content_type.map(str::to_string),
            tags: Some(tags.clone().into_iter().collect::<HashMap<_, _>>()),
            ..Default::default()
        };
        let body: RequestContent<SetSecretParameters> = params
            .try_into()
            .map_err(|e: azure_core::Error| backend(format!("{name}: {}", azure::describe(&e))))?;
        let rsp = self
            .client
            .set_secret(name.as_str(), body, None)
            .await
            .map_err(|e| self.error(name, &e))?;
        let mut secret: KvSecret = model_wiping_body(rsp.into_body().into())
            .map_err(|e| backend(format!("{}: {name}: {e}", self.url)))?;
        // The answer echoes the value: wipe it too.
        drop(secret.value.take().map(Zeroizing::new));
        let id = secret
            .resource_id()
            .ok()
            .and_then(|r| r.version)
            .ok_or_else(|| {
                backend(format!(
                    "{}: {name}: the service did not say which version it created",
                    self.url
                ))
            })?;
        Ok(id)
    }

    async fn disable(&self, name: &Name, version: &str) -> Result<(), SecretError> {
        let params = UpdateSecretPropertiesParameters {
            secret_attributes: Some(SecretAttributes {
                enabled: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        let body: RequestContent<UpdateSecretPropertiesParameters> = params
            .try_into()
            .map_err(|e: azure_core::Error| backend(format!("{name}: {}", azure::describe(&e))))?;
        let options = SecretClientUpdateSecretPropertiesOptions {
            secret_version: Some(version.to_string()),
            ..Default::default()
        };
        self.client
            .update_secret_properties(name.as_str(), body, Some(options))
            .await
            .map(|_| ())
            .map_err(|e| self.error(name, &e))
    }
}

/// Decodes a secret bundle from an answer's body, then overwrites the body with zeros, so
/// the secret's value is left only in the model's `String`, which the caller moves into a
/// zeroizing buffer. A body whose buffer is shared (not ours alone) is decoded from a
/// zeroizing copy; the shared original cannot be wiped. Neither can the HTTP and TLS layers'
/// own buffers below the SDK (README: "What stays in memory").
fn model_wiping_body<T: serde::de::DeserializeOwned>(body: azure_core::Bytes) -> Result<T, String> {
    match body.try_into_mut() {
        Ok(mut unique) => decode_and_wipe(&mut unique),
        Err(shared) => decode_and_wipe(&mut Zeroizing::new(shared.to_vec())),
    }
}

/// Decodes `body` as JSON, then zeroes it. The error names the position only: a JSON
/// error's message can quote the input, which here holds the key.
fn decode_and_wipe<T: serde::de::DeserializeOwned>(body: &mut [u8]) -> Result<T, String> {
    use zeroize::Zeroize as _;
    let decoded = serde_json::from_slice(body);
    body.zeroize();
    decoded.map_err(|e| {
        format!(
            "the answer is not a secret bundle (JSON {:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        )
    })
}

fn unix(t: Option<OffsetDateTime>) -> i64 {
    t.map(|t| t.unix_timestamp()).unwrap_or(i64::MAX)
}

fn version_of(item: &KvProperties) -> Result<Version, String> {
    let rid = item
        .resource_id()
        .map_err(|e| format!("a version without an id: {}", azure::describe(&e)))?;
    let attrs = item.attributes.clone().unwrap_or_default();
    Ok(Version {
        id: rid.version.ok_or("a listed version without a version id")?,
        created: unix(attrs.created),
        enabled: attrs.enabled.unwrap_or(true),
        content_type: item.content_type.clone(),
        tags: item.tags.clone().unwrap_or_default().into_iter().collect(),
    })
}

/// Maps one failed call on `name` to a [`SecretError`], by status and error code.
fn classify(url: &str, name: &Name, f: Failure) -> SecretError {
    match (f.status, f.code.as_deref()) {
        (Some(404), _) => SecretError::NotFound { name: name.clone() },
        (Some(409), _) => backend(format!(
            "{url}: {name} is deleted but recoverable (soft-delete): recover it with `az keyvault secret recover` or purge it before provisioning again ({})",
            f.message
        )),
        (Some(403), Some("Forbidden")) if f.message.contains("disabled") => backend(format!(
            "{url}: {name}: its first version is disabled; enable it again (the identity's key is its first version)"
        )),
        (Some(401 | 403), _) => backend(format!(
            "{url}: {name}: access denied ({}); check the identity's role on the vault: README, \"Azure RBAC\"",
            f.message
        )),
        (Some(400), _) => SecretError::Invalid(format!("{name}: {}", f.message)),
        _ if f.transient => SecretError::Transient {
            message: format!("{url}: {name}: {}", f.message),
            source: None,
        },
        _ => backend(format!("{url}: {name}: {}", f.message)),
    }
}

#[async_trait]
impl SecretStore for KeyVaultSecretStore {
    async fn create_if_absent(
        &self,
        name: &Name,
        value: &SecretValue,
        content_type: Option<&str>,
        tags: &Tags,
    ) -> Result<CreateOutcome, SecretError> {
        check_tags(tags)?;
        let mut versions = self.versions(name).await?;
        // A first version from moments ago may still lose to one stamped in the same second
        // by another creator: let it settle before reporting it.
        let recent = unix_now().saturating_sub(RECENT.as_secs() as i64);
        if versions.first().is_some_and(|first| first.created > recent) {
            tokio::time::sleep(self.settle).await;
            versions = self.versions(name).await?;
        }
        if let Some(first) = versions.first() {
            return Ok(CreateOutcome::AlreadyExists(Self::properties(name, first)));
        }
        let mine = self.set(name, value, content_type, tags).await?;
        tokio::time::sleep(self.settle).await;
        let versions = self.versions(name).await?;
        let first = versions.first().ok_or_else(|| {
            backend(format!(
                "{}: {name}: the version just created is not listed",
                self.url
            ))
        })?;
        if first.id == mine {
            return Ok(CreateOutcome::Created);
        }
        // Lost the race: retire ours, and make "latest" show the first version's key.
        self.disable(name, &mine).await?;
        let winner = self.get_version(name, &first.id).await?;
        self.set(name, &winner, first.content_type.as_deref(), &first.tags)
            .await?;
        Ok(CreateOutcome::AlreadyExists(Self::properties(name, first)))
    }

    async fn get(&self, name: &Name) -> Result<Secret, SecretError> {
        let versions = self.versions(name).await?;
        let first = versions
            .first()
            .ok_or_else(|| SecretError::NotFound { name: name.clone() })?;
        if !first.enabled {
            return Err(backend(format!(
                "{}: {name}: its first version is disabled; enable it again (the identity's key is its first version)",
                self.url
            )));
        }
        let value = self.get_version(name, &first.id).await?;
        Ok(Secret {
            properties: Self::properties(name, first),
            value,
        })
    }

    async fn list(&self) -> Result<Vec<SecretProperties>, SecretError> {
        let mut pager = self
            .client
            .list_secret_properties(None)
            .map_err(|e| backend(format!("{}: {}", self.url, azure::describe(&e))))?;
        let mut out = Vec::new();
        while let Some(item) = pager.next().await {
            let item = item.map_err(|e| {
                let f = azure::failure(&e);
                if f.transient {
                    SecretError::Transient {
                        message: format!("listing {}: {}", self.url, f.message),
                        source: None,
                    }
                } else {
                    backend(format!("listing {}: {}", self.url, f.message))
                }
            })?;
            // Secrets that are not identities (another tool's) are not ours.
            let Some(name) = item.resource_id().ok().and_then(|r| Name::new(r.name).ok()) else {
                continue;
            };
            out.push(SecretProperties {
                name,
                content_type: item.content_type.clone(),
                tags: item.tags.clone().unwrap_or_default().into_iter().collect(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_bundle_is_decoded_and_its_body_wiped() {
        let key = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
        let mut body = format!(
            r#"{{"value":"{key}","id":"https://v.vault.azure.net/secrets/m0-v0/0123456789abcdef0123456789abcdef"}}"#
        )
        .into_bytes();
        let secret: KvSecret = decode_and_wipe(&mut body).unwrap();
        assert_eq!(secret.value.as_deref(), Some(key));
        assert!(body.iter().all(|b| *b == 0), "the body still holds the key");

        let mut bad = format!(r#"{{"value": 7, "key": "{key}"}}"#).into_bytes();
        let e = decode_and_wipe::<KvSecret>(&mut bad).unwrap_err();
        assert!(!e.contains(&key[..16]), "{e}");
        assert!(bad.iter().all(|b| *b == 0));
        // A buffer we own alone is wiped in place; a shared one is left as the SDK has it.
        let unique = azure_core::Bytes::from(format!(r#"{{"value":"{key}"}}"#).into_bytes());
        let secret: KvSecret = model_wiping_body(unique).unwrap();
        assert_eq!(secret.value.as_deref(), Some(key));
    }

    fn f(status: u16, code: &str, message: &str) -> Failure {
        Failure {
            status: Some(status),
            code: Some(code.into()),
            transient: status >= 500 || status == 429,
            message: message.into(),
        }
    }

    #[test]
    fn errors_classify_by_status_and_code() {
        let n = Name::new("m0-v0").unwrap();
        let c = |status, code, msg| classify("https://kv", &n, f(status, code, msg));
        assert!(matches!(
            c(404, "SecretNotFound", "x"),
            SecretError::NotFound { .. }
        ));
        assert!(c(409, "Conflict", "x").to_string().contains("soft-delete"));
        assert!(c(
            403,
            "Forbidden",
            "Operation get is not allowed on a disabled secret."
        )
        .to_string()
        .contains("first version is disabled"));
        assert!(c(403, "Forbidden", "no access")
            .to_string()
            .contains("RBAC"));
        assert!(matches!(
            c(429, "Throttled", "x"),
            SecretError::Transient { .. }
        ));
        assert!(matches!(
            c(503, "ServiceUnavailable", "x"),
            SecretError::Transient { .. }
        ));
        assert!(matches!(
            c(400, "BadParameter", "x"),
            SecretError::Invalid(_)
        ));
    }

    #[test]
    fn only_https_vaults_open() {
        let e = KeyVaultSecretStore::open(
            "http://kv.vault.azure.net",
            &AzureOptions::default(),
            Budget::interactive(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("https"), "{e}");
    }
}
