//! `allow` and `revoke`: grants for processes `hushfs run` did not start —
//! a container's init (by pid) or a whole container (by cgroup).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{Ctx, out, parse_duration};
use crate::daemon::{control, protocol::Request, registry};
use crate::error::{Error, Result};

/// The longest `--ttl`: a grant meant to last longer is better given
/// without one (and revoked).
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["pid", "cgroup"])))]
pub struct AllowArgs {
    /// The mount directory
    pub dir: PathBuf,
    /// A process and its descendants, e.g. `docker inspect -f '{{.State.Pid}}' NAME`
    #[arg(long)]
    pub pid: Option<u32>,
    /// Every process in a cgroup v2 group or below it, as on the `0::` line
    /// of /proc/PID/cgroup (e.g. /system.slice/docker-ID.scope)
    #[arg(long)]
    pub cgroup: Option<String>,
    /// The grant ends after this long (e.g. 30m, 8h; at most 365d)
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// Accept a cgroup your own processes could move into (any of them
    /// could then read)
    #[arg(long)]
    pub allow_writable_cgroup: bool,
}

#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// The mount directory
    pub dir: PathBuf,
    /// Grant ids, as `hushfs status` lists them
    pub grants: Vec<u64>,
    /// The grant rooted at this process
    #[arg(long)]
    pub pid: Option<u32>,
    /// The grant for this cgroup
    #[arg(long)]
    pub cgroup: Option<String>,
    /// Every grant on the mount
    #[arg(long)]
    pub all: bool,
}

pub fn allow(_ctx: &Ctx, a: AllowArgs) -> Result<i32> {
    if let Some(t) = a.ttl
        && t > MAX_TTL
    {
        return Err(Error::usage(format!(
            "--ttl {} is too long: the limit is one year (365d); revoke and allow again to extend",
            humantime::format_duration(t)
        )));
    }
    let e = registry::require(&a.dir)?;
    let ttl_secs = a.ttl.map(|t| t.as_secs().max(1));
    let whole_tree = a
        .cgroup
        .as_deref()
        .is_some_and(|c| c.trim_matches('/').is_empty());
    let req = match (a.pid, a.cgroup) {
        (Some(pid), None) => Request::GrantPid { pid, ttl_secs },
        (None, Some(path)) => Request::GrantCgroup {
            path,
            ttl_secs,
            allow_writable: a.allow_writable_cgroup,
        },
        _ => return Err(Error::usage("give exactly one of --pid and --cgroup")),
    };
    let r = control::call(&e.socket, &req, None)?;
    if !r.ok {
        return Err(Error::Denied(r.error.unwrap_or_default()));
    }
    if let Some(w) = &r.warning {
        eprintln!("hushfs: warning: {w}");
    }
    let id = r.grant.unwrap_or_default();
    let st = control::call(&e.socket, &Request::Status, None)?.status;
    if whole_tree {
        // Every process is somewhere below the root group.
        let others = if st.as_ref().is_some_and(|s| s.allow_other) {
            ", and on this --allow-other mount every process of every other user too"
        } else {
            ""
        };
        eprintln!(
            "hushfs: warning: --cgroup / is the root of the cgroup tree: grant {id} lets every process of yours read {}{others}; revoke it with `hushfs revoke {} {id}`",
            e.mountpoint.display(),
            e.mountpoint.display()
        );
    }
    let what = st
        .and_then(|s| s.grants.into_iter().find(|g| g.id == id))
        .map(|g| g.matches)
        .unwrap_or_default();
    let until = a
        .ttl
        .map(|t| format!(" for {}", humantime::format_duration(t)))
        .unwrap_or_default();
    out(&format!("grant {id}: {what}{until}\n"))?;
    Ok(0)
}

pub fn revoke(_ctx: &Ctx, a: RevokeArgs) -> Result<i32> {
    let e = registry::require(&a.dir)?;
    if a.grants.is_empty() && a.pid.is_none() && a.cgroup.is_none() && !a.all {
        return Err(Error::usage(
            "which grant? give ids (see `hushfs status`), --pid PID, --cgroup PATH or --all",
        ));
    }
    let mp = e.mountpoint.display().to_string();
    // A daemon that does not answer may still honour every grant: say so,
    // with the denied exit code, never "revoked".
    let unreachable = |why: Error| {
        Error::Denied(format!(
            "{mp} did not answer, so its grants may still stand: {why}; stop it with `hushfs umount {mp}` or `kill {}`",
            e.pid
        ))
    };
    let grants = control::call(&e.socket, &Request::Status, None)
        .map_err(unreachable)?
        .status
        .map(|s| s.grants)
        .unwrap_or_default();
    let chosen: Vec<u64> = grants
        .iter()
        .filter(|g| {
            a.all
                || a.grants.contains(&g.id)
                || (a.pid.is_some() && g.pid == a.pid)
                || (a.cgroup.is_some() && g.cgroup == a.cgroup)
        })
        .map(|g| g.id)
        .collect();
    let missing: Vec<u64> = a
        .grants
        .iter()
        .filter(|id| !chosen.contains(id))
        .copied()
        .collect();
    if chosen.is_empty() || !missing.is_empty() {
        return Err(Error::NotFound(format!(
            "no such grant on {mp}{}: `hushfs status` lists them",
            if missing.is_empty() {
                String::new()
            } else {
                format!(" ({missing:?})")
            }
        )));
    }
    let mut s = String::new();
    let mut failed = 0;
    for id in chosen {
        match control::call(&e.socket, &Request::Revoke { grant: id }, None) {
            Ok(r) if r.ok => s.push_str(&format!("revoked grant {id}\n")),
            answer => {
                // A grant whose root exited meanwhile is gone all the same;
                // anything else may still stand.
                let gone = control::call(&e.socket, &Request::Status, None)
                    .ok()
                    .and_then(|r| r.status)
                    .is_some_and(|st| st.grants.iter().all(|g| g.id != id));
                if gone {
                    s.push_str(&format!("grant {id} had already ended\n"));
                    continue;
                }
                failed += 1;
                let why = match answer {
                    Ok(r) => r.error.unwrap_or_else(|| "refused".into()),
                    Err(e) => e.to_string(),
                };
                eprintln!(
                    "hushfs: {mp}: grant {id} may still stand: {why}; stop the mount with `hushfs umount {mp}` or `kill {}`",
                    e.pid
                );
            }
        }
    }
    out(&s)?;
    Ok(if failed > 0 {
        crate::error::exit::DENIED
    } else {
        0
    })
}
