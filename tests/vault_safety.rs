//! The vault under attack and under stress: tampering, transplanted keys,
//! downgraded KDF parameters, crashes mid-write, concurrent writers, a full
//! disk, and the keychain cache across processes.

mod common;
use common::*;

use std::process::Stdio;
use std::time::{Duration, Instant};

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

#[test]
fn every_flipped_byte_fails_cleanly() {
    let e = Env::new();
    e.set("p/A", b"canary-value-1");
    let orig = std::fs::read(&e.vault).unwrap();
    assert!(orig.len() < 400, "keep the tamper test small");
    let positions: Vec<usize> = (0..orig.len()).collect();
    // Two workers: each run costs one Argon2 derivation.
    let chunks: Vec<Vec<usize>> = positions
        .chunks(orig.len().div_ceil(2))
        .map(|c| c.to_vec())
        .collect();
    std::thread::scope(|s| {
        for chunk in chunks {
            let orig = &orig;
            let e = &e;
            s.spawn(move || {
                let copy = e.path(&format!("copy-{}", chunk[0]));
                for i in chunk {
                    let mut b = orig.clone();
                    b[i] ^= 0x04;
                    std::fs::write(&copy, &b).unwrap();
                    let o = e.cmd(&["ls"]).env("HUSHFS_VAULT", &copy).output().unwrap();
                    let code = o.status.code();
                    assert!(
                        code == Some(1) || code == Some(2),
                        "byte {i}: exit {code:?}"
                    );
                    assert_clean_failure(&o, code.unwrap(), &[b"canary-value-1"]);
                }
            });
        }
    });
    // The original is untouched by all this.
    assert_eq!(e.value("p", "A").unwrap(), b"canary-value-1");
}

#[test]
fn truncations_fail_cleanly() {
    let e = Env::new();
    e.set("p/A", b"v");
    let orig = std::fs::read(&e.vault).unwrap();
    let copy = e.path("copy");
    for n in [
        0,
        1,
        8,
        11,
        30,
        layout::WRAPPED_KEY + 10,
        orig.len() - 17,
        orig.len() - 1,
    ] {
        std::fs::write(&copy, &orig[..n]).unwrap();
        let o = e.cmd(&["ls"]).env("HUSHFS_VAULT", &copy).output().unwrap();
        let msg = assert_clean_failure(&o, 2, &[]);
        assert!(
            msg.contains("damaged") || msg.contains("not a hushfs vault"),
            "{n}: {msg}"
        );
    }
}

#[test]
fn wrapped_key_from_another_vault_is_refused() {
    let a = Env::new();
    a.set("p/A", b"alpha");
    let b = Env::new();
    b.set("p/B", b"beta");
    let fa = std::fs::read(&a.vault).unwrap();
    let fb = std::fs::read(&b.vault).unwrap();
    // Both headers carry an audit anchor of the same size.
    let ext = layout::ext_len(&fa);
    assert_eq!(ext, layout::ext_len(&fb));
    let wrap = layout::WRAP_NONCE + ext..layout::BODY_NONCE + ext;

    // Only the wrapped key (and its nonce) moved: unwrapping fails because
    // the key is bound to the other vault's salt and id.
    let mut x = fa.clone();
    x[wrap.clone()].copy_from_slice(&fb[wrap.clone()]);
    std::fs::write(&a.vault, &x).unwrap();
    assert_clean_failure(&a.run(&["ls"]), 1, &[]);

    // The whole key header moved too (salt, id, parameters, wrapped key):
    // the key unwraps with B's passphrase but cannot open A's body.
    let mut y = fa.clone();
    y[..layout::GENERATION].copy_from_slice(&fb[..layout::GENERATION]);
    y[wrap.clone()].copy_from_slice(&fb[wrap]);
    std::fs::write(&a.vault, &y).unwrap();
    let msg = assert_clean_failure(&a.run(&["ls"]), 2, &[b"alpha", b"beta"]);
    assert!(msg.contains("damaged"), "{msg}");

    std::fs::write(&a.vault, &fa).unwrap();
    assert_eq!(a.value("p", "A").unwrap(), b"alpha");
}

#[test]
fn lowered_kdf_parameters_are_detected() {
    let e = Env::empty();
    e.ok(&[
        "init",
        "--kdf-memory",
        "38",
        "--kdf-time",
        "3",
        "--kdf-parallelism",
        "2",
    ]);
    e.set("p/A", b"v");
    let orig = std::fs::read(&e.vault).unwrap();
    assert_eq!(u32_at(&orig, layout::M_KIB), 38 * 1024);
    for (at, lower) in [
        (layout::M_KIB, 19 * 1024u32),
        (layout::T, 2),
        (layout::P, 1),
    ] {
        let mut b = orig.clone();
        b[at..at + 4].copy_from_slice(&lower.to_le_bytes());
        std::fs::write(&e.vault, &b).unwrap();
        let msg = assert_clean_failure(&e.run(&["ls"]), 1, &[]);
        assert!(
            msg.contains("wrong passphrase") && msg.contains("header was altered"),
            "{msg}"
        );
    }
    std::fs::write(&e.vault, &orig).unwrap();
    e.ok(&["ls"]);
}

#[test]
fn out_of_bounds_parameters_are_rejected_before_allocation() {
    let e = Env::new();
    let orig = std::fs::read(&e.vault).unwrap();
    for (at, val) in [
        (layout::M_KIB, u32::MAX),
        (layout::M_KIB, 4 * 1024 * 1024 + 1),
        (layout::M_KIB, 1024),
        (layout::T, 17),
        (layout::T, 1),
        (layout::P, 0),
        (layout::P, 255),
    ] {
        let mut b = orig.clone();
        b[at..at + 4].copy_from_slice(&val.to_le_bytes());
        std::fs::write(&e.vault, &b).unwrap();
        let t0 = Instant::now();
        let msg = assert_clean_failure(&e.run(&["ls"]), 2, &[]);
        assert!(msg.contains("KDF parameters out of bounds"), "{msg}");
        // No 4 GiB Argon2 run happened: refusing takes well under a second.
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }
    let mut b = orig.clone();
    b[layout::VERSION] = 2;
    std::fs::write(&e.vault, &b).unwrap();
    let msg = assert_clean_failure(&e.run(&["ls"]), 2, &[]);
    assert!(
        msg.contains("format version 2") && msg.contains("upgrade hushfs"),
        "{msg}"
    );
}

#[test]
fn twenty_concurrent_writers_lose_nothing() {
    let e = Env::new();
    let children: Vec<_> = (0..20)
        .map(|i| e.spawn_set(&format!("p/K{i}"), format!("value-{i}").as_bytes()))
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let s = e.secrets();
    for i in 0..20 {
        assert_eq!(
            s.get("p", &format!("K{i}")).unwrap().value.expose(),
            format!("value-{i}").as_bytes()
        );
    }
}

#[test]
fn sigkill_mid_write_leaves_old_or_new() {
    let mut e = Env::new();
    e.keychain = true;
    // A cached key keeps Argon2 out of the loop, so kills land in the write.
    e.ok(&["unlock", "--ttl", "10m"]);
    let big = |c: u8| vec![c; 1024 * 1024];
    let files: Vec<_> = [b'a', b'b']
        .iter()
        .map(|c| {
            let p = e.path(&format!("val-{}", *c as char));
            std::fs::write(&p, big(*c)).unwrap();
            p
        })
        .collect();
    for i in 0..4 {
        e.ok(&[
            "set",
            &format!("p/FILLER{i}"),
            "--from-file",
            files[0].to_str().unwrap(),
        ]);
    }
    e.ok(&["set", "p/K", "--from-file", files[0].to_str().unwrap()]);
    let t0 = Instant::now();
    e.ok(&["set", "p/K", "--from-file", files[1].to_str().unwrap()]);
    let typical = t0.elapsed();

    let mut seen_new = 0;
    for round in 0..40u32 {
        let f = &files[(round % 2) as usize];
        let mut child = e
            .cmd(&["set", "p/K", "--from-file", f.to_str().unwrap()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Spread the kills over the command's whole run.
        let delay = typical.mul_f64(f64::from(round) / 40.0 * 1.2);
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        let v = e.value("p", "K").expect("the vault still opens");
        assert!(
            v == big(b'a') || v == big(b'b'),
            "round {round}: a mixed value"
        );
        if v == big([b'a', b'b'][(round % 2) as usize]) {
            seen_new += 1;
        }
        // Any temp file a killed writer left is private (0600).
        for ent in std::fs::read_dir(e.vault.parent().unwrap())
            .unwrap()
            .flatten()
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = ent.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(
                mode & 0o077,
                0,
                "{:?} is readable by others",
                ent.file_name()
            );
        }
    }
    // Some kills came too late to stop the write: both outcomes occurred.
    assert!(seen_new > 0, "no write completed; the kill timing is off");
    // The next successful write removes leftovers.
    e.ok(&["set", "p/K", "--from-file", files[0].to_str().unwrap()]);
    let names: Vec<String> = std::fs::read_dir(e.vault.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| n == "vault" || n == "vault.lock"),
        "{names:?}"
    );
}

#[test]
fn full_disk_leaves_the_vault_intact() {
    let e = Env::new();
    let small = e.path("small");
    std::fs::create_dir(&small).unwrap();
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(
        st.success(),
        "mounting a tmpfs needs root (tests run as root in CI)"
    );
    struct Umount(std::path::PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Umount(small.clone());
    let vault = small.join("vault");
    std::fs::copy(&e.vault, &vault).unwrap();
    let ev = |args: &[&str]| e.cmd(args).env("HUSHFS_VAULT", &vault).output().unwrap();
    let o = e
        .cmd(&["set", "p/SMALL"])
        .env("HUSHFS_VAULT", &vault)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    drop(o.wait_with_output());
    let big = e.path("big");
    std::fs::write(&big, vec![7u8; 300 * 1024]).unwrap();
    let o = ev(&["set", "p/BIG", "--from-file", big.to_str().unwrap()]);
    let msg = assert_clean_failure(&o, 2, &[]);
    assert!(msg.contains("No space left"), "{msg}");
    let o = ev(&["ls", "--json"]);
    assert!(
        o.status.success(),
        "the vault still opens: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("BIG"));
    let left: Vec<_> = std::fs::read_dir(&small)
        .unwrap()
        .flatten()
        .map(|d| d.file_name())
        .collect();
    assert!(
        left.iter().all(|n| n == "vault" || n == "vault.lock"),
        "{left:?}"
    );
}

#[test]
fn unreadable_vault_directory_is_reported() {
    let e = Env::new();
    std::fs::set_permissions(
        e.vault.parent().unwrap(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    // As nobody (root would bypass the mode).
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_hushfs"))
        .args(["ls"])
        .env("HUSHFS_VAULT", &e.vault)
        .env("HUSHFS_KEYCHAIN", "off")
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    let msg = assert_clean_failure(&o, 2, &[]);
    assert!(msg.contains("Permission denied"), "{msg}");
}

#[test]
fn keychain_unlock_is_shared_across_processes() {
    let mut e = Env::new();
    e.keychain = true;
    e.set("p/A", b"v");
    // Unlock in one process...
    e.ok(&["unlock", "--ttl", "1h"]);
    // ...and read in another, with no passphrase source at all.
    let no_pass = |args: &[&str]| {
        e.cmd(args)
            .env_remove("HUSHFS_PASSPHRASE_FILE")
            .output()
            .unwrap()
    };
    let o = no_pass(&["ls"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("p/A"));
    let st: serde_json::Value =
        serde_json::from_slice(&no_pass(&["status", "--json"]).stdout).unwrap();
    assert_eq!(st["unlocked"], true);
    assert_eq!(st["projects"][0]["secrets"], 1);
    // Writes work with the cached key too.
    let o = e
        .cmd(&["set", "p/B"])
        .env_remove("HUSHFS_PASSPHRASE_FILE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    e.ok(&["lock"]);
    let msg = assert_clean_failure(&no_pass(&["ls"]), 1, &[]);
    assert!(msg.contains("vault is locked"), "{msg}");

    // An expired unlock is gone.
    e.ok(&["unlock", "--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));
    assert_clean_failure(&no_pass(&["ls"]), 1, &[]);

    // passwd and rekey clear the cache.
    e.ok(&["unlock"]);
    e.ok(&["rekey"]);
    assert_clean_failure(&no_pass(&["ls"]), 1, &[]);
    e.ok(&["unlock"]);
    assert!(no_pass(&["ls"]).status.success());
    e.passwd("the next passphrase, long enough");
    assert_clean_failure(&no_pass(&["ls"]), 1, &[]);
}

#[test]
fn init_uses_at_least_the_rfc_9106_kdf_parameters_by_default() {
    let e = Env::empty();
    e.ok(&["init"]);
    let st: serde_json::Value = serde_json::from_str(&e.ok(&["status", "--json"])).unwrap();
    let kdf = &st["kdf"];
    assert!(kdf["m_kib"].as_u64().unwrap() >= 64 * 1024, "{kdf}");
    assert!(kdf["t"].as_u64().unwrap() >= 3, "{kdf}");
    assert!(kdf["p"].as_u64().unwrap() >= 4, "{kdf}");
}
