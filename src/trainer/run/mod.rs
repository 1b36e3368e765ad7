//! Durable runs: a [`Trainer`] that journals to a run directory, so that its history (versions, parents,
//! fingerprints, records, tags, rollbacks) and the states it stores outlive the process.
//!
//! - [`Trainer::create_run`] makes a new run whose version 0 is the given state; [`Trainer::open_run`] reopens
//!   it, in this or another process, as it was at its last durable point.
//! - Every event is an entry of an append-only, checksummed journal (`journal.rs`); a torn tail is cut and
//!   reported ([`Trainer::run_report`]), damage before it is [`Error::JournalCorrupt`].
//! - Stored values are content-addressed objects named by their digest (`objects.rs`), written by a background
//!   writer (`writer.rs`) from O(1) snapshots: a frozen layer costs its bytes once per run.
//! - [`RunOptions`] chooses when entries become durable ([`Durability`]), which versions store their state,
//!   and what the disk and the memory keep. The head of every durable point has its state stored, so
//!   `open_run` needs no step function; other versions come back by [`Trainer::load`] (stored) or
//!   [`Trainer::materialize`] (replayed from the nearest stored ancestor, fingerprint checked at every step).
//! - One writer per directory (`LOCK`, std's `File::try_lock`); [`RunOptions::read_only`] opens without it.
//! - [`verify`] re-hashes every object and checks the journal's chain; [`summary`] describes a run.
//!
//! # Examples
//! ```no_run
//! use purestate::{init, RunOptions, StateStore, Tensor, Trainer, VariableSpec};
//! let mut state = StateStore::new();
//! let w = state.create(VariableSpec::new(init::Zeros).shape([2]).name("w"))?;
//! let mut trainer: Trainer<f32> = Trainer::create_run("runs/demo", state, RunOptions::default())?;
//! for lr in [0.1f32, 0.2] {
//!     let mut next = trainer.state().clone();
//!     next.assign_add(&w, Tensor::from(lr))?;
//!     trainer.commit_with(next, lr)?;
//! }
//! trainer.flush()?; // v0..v2 are durable
//! drop(trainer);
//!
//! let reopened: Trainer<f32> = Trainer::open_run("runs/demo", RunOptions::default())?;
//! assert_eq!(reopened.head(), 2);
//! assert_eq!(reopened.record(1)?, Some(&0.1));
//! # Ok::<(), purestate::Error>(())
//! ```

mod history;
mod inspect;
mod journal;
mod layout;
mod link;
mod objects;
mod options;
mod writer;

pub use inspect::{summary, verify, Problem, RunSummary};
pub use options::{Durability, OpenReport, RunOptions};

use self::history::History;
pub(crate) use self::link::Link;
use self::link::*;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use self::journal::{Commit, Manifest, Meta};
use self::layout::Lock;
use self::objects::Budget;
use self::writer::{Job, Shared, Writer};
use super::{Retention, Trainer, Version};
use crate::error::{Error, Result};
use crate::random::Key;
use crate::store::{fingerprint_of_digest_sum, Fingerprint, StateStore};
use crate::tensor::Tensor;

fn encode_json<R: Serialize>(record: &R) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(record)
}

fn io_err(file: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { file: file.to_path_buf(), source }
}

/// Reads the journal of `dir`: its entries up to the last durable group.
fn read_journal(dir: &Path) -> Result<journal::Scan> {
    let file = layout::journal_path(dir);
    let bytes = fs::read(&file).map_err(io_err(&file))?;
    journal::scan(&bytes, &file)
}

impl<R> Trainer<R> {
    /// The run directory this trainer journals to, if any.
    pub fn run_dir(&self) -> Option<&Path> {
        self.run.as_deref().map(|l| l.dir.as_path())
    }

    /// What [`open_run`](Self::open_run) found (entries read, torn tail cut); `None` without a run.
    pub fn run_report(&self) -> Option<&OpenReport> {
        self.run.as_deref().map(|l| &l.report)
    }

    /// Returns once everything committed so far is durable: the buffered entries are journaled, the head's
    /// state is stored, the journal is fsynced. A no-op without a run directory.
    ///
    /// # Errors
    /// A write error of the background writer (this call's or an earlier one's), [`Error::Io`] naming the file;
    /// [`Error::RunNotWritable`] for a read-only run or after an earlier write error was reported.
    pub fn flush(&mut self) -> Result<()> {
        let pinned = self.pinned();
        let latest = self.latest();
        let head = self.head;
        match self.run.as_deref_mut() {
            None => Ok(()),
            Some(link) => {
                link.ready()?;
                link.durable(head, pinned, latest, true)
            }
        }
    }

    /// The state of `version`: from memory when retained, else from the run directory when stored there
    /// (every object re-hashed, the whole state checked against the committed fingerprint).
    ///
    /// # Errors
    /// [`Error::UnknownVersion`]; [`Error::Pruned`] without a run; [`Error::NotStored`] when the run did not
    /// store it (use [`materialize`](Self::materialize)); [`Error::ObjectMissing`], [`Error::ObjectCorrupt`].
    pub fn load(&mut self, version: u64) -> Result<StateStore> {
        let v = self.version(version)?;
        if let Some(state) = &v.state {
            return Ok(state.clone());
        }
        let expected = v.fingerprint;
        let id = self.id;
        self.run_make_durable(version)?;
        let Some(link) = self.run.as_deref_mut() else {
            return Err(Error::Pruned { version });
        };
        link.barrier()?;
        let mut state = link.read_stored(version, expected)?;
        state.set_committed(id, version);
        Ok(state)
    }

    /// The state of `version` from memory, or from the run directory's durable stored states (no waiting for
    /// the writer). What [`replay`](Self::replay) starts from.
    pub(super) fn state_of(&self, version: u64) -> Result<StateStore> {
        let v = self.version(version)?;
        if let Some(state) = &v.state {
            return Ok(state.clone());
        }
        let Some(link) = self.run.as_deref() else {
            return Err(Error::Pruned { version });
        };
        let mut state = link.read_stored(version, v.fingerprint)?;
        state.set_committed(self.id, version);
        Ok(state)
    }

    /// The state of any version: [`load`](Self::load)ed when it is kept, else replayed with `step` from its
    /// nearest ancestor that is kept, feeding each step its committed record and checking each result's
    /// fingerprint against the committed one.
    ///
    /// # Errors
    /// As [`load`](Self::load); [`Error::MissingRecord`]; [`Error::ReplayMismatch`] naming the first version
    /// whose replay differs; whatever `step` returns.
    pub fn materialize<F>(&mut self, version: u64, mut step: F) -> Result<StateStore>
    where
        F: FnMut(StateStore, &R) -> Result<StateStore>,
    {
        let mut chain = vec![version];
        loop {
            let v = *chain.last().expect("non-empty");
            if self.is_kept(v)? {
                break;
            }
            match self.version(v)?.parent {
                Some(p) => chain.push(p),
                None => return Err(Error::NotStored { version: v }),
            }
        }
        chain.reverse();
        let mut state = self.load(chain[0])?;
        for &v in &chain[1..] {
            let record = self.record(v)?.ok_or(Error::MissingRecord { version: v })?;
            state = step(state, record)?;
            state.settle();
            let (got, expected) = (state.fingerprint(), self.fingerprint(v)?);
            if got != expected {
                return Err(Error::ReplayMismatch { version: v, expected, got });
            }
            state.set_committed(self.id, v);
        }
        Ok(state)
    }

    /// Re-expresses the trainer's states in the lineage of `template` (a state your code built, with the same
    /// variable paths), so that the handles of your model and optimizer work on them. States
    /// [`open_run`](Self::open_run) reads come in a lineage of their own; call this once after it. States read
    /// later ([`load`](Self::load), [`materialize`](Self::materialize)) follow. Values, fingerprints and
    /// versions do not change; variables of a state that `template` lacks are created.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] for a variable whose dtype or shape differs from `template`'s.
    pub fn rebind(&mut self, template: &StateStore) -> Result<()> {
        let id = self.id;
        let file = self.run_dir().map(layout::journal_path).unwrap_or_default();
        for (&version, v) in self.versions.iter_mut() {
            if let Some(state) = &v.state {
                let manifest = writer::manifest_of(state);
                let values: Vec<Tensor> = state.iter().map(|(_, t)| t.clone()).collect();
                let mut rebuilt = build_state(&manifest, values, Some(template), &file)?;
                rebuilt.set_committed(id, version);
                v.state = Some(rebuilt);
            }
        }
        if let Some(link) = self.run.as_deref_mut() {
            link.template = Some(template.clone());
            link.head_state = self.versions[&self.head].state.clone().expect("the head is retained");
        }
        Ok(())
    }

    /// Writes the state of `version` ([`load`](Self::load)) as a safetensors checkpoint
    /// ([`checkpoint::save`](crate::checkpoint::save)), which Python reads.
    ///
    /// # Errors
    /// As [`load`](Self::load) and [`checkpoint::save`](crate::checkpoint::save).
    pub fn export(&mut self, version: u64, path: impl AsRef<Path>) -> Result<()> {
        let state = self.load(version)?;
        crate::checkpoint::save(&state, path)
    }

    /// Flushes when `version`'s state was sent to be stored but its entry is not durable yet.
    fn run_make_durable(&mut self, version: u64) -> Result<()> {
        let pending = self.run.as_deref().is_some_and(|link| {
            link.requested.contains(&version)
                && !link.shared.stored.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&version)
        });
        if pending {
            self.flush()?;
        }
        Ok(())
    }

    /// Whether `version`'s state is in memory or stored in the run directory.
    fn is_kept(&mut self, version: u64) -> Result<bool> {
        if self.version(version)?.state.is_some() {
            return Ok(true);
        }
        self.run_make_durable(version)?;
        match self.run.as_deref_mut() {
            None => Ok(false),
            Some(link) => {
                link.barrier()?;
                Ok(link.shared.stored.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&version))
            }
        }
    }

    /// The head and the tagged versions.
    fn pinned(&self) -> Vec<u64> {
        let mut pinned: Vec<u64> = self.tags.values().copied().collect();
        pinned.push(self.head);
        pinned
    }

    /// Checks that the run takes writes (reports a pending write error). Called before any change.
    pub(super) fn run_ready(&mut self) -> Result<()> {
        match self.run.as_deref_mut() {
            Some(link) => link.ready(),
            None => Ok(()),
        }
    }

    /// Journals the commit of `version` (already in `versions`, the head) and applies the durability policy.
    pub(super) fn run_commit(&mut self, version: u64) -> Result<()> {
        let pinned = self.pinned();
        let latest = self.latest();
        let Some(link) = self.run.as_deref_mut() else { return Ok(()) };
        let v = &self.versions[&version];
        let state = v.state.as_ref().expect("a new version is retained");
        link.journal_commit(version, v.parent, v.fingerprint, v.record.as_ref(), state)?;
        link.after_commit(version, pinned, latest)
    }

    /// Journals a rollback to `version` (the head now) as a durable point.
    pub(super) fn run_rollback(&mut self, version: u64) -> Result<()> {
        let pinned = self.pinned();
        let latest = self.latest();
        let Some(link) = self.run.as_deref_mut() else { return Ok(()) };
        let state = self.versions[&version].state.clone().expect("the head is retained");
        journal::encode(&mut link.buf, &Meta::Rollback { v: version }, b"");
        link.paths.set_head(&state);
        link.head_state = state;
        link.durable(version, pinned, latest, matches!(link.options.durability, Durability::EveryCommit))
    }

    /// Journals a tag and waits until it (and the tagged head's state) is durable.
    pub(super) fn run_tag(&mut self, name: &str, version: u64) -> Result<()> {
        let pinned = self.pinned();
        let latest = self.latest();
        let Some(link) = self.run.as_deref_mut() else { return Ok(()) };
        journal::encode(&mut link.buf, &Meta::Tag { name: name.to_string(), v: version }, b"");
        link.durable(self.head, pinned, latest, true)
    }

    /// The state of a version retention dropped from memory, read back from the run directory (for rollback).
    pub(super) fn run_restore(&mut self, version: u64) -> Result<()> {
        if self.run.is_none() || self.version(version)?.state.is_some() {
            return Ok(());
        }
        let state = self.load(version)?;
        self.versions.get_mut(&version).expect("checked").state = Some(state);
        self.retained.insert(version);
        Ok(())
    }
}

impl<R: Serialize + DeserializeOwned> Trainer<R> {
    /// A new run in `dir` (created if missing; it must be empty) whose version 0 is `state`, stored before
    /// this returns. The trainer journals every commit, tag and rollback to it, per `options`.
    ///
    /// # Errors
    /// [`Error::RunExists`] when `dir` holds a run or other files; [`Error::Io`].
    pub fn create_run(dir: impl AsRef<Path>, state: StateStore, options: RunOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if options.read_only {
            return Err(Error::RunNotWritable { dir, reason: "`create_run` with read-only options".into() });
        }
        layout::create(&dir)?;
        let lock = Lock::acquire(&dir)?;
        let file = layout::journal_path(&dir);
        fs::write(&file, journal::MAGIC).map_err(io_err(&file))?;
        fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(io_err(&dir))?;
        let mut trainer = Trainer::new(state).with_retention(options.memory_retention);
        let state0 = trainer.state().clone();
        let mut link = start(
            &dir,
            options,
            lock,
            OpenReport { matrix_kernel: Some(crate::kernels::gemm::kernel().into()), ..OpenReport::default() },
            &state0,
            HashSet::new(),
            BTreeMap::new(),
            BTreeMap::new(),
        )?;
        link.template = Some(state0.clone());
        trainer.run = Some(Box::new(link));
        trainer.run_commit_initial()?;
        Ok(trainer)
    }

    /// Imports a safetensors checkpoint ([`checkpoint::load`](crate::checkpoint::load)) as version 0 of a new
    /// run in `dir`.
    ///
    /// # Errors
    /// As [`checkpoint::load`](crate::checkpoint::load) and [`create_run`](Self::create_run).
    pub fn import_run(dir: impl AsRef<Path>, checkpoint: impl AsRef<Path>, options: RunOptions) -> Result<Self> {
        let state = crate::checkpoint::load(checkpoint)?;
        Trainer::create_run(dir, state, options)
    }

    /// Reopens the run in `dir` as it was at its last durable point: head, versions, parents, fingerprints,
    /// tags, records and rollbacks. The head's state is read from disk (every object re-hashed) in a lineage of
    /// its own: call [`rebind`](Self::rebind) with a state of your model to use its handles.
    ///
    /// A torn tail (the process died mid-append) is cut and reported in [`run_report`](Self::run_report).
    ///
    /// # Errors
    /// [`Error::NotARun`], [`Error::RunFormatTooNew`], [`Error::RunLocked`] (another writer),
    /// [`Error::JournalCorrupt`] naming the offset of a damaged entry, [`Error::RecordDecode`] for a record that
    /// does not deserialize into `R`, [`Error::ObjectMissing`], [`Error::ObjectCorrupt`], [`Error::Io`]. On
    /// error nothing on disk changed.
    pub fn open_run(dir: impl AsRef<Path>, options: RunOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let matrix_kernel = layout::check(&dir)?;
        let lock = if options.read_only { None } else { Some(Lock::acquire(&dir)?) };
        let file = layout::journal_path(&dir);
        let scan = read_journal(&dir)?;
        if lock.is_some() && scan.format < journal::FORMAT {
            return Err(Error::RunNotWritable {
                dir,
                reason: format!(
                    "its journal is in run format {}; this purestate appends format {} only: open it with \
                     `RunOptions::read_only()`",
                    scan.format,
                    journal::FORMAT
                ),
            });
        }
        let history = History::<R>::replay(&scan, &file, true)?;
        let head = history.head;
        let manifest = history.stored.get(&head).cloned().ok_or(Error::NotStored { version: head })?;
        let id = super::TrainerId::next();
        let mut head_state = read_state(&dir, head, &manifest, None)?;
        let expected = history.versions[&head].fingerprint;
        if head_state.fingerprint() != expected {
            return Err(Error::JournalCorrupt {
                file: file.clone(),
                offset: 0,
                reason: format!("the stored head v{head} does not hash to its committed fingerprint {expected}"),
            });
        }
        head_state.set_committed(id, head);
        let mut versions = history.versions;
        versions.get_mut(&head).expect("head exists").state = Some(head_state.clone());
        let report = OpenReport { torn_bytes: scan.torn_bytes, entries: scan.entries.len(), head, matrix_kernel };
        if !options.read_only && scan.torn_bytes > 0 {
            let f = OpenOptions::new().write(true).open(&file).map_err(io_err(&file))?;
            f.set_len(scan.valid_len).and_then(|()| f.sync_all()).map_err(io_err(&file))?;
        }
        let retention = options.memory_retention;
        let mut trainer = Trainer {
            id,
            versions,
            retained: BTreeSet::from([head]),
            head,
            tags: history.tags,
            retention,
            nonfinite_guard: false,
            run: None,
        };
        let stored_digests: BTreeMap<u64, Vec<u128>> =
            history.stored.iter().map(|(&v, m)| (v, m.digest_values())).collect();
        let objects: HashSet<u128> = stored_digests.values().flatten().copied().collect();
        let stored: BTreeMap<u64, Arc<Manifest>> = history.stored.into_iter().map(|(v, m)| (v, Arc::new(m))).collect();
        let mut link = if let Some(lock) = lock {
            objects::remove_strays(&dir);
            objects::sweep(&dir, &objects);
            start(&dir, options, lock, report, &head_state, objects, stored_digests, stored)?
        } else {
            Link::new(&dir, options, report, &head_state, shared_with(stored))
        };
        link.paths = Paths::from_table(scan.paths);
        link.paths.set_head(&head_state);
        trainer.run = Some(Box::new(link));
        Ok(trainer)
    }

    /// Journals version 0 and makes it durable (its state stored) before `create_run` returns.
    fn run_commit_initial(&mut self) -> Result<()> {
        let link = self.run.as_deref_mut().expect("just attached");
        let v0 = &self.versions[&0];
        let state = v0.state.clone().expect("version 0 is retained");
        link.paths = Paths::default();
        link.journal_commit(0, None, v0.fingerprint, None, &state)?;
        link.durable(0, vec![0], 0, true)
    }
}
