//! Buffers for secret bytes. They zeroize on drop, never reallocate without
//! wiping the old allocation, and implement neither `Debug` nor `Display`, so
//! a value cannot reach a log line or an error message by accident.

use std::io::{self, Read, Write};
use std::sync::Arc;

use zeroize::{Zeroize, Zeroizing};

/// An immutable secret value (or rendered file). Cheap to share between
/// concurrent readers through `Arc`.
#[derive(Clone, Default)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        SecretBytes(bytes)
    }

    /// Copies `bytes` into a new zeroizing buffer. The caller stays
    /// responsible for wiping its own copy.
    pub fn copy_from(bytes: &[u8]) -> Self {
        SecretBytes(Zeroizing::new(bytes.to_vec()))
    }

    /// The raw bytes. Callers must not copy them into a `String`, a log line
    /// or anything else that outlives the request.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn into_shared(self) -> Arc<SecretBytes> {
        Arc::new(self)
    }
}

impl PartialEq for SecretBytes {
    /// Constant-time comparison: used to detect changed values on reload.
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.len() == other.0.len() && bool::from(self.0.as_slice().ct_eq(other.0.as_slice()))
    }
}
impl Eq for SecretBytes {}

/// A growable buffer for building secret bytes (reading stdin, rendering a
/// file). Growth allocates a new zeroizing buffer and wipes the old one, so
/// no stale copy is left in freed memory.
#[derive(Default)]
pub struct SecretBuf(Zeroizing<Vec<u8>>);

impl SecretBuf {
    pub fn with_capacity(n: usize) -> Self {
        SecretBuf(Zeroizing::new(Vec::with_capacity(n)))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    fn reserve(&mut self, extra: usize) {
        let need = self.0.len() + extra;
        if need <= self.0.capacity() {
            return;
        }
        let cap = need.max(self.0.capacity() * 2).max(64);
        let mut bigger = Zeroizing::new(Vec::with_capacity(cap));
        bigger.extend_from_slice(&self.0);
        // The old Zeroizing<Vec> wipes itself when dropped here.
        self.0 = bigger;
    }

    pub fn push(&mut self, b: u8) {
        self.reserve(1);
        self.0.push(b);
    }

    pub fn extend(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.0.extend_from_slice(bytes);
    }

    /// Drops the last byte if it equals `b`.
    pub fn strip_suffix_byte(&mut self, b: u8) {
        if self.0.last() == Some(&b) {
            let last = self.0.len() - 1;
            self.0[last] = 0;
            self.0.truncate(last);
        }
    }

    pub fn truncate(&mut self, len: usize) {
        if len < self.0.len() {
            self.0[len..].zeroize();
            self.0.truncate(len);
        }
    }

    /// Reads everything from `r`, failing with `InvalidData` once more than
    /// `limit` bytes arrive (the input is drained no further).
    pub fn read_limited<R: Read>(r: &mut R, limit: usize) -> io::Result<SecretBuf> {
        let mut out = SecretBuf::with_capacity(4096.min(limit + 1));
        let mut chunk = Zeroizing::new([0u8; 8192]);
        loop {
            let n = match r.read(&mut chunk[..]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if out.len() + n > limit {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("input is larger than {limit} bytes"),
                ));
            }
            out.extend(&chunk[..n]);
        }
        Ok(out)
    }

    pub fn into_secret(self) -> SecretBytes {
        SecretBytes(self.0)
    }
}

impl Write for SecretBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.extend(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A 32-byte symmetric key (data key, key-encryption key, audit key).
#[derive(Clone)]
pub struct Key32(Zeroizing<[u8; 32]>);

impl Key32 {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Key32(Zeroizing::new(b))
    }

    pub fn random() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        crate::sys::random::fill(&mut k[..]);
        Key32(k)
    }

    /// Builds a key from a slice of exactly 32 bytes.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = b.try_into().ok()?;
        Some(Key32(Zeroizing::new(arr)))
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

/// A passphrase as typed or read: bytes in a zeroizing buffer.
pub struct Passphrase(SecretBytes);

impl Passphrase {
    pub fn new(bytes: SecretBytes) -> Self {
        Passphrase(bytes)
    }
    pub fn expose(&self) -> &[u8] {
        self.0.expose()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl PartialEq for Passphrase {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buf_grows_and_keeps_bytes() {
        let mut b = SecretBuf::with_capacity(1);
        for i in 0..10_000u32 {
            b.extend(&i.to_le_bytes());
        }
        assert_eq!(b.len(), 40_000);
        assert_eq!(&b.as_slice()[4..8], &1u32.to_le_bytes());
    }

    #[test]
    fn read_limited_rejects_oversize() {
        let data = [7u8; 100];
        assert!(SecretBuf::read_limited(&mut &data[..], 99).is_err());
        assert_eq!(
            SecretBuf::read_limited(&mut &data[..], 100).unwrap().len(),
            100
        );
    }

    #[test]
    fn strip_one_newline_only() {
        let mut b = SecretBuf::default();
        b.extend(b"abc\n\n");
        b.strip_suffix_byte(b'\n');
        assert_eq!(b.as_slice(), b"abc\n");
    }

    #[test]
    fn secret_eq_is_by_value() {
        assert!(SecretBytes::copy_from(b"x") == SecretBytes::copy_from(b"x"));
        assert!(SecretBytes::copy_from(b"x") != SecretBytes::copy_from(b"y"));
        assert!(SecretBytes::copy_from(b"x") != SecretBytes::copy_from(b"xx"));
    }
}
