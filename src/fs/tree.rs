//! The virtual tree: directories and files built from rendered output, with
//! inode numbers that stay stable across reloads of the vault.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use crate::render::Rendered;
use crate::secret::SecretBytes;

pub const ROOT: u64 = 1;

#[derive(Clone)]
pub enum NodeKind {
    Dir(BTreeMap<String, u64>),
    File {
        /// `None` while the mount is locked: the size stays, the bytes are gone.
        content: Option<Arc<SecretBytes>>,
        size: u64,
        secrets: Vec<String>,
    },
}

#[derive(Clone)]
pub struct Node {
    pub ino: u64,
    pub parent: u64,
    pub name: String,
    /// Path below the mount root, e.g. "config/app.json" ("" for the root).
    pub path: String,
    pub kind: NodeKind,
    pub mode: u32,
    pub mtime: SystemTime,
}

impl Node {
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir(_))
    }

    pub fn size(&self) -> u64 {
        match &self.kind {
            NodeKind::Dir(e) => e.len() as u64,
            NodeKind::File { size, .. } => *size,
        }
    }
}

/// Path → inode, only ever growing, so a name keeps its inode for the life
/// of the mount and a number is never reused for another file.
#[derive(Default)]
pub struct Inodes {
    by_path: HashMap<String, u64>,
    next: u64,
}

impl Inodes {
    pub fn get(&mut self, path: &str) -> u64 {
        if path.is_empty() {
            return ROOT;
        }
        if self.next <= ROOT {
            self.next = ROOT + 1;
        }
        *self.by_path.entry(path.to_string()).or_insert_with(|| {
            let i = self.next;
            self.next += 1;
            i
        })
    }
}

#[derive(Clone, Default)]
pub struct Tree {
    pub nodes: HashMap<u64, Node>,
}

impl Tree {
    /// Builds the tree. Render has already rejected conflicting paths; a
    /// conflict here (file vs directory) keeps the first.
    pub fn build(files: Vec<Rendered>, inodes: &mut Inodes, mtime: SystemTime) -> Tree {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                ino: ROOT,
                parent: ROOT,
                name: String::new(),
                path: String::new(),
                kind: NodeKind::Dir(BTreeMap::new()),
                mode: 0o500,
                mtime,
            },
        );
        for f in files {
            let Rendered {
                path: comps,
                content,
                mode,
                secrets,
            } = f;
            let mut payload = Some((content, secrets));
            let mut parent = ROOT;
            let mut path = String::new();
            let last = comps.len().saturating_sub(1);
            for (i, comp) in comps.iter().enumerate() {
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(comp);
                let ino = inodes.get(&path);
                let existing = match &nodes[&parent].kind {
                    NodeKind::Dir(e) => e.get(comp).copied(),
                    NodeKind::File { .. } => break,
                };
                if i == last {
                    let Some((content, secrets)) = payload.take().filter(|_| existing.is_none())
                    else {
                        break;
                    };
                    nodes.insert(
                        ino,
                        Node {
                            ino,
                            parent,
                            name: comp.clone(),
                            path: path.clone(),
                            kind: NodeKind::File {
                                size: content.len() as u64,
                                content: Some(Arc::new(content)),
                                secrets,
                            },
                            mode: mode & 0o777,
                            mtime,
                        },
                    );
                } else if existing.is_none() {
                    nodes.insert(
                        ino,
                        Node {
                            ino,
                            parent,
                            name: comp.clone(),
                            path: path.clone(),
                            kind: NodeKind::Dir(BTreeMap::new()),
                            mode: 0o500,
                            mtime,
                        },
                    );
                }
                if existing.is_none()
                    && let Some(NodeKind::Dir(e)) = nodes.get_mut(&parent).map(|n| &mut n.kind)
                {
                    e.insert(comp.clone(), ino);
                }
                parent = ino;
                if !nodes[&parent].is_dir() {
                    break;
                }
            }
        }
        Tree { nodes }
    }

    pub fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    pub fn child(&self, parent: u64, name: &str) -> Option<&Node> {
        match &self.nodes.get(&parent)?.kind {
            NodeKind::Dir(e) => self.nodes.get(e.get(name)?),
            NodeKind::File { .. } => None,
        }
    }

    /// The same tree with every file's bytes dropped (sizes kept).
    pub fn without_contents(&self) -> Tree {
        let mut t = self.clone();
        for n in t.nodes.values_mut() {
            if let NodeKind::File { content, .. } = &mut n.kind {
                *content = None;
            }
        }
        t
    }

    /// What the kernel must forget when `self` is replaced by `new`: inodes
    /// whose size or bytes changed, and (parent, name) entries that
    /// appeared or vanished.
    pub fn diff(&self, new: &Tree) -> (Vec<u64>, Vec<(u64, String)>) {
        let mut inodes = Vec::new();
        let mut entries = Vec::new();
        for (ino, n) in &new.nodes {
            match self.nodes.get(ino) {
                None => entries.push((n.parent, n.name.clone())),
                Some(old) => {
                    let changed = match (&old.kind, &n.kind) {
                        (
                            NodeKind::File {
                                content: a,
                                size: sa,
                                ..
                            },
                            NodeKind::File {
                                content: b,
                                size: sb,
                                ..
                            },
                        ) => {
                            sa != sb
                                || match (a, b) {
                                    (Some(a), Some(b)) => !Arc::ptr_eq(a, b) && a != b,
                                    _ => true,
                                }
                        }
                        (NodeKind::Dir(a), NodeKind::Dir(b)) => a != b,
                        _ => true,
                    };
                    if changed || old.mode != n.mode {
                        inodes.push(*ino);
                    }
                }
            }
        }
        for (ino, n) in &self.nodes {
            if !new.nodes.contains_key(ino) {
                entries.push((n.parent, n.name.clone()));
            }
        }
        (inodes, entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &[&str], v: &[u8]) -> Rendered {
        Rendered {
            path: path.iter().map(|s| s.to_string()).collect(),
            content: SecretBytes::copy_from(v),
            mode: 0o400,
            secrets: vec![],
        }
    }

    #[test]
    fn builds_dirs_and_keeps_inodes() {
        let mut inodes = Inodes::default();
        let t = Tree::build(
            vec![
                file(&["A"], b"1"),
                file(&["conf", "app.json"], b"{}"),
                file(&["conf", "b"], b"22"),
            ],
            &mut inodes,
            SystemTime::UNIX_EPOCH,
        );
        let conf = t.child(ROOT, "conf").unwrap();
        assert!(conf.is_dir());
        let app = t.child(conf.ino, "app.json").unwrap();
        assert_eq!(app.size(), 2);
        assert_eq!(app.path, "conf/app.json");
        let t2 = Tree::build(
            vec![file(&["conf", "app.json"], b"{1}")],
            &mut inodes,
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(
            t2.child(t2.child(ROOT, "conf").unwrap().ino, "app.json")
                .unwrap()
                .ino,
            app.ino
        );
        let (inos, entries) = t.diff(&t2);
        assert!(inos.contains(&app.ino));
        assert!(entries.contains(&(ROOT, "A".to_string())));
    }
}
