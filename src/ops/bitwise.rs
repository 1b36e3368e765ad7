//! Bitwise and logical operations: `bitwise_and`, `bitwise_or`, `bitwise_xor`, `invert` (bitwise on
//! integers, logical on bool, an error on floats) and `logical_and`, `logical_or`, `logical_xor`,
//! `logical_not` (any dtype, nonzero is true).
//!
//! Departure from Keras: a Keras variable's `&`, `|`, `^` are logical whatever the dtype; here they follow
//! Rust and numpy (bitwise on integers) and refuse floats, and the logical forms have their own names.

use super::num::Bits;
use super::{binary, unary, with_int, Arg, BinaryOp, UnaryOp, DEFAULT_FLOATX};
use crate::dtype::DType;
use crate::error::Result;
use crate::kernels;
use crate::tensor::{Element, Tensor};

/// Bitwise or logical `op` over `a` and `b` (both of dtype `dtype`, which is an integer or bool).
pub(super) fn bitwise(op: BinaryOp, dtype: DType, a: Tensor, b: Tensor) -> Result<Tensor> {
    with_int!(dtype, T => zip_bits::<T>(op, &a, &b), _ => zip_bits::<bool>(op, &a, &b))
}

fn zip_bits<T: Bits>(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (av, bv) = (a.array::<T>()?.view(), b.array::<T>()?.view());
    let name = op.name();
    let out = match op {
        BinaryOp::BitwiseAnd | BinaryOp::LogicalAnd => kernels::zip_map(name, &av, &bv, T::and),
        BinaryOp::BitwiseOr | BinaryOp::LogicalOr => kernels::zip_map(name, &av, &bv, T::or),
        _ => kernels::zip_map(name, &av, &bv, T::xor),
    }?;
    Ok(Tensor::from(out))
}

macro_rules! bit_methods {
    ($($(#[$doc:meta])* $name:ident => $op:ident;)*) => {
        impl Tensor {
            $(
                $(#[$doc])*
                ///
                /// # Errors
                /// [`crate::Error::Broadcast`] when the shapes do not broadcast; [`crate::Error::UnsupportedDType`]
                /// for the bitwise forms on floats.
                pub fn $name<'a>(&self, rhs: impl Into<Arg<'a>>) -> Result<Tensor> {
                    binary(BinaryOp::$op, self, rhs, DEFAULT_FLOATX)
                }
            )*
        }
    };
}

bit_methods! {
    /// `self & rhs` (`keras.ops.bitwise_and`): bitwise on integers, logical on bool, an error on floats.
    ///
    /// ```
    /// use purestate::{Error, Tensor};
    /// assert_eq!(Tensor::from([0b1100u8]).bitand(0b1010)?.to_vec::<u8>()?, vec![0b1000]);
    /// assert!(matches!(Tensor::from([1.0f32]).bitand(1), Err(Error::UnsupportedDType { .. })));
    /// # Ok::<(), purestate::Error>(())
    /// ```
    bitand => BitwiseAnd;
    /// `self | rhs` (`keras.ops.bitwise_or`): bitwise on integers, logical on bool, an error on floats.
    bitor => BitwiseOr;
    /// `self ^ rhs` (`keras.ops.bitwise_xor`): bitwise on integers, logical on bool, an error on floats.
    bitxor => BitwiseXor;
    /// Elementwise logical and of any dtypes, nonzero (and NaN) being true (`keras.ops.logical_and`).
    logical_and => LogicalAnd;
    /// Elementwise logical or of any dtypes (`keras.ops.logical_or`).
    logical_or => LogicalOr;
    /// Elementwise logical xor of any dtypes (`keras.ops.logical_xor`).
    logical_xor => LogicalXor;
}

impl Tensor {
    /// `~self` (`keras.ops.bitwise_invert`, Python `__invert__`): bitwise not on integers, logical not on
    /// bool.
    ///
    /// # Errors
    /// [`crate::Error::UnsupportedDType`] on floats.
    pub fn invert(&self) -> Result<Tensor> {
        unary(UnaryOp::Invert, self, DEFAULT_FLOATX)
    }

    /// Elementwise logical not of any dtype: true where the element is zero (`keras.ops.logical_not`).
    ///
    /// # Errors
    /// None in practice; fallible like every operation.
    pub fn logical_not(&self) -> Result<Tensor> {
        unary(UnaryOp::LogicalNot, self, DEFAULT_FLOATX)
    }
}

/// Bitwise or logical not over a tensor of an integer or bool dtype.
pub(super) fn invert(t: Tensor) -> Result<Tensor> {
    with_int!(t.dtype(), T => not::<T>(t), _ => not::<bool>(t))
}

fn not<T: Bits + Element>(mut t: Tensor) -> Result<Tensor> {
    if t.is_unique() {
        kernels::map_inplace(t.array_mut::<T>()?, T::not);
        return Ok(t);
    }
    Ok(Tensor::from(kernels::map(t.array::<T>()?, T::not)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn bitwise_on_ints_logical_on_bool_error_on_floats() {
        let i = Tensor::from([5i32, -1]);
        assert_eq!(i.bitxor(1).unwrap().to_vec::<i32>().unwrap(), vec![4, -2]);
        assert_eq!(i.invert().unwrap().to_vec::<i32>().unwrap(), vec![-6, 0]);
        let b = Tensor::from([true, false]);
        assert_eq!(b.bitor(false).unwrap().to_vec::<bool>().unwrap(), vec![true, false]);
        assert_eq!(b.invert().unwrap().to_vec::<bool>().unwrap(), vec![false, true]);
        assert_eq!(b.bitand(Tensor::from([3i8, 3])).unwrap().to_vec::<i8>().unwrap(), vec![1, 0]);
        let f = Tensor::from([1.5f32, 0.0]);
        assert!(matches!(f.bitor(&f), Err(Error::UnsupportedDType { op: "bitwise_or", .. })));
        assert!(matches!(f.invert(), Err(Error::UnsupportedDType { op: "invert", .. })));
        assert!(matches!(i.bitand(1.5), Err(Error::UnsupportedDType { dtype: DType::Float32, .. })));
        assert_eq!(f.logical_and(&f).unwrap().to_vec::<bool>().unwrap(), vec![true, false]);
        assert_eq!(f.logical_not().unwrap().to_vec::<bool>().unwrap(), vec![false, true]);
    }
}
