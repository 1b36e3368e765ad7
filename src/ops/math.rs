//! Elementwise math: [`UnaryOp`] and [`unary`], the one entry point of every unary operation, plus
//! `clip`, `softmax` and `log_softmax` built from the other operations.

use super::num::{Float, Num, Real};
use super::{binary, bitwise, with_float, Arg, Axes, BinaryOp, ReduceOp, DEFAULT_FLOATX};
use crate::dtype::{result_type, DType};
use crate::error::{Error, Result};
use crate::kernels;
use crate::tensor::{with_dtype, Element, Tensor};

/// The unary elementwise operations, each with its Keras name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `negative` (`-x`; an error on bool; unsigned integers wrap).
    Negative,
    /// `absolute` (signed integers wrap at their minimum, as numpy).
    Abs,
    /// `sign`: -1, 0 or 1 (NaN stays NaN; an error on bool).
    Sign,
    /// `square` (bool computes as int32).
    Square,
    /// `sqrt` (integers and bool give floatx).
    Sqrt,
    /// `exp` (integers and bool give floatx).
    Exp,
    /// `log`, the natural logarithm (integers and bool give floatx).
    Log,
    /// `log1p`, `log(1 + x)` (integers and bool give floatx).
    Log1p,
    /// `expm1`, `exp(x) - 1` (integers and bool give floatx).
    Expm1,
    /// `tanh` (integers and bool give floatx).
    Tanh,
    /// `sigmoid`, `1 / (1 + exp(-x))` (floats only, as in Keras).
    Sigmoid,
    /// `relu`, `max(x, 0)` (keeps the dtype).
    Relu,
    /// `round`, half to even (integers unchanged).
    Round,
    /// `bitwise_invert` (`~`): bitwise on integers, logical on bool, an error on floats.
    Invert,
    /// `logical_not`: any dtype, zero is true.
    LogicalNot,
}

impl UnaryOp {
    /// The `keras.ops` name.
    pub const fn name(self) -> &'static str {
        match self {
            UnaryOp::Negative => "negative",
            UnaryOp::Abs => "absolute",
            UnaryOp::Sign => "sign",
            UnaryOp::Square => "square",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Log1p => "log1p",
            UnaryOp::Expm1 => "expm1",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Relu => "relu",
            UnaryOp::Round => "round",
            UnaryOp::Invert => "invert",
            UnaryOp::LogicalNot => "logical_not",
        }
    }

    /// The dtype the kernel computes in (also the result's) for an input of `dtype` under `floatx`.
    ///
    /// # Errors
    /// [`Error::UnsupportedDType`] where Keras refuses the dtype.
    pub fn dtype(self, dtype: DType, floatx: DType) -> Result<DType> {
        use UnaryOp::*;
        let refuse = Err(Error::UnsupportedDType { op: self.name(), dtype });
        match self {
            Negative | Sign if dtype.is_bool() => refuse,
            Sigmoid if !dtype.is_float() => refuse,
            Invert if dtype.is_float() => refuse,
            Square if dtype.is_bool() => Ok(DType::Int32),
            Sqrt | Exp | Log | Log1p | Expm1 | Tanh if !dtype.is_float() => Ok(floatx),
            LogicalNot => Ok(DType::Bool),
            _ => Ok(dtype),
        }
    }
}

/// Applies a unary elementwise operation: the one entry point of every unary operator. An owned, unshared
/// tensor whose dtype is the result's is updated in its own buffer.
///
/// # Errors
/// [`Error::UnsupportedDType`] where the operation refuses the dtype (see [`UnaryOp`]).
///
/// # Examples
/// ```
/// use purestate::{ops::{unary, UnaryOp}, DType, Tensor};
/// let r = unary(UnaryOp::Round, &Tensor::from([0.5f32, 1.5, 2.5, -0.5]), DType::Float32)?;
/// assert_eq!(r.to_vec::<f32>()?, vec![0.0, 2.0, 2.0, -0.0]);
/// let s = unary(UnaryOp::Sqrt, &Tensor::from([4i32]), DType::Float32)?;
/// assert_eq!((s.dtype(), s.to_vec::<f32>()?), (DType::Float32, vec![2.0]));
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn unary<'a>(op: UnaryOp, x: impl Into<Arg<'a>>, floatx: DType) -> Result<Tensor> {
    let x = x.into();
    if x.is_traced() {
        return match super::trace::hooks([x.tensor()]) {
            Some(h) => h.unary(op, x, floatx),
            None => unary(op, x.detach(), floatx),
        };
    }
    let input = result_type(&[x.operand()], floatx);
    let dtype = op.dtype(input, floatx)?;
    let t = x.into_tensor(dtype, op.name())?;
    use UnaryOp::*;
    match op {
        Invert => bitwise::invert(t),
        LogicalNot => bitwise::invert(t),
        Negative => with_dtype!(dtype, T => map_same::<T>(t, <T as Num>::neg)),
        Abs => with_dtype!(dtype, T => map_same::<T>(t, <T as Num>::abs)),
        Sign => with_dtype!(dtype, T => map_same::<T>(t, <T as Num>::sign)),
        Square => with_dtype!(dtype, T => map_same::<T>(t, |x: T| x.mul(x))),
        Relu => with_dtype!(dtype, T => map_same::<T>(t, |x: T| Num::maximum(x, T::default()))),
        Round => with_float!(dtype, T => map_float::<T>(t, Real::round_ties_even), _ => Ok(t)),
        _ => with_float!(dtype, T => match op {
            Sqrt => map_float::<T>(t, Real::sqrt),
            Exp => map_float::<T>(t, Real::exp),
            Log => map_float::<T>(t, Real::ln),
            Log1p => map_float::<T>(t, Real::ln_1p),
            Expm1 => map_float::<T>(t, Real::exp_m1),
            Tanh => map_float::<T>(t, Real::tanh),
            _ => map_float::<T>(t, |x| <T as Float>::C::ONE / (<T as Float>::C::ONE + (-x).exp())),
        }, _ => unreachable!("float math computes in a float dtype")),
    }
}

fn map_float<T: Float>(t: Tensor, f: impl Fn(T::C) -> T::C + Sync + Send) -> Result<Tensor> {
    map_same::<T>(t, move |x: T| T::down(f(x.up())))
}

fn map_same<T: Element>(mut t: Tensor, f: impl Fn(T) -> T + Sync + Send) -> Result<Tensor> {
    if t.is_unique() {
        kernels::map_inplace(t.array_mut::<T>()?, f);
        return Ok(t);
    }
    Ok(Tensor::from(kernels::map(t.array::<T>()?, f)))
}

macro_rules! unary_methods {
    ($($(#[$doc:meta])* $name:ident => $op:ident;)*) => {
        impl Tensor {
            $(
                $(#[$doc])*
                ///
                /// # Errors
                /// [`Error::UnsupportedDType`] where Keras refuses the dtype (see [`UnaryOp`]).
                pub fn $name(&self) -> Result<Tensor> {
                    unary(UnaryOp::$op, self, DEFAULT_FLOATX)
                }
            )*
        }
    };
}

unary_methods! {
    /// `-self` (`keras.ops.negative`).
    neg => Negative;
    /// `|self|` (`keras.ops.absolute`).
    abs => Abs;
    /// The sign of each element (`keras.ops.sign`).
    sign => Sign;
    /// `self * self` (`keras.ops.square`).
    square => Square;
    /// Square root (`keras.ops.sqrt`); NaN below zero.
    sqrt => Sqrt;
    /// `e^self` (`keras.ops.exp`).
    exp => Exp;
    /// Natural logarithm (`keras.ops.log`); `-inf` at zero, NaN below.
    log => Log;
    /// `log(1 + self)`, accurate near zero (`keras.ops.log1p`).
    log1p => Log1p;
    /// `exp(self) - 1`, accurate near zero (`keras.ops.expm1`).
    expm1 => Expm1;
    /// Hyperbolic tangent (`keras.ops.tanh`).
    tanh => Tanh;
    /// Logistic sigmoid (`keras.ops.sigmoid`).
    sigmoid => Sigmoid;
    /// `max(self, 0)` (`keras.ops.relu`).
    relu => Relu;
    /// Rounds half to even, on any shape (`keras.ops.round`, Python's `__round__`): 0.5 -> 0, 1.5 -> 2,
    /// 2.5 -> 2. Integers are unchanged.
    ///
    /// ```
    /// use purestate::Tensor;
    /// let r = Tensor::from([2.5f64, 3.5, -2.5]).round()?;
    /// assert_eq!(r.to_vec::<f64>()?, vec![2.0, 4.0, -2.0]);
    /// # Ok::<(), purestate::Error>(())
    /// ```
    round => Round;
}

impl Tensor {
    /// `+self` (Python `__pos__`): an O(1) clone.
    pub fn pos(&self) -> Tensor {
        self.clone()
    }

    /// Limits every element to `[min, max]` (`keras.ops.clip`): `minimum(maximum(self, min), max)`. Bool is
    /// clipped as int32, as in Keras; scalar bounds are weak (an int8 tensor clipped to 0.5 becomes float32).
    ///
    /// # Errors
    /// [`Error::Broadcast`] when tensor bounds do not broadcast.
    ///
    /// ```
    /// use purestate::Tensor;
    /// let c = Tensor::from([-2.0f32, 0.5, 3.0]).clip(-1.0, 1.0)?;
    /// assert_eq!(c.to_vec::<f32>()?, vec![-1.0, 0.5, 1.0]);
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn clip<'a, 'b>(&self, min: impl Into<Arg<'a>>, max: impl Into<Arg<'b>>) -> Result<Tensor> {
        let x = if self.dtype().is_bool() { self.cast(DType::Int32) } else { self.clone() };
        let low = binary(BinaryOp::Maximum, x, min, DEFAULT_FLOATX)?;
        binary(BinaryOp::Minimum, low, max, DEFAULT_FLOATX)
    }

    /// `cond.select(x, y)`: `x` where `self` is true (nonzero), `y` elsewhere; the method form of
    /// [`crate::ops::where_`].
    ///
    /// # Errors
    /// [`Error::Broadcast`] when the three shapes do not broadcast together.
    pub fn select<'a, 'b>(&self, x: impl Into<Arg<'a>>, y: impl Into<Arg<'b>>) -> Result<Tensor> {
        super::where_(self, x, y, DEFAULT_FLOATX)
    }

    /// Softmax along `axis` (`keras.ops.softmax`), computed as `exp(x - max) / sum(exp(x - max))`.
    /// Integers are converted to floatx first.
    ///
    /// # Errors
    /// [`Error::InvalidShape`] when `axis` is out of range.
    ///
    /// ```
    /// use purestate::Tensor;
    /// let p = Tensor::from([[1.0f32, 1.0], [0.0, 1000.0]]).softmax(-1)?;
    /// assert_eq!(p.to_vec::<f32>()?, vec![0.5, 0.5, 0.0, 1.0]);
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn softmax(&self, axis: isize) -> Result<Tensor> {
        if self.trace().is_some() {
            return match super::trace::hooks([Some(self)]) {
                Some(h) => h.softmax(self, axis),
                None => self.detached().softmax(axis),
            };
        }
        let shifted = self.shifted_by_max(axis)?;
        let e = shifted.exp()?;
        let total = super::reduce(ReduceOp::Sum, &e, Axes::from(axis), true, DEFAULT_FLOATX)?;
        binary(BinaryOp::Divide, e, &total, DEFAULT_FLOATX)
    }

    /// Log-softmax along `axis` (`keras.ops.log_softmax`): `x - max - log(sum(exp(x - max)))`.
    ///
    /// # Errors
    /// [`Error::InvalidShape`] when `axis` is out of range.
    pub fn log_softmax(&self, axis: isize) -> Result<Tensor> {
        if self.trace().is_some() {
            return match super::trace::hooks([Some(self)]) {
                Some(h) => h.log_softmax(self, axis),
                None => self.detached().log_softmax(axis),
            };
        }
        let shifted = self.shifted_by_max(axis)?;
        let total = super::reduce(ReduceOp::Sum, &shifted.exp()?, Axes::from(axis), true, DEFAULT_FLOATX)?;
        binary(BinaryOp::Subtract, shifted, &total.log()?, DEFAULT_FLOATX)
    }

    fn shifted_by_max(&self, axis: isize) -> Result<Tensor> {
        let x = if self.dtype().is_float() { self.clone() } else { self.cast(DEFAULT_FLOATX) };
        let max = super::reduce(ReduceOp::Max, &x, Axes::from(axis), true, DEFAULT_FLOATX)?;
        binary(BinaryOp::Subtract, &x, &max, DEFAULT_FLOATX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_rules_follow_keras() {
        let b = Tensor::from([true, false]);
        assert!(matches!(b.neg(), Err(Error::UnsupportedDType { op: "negative", .. })));
        assert!(matches!(b.sign(), Err(Error::UnsupportedDType { .. })));
        assert_eq!(b.square().unwrap().dtype(), DType::Int32);
        assert_eq!(b.abs().unwrap().dtype(), DType::Bool);
        assert!(matches!(Tensor::from([1i32]).sigmoid(), Err(Error::UnsupportedDType { .. })));
        assert_eq!(Tensor::from([1u8]).tanh().unwrap().dtype(), DType::Float32);
        assert_eq!(unary(UnaryOp::Exp, Tensor::from([1i8]), DType::Float16).unwrap().dtype(), DType::Float16);
        assert_eq!(Tensor::from([-2i8, 3]).relu().unwrap().to_vec::<i8>().unwrap(), vec![0, 3]);
        assert_eq!(Tensor::from([200u8]).neg().unwrap().to_vec::<u8>().unwrap(), vec![56]);
        assert_eq!(Tensor::from([i8::MIN]).abs().unwrap().to_vec::<i8>().unwrap(), vec![i8::MIN]);
        assert_eq!(Tensor::from([true, false]).clip(0, 1).unwrap().dtype(), DType::Int32);
        assert_eq!(Tensor::from([1i8, 2]).clip(0.5, 1.5).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 1.5]);
    }

    #[test]
    fn half_floats_compute_in_f32() {
        let h = Tensor::from([half::f16::from_f32(1.0), half::f16::from_f32(2.0)]);
        let e = h.exp().unwrap().to_vec::<half::f16>().unwrap();
        assert_eq!(e, vec![half::f16::from_f32(1f32.exp()), half::f16::from_f32(2f32.exp())]);
    }

    #[test]
    fn log_softmax_matches_log_of_softmax() {
        let x = Tensor::from([[1.0f64, 2.0, 3.0], [0.0, -1.0, 5.0]]);
        let a = x.log_softmax(1).unwrap().to_vec::<f64>().unwrap();
        let b = x.softmax(1).unwrap().log().unwrap().to_vec::<f64>().unwrap();
        assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-12));
    }
}
