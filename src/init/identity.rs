//! [`Identity`]: `gain` times the identity matrix (keras/src/initializers/constant_initializers.py, Keras 3).

use super::{check_float, Initializer};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::random::Key;
use crate::tensor::{Shape, Tensor};

/// `gain` on the main diagonal of a 2-D shape (which may be rectangular), zero elsewhere. Keras:
/// `keras.initializers.Identity(gain=1.0)`.
///
/// # Examples
/// ```
/// use purestate::{init::{Identity, Initializer}, random::Key, DType, Shape};
/// let eye = Identity::new(2.0).initialize(&Shape::from([2, 3]), DType::Float32, Key::new(0))?;
/// assert_eq!(eye.to_vec::<f32>()?, [2.0, 0.0, 0.0, 0.0, 2.0, 0.0]);
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Identity {
    /// The diagonal's value (default 1).
    pub gain: f64,
}

impl Identity {
    /// `gain` times the identity.
    pub fn new(gain: f64) -> Self {
        Identity { gain }
    }
}

impl Default for Identity {
    fn default() -> Self {
        Identity::new(1.0)
    }
}

/// # Errors
/// [`Error::UnsupportedDType`] for a non-float dtype; [`Error::InvalidShape`] for a shape that is not 2-D or
/// whose size overflows.
impl Initializer for Identity {
    fn initialize(&self, shape: &Shape, dtype: DType, _key: Key) -> Result<Tensor> {
        check_float(self.name(), dtype)?;
        let &[_, cols] = shape.dims() else {
            return Err(Error::InvalidShape {
                op: "Identity",
                shape: shape.clone(),
                reason: "an identity matrix needs a 2-D shape".into(),
            });
        };
        if shape.dims().iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).is_none_or(|n| n > isize::MAX as usize) {
            return Err(Error::InvalidShape {
                op: "Identity",
                shape: shape.clone(),
                reason: "the number of elements overflows".into(),
            });
        }
        let gain = self.gain;
        Ok(Tensor::from_fn(shape, dtype, |i| if i / cols == i % cols { gain } else { 0.0 }))
    }
    fn name(&self) -> &'static str {
        "Identity"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tall_identity_and_refusals() {
        let key = Key::new(0);
        let t = Identity::default().initialize(&Shape::from([3, 2]), DType::Float64, key).unwrap();
        assert_eq!(t.to_vec::<f64>().unwrap(), [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
        let err = Identity::default().initialize(&Shape::from([2, 2, 2]), DType::Float32, key).unwrap_err();
        assert!(matches!(err, Error::InvalidShape { op: "Identity", .. }));
        let err = Identity::default().initialize(&Shape::from([2, 2]), DType::Int32, key).unwrap_err();
        assert!(matches!(err, Error::UnsupportedDType { op: "Identity", .. }));
    }
}
