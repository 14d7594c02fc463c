//! Arbitrary bytes as an audit log line and as a whole log file: parsing
//! and filtering must never panic, and what parses re-seals to the same
//! line (the canonical bytes are exactly what the MAC covers).
#![no_main]

use hushfs::audit::{chain, query};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(p) = chain::parse_line(data) {
        let line = chain::seal_line(&p.canonical, &p.mac);
        assert_eq!(&line[..line.len() - 1], data);
    }
    let filter = query::Filter {
        denied: true,
        pid: Some(7),
        secret: Some((Some("p".into()), "NAME".into())),
        since: Some("2026-01-01T00:00:00.000000Z".into()),
    };
    let m = filter.matcher();
    for line in query::lines(data) {
        let _ = m.matches(line);
    }
});
