//! The run directory's fixed files: the `RUN` header (format and version) and the `LOCK` file whose exclusive
//! lock marks the one writer.
//!
//! ```text
//! RUN        {"format":"purestate.run","format_version":2,"matrix_kernel":"avx512f"}
//! LOCK       empty; locked (std `File::try_lock`) by the writing trainer while it lives
//! journal    see `journal`
//! objects/   see `objects`
//! ```

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::checkpoint::atomic;
use crate::error::{Error, Result};
use crate::kernels;

/// The header's `format`.
const FORMAT: &str = "purestate.run";
/// The format version this code writes and the newest it reads (2: binary commit entries; format 1 is read
/// only, see `journal`).
pub(crate) const FORMAT_VERSION: u32 = 2;

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    format_version: u32,
    /// The matrix kernel of the process that created the run ([`kernels::gemm::kernel`]); absent in runs
    /// written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    matrix_kernel: Option<String>,
}

pub(crate) fn header_path(dir: &Path) -> PathBuf {
    dir.join("RUN")
}

pub(crate) fn journal_path(dir: &Path) -> PathBuf {
    dir.join("journal")
}

/// Makes `dir` a new, empty run: refuses a directory that holds anything, writes the header.
///
/// # Errors
/// [`Error::RunExists`]; [`Error::Io`].
pub(crate) fn create(dir: &Path) -> Result<()> {
    let io_err = |file: &Path| {
        let file = file.to_path_buf();
        move |source| Error::Io { file, source }
    };
    if header_path(dir).exists() {
        return Err(Error::RunExists { dir: dir.to_path_buf(), what: "a run" });
    }
    if dir.exists() {
        let mut entries = fs::read_dir(dir).map_err(io_err(dir))?;
        if entries.next().is_some() {
            return Err(Error::RunExists { dir: dir.to_path_buf(), what: "files that are not a run" });
        }
    }
    fs::create_dir_all(dir.join("objects")).map_err(io_err(dir))?;
    let header = Header {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        matrix_kernel: Some(kernels::gemm::kernel().into()),
    };
    let json = serde_json::to_vec(&header).expect("strings and numbers always serialize");
    atomic::write_atomic(&header_path(dir), |w| w.write_all(&json))
}

/// Checks that `dir` is a run this code reads; returns the matrix kernel its header records.
///
/// # Errors
/// [`Error::NotARun`]; [`Error::RunFormatTooNew`].
pub(crate) fn check(dir: &Path) -> Result<Option<String>> {
    let file = header_path(dir);
    let not_a_run = |reason: String| Error::NotARun { dir: dir.to_path_buf(), reason };
    let bytes = match fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let what = if dir.is_dir() { "it has no RUN header file" } else { "no such directory" };
            return Err(not_a_run(what.into()));
        }
        Err(source) => return Err(Error::Io { file, source }),
    };
    let header: Header =
        serde_json::from_slice(&bytes).map_err(|e| not_a_run(format!("RUN is not a run header: {e}")))?;
    if header.format != FORMAT {
        return Err(not_a_run(format!("RUN names format `{}`", header.format)));
    }
    if header.format_version > FORMAT_VERSION {
        return Err(Error::RunFormatTooNew { file, found: header.format_version, supported: FORMAT_VERSION });
    }
    Ok(header.matrix_kernel)
}

/// The writer's lock on a run directory, released when dropped (or when the process dies).
#[derive(Debug)]
pub(crate) struct Lock {
    _file: File,
}

impl Lock {
    /// Takes the exclusive lock of `dir`.
    ///
    /// # Errors
    /// [`Error::RunLocked`] when another writer holds it; [`Error::Io`].
    pub(crate) fn acquire(dir: &Path) -> Result<Lock> {
        let path = dir.join("LOCK");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::Io { file: path.clone(), source })?;
        match file.try_lock() {
            Ok(()) => Ok(Lock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(Error::RunLocked { file: path }),
            Err(fs::TryLockError::Error(source)) => Err(Error::Io { file: path, source }),
        }
    }
}
