//! The encrypted vault: format, crypto, file store, keychain cache and the
//! ways to obtain the key. Knows nothing of FUSE or rendering.

pub mod crypto;
pub mod format;
pub mod keychain;
pub mod names;
pub mod secrets;
pub mod store;
pub mod unlock;

use std::path::{Path, PathBuf};

use crypto::{KdfParams, NONCE_LEN};
use format::{Header, ParseError, Parsed};
pub use secrets::{Entry, MAX_VALUE, Project, ProjectMeta, Secrets};

use crate::error::{Error, Result};
use crate::secret::{Key32, Passphrase};

/// A vault file as read from disk, still encrypted.
pub struct Sealed {
    pub path: PathBuf,
    pub parsed: Parsed,
}

impl Sealed {
    pub fn read(path: &Path) -> Result<Sealed> {
        let bytes = store::read(path)?;
        Self::from_bytes(path, &bytes)
    }

    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Sealed> {
        let parsed = format::parse(bytes).map_err(|e| match e {
            ParseError::UnknownVersion(version) => Error::UnknownVersion {
                path: path.into(),
                version,
            },
            e => Error::damaged(path, e.to_string()),
        })?;
        Ok(Sealed {
            path: path.into(),
            parsed,
        })
    }

    pub fn header(&self) -> &Header {
        &self.parsed.header
    }

    /// Derives the key-encryption key and unwraps the data key.
    pub fn unwrap_key(&self, pass: &Passphrase) -> Result<Key32> {
        let h = &self.parsed.header;
        let kek =
            crypto::derive_kek(pass, &h.salt, h.kdf).map_err(|e| Error::damaged(&self.path, e))?;
        let key = crypto::open(&kek, &h.wrap_nonce, &self.parsed.key_aad, &h.wrapped_key)
            .ok_or_else(|| Error::WrongPassphrase(self.path.clone()))?;
        Key32::from_slice(&key)
            .ok_or_else(|| Error::damaged(&self.path, "wrapped key has the wrong size"))
    }

    /// Decrypts and parses the body with the data key.
    pub fn open(&self, key: &Key32) -> Result<Secrets> {
        let pt = crypto::open(
            key,
            &self.parsed.body_nonce,
            &self.parsed.body_aad,
            &self.parsed.body_ct,
        )
        .ok_or_else(|| {
            Error::damaged(
                &self.path,
                "the body does not authenticate under this vault's key",
            )
        })?;
        Secrets::decode(&pt).map_err(|e| Error::damaged(&self.path, e))
    }
}

/// An unlocked vault: header, data key and decrypted contents.
pub struct Vault {
    pub path: PathBuf,
    pub header: Header,
    key: Key32,
    pub secrets: Secrets,
}

impl Vault {
    pub fn from_parts(sealed: Sealed, key: Key32, secrets: Secrets) -> Vault {
        Vault {
            path: sealed.path,
            header: sealed.parsed.header,
            key,
            secrets,
        }
    }

    pub fn key(&self) -> &Key32 {
        &self.key
    }

    pub fn id_hex(&self) -> String {
        self.header.id_hex()
    }

    /// A new, empty vault in memory (not yet written).
    pub fn new(path: &Path, pass: &Passphrase, kdf: KdfParams) -> Result<Vault> {
        kdf.check().map_err(Error::usage)?;
        let mut header = Header {
            kdf,
            salt: crate::sys::random::array::<{ format::SALT_LEN }>().to_vec(),
            vault_id: crate::sys::random::array(),
            generation: 0,
            ext: Vec::new(),
            wrap_nonce: [0; NONCE_LEN],
            wrapped_key: [0; format::WRAPPED_LEN],
        };
        let key = Key32::random();
        wrap_into(&mut header, pass, &key)?;
        Ok(Vault {
            path: path.into(),
            header,
            key,
            secrets: Secrets::default(),
        })
    }

    /// Serialises with a fresh body nonce and the next generation.
    pub fn encode(&mut self) -> Vec<u8> {
        self.header.generation += 1;
        let body = self.secrets.encode();
        let body_nonce: [u8; NONCE_LEN] = crate::sys::random::array();
        let ct_len = (body.len() + crypto::TAG_LEN) as u64;
        let mut file = self.header.encode(&body_nonce, ct_len);
        let ct = crypto::seal_with_nonce(&self.key, &body_nonce, &file, body.as_slice());
        file.extend_from_slice(&ct);
        file
    }

    /// Writes the vault atomically. The caller holds the `WriteLock`.
    /// The header takes the newest audit anchor this process knows (see
    /// `audit::anchor_for_save`), so the authenticated vault file records
    /// how far the audit log had reached.
    pub fn save(&mut self) -> Result<()> {
        store::ensure_dir(&self.path)?;
        store::remove_stale_temps(&self.path);
        if let Some(anchor) = crate::audit::anchor_for_save(&self.header) {
            self.header.set_ext(format::ext::AUDIT_ANCHOR, anchor);
        }
        let bytes = self.encode();
        store::write_atomic(&self.path, &bytes)
    }

    /// Re-wraps the same data key under a new passphrase (and optionally new
    /// KDF parameters and a new salt).
    pub fn rewrap(&mut self, new_pass: &Passphrase, kdf: Option<KdfParams>) -> Result<()> {
        if let Some(k) = kdf {
            k.check().map_err(Error::usage)?;
            self.header.kdf = k;
        }
        self.header.salt = crate::sys::random::array::<{ format::SALT_LEN }>().to_vec();
        let key = self.key.clone();
        wrap_into(&mut self.header, new_pass, &key)
    }

    /// Replaces the data key with a fresh one; the body is re-encrypted on
    /// the next save.
    pub fn rekey(&mut self, pass: &Passphrase) -> Result<()> {
        let key = Key32::random();
        wrap_into(&mut self.header, pass, &key)?;
        self.key = key;
        Ok(())
    }
}

fn wrap_into(header: &mut Header, pass: &Passphrase, key: &Key32) -> Result<()> {
    let kek = crypto::derive_kek(pass, &header.salt, header.kdf).map_err(Error::usage)?;
    let (nonce, wrapped) = crypto::seal(&kek, &header.key_aad(), key.expose());
    header.wrap_nonce = nonce;
    header.wrapped_key = wrapped.try_into().expect("32-byte key + 16-byte tag");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretBytes;

    pub fn fast() -> KdfParams {
        KdfParams {
            m_kib: KdfParams::MIN_M_KIB,
            t: 2,
            p: 1,
        }
    }

    fn pass(s: &str) -> Passphrase {
        Passphrase::new(SecretBytes::copy_from(s.as_bytes()))
    }

    fn sample() -> (Vec<u8>, Vault) {
        let mut v = Vault::new(Path::new("/nonexistent/v"), &pass("pw"), fast()).unwrap();
        v.secrets
            .set("p", "A", SecretBytes::copy_from(b"alpha"))
            .unwrap();
        (v.encode(), v)
    }

    #[test]
    fn open_with_passphrase() {
        let (bytes, _) = sample();
        let s = Sealed::from_bytes(Path::new("v"), &bytes).unwrap();
        let key = s.unwrap_key(&pass("pw")).unwrap();
        assert_eq!(
            s.open(&key).unwrap().get("p", "A").unwrap().value.expose(),
            b"alpha"
        );
        assert!(matches!(
            s.unwrap_key(&pass("pW")),
            Err(Error::WrongPassphrase(_))
        ));
    }

    #[test]
    fn every_flipped_byte_fails_cleanly() {
        let (bytes, v) = sample();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            let r = Sealed::from_bytes(Path::new("v"), &b).and_then(|s| {
                // Both the passphrase path and the cached-key path must fail.
                let by_key = s.open(v.key());
                let by_pass = s.unwrap_key(&pass("pw")).and_then(|k| s.open(&k));
                match (by_key, by_pass) {
                    (Err(_), Err(e)) => Err(e),
                    _ => Ok(()),
                }
            });
            assert!(r.is_err(), "flipping byte {i} went unnoticed");
        }
    }

    #[test]
    fn rewrap_keeps_key_rekey_changes_it() {
        let (_, mut v) = sample();
        let old = v.key().clone();
        v.rewrap(&pass("new"), None).unwrap();
        assert_eq!(v.key().expose(), old.expose());
        let bytes = v.encode();
        let s = Sealed::from_bytes(Path::new("v"), &bytes).unwrap();
        assert!(s.unwrap_key(&pass("pw")).is_err());
        s.open(&s.unwrap_key(&pass("new")).unwrap()).unwrap();
        v.rekey(&pass("new")).unwrap();
        assert_ne!(v.key().expose(), old.expose());
        let bytes = v.encode();
        let s = Sealed::from_bytes(Path::new("v"), &bytes).unwrap();
        assert!(s.open(&old).is_err());
        s.open(&s.unwrap_key(&pass("new")).unwrap()).unwrap();
    }

    #[test]
    fn thousand_saves_thousand_nonces() {
        let (_, mut v) = sample();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let bytes = v.encode();
            let p = format::parse(&bytes).unwrap();
            assert!(seen.insert(p.body_nonce), "nonce repeated");
        }
    }
}
