//! `dir:PATH` — the embedded secret store: one file per secret, 0600, in a 0700 directory.
//!
//! Each file holds a small JSON document (name, value, content type, tags). Files are
//! created with [`crate::fsutil::write_new_private`], so creation is atomic and never
//! overwrites, even between processes. Key Vault treats secret names case-insensitively;
//! so does this store, by naming each file after the lower-cased secret name.
//!
//! It must never widen permissions, follow a name outside its directory (names are
//! validated [`Name`]s, which cannot contain `/` or `.`), or leave a secret value in an
//! unzeroized buffer it allocated.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{
    check_tags, CreateOutcome, Secret, SecretError, SecretProperties, SecretStore, SecretValue,
    Tags,
};
use crate::fsutil;
use crate::name::Name;

/// Largest secret file read back (Key Vault caps values at 25 KiB).
const MAX_FILE: usize = 64 * 1024;

/// The `dir:` secret store.
#[derive(Debug, Clone)]
pub struct DirSecretStore {
    dir: PathBuf,
}

#[derive(Serialize)]
struct FileOut<'a> {
    name: &'a str,
    #[serde(rename = "contentType", skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    tags: &'a Tags,
    value: &'a str,
}

#[derive(Deserialize)]
struct FileIn {
    name: String,
    #[serde(rename = "contentType", default)]
    content_type: Option<String>,
    #[serde(default)]
    tags: Tags,
    value: String,
}

/// Reads the content of one of this store's files: the secret's properties and value. The
/// error says what is wrong and where, never what the file holds (it holds a key). Used by
/// `orchestrator key inspect`, which is given such a file.
pub fn decode_secret_file(bytes: &[u8]) -> Result<(SecretProperties, SecretValue), String> {
    // serde_json's messages can quote the offending value, and this file holds a key:
    // report only what kind of error it is and where.
    let parsed: FileIn = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "is not a secret file: {:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        )
    })?;
    let name = Name::new(parsed.name).map_err(|e| format!("holds an invalid name: {e}"))?;
    Ok((
        SecretProperties {
            name,
            content_type: parsed.content_type,
            tags: parsed.tags,
        },
        SecretValue::new(Zeroizing::new(parsed.value)),
    ))
}

impl DirSecretStore {
    /// Opens (creating it 0700 if missing) the directory `dir`. Refuses a directory that
    /// group or others can access.
    pub fn open(dir: &Path) -> Result<Self, SecretError> {
        fsutil::ensure_private_dir(dir).map_err(|e| backend(dir, "cannot use", e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path_of(&self, name: &Name) -> PathBuf {
        self.dir.join(name.as_str().to_ascii_lowercase())
    }

    fn read_file(&self, path: &Path) -> Result<(SecretProperties, SecretValue), SecretError> {
        let meta = fs::symlink_metadata(path).map_err(|e| backend(path, "cannot read", e))?;
        if !meta.is_file() {
            return Err(SecretError::Backend {
                message: format!("{} is not a regular file", path.display()),
                source: None,
            });
        }
        if meta.mode() & 0o077 != 0 {
            return Err(SecretError::Backend {
                message: format!(
                    "{} has mode {:04o}; secrets must be 0600 (chmod 600 {})",
                    path.display(),
                    meta.mode() & 0o777,
                    path.display()
                ),
                source: None,
            });
        }
        let bytes = Zeroizing::new(
            fsutil::read_limited(path, MAX_FILE).map_err(|e| backend(path, "cannot read", e))?,
        );
        decode_secret_file(&bytes).map_err(|message| SecretError::Backend {
            message: format!("{} {message}", path.display()),
            source: None,
        })
    }

    fn create_blocking(
        &self,
        name: &Name,
        value: &SecretValue,
        content_type: Option<&str>,
        tags: &Tags,
    ) -> Result<CreateOutcome, SecretError> {
        check_tags(tags)?;
        if value.expose().is_empty() {
            return Err(SecretError::Invalid(format!(
                "secret {name} has an empty value"
            )));
        }
        let path = self.path_of(name);
        if path.symlink_metadata().is_ok() {
            return Ok(CreateOutcome::AlreadyExists(self.read_file(&path)?.0));
        }
        // Sized up front so serialisation never reallocates and strands a copy of the value.
        let mut buf = Zeroizing::new(Vec::with_capacity(value.expose().len() * 6 + 4096));
        serde_json::to_writer(
            &mut *buf,
            &FileOut {
                name: name.as_str(),
                content_type,
                tags,
                value: value.expose(),
            },
        )
        .map_err(|e| SecretError::Invalid(format!("cannot encode secret {name}: {e}")))?;
        match fsutil::write_new_private(&path, &buf) {
            Ok(()) => Ok(CreateOutcome::Created),
            // Lost a race with another creator: theirs stands, ours is not written.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Ok(CreateOutcome::AlreadyExists(self.read_file(&path)?.0))
            }
            Err(e) => Err(backend(&path, "cannot write", e)),
        }
    }

    fn get_blocking(&self, name: &Name) -> Result<Secret, SecretError> {
        let path = self.path_of(name);
        if path.symlink_metadata().is_err() {
            return Err(SecretError::NotFound { name: name.clone() });
        }
        let (properties, value) = self.read_file(&path)?;
        Ok(Secret { properties, value })
    }

    fn list_blocking(&self) -> Result<Vec<SecretProperties>, SecretError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| backend(&self.dir, "cannot list", e))?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| backend(&self.dir, "cannot list", e))?;
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            // Temporary files of writers in progress start with a dot.
            if file_name.starts_with('.') {
                continue;
            }
            out.push(self.read_file(&entry.path())?.0);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

fn backend(path: &Path, what: &str, e: io::Error) -> SecretError {
    SecretError::Backend {
        message: format!("{what} {}: {e}", path.display()),
        source: Some(Box::new(e)),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SecretError> + Send + 'static,
) -> Result<T, SecretError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SecretError::Backend {
            message: format!("secret store task failed: {e}"),
            source: None,
        })?
}

#[async_trait]
impl SecretStore for DirSecretStore {
    async fn create_if_absent(
        &self,
        name: &Name,
        value: &SecretValue,
        content_type: Option<&str>,
        tags: &Tags,
    ) -> Result<CreateOutcome, SecretError> {
        let (me, name, value) = (self.clone(), name.clone(), value.clone());
        let (content_type, tags) = (content_type.map(str::to_owned), tags.clone());
        blocking(move || me.create_blocking(&name, &value, content_type.as_deref(), &tags)).await
    }

    async fn get(&self, name: &Name) -> Result<Secret, SecretError> {
        let (me, name) = (self.clone(), name.clone());
        blocking(move || me.get_blocking(&name)).await
    }

    async fn list(&self) -> Result<Vec<SecretProperties>, SecretError> {
        let me = self.clone();
        blocking(move || me.list_blocking()).await
    }
}
