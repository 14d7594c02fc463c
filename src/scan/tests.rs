use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use proptest::prelude::*;

use super::*;

const TOKEN: &[u8] = b"tok_9f8e7d6c5b4a\xfe\xff/+?&= \"\\\n\xc3\xa9x";

fn matcher(values: &[(&str, &[u8])]) -> Matcher {
    Matcher::new(values.iter().map(|(n, v)| (n.to_string(), *v)))
}

/// The single hit in `hay`, as (label, encoding).
fn one_hit(m: &Matcher, hay: &[u8]) -> (String, Encoding) {
    let hits = m.find_all(hay);
    assert_eq!(
        hits.len(),
        1,
        "expected one hit in {:?}",
        String::from_utf8_lossy(hay)
    );
    (m.label(hits[0].secret).to_string(), hits[0].encoding)
}

#[test]
fn raw_value_is_found_with_name_and_position() {
    let m = matcher(&[("app/TOKEN", TOKEN)]);
    let mut hay = b"prefix ".to_vec();
    hay.extend_from_slice(TOKEN);
    hay.extend_from_slice(b" suffix");
    let hits = m.find_all(&hay);
    assert_eq!(hits.len(), 1);
    assert_eq!(m.label(hits[0].secret), "app/TOKEN");
    assert_eq!(hits[0].encoding, Encoding::Raw);
    assert_eq!((hits[0].start, hits[0].end), (7, 7 + TOKEN.len()));
}

#[test]
fn base64_every_engine_padding_and_alignment() {
    let m = matcher(&[("T", TOKEN)]);
    let engines: [(&base64::engine::GeneralPurpose, Encoding); 4] = [
        (&STANDARD, Encoding::Base64),
        (&STANDARD_NO_PAD, Encoding::Base64),
        (&URL_SAFE, Encoding::Base64Url),
        (&URL_SAFE_NO_PAD, Encoding::Base64Url),
    ];
    for (engine, want) in engines {
        // The value at every offset inside a longer blob, with bytes of
        // every kind around it.
        for before in 0..7 {
            for after in 0..4 {
                let mut blob: Vec<u8> = (0..before).map(|i| (i * 37 + 200) as u8).collect();
                blob.extend_from_slice(TOKEN);
                blob.extend((0..after).map(|i| (i * 91 + 3) as u8));
                let text = format!("key: {} end", engine.encode(&blob));
                let (name, enc) = one_hit(&m, text.as_bytes());
                assert_eq!(name, "T");
                // '+' and '/' make the standard and URL-safe forms differ.
                assert_eq!(enc, want, "offset {before}+{after}");
            }
        }
    }
}

#[test]
fn hex_both_cases_url_and_json() {
    let m = matcher(&[("T", TOKEN)]);
    let lower: String = TOKEN.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        one_hit(&m, format!("0x{lower};").as_bytes()).1,
        Encoding::Hex
    );
    let upper = lower.to_uppercase();
    assert_eq!(
        one_hit(&m, format!("={upper}=").as_bytes()).1,
        Encoding::HexUpper
    );

    const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let url = percent_encoding::percent_encode(TOKEN, UNRESERVED).to_string();
    let (_, e) = one_hit(&m, format!("https://x/?t={url}&a=1").as_bytes());
    assert_eq!(e, Encoding::Url);
    let lower_url = {
        // %2F → %2f: some encoders write lower-case hex digits.
        let b = url.as_bytes();
        let mut o = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                o.push(b'%');
                o.extend(b[i + 1..i + 3].to_ascii_lowercase());
                i += 3;
            } else {
                o.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(o).unwrap()
    };
    assert_eq!(one_hit(&m, lower_url.as_bytes()).1, Encoding::Url);
}

#[test]
fn json_escaping_as_serializers_write_it() {
    let v = "pa\"ss/wörd\\\n\t\u{1}🔑end".as_bytes();
    let m = matcher(&[("J", v)]);
    let s = std::str::from_utf8(v).unwrap();
    let serde = serde_json::to_string(&serde_json::json!({ "k": s })).unwrap();
    assert_eq!(one_hit(&m, serde.as_bytes()).1, Encoding::Json);
    // Python's json.dumps default: non-ASCII as \u escapes (surrogate pairs).
    let ascii = "{\"k\": \"pa\\\"ss/w\\u00f6rd\\\\\\n\\t\\u0001\\ud83d\\udd11end\"}";
    assert_eq!(one_hit(&m, ascii.as_bytes()).1, Encoding::Json);
    // PHP: escaped slashes too.
    let php = "\"pa\\\"ss\\/w\\u00f6rd\\\\\\n\\t\\u0001\\ud83d\\udd11end\"";
    assert_eq!(one_hit(&m, php.as_bytes()).1, Encoding::Json);
}

#[test]
fn short_values_are_listed_not_matched() {
    let m = matcher(&[("PIN", b"12345"), ("LONG", b"123456")]);
    assert_eq!(m.unscannable(), ["PIN".to_string()]);
    assert_eq!(m.scannable(), 1);
    let hits = m.find_all(b"12345 and 123456");
    assert_eq!(hits.len(), 1);
    assert_eq!(m.label(hits[0].secret), "LONG");
}

#[test]
fn trailing_newline_is_optional() {
    let m = matcher(&[("K", b"line-secret\n")]);
    assert_eq!(one_hit(&m, b"x=line-secret").1, Encoding::Raw);
    assert_eq!(one_hit(&m, b"x=line-secret\r\n").1, Encoding::Raw);
}

#[test]
fn overlapping_values_prefer_the_longest() {
    let m = matcher(&[("SHORT", b"abcdef"), ("LONG", b"abcdefghij")]);
    let hits = m.find_all(b"..abcdefghij..abcdefXY");
    let names: Vec<&str> = hits.iter().map(|h| m.label(h.secret)).collect();
    assert_eq!(names, ["LONG", "SHORT"]);
}

#[test]
fn redact_replaces_only_secrets() {
    let m = matcher(&[("A", b"alpha-secret"), ("B", b"bravo-secret")]);
    let hex_b: String = b"bravo-secret".iter().map(|b| format!("{b:02x}")).collect();
    let input = format!("x alpha-secret y {hex_b} z \u{1b}[31mred\u{1b}[0m\n");
    assert_eq!(
        m.redact(input.as_bytes()),
        b"x [hushfs:A] y [hushfs:B] z \x1b[31mred\x1b[0m\n"
    );
}

#[test]
fn no_secrets_matches_nothing() {
    let m = matcher(&[]);
    assert!(m.is_empty());
    assert!(m.find_all(b"anything").is_empty());
    let mut r = Redactor::new(Arc::new(m));
    assert_eq!(r.push(b"abc"), b"abc");
    assert_eq!(r.finish(), b"");
}

#[test]
fn large_set_uses_the_nfa_and_still_matches() {
    // 300 values of 1 KiB: more pattern bytes than a DFA is built for.
    let values: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| {
            (
                format!("S{i}"),
                format!("value-number-{i:05}-xyz{}", "p".repeat(1000)).into_bytes(),
            )
        })
        .collect();
    let m = Matcher::new(values.iter().map(|(n, v)| (n.clone(), v.as_slice())));
    assert!(matches!(m.aut, Some(Aut::Nfa(_))));
    let hay = format!(
        "a {} b {}",
        values[42].1.escape_ascii(),
        STANDARD.encode(&values[299].1)
    );
    let names: Vec<&str> = m
        .find_all(hay.as_bytes())
        .iter()
        .map(|h| m.label(h.secret))
        .collect();
    assert_eq!(names, ["S42", "S299"]);
}

fn redact_chunked(m: &Arc<Matcher>, input: &[u8], cuts: &[usize]) -> (Vec<u8>, usize) {
    let mut r = Redactor::new(m.clone());
    let mut out = Vec::new();
    let mut max_held = 0;
    let mut prev = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort();
    for c in cuts.into_iter().chain([input.len()]) {
        out.extend_from_slice(r.push(&input[prev..c]));
        max_held = max_held.max(r.held());
        prev = c;
    }
    out.extend_from_slice(r.finish());
    (out, max_held)
}

#[test]
fn secret_split_at_every_boundary_is_redacted() {
    let m = Arc::new(matcher(&[("TOKEN", b"split-me-secret-value")]));
    let input = b"before split-me-secret-value after";
    for cut in 0..=input.len() {
        let (out, _) = redact_chunked(&m, input, &[cut]);
        assert_eq!(out, b"before [hushfs:TOKEN] after", "cut at {cut}");
    }
    // One byte at a time.
    let cuts: Vec<usize> = (0..input.len()).collect();
    assert_eq!(
        redact_chunked(&m, input, &cuts).0,
        b"before [hushfs:TOKEN] after"
    );
}

#[test]
fn nothing_is_held_back_after_ordinary_output() {
    let m = Arc::new(matcher(&[("TOKEN", b"zz-secret-value")]));
    let mut r = Redactor::new(m);
    assert_eq!(r.push(b"prompt> "), b"prompt> ");
    assert_eq!(r.held(), 0);
    // A possible beginning is held until it is decided...
    assert_eq!(r.push(b"ls zz-sec"), b"ls ");
    assert_eq!(r.held(), 6);
    // ...and released as soon as it cannot be a secret.
    assert_eq!(r.push(b"tion\n"), b"zz-section\n");
    assert_eq!(r.held(), 0);
}

proptest! {
    #[test]
    fn chunked_redaction_equals_whole(
        pieces in proptest::collection::vec(0usize..6, 0..40),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let values: [&[u8]; 3] = [b"abcabcab", b"bcabcabcab", b"cab-cab-secret"];
        let m = Arc::new(Matcher::new(
            values.iter().enumerate().map(|(i, v)| (format!("S{i}"), *v)),
        ));
        // Inputs made of fragments of the values, so partial and
        // overlapping matches are common.
        let frags: [&[u8]; 6] = [b"abc", b"bca", b"cab", b"-", b"secret", b"x"];
        let input: Vec<u8> = pieces.iter().flat_map(|&p| frags[p].iter().copied()).collect();
        let (out, held) = redact_chunked(&m, &input, &cuts);
        prop_assert_eq!(out, m.redact(&input));
        prop_assert!(held < m.max_pattern_len());
    }

    #[test]
    fn random_value_found_in_every_encoding(v in proptest::collection::vec(any::<u8>(), 6..40), pad in 0usize..3) {
        let m = Matcher::new([("V".to_string(), v.as_slice())]);
        let mut blob = vec![0x5a; pad];
        blob.extend_from_slice(&v);
        blob.push(0xa5);
        for text in [
            STANDARD.encode(&blob),
            URL_SAFE_NO_PAD.encode(&blob),
            v.iter().map(|b| format!("{b:02X}")).collect(),
        ] {
            prop_assert!(!m.find_all(text.as_bytes()).is_empty());
        }
        prop_assert!(!m.find_all(&v).is_empty());
    }
}

/// Enough secrets that the patterns exceed the DFA budget: the NFA with the
/// prefix prefilter. Some values contain others (a candidate inside a
/// match must not be reported) and some extend others (the longest match at
/// the leftmost start wins).
fn big_values() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = (0..800u32)
        .map(|i| format!("q{i:05}-{}", "ab".repeat((i % 13) as usize)).into_bytes())
        .collect();
    for i in 0..400 {
        let mut x = format!("z{i:05}").into_bytes();
        x.extend_from_slice(&v[i]);
        v.push(x);
    }
    for i in 0..300 {
        let mut x = v[i * 2].clone();
        x.extend_from_slice(b"-more");
        v.push(x);
    }
    v
}

fn big_matcher() -> Matcher {
    let values = big_values();
    Matcher::new(
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("S{i}"), v.as_slice())),
    )
}

#[test]
fn big_matchers_use_the_prefilter() {
    let m = big_matcher();
    assert!(m.has_prefilter(), "expected the NFA with a prefilter");
    let v = &big_values()[877];
    let mut hay = b"before ".to_vec();
    hay.extend_from_slice(v);
    hay.extend_from_slice(b" after ");
    hay.extend_from_slice(STANDARD.encode(v).as_bytes());
    let hits = m.find_all(&hay);
    assert_eq!(hits.len(), 2, "{hits:?}");
    assert_eq!(m.label(hits[0].secret), "S877", "not S77 inside it");
    assert_eq!((hits[0].start, hits[0].end), (7, 7 + v.len()));
    assert_eq!(hits[1].encoding, Encoding::Base64);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn prefilter_finds_exactly_what_the_automaton_finds(
        picks in proptest::collection::vec((0usize..1500, 0usize..4, 0usize..40), 0..30),
    ) {
        static M: std::sync::OnceLock<(Matcher, Matcher)> = std::sync::OnceLock::new();
        let (with, without) = M.get_or_init(|| (big_matcher(), big_matcher().without_prefilter()));
        let values = big_values();
        // Whole values, encoded values, cut values and noise, back to back:
        // overlapping and adjacent candidates.
        let mut hay = Vec::new();
        for (i, kind, cut) in picks {
            let v = &values[i];
            match kind {
                0 => hay.extend_from_slice(v),
                1 => hay.extend_from_slice(STANDARD_NO_PAD.encode(v).as_bytes()),
                2 => hay.extend_from_slice(&v[..cut.min(v.len())]),
                _ => hay.extend_from_slice(&b"q0000z00001-more"[..cut % 16]),
            }
        }
        let a = with.find_all(&hay);
        let b = without.find_all(&hay);
        prop_assert_eq!(
            a.iter().map(|h| (h.secret, h.start, h.end)).collect::<Vec<_>>(),
            b.iter().map(|h| (h.secret, h.start, h.end)).collect::<Vec<_>>()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// The daemon's compact matcher redacts exactly like the automaton, and
    /// cuts a truncated text's tail at least as far.
    #[test]
    fn compact_redacts_like_the_matcher(
        picks in proptest::collection::vec((0usize..1500, 0usize..4, 0usize..40), 0..20),
        small in any::<bool>(),
    ) {
        static BIG: std::sync::OnceLock<(Matcher, Compact)> = std::sync::OnceLock::new();
        static SMALL: std::sync::OnceLock<(Matcher, Compact)> = std::sync::OnceLock::new();
        let values = big_values();
        let (m, c) = if small {
            SMALL.get_or_init(|| {
                let few = || values[..40].iter().enumerate().map(|(i, v)| (format!("S{i}"), v.as_slice()));
                (Matcher::new(few()), Compact::new(few()))
            })
        } else {
            BIG.get_or_init(|| {
                let all = || values.iter().enumerate().map(|(i, v)| (format!("S{i}"), v.as_slice()));
                (Matcher::new(all()), Compact::new(all()))
            })
        };
        let mut hay = Vec::new();
        for (i, kind, cut) in picks {
            let v = &values[if small { i % 40 } else { i }];
            match kind {
                0 => hay.extend_from_slice(v),
                1 => hay.extend_from_slice(STANDARD_NO_PAD.encode(v).as_bytes()),
                2 => hay.extend_from_slice(&v[..cut.min(v.len())]),
                _ => hay.extend_from_slice(&b"q0000z00001-more"[..cut % 16]),
            }
        }
        prop_assert_eq!(c.redact(&hay), m.redact(&hay));
        prop_assert!(c.live_suffix_start(&hay) <= m.live_suffix_start(&hay));
    }
}

#[test]
fn compact_finds_every_encoding() {
    let c = Compact::new([("app/TOKEN".to_string(), TOKEN)]);
    for text in [
        TOKEN.to_vec(),
        STANDARD.encode(TOKEN).into_bytes(),
        TOKEN
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into_bytes(),
    ] {
        let mut hay = b"curl -H 'Authorization: Bearer ".to_vec();
        hay.extend_from_slice(&text);
        hay.extend_from_slice(b"' https://example");
        let out = c.redact(&hay);
        assert_eq!(
            out,
            b"curl -H 'Authorization: Bearer [hushfs:app/TOKEN]' https://example".to_vec()
        );
    }
    assert!(Compact::new(Vec::<(String, &[u8])>::new()).is_empty());
}

// Issue 15, part 3: wrapped base64 and the percent-encodings real encoders
// write.

/// `blob` in standard base64, wrapped at `width` with `eol`, as coreutils
/// `base64 -w WIDTH` (76 by default), PEM (64) and MIME (76, CR LF) write it.
fn wrapped(blob: &[u8], width: usize, eol: &str) -> String {
    let flat = STANDARD.encode(blob);
    let lines: Vec<&str> = flat
        .as_bytes()
        .chunks(width)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    lines.join(eol) + eol
}

/// An encoder's name and what it writes for a value.
type Encoder = (&'static str, Box<dyn Fn(&[u8]) -> String>);

/// The percent-encodings the scanner claims, as their encoders write them.
fn percent_encoders() -> Vec<Encoder> {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};
    const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    const PY_QUOTE: &AsciiSet = &UNRESERVED.remove(b'/');
    const JS_COMPONENT: &AsciiSet = &UNRESERVED
        .remove(b'!')
        .remove(b'\'')
        .remove(b'(')
        .remove(b')')
        .remove(b'*');
    const JS_URI: &AsciiSet = &JS_COMPONENT
        .remove(b';')
        .remove(b'/')
        .remove(b'?')
        .remove(b':')
        .remove(b'@')
        .remove(b'&')
        .remove(b'=')
        .remove(b'+')
        .remove(b'$')
        .remove(b',')
        .remove(b'#');
    const GO_PATH: &AsciiSet = &UNRESERVED
        .remove(b'$')
        .remove(b'&')
        .remove(b'+')
        .remove(b':')
        .remove(b'=')
        .remove(b'@');
    let plus = |v: &[u8]| {
        // quote_plus / QueryEscape: space as '+', everything else as quote.
        v.split(|&b| b == b' ')
            .map(|part| percent_encode(part, UNRESERVED).to_string())
            .collect::<Vec<_>>()
            .join("+")
    };
    vec![
        (
            "python quote(safe='')",
            Box::new(|v| percent_encode(v, UNRESERVED).to_string()),
        ),
        (
            "python quote",
            Box::new(|v| percent_encode(v, PY_QUOTE).to_string()),
        ),
        ("python quote_plus / go QueryEscape", Box::new(plus)),
        (
            "js encodeURIComponent",
            Box::new(|v| percent_encode(v, JS_COMPONENT).to_string()),
        ),
        (
            "js encodeURI",
            Box::new(|v| percent_encode(v, JS_URI).to_string()),
        ),
        (
            "go PathEscape",
            Box::new(|v| percent_encode(v, GO_PATH).to_string()),
        ),
    ]
}

#[test]
fn wrapped_base64_as_coreutils_and_pem_write_it() {
    // 58 bytes and more: coreutils wraps the encoding at 76 columns.
    let v: Vec<u8> = (0..90u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let m = matcher(&[("K", &v)]);
    for (width, eol) in [
        (76, "\n"),
        (64, "\n"),
        (76, "\r\n"),
        (16, "\n"),
        (60, "\r\n"),
    ] {
        let text = format!("data:\n{}end\n", wrapped(&v, width, eol));
        let (name, enc) = one_hit(&m, text.as_bytes());
        assert_eq!(
            (name.as_str(), enc),
            ("K", Encoding::Base64),
            "width {width}"
        );
        let red = m.redact(text.as_bytes());
        assert!(m.find_all(&red).is_empty(), "width {width}");
        assert!(
            String::from_utf8_lossy(&red).contains("[hushfs:K]"),
            "width {width}"
        );
    }
    // Hex as `xxd -p` writes it (60 columns).
    let hexed: String = v.iter().map(|b| format!("{b:02x}")).collect();
    let xxd: Vec<&str> = hexed
        .as_bytes()
        .chunks(60)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    assert_eq!(one_hit(&m, xxd.join("\n").as_bytes()).1, Encoding::Hex);
}

#[test]
fn short_lines_keep_their_line_breaks() {
    // Output that ends a line with a short word is not held back waiting
    // for the next line, and a value split over short lines is not found.
    let m = Arc::new(matcher(&[("T", b"zz-secret-value")]));
    let mut r = Redactor::new(m.clone());
    assert_eq!(r.push(b"ls zz\n"), b"ls zz\n");
    assert_eq!(r.held(), 0);
    assert!(m.find_all(b"zz-secret\n-value").is_empty());
}

#[test]
fn multi_line_values_are_found_whatever_precedes_them() {
    // A value whose first line is short base64 text: in the input, a long
    // run before it makes its first line break a wrapping one.
    let v = b"abc\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nxyz-end\n";
    let m = matcher(&[("PEM", v)]);
    for before in ["", "x ", "AAAAAAAAAAAAAAAAAAAA"] {
        let mut hay = before.as_bytes().to_vec();
        hay.extend_from_slice(v);
        assert_eq!(one_hit(&m, &hay).0, "PEM", "after {before:?}");
    }
}

#[test]
fn percent_encodings_of_real_encoders() {
    let v = b"p@ss/w0rd+key&x=1;y,z? (a)*!'~#$";
    let m = matcher(&[("U", v)]);
    for (name, enc) in percent_encoders() {
        let text = format!("https://h/?t={}&n=1", enc(v));
        assert_eq!(
            one_hit(&m, text.as_bytes()),
            ("U".into(), Encoding::Url),
            "{name}"
        );
    }
}

/// Every cut of `input` into two chunks (and one byte at a time) redacts
/// as the whole does, and leaves no value behind.
fn redacted_at_every_cut(m: &Arc<Matcher>, input: &[u8]) -> Result<(), TestCaseError> {
    let whole = m.redact(input);
    prop_assert!(m.find_all(&whole).is_empty());
    prop_assert!(
        whole.windows(8).any(|w| w == b"[hushfs:"),
        "nothing redacted"
    );
    for cut in 0..=input.len() {
        prop_assert_eq!(
            &redact_chunked(m, input, &[cut]).0,
            &whole,
            "cut at {}",
            cut
        );
    }
    let ones: Vec<usize> = (0..input.len()).collect();
    prop_assert_eq!(&redact_chunked(m, input, &ones).0, &whole);
    // `hushfs scan` reads files through a Stream in 64 KiB chunks: found.
    let mut s = Stream::new(m.clone());
    let mut found = 0;
    for c in input.chunks(7) {
        s.push(c, |p| found += matches!(p, Piece::Secret { .. }) as usize);
    }
    s.finish(|p| found += matches!(p, Piece::Secret { .. }) as usize);
    prop_assert!(found > 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn wrapped_base64_is_redacted_at_every_boundary(
        v in proptest::collection::vec(any::<u8>(), 6..90),
        pad in 0usize..3,
        width in WRAP_MIN..100,
        crlf in any::<bool>(),
    ) {
        let m = Arc::new(Matcher::new([("V".to_string(), v.as_slice())]));
        let mut blob = vec![0x5a; pad];
        blob.extend_from_slice(&v);
        let text = format!("out: \n{}$ ", wrapped(&blob, width, if crlf { "\r\n" } else { "\n" }));
        redacted_at_every_cut(&m, text.as_bytes())?;
    }

    #[test]
    fn percent_encoded_values_are_redacted_at_every_boundary(
        v in proptest::collection::vec(any::<u8>(), 6..40),
        which in 0usize..6,
    ) {
        let m = Arc::new(Matcher::new([("V".to_string(), v.as_slice())]));
        let encs = percent_encoders();
        let text = format!("GET /?q={} HTTP/1.1\n", (encs[which].1)(&v));
        redacted_at_every_cut(&m, text.as_bytes())?;
    }

    /// Compact (the daemon's command-line redactor) stays the Matcher's
    /// equal with line breaks in play.
    #[test]
    fn compact_redacts_wrapped_text_like_the_matcher(
        v in proptest::collection::vec(any::<u8>(), 6..70),
        width in WRAP_MIN..80,
        noise in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'A'), Just(b' ')], 0..40),
    ) {
        let m = Matcher::new([("V".to_string(), v.as_slice())]);
        let c = Compact::new([("V".to_string(), v.as_slice())]);
        let mut hay = noise.clone();
        hay.extend_from_slice(wrapped(&v, width, "\n").as_bytes());
        hay.extend_from_slice(&noise);
        hay.extend_from_slice(&v);
        prop_assert_eq!(c.redact(&hay), m.redact(&hay));
        prop_assert!(c.live_suffix_start(&hay) <= m.live_suffix_start(&hay));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// A large input with wrapped blobs is matched window by window
    /// (src/scan/mod.rs, VIEW_WHOLE_MAX): the same hits as one pass.
    #[test]
    fn windowed_matching_finds_what_one_pass_finds(
        v in proptest::collection::vec(any::<u8>(), 6..60),
        blobs in proptest::collection::vec((WRAP_MIN..80usize, any::<bool>(), 0usize..3), 1..6),
        window in 1usize..600,
    ) {
        let m = Matcher::new([("V".to_string(), v.as_slice()), ("W".to_string(), &b"other-value-xyz"[..])]);
        let mut hay = Vec::new();
        for (width, crlf, noise) in blobs {
            hay.extend_from_slice(&b"noise AAAAAAAAAAAAAAAAAAAAAA other-value-xyz\n"[..noise * 14]);
            hay.extend_from_slice(wrapped(&v, width, if crlf { "\r\n" } else { "\n" }).as_bytes());
            hay.extend_from_slice(&v);
        }
        let (whole, windowed) = m.find_all_both_ways(&hay, window);
        prop_assert!(!whole.is_empty());
        prop_assert_eq!(whole, windowed);
    }
}
