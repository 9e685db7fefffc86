//! Backend specs: the one URL-like syntax that names a store everywhere (CLI flags and
//! config files).
//!
//! | spec                                              | backend |
//! |---------------------------------------------------|---------|
//! | `dir:PATH`                                        | secrets as 0600 files in a 0700 directory |
//! | `keyvault:https://NAME.vault.azure.net`           | Azure Key Vault secrets |
//! | `sqlite:PATH`                                     | leases in one SQLite file |
//! | `blob:https://ACCOUNT.blob.core.windows.net/CONTAINER` | Azure Blob leases |

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::azure::{AzureOptions, Budget};
use crate::lease::blob::BlobLeaseStore;
use crate::lease::sqlite::SqliteLeaseStore;
use crate::lease::{LeaseError, LeaseStore};
use crate::secret::dir::DirSecretStore;
use crate::secret::keyvault::KeyVaultSecretStore;
use crate::secret::{SecretError, SecretStore};

/// Why a spec string is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(String);

/// Where secrets are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretStoreSpec {
    Dir(PathBuf),
    KeyVault { url: String },
}

/// Where lease records are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStoreSpec {
    Sqlite(PathBuf),
    Blob { url: String },
}

fn split(spec: &str) -> Result<(&str, &str), SpecError> {
    spec.split_once(':')
        .filter(|(_, rest)| !rest.is_empty())
        .ok_or_else(|| SpecError(format!("store spec {spec:?} must look like KIND:LOCATION")))
}

fn https_url(kind: &str, url: &str, allow_http: bool) -> Result<String, SpecError> {
    let parsed = crate::net::Url::parse(url)
        .map_err(|e| SpecError(format!("{kind}: {url:?} is not a URL ({e})")))?;
    match parsed.scheme() {
        "https" => {}
        "http" if allow_http => {}
        _ => {
            return Err(SpecError(format!(
                "{kind}: needs an https:// URL, got {url:?}"
            )))
        }
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(SpecError(format!("{kind}: URL {url:?} has no host")));
    }
    Ok(url.trim_end_matches('/').to_string())
}

impl FromStr for SecretStoreSpec {
    type Err = SpecError;
    fn from_str(spec: &str) -> Result<Self, SpecError> {
        match split(spec)? {
            ("dir", path) => Ok(Self::Dir(PathBuf::from(path))),
            ("keyvault", url) => Ok(Self::KeyVault {
                url: https_url("keyvault", url, false)?,
            }),
            (kind, _) => Err(SpecError(format!(
                "unknown secret store {kind:?} in {spec:?}; expected dir:PATH or keyvault:https://NAME.vault.azure.net"
            ))),
        }
    }
}

impl FromStr for LeaseStoreSpec {
    type Err = SpecError;
    fn from_str(spec: &str) -> Result<Self, SpecError> {
        match split(spec)? {
            ("sqlite", path) => Ok(Self::Sqlite(PathBuf::from(path))),
            ("blob", url) => {
                // http:// only for the storage emulator on loopback.
                let url = https_url("blob", url, true)?;
                let path_parts = url.splitn(4, '/').nth(3).unwrap_or("");
                if path_parts.is_empty() {
                    return Err(SpecError(format!(
                        "blob: URL {url:?} must name a container: https://ACCOUNT.blob.core.windows.net/CONTAINER"
                    )));
                }
                Ok(Self::Blob { url })
            }
            (kind, _) => Err(SpecError(format!(
                "unknown lease store {kind:?} in {spec:?}; expected sqlite:PATH or blob:https://ACCOUNT.blob.core.windows.net/CONTAINER"
            ))),
        }
    }
}

impl fmt::Display for SecretStoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dir(p) => write!(f, "dir:{}", p.display()),
            Self::KeyVault { url } => write!(f, "keyvault:{url}"),
        }
    }
}

impl fmt::Display for LeaseStoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            Self::Blob { url } => write!(f, "blob:{url}"),
        }
    }
}

impl SecretStoreSpec {
    /// Opens the store this spec names; `azure` says how to reach Azure (unused by `dir:`).
    pub fn open(&self, azure: &AzureOptions) -> Result<Arc<dyn SecretStore>, SecretError> {
        match self {
            Self::Dir(path) => Ok(Arc::new(DirSecretStore::open(path)?)),
            Self::KeyVault { url } => Ok(Arc::new(KeyVaultSecretStore::open(
                url,
                azure,
                Budget::interactive(),
            )?)),
        }
    }

    /// True for the backends that talk to Azure.
    pub fn is_azure(&self) -> bool {
        matches!(self, Self::KeyVault { .. })
    }
}

impl LeaseStoreSpec {
    /// Opens the store this spec names, with the retry budget of a one-shot tool.
    pub fn open(&self, azure: &AzureOptions) -> Result<Arc<dyn LeaseStore>, LeaseError> {
        match self {
            Self::Sqlite(path) => Ok(Arc::new(SqliteLeaseStore::open(path)?)),
            Self::Blob { url } => Ok(Arc::new(BlobLeaseStore::open(
                url,
                azure,
                Budget::interactive(),
            )?)),
        }
    }

    /// True for the backends that talk to Azure.
    pub fn is_azure(&self) -> bool {
        matches!(self, Self::Blob { .. })
    }

    /// Opens the store with every call bounded by about `op_timeout` on the store's side
    /// (SQLite: the busy timeout; Blob: one HTTP attempt with that timeout, no SDK retries),
    /// for the daemon's lease path, where a call must give up well before the next renew is
    /// due. Callers still bound each call themselves.
    pub fn open_with_timeout(
        &self,
        op_timeout: Duration,
        azure: &AzureOptions,
    ) -> Result<Arc<dyn LeaseStore>, LeaseError> {
        match self {
            Self::Sqlite(path) => Ok(Arc::new(
                SqliteLeaseStore::open(path)?.with_busy_timeout(op_timeout)?,
            )),
            Self::Blob { url } => Ok(Arc::new(BlobLeaseStore::open(
                url,
                azure,
                Budget::lease_path(op_timeout),
            )?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        assert_eq!(
            "dir:/var/lib/x".parse::<SecretStoreSpec>().unwrap(),
            SecretStoreSpec::Dir("/var/lib/x".into())
        );
        assert_eq!(
            "keyvault:https://kv1.vault.azure.net/"
                .parse::<SecretStoreSpec>()
                .unwrap(),
            SecretStoreSpec::KeyVault {
                url: "https://kv1.vault.azure.net".into()
            }
        );
        assert_eq!(
            "sqlite:leases.db".parse::<LeaseStoreSpec>().unwrap(),
            LeaseStoreSpec::Sqlite("leases.db".into())
        );
        assert_eq!(
            "blob:http://127.0.0.1:10000/devstoreaccount1/leases"
                .parse::<LeaseStoreSpec>()
                .unwrap(),
            LeaseStoreSpec::Blob {
                url: "http://127.0.0.1:10000/devstoreaccount1/leases".into()
            }
        );
    }

    #[test]
    fn rejects_bad_specs_with_a_hint() {
        // Each refusal names what is wrong and shows the form that would be accepted.
        for (bad, hint) in [
            ("", "must look like KIND:LOCATION"),
            ("dir:", "must look like KIND:LOCATION"),
            ("nothing", "must look like KIND:LOCATION"),
            (
                "s3:bucket",
                "expected dir:PATH or keyvault:https://NAME.vault.azure.net",
            ),
            ("keyvault:http://x", "needs an https:// URL"),
            ("keyvault:https://", "is not a URL"),
        ] {
            let e = bad.parse::<SecretStoreSpec>().unwrap_err().to_string();
            assert!(e.contains(hint), "{bad:?}: {e:?} lacks {hint:?}");
        }
        for (bad, hint) in [
            ("sqlite:", "must look like KIND:LOCATION"),
            (
                "blob:https://acct.blob.core.windows.net",
                "must name a container: https://ACCOUNT.blob.core.windows.net/CONTAINER",
            ),
            ("dir:/x", "expected sqlite:PATH or blob:https://"),
        ] {
            let e = bad.parse::<LeaseStoreSpec>().unwrap_err().to_string();
            assert!(e.contains(hint), "{bad:?}: {e:?} lacks {hint:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["dir:some/path", "keyvault:https://kv.vault.azure.net"] {
            assert_eq!(s.parse::<SecretStoreSpec>().unwrap().to_string(), s);
        }
        for s in ["sqlite:/tmp/l.db", "blob:https://a.blob.core.windows.net/c"] {
            assert_eq!(s.parse::<LeaseStoreSpec>().unwrap().to_string(), s);
        }
    }
}
