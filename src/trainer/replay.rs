//! Deterministic replay: re-run a step function over the recorded step records and compare every replayed
//! state's fingerprint with the one committed.

use std::fmt;

use super::Trainer;
use crate::error::{Error, Result};
use crate::store::{Fingerprint, StateStore};

/// The first version whose replayed state differs from the committed one.
#[derive(Clone, Debug, PartialEq)]
pub struct Divergence {
    /// The version whose replay differs.
    pub version: u64,
    /// The fingerprint committed for it.
    pub expected: Fingerprint,
    /// The fingerprint of the replayed state.
    pub got: Fingerprint,
    /// Each differing variable's path and largest absolute difference (`None` when the dtype or shape differ);
    /// empty when the committed state was pruned, so only the fingerprints can be compared.
    pub variables: Vec<(String, Option<f64>)>,
    /// A likely cause the trainer knows of: the run directory was created by a process with another matrix
    /// kernel ([`OpenReport::other_matrix_kernel`](crate::trainer::run::OpenReport::other_matrix_kernel)).
    pub cause: Option<String>,
}

/// What [`Trainer::replay`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayReport {
    /// The version replay started from.
    pub from: u64,
    /// The version replay was asked to reach.
    pub to: u64,
    /// Steps re-run (up to and including a diverging one).
    pub steps: usize,
    /// The first divergence, if any.
    pub divergence: Option<Divergence>,
}

impl ReplayReport {
    /// True when every replayed state was bit-identical to the committed one.
    pub fn is_bit_identical(&self) -> bool {
        self.divergence.is_none()
    }
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.divergence {
            None => write!(f, "replayed {} steps from v{} to v{}: bit-identical", self.steps, self.from, self.to),
            Some(d) => {
                write!(f, "replay diverged at v{} (after {} steps from v{})", d.version, self.steps, self.from)?;
                if d.variables.is_empty() {
                    write!(f, ": fingerprint {} != committed {}", d.got, d.expected)?;
                }
                for (path, diff) in &d.variables {
                    match diff {
                        Some(x) => write!(f, "\n  {path}: max abs diff {x:.3e}")?,
                        None => write!(f, "\n  {path}: dtype or shape differs")?,
                    }
                }
                if let Some(cause) = &d.cause {
                    write!(f, "\n  likely cause: {cause}")?;
                }
                Ok(())
            }
        }
    }
}

impl<R> Trainer<R> {
    /// Re-runs `step` from version `from` to version `to` along `to`'s parent chain (after a rollback the
    /// history is a tree; abandoned branches are not replayed), feeding each step the record committed with
    /// the version it produced, and compares each replayed state's fingerprint with the committed one.
    ///
    /// Stops at the first mismatch and reports its version and, when that version's state is retained, each
    /// differing variable's path and max abs difference. Never changes the trainer. Put everything a step
    /// depends on in its record (batch, learning rate, ...), so the replay is exact.
    ///
    /// Each replayed state carries what its committed twin carried, this trainer's [`id`](Self::id) and the
    /// version it re-creates as its base, so a step sees the same [`StateStore::base`] and
    /// [`StateStore::trainer`] as the first time; nothing replay produces is committed.
    ///
    /// # Errors
    /// [`Error::UnknownVersion`]; [`Error::Pruned`] when `from`'s state is gone (from memory, and from the run
    /// directory when the trainer has one: a stored state is read back); [`Error::InvalidArgument`]
    /// when `from` is not an ancestor of `to`; [`Error::MissingRecord`] for a version committed without a
    /// record; whatever `step` returns.
    ///
    /// # Examples
    /// ```
    /// use purestate::{init, StateStore, Tensor, Trainer, VariableSpec};
    /// let mut state = StateStore::new();
    /// let w = state.create(VariableSpec::new(init::Zeros).shape([2]).name("w"))?;
    /// let step = |mut s: StateStore, lr: &f32| -> purestate::Result<StateStore> {
    ///     s.assign_add(&w, Tensor::from(*lr))?;
    ///     Ok(s)
    /// };
    /// let mut trainer: Trainer<f32> = Trainer::new(state);
    /// for lr in [0.1, 0.2, 0.3] {
    ///     let next = step(trainer.state().clone(), &lr)?;
    ///     trainer.commit_with(next, lr)?;
    /// }
    /// let report = trainer.replay(0, trainer.head(), step)?;
    /// assert!(report.is_bit_identical());
    /// assert_eq!(report.steps, 3);
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn replay<F>(&self, from: u64, to: u64, mut step: F) -> Result<ReplayReport>
    where
        F: FnMut(StateStore, &R) -> Result<StateStore>,
    {
        let chain = self.lineage(from, to)?;
        let mut state = self.state_of(from)?;
        let mut report = ReplayReport { from, to, steps: 0, divergence: None };
        for &version in &chain[1..] {
            let record = self.record(version)?.ok_or(Error::MissingRecord { version })?;
            state = step(state, record)?;
            report.steps += 1;
            state.settle();
            let got = state.fingerprint();
            let expected = self.fingerprint(version)?;
            if got != expected {
                let variables = match self.get(version) {
                    Ok(committed) => {
                        let diff = committed.diff(&state);
                        let mut vars: Vec<(String, Option<f64>)> = diff
                            .changed
                            .into_iter()
                            .filter(|c| c.value_changed)
                            .map(|c| (c.path, c.max_abs_diff))
                            .collect();
                        vars.extend(diff.added.into_iter().chain(diff.removed).map(|p| (p, None)));
                        vars
                    }
                    Err(_) => Vec::new(),
                };
                let cause = self.run_report().and_then(|r| r.other_matrix_kernel()).map(|k| {
                    format!(
                        "the run was created with the {k} matrix kernel and this process runs {}, whose \
                         products round differently",
                        crate::kernels::gemm::kernel()
                    )
                });
                report.divergence = Some(Divergence { version, expected, got, variables, cause });
                break;
            }
            // The next step derives from this version of this trainer, as the committed one did.
            state.set_committed(self.id, version);
        }
        Ok(report)
    }
}
