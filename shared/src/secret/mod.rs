//! The secret store: where validator keys live at rest (Key Vault in production).
//!
//! The trait is the subset of Key Vault's secrets API the project needs: create-if-absent
//! (never overwrite), get, and list with tags and content type. A secret's value is a
//! [`SecretValue`], which zeroizes on drop and never prints.

pub mod dir;
pub mod keyvault;

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::name::Name;

/// Tags on a secret (Key Vault allows 15 of them).
pub type Tags = BTreeMap<String, String>;

/// Key Vault's limit on tags per secret.
pub const MAX_TAGS: usize = 15;

/// A secret's value. Zeroized on drop; `Debug` prints a redaction.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    pub fn new(value: Zeroizing<String>) -> Self {
        Self(value)
    }

    /// The value itself. Callers hand it straight to a parser; never to a formatter.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// What a secret is, without its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretProperties {
    pub name: Name,
    /// A MIME-like name of the value's format, e.g. [`crate::keyfile::CONTENT_TYPE_RAW_HEX`].
    pub content_type: Option<String>,
    pub tags: Tags,
}

/// A secret with its value.
#[derive(Debug, Clone)]
pub struct Secret {
    pub properties: SecretProperties,
    pub value: SecretValue,
}

/// The outcome of [`SecretStore::create_if_absent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The secret did not exist and now holds the given value.
    Created,
    /// A secret of that name already existed; it was left as it was. Its properties are
    /// returned so the caller can tell whether it is the one it meant to create.
    AlreadyExists(SecretProperties),
}

/// Secret store errors.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {name} not found")]
    NotFound { name: Name },
    #[error("invalid secret: {0}")]
    Invalid(String),
    #[error("secret store temporarily unavailable: {message}")]
    Transient {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("secret store failed: {message}")]
    Backend {
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

/// Where validator keys are stored.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Stores `value` under `name` unless a secret of that name exists, in which case
    /// nothing is written and [`CreateOutcome::AlreadyExists`] says so. Two concurrent
    /// callers never both see `Created`.
    async fn create_if_absent(
        &self,
        name: &Name,
        value: &SecretValue,
        content_type: Option<&str>,
        tags: &Tags,
    ) -> Result<CreateOutcome, SecretError>;

    /// Reads the current value.
    async fn get(&self, name: &Name) -> Result<Secret, SecretError>;

    /// Every secret's properties, sorted by name.
    async fn list(&self) -> Result<Vec<SecretProperties>, SecretError>;
}

/// Checks tags against Key Vault's limits, so the embedded backend refuses what Azure would.
pub fn check_tags(tags: &Tags) -> Result<(), SecretError> {
    if tags.len() > MAX_TAGS {
        return Err(SecretError::Invalid(format!(
            "{} tags given; Key Vault allows at most {MAX_TAGS}",
            tags.len()
        )));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 512 {
            return Err(SecretError::Invalid(format!(
                "tag name {k:?} must be 1-512 characters"
            )));
        }
        if v.chars().count() > 256 {
            return Err(SecretError::Invalid(format!(
                "tag {k:?} has a value over 256 characters"
            )));
        }
    }
    Ok(())
}
