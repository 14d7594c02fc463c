//! `init`, `passwd`, `rekey`: creating the vault and changing its keys.

use std::time::{Duration, Instant};

use clap::Args;

use super::{Ctx, audit};
use crate::audit::Record;
use crate::error::{Error, Result};
use crate::secret::{Passphrase, SecretBytes};
use crate::vault::crypto::{self, KdfParams};
use crate::vault::unlock::{self, KeyOpts};
use crate::vault::{Sealed, Vault, keychain, store};

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Argon2id memory in MiB (19..=4096) [default: 64]
    #[arg(long, value_name = "MIB")]
    pub kdf_memory: Option<u32>,
    /// Argon2id passes (2..=16) [default: 3]
    #[arg(long, value_name = "T")]
    pub kdf_time: Option<u32>,
    /// Argon2id lanes (1..=16) [default: 4]
    #[arg(long, value_name = "P")]
    pub kdf_parallelism: Option<u32>,
    /// Raise the memory cost until unlocking takes 0.3-1 s on this machine
    #[arg(long, conflicts_with = "kdf_memory")]
    pub calibrate: bool,
}

#[derive(Args, Debug)]
pub struct PasswdArgs {
    /// Read the new passphrase from this open file descriptor
    #[arg(long, value_name = "N")]
    pub new_passphrase_fd: Option<i32>,
}

fn kdf_from(a: &InitArgs) -> Result<KdfParams> {
    let d = KdfParams::DEFAULT;
    let p = KdfParams {
        m_kib: a
            .kdf_memory
            .map(|m| m.saturating_mul(1024))
            .unwrap_or(d.m_kib),
        t: a.kdf_time.unwrap_or(d.t),
        p: a.kdf_parallelism.unwrap_or(d.p),
    };
    p.check().map_err(|e| {
        Error::usage(format!(
            "KDF parameters: {e}; allowed: memory 19..=4096 MiB, time 2..=16, parallelism 1..=16"
        ))
    })?;
    Ok(p)
}

/// Doubles the memory cost (from the given start) until one derivation takes
/// at least 0.3 s, stopping at 1 GiB or when it would exceed about 1 s.
fn calibrate(start: KdfParams) -> KdfParams {
    let probe = Passphrase::new(SecretBytes::copy_from(b"calibration"));
    let mut p = start;
    loop {
        let t0 = Instant::now();
        let _ = crypto::derive_kek(&probe, &[0u8; 16], p);
        let took = t0.elapsed();
        let next = KdfParams {
            m_kib: p.m_kib * 2,
            ..p
        };
        if took >= Duration::from_millis(300)
            || next.m_kib > 1024 * 1024
            || took * 2 > Duration::from_secs(1)
        {
            return p;
        }
        p = next;
    }
}

pub fn init(ctx: &Ctx, a: InitArgs) -> Result<i32> {
    let mut kdf = kdf_from(&a)?;
    let _lock = store::WriteLock::acquire(&ctx.vault)?;
    if ctx.vault.exists() {
        return Err(Error::VaultExists(ctx.vault.clone()));
    }
    let pass = unlock::new_passphrase(&ctx.keys, true)?;
    if a.calibrate {
        kdf = calibrate(kdf);
    }
    let mut v = Vault::new(&ctx.vault, &pass, kdf)?;
    let mut rec = audit::recorder(&v)?;
    v.save()?;
    audit::record(&mut rec, audit::event("init"))?;
    super::out(&format!(
        "created vault {} (Argon2id {} MiB, t={}, p={})\nnext: `hushfs set PROJECT/NAME` to add a secret\n",
        ctx.vault.display(),
        kdf.m_kib / 1024,
        kdf.t,
        kdf.p
    ))?;
    Ok(0)
}

pub fn passwd(ctx: &Ctx, a: PasswdArgs) -> Result<i32> {
    let _lock = store::WriteLock::acquire(&ctx.vault)?;
    let sealed = Sealed::read(&ctx.vault)?;
    // Changing the passphrase needs the current one, not just a cached key.
    let (mut v, _) = unlock::open_with_passphrase(sealed, &ctx.keys)?;
    let keys = KeyOpts {
        new_passphrase_fd: a.new_passphrase_fd,
        ..KeyOpts::default()
    };
    let new = unlock::new_passphrase(&keys, false)?;
    let mut rec = audit::recorder(&v)?;
    v.rewrap(&new, None)?;
    v.save()?;
    audit::record(&mut rec, audit::event("passwd"))?;
    forget(ctx, &v.id_hex());
    super::out("passphrase changed; the cached unlock was cleared: run `hushfs unlock`\n")?;
    Ok(0)
}

/// The cached unlock goes: in this process's keychain if it has one, and
/// in the agent (these commands run here, with the passphrase).
fn forget(ctx: &Ctx, id: &str) {
    let _ = keychain::clear(id);
    if !crate::agent::client::forget(&ctx.vault) && crate::agent::socket_path().exists() {
        eprintln!(
            "hushfs: warning: the agent did not confirm that it forgot the old key: run `hushfs lock`"
        );
    }
}

pub fn rekey(ctx: &Ctx) -> Result<i32> {
    let _lock = store::WriteLock::acquire(&ctx.vault)?;
    let sealed = Sealed::read(&ctx.vault)?;
    let (mut v, pass) = unlock::open_with_passphrase(sealed, &ctx.keys)?;
    let mut rec = audit::recorder(&v)?;
    let old = v.key().clone();
    v.rekey(&pass)?;
    // The audit chain moves to a root derived from the new key before the
    // vault is saved: a log that cannot follow refuses the rekey. Should
    // the save fail, a second epoch start moves it back to the old key.
    rec.start_epoch(&Record::now(audit::event("rekey")), &old, v.key())
        .map_err(audit::refused)?;
    if let Err(e) = v.save() {
        let mut ev = audit::event("rekey");
        ev.reason = Some("the vault could not be saved: the old data key stays".into());
        if let Err(ae) = rec.start_epoch(&Record::now(ev), v.key(), &old) {
            return Err(Error::Other(format!(
                "{e}; and the audit log, already moved to the new key, could not be moved back: {ae}"
            )));
        }
        return Err(e);
    }
    forget(ctx, &v.id_hex());
    super::out("new data key; the vault was re-encrypted and the cached unlock cleared\n")?;
    Ok(0)
}
