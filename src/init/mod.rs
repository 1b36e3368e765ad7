//! Initializers: the [`Initializer`] trait a [`VariableSpec`](crate::VariableSpec) calls with the variable's
//! shape, dtype and key, and Keras 3's initializers with Keras's defaults and formulas.
//!
//! | initializer | Keras | draws |
//! | --- | --- | --- |
//! | [`Zeros`], [`Ones`], [`Constant`] | `Zeros`, `Ones`, `Constant(0.0)` | none |
//! | [`RandomNormal`] | `RandomNormal(mean=0.0, stddev=0.05)` | normal |
//! | [`RandomUniform`] | `RandomUniform(minval=-0.05, maxval=0.05)` | uniform |
//! | [`TruncatedNormal`] | `TruncatedNormal(mean=0.0, stddev=0.05)` | normal within two standard deviations |
//! | [`VarianceScaling`] | `VarianceScaling(scale=1.0, mode="fan_in", distribution="truncated_normal")` | `scale / n` |
//! | [`GlorotUniform`], [`GlorotNormal`] | `GlorotUniform`, `GlorotNormal` | scale 1, fan_avg |
//! | [`HeUniform`], [`HeNormal`] | `HeUniform`, `HeNormal` | scale 2, fan_in |
//! | [`LecunUniform`], [`LecunNormal`] | `LecunUniform`, `LecunNormal` | scale 1, fan_in |
//! | [`Orthogonal`] | `Orthogonal(gain=1.0)` | QR of a normal matrix |
//! | [`Identity`] | `Identity(gain=1.0)` | none |
//!
//! Random initializers draw through [`random`](crate::random), which follows JAX: given the key
//! [`Key::from_keras_seed(s)`](Key::from_keras_seed), they draw what Keras 3 on the JAX backend draws for
//! `seed=s` (bit for bit for the uniform ones and in float64/float16/bfloat16, within a few float32 ulps for
//! the normal ones; see `tests/integration/init.rs`). Every initializer refuses a non-float dtype (except the
//! constants) with [`Error::UnsupportedDType`].

mod identity;
mod orthogonal;
mod random;
mod variance_scaling;

use std::fmt;

pub use identity::Identity;
pub use orthogonal::Orthogonal;
pub use random::{RandomNormal, RandomUniform, TruncatedNormal};
pub use variance_scaling::{
    compute_fans, Distribution, FanMode, GlorotNormal, GlorotUniform, HeNormal, HeUniform, LecunNormal, LecunUniform,
    VarianceScaling, TRUNCATED_NORMAL_STDDEV,
};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::random::Key;
use crate::tensor::{Shape, Tensor};

/// Computes a variable's initial value from its shape and dtype (Keras: `Initializer.__call__(shape, dtype)`).
///
/// `key` is the variable's random key: the spec's seed when it has one, otherwise one derived from the store's
/// seed and the variable's creation index, so an unseeded initializer is still deterministic.
pub trait Initializer: Send + Sync + fmt::Debug {
    /// The initial value: a tensor of exactly `shape`, in `dtype`. A value of another dtype is cast to `dtype`
    /// by [`StateStore::create`](crate::StateStore::create), as Keras converts it
    /// (`convert_to_tensor(value, dtype=self.dtype)`); another shape is an [`Error::InvalidSpec`] there.
    ///
    /// # Errors
    /// An initializer that cannot produce `dtype` (a random normal of integers, say) or `shape` (an identity
    /// that is not 2-D) returns [`Error::UnsupportedDType`] or
    /// [`Error::InvalidShape`].
    fn initialize(&self, shape: &Shape, dtype: DType, key: Key) -> Result<Tensor>;

    /// Keras's class name of the initializer (`"GlorotUniform"`), used in metadata and messages.
    fn name(&self) -> &'static str;
}

/// All zeros (`false` for bool). Keras: `keras.initializers.Zeros`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Zeros;

/// All ones (`true` for bool). Keras: `keras.initializers.Ones`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ones;

/// Every element `value`, cast to the dtype. Keras: `keras.initializers.Constant(value=0.0)`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Constant {
    /// The value of every element.
    pub value: f64,
}

impl Constant {
    /// Every element `value`.
    pub fn new(value: f64) -> Self {
        Constant { value }
    }
}

impl Initializer for Zeros {
    fn initialize(&self, shape: &Shape, dtype: DType, _key: Key) -> Result<Tensor> {
        Ok(Tensor::zeros(shape, dtype))
    }
    fn name(&self) -> &'static str {
        "Zeros"
    }
}

impl Initializer for Ones {
    fn initialize(&self, shape: &Shape, dtype: DType, _key: Key) -> Result<Tensor> {
        Ok(Tensor::ones(shape, dtype))
    }
    fn name(&self) -> &'static str {
        "Ones"
    }
}

impl Initializer for Constant {
    fn initialize(&self, shape: &Shape, dtype: DType, _key: Key) -> Result<Tensor> {
        Ok(Tensor::full(shape, dtype, self.value))
    }
    fn name(&self) -> &'static str {
        "Constant"
    }
}

/// [`Error::UnsupportedDType`] unless `dtype` is a float dtype.
fn check_float(op: &'static str, dtype: DType) -> Result<()> {
    if dtype.is_float() {
        Ok(())
    } else {
        Err(Error::UnsupportedDType { op, dtype })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_fill_shape_and_dtype() {
        let key = Key::new(0);
        let t = Constant::new(2.5).initialize(&Shape::from([2, 2]), DType::Float16, key).unwrap();
        assert_eq!(t.dtype(), DType::Float16);
        assert_eq!(t.to_f64_vec(), vec![2.5; 4]);
        assert_eq!(Zeros.initialize(&Shape::from([3]), DType::Int8, key).unwrap().to_vec::<i8>().unwrap(), [0; 3]);
        assert_eq!(Ones.initialize(&Shape::scalar(), DType::Bool, key).unwrap().to_vec::<bool>().unwrap(), [true]);
    }
}
