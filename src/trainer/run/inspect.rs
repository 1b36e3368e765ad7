//! Reading a run directory without a trainer: [`verify`] (every object re-hashed, the journal's chain
//! checked) and [`summary`].

#[allow(unused_imports)]
use super::*;

/// One problem [`verify`] found: the file and what is wrong (naming the variable or version).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The damaged or missing file.
    pub file: PathBuf,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.what)
    }
}

/// Checks a run directory without changing it: re-hashes every object file, checks that every stored state's
/// objects exist, and walks the journal's chain: each commit's digests (its parent's plus what it changed)
/// must give the fingerprint it records, and each stored state must match its commit. Returns every problem
/// found (empty: the run is sound).
///
/// # Errors
/// [`Error::NotARun`], [`Error::RunFormatTooNew`], [`Error::Io`] when the journal cannot be read. Damage is
/// reported as [`Problem`]s, not errors.
pub fn verify(dir: impl AsRef<Path>) -> Result<Vec<Problem>> {
    let dir = dir.as_ref();
    layout::check(dir)?;
    let file = layout::journal_path(dir);
    let mut problems = Vec::new();
    let on_disk = objects::list(dir)?;
    let mut present = HashSet::new();
    for (digest, path, _) in &on_disk {
        present.insert(*digest);
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                problems.push(Problem { file: path.clone(), what: format!("unreadable: {e}") });
                continue;
            }
        };
        match objects::decode(&bytes) {
            Err(reason) => problems.push(Problem { file: path.clone(), what: format!("corrupt object: {reason}") }),
            Ok((var, value)) => {
                let got = crate::store::variable_digest(&var, &value);
                if got != *digest {
                    problems.push(Problem {
                        file: path.clone(),
                        what: format!("`{var}`: bytes hash to {got:032x}, not to the object's name"),
                    });
                }
            }
        }
    }
    let scan = match read_journal(dir) {
        Ok(s) => s,
        Err(Error::JournalCorrupt { offset, reason, .. }) => {
            problems.push(Problem { file, what: format!("entry at offset {offset}: {reason}") });
            return Ok(problems);
        }
        Err(e) => return Err(e),
    };
    let ids: HashMap<&str, u32> = scan.paths.iter().enumerate().map(|(id, p)| (p.as_str(), id as u32)).collect();
    // Digests of every version by path id, rebuilt along the chain (persistent maps share what versions share).
    let mut digests: HashMap<u64, imbl::HashMap<u32, u128>> = HashMap::new();
    let mut fingerprints: HashMap<u64, Fingerprint> = HashMap::new();
    let mut stored: BTreeMap<u64, Manifest> = BTreeMap::new();
    for entry in &scan.entries {
        let at =
            |what: String| Problem { file: file.clone(), what: format!("entry at offset {}: {what}", entry.offset) };
        match &entry.meta {
            Meta::Commit(c) => {
                let (v, fp) = (&c.v, c.fp);
                let mut map = match &c.parent {
                    None => imbl::HashMap::new(),
                    Some(p) => match digests.get(p) {
                        Some(m) => m.clone(),
                        None => {
                            problems.push(at(format!("version {v} names parent {p}, never committed")));
                            continue;
                        }
                    },
                };
                for &(id, digest) in &c.changed {
                    map.insert(id, digest);
                }
                for id in &c.removed {
                    map.remove(id);
                }
                let sum = map.values().fold(0u128, |a, &d| a.wrapping_add(d));
                let got = fingerprint_of_digest_sum(sum, map.len());
                if got != fp {
                    problems.push(at(format!("version {v}: its digests give fingerprint {got}, it records {fp}")));
                }
                fingerprints.insert(*v, got);
                digests.insert(*v, map);
            }
            Meta::Stored { v, manifest } => {
                if let Some(map) = digests.get(v) {
                    for (record, d) in manifest.variables.iter().zip(manifest.digest_values()) {
                        if ids.get(record.path.as_str()).and_then(|id| map.get(id)) != Some(&d) {
                            problems
                                .push(at(format!("stored state of v{v}: `{}` differs from its commit", record.path)));
                        }
                    }
                }
                stored.insert(*v, manifest.clone());
            }
            Meta::Prune { versions } => {
                for v in versions {
                    stored.remove(v);
                }
            }
            _ => {}
        }
    }
    for (v, manifest) in &stored {
        for (record, digest) in manifest.variables.iter().zip(manifest.digest_values()) {
            if !present.contains(&digest) {
                problems.push(Problem {
                    file: objects::object_path(dir, digest),
                    what: format!("`{}`: object of stored version {v} is missing", record.path),
                });
            }
        }
    }
    Ok(problems)
}

/// What a run directory holds, as [`summary`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSummary {
    /// The head at the last durable point.
    pub head: u64,
    /// Versions committed.
    pub versions: usize,
    /// Versions committed with a record.
    pub records: usize,
    /// Rollbacks journaled.
    pub rollbacks: usize,
    /// Tags and the versions they name.
    pub tags: Vec<(String, u64)>,
    /// Versions whose state is stored.
    pub stored: Vec<u64>,
    /// Bytes of the journal.
    pub journal_bytes: u64,
    /// Object files and their bytes.
    pub objects: usize,
    /// Bytes of the object files.
    pub object_bytes: u64,
    /// The bytes the stored states would take as full copies (each state's objects counted once per state).
    pub full_copy_bytes: u64,
    /// Bytes after the last durable group (a torn tail, or a group being written right now).
    pub torn_bytes: u64,
}

impl RunSummary {
    /// Full copies over actual object bytes (how many times over deduplication saves).
    pub fn dedup_ratio(&self) -> f64 {
        if self.object_bytes == 0 {
            1.0
        } else {
            self.full_copy_bytes as f64 / self.object_bytes as f64
        }
    }
}

/// Describes the run in `dir` without changing it (no lock taken: works while a trainer writes it).
///
/// # Errors
/// [`Error::NotARun`], [`Error::RunFormatTooNew`], [`Error::JournalCorrupt`], [`Error::Io`].
pub fn summary(dir: impl AsRef<Path>) -> Result<RunSummary> {
    let dir = dir.as_ref();
    layout::check(dir)?;
    let file = layout::journal_path(dir);
    let scan = read_journal(dir)?;
    let history = History::<serde::de::IgnoredAny>::replay(&scan, &file, false)?;
    let records = scan.entries.iter().filter(|e| matches!(&e.meta, Meta::Commit(c) if c.record)).count();
    let rollbacks = scan.entries.iter().filter(|e| matches!(e.meta, Meta::Rollback { .. })).count();
    let on_disk = objects::list(dir)?;
    let sizes: HashMap<u128, u64> = on_disk.iter().map(|(d, _, s)| (*d, *s)).collect();
    let full_copy_bytes =
        history.stored.values().flat_map(|m| m.digest_values()).map(|d| sizes.get(&d).copied().unwrap_or(0)).sum();
    Ok(RunSummary {
        head: history.head,
        versions: history.versions.len(),
        records,
        rollbacks,
        tags: history.tags.into_iter().collect(),
        stored: history.stored.keys().copied().collect(),
        journal_bytes: fs::metadata(&file).map_err(io_err(&file))?.len(),
        objects: on_disk.len(),
        object_bytes: on_disk.iter().map(|o| o.2).sum(),
        full_copy_bytes,
        torn_bytes: scan.torn_bytes,
    })
}
