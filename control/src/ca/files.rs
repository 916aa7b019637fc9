//! The CA's files: a private key only its owner can read, a certificate
//! anyone may read, both written atomically.
//!
//! The key file is created with mode 0600 by `open(O_CREAT|O_EXCL, 0600)`
//! under a temporary name, written, synced, and then hard-linked to its
//! final name, which fails if a key is already there: the key is never
//! readable by others, not even for an instant, a crash never leaves half a
//! key, and of two processes creating a CA at once exactly one key wins.
//! A key file found with group or other permission bits is refused, not
//! silently repaired: whoever could read it may have copied it.

use super::CaError;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the key file: owner read/write only.
pub(super) const KEY_MODE: u32 = 0o600;
/// Mode of the root certificate: public.
pub(super) const CERT_MODE: u32 = 0o644;
/// Mode of a CA directory this code creates.
const DIR_MODE: u32 = 0o700;
/// Largest key or certificate file read (PEM of a P-256 key is ~240 bytes).
const MAX_FILE_LEN: u64 = 64 * 1024;

/// Create `dir` (and parents) with mode 0700 when missing.
pub(super) fn ensure_dir(dir: &Path) -> Result<(), CaError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(CaError::io("create the CA directory", dir))
}

/// Read the key file when there is one; `None` when it does not exist.
/// Refuses a key file with any group or other permission bit.
pub(super) fn read_key(path: &Path) -> Result<Option<String>, CaError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CaError::io("open the key file", path)(e)),
    };
    // Check the permissions of the file we opened, not of the path, so a
    // swap between the check and the read cannot slip through.
    let meta = file
        .metadata()
        .map_err(CaError::io("inspect the key file", path))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CaError::KeyPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    read_limited(file, path, "read the key file").map(Some)
}

/// Read a public file; `None` when it does not exist.
pub(super) fn read_public(path: &Path) -> Result<Option<String>, CaError> {
    match File::open(path) {
        Ok(f) => read_limited(f, path, "read the CA certificate").map(Some),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CaError::io("open the CA certificate", path)(e)),
    }
}

fn read_limited(file: File, path: &Path, action: &'static str) -> Result<String, CaError> {
    let mut text = String::new();
    file.take(MAX_FILE_LEN)
        .read_to_string(&mut text)
        .map_err(CaError::io(action, path))?;
    Ok(text)
}

/// Write the key file unless one exists. `Ok(false)` when another key was
/// already there (this one is then discarded and the caller reloads).
pub(super) fn create_key(path: &Path, pem: &str) -> Result<bool, CaError> {
    let tmp = write_temp(path, pem.as_bytes(), KEY_MODE)?;
    let linked = fs::hard_link(&tmp.0, path);
    drop(tmp);
    match linked {
        Ok(()) => {
            sync_parent(path)?;
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(CaError::io("create the key file", path)(e)),
    }
}

/// Write (or replace) a public file atomically.
pub(super) fn replace_public(path: &Path, text: &str) -> Result<(), CaError> {
    let tmp = write_temp(path, text.as_bytes(), CERT_MODE)?;
    fs::rename(&tmp.0, path).map_err(CaError::io("write the CA certificate", path))?;
    sync_parent(path)
}

/// A temporary file beside its target, removed when dropped (after a
/// rename or link the name is gone or a second link, so removal is right).
struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn write_temp(target: &Path, contents: &[u8], mode: u32) -> Result<Temp, CaError> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = Temp(target.with_file_name(format!(
        ".{name}.tmp-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    )));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp.0)
        .map_err(CaError::io("create a temporary file for", target))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(CaError::io("write a temporary file for", target))?;
    Ok(tmp)
}

fn sync_parent(path: &Path) -> Result<(), CaError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(CaError::io("sync the CA directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn key_is_created_0600_once_and_temp_files_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ca.key");
        assert_eq!(read_key(&key).unwrap(), None);
        assert!(create_key(&key, "first").unwrap());
        assert_eq!(mode(&key), KEY_MODE);
        // A second writer loses and the first key stays.
        assert!(!create_key(&key, "second").unwrap());
        assert_eq!(read_key(&key).unwrap().as_deref(), Some("first"));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ca.key")]);
    }

    #[test]
    fn key_with_loose_permissions_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("ca.key");
        assert!(create_key(&key, "k").unwrap());
        for loose in [0o640, 0o604, 0o644, 0o660] {
            fs::set_permissions(&key, fs::Permissions::from_mode(loose)).unwrap();
            let err = read_key(&key).unwrap_err();
            assert!(
                matches!(err, CaError::KeyPermissions { mode, .. } if mode == loose),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains(&format!("{loose:04o}")), "{msg}");
            assert!(msg.contains("chmod 600"), "{msg}");
        }
        // 0400 (read-only for the owner) is fine.
        fs::set_permissions(&key, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(read_key(&key).unwrap().as_deref(), Some("k"));
    }

    #[test]
    fn public_file_is_replaced_atomically_with_0644() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("ca.pem");
        assert_eq!(read_public(&cert).unwrap(), None);
        replace_public(&cert, "one").unwrap();
        replace_public(&cert, "two").unwrap();
        assert_eq!(read_public(&cert).unwrap().as_deref(), Some("two"));
        // The umask may only take bits away.
        assert_eq!(mode(&cert) & !CERT_MODE, 0);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_directories_are_created_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("data").join("ca");
        ensure_dir(&ca).unwrap();
        assert_eq!(mode(&ca) & 0o077, 0);
        ensure_dir(&ca).unwrap();
    }
}
