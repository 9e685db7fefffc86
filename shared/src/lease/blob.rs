//! The `blob:` lease store: one block blob per identity in one container, leased with Azure
//! Blob Storage's Lease Blob operation (official `azure_storage_blob` crate).
//!
//! | trait call      | REST operation |
//! |-----------------|----------------|
//! | `create_record` | Put Blob (empty, `If-None-Match: *`); creates the container when it is missing |
//! | `acquire`, `renew`, `release`, `change`, `break_lease` | Lease Blob with that `x-ms-lease-action` |
//! | `write_metadata`| Set Blob Metadata with `x-ms-lease-id` |
//! | `read`          | Get Blob Properties (`x-ms-lease-state`, `x-ms-lease-duration`, `x-ms-meta-*`) |
//! | `list`          | List Blobs with `include=metadata` |
//!
//! Errors are classified by the service's error code, never by message text:
//! lease-id mismatch, lease not present, broken, breaking and `LeaseLost` are
//! [`LeaseError::Lost`]; `LeaseAlreadyPresent` (and breaking on acquire) is
//! [`LeaseError::HeldByOther`]; no answer, 408, 429 and 5xx are [`LeaseError::Transient`].
//!
//! Every request is bounded by the [`Budget`] the store was opened with: on the daemon's
//! lease path one attempt of at most R/2, no SDK retries (the daemon retries until its fence
//! deadline itself).
//!
//! Azure does not report how long a fixed lease lasts nor how much of it is left, so
//! [`LeaseRecord::duration`] is `None` for a fixed lease and `remaining` is always `None`.
//!
//! Clocks: the service decides when a lease expires or a break ends, on its own clock; no
//! host's clock takes part, so a step of a VM's wall clock moves no lease. What each daemon
//! measures is its own fence deadline, on its monotonic clock, from the moment it *sent* its
//! last successful acquire or renew: the service's lease runs no shorter than that, and the
//! margin M covers the rate difference between the service's clock and the VM's. A VM's
//! wall clock reaches the lease path only through authentication (SAS expiry, token
//! lifetimes), where a bad clock makes requests fail: the holder then fences at its
//! deadline, which costs availability, never safety.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::http::headers::{HeaderName, Headers};
use azure_core::http::{RequestContent, Url};
use azure_storage_blob::models::{
    BlobClientAcquireLeaseOptions, BlobClientBreakLeaseOptions, BlobClientSetMetadataOptions,
    BlobClientUploadOptions, BlobContainerClientListBlobsOptions, ListBlobsIncludeItem,
};
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use futures::StreamExt;

use super::{
    BreakPeriod, LeaseDuration, LeaseError, LeaseId, LeaseRecord, LeaseState, LeaseStore,
    LostReason, Metadata, RecordCreated,
};
use crate::azure::{self, sas::SasPolicy, AzureOptions, Budget, Failure};
use crate::name::Name;

/// Leases as Azure blobs in one container.
pub struct BlobLeaseStore {
    container: BlobContainerClient,
    /// The container URL without any query, for messages.
    url: String,
}

impl std::fmt::Debug for BlobLeaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobLeaseStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn backend(message: String) -> LeaseError {
    LeaseError::Backend {
        message,
        source: None,
    }
}

/// The metadata name of a standby entry's address.
const STANDBY_ADDRESS: &str = "address";

impl BlobLeaseStore {
    /// An error about blob `name` that is not a lease record's.
    fn failed(&self, name: &str, e: &azure_core::Error) -> LeaseError {
        let f = azure::failure(e);
        let message = format!("{}/{name}: {}{}", self.url, f.message, rbac_hint(&f));
        if f.transient {
            LeaseError::Transient {
                message,
                source: None,
            }
        } else {
            backend(message)
        }
    }

    /// Opens the container at `url` (`https://ACCOUNT.blob.core.windows.net/CONTAINER`, or
    /// the emulator's `http://127.0.0.1:10000/devstoreaccount1/CONTAINER`). No request is
    /// sent until the first call.
    ///
    /// Authentication: Entra ID through `azure`'s credential. A storage connection string is
    /// honoured only for a loopback endpoint (the emulator); one configured explicitly for
    /// any other endpoint is refused, and `http://` works only with one.
    pub fn open(url: &str, azure: &AzureOptions, budget: Budget) -> Result<Self, LeaseError> {
        let parsed = Url::parse(url)
            .map_err(|e| LeaseError::Invalid(format!("blob: URL {url:?} is not a URL: {e}")))?;
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(LeaseError::Invalid(format!(
                "blob: URL {} must not carry a query or fragment (no SAS in specs: they end up in logs)",
                azure::redact(url)
            )));
        }
        let loopback = azure::is_loopback(&parsed);
        let mut options = BlobContainerClientOptions {
            client_options: azure::client_options(budget, azure.ca_file.as_deref())
                .map_err(backend)?,
            ..Default::default()
        };
        let connection = if loopback {
            azure
                .connection_string()
                .map_err(|e| LeaseError::Invalid(format!("storage connection string: {e}")))?
        } else if azure.connection_string.is_some() {
            return Err(LeaseError::Invalid(format!(
                "azure.connection_string is for the storage emulator on loopback only; {url} uses Entra ID (azure.credential)"
            )));
        } else {
            None
        };
        let container = match connection {
            Some(cs) => {
                let endpoint = cs.blob_endpoint.trim_end_matches('/');
                let inside = url
                    .strip_prefix(endpoint)
                    .is_some_and(|rest| rest.starts_with('/') && rest.len() > 1);
                if !inside {
                    return Err(LeaseError::Invalid(format!(
                        "blob: URL {url} is not a container of the connection string's endpoint {endpoint}"
                    )));
                }
                options
                    .client_options
                    .per_call_policies
                    .push(Arc::new(SasPolicy::new(Arc::new(cs))));
                BlobContainerClient::new(parsed, None, Some(options))
            }
            None => {
                if parsed.scheme() != "https" {
                    return Err(LeaseError::Invalid(format!(
                        "blob: {url} is http://, which only the storage emulator may use: set {} (or azure.connection_string) to its connection string",
                        azure::CONNECTION_STRING_ENV
                    )));
                }
                let credential = azure::credential(azure, budget).map_err(backend)?;
                BlobContainerClient::new(parsed, Some(credential), Some(options))
            }
        }
        .map_err(|e| backend(format!("blob: {url}: {}", azure::describe(&e))))?;
        Ok(Self {
            container,
            url: url.trim_end_matches('/').to_string(),
        })
    }

    fn error(&self, identity: &Name, e: &azure_core::Error) -> LeaseError {
        classify(&self.url, identity, azure::failure(e))
    }

    /// Creates the container unless it exists (`orchestrator init` does it through
    /// `create_record`; the daemons never create one).
    pub async fn ensure_container(&self) -> Result<(), LeaseError> {
        match self.container.create(None).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let f = azure::failure(&e);
                if f.code.as_deref() == Some("ContainerAlreadyExists") {
                    Ok(())
                } else if f.transient {
                    Err(LeaseError::Transient {
                        message: format!("creating container {}: {}", self.url, f.message),
                        source: None,
                    })
                } else {
                    Err(backend(format!(
                        "cannot create container {}: {}{}",
                        self.url,
                        f.message,
                        rbac_hint(&f)
                    )))
                }
            }
        }
    }
}

/// Maps one failed call on `identity` to a [`LeaseError`], by service error code.
fn classify(url: &str, identity: &Name, f: Failure) -> LeaseError {
    let lost = |reason| LeaseError::Lost {
        identity: identity.clone(),
        reason,
    };
    let held = |state| LeaseError::HeldByOther {
        identity: identity.clone(),
        state,
    };
    match f.code.as_deref() {
        Some("LeaseAlreadyPresent") => held(LeaseState::Leased),
        Some("LeaseIsBreakingAndCannotBeAcquired") => held(LeaseState::Breaking),
        Some("LeaseIdMismatchWithLeaseOperation" | "LeaseIdMismatchWithBlobOperation") => {
            lost(LostReason::IdMismatch)
        }
        Some("LeaseNotPresentWithLeaseOperation" | "LeaseNotPresentWithBlobOperation") => {
            lost(LostReason::NotPresent)
        }
        Some("LeaseIsBrokenAndCannotBeRenewed") => lost(LostReason::Broken),
        Some("LeaseIsBreakingAndCannotBeChanged") => lost(LostReason::Breaking),
        Some("LeaseLost") => lost(LostReason::Lost),
        Some("BlobNotFound") => LeaseError::NotFound {
            identity: identity.clone(),
        },
        Some("ContainerNotFound") => lost(LostReason::StoreDeleted),
        _ if f.status == Some(404) => LeaseError::NotFound {
            identity: identity.clone(),
        },
        _ if f.transient => LeaseError::Transient {
            message: format!("{url}/{identity}: {}", f.message),
            source: None,
        },
        _ if f.status == Some(400) => LeaseError::Invalid(format!("{identity}: {}", f.message)),
        _ => backend(format!("{url}/{identity}: {}{}", f.message, rbac_hint(&f))),
    }
}

/// A pointer to the README's RBAC section for authorisation failures.
fn rbac_hint(f: &Failure) -> &'static str {
    if f.status == Some(403) || f.status == Some(401) {
        " (check the identity's role on the container: README, \"Azure RBAC\")"
    } else {
        ""
    }
}

fn lease_secs(duration: LeaseDuration) -> Result<i32, LeaseError> {
    match duration {
        LeaseDuration::Infinite => Ok(-1),
        LeaseDuration::Fixed(d) => {
            // Re-checked here: the variant is public, so an unchecked value can arrive.
            LeaseDuration::fixed(d)?;
            Ok(d.as_secs() as i32)
        }
    }
}

fn header<'h>(headers: &'h Headers, name: &'static str) -> Option<&'h str> {
    headers.get_optional_str(&HeaderName::from_static(name))
}

fn state_from(text: Option<&str>) -> Result<LeaseState, String> {
    let text = text.ok_or("the service sent no lease state")?;
    LeaseState::parse(&text.to_ascii_lowercase())
        .ok_or_else(|| format!("the service sent an unknown lease state {text:?}"))
}

/// The record's duration as far as Azure tells it (see the module docs).
fn duration_from(state: LeaseState, text: Option<&str>) -> Option<LeaseDuration> {
    match (state, text.map(str::to_ascii_lowercase).as_deref()) {
        (LeaseState::Leased | LeaseState::Breaking, Some("infinite")) => {
            Some(LeaseDuration::Infinite)
        }
        _ => None,
    }
}

#[async_trait]
impl LeaseStore for BlobLeaseStore {
    async fn create_record(&self, identity: &Name) -> Result<RecordCreated, LeaseError> {
        let blob = self.container.blob_client(identity.as_str());
        let mut created_container = false;
        loop {
            let options = BlobClientUploadOptions::default().if_not_exists();
            match blob
                .upload(RequestContent::from(Vec::new()), Some(options))
                .await
            {
                Ok(_) => return Ok(RecordCreated::Created),
                Err(e) => {
                    let f = azure::failure(&e);
                    match f.code.as_deref() {
                        // Exists; a leased record refuses the write before the condition.
                        Some("BlobAlreadyExists" | "LeaseIdMissing" | "ConditionNotMet") => {
                            return Ok(RecordCreated::AlreadyExisted)
                        }
                        Some("ContainerNotFound") if !created_container => {
                            self.ensure_container().await?;
                            created_container = true;
                        }
                        _ if f.status == Some(409) || f.status == Some(412) => {
                            return Ok(RecordCreated::AlreadyExisted)
                        }
                        _ => return Err(classify(&self.url, identity, f)),
                    }
                }
            }
        }
    }

    async fn acquire(
        &self,
        identity: &Name,
        duration: LeaseDuration,
        proposed: Option<&LeaseId>,
    ) -> Result<LeaseId, LeaseError> {
        let secs = lease_secs(duration)?;
        // Always propose: then the id is known even if the response is odd.
        let id = proposed.cloned().unwrap_or_else(LeaseId::random);
        let options = BlobClientAcquireLeaseOptions {
            proposed_lease_id: Some(id.as_str().to_string()),
            ..Default::default()
        };
        let blob = self.container.blob_client(identity.as_str());
        let refused = match blob.acquire_lease(secs, Some(options)).await {
            Ok(rsp) => {
                return match header(rsp.headers(), "x-ms-lease-id") {
                    Some(got) => LeaseId::parse(got).map_err(|_| {
                        backend(format!(
                            "{}/{identity}: the service returned a malformed lease id",
                            self.url
                        ))
                    }),
                    None => Ok(id),
                }
            }
            Err(e) => self.error(identity, &e),
        };
        // The emulator answers `LeaseAlreadyPresent` during a break too; say which it is
        // (one extra read, only when refused).
        if let LeaseError::HeldByOther {
            state: LeaseState::Leased,
            ..
        } = &refused
        {
            if let Ok(rec) = self.read(identity).await {
                if rec.state == LeaseState::Breaking {
                    return Err(LeaseError::HeldByOther {
                        identity: identity.clone(),
                        state: LeaseState::Breaking,
                    });
                }
            }
        }
        Err(refused)
    }

    async fn renew(&self, identity: &Name, lease: &LeaseId) -> Result<(), LeaseError> {
        let blob = self.container.blob_client(identity.as_str());
        blob.renew_lease(lease.as_str().to_string(), None)
            .await
            .map(|_| ())
            .map_err(|e| self.error(identity, &e))
    }

    async fn release(&self, identity: &Name, lease: &LeaseId) -> Result<(), LeaseError> {
        let blob = self.container.blob_client(identity.as_str());
        blob.release_lease(lease.as_str().to_string(), None)
            .await
            .map(|_| ())
            .map_err(|e| self.error(identity, &e))
    }

    async fn change(
        &self,
        identity: &Name,
        lease: &LeaseId,
        proposed: &LeaseId,
    ) -> Result<LeaseId, LeaseError> {
        let blob = self.container.blob_client(identity.as_str());
        blob.change_lease(
            lease.as_str().to_string(),
            proposed.as_str().to_string(),
            None,
        )
        .await
        .map(|_| proposed.clone())
        .map_err(|e| self.error(identity, &e))
    }

    async fn break_lease(
        &self,
        identity: &Name,
        period: Option<BreakPeriod>,
    ) -> Result<Duration, LeaseError> {
        let options = BlobClientBreakLeaseOptions {
            // 0-60, so it fits.
            break_period: period.map(|p| p.as_secs() as i32),
            ..Default::default()
        };
        let blob = self.container.blob_client(identity.as_str());
        let rsp = blob
            .break_lease(Some(options))
            .await
            .map_err(|e| self.error(identity, &e))?;
        let secs = header(rsp.headers(), "x-ms-lease-time")
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0);
        Ok(Duration::from_secs(secs))
    }

    async fn write_metadata(
        &self,
        identity: &Name,
        lease: &LeaseId,
        metadata: &Metadata,
    ) -> Result<(), LeaseError> {
        let map: HashMap<String, String> = metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let options = BlobClientSetMetadataOptions {
            lease_id: Some(lease.as_str().to_string()),
            ..Default::default()
        };
        let blob = self.container.blob_client(identity.as_str());
        blob.set_metadata(&map, Some(options))
            .await
            .map(|_| ())
            .map_err(|e| self.error(identity, &e))
    }

    async fn read(&self, identity: &Name) -> Result<LeaseRecord, LeaseError> {
        let blob = self.container.blob_client(identity.as_str());
        let rsp = blob
            .get_properties(None)
            .await
            .map_err(|e| match self.error(identity, &e) {
                LeaseError::Lost {
                    reason: LostReason::StoreDeleted,
                    ..
                } => backend(format!("container {} does not exist", self.url)),
                other => other,
            })?;
        let headers = rsp.headers();
        let state = state_from(header(headers, "x-ms-lease-state"))
            .map_err(|e| backend(format!("{}/{identity}: {e}", self.url)))?;
        let duration = duration_from(state, header(headers, "x-ms-lease-duration"));
        // As the blob holds it (see `Metadata::from_store`): another tool may have set it.
        let metadata = Metadata::from_store(
            headers
                .iter()
                .filter_map(|(name, value)| {
                    name.as_str()
                        .strip_prefix("x-ms-meta-")
                        .map(|k| (k.to_string(), value.as_str().to_string()))
                })
                .collect(),
        );
        Ok(LeaseRecord {
            identity: identity.clone(),
            state,
            duration,
            remaining: None,
            metadata,
        })
    }

    async fn list(&self) -> Result<Vec<LeaseRecord>, LeaseError> {
        let options = BlobContainerClientListBlobsOptions {
            include: Some(vec![ListBlobsIncludeItem::Metadata]),
            ..Default::default()
        };
        let mut pager = self
            .container
            .list_blobs(Some(options))
            .map_err(|e| backend(format!("{}: {}", self.url, azure::describe(&e))))?;
        let mut out = Vec::new();
        while let Some(item) = pager.next().await {
            let item = item.map_err(|e| {
                let f = azure::failure(&e);
                if f.code.as_deref() == Some("ContainerNotFound") {
                    backend(format!("container {} does not exist", self.url))
                } else if f.transient {
                    LeaseError::Transient {
                        message: format!("listing {}: {}", self.url, f.message),
                        source: None,
                    }
                } else {
                    backend(format!(
                        "listing {}: {}{}",
                        self.url,
                        f.message,
                        rbac_hint(&f)
                    ))
                }
            })?;
            // Blobs that are not identity records (another tool's files) are not ours.
            let Some(identity) = item.name.as_deref().and_then(|n| Name::new(n).ok()) else {
                continue;
            };
            let props = item.properties.unwrap_or_default();
            let state_text = props.lease_state.map(|s| s.to_string());
            let state = state_from(state_text.as_deref())
                .map_err(|e| backend(format!("{}/{identity}: {e}", self.url)))?;
            let duration_text = props.lease_duration.map(|d| d.to_string());
            let duration = duration_from(state, duration_text.as_deref());
            let metadata = Metadata::from_store(
                item.metadata
                    .and_then(|m| m.values)
                    .unwrap_or_default()
                    .into_iter()
                    .collect(),
            );
            out.push(LeaseRecord {
                identity,
                state,
                duration,
                remaining: None,
                metadata,
            });
        }
        out.sort_by(|a, b| a.identity.cmp(&b.identity));
        Ok(out)
    }

    async fn put_network_info(&self, document: &[u8]) -> Result<(), LeaseError> {
        let blob = self.container.blob_client(super::NETWORK_INFO);
        let mut created_container = false;
        loop {
            let options = BlobClientUploadOptions {
                blob_content_type: Some("application/json".into()),
                ..Default::default()
            };
            match blob
                .upload(RequestContent::from(document.to_vec()), Some(options))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let f = azure::failure(&e);
                    if f.code.as_deref() == Some("ContainerNotFound") && !created_container {
                        self.ensure_container().await?;
                        created_container = true;
                        continue;
                    }
                    return Err(backend(format!(
                        "{}/{}: {}{}",
                        self.url,
                        super::NETWORK_INFO,
                        f.message,
                        rbac_hint(&f)
                    )));
                }
            }
        }
    }

    async fn get_network_info(&self, max: usize) -> Result<Option<Vec<u8>>, LeaseError> {
        let blob = self.container.blob_client(super::NETWORK_INFO);
        let where_ = format!("{}/{}", self.url, super::NETWORK_INFO);
        let download = match blob.download(None).await {
            Ok(d) => d,
            Err(e) => {
                let f = azure::failure(&e);
                return match f.status {
                    Some(404) => Ok(None),
                    _ if f.transient => Err(LeaseError::Transient {
                        message: format!("{where_}: {}", f.message),
                        source: None,
                    }),
                    _ => Err(backend(format!("{where_}: {}{}", f.message, rbac_hint(&f)))),
                };
            }
        };
        if download
            .properties
            .content_length
            .is_some_and(|n| n > max as u64)
        {
            return Err(backend(format!("{where_}: over {max} bytes")));
        }
        let mut buffer = vec![0u8; max];
        let n = download
            .body
            .collect_into(&mut buffer)
            .await
            .map_err(|e| backend(format!("{where_}: {e} (at most {max} bytes are read)")))?;
        buffer.truncate(n);
        Ok(Some(buffer))
    }

    async fn announce_standby(&self, node: &str, address: &str) -> Result<(), LeaseError> {
        let name = super::standby_entry_name(node);
        let blob = self.container.blob_client(&name);
        let options = BlobClientUploadOptions {
            metadata: Some([(STANDBY_ADDRESS.to_string(), address.to_string())].into()),
            ..Default::default()
        };
        blob.upload(RequestContent::from(Vec::new()), Some(options))
            .await
            .map(|_| ())
            .map_err(|e| self.failed(&name, &e))
    }

    async fn withdraw_standby(&self, node: &str) -> Result<(), LeaseError> {
        let name = super::standby_entry_name(node);
        match self.container.blob_client(&name).delete(None).await {
            Ok(_) => Ok(()),
            Err(e) if azure::failure(&e).status == Some(404) => Ok(()),
            Err(e) => Err(self.failed(&name, &e)),
        }
    }

    async fn standbys(&self) -> Result<Vec<(String, String)>, LeaseError> {
        let options = BlobContainerClientListBlobsOptions {
            include: Some(vec![ListBlobsIncludeItem::Metadata]),
            prefix: Some(super::STANDBY_PREFIX.into()),
            ..Default::default()
        };
        let mut pager = self
            .container
            .list_blobs(Some(options))
            .map_err(|e| self.failed(super::STANDBY_PREFIX, &e))?;
        let mut out = Vec::new();
        while let Some(item) = pager.next().await {
            let item = item.map_err(|e| self.failed(super::STANDBY_PREFIX, &e))?;
            let node = item.name.as_deref().and_then(super::standby_entry_node);
            let address = item
                .metadata
                .and_then(|m| m.values)
                .and_then(|mut m| m.remove(STANDBY_ADDRESS));
            if let (Some(node), Some(address)) = (node, address) {
                out.push((node, address));
            }
            if out.len() == super::MAX_STANDBYS {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(status: u16, code: &str) -> Failure {
        Failure {
            status: Some(status),
            code: Some(code.into()),
            transient: status >= 500 || status == 429,
            message: format!("{status} {code}"),
        }
    }

    #[test]
    fn error_codes_classify_as_the_issue_says() {
        let n = Name::new("m0-v0").unwrap();
        let c = |status, code| classify("https://a/c", &n, f(status, code));
        for (code, reason) in [
            ("LeaseIdMismatchWithLeaseOperation", LostReason::IdMismatch),
            ("LeaseNotPresentWithLeaseOperation", LostReason::NotPresent),
            ("LeaseIsBrokenAndCannotBeRenewed", LostReason::Broken),
            ("LeaseLost", LostReason::Lost),
        ] {
            assert!(
                matches!(c(409, code), LeaseError::Lost { reason: r, .. } if r == reason),
                "{code}"
            );
        }
        assert!(matches!(
            c(409, "LeaseAlreadyPresent"),
            LeaseError::HeldByOther {
                state: LeaseState::Leased,
                ..
            }
        ));
        assert!(c(503, "ServerBusy").is_transient());
        assert!(c(500, "InternalError").is_transient());
        assert!(c(429, "TooManyRequests").is_transient());
        let timeout = Failure {
            status: None,
            code: None,
            transient: true,
            message: "operation timed out".into(),
        };
        assert!(classify("u", &n, timeout).is_transient());
        assert!(matches!(
            c(404, "BlobNotFound"),
            LeaseError::NotFound { .. }
        ));
        assert!(matches!(
            c(404, "ContainerNotFound"),
            LeaseError::Lost {
                reason: LostReason::StoreDeleted,
                ..
            }
        ));
        let denied = c(403, "AuthorizationPermissionMismatch").to_string();
        assert!(denied.contains("RBAC"), "{denied}");
    }

    #[test]
    fn specs_refuse_unsafe_set_ups() {
        let none = AzureOptions::default();
        // http:// without the emulator's connection string.
        if std::env::var_os(azure::CONNECTION_STRING_ENV).is_none() {
            let e = BlobLeaseStore::open(
                "http://127.0.0.1:10000/devstoreaccount1/c",
                &none,
                Budget::interactive(),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("AZURE_STORAGE_CONNECTION_STRING"), "{e}");
        }
        // A connection string for a real account endpoint.
        let cs = AzureOptions {
            connection_string: Some("UseDevelopmentStorage=true".into()),
            ..Default::default()
        };
        let e = BlobLeaseStore::open(
            "https://acct.blob.core.windows.net/c",
            &cs,
            Budget::interactive(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("emulator on loopback only"), "{e}");
        // A SAS in the spec.
        let e = BlobLeaseStore::open(
            "https://acct.blob.core.windows.net/c?sig=x",
            &none,
            Budget::interactive(),
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains("sig=x"), "{e}");
        // The emulator's string for another endpoint.
        let e = BlobLeaseStore::open("http://127.0.0.1:9999/other/c", &cs, Budget::interactive())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a container of"), "{e}");
        BlobLeaseStore::open(
            "http://127.0.0.1:10000/devstoreaccount1/c",
            &cs,
            Budget::interactive(),
        )
        .unwrap();
    }
}
