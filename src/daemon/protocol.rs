//! The control protocol: one JSON line per request and per response over
//! the daemon's Unix socket, versioned. A request may carry one file
//! descriptor (SCM_RIGHTS): the sender's pidfd for `grant_self`.

use serde::{Deserialize, Serialize};

use crate::authz::GrantInfo;

pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Describe the mount and its grants.
    Status,
    /// Grant the sender's own process tree. The message carries a pidfd of
    /// the sender, which must be the socket peer.
    GrantSelf { label: String },
    /// Grant an existing process tree (a container's init). The daemon
    /// opens the pidfd itself.
    GrantPid {
        pid: u32,
        #[serde(default)]
        ttl_secs: Option<u64>,
    },
    /// Grant every process in a cgroup v2 group (as on the `0::` line of
    /// /proc/PID/cgroup) or below it.
    GrantCgroup {
        path: String,
        #[serde(default)]
        ttl_secs: Option<u64>,
        /// Accept a group the requester could move its own processes into.
        #[serde(default)]
        allow_writable: bool,
    },
    /// Remove a grant.
    Revoke { grant: u64 },
    /// Drop every decrypted value; deny until reload with a key.
    Lock,
    /// Re-read the vault (taking the key from the keychain if locked).
    Reload,
    /// Unmount and exit.
    Shutdown,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub v: u32,
    #[serde(flatten)]
    pub body: T,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<u64>,
    /// Something the user should know although the request succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<MountStatus>,
}

impl Response {
    pub fn ok() -> Self {
        Response {
            ok: true,
            ..Default::default()
        }
    }
    pub fn err(msg: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(msg.into()),
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct MountStatus {
    pub mountpoint: String,
    pub project: String,
    pub vault: String,
    pub pid: u32,
    /// Unix seconds.
    pub started: u64,
    pub locked: bool,
    /// Why the mount is locked or not serving, if something went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub files: usize,
    pub open_handles: usize,
    pub grants: Vec<GrantInfo>,
    pub auto_unmount: bool,
    /// Other uids may reach the mount (container grants).
    #[serde(default)]
    pub allow_other: bool,
    /// Root counts as the owner.
    #[serde(default)]
    pub allow_root: bool,
    /// A `hushfs run` private mount.
    pub private: bool,
    /// The project has a run policy (enforced on every open and read).
    #[serde(default)]
    pub policy: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// A remote source (OpenBao/Vault): where, how fresh, which leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::source::SourceStatus>,
}
