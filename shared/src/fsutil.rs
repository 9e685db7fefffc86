//! Private files on disk: created 0600 in 0700 directories, written atomically, never
//! overwritten.
//!
//! [`write_new_private`] is the one way key material reaches a file. It writes a temporary
//! file (`O_EXCL`, mode 0600 from the start, so no other user ever sees it readable),
//! fsyncs it, then publishes it with `link(2)` rather than `rename(2)`: link fails if the
//! target exists, which makes "create if absent" atomic even between processes, and a
//! reader never sees a half-written file. The directory is fsynced so the name survives a
//! crash.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Mode of every file holding key material.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of every directory holding such files.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Longest password file [`read_password_file`] accepts.
pub const MAX_PASSWORD_FILE: usize = 4096;

/// Creates `path` holding `contents`, mode 0600, atomically; fails with
/// `io::ErrorKind::AlreadyExists` (and writes nothing) if `path` exists.
pub fn write_new_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    if path.symlink_metadata().is_ok() {
        return Err(already_exists(path));
    }
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        file_name.to_string_lossy(),
        std::process::id(),
        random_suffix()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE_FILE_MODE)
            .open(&tmp)?;
        // The umask cannot widen 0600, but an inherited ACL default could; be explicit.
        f.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE_MODE))?;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(already_exists(path)),
            Err(e) => Err(e),
        }
    })();
    // Whatever happened, the temporary name goes; the published name (if any) stays.
    let _ = fs::remove_file(&tmp);
    result?;
    sync_dir(&dir)
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

fn random_suffix() -> String {
    let mut b = [0u8; 6];
    getrandom::getrandom(&mut b).expect("the OS random number generator failed");
    hex::encode(b)
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
