//! The admin token: it bootstraps accounts and their tokens, and can do
//! nothing else (resource routes answer it with 403).
//!
//! Given with `--admin-token-file` or `TRELLIS_ADMIN_TOKEN`; otherwise
//! made on first start into `<data dir>/admin-token` (mode 0600) and read
//! from there on later starts. Only its hash is kept in memory, and only
//! the file's path is logged.

use super::{AccountError, secret};
use std::path::{Path, PathBuf};

/// File name of the generated admin token inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// Shortest admin token accepted from the operator: 128 bits of hex, so
/// a typo-short or guessable value is refused at start.
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;

/// The admin token, as its hash.
#[derive(Clone)]
pub struct AdminToken {
    hash: String,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Why the admin token could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    /// The given token is too short.
    #[error("the admin token must be at least {MIN_ADMIN_TOKEN_LEN} characters")]
    TooShort,
    /// The token file could not be read or written.
    #[error("admin token file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No random bytes.
    #[error(transparent)]
    Random(#[from] AccountError),
}

impl AdminToken {
    /// From a value the operator chose.
    pub fn from_value(value: &str) -> Result<Self, AdminTokenError> {
        let value = value.trim();
        if value.len() < MIN_ADMIN_TOKEN_LEN {
            return Err(AdminTokenError::TooShort);
        }
        Ok(Self {
            hash: secret::sha256_hex(value),
        })
    }

    /// Read the token from `path`.
    pub fn from_file(path: &Path) -> Result<Self, AdminTokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| AdminTokenError::File {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_value(&text)
    }

    /// Read `<data_dir>/admin-token`, or make it (0600) when it is missing.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, AdminTokenError> {
        let path = data_dir.join(ADMIN_TOKEN_FILE);
        if path.exists() {
            return Self::from_file(&path);
        }
        let value = format!(
            "trellis_admin_{}",
            secret::random_hex(secret::SECRET_BYTES)?
        );
        write_private(&path, &value).map_err(|source| AdminTokenError::File {
            path: path.clone(),
            source,
        })?;
        tracing::info!(path = %path.display(), "generated the admin token; read it from this file");
        Self::from_value(&value)
    }

    /// Whether a presented token's hash is this token's.
    pub fn matches_hash(&self, hash: &str) -> bool {
        // Both are hashes of secrets: comparing them leaks nothing usable.
        self.hash == hash
    }
}

/// Write `value` to a new file only its owner can read.
fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(value.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = AdminToken::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(ADMIN_TOKEN_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let b = AdminToken::load_or_create(dir.path()).unwrap();
        assert_eq!(a.hash, b.hash);
        let value = std::fs::read_to_string(&path).unwrap();
        assert!(a.matches_hash(&secret::sha256_hex(value.trim())));
        assert!(!format!("{a:?}").contains(&a.hash));
    }

    #[test]
    fn a_short_token_is_refused() {
        assert!(matches!(
            AdminToken::from_value("short"),
            Err(AdminTokenError::TooShort)
        ));
    }
}
