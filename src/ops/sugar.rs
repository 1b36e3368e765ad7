//! `std::ops` sugar: `+ - * / % & | ^` between tensors (borrowed or owned) and with Rust scalars on either
//! side, unary `-` and `!`, and the compound assignments `+= -= *= /= %= &= |= ^=`.
//!
//! Each operator calls the fallible function it stands for and panics with that function's message on
//! error (as `ndarray` does for shape mismatches); use the methods (`a.add(&b)?`) to handle errors.
//! Owned operands (`a + b`, `-t`) lend their buffer to the result when nothing else shares it. Compound
//! assignments are [`Tensor::assign_binary`]: they keep the left operand's dtype and shape and write in place.
//! Scalar operands of the operators are `f64`, `i64` and `bool` only, so that literals infer (`&t * 2.0`,
//! `&t + 1`); the methods take every Rust number type (`t.mul(lr)?` with `lr: f32`), and all are weak alike.
//! `!t` is [`Tensor::invert`] (bitwise on integers, logical on bool). `%` is Python's `mod`; there is no
//! operator for `//`: use [`Tensor::floor_div`].
//!
//! ```
//! use purestate::Tensor;
//! let x = Tensor::from([1.0f32, 2.0, 3.0]);
//! let y = &x * 2.0 + 1.0;                 // weak scalars keep float32
//! let z = 10.0 - &y;
//! let mut w = z.clone();
//! w -= &x;                                // in place
//! assert_eq!(w.to_vec::<f32>()?, vec![6.0, 3.0, 0.0]);
//! assert_eq!((-&x).to_vec::<f32>()?, vec![-1.0, -2.0, -3.0]);
//! # Ok::<(), purestate::Error>(())
//! ```
//!
//! ```should_panic
//! use purestate::Tensor;
//! let _ = &Tensor::from([1.0f32, 2.0]) + &Tensor::from([1.0f32, 2.0, 3.0]); // add: shapes (2,) and (3,) do not broadcast
//! ```

use std::ops::{
    Add, AddAssign, BitAnd, BitAndAssign, BitOr, BitOrAssign, BitXor, BitXorAssign, Div, DivAssign, Mul, MulAssign,
    Neg, Not, Rem, RemAssign, Sub, SubAssign,
};

use super::{binary, unary, BinaryOp, UnaryOp, DEFAULT_FLOATX};
use crate::error::Result;
use crate::tensor::Tensor;

fn or_panic<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

macro_rules! binop {
    ($Trait:ident, $method:ident, $op:ident) => {
        impl $Trait<&Tensor> for &Tensor {
            type Output = Tensor;
            fn $method(self, rhs: &Tensor) -> Tensor {
                or_panic(binary(BinaryOp::$op, self, rhs, DEFAULT_FLOATX))
            }
        }
        impl $Trait<Tensor> for &Tensor {
            type Output = Tensor;
            fn $method(self, rhs: Tensor) -> Tensor {
                or_panic(binary(BinaryOp::$op, self, rhs, DEFAULT_FLOATX))
            }
        }
        impl $Trait<&Tensor> for Tensor {
            type Output = Tensor;
            fn $method(self, rhs: &Tensor) -> Tensor {
                or_panic(binary(BinaryOp::$op, self, rhs, DEFAULT_FLOATX))
            }
        }
        impl $Trait<Tensor> for Tensor {
            type Output = Tensor;
            fn $method(self, rhs: Tensor) -> Tensor {
                or_panic(binary(BinaryOp::$op, self, rhs, DEFAULT_FLOATX))
            }
        }
        binop!(@scalars $Trait, $method, $op; bool, i64, f64);
    };
    (@scalars $Trait:ident, $method:ident, $op:ident; $($s:ty),*) => {$(
        impl $Trait<$s> for &Tensor {
            type Output = Tensor;
            fn $method(self, rhs: $s) -> Tensor {
                or_panic(binary(BinaryOp::$op, self, rhs, DEFAULT_FLOATX))
            }
        }
        impl $Trait<$s> for Tensor {
            type Output = Tensor;
            fn $method(self, rhs: $s) -> Tensor {
                or_panic(binary(BinaryOp::$op, self, rhs, DEFAULT_FLOATX))
            }
        }
        impl $Trait<&Tensor> for $s {
            type Output = Tensor;
            fn $method(self, rhs: &Tensor) -> Tensor {
                or_panic(binary(BinaryOp::$op, self, rhs, DEFAULT_FLOATX))
            }
        }
        impl $Trait<Tensor> for $s {
            type Output = Tensor;
            fn $method(self, rhs: Tensor) -> Tensor {
                or_panic(binary(BinaryOp::$op, self, rhs, DEFAULT_FLOATX))
            }
        }
    )*};
}

binop!(Add, add, Add);
binop!(Sub, sub, Subtract);
binop!(Mul, mul, Multiply);
binop!(Div, div, Divide);
binop!(Rem, rem, Mod);
binop!(BitAnd, bitand, BitwiseAnd);
binop!(BitOr, bitor, BitwiseOr);
binop!(BitXor, bitxor, BitwiseXor);

macro_rules! assignop {
    ($Trait:ident, $method:ident, $op:ident) => {
        impl $Trait<&Tensor> for Tensor {
            fn $method(&mut self, rhs: &Tensor) {
                or_panic(self.assign_binary(BinaryOp::$op, rhs))
            }
        }
        impl $Trait<Tensor> for Tensor {
            fn $method(&mut self, rhs: Tensor) {
                or_panic(self.assign_binary(BinaryOp::$op, rhs))
            }
        }
        assignop!(@scalars $Trait, $method, $op; bool, i64, f64);
    };
    (@scalars $Trait:ident, $method:ident, $op:ident; $($s:ty),*) => {$(
        impl $Trait<$s> for Tensor {
            fn $method(&mut self, rhs: $s) {
                or_panic(self.assign_binary(BinaryOp::$op, rhs))
            }
        }
    )*};
}

assignop!(AddAssign, add_assign, Add);
assignop!(SubAssign, sub_assign, Subtract);
assignop!(MulAssign, mul_assign, Multiply);
assignop!(DivAssign, div_assign, Divide);
assignop!(RemAssign, rem_assign, Mod);
assignop!(BitAndAssign, bitand_assign, BitwiseAnd);
assignop!(BitOrAssign, bitor_assign, BitwiseOr);
assignop!(BitXorAssign, bitxor_assign, BitwiseXor);

impl Neg for &Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        or_panic(unary(UnaryOp::Negative, self, DEFAULT_FLOATX))
    }
}

impl Neg for Tensor {
    type Output = Tensor;
    fn neg(self) -> Tensor {
        or_panic(unary(UnaryOp::Negative, self, DEFAULT_FLOATX))
    }
}

impl Not for &Tensor {
    type Output = Tensor;
    fn not(self) -> Tensor {
        or_panic(unary(UnaryOp::Invert, self, DEFAULT_FLOATX))
    }
}

impl Not for Tensor {
    type Output = Tensor;
    fn not(self) -> Tensor {
        or_panic(unary(UnaryOp::Invert, self, DEFAULT_FLOATX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    #[test]
    fn scalars_on_either_side_are_weak() {
        let i = Tensor::from([1i32, 2]);
        assert_eq!((&i + 1).dtype(), DType::Int32);
        assert_eq!((1.5 * &i).dtype(), DType::Float32);
        assert_eq!((7 % &i).to_vec::<i32>().unwrap(), vec![0, 1]);
        assert_eq!((&i / 2).to_vec::<f32>().unwrap(), vec![0.5, 1.0]);
        assert_eq!((!&i).to_vec::<i32>().unwrap(), vec![-2, -3]);
        let b = Tensor::from([true, false]);
        assert_eq!((&b ^ true).to_vec::<bool>().unwrap(), vec![false, true]);
        let mut m = Tensor::from([1u8, 2]);
        m |= 4;
        m *= 2;
        assert_eq!(m.to_vec::<u8>().unwrap(), vec![10, 12]);
    }

    #[test]
    fn owned_operands_donate_their_buffer() {
        let a = Tensor::from(vec![1.0f32; 100]);
        let b = Tensor::from(vec![2.0f32; 100]);
        let ptr = a.as_ptr();
        let c = a + &b;
        assert_eq!(c.as_ptr(), ptr);
        let d = -c;
        assert_eq!(d.as_ptr(), ptr);
        assert_eq!(d.to_vec::<f32>().unwrap()[0], -3.0);
    }
}
