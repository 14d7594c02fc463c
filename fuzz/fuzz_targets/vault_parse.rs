//! Arbitrary bytes as a vault file and as a decrypted body: parsing must
//! never panic, and what parses must re-encode to the same header.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = hushfs::vault::format::parse(data) {
        let re = p.header.encode(&p.body_nonce, p.body_ct.len() as u64);
        assert_eq!(re, p.body_aad);
    }
    let _ = hushfs::vault::Secrets::decode(data);
});
