//! Caches the data key in the OS keychain so people unlock once instead of
//! typing the passphrase for every command.
//!
//! On Linux the store is the kernel keyutils *user* keyring, reached through
//! the keyring crate's `Entry` API with a small credential of our own. The
//! crate's built-in keyutils store adds keys to the session keyring and links
//! them into the persistent keyring; without a login session (a headless
//! shell, CI, a service) that link fails with EACCES and nothing can be
//! cached. The user keyring works headless, lasts until reboot (or until the
//! uid's last process exits), and is readable by the same uid only, which is
//! exactly the boundary the threat model assigns to the cache. The payload
//! carries its expiry and the kernel key gets the same timeout.

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

/// Set `HUSHFS_KEYCHAIN=off` to never touch the keychain (every command then
/// asks for the passphrase).
fn disabled() -> bool {
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
        // Owner-uid access regardless of possession (a later command may run
        // in another session); nothing for group or others.
        let perms = KeyPermissionsBuilder::builder()
            .posessor(Permission::ALL)
            .user(Permission::ALL)
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
    let ring =
        KeyRing::from_special_id(KeyRingIdentifier::User, false).map_err(|e| e.to_string())?;
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
    if disabled() || WARNED.swap(true, Ordering::Relaxed) {
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

/// Raw entries for other parts of hushfs that keep state in the same user
/// keyring (the audit log's evolving key). Same boundary: same uid only, no
/// timeout, gone at reboot. `name` must not collide with `vault-<id>`.
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
