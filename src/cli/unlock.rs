//! `unlock` and `lock`: the agent's cache of the data key.

use clap::Args;

use super::{Ctx, audit, out, parse_duration};
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
    if keychain::disabled() {
        return Err(Error::Other(
            "cannot cache the unlock: HUSHFS_KEYCHAIN=off; commands will ask for the passphrase"
                .into(),
        ));
    }
    let mut rec = audit::recorder(&v)?;
    // In the log first: an unlock nobody can see in the log does not stand.
    let mut ev = audit::event("unlock");
    ev.reason = Some(format!("for {}", humantime::format_duration(a.ttl)));
    audit::record(&mut rec, ev)?;
    drop(rec);
    // The key goes to the agent, the one process that keeps it; this
    // process forgets it when it exits.
    crate::agent::client::ensure_running()?;
    crate::agent::client::store(&ctx.vault, v.key(), a.ttl)?;
    // Locked mounts of this vault take the key from the keychain again.
    let mounts = super::mount::notify_mounts(&ctx.vault, &Request::Reload);
    let tail = if mounts > 0 {
        format!("; {mounts} mount(s) serve again")
    } else {
        String::new()
    };
    out(&format!(
        "unlocked {} for {}{tail}\n",
        ctx.vault.display(),
        humantime::format_duration(a.ttl)
    ))?;
    Ok(0)
}

pub fn lock(ctx: &Ctx) -> Result<i32> {
    let sealed = Sealed::read(&ctx.vault)?;
    let id = sealed.header().id_hex();
    // The cached key (if any) or the keychain's audit state keys the
    // record, which is written beside the locking, not before it: locking
    // never waits for the log (a stopped writer can hold it for seconds);
    // it only takes access away.
    let key = keychain::load(&id);
    let vault_id = sealed.header().vault_id;
    // The key leaves the keychain first, so that no mount can take it back
    // from there once it has locked; an unreachable keychain does not stop
    // the mounts from locking.
    let had = if !keychain::available() {
        // Outside the agent (none runs, or HUSHFS_KEYCHAIN=off) nothing is
        // cached; the mounts still lock.
        Ok(false)
    } else {
        keychain::clear(&id)
    };
    let reason = match had {
        Ok(true) => "cached key removed",
        Ok(false) => "was not unlocked",
        Err(_) => "keychain unreachable",
    };
    let logger = std::thread::spawn(move || {
        let mut w =
            crate::audit::Writer::open(&vault_id, key.as_ref(), &crate::audit::Options::default())?;
        drop(key);
        let mut ev = audit::event("lock");
        ev.reason = Some(reason.into());
        audit::record(&mut w, ev)
    });
    // Mounts drop their values now, not when the cache would have expired.
    // Fail closed: success only when every mount of the vault confirmed.
    let answers = super::mount::tell_mounts(&ctx.vault, &Request::Lock);
    match logger.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("hushfs: warning: the lock is not in the audit log: {e}"),
        Err(_) => eprintln!("hushfs: warning: the lock is not in the audit log"),
    }
    let total = answers.len();
    let mut failed = 0;
    for (e, r) in &answers {
        if let Err(why) = r {
            failed += 1;
            eprintln!(
                "hushfs: {} did not confirm the lock and may still serve: {why}; stop it with `hushfs umount {}` or `kill {}`",
                e.mountpoint.display(),
                e.mountpoint.display(),
                e.pid
            );
        }
    }
    let had = had.map_err(|why| {
        Error::Other(format!(
            "cannot reach the keychain ({why}): the cached key may remain; `hushfs lock` again once it is reachable"
        ))
    })?;
    if failed > 0 {
        eprintln!(
            "hushfs: lock incomplete: {}; {} of {total} mount(s) confirmed",
            if had {
                "the cached key was removed"
            } else {
                "no key was cached"
            },
            total - failed
        );
        return Ok(crate::error::exit::DENIED);
    }
    let first = if had {
        "locked: the cached key was removed"
    } else {
        "already locked"
    };
    let tail = if total > 0 {
        format!("; {total} mount(s) dropped their values and refuse reads")
    } else {
        String::new()
    };
    out(&format!("{first}{tail}\n"))?;
    Ok(0)
}
