//! Regularizers: penalties on a variable's value that a [`Scope`](crate::Scope) collects as losses (Keras:
//! `keras.regularizers`).

use std::fmt;

use crate::error::Result;
use crate::tensor::Tensor;

/// A penalty on a variable's value, added to the loss (Keras: `Regularizer.__call__`).
pub trait Regularizer: Send + Sync + fmt::Debug {
    /// The penalty, a 0-d float tensor.
    ///
    /// # Errors
    /// When `value`'s dtype is not a float dtype.
    fn penalty(&self, value: &Tensor) -> Result<Tensor>;

    /// Keras's class name (`"L2"`).
    fn name(&self) -> &'static str;
}
