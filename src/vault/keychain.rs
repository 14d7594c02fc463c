//! Caches the data key in the OS keychain so people unlock once instead of
//! typing the passphrase for every command.
//!
//! The store is the per-user agent's own session keyring (src/agent/),
//! reached through the keyring crate's `Entry` API with a small credential
//! of our own. The agent joins a fresh anonymous session keyring with
//! possessor-only permissions; the hushfs processes it starts inherit it,
//! nothing else of the uid possesses it, so no other process of the user can
//! read, list or search these keys. A process that was not verified to
//! share the agent's keyring (`sys::keyring::trusted`) has no cache at all:
//! every command outside the agent asks for the passphrase.
//!
//! Earlier versions kept the key in the *user* keyring, which every process
//! of the uid can read; `purge_user_keyring` removes those entries. The
//! payload carries its expiry and the kernel key gets the same timeout.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use keyring::credential::CredentialApi;
use linux_keyutils::{
    Key, KeyError, KeyPermissionsBuilder, KeyRing, KeyRingIdentifier, Permission,
};
use zeroize::Zeroizing;

use crate::secret::Key32;

const SERVICE: &str = "hushfs";
const MAGIC: &[u8; 4] = b"HK1\0";

static WARNED: AtomicBool = AtomicBool::new(false);

/// Why a process has no cache: it is not one the agent started.
const NO_AGENT: &str = "not started by the hushfs agent";

/// True when this process can use the cache (it shares the agent's
/// keyring and the cache is not switched off).
pub fn available() -> bool {
    !disabled() && crate::sys::keyring::trusted().is_some()
}

/// Set `HUSHFS_KEYCHAIN=off` to never touch the keychain or the agent (every
/// command then asks for the passphrase).
pub fn disabled() -> bool {
    std::env::var_os("HUSHFS_KEYCHAIN").is_some_and(|v| v == "off")
}

fn user(vault_id: &str) -> String {
    format!("vault-{vault_id}")
}

/// A key in the calling uid's kernel user keyring.
#[derive(Debug)]
struct UserKeyring {
    ring: KeyRing,
    description: String,
}

fn map_err(e: KeyError) -> keyring::Error {
    match e {
        KeyError::KeyDoesNotExist | KeyError::KeyRevoked | KeyError::KeyExpired => {
            keyring::Error::NoEntry
        }
        other => keyring::Error::PlatformFailure(format!("keyutils: {other:?}").into()),
    }
}

impl UserKeyring {
    fn find(&self) -> keyring::Result<Key> {
        self.ring.search(&self.description).map_err(map_err)
    }
}

impl CredentialApi for UserKeyring {
    fn set_secret(&self, secret: &[u8]) -> keyring::Result<()> {
        let key = self
            .ring
            .add_key(&self.description, secret)
            .map_err(map_err)?;
        // Possessors only: the agent's session. Nothing for the uid (any
        // process of the user), the group or others.
        let perms = KeyPermissionsBuilder::builder()
            .posessor(Permission::ALL)
            .build();
        key.set_perms(perms).map_err(map_err)
    }

    fn get_secret(&self) -> keyring::Result<Vec<u8>> {
        self.find()?.read_to_vec().map_err(map_err)
    }

    fn delete_credential(&self) -> keyring::Result<()> {
        self.find()?.invalidate().map_err(map_err)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The keyring entry, plus what is needed to set the kernel timeout.
struct Cached {
    entry: keyring::Entry,
    ring: KeyRing,
    description: String,
}

fn entry(vault_id: &str) -> Result<Cached, String> {
    entry_named(&user(vault_id))
}

fn entry_named(user: &str) -> Result<Cached, String> {
    if disabled() {
        return Err("disabled by HUSHFS_KEYCHAIN=off".into());
    }
    // Only the keyring verified to be the agent's, and only while this
    // process still has it as its session keyring.
    let serial = crate::sys::keyring::trusted().ok_or(NO_AGENT)?;
    if crate::sys::keyring::session_serial() != Some(serial) {
        return Err(NO_AGENT.into());
    }
    let ring =
        KeyRing::from_special_id(KeyRingIdentifier::Session, false).map_err(|e| e.to_string())?;
    let description = format!("{SERVICE}:{user}");
    let cred = UserKeyring {
        ring,
        description: description.clone(),
    };
    Ok(Cached {
        entry: keyring::Entry::new_with_credential(Box::new(cred)),
        ring,
        description,
    })
}

/// Says once per process that the keychain could not be used.
pub fn warn_unavailable(why: &str) {
    // Outside the agent there is no cache by design: nothing to warn about.
    if disabled() || why == NO_AGENT || WARNED.swap(true, Ordering::Relaxed) {
        return;
    }
    eprintln!("hushfs: keychain unavailable ({why}); using the passphrase instead");
}

fn now() -> u64 {
    super::secrets::now()
}

/// Stores the data key until `ttl` from now.
pub fn store(vault_id: &str, key: &Key32, ttl: Duration) -> Result<(), String> {
    let c = entry(vault_id)?;
    let expiry = now().saturating_add(ttl.as_secs().max(1));
    let mut payload = Zeroizing::new(Vec::with_capacity(4 + 8 + 32));
    payload.extend_from_slice(MAGIC);
    payload.extend_from_slice(&expiry.to_le_bytes());
    payload.extend_from_slice(key.expose());
    c.entry.set_secret(&payload).map_err(|e| e.to_string())?;
    // The kernel drops the key at expiry even if no hushfs command runs.
    if let Ok(k) = c.ring.search(&c.description) {
        let secs = usize::try_from(ttl.as_secs().max(1)).unwrap_or(usize::MAX);
        let _ = k.set_timeout(secs);
    }
    Ok(())
}

/// The cached key, if any and not expired. An expired or malformed entry is
/// removed. Unavailability is reported once and treated as "not cached".
pub fn load(vault_id: &str) -> Option<Key32> {
    let e = match entry(vault_id) {
        Ok(c) => c.entry,
        Err(why) => {
            warn_unavailable(&why);
            return None;
        }
    };
    let payload = match e.get_secret() {
        Ok(p) => Zeroizing::new(p),
        Err(keyring::Error::NoEntry) => return None,
        Err(err) => {
            warn_unavailable(&err.to_string());
            return None;
        }
    };
    let valid = payload.len() == 4 + 8 + 32 && &payload[..4] == MAGIC;
    let expiry = valid.then(|| u64::from_le_bytes(payload[4..12].try_into().expect("8 bytes")));
    match expiry {
        Some(t) if t > now() => Key32::from_slice(&payload[12..]),
        _ => {
            let _ = e.delete_credential();
            None
        }
    }
}

/// Seconds until the cached key expires, if one is cached.
pub fn expires_in(vault_id: &str) -> Option<u64> {
    let e = entry(vault_id).ok()?.entry;
    let payload = Zeroizing::new(e.get_secret().ok()?);
    if payload.len() != 44 || &payload[..4] != MAGIC {
        return None;
    }
    let t = u64::from_le_bytes(payload[4..12].try_into().expect("8 bytes"));
    t.checked_sub(now()).filter(|s| *s > 0)
}

/// Removes the cached key. Returns whether one was there.
pub fn clear(vault_id: &str) -> Result<bool, String> {
    let e = entry(vault_id)?.entry;
    match e.delete_credential() {
        Ok(()) => Ok(true),
        Err(keyring::Error::NoEntry) => Ok(false),
        Err(err) => Err(err.to_string()),
    }
}

/// Removes every `hushfs:*` entry from the user keyring (`@u`), where
/// versions before the agent cached data keys and audit state readable by
/// every process of the uid. Returns how many were removed.
pub fn purge_user_keyring() -> usize {
    let Ok(ring) = KeyRing::from_special_id(KeyRingIdentifier::User, false) else {
        return 0;
    };
    let Ok(links) = ring.get_links(4096) else {
        return 0;
    };
    let mut n = 0;
    for node in links.iter() {
        if let linux_keyutils::LinkNode::Key(k) = node
            && k
                .metadata()
                .is_ok_and(|m| m.get_description().starts_with("hushfs:"))
            // Unlinking needs only write access to @u (ours through its
            // special id); the key goes once nothing links it.
            && ring.unlink_key(*k).is_ok()
        {
            n += 1;
        }
    }
    n
}

/// Raw entries for other parts of hushfs that keep state in the same user
/// keyring (the audit log's evolving key). Same boundary: the agent's
/// session only, no timeout, gone when the agent and its mounts are. `name` must not collide with `vault-<id>`.
pub mod named {
    use super::*;

    /// Stores `payload` under `name`, replacing what was there.
    pub fn store(name: &str, payload: &[u8]) -> Result<(), String> {
        entry_named(name)?
            .entry
            .set_secret(payload)
            .map_err(|e| e.to_string())
    }

    /// The payload under `name`; `Ok(None)` when there is none, `Err` when
    /// the keychain cannot be reached (or is disabled).
    pub fn load(name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
        match entry_named(name)?.entry.get_secret() {
            Ok(p) => Ok(Some(Zeroizing::new(p))),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Removes the entry. Returns whether one was there.
    pub fn clear(name: &str) -> Result<bool, String> {
        match entry_named(name)?.entry.delete_credential() {
            Ok(()) => Ok(true),
            Err(keyring::Error::NoEntry) => Ok(false),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Whether `HUSHFS_KEYCHAIN=off` keeps hushfs out of the keychain.
    pub fn disabled() -> bool {
        super::disabled()
    }
}
