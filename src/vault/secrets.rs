//! The decrypted contents of a vault: projects, their secrets, and per-project
//! settings. Values stay in `SecretBytes`; names are ordinary strings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::names;
use crate::error::{Error, Result};
use crate::secret::{SecretBuf, SecretBytes};

/// Largest secret value: 1 MiB.
pub const MAX_VALUE: usize = 1024 * 1024;

#[derive(Clone)]
pub struct Entry {
    pub value: SecretBytes,
    /// Unix seconds of the last change.
    pub modified: u64,
}

/// Non-secret per-project settings. Fields this version does not know are
/// kept as they are, so an older hushfs never drops a newer one's settings.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProjectMeta {
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl ProjectMeta {
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

#[derive(Clone, Default)]
pub struct Project {
    pub secrets: BTreeMap<String, Entry>,
    pub meta: ProjectMeta,
    /// hushfs's own secrets for this project (a central source's token or
    /// AppRole credentials), named `.source.*` (`names::CREDENTIAL_PREFIX`).
    /// Kept apart from `secrets` so nothing that serves, lists or exports
    /// secrets can reach them.
    pub credentials: BTreeMap<String, Entry>,
}

impl Project {
    fn is_empty(&self) -> bool {
        self.secrets.is_empty() && self.meta.is_empty() && self.credentials.is_empty()
    }
}

#[derive(Clone, Default)]
pub struct Secrets {
    pub projects: BTreeMap<String, Project>,
}

const BODY_VERSION: u8 = 1;
const REC_SECRET: u8 = 1;
const REC_PROJECT_META: u8 = 2;

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Secrets {
    pub fn get(&self, project: &str, name: &str) -> Option<&Entry> {
        self.projects.get(project)?.secrets.get(name)
    }

    pub fn project(&self, project: &str) -> Option<&Project> {
        self.projects.get(project)
    }

    /// Inserts or replaces a value. Returns true when the value changed.
    pub fn set(&mut self, project: &str, name: &str, value: SecretBytes) -> Result<bool> {
        names::validate("project", project)?;
        names::validate("secret", name)?;
        if value.len() > MAX_VALUE {
            return Err(Error::usage(format!(
                "value of {project}/{name} is {} bytes; the limit is {MAX_VALUE} bytes (1 MiB)",
                value.len()
            )));
        }
        let p = self.projects.entry(project.to_string()).or_default();
        if let Some(e) = p.secrets.get(name)
            && e.value == value
        {
            return Ok(false);
        }
        p.secrets.insert(
            name.to_string(),
            Entry {
                value,
                modified: now(),
            },
        );
        Ok(true)
    }

    /// Removes a secret; drops the project when it becomes empty and has no
    /// settings. Returns whether it existed.
    pub fn remove(&mut self, project: &str, name: &str) -> bool {
        let Some(p) = self.projects.get_mut(project) else {
            return false;
        };
        let existed = p.secrets.remove(name).is_some();
        self.drop_if_empty(project);
        existed
    }

    /// Drops a project that has no secrets, settings or credentials left.
    pub fn drop_if_empty(&mut self, project: &str) {
        if self.projects.get(project).is_some_and(Project::is_empty) {
            self.projects.remove(project);
        }
    }

    /// Stores one of hushfs's own credentials for `project`; `name` must
    /// satisfy `names::is_credential`. Returns true when it changed.
    pub fn set_credential(
        &mut self,
        project: &str,
        name: &str,
        value: SecretBytes,
    ) -> Result<bool> {
        names::validate("project", project)?;
        if !names::is_credential(name) {
            return Err(Error::usage(format!(
                "internal: {name:?} is not a credential name"
            )));
        }
        if value.len() > MAX_VALUE {
            return Err(Error::usage(format!(
                "the credential is {} bytes; the limit is {MAX_VALUE} bytes",
                value.len()
            )));
        }
        let p = self.projects.entry(project.to_string()).or_default();
        if p.credentials.get(name).is_some_and(|e| e.value == value) {
            return Ok(false);
        }
        p.credentials.insert(
            name.to_string(),
            Entry {
                value,
                modified: now(),
            },
        );
        Ok(true)
    }

    /// Removes every credential of `project`. Returns whether any existed.
    pub fn clear_credentials(&mut self, project: &str) -> bool {
        let Some(p) = self.projects.get_mut(project) else {
            return false;
        };
        let had = !p.credentials.is_empty();
        p.credentials.clear();
        self.drop_if_empty(project);
        had
    }

    pub fn count(&self) -> usize {
        self.projects.values().map(|p| p.secrets.len()).sum()
    }

    /// Serialises into a zeroizing buffer (format in docs/VAULT-FORMAT.md).
    pub fn encode(&self) -> SecretBuf {
        let size: usize = 5 + self
            .projects
            .iter()
            .map(|(pn, p)| {
                p.secrets
                    .iter()
                    .chain(&p.credentials)
                    .map(|(n, e)| 5 + 2 + pn.len() + 1 + n.len() + 8 + e.value.len())
                    .sum::<usize>()
                    + 256
            })
            .sum::<usize>();
        let records: usize = self
            .projects
            .values()
            .map(|p| p.secrets.len() + p.credentials.len() + usize::from(!p.meta.is_empty()))
            .sum();
        let mut out = SecretBuf::with_capacity(size);
        out.push(BODY_VERSION);
        out.extend(&(records as u32).to_le_bytes());
        for (pname, p) in &self.projects {
            // Credentials are ordinary secret records whose names no user
            // secret can have (docs/VAULT-FORMAT.md).
            for (name, e) in p.secrets.iter().chain(&p.credentials) {
                let key_len = pname.len() + 1 + name.len();
                let len = 2 + key_len + 8 + e.value.len();
                out.push(REC_SECRET);
                out.extend(&(len as u32).to_le_bytes());
                out.extend(&(key_len as u16).to_le_bytes());
                out.extend(pname.as_bytes());
                out.push(b'/');
                out.extend(name.as_bytes());
                out.extend(&e.modified.to_le_bytes());
                out.extend(e.value.expose());
            }
            if !p.meta.is_empty() {
                let json = serde_json::to_vec(&p.meta).expect("JSON map serialises");
                let len = 2 + pname.len() + json.len();
                out.push(REC_PROJECT_META);
                out.extend(&(len as u32).to_le_bytes());
                out.extend(&(pname.len() as u16).to_le_bytes());
                out.extend(pname.as_bytes());
                out.extend(&json);
            }
        }
        out
    }

    /// Parses a decrypted body. Errors name the problem, never a value.
    pub fn decode(b: &[u8]) -> std::result::Result<Secrets, String> {
        let (&ver, rest) = b.split_first().ok_or("empty body")?;
        if ver != BODY_VERSION {
            return Err(format!("unknown body version {ver}"));
        }
        let count = u32::from_le_bytes(
            rest.get(..4)
                .ok_or("body ends inside the record count")?
                .try_into()
                .expect("4 bytes"),
        );
        let mut rest = &rest[4..];
        let mut s = Secrets::default();
        for i in 0..count {
            let (&kind, r) = rest
                .split_first()
                .ok_or_else(|| format!("record {i} missing"))?;
            let len = u32::from_le_bytes(
                r.get(..4)
                    .ok_or("truncated record")?
                    .try_into()
                    .expect("4 bytes"),
            ) as usize;
            let payload = r
                .get(4..4 + len)
                .ok_or_else(|| format!("record {i} truncated"))?;
            rest = &r[4 + len..];
            let name_len = u16::from_le_bytes(
                payload
                    .get(..2)
                    .ok_or("short record")?
                    .try_into()
                    .expect("2"),
            ) as usize;
            let name = payload.get(2..2 + name_len).ok_or("short record name")?;
            let name =
                std::str::from_utf8(name).map_err(|_| format!("record {i}: name is not UTF-8"))?;
            let data = &payload[2 + name_len..];
            match kind {
                REC_SECRET => {
                    let (project, sname) = name
                        .split_once('/')
                        .ok_or_else(|| format!("record {i}: name without project"))?;
                    names::validate("project", project).map_err(|e| e.to_string())?;
                    let credential = names::is_credential(sname);
                    if !credential {
                        names::validate("secret", sname).map_err(|e| e.to_string())?;
                    }
                    let modified = u64::from_le_bytes(
                        data.get(..8)
                            .ok_or("short secret record")?
                            .try_into()
                            .expect("8"),
                    );
                    let value = &data[8..];
                    if value.len() > MAX_VALUE {
                        return Err(format!("record {i}: value over 1 MiB"));
                    }
                    let p = s.projects.entry(project.to_string()).or_default();
                    let map = if credential {
                        &mut p.credentials
                    } else {
                        &mut p.secrets
                    };
                    if map.contains_key(sname) {
                        return Err(format!("record {i}: duplicate secret {name}"));
                    }
                    map.insert(
                        sname.to_string(),
                        Entry {
                            value: SecretBytes::copy_from(value),
                            modified,
                        },
                    );
                }
                REC_PROJECT_META => {
                    names::validate("project", name).map_err(|e| e.to_string())?;
                    let meta: ProjectMeta = serde_json::from_slice(data)
                        .map_err(|e| format!("record {i}: project settings: {e}"))?;
                    s.projects.entry(name.to_string()).or_default().meta = meta;
                }
                k => {
                    return Err(format!(
                        "record {i} has unknown kind {k} (written by a newer hushfs?)"
                    ));
                }
            }
        }
        if !rest.is_empty() {
            return Err("bytes after the last record".into());
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_with_binary_and_meta() {
        let mut s = Secrets::default();
        s.set("p", "A", SecretBytes::copy_from(b"\0\xff\n"))
            .unwrap();
        s.set("p", "B", SecretBytes::copy_from(b"")).unwrap();
        s.set("q", "C", SecretBytes::copy_from(&vec![1; MAX_VALUE]))
            .unwrap();
        s.projects
            .get_mut("q")
            .unwrap()
            .meta
            .fields
            .insert("x".into(), 1.into());
        let d = Secrets::decode(s.encode().as_slice()).unwrap();
        assert_eq!(d.get("p", "A").unwrap().value.expose(), b"\0\xff\n");
        assert_eq!(d.get("p", "B").unwrap().value.len(), 0);
        assert_eq!(d.get("q", "C").unwrap().value.len(), MAX_VALUE);
        assert_eq!(d.project("q").unwrap().meta, s.project("q").unwrap().meta);
    }

    #[test]
    fn credentials_round_trip_apart_from_secrets() {
        let mut s = Secrets::default();
        s.set("p", "A", SecretBytes::copy_from(b"a")).unwrap();
        assert!(
            s.set_credential("p", ".source.token", SecretBytes::copy_from(b"t"))
                .unwrap()
        );
        assert!(
            s.set_credential("p", "token", SecretBytes::copy_from(b"t"))
                .is_err()
        );
        assert!(
            s.set("p", ".source.token", SecretBytes::copy_from(b"t"))
                .is_err()
        );
        let d = Secrets::decode(s.encode().as_slice()).unwrap();
        let p = d.project("p").unwrap();
        assert_eq!(p.secrets.keys().collect::<Vec<_>>(), ["A"]);
        assert_eq!(p.credentials[".source.token"].value.expose(), b"t");
        assert_eq!(d.count(), 1);

        // A project with only credentials survives; clearing them drops it.
        let mut d = d;
        d.remove("p", "A");
        assert!(d.project("p").is_some());
        assert!(d.clear_credentials("p"));
        assert!(d.project("p").is_none());
    }

    #[test]
    fn oversize_rejected() {
        let mut s = Secrets::default();
        let e = s.set("p", "A", SecretBytes::copy_from(&vec![0; MAX_VALUE + 1]));
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("limit is 1048576 bytes")
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Secrets::decode(&b);
        }
    }
}
