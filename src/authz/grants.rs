//! Grants: what an authorizer admits. A tree grant admits a root process
//! and its descendants; it is anchored to the root's pidfd plus
//! (pid, starttime), and dies the moment the root exits.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::sys::pidfd::PidFd;

pub type GrantId = u64;

/// Whether a grant's root still exists (a pidfd in production).
pub trait Liveness: Send + Sync {
    fn alive(&self) -> bool;
    /// An fd that becomes readable when the root exits, for the watcher.
    fn fd(&self) -> Option<RawFd> {
        None
    }
}

impl Liveness for PidFd {
    fn alive(&self) -> bool {
        self.is_alive()
    }
    fn fd(&self) -> Option<RawFd> {
        Some(std::os::fd::AsRawFd::as_raw_fd(self))
    }
}

/// A liveness flag for tests and for grants without a process.
#[derive(Default)]
pub struct Flag(pub AtomicBool);

impl Liveness for Flag {
    fn alive(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl<T: Liveness> Liveness for std::sync::Arc<T> {
    fn alive(&self) -> bool {
        (**self).alive()
    }
    fn fd(&self) -> Option<RawFd> {
        (**self).fd()
    }
}

pub enum GrantKind {
    /// The process (pid, starttime) and all its descendants.
    Tree {
        pid: u32,
        starttime: u64,
        root: Box<dyn Liveness>,
    },
    /// Every process in a cgroup v2 group or below it (a container). The
    /// anchor is the group directory's inode: a group removed and made again
    /// under the same name is a different group.
    Cgroup {
        /// As on the `0::` line of /proc/PID/cgroup, e.g. `/system.slice/docker-1f2e.scope`.
        path: String,
        anchor: Box<dyn Liveness>,
    },
}

pub struct Grant {
    pub id: GrantId,
    pub kind: GrantKind,
    /// Processes of uids other than the mount owner may read through this
    /// grant (a container's users, with `mount --allow-other`).
    pub other_uids: bool,
    /// Human description: "run: psql -h db", "pid 4242".
    pub label: String,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds after which the grant is void.
    pub expires: Option<u64>,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Grant {
    /// True when the grant still stands: root alive (or cgroup still the
    /// same group), not expired.
    pub fn live(&self, now: u64) -> bool {
        if self.expires.is_some_and(|t| now >= t) {
            return false;
        }
        match &self.kind {
            GrantKind::Tree { root, .. } => root.alive(),
            GrantKind::Cgroup { anchor, .. } => anchor.alive(),
        }
    }

    /// Does the process (pid, starttime) match this grant's root?
    pub fn matches(&self, pid: u32, starttime: u64, now: u64) -> bool {
        match &self.kind {
            GrantKind::Tree {
                pid: p,
                starttime: s,
                ..
            } => *p == pid && *s == starttime && self.live(now),
            GrantKind::Cgroup { .. } => false,
        }
    }

    /// Does a process in cgroup `cg` fall under this grant (the group itself
    /// or one below it)?
    pub fn matches_cgroup(&self, cg: &str, now: u64) -> bool {
        match &self.kind {
            GrantKind::Cgroup { path, .. } => {
                let under = cg == path
                    || (cg.starts_with(path.as_str())
                        && cg.as_bytes().get(path.len()) == Some(&b'/'));
                under && self.live(now)
            }
            GrantKind::Tree { .. } => false,
        }
    }

    pub fn is_cgroup(&self) -> bool {
        matches!(self.kind, GrantKind::Cgroup { .. })
    }

    pub fn watch_fd(&self) -> Option<RawFd> {
        match &self.kind {
            GrantKind::Tree { root, .. } => root.fd(),
            GrantKind::Cgroup { anchor, .. } => anchor.fd(),
        }
    }

    /// What `status` shows.
    pub fn describe(&self) -> GrantInfo {
        let (kind, matches) = match &self.kind {
            GrantKind::Tree { pid, starttime, .. } => (
                "tree",
                format!("process {pid} (start {starttime}) and its descendants"),
            ),
            GrantKind::Cgroup { path, .. } => {
                ("cgroup", format!("every process in cgroup {path} or below"))
            }
        };
        let (pid, cgroup) = match &self.kind {
            GrantKind::Tree { pid, .. } => (Some(*pid), None),
            GrantKind::Cgroup { path, .. } => (None, Some(path.clone())),
        };
        GrantInfo {
            id: self.id,
            kind: kind.to_string(),
            matches,
            pid,
            cgroup,
            other_uids: self.other_uids,
            label: self.label.clone(),
            created: self.created,
            expires: self.expires,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct GrantInfo {
    pub id: GrantId,
    pub kind: String,
    pub matches: String,
    /// The root process of a tree grant.
    #[serde(default)]
    pub pid: Option<u32>,
    /// The group of a cgroup grant.
    #[serde(default)]
    pub cgroup: Option<String>,
    /// Admits processes of other uids (container grants on --allow-other mounts).
    #[serde(default)]
    pub other_uids: bool,
    pub label: String,
    pub created: u64,
    pub expires: Option<u64>,
}
