//! `hushfs demo`, the README's first command, keeps working.

mod common;
use common::mount::is_mounted;

#[test]
fn demo_tours_and_cleans_up() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_hushfs"))
        .arg("demo")
        .env_remove("HUSHFS_VAULT")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("cat: secrets/.env: Permission denied"),
        "{out}"
    );
    assert!(out.contains("connecting to [hushfs:DATABASE_URL]"), "{out}");
    assert!(out.contains("password: \"s3cr3t-pw\""), "{out}");
    assert!(out.contains("deny      open      cat["), "{out}");
    assert!(out.contains("result:   OK"), "{out}");
    assert!(
        !out.contains("connecting to postgres://"),
        "output is redacted: {out}"
    );
    assert!(out.contains("unmounted"), "{out}");
    let root = out
        .split("under ")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    let root = std::path::Path::new(root);
    assert!(!root.exists(), "the demo's temp dir is removed");
    assert!(!is_mounted(&root.join("repo/secrets")));
}
