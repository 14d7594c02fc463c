//! A project as the CLI and the daemon both load it: its current values
//! (from its source), the files rendered from them, and its run policy.
//! Nothing here knows of mounts or processes.

use std::path::Path;

use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::render::{self, Config, Rendered};
use crate::vault::Secrets;

/// The project's run policy, if it has one. A policy this version cannot
/// read is an error (the mount fails closed).
pub fn policy_of(secrets: &Secrets, project: &str) -> Result<Option<Policy>> {
    match secrets.project(project) {
        Some(p) => Policy::from_meta(&p.meta).map_err(|e| Error::usage(format!("{project}: {e}"))),
        None => Ok(None),
    }
}

/// The project's files (values from its source: the vault, or its
/// server), its run policy and its values, from a vault the caller has
/// open. `mount` and `run` render once before starting the daemon, so a
/// bad template or a missing secret is reported by the command, with its
/// exit code, not in a log file; the values serve `run`'s redactor and
/// `--env`.
pub fn render_opened(
    secrets: &Secrets,
    vault: &Path,
    project: &str,
    config: &Config,
) -> Result<(Vec<Rendered>, Option<Policy>, crate::source::Values)> {
    let values = match crate::source::values_now(secrets, project, config) {
        // A project that is not in the vault, and no server named for it.
        Err(Error::NotFound(_))
            if secrets.project(project).is_none() && config.remote.is_none() =>
        {
            Err(Error::NotFound(format!(
                "no project {project} in {}: `hushfs ls` lists them",
                vault.display()
            )))
        }
        r => r,
    }?;
    let policy = policy_of(secrets, project)?;
    let files = render::render_project(&values, config).map_err(|e| Error::usage(e.to_string()))?;
    Ok((files, policy, values))
}
