//! The audit hook: every authorization decision, run, grant and vault change
//! becomes one `Event`. The sink decides where it goes; a sink that cannot
//! record must say so, and the caller then denies the access (fail closed).
//!
//! The real sink is [`AuditLog`]: an append-only file of JSON lines, one per
//! event, each carrying an HMAC under a key that evolves after every entry
//! (see `chain.rs` and docs/AUDIT.md). The mount daemon opens one with
//! [`AuditLog::open`] and calls [`AuditSink::record`] for every decision; CLI
//! commands use the synchronous [`Writer`].

pub mod chain;
pub mod log;
pub mod query;
mod sink;
mod state;
pub mod verify;

use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

pub use chain::VaultId;
pub use log::{Files, Options, Writer};
pub use sink::{AuditLog, SinkOptions, failure_note};

use crate::vault::format::{Header, ext};

/// One audited happening. Never holds a secret value: only names, ids and
/// process facts.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// open, read, run, grant, revoke, unlock, lock, set, rm, import,
    /// passwd, rekey, policy-set, policy-clear, source-set, source-clear,
    /// mount, umount; the log itself adds init, recover
    /// (after a torn line) and audit-gap (entries found missing).
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

/// Longest command line kept in an entry.
pub const MAX_CMDLINE: usize = 1024;
const MAX_PATH: usize = 4096;
const MAX_SHORT: usize = 1024;
/// Total bytes of secret names kept in one entry (a .env may name hundreds).
const MAX_NAMES: usize = 16 * 1024;

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
fn truncate(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut cut = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push('…');
}

impl Event {
    /// An event about the calling process itself (CLI commands).
    pub fn for_this_process(event: &str) -> Event {
        let pid = std::process::id();
        let cmdline = std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        Event {
            event: event.into(),
            pid: Some(pid),
            tgid: Some(pid),
            start_time: self_start_time(),
            uid: Some(crate::sys::paths::uid()),
            exe: std::env::current_exe()
                .ok()
                .map(|p| p.to_string_lossy().into_owned()),
            cmdline: Some(cmdline),
            ..Event::default()
        }
    }

    /// Caps every field so one entry stays a few KiB at most, whatever the
    /// caller passes (a hostile process chooses its own argv and exe path).
    pub fn bound(&mut self) {
        for (s, max) in [
            (Some(&mut self.event), 64),
            (self.decision.as_mut(), 64),
            (self.reason.as_mut(), MAX_SHORT),
            (self.project.as_mut(), MAX_SHORT),
            (self.file.as_mut(), MAX_PATH),
            (self.exe.as_mut(), MAX_PATH),
            (self.cmdline.as_mut(), MAX_CMDLINE),
            (self.grant.as_mut(), MAX_SHORT),
            (self.mount.as_mut(), MAX_PATH),
        ] {
            if let Some(s) = s {
                truncate(s, max);
            }
        }
        let mut total = 0;
        let mut keep = self.secrets.len();
        for (i, n) in self.secrets.iter_mut().enumerate() {
            truncate(n, MAX_SHORT);
            total += n.len();
            if total > MAX_NAMES {
                keep = i;
                break;
            }
        }
        if keep < self.secrets.len() {
            let more = self.secrets.len() - keep;
            self.secrets.truncate(keep);
            self.secrets.push(format!("…(+{more} more)"));
        }
    }

    /// The secret names an event records, cut as `bound` would cut them,
    /// without copying the rest first: an open of a 10,000-secret `.env`
    /// copied every name (about 600 KiB) for each open and read, and
    /// queued reads held those copies until written. Leaves room for the
    /// "more" marker, so `bound` keeps it as it is.
    pub fn names_of(names: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        let mut total = 0;
        for (i, n) in names.iter().enumerate() {
            let mut n = n.clone();
            truncate(&mut n, MAX_SHORT);
            total += n.len();
            if total > MAX_NAMES - 64 {
                out.push(format!("…(+{} more)", names.len() - i));
                return out;
            }
            out.push(n);
        }
        out
    }

    pub fn is_denial(&self) -> bool {
        self.decision.as_deref() == Some("deny")
    }
}

/// This process's start time in clock ticks since boot: the 20th field after
/// the last ')' of /proc/self/stat (the command name may contain ')').
fn self_start_time() -> Option<u64> {
    let b = std::fs::read("/proc/self/stat").ok()?;
    let close = b.iter().rposition(|&c| c == b')')?;
    std::str::from_utf8(&b[close + 1..])
        .ok()?
        .split_ascii_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Where events go. `record` returning an error means the event could not
/// be kept; callers deny the access it describes.
pub trait AuditSink: Send + Sync {
    fn record(&self, ev: Event) -> Result<(), String>;
    /// Records an allowed event that continues one already recorded (a
    /// read by the process whose open of that handle was recorded): it may
    /// be queued like a denial instead of waited for. It still fails when
    /// the log is known to be failing, and stays queued for retries.
    fn record_follow_up(&self, ev: Event) -> Result<(), String> {
        self.record(ev)
    }
    /// Why the sink cannot record right now, if it cannot.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// An event with the time it happened (stamped when recorded, not when the
/// batch reaches the disk).
#[derive(Clone, Debug)]
pub struct Record {
    pub time: String,
    pub ev: Event,
}

impl Record {
    pub fn now(ev: Event) -> Record {
        Record {
            time: now_rfc3339(),
            ev,
        }
    }
}

/// RFC 3339 UTC with microseconds: fixed width, so times compare as text.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

/// The last entry's seq and mac, kept outside the log so that cutting the
/// newest entries off is detected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub seq: u64,
    pub mac: chain::Mac32,
}

impl Anchor {
    /// The vault header form (extension `AUDIT_ANCHOR`): seq LE, then mac.
    pub fn to_bytes(&self) -> [u8; 40] {
        let mut b = [0u8; 40];
        b[..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8..].copy_from_slice(&self.mac);
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Anchor> {
        if b.len() != 40 {
            return None;
        }
        Some(Anchor {
            seq: u64::from_le_bytes(b[..8].try_into().ok()?),
            mac: b[8..].try_into().ok()?,
        })
    }

    /// The text form `hushfs audit anchor` prints: `<vault id>:<seq>:<mac>`.
    pub fn to_text(&self, vault_id: &VaultId) -> String {
        format!(
            "{}:{}:{}",
            chain::hex(vault_id),
            self.seq,
            chain::hex(&self.mac)
        )
    }

    /// Parses the text form; the vault id must match.
    pub fn parse(s: &str, vault_id: &VaultId) -> Result<Anchor, String> {
        let bad = || {
            format!(
                "{s:?} is not an anchor: expect <vault id>:<seq>:<mac> as `hushfs audit anchor` prints it"
            )
        };
        let mut it = s.trim().split(':');
        let (Some(id), Some(seq), Some(mac), None) = (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(bad());
        };
        if id != chain::hex(vault_id) {
            return Err(format!(
                "the anchor belongs to vault {id}, not to this vault ({})",
                chain::hex(vault_id)
            ));
        }
        Ok(Anchor {
            seq: seq.parse().map_err(|_| bad())?,
            mac: chain::unhex32(mac).ok_or_else(bad)?,
        })
    }
}

/// `$XDG_STATE_HOME/hushfs/audit`: one `<vault id>.log` per vault.
pub fn log_dir() -> PathBuf {
    crate::sys::paths::state_dir().join("audit")
}

/// Heads this process has authenticated or written, per vault: what
/// `Vault::save` puts into the header anchor.
static HEADS: Mutex<Vec<(VaultId, Anchor)>> = Mutex::new(Vec::new());

fn note_head(id: &VaultId, a: Anchor) {
    let mut h = HEADS.lock().unwrap_or_else(|e| e.into_inner());
    match h.iter_mut().find(|(i, _)| i == id) {
        Some((_, old)) => *old = a,
        None => h.push((*id, a)),
    }
}

/// The newest head of this vault's chain known without reading the log:
/// one this process authenticated or wrote, else the keychain's.
pub fn known_head(id: &VaultId) -> Option<Anchor> {
    let mine = HEADS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|(i, _)| i == id)
        .map(|(_, a)| *a);
    mine.or_else(|| state::load(id).and_then(|s| s.anchor()))
}

/// The anchor stored in a vault header, if any.
pub fn header_anchor(h: &Header) -> Option<Anchor> {
    h.ext(ext::AUDIT_ANCHOR).and_then(Anchor::from_bytes)
}

/// The extension bytes `Vault::save` should write, or `None` to leave the
/// header as it is. The anchor only moves forward: a log cut short never
/// lowers it.
pub fn anchor_for_save(h: &Header) -> Option<Vec<u8>> {
    let known = known_head(&h.vault_id)?;
    match header_anchor(h) {
        Some(old) if old.seq >= known.seq => None,
        _ => Some(known.to_bytes().to_vec()),
    }
}

/// Removes this vault's audit state from the keychain (for tests and for
/// vaults that are thrown away); the log itself is left alone.
pub fn forget_keychain_state(id: &VaultId) -> Result<bool, String> {
    state::clear(id)
}

/// The keychain's copy of the anchor (no key is returned).
pub fn keychain_anchor(id: &VaultId) -> Option<Anchor> {
    state::load(id).and_then(|s| s.anchor())
}

#[cfg(test)]
mod tests;
