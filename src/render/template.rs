//! Templates: any text file with placeholders `{{ NAME }}`, optionally
//! filtered: `{{ NAME | base64 }}`, `| json`, `| url`, `| hex`, chained left
//! to right (`{{ NAME | base64 | url }}`). `{{ "{{" }}` writes a literal
//! `{{`. Everything else is copied byte for byte.
//!
//! The template text is not secret: it is parsed once into literal and
//! placeholder segments, then rendered in a single pass that appends bytes
//! to a `SecretBuf`. A value is never scanned for placeholders, so a value
//! that looks like `{{ X }}` is written as is.
//!
//! Why not minijinja, tera or handlebars: they take their context as
//! serde values, so every secret would become a Rust `String` (copied,
//! reallocated and freed without wiping, and printable with `Debug`),
//! which this project forbids; and they can only emit UTF-8, while a raw
//! `{{ NAME }}` must reproduce any bytes (a binary key, a legacy encoding).
//! The syntax needed here is small enough to parse by hand.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use zeroize::Zeroizing;

use super::RenderError;
use crate::secret::{SecretBuf, SecretBytes};

/// A transformation applied to a value before it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Standard base64 with padding (RFC 4648 §4).
    Base64,
    /// JSON string escaping, without the surrounding quotes; needs UTF-8.
    Json,
    /// Percent-encoding of every byte except RFC 3986 unreserved characters.
    Url,
    /// Lowercase hexadecimal.
    Hex,
}

impl Filter {
    fn parse(name: &str) -> Option<Filter> {
        Some(match name {
            "base64" => Filter::Base64,
            "json" => Filter::Json,
            "url" => Filter::Url,
            "hex" => Filter::Hex,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Filter::Base64 => "base64",
            Filter::Json => "json",
            Filter::Url => "url",
            Filter::Hex => "hex",
        }
    }

    /// Upper bound of output bytes per input byte, for pre-sizing.
    fn growth(self) -> usize {
        match self {
            Filter::Base64 => 2,
            Filter::Hex => 2,
            Filter::Url => 3,
            Filter::Json => 6,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Segment {
    Literal(Vec<u8>),
    Secret {
        name: String,
        filters: Vec<Filter>,
        line: usize,
    },
}

/// A parsed template. Holds no secret bytes.
#[derive(Debug)]
pub struct Template {
    path: PathBuf,
    segments: Vec<Segment>,
}

/// Largest output buffer reserved up front.
const MAX_PRESIZE: usize = 16 << 20;

/// RFC 3986 unreserved characters: ALPHA DIGIT - . _ ~
const URL_KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl Template {
    /// Reads and parses a template file.
    pub fn load(path: &Path) -> Result<Template, RenderError> {
        let text = std::fs::read(path)
            .map_err(|e| RenderError(format!("cannot read template {}: {e}", path.display())))?;
        Template::parse(&text, path)
    }

    /// Parses template text; `path` is used in messages only.
    pub fn parse(text: &[u8], path: &Path) -> Result<Template, RenderError> {
        let err = |line: usize, msg: String| {
            RenderError(format!("template {}:{line}: {msg}", path.display()))
        };
        let mut segments = Vec::new();
        let mut literal = Vec::new();
        let mut line = 1;
        let mut i = 0;
        while i < text.len() {
            if !text[i..].starts_with(b"{{") {
                if text[i] == b'\n' {
                    line += 1;
                }
                literal.push(text[i]);
                i += 1;
                continue;
            }
            let open_line = line;
            let mut p = Cursor {
                text,
                pos: i + 2,
                line: &mut line,
            };
            p.skip_space();
            let unterminated = || {
                err(
                    open_line,
                    "unterminated placeholder: '{{' without a closing '}}'".into(),
                )
            };
            match p.peek() {
                None => return Err(unterminated()),
                Some(b'"') => {
                    p.pos += 1;
                    let start = p.pos;
                    while p.peek().is_some_and(|b| b != b'"') {
                        p.bump();
                    }
                    if p.peek().is_none() {
                        return Err(unterminated());
                    }
                    literal.extend_from_slice(&text[start..p.pos]);
                    p.pos += 1;
                    p.skip_space();
                    if p.peek() == Some(b'|') {
                        return Err(err(
                            open_line,
                            "filters apply to secrets, not to a quoted literal".into(),
                        ));
                    }
                }
                Some(_) => {
                    let name =
                        p.word(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
                    if name.is_empty() {
                        return Err(err(
                            open_line,
                            format!(
                                "expected a secret name or \"{{{{\" after '{{{{', found {}",
                                p.describe_next()
                            ),
                        ));
                    }
                    let mut filters = Vec::new();
                    p.skip_space();
                    while p.peek() == Some(b'|') {
                        p.pos += 1;
                        p.skip_space();
                        let f = p.word(|b| b.is_ascii_alphanumeric() || b == b'_');
                        let filter = Filter::parse(&f).ok_or_else(|| {
                            if f.is_empty() {
                                err(
                                    open_line,
                                    format!(
                                        "expected a filter after '|', found {}",
                                        p.describe_next()
                                    ),
                                )
                            } else {
                                err(
                                    open_line,
                                    format!("unknown filter {f:?}: use base64, json, url or hex"),
                                )
                            }
                        })?;
                        filters.push(filter);
                        p.skip_space();
                    }
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(Segment::Secret {
                        name,
                        filters,
                        line: open_line,
                    });
                }
            }
            match p.peek() {
                None => return Err(unterminated()),
                Some(b'}') if text[p.pos..].starts_with(b"}}") => i = p.pos + 2,
                Some(_) => {
                    return Err(err(
                        open_line,
                        format!("expected '}}}}' or '|', found {}", p.describe_next()),
                    ));
                }
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Template {
            path: path.to_path_buf(),
            segments,
        })
    }

    /// Names of the secrets the template uses, in first-use order.
    pub fn secret_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for s in &self.segments {
            if let Segment::Secret { name, .. } = s
                && !names.contains(name)
            {
                names.push(name.clone());
            }
        }
        names
    }

    /// Renders with `secrets`; returns the bytes and the names used.
    pub fn render(
        &self,
        secrets: &BTreeMap<String, SecretBytes>,
    ) -> Result<(SecretBytes, Vec<String>), RenderError> {
        let err = |line: usize, msg: String| {
            RenderError(format!("template {}:{line}: {msg}", self.path.display()))
        };
        // Look everything up first: no partial output for a missing name,
        // and the exact size bound is known before the one allocation.
        let mut estimate = 0usize;
        for s in &self.segments {
            estimate = estimate.saturating_add(match s {
                Segment::Literal(l) => l.len(),
                Segment::Secret {
                    name,
                    filters,
                    line,
                } => {
                    let v = secrets.get(name).ok_or_else(|| {
                        err(*line, format!("secret {name:?} is not in the project"))
                    })?;
                    filters.iter().fold(v.len(), |n, f| {
                        n.saturating_mul(f.growth()).saturating_add(4)
                    })
                }
            });
        }
        // The bound multiplies along filter chains; past the cap the buffer
        // grows (safely) instead of reserving worst cases up front.
        let mut out = SecretBuf::with_capacity(estimate.min(MAX_PRESIZE));
        for s in &self.segments {
            match s {
                Segment::Literal(l) => out.extend(l),
                Segment::Secret {
                    name,
                    filters,
                    line,
                } => {
                    let value = secrets[name].expose();
                    apply_chain(&mut out, value, filters).map_err(|f| {
                        err(
                            *line,
                            format!(
                                "secret {name:?} is not UTF-8, which the {} filter cannot escape",
                                f.name()
                            ),
                        )
                    })?;
                }
            }
        }
        Ok((out.into_secret(), self.secret_names()))
    }
}

/// Writes `value` through `filters` into `out`. Intermediate results live in
/// SecretBufs. Fails (naming the filter) only for `json` on non-UTF-8.
fn apply_chain(out: &mut SecretBuf, value: &[u8], filters: &[Filter]) -> Result<(), Filter> {
    let Some((last, first)) = filters.split_last() else {
        out.extend(value);
        return Ok(());
    };
    let mut current: Option<SecretBuf> = None;
    for &f in first {
        let input = current.as_ref().map_or(value, SecretBuf::as_slice);
        let mut next =
            SecretBuf::with_capacity(input.len().saturating_mul(f.growth()).min(MAX_PRESIZE) + 4);
        apply(&mut next, input, f)?;
        current = Some(next);
    }
    let input = current.as_ref().map_or(value, SecretBuf::as_slice);
    apply(out, input, *last)
}

fn apply(out: &mut SecretBuf, input: &[u8], f: Filter) -> Result<(), Filter> {
    match f {
        Filter::Base64 => {
            // Whole 3-byte groups per chunk, so chunks concatenate into one
            // valid encoding; the stack buffer is wiped on drop.
            let mut chunk = Zeroizing::new([0u8; 1024]);
            for part in input.chunks(768) {
                let n = base64::engine::general_purpose::STANDARD
                    .encode_slice(part, &mut chunk[..])
                    .expect("768 input bytes fit in 1024 output bytes");
                out.extend(&chunk[..n]);
            }
        }
        Filter::Hex => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for &b in input {
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        Filter::Url => {
            for piece in percent_encoding::percent_encode(input, URL_KEEP) {
                out.extend(piece.as_bytes());
            }
        }
        Filter::Json => {
            let s = std::str::from_utf8(input).map_err(|_| Filter::Json)?;
            super::json::write_escaped(out, s);
        }
    }
    Ok(())
}

/// Parser position inside a placeholder; keeps the line count right when a
/// placeholder spans lines.
struct Cursor<'a, 'l> {
    text: &'a [u8],
    pos: usize,
    line: &'l mut usize,
}

impl Cursor<'_, '_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn bump(&mut self) {
        if self.peek() == Some(b'\n') {
            *self.line += 1;
        }
        self.pos += 1;
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.bump();
        }
    }

    fn word(&mut self, ok: impl Fn(u8) -> bool) -> String {
        let start = self.pos;
        while self.peek().is_some_and(&ok) {
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.text[start..self.pos]).into_owned()
    }

    fn describe_next(&self) -> String {
        match self.peek() {
            None => "the end of the file".into(),
            Some(b) if b.is_ascii_graphic() => format!("'{}'", b as char),
            Some(b) => format!("byte 0x{b:02x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secrets(pairs: &[(&str, &[u8])]) -> BTreeMap<String, SecretBytes> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), SecretBytes::copy_from(v)))
            .collect()
    }

    fn render_str(text: &str, pairs: &[(&str, &[u8])]) -> Result<Vec<u8>, String> {
        let t = Template::parse(text.as_bytes(), Path::new("t.tmpl")).map_err(|e| e.0)?;
        let (out, _) = t.render(&secrets(pairs)).map_err(|e| e.0)?;
        Ok(out.expose().to_vec())
    }

    #[test]
    fn placeholders_and_literals() {
        let s: &[(&str, &[u8])] = &[("A", b"x\xff"), ("db.pw", b"p w")];
        assert_eq!(render_str("a={{A}};", s).unwrap(), b"a=x\xff;");
        assert_eq!(render_str("{{ db.pw }}", s).unwrap(), b"p w");
        assert_eq!(render_str("{{\n  A\n}}", s).unwrap(), b"x\xff");
        assert_eq!(render_str("}} { } {x}", s).unwrap(), b"}} { } {x}");
        assert_eq!(render_str("{{ \"{{\" }} A }}", s).unwrap(), b"{{ A }}");
        assert_eq!(render_str("{{\"}}\"}}", s).unwrap(), b"}}");
        assert_eq!(render_str("", s).unwrap(), b"");
    }

    #[test]
    fn filters() {
        let s: &[(&str, &[u8])] = &[("A", b"a b/\xff~"), ("J", "q\"\\\n\u{e9}".as_bytes())];
        assert_eq!(render_str("{{ A | hex }}", s).unwrap(), b"6120622fff7e");
        assert_eq!(render_str("{{ A | base64 }}", s).unwrap(), b"YSBiL/9+");
        assert_eq!(render_str("{{ A | url }}", s).unwrap(), b"a%20b%2F%FF~");
        assert_eq!(
            render_str("{{ J | json }}", s).unwrap(),
            "q\\\"\\\\\\n\u{e9}".as_bytes()
        );
        assert_eq!(
            render_str("{{ A|base64|url }}", s).unwrap(),
            b"YSBiL%2F9%2B"
        );
        assert_eq!(
            render_str("{{ J | hex | json }}", s).unwrap(),
            b"71225c0ac3a9"
        );
    }

    #[test]
    fn base64_of_large_values_matches_one_shot_encoding() {
        let value: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let got = render_str("{{ A | base64 }}", &[("A", &value)]).unwrap();
        let want = base64::engine::general_purpose::STANDARD.encode(&value);
        assert_eq!(got, want.as_bytes());
    }

    #[test]
    fn values_are_never_expanded() {
        let s: &[(&str, &[u8])] = &[("A", b"{{ B }}"), ("B", b"secret")];
        assert_eq!(render_str("{{ A }}", s).unwrap(), b"{{ B }}");
    }

    #[test]
    fn errors_name_template_and_line() {
        let s: &[(&str, &[u8])] = &[("A", b"\xff")];
        let cases = [
            (
                "x\n\n{{ NOPE }}",
                "template t.tmpl:3: secret \"NOPE\" is not in the project",
            ),
            (
                "x\n{{ A | rot13 }}",
                "template t.tmpl:2: unknown filter \"rot13\": use base64, json, url or hex",
            ),
            (
                "x\n{{ A | }}",
                "template t.tmpl:2: expected a filter after '|', found '}'",
            ),
            (
                "{{ A ",
                "template t.tmpl:1: unterminated placeholder: '{{' without a closing '}}'",
            ),
            (
                "a\n{{",
                "template t.tmpl:2: unterminated placeholder: '{{' without a closing '}}'",
            ),
            (
                "{{ \"{{ }}",
                "template t.tmpl:1: unterminated placeholder: '{{' without a closing '}}'",
            ),
            (
                "{{ A B }}",
                "template t.tmpl:1: expected '}}' or '|', found 'B'",
            ),
            (
                "{{ }}",
                "template t.tmpl:1: expected a secret name or \"{{\" after '{{', found '}'",
            ),
            (
                "{{{ A }}}",
                "template t.tmpl:1: expected a secret name or \"{{\" after '{{', found '{'",
            ),
            (
                "{{ \"x\" | hex }}",
                "template t.tmpl:1: filters apply to secrets, not to a quoted literal",
            ),
            (
                "\n{{ A | json }}",
                "template t.tmpl:2: secret \"A\" is not UTF-8, which the json filter cannot escape",
            ),
            (
                "{{ A }\n}",
                "template t.tmpl:1: expected '}}' or '|', found '}'",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(render_str(text, s).unwrap_err(), want, "{text:?}");
        }
    }

    #[test]
    fn line_numbers_count_multiline_placeholders() {
        let e = render_str("{{\nA\n}}\n{{ B }}", &[("A", b"")]).unwrap_err();
        assert!(e.starts_with("template t.tmpl:4:"), "{e}");
    }

    #[test]
    fn names_in_first_use_order() {
        let t = Template::parse(b"{{B}}{{A}}{{B|hex}}", Path::new("t")).unwrap();
        assert_eq!(t.secret_names(), ["B", "A"]);
    }

    proptest! {
        /// Arbitrary templates and values never panic.
        #[test]
        fn never_panics(text in proptest::collection::vec(prop_oneof![
                Just(b'{'), Just(b'}'), Just(b'|'), Just(b'"'), Just(b' '), Just(b'\n'),
                Just(b'A'), Just(b'h'), Just(b'e'), Just(b'x'), any::<u8>()], 0..40),
            value in proptest::collection::vec(any::<u8>(), 0..16)) {
            if let Ok(t) = Template::parse(&text, Path::new("t")) {
                let _ = t.render(&secrets(&[("A", &value), ("hex", &value)]));
            }
        }

        /// Values are copied verbatim, whatever they contain; literal text
        /// around them is kept.
        #[test]
        fn raw_values_are_verbatim(
            pre in "[^{]{0,10}", post in "[^{]{0,10}",
            value in proptest::collection::vec(prop_oneof![Just(b'{'), Just(b'}'), Just(b'A'), Just(b' '), any::<u8>()], 0..24),
        ) {
            let text = format!("{pre}{{{{ A }}}}{post}");
            let out = render_str(&text, &[("A", &value)]).unwrap();
            let mut want = pre.into_bytes();
            want.extend_from_slice(&value);
            want.extend_from_slice(post.as_bytes());
            prop_assert_eq!(out, want);
        }

        /// The hex, base64 and url filters match reference encodings.
        #[test]
        fn filters_match_references(value in proptest::collection::vec(any::<u8>(), 0..64)) {
            let s: &[(&str, &[u8])] = &[("A", &value)];
            let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
            prop_assert_eq!(render_str("{{A|hex}}", s).unwrap(), hex.into_bytes());
            let b64 = base64::engine::general_purpose::STANDARD.encode(&value);
            prop_assert_eq!(render_str("{{A|base64}}", s).unwrap(), b64.into_bytes());
            let url = render_str("{{A|url}}", s).unwrap();
            prop_assert!(url.iter().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(b)));
            let back: Vec<u8> = percent_encoding::percent_decode(&url).collect();
            prop_assert_eq!(back, value);
        }
    }
}
