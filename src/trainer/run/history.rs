//! [`History`]: the versions, tags, head and stored states a journal describes, rebuilt entry by entry.

#[allow(unused_imports)]
use super::*;

/// The history a journal describes.
pub(super) struct History<R> {
    pub(super) versions: BTreeMap<u64, Version<R>>,
    pub(super) tags: BTreeMap<String, u64>,
    pub(super) head: u64,
    pub(super) stored: BTreeMap<u64, Manifest>,
}

impl<R: DeserializeOwned> History<R> {
    /// Applies every entry in order; `records` decodes the records (else they are dropped).
    pub(super) fn replay(scan: &journal::Scan, file: &Path, records: bool) -> Result<History<R>> {
        let mut h = History { versions: BTreeMap::new(), tags: BTreeMap::new(), head: 0, stored: BTreeMap::new() };
        for entry in &scan.entries {
            let bad = |reason: String| Error::JournalCorrupt { file: file.to_path_buf(), offset: entry.offset, reason };
            let known = |h: &History<R>, v: u64| {
                if h.versions.contains_key(&v) {
                    Ok(())
                } else {
                    Err(bad(format!("names version {v}, which no earlier entry commits")))
                }
            };
            match &entry.meta {
                Meta::Commit(c) => {
                    let v = c.v;
                    if h.versions.keys().next_back().is_some_and(|&last| v <= last) {
                        return Err(bad(format!("version {v} is not newer than every earlier one")));
                    }
                    if let Some(p) = c.parent {
                        known(&h, p)?;
                    }
                    let record = if c.record && records {
                        Some(serde_json::from_slice::<R>(&entry.extra).map_err(|e| Error::RecordDecode {
                            file: file.to_path_buf(),
                            version: v,
                            reason: e.to_string(),
                        })?)
                    } else {
                        None
                    };
                    h.versions.insert(v, Version { parent: c.parent, fingerprint: c.fp, state: None, record });
                    h.head = v;
                }
                Meta::Tag { name, v } => {
                    known(&h, *v)?;
                    h.tags.insert(name.clone(), *v);
                }
                Meta::Rollback { v } => {
                    known(&h, *v)?;
                    h.head = *v;
                }
                Meta::Stored { v, manifest } => {
                    known(&h, *v)?;
                    h.stored.insert(*v, manifest.clone());
                }
                Meta::Prune { versions } => {
                    for v in versions {
                        h.stored.remove(v);
                    }
                }
                Meta::Durable { head } => {
                    if *head != h.head {
                        return Err(bad(format!("marks head v{head}, the entries before it say v{}", h.head)));
                    }
                }
            }
        }
        if h.versions.is_empty() {
            return Err(Error::JournalCorrupt {
                file: file.to_path_buf(),
                offset: journal::MAGIC.len() as u64,
                reason: "no durable version 0".into(),
            });
        }
        Ok(h)
    }
}
