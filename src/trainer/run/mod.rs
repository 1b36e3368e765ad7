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

mod journal;
mod layout;
mod objects;
mod writer;

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

/// When journal entries become durable (fsynced).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Every commit, tag and rollback is durable (journal fsynced, head state stored) before the call returns.
    /// Safest and slowest: each commit waits for the disk.
    EveryCommit,
    /// Entries are buffered and made durable by the background writer after `versions` commits or `millis`
    /// milliseconds (checked at each commit), and at every [`Trainer::flush`], tag, rollback and drop. A crash
    /// loses at most the commits since the last durable point.
    Batched {
        /// Make durable after this many commits (`None`: no count limit).
        versions: Option<u64>,
        /// Make durable when this many milliseconds passed since the last durable point (`None`: no limit).
        millis: Option<u64>,
    },
}

impl Default for Durability {
    /// Batched: every 100 versions or 1000 ms.
    fn default() -> Self {
        Durability::Batched { versions: Some(100), millis: Some(1000) }
    }
}

/// How a trainer journals to its run directory.
///
/// The defaults: [`Durability::default`] (batched), the head's state stored at every durable point and at
/// tags (always), no extra periodic states, every stored state kept on disk, and in memory the head, tags,
/// version 0 and the 4 most recent states (the disk holds the rest).
///
/// # Examples
/// ```
/// use purestate::{Durability, Retention, RunOptions};
/// let opts = RunOptions::default()
///     .durability(Durability::Batched { versions: Some(10), millis: None })
///     .store_every(100)                                  // also store every 100th version
///     .disk_retention(Retention::keep_last(3).and_every(1000))
///     .memory_retention(Retention::keep_last(2));
/// assert_eq!(opts.get_durability(), Durability::Batched { versions: Some(10), millis: None });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    durability: Durability,
    store_every: Option<u64>,
    disk_retention: Retention,
    memory_retention: Retention,
    queue: usize,
    read_only: bool,
    fail_writes_after: Option<u64>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            durability: Durability::default(),
            store_every: None,
            disk_retention: Retention::keep_all(),
            memory_retention: Retention::keep_last(4),
            queue: 4,
            read_only: false,
            fail_writes_after: None,
        }
    }
}

impl RunOptions {
    /// When entries become durable.
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// The durability chosen.
    pub fn get_durability(&self) -> Durability {
        self.durability
    }

    /// Also store the state of every version that is a multiple of `k` (beside the head at durable points and
    /// tagged versions, which are always stored). `0` stores no extra versions.
    pub fn store_every(mut self, k: u64) -> Self {
        self.store_every = (k > 0).then_some(k);
        self
    }

    /// Which stored states stay on disk (applied at every durable point). Version 0, tagged versions and the
    /// head are always kept; objects no kept state names are swept.
    pub fn disk_retention(mut self, retention: Retention) -> Self {
        self.disk_retention = retention;
        self
    }

    /// Which states stay in memory (the trainer's [`Retention`]); separate from the disk's.
    pub fn memory_retention(mut self, retention: Retention) -> Self {
        self.memory_retention = retention;
        self
    }

    /// How many pending writes (states to store, groups of entries) the background writer's queue holds before
    /// the trainer waits for it (backpressure). At least 1; default 4.
    pub fn queue(mut self, jobs: usize) -> Self {
        self.queue = jobs.max(1);
        self
    }

    /// Opens without taking the writer's lock: for inspecting a run, also while another process trains it.
    /// Commits, tags, rollbacks and flushes are then [`Error::RunNotWritable`]; nothing is written, and a torn
    /// tail is ignored rather than cut.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// A test aid: every write to the run fails, as on a full disk (`ErrorKind::StorageFull`), once `bytes`
    /// bytes have been written by this trainer. Use it to check how a program handles a full disk.
    pub fn fail_writes_after(mut self, bytes: u64) -> Self {
        self.fail_writes_after = Some(bytes);
        self
    }
}

/// What [`Trainer::open_run`] found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Bytes of torn tail after the last durable group (cut off unless opened read-only).
    pub torn_bytes: u64,
    /// Journal entries read.
    pub entries: usize,
    /// The head at the last durable point.
    pub head: u64,
}

impl fmt::Display for OpenReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} journal entries, head v{}", self.entries, self.head)?;
        if self.torn_bytes > 0 {
            write!(f, "; cut a torn tail of {} bytes", self.torn_bytes)?;
        }
        Ok(())
    }
}

/// The encoder of a trainer's records (JSON), captured where `R: Serialize` is known.
type Encode<R> = fn(&R) -> serde_json::Result<Vec<u8>>;

/// A trainer's attachment to its run directory.
pub(crate) struct Link<R> {
    dir: PathBuf,
    options: RunOptions,
    encode: Encode<R>,
    /// Encoded entries not yet handed to the writer.
    buf: Vec<u8>,
    since_durable: u64,
    last_durable: Instant,
    /// The journal's path table and each variable's digest in the head's state, to journal only what a commit
    /// changed.
    paths: Paths,
    /// The commit entry being encoded (its buffers reused from commit to commit).
    commit: Commit,
    head_state: StateStore,
    shared: Arc<Shared>,
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// States loaded from disk are built in this store's lineage, so its handles work on them.
    template: Option<StateStore>,
    /// The message of a write error already reported.
    failed: Option<String>,
    report: OpenReport,
    /// Versions sent to the writer to store since the last group was sent (the next group journals them; then
    /// they are in `shared.stored`, or pruned).
    requested: BTreeSet<u64>,
    /// The head and tagged versions, and the newest version, as of the last call (for the group at drop).
    pinned: Vec<u64>,
    latest: u64,
    _lock: Option<Lock>,
}

impl<R> fmt::Debug for Link<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link").field("dir", &self.dir).field("options", &self.options).finish()
    }
}

/// A path's id in the journal's path table and its digest in the head's state (`None`: not in the head).
#[derive(Clone, Copy, Debug)]
struct Slot {
    id: u32,
    digest: Option<u128>,
}

/// The journal's path table as the trainer writes it, with each path's digest in the head's state.
#[derive(Debug, Default)]
struct Paths {
    slots: HashMap<String, Slot>,
    /// Paths by id.
    names: Vec<String>,
    /// Ids below this are declared by an entry already encoded.
    declared: usize,
    /// Variables in the head's state.
    head_len: usize,
}

impl Paths {
    /// The table of a journal (every path declared), with no head.
    fn from_table(names: Vec<String>) -> Paths {
        let slots = names.iter().enumerate().map(|(id, p)| (p.clone(), Slot { id: id as u32, digest: None })).collect();
        Paths { slots, declared: names.len(), names, head_len: 0 }
    }

    /// A new path, not declared yet; returns its id.
    fn add(&mut self, path: &str, digest: Option<u128>) -> u32 {
        let id = self.names.len() as u32;
        self.names.push(path.to_string());
        self.slots.insert(path.to_string(), Slot { id, digest });
        id
    }

    /// Makes `state` the head.
    fn set_head(&mut self, state: &StateStore) {
        for slot in self.slots.values_mut() {
            slot.digest = None;
        }
        for e in state.entries() {
            let digest = digest_of(e);
            match self.slots.get_mut(e.var.path()) {
                Some(slot) => slot.digest = Some(digest),
                None => {
                    self.add(e.var.path(), Some(digest));
                }
            }
        }
        self.head_len = state.len();
    }
}

fn digest_of(e: &crate::store::Entry) -> u128 {
    e.cache.map_or_else(|| crate::store::variable_digest(e.var.path(), &e.value), |f| f.digest)
}

impl<R> Link<R> {
    fn writable(&self) -> bool {
        self.jobs.is_some()
    }

    /// Reports a pending write error (once; afterwards every write is [`Error::RunNotWritable`]).
    fn ready(&mut self) -> Result<()> {
        if !self.writable() {
            let reason = self.failed.clone().unwrap_or_else(|| "it was opened read-only".into());
            return Err(Error::RunNotWritable { dir: self.dir.clone(), reason });
        }
        if let Some(reason) = &self.failed {
            return Err(Error::RunNotWritable {
                dir: self.dir.clone(),
                reason: format!("an earlier write failed: {reason}"),
            });
        }
        let failure = self.shared.failure.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(e) = failure {
            self.failed = Some(e.to_string());
            return Err(e);
        }
        Ok(())
    }

    fn send(&mut self, job: Job) -> Result<()> {
        let sent = self.jobs.as_ref().map(|jobs| jobs.send(job).is_ok());
        match sent {
            Some(true) => Ok(()),
            _ => {
                self.failed.get_or_insert_with(|| "the background writer stopped".into());
                self.ready()
            }
        }
    }

    /// Waits until every job sent so far is done, then reports a write error.
    fn barrier(&mut self) -> Result<()> {
        if self.writable() {
            let (ack, done) = mpsc::sync_channel(1);
            self.send(Job::Barrier(ack))?;
            let _ = done.recv();
        }
        Ok(())
    }

    /// Buffers the commit entry of `version`.
    fn journal_commit(
        &mut self,
        version: u64,
        parent: Option<u64>,
        fp: Fingerprint,
        record: Option<&R>,
        state: &StateStore,
    ) -> Result<()> {
        let extra = match record {
            Some(r) => (self.encode)(r).map_err(|e| Error::InvalidArgument {
                op: "Trainer::commit_with",
                arg: "record",
                reason: format!("the record does not serialize: {e}"),
            })?,
            None => Vec::new(),
        };
        // The digests are the ones the store cached when the state settled: nothing is hashed again here.
        let (paths, c) = (&mut self.paths, &mut self.commit);
        c.changed.clear();
        c.removed.clear();
        c.new_paths.clear();
        let mut present = 0;
        for e in state.entries() {
            let digest = digest_of(e);
            match paths.slots.get_mut(e.var.path()) {
                Some(slot) => {
                    present += usize::from(slot.digest.is_some());
                    if slot.digest != Some(digest) {
                        slot.digest = Some(digest);
                        c.changed.push((slot.id, digest));
                    }
                }
                None => c.changed.push((paths.add(e.var.path(), Some(digest)), digest)),
            }
        }
        if present < paths.head_len {
            for (path, slot) in paths.slots.iter_mut() {
                if slot.digest.is_some() && state.find(path).is_err() {
                    slot.digest = None;
                    c.removed.push(slot.id);
                }
            }
            c.removed.sort_unstable();
        }
        paths.head_len = state.len();
        c.new_paths.extend_from_slice(&paths.names[paths.declared..]);
        paths.declared = paths.names.len();
        c.v = version;
        c.parent = parent;
        c.fp = fp;
        c.record = record.is_some();
        journal::encode_commit(&mut self.buf, c, &extra);
        self.head_state = state.clone();
        Ok(())
    }

    /// After a commit: store the state if the policy asks, and make the batch durable when it is due.
    fn after_commit(&mut self, version: u64, pinned: Vec<u64>, latest: u64) -> Result<()> {
        if self.options.store_every.is_some_and(|k| version.is_multiple_of(k)) {
            let state = self.head_state.clone();
            self.send(Job::Store { version, state })?;
            self.requested.insert(version);
        }
        self.since_durable += 1;
        self.pinned.clone_from(&pinned);
        self.latest = latest;
        match self.options.durability {
            Durability::EveryCommit => self.durable(version, pinned, latest, true),
            Durability::Batched { versions, millis } => {
                let due = versions.is_some_and(|n| self.since_durable >= n)
                    || millis.is_some_and(|ms| self.last_durable.elapsed() >= Duration::from_millis(ms));
                if due {
                    self.durable(version, pinned, latest, false)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Hands the buffered entries to the writer as one durable group (storing the head), waiting for it when
    /// `wait`.
    fn durable(&mut self, head: u64, pinned: Vec<u64>, latest: u64, wait: bool) -> Result<()> {
        let entries = std::mem::take(&mut self.buf);
        let (ack, done) = if wait {
            let (a, d) = mpsc::sync_channel(1);
            (Some(a), Some(d))
        } else {
            (None, None)
        };
        let head_state = self.head_state.clone();
        self.pinned.clone_from(&pinned);
        self.latest = latest;
        self.send(Job::Group { entries, head, head_state, pinned, latest, ack })?;
        // The group journals every state requested so far (or prunes it): none is pending any more.
        self.requested.clear();
        self.since_durable = 0;
        self.last_durable = Instant::now();
        if let Some(done) = done {
            let _ = done.recv();
            return self.ready();
        }
        Ok(())
    }

    /// Reads the durable stored state of `version`, checked object by object and against `expected`.
    fn read_stored(&self, version: u64, expected: Fingerprint) -> Result<StateStore> {
        let manifest = self.shared.stored.lock().unwrap_or_else(|p| p.into_inner()).get(&version).cloned();
        let manifest = manifest.ok_or(Error::NotStored { version })?;
        let state = read_state(&self.dir, version, &manifest, self.template.as_ref())?;
        let got = state.fingerprint();
        if got != expected {
            return Err(Error::JournalCorrupt {
                file: layout::journal_path(&self.dir),
                offset: 0,
                reason: format!("stored state of version {version} hashes to {got}, its commit says {expected}"),
            });
        }
        Ok(state)
    }
}

impl<R> Drop for Link<R> {
    fn drop(&mut self) {
        if self.writable() && self.failed.is_none() {
            let head = self.head_state.base().unwrap_or(0);
            let entries = std::mem::take(&mut self.buf);
            let (pinned, latest) = (std::mem::take(&mut self.pinned), self.latest.max(head));
            let job = Job::Group { entries, head, head_state: self.head_state.clone(), pinned, latest, ack: None };
            if let Some(jobs) = &self.jobs {
                let _ = jobs.send(job);
            }
        }
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads the objects of a stored state and builds it.
fn read_state(dir: &Path, version: u64, manifest: &Manifest, template: Option<&StateStore>) -> Result<StateStore> {
    let digests = manifest.digest_values();
    let mut values = Vec::with_capacity(digests.len());
    for (record, &digest) in manifest.variables.iter().zip(&digests) {
        values.push(objects::read(dir, &record.path, digest, version)?);
    }
    build_state(manifest, values, template, &layout::journal_path(dir))
}

/// A state from a manifest and its values: in `template`'s lineage when given (its handles work on it), else
/// in a new one.
fn build_state(
    manifest: &Manifest,
    values: Vec<Tensor>,
    template: Option<&StateStore>,
    file: &Path,
) -> Result<StateStore> {
    let header_like = crate::checkpoint::metadata::corrupt;
    let floatx = manifest
        .floatx
        .parse::<crate::dtype::DType>()
        .map_err(|_| header_like(file, format!("floatx `{}` is not a dtype", manifest.floatx)))?;
    let mut state = match template {
        Some(t) => t.clone(),
        None => StateStore::new().with_floatx(floatx)?.with_seed(Key::from_words(manifest.seed)),
    };
    let mut paths = HashSet::with_capacity(values.len());
    for (record, value) in manifest.variables.iter().zip(values) {
        paths.insert(record.path.as_str());
        match state.find(&record.path) {
            Ok(var) if template.is_some() => {
                if var.dtype() != value.dtype() || var.shape().dims() != value.dims() {
                    return Err(Error::ShapeMismatch {
                        path: record.path.clone(),
                        expected: var.shape().clone(),
                        got: value.shape(),
                    });
                }
                state.assign(&var, value)?;
                state.set_trainable(&var, record.trainable)?;
                state.set_overwrite_with_gradient(&var, record.overwrite_with_gradient)?;
            }
            _ => {
                state.create(record.spec(value, file)?)?;
            }
        }
    }
    if template.is_some() {
        for var in state.variables() {
            if !paths.contains(var.path()) {
                state.remove(&var)?;
            }
        }
    }
    state.settle();
    Ok(state)
}

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
            OpenReport::default(),
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
        layout::check(&dir)?;
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
        let report = OpenReport { torn_bytes: scan.torn_bytes, entries: scan.entries.len(), head };
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

/// Starts the writer thread of a run whose journal is `dir/journal`.
#[allow(clippy::too_many_arguments)]
fn start<R: Serialize>(
    dir: &Path,
    options: RunOptions,
    lock: Lock,
    report: OpenReport,
    head_state: &StateStore,
    objects: HashSet<u128>,
    stored_digests: BTreeMap<u64, Vec<u128>>,
    stored: BTreeMap<u64, Arc<Manifest>>,
) -> Result<Link<R>> {
    let file = layout::journal_path(dir);
    let journal = OpenOptions::new().append(true).open(&file).map_err(io_err(&file))?;
    let journal_len = journal.metadata().map_err(io_err(&file))?.len();
    let shared = shared_with(stored);
    let writer = Writer::new(
        dir.to_path_buf(),
        journal,
        journal_len,
        Budget::new(options.fail_writes_after),
        options.disk_retention,
        objects,
        stored_digests,
        shared.clone(),
    );
    let (jobs, receiver) = mpsc::sync_channel(options.queue);
    let thread = std::thread::Builder::new()
        .name("purestate-run-writer".into())
        .spawn(move || writer.run(receiver))
        .map_err(io_err(dir))?;
    let mut link = Link::new(dir, options, report, head_state, shared);
    link.jobs = Some(jobs);
    link.thread = Some(thread);
    link._lock = Some(lock);
    Ok(link)
}

/// The state shared with a writer, knowing the durable stored states `stored`.
fn shared_with(stored: BTreeMap<u64, Arc<Manifest>>) -> Arc<Shared> {
    let shared = Arc::new(Shared::default());
    *shared.stored.lock().unwrap_or_else(|p| p.into_inner()) = stored;
    shared
}

impl<R: Serialize> Link<R> {
    /// A link to the run in `dir` that does not write yet (no writer thread, no lock: [`start`] adds them).
    fn new(
        dir: &Path,
        options: RunOptions,
        report: OpenReport,
        head_state: &StateStore,
        shared: Arc<Shared>,
    ) -> Link<R> {
        Link {
            dir: dir.to_path_buf(),
            options,
            encode: encode_json::<R>,
            buf: Vec::new(),
            since_durable: 0,
            last_durable: Instant::now(),
            paths: Paths::default(),
            commit: Commit::default(),
            head_state: head_state.clone(),
            shared,
            jobs: None,
            thread: None,
            template: None,
            failed: None,
            report,
            requested: BTreeSet::new(),
            pinned: Vec::new(),
            latest: 0,
            _lock: None,
        }
    }
}

/// The history a journal describes.
struct History<R> {
    versions: BTreeMap<u64, Version<R>>,
    tags: BTreeMap<String, u64>,
    head: u64,
    stored: BTreeMap<u64, Manifest>,
}

impl<R: DeserializeOwned> History<R> {
    /// Applies every entry in order; `records` decodes the records (else they are dropped).
    fn replay(scan: &journal::Scan, file: &Path, records: bool) -> Result<History<R>> {
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
