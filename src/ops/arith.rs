//! Arithmetic: `add`, `subtract`, `multiply`, true `divide`, `floor_divide`, `mod`, `power`, `maximum`,
//! `minimum`, their in-place `assign_*` forms, and the shared donation logic.

use std::borrow::Cow;

use ndarray::Dimension as _;

use super::num::{Float, Int, Num, Real};
use super::{binary, with_float, with_int, Arg, BinaryOp, DEFAULT_FLOATX};
use crate::dtype::{DType, Operand};
use crate::error::{Error, Result};
use crate::kernels;
use crate::tensor::{with_dtype, Element, Tensor};

/// Checks the divisor or exponent, then computes (`a` and `b` have dtype `dtype` and broadcast together).
pub(super) fn arith(op: BinaryOp, dtype: DType, a: Cow<'_, Tensor>, b: Cow<'_, Tensor>) -> Result<Tensor> {
    check(op, dtype, &b)?;
    Ok(apply(op, dtype, a, b))
}

/// The errors an arithmetic kernel could meet, found before it runs.
fn check(op: BinaryOp, dtype: DType, b: &Tensor) -> Result<()> {
    let name = op.name();
    match op {
        BinaryOp::Divide if !dtype.is_float() => Err(Error::UnsupportedDType { op: name, dtype }),
        BinaryOp::FloorDivide | BinaryOp::Mod => with_int!(dtype, T => {
            if any::<T>(b, |x| x == <T as Int>::ZERO) {
                return Err(Error::DivisionByZero { op: name, dtype });
            }
            Ok(())
        }, _ => Ok(())),
        BinaryOp::Power => with_int!(dtype, T => {
            if any::<T>(b, |x| x.is_negative()) {
                return Err(Error::InvalidArgument {
                    op: name,
                    arg: "exponent",
                    reason: format!("integers to negative integer powers are not allowed ({dtype})"),
                });
            }
            Ok(())
        }, _ => Ok(())),
        _ => Ok(()),
    }
}

fn any<T: Element>(t: &Tensor, pred: impl Fn(T) -> bool + Sync + Send) -> bool {
    let a = t.array::<T>().expect("converted to the compute dtype");
    match a.as_slice() {
        Some(s) => kernels::any(s, pred),
        None => a.iter().any(|&x| pred(x)),
    }
}

fn apply(op: BinaryOp, dtype: DType, a: Cow<'_, Tensor>, b: Cow<'_, Tensor>) -> Tensor {
    let name = op.name();
    match op {
        BinaryOp::Add => with_dtype!(dtype, T => zip_same::<T>(name, a, b, <T as Num>::add)),
        BinaryOp::Subtract => with_dtype!(dtype, T => zip_same::<T>(name, a, b, <T as Num>::sub)),
        BinaryOp::Multiply => with_dtype!(dtype, T => zip_same::<T>(name, a, b, <T as Num>::mul)),
        BinaryOp::Maximum => with_dtype!(dtype, T => zip_same::<T>(name, a, b, <T as Num>::maximum)),
        BinaryOp::Minimum => with_dtype!(dtype, T => zip_same::<T>(name, a, b, <T as Num>::minimum)),
        BinaryOp::Divide => with_float!(dtype, T => zip_same::<T>(name, a, b, |x: T, y: T| T::down(x.up() / y.up())),
            _ => unreachable!("checked: divide computes in a float dtype")),
        BinaryOp::FloorDivide => {
            with_float!(dtype, T => zip_same::<T>(name, a, b, |x: T, y: T| T::down(float_floor_div(x.up(), y.up()))),
            _ => with_int!(dtype, T => zip_same::<T>(name, a, b, <T as Int>::floor_div),
                _ => unreachable!("bool computes as int32")))
        }
        BinaryOp::Mod => {
            with_float!(dtype, T => zip_same::<T>(name, a, b, |x: T, y: T| T::down(float_mod(x.up(), y.up()))),
            _ => with_int!(dtype, T => zip_same::<T>(name, a, b, <T as Int>::py_rem),
                _ => unreachable!("bool computes as int32")))
        }
        BinaryOp::Power => {
            with_float!(dtype, T => zip_same::<T>(name, a, b, |x: T, y: T| T::down(x.up().powf(y.up()))),
            _ => with_int!(dtype, T => zip_same::<T>(name, a, b, <T as Int>::pow),
                _ => unreachable!("bool computes as int32")))
        }
        _ => unreachable!("not an arithmetic op"),
    }
}

/// JAX's float `floor_divide` (`_float_divmod` in jax/_src/numpy/ufuncs.py, JAX 0.10): CPython's
/// `float_divmod`, so `x // 0.0` is ±inf (NaN for `0.0 // 0.0`).
fn float_floor_div<C: Real>(x: C, y: C) -> C {
    let m = x % y;
    let corrected = if y == C::ZERO { x } else { x - m };
    let div = corrected / y;
    let fix = m != C::ZERO && y.signum_or_zero() != m.signum_or_zero();
    (if fix { div - C::ONE } else { div }).round()
}

/// JAX's float `remainder`: the truncated remainder moved to the divisor's sign; `x % 0.0` is NaN.
fn float_mod<C: Real>(x: C, y: C) -> C {
    let r = x % y;
    if r != C::ZERO && ((r < C::ZERO) != (y < C::ZERO)) {
        r + y
    } else {
        r
    }
}

/// `f(a, b)` elementwise over tensors of element type `T` that broadcast together, writing into `a`'s or
/// `b`'s buffer when that operand is owned, unshared and already has the result's shape.
fn zip_same<T: Element>(
    op: &'static str,
    a: Cow<'_, Tensor>,
    b: Cow<'_, Tensor>,
    f: impl Fn(T, T) -> T + Sync + Send,
) -> Tensor {
    // Equal shapes (the common case) need no broadcast shape.
    let dim = (a.dims() != b.dims())
        .then(|| kernels::binary::broadcast_dim(op, a.dims(), b.dims()).expect("checked by the caller"));
    let donor = |t: &Cow<'_, Tensor>| matches!(t, Cow::Owned(t) if t.is_unique() && dim.as_ref().is_none_or(|d| d.slice() == t.dims()));
    if donor(&a) {
        let mut a = a.into_owned();
        let bv = b.array::<T>().expect("compute dtype").view();
        kernels::zip_map_assign(op, a.array_mut::<T>().expect("compute dtype"), &bv, f).expect("same shape");
        return a;
    }
    if donor(&b) {
        let mut b = b.into_owned();
        let av = a.array::<T>().expect("compute dtype").view();
        kernels::zip_map_assign(op, b.array_mut::<T>().expect("compute dtype"), &av, |y, x| f(x, y))
            .expect("same shape");
        return b;
    }
    let av = a.array::<T>().expect("compute dtype").view();
    let bv = b.array::<T>().expect("compute dtype").view();
    Tensor::from(kernels::zip_map(op, &av, &bv, f).expect("checked by the caller"))
}

macro_rules! binary_methods {
    ($($(#[$doc:meta])* $name:ident => $op:ident;)*) => {
        impl Tensor {
            $(
                $(#[$doc])*
                ///
                /// Broadcasts; promotes with [`crate::dtype::result_type`] (floatx float32; see
                /// [`crate::ops::binary`] for another floatx).
                ///
                /// # Errors
                /// [`Error::Broadcast`], [`Error::UnsupportedDType`], and the errors listed at
                /// [`crate::ops::binary`].
                pub fn $name<'a>(&self, rhs: impl Into<Arg<'a>>) -> Result<Tensor> {
                    binary(BinaryOp::$op, self, rhs, DEFAULT_FLOATX)
                }
            )*
        }
    };
}

binary_methods! {
    /// `self + rhs` (`keras.ops.add`; `or` on bool).
    ///
    /// ```
    /// use purestate::{DType, Tensor};
    /// let x = Tensor::from([[1.0f32, 2.0], [3.0, 4.0]]);
    /// let y = x.add(&Tensor::from([10.0f32, 20.0]))?; // broadcasts over rows
    /// assert_eq!(y.to_vec::<f32>()?, vec![11.0, 22.0, 13.0, 24.0]);
    /// assert_eq!(Tensor::from([1i8]).add(1.5)?.dtype(), DType::Float32); // weak float scalar
    /// # Ok::<(), purestate::Error>(())
    /// ```
    add => Add;
    /// `self - rhs` (`keras.ops.subtract`; bool is an error).
    sub => Subtract;
    /// `self * rhs` (`keras.ops.multiply`; `and` on bool).
    mul => Multiply;
    /// `self / rhs`, true division (`keras.ops.divide`): integers and bool give floatx; `x / 0.0` is ±inf
    /// or NaN.
    div => Divide;
    /// `self // rhs` (`keras.ops.floor_divide`), rounding toward negative infinity as Python does: `-7 // 2`
    /// is `-4`. Integer division by zero is [`Error::DivisionByZero`] (a departure: Keras returns arbitrary
    /// values); float division by zero gives ±inf or NaN.
    ///
    /// ```
    /// use purestate::{Error, Tensor};
    /// assert_eq!(Tensor::from([-7i32, 7]).floor_div(2)?.to_vec::<i32>()?, vec![-4, 3]);
    /// assert!(matches!(Tensor::from([1i32]).floor_div(0), Err(Error::DivisionByZero { .. })));
    /// # Ok::<(), purestate::Error>(())
    /// ```
    floor_div => FloorDivide;
    /// `self % rhs` (`keras.ops.mod`), with Python's sign rule (the result takes the divisor's sign:
    /// `-7 % 2` is `1`). Integer remainder by zero is [`Error::DivisionByZero`]; float `x % 0.0` is NaN.
    rem => Mod;
    /// `self ** rhs` (`keras.ops.power`). A negative integer exponent is [`Error::InvalidArgument`].
    pow => Power;
    /// The elementwise larger of `self` and `rhs` (`keras.ops.maximum`), NaN if either is NaN.
    maximum => Maximum;
    /// The elementwise smaller of `self` and `rhs` (`keras.ops.minimum`), NaN if either is NaN.
    minimum => Minimum;
}

impl Tensor {
    /// Applies `op` with `rhs` and stores the result in `self`, keeping `self`'s dtype and shape (Keras's
    /// `Variable.assign_add` and friends: the result is cast to `self`'s dtype). When the operation computes
    /// in `self`'s dtype, the result is written into `self`'s buffer (copied first if shared); otherwise it is
    /// computed aside and cast.
    ///
    /// # Errors
    /// [`Error::Broadcast`] when `rhs` does not broadcast to `self`'s shape; the errors of
    /// [`crate::ops::binary`]. On error `self` is unchanged.
    ///
    /// # Examples
    /// ```
    /// use purestate::{ops::BinaryOp, Tensor};
    /// let mut w = Tensor::from([1.0f32, 2.0]);
    /// let ptr = w.as_ptr();
    /// w.assign_binary(BinaryOp::Multiply, 3.0)?;
    /// w.assign_add(&Tensor::from([0.5f32, 0.5]))?;
    /// assert_eq!(w.to_vec::<f32>()?, vec![3.5, 6.5]);
    /// assert_eq!(w.as_ptr(), ptr, "an unshared buffer is updated in place");
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn assign_binary<'a>(&mut self, op: BinaryOp, rhs: impl Into<Arg<'a>>) -> Result<()> {
        let rhs = rhs.into();
        let name = op.name();
        let dtype = self.dtype();
        if self.trace().is_some() || rhs.is_traced() {
            // Recorded as `self = cast(self op rhs)`, after the same shape check.
            let shape = kernels::broadcast_shapes(name, self.dims(), rhs.dims())?;
            if shape.as_slice() != self.dims() {
                return Err(Error::Broadcast { op: name, lhs: self.shape(), rhs: rhs.dims().into() });
            }
            *self = binary(op, &*self, rhs, DEFAULT_FLOATX)?.cast(dtype);
            return Ok(());
        }
        let (compute, out) = op.dtypes(Operand::Tensor(dtype), rhs.operand(), DEFAULT_FLOATX)?;
        if kernels::binary::broadcast_dim(name, self.dims(), rhs.dims())?.slice() != self.dims() {
            return Err(Error::Broadcast { op: name, lhs: self.shape(), rhs: rhs.dims().into() });
        }
        let arithmetic = matches!(
            op,
            BinaryOp::Add
                | BinaryOp::Subtract
                | BinaryOp::Multiply
                | BinaryOp::Divide
                | BinaryOp::FloorDivide
                | BinaryOp::Mod
                | BinaryOp::Power
                | BinaryOp::Maximum
                | BinaryOp::Minimum
        );
        if arithmetic && compute == dtype && out == dtype {
            let b = rhs.into_cow(compute, name)?;
            check(op, compute, &b)?;
            let mut me = std::mem::replace(self, Tensor::placeholder());
            if !me.is_unique() {
                // Copy on write now, so that `apply` writes into `me` rather than into `b`'s buffer.
                with_dtype!(dtype, T => { me.array_mut::<T>().expect("own dtype").as_slice_mut(); });
            }
            *self = apply(op, compute, Cow::Owned(me), b);
            return Ok(());
        }
        let result = binary(op, &*self, rhs, DEFAULT_FLOATX)?;
        *self = result.cast(dtype);
        Ok(())
    }

    /// `self += rhs` in place (Keras `assign_add`); see [`Tensor::assign_binary`].
    ///
    /// # Errors
    /// As [`Tensor::assign_binary`].
    pub fn assign_add<'a>(&mut self, rhs: impl Into<Arg<'a>>) -> Result<()> {
        self.assign_binary(BinaryOp::Add, rhs)
    }

    /// `self -= rhs` in place (Keras `assign_sub`); see [`Tensor::assign_binary`].
    ///
    /// # Errors
    /// As [`Tensor::assign_binary`].
    pub fn assign_sub<'a>(&mut self, rhs: impl Into<Arg<'a>>) -> Result<()> {
        self.assign_binary(BinaryOp::Subtract, rhs)
    }

    /// `self *= rhs` in place; see [`Tensor::assign_binary`].
    ///
    /// # Errors
    /// As [`Tensor::assign_binary`].
    pub fn assign_mul<'a>(&mut self, rhs: impl Into<Arg<'a>>) -> Result<()> {
        self.assign_binary(BinaryOp::Multiply, rhs)
    }

    /// `self /= rhs` in place (cast back to `self`'s dtype); see [`Tensor::assign_binary`].
    ///
    /// # Errors
    /// As [`Tensor::assign_binary`].
    pub fn assign_div<'a>(&mut self, rhs: impl Into<Arg<'a>>) -> Result<()> {
        self.assign_binary(BinaryOp::Divide, rhs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_signs_for_floor_div_and_mod() {
        let a = Tensor::from([7i32, -7, 7, -7]);
        let b = Tensor::from([2i32, 2, -2, -2]);
        assert_eq!(a.floor_div(&b).unwrap().to_vec::<i32>().unwrap(), vec![3, -4, -4, 3]);
        assert_eq!(a.rem(&b).unwrap().to_vec::<i32>().unwrap(), vec![1, 1, -1, -1]);
        let f = Tensor::from([7.0f32, -7.0, 0.0]);
        let q = f.floor_div(0.0).unwrap().to_vec::<f32>().unwrap();
        assert_eq!((q[0], q[1]), (f32::INFINITY, f32::NEG_INFINITY));
        assert!(q[2].is_nan());
        assert!(f.rem(0.0).unwrap().to_vec::<f32>().unwrap().iter().all(|x| x.is_nan()));
        assert_eq!(Tensor::from([-7.5f64]).rem(2.0).unwrap().to_vec::<f64>().unwrap(), vec![0.5]);
    }

    #[test]
    fn integer_division_by_zero_is_an_error() {
        let err = Tensor::from([1u8, 2]).rem(Tensor::from([1u8, 0])).unwrap_err();
        assert!(matches!(err, Error::DivisionByZero { op: "mod", dtype: DType::Uint8 }));
        assert_eq!(err.to_string(), "mod: integer division by zero (uint8)");
        let err = Tensor::from([true]).floor_div(false).unwrap_err();
        assert!(matches!(err, Error::DivisionByZero { dtype: DType::Int32, .. }));
    }

    #[test]
    fn bool_rules() {
        let t = Tensor::from([true, false]);
        assert_eq!(t.add(&t).unwrap().dtype(), DType::Bool);
        assert!(matches!(t.sub(&t), Err(Error::UnsupportedDType { dtype: DType::Bool, .. })));
        assert_eq!(t.pow(&t).unwrap().dtype(), DType::Int32);
    }

    #[test]
    fn negative_integer_powers_are_refused() {
        assert!(matches!(Tensor::from([2i8]).pow(-1), Err(Error::InvalidArgument { arg: "exponent", .. })));
        assert_eq!(Tensor::from([2i8]).pow(2.0).unwrap().dtype(), DType::Float32);
    }

    #[test]
    fn weak_scalars_that_do_not_fit_are_refused() {
        let err = Tensor::from([1u8]).add(300).unwrap_err();
        assert_eq!(err.to_string(), "add: invalid argument `scalar`: 300 does not fit uint8");
        assert_eq!(Tensor::from([1u8]).add(255).unwrap().to_vec::<u8>().unwrap(), vec![0]);
    }

    #[test]
    fn owned_unique_operands_are_donated() {
        let a = Tensor::from(vec![1.0f32; 64]);
        let ptr = a.as_ptr();
        let r = super::super::binary(BinaryOp::Add, a, 1.0, DType::Float32).unwrap();
        assert_eq!(r.as_ptr(), ptr);
        let shared = Tensor::from(vec![1.0f32; 64]);
        let keep = shared.clone();
        let r = super::super::binary(BinaryOp::Add, shared, 1.0, DType::Float32).unwrap();
        assert_ne!(r.as_ptr(), keep.as_ptr());
        assert_eq!(keep.to_vec::<f32>().unwrap()[0], 1.0);
    }

    #[test]
    fn assign_keeps_dtype_and_refuses_growth() {
        let mut i = Tensor::from([1i32, 2]);
        i.assign_add(1.5).unwrap();
        assert_eq!(i.to_vec::<i32>().unwrap(), vec![2, 3]);
        let err = i.assign_add(Tensor::zeros([2, 2], DType::Int32)).unwrap_err();
        assert!(matches!(err, Error::Broadcast { .. }));
        let mut shared = Tensor::from([1.0f32, 2.0]);
        let snapshot = shared.clone();
        shared.assign_mul(2.0).unwrap();
        assert_eq!(snapshot.to_vec::<f32>().unwrap(), vec![1.0, 2.0]);
        assert_eq!(shared.to_vec::<f32>().unwrap(), vec![2.0, 4.0]);
        let mut z = Tensor::from([1i64]);
        assert!(z.assign_binary(BinaryOp::FloorDivide, 0).is_err());
        assert_eq!(z.to_vec::<i64>().unwrap(), vec![1], "unchanged on error");
    }
}
