//! Data-parallel replicas: [`Replicas`] splits a global batch into shards, runs a pure per-replica step on
//! each against the same state, and combines what the replicas return: gradients by the shard-weighted mean,
//! assignments by each variable's [`Aggregation`](crate::Aggregation), `on_read` variables kept per replica
//! ([`Synchronization`](crate::Synchronization)). Replicas run on rayon threads in one process ([`Replicas::in_process`]) or, with the
//! cargo feature `mpi`, one per MPI rank (`Replicas::mpi`), with bit-identical results.
//!
//! # The per-replica step
//!
//! A step is a function `Fn(&ReplicaContext, StateStore) -> Result<ReplicaOutput>`. It gets the replica's
//! view of the state (an O(1) snapshot of the shared state in which each `on_read` variable holds this
//! replica's own value), reads its shard of the batch through [`ReplicaContext::range`], and returns:
//!
//! - `grads`: the gradient of the *mean* loss over its shard ([`Grads`]),
//! - `loss`: that mean loss,
//! - `state`: the store it was given, with whatever it assigned (running statistics, counters, seed state).
//!
//! A replica *assigns* a variable when the store it returns holds another value buffer for it than the one it
//! was given: any `assign`, `assign_add` or `assign_sub` (even of equal bits) counts, reading does not. A step
//! must not create or remove variables or change their attributes (do that outside the step).
//!
//! # How results combine
//!
//! Gradients and the loss: `sum_r(n_r * g_r) / sum_r(n_r)` with `n_r` the shard sizes, so N replicas over the
//! shards of a batch give the gradient of one replica over the whole batch (to float rounding), even when the
//! batch does not divide evenly. Assignments to mirrored variables (synchronization `auto` or `on_write`), by
//! the variable's aggregation, where a replica that did not assign contributes the value it was given:
//!
//! | aggregation | combined value |
//! | --- | --- |
//! | `mean` | `(v_0 + v_1 + .. + v_{N-1}) / N` |
//! | `sum` | `v + (v_0 - v) + (v_1 - v) + ..`: every replica's change, so counters count every increment |
//! | `only_first_replica` | `v_0` |
//! | `none` | the value of the one replica that assigned; [`Error::ReplicaConflict`] when several did |
//!
//! `on_read` variables (metrics, counters) keep one value per replica across steps, in the store beside the
//! aggregated value: [`StateStore::get`], fingerprints and checkpoints see the aggregate (`sum`: the sum of
//! the replicas' values, `mean`: their mean, `only_first_replica`: replica 0's, `none`: as for mirrored
//! variables), and [`Replicas::local_values`] the per-replica values. When a store's value of an `on_read`
//! variable was set outside the runner (a metric reset, a loaded checkpoint), the replicas start again from it:
//! `[a, 0, .., 0]` for `sum`, `a` on every replica otherwise. Synchronization `none` means there is no per-replica
//! copy to combine: an assignment from more than one replica is [`Error::ReplicaConflict`].
//!
//! Every sum adds replica 0, 1, .. in order and then divides (in `f64` for floats, rounded once to the
//! value's dtype; in `i128` for integers), in process and over MPI alike, so results are bit-identical run to
//! run, across thread counts and across the two backends.
//!
//! # Examples
//! ```
//! use purestate::replica::{ReplicaOutput, Replicas};
//! use purestate::{grad::Grads, init, StateStore, Tensor, VariableSpec};
//!
//! let mut state = StateStore::new();
//! let w = state.create(VariableSpec::new(init::Zeros).shape([]).name("w"))?;
//! let seen = state.create(
//!     VariableSpec::new(init::Zeros).shape([]).name("seen").trainable(false)
//!         .aggregation("sum").synchronization("on_read"),
//! )?;
//! let batch = [1.0f32, 2.0, 3.0, 4.0, 5.0];
//! let replicas = Replicas::in_process(2)?;
//! let out = replicas.step(&state, batch.len(), |ctx, mut state| {
//!     let shard = &batch[ctx.range()];
//!     let mean = shard.iter().sum::<f32>() / shard.len() as f32;   // d/dw of mean(x * w)
//!     state.assign_add(&seen, Tensor::scalar(shard.len() as f32))?;
//!     let grads = Grads::from_pairs([(w.clone(), Tensor::scalar(mean))])?;
//!     Ok(ReplicaOutput { state, grads, loss: 0.0 })
//! })?;
//! assert_eq!(out.grads.get(&w).unwrap().to_vec::<f32>()?, [3.0]);    // the mean over the whole batch
//! assert_eq!(out.state.get(&seen)?.to_vec::<f32>()?, [5.0]);          // every example counted once
//! assert_eq!(replicas.local_values(&out.state, &seen)?[1].to_vec::<f32>()?, [2.0]);
//! # Ok::<(), purestate::Error>(())
//! ```

mod combine;
pub(crate) mod local;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(any(feature = "mpi", test))]
mod wire;

use std::fmt;
use std::ops::Range;

use crate::error::{Error, Result};
use crate::grad::Grads;
use crate::kernels;
use crate::store::{Fingerprint, StateStore};
use crate::tensor::Tensor;
use crate::variable::Variable;

/// What one replica's step returns (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct ReplicaOutput {
    /// The store the step was given, with its assignments.
    pub state: StateStore,
    /// The gradient of the mean loss over the replica's shard.
    pub grads: Grads,
    /// The mean loss over the replica's shard.
    pub loss: f32,
}

/// The result of a data-parallel step: the state with the replicas' assignments combined, the shard-weighted
/// mean gradient and loss. Apply the gradients with an optimizer, then commit:
/// `trainer.commit(opt.apply(out.state, &out.grads)?)`.
#[derive(Clone, Debug)]
pub struct Combined {
    /// The input state with the combined assignments (and `on_read` values); derives from the same version.
    pub state: StateStore,
    /// The gradients, `sum_r(n_r * g_r) / sum_r(n_r)`.
    pub grads: Grads,
    /// The loss, `sum_r(n_r * loss_r) / sum_r(n_r)`.
    pub loss: f32,
    /// Examples in the global batch.
    pub examples: usize,
}

/// Which replica a step runs as, and its shard of the global batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaContext {
    replica: usize,
    num_replicas: usize,
    range: Range<usize>,
    batch_len: usize,
}

impl ReplicaContext {
    /// This replica's index (its MPI rank), from 0.
    pub fn replica(&self) -> usize {
        self.replica
    }

    /// How many replicas the step runs on.
    pub fn num_replicas(&self) -> usize {
        self.num_replicas
    }

    /// The indices of this replica's examples in the global batch.
    pub fn range(&self) -> Range<usize> {
        self.range.clone()
    }

    /// The number of examples in this replica's shard.
    pub fn len(&self) -> usize {
        self.range.len()
    }

    /// True when the shard is empty (never, for shards [`Replicas::step`] makes).
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    /// The number of examples in the global batch.
    pub fn batch_len(&self) -> usize {
        self.batch_len
    }
}

/// A data-parallel runner over N replicas (see the [module docs](self)).
pub struct Replicas {
    n: usize,
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
        Ok(Replicas { n, backend: Backend::InProcess })
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
        Ok(Replicas { n: backend.size(), backend: Backend::Mpi(backend) })
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

    /// The shards of a global batch of `batch_len` examples: N contiguous ranges, the first `batch_len % N`
    /// one example longer (numpy's `array_split`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the batch has fewer examples than there are replicas.
    ///
    /// # Examples
    /// ```
    /// let replicas = purestate::replica::Replicas::in_process(4)?;
    /// assert_eq!(replicas.shards(10)?, [0..3, 3..6, 6..8, 8..10]);
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn shards(&self, batch_len: usize) -> Result<Vec<Range<usize>>> {
        let n = self.n;
        if batch_len < n {
            return Err(Error::InvalidArgument {
                op: "Replicas::step",
                arg: "batch_len",
                reason: format!("a batch of {batch_len} examples cannot feed {n} replicas"),
            });
        }
        let (base, extra) = (batch_len / n, batch_len % n);
        let mut start = 0;
        Ok((0..n)
            .map(|r| {
                let len = base + usize::from(r < extra);
                let range = start..start + len;
                start += len;
                range
            })
            .collect())
    }

    /// Runs `step` on every replica's shard of a global batch of `batch_len` examples, each against `state`
    /// (with its own `on_read` values), and combines the results (see the [module docs](self)).
    ///
    /// In process the replicas run in parallel on rayon's pool; over MPI this rank runs its own replica and
    /// exchanges its contribution with the other ranks. Costs the steps, plus one pass over every gradient and
    /// assigned value per replica; the state itself is never copied.
    ///
    /// # Errors
    /// The error of the lowest-numbered replica whose step failed (over MPI, the other ranks get
    /// [`Error::ReplicaFailed`]); [`Error::InvalidArgument`] when the batch is smaller than the number of
    /// replicas, when a step created or removed variables or changed attributes, or when replicas returned
    /// gradients for different variables; [`Error::ReplicaConflict`] when several replicas assigned a variable
    /// with aggregation `none`; [`Error::ShapeMismatch`], [`Error::DTypeMismatch`] for gradients or values
    /// that do not match; [`Error::UnsupportedDType`] for a sum or mean of bool values.
    pub fn step<F>(&self, state: &StateStore, batch_len: usize, step: F) -> Result<Combined>
    where
        F: Fn(&ReplicaContext, StateStore) -> Result<ReplicaOutput> + Sync,
    {
        let n = self.n;
        let shards = self.shards(batch_len)?;
        let vars = state.variables();
        let on_read = local::on_read(state, &vars, n)?;
        let run = |replica: usize| {
            let ctx = ReplicaContext { replica, num_replicas: n, range: shards[replica].clone(), batch_len };
            let view = local::view(state, &on_read, replica)?;
            let out = step(&ctx, view.clone())?;
            combine::contribution(&ctx, &view, &vars, out)
        };
        let parts = match &self.backend {
            Backend::InProcess => kernels::par::map_tasks(n, run).into_iter().collect::<Result<Vec<_>>>()?,
            #[cfg(feature = "mpi")]
            Backend::Mpi(b) => b.exchange(run(b.rank()))?,
        };
        combine::combine(state, &vars, &on_read, &parts)
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
            .field("backend", &self.backend())
            .field("rank", &self.rank())
            .finish()
    }
}
