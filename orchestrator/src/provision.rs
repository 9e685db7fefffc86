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
//! Secrets are stored as 64 hex digits (content type [`CONTENT_TYPE_RAW_HEX`]), where the
//! secret store is what protects them at rest, or as keystore v3 documents under a password
//! ([`SecretFormat::KeystoreV3`]), whose KDF runs on every core. Secret creation is paced to Key Vault's limit of
//! 300 creates per 10 s, so the Azure backend inherits it.
//!
//! A lease record created for a key that already existed replaces a record that was lost
//! (its container deleted, say). A daemon may still hold the lost record's lease and sign
//! until its next renew tells it the lease is gone, up to R later; a standby acquiring the
//! new record at once would sign beside it. So such a record is created leased for the
//! longest lease a daemon may use (60 s), under a lease id nobody knows, and left to
//! expire: by then every holder of the old record has fenced ([`create_lease_record`]).

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use tokio::time::Instant;

use zeroize::Zeroizing;

use shared::keyfile::CONTENT_TYPE_RAW_HEX;
use shared::keystore::{self, KdfParams};
use shared::lease::{LeaseDuration, LeaseError, LeaseId, LeaseStore, RecordCreated, MAX_LEASE};
use shared::secret::{
    CreateOutcome, Secret, SecretError, SecretProperties, SecretStore, SecretValue, Tags,
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
    pub const ADMIN: &str = "admin";
}

/// How each identity's key is stored as a secret.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretFormat {
    /// 64 hex digits; the secret store alone protects it at rest.
    RawHex,
    /// A Web3 Secret Storage (keystore v3) document encrypted under `password`, for
    /// deployments that want the key sealed even from readers of the secret store.
    KeystoreV3 {
        password: Zeroizing<Vec<u8>>,
        kdf: KdfParams,
    },
}

impl SecretFormat {
    /// The content type the secret is stored with.
    pub fn content_type(&self) -> &'static str {
        match self {
            SecretFormat::RawHex => CONTENT_TYPE_RAW_HEX,
            SecretFormat::KeystoreV3 { .. } => keystore::CONTENT_TYPE,
        }
    }
}

impl fmt::Debug for SecretFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretFormat::RawHex => f.write_str("RawHex"),
            SecretFormat::KeystoreV3 { kdf, .. } => f
                .debug_struct("KeystoreV3")
                .field("password", &"<redacted>")
                .field("kdf", kdf)
                .finish(),
        }
    }
}

/// Which identities to provision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub member: u32,
    pub validators: u32,
    pub network_id: u64,
    /// The member's admin account, recorded on each identity so that a later run with
    /// another admin is refused.
    pub admin: Address,
    pub format: SecretFormat,
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
    #[error("{id} is stored as {stored}, but this run asks for {wanted}; pass the matching format (and --password-file for keystore-v3)")]
    FormatConflict {
        id: Name,
        stored: String,
        wanted: &'static str,
    },
    #[error("{id} does not hold a valid key: {reason}")]
    BadSecret { id: Name, reason: String },
    #[error("cannot encode a new key: {reason}")]
    Encode { reason: String },
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
    /// A key was generated and encoded, or an existing one decoded, `done` of `total`.
    /// Only reported when that work is slow enough to watch (keystore v3).
    fn key_prepared(&mut self, _done: usize, _total: usize) {}
    /// An identity's secret and lease record are in place.
    fn identity_done(&mut self, done: usize, total: usize, identity: &Identity);
}

/// No progress output.
#[derive(Debug, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn identity_done(&mut self, _: usize, _: usize, _: &Identity) {}
}

/// Provisions every identity of `plan`: see the module docs.
///
/// Work runs in three steps: look every identity up; generate the missing keys and decode
/// the existing ones (on every core: a keystore's KDF takes most of a second each); then
/// check the existing ones, store the new ones and create the lease records, in index order.
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
    let mut found = Vec::with_capacity(plan.validators as usize);
    for index in 0..plan.validators {
        let id = plan.identity(index);
        match secrets.get(&id).await {
            Ok(secret) => found.push(Some(secret)),
            Err(SecretError::NotFound { .. }) => found.push(None),
            Err(e) => return Err(e.into()),
        }
    }
    let prepared = prepare_keys(plan, &found, progress)?;

    let mut out = Vec::with_capacity(plan.validators as usize);
    for ((index, existing), key) in (0..plan.validators).zip(found).zip(prepared) {
        let id = plan.identity(index);
        let (address, key_created) = match existing {
            Some(secret) => (
                verify_existing(plan, index, &secret.properties, key)?,
                false,
            ),
            None => store_new(plan, index, &id, key, secrets, limiter).await?,
        };
        let record_created =
            create_lease_record(leases, &id, !key_created).await? == RecordCreated::Created;
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

/// Creates `id`'s lease record unless it exists. When `key_existed`, a record created now
/// replaces a lost one whose holder may still sign: it is leased at once for [`MAX_LEASE`],
/// longer than any daemon's lease, and never released, so no daemon can acquire it before
/// every holder of the lost record has learnt of the loss at a renew and fenced.
pub async fn create_lease_record(
    leases: &dyn LeaseStore,
    id: &Name,
    key_existed: bool,
) -> Result<RecordCreated, LeaseError> {
    let created = leases.create_record(id).await?;
    if created == RecordCreated::Created && key_existed {
        let lock = LeaseDuration::fixed(MAX_LEASE)?;
        match leases.acquire(id, lock, Some(&LeaseId::random())).await {
            // A daemon that got in first took it from a record nobody held.
            Ok(_) | Err(LeaseError::HeldByOther { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(created)
}

/// A key made ready for step three: decoded from the store, or fresh and encoded.
enum Prepared {
    Existing(Result<ValidatorKey, String>),
    New(ValidatorKey, SecretValue),
}

/// Decodes every existing secret and generates and encodes a key for every missing one,
/// spread over the machine's cores.
fn prepare_keys(
    plan: &Plan,
    found: &[Option<Secret>],
    progress: &mut dyn Progress,
) -> Result<Vec<Prepared>, ProvisionError> {
    let slow = matches!(plan.format, SecretFormat::KeystoreV3 { .. });
    let prepare_one = |slot: &Option<Secret>| -> Result<Prepared, String> {
        match slot {
            Some(secret) => Ok(Prepared::Existing(decode_secret(plan, secret))),
            None => {
                let key = ValidatorKey::generate();
                let value = encode_secret(plan, &key)?;
                Ok(Prepared::New(key, value))
            }
        }
    };
    let total = found.len();
    let workers = if slow {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(total.max(1))
    } else {
        1
    };
    let next = AtomicUsize::new(0);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut results: Vec<Option<Result<Prepared, String>>> = (0..total).map(|_| None).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let done_tx = done_tx.clone();
                let next = &next;
                let prepare_one = &prepare_one;
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            break mine;
                        }
                        mine.push((i, prepare_one(&found[i])));
                        let _ = done_tx.send(());
                    }
                })
            })
            .collect();
        drop(done_tx);
        for done in 1..=total {
            if done_rx.recv().is_err() {
                break;
            }
            if slow {
                progress.key_prepared(done, total);
            }
        }
        for handle in handles {
            for (i, r) in handle.join().expect("key preparation does not panic") {
                results[i] = Some(r);
            }
        }
    });
    results
        .into_iter()
        .map(|r| {
            r.expect("every index was prepared")
                .map_err(|reason| ProvisionError::Encode { reason })
        })
        .collect()
}

fn decode_secret(plan: &Plan, secret: &Secret) -> Result<ValidatorKey, String> {
    let stored = secret.properties.content_type.as_deref().unwrap_or("");
    match (&plan.format, stored) {
        (SecretFormat::RawHex, CONTENT_TYPE_RAW_HEX) => {
            ValidatorKey::from_hex(secret.value.expose()).map_err(|e| e.to_string())
        }
        (SecretFormat::KeystoreV3 { password, .. }, keystore::CONTENT_TYPE) => {
            keystore::decrypt(secret.value.expose().as_bytes(), password).map_err(|e| e.to_string())
        }
        // Reported as a conflict by verify_existing, which knows the names.
        _ => Err(String::new()),
    }
}

fn encode_secret(plan: &Plan, key: &ValidatorKey) -> Result<SecretValue, String> {
    match &plan.format {
        SecretFormat::RawHex => Ok(SecretValue::new(key.expose_hex())),
        SecretFormat::KeystoreV3 { password, kdf } => keystore::encrypt(key, password, kdf)
            .map(|json| SecretValue::new(Zeroizing::new(json)))
            .map_err(|e| e.to_string()),
    }
}

fn wanted_tags(plan: &Plan, index: u32, address: &Address) -> Tags {
    [
        (tag::ADDRESS, address.to_string()),
        (tag::MEMBER, plan.member.to_string()),
        (tag::INDEX, index.to_string()),
        (tag::NETWORK_ID, plan.network_id.to_string()),
        (tag::ADMIN, plan.admin.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Stores a freshly generated key; returns its address and whether it was this run's
/// key that was stored.
async fn store_new(
    plan: &Plan,
    index: u32,
    id: &Name,
    prepared: Prepared,
    secrets: &dyn SecretStore,
    limiter: &mut RateLimiter,
) -> Result<(Address, bool), ProvisionError> {
    let Prepared::New(key, value) = prepared else {
        unreachable!("a missing identity is prepared as new")
    };
    let address = key.address();
    let tags = wanted_tags(plan, index, &address);
    limiter.acquire().await;
    match secrets
        .create_if_absent(id, &value, Some(plan.format.content_type()), &tags)
        .await?
    {
        CreateOutcome::Created => Ok((address, true)),
        // A concurrent run stored its key first: ours is dropped (and zeroized), theirs is used.
        CreateOutcome::AlreadyExists(_) => {
            let existing = secrets.get(id).await?;
            let key = Prepared::Existing(decode_secret(plan, &existing));
            verify_existing(plan, index, &existing.properties, key).map(|a| (a, false))
        }
    }
}

fn verify_existing(
    plan: &Plan,
    index: u32,
    props: &SecretProperties,
    prepared: Prepared,
) -> Result<Address, ProvisionError> {
    let id = &props.name;
    let stored = props.content_type.clone().unwrap_or_default();
    if stored != plan.format.content_type() {
        return Err(ProvisionError::FormatConflict {
            id: id.clone(),
            stored: if stored.is_empty() {
                "a secret without a content type".into()
            } else {
                stored
            },
            wanted: plan.format.content_type(),
        });
    }
    let Prepared::Existing(decoded) = prepared else {
        unreachable!("an existing identity is prepared as existing")
    };
    let key = decoded.map_err(|reason| ProvisionError::BadSecret {
        id: id.clone(),
        reason,
    })?;
    let address = key.address();
    let wanted = wanted_tags(plan, index, &address);
    for name in [tag::NETWORK_ID, tag::MEMBER, tag::INDEX, tag::ADMIN] {
        let found = props.tags.get(name).cloned().unwrap_or_default();
        if !same_tag(name, &found, &wanted[name]) {
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

/// Addresses compare as addresses (any letter case); other tags as text.
fn same_tag(name: &str, found: &str, wanted: &str) -> bool {
    if name == tag::ADMIN {
        return found.parse::<Address>().ok() == wanted.parse::<Address>().ok();
    }
    found == wanted
}
