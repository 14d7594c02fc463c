//! `demo`: a narrated tour on a throwaway vault in a temp directory.

use crate::error::{Error, Result};
use crate::secret::{Passphrase, SecretBytes};
use crate::vault::crypto::KdfParams;
use crate::vault::{Sealed, Vault, store};

fn say(s: &str) -> Result<()> {
    super::out(&format!("{s}\n"))
}

pub fn demo() -> Result<i32> {
    let dir = tempfile::Builder::new()
        .prefix("hushfs-demo-")
        .tempdir()
        .map_err(|e| Error::Other(format!("cannot create a temp directory: {e}")))?;
    let path = dir.path().join("vault");
    say(
        "hushfs demo: a throwaway vault in a temp directory; nothing touches your real vault or keychain.\n",
    )?;

    let pass = Passphrase::new(SecretBytes::copy_from(b"correct horse battery staple"));
    // Fast KDF parameters (the floor) so the tour does not wait; real vaults
    // default to 64 MiB, t=3, p=4.
    let kdf = KdfParams {
        m_kib: KdfParams::MIN_M_KIB,
        t: 2,
        p: 1,
    };
    let mut v = Vault::new(&path, &pass, kdf)?;
    for (name, value) in [
        ("DATABASE_URL", &b"postgres://app:s3cr3t-pw@db:5432/app"[..]),
        ("STRIPE_KEY", b"sk_test_4eC39HqLyjWDarjtT1zdp7dc"),
        ("SESSION_SECRET", b"a long random string\nwith a newline"),
    ] {
        v.secrets.set("shop", name, SecretBytes::copy_from(value))?;
    }
    {
        let _lock = store::WriteLock::acquire(&path)?;
        v.save()?;
    }
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    say(&format!(
        "1. Stored 3 secrets of project `shop` in {} ({size} bytes, Argon2id + XChaCha20-Poly1305).",
        path.display()
    ))?;
    let raw = std::fs::read(&path).map_err(|e| Error::io("cannot read", &path, e))?;
    let leaked = raw.windows(8).any(|w| w == b"s3cr3t-p");
    say(&format!(
        "2. Searching the file for a value finds {}: the file holds ciphertext only.",
        if leaked { "IT (a bug!)" } else { "nothing" }
    ))?;
    let sealed = Sealed::read(&path)?;
    let wrong = Passphrase::new(SecretBytes::copy_from(b"guess"));
    say(&format!(
        "3. A wrong passphrase: {}",
        sealed
            .unwrap_key(&wrong)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    ))?;
    let key = sealed.unwrap_key(&pass)?;
    let s = sealed.open(&key)?;
    say("4. The right passphrase opens it; `hushfs ls shop` shows names and sizes, never values:")?;
    for (n, e) in &s.project("shop").expect("just stored").secrets {
        say(&format!("     shop/{n:<16} {:>3} bytes", e.value.len()))?;
    }
    say("\nNext: `hushfs init`, `hushfs set PROJECT/NAME`, `hushfs unlock`.")?;
    Ok(0)
}
