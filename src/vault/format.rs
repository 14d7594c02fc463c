//! The vault file format, version 1 (docs/VAULT-FORMAT.md byte by byte).
//! Parsing never panics on arbitrary bytes and checks every length and the
//! KDF bounds before allocating anything they size.

use super::crypto::{KdfParams, NONCE_LEN, TAG_LEN};

pub const MAGIC: &[u8; 8] = b"HUSHVLT\0";
pub const VERSION: u16 = 1;
pub const KDF_ARGON2ID_V13: u8 = 1;
pub const SALT_MIN: usize = 16;
pub const SALT_MAX: usize = 64;
pub const SALT_LEN: usize = 32;
pub const ID_LEN: usize = 16;
pub const WRAPPED_LEN: usize = 32 + TAG_LEN;
pub const EXT_MAX: usize = 64 * 1024;
/// Largest body accepted: 10,000 secrets of 1 MiB would not fit, but a vault
/// that large is a mistake better caught than mmapped into every daemon.
pub const BODY_MAX: u64 = 512 * 1024 * 1024;

/// Header extension tags (TLV records bound into the body's associated data).
pub mod ext {
    /// Audit anchor: last sequence number and MAC of the audit log.
    pub const AUDIT_ANCHOR: u16 = 1;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub kdf: KdfParams,
    pub salt: Vec<u8>,
    pub vault_id: [u8; ID_LEN],
    pub generation: u64,
    /// (tag, data) records; unknown tags are preserved on rewrite.
    pub ext: Vec<(u16, Vec<u8>)>,
    pub wrap_nonce: [u8; NONCE_LEN],
    pub wrapped_key: [u8; WRAPPED_LEN],
}

/// A parsed file: header, body ciphertext and the byte ranges that serve as
/// associated data.
#[derive(Clone, Debug)]
pub struct Parsed {
    pub header: Header,
    pub body_nonce: [u8; NONCE_LEN],
    pub body_ct: Vec<u8>,
    /// magic .. vault id: bound to the wrapped key.
    pub key_aad: Vec<u8>,
    /// magic .. body length: bound to the body.
    pub body_aad: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    NotAVault,
    UnknownVersion(u16),
    Truncated(&'static str),
    Invalid(String),
    Kdf(String),
    TrailingBytes,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::NotAVault => write!(f, "not a hushfs vault (bad magic)"),
            ParseError::UnknownVersion(v) => write!(f, "unknown format version {v}"),
            ParseError::Truncated(what) => write!(f, "file ends inside the {what}"),
            ParseError::Invalid(s) => write!(f, "{s}"),
            ParseError::Kdf(s) => write!(f, "KDF parameters out of bounds: {s}"),
            ParseError::TrailingBytes => write!(f, "unexpected bytes after the body"),
        }
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        let end = self.pos.checked_add(n).ok_or(ParseError::Truncated(what))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(ParseError::Truncated(what))?;
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ParseError> {
        Ok(self
            .take(N, what)?
            .try_into()
            .expect("take returned N bytes"))
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, ParseError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, ParseError> {
        Ok(u16::from_le_bytes(self.arr(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, ParseError> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, ParseError> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
}

pub fn parse(buf: &[u8]) -> Result<Parsed, ParseError> {
    let mut c = Cursor { buf, pos: 0 };
    if c.take(MAGIC.len(), "magic")
        .map_err(|_| ParseError::NotAVault)?
        != MAGIC
    {
        return Err(ParseError::NotAVault);
    }
    let version = c.u16("version")?;
    if version != VERSION {
        return Err(ParseError::UnknownVersion(version));
    }
    let kdf_id = c.u8("KDF id")?;
    if kdf_id != KDF_ARGON2ID_V13 {
        return Err(ParseError::Invalid(format!("unknown KDF id {kdf_id}")));
    }
    let salt_len = c.u8("salt length")? as usize;
    if !(SALT_MIN..=SALT_MAX).contains(&salt_len) {
        return Err(ParseError::Invalid(format!(
            "salt length {salt_len} outside {SALT_MIN}..={SALT_MAX}"
        )));
    }
    let kdf = KdfParams {
        m_kib: c.u32("KDF memory")?,
        t: c.u32("KDF time")?,
        p: c.u32("KDF parallelism")?,
    };
    // Bounds before anything is derived or allocated from them.
    kdf.check().map_err(ParseError::Kdf)?;
    let salt = c.take(salt_len, "salt")?.to_vec();
    let vault_id = c.arr::<ID_LEN>("vault id")?;
    let key_aad_end = c.pos;

    let generation = c.u64("generation")?;
    let ext_len = c.u32("extension length")? as usize;
    if ext_len > EXT_MAX {
        return Err(ParseError::Invalid(format!(
            "extension area of {ext_len} bytes"
        )));
    }
    let ext = parse_ext(c.take(ext_len, "extensions")?)?;
    let wrap_nonce = c.arr::<NONCE_LEN>("wrap nonce")?;
    let wrapped_key = c.arr::<WRAPPED_LEN>("wrapped key")?;
    let body_nonce = c.arr::<NONCE_LEN>("body nonce")?;
    let body_len = c.u64("body length")?;
    if body_len < TAG_LEN as u64 || body_len > BODY_MAX {
        return Err(ParseError::Invalid(format!(
            "body length {body_len} out of range"
        )));
    }
    let body_aad_end = c.pos;
    let remaining = (buf.len() - c.pos) as u64;
    if remaining < body_len {
        return Err(ParseError::Truncated("body"));
    }
    if remaining > body_len {
        return Err(ParseError::TrailingBytes);
    }
    let body_ct = c.take(body_len as usize, "body")?.to_vec();

    Ok(Parsed {
        header: Header {
            kdf,
            salt,
            vault_id,
            generation,
            ext,
            wrap_nonce,
            wrapped_key,
        },
        body_nonce,
        body_ct,
        key_aad: buf[..key_aad_end].to_vec(),
        body_aad: buf[..body_aad_end].to_vec(),
    })
}

fn parse_ext(mut b: &[u8]) -> Result<Vec<(u16, Vec<u8>)>, ParseError> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let mut c = Cursor { buf: b, pos: 0 };
        let tag = c.u16("extension tag")?;
        let len = c.u16("extension length")? as usize;
        let data = c.take(len, "extension data")?.to_vec();
        if out.iter().any(|(t, _)| *t == tag) {
            return Err(ParseError::Invalid(format!(
                "extension {tag} appears twice"
            )));
        }
        out.push((tag, data));
        b = &b[c.pos..];
    }
    Ok(out)
}

impl Header {
    /// The bytes bound to the wrapped key: magic through vault id.
    pub fn key_aad(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64 + self.salt.len());
        v.extend_from_slice(MAGIC);
        v.extend_from_slice(&VERSION.to_le_bytes());
        v.push(KDF_ARGON2ID_V13);
        v.push(self.salt.len() as u8);
        v.extend_from_slice(&self.kdf.m_kib.to_le_bytes());
        v.extend_from_slice(&self.kdf.t.to_le_bytes());
        v.extend_from_slice(&self.kdf.p.to_le_bytes());
        v.extend_from_slice(&self.salt);
        v.extend_from_slice(&self.vault_id);
        v
    }

    /// The full header up to and including the body length: the body's
    /// associated data.
    pub fn encode(&self, body_nonce: &[u8; NONCE_LEN], body_len: u64) -> Vec<u8> {
        let mut v = self.key_aad();
        v.extend_from_slice(&self.generation.to_le_bytes());
        let ext: Vec<u8> = self
            .ext
            .iter()
            .flat_map(|(t, d)| {
                let mut r = t.to_le_bytes().to_vec();
                r.extend_from_slice(&(d.len() as u16).to_le_bytes());
                r.extend_from_slice(d);
                r
            })
            .collect();
        v.extend_from_slice(&(ext.len() as u32).to_le_bytes());
        v.extend_from_slice(&ext);
        v.extend_from_slice(&self.wrap_nonce);
        v.extend_from_slice(&self.wrapped_key);
        v.extend_from_slice(body_nonce);
        v.extend_from_slice(&body_len.to_le_bytes());
        v
    }

    pub fn ext(&self, tag: u16) -> Option<&[u8]> {
        self.ext
            .iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, d)| d.as_slice())
    }

    pub fn set_ext(&mut self, tag: u16, data: Vec<u8>) {
        assert!(data.len() <= u16::MAX as usize, "extension too large");
        match self.ext.iter_mut().find(|(t, _)| *t == tag) {
            Some((_, d)) => *d = data,
            None => self.ext.push((tag, data)),
        }
    }

    pub fn id_hex(&self) -> String {
        self.vault_id.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Header {
        Header {
            kdf: KdfParams {
                m_kib: KdfParams::MIN_M_KIB,
                t: 2,
                p: 1,
            },
            salt: vec![7; SALT_LEN],
            vault_id: [9; ID_LEN],
            generation: 42,
            ext: vec![(ext::AUDIT_ANCHOR, vec![1, 2, 3])],
            wrap_nonce: [1; NONCE_LEN],
            wrapped_key: [2; WRAPPED_LEN],
        }
    }

    fn file(h: &Header, body: &[u8]) -> Vec<u8> {
        let mut f = h.encode(&[3; NONCE_LEN], body.len() as u64);
        f.extend_from_slice(body);
        f
    }

    #[test]
    fn round_trip() {
        let h = sample();
        let f = file(&h, &[5; 40]);
        let p = parse(&f).unwrap();
        assert_eq!(p.header, h);
        assert_eq!(p.body_ct, vec![5; 40]);
        assert_eq!(p.key_aad, h.key_aad());
        assert_eq!(p.body_aad.len(), f.len() - 40);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let f = file(&sample(), &[5; 40]);
        for n in 0..f.len() {
            assert!(parse(&f[..n]).is_err(), "prefix of {n} bytes parsed");
        }
        let mut longer = f.clone();
        longer.push(0);
        assert_eq!(parse(&longer).unwrap_err(), ParseError::TrailingBytes);
    }

    #[test]
    fn kdf_bounds_checked_before_allocation() {
        let mut h = sample();
        h.kdf.m_kib = u32::MAX;
        let f = file(&h, &[5; 40]);
        assert!(matches!(parse(&f), Err(ParseError::Kdf(_))));
    }

    #[test]
    fn other_version_is_reported() {
        let mut f = file(&sample(), &[5; 40]);
        f[8] = 2;
        assert_eq!(parse(&f).unwrap_err(), ParseError::UnknownVersion(2));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn never_panics_on_arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(&b);
        }

        #[test]
        fn never_panics_on_mutated_headers(
            pos in 0usize..200, val in any::<u8>(), cut in 0usize..250
        ) {
            let mut f = file(&sample(), &[5; 40]);
            let p = pos % f.len();
            f[p] = val;
            f.truncate(cut.max(1).min(f.len()));
            let _ = parse(&f);
        }
    }
}
