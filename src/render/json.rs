//! The `json` format: one object `{"NAME": "value"}` with sorted keys,
//! pretty-printed with a trailing newline.
//!
//! serde_json does the escaping: it writes a `&str` straight into our
//! `io::Write` (`SecretBuf`) in fragments, so the value is only ever viewed
//! as `&str` over the secret buffer, never copied into a `String`.

use std::collections::BTreeMap;
use std::io;

use serde::Serialize;

use super::RenderError;
use crate::secret::{SecretBuf, SecretBytes};

/// Renders `{"NAME": "value", ...}`. A value that is not UTF-8 cannot be a
/// JSON string: that is an error naming the secret and `label` (the file).
pub fn render(entries: &[(&str, &SecretBytes)], label: &str) -> Result<SecretBytes, RenderError> {
    let mut map: BTreeMap<&str, &str> = BTreeMap::new();
    for &(name, value) in entries {
        map.insert(name, utf8(name, value.expose(), label, "JSON")?);
    }
    // Escaping rarely more than doubles a value; the buffer grows safely if
    // it does.
    let estimate: usize = entries
        .iter()
        .map(|(k, v)| k.len() + 2 * v.len() + 12)
        .sum::<usize>()
        + 4;
    let mut out = SecretBuf::with_capacity(estimate);
    serde_json::to_writer_pretty(&mut out, &map)
        .map_err(|e| RenderError(format!("{label}: writing JSON: {e}")))?;
    out.push(b'\n');
    Ok(out.into_secret())
}

/// Writes `s` JSON-escaped without the surrounding quotes (the template
/// `| json` filter).
pub fn write_escaped(out: &mut SecretBuf, s: &str) {
    let mut ser = serde_json::Serializer::with_formatter(out, Unquoted);
    // Writing to a SecretBuf cannot fail and a &str always serializes.
    let _ = s.serialize(&mut ser);
}

/// A value as `&str` (a view, not a copy), or an error that names the secret.
pub(crate) fn utf8<'a>(
    name: &str,
    value: &'a [u8],
    label: &str,
    what: &str,
) -> Result<&'a str, RenderError> {
    std::str::from_utf8(value).map_err(|_| {
        RenderError(format!(
            "{label}: secret {name:?} is not UTF-8, which {what} cannot hold; \
             serve it as a raw file ([[file]] with secret = {name:?})"
        ))
    })
}

/// serde_json's compact formatter minus the quotes around strings.
struct Unquoted;

impl serde_json::ser::Formatter for Unquoted {
    fn begin_string<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        Ok(())
    }
    fn end_string<W: ?Sized + io::Write>(&mut self, _: &mut W) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn render_pairs(pairs: &[(&str, &[u8])]) -> Result<Vec<u8>, RenderError> {
        let secrets: Vec<SecretBytes> = pairs
            .iter()
            .map(|(_, v)| SecretBytes::copy_from(v))
            .collect();
        let entries: Vec<(&str, &SecretBytes)> =
            pairs.iter().map(|(k, _)| *k).zip(secrets.iter()).collect();
        render(&entries, "[[file]] \"a.json\"").map(|s| s.expose().to_vec())
    }

    #[test]
    fn exact_output() {
        assert_eq!(render_pairs(&[]).unwrap(), b"{}\n");
        assert_eq!(
            render_pairs(&[("B", b"2"), ("A", b"q\"\\\n\t\x01\x7f\xc3\xa9/")]).unwrap(),
            b"{\n  \"A\": \"q\\\"\\\\\\n\\t\\u0001\x7f\xc3\xa9/\",\n  \"B\": \"2\"\n}\n"
        );
    }

    #[test]
    fn non_utf8_is_an_error_naming_secret_and_file() {
        let e = render_pairs(&[("K", b"pw\xff")]).unwrap_err().0;
        assert_eq!(
            e,
            "[[file]] \"a.json\": secret \"K\" is not UTF-8, which JSON cannot hold; \
             serve it as a raw file ([[file]] with secret = \"K\")"
        );
    }

    #[test]
    fn escaped_without_quotes() {
        let mut out = SecretBuf::default();
        write_escaped(&mut out, "a\"b\\c\nd\u{2028}");
        assert_eq!(out.as_slice(), "a\\\"b\\\\c\\nd\u{2028}".as_bytes());
    }

    proptest! {
        /// serde_json parses the output back into exactly the input.
        #[test]
        fn round_trip(map in proptest::collection::btree_map("[A-Za-z_][A-Za-z0-9_.-]{0,8}", any::<String>(), 0..8)) {
            let pairs: Vec<(&str, &[u8])> = map.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect();
            let out = render_pairs(&pairs).unwrap();
            let back: BTreeMap<String, String> = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(back, map);
        }

        /// The filter's output inside quotes is the JSON string for `s`.
        #[test]
        fn escaped_is_a_json_string_body(s in any::<String>()) {
            let mut out = SecretBuf::default();
            out.push(b'"');
            write_escaped(&mut out, &s);
            out.push(b'"');
            let back: String = serde_json::from_slice(out.as_slice()).unwrap();
            prop_assert_eq!(back, s);
        }
    }
}
