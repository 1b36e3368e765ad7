//! Atomic file replacement: write a temporary file beside the target, fsync it, rename it over the target,
//! fsync the directory (safetensors' temp file + rename, with the fsyncs it leaves out).
//!
//! A reader, or a process that restarts after a crash, sees either the old file or the new one, never a
//! mix. A process killed mid-write leaves at most one temporary file, named `.<name>.tmp-<pid>-<n>`; the next
//! write into that directory removes such files of processes that are no longer running.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The infix of temporary file names.
const TMP_INFIX: &str = ".tmp-";

/// How many names `create_temp` tries before giving up (only reached if the directory is full of ours).
const MAX_TEMP_ATTEMPTS: u32 = 10_000;

/// Replaces `target` with the bytes `write` produces, atomically.
///
/// Removes stray temporary files of dead processes from the directory first (best effort). On any error the
/// temporary file is removed and `target` is untouched, unless the error comes from the final directory
/// fsync, after the rename.
///
/// # Errors
/// [`Error::Io`] naming `target` (or its directory, for the directory fsync).
pub(crate) fn write_atomic(target: &Path, write: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> Result<()> {
    let io_err = |source| Error::Io { file: target.to_path_buf(), source };
    let name = target
        .file_name()
        .ok_or_else(|| io_err(io::Error::new(io::ErrorKind::InvalidInput, "the path names no file")))?;
    let dir = parent_dir(target);
    remove_stray_temp_files(dir);
    let (tmp_path, file) = create_temp(dir, name).map_err(io_err)?;
    let written = write_sync_rename(file, 1 << 20, &tmp_path, target, write);
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp_path);
        return Err(io_err(source));
    }
    sync_directory(dir)
}

/// Writes `target` as [`write_atomic`] does (temporary file, fsync, rename) but leaves out the directory
/// fsync and the removal of stray temporary files, for a caller that writes many files into few directories:
/// the new name is durable only once the caller has fsynced the directory ([`sync_directory`]), and the
/// caller removes strays ([`remove_stray_temp_files`]) itself. `size` is a hint of the bytes `write` writes.
///
/// # Errors
/// [`Error::Io`] naming `target`; the temporary file is removed and `target` is untouched.
pub(crate) fn write_renamed(
    target: &Path,
    size: usize,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<()> {
    let io_err = |source| Error::Io { file: target.to_path_buf(), source };
    let name = target
        .file_name()
        .ok_or_else(|| io_err(io::Error::new(io::ErrorKind::InvalidInput, "the path names no file")))?;
    let (tmp_path, file) = create_temp(parent_dir(target), name).map_err(io_err)?;
    let written = write_sync_rename(file, size.clamp(8 << 10, 1 << 20), &tmp_path, target, write);
    if let Err(source) = written {
        let _ = fs::remove_file(&tmp_path);
        return Err(io_err(source));
    }
    Ok(())
}

/// Fsyncs the directory `dir`, so that the names renamed into it are durable.
///
/// # Errors
/// [`Error::Io`] naming `dir`.
pub(crate) fn sync_directory(dir: &Path) -> Result<()> {
    sync_dir(dir).map_err(|source| Error::Io { file: dir.to_path_buf(), source })
}

/// Removes the temporary files this module leaves behind when a process dies mid-write, for every process
/// that is not running (a running process may be writing). Returns how many files it removed. Best effort:
/// an unreadable directory or a file that cannot be removed is skipped.
///
/// Liveness is read from `/proc`; where there is none, only this process's own files are spared.
pub(crate) fn remove_stray_temp_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(temp_file_pid) else {
            continue;
        };
        if process_is_running(pid) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The pid in a temporary file name `.<name>.tmp-<pid>-<n>`, or `None` for any other name.
pub(crate) fn temp_file_pid(file_name: &str) -> Option<u32> {
    if !file_name.starts_with('.') {
        return None;
    }
    let (stem, suffix) = file_name.rsplit_once(TMP_INFIX)?;
    if stem.len() < 2 {
        return None;
    }
    let (pid, n) = suffix.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(n) {
        return None;
    }
    pid.parse().ok()
}

/// The directory holding `target` (`.` for a bare file name).
pub(crate) fn parent_dir(target: &Path) -> &Path {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn write_sync_rename(
    file: File,
    capacity: usize,
    tmp_path: &Path,
    target: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let mut out = BufWriter::with_capacity(capacity, file);
    write(&mut out)?;
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp_path, target)
}

/// Creates `.<name>.tmp-<pid>-<n>` in `dir` for the first `n` whose file does not exist yet.
fn create_temp(dir: &Path, name: &OsStr) -> io::Result<(PathBuf, File)> {
    let pid = std::process::id();
    for n in 0..MAX_TEMP_ATTEMPTS {
        let mut tmp_name = OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!("{TMP_INFIX}{pid}-{n}"));
        let path = dir.join(tmp_name);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, "no free temporary file name"))
}

fn process_is_running(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let proc = Path::new("/proc");
    proc.join("self").exists() && proc.join(pid.to_string()).exists()
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid no Linux system hands out (`pid_max` is at most 2^22).
    const DEAD_PID: u32 = 4_000_000_000;

    #[test]
    fn temp_names_are_recognised_exactly() {
        assert_eq!(temp_file_pid(".ckpt.safetensors.tmp-123-0"), Some(123));
        assert_eq!(temp_file_pid(".a.tmp-1-22"), Some(1));
        assert_eq!(temp_file_pid("ckpt.safetensors.tmp-123-0"), None);
        assert_eq!(temp_file_pid(".ckpt.safetensors.tmp-12a-0"), None);
        assert_eq!(temp_file_pid(".ckpt.safetensors.tmp-123-"), None);
        assert_eq!(temp_file_pid(".ckpt.safetensors"), None);
        assert_eq!(temp_file_pid(".tmp-1-2"), None);
    }

    #[test]
    fn write_replaces_the_target_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f.bin");
        write_atomic(&target, |w| w.write_all(b"old")).unwrap();
        write_atomic(&target, |w| w.write_all(b"new")).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn failed_write_keeps_the_old_file_and_removes_the_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f.bin");
        write_atomic(&target, |w| w.write_all(b"old")).unwrap();
        let err = write_atomic(&target, |w| {
            w.write_all(&[7; 4096])?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(matches!(err, Error::Io { ref file, .. } if file == &target), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stray_temp_files_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join(format!(".f.bin.tmp-{DEAD_PID}-0"));
        let ours = dir.path().join(format!(".f.bin.tmp-{}-7", std::process::id()));
        let other = dir.path().join(".f.bin.tmp-notes");
        for p in [&dead, &ours, &other] {
            fs::write(p, b"partial").unwrap();
        }
        write_atomic(&dir.path().join("f.bin"), |w| w.write_all(b"x")).unwrap();
        assert!(!dead.exists());
        assert!(ours.exists(), "a running process's temp file is left alone");
        assert!(other.exists(), "a file that does not match the pattern is left alone");
    }

    #[test]
    fn bare_file_name_lives_in_the_current_directory() {
        assert_eq!(parent_dir(Path::new("f.bin")), Path::new("."));
        assert_eq!(parent_dir(Path::new("a/f.bin")), Path::new("a"));
    }
}
