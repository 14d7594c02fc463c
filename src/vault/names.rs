//! Project and secret names. They become file names on the mount and keys in
//! the vault, so they are restricted to a portable, unambiguous alphabet.

use std::fmt;

use crate::error::{Error, Result};

pub const MAX_NAME: usize = 128;

/// Prefix of hushfs's own per-project credentials (the token or AppRole
/// secret of a central source, docs/VAULT-FORMAT.md). `validate` refuses a
/// leading `.`, so no user secret can ever carry such a name.
pub const CREDENTIAL_PREFIX: &str = ".source.";

/// Whether `name` is a credential name: the prefix, then a valid name.
pub fn is_credential(name: &str) -> bool {
    name.strip_prefix(CREDENTIAL_PREFIX)
        .is_some_and(|rest| validate("secret", rest).is_ok())
}

/// Checks a project or secret name: 1–128 characters of `[A-Za-z0-9_.-]`,
/// not starting with `.` (which also rules out `.` and `..`).
pub fn validate(kind: &str, name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        Some("is empty".to_string())
    } else if name.len() > MAX_NAME {
        Some(format!("is longer than {MAX_NAME} characters"))
    } else if name.starts_with('.') {
        Some("starts with '.'".to_string())
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
            .map(|c| format!("contains {}", describe_char(c)))
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(Error::usage(format!(
            "{kind} name {} {p}: use 1-{MAX_NAME} characters of A-Z a-z 0-9 _ . - not starting with '.'",
            shown(name)
        ))),
    }
}

fn describe_char(c: char) -> String {
    match c {
        '/' => "'/'".into(),
        '\0' => "a NUL byte".into(),
        c if c.is_control() => format!("control character U+{:04X}", c as u32),
        c => format!("{c:?}"),
    }
}

/// A name as shown in messages: quoted, control characters escaped, cut at
/// 40 characters so a pasted blob cannot flood the terminal.
fn shown(name: &str) -> String {
    let mut s: String = name.chars().take(40).flat_map(char::escape_debug).collect();
    if name.chars().count() > 40 {
        s.push('…');
    }
    format!("'{s}'")
}

/// `PROJECT/NAME`, validated.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SecretRef {
    pub project: String,
    pub name: String,
}

impl SecretRef {
    pub fn parse(s: &str) -> Result<Self> {
        let Some((project, name)) = s.split_once('/') else {
            return Err(Error::usage(format!(
                "{} is not PROJECT/NAME: name the project, e.g. myapp/DB_PASSWORD",
                shown(s)
            )));
        };
        validate("project", project)?;
        validate("secret", name)?;
        Ok(SecretRef {
            project: project.to_string(),
            name: name.to_string(),
        })
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.project, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in [
            "DB_PASSWORD",
            "a",
            "x.y-z_1",
            "A".repeat(128).as_str(),
            "a..",
        ] {
            validate("secret", n).unwrap();
        }
    }

    #[test]
    fn rejects_bad_names() {
        let long = "a".repeat(129);
        for n in [
            "",
            ".",
            "..",
            ".env",
            "a/b",
            "a\0b",
            "a b",
            "é",
            long.as_str(),
            "a\n",
        ] {
            let e = validate("secret", n).unwrap_err().to_string();
            assert!(e.contains("use 1-128 characters"), "{e}");
        }
    }

    #[test]
    fn credential_names_are_not_secret_names() {
        assert!(is_credential(".source.token"));
        assert!(!is_credential(".source."));
        assert!(!is_credential("source.token"));
        assert!(!is_credential(".source./x"));
        assert!(validate("secret", ".source.token").is_err());
    }

    #[test]
    fn secret_ref_needs_a_project() {
        assert!(SecretRef::parse("NAME").is_err());
        assert!(SecretRef::parse("p/a/b").is_err());
        let r = SecretRef::parse("p/N").unwrap();
        assert_eq!((r.project.as_str(), r.name.as_str()), ("p", "N"));
    }

    proptest! {
        #[test]
        fn validation_matches_the_rule(s in "\\PC{0,140}|[A-Za-z0-9_.\\-/]{0,140}") {
            let ok = !s.is_empty() && s.len() <= 128 && !s.starts_with('.')
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            prop_assert_eq!(validate("secret", &s).is_ok(), ok);
        }

        #[test]
        fn message_never_longer_than_a_line(s in "\\PC{0,4000}") {
            if let Err(e) = validate("secret", &s) {
                let m = e.to_string();
                prop_assert!(!m.contains('\n'));
                prop_assert!(m.len() < 400);
            }
        }
    }
}
