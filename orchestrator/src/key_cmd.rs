//! `orchestrator key generate|inspect`: single validator key files, in the spirit of
//! ethkey / ethstore.
//!
//! Both commands check every input before doing any work, so a bad invocation writes
//! nothing. `generate` writes through [`shared::fsutil::write_new_private`] (0600, atomic,
//! never overwrites). Neither prints the private key.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use shared::keyfile::{self, KeyFileError, KeyFormat, CONTENT_TYPE_RAW_HEX};
use shared::keystore::{self, KdfParams};
use shared::secret::dir;
use shared::secret::{SecretProperties, SecretValue};
use shared::{fsutil, ValidatorKey};
use zeroize::Zeroizing;

use crate::exit::Failure;

/// Longest key file accepted by `inspect`.
const MAX_KEY_FILE: usize = 64 * 1024;

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// Generate a new validator key from the OS random generator and write it to a file.
    ///
    /// The file is created with mode 0600 and is never overwritten. The address is printed
    /// on stdout; the private key is not.
    ///
    /// Example: orchestrator key generate --format besu --out ./validator.key
    Generate(GenerateArgs),
    /// Show the address, public key and enode id of a key file. Never prints the private key.
    ///
    /// The format (raw hex, Besu `key`, Nethermind binary `node.key.plain`, keystore v3) is
    /// detected from the file's content.
    ///
    /// Example: orchestrator key inspect ./validator.key --json
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub(crate) struct GenerateArgs {
    /// File format to write.
    #[arg(long, value_enum, default_value_t = FormatArg::RawHex)]
    format: FormatArg,
    /// Key-derivation function for keystore-v3 (scrypt n=262144 r=8 p=1, or
    /// pbkdf2-hmac-sha256 with 600,000 rounds).
    #[arg(long, value_enum, requires = "password_file")]
    kdf: Option<KdfArg>,
    /// File holding the keystore password (one trailing newline is ignored). Required for
    /// keystore-v3; not allowed otherwise.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Where to write the key. Must not exist.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Print {"address", "public_key", "enode_id"} as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The key file.
    file: PathBuf,
    /// File holding the keystore password, for keystore-v3 files.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Print {"address", "public_key", "enode_id"} as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FormatArg {
    /// 64 hex digits and a newline.
    RawHex,
    /// Besu's `key` file: 0x and 64 hex digits.
    Besu,
    /// Nethermind's binary node.key.plain: the 32 key bytes.
    Nethermind,
    /// Web3 Secret Storage v3 keystore (encrypted; needs --password-file).
    KeystoreV3,
}

impl From<FormatArg> for KeyFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::RawHex => KeyFormat::RawHex,
            FormatArg::Besu => KeyFormat::Besu,
            FormatArg::Nethermind => KeyFormat::Nethermind,
            FormatArg::KeystoreV3 => KeyFormat::KeystoreV3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KdfArg {
    Scrypt,
    Pbkdf2,
}

pub(crate) fn run(cmd: KeyCommand) -> Result<(), Failure> {
    match cmd {
        KeyCommand::Generate(args) => generate(args),
        KeyCommand::Inspect(args) => inspect(args),
    }
}

fn generate(args: GenerateArgs) -> Result<(), Failure> {
    let format = KeyFormat::from(args.format);
    // Check everything before generating, so bad input writes nothing.
    let password = match (format.needs_password(), &args.password_file) {
        (true, Some(p)) => Some(read_password(p)?),
        (true, None) => {
            return Err(Failure::usage(
                "--format keystore-v3 needs --password-file FILE",
            ))
        }
        (false, Some(_)) => {
            return Err(Failure::usage(format!(
                "--password-file applies only to --format keystore-v3, not {format}"
            )))
        }
        (false, None) => None,
    };
    if args.kdf.is_some() && !format.needs_password() {
        return Err(Failure::usage("--kdf applies only to --format keystore-v3"));
    }
    check_can_create(&args.out)?;
    let kdf = match args.kdf.unwrap_or(KdfArg::Scrypt) {
        KdfArg::Scrypt => KdfParams::scrypt_default(),
        KdfArg::Pbkdf2 => KdfParams::pbkdf2_default(),
    };

    let key = ValidatorKey::generate();
    let bytes = keyfile::encode(&key, format, password.as_ref().map(|p| p.as_slice()), &kdf)
        .map_err(|e| Failure::data(e.to_string()))?;
    fsutil::write_new_private(&args.out, &bytes).map_err(|e| write_failure(&args.out, e))?;
    tracing::info!(
        address = %key.address(),
        "wrote {format} key to {} (mode 0600)",
        args.out.display()
    );
    print_identity(&key, args.json, false)
}

fn inspect(args: InspectArgs) -> Result<(), Failure> {
    let bytes = Zeroizing::new(read_input(&args.file, "key file", MAX_KEY_FILE)?);
    // A `dir:` store's file is JSON too, but not a keystore: it holds the secret's value
    // and says in what format.
    if !keystore::looks_like_keystore(&bytes) && keystore::is_json_object(&bytes) {
        if let Ok((properties, value)) = dir::decode_secret_file(&bytes) {
            return inspect_secret_file(&args, &properties, &value);
        }
    }
    let format = keyfile::detect(&bytes)
        .map_err(|e| Failure::data(format!("{}: {e}", args.file.display())))?;
    let password = password_for(
        &args,
        format.needs_password(),
        &format!("a {format} key file"),
    )?;
    let (key, format) = keyfile::decode(&bytes, password.as_ref().map(|p| p.as_slice()))
        .map_err(|e| decode_failure(&args.file, e))?;
    if !args.json {
        // Printed first so it is beside the fields in human output.
        print_line(&format!("format      {format}"))?;
    }
    print_identity(&key, args.json, true)
}

/// `inspect` of a `dir:` secret store's file: the key in its value, read as its content
/// type says.
fn inspect_secret_file(
    args: &InspectArgs,
    properties: &SecretProperties,
    value: &SecretValue,
) -> Result<(), Failure> {
    let file = args.file.display();
    let content_type = properties.content_type.as_deref().unwrap_or("");
    let (key, format) = if content_type == CONTENT_TYPE_RAW_HEX {
        password_for(args, false, "a dir: secret file holding a raw-hex key")?;
        let key = ValidatorKey::from_hex(value.expose())
            .map_err(|e| Failure::data(format!("{file}: the secret {}: {e}", properties.name)))?;
        (key, KeyFormat::RawHex)
    } else if content_type == keystore::CONTENT_TYPE {
        let password = password_for(
            args,
            true,
            "a dir: secret file holding a keystore-v3 keystore",
        )?
        .expect("required above");
        let key = keystore::decrypt(value.expose().as_bytes(), &password)
            .map_err(|e| Failure::data(format!("{file}: the secret {}: {e}", properties.name)))?;
        (key, KeyFormat::KeystoreV3)
    } else {
        return Err(Failure::data(format!(
            "{file} is a dir: secret file, of secret {}, whose content type {content_type:?} \
             is not a key ({CONTENT_TYPE_RAW_HEX} or {})",
            properties.name,
            keystore::CONTENT_TYPE
        )));
    };
    if !args.json {
        print_line(&format!(
            "format      dir: secret file of {}, holding {format}",
            properties.name
        ))?;
    }
    print_identity(&key, args.json, true)
}

/// The password `--password-file` gives, checked against whether `what` (the file, as
/// detected) needs one.
fn password_for(
    args: &InspectArgs,
    needed: bool,
    what: &str,
) -> Result<Option<Zeroizing<Vec<u8>>>, Failure> {
    let file = args.file.display();
    match (&args.password_file, needed) {
        (Some(p), true) => Ok(Some(read_password(p)?)),
        (None, true) => Err(Failure::usage(format!(
            "{file} is {what}; pass --password-file FILE"
        ))),
        (Some(_), false) => Err(Failure::usage(format!(
            "{file} is {what}, which has no password; drop --password-file"
        ))),
        (None, false) => Ok(None),
    }
}

/// Prints the key's public identity: the address only (generate) or all fields (inspect),
/// or the JSON object.
fn print_identity(key: &ValidatorKey, json: bool, all_fields: bool) -> Result<(), Failure> {
    if json {
        let v = serde_json::json!({
            "address": key.address().to_string(),
            "public_key": key.public_key().to_string(),
            "enode_id": key.enode_id(),
        });
        return print_line(&v.to_string());
    }
    if !all_fields {
        return print_line(&key.address().to_string());
    }
    print_line(&format!(
        "address     {}\npublic key  {}\nenode id    {}",
        key.address(),
        key.public_key(),
        key.enode_id()
    ))
}

fn print_line(s: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    writeln!(out, "{s}")
        .and_then(|()| out.flush())
        .map_err(|e| Failure::io(format!("cannot write to stdout: {e}")))
}

/// Reads a password file ([`fsutil::read_password_file`]); an empty one is refused.
fn read_password(path: &Path) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let pw = fsutil::read_password_file(path).map_err(|e| input_error(e, path, "password file"))?;
    if pw.is_empty() {
        return Err(Failure::data(format!(
            "password file {} is empty",
            path.display()
        )));
    }
    Ok(pw)
}

fn read_input(path: &Path, what: &str, max: usize) -> Result<Vec<u8>, Failure> {
    fsutil::read_limited(path, max).map_err(|e| input_error(e, path, what))
}

fn input_error(e: io::Error, path: &Path, what: &str) -> Failure {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => {
            Failure::no_input(format!("cannot read {what} {}: {e}", path.display()))
        }
        io::ErrorKind::InvalidData => Failure::data(format!("{what} {e}")),
        _ => Failure::io(format!("cannot read {what} {}: {e}", path.display())),
    }
}

fn check_can_create(out: &Path) -> Result<(), Failure> {
    if out.symlink_metadata().is_ok() {
        return Err(Failure::cant_create(format!(
            "{} already exists; refusing to overwrite a key file",
            out.display()
        )));
    }
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Failure::cant_create(format!(
            "directory {} does not exist",
            dir.display()
        )));
    }
    Ok(())
}

fn write_failure(path: &Path, e: io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::AlreadyExists => Failure::cant_create(e.to_string()),
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => {
            Failure::cant_create(format!("cannot create {}: {e}", path.display()))
        }
        _ => Failure::io(format!("cannot write {}: {e}", path.display())),
    }
}

fn decode_failure(path: &Path, e: KeyFileError) -> Failure {
    Failure::data(format!("{}: {e}", path.display()))
}
