//! Constraints: projections applied to a variable right after an optimizer updates it (Keras:
//! `keras.constraints`).

use std::fmt;

use crate::error::Result;
use crate::tensor::Tensor;

/// A projection applied to a variable's value after each optimizer update (Keras: `Constraint.__call__`).
pub trait Constraint: Send + Sync + fmt::Debug {
    /// The constrained value, of the same shape and dtype as `value`.
    ///
    /// # Errors
    /// When `value`'s dtype is not one the constraint handles.
    fn apply(&self, value: &Tensor) -> Result<Tensor>;

    /// Keras's class name (`"NonNeg"`).
    fn name(&self) -> &'static str;
}
