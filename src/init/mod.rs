//! Initializers: the [`Initializer`] trait a [`VariableSpec`](crate::VariableSpec) calls with the variable's
//! shape, dtype and key, and the constant initializers [`Zeros`], [`Ones`], [`Constant`].

use std::fmt;

use crate::dtype::DType;
use crate::error::Result;
use crate::random::Key;
use crate::tensor::{Shape, Tensor};

/// Computes a variable's initial value from its shape and dtype (Keras: `Initializer.__call__(shape, dtype)`).
///
/// `key` is the variable's random key: the spec's seed when it has one, otherwise one derived from the store's
/// seed and the variable's creation index, so an unseeded initializer is still deterministic.
pub trait Initializer: Send + Sync + fmt::Debug {
    /// The initial value: a tensor of exactly `shape` and `dtype`.
    ///
    /// # Errors
    /// An initializer that cannot produce `dtype` (a random normal of integers, say) or `shape` (an identity
    /// that is not 2-D) returns [`Error::UnsupportedDType`](crate::Error::UnsupportedDType) or
    /// [`Error::InvalidShape`](crate::Error::InvalidShape).
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
