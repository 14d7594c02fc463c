//! `run`: a command with access to a project's files.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Args;

use super::Ctx;
use super::mount::{load_config, resolve_project};
use crate::broker::{self, Private, RunOpts};
use crate::daemon::{control, protocol::Request, registry};
use crate::error::{Error, Result};
use crate::render::Config;
use crate::secret::SecretBytes;
use crate::vault::unlock;

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
    /// The command and its arguments (after --)
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub cmd: Vec<OsString>,
}

/// Names that can be environment variables; values without NUL. The
/// values come from the project's source (the vault, or its server).
fn env_vars(ctx: &Ctx, project: &str, config: &Config) -> Result<Vec<(String, SecretBytes)>> {
    let v = unlock::open(&ctx.vault, &ctx.keys)?;
    let values = crate::source::values_now(&v.secrets, project, config)?;
    let mut out = Vec::new();
    for (name, value) in values {
        let ok_name = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok_name || value.expose().contains(&0) {
            eprintln!("hushfs: --env: {name} skipped (not a variable name, or holds a NUL byte)");
            continue;
        }
        out.push((name, value));
    }
    Ok(out)
}

pub fn run(ctx: &Ctx, a: RunArgs) -> Result<i32> {
    let (config, config_path) = load_config(a.config.as_deref())?;
    let (private, project) = match &a.mount {
        Some(m) => {
            let project = match a.project.clone() {
                Some(p) => Some(p),
                None if a.env => {
                    let m = crate::daemon::mountpoint::absolute(m)?;
                    registry::find(&m)
                        .and_then(|e| control::call(&e.socket, &Request::Status, None).ok())
                        .and_then(|r| r.status)
                        .map(|s| s.project)
                }
                None => None,
            };
            (None, project)
        }
        None => {
            let project = resolve_project(a.project.clone(), &config)?;
            let v = unlock::open(&ctx.vault, &ctx.keys)?;
            crate::daemon::load(&ctx.vault, v.key(), &project, &config)?;
            (
                Some(Private {
                    vault: ctx.vault.clone(),
                    project: project.clone(),
                    config: config_path,
                    key: v.key().clone(),
                }),
                Some(project),
            )
        }
    };
    let env = if a.env {
        let p = project.ok_or_else(|| Error::usage("--env needs --project P"))?;
        env_vars(ctx, &p, &config)?
    } else {
        Vec::new()
    };
    broker::run(RunOpts {
        cmd: a.cmd,
        mount: a.mount,
        private,
        env,
    })
}
