//! `policy show|set|clear`: a project's run policy. Changing it needs the
//! passphrase even while a key is cached (user presence): a process that
//! can only use the cached unlock cannot widen what `run` may do.

use std::path::PathBuf;

use clap::Subcommand;

use super::{Ctx, out};
use crate::daemon::protocol::Request;
use crate::error::{Error, Result};
use crate::policy::{FIELD, Lookup, Policy};
use crate::vault::{Sealed, names, store, unlock};

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Print a project's run policy (JSON, the format `set` reads)
    Show { project: String },
    /// Set a project's run policy from a JSON file (or stdin); asks for the passphrase
    #[command(after_help = "\
Example:
  {\"commands\": [
    {\"argv\": [\"npm\", \"test\"], \"files\": [\".env\"]},
    {\"exe\": \"/usr/bin/psql\", \"files\": [\"DATABASE_URL\"], \"secrets\": [\"DATABASE_URL\"]}
  ]}
`argv` is a prefix: the program (resolved through PATH now) and the first
arguments. `files` are mount paths (`*`, `?`, `**`); `secrets`, if given,
limits which secrets a readable file may contain; `\"env\": true` lets
`run --env` pass those values, `\"unredacted\": true` lets `run --no-redact`
show the command's output as it is. See docs/AGENTS.md.")]
    Set {
        project: String,
        /// The policy file [default: stdin]
        file: Option<PathBuf>,
    },
    /// Remove a project's run policy (any command may run again); asks for the passphrase
    Clear { project: String },
}

pub fn policy(ctx: &Ctx, cmd: PolicyCmd) -> Result<i32> {
    match cmd {
        PolicyCmd::Show { project } => show(ctx, &project),
        PolicyCmd::Set { project, file } => {
            names::validate("project", &project)?;
            let text = match &file {
                Some(f) => std::fs::read(f).map_err(|e| Error::io("cannot read", f, e))?,
                None => {
                    let mut b = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut b)
                        .map_err(|e| Error::Other(format!("cannot read stdin: {e}")))?;
                    b
                }
            };
            let p = Policy::parse_input(&text, &Lookup::current())?;
            let n = p.commands.len();
            change(ctx, &project, Some(p))?;
            let mounts = reload_mounts(ctx);
            out(&format!(
                "run policy of {project} set: {n} command(s) allowed{mounts}\n"
            ))?;
            Ok(0)
        }
        PolicyCmd::Clear { project } => {
            names::validate("project", &project)?;
            change(ctx, &project, None)?;
            let mounts = reload_mounts(ctx);
            out(&format!(
                "run policy of {project} removed: `hushfs run` may start any command{mounts}\n"
            ))?;
            Ok(0)
        }
    }
}

/// Live mounts of this vault re-read it now rather than at their next
/// poll, so the new policy holds when this command returns.
fn reload_mounts(ctx: &Ctx) -> String {
    match super::mount::notify_mounts(&ctx.vault, &Request::Reload) {
        0 => String::new(),
        n => format!("; {n} live mount(s) apply it now"),
    }
}

fn show(ctx: &Ctx, project: &str) -> Result<i32> {
    names::validate("project", project)?;
    let v = unlock::open(&ctx.vault, &ctx.keys)?;
    let p = v
        .secrets
        .project(project)
        .ok_or_else(|| Error::NotFound(format!("no project {project}: `hushfs ls` lists them")))?;
    match Policy::from_meta(&p.meta).map_err(Error::usage)? {
        Some(pol) => out(&(serde_json::to_string_pretty(&pol).expect("serialises") + "\n"))?,
        None => out(&format!(
            "project {project} has no run policy: `hushfs run` may start any command\n"
        ))?,
    }
    Ok(0)
}

/// Stores (or removes) the policy under the writer lock, unlocking with
/// the passphrase only — never the cached key.
fn change(ctx: &Ctx, project: &str, policy: Option<Policy>) -> Result<()> {
    let _lock = store::WriteLock::acquire(&ctx.vault)?;
    let sealed = Sealed::read(&ctx.vault)?;
    let (mut v, _) = unlock::open_with_passphrase(sealed, &ctx.keys).map_err(|e| match e {
        Error::Locked => Error::Denied(
            "changing a run policy needs the passphrase, even while the vault is unlocked: \
             type it on a terminal, or pass --passphrase-fd N"
                .into(),
        ),
        e => e,
    })?;
    // Opened before the change: a change the log cannot record is refused.
    let mut rec = super::audit::recorder(&v)?;
    let p = v.secrets.projects.get_mut(project).ok_or_else(|| {
        Error::NotFound(format!(
            "no project {project}: add a secret first (`hushfs set {project}/NAME`)"
        ))
    })?;
    let kind = match policy {
        Some(pol) => {
            p.meta.fields.insert(FIELD.into(), pol.to_value());
            "policy-set"
        }
        None => {
            if p.meta.fields.remove(FIELD).is_none() {
                return Err(Error::NotFound(format!(
                    "project {project} has no run policy"
                )));
            }
            "policy-clear"
        }
    };
    v.save()?;
    let mut ev = super::audit::event(kind);
    ev.project = Some(project.to_string());
    super::audit::record(&mut rec, ev)
}
