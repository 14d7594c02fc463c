//! The vault's cryptography: Argon2id turns the passphrase into a
//! key-encryption key, XChaCha20-Poly1305 wraps the data key and seals the
//! body. Nonces are fresh random 24-byte values on every seal, so no nonce
//! state exists that a restored old file could roll back.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::secret::{Key32, Passphrase};

pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;

/// Argon2id cost parameters as stored in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    /// RFC 9106's second recommended option: 64 MiB, t=3, p=4.
    pub const DEFAULT: KdfParams = KdfParams {
        m_kib: 64 * 1024,
        t: 3,
        p: 4,
    };
    /// The floor (OWASP's minimum for Argon2id): 19 MiB, t=2.
    pub const MIN_M_KIB: u32 = 19 * 1024;
    pub const MIN_T: u32 = 2;
    /// Ceilings that keep a hostile header from exhausting memory or time.
    pub const MAX_M_KIB: u32 = 4 * 1024 * 1024;
    pub const MAX_T: u32 = 16;
    pub const MAX_P: u32 = 16;

    /// Checks the bounds before anything is allocated. Returns a short
    /// description of the first violation.
    pub fn check(&self) -> Result<(), String> {
        if self.m_kib > Self::MAX_M_KIB {
            return Err(format!("memory {} KiB exceeds 4 GiB", self.m_kib));
        }
        if self.m_kib < Self::MIN_M_KIB {
            return Err(format!("memory {} KiB is below 19 MiB", self.m_kib));
        }
        if self.t > Self::MAX_T {
            return Err(format!("time cost {} exceeds {}", self.t, Self::MAX_T));
        }
        if self.t < Self::MIN_T {
            return Err(format!("time cost {} is below {}", self.t, Self::MIN_T));
        }
        if !(1..=Self::MAX_P).contains(&self.p) {
            return Err(format!("parallelism {} is outside 1..=16", self.p));
        }
        Ok(())
    }
}

/// Derives the key-encryption key. `params` must have passed `check`.
pub fn derive_kek(pass: &Passphrase, salt: &[u8], params: KdfParams) -> Result<Key32, String> {
    params.check()?;
    let p = Params::new(params.m_kib, params.t, params.p, Some(32)).map_err(|e| e.to_string())?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, p);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(pass.expose(), salt, &mut out[..])
        .map_err(|e| e.to_string())?;
    Ok(Key32::from_bytes(*out))
}

fn cipher(key: &Key32) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.expose().into())
}

/// Encrypts `plaintext` under `key` with a fresh random nonce. Returns the
/// nonce and ciphertext||tag.
pub fn seal(key: &Key32, aad: &[u8], plaintext: &[u8]) -> ([u8; NONCE_LEN], Vec<u8>) {
    let nonce: [u8; NONCE_LEN] = crate::sys::random::array();
    (nonce, seal_with_nonce(key, &nonce, aad, plaintext))
}

/// Encrypts with the given nonce; callers pass a fresh random one.
pub fn seal_with_nonce(key: &Key32, nonce: &[u8; NONCE_LEN], aad: &[u8], pt: &[u8]) -> Vec<u8> {
    // Capacity for the tag up front: a reallocation would leave a copy of
    // the plaintext behind in freed memory.
    let mut buf = Vec::with_capacity(pt.len() + TAG_LEN);
    buf.extend_from_slice(pt);
    cipher(key)
        .encrypt_in_place(&XNonce::from(*nonce), aad, &mut buf)
        .expect("encryption of an in-memory buffer with room for the tag cannot fail");
    buf
}

/// Decrypts and authenticates; `None` on any mismatch (wrong key, altered
/// ciphertext, nonce or associated data).
pub fn open(
    key: &Key32,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ct: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(ct.to_vec());
    cipher(key)
        .decrypt_in_place(&XNonce::from(*nonce), aad, &mut *buf)
        .ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretBytes;

    #[test]
    fn bounds() {
        assert!(KdfParams::DEFAULT.check().is_ok());
        let ok = KdfParams {
            m_kib: KdfParams::MIN_M_KIB,
            t: 2,
            p: 1,
        };
        assert!(ok.check().is_ok());
        for bad in [
            KdfParams {
                m_kib: KdfParams::MIN_M_KIB - 1,
                ..ok
            },
            KdfParams {
                m_kib: KdfParams::MAX_M_KIB + 1,
                ..ok
            },
            KdfParams { t: 1, ..ok },
            KdfParams { t: 17, ..ok },
            KdfParams { p: 0, ..ok },
            KdfParams { p: 17, ..ok },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let k = Key32::random();
        let (n, ct) = seal(&k, b"aad", b"hello");
        assert_eq!(&open(&k, &n, b"aad", &ct).unwrap()[..], b"hello");
        assert!(open(&k, &n, b"aaD", &ct).is_none());
        let mut bad = ct.clone();
        bad[0] ^= 1;
        assert!(open(&k, &n, b"aad", &bad).is_none());
        assert!(open(&Key32::random(), &n, b"aad", &ct).is_none());
    }

    #[test]
    fn kdf_depends_on_everything() {
        let p = KdfParams {
            m_kib: KdfParams::MIN_M_KIB,
            t: 2,
            p: 1,
        };
        let pass = Passphrase::new(SecretBytes::copy_from(b"pw"));
        let a = derive_kek(&pass, &[1; 16], p).unwrap();
        let b = derive_kek(&pass, &[2; 16], p).unwrap();
        let c = derive_kek(&pass, &[1; 16], KdfParams { t: 3, ..p }).unwrap();
        assert_ne!(a.expose(), b.expose());
        assert_ne!(a.expose(), c.expose());
        assert_eq!(a.expose(), derive_kek(&pass, &[1; 16], p).unwrap().expose());
    }
}
