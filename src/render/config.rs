//! hushfs.toml: which project a directory uses and which files its mount
//! serves. Documented in docs/CONFIGURATION.md.

use std::path::{Path, PathBuf};

/// The parsed configuration (defaults when there is no hushfs.toml).
#[derive(Clone, Debug)]
pub struct Config {
    /// Default project for `mount` and `run` in this directory.
    pub project: Option<String>,
    /// Serve one file per secret at the top level.
    pub secret_files: bool,
    /// Default permission bits of served files.
    pub mode: u32,
    /// Directory that relative template paths start from.
    pub base_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            project: None,
            secret_files: true,
            mode: 0o400,
            base_dir: PathBuf::from("."),
        }
    }
}

impl Config {
    /// Reads a hushfs.toml. (The full schema lives in docs/CONFIGURATION.md.)
    pub fn load(path: &Path) -> Result<Config, super::RenderError> {
        #[derive(serde::Deserialize)]
        struct Raw {
            project: Option<String>,
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| super::RenderError(format!("cannot read {}: {e}", path.display())))?;
        let raw: Raw = toml::from_str(&text)
            .map_err(|e| super::RenderError(format!("{}: {e}", path.display())))?;
        Ok(Config {
            project: raw.project,
            base_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            ..Config::default()
        })
    }

    /// Looks for hushfs.toml in `start` and its parents.
    pub fn find(start: &Path) -> Option<PathBuf> {
        start
            .ancestors()
            .map(|d| d.join("hushfs.toml"))
            .find(|p| p.is_file())
    }
}
