//! The random initializers with fixed moments: [`RandomNormal`], [`RandomUniform`], [`TruncatedNormal`]
//! (keras/src/initializers/random_initializers.py, Keras 3).

use super::{check_float, Initializer};
use crate::dtype::DType;
use crate::error::Result;
use crate::random::{self, Key};
use crate::tensor::{Shape, Tensor};

/// Normal draws with mean `mean` and standard deviation `stddev`. Keras:
/// `keras.initializers.RandomNormal(mean=0.0, stddev=0.05)`.
///
/// The values are [`random::normal`]'s, which are Keras's (JAX backend) for the key Keras draws from: give the
/// spec `Key::from_keras_seed(s)` to reproduce `RandomNormal(seed=s)`.
///
/// # Examples
/// ```
/// use purestate::{init, random::Key, StateStore, VariableSpec};
/// let mut state = StateStore::new();
/// let w = state.create(VariableSpec::new(init::RandomNormal::default()).shape([64, 32]).seed(Key::new(1)))?;
/// assert_eq!(w.shape().dims(), &[64, 32]);
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomNormal {
    /// Mean of the draws (default 0).
    pub mean: f64,
    /// Standard deviation of the draws (default 0.05).
    pub stddev: f64,
}

/// Uniform draws in `[minval, maxval)`. Keras: `keras.initializers.RandomUniform(minval=-0.05, maxval=0.05)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomUniform {
    /// Lower bound, included (default -0.05).
    pub minval: f64,
    /// Upper bound, excluded (default 0.05).
    pub maxval: f64,
}

/// Normal draws truncated to two standard deviations around `mean`, not rescaled (so their standard deviation
/// is about 0.88 `stddev`). Keras: `keras.initializers.TruncatedNormal(mean=0.0, stddev=0.05)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TruncatedNormal {
    /// Mean of the draws (default 0).
    pub mean: f64,
    /// Standard deviation of the normal before truncation (default 0.05).
    pub stddev: f64,
}

impl RandomNormal {
    /// Normal draws with these moments.
    pub fn new(mean: f64, stddev: f64) -> Self {
        RandomNormal { mean, stddev }
    }
}

impl RandomUniform {
    /// Uniform draws in `[minval, maxval)`.
    pub fn new(minval: f64, maxval: f64) -> Self {
        RandomUniform { minval, maxval }
    }
}

impl TruncatedNormal {
    /// Truncated normal draws with these moments.
    pub fn new(mean: f64, stddev: f64) -> Self {
        TruncatedNormal { mean, stddev }
    }
}

impl Default for RandomNormal {
    fn default() -> Self {
        RandomNormal::new(0.0, 0.05)
    }
}

impl Default for RandomUniform {
    fn default() -> Self {
        RandomUniform::new(-0.05, 0.05)
    }
}

impl Default for TruncatedNormal {
    fn default() -> Self {
        TruncatedNormal::new(0.0, 0.05)
    }
}

/// # Errors
/// [`Error::UnsupportedDType`](crate::Error::UnsupportedDType) for a non-float dtype;
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a negative or non-finite `stddev`.
impl Initializer for RandomNormal {
    fn initialize(&self, shape: &Shape, dtype: DType, key: Key) -> Result<Tensor> {
        check_float(self.name(), dtype)?;
        random::normal(key, shape, dtype, self.mean, self.stddev)
    }
    fn name(&self) -> &'static str {
        "RandomNormal"
    }
}

/// # Errors
/// [`Error::UnsupportedDType`](crate::Error::UnsupportedDType) for a non-float dtype;
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) when `minval >= maxval`.
impl Initializer for RandomUniform {
    fn initialize(&self, shape: &Shape, dtype: DType, key: Key) -> Result<Tensor> {
        check_float(self.name(), dtype)?;
        random::uniform(key, shape, dtype, self.minval, self.maxval)
    }
    fn name(&self) -> &'static str {
        "RandomUniform"
    }
}

/// # Errors
/// As [`RandomNormal`].
impl Initializer for TruncatedNormal {
    fn initialize(&self, shape: &Shape, dtype: DType, key: Key) -> Result<Tensor> {
        check_float(self.name(), dtype)?;
        random::truncated_normal(key, shape, dtype, self.mean, self.stddev)
    }
    fn name(&self) -> &'static str {
        "TruncatedNormal"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn keras_defaults() {
        assert_eq!(RandomNormal::default(), RandomNormal { mean: 0.0, stddev: 0.05 });
        assert_eq!(RandomUniform::default(), RandomUniform { minval: -0.05, maxval: 0.05 });
        assert_eq!(TruncatedNormal::default(), TruncatedNormal { mean: 0.0, stddev: 0.05 });
    }

    #[test]
    fn refuses_integer_dtypes_and_bad_moments() {
        let (shape, key) = (Shape::from([2]), Key::new(0));
        let err = RandomNormal::default().initialize(&shape, DType::Int32, key).unwrap_err();
        assert!(matches!(err, Error::UnsupportedDType { op: "RandomNormal", dtype: DType::Int32 }));
        let err = RandomUniform::new(1.0, -1.0).initialize(&shape, DType::Float32, key).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }));
        let err = TruncatedNormal::new(0.0, -0.1).initialize(&shape, DType::Float32, key).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { arg: "stddev", .. }));
    }
}
