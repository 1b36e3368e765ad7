//! Regularizers: penalties on a variable's value that are added to the loss (Keras: `keras.regularizers`,
//! keras/src/regularizers/regularizers.py, Keras 3): [`L1`], [`L2`], [`L1L2`].
//!
//! Penalties are computed with the crate's operators, so under `grad::value_and_grad` they are differentiated
//! like the rest of the loss.

use std::fmt;

use crate::error::{Error, Result};
use crate::ops::Axes;
use crate::tensor::Tensor;

/// A penalty on a variable's value, added to the loss (Keras: `Regularizer.__call__`).
pub trait Regularizer: Send + Sync + fmt::Debug {
    /// The penalty, a 0-d tensor of the value's float dtype.
    ///
    /// # Errors
    /// [`Error::UnsupportedDType`] when `value`'s dtype is not a float dtype.
    fn penalty(&self, value: &Tensor) -> Result<Tensor>;

    /// Keras's class name (`"L2"`).
    fn name(&self) -> &'static str;
}

/// `l1 * sum(|x|)` (Keras: `L1(l1=0.01)`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct L1 {
    /// The factor.
    pub l1: f64,
}

/// `l2 * sum(x^2)` (Keras: `L2(l2=0.01)`).
///
/// # Examples
/// ```
/// use purestate::{regularizer::{Regularizer, L2}, Tensor};
/// let p = L2::new(0.5).penalty(&Tensor::from([1.0f32, 2.0]))?;
/// assert_eq!(p.to_f64()?, 2.5);
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct L2 {
    /// The factor.
    pub l2: f64,
}

/// `l1 * sum(|x|) + l2 * sum(x^2)` (Keras: `L1L2(l1=0.0, l2=0.0)`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct L1L2 {
    /// The L1 factor.
    pub l1: f64,
    /// The L2 factor.
    pub l2: f64,
}

impl L1 {
    /// An L1 penalty with this factor.
    pub fn new(l1: f64) -> Self {
        L1 { l1 }
    }
}

impl L2 {
    /// An L2 penalty with this factor.
    pub fn new(l2: f64) -> Self {
        L2 { l2 }
    }
}

impl L1L2 {
    /// A combined penalty.
    pub fn new(l1: f64, l2: f64) -> Self {
        L1L2 { l1, l2 }
    }
}

impl Default for L1 {
    fn default() -> Self {
        L1 { l1: 0.01 }
    }
}

impl Default for L2 {
    fn default() -> Self {
        L2 { l2: 0.01 }
    }
}

fn check_float(op: &'static str, x: &Tensor) -> Result<()> {
    if x.dtype().is_float() {
        Ok(())
    } else {
        Err(Error::UnsupportedDType { op, dtype: x.dtype() })
    }
}

fn l1_term(factor: f64, x: &Tensor) -> Result<Tensor> {
    x.abs()?.sum(Axes::All, false)?.mul(factor)
}

fn l2_term(factor: f64, x: &Tensor) -> Result<Tensor> {
    x.square()?.sum(Axes::All, false)?.mul(factor)
}

impl Regularizer for L1 {
    fn penalty(&self, x: &Tensor) -> Result<Tensor> {
        check_float("L1", x)?;
        l1_term(self.l1, x)
    }
    fn name(&self) -> &'static str {
        "L1"
    }
}

impl Regularizer for L2 {
    fn penalty(&self, x: &Tensor) -> Result<Tensor> {
        check_float("L2", x)?;
        l2_term(self.l2, x)
    }
    fn name(&self) -> &'static str {
        "L2"
    }
}

impl Regularizer for L1L2 {
    fn penalty(&self, x: &Tensor) -> Result<Tensor> {
        check_float("L1L2", x)?;
        let mut total = Tensor::zeros([], x.dtype());
        if self.l1 != 0.0 {
            total = total.add(&l1_term(self.l1, x)?)?;
        }
        if self.l2 != 0.0 {
            total = total.add(&l2_term(self.l2, x)?)?;
        }
        Ok(total)
    }
    fn name(&self) -> &'static str {
        "L1L2"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalties_follow_keras() {
        let x = Tensor::from([[1.0f32, -2.0], [3.0, -4.0]]);
        assert!((L1::default().penalty(&x).unwrap().to_f64().unwrap() - 0.1).abs() < 1e-7);
        assert!((L2::default().penalty(&x).unwrap().to_f64().unwrap() - 0.3).abs() < 1e-7);
        let both = L1L2::new(0.1, 0.01).penalty(&x).unwrap();
        assert_eq!(both.dtype(), crate::DType::Float32);
        assert_eq!(both.ndim(), 0);
        assert!((both.to_f64().unwrap() - 1.3).abs() < 1e-6);
        assert_eq!(L1L2::default().penalty(&x).unwrap().to_f64().unwrap(), 0.0);
        assert!(matches!(L2::default().penalty(&Tensor::from([1i32])), Err(Error::UnsupportedDType { .. })));
    }
}
