//! [`CheckpointManager`]: numbered checkpoints in one directory, pruned to the last N steps plus every k-th
//! (Orbax's `CheckpointManager` with `max_to_keep` and `keep_period`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{atomic, load, save};
use crate::error::{Error, Result};
use crate::store::StateStore;

const PREFIX: &str = "ckpt-";
const SUFFIX: &str = ".safetensors";

/// Saves, lists, prunes and loads numbered checkpoints `ckpt-00000042.safetensors` in one directory.
///
/// After each [`save`](Self::save) it keeps the newest `keep_last` steps plus every step divisible by
/// `keep_every` (Orbax's rule), and deletes the other checkpoint files. Every save is atomic
/// ([`checkpoint::save`](super::save)); files that do not match the name pattern are never touched.
///
/// # Examples
/// ```no_run
/// use purestate::{checkpoint::CheckpointManager, init, StateStore, VariableSpec};
/// let mut state = StateStore::new();
/// state.create(VariableSpec::new(init::Zeros).shape([4]).name("w"))?;
/// let manager = CheckpointManager::new("runs/ckpt", 3, 10)?; // last 3, plus every 10th
/// for step in 1..=25 {
///     manager.save(step, &state)?;
/// }
/// assert_eq!(manager.all_steps()?, [10, 20, 23, 24, 25]);
/// let latest = manager.latest()?.expect("a step was saved");
/// let resumed = manager.restore(latest)?;
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct CheckpointManager {
    dir: PathBuf,
    keep_last: Option<usize>,
    keep_every: Option<u64>,
}

impl CheckpointManager {
    /// A manager over `dir`, created if missing; stray temporary files of interrupted saves are removed.
    ///
    /// `keep_last`: how many of the newest steps to keep (`None`: all). `keep_every`: also keep every step
    /// divisible by it (`None`: no such steps). Both accept a plain number: `CheckpointManager::new(dir, 5,
    /// 100)`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `keep_last` or `keep_every` of 0; [`Error::Io`] when the directory cannot
    /// be created.
    pub fn new(
        dir: impl Into<PathBuf>,
        keep_last: impl Into<Option<usize>>,
        keep_every: impl Into<Option<u64>>,
    ) -> Result<Self> {
        let (dir, keep_last, keep_every) = (dir.into(), keep_last.into(), keep_every.into());
        let invalid =
            |arg, reason: &str| Error::InvalidArgument { op: "CheckpointManager::new", arg, reason: reason.into() };
        if keep_last == Some(0) {
            return Err(invalid("keep_last", "must be at least 1 (None keeps every step)"));
        }
        if keep_every == Some(0) {
            return Err(invalid("keep_every", "must be at least 1 (None keeps no extra step)"));
        }
        fs::create_dir_all(&dir).map_err(|source| Error::Io { file: dir.clone(), source })?;
        atomic::remove_stray_temp_files(&dir);
        Ok(CheckpointManager { dir, keep_last, keep_every })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of `step`: `<dir>/ckpt-<step, 8 digits or more>.safetensors`. It may not exist.
    pub fn path(&self, step: u64) -> PathBuf {
        self.dir.join(format!("{PREFIX}{step:08}{SUFFIX}"))
    }

    /// Saves `state` as `step` (replacing that step's file atomically if it exists), then deletes the
    /// checkpoints the retention rule no longer keeps (the new one too, if it is older than the newest
    /// `keep_last` and not a multiple of `keep_every`).
    ///
    /// O(state bytes) plus a directory listing.
    ///
    /// A directory holding a checkpoint of a newer step than `step` belongs to another lineage (another run,
    /// started afresh in the same directory): the save is refused rather than letting the retention rule
    /// delete the new checkpoint, or the other run's.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the directory holds a newer step; [`Error::Io`] when writing the
    /// checkpoint, listing the directory or deleting a pruned file fails; a failed write leaves every existing
    /// checkpoint intact.
    pub fn save(&self, step: u64, state: &StateStore) -> Result<()> {
        if let Some(&newer) = self.all_steps()?.iter().rev().find(|&&s| s > step) {
            return Err(Error::InvalidArgument {
                op: "CheckpointManager::save",
                arg: "step",
                reason: format!(
                    "{} holds step {newer}, newer than {step}: it belongs to another run (or one rolled back \
                     past its checkpoints); save into a directory of this run's own",
                    self.dir.display()
                ),
            });
        }
        save(state, self.path(step))?;
        self.prune()
    }

    /// Every step with a checkpoint file in the directory, ascending.
    ///
    /// # Errors
    /// [`Error::Io`] when the directory cannot be listed.
    pub fn all_steps(&self) -> Result<Vec<u64>> {
        let io_err = |source| Error::Io { file: self.dir.clone(), source };
        let mut steps = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            if let Some(step) = entry.file_name().to_str().and_then(parse_step) {
                steps.push(step);
            }
        }
        steps.sort_unstable();
        steps.dedup();
        Ok(steps)
    }

    /// The newest step on disk, `None` when there is none.
    ///
    /// # Errors
    /// [`Error::Io`] when the directory cannot be listed.
    pub fn latest(&self) -> Result<Option<u64>> {
        Ok(self.all_steps()?.last().copied())
    }

    /// Loads the checkpoint of `step` ([`checkpoint::load`](super::load)).
    ///
    /// # Errors
    /// As [`checkpoint::load`](super::load): [`Error::Io`] (a step that is not on disk is `NotFound`),
    /// [`Error::Corrupt`].
    pub fn restore(&self, step: u64) -> Result<StateStore> {
        load(self.path(step))
    }

    /// Deletes the checkpoints the retention rule does not keep.
    fn prune(&self) -> Result<()> {
        let steps = self.all_steps()?;
        for step in steps_to_delete(&steps, self.keep_last, self.keep_every) {
            let path = self.path(step);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(Error::Io { file: path, source }),
            }
        }
        Ok(())
    }
}

/// The step of a checkpoint file name `ckpt-<digits>.safetensors`.
fn parse_step(file_name: &str) -> Option<u64> {
    let digits = file_name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The steps of `steps` (ascending) that are neither among the newest `keep_last` nor divisible by
/// `keep_every`.
fn steps_to_delete(steps: &[u64], keep_last: Option<usize>, keep_every: Option<u64>) -> Vec<u64> {
    let Some(keep_last) = keep_last else {
        return Vec::new();
    };
    let older = &steps[..steps.len().saturating_sub(keep_last)];
    older.iter().copied().filter(|step| keep_every.is_none_or(|k| step % k != 0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_parse_exactly() {
        assert_eq!(parse_step("ckpt-00000042.safetensors"), Some(42));
        assert_eq!(parse_step("ckpt-123456789.safetensors"), Some(123_456_789));
        assert_eq!(parse_step("ckpt-.safetensors"), None);
        assert_eq!(parse_step("ckpt-+1.safetensors"), None);
        assert_eq!(parse_step(".ckpt-00000001.safetensors.tmp-1-0"), None);
        assert_eq!(parse_step("model.safetensors"), None);
    }

    #[test]
    fn retention_keeps_last_n_and_every_kth() {
        let steps: Vec<u64> = (1..=25).collect();
        let deleted = steps_to_delete(&steps, Some(3), Some(10));
        let kept: Vec<u64> = steps.iter().copied().filter(|s| !deleted.contains(s)).collect();
        assert_eq!(kept, [10, 20, 23, 24, 25]);
        assert!(steps_to_delete(&steps, None, None).is_empty());
        assert_eq!(steps_to_delete(&[1, 2, 3], Some(1), None), [1, 2]);
    }
}
