//! Secrets → file bytes. Pure functions: no I/O except reading template
//! files named by the configuration, no FUSE, no globals. The mount serves
//! whatever `render_project` returns.

pub mod config;

use std::collections::BTreeMap;

pub use config::Config;

use crate::secret::SecretBytes;

/// One file to serve on the mount.
pub struct Rendered {
    /// Path components below the mount root, e.g. ["config", "app.json"].
    pub path: Vec<String>,
    pub content: SecretBytes,
    /// Permission bits (e.g. 0o400).
    pub mode: u32,
    /// Names of the secrets whose values appear in `content` (for audit).
    pub secrets: Vec<String>,
}

/// Why a project cannot be rendered; names files and secrets, never values.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(pub String);

/// Renders every file the configuration asks for: by default one file per
/// secret and `.env`, plus the `[[file]]` entries of hushfs.toml.
pub fn render_project(
    secrets: &BTreeMap<String, SecretBytes>,
    config: &Config,
) -> Result<Vec<Rendered>, RenderError> {
    let mut out = Vec::new();
    if config.secret_files {
        for (name, value) in secrets {
            out.push(Rendered {
                path: vec![name.clone()],
                content: value.clone(),
                mode: config.mode,
                secrets: vec![name.clone()],
            });
        }
    }
    Ok(out)
}
