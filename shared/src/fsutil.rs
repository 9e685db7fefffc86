//! Files on disk: private ones created 0600 in 0700 directories, and every new file written
//! atomically and never over an existing one.
//!
//! [`write_new`] is the one atomic "create if absent" writer, and [`write_new_private`]
//! (mode 0600) is the one way key material reaches a file. It writes a temporary file
//! beside the target (`O_EXCL`, mode 0600 from the start, so no other user ever sees it
//! readable, then the mode asked for), fsyncs it, then publishes it with `tempfile`'s
//! `persist_noclobber` (`renameat2(RENAME_NOREPLACE)`, or `link(2)` where the file system
//! lacks it): publishing fails if the target exists, which makes "create if absent" atomic
//! even between processes, and a reader never sees a half-written file. The directory is
//! fsynced so the name survives a crash. The temporary name is `.NAME.tmp-` and six random
//! characters, which `leased` sweeps from its runtime directory.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Mode of every file holding key material.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of every directory holding such files.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Longest password file [`read_password_file`] accepts.
pub const MAX_PASSWORD_FILE: usize = 4096;

/// The longest file name Linux file systems take (`NAME_MAX`).
const NAME_MAX: usize = 255;
/// What the temporary name adds around the target's name: `.`, `.tmp-` and the six random
/// characters `tempfile` appends.
const TEMP_NAME_EXTRA: usize = 1 + 5 + 6;

/// Creates `path` holding `contents`, mode 0600, atomically; fails with
/// `io::ErrorKind::AlreadyExists` (and writes nothing) if `path` exists.
pub fn write_new_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_new(path, contents, PRIVATE_FILE_MODE)
}

/// Creates `path` holding `contents` with exactly `mode` (whatever the umask), atomically
/// and durably; fails with `io::ErrorKind::AlreadyExists` (and writes nothing) if `path`
/// exists, even if another process creates it meanwhile.
pub fn write_new(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent_dir(path);
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    if path.symlink_metadata().is_ok() {
        return Err(already_exists(path));
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(&temp_prefix(file_name))
        .permissions(fs::Permissions::from_mode(PRIVATE_FILE_MODE))
        .tempfile_in(&dir)?;
    // The umask can only narrow the mode asked for, and an inherited default ACL could
    // widen it: set it explicitly, before any content is written.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    // On failure the temporary file is dropped, and so deleted; the target is untouched.
    tmp.persist_noclobber(path).map_err(|e| {
        if e.error.kind() == io::ErrorKind::AlreadyExists {
            already_exists(path)
        } else {
            e.error
        }
    })?;
    sync_dir(&dir)
}

/// Replaces `path` with a world-readable (0644) file holding `contents`, atomically and
/// durably: a reader sees the old file or the new one, never a part. For published,
/// public documents only.
pub fn replace_public(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&temp_prefix(file_name))
        .permissions(fs::Permissions::from_mode(PRIVATE_FILE_MODE))
        .tempfile_in(&dir)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(&dir)
}

/// `.NAME.tmp-`, with NAME cut short (at a character boundary) so that the temporary name
/// fits in `NAME_MAX` whenever the target's name does.
fn temp_prefix(file_name: &OsStr) -> String {
    let name = file_name.to_string_lossy();
    let mut keep = name.len().min(NAME_MAX - TEMP_NAME_EXTRA);
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!(".{}.tmp-", &name[..keep])
}

/// Creates `dir` (and missing parents) with mode 0700, or checks that an existing one is
/// private. Refuses a directory that group or others can read or enter.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => check_private_dir(dir, &m),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a directory", dir.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_DIR_MODE)
            .create(dir),
        Err(e) => Err(e),
    }
}

fn check_private_dir(dir: &Path, m: &fs::Metadata) -> io::Result<()> {
    let mode = m.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} has mode {mode:04o}; it holds secrets and must be 0700 (chmod 700 {})",
                dir.display(),
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Reads at most `max` bytes of `path`; a larger file is an error rather than a truncation.
pub fn read_limited(path: &Path, max: usize) -> io::Result<Vec<u8>> {
    let f = File::open(path)?;
    let mut buf = Vec::new();
    f.take(max as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {max} bytes", path.display()),
        ));
    }
    Ok(buf)
}

/// Reads a password file into zeroizing memory, allocated once up front so that no
/// reallocation leaves a copy behind: at most [`MAX_PASSWORD_FILE`] bytes, with one trailing
/// newline (`\n` or `\r\n`) dropped, as editors and `echo` add one. An empty password is
/// returned as such; callers decide whether they accept it.
pub fn read_password_file(path: &Path) -> io::Result<Zeroizing<Vec<u8>>> {
    let f = File::open(path)?;
    let mut pw = Zeroizing::new(Vec::with_capacity(MAX_PASSWORD_FILE + 2));
    f.take(MAX_PASSWORD_FILE as u64 + 1).read_to_end(&mut pw)?;
    if pw.len() > MAX_PASSWORD_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is larger than {MAX_PASSWORD_FILE} bytes",
                path.display()
            ),
        ));
    }
    if pw.ends_with(b"\n") {
        pw.pop();
        if pw.ends_with(b"\r") {
            pw.pop();
        }
    }
    Ok(pw)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn already_exists(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "{} already exists; refusing to overwrite it",
            path.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_0600_and_refuses_to_overwrite() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        write_new_private(&p, b"one").unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let e = write_new_private(&p, b"two").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"one");
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_new_sets_the_mode_asked_for_and_refuses_to_overwrite() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("networkinfo.json");
        write_new(&p, b"{}", 0o644).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o644);
        let e = write_new(&p, b"[]", 0o644).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"{}");
        // A dangling symlink is a name that exists too: nothing is written through it.
        let link = d.path().join("link");
        std::os::unix::fs::symlink(d.path().join("nowhere"), &link).unwrap();
        let e = write_new_private(&link, b"key").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert!(!d.path().join("nowhere").exists());
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 2);
    }

    /// A file name of NAME_MAX bytes is valid, so its temporary name must be too. The
    /// hand-written writer added `.tmp-PID-RANDOM` to the whole name and failed with
    /// ENAMETOOLONG.
    #[test]
    fn the_longest_valid_file_name_can_be_written() {
        let d = tempfile::tempdir().unwrap();
        for name in ["k".repeat(NAME_MAX), "é".repeat(NAME_MAX / 2)] {
            let p = d.path().join(&name);
            write_new_private(&p, b"one").unwrap();
            assert_eq!(fs::read(&p).unwrap(), b"one");
        }
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 2);
    }

    /// leased sweeps a dead writer's temporary files from its runtime directory by this
    /// shape: a leading dot and `.tmp-`.
    #[test]
    fn temporary_names_have_the_shape_leased_sweeps() {
        for name in ["validator.key", "validator-keystore.json"] {
            let prefix = temp_prefix(OsStr::new(name));
            assert!(
                prefix.starts_with('.') && prefix.contains(".tmp-"),
                "{prefix}"
            );
        }
    }

    #[test]
    fn concurrent_creators_have_one_winner() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        let winners: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    let p = &p;
                    s.spawn(move || write_new_private(p, format!("{i}").as_bytes()).is_ok())
                })
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(winners, 1);
    }

    #[test]
    fn private_dirs_are_created_0700_and_wide_ones_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b");
        ensure_private_dir(&p).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        let e = ensure_private_dir(&p).unwrap_err();
        assert!(e.to_string().contains("must be 0700"), "{e}");
    }

    #[test]
    fn password_files_lose_one_trailing_newline_and_are_bounded() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pw");
        for (content, expected) in [
            (&b"secret\n"[..], &b"secret"[..]),
            (b"secret\r\n", b"secret"),
            (b"secret\n\n", b"secret\n"),
            (b"secret", b"secret"),
            (b"\n", b""),
        ] {
            fs::write(&p, content).unwrap();
            assert_eq!(read_password_file(&p).unwrap().as_slice(), expected);
        }
        fs::write(&p, vec![b'x'; MAX_PASSWORD_FILE + 1]).unwrap();
        assert!(read_password_file(&p).is_err());
    }

    #[test]
    fn read_limited_refuses_large_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big");
        fs::write(&p, vec![0u8; 11]).unwrap();
        assert!(read_limited(&p, 10).is_err());
        assert_eq!(read_limited(&p, 11).unwrap().len(), 11);
    }
}
