//! The last good snapshot on disk, so a proxy that restarts while the
//! control plane is away serves what it served before (static stability).
//!
//! Written atomically: a temporary file in the same directory is written
//! and synced, renamed over `snapshot.json`, and the directory is synced,
//! so a crash leaves either the old file or the new one, never half.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use trellis_config::Snapshot;

/// File name of the last good snapshot in the data directory.
pub const SNAPSHOT_FILE: &str = "snapshot.json";

/// Path of the snapshot file in `dir`.
pub(crate) fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT_FILE)
}

/// Write `json` (a serialized snapshot) as the last good snapshot.
pub(crate) fn save(dir: &Path, json: &[u8]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{SNAPSHOT_FILE}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(json)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, snapshot_path(dir))?;
        // Make the rename itself durable.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Why the snapshot on disk could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not a snapshot: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The last good snapshot in `dir`, if there is one.
pub(crate) fn load(dir: &Path) -> Result<Option<Snapshot>, LoadError> {
    let path = snapshot_path(dir);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LoadError::Read { path, source }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| LoadError::Parse { path, source })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "trellis-proxy-disk-{tag}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn round_trip_and_replace() {
        let dir = temp_dir("rt");
        assert!(load(&dir).unwrap().is_none(), "nothing yet");
        let mut s = Snapshot {
            version: 3,
            proxy: "p".into(),
            ..Default::default()
        };
        save(&dir, &serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(load(&dir).unwrap().unwrap(), s);
        s.version = 4;
        save(&dir, &serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(load(&dir).unwrap().unwrap().version, 4);
        let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let dir = temp_dir("bad");
        fs::create_dir_all(&dir).unwrap();
        fs::write(snapshot_path(&dir), b"{not json").unwrap();
        assert!(matches!(load(&dir), Err(LoadError::Parse { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }
}
