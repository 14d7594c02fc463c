//! The chain itself: canonical entry bytes, MACs and the key schedule.
//! Pure functions, no I/O. docs/AUDIT.md describes the same thing in prose.
//!
//! Key schedule, per epoch (an epoch starts at seq 0 and again at every
//! `rekey`, because the data key it derives from changes):
//!
//! ```text
//! root_s  = HMAC(data_key, "hushfs audit v1" || vault_id || s as u64 LE)   s = epoch start seq
//! K_s     = root_s
//! K_{i+1} = HMAC(K_i, "evolve")            the old key is dropped (zeroized)
//! mac_i   = HMAC(K_i, canonical_i)         canonical_i = the line without its mac field
//! prev_0  = HMAC(K_0, "genesis" || vault_id)
//! prev_i  = mac_{i-1}
//! ```
//!
//! An epoch start after a rekey carries a *bridge*: the previous epoch's
//! start and root, sealed under a key derived from the new root. Whoever
//! holds the current data key can walk back to every earlier root; whoever
//! holds only K_n can derive neither earlier keys nor other epochs' roots.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use super::Event;
use crate::secret::Key32;
use crate::vault::crypto;

pub type Mac32 = [u8; 32];
pub type VaultId = [u8; 16];

const ROOT_LABEL: &[u8] = b"hushfs audit v1";
const EVOLVE_LABEL: &[u8] = b"evolve";
const GENESIS_LABEL: &[u8] = b"genesis";
const BRIDGE_LABEL: &[u8] = b"bridge";
const BRIDGE_AAD: &[u8] = b"hushfs audit bridge v1";

/// `,"mac":"<64 hex>"}`: the fixed tail of every line (without the newline).
pub const MAC_TAIL_LEN: usize = 8 + 64 + 2;

fn hmac(key: &[u8], parts: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    let mut out = m.finalize().into_bytes();
    let mut arr = Zeroizing::new([0u8; 32]);
    arr.copy_from_slice(&out);
    out.as_mut_slice().zeroize();
    arr
}

/// The first key of the epoch that starts at `start`.
pub fn epoch_root(data_key: &Key32, vault_id: &VaultId, start: u64) -> Key32 {
    let k = hmac(
        data_key.expose(),
        &[ROOT_LABEL, vault_id, &start.to_le_bytes()],
    );
    Key32::from_bytes(*k)
}

/// K_{i+1} from K_i. The caller drops K_i (Key32 zeroizes on drop).
pub fn evolve(k: &Key32) -> Key32 {
    Key32::from_bytes(*hmac(k.expose(), &[EVOLVE_LABEL]))
}

/// Applies `evolve` `n` times.
pub fn evolve_n(k: &Key32, n: u64) -> Key32 {
    let mut k = k.clone();
    for _ in 0..n {
        k = evolve(&k);
    }
    k
}

pub fn entry_mac(k: &Key32, canonical: &[u8]) -> Mac32 {
    *hmac(k.expose(), &[canonical])
}

/// prev of entry 0: binds the chain to the vault id.
pub fn genesis_prev(root0: &Key32, vault_id: &VaultId) -> Mac32 {
    *hmac(root0.expose(), &[GENESIS_LABEL, vault_id])
}

fn bridge_key(new_root: &Key32) -> Key32 {
    Key32::from_bytes(*hmac(new_root.expose(), &[BRIDGE_LABEL]))
}

fn bridge_aad(vault_id: &VaultId, start: u64) -> Vec<u8> {
    let mut aad = BRIDGE_AAD.to_vec();
    aad.extend_from_slice(vault_id);
    aad.extend_from_slice(&start.to_le_bytes());
    aad
}

/// Seals (previous epoch start, previous root) under the new epoch's root.
pub fn seal_bridge(
    new_root: &Key32,
    vault_id: &VaultId,
    new_start: u64,
    prev_start: u64,
    prev_root: &Key32,
) -> String {
    let mut pt = Zeroizing::new([0u8; 40]);
    pt[..8].copy_from_slice(&prev_start.to_le_bytes());
    pt[8..].copy_from_slice(prev_root.expose());
    let (nonce, ct) = crypto::seal(
        &bridge_key(new_root),
        &bridge_aad(vault_id, new_start),
        &pt[..],
    );
    let mut b = nonce.to_vec();
    b.extend_from_slice(&ct);
    hex(&b)
}

/// Opens a bridge: the previous epoch's start seq and root.
pub fn open_bridge(
    new_root: &Key32,
    vault_id: &VaultId,
    new_start: u64,
    bridge: &str,
) -> Option<(u64, Key32)> {
    let b = unhex(bridge)?;
    if b.len() != crypto::NONCE_LEN + 40 + crypto::TAG_LEN {
        return None;
    }
    let nonce: [u8; crypto::NONCE_LEN] = b[..crypto::NONCE_LEN].try_into().ok()?;
    let pt = crypto::open(
        &bridge_key(new_root),
        &nonce,
        &bridge_aad(vault_id, new_start),
        &b[crypto::NONCE_LEN..],
    )?;
    let start = u64::from_le_bytes(pt[..8].try_into().ok()?);
    Some((start, Key32::from_slice(&pt[8..])?))
}

/// Marks the entry that follows a torn line left by an interrupted write:
/// the torn bytes stay in the file, bound to the chain by their hash.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Torn {
    pub bytes: u64,
    pub sha256: String,
}

impl Torn {
    pub fn of(line: &[u8]) -> Torn {
        Torn {
            bytes: line.len() as u64,
            sha256: hex(&Sha256::digest(line)),
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One line of the log, minus its mac. Field order is the canonical order:
/// the MAC covers exactly the bytes serde_json writes for this struct.
/// `Event`'s field names must not collide with these.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub seq: u64,
    /// RFC 3339 UTC with microseconds (fixed width, so it sorts as text).
    pub time: String,
    /// Seq of the first entry of this entry's epoch (omitted when 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    #[serde(flatten)]
    pub ev: Event,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torn: Option<Torn>,
    /// Hex mac of the previous entry (or the genesis value).
    pub prev: String,
}

impl Entry {
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an entry always serialises")
    }

    /// Whether this entry starts an epoch (seq 0 or after a rekey).
    pub fn starts_epoch(&self) -> bool {
        self.epoch == self.seq
    }
}

/// The full line (with newline) for `canonical` and its mac.
pub fn seal_line(canonical: &[u8], mac: &Mac32) -> Vec<u8> {
    debug_assert_eq!(canonical.last(), Some(&b'}'));
    let mut line = Vec::with_capacity(canonical.len() + MAC_TAIL_LEN + 1);
    line.extend_from_slice(&canonical[..canonical.len() - 1]);
    line.extend_from_slice(b",\"mac\":\"");
    line.extend_from_slice(hex(mac).as_bytes());
    line.extend_from_slice(b"\"}\n");
    line
}

/// Splits a line (without newline) into its canonical bytes and mac.
/// `None` when the line does not end in the fixed mac tail.
pub fn split_line(line: &[u8]) -> Option<(Vec<u8>, Mac32)> {
    if line.len() < MAC_TAIL_LEN + 2 || !line.ends_with(b"\"}") {
        return None;
    }
    let cut = line.len() - MAC_TAIL_LEN;
    if &line[cut..cut + 8] != b",\"mac\":\"" {
        return None;
    }
    let mac = unhex32(std::str::from_utf8(&line[cut + 8..cut + 8 + 64]).ok()?)?;
    let mut canonical = line[..cut].to_vec();
    canonical.push(b'}');
    Some((canonical, mac))
}

/// A line parsed into its entry, canonical bytes and mac. The entry is
/// parsed from the canonical bytes, so nothing outside the MAC is read.
pub struct Parsed {
    pub entry: Entry,
    pub canonical: Vec<u8>,
    pub mac: Mac32,
}

pub fn parse_line(line: &[u8]) -> Option<Parsed> {
    let (canonical, mac) = split_line(line)?;
    let entry: Entry = serde_json::from_slice(&canonical).ok()?;
    Some(Parsed {
        entry,
        canonical,
        mac,
    })
}

pub fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(DIGITS[(x >> 4) as usize] as char);
        s.push(DIGITS[(x & 15) as usize] as char);
    }
    s
}

fn nibble(c: u8) -> Option<u8> {
    // Lowercase only: one spelling per value keeps the bytes canonical.
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// 64 hex digits to 32 bytes, without allocating (once per entry).
pub fn unhex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, p) in out.iter_mut().zip(b.chunks_exact(2)) {
        *o = nibble(p[0])? << 4 | nibble(p[1])?;
    }
    Some(out)
}

/// Constant-time comparison of two macs or keys.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: VaultId = [7; 16];

    fn entry(seq: u64) -> Entry {
        Entry {
            seq,
            time: "2026-01-01T00:00:00.000000Z".into(),
            epoch: 0,
            ev: Event {
                event: "open".into(),
                decision: Some("deny".into()),
                file: Some(".env".into()),
                pid: Some(42),
                ..Event::default()
            },
            bridge: None,
            torn: None,
            prev: hex(&[1; 32]),
        }
    }

    #[test]
    fn line_round_trip() {
        let e = entry(3);
        let c = e.canonical();
        let mac = entry_mac(&Key32::from_bytes([9; 32]), &c);
        let line = seal_line(&c, &mac);
        assert_eq!(*line.last().unwrap(), b'\n');
        let p = parse_line(&line[..line.len() - 1]).unwrap();
        assert_eq!(p.entry, e);
        assert_eq!(p.canonical, c);
        assert_eq!(p.mac, mac);
        // The line is plain JSON for jq and friends.
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["mac"], hex(&mac));
        assert_eq!(v["seq"], 3);
        assert_eq!(v["file"], ".env");
    }

    #[test]
    fn field_order_is_fixed() {
        let c = String::from_utf8(entry(1).canonical()).unwrap();
        assert!(c.starts_with("{\"seq\":1,\"time\":\"2026-"), "{c}");
        assert!(
            c.ends_with(&format!(",\"prev\":\"{}\"}}", hex(&[1; 32]))),
            "{c}"
        );
    }

    #[test]
    fn keys_differ_per_vault_epoch_and_step() {
        let dk = Key32::from_bytes([1; 32]);
        let r0 = epoch_root(&dk, &ID, 0);
        assert_ne!(r0.expose(), dk.expose(), "K_0 is never the data key");
        assert_ne!(r0.expose(), epoch_root(&dk, &[8; 16], 0).expose());
        assert_ne!(r0.expose(), epoch_root(&dk, &ID, 5).expose());
        let k1 = evolve(&r0);
        assert_ne!(k1.expose(), r0.expose());
        assert_eq!(evolve_n(&r0, 3).expose(), evolve(&evolve(&k1)).expose());
        assert_ne!(genesis_prev(&r0, &ID), genesis_prev(&r0, &[8; 16]));
    }

    #[test]
    fn bridge_round_trip_and_binding() {
        let old = Key32::from_bytes([2; 32]);
        let new = Key32::from_bytes([3; 32]);
        let b = seal_bridge(&new, &ID, 10, 0, &old);
        let (s, k) = open_bridge(&new, &ID, 10, &b).unwrap();
        assert_eq!(s, 0);
        assert_eq!(k.expose(), old.expose());
        assert!(open_bridge(&old, &ID, 10, &b).is_none(), "wrong root");
        assert!(
            open_bridge(&new, &ID, 11, &b).is_none(),
            "moved to another seq"
        );
        assert!(
            open_bridge(&new, &[8; 16], 10, &b).is_none(),
            "another vault"
        );
    }

    #[test]
    fn split_rejects_malformed_tails() {
        assert!(split_line(b"").is_none());
        assert!(split_line(b"{\"seq\":1}").is_none());
        let c = entry(1).canonical();
        let line = seal_line(&c, &[0xab; 32]);
        let body = &line[..line.len() - 1];
        assert!(split_line(body).is_some());
        let mut upper = body.to_vec();
        let n = upper.len();
        upper[n - 3] = b'A';
        assert!(
            split_line(&upper).is_none(),
            "uppercase hex is not canonical"
        );
        assert!(split_line(&body[..body.len() - 1]).is_none());
    }

    proptest! {
        /// Mirrors fuzz/fuzz_targets/audit_line.rs.
        #[test]
        fn parse_never_panics_and_reseals(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Some(p) = parse_line(&b) {
                let line = seal_line(&p.canonical, &p.mac);
                prop_assert_eq!(&line[..line.len() - 1], &b[..]);
            }
        }

        #[test]
        fn mutated_lines_never_panic(pos in 0usize..400, val in any::<u8>(), cut in 0usize..400) {
            let c = entry(3).canonical();
            let mut b = seal_line(&c, &[1; 32]);
            let p = pos % b.len();
            b[p] = val;
            b.truncate(cut.min(b.len()));
            if let Some(p) = parse_line(&b) {
                let line = seal_line(&p.canonical, &p.mac);
                prop_assert_eq!(&line[..line.len() - 1], &b[..]);
            }
            let f = crate::audit::query::Filter { denied: true, pid: Some(42), ..Default::default() };
            let _ = f.matcher().matches(&b);
        }

        #[test]
        fn any_flipped_byte_changes_the_mac_input(pos in 0usize..10_000, bit in 0u8..8) {
            let k = Key32::from_bytes([5; 32]);
            let c = entry(7).canonical();
            let line = seal_line(&c, &entry_mac(&k, &c));
            let body = &line[..line.len() - 1];
            let mut b = body.to_vec();
            let p = pos % b.len();
            b[p] ^= 1 << bit;
            // Either the line no longer parses, or its mac no longer matches.
            if let Some(p) = parse_line(&b) {
                prop_assert!(!ct_eq(&entry_mac(&k, &p.canonical), &p.mac));
            }
        }

        #[test]
        fn hex_round_trip(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(unhex(&hex(&b)).unwrap(), b);
        }
    }
}
