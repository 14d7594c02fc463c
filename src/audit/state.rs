//! The chain's writing state: the next seq, its epoch, the previous mac and
//! the current evolving key. Writers keep it in memory and in the kernel
//! user keyring (through vault::keychain), so the log stays keyed while the
//! vault is locked. Never in a file.

use zeroize::Zeroizing;

use super::Anchor;
use super::chain::{self, Mac32, VaultId};
use crate::secret::Key32;
use crate::vault::keychain::named;

const MAGIC: &[u8; 4] = b"HA1\0";
const LEN: usize = 4 + 8 + 8 + 32 + 32;

/// Where the chain continues: entry `next` has epoch `epoch`, links to
/// `prev` and is MACed with `key` (K_next).
#[derive(Clone)]
pub struct State {
    pub next: u64,
    pub epoch: u64,
    pub prev: Mac32,
    pub key: Key32,
}

impl State {
    /// The last written entry, if there is one.
    pub fn anchor(&self) -> Option<Anchor> {
        self.next.checked_sub(1).map(|seq| Anchor {
            seq,
            mac: self.prev,
        })
    }
}

fn name(id: &VaultId) -> String {
    format!("audit-{}", chain::hex(id))
}

/// The keychain's state for this vault, if the keychain is usable and has one.
pub fn load(id: &VaultId) -> Option<State> {
    if named::disabled() {
        return None;
    }
    let p = named::load(&name(id)).ok()??;
    if p.len() != LEN || &p[..4] != MAGIC {
        return None;
    }
    Some(State {
        next: u64::from_le_bytes(p[4..12].try_into().ok()?),
        epoch: u64::from_le_bytes(p[12..20].try_into().ok()?),
        prev: p[20..52].try_into().ok()?,
        key: Key32::from_slice(&p[52..84])?,
    })
}

/// Replaces the keychain's state. Callers hold the log lock, so states are
/// stored in chain order.
pub fn store(id: &VaultId, s: &State) -> Result<(), String> {
    if named::disabled() {
        return Ok(());
    }
    let mut p = Zeroizing::new(Vec::with_capacity(LEN));
    p.extend_from_slice(MAGIC);
    p.extend_from_slice(&s.next.to_le_bytes());
    p.extend_from_slice(&s.epoch.to_le_bytes());
    p.extend_from_slice(&s.prev);
    p.extend_from_slice(s.key.expose());
    named::store(&name(id), &p)
}

/// Forgets the keychain's state (tests, and vaults that are deleted).
pub fn clear(id: &VaultId) -> Result<bool, String> {
    named::clear(&name(id))
}
