//! [`StateStore`]: the persistent map from variable handles to values and their settable attributes.
//!
//! Built on `imbl`'s persistent B-tree (`OrdMap`), keyed by variable keys that increase in creation order, so
//! iteration is in creation order for free. `clone()` is O(1) and is the snapshot: a write to one copy copies
//! the O(log n) tree nodes on its path and, only if another copy still shares it, the value's buffer.

mod diff;
pub(crate) mod fingerprint;
mod local;
mod partition;

use std::fmt;
use std::sync::Arc;

use imbl::{HashMap, OrdMap, OrdSet};

pub use crate::base::Fingerprint;
pub use diff::{StoreDiff, ValueChange};
pub use partition::VariableRef;

pub(crate) use crate::variable::{Lineage, VarKey};
pub(crate) use fingerprint::{fingerprint_of_digest_sum, variable_digest};
pub(crate) use local::LocalValues;

use crate::base::TrainerId;
use crate::constraint::Constraint;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::BinaryOp;
use crate::random::Key;
use crate::regularizer::Regularizer;
use crate::tensor::Tensor;
use crate::variable::{Variable, VariableSpec};

/// The attributes Keras lets you change after creation, versioned with the values.
#[derive(Clone, Debug)]
pub(crate) struct Meta {
    pub(crate) trainable: bool,
    pub(crate) overwrite_with_gradient: bool,
    pub(crate) constraint: Option<Arc<dyn Constraint>>,
    pub(crate) regularizer: Option<Arc<dyn Regularizer>>,
}

/// One variable in a store: its handle, value and settable attributes, and what the store has computed
/// about the value (its digest and finiteness) since it last changed.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) var: Variable,
    pub(crate) value: Tensor,
    pub(crate) meta: Meta,
    pub(crate) cache: Option<ValueFacts>,
}

/// Facts about an entry's value, computed once per value and kept until the value changes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ValueFacts {
    pub(crate) digest: u128,
    pub(crate) finite: bool,
}

impl ValueFacts {
    fn of(var: &Variable, value: &Tensor) -> ValueFacts {
        ValueFacts { digest: fingerprint::variable_digest(var.path(), value), finite: value.is_all_finite() }
    }
}

/// Identity, not contents: two entries are equal when they hold the same buffer and the same attribute
/// objects. This is what lets `diff` skip what two versions share without reading any value.
impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.var == other.var && self.value.ptr_eq(&other.value) && self.meta.same_as(&other.meta)
    }
}

impl Meta {
    pub(crate) fn same_as(&self, other: &Meta) -> bool {
        fn same<T: ?Sized>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
            match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
        }
        self.trainable == other.trainable
            && self.overwrite_with_gradient == other.overwrite_with_gradient
            && same(&self.constraint, &other.constraint)
            && same(&self.regularizer, &other.regularizer)
    }
}

/// An immutable, persistent map of variables: the whole training state as one value.
///
/// Clone is O(1) and is a snapshot: no later change to either copy is visible in the other. Reads and writes
/// are O(log n) in the number of variables; a write copies a value's buffer only when another snapshot still
/// shares it (otherwise it happens in place: ownership decides donation).
///
/// Every store remembers the committed version it derives from ([`base`](Self::base)) and the trainer that
/// committed it ([`trainer`](Self::trainer)), its default float dtype ([`floatx`](Self::floatx)) and the seed
/// unseeded initializers draw from.
///
/// # Examples
/// ```
/// use purestate::{init, StateStore, Tensor, VariableSpec};
/// let mut state = StateStore::new();
/// let w = state.create(VariableSpec::new(init::Zeros).shape([2]).name("w"))?;
/// let snapshot = state.clone(); // O(1)
/// state.assign_add(&w, Tensor::from([1.0f32, 2.0]))?;
/// assert_eq!(state.get(&w)?.to_vec::<f32>()?, [1.0, 2.0]);
/// assert_eq!(snapshot.get(&w)?.to_vec::<f32>()?, [0.0, 0.0]);
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone)]
pub struct StateStore {
    lineage: Arc<Lineage>,
    base: Option<u64>,
    /// The trainer whose version `base` is; `None` when `base` is (never committed, or loaded from a file).
    trainer: Option<TrainerId>,
    floatx: DType,
    compute_dtype: Option<DType>,
    seed: Key,
    vars: OrdMap<VarKey, Entry>,
    paths: HashMap<Arc<str>, VarKey>,
    auto_names: usize,
    /// Wrapping sum of the digests of the entries that have facts, and how many of those are non-finite.
    settled: Settled,
    /// Entries whose value changed since its facts were computed.
    pending: OrdSet<VarKey>,
    /// Per-replica values of `on_read` variables, kept by the `replica` runner beside the aggregated value the
    /// entry holds (so reads, fingerprints and checkpoints see the aggregate).
    replica_values: OrdMap<VarKey, LocalValues>,
    /// The random stream draws from this store fold in (the replica runner sets each micro-batch's index).
    random_stream: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Settled {
    pub(crate) digest_sum: u128,
    pub(crate) nonfinite: u64,
}

impl Default for StateStore {
    fn default() -> Self {
        StateStore::new()
    }
}

impl StateStore {
    /// An empty store of a new lineage, with floatx float32 and seed 0.
    pub fn new() -> Self {
        StateStore {
            lineage: Arc::new(Lineage::new()),
            base: None,
            trainer: None,
            floatx: DType::Float32,
            compute_dtype: None,
            seed: Key::new(0),
            vars: OrdMap::new(),
            paths: HashMap::new(),
            auto_names: 0,
            settled: Settled::default(),
            pending: OrdSet::new(),
            replica_values: OrdMap::new(),
            random_stream: None,
        }
    }

    /// The same store with draws on another random stream: a [`SeedGenerator`](crate::random::SeedGenerator)
    /// reading its state from this store (or from a [`Scope`](crate::Scope) over it) folds `stream` into the key
    /// it returns (`key.fold_in(stream)`, JAX's idiom for per-device randomness), while it advances its state
    /// exactly as without a stream. The [`replica`](crate::replica) runner gives each micro-batch its index as
    /// its stream, so a Dropout mask is a function of the key and the micro-batch, never of the replica that ran
    /// it. `None` (the default) draws the generator's key itself.
    ///
    /// The stream is not part of the state: fingerprints, checkpoints and runs do not record it.
    ///
    /// # Examples
    /// ```
    /// use purestate::{random::SeedGenerator, StateStore};
    /// let mut state = StateStore::new();
    /// let seeds = SeedGenerator::new(&mut state, 7)?;
    /// let plain = seeds.peek(&state)?;
    /// let streamed = state.clone().with_random_stream(Some(3));
    /// assert_eq!(seeds.peek(&streamed)?, plain.fold_in(3));
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn with_random_stream(mut self, stream: Option<u32>) -> Self {
        self.random_stream = stream;
        self
    }

    /// The random stream draws from this store fold in (see [`with_random_stream`](Self::with_random_stream)).
    pub fn random_stream(&self) -> Option<u32> {
        self.random_stream
    }

    /// The same store with another default float dtype (Keras's `floatx`), used by initializers without an
    /// explicit dtype and for weak results.
    ///
    /// # Errors
    /// [`Error::UnsupportedDType`] for a non-float dtype.
    pub fn with_floatx(mut self, floatx: DType) -> Result<Self> {
        if !floatx.is_float() {
            return Err(Error::UnsupportedDType { op: "floatx", dtype: floatx });
        }
        self.floatx = floatx;
        Ok(self)
    }

    /// The same store under a dtype policy (Keras: `keras.config.set_dtype_policy`, but carried by the store):
    /// floatx becomes the policy's variable dtype, and [`Scope`](crate::Scope)s over the store read float
    /// variables that have `autocast` in the policy's compute dtype.
    ///
    /// # Examples
    /// ```
    /// use purestate::{dtype::Policy, init, DType, Scope, StateStore, VariableSpec};
    /// let mut state = StateStore::new().with_policy(Policy::MIXED_FLOAT16);
    /// let w = state.create(VariableSpec::new(init::Ones).shape([2]).name("w"))?;
    /// assert_eq!(w.dtype(), DType::Float32);                       // stored in float32
    /// assert_eq!(Scope::new(&state).get(&w)?.dtype(), DType::Float16); // read in float16
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn with_policy(mut self, policy: crate::dtype::Policy) -> Self {
        self.floatx = policy.variable_dtype();
        self.compute_dtype = policy.is_mixed().then_some(policy.compute_dtype());
        self
    }

    /// The dtype policy's compute dtype when it differs from the variable dtype (a mixed policy).
    pub fn compute_dtype(&self) -> Option<DType> {
        self.compute_dtype
    }

    /// The same store with another seed for initializers that have no seed of their own.
    pub fn with_seed(mut self, seed: Key) -> Self {
        self.seed = seed;
        self
    }

    /// The default float dtype.
    pub fn floatx(&self) -> DType {
        self.floatx
    }

    /// The seed unseeded initializers draw from (saved in checkpoints).
    pub(crate) fn seed(&self) -> Key {
        self.seed
    }

    /// The committed version this store derives from (`None` before its first commit).
    ///
    /// A version number alone does not say whose version it is: see [`trainer`](Self::trainer).
    pub fn base(&self) -> Option<u64> {
        self.base
    }

    /// The trainer that committed [`base`](Self::base): [`Trainer::commit`](crate::Trainer::commit) accepts
    /// this store only from that trainer. O(1).
    ///
    /// `None` for a store no trainer has committed ([`StateStore::new`]) and for one loaded from a checkpoint
    /// (ids mean nothing to another process, so files do not record them); such a store starts a trainer
    /// ([`Trainer::new`](crate::Trainer::new)) rather than being committed to one. Clones, partitions, merges and
    /// [`checkpoint::restore`](crate::checkpoint::restore) keep it.
    ///
    /// # Examples
    /// ```
    /// use purestate::{StateStore, Trainer};
    /// let fresh = StateStore::new();
    /// assert_eq!(fresh.trainer(), None);
    /// let trainer: Trainer = Trainer::new(fresh);
    /// assert_eq!(trainer.state().trainer(), Some(trainer.id()));
    /// ```
    pub fn trainer(&self) -> Option<TrainerId> {
        self.trainer
    }

    /// Sets the base version as a checkpoint records it: a version of no trainer known to this process.
    pub(crate) fn set_base(&mut self, base: Option<u64>) {
        self.base = base;
        self.trainer = None;
    }

    /// Marks the store as deriving from `version` of `trainer` (what a commit, or a replay of one, does).
    pub(crate) fn set_committed(&mut self, trainer: TrainerId, version: u64) {
        self.base = Some(version);
        self.trainer = Some(trainer);
    }

    /// Number of variables.
    pub fn len(&self) -> usize {
        self.vars.len()
    }

    /// True when the store holds no variable.
    pub fn is_empty(&self) -> bool {
        self.vars.is_empty()
    }

    /// True when both stores are the same snapshot: same lineage, same tree and same base (trainer and version)
    /// (O(1); false does not prove the contents differ).
    pub fn ptr_eq(&self, other: &StateStore) -> bool {
        Arc::ptr_eq(&self.lineage, &other.lineage)
            && self.vars.ptr_eq(&other.vars)
            && self.base == other.base
            && self.trainer == other.trainer
    }

    /// Creates a variable from `spec` and returns its handle.
    ///
    /// O(log n). Keras: `keras.Variable(initializer, shape, dtype, trainable, autocast, aggregation,
    /// synchronization, name)`.
    ///
    /// # Errors
    /// [`Error::InvalidName`] for a name with `/`; [`Error::DuplicatePath`] when the path exists;
    /// [`Error::InvalidSpec`] for an initializer without a shape; [`Error::ShapeMismatch`] for a value whose
    /// shape differs from the spec's; [`Error::InvalidDType`]/[`Error::InvalidOption`] for bad option strings;
    /// whatever the initializer returns. On error the store is unchanged.
    pub fn create(&mut self, spec: VariableSpec) -> Result<Variable> {
        if let Some(path) = spec.requested_path() {
            if self.paths.contains_key(path.as_str()) {
                return Err(Error::DuplicatePath { path });
            }
        }
        let meta = Meta {
            trainable: spec.trainable,
            overwrite_with_gradient: spec.overwrite_with_gradient,
            constraint: spec.constraint.clone(),
            regularizer: spec.regularizer.clone(),
        };
        let seed = self.seed;
        let mut auto_names = self.auto_names;
        let paths = &self.paths;
        let taken = |path: &str| paths.contains_key(path);
        let (info, value) = spec.resolve(self.floatx, &mut auto_names, taken, |path| path_key(seed, path))?;
        if self.paths.contains_key(info.path.as_str()) {
            return Err(Error::DuplicatePath { path: info.path });
        }
        let key = self.lineage.allocate();
        self.auto_names = auto_names;
        let var = Variable { key, lineage: self.lineage.clone(), info: Arc::new(info) };
        self.insert_entry(Entry { var: var.clone(), value, meta, cache: None });
        Ok(var)
    }

    /// Removes a variable and returns its last value. Snapshots that hold it keep it. O(log n).
    ///
    /// # Errors
    /// [`Error::ForeignVariable`], [`Error::StaleVariable`].
    pub fn remove(&mut self, var: &Variable) -> Result<Tensor> {
        self.check(var)?;
        let entry = self.remove_entry(var.key).ok_or_else(|| stale(var))?;
        Ok(entry.value)
    }

    /// The current value (Keras: `Variable.value`). O(log n); the tensor shares the store's buffer.
    ///
    /// # Errors
    /// [`Error::ForeignVariable`] for a handle of another lineage; [`Error::StaleVariable`] for a removed one.
    pub fn get(&self, var: &Variable) -> Result<Tensor> {
        Ok(self.entry(var)?.value.clone())
    }

    /// True when the store holds `var` (same lineage, not removed).
    pub fn contains(&self, var: &Variable) -> bool {
        self.entry(var).is_ok()
    }

    /// Replaces the value (Keras: `Variable.assign`). The value is cast to the variable's dtype.
    ///
    /// O(log n) plus the cast.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `value`'s shape is not the variable's; [`Error::ForeignVariable`],
    /// [`Error::StaleVariable`]. On error the store is unchanged.
    pub fn assign(&mut self, var: &Variable, value: impl Into<Tensor>) -> Result<()> {
        let value = value.into();
        self.check(var)?;
        if value.dims() != var.shape().dims() {
            return Err(Error::ShapeMismatch {
                path: var.path().into(),
                expected: var.shape().clone(),
                got: value.shape(),
            });
        }
        let value = value.detach().cast(var.dtype());
        *self.value_mut(var)? = value;
        Ok(())
    }

    /// Adds `value` to the current value (Keras: `Variable.assign_add`): `value` may broadcast to the
    /// variable's shape; the sum is computed in the promoted dtype and cast to the variable's dtype.
    ///
    /// O(log n) plus one pass over the value, in place when no snapshot shares the buffer.
    ///
    /// # Errors
    /// [`Error::Broadcast`] when `value` does not broadcast to the variable's shape; [`Error::ForeignVariable`],
    /// [`Error::StaleVariable`]. On error the store is unchanged.
    pub fn assign_add(&mut self, var: &Variable, value: impl Into<Tensor>) -> Result<()> {
        self.update_arith(var, value.into(), BinaryOp::Add)
    }

    /// Subtracts `value` from the current value (Keras: `Variable.assign_sub`); as [`assign_add`](Self::assign_add).
    ///
    /// # Errors
    /// As [`assign_add`](Self::assign_add).
    pub fn assign_sub(&mut self, var: &Variable, value: impl Into<Tensor>) -> Result<()> {
        self.update_arith(var, value.into(), BinaryOp::Subtract)
    }

    /// `value = cast(value op operand)` through the operators' in-place form (promotion, broadcasting, in place
    /// when the promoted dtype is the variable's and no snapshot shares the buffer).
    fn update_arith(&mut self, var: &Variable, operand: Tensor, op: BinaryOp) -> Result<()> {
        self.check(var)?;
        let current = self.value_mut(var)?;
        current.assign_binary(op, &operand).map_err(|e| match e {
            Error::Broadcast { .. } => {
                Error::ShapeMismatch { path: var.path().into(), expected: var.shape().clone(), got: operand.shape() }
            }
            other => other,
        })
    }

    /// Handles of every variable, in creation order. O(n).
    pub fn variables(&self) -> Vec<Variable> {
        self.vars.values().map(|e| e.var.clone()).collect()
    }

    /// Handles of the trainable variables, in creation order (Keras: `trainable_variables`).
    pub fn trainable_variables(&self) -> Vec<Variable> {
        self.vars.values().filter(|e| e.meta.trainable).map(|e| e.var.clone()).collect()
    }

    /// Handles of the non-trainable variables, in creation order (Keras: `non_trainable_variables`).
    pub fn non_trainable_variables(&self) -> Vec<Variable> {
        self.vars.values().filter(|e| !e.meta.trainable).map(|e| e.var.clone()).collect()
    }

    /// Every variable and its value, in creation order.
    pub fn iter(&self) -> impl Iterator<Item = (&Variable, &Tensor)> + '_ {
        self.vars.values().map(|e| (&e.var, &e.value))
    }

    /// The variable at `path`. O(1) expected.
    ///
    /// # Errors
    /// [`Error::UnknownPath`] when no variable has this path.
    pub fn find(&self, path: &str) -> Result<Variable> {
        self.paths
            .get(path)
            .and_then(|k| self.vars.get(k))
            .map(|e| e.var.clone())
            .ok_or_else(|| Error::UnknownPath { path: path.into() })
    }

    /// Whether optimizers update the variable (Keras: `Variable.trainable`).
    ///
    /// # Errors
    /// [`Error::ForeignVariable`], [`Error::StaleVariable`].
    pub fn trainable(&self, var: &Variable) -> Result<bool> {
        Ok(self.entry(var)?.meta.trainable)
    }

    /// Freezes (`false`) or unfreezes a variable: a new version of the store, committed and rolled back like
    /// any other change.
    ///
    /// # Errors
    /// [`Error::ForeignVariable`], [`Error::StaleVariable`].
    pub fn set_trainable(&mut self, var: &Variable, trainable: bool) -> Result<()> {
        self.meta_mut(var)?.trainable = trainable;
        Ok(())
    }

    /// Whether the optimizer overwrites the variable with its gradient (Keras: `overwrite_with_gradient`).
    ///
    /// # Errors
    /// [`Error::ForeignVariable`], [`Error::StaleVariable`].
    pub fn overwrite_with_gradient(&self, var: &Variable) -> Result<bool> {
        Ok(self.entry(var)?.meta.overwrite_with_gradient)
    }

    /// Sets [`overwrite_with_gradient`](Self::overwrite_with_gradient).
    ///
    /// # Errors
    /// [`Error::ForeignVariable`], [`Error::StaleVariable`].
    pub fn set_overwrite_with_gradient(&mut self, var: &Variable, overwrite: bool) -> Result<()> {
        self.meta_mut(var)?.overwrite_with_gradient = overwrite;
        Ok(())
    }

    /// The constraint applied after optimizer updates (Keras: `Variable.constraint`).
    ///
    /// # Errors
    /// [`Error::ForeignVariable`], [`Error::StaleVariable`].
    pub fn constraint(&self, var: &Variable) -> Result<Option<Arc<dyn Constraint>>> {
        Ok(self.entry(var)?.meta.constraint.clone())
    }

    /// Sets or clears the constraint.
    ///
    /// # Errors
    /// [`Error::ForeignVariable`], [`Error::StaleVariable`].
    pub fn set_constraint(&mut self, var: &Variable, constraint: Option<Arc<dyn Constraint>>) -> Result<()> {
        self.meta_mut(var)?.constraint = constraint;
        Ok(())
    }

    /// The regularizer whose penalty scopes collect (Keras: `Variable.regularizer`).
    ///
    /// # Errors
    /// [`Error::ForeignVariable`], [`Error::StaleVariable`].
    pub fn regularizer(&self, var: &Variable) -> Result<Option<Arc<dyn Regularizer>>> {
        Ok(self.entry(var)?.meta.regularizer.clone())
    }

    /// Sets or clears the regularizer.
    ///
    /// # Errors
    /// [`Error::ForeignVariable`], [`Error::StaleVariable`].
    pub fn set_regularizer(&mut self, var: &Variable, regularizer: Option<Arc<dyn Regularizer>>) -> Result<()> {
        self.meta_mut(var)?.regularizer = regularizer;
        Ok(())
    }

    /// Keras's repr of a variable with its value:
    /// `<Variable path=dense/kernel, shape=(2, 2), dtype=float32, value=[[0.0, 0.0], [0.0, 0.0]]>`.
    ///
    /// # Errors
    /// [`Error::ForeignVariable`], [`Error::StaleVariable`].
    pub fn repr(&self, var: &Variable) -> Result<String> {
        let value = &self.entry(var)?.value;
        Ok(format!(
            "<Variable path={}, shape={}, dtype={}, value={}>",
            var.path(),
            var.shape(),
            var.dtype(),
            value.values_string()
        ))
    }

    /// The per-replica values the `replica` runner recorded for `var` (an `on_read` variable), if any. O(log n).
    pub(crate) fn replica_values(&self, var: &Variable) -> Option<&LocalValues> {
        self.replica_values.get(&var.key)
    }

    /// Records (or, with `None`, forgets) the per-replica values of `var`. O(log n).
    pub(crate) fn set_replica_values(&mut self, var: &Variable, values: Option<LocalValues>) {
        match values {
            Some(values) => self.replica_values.insert(var.key, values),
            None => self.replica_values.remove(&var.key),
        };
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = &Entry> + '_ {
        self.vars.values()
    }

    pub(crate) fn entry(&self, var: &Variable) -> Result<&Entry> {
        self.check(var)?;
        self.vars.get(&var.key).ok_or_else(|| stale(var))
    }

    fn meta_mut(&mut self, var: &Variable) -> Result<&mut Meta> {
        self.check(var)?;
        self.vars.get_mut(&var.key).map(|e| &mut e.meta).ok_or_else(|| stale(var))
    }

    /// The value, mutably; its facts are dropped and the entry marked pending. The buffer is copied on write
    /// only if a snapshot shares it. Callers keep the shape and dtype.
    pub(crate) fn value_mut(&mut self, var: &Variable) -> Result<&mut Tensor> {
        self.check(var)?;
        let entry = self.vars.get_mut(&var.key).ok_or_else(|| stale(var))?;
        if let Some(facts) = entry.cache.take() {
            self.settled.remove(facts);
            self.pending.insert(var.key);
        }
        Ok(&mut entry.value)
    }

    /// Moves the value out of the store (leaving a placeholder until [`put_value`](Self::put_value)), so that
    /// the caller holds the only reference to an unshared buffer and may update it in place.
    pub(crate) fn take_value(&mut self, var: &Variable) -> Result<Tensor> {
        Ok(std::mem::replace(self.value_mut(var)?, Tensor::scalar(false)))
    }

    /// Puts back a value taken with [`take_value`](Self::take_value); it must keep the variable's shape and
    /// dtype.
    pub(crate) fn put_value(&mut self, var: &Variable, value: Tensor) -> Result<()> {
        debug_assert_eq!(value.dims(), var.shape().dims());
        debug_assert_eq!(value.dtype(), var.dtype());
        *self.value_mut(var)? = value;
        Ok(())
    }

    /// Puts back a value taken with [`take_value`](Self::take_value) together with its digest and finiteness,
    /// computed by the pass that wrote it (so the next fingerprint does not read it again). `digest` must be
    /// what [`fingerprint::variable_digest`] gives for this path and value.
    pub(crate) fn put_value_with_facts(
        &mut self,
        var: &Variable,
        value: Tensor,
        digest: u128,
        finite: bool,
    ) -> Result<()> {
        self.put_value(var, value)?;
        let entry = self.vars.get_mut(&var.key).ok_or_else(|| stale(var))?;
        debug_assert_eq!(digest, fingerprint::variable_digest(var.path(), &entry.value));
        let facts = ValueFacts { digest, finite };
        if let Some(old) = entry.cache.replace(facts) {
            self.settled.remove(old);
        }
        self.settled.add(facts);
        self.pending.remove(&var.key);
        Ok(())
    }

    pub(crate) fn insert_entry(&mut self, entry: Entry) {
        let key = entry.var.key;
        match entry.cache {
            Some(facts) => self.settled.add(facts),
            None => {
                self.pending.insert(key);
            }
        }
        self.paths.insert(Arc::from(entry.var.path()), key);
        self.vars.insert(key, entry);
    }

    pub(crate) fn remove_entry(&mut self, key: VarKey) -> Option<Entry> {
        let entry = self.vars.remove(&key)?;
        self.paths.remove(entry.var.path());
        match entry.cache {
            Some(facts) => self.settled.remove(facts),
            None => {
                self.pending.remove(&key);
            }
        }
        Some(entry)
    }

    /// Computes the facts of every value that changed since they were last computed: O(log n) per changed
    /// variable plus its bytes. After this, [`fingerprint`](Self::fingerprint) and the non-finite check are
    /// O(1) until the next write.
    ///
    /// The changed variables are hashed and scanned in parallel (one task each, from
    /// [`crate::kernels::THRESHOLD`] elements in all); their digests add up in any order, so the fingerprint
    /// does not depend on the thread count.
    pub(crate) fn settle(&mut self) {
        let keys: Vec<_> = std::mem::take(&mut self.pending).into_iter().collect();
        let facts = {
            let entries: Vec<Option<&Entry>> = keys.iter().map(|k| self.vars.get(k)).collect();
            let work = entries.iter().flatten().map(|e| e.value.size()).sum();
            crate::kernels::map_indices(entries.len(), work, |i| entries[i].map(|e| ValueFacts::of(&e.var, &e.value)))
        };
        for (key, facts) in keys.iter().zip(facts) {
            if let (Some(facts), Some(entry)) = (facts, self.vars.get_mut(key)) {
                entry.cache = Some(facts);
                self.settled.add(facts);
            }
        }
    }

    /// The digest sum and non-finite count over every entry, computing the facts of pending entries on the
    /// fly (without keeping them).
    pub(crate) fn totals(&self) -> Settled {
        let mut totals = self.settled;
        for key in &self.pending {
            if let Some(entry) = self.vars.get(key) {
                totals.add(ValueFacts::of(&entry.var, &entry.value));
            }
        }
        totals
    }

    /// The first variable, in creation order, holding a NaN or an infinity.
    pub(crate) fn first_nonfinite(&self) -> Option<&Variable> {
        if self.totals().nonfinite == 0 {
            return None;
        }
        self.entries().find(|e| !e.cache.map_or_else(|| e.value.is_all_finite(), |facts| facts.finite)).map(|e| &e.var)
    }

    fn check(&self, var: &Variable) -> Result<()> {
        if Arc::ptr_eq(&var.lineage, &self.lineage) {
            Ok(())
        } else {
            Err(Error::ForeignVariable { path: var.path().into() })
        }
    }

    pub(crate) fn same_lineage(&self, other: &StateStore) -> bool {
        Arc::ptr_eq(&self.lineage, &other.lineage)
    }
}

/// The key an unseeded initializer of the variable at `path` draws from: the store's seed folded with the
/// path's hash, so a variable's first value does not depend on the order variables are created in.
fn path_key(seed: Key, path: &str) -> Key {
    let h = twox_hash::XxHash3_64::oneshot(path.as_bytes());
    seed.fold_in((h >> 32) as u32).fold_in(h as u32)
}

impl Settled {
    fn add(&mut self, facts: ValueFacts) {
        self.digest_sum = self.digest_sum.wrapping_add(facts.digest);
        self.nonfinite += u64::from(!facts.finite);
    }

    fn remove(&mut self, facts: ValueFacts) {
        self.digest_sum = self.digest_sum.wrapping_sub(facts.digest);
        self.nonfinite -= u64::from(!facts.finite);
    }
}

fn stale(var: &Variable) -> Error {
    Error::StaleVariable { path: var.path().into() }
}

impl fmt::Debug for StateStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for (var, _) in self.iter() {
            list.entry(var);
        }
        list.finish()
    }
}
