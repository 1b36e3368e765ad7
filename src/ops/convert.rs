//! Conversions of 0-d tensors to Rust scalars: Python's `__bool__`, `__float__` and `__int__`.
//!
//! Like Keras and numpy 2, only a 0-d tensor converts; any other shape, `(1,)` included, is
//! [`Error::NotScalar`]. Departure: Keras refuses `bool()` on every variable; here [`Tensor::to_bool`] of a 0-d
//! tensor works (true when nonzero), as numpy's `bool(array)` does.

use crate::error::{Error, Result};
use crate::tensor::{with_array, Scalar, Tensor};

impl Tensor {
    /// The single element of a 0-d tensor as a [`Scalar`] (exact: no rounding).
    ///
    /// # Errors
    /// [`Error::NotScalar`] when the tensor is not 0-d.
    pub fn to_scalar(&self) -> Result<Scalar> {
        self.scalar_value("to_scalar")
    }

    /// `bool(t)`: true when the 0-d tensor's element is nonzero (NaN is true, as in Python).
    ///
    /// # Errors
    /// [`Error::NotScalar`] when the tensor is not 0-d.
    ///
    /// # Examples
    /// ```
    /// use purestate::{Error, Tensor};
    /// assert!(Tensor::from(true).to_bool()?);
    /// assert!(!Tensor::from(0.0f32).to_bool()?);
    /// let err = Tensor::from([true]).to_bool().unwrap_err();
    /// assert!(matches!(err, Error::NotScalar { .. }));
    /// assert_eq!(err.to_string(), "to_bool: only a 0-d tensor converts to a scalar, got shape (1,)");
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn to_bool(&self) -> Result<bool> {
        Ok(match self.scalar_value("to_bool")? {
            Scalar::Bool(b) => b,
            Scalar::I64(v) => v != 0,
            Scalar::U64(v) => v != 0,
            Scalar::F64(v) => v != 0.0,
        })
    }

    /// `float(t)`: the 0-d tensor's element as `f64` (64-bit integers beyond 2^53 round to nearest).
    ///
    /// # Errors
    /// [`Error::NotScalar`] when the tensor is not 0-d.
    pub fn to_f64(&self) -> Result<f64> {
        Ok(self.scalar_value("to_f64")?.to_f64())
    }

    /// `int(t)`: the 0-d tensor's element as `i64`, floats truncated toward zero.
    ///
    /// # Errors
    /// [`Error::NotScalar`] when the tensor is not 0-d; [`Error::InvalidArgument`] for NaN, an infinity, or a
    /// value outside `i64` (Python raises `ValueError` or `OverflowError` there).
    ///
    /// # Examples
    /// ```
    /// use purestate::Tensor;
    /// assert_eq!(Tensor::from(-2.7f32).to_i64()?, -2);
    /// assert!(Tensor::from(f32::NAN).to_i64().is_err());
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn to_i64(&self) -> Result<i64> {
        const OP: &str = "to_i64";
        let refuse = |reason: String| Error::InvalidArgument { op: OP, arg: "self", reason };
        match self.scalar_value(OP)? {
            Scalar::Bool(b) => Ok(i64::from(b)),
            Scalar::I64(v) => Ok(v),
            Scalar::U64(v) => i64::try_from(v).map_err(|_| refuse(format!("{v} does not fit int64"))),
            Scalar::F64(v) if v.is_nan() => Err(refuse("cannot convert NaN to an integer".into())),
            Scalar::F64(v) => {
                let t = v.trunc();
                // i64::MIN is exactly representable; 2^63 is the first float past i64::MAX.
                if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&t) {
                    Ok(t as i64)
                } else {
                    Err(refuse(format!("{v} does not fit int64")))
                }
            }
        }
    }

    fn scalar_value(&self, op: &'static str) -> Result<Scalar> {
        if self.ndim() != 0 {
            return Err(Error::NotScalar { op, shape: self.shape() });
        }
        Ok(with_array!(self.data(), a => a.iter().next().map(|x| crate::tensor::Element::to_scalar(*x)))
            .expect("a 0-d tensor has one element"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_d_only() {
        assert_eq!(Tensor::from(3u64).to_f64().unwrap(), 3.0);
        assert_eq!(Tensor::from(u64::MAX).to_scalar().unwrap(), Scalar::U64(u64::MAX));
        assert!(matches!(Tensor::from(u64::MAX).to_i64(), Err(Error::InvalidArgument { .. })));
        assert!(matches!(Tensor::from(f64::INFINITY).to_i64(), Err(Error::InvalidArgument { .. })));
        assert!(matches!(Tensor::zeros([2, 2], crate::DType::Int32).to_f64(), Err(Error::NotScalar { .. })));
        assert!(Tensor::from(f32::NAN).to_bool().unwrap());
    }
}
