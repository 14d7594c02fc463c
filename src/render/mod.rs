//! Secrets → file bytes. Pure functions: no I/O except reading template
//! files named by the configuration, no FUSE, no globals. The mount serves
//! whatever `render_project` returns.
//!
//! Every output is built in a `SecretBuf`; values never pass through a
//! `String`, and errors name secrets, files and lines only.

pub mod config;
pub mod dotenv;
pub mod json;
pub mod properties;
pub mod template;

use std::collections::BTreeMap;

pub use config::{Config, FileKind, FileSpec, Format};

use crate::secret::SecretBytes;
use config::{Origin, check_collisions, check_component};

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

/// What one planned file will contain, before any value is touched.
enum Job<'a> {
    SecretFile(&'a str),
    EnvFile,
    File(&'a FileSpec),
}

/// Renders every file the configuration asks for: by default one file per
/// secret and `.env`, plus the `[[file]]` entries of hushfs.toml.
///
/// Paths are checked for collisions before anything is rendered, so a bad
/// configuration fails the same way whatever the values are.
pub fn render_project(
    secrets: &BTreeMap<String, SecretBytes>,
    config: &Config,
) -> Result<Vec<Rendered>, RenderError> {
    let mut secret_paths: Vec<Vec<String>> = Vec::new();
    if config.secret_files {
        for name in secrets.keys() {
            check_component(name).map_err(|e| {
                RenderError(format!(
                    "secret {name:?} cannot be served as a file ({e}); \
                     set secret_files = false in [mount] of hushfs.toml"
                ))
            })?;
            secret_paths.push(vec![name.clone()]);
        }
    }

    let mut planned: Vec<(&[String], Origin, Job)> = Vec::new();
    for (path, name) in secret_paths.iter().zip(secrets.keys()) {
        planned.push((path, Origin::SecretFile(name), Job::SecretFile(name)));
    }
    if let Some(env) = &config.env_file {
        planned.push((env, Origin::EnvFile, Job::EnvFile));
    }
    for f in &config.files {
        planned.push((&f.path, Origin::File { line: f.line }, Job::File(f)));
    }
    let paths: Vec<(&[String], Origin)> = planned.iter().map(|(p, o, _)| (*p, *o)).collect();
    check_collisions(&paths, config)?;

    let mut out = Vec::with_capacity(planned.len());
    for (path, origin, job) in planned {
        let label = origin.describe(path, config);
        let (content, used, mode) = match job {
            Job::SecretFile(name) => (secrets[name].clone(), vec![name.to_string()], config.mode),
            Job::EnvFile => {
                let entries: Vec<_> = secrets.iter().map(|(k, v)| (k.as_str(), v)).collect();
                let (content, used) = dotenv::render(&entries, config.secret_files);
                (content, used, config.mode)
            }
            Job::File(spec) => {
                let (content, used) = render_file(secrets, spec, config, &label)?;
                (content, used, spec.mode.unwrap_or(config.mode))
            }
        };
        out.push(Rendered {
            path: path.to_vec(),
            content,
            mode,
            secrets: used,
        });
    }
    Ok(out)
}

fn render_file(
    secrets: &BTreeMap<String, SecretBytes>,
    spec: &FileSpec,
    config: &Config,
    label: &str,
) -> Result<(SecretBytes, Vec<String>), RenderError> {
    let missing =
        |name: &str| RenderError(format!("{label}: secret {name:?} is not in the project"));
    match &spec.kind {
        FileKind::Raw { secret } => {
            let value = secrets.get(secret).ok_or_else(|| missing(secret))?;
            Ok((value.clone(), vec![secret.clone()]))
        }
        FileKind::Format {
            format,
            secrets: list,
        } => {
            if let Some(name) = list.iter().flatten().find(|n| !secrets.contains_key(*n)) {
                return Err(missing(name));
            }
            let entries: Vec<(&str, &SecretBytes)> = secrets
                .iter()
                .filter(|(k, _)| list.as_ref().is_none_or(|l| l.contains(k)))
                .map(|(k, v)| (k.as_str(), v))
                .collect();
            match format {
                Format::Dotenv => Ok(dotenv::render(&entries, config.secret_files)),
                Format::Json => Ok((json::render(&entries, label)?, names(&entries))),
                Format::Properties => Ok((properties::render(&entries, label)?, names(&entries))),
            }
        }
        FileKind::Template { template } => template::Template::load(template)
            .and_then(|t| t.render(secrets))
            .map_err(|e| RenderError(format!("{label}: {}", e.0))),
    }
}

fn names(entries: &[(&str, &SecretBytes)]) -> Vec<String> {
    entries.iter().map(|(k, _)| k.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn secrets(pairs: &[(&str, &[u8])]) -> BTreeMap<String, SecretBytes> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), SecretBytes::copy_from(v)))
            .collect()
    }

    fn find<'a>(out: &'a [Rendered], path: &str) -> &'a Rendered {
        out.iter()
            .find(|r| r.path.join("/") == path)
            .unwrap_or_else(|| panic!("no {path}"))
    }

    #[test]
    fn defaults_serve_one_file_per_secret_and_env() {
        let s = secrets(&[("A", b"x\x00\xff"), ("B", b"it's")]);
        let out = render_project(&s, &Config::default()).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(find(&out, "A").content.expose(), b"x\x00\xff");
        assert_eq!(find(&out, "A").mode, 0o400);
        assert_eq!(find(&out, "A").secrets, ["A"]);
        let env = find(&out, ".env");
        assert_eq!(
            env.content.expose(),
            b"# A omitted: the value contains a NUL byte; read the file A\nB=\"it's\"\n"
        );
        assert_eq!(env.secrets, ["B"]);
    }

    #[test]
    fn configured_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.tmpl"), "pw={{ B | hex }}\n").unwrap();
        let config = Config::parse(
            r#"
[mount]
env_file = ""
secret_files = false
mode = "0440"
[[file]]
path = "config/app.json"
format = "json"
secrets = ["A"]
[[file]]
path = "ssh/key"
secret = "B"
mode = "0600"
[[file]]
path = "config/t"
template = "t.tmpl"
[[file]]
path = "app.properties"
format = "properties"
[[file]]
path = "sub/.env"
format = "dotenv"
"#,
            dir.path(),
        )
        .unwrap();
        let s = secrets(&[("A", b"a\"b"), ("B", b"k")]);
        let out = render_project(&s, &config).unwrap();
        let paths: Vec<String> = out.iter().map(|r| r.path.join("/")).collect();
        assert_eq!(
            paths,
            [
                "config/app.json",
                "ssh/key",
                "config/t",
                "app.properties",
                "sub/.env"
            ]
        );
        let json = find(&out, "config/app.json");
        assert_eq!(json.content.expose(), b"{\n  \"A\": \"a\\\"b\"\n}\n");
        assert_eq!(json.mode, 0o440);
        assert_eq!(json.secrets, ["A"]);
        assert_eq!(find(&out, "ssh/key").content.expose(), b"k");
        assert_eq!(find(&out, "ssh/key").mode, 0o600);
        assert_eq!(find(&out, "config/t").content.expose(), b"pw=6b\n");
        assert_eq!(find(&out, "config/t").secrets, ["B"]);
        assert_eq!(
            find(&out, "app.properties").content.expose(),
            b"A=a\"b\nB=k\n"
        );
        assert_eq!(
            find(&out, "sub/.env").content.expose(),
            b"A='a\"b'\nB='k'\n"
        );
    }

    #[test]
    fn missing_listed_secret_is_an_error() {
        let config = Config::parse(
            "[[file]]\npath = \"a.json\"\nformat = \"json\"\nsecrets = [\"A\", \"NOPE\"]\n",
            Path::new("/r"),
        )
        .unwrap();
        let e = render_project(&secrets(&[("A", b"v")]), &config)
            .err()
            .unwrap()
            .0;
        assert_eq!(
            e,
            "[[file]] \"a.json\" (/r/hushfs.toml:2): secret \"NOPE\" is not in the project"
        );

        let config = Config::parse(
            "[[file]]\npath = \"k\"\nsecret = \"NOPE\"\n",
            Path::new("/r"),
        )
        .unwrap();
        let e = render_project(&secrets(&[("A", b"v")]), &config)
            .err()
            .unwrap()
            .0;
        assert!(e.contains("\"NOPE\" is not in the project"), "{e}");
    }

    #[test]
    fn secret_file_collisions_name_both() {
        let config =
            Config::parse("[[file]]\npath = \"DB\"\nsecret = \"A\"\n", Path::new("/r")).unwrap();
        let e = render_project(&secrets(&[("A", b"v"), ("DB", b"w")]), &config)
            .err()
            .unwrap()
            .0;
        assert_eq!(
            e,
            "the file of secret \"DB\" collides with [[file]] \"DB\" (/r/hushfs.toml:2): same path"
        );

        let config = Config::parse(
            "[[file]]\npath = \"DB/x\"\nsecret = \"A\"\n",
            Path::new("/r"),
        )
        .unwrap();
        let e = render_project(&secrets(&[("A", b"v"), ("DB", b"w")]), &config)
            .err()
            .unwrap()
            .0;
        assert!(e.contains("the file of secret \"DB\""), "{e}");
        assert!(e.contains("both a file and a directory"), "{e}");

        let config = Config::parse("[mount]\nenv_file = \"app.env\"\n", Path::new("/r")).unwrap();
        let e = render_project(&secrets(&[("app.env", b"v")]), &config)
            .err()
            .unwrap()
            .0;
        assert!(
            e.contains("the file of secret \"app.env\" collides with env_file \"app.env\""),
            "{e}"
        );
        // Without per-secret files there is no collision.
        let config = Config::parse(
            "[mount]\nenv_file = \"app.env\"\nsecret_files = false\n",
            Path::new("/r"),
        )
        .unwrap();
        assert!(render_project(&secrets(&[("app.env", b"v")]), &config).is_ok());
    }

    #[test]
    fn template_errors_name_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::parse(
            "[[file]]\npath = \"x\"\ntemplate = \"missing.tmpl\"\n",
            dir.path(),
        )
        .unwrap();
        let e = render_project(&secrets(&[]), &config).err().unwrap().0;
        assert!(e.starts_with("[[file]] \"x\" ("), "{e}");
        assert!(
            e.contains("cannot read template") && e.contains("missing.tmpl"),
            "{e}"
        );

        std::fs::write(dir.path().join("t"), "\n{{ NOPE }}").unwrap();
        let config =
            Config::parse("[[file]]\npath = \"x\"\ntemplate = \"t\"\n", dir.path()).unwrap();
        let e = render_project(&secrets(&[]), &config).err().unwrap().0;
        let want = format!(
            "[[file]] \"x\" ({}:2): template {}:2: secret \"NOPE\" is not in the project",
            dir.path().join("hushfs.toml").display(),
            dir.path().join("t").display()
        );
        assert_eq!(e, want);
    }

    #[test]
    fn errors_never_carry_values() {
        let value = b"hunter2-\xff-secret";
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t"), "{{ S | json }}").unwrap();
        for (kind, line) in [
            ("json", "format = \"json\""),
            ("properties", "format = \"properties\""),
            ("template", "template = \"t\""),
        ] {
            let config =
                Config::parse(&format!("[[file]]\npath = \"f\"\n{line}\n"), dir.path()).unwrap();
            let e = render_project(&secrets(&[("S", value)]), &config)
                .err()
                .unwrap_or_else(|| panic!("{kind} accepted non-UTF-8"))
                .0;
            assert!(!e.contains("hunter2"), "{kind}: {e}");
            assert!(e.contains("\"S\""), "{kind}: {e}");
        }
    }
}
