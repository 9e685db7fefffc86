//! Finds and runs the third-party tools the interop tests check us against: eth-account
//! (PyPI) in `.tools/venv` and ethers (npm) in `.tools/node`, both installed at pinned
//! versions by `ops/install-test-deps.sh`, through the small scripts in `tests/interop/`.
//!
//! A missing or outdated tool is a panic naming the install step, never a skipped test: a
//! green run must mean the interop checks ran. Passwords go to the tools in 0600 temporary
//! files and keys on stdin, never in argv, where other processes could read them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use shared::ValidatorKey;

const INSTALL_HINT: &str = "run `ops/install-test-deps.sh` from the workspace root";

/// Exit status the `tests/interop` scripts use when their tool rejected the password.
const WRONG_PASSWORD_STATUS: i32 = 3;

/// The workspace root; this crate lives at `<root>/tests`.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits one level below the workspace root")
        .to_path_buf()
}

/// `.tools/` in the workspace root, where the installer puts everything.
pub fn tools_dir() -> PathBuf {
    workspace_root().join(".tools")
}

fn interop_script(name: &str) -> PathBuf {
    workspace_root().join("tests").join("interop").join(name)
}

fn missing(what: &str) -> ! {
    panic!("{what}: {INSTALL_HINT}")
}

/// The Python interpreter of `.tools/venv`, after checking that every tool pinned in
/// `ops/test-deps/requirements.in` is installed there at its pinned version.
pub fn python() -> PathBuf {
    static CHECKED: OnceLock<PathBuf> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let venv = tools_dir().join("venv");
            let python = venv.join("bin").join("python");
            if !python.is_file() {
                missing(&format!("no Python environment at {}", python.display()));
            }
            for (name, version) in python_pins() {
                if !python_dist_installed(&venv, &name, &version) {
                    missing(&format!(
                        "{name}=={version} (pinned in ops/test-deps/requirements.in) is not installed in {}",
                        venv.display()
                    ));
                }
            }
            python
        })
        .clone()
}

/// `node_modules` of `.tools/node`, after checking that every package pinned in
/// `ops/test-deps/package.json` is installed there at its pinned version.
pub fn node_modules() -> PathBuf {
    static CHECKED: OnceLock<PathBuf> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let modules = tools_dir().join("node").join("node_modules");
            for (name, version) in node_pins() {
                let manifest = modules.join(&name).join("package.json");
                let installed = std::fs::read(&manifest)
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
                    .and_then(|v| v["version"].as_str().map(str::to_owned));
                if installed.as_deref() != Some(version.as_str()) {
                    missing(&format!(
                        "{name}@{version} (pinned in ops/test-deps/package.json) is not installed in {} (found {})",
                        modules.display(),
                        installed.as_deref().unwrap_or("nothing")
                    ));
                }
            }
            modules
        })
        .clone()
}

/// `libfaketime.so.1` from the libfaketime package that `ops/install-test-deps.sh` unpacks
/// into `.tools/deb`, after checking that every package pinned in
/// `ops/test-deps/debian-packages.txt` is what was unpacked there. Preloaded with
/// `FAKETIME=+30s` and `FAKETIME_DONT_FAKE_MONOTONIC=1`, it steps one process's wall clock
/// and leaves its monotonic clocks alone.
pub fn libfaketime() -> PathBuf {
    static CHECKED: OnceLock<PathBuf> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            // usr/lib/<multiarch triplet>/faketime/, the triplet being the host's.
            let lib = deb_root().join("usr").join("lib");
            std::fs::read_dir(&lib)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join("faketime").join("libfaketime.so.1"))
                .find(|p| p.is_file())
                .unwrap_or_else(|| {
                    missing(&format!(
                        "no faketime/libfaketime.so.1 under {}",
                        lib.display()
                    ))
                })
        })
        .clone()
}

/// `etcd` and `etcdctl` from the etcd-server and etcd-client packages that
/// `ops/install-test-deps.sh` unpacks into `.tools/deb`, after the same check as
/// [`libfaketime`]: the baseline the fleet benchmark compares `leased` with
/// (`integration_tests::etcd_lock`).
pub fn etcd() -> (PathBuf, PathBuf) {
    static CHECKED: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let bin = deb_root().join("usr").join("bin");
            let find = |name: &str| {
                let path = bin.join(name);
                if !path.is_file() {
                    missing(&format!("no {name} at {}", path.display()));
                }
                path
            };
            (find("etcd"), find("etcdctl"))
        })
        .clone()
}

/// `shellcheck` from the shellcheck package that `ops/install-test-deps.sh` unpacks into
/// `.tools/deb`, after the same check as [`libfaketime`].
pub fn shellcheck() -> PathBuf {
    let path = deb_root().join("usr").join("bin").join("shellcheck");
    if !path.is_file() {
        missing(&format!("no shellcheck at {}", path.display()));
    }
    path
}

/// A command that runs Debian's `cloud-init` from `.tools/deb` (add its arguments, e.g.
/// `schema --config-file FILE`), through [`cloud_init_python`].
pub fn cloud_init() -> Command {
    let script = deb_root().join("usr").join("bin").join("cloud-init");
    if !script.is_file() {
        missing(&format!("no cloud-init at {}", script.display()));
    }
    let mut cmd = cloud_init_python();
    cmd.arg(script);
    cmd
}

/// The Python that runs cloud-init: that of `.tools/venv` with `-S`, so that only the
/// standard library and the Debian packages' modules unpacked with cloud-init into
/// `.tools/deb` (PyYAML, jsonschema, requests, …) are on its path, never the venv's own
/// PyPI packages. Add `-c` and a script, or cloud-init's.
pub fn cloud_init_python() -> Command {
    let modules = deb_root()
        .join("usr")
        .join("lib")
        .join("python3")
        .join("dist-packages");
    if !modules.join("cloudinit").is_dir() {
        missing(&format!("no cloudinit module in {}", modules.display()));
    }
    let mut cmd = Command::new(python());
    cmd.arg("-S")
        .env("PYTHONPATH", modules)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// `.tools/deb`, after checking that every package pinned in
/// `ops/test-deps/debian-packages.txt` is what was unpacked there.
fn deb_root() -> PathBuf {
    static CHECKED: OnceLock<PathBuf> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let root = tools_dir().join("deb");
            let record = root.join(".installed");
            let installed = std::fs::read_to_string(&record).unwrap_or_default();
            for pin in pin_lines(&workspace_root().join("ops/test-deps/debian-packages.txt")) {
                if !installed.lines().any(|l| l.trim() == pin) {
                    missing(&format!(
                        "{pin} (pinned in ops/test-deps/debian-packages.txt) is not unpacked in {}",
                        root.display()
                    ));
                }
            }
            root
        })
        .clone()
}

/// The non-empty lines of a pin file, comments (`#` to the end of the line) and spaces
/// removed.
fn pin_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim().to_owned())
        .filter(|line| !line.is_empty())
        .collect()
}

/// The `azurite-blob` launcher of the Azurite pinned in `ops/test-deps/package.json`.
pub fn azurite_blob() -> PathBuf {
    let launcher = node_modules().join(".bin").join("azurite-blob");
    if !launcher.is_file() {
        missing(&format!("no Azurite launcher at {}", launcher.display()));
    }
    launcher
}

/// `name==version` lines of `ops/test-deps/requirements.in`.
fn python_pins() -> Vec<(String, String)> {
    let path = workspace_root().join("ops/test-deps/requirements.in");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, version) = line
                .split_once("==")
                .unwrap_or_else(|| panic!("{}: {line:?} is not pinned with ==", path.display()));
            (name.trim().to_owned(), version.trim().to_owned())
        })
        .collect()
}

/// Whether `<venv>/lib/python*/site-packages/<name>-<version>.dist-info` exists.
fn python_dist_installed(venv: &Path, name: &str, version: &str) -> bool {
    // Installers normalise the distribution name in the folder name: `eth-account` is
    // `eth_account-0.14.0.dist-info`.
    let wanted = format!("{}-{version}.dist-info", name.replace(['-', '.'], "_")).to_lowercase();
    let Ok(lib) = std::fs::read_dir(venv.join("lib")) else {
        return false;
    };
    lib.flatten().any(|py| {
        std::fs::read_dir(py.path().join("site-packages")).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().to_lowercase() == wanted)
        })
    })
}

/// `dependencies` of `ops/test-deps/package.json`.
fn node_pins() -> Vec<(String, String)> {
    let path = workspace_root().join("ops/test-deps/package.json");
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let manifest: serde_json::Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    manifest["dependencies"]
        .as_object()
        .map(|deps| {
            deps.iter()
                .map(|(name, v)| (name.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// What a tool made of a keystore: the private key as 64 lower-case hex digits without
/// `0x`, and the address as the tool prints it (EIP-55 with `0x` for both tools here).
pub type Decrypted = (String, String);

/// Why a tool did not decrypt a keystore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The tool's own wrong-password error (eth-account: MAC mismatch; ethers: incorrect
    /// password).
    WrongPassword,
    /// Any other failure, with the tool's stderr.
    Failed(String),
}

/// Decrypts `keystore_json` with eth-account. Panics if eth-account fails.
pub fn python_decrypt(keystore_json: &str, password: &[u8]) -> Decrypted {
    python_try_decrypt(keystore_json, password)
        .unwrap_or_else(|e| panic!("eth-account did not decrypt the keystore: {e:?}"))
}

/// Decrypts `keystore_json` with eth-account, reporting a rejection instead of panicking.
pub fn python_try_decrypt(keystore_json: &str, password: &[u8]) -> Result<Decrypted, Rejection> {
    let password_file = password_file(password);
    let mut cmd = Command::new(python());
    cmd.arg(interop_script("eth_account_keystore.py"))
        .arg("decrypt")
        .arg(password_file.path());
    decrypted(run(cmd, keystore_json.as_bytes(), "eth-account"))
}

/// Encrypts `key` with eth-account's `Account.encrypt`. `kdf` is `"scrypt"` (then
/// `iterations` is n; eth-account fixes r = 8, p = 1) or `"pbkdf2"` (`iterations` is c).
pub fn python_encrypt(key: &ValidatorKey, password: &[u8], kdf: &str, iterations: u32) -> String {
    let password_file = password_file(password);
    let mut cmd = Command::new(python());
    cmd.arg(interop_script("eth_account_keystore.py"))
        .arg("encrypt")
        .arg(password_file.path())
        .arg(kdf)
        .arg(iterations.to_string());
    keystore(run(cmd, key.expose_hex().as_bytes(), "eth-account"))
}

/// Decrypts `keystore_json` with ethers' `Wallet.fromEncryptedJson`. Panics if ethers fails.
pub fn node_decrypt(keystore_json: &str, password: &[u8]) -> Decrypted {
    node_try_decrypt(keystore_json, password)
        .unwrap_or_else(|e| panic!("ethers did not decrypt the keystore: {e:?}"))
}

/// Decrypts `keystore_json` with ethers, reporting a rejection instead of panicking.
pub fn node_try_decrypt(keystore_json: &str, password: &[u8]) -> Result<Decrypted, Rejection> {
    let password_file = password_file(password);
    let mut cmd = node_command();
    cmd.arg(interop_script("ethers_keystore.cjs"))
        .arg("decrypt")
        .arg(password_file.path());
    decrypted(run(cmd, keystore_json.as_bytes(), "ethers"))
}

/// Encrypts `key` with ethers' `encryptKeystoreJson`: scrypt with the given n, r = 8, p = 1
/// (ethers writes no other KDF).
pub fn node_encrypt(key: &ValidatorKey, password: &[u8], scrypt_n: u32) -> String {
    let password_file = password_file(password);
    let mut cmd = node_command();
    cmd.arg(interop_script("ethers_keystore.cjs"))
        .arg("encrypt")
        .arg(password_file.path())
        .arg(scrypt_n.to_string());
    keystore(run(cmd, key.expose_hex().as_bytes(), "ethers"))
}

/// `node` from PATH, resolving packages from `.tools/node`.
fn node_command() -> Command {
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", node_modules());
    cmd
}

fn password_file(password: &[u8]) -> tempfile::NamedTempFile {
    // NamedTempFile creates the file 0600, readable by this user only.
    let mut file = tempfile::NamedTempFile::new().expect("create a temporary password file");
    file.write_all(password)
        .and_then(|()| file.flush())
        .expect("write the temporary password file");
    file
}

fn run(mut cmd: Command, stdin: &[u8], tool: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                missing(&format!("cannot start {tool} ({cmd:?}): {e}"));
            }
            panic!("cannot start {tool} ({cmd:?}): {e}")
        });
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin)
        .unwrap_or_else(|e| panic!("cannot write to {tool}'s stdin: {e}"));
    // Dropping stdin above closes it, so the script sees end of input.
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{tool} did not finish: {e}"))
}

fn decrypted(out: Output) -> Result<Decrypted, Rejection> {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    match out.status.code() {
        Some(0) => {}
        Some(WRONG_PASSWORD_STATUS) => return Err(Rejection::WrongPassword),
        _ => return Err(Rejection::Failed(format!("{}: {stderr}", out.status))),
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("interop script printed no JSON ({e}); stderr: {stderr}"));
    let field = |name: &str| {
        v[name]
            .as_str()
            .unwrap_or_else(|| panic!("interop script output lacks {name:?}"))
            .to_owned()
    };
    let key = field("private_key");
    let key = key.strip_prefix("0x").unwrap_or(&key).to_ascii_lowercase();
    Ok((key, field("address")))
}

fn keystore(out: Output) -> String {
    assert!(
        out.status.success(),
        "interop script failed to encrypt ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let json = String::from_utf8(out.stdout).expect("keystore JSON is UTF-8");
    serde_json::from_str::<serde_json::Value>(&json)
        .unwrap_or_else(|e| panic!("interop script printed invalid keystore JSON: {e}"));
    json
}

/// The command-line entry point of `@ethereumjs/client` (its package's `bin.ethereumjs`),
/// for `node` to run, after checking that the package is installed at its pinned version.
/// The caller starts `node` itself, so that it can put its own options before the script.
pub fn ethereumjs_client_cli() -> PathBuf {
    const PACKAGE: &str = "@ethereumjs/client";
    let package = node_modules().join(PACKAGE);
    if !node_pins().iter().any(|(name, _)| name == PACKAGE) {
        panic!("{PACKAGE} is not pinned in ops/test-deps/package.json");
    }
    let manifest = package.join("package.json");
    let bin = std::fs::read(&manifest)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|v| v["bin"]["ethereumjs"].as_str().map(str::to_owned));
    let Some(bin) = bin else {
        missing(&format!(
            "{} names no `bin.ethereumjs` entry point",
            manifest.display()
        ));
    };
    let cli = package.join(bin);
    if !cli.is_file() {
        missing(&format!(
            "the {PACKAGE} entry point {} is missing",
            cli.display()
        ));
    }
    cli
}

/// Foundry's `anvil` or `cast` (`@foundry-rs/NAME-linux-amd64`, pinned in
/// ops/test-deps/package.json): the prebuilt binary the npm package carries.
pub fn foundry(name: &str) -> PathBuf {
    let package = format!("@foundry-rs/{name}-linux-amd64");
    if !node_pins().iter().any(|(n, _)| *n == package) {
        panic!("{package} is not pinned in ops/test-deps/package.json");
    }
    let bin = node_modules().join(&package).join("bin").join(name);
    if !bin.is_file() {
        missing(&format!(
            "{package} carries no bin/{name} at {}",
            bin.display()
        ));
    }
    bin
}

/// Validates each of `documents` against the JSON Schema at `schema` with the Python
/// `jsonschema` package; one result per document: `Ok(())` or `Err(first error)`.
pub fn json_schema_validate(schema: &Path, documents: &[&Path]) -> Vec<Result<(), String>> {
    let out = Command::new(python())
        .arg(interop_script("json_schema_validate.py"))
        .arg(schema)
        .args(documents)
        .output()
        .expect("run json_schema_validate.py");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "json_schema_validate.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Result<(), String>> = text
        .lines()
        .map(|l| {
            if l == "ok" {
                Ok(())
            } else {
                Err(l.to_string())
            }
        })
        .collect();
    assert_eq!(results.len(), documents.len(), "{text}");
    results
}
