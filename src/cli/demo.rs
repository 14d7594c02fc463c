//! `demo`: a narrated tour on a throwaway vault in a temp directory. It
//! runs the hushfs binary itself, command by command, as a user would type
//! them, with every path (vault, runtime, state) inside the temp directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

struct Tour {
    exe: PathBuf,
    root: PathBuf,
    step: usize,
}

impl Tour {
    fn say(&self, s: &str) -> Result<()> {
        super::out(&format!("{s}\n"))
    }

    fn heading(&mut self, s: &str) -> Result<()> {
        self.step += 1;
        self.say(&format!("\n{}. {s}", self.step))
    }

    fn cmd(&self, program: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.args(args)
            .current_dir(self.root.join("repo"))
            .env("HUSHFS_VAULT", self.root.join("vault"))
            .env("HUSHFS_PASSPHRASE_FILE", self.root.join("passphrase"))
            .env("HUSHFS_KEYCHAIN", "off")
            .env("XDG_RUNTIME_DIR", self.root.join("run"))
            .env("XDG_STATE_HOME", self.root.join("state"))
            .stdin(Stdio::null());
        c
    }

    /// Shows `$ line`, runs it, shows its output indented.
    fn show(
        &self,
        line: &str,
        program: &Path,
        args: &[&str],
        input: Option<&[u8]>,
    ) -> Result<bool> {
        self.say(&format!("   $ {line}"))?;
        let mut c = self.cmd(program, args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        if input.is_some() {
            c.stdin(Stdio::piped());
        }
        let mut child = c
            .spawn()
            .map_err(|e| Error::Other(format!("cannot run {}: {e}", program.display())))?;
        if let Some(i) = input {
            use std::io::Write;
            let _ = child.stdin.take().expect("piped").write_all(i);
        }
        let o = child
            .wait_with_output()
            .map_err(|e| Error::Other(format!("{}: {e}", program.display())))?;
        for l in String::from_utf8_lossy(&o.stdout)
            .lines()
            .chain(String::from_utf8_lossy(&o.stderr).lines())
        {
            self.say(&format!("     {l}"))?;
        }
        Ok(o.status.success())
    }

    fn hushfs(&self, args: &[&str], input: Option<&[u8]>) -> Result<bool> {
        let line = format!("hushfs {}", args.join(" "));
        self.show(&line, &self.exe, args, input)
    }
}

fn write(p: &Path, s: &str) -> Result<()> {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::io("cannot create", d, e))?;
    }
    std::fs::write(p, s).map_err(|e| Error::io("cannot write", p, e))
}

pub fn demo() -> Result<i32> {
    let tmp = tempfile::Builder::new()
        .prefix("hushfs-demo-")
        .tempdir()
        .map_err(|e| Error::Other(format!("cannot create a temp directory: {e}")))?;
    let mut t = Tour {
        exe: std::env::current_exe()
            .map_err(|e| Error::Other(format!("cannot find hushfs: {e}")))?,
        root: tmp.path().to_path_buf(),
        step: 0,
    };
    let repo = t.root.join("repo");
    let mnt = repo.join("secrets");
    std::fs::create_dir_all(&mnt).map_err(|e| Error::io("cannot create", &mnt, e))?;
    write(&t.root.join("passphrase"), "correct horse battery staple\n")?;
    write(
        &repo.join("hushfs.toml"),
        "project = \"shop\"\n\n[[file]]\npath = \"config/database.yml\"\ntemplate = \"database.yml.tmpl\"\n",
    )?;
    write(
        &repo.join("database.yml.tmpl"),
        "production:\n  url: {{ DATABASE_URL }}\n  password: \"{{ DB_PASSWORD | json }}\"\n",
    )?;
    t.say(&format!(
        "hushfs demo — a throwaway vault and mount under {}; your own vault and keychain are not touched.",
        t.root.display()
    ))?;

    t.heading(
        "An encrypted vault (Argon2id + XChaCha20-Poly1305). Values come from stdin, never argv.",
    )?;
    t.hushfs(
        &[
            "init",
            "--kdf-memory",
            "19",
            "--kdf-time",
            "2",
            "--kdf-parallelism",
            "1",
        ],
        None,
    )?;
    t.hushfs(
        &["set", "shop/DATABASE_URL"],
        Some(b"postgres://app@db:5432/shop\n"),
    )?;
    t.hushfs(&["set", "shop/DB_PASSWORD"], Some(b"s3cr3t-pw\n"))?;
    t.hushfs(
        &["set", "shop/STRIPE_KEY"],
        Some(b"sk_test_4eC39HqLyjWDarjtT1zdp7dc\n"),
    )?;
    t.hushfs(&["ls", "shop"], None)?;

    t.heading("Mount the project. hushfs.toml adds a templated config file beside .env.")?;
    if !t.hushfs(&["mount", "secrets"], None)? {
        t.say(
            "\nThe mount failed: FUSE needs root here, or the fuse3 package for ordinary users.",
        )?;
        return Ok(2);
    }
    let ls = Path::new("ls");
    t.show(
        "ls -la secrets secrets/config",
        ls,
        &["-la", "secrets", "secrets/config"],
        None,
    )?;
    t.say("   Names and true sizes are visible: they are what a tool or an agent may see.")?;

    t.heading(
        "Anything outside an authorized tree — a stray cat, an indexer, an agent — gets EACCES.",
    )?;
    t.show(
        "cat secrets/.env",
        Path::new("cat"),
        &["secrets/.env"],
        None,
    )?;

    t.heading("`hushfs run` authorizes one command's process tree, for its lifetime.")?;
    t.hushfs(
        &[
            "run",
            "--mount",
            "secrets",
            "--no-redact",
            "--",
            "cat",
            "secrets/config/database.yml",
        ],
        None,
    )?;
    t.say("   Without --no-redact, values in the command's output become [hushfs:NAME]:")?;
    let script = "set -a; . secrets/.env; echo \"connecting to $DATABASE_URL\"";
    t.show(
        &format!("hushfs run --mount secrets -- sh -c '{script}'"),
        &t.exe,
        &["run", "--mount", "secrets", "--", "sh", "-c", script],
        None,
    )?;

    t.heading("Every decision is in a tamper-evident (HMAC-chained) audit log, with the process that asked.")?;
    t.hushfs(&["audit", "show", "--denied"], None)?;
    t.hushfs(&["audit", "verify"], None)?;

    t.heading("Unmount: the files vanish; nothing was ever written to disk in plaintext.")?;
    t.hushfs(&["umount", "secrets"], None)?;
    t.show("ls secrets", ls, &["secrets"], None)?;
    t.say("\nNext: `hushfs init`, `hushfs set PROJECT/NAME`, `hushfs mount DIR -p PROJECT`, `hushfs run -- CMD`.")?;
    Ok(0)
}
