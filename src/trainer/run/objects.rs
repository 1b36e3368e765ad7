//! Content-addressed objects: one file per stored value, named by the value's digest (the per-variable digest
//! the store fingerprint is made of), so a value is written once per run however many states hold it.
//!
//! ```text
//! objects/<first 2 hex digits>/<32 hex digits>
//! object = MAGIC | header_len: u32 LE | header (JSON: path, dtype, shape) | little-endian bytes, row-major
//! ```
//!
//! Written through the checkpoint module's atomic writer (temporary file, fsync, rename), then one fsync per
//! fan-out directory for all the objects of a stored state; a new fan-out directory is fsynced into
//! `objects/` before its first object is renamed into it. Temporary files of killed writers are removed when
//! a writer opens the run.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{atomic, tensor_from_le_bytes};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::store::variable_digest;
use crate::tensor::Tensor;

const MAGIC: &[u8; 8] = b"PSOBJ1\n\0";

#[derive(Serialize, Deserialize)]
struct ObjectHeader {
    path: String,
    dtype: String,
    shape: Vec<usize>,
}

/// The file of the object with `digest` under the run directory `dir`.
pub(crate) fn object_path(dir: &Path, digest: u128) -> PathBuf {
    let hex = format!("{digest:032x}");
    dir.join("objects").join(&hex[..2]).join(hex)
}

/// A budget of bytes after which writes fail as on a full disk (`None`: no limit); shared by every write of
/// one run (see [`RunOptions::fail_writes_after`](super::RunOptions::fail_writes_after)).
#[derive(Clone, Debug, Default)]
pub(crate) struct Budget(Option<std::sync::Arc<std::sync::atomic::AtomicU64>>);

impl Budget {
    pub(crate) fn new(limit: Option<u64>) -> Budget {
        Budget(limit.map(|l| std::sync::Arc::new(std::sync::atomic::AtomicU64::new(l))))
    }

    /// Takes `n` bytes from the budget, or fails with the error a full disk gives.
    pub(crate) fn take(&self, n: usize) -> io::Result<()> {
        use std::sync::atomic::Ordering;
        let Some(left) = &self.0 else { return Ok(()) };
        let n = n as u64;
        left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_sub(n))
            .map(|_| ())
            .map_err(|_| io::Error::new(io::ErrorKind::StorageFull, "no space left on device (injected)"))
    }
}

/// Writes `value` (of the variable at `path`) as the object `digest`, unless the file exists, and adds its
/// fan-out directory to `fans`. The object's name is durable only once the caller has fsynced the
/// directories in `fans` ([`sync`]): one fsync per directory for all the objects of a state. Returns the bytes
/// written (0 when it existed).
pub(crate) fn write(
    dir: &Path,
    path: &str,
    value: &Tensor,
    digest: u128,
    budget: &Budget,
    fans: &mut BTreeSet<PathBuf>,
) -> Result<u64> {
    let target = object_path(dir, digest);
    let fan = atomic::parent_dir(&target).to_path_buf();
    if target.exists() {
        // Written before, maybe by a process that died before its directory fsync: fsync it again.
        fans.insert(fan);
        return Ok(0);
    }
    if !fan.exists() {
        fs::create_dir_all(&fan).map_err(|source| Error::Io { file: fan.clone(), source })?;
        atomic::sync_directory(&dir.join("objects"))?;
    }
    let header =
        ObjectHeader { path: path.to_string(), dtype: value.dtype().name().to_string(), shape: value.dims().to_vec() };
    let header = serde_json::to_vec(&header).expect("strings and numbers always serialize");
    let total = (MAGIC.len() + 4 + header.len() + value.nbytes()) as u64;
    atomic::write_renamed(&target, total as usize, |w| {
        budget.take(total as usize)?;
        w.write_all(MAGIC)?;
        w.write_all(&(header.len() as u32).to_le_bytes())?;
        w.write_all(&header)?;
        let mut result = Ok(());
        value.for_each_le_chunk(|bytes| {
            if result.is_ok() {
                result = w.write_all(bytes);
            }
        });
        result
    })?;
    fans.insert(fan);
    Ok(total)
}

/// Fsyncs the fan-out directories `fans` (after [`write`]): the objects renamed into them are durable.
///
/// # Errors
/// [`Error::Io`] naming the directory.
pub(crate) fn sync(fans: &BTreeSet<PathBuf>) -> Result<()> {
    fans.iter().try_for_each(|fan| atomic::sync_directory(fan))
}

/// Removes the temporary files that writers killed mid-write left in the fan-out directories (best effort).
pub(crate) fn remove_strays(dir: &Path) {
    let Ok(fans) = fs::read_dir(dir.join("objects")) else { return };
    for fan in fans.flatten() {
        if fan.file_type().is_ok_and(|t| t.is_dir()) {
            atomic::remove_stray_temp_files(&fan.path());
        }
    }
}

/// Reads the object `digest`, which must hold the value of the variable at `path` (needed by `version`), and
/// checks that it hashes to its name.
///
/// # Errors
/// [`Error::ObjectMissing`], [`Error::ObjectCorrupt`], [`Error::Io`].
pub(crate) fn read(dir: &Path, path: &str, digest: u128, version: u64) -> Result<Tensor> {
    let file = object_path(dir, digest);
    let bytes = match fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::ObjectMissing { file, path: path.to_string(), version })
        }
        Err(source) => return Err(Error::Io { file, source }),
    };
    let bad = |reason: String| Error::ObjectCorrupt { file: file.clone(), path: path.to_string(), reason };
    let (stored_path, value) = decode(&bytes).map_err(bad)?;
    if stored_path != path {
        return Err(bad(format!("it holds `{stored_path}`")));
    }
    let got = variable_digest(path, &value);
    if got != digest {
        return Err(bad(format!("its bytes hash to {got:032x}, not to its name")));
    }
    Ok(value)
}

/// The variable path and value an object file holds.
pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<(String, Tensor), String> {
    if bytes.len() < MAGIC.len() + 4 || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not an object file (magic bytes)".into());
    }
    let n = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    let header = bytes.get(12..12 + n).ok_or("header beyond the file")?;
    let header: ObjectHeader = serde_json::from_slice(header).map_err(|e| format!("invalid header: {e}"))?;
    let dtype: DType = header.dtype.parse().map_err(|_| format!("unknown dtype `{}`", header.dtype))?;
    let data = &bytes[12 + n..];
    let elements = header.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("shape overflows")?;
    if elements.checked_mul(dtype.itemsize()) != Some(data.len()) {
        return Err(format!("{} data bytes for {} {:?}", data.len(), dtype, header.shape));
    }
    let value = tensor_from_le_bytes(dtype, &header.shape, data)?;
    Ok((header.path, value))
}

/// Every object file under `dir/objects`: its digest (from its name) and size.
pub(crate) fn list(dir: &Path) -> Result<Vec<(u128, PathBuf, u64)>> {
    let root = dir.join("objects");
    let io_err = |file: &Path| {
        let file = file.to_path_buf();
        move |source| Error::Io { file, source }
    };
    let mut out = Vec::new();
    let fans = match fs::read_dir(&root) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(source) => return Err(Error::Io { file: root, source }),
    };
    for fan in fans {
        let fan = fan.map_err(io_err(&root))?.path();
        if !fan.is_dir() {
            continue;
        }
        for entry in fs::read_dir(&fan).map_err(io_err(&fan))? {
            let entry = entry.map_err(io_err(&fan))?;
            let name = entry.file_name();
            let Some(digest) = name.to_str().filter(|n| n.len() == 32).and_then(|n| u128::from_str_radix(n, 16).ok())
            else {
                continue;
            };
            let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
            out.push((digest, entry.path(), size));
        }
    }
    out.sort_by_key(|o| o.0);
    Ok(out)
}

/// Removes the object files whose digests `keep` does not hold (best effort: a file that cannot be removed
/// stays, an extra object is harmless). Returns how many were removed.
pub(crate) fn sweep(dir: &Path, keep: &std::collections::HashSet<u128>) -> usize {
    let Ok(all) = list(dir) else { return 0 };
    let mut removed = 0;
    for (digest, path, _) in all {
        if !keep.contains(&digest) && fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}
