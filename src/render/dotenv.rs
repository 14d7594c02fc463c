//! The `.env` format: `NAME=<quoted value>` lines that three loaders read
//! back byte for byte: `set -a; . ./.env` in sh/bash, the Rust dotenvy 0.15.7
//! crate (what `hushfs import` uses) and python-dotenv 1.2.x.
//!
//! No single quoting works for every value, so each value gets the first of
//! these that fits (established by experiment, see tests/render_loaders.rs):
//!
//! | value has                         | written as              | python-dotenv reads |
//! |-----------------------------------|-------------------------|---------------------|
//! | no `'`, no `\`                    | `'v'`                   | exact               |
//! | `'` or `\`, no `$`, no `` ` ``    | `"v"`, `\` `"` escaped  | exact               |
//! | `\` and `$`/`` ` ``, no `'`       | `'v'`                   | `\\` as `\`         |
//! | `'` and `$`, no `` ` ``           | `"v"`, `\` `"` `$` esc. | `\$` for each `$`   |
//! | `'` and `` ` ``                   | omitted (comment line)  | –                   |
//!
//! sh and dotenvy read every written value exactly. Further python-dotenv
//! differences, none of which any quoting avoids:
//! - it expands `${NAME}` and `${NAME:-default}` in every quoting, single
//!   quotes included (pass `interpolate=False` to read them exactly);
//! - it opens the file in text mode, so CR and CRLF inside a value read as LF;
//! - its quoted-string regexes take a backslash before the closing quote as
//!   an escape and run on into the following lines. So the trailing
//!   backslashes of a value are written after the closing quote as unquoted
//!   `\\` pairs (`'a$b'\\`): sh and dotenvy read that exactly, python-dotenv
//!   drops that one entry with a warning instead of corrupting the next ones.
//!   (dotenvy has the same run-on problem with an odd backslash before a
//!   closing single quote.)
//!
//! Names that are not variable names (`[A-Za-z_][A-Za-z0-9_]*`) and values
//! with a NUL byte (no environment variable can hold one) or invalid UTF-8
//! (dotenvy and python-dotenv reject the file) are left out; a comment line
//! says so, naming the secret but nothing about its value beyond the reason.

use crate::secret::{SecretBuf, SecretBytes};

/// How a value is quoted in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quoting {
    /// `'v'`: no `'` and no `\`. Every loader reads it exactly (except the
    /// python-dotenv `${...}` and CR caveats in the module docs).
    Single,
    /// `"v"` escaping `\` and `"`: no `$` and no backtick.
    Double,
    /// `'v'` for a value with `\` and `$` or a backtick but no `'`;
    /// python-dotenv reads `\\` inside it as one backslash.
    SingleWithBackslash,
    /// `"v"` escaping `\`, `"` and `$`: has `'` and `$`, no backtick;
    /// python-dotenv keeps the backslash before each `$`.
    DoubleEscapedDollar,
}

/// Why an entry is left out of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Omitted {
    /// The secret name is not a shell variable name.
    BadName,
    /// The value contains a NUL byte.
    Nul,
    /// The value is not valid UTF-8.
    NotUtf8,
    /// The value contains both `'` and a backtick.
    QuoteAndBacktick,
}

impl Omitted {
    fn reason(self) -> &'static str {
        match self {
            Omitted::BadName => "the name is not a shell variable name",
            Omitted::Nul => "the value contains a NUL byte",
            Omitted::NotUtf8 => "the value is not UTF-8",
            Omitted::QuoteAndBacktick => {
                "the value contains both ' and `, which no quoting reads back in every loader"
            }
        }
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`: what sh accepts as an assignment.
pub fn is_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Chooses the quoting for one entry, or why it cannot be written.
pub fn classify(name: &str, value: &[u8]) -> Result<Quoting, Omitted> {
    if !is_var_name(name) {
        return Err(Omitted::BadName);
    }
    if value.contains(&0) {
        return Err(Omitted::Nul);
    }
    if std::str::from_utf8(value).is_err() {
        return Err(Omitted::NotUtf8);
    }
    let has = |c: u8| value.contains(&c);
    let (squote, bslash, dollar, btick) = (has(b'\''), has(b'\\'), has(b'$'), has(b'`'));
    Ok(if !squote && !bslash {
        Quoting::Single
    } else if !dollar && !btick {
        Quoting::Double
    } else if !squote {
        Quoting::SingleWithBackslash
    } else if !btick {
        Quoting::DoubleEscapedDollar
    } else {
        return Err(Omitted::QuoteAndBacktick);
    })
}

/// Renders a dotenv file from `(name, value)` pairs in the given order.
/// Returns the content and the names whose values it contains.
/// `secret_files` only changes the hint in omission comments.
pub fn render(entries: &[(&str, &SecretBytes)], secret_files: bool) -> (SecretBytes, Vec<String>) {
    // Worst case every byte is escaped; one allocation covers it.
    let estimate: usize = entries
        .iter()
        .map(|(k, v)| 2 * k.len() + 2 * v.len() + 100)
        .sum();
    let mut out = SecretBuf::with_capacity(estimate);
    let mut used = Vec::new();
    for &(name, value) in entries {
        match classify(name, value.expose()) {
            Ok(q) => {
                write_entry(&mut out, name, value.expose(), q);
                used.push(name.to_string());
            }
            Err(why) => write_omitted(&mut out, name, why, secret_files),
        }
    }
    (out.into_secret(), used)
}

fn write_entry(out: &mut SecretBuf, name: &str, value: &[u8], q: Quoting) {
    out.extend(name.as_bytes());
    out.push(b'=');
    // Trailing backslashes go after the closing quote (see module docs).
    let body_len = value.len() - value.iter().rev().take_while(|&&b| b == b'\\').count();
    let (body, tail) = value.split_at(body_len);
    match q {
        Quoting::Single | Quoting::SingleWithBackslash => {
            out.push(b'\'');
            out.extend(body);
            out.push(b'\'');
        }
        Quoting::Double => write_double(out, body, |b| matches!(b, b'\\' | b'"')),
        Quoting::DoubleEscapedDollar => {
            write_double(out, body, |b| matches!(b, b'\\' | b'"' | b'$'))
        }
    }
    for _ in tail {
        out.extend(b"\\\\");
    }
    out.push(b'\n');
}

fn write_double(out: &mut SecretBuf, body: &[u8], escape: impl Fn(u8) -> bool) {
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in body.iter().enumerate() {
        if escape(b) {
            out.extend(&body[start..i]);
            out.push(b'\\');
            out.push(b);
            start = i + 1;
        }
    }
    out.extend(&body[start..]);
    out.push(b'"');
}

fn write_omitted(out: &mut SecretBuf, name: &str, why: Omitted, secret_files: bool) {
    // Names are not secret, but one with a control character must not be
    // able to end the comment line.
    let shown: String = name.chars().flat_map(char::escape_debug).collect();
    out.extend(b"# ");
    out.extend(shown.as_bytes());
    out.extend(b" omitted: ");
    out.extend(why.reason().as_bytes());
    if secret_files && is_file_name(name) {
        out.extend(b"; read the file ");
        out.extend(shown.as_bytes());
    } else {
        out.extend(b"; serve it as a file with a [[file]] entry in hushfs.toml");
    }
    out.push(b'\n');
}

/// Whether the per-secret file for `name` can exist (render_project refuses
/// the whole mount otherwise, so this only matters for the hint).
fn is_file_name(name: &str) -> bool {
    super::config::check_component(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(name: &str, value: &[u8]) -> Vec<u8> {
        let v = SecretBytes::copy_from(value);
        render(&[(name, &v)], true).0.expose().to_vec()
    }

    /// Reads the file back with dotenvy, as `hushfs import` does.
    fn dotenvy_read(content: &[u8]) -> Vec<(String, String)> {
        dotenvy::from_read_iter(content)
            .collect::<Result<Vec<_>, _>>()
            .expect("dotenvy parses the file")
    }

    #[test]
    fn quoting_choice() {
        use Quoting::*;
        let cases: &[(&[u8], Result<Quoting, Omitted>)] = &[
            (b"plain value", Ok(Single)),
            (b"", Ok(Single)),
            (b"$HOME ${X} `id` \"q\"", Ok(Single)),
            (b"it's", Ok(Double)),
            (b"a\\b", Ok(Double)),
            (b"it's a\\b \"q\"", Ok(Double)),
            (b"a\\b$c", Ok(SingleWithBackslash)),
            (b"a\\b`c`", Ok(SingleWithBackslash)),
            (b"it's $5", Ok(DoubleEscapedDollar)),
            (b"it's `x`", Err(Omitted::QuoteAndBacktick)),
            (b"a\0b", Err(Omitted::Nul)),
            (b"\xff", Err(Omitted::NotUtf8)),
        ];
        for (v, want) in cases {
            assert_eq!(classify("N", v), *want, "{:?}", String::from_utf8_lossy(v));
        }
        assert_eq!(classify("1N", b"x"), Err(Omitted::BadName));
    }

    #[test]
    fn exact_output() {
        assert_eq!(one("A", b"x y"), b"A='x y'\n");
        assert_eq!(one("A", b""), b"A=''\n");
        assert_eq!(one("A", b"it's \"q\" \\n"), b"A=\"it's \\\"q\\\" \\\\n\"\n");
        assert_eq!(one("A", b"a\\$b"), b"A='a\\$b'\n");
        assert_eq!(one("A", b"it's $x\\"), b"A=\"it's \\$x\"\\\\\n");
        assert_eq!(one("A", b"a\\\\"), b"A=\"a\"\\\\\\\\\n");
        assert_eq!(one("A", b"\\"), b"A=\"\"\\\\\n");
        assert_eq!(one("A", b"line1\nline2\r\n"), b"A='line1\nline2\r\n'\n");
    }

    #[test]
    fn names() {
        for ok in ["A", "_", "_a1", "DB_PASSWORD", "x"] {
            assert!(is_var_name(ok), "{ok}");
        }
        for bad in ["", "1A", "a-b", "a.b", "a b", "é", "A=B"] {
            assert!(!is_var_name(bad), "{bad}");
        }
    }

    #[test]
    fn omitted_entries_become_comments() {
        assert_eq!(
            one("db.password", b"x"),
            b"# db.password omitted: the name is not a shell variable name; read the file db.password\n"
        );
        assert_eq!(
            one("K", b"it's `x`"),
            b"# K omitted: the value contains both ' and `, which no quoting reads back in every loader; read the file K\n"
        );
        let v = SecretBytes::copy_from(b"\xfe");
        let (content, used) = render(&[("K", &v)], false);
        assert_eq!(
            content.expose(),
            b"# K omitted: the value is not UTF-8; serve it as a file with a [[file]] entry in hushfs.toml\n"
        );
        assert!(used.is_empty());
        // A name that could break the comment line is escaped.
        assert_eq!(
            one("a\nB=1", b"x"),
            b"# a\\nB=1 omitted: the name is not a shell variable name; serve it as a file with a [[file]] entry in hushfs.toml\n"
        );
    }

    #[test]
    fn dotenvy_reads_tricky_values() {
        let values: &[&[u8]] = &[
            b"it's",
            b"a\\b",
            b"\\",
            b"a\\",
            b"a\\\\",
            b"$HOME",
            b"${X}",
            b"a\\$b\\",
            b"it's $x\\",
            b"`id`\\",
            b"# not a comment",
            b"x\ny='z'\n#c\n",
            b"\r\n",
            b"  spaces  ",
            b"\xc3\xa9\xe2\x9c\x93",
        ];
        let secrets: Vec<SecretBytes> = values.iter().map(|v| SecretBytes::copy_from(v)).collect();
        let names: Vec<String> = (0..values.len()).map(|i| format!("V{i}")).collect();
        let entries: Vec<(&str, &SecretBytes)> = names
            .iter()
            .map(String::as_str)
            .zip(secrets.iter())
            .collect();
        let (content, used) = render(&entries, true);
        assert_eq!(used, names);
        let read = dotenvy_read(content.expose());
        assert_eq!(read.len(), values.len());
        for ((k, v), (name, want)) in read.iter().zip(names.iter().zip(values)) {
            assert_eq!(k, name);
            assert_eq!(v.as_bytes(), *want, "{name}");
        }
    }

    proptest! {
        /// Whatever the values, dotenvy reads back each written entry
        /// exactly and in order, and every omitted one is a comment.
        #[test]
        fn dotenvy_round_trip(values in proptest::collection::vec(
            prop_oneof![
                "[a-z'\"\\\\$`{}#= \n\r\t]{0,12}",
                any::<String>(),
                proptest::collection::vec(any::<u8>(), 0..8)
                    .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            ],
            0..8,
        )) {
            let secrets: Vec<SecretBytes> =
                values.iter().map(|v| SecretBytes::copy_from(v.as_bytes())).collect();
            let names: Vec<String> = (0..values.len()).map(|i| format!("V{i}")).collect();
            let entries: Vec<(&str, &SecretBytes)> =
                names.iter().map(String::as_str).zip(secrets.iter()).collect();
            let (content, used) = render(&entries, true);
            let read = dotenvy_read(content.expose());
            prop_assert_eq!(read.len(), used.len());
            for (k, v) in &read {
                let i: usize = k[1..].parse().unwrap();
                prop_assert_eq!(v, &values[i]);
            }
            for (i, v) in values.iter().enumerate() {
                let omitted = !used.contains(&names[i]);
                prop_assert_eq!(omitted, v.contains('\0') || (v.contains('\'') && v.contains('`')));
            }
        }

        /// Arbitrary bytes and names never panic, and the output is one
        /// line per entry outside quotes.
        #[test]
        fn never_panics(name in ".{0,6}", value in proptest::collection::vec(any::<u8>(), 0..32)) {
            let v = SecretBytes::copy_from(&value);
            let (content, used) = render(&[(&name, &v)], true);
            prop_assert!(content.expose().ends_with(b"\n"));
            prop_assert!(used.len() <= 1);
        }
    }
}
