//! Splitting a store in two and merging it back: the `nnx.split`/`nnx.merge` of Flax and the trainable /
//! non-trainable split of Keras's `stateless_call`.

use std::sync::Arc;

use super::{Entry, StateStore};
use crate::constraint::Constraint;
use crate::error::{Error, Result};
use crate::regularizer::Regularizer;
use crate::tensor::Tensor;
use crate::variable::Variable;

/// A variable of a store seen with its value and settable attributes, as a partition filter sees it.
#[derive(Clone, Copy, Debug)]
pub struct VariableRef<'a> {
    entry: &'a Entry,
}

impl<'a> VariableRef<'a> {
    /// The handle.
    pub fn variable(&self) -> &'a Variable {
        &self.entry.var
    }
    /// The value.
    pub fn value(&self) -> &'a Tensor {
        &self.entry.value
    }
    /// The path.
    pub fn path(&self) -> &'a str {
        self.entry.var.path()
    }
    /// Whether it is trainable in this store.
    pub fn trainable(&self) -> bool {
        self.entry.meta.trainable
    }
    /// Whether the optimizer overwrites it with its gradient.
    pub fn overwrite_with_gradient(&self) -> bool {
        self.entry.meta.overwrite_with_gradient
    }
    /// Its constraint.
    pub fn constraint(&self) -> Option<&'a Arc<dyn Constraint>> {
        self.entry.meta.constraint.as_ref()
    }
    /// Its regularizer.
    pub fn regularizer(&self) -> Option<&'a Arc<dyn Regularizer>> {
        self.entry.meta.regularizer.as_ref()
    }
}

impl StateStore {
    /// Splits the store in two: the variables for which `filter` holds, and the rest. Both halves keep this
    /// store's lineage, base (trainer and version) and floatx, so handles work on either. O(n log n); no value
    /// is copied.
    ///
    /// # Examples
    /// ```
    /// use purestate::{init, StateStore, VariableSpec};
    /// let mut state = StateStore::new();
    /// let w = state.create(VariableSpec::new(init::Ones).shape([2]).name("w"))?;
    /// let n = state.create(VariableSpec::new(init::Zeros).shape([]).name("n").trainable(false))?;
    /// let (trainable, rest) = state.partition(|v| v.trainable());
    /// assert!(trainable.contains(&w) && !trainable.contains(&n));
    /// let whole = trainable.merge(rest)?;
    /// assert_eq!(whole.fingerprint(), state.fingerprint());
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn partition(&self, mut filter: impl FnMut(VariableRef<'_>) -> bool) -> (StateStore, StateStore) {
        let mut yes = self.clone();
        let mut no = self.clone();
        for entry in self.entries() {
            let target = if filter(VariableRef { entry }) { &mut no } else { &mut yes };
            target.remove_entry(entry.var.key);
        }
        (yes, no)
    }

    /// The union of two disjoint stores of one lineage (the inverse of [`partition`](Self::partition)).
    /// The result keeps `self`'s base (trainer and version) and floatx. O(m log(n + m)) for `other` of m variables.
    ///
    /// # Errors
    /// [`Error::ForeignVariable`] when `other` is of another lineage; [`Error::DuplicatePath`] when both hold
    /// the same variable or path.
    pub fn merge(mut self, other: StateStore) -> Result<StateStore> {
        if !self.same_lineage(&other) {
            let path = other.entries().next().map(|e| e.var.path().to_string()).unwrap_or_default();
            return Err(Error::ForeignVariable { path });
        }
        if let Some(dup) = other.entries().find(|e| self.paths.contains_key(e.var.path())) {
            return Err(Error::DuplicatePath { path: dup.var.path().to_string() });
        }
        for entry in other.entries() {
            self.insert_entry(entry.clone());
        }
        self.auto_names = self.auto_names.max(other.auto_names);
        Ok(self)
    }
}
