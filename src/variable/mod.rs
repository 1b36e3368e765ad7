//! [`Variable`]: a small handle into a [`StateStore`](crate::StateStore); [`VariableSpec`], the builder of
//! every `keras.Variable` argument; [`Aggregation`] and [`Synchronization`].
//!
//! The handle carries what never changes (path, shape, dtype, autocast, aggregation, synchronization). What
//! Keras lets you change after creation (trainable, constraint, regularizer, overwrite_with_gradient) is
//! per-variable metadata in the store, versioned like values.

mod lineage;
mod options;
mod spec;

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

pub use options::{Aggregation, Synchronization};
pub use spec::{InitialValue, OptionValue, VariableSpec};

pub(crate) use lineage::{Lineage, VarKey};

use crate::dtype::DType;
use crate::tensor::Shape;

/// What never changes about a variable: its path, shape, dtype and replica behaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VariableInfo {
    /// Full path, `name_scope/name`.
    pub path: String,
    /// Last component of the path.
    pub name: String,
    /// Shape of every value.
    pub shape: Shape,
    /// Dtype of every value.
    pub dtype: DType,
    /// Whether reads under a mixed-precision scope cast it to the compute dtype.
    pub autocast: bool,
    /// How replicas' assignments combine.
    pub aggregation: Aggregation,
    /// How replicas stay in step.
    pub synchronization: Synchronization,
}

/// A handle to a variable of a [`StateStore`](crate::StateStore): a slotmap key, the store lineage it belongs
/// to and its immutable [`VariableInfo`]. Clone is O(1).
///
/// `==` and `Hash` are identity (same lineage, same key), never elementwise: use
/// [`Tensor::equal`](crate::Tensor) on values for that. Its value lives in a store: `state.get(&w)?`.
#[derive(Clone)]
pub struct Variable {
    pub(crate) key: VarKey,
    pub(crate) lineage: Arc<Lineage>,
    pub(crate) info: Arc<VariableInfo>,
}

impl Variable {
    /// Full path, `name_scope/name` (Keras: `Variable.path`).
    pub fn path(&self) -> &str {
        &self.info.path
    }

    /// The name, the last component of the path (Keras: `Variable.name`).
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The shape (Keras: `Variable.shape`).
    pub fn shape(&self) -> &Shape {
        &self.info.shape
    }

    /// Number of dimensions (Keras: `Variable.ndim`).
    pub fn ndim(&self) -> usize {
        self.info.shape.ndim()
    }

    /// Number of elements.
    pub fn size(&self) -> usize {
        self.info.shape.size()
    }

    /// The dtype (Keras: `Variable.dtype`).
    pub fn dtype(&self) -> DType {
        self.info.dtype
    }

    /// Whether mixed-precision scopes cast it on read (Keras: `Variable.autocast`).
    pub fn autocast(&self) -> bool {
        self.info.autocast
    }

    /// Aggregation across replicas (Keras: `Variable.aggregation`).
    pub fn aggregation(&self) -> Aggregation {
        self.info.aggregation
    }

    /// Synchronization across replicas (Keras: `Variable.synchronization`).
    pub fn synchronization(&self) -> Synchronization {
        self.info.synchronization
    }

    /// Everything that never changes about the variable.
    pub fn info(&self) -> &VariableInfo {
        &self.info
    }
}

impl PartialEq for Variable {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && Arc::ptr_eq(&self.lineage, &other.lineage)
    }
}

impl Eq for Variable {}

impl Hash for Variable {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
        (Arc::as_ptr(&self.lineage) as usize).hash(state);
    }
}

impl fmt::Debug for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<Variable path={}, shape={}, dtype={}>", self.path(), self.shape(), self.dtype())
    }
}

impl fmt::Display for Variable {
    /// Keras's repr without the value (which lives in a store; see `StateStore::repr`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}
