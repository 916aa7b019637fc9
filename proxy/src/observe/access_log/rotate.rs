//! A log file rotated by size: `path`, then `path.1` (newest) to
//! `path.<maxFiles>` (oldest); older files are overwritten by the rename.
//!
//! Under failure: a file that cannot be opened or written is dropped and
//! opened again at the next write, at most once per [`REOPEN_BACKOFF`]
//! (writes in between fail at once, without touching the disk), so a full
//! disk or a removed directory costs a few syscalls a second, not one per
//! line. A failed rename during rotation is logged and writing goes on in
//! the current file. Missing parent directories are created. Something
//! other than a regular file at `path` (a FIFO, a character device) is
//! written to but never rotated.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use trellis_config::FileDestination;

/// Least time between attempts to open a file that failed.
pub const REOPEN_BACKOFF: Duration = Duration::from_secs(1);

/// Access logs hold request paths and client addresses: readable by the
/// owner and its group only.
const FILE_MODE: u32 = 0o640;

/// The file being written and its rotation settings.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    max_files: u32,
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
    /// Whether the current file can be rotated (a regular file).
    regular: bool,
    /// No open attempt before this.
    retry_at: Option<Instant>,
}

impl RotatingFile {
    /// A file destination; nothing is opened until the first write.
    pub fn new(dest: &FileDestination) -> Self {
        Self {
            path: PathBuf::from(&dest.path),
            max_bytes: dest.max_bytes,
            max_files: dest.max_files,
            file: None,
            size: 0,
            regular: true,
            retry_at: None,
        }
    }

    /// Take new rotation settings (a push changed them); applies from the
    /// next write.
    pub fn configure(&mut self, dest: &FileDestination) {
        self.max_bytes = dest.max_bytes;
        self.max_files = dest.max_files;
    }

    /// Write whole lines: `buf` holds lines ending at the offsets in
    /// `ends`. The file is rotated between lines, so that no file grows
    /// past `maxBytes` unless one line alone is larger. Returns how many
    /// lines were written, and the error that stopped it, if one did.
    pub fn write_lines(&mut self, buf: &[u8], ends: &[usize]) -> (usize, Option<io::Error>) {
        let mut written = 0;
        let mut start = 0;
        while written < ends.len() {
            if let Err(e) = self.ensure_open() {
                return (written, Some(e));
            }
            let room = self.max_bytes.saturating_sub(self.size);
            // The lines that fit: at least one into an empty file.
            let mut n = 0;
            while written + n < ends.len()
                && ((ends[written + n] - start) as u64 <= room || (n == 0 && self.size == 0))
            {
                n += 1;
            }
            if n == 0 {
                self.rotate();
                continue;
            }
            let end = ends[written + n - 1];
            if let Err(e) = self.write_all(&buf[start..end]) {
                return (written, Some(e));
            }
            written += n;
            start = end;
        }
        (written, None)
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("the log file is not open"));
        };
        match file.write_all(bytes) {
            Ok(()) => {
                self.size += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.file = None;
                self.retry_at = Some(Instant::now() + REOPEN_BACKOFF);
                Err(e)
            }
        }
    }

    fn ensure_open(&mut self) -> io::Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        if let Some(at) = self.retry_at
            && Instant::now() < at
        {
            return Err(io::Error::other(format!(
                "not reopening {} before {REOPEN_BACKOFF:?} have passed since it failed",
                self.path.display()
            )));
        }
        match open(&self.path) {
            Ok((file, size, regular)) => {
                self.file = Some(file);
                self.size = size;
                self.regular = regular;
                self.retry_at = None;
                Ok(())
            }
            Err(e) => {
                self.retry_at = Some(Instant::now() + REOPEN_BACKOFF);
                Err(e)
            }
        }
    }

    /// Shift `path.i` to `path.i+1` (the oldest is overwritten), `path`
    /// to `path.1`, and start a new `path`.
    fn rotate(&mut self) {
        if !self.regular {
            // Never rename a FIFO or a device: just go on writing.
            self.size = 0;
            return;
        }
        self.file = None;
        let numbered = |i: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        for i in (1..self.max_files).rev() {
            rename_if_present(&numbered(i), &numbered(i + 1));
        }
        rename_if_present(&self.path, &numbered(1));
        self.size = 0;
    }
}

fn rename_if_present(from: &Path, to: &Path) {
    match std::fs::rename(from, to) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(from = %from.display(), to = %to.display(), error = %e, "access log rotation: rename failed")
        }
    }
}

/// Open for appending (creating it and its directories); returns the file,
/// its current size and whether it is a regular file.
fn open(path: &Path) -> io::Result<(File, u64, bool)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)?;
    let meta = file.metadata()?;
    Ok((file, meta.len(), meta.file_type().is_file()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::observe::access_log::tests::TempDir;

    fn lines(n: usize, len: usize) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        for i in 0..n {
            let mut l = format!("{i:05}").into_bytes();
            l.resize(len - 1, b'x');
            l.push(b'\n');
            buf.extend_from_slice(&l);
            ends.push(buf.len());
        }
        (buf, ends)
    }

    fn dest(path: &Path, max_bytes: u64, max_files: u32) -> FileDestination {
        FileDestination {
            path: path.to_string_lossy().into_owned(),
            max_bytes,
            max_files,
        }
    }

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let dir = TempDir::new("rotate");
        let path = dir.path().join("sub/access.log");
        let mut f = RotatingFile::new(&dest(&path, 1000, 3));
        // 10 lines of 100 bytes fill one file exactly; 55 lines make the
        // current file plus five full ones, of which three are kept.
        let (buf, ends) = lines(55, 100);
        assert_eq!(f.write_lines(&buf, &ends).0, 55);
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let current = read(&path);
        assert_eq!(current.lines().count(), 5);
        assert!(current.starts_with("00050"));
        for (i, first) in [(1, "00040"), (2, "00030"), (3, "00020")] {
            let p = PathBuf::from(format!("{}.{i}", path.display()));
            let text = read(&p);
            assert_eq!(text.len(), 1000, "{}", p.display());
            assert!(text.starts_with(first), "{}: {}", p.display(), &text[..5]);
        }
        assert!(!PathBuf::from(format!("{}.4", path.display())).exists());
        // Lines are never split across files.
        for i in 0..=3 {
            let p = if i == 0 {
                path.clone()
            } else {
                PathBuf::from(format!("{}.{i}", path.display()))
            };
            assert!(read(&p).lines().all(|l| l.len() == 99));
        }
    }

    #[test]
    fn appends_to_an_existing_file_and_counts_its_size() {
        let dir = TempDir::new("append");
        let path = dir.path().join("a.log");
        std::fs::write(&path, vec![b'o'; 950]).unwrap();
        let mut f = RotatingFile::new(&dest(&path, 1000, 2));
        let (buf, ends) = lines(1, 100);
        assert_eq!(f.write_lines(&buf, &ends).0, 1);
        assert_eq!(std::fs::read(&path).unwrap().len(), 100);
        assert_eq!(
            std::fs::read(format!("{}.1", path.display()))
                .unwrap()
                .len(),
            950
        );
    }

    #[test]
    fn an_unwritable_path_fails_fast_and_recovers() {
        let dir = TempDir::new("unwritable");
        // A regular file where a directory should be.
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, b"").unwrap();
        let path = blocker.join("a.log");
        let mut f = RotatingFile::new(&dest(&path, 1000, 2));
        let (buf, ends) = lines(3, 10);
        let (n, e) = f.write_lines(&buf, &ends);
        assert_eq!(n, 0);
        assert!(e.is_some());
        // Within the backoff: refused without trying.
        let (n, e) = f.write_lines(&buf, &ends);
        assert_eq!(n, 0);
        assert!(e.unwrap().to_string().contains("not reopening"));
        // The obstacle goes away; after the backoff it writes again.
        std::fs::remove_file(&blocker).unwrap();
        f.retry_at = Some(Instant::now());
        assert_eq!(f.write_lines(&buf, &ends).0, 3);
        assert_eq!(std::fs::read(&path).unwrap().len(), 30);
    }

    #[test]
    fn a_line_larger_than_max_bytes_still_goes_out() {
        let dir = TempDir::new("big");
        let path = dir.path().join("a.log");
        let mut f = RotatingFile::new(&dest(&path, 50, 1));
        let (buf, ends) = lines(3, 80);
        assert_eq!(f.write_lines(&buf, &ends).0, 3);
        assert_eq!(std::fs::read(&path).unwrap().len(), 80);
        assert_eq!(
            std::fs::read(format!("{}.1", path.display()))
                .unwrap()
                .len(),
            80
        );
    }
}
