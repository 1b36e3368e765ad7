//! [`Trainer`]: the one mutable history of a run. It commits the states pure steps return as numbered
//! versions, checks each derives from the head of this trainer ([`TrainerId`], optimistic concurrency),
//! fingerprints them, rolls back, tags, and prunes by a [`Retention`] policy.

mod replay;
mod retention;
pub mod run;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub use crate::base::TrainerId;
pub use replay::{Divergence, ReplayReport};
pub use retention::Retention;

use crate::error::{Error, Result};
use crate::store::{Fingerprint, StateStore, StoreDiff};

/// One committed version as [`Trainer::history`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// The version number (0 for the initial state).
    pub version: u64,
    /// The version it was derived from (`None` for version 0).
    pub parent: Option<u64>,
    /// The fingerprint of its state.
    pub fingerprint: Fingerprint,
    /// Tags naming it.
    pub tags: Vec<String>,
    /// False once retention has pruned its state.
    pub retained: bool,
}

struct Version<R> {
    parent: Option<u64>,
    fingerprint: Fingerprint,
    state: Option<StateStore>,
    record: Option<R>,
}

/// The versioned history of a training run.
///
/// `Trainer::new(state)` commits `state` as version 0. A pure step takes `trainer.state().clone()` (an O(1)
/// snapshot) and returns the next state; [`commit`](Self::commit) accepts it only if it derives from the
/// current head of this very trainer: every trainer has its own [`TrainerId`], which the states it hands out
/// carry beside their base version. Rolling back moves the head; abandoned versions stay until retention prunes
/// them.
///
/// `R` is the step record kept beside each version ([`commit_with`](Self::commit_with)); `()` when none.
///
/// # Examples
/// ```
/// use purestate::{init, StateStore, Tensor, Trainer, VariableSpec, Error};
/// let mut state = StateStore::new();
/// let w = state.create(VariableSpec::new(init::Zeros).shape([2]).name("w"))?;
/// let mut trainer: Trainer = Trainer::new(state);
///
/// let mut next = trainer.state().clone();
/// next.assign_add(&w, Tensor::from([1.0f32, 1.0]))?;
/// let v1 = trainer.commit(next)?;
/// trainer.tag("good")?;
///
/// let stale = trainer.get(0)?.clone();              // derives from version 0, not the head
/// assert!(matches!(trainer.commit(stale), Err(Error::Conflict { head: 1, base: Some(0) })));
///
/// trainer.rollback(0)?;
/// assert_eq!(trainer.state().get(&w)?.to_vec::<f32>()?, [0.0, 0.0]);
/// assert_eq!(trainer.version_of_tag("good")?, v1);
/// # Ok::<(), purestate::Error>(())
/// ```
pub struct Trainer<R = ()> {
    id: TrainerId,
    versions: BTreeMap<u64, Version<R>>,
    /// Versions whose state is still held: pruning looks only at these, so a commit costs O(retained).
    retained: BTreeSet<u64>,
    head: u64,
    tags: BTreeMap<String, u64>,
    retention: Retention,
    nonfinite_guard: bool,
    /// The run directory this trainer journals to (`None`: in memory only).
    run: Option<Box<run::Link<R>>>,
}

impl<R> Trainer<R> {
    /// A trainer whose version 0 is `state`, with a new [`TrainerId`].
    ///
    /// Whatever `state` derived from before (a version of another trainer, a checkpoint) is forgotten: it is now
    /// version 0 of this trainer, and states of the trainer it came from are foreign here.
    pub fn new(mut state: StateStore) -> Self {
        let id = TrainerId::next();
        state.set_committed(id, 0);
        state.settle();
        let fingerprint = state.fingerprint();
        let mut versions = BTreeMap::new();
        versions.insert(0, Version { parent: None, fingerprint, state: Some(state), record: None });
        Trainer {
            id,
            versions,
            retained: BTreeSet::from([0]),
            head: 0,
            tags: BTreeMap::new(),
            retention: Retention::default(),
            nonfinite_guard: false,
            run: None,
        }
    }

    /// The same trainer with a retention policy (applied now and at every commit).
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self.prune();
        self
    }

    /// The same trainer with the divergence guard on or off: when on, [`commit`](Self::commit) refuses a
    /// state that holds a NaN or an infinity in any float variable ([`Error::NonFinite`]).
    pub fn with_nonfinite_guard(mut self, on: bool) -> Self {
        self.nonfinite_guard = on;
        self
    }

    /// The retention policy.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// This trainer's identity, which every state it hands out carries ([`StateStore::trainer`]). Rollback,
    /// tags, retention and replay keep it.
    pub fn id(&self) -> TrainerId {
        self.id
    }

    /// The head version's state. Clone it (O(1)) to start a step.
    pub fn state(&self) -> &StateStore {
        self.versions[&self.head].state.as_ref().expect("the head is always retained")
    }

    /// The head version number.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// The newest version number committed (which is not the head after a rollback).
    pub fn latest(&self) -> u64 {
        *self.versions.keys().next_back().expect("version 0 always exists")
    }

    /// The state of a committed version.
    ///
    /// # Errors
    /// [`Error::UnknownVersion`] for a version never committed; [`Error::Pruned`] for one retention dropped.
    pub fn get(&self, version: u64) -> Result<&StateStore> {
        self.version(version)?.state.as_ref().ok_or(Error::Pruned { version })
    }

    /// The parent of a committed version (`None` for version 0).
    ///
    /// # Errors
    /// [`Error::UnknownVersion`].
    pub fn parent(&self, version: u64) -> Result<Option<u64>> {
        Ok(self.version(version)?.parent)
    }

    /// The fingerprint recorded when `version` was committed.
    ///
    /// # Errors
    /// [`Error::UnknownVersion`].
    pub fn fingerprint(&self, version: u64) -> Result<Fingerprint> {
        Ok(self.version(version)?.fingerprint)
    }

    /// The step record committed with `version`, if any (records are never pruned).
    ///
    /// # Errors
    /// [`Error::UnknownVersion`].
    pub fn record(&self, version: u64) -> Result<Option<&R>> {
        Ok(self.version(version)?.record.as_ref())
    }

    /// Commits `next` as the next version, child of the head, and makes it the head.
    ///
    /// Costs, for every variable whose value changed since `next`'s base, its digest and a finiteness scan (two
    /// reads of its bytes, whether the guard is on or not) and O(log n); unchanged variables cost nothing, their
    /// facts are cached. After it, the fingerprint is O(1).
    ///
    /// # Errors
    /// [`Error::ForeignState`] when `next` derives from a version of another trainer, or was loaded from a
    /// checkpoint (checked first: version numbers of two trainers may coincide); [`Error::Conflict`] when it
    /// derives from another version of this trainer than the head, or from none ([`StateStore::new`]);
    /// [`Error::NonFinite`] when the guard is on and a float variable holds a NaN or an infinity. The head does
    /// not move on error.
    pub fn commit(&mut self, next: StateStore) -> Result<u64> {
        self.commit_inner(next, None)
    }

    /// Commits `next` with the record of what its step consumed (batch, learning rate, ...), as
    /// [`commit`](Self::commit).
    ///
    /// # Errors
    /// As [`commit`](Self::commit).
    pub fn commit_with(&mut self, next: StateStore, record: R) -> Result<u64> {
        self.commit_inner(next, Some(record))
    }

    fn commit_inner(&mut self, mut next: StateStore, record: Option<R>) -> Result<u64> {
        self.run_ready()?;
        if let Some(base) = next.base() {
            if next.trainer() != Some(self.id) {
                return Err(Error::ForeignState { trainer: self.id, origin: next.trainer(), base });
            }
        }
        if next.base() != Some(self.head) {
            return Err(Error::Conflict { head: self.head, base: next.base() });
        }
        next.settle();
        if self.nonfinite_guard {
            if let Some(var) = next.first_nonfinite() {
                return Err(Error::NonFinite { path: var.path().to_string(), base: next.base() });
            }
        }
        let version = self.latest() + 1;
        next.set_committed(self.id, version);
        let fingerprint = next.fingerprint();
        let parent = self.head;
        self.versions.insert(version, Version { parent: Some(parent), fingerprint, state: Some(next), record });
        self.retained.insert(version);
        self.head = version;
        if let Err(e) = self.run_commit(version) {
            // Not journaled (or, with every-commit durability, not durable): the head does not move.
            self.versions.remove(&version);
            self.retained.remove(&version);
            self.head = parent;
            return Err(e);
        }
        self.prune();
        Ok(version)
    }

    /// Moves the head to `version`. Versions after it stay until retention prunes them.
    ///
    /// # Errors
    /// [`Error::UnknownVersion`]; [`Error::Pruned`] when its state is gone.
    pub fn rollback(&mut self, version: u64) -> Result<()> {
        self.run_ready()?;
        self.run_restore(version)?;
        self.get(version)?;
        self.head = version;
        self.run_rollback(version)
    }

    /// Names the head version `name` (a name names one version: tagging again moves it). Tagged versions are
    /// never pruned.
    ///
    /// # Errors
    /// None today; fallible for future name checks.
    pub fn tag(&mut self, name: impl Into<String>) -> Result<()> {
        self.run_ready()?;
        let name = name.into();
        self.run_tag(&name, self.head)?;
        self.tags.insert(name, self.head);
        Ok(())
    }

    /// The version a tag names.
    ///
    /// # Errors
    /// [`Error::UnknownTag`].
    pub fn version_of_tag(&self, name: &str) -> Result<u64> {
        self.tags.get(name).copied().ok_or_else(|| Error::UnknownTag { tag: name.to_string() })
    }

    /// Every committed version in version order, with parent, fingerprint, tags and whether its state is kept.
    pub fn history(&self) -> Vec<VersionInfo> {
        self.versions
            .iter()
            .map(|(&version, v)| VersionInfo {
                version,
                parent: v.parent,
                fingerprint: v.fingerprint,
                tags: self.tags.iter().filter(|(_, &t)| t == version).map(|(n, _)| n.clone()).collect(),
                retained: v.state.is_some(),
            })
            .collect()
    }

    /// The versions from `from` to `to` along `to`'s parent chain, oldest first (both included).
    ///
    /// # Errors
    /// [`Error::UnknownVersion`]; [`Error::InvalidArgument`] when `from` is not an ancestor of `to`.
    pub fn lineage(&self, from: u64, to: u64) -> Result<Vec<u64>> {
        self.version(from)?;
        let mut chain = vec![to];
        let mut cur = to;
        while cur != from {
            match self.version(cur)?.parent {
                Some(p) => {
                    chain.push(p);
                    cur = p;
                }
                None => {
                    return Err(Error::InvalidArgument {
                        op: "Trainer::lineage",
                        arg: "from",
                        reason: format!("version {from} is not an ancestor of version {to}"),
                    })
                }
            }
        }
        chain.reverse();
        Ok(chain)
    }

    /// What changed from version `a` to version `b`.
    ///
    /// # Errors
    /// [`Error::UnknownVersion`], [`Error::Pruned`].
    pub fn diff(&self, a: u64, b: u64) -> Result<StoreDiff> {
        Ok(self.get(a)?.diff(self.get(b)?))
    }

    fn version(&self, version: u64) -> Result<&Version<R>> {
        self.versions.get(&version).ok_or(Error::UnknownVersion { version })
    }

    fn prune(&mut self) {
        if self.retention.keep_last.is_none() {
            return; // keeps everything
        }
        let newest = self.latest();
        let dropped: Vec<u64> = self
            .retained
            .iter()
            .copied()
            .filter(|&v| {
                let pinned = v == self.head || self.tags.values().any(|&t| t == v);
                !self.retention.keeps(v, newest, pinned)
            })
            .collect();
        for version in dropped {
            self.retained.remove(&version);
            if let Some(v) = self.versions.get_mut(&version) {
                v.state = None;
            }
        }
    }
}

impl<R> fmt::Debug for Trainer<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trainer")
            .field("id", &self.id)
            .field("head", &self.head)
            .field("versions", &self.versions.len())
            .field("tags", &self.tags)
            .field("retention", &self.retention)
            .finish()
    }
}
