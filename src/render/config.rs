//! hushfs.toml: which project a directory uses and which files its mount
//! serves. Documented in docs/CONFIGURATION.md.
//!
//! Parsing checks everything that does not depend on the secrets (syntax,
//! unknown keys, paths, modes, collisions between configured files), so a
//! typo fails before the vault is even opened. `render_project` checks the
//! rest (listed secrets exist, per-secret files do not collide).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::RenderError;

/// Longest path component on the mount (same limit as secret names).
pub const MAX_COMPONENT: usize = 128;

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
    /// Path of the dotenv file with all secrets; `None` serves none.
    pub env_file: Option<Vec<String>>,
    /// The `[[file]]` entries, in the order they appear.
    pub files: Vec<FileSpec>,
    /// The hushfs.toml this came from, for messages; `None` for defaults.
    pub source: Option<PathBuf>,
    /// `[source]`: the project's values come from an OpenBao/Vault server
    /// (src/source/); `None`: the local vault.
    pub remote: Option<crate::source::openbao::Settings>,
}

/// One `[[file]]` entry.
#[derive(Clone, Debug)]
pub struct FileSpec {
    /// Path components below the mount root.
    pub path: Vec<String>,
    pub kind: FileKind,
    /// Permission bits; `None` means `Config::mode`.
    pub mode: Option<u32>,
    /// Line of the entry's `path` key in hushfs.toml, for messages.
    pub line: usize,
}

/// What a `[[file]]` contains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// Several secrets in one structured format; `secrets: None` means all.
    Format {
        format: Format,
        secrets: Option<Vec<String>>,
    },
    /// One secret's exact bytes.
    Raw { secret: String },
    /// A template file, already joined onto `base_dir`.
    Template { template: PathBuf },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Dotenv,
    Json,
    Properties,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            project: None,
            secret_files: true,
            mode: 0o400,
            base_dir: PathBuf::from("."),
            env_file: Some(vec![".env".to_string()]),
            files: Vec::new(),
            source: None,
            remote: None,
        }
    }
}

// What serde reads. Strings that need checking are `Spanned` so a bad value
// is reported with its line number.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    project: Option<Spanned<String>>,
    #[serde(default)]
    mount: RawMount,
    #[serde(default)]
    file: Vec<RawFile>,
    source: Option<Spanned<toml::Table>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMount {
    env_file: Option<Spanned<String>>,
    secret_files: Option<bool>,
    mode: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: Spanned<String>,
    format: Option<Format>,
    secrets: Option<Vec<String>>,
    secret: Option<String>,
    template: Option<String>,
    mode: Option<Spanned<toml::Value>>,
}

impl Config {
    /// Looks for hushfs.toml in `start` and its parents.
    pub fn find(start: &Path) -> Option<PathBuf> {
        start
            .ancestors()
            .map(|d| d.join("hushfs.toml"))
            .find(|p| p.is_file())
    }

    /// Reads and parses a hushfs.toml; templates are relative to its
    /// directory.
    pub fn load(path: &Path) -> Result<Config, RenderError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RenderError(format!("cannot read {}: {e}", path.display())))?;
        let base_dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        // Absolute, so templates resolve the same after the daemon chdirs.
        let base_dir = std::path::absolute(&base_dir).unwrap_or(base_dir);
        Self::parse_named(&text, &base_dir, path)
    }

    /// Parses hushfs.toml text; messages call it `base_dir/hushfs.toml`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Config, RenderError> {
        Self::parse_named(text, base_dir, &base_dir.join("hushfs.toml"))
    }

    fn parse_named(text: &str, base_dir: &Path, source: &Path) -> Result<Config, RenderError> {
        let at = |span: std::ops::Range<usize>, msg: String| {
            RenderError(format!(
                "{}:{}: {msg}",
                source.display(),
                line_of(text, span.start)
            ))
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            // toml's Display is a multi-line snippet; keep one line.
            let msg = e.message().replace('\n', " ");
            match e.span() {
                Some(span) => at(span, msg),
                None => RenderError(format!("{}: {msg}", source.display())),
            }
        })?;

        let mut config = Config {
            base_dir: base_dir.to_path_buf(),
            source: Some(source.to_path_buf()),
            ..Config::default()
        };
        if let Some(p) = raw.project {
            crate::vault::names::validate("project", p.get_ref())
                .map_err(|e| at(p.span(), e.to_string()))?;
            config.project = Some(p.into_inner());
        }
        if let Some(t) = &raw.source {
            config.remote = Some(
                crate::source::openbao::Settings::from_toml(t.get_ref(), base_dir)
                    .map_err(|e| at(t.span(), format!("[source]: {e}")))?,
            );
        }
        if let Some(b) = raw.mount.secret_files {
            config.secret_files = b;
        }
        if let Some(m) = &raw.mount.mode {
            config.mode = parse_mode(m.get_ref()).map_err(|e| at(m.span(), e))?;
        }
        if let Some(env) = &raw.mount.env_file {
            config.env_file =
                if env.get_ref().is_empty() {
                    None
                } else {
                    Some(parse_path(env.get_ref()).map_err(|e| {
                        at(env.span(), format!("env_file {:?}: {e}", env.get_ref()))
                    })?)
                };
        }
        for f in raw.file {
            let line = line_of(text, f.path.span().start);
            let shown = f.path.get_ref().clone();
            let err = |msg: String| at(f.path.span(), format!("[[file]] {shown:?}: {msg}"));
            let path = parse_path(f.path.get_ref()).map_err(&err)?;
            let mode = match &f.mode {
                Some(m) => Some(parse_mode(m.get_ref()).map_err(|e| at(m.span(), e))?),
                None => None,
            };
            let given = [f.format.is_some(), f.secret.is_some(), f.template.is_some()];
            match given.iter().filter(|&&g| g).count() {
                0 => {
                    return Err(err(
                        "say what it contains: format = \"dotenv\" | \"json\" | \"properties\", \
                         secret = \"NAME\" or template = \"PATH\""
                            .into(),
                    ));
                }
                1 => {}
                _ => {
                    return Err(err(
                        "format, secret and template exclude each other: keep one".into(),
                    ));
                }
            }
            if f.secrets.is_some() && f.format.is_none() {
                return Err(err(
                    "secrets = [...] goes with format only; a template names its secrets itself"
                        .into(),
                ));
            }
            let kind = if let Some(format) = f.format {
                if let Some(list) = &f.secrets {
                    check_list(list).map_err(&err)?;
                }
                FileKind::Format {
                    format,
                    secrets: f.secrets,
                }
            } else if let Some(secret) = f.secret {
                if secret.is_empty() {
                    return Err(err("secret is empty".into()));
                }
                FileKind::Raw { secret }
            } else {
                let template = f.template.unwrap_or_default();
                if template.is_empty() {
                    return Err(err("template is empty".into()));
                }
                FileKind::Template {
                    template: base_dir.join(template),
                }
            };
            config.files.push(FileSpec {
                path,
                kind,
                mode,
                line,
            });
        }

        // Collisions among configured files are known now; those with
        // per-secret files are checked again by render_project.
        let planned: Vec<(&[String], Origin)> = config
            .env_file
            .iter()
            .map(|p| (p.as_slice(), Origin::EnvFile))
            .chain(
                config
                    .files
                    .iter()
                    .map(|f| (f.path.as_slice(), Origin::File { line: f.line })),
            )
            .collect();
        check_collisions(&planned, &config)?;
        Ok(config)
    }

    /// `hushfs.toml` (or "the default configuration") for messages.
    pub(crate) fn source_name(&self) -> String {
        match &self.source {
            Some(p) => p.display().to_string(),
            None => "the default configuration".to_string(),
        }
    }
}

/// 1-based line of byte offset `pos` in `text`.
fn line_of(text: &str, pos: usize) -> usize {
    let pos = pos.min(text.len());
    text.as_bytes()[..pos]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Modes are octal strings ("0400"): a bare TOML integer such as 400 would
/// silently mean 0o620.
fn parse_mode(v: &toml::Value) -> Result<u32, String> {
    let s = match v {
        toml::Value::String(s) => s,
        other => {
            return Err(format!(
                "mode must be an octal string such as \"0400\", not the {} {other}",
                other.type_str()
            ));
        }
    };
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
    {
        return Err(format!(
            "mode {s:?} is not an octal permission such as \"0400\" or \"0640\""
        ));
    }
    let mode = u32::from_str_radix(digits, 8).map_err(|e| format!("mode {s:?}: {e}"))?;
    if mode > 0o777 {
        return Err(format!(
            "mode {s:?} is above 0777: setuid, setgid and sticky bits are not served"
        ));
    }
    Ok(mode)
}

fn check_list(list: &[String]) -> Result<(), String> {
    for (i, name) in list.iter().enumerate() {
        if name.is_empty() {
            return Err("secrets lists an empty name".into());
        }
        if list[..i].contains(name) {
            return Err(format!("secrets lists {name:?} twice"));
        }
    }
    Ok(())
}

/// Splits and checks a path on the mount: relative, `/`-separated,
/// components of 1–128 characters from `[A-Za-z0-9_.@+-]`, not `.` or `..`.
pub fn parse_path(s: &str) -> Result<Vec<String>, String> {
    if s.is_empty() {
        return Err("path is empty".into());
    }
    if s.starts_with('/') {
        return Err("path must be relative to the mount (no leading '/')".into());
    }
    s.split('/')
        .map(|c| check_component(c).map(|()| c.to_string()))
        .collect()
}

/// Checks one path component (also used for per-secret file names).
pub fn check_component(c: &str) -> Result<(), String> {
    if c.is_empty() {
        return Err("path has an empty component ('//' or a trailing '/')".into());
    }
    if c == "." || c == ".." {
        return Err(format!("path component {c:?} is not allowed"));
    }
    if c.len() > MAX_COMPONENT {
        return Err(format!(
            "path component is longer than {MAX_COMPONENT} characters"
        ));
    }
    if let Some(bad) = c
        .chars()
        .find(|&ch| !(ch.is_ascii_alphanumeric() || matches!(ch, '_' | '.' | '@' | '+' | '-')))
    {
        return Err(format!(
            "path component {c:?} contains {bad:?}: use A-Z a-z 0-9 _ . @ + -"
        ));
    }
    Ok(())
}

/// Who asked for a file, for collision messages.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Origin<'a> {
    SecretFile(&'a str),
    EnvFile,
    File { line: usize },
}

impl Origin<'_> {
    pub(crate) fn describe(&self, path: &[String], config: &Config) -> String {
        let shown = path.join("/");
        match self {
            Origin::SecretFile(name) => format!("the file of secret {name:?}"),
            Origin::EnvFile => format!("env_file {shown:?}"),
            Origin::File { line } => {
                format!("[[file]] {shown:?} ({}:{line})", config.source_name())
            }
        }
    }
}

/// Fails if two planned files share a path, or one file's path is a
/// directory of another; the message names both.
pub(crate) fn check_collisions(
    planned: &[(&[String], Origin)],
    config: &Config,
) -> Result<(), RenderError> {
    use std::collections::BTreeMap;
    let mut files: BTreeMap<&[String], usize> = BTreeMap::new();
    let mut dirs: BTreeMap<&[String], usize> = BTreeMap::new();
    let clash = |a: usize, b: usize, why: &str| {
        let (pa, oa) = &planned[a];
        let (pb, ob) = &planned[b];
        RenderError(format!(
            "{} collides with {}: {why}",
            oa.describe(pa, config),
            ob.describe(pb, config)
        ))
    };
    for (i, (path, _)) in planned.iter().enumerate() {
        if let Some(&j) = files.get(path) {
            return Err(clash(j, i, "same path"));
        }
        files.insert(path, i);
        for end in 1..path.len() {
            dirs.entry(&path[..end]).or_insert(i);
        }
    }
    for (path, &i) in &files {
        if let Some(&j) = dirs.get(path) {
            return Err(clash(
                i,
                j,
                &format!("{:?} would be both a file and a directory", path.join("/")),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, RenderError> {
        Config::parse(text, Path::new("/repo"))
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.project, None);
        assert!(c.secret_files);
        assert_eq!(c.mode, 0o400);
        assert_eq!(c.env_file, Some(vec![".env".to_string()]));
        assert!(c.files.is_empty());
        assert_eq!(c.base_dir, Path::new("/repo"));
    }

    #[test]
    fn full_example_parses() {
        let c = parse(
            r#"
project = "shop"
[mount]
env_file = ".env.production"
secret_files = false
mode = "0440"
[[file]]
path = "config/app.json"
format = "json"
secrets = ["DB_PASSWORD"]
mode = "0440"
[[file]]
path = "ssh/id_ed25519"
secret = "DEPLOY_KEY"
mode = "0600"
[[file]]
path = "config/database.yml"
template = "deploy/database.yml.tmpl"
"#,
        )
        .unwrap();
        assert_eq!(c.project.as_deref(), Some("shop"));
        assert!(!c.secret_files);
        assert_eq!(c.mode, 0o440);
        assert_eq!(c.env_file, Some(vec![".env.production".to_string()]));
        assert_eq!(c.files.len(), 3);
        assert_eq!(c.files[0].path, ["config", "app.json"]);
        assert_eq!(
            c.files[0].kind,
            FileKind::Format {
                format: Format::Json,
                secrets: Some(vec!["DB_PASSWORD".into()])
            }
        );
        assert_eq!(c.files[0].line, 8);
        assert_eq!(c.files[1].mode, Some(0o600));
        assert_eq!(
            c.files[1].kind,
            FileKind::Raw {
                secret: "DEPLOY_KEY".into()
            }
        );
        assert_eq!(c.files[2].mode, None);
        assert_eq!(
            c.files[2].kind,
            FileKind::Template {
                template: PathBuf::from("/repo/deploy/database.yml.tmpl")
            }
        );
    }

    #[test]
    fn empty_env_file_serves_none() {
        let c = parse("[mount]\nenv_file = \"\"\n").unwrap();
        assert_eq!(c.env_file, None);
    }

    #[test]
    fn unknown_keys_are_rejected_with_line() {
        let e = err("project = \"shop\"\ncolour = \"red\"\n");
        assert!(e.contains("hushfs.toml:2:"), "{e}");
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = err("[mount]\nenv-file = \".env\"\n");
        assert!(e.contains("unknown field `env-file`"), "{e}");
        // The example in docs/CONFIGURATION.md.
        let e = Config::parse(
            "[[file]]\npath = \"a\"\nfromat = \"json\"\n",
            Path::new("/src/shop"),
        )
        .unwrap_err()
        .0;
        assert_eq!(
            e,
            "/src/shop/hushfs.toml:3: unknown field `fromat`, expected one of \
             `path`, `format`, `secrets`, `secret`, `template`, `mode`"
        );
        let e = err("[[file]]\npath = \"a\"\nformat = \"json\"\nsecret_list = []\n");
        assert!(e.contains("unknown field `secret_list`"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn syntax_errors_are_one_line_with_line_number() {
        let e = err("project = \"shop\"\n[mount\n");
        assert!(e.contains(":2:"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn unknown_format_is_rejected() {
        let e = err("[[file]]\npath = \"a\"\nformat = \"yaml\"\n");
        assert!(e.contains("unknown variant `yaml`"), "{e}");
    }

    #[test]
    fn modes() {
        for (s, m) in [("0400", 0o400), ("600", 0o600), ("0o640", 0o640), ("0", 0)] {
            let c = parse(&format!("[mount]\nmode = \"{s}\"\n")).unwrap();
            assert_eq!(c.mode, m, "{s}");
        }
        for bad in ["\"0800\"", "\"1777\"", "\"\"", "\"rw\"", "\"00400\"", "400"] {
            let e = err(&format!("[mount]\nmode = {bad}\n"));
            assert!(e.contains("hushfs.toml:2:"), "{bad}: {e}");
            assert!(e.contains("mode"), "{bad}: {e}");
        }
    }

    #[test]
    fn path_rules() {
        for ok in [
            ".pgpass",
            ".env.production",
            "a/b/c",
            "ssh/id_ed25519",
            "user@host+x-y_z",
            "..hidden",
        ] {
            assert!(parse_path(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(129);
        for bad in [
            "", "/etc/x", "a//b", "a/", ".", "..", "a/../b", "a/./b", "a b", "a\\b", "é", "a:b",
            &long,
        ] {
            assert!(parse_path(bad).is_err(), "{bad:?}");
        }
        assert!(parse_path(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn bad_file_path_names_entry_and_line() {
        let e = err("[[file]]\nformat = \"json\"\npath = \"../x\"\n");
        assert!(e.contains("hushfs.toml:3:"), "{e}");
        assert!(e.contains("\"../x\""), "{e}");
    }

    #[test]
    fn file_kind_must_be_exactly_one() {
        let e = err("[[file]]\npath = \"a\"\n");
        assert!(e.contains("say what it contains"), "{e}");
        let e = err("[[file]]\npath = \"a\"\nformat = \"json\"\nsecret = \"X\"\n");
        assert!(e.contains("exclude each other"), "{e}");
        let e = err("[[file]]\npath = \"a\"\nsecret = \"X\"\ntemplate = \"t\"\n");
        assert!(e.contains("exclude each other"), "{e}");
        let e = err("[[file]]\npath = \"a\"\nsecret = \"X\"\nsecrets = [\"Y\"]\n");
        assert!(e.contains("goes with format only"), "{e}");
        let e = err("[[file]]\npath = \"a\"\nformat = \"json\"\nsecrets = [\"Y\", \"Y\"]\n");
        assert!(e.contains("twice"), "{e}");
        let e = err("[[file]]\npath = \"a\"\nformat = \"json\"\nsecrets = [\"\"]\n");
        assert!(e.contains("empty name"), "{e}");
    }

    #[test]
    fn missing_path_is_an_error() {
        let e = err("[[file]]\nformat = \"json\"\n");
        assert!(e.contains("missing field `path`"), "{e}");
    }

    #[test]
    fn bad_project_name() {
        let e = err("project = \"a/b\"\n");
        assert!(e.contains("hushfs.toml:1:"), "{e}");
        assert!(e.contains("project"), "{e}");
    }

    #[test]
    fn configured_collisions_fail_at_parse() {
        let e = err(
            "[[file]]\npath = \"a/b\"\nformat = \"json\"\n[[file]]\npath = \"a/b\"\nformat = \"dotenv\"\n",
        );
        assert!(e.contains("[[file]] \"a/b\" (/repo/hushfs.toml:2)"), "{e}");
        assert!(e.contains("(/repo/hushfs.toml:5)"), "{e}");
        assert!(e.contains("same path"), "{e}");

        let e = err(
            "[[file]]\npath = \"a/b/c\"\nformat = \"json\"\n[[file]]\npath = \"a/b\"\nformat = \"json\"\n",
        );
        assert!(e.contains("both a file and a directory"), "{e}");
        assert!(e.contains(":2)") && e.contains(":5)"), "{e}");

        let e = err("[[file]]\npath = \".env\"\nformat = \"dotenv\"\n");
        assert!(e.contains("env_file \".env\""), "{e}");

        let e = err("[mount]\nenv_file = \"x\"\n[[file]]\npath = \"x/y\"\nformat = \"json\"\n");
        assert!(e.contains("env_file \"x\""), "{e}");
    }

    #[test]
    fn load_uses_file_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hushfs.toml");
        std::fs::write(
            &p,
            "project = \"shop\"\n[[file]]\npath = \"x\"\ntemplate = \"t/x.tmpl\"\n",
        )
        .unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(c.base_dir, dir.path());
        assert_eq!(c.source.as_deref(), Some(p.as_path()));
        assert_eq!(
            c.files[0].kind,
            FileKind::Template {
                template: dir.path().join("t/x.tmpl")
            }
        );
        let sub = dir.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        assert_eq!(Config::find(&sub), Some(p.clone()));

        let e = Config::load(&dir.path().join("missing.toml"))
            .unwrap_err()
            .0;
        assert!(
            e.contains("cannot read") && e.contains("missing.toml"),
            "{e}"
        );
    }
}
