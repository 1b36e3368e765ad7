//! Elementwise activations with their derivatives (`keras.ops` names): [`Tensor::erf`], [`Tensor::gelu`],
//! [`Tensor::silu`], [`Tensor::softplus`], [`Tensor::leaky_relu`], [`Tensor::elu`], [`Tensor::rsqrt`],
//! [`Tensor::relu6`], [`Tensor::log_sigmoid`].
//!
//! Each is one pass of [`kernels::map`] forward and one [`kernels::zip3_map`] over `(g, x, z)` backward, joined
//! to the tape with `trace::custom` (all of them, the parameterized ones included): bit-identical at any thread
//! count. Formulas and derivatives are JAX's (jax/_src/nn/functions.py, jax/_src/lax/other.py `logaddexp`,
//! JAX 0.10.2, which Keras 3 calls on the JAX backend), with JAX's choices at kinks:
//!
//! | op | value | derivative |
//! | --- | --- | --- |
//! | `erf` | XLA's float32 rational approximation; fdlibm in float64 (see `erf.rs`) | `2/sqrt(pi) * exp(-x^2)` |
//! | `gelu` (approximate) | `x * 0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))` | product and chain rule |
//! | `gelu` (exact) | `0.5 x * erfc(-x / sqrt(2))` (JAX's form: no cancellation for negative `x`) | `0.5 erfc(-x/sqrt2) + x exp(-x^2/2) / sqrt(2 pi)` |
//! | `silu` | `x * sigmoid(x)`, `sigmoid = 1 / (1 + exp(-x))` | `s + x s (1 - s)` |
//! | `softplus` | `max(x, 0) + log1p(exp(-abs(x)))` (`logaddexp(x, 0)`) | `exp(x - z)`, `+inf` read as 0 in both |
//! | `log_sigmoid` | `-softplus(-x)` | `exp(-x - softplus(-x))`, as above |
//! | `leaky_relu` | `x >= 0 ? x : slope * x` | `x >= 0 ? 1 : slope` |
//! | `elu` | `x > 0 ? x : alpha * expm1(x)` | `x > 0 ? 1 : alpha * (expm1(x) + 1)` |
//! | `relu6` | `min(max(x, 0), 6)` | 1 on `(0, 6)`, 0 elsewhere (kinks included) |
//! | `rsqrt` | `1 / sqrt(x)` | `-0.5 * z / x` |
//!
//! Integer and bool inputs are converted to floatx (float32) first; float16 and bfloat16 compute in float32
//! and round once.

use super::erf::{erf_f32, erf_f64, erfc_f32, erfc_f64};
use super::num::{Float, Real};
use super::{trace, with_float, DEFAULT_FLOATX};
use crate::error::{Error, Result};
use crate::kernels;
use crate::tensor::Tensor;

impl Tensor {
    /// The error function (`keras.ops.erf`). float32 is XLA's rational approximation (JAX's bits), float64
    /// fdlibm's (below one ulp).
    ///
    /// # Errors
    /// None for numeric tensors (fallible as every operator).
    ///
    /// # Examples
    /// ```
    /// use purestate::Tensor;
    /// let y = Tensor::from([0.0f64, 1.0, -2.0]).erf()?.to_vec::<f64>()?;
    /// assert!((y[1] - 0.842_700_792_949_714_9).abs() < 1e-15 && (y[2] + 0.995_322_265_018_952_7).abs() < 1e-15);
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn erf(&self) -> Result<Tensor> {
        activate(self, Act::Erf)
    }

    /// Gaussian error linear unit (`keras.ops.gelu`; Keras's default is `approximate = true`): the tanh
    /// approximation `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, or exactly `x * Phi(x)`, computed as
    /// `0.5 x erfc(-x / sqrt(2))`.
    ///
    /// # Errors
    /// None for numeric tensors.
    ///
    /// # Examples
    /// ```
    /// use purestate::Tensor;
    /// let x = Tensor::from([-1.0f32, 0.0, 2.0]);
    /// let (a, e) = (x.gelu(true)?.to_vec::<f32>()?, x.gelu(false)?.to_vec::<f32>()?);
    /// assert!((a[2] - 1.9545977).abs() < 1e-6 && (e[2] - 1.9544997).abs() < 1e-6 && e[1] == 0.0);
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn gelu(&self, approximate: bool) -> Result<Tensor> {
        activate(self, if approximate { Act::GeluTanh } else { Act::Gelu })
    }

    /// Sigmoid linear unit, `x * sigmoid(x)` (`keras.ops.silu`, also called swish).
    ///
    /// # Errors
    /// None for numeric tensors.
    pub fn silu(&self) -> Result<Tensor> {
        activate(self, Act::Silu)
    }

    /// `log(1 + exp(x))`, computed stably as `max(x, 0) + log1p(exp(-|x|))` (`keras.ops.softplus`, JAX's
    /// `logaddexp(x, 0)`): finite for any finite `x`, `x` itself for large `x`.
    ///
    /// # Errors
    /// None for numeric tensors.
    ///
    /// # Examples
    /// ```
    /// use purestate::Tensor;
    /// let y = Tensor::from([-1000.0f32, 0.0, 1000.0]).softplus()?.to_vec::<f32>()?;
    /// assert_eq!(y, vec![0.0, std::f32::consts::LN_2, 1000.0]);
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn softplus(&self) -> Result<Tensor> {
        activate(self, Act::Softplus)
    }

    /// `x` where `x >= 0`, `negative_slope * x` below (`keras.ops.leaky_relu`; Keras's default slope is 0.2).
    ///
    /// # Errors
    /// None for numeric tensors.
    pub fn leaky_relu(&self, negative_slope: f64) -> Result<Tensor> {
        activate(self, Act::LeakyRelu(negative_slope))
    }

    /// Exponential linear unit: `x` where `x > 0`, `alpha * (exp(x) - 1)` elsewhere (`keras.ops.elu`; Keras's
    /// default `alpha` is 1.0).
    ///
    /// # Errors
    /// None for numeric tensors.
    pub fn elu(&self, alpha: f64) -> Result<Tensor> {
        activate(self, Act::Elu(alpha))
    }

    /// `1 / sqrt(x)` (`keras.ops.rsqrt`): `inf` at zero, NaN below.
    ///
    /// # Errors
    /// None for numeric tensors.
    pub fn rsqrt(&self) -> Result<Tensor> {
        activate(self, Act::Rsqrt)
    }

    /// `min(max(x, 0), 6)` (`keras.ops.relu6`); the gradient is zero at both kinks, as in JAX.
    ///
    /// # Errors
    /// None for numeric tensors.
    pub fn relu6(&self) -> Result<Tensor> {
        activate(self, Act::Relu6)
    }

    /// `log(sigmoid(x)) = -softplus(-x)` (`keras.ops.log_sigmoid`), finite for any finite `x`.
    ///
    /// # Errors
    /// None for numeric tensors.
    pub fn log_sigmoid(&self) -> Result<Tensor> {
        activate(self, Act::LogSigmoid)
    }
}

/// One activation, with its parameters.
#[derive(Clone, Copy, Debug)]
enum Act {
    Erf,
    Gelu,
    GeluTanh,
    Silu,
    Softplus,
    LeakyRelu(f64),
    Elu(f64),
    Rsqrt,
    Relu6,
    LogSigmoid,
}

/// The float math of the activations, in the compute type (f32 or f64).
trait ActFloat: Real {
    fn c(v: f64) -> Self;
    fn abs(self) -> Self;
    fn max(self, o: Self) -> Self;
    fn is_nan(self) -> bool;
    fn erf(self) -> Self;
    fn erfc(self) -> Self;
}

impl ActFloat for f32 {
    fn c(v: f64) -> Self {
        v as f32
    }
    fn abs(self) -> Self {
        f32::abs(self)
    }
    fn max(self, o: Self) -> Self {
        f32::max(self, o)
    }
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    #[inline(always)]
    fn erf(self) -> Self {
        erf_f32(self)
    }
    #[inline(always)]
    fn erfc(self) -> Self {
        erfc_f32(self)
    }
}

impl ActFloat for f64 {
    fn c(v: f64) -> Self {
        v
    }
    fn abs(self) -> Self {
        f64::abs(self)
    }
    fn max(self, o: Self) -> Self {
        f64::max(self, o)
    }
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    fn erf(self) -> Self {
        erf_f64(self)
    }
    fn erfc(self) -> Self {
        erfc_f64(self)
    }
}

const SQRT_2_OVER_PI: f64 = 0.797_884_560_802_865_4;
const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
const FRAC_2_SQRT_PI: f64 = std::f64::consts::FRAC_2_SQRT_PI;

/// `logaddexp(x, 0)` as JAX computes it: NaN stays NaN.
#[inline(always)]
fn softplus<C: ActFloat>(x: C) -> C {
    if x.is_nan() {
        return x;
    }
    x.max(C::ZERO) + (-x.abs()).exp().ln_1p()
}

/// JAX's `_replace_inf`: `+inf` read as zero (so the derivative of `softplus` at `+inf` is `exp(0 - 0) = 1`).
fn finite_or_zero<C: ActFloat>(x: C) -> C {
    if x == C::c(f64::INFINITY) {
        C::ZERO
    } else {
        x
    }
}

#[inline(always)]
fn sigmoid<C: ActFloat>(x: C) -> C {
    C::ONE / (C::ONE + (-x).exp())
}

impl Act {
    fn name(self) -> &'static str {
        match self {
            Act::Erf => "erf",
            Act::Gelu | Act::GeluTanh => "gelu",
            Act::Silu => "silu",
            Act::Softplus => "softplus",
            Act::LeakyRelu(_) => "leaky_relu",
            Act::Elu(_) => "elu",
            Act::Rsqrt => "rsqrt",
            Act::Relu6 => "relu6",
            Act::LogSigmoid => "log_sigmoid",
        }
    }

    #[inline(always)] // into the AVX2 + FMA loops of `kernels::simd`
    fn value<C: ActFloat>(self, x: C) -> C {
        let half = C::c(0.5);
        match self {
            Act::Erf => x.erf(),
            Act::Gelu => half * x * (-x * C::c(FRAC_1_SQRT_2)).erfc(),
            Act::GeluTanh => {
                let inner = C::c(SQRT_2_OVER_PI) * (x + C::c(0.044_715) * (x * x * x));
                x * (half * (C::ONE + inner.tanh()))
            }
            Act::Silu => x * sigmoid(x),
            Act::Softplus => softplus(x),
            Act::LeakyRelu(slope) => {
                if x >= C::ZERO {
                    x
                } else {
                    C::c(slope) * x
                }
            }
            Act::Elu(alpha) => {
                if x > C::ZERO {
                    x
                } else {
                    C::c(alpha) * x.exp_m1()
                }
            }
            Act::Rsqrt => C::ONE / x.sqrt(),
            Act::Relu6 => {
                let r = if x.is_nan() || x > C::ZERO { x } else { C::ZERO };
                if r.is_nan() || r < C::c(6.0) {
                    r
                } else {
                    C::c(6.0)
                }
            }
            Act::LogSigmoid => -softplus(-x),
        }
    }

    /// The cotangent of `x` from the cotangent `g` of `z = value(x)`.
    #[inline(always)]
    fn grad<C: ActFloat>(self, g: C, x: C, z: C) -> C {
        let half = C::c(0.5);
        match self {
            Act::Erf => C::c(FRAC_2_SQRT_PI) * (g * (-(x * x)).exp()),
            Act::Gelu => {
                let s = C::c(FRAC_1_SQRT_2);
                let a = -x * s;
                g * (half * a.erfc()) + g * (half * x) * (C::c(FRAC_2_SQRT_PI) * (-(a * a)).exp() * s)
            }
            Act::GeluTanh => {
                let k = C::c(SQRT_2_OVER_PI);
                let b = C::c(0.044_715);
                let t = (k * (x + b * (x * x * x))).tanh();
                let cdf = half * (C::ONE + t);
                g * cdf + g * x * (half * (C::ONE - t * t) * k * (C::ONE + C::c(3.0) * b * (x * x)))
            }
            Act::Silu => {
                let s = sigmoid(x);
                g * s + (g * x) * (s * (C::ONE - s))
            }
            Act::Softplus => g * (finite_or_zero(x) - finite_or_zero(z)).exp(),
            Act::LogSigmoid => g * (finite_or_zero(-x) - finite_or_zero(-z)).exp(),
            Act::LeakyRelu(slope) => {
                if x >= C::ZERO {
                    g
                } else {
                    g * C::c(slope)
                }
            }
            Act::Elu(alpha) => {
                if x > C::ZERO {
                    g
                } else {
                    g * (C::c(alpha) * (x.exp_m1() + C::ONE))
                }
            }
            Act::Rsqrt => g * (C::c(-0.5) * (z / x)),
            Act::Relu6 => {
                if x > C::ZERO && x < C::c(6.0) {
                    g
                } else {
                    C::ZERO
                }
            }
        }
    }
}

/// `act` over `x` (integers and bool converted to floatx first), recorded with its derivative when `x` is
/// traced.
fn activate(x: &Tensor, act: Act) -> Result<Tensor> {
    let x = if x.dtype().is_float() { x.clone() } else { x.cast(DEFAULT_FLOATX) };
    let xd = x.detached();
    // The common activations get a loop each with the variant a constant, so that the loop body is
    // straight-line code the compiler can vectorize (`kernels::simd`); the rest share one loop. (A variant
    // captured by value is a load inside the loop, which reaches it through `dyn Fn`: the `match` on it then
    // stays in the loop, and the loop is not vectorized.)
    macro_rules! each_act {
        ($act:expr, $a:ident => $body:expr) => {
            match $act {
                Act::Gelu => {
                    #[allow(non_upper_case_globals)]
                    const $a: Act = Act::Gelu;
                    $body
                }
                Act::GeluTanh => {
                    #[allow(non_upper_case_globals)]
                    const $a: Act = Act::GeluTanh;
                    $body
                }
                Act::Silu => {
                    #[allow(non_upper_case_globals)]
                    const $a: Act = Act::Silu;
                    $body
                }
                Act::Erf => {
                    #[allow(non_upper_case_globals)]
                    const $a: Act = Act::Erf;
                    $body
                }
                other => {
                    let $a = other;
                    $body
                }
            }
        };
    }
    let z = with_float!(xd.dtype(), T => {
        let xa = xd.array::<T>()?;
        each_act!(act, a => Tensor::from(kernels::map(xa, move |v: T| T::down(a.value(v.up())))))
    }, _ => return Err(Error::UnsupportedDType { op: act.name(), dtype: xd.dtype() }));
    if !trace::any_traced(&[&x]) {
        return Ok(z);
    }
    let zd = z.clone();
    Ok(trace::custom(&[&x], z, move |g, _| {
        let g = g.cast(xd.dtype());
        let gx = with_float!(xd.dtype(), T => {
            let (gv, xv, zv) = (g.array::<T>()?.view(), xd.array::<T>()?.view(), zd.array::<T>()?.view());
            each_act!(act, a => Tensor::from(kernels::zip3_map(act.name(), &gv, &xv, &zv, move |g: T, x: T, z: T| {
                T::down(a.grad(g.up(), x.up(), z.up()))
            })?))
        }, _ => unreachable!("the activations compute in a float dtype"));
        Ok(vec![Some(gx)])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    #[test]
    fn integers_become_floatx_and_half_floats_round_once() {
        assert_eq!(Tensor::from([1i32, -2]).relu6().unwrap().dtype(), DType::Float32);
        let h = Tensor::from([half::f16::from_f32(0.7)]);
        let want = half::f16::from_f32(softplus(h.to_vec::<half::f16>().unwrap()[0].to_f32()));
        assert_eq!(h.softplus().unwrap().to_vec::<half::f16>().unwrap(), vec![want]);
    }

    #[test]
    fn kinks_and_infinities_follow_jax() {
        let x = [0.0f64, 6.0, -1.0, f64::INFINITY, f64::NEG_INFINITY];
        let grads = |act: Act| x.map(|v| act.grad(1.0, v, act.value(v)));
        assert_eq!(grads(Act::Relu6)[..2], [0.0, 0.0]);
        assert_eq!(grads(Act::LeakyRelu(0.2))[..3], [1.0, 1.0, 0.2]);
        assert_eq!(grads(Act::Elu(1.5))[0], 1.5);
        assert_eq!(grads(Act::Softplus)[3..], [1.0, 0.0]);
        assert_eq!(grads(Act::LogSigmoid)[3..], [0.0, 1.0]);
        assert_eq!(x.map(|v| Act::Softplus.value(v))[3..], [f64::INFINITY, 0.0]);
        assert!(Act::Relu6.value(f64::NAN).is_nan());
        assert_eq!(Act::Gelu.value(-40.0f64), -0.0);
    }
}
