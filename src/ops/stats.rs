//! Statistics along axes: [`Tensor::var`], [`Tensor::std`], [`Tensor::moments`] and [`Tensor::logsumexp`]
//! (`keras.ops` names; Keras 3 on JAX: keras/src/backend/jax/numpy.py `var`, `std`, nn.py `moments`,
//! math.py `logsumexp`).
//!
//! Every sum goes through [`reduce`](fn@super::reduce)'s fixed chunk tree and every elementwise step through
//! the kernels, so the results and gradients are bit-identical at any thread count. The variance is biased
//! (`ddof = 0`): `mean((x - mean(x))^2)`, computed in float32 for integers and 16-bit floats (float64 stays
//! float64), with the fused backward `2 (x - mean) g / n`. `logsumexp` is JAX's: shifted by the row's maximum
//! (zero where that maximum is not finite, so a row of `-inf` gives `-inf` and a `+inf` gives `+inf`), with
//! the backward `exp(x - max) * g / sum(exp(x - max))` (NaN for a row of `-inf`, as in JAX).

use super::reduce::normalize_axes;
use super::{reduce, trace, with_float, Axes, ReduceOp, DEFAULT_FLOATX};
use crate::dtype::{result_type, DType, Operand};
use crate::error::Result;
use crate::kernels;
use crate::tensor::{Element, Tensor};

/// The largest finite float16: Keras clips 16-bit moments to it before casting back.
const F16_MAX: f64 = 65504.0;

impl Tensor {
    /// Biased variance along `axes` (`keras.ops.var`, `ddof = 0`): `mean((x - mean(x))^2)`. Integers give
    /// float32; 16-bit floats compute in float32 and round once. Differentiable: `2 (x - mean) g / n`.
    ///
    /// # Errors
    /// [`Error::InvalidShape`](crate::Error::InvalidShape) for an axis out of range,
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for a repeated axis.
    ///
    /// # Examples
    /// ```
    /// use purestate::{ops::Axes, Tensor};
    /// let x = Tensor::from([[1.0f32, 3.0], [2.0, 6.0]]);
    /// assert_eq!(x.var(1, false)?.to_vec::<f32>()?, vec![1.0, 4.0]);
    /// assert!((x.std(Axes::All, false)?.to_f64()? - 3.5f64.sqrt()).abs() < 1e-6);
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn var(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Tensor> {
        let (x, result) = compute_input(self);
        Ok(variance(&x, "var", &axes.into(), keepdims)?.cast(result))
    }

    /// Standard deviation along `axes` (`keras.ops.std`, biased): `sqrt(var)`, the square root taken in the
    /// compute dtype. Its gradient is infinite or NaN where the variance is zero, as in JAX.
    ///
    /// # Errors
    /// As [`Tensor::var`].
    pub fn std(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Tensor> {
        let (x, result) = compute_input(self);
        Ok(variance(&x, "std", &axes.into(), keepdims)?.sqrt()?.cast(result))
    }

    /// Mean and biased variance along `axes` (`keras.ops.moments`), from one input conversion. float16 and
    /// bfloat16 compute in float32, then both results are clipped to float16's finite range and cast back,
    /// as Keras does; integers give float32.
    ///
    /// # Errors
    /// As [`Tensor::var`].
    ///
    /// # Examples
    /// ```
    /// use purestate::Tensor;
    /// let (mean, var) = Tensor::from([[1.0f64, 2.0], [3.0, 6.0]]).moments([0], true)?;
    /// assert_eq!((mean.dims(), mean.to_vec::<f64>()?), (&[1usize, 2][..], vec![2.0, 4.0]));
    /// assert_eq!(var.to_vec::<f64>()?, vec![1.0, 4.0]);
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn moments(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<(Tensor, Tensor)> {
        let (x, result) = compute_input(self);
        let axes = axes.into();
        normalize_axes("moments", x.dims(), &axes)?;
        let mean = reduce(ReduceOp::Mean, &x, axes.clone(), keepdims, DEFAULT_FLOATX)?;
        let var = variance(&x, "moments", &axes, keepdims)?;
        if matches!(result, DType::Float16 | DType::Bfloat16) {
            let back = |t: Tensor| -> Result<Tensor> { Ok(t.clip(-F16_MAX, F16_MAX)?.cast(result)) };
            return Ok((back(mean)?, back(var)?));
        }
        Ok((mean.cast(result), var.cast(result)))
    }

    /// `log(sum(exp(x)))` along `axes` (`keras.ops.logsumexp`), shifted by the maximum so that it is finite
    /// for any finite input; see the module docs for infinite rows. Over no element it is `-inf`. Integers
    /// give float32; 16-bit floats compute in float32. Differentiable: the gradient is `softmax(x) * g`.
    ///
    /// # Errors
    /// As [`Tensor::var`].
    ///
    /// # Examples
    /// ```
    /// use purestate::Tensor;
    /// let y = Tensor::from([[1000.0f32, 1000.0], [0.0, f32::NEG_INFINITY]]).logsumexp(1, false)?;
    /// assert_eq!(y.to_vec::<f32>()?, vec![1000.0 + std::f32::consts::LN_2, 0.0]);
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn logsumexp(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Tensor> {
        const OP: &str = "logsumexp";
        let result = result_type(&[Operand::Tensor(self.dtype()), Operand::Float], DEFAULT_FLOATX);
        let compute = if matches!(result, DType::Float16 | DType::Bfloat16) { DType::Float32 } else { result };
        let x = self.cast(compute);
        let xd = x.detached();
        let axes = axes.into();
        let list = normalize_axes(OP, xd.dims(), &axes)?;
        let keep: Vec<usize> =
            xd.dims().iter().enumerate().map(|(a, &d)| if list.contains(&a) { 1 } else { d }).collect();
        let out: Vec<isize> = keep
            .iter()
            .enumerate()
            .filter(|&(a, _)| keepdims || !list.contains(&a))
            .map(|(_, &d)| d as isize)
            .collect();
        if list.iter().any(|&a| xd.dims()[a] == 0) {
            let dims: Vec<usize> = out.iter().map(|&d| d as usize).collect();
            return Ok(Tensor::full(dims.as_slice(), result, f64::NEG_INFINITY));
        }
        let amax = reduce(ReduceOp::Max, &xd, axes.clone(), true, DEFAULT_FLOATX)?;
        let amax = with_float!(compute, T => {
            Tensor::from(kernels::map(amax.array::<T>()?, |v: T| if v.to_f64().is_finite() { v } else { T::default() }))
        }, _ => unreachable!("logsumexp computes in a float dtype"));
        let e = xd.sub(&amax)?.exp()?;
        let s = reduce(ReduceOp::Sum, &e, axes, true, DEFAULT_FLOATX)?;
        let z = s.log()?.add(&amax)?.reshape(&out)?;
        if !trace::any_traced(&[&x]) {
            return Ok(z.cast(result));
        }
        let keep: Vec<isize> = keep.iter().map(|&d| d as isize).collect();
        let z = trace::custom(&[&x], z, move |g, _| {
            let gk = g.reshape(&keep)?;
            Ok(vec![Some(e.mul(&gk.div(&s)?)?)])
        });
        Ok(z.cast(result))
    }
}

/// `x` in the dtype its statistics compute in (float32, or float64 for float64), and the result's dtype
/// (the input's float dtype, floatx for integers and bool): Keras's `result_type(x, "float32")` and
/// `result_type(x, float)`.
fn compute_input(x: &Tensor) -> (Tensor, DType) {
    let compute = result_type(&[Operand::Tensor(x.dtype()), Operand::Tensor(DType::Float32)], DEFAULT_FLOATX);
    let result = result_type(&[Operand::Tensor(x.dtype()), Operand::Float], DEFAULT_FLOATX);
    (x.cast(compute), result)
}

/// The biased variance of `x` (already in its compute dtype) along `axes`, recorded with the fused backward
/// `2 (x - mean) g / n` when `x` is traced.
fn variance(x: &Tensor, op: &'static str, axes: &Axes, keepdims: bool) -> Result<Tensor> {
    normalize_axes(op, x.dims(), axes)?;
    let xd = x.detached();
    let mean = reduce(ReduceOp::Mean, &xd, axes.clone(), true, DEFAULT_FLOATX)?;
    let centered = xd.sub(&mean)?;
    let v = reduce(ReduceOp::Mean, &centered.square()?, axes.clone(), keepdims, DEFAULT_FLOATX)?;
    if !trace::any_traced(&[x]) {
        return Ok(v);
    }
    let keep: Vec<isize> = mean.dims().iter().map(|&d| d as isize).collect();
    let n = (x.size() / mean.size().max(1)) as f64;
    Ok(trace::custom(&[x], v, move |g, _| {
        let scale = g.reshape(&keep)?.mul(2.0)?.div(n)?;
        Ok(vec![Some(centered.mul(&scale)?)])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn dtypes_follow_keras() {
        assert_eq!(Tensor::from([1i32, 2]).var(0, false).unwrap().dtype(), DType::Float32);
        assert_eq!(Tensor::from([1.0f64, 2.0]).std(0, false).unwrap().dtype(), DType::Float64);
        let h = Tensor::from([half::f16::from_f32(60000.0), half::f16::from_f32(-60000.0)]);
        let (m, v) = h.moments(0, false).unwrap();
        assert_eq!((m.dtype(), m.to_f64().unwrap()), (DType::Float16, 0.0));
        assert_eq!(v.to_f64().unwrap(), F16_MAX, "clipped to float16's range, as Keras");
        assert_eq!(h.var(0, false).unwrap().to_f64().unwrap(), f64::INFINITY, "var is not clipped");
        assert_eq!(Tensor::from([1u8, 2]).logsumexp(0, false).unwrap().dtype(), DType::Float32);
    }

    #[test]
    fn logsumexp_handles_infinite_and_empty_rows() {
        let x = Tensor::from([[f32::NEG_INFINITY, f32::NEG_INFINITY], [f32::INFINITY, 1.0], [f32::NAN, 1.0]]);
        let y = x.logsumexp(1, true).unwrap();
        assert_eq!(y.dims(), &[3, 1]);
        let y = y.to_vec::<f32>().unwrap();
        assert_eq!(y[..2], [f32::NEG_INFINITY, f32::INFINITY]);
        assert!(y[2].is_nan());
        let empty = Tensor::zeros([2, 0], DType::Float64).logsumexp(1, false).unwrap();
        assert_eq!(empty.to_vec::<f64>().unwrap(), vec![f64::NEG_INFINITY; 2]);
        assert!(matches!(x.logsumexp(2, false), Err(Error::InvalidShape { .. })));
        assert!(matches!(x.var([0, 0], false), Err(Error::InvalidArgument { .. })));
    }
}
