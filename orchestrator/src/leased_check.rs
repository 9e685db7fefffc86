//! Whether the `leased` configuration of this member's VMs can use the secrets `init` or
//! `join` stores (`--leased-config FILE`). Only warnings: the secrets are right as they
//! are, and the daemon is the one that refuses, at its start-up (exit 64), a pool whose
//! secrets its client config cannot use. The check reads the file's `[identity]` and
//! `[client]` settings by name and nothing else; `leased` validates the whole file.
//!
//! Raw-hex secrets suit every client format (`leased` encrypts them for a keystore
//! format). Keystore-v3 secrets need `client.password_file` or `client.password_secret`
//! holding the password they were stored under.

use std::path::Path;

use shared::fsutil;

/// Largest `leased.toml` read.
const MAX_FILE: usize = 1 << 20;

/// The warnings for a member `member` whose secrets are keystore-v3 (`keystores`) or raw
/// hex, against the `leased.toml` at `leased_config`, if one was named.
pub(crate) fn warnings(member: u32, keystores: bool, leased_config: Option<&Path>) -> Vec<String> {
    let Some(path) = leased_config else {
        return if keystores {
            vec![
                "the keys are stored as keystore-v3: leased leases them only with \
                 client.password_file or client.password_secret holding this password, and \
                 refuses to start without one (pass --leased-config FILE to check a leased.toml)"
                    .into(),
            ]
        } else {
            Vec::new()
        };
    };
    let shown = path.display();
    let file = match read(path) {
        Ok(file) => file,
        Err(e) => return vec![format!("cannot check --leased-config {shown}: {e}")],
    };
    let mut out = Vec::new();
    let client = &file["client"];
    let has_password =
        client.get("password_file").is_some() || client.get("password_secret").is_some();
    if keystores && !has_password {
        out.push(format!(
            "--leased-config {shown}: [client] sets neither password_file nor password_secret, \
             so leased cannot decrypt these keystore-v3 secrets and will refuse to start"
        ));
    }
    let first = format!("m{member}-v0");
    match file["identity"]["pool"].as_str() {
        Some(pool) if !first.starts_with(pool) => out.push(format!(
            "--leased-config {shown}: identity.pool {pool:?} takes none of member {member}'s \
             identities ({first}, …)"
        )),
        _ => {}
    }
    out
}

/// The file's settings as JSON values, for reading a few by name.
fn read(path: &Path) -> Result<serde_json::Value, String> {
    let bytes = fsutil::read_limited(path, MAX_FILE).map_err(|e| e.to_string())?;
    let text = std::str::from_utf8(&bytes).map_err(|_| "is not UTF-8 text".to_string())?;
    let table = shared::config::parse(text).map_err(|p| p.to_string())?;
    serde_json::to_value(table).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(member: u32, keystores: bool, text: Option<&str>) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leased.toml");
        if let Some(text) = text {
            std::fs::write(&path, text).unwrap();
        }
        warnings(member, keystores, text.map(|_| path.as_path()))
    }

    #[test]
    fn keystore_secrets_without_a_password_in_the_leased_config_are_warned_of() {
        let none = "[identity]\npool = \"m0-\"\n[client]\nformat = \"raw-hex\"\n";
        let w = check(0, true, Some(none));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("neither password_file nor password_secret"),
            "{w:?}"
        );
        assert!(check(0, false, Some(none)).is_empty());
        for password in ["password_file = \"/etc/pw\"", "password_secret = \"pw\""] {
            let text = format!("{none}{password}\n");
            assert!(check(0, true, Some(&text)).is_empty(), "{password}");
        }
        let w = check(0, true, None);
        assert!(w[0].contains("--leased-config"), "{w:?}");
        assert!(check(0, false, None).is_empty());
    }

    #[test]
    fn a_pool_that_takes_none_of_the_members_identities_is_warned_of() {
        let text = "[identity]\npool = \"m1-\"\n[client]\n";
        assert!(check(1, false, Some(text)).is_empty());
        let w = check(10, false, Some(text));
        assert!(
            w[0].contains("takes none of member 10's identities (m10-v0"),
            "{w:?}"
        );
        let w = check(0, false, Some("[identity\n"));
        assert!(w[0].starts_with("cannot check --leased-config"), "{w:?}");
    }
}
