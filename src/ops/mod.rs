//! Operators on [`Tensor`]: everything a `keras.Variable` does in an expression.
//!
//! Each operation is one fallible method on `Tensor` (`a.add(&b)?`) that goes through one entry point per
//! family — [`binary`], [`unary`], [`reduce`](fn@reduce), [`matmul`](fn@matmul), [`where_`] — so that a
//! reverse-mode tape can wrap every differentiable op at one place. `std::ops` sugar (`&a + &b`, `&t * 2.0`,
//! `2.0 - &t`, `t += &g`) calls the same functions and panics with their error message, as `ndarray` does.
//!
//! # Operands and promotion
//! Anything that converts into an [`Arg`] is an operand: `&Tensor`, `Tensor` (owned: its buffer may be
//! reused for the result when nothing else shares it, see [`Arg`]), and Rust scalars. Rust numbers are
//! *weak*, like Python's `int` and `float` in Keras: `f32 tensor * 2.0` stays float32, `int32 tensor + 1.5`
//! becomes floatx. Result dtypes follow [`crate::dtype::result_type`] (Keras 3's lattice without the JAX
//! backend's 64-bit narrowing).
//!
//! **floatx.** The methods on `Tensor` use float32 as floatx (Keras's default); the functions of this module
//! take `floatx` explicitly (a store carries its own). It matters only where an operation must invent a
//! float type: an integer tensor with a float scalar, true division of integers, float math on integers.
//!
//! float16 and bfloat16 arithmetic is computed in float32 and rounded once to the 16-bit type, as XLA's CPU
//! backend does.
//!
//! # Deliberate departures from Keras
//! Silent wrong answers are worse than errors, so:
//! - integer `floor_div` and `rem` by zero is [`Error::DivisionByZero`] (Keras on JAX returns arbitrary
//!   values); an integer `pow` with a negative exponent is [`Error::InvalidArgument`] (Keras returns garbage);
//! - a weak integer scalar that does not fit the result dtype (`uint8 tensor + 300`) is
//!   [`Error::InvalidArgument`], as in numpy 2 (Keras on JAX wraps it);
//! - indexing out of range is [`Error::IndexOutOfRange`] (Keras clamps to the last element);
//! - [`Tensor::to_bool`] of a 0-d tensor works (Keras refuses `bool()` on every variable);
//! - `&`, `|`, `^` and `!` are bitwise on integers, logical on bool, and an error on floats (a Keras
//!   variable's `&`, `|`, `^` are logical on any dtype); [`Tensor::logical_and`] and friends are logical on
//!   any dtype;
//! - elementwise comparisons are named methods (`equal`, `less`, ...): `PartialEq` keeps its meaning;
//! - [`Tensor::take`] with an index out of range and [`Tensor::slice`] past the end are errors (JAX fills NaN,
//!   and moves the slice's start back, respectively).
//!
//! # Layer library ops
//! Beyond a variable's operators: indexing by integer tensors ([`Tensor::take`], [`one_hot`]), joining and
//! cutting ([`concatenate`], [`stack`], [`Tensor::split`], [`Tensor::slice`]), activations ([`Tensor::gelu`],
//! [`Tensor::silu`], [`Tensor::softplus`], ...) and statistics ([`Tensor::var`], [`Tensor::moments`],
//! [`Tensor::logsumexp`], ...) and attention's masking ([`Tensor::triu`], [`Tensor::tril`], [`softmax_masked`],
//! [`Tensor::swapaxes`]), each differentiable with a backward written beside its forward.

mod activation;
mod arith;
mod bitwise;
mod compare;
mod conv;
mod convert;
mod erf;
mod expf;
mod gather;
mod join;
mod layer_norm;
mod masked;
mod math;
mod matmul;
mod norm;
pub(crate) mod num;
mod pool;
mod reduce;
mod shape;
mod stats;
mod sugar;
pub(crate) mod trace;

use crate::dtype::{result_type, DType, Operand};
use crate::error::{Error, Result};
use crate::tensor::{with_dtype, Element, Scalar, Tensor};

pub use conv::{conv2d, Conv2d, Padding};
pub use gather::one_hot;
pub use join::{concatenate, stack, Split};
pub use layer_norm::layer_norm;
pub use masked::{large_negative_number, softmax_masked};
pub use math::{unary, UnaryOp};
pub use matmul::matmul;
pub use norm::batch_norm_train;
pub use pool::{avg_pool2d, max_pool2d, Pool2d};
pub use reduce::{reduce, Axes, ReduceOp};

/// The default float dtype used by the `Tensor` methods (Keras's default floatx).
pub const DEFAULT_FLOATX: DType = DType::Float32;

/// One operand of an operation: a borrowed tensor, an owned tensor, or a weakly typed Rust scalar.
///
/// An owned tensor (`Arg::Owned`, from `Tensor`) whose buffer nobody else shares, whose dtype and shape are
/// the result's, is *donated*: the result is written into its buffer instead of a new one (JAX's
/// `donate_argnums`, decided by ownership). `Arg::Scalar` holds a Rust number: integers and floats are weak
/// (Python `int` and `float`), `bool` is a strong bool.
#[derive(Debug)]
pub enum Arg<'a> {
    /// A borrowed tensor.
    Ref(&'a Tensor),
    /// An owned tensor, whose buffer may be reused for the result.
    Owned(Tensor),
    /// A Rust scalar.
    Scalar(Scalar),
}

impl<'a> From<&'a Tensor> for Arg<'a> {
    fn from(t: &'a Tensor) -> Self {
        Arg::Ref(t)
    }
}

impl From<Tensor> for Arg<'_> {
    fn from(t: Tensor) -> Self {
        Arg::Owned(t)
    }
}

impl From<Scalar> for Arg<'_> {
    fn from(s: Scalar) -> Self {
        Arg::Scalar(s)
    }
}

macro_rules! arg_from_scalar {
    ($($t:ty),*) => {$(
        impl From<$t> for Arg<'_> {
            fn from(v: $t) -> Self {
                Arg::Scalar(v.into())
            }
        }
    )*};
}
arg_from_scalar!(bool, i8, i16, i32, i64, u8, u16, u32, u64, f32, f64);

impl<'a> Arg<'a> {
    /// The operand as [`result_type`] sees it.
    pub fn operand(&self) -> Operand {
        match self {
            Arg::Ref(t) => Operand::Tensor(t.dtype()),
            Arg::Owned(t) => Operand::Tensor(t.dtype()),
            Arg::Scalar(Scalar::Bool(_)) => Operand::Tensor(DType::Bool),
            Arg::Scalar(Scalar::I64(_) | Scalar::U64(_)) => Operand::Int,
            Arg::Scalar(Scalar::F64(_)) => Operand::Float,
        }
    }

    /// The operand's shape (`()` for a scalar).
    pub fn dims(&self) -> &[usize] {
        match self {
            Arg::Ref(t) => t.dims(),
            Arg::Owned(t) => t.dims(),
            Arg::Scalar(_) => &[],
        }
    }

    /// True when the operand is a tensor with a trace (recorded on a gradient tape).
    pub(crate) fn is_traced(&self) -> bool {
        match self {
            Arg::Ref(t) => t.trace().is_some(),
            Arg::Owned(t) => t.trace().is_some(),
            Arg::Scalar(_) => false,
        }
    }

    /// The operand's tensor (`None` for a scalar).
    pub(crate) fn tensor(&self) -> Option<&Tensor> {
        trace::tensor_of(self)
    }

    /// The operand without a trace (a borrowed traced tensor becomes an owned O(1) clone).
    pub(crate) fn detach(self) -> Arg<'a> {
        match self {
            Arg::Ref(t) if t.trace().is_some() => Arg::Owned(t.detached()),
            Arg::Owned(t) => Arg::Owned(t.detach()),
            other => other,
        }
    }

    /// The operand as a tensor of `dtype` (O(1) for a tensor that already has it).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an integer scalar outside `dtype`'s range.
    pub fn into_tensor(self, dtype: DType, op: &'static str) -> Result<Tensor> {
        match self {
            Arg::Ref(t) => Ok(t.cast(dtype)),
            Arg::Owned(t) => Ok(if t.dtype() == dtype { t } else { t.cast(dtype) }),
            Arg::Scalar(s) => scalar_tensor(s, dtype, op),
        }
    }
}

impl<'a> Arg<'a> {
    /// As [`Arg::into_tensor`], but a borrowed tensor that already has `dtype` stays borrowed (no clone to
    /// drop on the per-operation path); an owned one stays owned, so that it can be donated.
    pub(crate) fn into_cow(self, dtype: DType, op: &'static str) -> Result<std::borrow::Cow<'a, Tensor>> {
        use std::borrow::Cow;
        match self {
            Arg::Ref(t) if t.dtype() == dtype => Ok(Cow::Borrowed(t)),
            other => other.into_tensor(dtype, op).map(Cow::Owned),
        }
    }
}

/// A 0-d tensor of `dtype` holding `s`, refusing integers that do not fit.
fn scalar_tensor(s: Scalar, dtype: DType, op: &'static str) -> Result<Tensor> {
    with_dtype!(dtype, T => {
        let v = T::from_scalar(s);
        let fits = match s {
            Scalar::I64(_) | Scalar::U64(_) if dtype.is_integer() => v.to_scalar().to_f64() == s.to_f64()
                && match (v.to_scalar(), s) {
                    (Scalar::I64(a), Scalar::I64(b)) => a == b,
                    (Scalar::U64(a), Scalar::U64(b)) => a == b,
                    (Scalar::I64(a), Scalar::U64(b)) => u64::try_from(a) == Ok(b),
                    (Scalar::U64(a), Scalar::I64(b)) => i64::try_from(a) == Ok(b),
                    _ => false,
                },
            _ => true,
        };
        if !fits {
            return Err(Error::InvalidArgument {
                op,
                arg: "scalar",
                reason: format!("{} does not fit {dtype}", fmt_scalar(s)),
            });
        }
        Ok(Tensor::scalar(v))
    })
}

fn fmt_scalar(s: Scalar) -> String {
    match s {
        Scalar::Bool(b) => b.to_string(),
        Scalar::I64(v) => v.to_string(),
        Scalar::U64(v) => v.to_string(),
        Scalar::F64(v) => v.to_string(),
    }
}

/// The binary elementwise operations, each with its Keras name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// `add` (`+`; `or` on bool).
    Add,
    /// `subtract` (`-`; an error on bool).
    Subtract,
    /// `multiply` (`*`; `and` on bool).
    Multiply,
    /// `true_divide` (`/`): integers and bool give floats (floatx).
    Divide,
    /// `floor_divide` (Python `//`, rounding toward negative infinity).
    FloorDivide,
    /// `mod` (Python `%`: the result has the divisor's sign).
    Mod,
    /// `power` (`**`).
    Power,
    /// `maximum` (NaN-propagating).
    Maximum,
    /// `minimum` (NaN-propagating).
    Minimum,
    /// `equal`.
    Equal,
    /// `not_equal`.
    NotEqual,
    /// `less`.
    Less,
    /// `less_equal`.
    LessEqual,
    /// `greater`.
    Greater,
    /// `greater_equal`.
    GreaterEqual,
    /// `bitwise_and` (`&`): integers and bool.
    BitwiseAnd,
    /// `bitwise_or` (`|`): integers and bool.
    BitwiseOr,
    /// `bitwise_xor` (`^`): integers and bool.
    BitwiseXor,
    /// `logical_and`: any dtype, nonzero is true.
    LogicalAnd,
    /// `logical_or`: any dtype, nonzero is true.
    LogicalOr,
    /// `logical_xor`: any dtype, nonzero is true.
    LogicalXor,
}

impl BinaryOp {
    /// The `keras.ops` name.
    pub const fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Subtract => "subtract",
            BinaryOp::Multiply => "multiply",
            BinaryOp::Divide => "divide",
            BinaryOp::FloorDivide => "floor_divide",
            BinaryOp::Mod => "mod",
            BinaryOp::Power => "power",
            BinaryOp::Maximum => "maximum",
            BinaryOp::Minimum => "minimum",
            BinaryOp::Equal => "equal",
            BinaryOp::NotEqual => "not_equal",
            BinaryOp::Less => "less",
            BinaryOp::LessEqual => "less_equal",
            BinaryOp::Greater => "greater",
            BinaryOp::GreaterEqual => "greater_equal",
            BinaryOp::BitwiseAnd => "bitwise_and",
            BinaryOp::BitwiseOr => "bitwise_or",
            BinaryOp::BitwiseXor => "bitwise_xor",
            BinaryOp::LogicalAnd => "logical_and",
            BinaryOp::LogicalOr => "logical_or",
            BinaryOp::LogicalXor => "logical_xor",
        }
    }

    /// The dtype the operands are converted to before the kernel runs, and the result's dtype, for operands
    /// `lhs` and `rhs` under `floatx`.
    ///
    /// # Errors
    /// [`Error::UnsupportedDType`] when the operation refuses the promoted dtype (`subtract` on bool, bitwise
    /// operations on floats).
    pub fn dtypes(self, lhs: Operand, rhs: Operand, floatx: DType) -> Result<(DType, DType)> {
        use BinaryOp::*;
        let promoted = result_type(&[lhs, rhs], floatx);
        let unsupported = |dtype| Err(Error::UnsupportedDType { op: self.name(), dtype });
        match self {
            Add | Multiply | Maximum | Minimum => Ok((promoted, promoted)),
            Subtract if promoted.is_bool() => unsupported(promoted),
            Subtract => Ok((promoted, promoted)),
            Divide => {
                let d = result_type(&[lhs, rhs, Operand::Float], floatx);
                Ok((d, d))
            }
            FloorDivide | Mod | Power => {
                let d = if promoted.is_bool() { DType::Int32 } else { promoted };
                Ok((d, d))
            }
            Equal | NotEqual | Less | LessEqual | Greater | GreaterEqual => Ok((promoted, DType::Bool)),
            BitwiseAnd | BitwiseOr | BitwiseXor if promoted.is_float() => unsupported(promoted),
            BitwiseAnd | BitwiseOr | BitwiseXor => Ok((promoted, promoted)),
            LogicalAnd | LogicalOr | LogicalXor => Ok((DType::Bool, DType::Bool)),
        }
    }
}

/// Applies a binary elementwise operation with broadcasting: the one entry point of every binary operator.
///
/// Operands are promoted with [`BinaryOp::dtypes`] under `floatx`, converted, and broadcast together.
/// O(n) in the result's size; parallel from [`crate::kernels::THRESHOLD`] elements. An owned, unshared
/// operand of the result's dtype and shape lends its buffer to the result.
///
/// # Errors
/// [`Error::Broadcast`] when the shapes do not broadcast; [`Error::UnsupportedDType`] when the operation
/// refuses the dtype; [`Error::DivisionByZero`] for an integer `floor_divide` or `mod` by zero;
/// [`Error::InvalidArgument`] for a negative integer exponent or an integer scalar that does not fit.
///
/// # Examples
/// ```
/// use purestate::{ops::{binary, BinaryOp}, DType, Tensor};
/// let a = Tensor::from([7i32, -7]);
/// let q = binary(BinaryOp::FloorDivide, &a, 2, DType::Float32)?;
/// assert_eq!(q.to_vec::<i32>()?, vec![3, -4]);
/// let h = binary(BinaryOp::Divide, &a, 2, DType::Float16)?; // true division of ints gives floatx
/// assert_eq!(h.dtype(), DType::Float16);
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn binary<'a, 'b>(op: BinaryOp, lhs: impl Into<Arg<'a>>, rhs: impl Into<Arg<'b>>, floatx: DType) -> Result<Tensor> {
    let (lhs, rhs) = (lhs.into(), rhs.into());
    if lhs.is_traced() || rhs.is_traced() {
        return match trace::hooks([lhs.tensor(), rhs.tensor()]) {
            Some(h) => h.binary(op, lhs, rhs, floatx),
            None => binary(op, lhs.detach(), rhs.detach(), floatx),
        };
    }
    let (compute, _) = op.dtypes(lhs.operand(), rhs.operand(), floatx)?;
    crate::kernels::binary::broadcast_dim(op.name(), lhs.dims(), rhs.dims())?;
    let a = lhs.into_cow(compute, op.name())?;
    let b = rhs.into_cow(compute, op.name())?;
    match op {
        BinaryOp::Add
        | BinaryOp::Subtract
        | BinaryOp::Multiply
        | BinaryOp::Divide
        | BinaryOp::FloorDivide
        | BinaryOp::Mod
        | BinaryOp::Power
        | BinaryOp::Maximum
        | BinaryOp::Minimum => arith::arith(op, compute, a, b),
        BinaryOp::Equal
        | BinaryOp::NotEqual
        | BinaryOp::Less
        | BinaryOp::LessEqual
        | BinaryOp::Greater
        | BinaryOp::GreaterEqual => compare::compare(op, compute, &a, &b),
        _ => bitwise::bitwise(op, compute, a.into_owned(), b.into_owned()),
    }
}

/// Elementwise `cond ? x : y` with broadcasting of all three (`keras.ops.where`). `cond` is converted to
/// bool (nonzero is true); the result has the dtype of `x` and `y` promoted together. Named `where_` because
/// `where` is a Rust keyword; [`Tensor::select`] is the method form.
///
/// # Errors
/// [`Error::Broadcast`] when the shapes do not broadcast together.
///
/// # Examples
/// ```
/// use purestate::{ops::where_, DType, Tensor};
/// let x = Tensor::from([-1.0f32, 2.0, -3.0]);
/// let positive = x.greater(0.0)?;
/// let relu = where_(&positive, &x, 0.0, DType::Float32)?;
/// assert_eq!(relu.to_vec::<f32>()?, vec![0.0, 2.0, 0.0]);
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn where_<'a, 'b, 'c>(
    cond: impl Into<Arg<'a>>,
    x: impl Into<Arg<'b>>,
    y: impl Into<Arg<'c>>,
    floatx: DType,
) -> Result<Tensor> {
    const OP: &str = "where";
    let (cond, x, y) = (cond.into(), x.into(), y.into());
    if cond.is_traced() || x.is_traced() || y.is_traced() {
        return match trace::hooks([cond.tensor(), x.tensor(), y.tensor()]) {
            Some(h) => h.where_(cond, x, y, floatx),
            None => where_(cond.detach(), x.detach(), y.detach(), floatx),
        };
    }
    let dtype = result_type(&[x.operand(), y.operand()], floatx);
    let cond = cond.into_tensor(DType::Bool, OP)?;
    let (x, y) = (x.into_tensor(dtype, OP)?, y.into_tensor(dtype, OP)?);
    let c = cond.array::<bool>()?.view();
    with_dtype!(dtype, T => {
        let out = crate::kernels::zip3_map(OP, &c, &x.array::<T>()?.view(), &y.array::<T>()?.view(),
            |c, a: T, b: T| if c { a } else { b })?;
        Ok(Tensor::from(out))
    })
}

/// Runs `$body` with `$t` a float element type when `$dtype` is a float dtype, `$other` otherwise.
macro_rules! with_float {
    ($dtype:expr, $t:ident => $body:expr, _ => $other:expr) => {
        match $dtype {
            $crate::dtype::DType::Float16 => {
                type $t = half::f16;
                $body
            }
            $crate::dtype::DType::Bfloat16 => {
                type $t = half::bf16;
                $body
            }
            $crate::dtype::DType::Float32 => {
                type $t = f32;
                $body
            }
            $crate::dtype::DType::Float64 => {
                type $t = f64;
                $body
            }
            _ => $other,
        }
    };
}

/// Runs `$body` with `$t` an integer element type when `$dtype` is an integer dtype, `$other` otherwise.
macro_rules! with_int {
    ($dtype:expr, $t:ident => $body:expr, _ => $other:expr) => {
        match $dtype {
            $crate::dtype::DType::Int8 => {
                type $t = i8;
                $body
            }
            $crate::dtype::DType::Int16 => {
                type $t = i16;
                $body
            }
            $crate::dtype::DType::Int32 => {
                type $t = i32;
                $body
            }
            $crate::dtype::DType::Int64 => {
                type $t = i64;
                $body
            }
            $crate::dtype::DType::Uint8 => {
                type $t = u8;
                $body
            }
            $crate::dtype::DType::Uint16 => {
                type $t = u16;
                $body
            }
            $crate::dtype::DType::Uint32 => {
                type $t = u32;
                $body
            }
            $crate::dtype::DType::Uint64 => {
                type $t = u64;
                $body
            }
            _ => $other,
        }
    };
}

pub(crate) use with_float;
pub(crate) use with_int;
