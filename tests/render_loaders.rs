//! The `.env` hushfs serves, read back by the loaders people use: sh and
//! bash (`set -a; . ./.env`), python-dotenv (`dotenv_values`, default
//! `interpolate=True`, and `interpolate=False`) and dotenvy (what
//! `hushfs import` uses). sh, bash and dotenvy must read every written value
//! exactly; python-dotenv must read exactly what docs/CONFIGURATION.md says
//! it reads. python-dotenv is installed by .ci/install-deps; without it
//! these tests fail rather than skip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use hushfs::render::dotenv::{self, Quoting};
use hushfs::render::{Config, render_project};
use hushfs::secret::SecretBytes;

/// Set for the loaders so `${HUSHFS_TEST_X}` has something to expand to.
const X_VAR: &str = "HUSHFS_TEST_X";
const X_VAL: &str = "xval";

/// What python-dotenv is documented to read for a value.
#[derive(Clone, Debug, PartialEq)]
enum Py {
    Exact,
    Reads(Vec<u8>),
    /// The entry is dropped (with a logged warning).
    Missing,
}

struct Case {
    name: &'static str,
    value: Vec<u8>,
    /// Left out of the file (a comment says why).
    omitted: bool,
    /// python-dotenv with the default `interpolate=True`.
    py: Py,
    /// python-dotenv with `interpolate=False`.
    py_raw: Py,
}

fn case(name: &'static str, value: &[u8], py: Py) -> Case {
    Case {
        name,
        value: value.to_vec(),
        omitted: false,
        py_raw: py.clone(),
        py,
    }
}

/// A `${...}` value: expanded by python-dotenv unless `interpolate=False`.
fn interp(name: &'static str, value: &[u8], py: &[u8], py_raw: Py) -> Case {
    Case {
        py: Py::Reads(py.to_vec()),
        py_raw,
        ..case(name, value, Py::Exact)
    }
}

fn omitted(name: &'static str, value: &[u8]) -> Case {
    Case {
        omitted: true,
        py: Py::Missing,
        py_raw: Py::Missing,
        ..case(name, value, Py::Exact)
    }
}

fn reads(v: &[u8]) -> Py {
    Py::Reads(v.to_vec())
}

fn tricky_cases() -> Vec<Case> {
    vec![
        case("PLAIN", b"hello world", Py::Exact),
        case("EMPTY", b"", Py::Exact),
        case("SPACES", b"  padded  value  ", Py::Exact),
        case("SQUOTE", b"it's", Py::Exact),
        case("DQUOTE", b"say \"hi\"", Py::Exact),
        case("BOTH_QUOTES", b"it's \"quoted\"", Py::Exact),
        case("BACKSLASH", b"C:\\path\\to", Py::Exact),
        case("BACKSLASH_N", b"not\\na newline", Py::Exact),
        case("DOUBLE_BACKSLASH", b"a\\\\b", Py::Exact),
        case("DOLLAR_HOME", b"$HOME", Py::Exact),
        case("DOLLAR_PAREN", b"$(id)", Py::Exact),
        case("BACKTICK", b"`id`", Py::Exact),
        case("NEWLINES", b"line1\nline2\n", Py::Exact),
        case(
            "LOOKS_LIKE_ENTRIES",
            b"x'\nOTHER=injected\n# c\n",
            Py::Exact,
        ),
        case("TAB", b"a\tb", Py::Exact),
        case(
            "UNICODE",
            "héllo ✓ 😀 \u{feff}\u{2028}".as_bytes(),
            Py::Exact,
        ),
        case("HASH", b"value # not a comment", Py::Exact),
        case("HASH_START", b"#start", Py::Exact),
        case("EQUALS", b"a=b==c", Py::Exact),
        case("BANG_PERCENT", b"!x %s %%", Py::Exact),
        // CR: python-dotenv opens the file in text mode.
        case("CRLF", b"line1\r\nline2", reads(b"line1\nline2")),
        case("CR_END", b"x\r", reads(b"x\n")),
        // python-dotenv expands ${...} in every quoting.
        interp("BRACE_VAR", b"${HUSHFS_TEST_X}", b"xval", Py::Exact),
        interp(
            "BRACE_DEFAULT",
            b"${HUSHFS_TEST_UNSET:-fallback}",
            b"fallback",
            Py::Exact,
        ),
        // Backslash with $ or `, no ': single quotes; python reads \\ as \.
        case("BS_DOLLAR", b"\\$HOME", Py::Exact),
        case("BS_BACKTICK", b"`a`\\b", Py::Exact),
        case("BS_BS_DOLLAR", b"a\\\\b $x", reads(b"a\\b $x")),
        // ' and $: double quotes with \$; python keeps the backslash.
        case("SQUOTE_DOLLAR", b"it's $HOME", reads(b"it's \\$HOME")),
        interp(
            "SQUOTE_BRACE",
            b"it's ${HUSHFS_TEST_X}",
            b"it's \\xval",
            reads(b"it's \\${HUSHFS_TEST_X}"),
        ),
        // Trailing backslashes: python drops the entry, and only that one.
        case("TRAILING_BS", b"C:\\dir\\", Py::Missing),
        case("TRAILING_BS_DOLLAR", b"$x\\\\", Py::Missing),
        case("TRAILING_BS_SQUOTE", b"it's\\", Py::Missing),
        case("ONLY_BS", b"\\", Py::Missing),
        omitted("SQUOTE_BACKTICK", b"it's `id`"),
        omitted("NUL", b"a\0b"),
        omitted("NOT_UTF8", b"\xff\xfe"),
        omitted("db.password", b"x"),
        case("ZZ_LAST", b"still read", Py::Exact),
    ]
}

/// Renders the project's `.env` the way the mount does and writes it out.
fn write_env(dir: &Path, pairs: &[(&str, &[u8])]) -> (PathBuf, Vec<u8>) {
    let secrets: BTreeMap<String, SecretBytes> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), SecretBytes::copy_from(v)))
        .collect();
    let out = render_project(&secrets, &Config::default()).expect("renders");
    let env = out
        .iter()
        .find(|r| r.path == [".env"])
        .expect("serves .env");
    let path = dir.join(".env");
    std::fs::write(&path, env.content.expose()).unwrap();
    (path, env.content.expose().to_vec())
}

/// Sources the file in `shell` with `set -a` and returns each variable that
/// is set (unset ones are absent).
fn read_shell(shell: &str, env: &Path, names: &[&str]) -> BTreeMap<String, Vec<u8>> {
    let out_dir = tempfile::tempdir().unwrap();
    let mut script = String::from("set -a\n. \"$1\" || exit 3\n");
    for n in names.iter().filter(|n| dotenv::is_var_name(n)) {
        script.push_str(&format!(
            "if [ -n \"${{{n}+x}}\" ]; then printf '%s' \"${n}\" > \"$2/{n}\"; fi\n"
        ));
    }
    let res = Command::new(shell)
        .args(["-c", &script, shell])
        .arg(env)
        .arg(out_dir.path())
        .env(X_VAR, X_VAL)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shell}: {e}"));
    assert!(
        res.status.success() && res.stderr.is_empty(),
        "{shell} failed to source the file: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let mut got = BTreeMap::new();
    for n in names {
        if let Ok(v) = std::fs::read(out_dir.path().join(n)) {
            got.insert(n.to_string(), v);
        }
    }
    got
}

const PY_READER: &str = r#"
import json, sys
try:
    from dotenv import dotenv_values
except ImportError:
    sys.exit("python-dotenv is not installed: run .ci/install-deps")
values = dotenv_values(sys.argv[1], interpolate=(sys.argv[2] == "1"))
print(json.dumps({k: None if v is None else v.encode("utf-8").hex() for k, v in values.items()}))
"#;

/// Reads the file with python-dotenv; also returns its stderr (warnings).
fn read_python(env: &Path, interpolate: bool) -> (BTreeMap<String, Vec<u8>>, String) {
    let res = Command::new("python3")
        .args(["-c", PY_READER])
        .arg(env)
        .arg(if interpolate { "1" } else { "0" })
        .env(X_VAR, X_VAL)
        .env_remove("HUSHFS_TEST_UNSET")
        .output()
        .expect("python3 runs (install it with .ci/install-deps)");
    let stderr = String::from_utf8_lossy(&res.stderr).into_owned();
    assert!(res.status.success(), "python-dotenv failed: {stderr}");
    let map: BTreeMap<String, Option<String>> =
        serde_json::from_slice(&res.stdout).expect("reader prints JSON");
    let got = map
        .into_iter()
        .filter_map(|(k, v)| Some((k, hex_decode(&v?))))
        .collect();
    (got, stderr)
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Reads the file with dotenvy, as `hushfs import` does; every line must
/// parse.
fn read_dotenvy(env: &Path) -> BTreeMap<String, Vec<u8>> {
    dotenvy::from_path_iter(env)
        .expect("dotenvy opens the file")
        .map(|item| {
            let (k, v) = item.expect("dotenvy parses every line");
            (k, v.into_bytes())
        })
        .collect()
}

fn show(v: Option<&Vec<u8>>) -> String {
    match v {
        Some(v) => format!("{:?}", String::from_utf8_lossy(v)),
        None => "<missing>".into(),
    }
}

/// Checks one loader's view against expectations; collects every mismatch
/// so a failure lists them all.
fn compare(
    loader: &str,
    got: &BTreeMap<String, Vec<u8>>,
    want: &BTreeMap<String, Option<Vec<u8>>>,
    errors: &mut Vec<String>,
) {
    for (name, want) in want {
        if got.get(name) != want.as_ref() {
            errors.push(format!(
                "{loader}: {name}: got {}, want {}",
                show(got.get(name)),
                show(want.as_ref())
            ));
        }
    }
    for name in got.keys() {
        if !want.contains_key(name) {
            errors.push(format!("{loader}: unexpected variable {name}"));
        }
    }
}

fn expected(cases: &[Case], py: impl Fn(&Case) -> &Py) -> BTreeMap<String, Option<Vec<u8>>> {
    cases
        .iter()
        .map(|c| {
            let v = match py(c) {
                Py::Exact => Some(c.value.clone()),
                Py::Reads(v) => Some(v.clone()),
                Py::Missing => None,
            };
            (c.name.to_string(), v)
        })
        .collect()
}

#[test]
fn tricky_values_read_back_by_every_loader() {
    let cases = tricky_cases();
    let dir = tempfile::tempdir().unwrap();
    let pairs: Vec<(&str, &[u8])> = cases.iter().map(|c| (c.name, c.value.as_slice())).collect();
    let (env, content) = write_env(dir.path(), &pairs);
    let names: Vec<&str> = cases.iter().map(|c| c.name).collect();

    let exact: BTreeMap<String, Option<Vec<u8>>> = cases
        .iter()
        .map(|c| (c.name.to_string(), (!c.omitted).then(|| c.value.clone())))
        .collect();
    let mut errors = Vec::new();
    compare("sh", &read_shell("sh", &env, &names), &exact, &mut errors);
    compare(
        "bash",
        &read_shell("bash", &env, &names),
        &exact,
        &mut errors,
    );
    compare("dotenvy", &read_dotenvy(&env), &exact, &mut errors);

    let (py, warnings) = read_python(&env, true);
    compare(
        "python-dotenv",
        &py,
        &expected(&cases, |c| &c.py),
        &mut errors,
    );
    let (py_raw, _) = read_python(&env, false);
    compare(
        "python-dotenv interpolate=False",
        &py_raw,
        &expected(&cases, |c| &c.py_raw),
        &mut errors,
    );
    // Each dropped entry is reported, so the user sees it.
    let dropped = cases.iter().filter(|c| c.py == Py::Missing && !c.omitted);
    assert_eq!(
        warnings.matches("could not parse statement").count(),
        dropped.count(),
        "python-dotenv warnings: {warnings}"
    );

    for c in cases.iter().filter(|c| c.omitted) {
        let comment = format!("# {} omitted: ", c.name);
        if !content
            .split(|&b| b == b'\n')
            .any(|l| l.starts_with(comment.as_bytes()))
        {
            errors.push(format!("no comment line for omitted {}", c.name));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// xorshift64*: deterministic values without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What python-dotenv reads for a value without `${`, per the documented
/// rules; `None` when it drops the entry.
fn python_model(name: &str, value: &[u8]) -> Option<Vec<u8>> {
    if value.ends_with(b"\\") {
        return None;
    }
    let mut v = Vec::new();
    match dotenv::classify(name, value).ok()? {
        Quoting::Single | Quoting::Double => v.extend_from_slice(value),
        Quoting::SingleWithBackslash => {
            let mut i = 0;
            while i < value.len() {
                v.push(value[i]);
                i += if value[i..].starts_with(b"\\\\") {
                    2
                } else {
                    1
                };
            }
        }
        Quoting::DoubleEscapedDollar => {
            for &b in value {
                if b == b'$' {
                    v.push(b'\\');
                }
                v.push(b);
            }
        }
    }
    // Text mode: CRLF and CR become LF.
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'\r' {
            out.push(b'\n');
            i += if v.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    Some(out)
}

#[test]
fn random_values_read_back_by_every_loader() {
    const PIECES: &[&str] = &[
        "a", "Z", "0", "_", " ", "'", "\"", "\\", "\\\\", "$", "`", "{", "}", "${", "#", "=", ":",
        "!", "\t", "\n", "\r", "\r\n", "é", "😀", "$HOME", "\\n", "\\'", "\\\"", "\\$",
    ];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let values: Vec<Vec<u8>> = (0..400)
        .map(|_| {
            let len = rng.below(9);
            (0..len)
                .flat_map(|_| PIECES[rng.below(PIECES.len())].bytes())
                .collect()
        })
        .collect();
    let names: Vec<String> = (0..values.len()).map(|i| format!("V{i:03}")).collect();
    let pairs: Vec<(&str, &[u8])> = names
        .iter()
        .map(String::as_str)
        .zip(values.iter().map(Vec::as_slice))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (env, _) = write_env(dir.path(), &pairs);
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();

    let exact: BTreeMap<String, Option<Vec<u8>>> = pairs
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                dotenv::classify(n, v).ok().map(|_| v.to_vec()),
            )
        })
        .collect();
    assert!(
        exact.values().filter(|v| v.is_some()).count() > 300,
        "the generator should mostly produce writable values"
    );
    let mut errors = Vec::new();
    compare(
        "sh",
        &read_shell("sh", &env, &name_refs),
        &exact,
        &mut errors,
    );
    compare(
        "bash",
        &read_shell("bash", &env, &name_refs),
        &exact,
        &mut errors,
    );
    compare("dotenvy", &read_dotenvy(&env), &exact, &mut errors);

    // python-dotenv: interpolation off (no ${ model needed), everything
    // else as documented.
    let (py, _) = read_python(&env, false);
    let want: BTreeMap<String, Option<Vec<u8>>> = pairs
        .iter()
        .map(|(n, v)| (n.to_string(), python_model(n, v)))
        .collect();
    compare("python-dotenv interpolate=False", &py, &want, &mut errors);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
