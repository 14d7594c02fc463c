//! `unlock` and `lock`: the keychain cache of the data key.

use clap::Args;

use super::{Ctx, out, parse_duration};
use crate::daemon::protocol::Request;
use crate::error::{Error, Result};
use crate::vault::{Sealed, keychain, unlock};

#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// How long the cached unlock lasts
    #[arg(long, default_value = "8h", value_parser = parse_duration)]
    pub ttl: std::time::Duration,
}

pub fn unlock(ctx: &Ctx, a: UnlockArgs) -> Result<i32> {
    let sealed = Sealed::read(&ctx.vault)?;
    let (v, _) = unlock::open_with_passphrase(sealed, &ctx.keys)?;
    keychain::store(&v.id_hex(), v.key(), a.ttl).map_err(|why| {
        Error::Other(format!(
            "cannot cache the unlock: keychain unavailable ({why}); commands will ask for the passphrase"
        ))
    })?;
    let mounts = super::mount::notify_mounts(&ctx.vault, &Request::Reload);
    out(&format!(
        "unlocked {} for {}{}\n",
        ctx.vault.display(),
        humantime::format_duration(a.ttl),
        if mounts > 0 {
            format!("; {mounts} mount(s) serve again")
        } else {
            String::new()
        }
    ))?;
    Ok(0)
}

pub fn lock(ctx: &Ctx) -> Result<i32> {
    let sealed = Sealed::read(&ctx.vault)?;
    let id = sealed.header().id_hex();
    let had = keychain::clear(&id)
        .map_err(|why| Error::Other(format!("cannot reach the keychain: {why}")))?;
    // Mounts drop their values now, not when the cache would have expired.
    let mounts = super::mount::notify_mounts(&ctx.vault, &Request::Lock);
    let first = if had {
        "locked: the cached key was removed"
    } else {
        "already locked"
    };
    let tail = if mounts > 0 {
        format!("; {mounts} mount(s) dropped their values and refuse reads")
    } else {
        String::new()
    };
    out(&format!("{first}{tail}\n"))?;
    Ok(0)
}
