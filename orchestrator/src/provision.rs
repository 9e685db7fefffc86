//! Provisioning a member's validator identities: a key per identity in the secret store,
//! and a lease record beside it.
//!
//! Idempotent and restartable: identity `m<member>-v<index>` is looked up first, and a key
//! is generated only for an identity that has no secret yet. A run stopped half-way is
//! completed by the next; nothing is ever regenerated or overwritten (the store's
//! create-if-absent guarantees that even against a concurrent run, whose key then wins and
//! is used). A stored identity whose tags say it belongs to another network or member, or
//! whose key does not match its `address` tag, stops the run: that is someone else's state.
//!
//! Secrets are stored as 64 hex digits (content type [`CONTENT_TYPE_RAW_HEX`]); the secret
//! store is what protects them at rest. Secret creation is paced to Key Vault's limit of
//! 300 creates per 10 s, so the Azure backend inherits it.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use shared::keyfile::CONTENT_TYPE_RAW_HEX;
use shared::lease::{LeaseError, LeaseStore, RecordCreated};
use shared::secret::{
    CreateOutcome, SecretError, SecretProperties, SecretStore, SecretValue, Tags,
};
use shared::{Address, Name, ValidatorKey};

/// Fewest validators a member may run.
pub const MIN_VALIDATORS: u32 = 2;
/// Most validators a member may run.
pub const MAX_VALIDATORS: u32 = 15;

/// Tag names on each identity's secret.
pub mod tag {
    pub const ADDRESS: &str = "address";
    pub const MEMBER: &str = "member";
    pub const INDEX: &str = "index";
    pub const NETWORK_ID: &str = "network-id";
}

/// Which identities to provision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub member: u32,
    pub validators: u32,
    pub network_id: u64,
}

impl Plan {
    /// The identity id of validator `index`: `m<member>-v<index>`.
    pub fn identity(&self, index: u32) -> Name {
        Name::new(format!("m{}-v{}", self.member, index))
            .expect("m<digits>-v<digits> is a valid name")
    }
}

/// One provisioned identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: Name,
    pub index: u32,
    pub address: Address,
    /// Whether this run generated and stored the key (false: it existed).
    pub key_created: bool,
    /// Whether this run created the lease record (false: it existed).
    pub record_created: bool,
}

/// Why provisioning stopped. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("--validators {0} is outside {MIN_VALIDATORS}-{MAX_VALIDATORS}")]
    ValidatorCount(u32),
    #[error("{id} already exists with {tag} {found:?}, but this run asks for {wanted:?}; refusing to mix networks or members")]
    Conflict {
        id: Name,
        tag: &'static str,
        found: String,
        wanted: String,
    },
    #[error("{id} holds a key for {actual}, but its address tag says {tagged}; the secret store is inconsistent")]
    AddressMismatch {
        id: Name,
        actual: Address,
        tagged: String,
    },
    #[error("{id} does not hold a valid key: {reason}")]
    BadSecret { id: Name, reason: String },
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
}

/// Paces calls to at most `limit` per `window`, as Key Vault throttles secret creates.
#[derive(Debug)]
pub struct RateLimiter {
    limit: usize,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl RateLimiter {
    pub fn new(limit: usize, window: Duration) -> Self {
        assert!(
            limit > 0,
            "a rate limit of zero never lets anything through"
        );
        Self {
            limit,
            window,
            recent: VecDeque::with_capacity(limit),
        }
    }

    /// Key Vault's secret-create limit: 300 per 10 seconds.
    pub fn key_vault_creates() -> Self {
        Self::new(300, Duration::from_secs(10))
    }

    /// Waits until one more call fits in the window, then records it.
    pub async fn acquire(&mut self) {
        loop {
            let now = Instant::now();
            while self
                .recent
                .front()
                .is_some_and(|t| now.duration_since(*t) >= self.window)
            {
                self.recent.pop_front();
            }
            if self.recent.len() < self.limit {
                self.recent.push_back(now);
                return;
            }
            let oldest = *self.recent.front().expect("full window is not empty");
            tokio::time::sleep(self.window - now.duration_since(oldest)).await;
        }
    }
}

/// Progress reports, one per identity, for a terminal or a log.
pub trait Progress {
    fn identity_done(&mut self, done: usize, total: usize, identity: &Identity);
}

/// No progress output.
#[derive(Debug, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn identity_done(&mut self, _: usize, _: usize, _: &Identity) {}
}

/// Provisions every identity of `plan`: see the module docs.
pub async fn provision(
    plan: &Plan,
    secrets: &dyn SecretStore,
    leases: &dyn LeaseStore,
    limiter: &mut RateLimiter,
    progress: &mut dyn Progress,
) -> Result<Vec<Identity>, ProvisionError> {
    if !(MIN_VALIDATORS..=MAX_VALIDATORS).contains(&plan.validators) {
        return Err(ProvisionError::ValidatorCount(plan.validators));
    }
    let mut out = Vec::with_capacity(plan.validators as usize);
    for index in 0..plan.validators {
        let id = plan.identity(index);
        let (address, key_created) = ensure_secret(plan, index, &id, secrets, limiter).await?;
        let record_created = leases.create_record(&id).await? == RecordCreated::Created;
        let identity = Identity {
            id,
            index,
            address,
            key_created,
            record_created,
        };
        progress.identity_done(out.len() + 1, plan.validators as usize, &identity);
        out.push(identity);
    }
    Ok(out)
}

fn wanted_tags(plan: &Plan, index: u32, address: &Address) -> Tags {
    [
        (tag::ADDRESS, address.to_string()),
        (tag::MEMBER, plan.member.to_string()),
        (tag::INDEX, index.to_string()),
        (tag::NETWORK_ID, plan.network_id.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Returns the identity's address, and whether this call stored a new key.
async fn ensure_secret(
    plan: &Plan,
    index: u32,
    id: &Name,
    secrets: &dyn SecretStore,
    limiter: &mut RateLimiter,
) -> Result<(Address, bool), ProvisionError> {
    match secrets.get(id).await {
        Ok(existing) => {
            return verify_existing(plan, index, &existing.properties, &existing.value)
                .map(|a| (a, false))
        }
        Err(SecretError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let key = ValidatorKey::generate();
    let address = key.address();
    let tags = wanted_tags(plan, index, &address);
    limiter.acquire().await;
    let value = SecretValue::new(key.expose_hex());
    match secrets
        .create_if_absent(id, &value, Some(CONTENT_TYPE_RAW_HEX), &tags)
        .await?
    {
        CreateOutcome::Created => Ok((address, true)),
        // A concurrent run stored its key first: ours is dropped (and zeroized), theirs is used.
        CreateOutcome::AlreadyExists(_) => {
            let existing = secrets.get(id).await?;
            verify_existing(plan, index, &existing.properties, &existing.value).map(|a| (a, false))
        }
    }
}

fn verify_existing(
    plan: &Plan,
    index: u32,
    props: &SecretProperties,
    value: &SecretValue,
) -> Result<Address, ProvisionError> {
    let id = &props.name;
    let key = ValidatorKey::from_hex(value.expose()).map_err(|e| ProvisionError::BadSecret {
        id: id.clone(),
        reason: e.to_string(),
    })?;
    let address = key.address();
    let wanted = wanted_tags(plan, index, &address);
    for name in [tag::NETWORK_ID, tag::MEMBER, tag::INDEX] {
        let found = props.tags.get(name).cloned().unwrap_or_default();
        if found != wanted[name] {
            return Err(ProvisionError::Conflict {
                id: id.clone(),
                tag: name,
                found,
                wanted: wanted[name].clone(),
            });
        }
    }
    let tagged = props.tags.get(tag::ADDRESS).cloned().unwrap_or_default();
    if tagged.parse::<Address>().ok() != Some(address) {
        return Err(ProvisionError::AddressMismatch {
            id: id.clone(),
            actual: address,
            tagged,
        });
    }
    Ok(address)
}
