//! The audit hook: every authorization decision, run, grant and vault change
//! becomes one `Event`. The sink decides where it goes; a sink that cannot
//! record must say so, and the caller then denies the access (fail closed).

use serde::{Deserialize, Serialize};

/// One audited happening. Never holds a secret value: only names, ids and
/// process facts.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// open, read, run, grant, revoke, unlock, lock, set, rm, import,
    /// passwd, rekey, mount, umount.
    pub event: String,
    /// "allow" or "deny" for authorization decisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Path of the file on the mount, e.g. ".env" or "config/app.json".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Names of the secrets involved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// The caller's thread id as the kernel reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tgid: Option<u32>,
    /// Process start time in clock ticks since boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    /// Command line, arguments joined by spaces, truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// The grant that admitted the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// Mount directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
}

/// Where events go. `record` returning an error means the event could not
/// be kept; callers deny the access it describes.
pub trait AuditSink: Send + Sync {
    fn record(&self, ev: Event) -> Result<(), String>;
    /// Why the sink cannot record right now, if it cannot.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Writes each event as one JSON line to the `log` crate (the daemon's log).
pub struct LogSink;

impl AuditSink for LogSink {
    fn record(&self, ev: Event) -> Result<(), String> {
        log::info!(target: "audit", "{}", serde_json::to_string(&ev).map_err(|e| e.to_string())?);
        Ok(())
    }
}
