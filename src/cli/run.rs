//! `run`: a command with access to a project's files, its output redacted,
//! within the project's run policy.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::Ctx;
use super::mount::{load_config, resolve_project};
use crate::broker::{self, Private, RunOpts};
use crate::daemon::{control, protocol::Request, registry};
use crate::error::{Error, Result};
use crate::policy::{CommandView, Lookup, Policy, Rule};
use crate::scan::Matcher;
use crate::secret::SecretBytes;
use crate::vault::{Sealed, Vault, keychain, unlock};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Project [default: `project` in hushfs.toml, or the --mount's project]
    #[arg(long, short)]
    pub project: Option<String>,
    /// Grant access on this live mount instead of making a private one
    #[arg(long, value_name = "DIR")]
    pub mount: Option<PathBuf>,
    /// Also pass the secrets as environment variables
    #[arg(long)]
    pub env: bool,
    /// hushfs.toml to use for a private mount
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Pass the command's output through unchanged (by default every
    /// managed value, in any encoding, becomes [hushfs:NAME])
    #[arg(long)]
    pub no_redact: bool,
    /// The command and its arguments (after --)
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub cmd: Vec<OsString>,
}

/// Names that can be environment variables; values without NUL; only
/// those the policy rule lets `--env` pass, when there is one.
fn env_vars(values: &Values, rule: Option<&Rule>) -> Vec<(String, SecretBytes)> {
    let mut out = Vec::new();
    for (name, value) in values {
        if rule.is_some_and(|r| !r.allows_env(name)) {
            continue;
        }
        let ok_name = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok_name || value.expose().contains(&0) {
            eprintln!("hushfs: --env: {name} skipped (not a variable name, or holds a NUL byte)");
            continue;
        }
        out.push((name.clone(), value.clone()));
    }
    out
}

/// A project's current values, from its source: the vault, or its server.
type Values = BTreeMap<String, SecretBytes>;

/// The vault with the cached key or a passphrase given without a prompt
/// (`--passphrase-fd`, HUSHFS_PASSPHRASE_FILE): `run --mount` never needed
/// to prompt and does not start now.
fn open_without_prompt(ctx: &Ctx) -> Option<Vault> {
    if ctx.keys.passphrase_fd.is_some() || std::env::var_os("HUSHFS_PASSPHRASE_FILE").is_some() {
        return unlock::open(&ctx.vault, &ctx.keys).ok();
    }
    let sealed = Sealed::read(&ctx.vault).ok()?;
    let key = keychain::load(&sealed.header().id_hex())?;
    let secrets = sealed.open(&key).ok()?;
    Some(Vault::from_parts(sealed, key, secrets))
}

/// The mount's project, asked of its daemon.
fn mount_status(m: &std::path::Path) -> Option<crate::daemon::protocol::MountStatus> {
    let m = crate::daemon::mountpoint::absolute(m).ok()?;
    registry::find(&m)
        .and_then(|e| control::call(&e.socket, &Request::Status, None).ok())
        .and_then(|r| r.status)
}

/// The policy's verdict on the command: the rule that allows it and the
/// program to execute. `Ok(None)` when the project has no policy.
fn check_policy(v: &Vault, project: &str, cmd: &[OsString]) -> Result<Option<(Rule, PathBuf)>> {
    let Some(p) = v.secrets.project(project) else {
        return Ok(None);
    };
    let Some(policy) = Policy::from_meta(&p.meta).map_err(Error::usage)? else {
        return Ok(None);
    };
    let (program, view) = CommandView::predict(cmd, &Lookup::current())?;
    match policy.compile().find(&view) {
        Some(rule) => Ok(Some((rule.clone(), program))),
        // The program only: its arguments may hold a value the shell
        // expanded, and this message goes to the terminal.
        None => Err(Error::Denied(format!(
            "the run policy of project {project} does not allow `{}{}`: `hushfs policy show {project}` lists the commands it allows",
            cmd.first()
                .map(|a| a.to_string_lossy().chars().take(200).collect::<String>())
                .unwrap_or_default(),
            if cmd.len() > 1 { " …" } else { "" }
        ))),
    }
}

fn matcher(values: &Values) -> Arc<Matcher> {
    let pairs: Vec<(String, &[u8])> = values
        .iter()
        .map(|(n, v)| (n.clone(), v.expose()))
        .collect();
    Arc::new(Matcher::new(pairs))
}

/// The fail-closed rules of `run`, in one place: each is a reason not to
/// start the command. `rule` is the run policy's rule that allows it (if
/// the project has a policy and its key was at hand to read it).
fn refusals(
    a: &RunArgs,
    project: &str,
    key_at_hand: bool,
    mount_has_policy: bool,
    rule: Option<&Rule>,
) -> Result<()> {
    // 1. On a mount whose project has a run policy the output must be
    //    redacted and --no-redact checked against the policy: without the
    //    key nobody could, so the command does not start (the daemon still
    //    enforces the policy's commands and files either way).
    if mount_has_policy && !key_at_hand {
        return Err(Error::Denied(format!(
            "project {project} has a run policy, and its output must be redacted, but the vault's key is not at hand: run `hushfs unlock` first"
        )));
    }
    // 2. --no-redact only where the policy's rule says so.
    if a.no_redact && rule.is_some_and(|r| !r.unredacted) {
        return Err(Error::Denied(format!(
            "the run policy of project {project} does not let this command run with --no-redact"
        )));
    }
    // 3. --env only where the policy's rule says so.
    if a.env && rule.is_some_and(|r| !r.env) {
        return Err(Error::Denied(format!(
            "the run policy of project {project} does not let this command take values through --env: \
             read them from the mount instead"
        )));
    }
    Ok(())
}

pub fn run(ctx: &Ctx, a: RunArgs) -> Result<i32> {
    let (config, config_path) = load_config(a.config.as_deref())?;
    // The project's values, fetched once (a central source is asked once).
    let mut fetched = None;
    let mut mount_has_policy = false;
    let (private, project, vault) = match &a.mount {
        Some(m) => {
            let status = mount_status(m);
            mount_has_policy = status.as_ref().is_some_and(|s| s.policy);
            let project = a
                .project
                .clone()
                .or_else(|| status.as_ref().map(|s| s.project.clone()));
            // Values for redaction, the policy and --env, if the key is at
            // hand (without a prompt).
            (None, project, open_without_prompt(ctx))
        }
        None => {
            let project = resolve_project(a.project.clone(), &config)?;
            let v = unlock::open(&ctx.vault, &ctx.keys)?;
            let (_, _, values) =
                crate::project::render_opened(&v.secrets, &ctx.vault, &project, &config)?;
            fetched = Some(values);
            (
                Some(Private {
                    vault: ctx.vault.clone(),
                    project: project.clone(),
                    config: config_path,
                    key: v.key().clone(),
                }),
                Some(project),
                Some(v),
            )
        }
    };
    // --env needs the values: without the key at hand, ask for the
    // passphrase now, so that the policy below is checked with this vault
    // (never skipped for a vault opened later).
    let vault = match vault {
        None if a.env => Some(unlock::open(&ctx.vault, &ctx.keys)?),
        v => v,
    };
    let allowed = match (&vault, &project) {
        (Some(v), Some(p)) => match check_policy(v, p, &a.cmd) {
            Err(Error::NotFound(msg)) => {
                eprintln!("hushfs: cannot run {msg}");
                return Ok(127);
            }
            r => r?,
        },
        _ => None,
    };
    refusals(
        &a,
        project.as_deref().unwrap_or_default(),
        vault.is_some(),
        mount_has_policy,
        allowed.as_ref().map(|(r, _)| r),
    )?;
    // The values for --env and for the redactor: fetched once.
    let values = match (&vault, &project) {
        (Some(v), Some(p)) if a.env || !a.no_redact => match fetched {
            Some(values) => Some(values),
            None => Some(crate::source::values_now(&v.secrets, p, &config)?),
        },
        _ => None,
    };
    let env = if a.env {
        project
            .as_deref()
            .ok_or_else(|| Error::usage("--env needs --project P"))?;
        let rule = allowed.as_ref().map(|(r, _)| r);
        env_vars(values.as_ref().expect("fetched for --env"), rule)
    } else {
        Vec::new()
    };
    let redact = if a.no_redact {
        None
    } else {
        match (&values, &project) {
            (Some(v), Some(_)) => Some(matcher(v)),
            // No such mount: broker::run says so.
            (_, None) => None,
            (None, Some(_)) => {
                eprintln!(
                    "hushfs: warning: output is not redacted: the vault's key is not at hand \
                     (run `hushfs unlock`, or pass --no-redact to silence this)"
                );
                None
            }
        }
    };
    drop(vault);
    let target = match (a.mount, private) {
        (Some(m), _) => broker::Target::Mount(m),
        (None, Some(p)) => broker::Target::Private(p),
        (None, None) => return Err(Error::usage("run needs --mount DIR or a project")),
    };
    broker::run(RunOpts {
        cmd: a.cmd,
        target,
        env,
        program: allowed.map(|(_, p)| p),
        redact,
    })
}
