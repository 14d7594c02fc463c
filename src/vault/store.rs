//! Reading and writing the vault file: size-capped reads, crash-safe atomic
//! replacement and the writers' lock on a separate, never-renamed lock file
//! (a lock on the vault itself would be lost when rename replaces it).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::format::{BODY_MAX, EXT_MAX};
use crate::error::{Error, Result};

/// Bytes the header can take at most; a file larger than this plus the body
/// limit is refused before it is read into memory.
const HEADER_MAX: u64 = 256 + EXT_MAX as u64;

pub fn read(path: &Path) -> Result<Vec<u8>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::NoVault(path.into())),
        Err(e) => return Err(Error::io("cannot open vault", path, e)),
    };
    let meta = f
        .metadata()
        .map_err(|e| Error::io("cannot inspect vault", path, e))?;
    if !meta.is_file() {
        return Err(Error::usage(format!(
            "{} is not a regular file: point --vault at a vault file",
            path.display()
        )));
    }
    if meta.len() > HEADER_MAX + BODY_MAX {
        return Err(Error::damaged(
            path,
            format!("file is {} bytes, larger than any vault", meta.len()),
        ));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    f.take(HEADER_MAX + BODY_MAX + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io("cannot read vault", path, e))?;
    Ok(buf)
}

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn tmp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!(".{name}.tmp-")
}

/// Replaces `path` with `bytes` atomically: a 0600 temp file created with
/// O_EXCL in the same directory, written, fsynced, renamed over the vault,
/// then the directory fsynced. A crash leaves the old or the new file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = dir_of(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(&tmp_prefix(path))
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .tempfile_in(&dir)
        .map_err(|e| Error::io("cannot create a temporary file in", &dir, e))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| Error::io("cannot write vault", path, e))?;
    tmp.persist(path)
        .map_err(|e| Error::io("cannot replace vault", path, e.error))?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("cannot sync directory", &dir, e))?;
    Ok(())
}

/// Removes temp files a killed writer left behind. Call with the lock held.
pub fn remove_stale_temps(path: &Path) {
    let prefix = tmp_prefix(path);
    if let Ok(rd) = fs::read_dir(dir_of(path)) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Creates the vault's directory with mode 0700 if it does not exist.
pub fn ensure_dir(path: &Path) -> Result<()> {
    let dir = dir_of(path);
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::io("cannot create directory", &dir, e))
}
use std::os::unix::fs::DirBuilderExt;

pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    dir_of(path).join(name)
}

/// Exclusive writer lock on `<vault>.lock`, released on drop.
pub struct WriteLock {
    _file: File,
}

impl WriteLock {
    pub fn acquire(vault: &Path) -> Result<WriteLock> {
        ensure_dir(vault)?;
        let lp = lock_path(vault);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lp)
            .map_err(|e| Error::io("cannot open lock file", &lp, e))?;
        file.lock().map_err(|e| Error::io("cannot lock", &lp, e))?;
        Ok(WriteLock { _file: file })
    }
}
