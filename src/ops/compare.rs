//! Elementwise comparisons giving bool tensors, under the `keras.ops` names (`equal`, `not_equal`, `less`,
//! `less_equal`, `greater`, `greater_equal`). `PartialEq` on `Tensor` is not implemented for elements:
//! `==` keeps Rust's meaning, use [`Tensor::bit_eq`] to compare whole tensors.

use super::{binary, Arg, BinaryOp, DEFAULT_FLOATX};
use crate::dtype::DType;
use crate::error::Result;
use crate::kernels;
use crate::tensor::{with_dtype, Tensor};

/// Compares `a` and `b` (both of dtype `dtype`, broadcasting together) elementwise. NaN compares unequal to
/// everything, itself included, as IEEE and numpy say.
// `with_dtype!` instantiates the comparisons for bool too, where clippy would prefer `!x & y`.
#[allow(clippy::bool_comparison)]
pub(super) fn compare(op: BinaryOp, dtype: DType, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    with_dtype!(dtype, T => {
        let av = a.array::<T>()?.view();
        let bv = b.array::<T>()?.view();
        let name = op.name();
        let out = match op {
            BinaryOp::Equal => kernels::zip_map(name, &av, &bv, |x: T, y: T| x == y),
            BinaryOp::NotEqual => kernels::zip_map(name, &av, &bv, |x: T, y: T| x != y),
            BinaryOp::Less => kernels::zip_map(name, &av, &bv, |x: T, y: T| x < y),
            BinaryOp::LessEqual => kernels::zip_map(name, &av, &bv, |x: T, y: T| x <= y),
            BinaryOp::Greater => kernels::zip_map(name, &av, &bv, |x: T, y: T| x > y),
            _ => kernels::zip_map(name, &av, &bv, |x: T, y: T| x >= y),
        }?;
        Ok(Tensor::from(out))
    })
}

macro_rules! compare_methods {
    ($($(#[$doc:meta])* $name:ident => $op:ident;)*) => {
        impl Tensor {
            $(
                $(#[$doc])*
                ///
                /// The operands are promoted together first (an int32 tensor against 2.5 compares as float32);
                /// the result is a bool tensor of the broadcast shape.
                ///
                /// # Errors
                /// [`crate::Error::Broadcast`] when the shapes do not broadcast.
                pub fn $name<'a>(&self, rhs: impl Into<Arg<'a>>) -> Result<Tensor> {
                    binary(BinaryOp::$op, self, rhs, DEFAULT_FLOATX)
                }
            )*
        }
    };
}

compare_methods! {
    /// `self == rhs` elementwise (`keras.ops.equal`).
    ///
    /// ```
    /// use purestate::Tensor;
    /// let t = Tensor::from([1.0f32, f32::NAN, 3.0]);
    /// assert_eq!(t.equal(&t)?.to_vec::<bool>()?, vec![true, false, true]);
    /// # Ok::<(), purestate::Error>(())
    /// ```
    equal => Equal;
    /// `self != rhs` elementwise (`keras.ops.not_equal`).
    not_equal => NotEqual;
    /// `self < rhs` elementwise (`keras.ops.less`).
    less => Less;
    /// `self <= rhs` elementwise (`keras.ops.less_equal`).
    less_equal => LessEqual;
    /// `self > rhs` elementwise (`keras.ops.greater`).
    greater => Greater;
    /// `self >= rhs` elementwise (`keras.ops.greater_equal`).
    greater_equal => GreaterEqual;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_promote_then_compare() {
        let i = Tensor::from([1i32, 2, 3]);
        assert_eq!(i.less(2.5).unwrap().to_vec::<bool>().unwrap(), vec![true, true, false]);
        assert_eq!(i.greater_equal(2).unwrap().to_vec::<bool>().unwrap(), vec![false, true, true]);
        let u = Tensor::from([255u8]);
        assert_eq!(u.greater(Tensor::from([-1i8])).unwrap().to_vec::<bool>().unwrap(), vec![true]);
        let err = i.equal(Tensor::from([1i32, 2])).unwrap_err();
        assert!(matches!(err, crate::Error::Broadcast { op: "equal", .. }));
    }
}
