//! Where live mounts are found: `$XDG_RUNTIME_DIR/hushfs/mounts/` holds, per
//! mount, a control socket `<id>.sock` and a description `<id>.json`, where
//! id is derived from the mount directory.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::sys::paths;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub mountpoint: PathBuf,
    pub project: String,
    pub vault: PathBuf,
    pub pid: u32,
    pub started: u64,
    pub private: bool,
    pub socket: PathBuf,
    #[serde(default)]
    pub log: Option<PathBuf>,
}

pub fn dir() -> PathBuf {
    paths::runtime_dir().join("mounts")
}

/// The stable id of a mount directory (an absolute path).
pub fn id(mountpoint: &Path) -> String {
    let h = Sha256::digest(mountpoint.as_os_str().as_encoded_bytes());
    h[..8].iter().map(|b| format!("{b:02x}")).collect()
}

pub fn socket_path(mountpoint: &Path) -> PathBuf {
    dir().join(format!("{}.sock", id(mountpoint)))
}

fn info_path(mountpoint: &Path) -> PathBuf {
    dir().join(format!("{}.json", id(mountpoint)))
}

pub fn write(e: &Entry) -> Result<()> {
    paths::ensure_private_dir(&dir())?;
    let p = info_path(&e.mountpoint);
    let tmp = p.with_extension("json.tmp");
    fs::write(
        &tmp,
        serde_json::to_vec_pretty(e).expect("entry serialises"),
    )
    .and_then(|_| fs::rename(&tmp, &p))
    .map_err(|er| Error::io("cannot write", &p, er))
}

pub fn remove(mountpoint: &Path) {
    let _ = fs::remove_file(info_path(mountpoint));
    let _ = fs::remove_file(socket_path(mountpoint));
}

/// A daemon is alive when something listens on its control socket: a
/// killed daemon leaves the socket file but nothing listens, and a zombie
/// still has a /proc entry. A daemon that accepts nothing (stopped, or its
/// backlog full) is alive, so that `lock` names it instead of forgetting it.
fn alive(e: &Entry) -> bool {
    super::control::listening(&e.socket)
}

/// The entry for a mount directory, if its daemon is alive.
pub fn find(mountpoint: &Path) -> Option<Entry> {
    let b = fs::read(info_path(mountpoint)).ok()?;
    let e: Entry = serde_json::from_slice(&b).ok()?;
    if e.mountpoint == mountpoint && alive(&e) {
        Some(e)
    } else {
        None
    }
}

/// Every live mount; descriptions of dead daemons are removed.
pub fn list() -> Vec<Entry> {
    let Ok(rd) = fs::read_dir(dir()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for f in rd.flatten() {
        let p = f.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Some(e) = fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<Entry>(&b).ok())
        else {
            continue;
        };
        if alive(&e) {
            out.push(e);
        } else {
            let _ = fs::remove_file(&p);
            let _ = fs::remove_file(&e.socket);
        }
    }
    out.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
    out
}

/// The live mount at `dir` (any path form), or a clear error.
pub fn require(dir: &Path) -> Result<Entry> {
    let abs = super::mountpoint::absolute(dir)?;
    find(&abs).ok_or_else(|| {
        Error::NotFound(format!(
            "{} is not a live hushfs mount: `hushfs mount {} --project P` first",
            abs.display(),
            abs.display()
        ))
    })
}
