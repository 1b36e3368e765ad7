//! [`StoreDiff`]: which variables one store adds, removes or changes relative to another.

use std::fmt;

use imbl::ordmap::DiffItem;

use super::{Entry, StateStore};

/// A variable whose value or attributes differ between two stores.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueChange {
    /// The variable's path.
    pub path: String,
    /// Largest absolute elementwise difference (`None` when dtype or shape changed; NaN when a NaN appeared
    /// or disappeared; 0 when only attributes changed or the bits differ only in the sign of a zero).
    pub max_abs_diff: Option<f64>,
    /// True when the value's bits differ.
    pub value_changed: bool,
    /// True when trainable, constraint, regularizer or overwrite_with_gradient changed.
    pub attributes_changed: bool,
}

/// What changed from one store to another, in creation order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreDiff {
    /// Paths present only in the newer store.
    pub added: Vec<String>,
    /// Paths present only in the older store.
    pub removed: Vec<String>,
    /// Variables present in both whose values or attributes differ.
    pub changed: Vec<ValueChange>,
}

impl StoreDiff {
    /// True when nothing differs.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl fmt::Display for StoreDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "no differences");
        }
        for path in &self.added {
            writeln!(f, "+ {path}")?;
        }
        for path in &self.removed {
            writeln!(f, "- {path}")?;
        }
        for c in &self.changed {
            match (c.value_changed, c.max_abs_diff) {
                (true, Some(d)) => write!(f, "~ {} (max abs diff {d:.3e})", c.path)?,
                (true, None) => write!(f, "~ {} (dtype or shape changed)", c.path)?,
                (false, _) => write!(f, "~ {}", c.path)?,
            }
            if c.attributes_changed {
                write!(f, " [attributes]")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}

fn change(old: &Entry, new: &Entry) -> Option<ValueChange> {
    let value_changed = !old.value.bit_eq(&new.value);
    let attributes_changed = !old.meta.same_as(&new.meta);
    (value_changed || attributes_changed).then(|| ValueChange {
        path: new.var.path().to_string(),
        max_abs_diff: if value_changed { old.value.max_abs_diff(&new.value) } else { Some(0.0) },
        value_changed,
        attributes_changed,
    })
}

impl StateStore {
    /// What `other` adds, removes and changes relative to `self`.
    ///
    /// Stores of one lineage are compared by variable, walking only the parts of the two trees that are not
    /// shared (so two versions that differ in one variable cost O(log n) plus that variable's size); stores of
    /// different lineages (a loaded checkpoint, say) are compared by path.
    ///
    /// # Examples
    /// ```
    /// use purestate::{StateStore, Tensor, VariableSpec};
    /// let mut a = StateStore::new();
    /// let w = a.create(VariableSpec::new(Tensor::from([1.0f32, 2.0])).name("w"))?;
    /// let mut b = a.clone();
    /// b.assign_add(&w, Tensor::from([0.0f32, 0.5]))?;
    /// let diff = a.diff(&b);
    /// assert_eq!(diff.changed[0].path, "w");
    /// assert_eq!(diff.changed[0].max_abs_diff, Some(0.5));
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn diff(&self, other: &StateStore) -> StoreDiff {
        let mut diff = StoreDiff::default();
        if self.same_lineage(other) {
            for item in self.vars.diff(&other.vars) {
                match item {
                    DiffItem::Add(_, e) => diff.added.push(e.var.path().to_string()),
                    DiffItem::Remove(_, e) => diff.removed.push(e.var.path().to_string()),
                    DiffItem::Update { old: (_, o), new: (_, n) } => diff.changed.extend(change(o, n)),
                }
            }
        } else {
            for old in self.entries() {
                match other.paths.get(old.var.path()).and_then(|k| other.vars.get(k)) {
                    Some(new) => diff.changed.extend(change(old, new)),
                    None => diff.removed.push(old.var.path().to_string()),
                }
            }
            for new in other.entries() {
                if !self.paths.contains_key(new.var.path()) {
                    diff.added.push(new.var.path().to_string());
                }
            }
        }
        diff
    }
}
