//! Data-parallel replicas: [`Replicas`] cuts a global batch into micro-batches, runs a pure step on each
//! micro-batch against the same state, spread over N replicas, and combines what the steps return: gradients
//! and the loss through one fixed reduction tree over the micro-batches, assignments by each variable's
//! [`Aggregation`](crate::Aggregation), `on_read` variables kept per replica
//! ([`Synchronization`](crate::Synchronization)). Replicas run on rayon threads in one process
//! ([`Replicas::in_process`]) or, with the cargo feature `mpi`, one per MPI rank (`Replicas::mpi`), with
//! bit-identical results.
//!
//! # The same bits for any number of replicas
//!
//! With a micro-batch size ([`Replicas::micro_batch`]), the global batch of B examples is cut into
//! `M = B / m` micro-batches of m examples, and the replicas own contiguous runs of them (numpy's
//! `array_split` over the micro-batches). Every sum over the examples of the batch adds per-micro-batch results
//! in one binary tree over the micro-batch index (node `(l, k)` adds the micro-batches
//! `[k 2^l, (k + 1) 2^l)`; see [`tree_sum`]). A replica reduces the largest whole subtrees inside its run and
//! sends only those partial sums (one, when its run is an aligned power of two; about `2 log2` of its
//! micro-batches at worst); the combiner places them in the same tree. A micro-batch's own computation does
//! not depend on where it runs (every kernel is bit-identical across thread counts). So gradients, the loss,
//! `sum` and `mean` variables and the committed state have the same bits for 1, 2, 3 or 7 replicas, in process
//! or over MPI, and a run may resume on another number of replicas. The micro-batch size is part of the
//! experiment: record it ([`Replicas::micro_batching`]) and check it on resume
//! ([`Replicas::check_micro_batch`]).
//!
//! Without a micro-batch size, each replica's shard is one micro-batch: results then depend on the number of
//! replicas (to float rounding).
//!
//! # The per-micro-batch step
//!
//! A step is a function `Fn(&ReplicaContext, StateStore) -> Result<ReplicaOutput>`. It gets its replica's view
//! of the state (an O(1) snapshot of the shared state in which each `on_read` variable holds this replica's
//! own value, on the micro-batch's [random stream](StateStore::with_random_stream)), reads its micro-batch
//! through [`ReplicaContext::range`], and returns:
//!
//! - `grads`: the gradient of the *mean* loss over its micro-batch ([`Grads`]),
//! - `loss`: that mean loss,
//! - `state`: the store it was given, with whatever it assigned (running statistics, counters, seed state).
//!
//! A step *assigns* a variable when the store it returns holds another value buffer for it than the one it
//! was given: any `assign`, `assign_add` or `assign_sub` (even of equal bits) counts, reading does not. A step
//! must not create or remove variables or change their attributes (do that outside the step).
//!
//! Each micro-batch draws on its own random stream: a [`SeedGenerator`](crate::random::SeedGenerator) (a
//! Dropout layer's) folds the micro-batch index into its key, so masks are a function of the key and the
//! micro-batch, never of the replica; every micro-batch advances the generator's state alike.
//!
//! Layers that couple the examples of a batch see the micro-batch: BatchNormalization's batch statistics are
//! the micro-batch's (ghost batch normalization, Hoffer et al. 2017, with the micro-batch as the virtual
//! batch), and its moving statistics (aggregation `mean`) average the micro-batches' updates. Statistics
//! synchronized across micro-batches are not offered.
//!
//! # How results combine
//!
//! With `fill_j` the length of micro-batch j over the micro-batch size (1, except for a shorter last one) and
//! `W = B / m`:
//!
//! - gradients and the loss: `tree_sum_j(fill_j * g_j) / W`, in the gradient's dtype (the loss in `f64`);
//! - mirrored variables (synchronization `auto` or `on_write`), by aggregation, where a micro-batch that did
//!   not assign contributes the value it was given (`v`):
//!
//! | aggregation | combined value |
//! | --- | --- |
//! | `mean` | `v + tree_sum_j(v_j - v) / M` (the mean of the micro-batches' values) |
//! | `sum` | `v + tree_sum_j(v_j - v)`: every micro-batch's change, so counters count every increment |
//! | `only_first_replica` | micro-batch 0's value |
//! | `none` | the one value the micro-batches assigned; [`Error::ReplicaConflict`] when they assigned different values |
//!
//! Changes add in `f64` for floats (rounded once to the variable's dtype) and in integers for integer dtypes.
//!
//! `on_read` variables (metrics, counters) keep one value per replica across steps, in the store beside the
//! aggregated value: a replica's value combines its micro-batches' (by the aggregation), and
//! [`StateStore::get`], fingerprints and checkpoints see the aggregate over replicas (`sum`: the sum of the
//! replicas' values, `mean`: their mean, `only_first_replica`: replica 0's, `none`: as for mirrored
//! variables); [`Replicas::local_values`] gives the per-replica values. Their aggregate is the same for any
//! replica count when their changes are exact (integer counters); a float `on_read` sum depends on how the
//! examples fell on replicas, as it does in Keras. When a store's value of an `on_read` variable was set
//! outside the runner (a metric reset, a loaded checkpoint), the replicas start again from it:
//! `[a, 0, .., 0]` for `sum`, `a` on every replica otherwise. Synchronization `none` means there is no
//! per-replica copy to combine: different values from more than one micro-batch are
//! [`Error::ReplicaConflict`].
//!
//! # Examples
//! ```
//! use purestate::replica::{ReplicaOutput, Replicas};
//! use purestate::{grad::Grads, init, StateStore, Tensor, VariableSpec};
//!
//! let mut state = StateStore::new();
//! let w = state.create(VariableSpec::new(init::Zeros).shape([]).name("w"))?;
//! let seen = state.create(
//!     VariableSpec::new(init::Zeros).shape([]).dtype("int64").name("seen").trainable(false)
//!         .aggregation("sum").synchronization("on_read"),
//! )?;
//! let batch = [0.1f32, 0.2, 0.3, 0.4, 0.5, 0.6];
//! let step = |ctx: &purestate::replica::ReplicaContext, mut state: StateStore| {
//!     let part = &batch[ctx.range()];
//!     let mean = part.iter().sum::<f32>() / part.len() as f32;   // d/dw of mean(x * w)
//!     state.assign_add(&seen, Tensor::scalar(part.len() as i64))?;
//!     let grads = Grads::from_pairs([(w.clone(), Tensor::scalar(mean))])?;
//!     Ok(ReplicaOutput { state, grads, loss: 0.0 })
//! };
//! // Three micro-batches of 2 examples, on 2 replicas (micro-batches 0, 1 and 2) and on 3.
//! let two = Replicas::in_process(2)?.micro_batch(2)?;
//! let out = two.step(&state, batch.len(), step)?;
//! let three = Replicas::in_process(3)?.micro_batch(2)?.step(&state, batch.len(), step)?;
//! assert!(out.grads.get(&w).unwrap().bit_eq(three.grads.get(&w).unwrap()));  // the same bits
//! assert_eq!(out.state.fingerprint(), three.state.fingerprint());
//! assert_eq!(out.state.get(&seen)?.to_vec::<i64>()?, [6]);           // every example counted once
//! assert_eq!(two.local_values(&out.state, &seen)?[1].to_vec::<i64>()?, [2]);
//! # Ok::<(), purestate::Error>(())
//! ```

mod combine;
pub(crate) mod local;
#[cfg(feature = "mpi")]
mod mpi;
mod tree;
#[cfg(any(feature = "mpi", test))]
mod wire;

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::grad::Grads;
use crate::kernels;
use crate::store::{Fingerprint, StateStore};
use crate::tensor::Tensor;
use crate::variable::Variable;

/// What one micro-batch's step returns (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct ReplicaOutput {
    /// The store the step was given, with its assignments.
    pub state: StateStore,
    /// The gradient of the mean loss over the micro-batch.
    pub grads: Grads,
    /// The mean loss over the micro-batch.
    pub loss: f32,
}

/// The result of a data-parallel step: the state with the micro-batches' assignments combined, the mean
/// gradient and loss over the global batch. Apply the gradients with an optimizer, then commit:
/// `trainer.commit(opt.apply(out.state, &out.grads)?)`.
#[derive(Clone, Debug)]
pub struct Combined {
    /// The input state with the combined assignments (and `on_read` values); derives from the same version.
    pub state: StateStore,
    /// The gradients, `tree_sum_j(fill_j * g_j) / W` (see the [module docs](self)).
    pub grads: Grads,
    /// The loss, `tree_sum_j(fill_j * loss_j) / W`.
    pub loss: f32,
    /// Examples in the global batch.
    pub examples: usize,
    /// Micro-batches the global batch was cut into.
    pub micro_batches: usize,
    /// Over MPI, the bytes this rank sent: its partial sums and assignments as encoded (every rank sends its
    /// own once, through `MPI_Allgatherv`). `None` in process.
    pub sent_bytes: Option<usize>,
}

/// How a runner cuts a global batch: the micro-batch size and whether a shorter last micro-batch is allowed.
/// Part of an experiment's configuration: record it with the run, and check it on resume
/// ([`Replicas::check_micro_batch`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MicroBatching {
    /// Examples per micro-batch.
    pub size: usize,
    /// Whether a batch may end with a shorter micro-batch (weighted by its length).
    pub partial_last: bool,
}

/// Which replica and micro-batch a step runs as, and the micro-batch's examples in the global batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaContext {
    replica: usize,
    num_replicas: usize,
    range: Range<usize>,
    batch_len: usize,
    micro_batch: usize,
    micro_batches: usize,
}

impl ReplicaContext {
    /// The replica running the step (its MPI rank), from 0.
    pub fn replica(&self) -> usize {
        self.replica
    }

    /// How many replicas the step runs on.
    pub fn num_replicas(&self) -> usize {
        self.num_replicas
    }

    /// The indices of this micro-batch's examples in the global batch.
    pub fn range(&self) -> Range<usize> {
        self.range.clone()
    }

    /// The number of examples in this micro-batch.
    pub fn len(&self) -> usize {
        self.range.len()
    }

    /// True when the micro-batch is empty (never, for micro-batches [`Replicas::step`] makes).
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    /// The number of examples in the global batch.
    pub fn batch_len(&self) -> usize {
        self.batch_len
    }

    /// This micro-batch's index in the global batch, from 0 (also its random stream).
    pub fn micro_batch(&self) -> usize {
        self.micro_batch
    }

    /// How many micro-batches the global batch was cut into.
    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }
}

/// How one global batch is cut: each micro-batch's examples and each replica's micro-batches.
#[derive(Clone, Debug)]
pub(crate) struct Split {
    pub(crate) batch_len: usize,
    /// The length of a full micro-batch.
    size: usize,
    /// The examples of each micro-batch.
    ranges: Vec<Range<usize>>,
    /// The micro-batches of each replica.
    owners: Vec<Range<usize>>,
}

impl Split {
    fn new(batch_len: usize, n: usize, micro: Option<MicroBatching>) -> Result<Split> {
        let refuse =
            |reason: String| Error::BatchSplit { batch_len, micro_batch: micro.map(|m| m.size), replicas: n, reason };
        match micro {
            None => {
                if batch_len < n {
                    return Err(refuse("fewer examples than replicas".into()));
                }
                let ranges = array_split(batch_len, n);
                let size = ranges.iter().map(Range::len).max().unwrap_or(1);
                Ok(Split { batch_len, size, ranges, owners: (0..n).map(|r| r..r + 1).collect() })
            }
            Some(MicroBatching { size, partial_last }) => {
                if batch_len == 0 {
                    return Err(refuse("an empty batch".into()));
                }
                if !batch_len.is_multiple_of(size) && !partial_last {
                    return Err(refuse(format!(
                        "not a whole number of micro-batches ({} and {} left over); allow a shorter last one \
                         with `allow_partial_micro_batch(true)` or change the batch",
                        batch_len / size,
                        batch_len % size
                    )));
                }
                let m = batch_len.div_ceil(size);
                if m < n {
                    return Err(refuse(format!("{m} micro-batches cannot feed {n} replicas")));
                }
                if u32::try_from(m).is_err() {
                    return Err(refuse(format!("{m} micro-batches: more than 2^32 random streams")));
                }
                let ranges = (0..m).map(|j| j * size..((j + 1) * size).min(batch_len)).collect();
                Ok(Split { batch_len, size, ranges, owners: array_split(m, n) })
            }
        }
    }

    pub(crate) fn micro_batches(&self) -> usize {
        self.ranges.len()
    }

    /// `W`: the batch in full micro-batches.
    pub(crate) fn weight(&self) -> f64 {
        self.batch_len as f64 / self.size as f64
    }

    /// Micro-batch `j`'s length over a full micro-batch's.
    fn fill(&self, j: usize) -> f64 {
        self.ranges[j].len() as f64 / self.size as f64
    }

    /// The examples replica `r` runs.
    fn examples(&self, r: usize) -> Range<usize> {
        let owned = &self.owners[r];
        self.ranges[owned.start].start..self.ranges[owned.end - 1].end
    }
}

/// `len` items in `n` contiguous ranges, the first `len % n` one item longer (numpy's `array_split`).
fn array_split(len: usize, n: usize) -> Vec<Range<usize>> {
    let (base, extra) = (len / n, len % n);
    let mut start = 0;
    (0..n)
        .map(|r| {
            let range = start..start + base + usize::from(r < extra);
            start = range.end;
            range
        })
        .collect()
}

/// Adds `values` in the fixed binary tree over their indices that [`Replicas`] uses for micro-batches:
/// `((v0 + v1) + (v2 + v3)) + v4` for five. A single-process loop over micro-batches that adds its results
/// with `tree_sum` gets the bits the runner gets for any number of replicas.
///
/// # Errors
/// [`Error::InvalidArgument`] for no values; the errors of [`Tensor::add`].
///
/// # Examples
/// ```
/// use purestate::{replica::tree_sum, Tensor};
/// let xs: Vec<Tensor> = (1..=5).map(|i| Tensor::scalar(i as f32 / 10.0)).collect();
/// let expected = ((0.1f32 + 0.2) + (0.3 + 0.4)) + 0.5;
/// assert_eq!(tree_sum(&xs)?.to_vec::<f32>()?, [expected]);
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn tree_sum(values: &[Tensor]) -> Result<Tensor> {
    if values.is_empty() {
        return Err(Error::InvalidArgument { op: "tree_sum", arg: "values", reason: "nothing to add".into() });
    }
    let m = values.len();
    tree::reduce(tree::root(m), m, &mut |j| Ok(values[j].clone()), &|a: Tensor, b: Tensor| a.add(&b))
}

/// A data-parallel runner over N replicas (see the [module docs](self)).
pub struct Replicas {
    n: usize,
    micro: Option<MicroBatching>,
    backend: Backend,
}

enum Backend {
    InProcess,
    #[cfg(feature = "mpi")]
    Mpi(mpi::MpiBackend),
}

impl Replicas {
    /// A runner of `n` replicas in this process, on rayon's threads.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `n` is 0.
    pub fn in_process(n: usize) -> Result<Replicas> {
        if n == 0 {
            return Err(Error::InvalidArgument {
                op: "Replicas::in_process",
                arg: "n",
                reason: "at least one replica is needed".into(),
            });
        }
        Ok(Replicas { n, micro: None, backend: Backend::InProcess })
    }

    /// A runner whose replicas are the ranks of `MPI_COMM_WORLD`, this process being replica `rank`.
    ///
    /// Initializes MPI (with `MPI_THREAD_FUNNELED`: rayon's threads may exist, only the calling thread talks to
    /// MPI) and finalizes it when the runner is dropped; MPI can be initialized once per process. Start the
    /// program with `mpirun -np N`. Every rank must call [`step`](Self::step) and
    /// [`verify_fingerprint`](Self::verify_fingerprint) the same number of times, in the same order, with the
    /// same state and batch: they are collective operations.
    ///
    /// # Errors
    /// [`Error::Mpi`] when MPI was already initialized in this process.
    #[cfg(feature = "mpi")]
    pub fn mpi() -> Result<Replicas> {
        let backend = mpi::MpiBackend::initialize()?;
        Ok(Replicas { n: backend.size(), micro: None, backend: Backend::Mpi(backend) })
    }

    /// The same runner cutting every global batch into micro-batches of `size` examples: results are then the
    /// same bits for any number of replicas (see the [module docs](self)). A batch must be a whole number of
    /// micro-batches, unless [`allow_partial_micro_batch`](Self::allow_partial_micro_batch).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `size` is 0.
    pub fn micro_batch(mut self, size: usize) -> Result<Replicas> {
        if size == 0 {
            return Err(Error::InvalidArgument {
                op: "Replicas::micro_batch",
                arg: "size",
                reason: "a micro-batch needs at least one example".into(),
            });
        }
        let partial_last = self.micro.is_some_and(|m| m.partial_last);
        self.micro = Some(MicroBatching { size, partial_last });
        Ok(self)
    }

    /// Allows (or refuses, the default) a batch whose last micro-batch is shorter than the others; its results
    /// are weighted by its length. Meaningful with a [`micro_batch`](Self::micro_batch) size.
    pub fn allow_partial_micro_batch(mut self, allow: bool) -> Replicas {
        if let Some(micro) = &mut self.micro {
            micro.partial_last = allow;
        }
        self
    }

    /// The micro-batching, if the runner has a micro-batch size.
    pub fn micro_batching(&self) -> Option<MicroBatching> {
        self.micro
    }

    /// Checks that this runner cuts batches as a run recorded: resuming with another micro-batch size would
    /// change the trajectory.
    ///
    /// # Errors
    /// [`Error::MicroBatchMismatch`] when the sizes differ (or this runner has none).
    ///
    /// # Examples
    /// ```
    /// use purestate::{replica::Replicas, Error};
    /// let replicas = Replicas::in_process(3)?.micro_batch(16)?;
    /// replicas.check_micro_batch(16)?;
    /// assert!(matches!(
    ///     replicas.check_micro_batch(8),
    ///     Err(Error::MicroBatchMismatch { recorded: 8, got: Some(16) })
    /// ));
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn check_micro_batch(&self, recorded: usize) -> Result<()> {
        let got = self.micro.map(|m| m.size);
        if got == Some(recorded) {
            Ok(())
        } else {
            Err(Error::MicroBatchMismatch { recorded, got })
        }
    }

    /// The number of replicas.
    pub fn num_replicas(&self) -> usize {
        self.n
    }

    /// This process's replica: its MPI rank, or 0 in process (where this process runs every replica).
    pub fn rank(&self) -> usize {
        match &self.backend {
            Backend::InProcess => 0,
            #[cfg(feature = "mpi")]
            Backend::Mpi(b) => b.rank(),
        }
    }

    /// True on the process that commits versions and writes checkpoints: rank 0 (always, in process).
    pub fn is_primary(&self) -> bool {
        self.rank() == 0
    }

    /// The name of the backend: `"in_process"` or `"mpi"`.
    pub fn backend(&self) -> &'static str {
        match &self.backend {
            Backend::InProcess => "in_process",
            #[cfg(feature = "mpi")]
            Backend::Mpi(_) => "mpi",
        }
    }

    /// The examples each replica runs for a global batch of `batch_len`: N contiguous ranges. Without a
    /// micro-batch size, numpy's `array_split` of the examples; with one, of the micro-batches.
    ///
    /// # Errors
    /// [`Error::BatchSplit`] when the batch cannot be split (see [`step`](Self::step)).
    ///
    /// # Examples
    /// ```
    /// use purestate::replica::Replicas;
    /// assert_eq!(Replicas::in_process(4)?.shards(10)?, [0..3, 3..6, 6..8, 8..10]);
    /// assert_eq!(Replicas::in_process(2)?.micro_batch(2)?.shards(10)?, [0..6, 6..10]);
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn shards(&self, batch_len: usize) -> Result<Vec<Range<usize>>> {
        let split = Split::new(batch_len, self.n, self.micro)?;
        Ok((0..self.n).map(|r| split.examples(r)).collect())
    }

    /// Runs `step` on every micro-batch of a global batch of `batch_len` examples, each against `state` (with
    /// its replica's `on_read` values), and combines the results (see the [module docs](self)).
    ///
    /// In process the replicas run in parallel on rayon's pool, each its micro-batches in order; over MPI this
    /// rank runs its own replica's micro-batches and exchanges its partial sums with the other ranks. Costs the
    /// steps, plus one addition per micro-batch of every gradient and assigned value; the state itself is never
    /// copied.
    ///
    /// # Errors
    /// The error of the lowest-numbered replica whose step failed (over MPI, the other ranks get
    /// [`Error::ReplicaFailed`]); [`Error::BatchSplit`] for a batch that is not a whole number of micro-batches
    /// (unless allowed), or with fewer micro-batches (without a size: examples) than replicas;
    /// [`Error::InvalidArgument`] when a step created or removed variables or changed attributes, or when
    /// micro-batches returned gradients for different variables; [`Error::ReplicaConflict`] when micro-batches
    /// assigned different values to a variable with aggregation `none`; [`Error::ShapeMismatch`],
    /// [`Error::DTypeMismatch`] for gradients or values that do not match; [`Error::UnsupportedDType`] for a
    /// sum or mean of bool values.
    pub fn step<F>(&self, state: &StateStore, batch_len: usize, step: F) -> Result<Combined>
    where
        F: Fn(&ReplicaContext, StateStore) -> Result<ReplicaOutput> + Sync,
    {
        let n = self.n;
        let split = Split::new(batch_len, n, self.micro)?;
        let m = split.micro_batches();
        let vars = state.variables();
        let on_read = local::on_read(state, &vars, n)?;
        let run = |replica: usize| -> Result<combine::Contribution> {
            let view = local::view(state, &on_read, replica)?;
            let owned = split.owners[replica].clone();
            let mut side = combine::Side::default();
            let mut leaf = |j: usize| {
                let ctx = ReplicaContext {
                    replica,
                    num_replicas: n,
                    range: split.ranges[j].clone(),
                    batch_len,
                    micro_batch: j,
                    micro_batches: m,
                };
                // `Split::new` checked that every index fits in a u32.
                let stream = view.clone().with_random_stream(Some(j as u32));
                let out = step(&ctx, stream)?;
                let (partial, assigned) = combine::leaf(&ctx, &view, &vars, out, split.fill(j))?;
                side.note(&vars, j, assigned);
                Ok(partial)
            };
            let add = |a, b| combine::add(&vars, a, b);
            let mut nodes = Vec::new();
            for node in tree::cover(owned.start, owned.end, m) {
                nodes.push((node, tree::reduce(node, m, &mut leaf, &add)?));
            }
            side.finish(&vars, &on_read, replica, owned, batch_len, nodes)
        };
        match &self.backend {
            Backend::InProcess => {
                let parts = kernels::par::map_tasks(n, run).into_iter().collect::<Result<Vec<_>>>()?;
                combine::combine(state, &vars, &on_read, &split, &parts)
            }
            #[cfg(feature = "mpi")]
            Backend::Mpi(b) => {
                let (parts, sent) = b.exchange(run(b.rank()))?;
                let mut out = combine::combine(state, &vars, &on_read, &split, &parts)?;
                out.sent_bytes = Some(sent);
                Ok(out)
            }
        }
    }

    /// The per-replica values of an `on_read` variable (one per replica, in replica order); what
    /// [`StateStore::get`] returns is their aggregate. For another variable, its value on every replica.
    ///
    /// # Errors
    /// [`Error::ForeignVariable`], [`Error::StaleVariable`].
    pub fn local_values(&self, state: &StateStore, var: &Variable) -> Result<Vec<Tensor>> {
        combine::local_values(state, var, self.n)
    }

    /// The state's fingerprint, checked equal on every replica: over MPI every rank sends its fingerprint to
    /// every other and compares it with rank 0's (a collective call); in process there is one state.
    ///
    /// The fingerprint covers the mirrored variables and the aggregated `on_read` values (not the per-replica
    /// values).
    ///
    /// # Errors
    /// [`Error::ReplicaDivergence`] naming the first rank whose fingerprint differs from rank 0's (on every rank).
    pub fn verify_fingerprint(&self, state: &StateStore) -> Result<Fingerprint> {
        let fingerprint = state.fingerprint();
        match &self.backend {
            Backend::InProcess => Ok(fingerprint),
            #[cfg(feature = "mpi")]
            Backend::Mpi(b) => b.verify_fingerprint(fingerprint),
        }
    }
}

impl fmt::Debug for Replicas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replicas")
            .field("num_replicas", &self.n)
            .field("micro_batching", &self.micro)
            .field("backend", &self.backend())
            .field("rank", &self.rank())
            .finish()
    }
}
