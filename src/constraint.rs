//! Constraints: projections applied to a variable right after an optimizer updates it (Keras:
//! `keras.constraints`, keras/src/constraints/constraints.py, Keras 3): [`NonNeg`], [`MaxNorm`],
//! [`MinMaxNorm`], [`UnitNorm`].

use std::fmt;

use crate::error::Result;
use crate::ops::Axes;
use crate::tensor::Tensor;

/// Keras's `backend.epsilon()`, the fuzz factor of the norm constraints.
const EPSILON: f64 = 1e-7;

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

/// Zeroes negative weights: `w * (w >= 0)` (Keras: `NonNeg`).
///
/// # Examples
/// ```
/// use purestate::{constraint::{Constraint, NonNeg}, Tensor};
/// let w = NonNeg.apply(&Tensor::from([-1.0f32, 0.5]))?;
/// assert_eq!(w.to_vec::<f32>()?, [0.0, 0.5]);
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NonNeg;

impl Constraint for NonNeg {
    fn apply(&self, w: &Tensor) -> Result<Tensor> {
        w.mul(w.greater_equal(0.0)?.cast(w.dtype()))
    }
    fn name(&self) -> &'static str {
        "NonNeg"
    }
}

/// Rescales so the L2 norm along `axis` is at most `max_value` (Keras: `MaxNorm(max_value=2, axis=0)`):
/// `w * clip(norms, 0, max_value) / (epsilon + norms)`.
#[derive(Clone, Debug, PartialEq)]
pub struct MaxNorm {
    /// The largest norm allowed.
    pub max_value: f64,
    /// The axes the norm is taken over (0: each column of a dense kernel, the incoming weights of a unit).
    pub axis: Vec<isize>,
}

impl Default for MaxNorm {
    fn default() -> Self {
        MaxNorm { max_value: 2.0, axis: vec![0] }
    }
}

impl MaxNorm {
    /// A max-norm constraint over `axis`.
    pub fn new(max_value: f64, axis: impl Into<Vec<isize>>) -> Self {
        MaxNorm { max_value, axis: axis.into() }
    }
}

fn norms(w: &Tensor, axis: &[isize]) -> Result<Tensor> {
    w.square()?.sum(Axes::These(axis.to_vec()), true)?.sqrt()
}

impl Constraint for MaxNorm {
    fn apply(&self, w: &Tensor) -> Result<Tensor> {
        let norms = norms(w, &self.axis)?;
        let desired = norms.clip(0.0, self.max_value)?;
        w.mul(&desired.div(&norms.add(EPSILON)?)?)
    }
    fn name(&self) -> &'static str {
        "MaxNorm"
    }
}

/// Keeps the L2 norm along `axis` within `[min_value, max_value]`, moving a `rate` fraction of the way
/// (Keras: `MinMaxNorm(min_value=0.0, max_value=1.0, rate=1.0, axis=0)`):
/// `w * (rate * clip(norms, min, max) + (1 - rate) * norms) / (epsilon + norms)`.
#[derive(Clone, Debug, PartialEq)]
pub struct MinMaxNorm {
    /// The smallest norm allowed.
    pub min_value: f64,
    /// The largest norm allowed.
    pub max_value: f64,
    /// The fraction of the way to the allowed range taken at each step.
    pub rate: f64,
    /// The axes the norm is taken over.
    pub axis: Vec<isize>,
}

impl Default for MinMaxNorm {
    fn default() -> Self {
        MinMaxNorm { min_value: 0.0, max_value: 1.0, rate: 1.0, axis: vec![0] }
    }
}

impl MinMaxNorm {
    /// A min-max-norm constraint.
    pub fn new(min_value: f64, max_value: f64, rate: f64, axis: impl Into<Vec<isize>>) -> Self {
        MinMaxNorm { min_value, max_value, rate, axis: axis.into() }
    }
}

impl Constraint for MinMaxNorm {
    fn apply(&self, w: &Tensor) -> Result<Tensor> {
        let norms = norms(w, &self.axis)?;
        let desired = norms.clip(self.min_value, self.max_value)?.mul(self.rate)?.add(&norms.mul(1.0 - self.rate)?)?;
        w.mul(&desired.div(&norms.add(EPSILON)?)?)
    }
    fn name(&self) -> &'static str {
        "MinMaxNorm"
    }
}

/// Rescales to unit L2 norm along `axis` (Keras: `UnitNorm(axis=0)`): `w / (epsilon + norms)`.
#[derive(Clone, Debug, PartialEq)]
pub struct UnitNorm {
    /// The axes the norm is taken over.
    pub axis: Vec<isize>,
}

impl Default for UnitNorm {
    fn default() -> Self {
        UnitNorm { axis: vec![0] }
    }
}

impl UnitNorm {
    /// A unit-norm constraint over `axis`.
    pub fn new(axis: impl Into<Vec<isize>>) -> Self {
        UnitNorm { axis: axis.into() }
    }
}

impl Constraint for UnitNorm {
    fn apply(&self, w: &Tensor) -> Result<Tensor> {
        w.div(&norms(w, &self.axis)?.add(EPSILON)?)
    }
    fn name(&self) -> &'static str {
        "UnitNorm"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: &Tensor, want: &[f32]) {
        let got = got.to_vec::<f32>().unwrap();
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn norm_constraints_follow_keras() {
        // Columns of norm 5 (3, 4) and 1 (0, 1) along axis 0.
        let w = Tensor::from([[3.0f32, 0.0], [4.0, 1.0]]);
        close(&MaxNorm::default().apply(&w).unwrap(), &[1.2, 0.0, 1.6, 1.0]);
        close(&UnitNorm::default().apply(&w).unwrap(), &[0.6, 0.0, 0.8, 1.0]);
        let half = MinMaxNorm::new(2.0, 3.0, 0.5, [0]).apply(&w).unwrap();
        // Column 0: desired = 0.5 * 3 + 0.5 * 5 = 4; column 1: 0.5 * 2 + 0.5 * 1 = 1.5.
        close(&half, &[2.4, 0.0, 3.2, 1.5]);
        assert_eq!(MaxNorm::new(1.0, [1]).apply(&w).unwrap().dims(), &[2, 2]);
    }

    #[test]
    fn nonneg_keeps_dtype_and_zeroes_negatives() {
        let w = NonNeg.apply(&Tensor::from([-0.5f64, 2.0])).unwrap();
        assert_eq!(w.dtype(), crate::DType::Float64);
        assert_eq!(w.to_vec::<f64>().unwrap(), [0.0, 2.0]);
    }
}
