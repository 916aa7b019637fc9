//! The proxy's identity on disk, so a restart with a certificate still
//! valid needs no new join token: `<data_dir>/identity/` holds the key
//! (0600), the certificate and the CA bundle. The key never leaves the
//! proxy: it is made here and only its CSR is sent.

use super::{Identity, IdentityError, TrustBundle, WorkloadKey};
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Folder of the identity inside the proxy's data directory.
pub const IDENTITY_DIR: &str = "identity";
const KEY_FILE: &str = "key.pem";
const CERT_FILE: &str = "cert.pem";
const CA_FILE: &str = "ca.pem";
const KEY_MODE: u32 = 0o600;
const PUBLIC_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o700;

fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join(IDENTITY_DIR)
}

fn io(what: &'static str, path: &Path, e: std::io::Error) -> IdentityError {
    IdentityError::Disk(format!("cannot {what} {}: {e}", path.display()))
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io("create", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| io("write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io("replace", path, e))
}

/// Save key, certificate and CA bundle (the key 0600).
pub fn save(
    data_dir: &Path,
    key_pem: &str,
    cert_pem: &str,
    ca_pem: &str,
) -> Result<(), IdentityError> {
    let d = dir(data_dir);
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(&d)
        .map_err(|e| io("create", &d, e))?;
    write_atomic(&d.join(KEY_FILE), key_pem.as_bytes(), KEY_MODE)?;
    write_atomic(&d.join(CERT_FILE), cert_pem.as_bytes(), PUBLIC_MODE)?;
    write_atomic(&d.join(CA_FILE), ca_pem.as_bytes(), PUBLIC_MODE)
}

/// The saved identity and trust bundle, if any (expired or not: the
/// caller decides). A key readable by others is refused.
pub fn load(data_dir: &Path) -> Result<Option<(Identity, TrustBundle)>, IdentityError> {
    let d = dir(data_dir);
    let key_path = d.join(KEY_FILE);
    let key_pem = match fs::read_to_string(&key_path) {
        Ok(k) => k,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", &key_path, e)),
    };
    let mode = fs::metadata(&key_path)
        .map_err(|e| io("inspect", &key_path, e))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(IdentityError::Disk(format!(
            "{} has mode {mode:04o}; it must be 0600 (run `chmod 600` on it, or remove the identity folder to join again)",
            key_path.display()
        )));
    }
    let cert_path = d.join(CERT_FILE);
    let ca_path = d.join(CA_FILE);
    let cert = fs::read_to_string(&cert_path).map_err(|e| io("read", &cert_path, e))?;
    let ca = fs::read_to_string(&ca_path).map_err(|e| io("read", &ca_path, e))?;
    let identity = Identity::new(WorkloadKey::from_pem(&key_pem)?, &cert)?;
    Ok(Some((identity, TrustBundle::from_pem(&ca)?)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::identity::test_ca::{TestCa, VALID};

    #[test]
    fn saved_identity_loads_back_and_the_key_is_owner_only() {
        let ca = TestCa::new("trellis.local");
        let id = ca.id("000000000000", "web");
        let (key, csr) = crate::identity::new_csr(&id).unwrap();
        let cert = ca.sign(&csr, &id.uri(), VALID);
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        save(dir.path(), &key.to_pem(), &cert, &ca.root_pem).unwrap();
        let key_path = dir.path().join(IDENTITY_DIR).join(KEY_FILE);
        assert_eq!(
            fs::metadata(&key_path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (identity, trust) = load(dir.path()).unwrap().unwrap();
        assert_eq!(identity.workload(), &id);
        assert_eq!(trust.len(), 1);
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load(dir.path()).unwrap_err().to_string().contains("0600"));
    }
}
