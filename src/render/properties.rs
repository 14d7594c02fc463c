//! The `properties` format: `key=value` lines escaped exactly as
//! `java.util.Properties.store(OutputStream, ..)` escapes them, so
//! `Properties.load` (and Spring, Gradle, ...) read the values back exactly.
//! The output is pure ASCII: every other character is `\uXXXX` (UTF-16,
//! so characters beyond the BMP become surrogate pairs), which keeps it
//! correct whether the reader assumes ISO-8859-1 or UTF-8.
//!
//! Hand-written: the escaping is a dozen lines and the crates for it build
//! the escaped value in a `String`.

use zeroize::Zeroize;

use super::RenderError;
use super::json::utf8;
use crate::secret::{SecretBuf, SecretBytes};

/// Renders `NAME=value` lines in the given order (sorted by the caller).
/// A value that is not UTF-8 has no `Properties` form: error naming the
/// secret and `label`.
pub fn render(entries: &[(&str, &SecretBytes)], label: &str) -> Result<SecretBytes, RenderError> {
    let mut values = Vec::with_capacity(entries.len());
    for &(name, value) in entries {
        values.push(utf8(name, value.expose(), label, "a properties file")?);
    }
    // Mostly ASCII values grow little; `\uXXXX` is 6 bytes per character.
    let estimate: usize = entries
        .iter()
        .map(|(k, v)| 2 * k.len() + 2 * v.len() + 2)
        .sum();
    let mut out = SecretBuf::with_capacity(estimate);
    for (&(name, _), value) in entries.iter().zip(values) {
        write_escaped(&mut out, name, true);
        out.push(b'=');
        write_escaped(&mut out, value, false);
        out.push(b'\n');
    }
    Ok(out.into_secret())
}

/// Java's `saveConvert(s, escapeSpace = is_key, escapeUnicode = true)`.
fn write_escaped(out: &mut SecretBuf, s: &str, is_key: bool) {
    let mut units = [0u16; 2];
    for (i, c) in s.chars().enumerate() {
        match c {
            '\\' => out.extend(b"\\\\"),
            ' ' if i == 0 || is_key => out.extend(b"\\ "),
            '\t' => out.extend(b"\\t"),
            '\n' => out.extend(b"\\n"),
            '\r' => out.extend(b"\\r"),
            '\u{c}' => out.extend(b"\\f"),
            '=' | ':' | '#' | '!' => {
                out.push(b'\\');
                out.push(c as u8);
            }
            ' '..='~' => out.push(c as u8),
            _ => {
                for &u in c.encode_utf16(&mut units).iter() {
                    write_unicode_escape(out, u);
                }
            }
        }
    }
    units.zeroize();
}

fn write_unicode_escape(out: &mut SecretBuf, u: u16) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[usize::from((u >> shift) & 0xF)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn render_pairs(pairs: &[(&str, &str)]) -> String {
        let secrets: Vec<SecretBytes> = pairs
            .iter()
            .map(|(_, v)| SecretBytes::copy_from(v.as_bytes()))
            .collect();
        let entries: Vec<(&str, &SecretBytes)> =
            pairs.iter().map(|(k, _)| *k).zip(secrets.iter()).collect();
        let out = render(&entries, "f").unwrap();
        String::from_utf8(out.expose().to_vec()).unwrap()
    }

    /// A reference reader following `java.util.Properties.load`: logical
    /// lines with `\` continuations, `#`/`!` comments, key ended by an
    /// unescaped `=`, `:` or whitespace, `\uXXXX` (with surrogate pairs) and
    /// `\t \n \r \f` escapes, any other `\x` meaning `x`.
    fn java_load(text: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        while let Some(first) = lines.next() {
            let mut logical = first.trim_start_matches([' ', '\t', '\u{c}']).to_string();
            if logical.is_empty() || logical.starts_with(['#', '!']) {
                continue;
            }
            while logical.chars().rev().take_while(|&c| c == '\\').count() % 2 == 1 {
                logical.pop();
                match lines.next() {
                    Some(next) => logical.push_str(next.trim_start_matches([' ', '\t', '\u{c}'])),
                    None => break,
                }
            }
            let chars: Vec<char> = logical.chars().collect();
            let mut i = 0;
            let mut key_end = chars.len();
            let mut value_start = chars.len();
            while i < chars.len() {
                match chars[i] {
                    '\\' => i += 2,
                    '=' | ':' => {
                        key_end = i;
                        value_start = i + 1;
                        break;
                    }
                    ' ' | '\t' | '\u{c}' => {
                        key_end = i;
                        let mut j = i;
                        while j < chars.len() && matches!(chars[j], ' ' | '\t' | '\u{c}') {
                            j += 1;
                        }
                        if j < chars.len() && matches!(chars[j], '=' | ':') {
                            j += 1;
                        }
                        value_start = j;
                        break;
                    }
                    _ => i += 1,
                }
            }
            let mut vs = value_start.min(chars.len());
            while vs < chars.len() && matches!(chars[vs], ' ' | '\t' | '\u{c}') {
                vs += 1;
            }
            let key = unescape(&chars[..key_end.min(chars.len())]);
            let value = unescape(&chars[vs..]);
            out.push((key, value));
        }
        out
    }

    fn unescape(chars: &[char]) -> String {
        let mut units: Vec<u16> = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            i += 1;
            if c != '\\' {
                let mut buf = [0u16; 2];
                units.extend_from_slice(c.encode_utf16(&mut buf));
                continue;
            }
            let Some(&e) = chars.get(i) else { break };
            i += 1;
            match e {
                'u' => {
                    let hex: String = chars[i..i + 4].iter().collect();
                    units.push(u16::from_str_radix(&hex, 16).unwrap());
                    i += 4;
                }
                't' => units.push(u16::from(b'\t')),
                'n' => units.push(u16::from(b'\n')),
                'r' => units.push(u16::from(b'\r')),
                'f' => units.push(0xc),
                other => {
                    let mut buf = [0u16; 2];
                    units.extend_from_slice(other.encode_utf16(&mut buf));
                }
            }
        }
        String::from_utf16(&units).unwrap()
    }

    #[test]
    fn exact_output() {
        assert_eq!(
            render_pairs(&[("db.url", "jdbc:x://h/db?a=b#f!"), ("K", " lead  trail ")]),
            "db.url=jdbc\\:x\\://h/db?a\\=b\\#f\\!\nK=\\ lead  trail \n"
        );
        assert_eq!(
            render_pairs(&[("K", "\\\t\n\r\u{c}\u{1}\u{7f}é😀")]),
            "K=\\\\\\t\\n\\r\\f\\u0001\\u007F\\u00E9\\uD83D\\uDE00\n"
        );
        assert_eq!(render_pairs(&[("a key", "")]), "a\\ key=\n");
    }

    #[test]
    fn output_is_ascii() {
        let out = render_pairs(&[("K", "日本語 \u{10FFFF}")]);
        assert!(out.is_ascii());
    }

    #[test]
    fn non_utf8_is_an_error() {
        let v = SecretBytes::copy_from(b"\xc3");
        let e = render(&[("K", &v)], "[[file]] \"p\"").err().unwrap().0;
        assert!(
            e.starts_with("[[file]] \"p\": secret \"K\" is not UTF-8"),
            "{e}"
        );
    }

    #[test]
    fn reference_reader_reads_java_samples() {
        // Lines as Java itself documents them, to check the reader.
        let text = "# c\n! c\n  Truth = Beauty\nTruth:Beauty\nTruth\t\t:Beauty\nfruits  apple, banana, \\\n    pear\ncheeses\n";
        let got = java_load(text);
        assert_eq!(got[0], ("Truth".into(), "Beauty".into()));
        assert_eq!(got[1], ("Truth".into(), "Beauty".into()));
        assert_eq!(got[2], ("Truth".into(), "Beauty".into()));
        assert_eq!(got[3], ("fruits".into(), "apple, banana, pear".into()));
        assert_eq!(got[4], ("cheeses".into(), "".into()));
    }

    proptest! {
        /// The reference reader gets back exactly the keys and values.
        #[test]
        fn round_trip(map in proptest::collection::btree_map(".{1,8}", any::<String>(), 0..8)) {
            let pairs: Vec<(&str, &str)> = map.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let out = render_pairs(&pairs);
            prop_assert!(out.is_ascii());
            let back = java_load(&out);
            let want: Vec<(String, String)> = map.into_iter().collect();
            prop_assert_eq!(back, want);
        }
    }
}
