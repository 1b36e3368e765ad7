//! [`layer_norm`]: layer normalization over the last axis as one fused operation with its own backward (Keras's
//! `LayerNormalization`, `axis=-1`: `keras.ops.moments`, then `x * inv + res`).
//!
//! Composed from operators, a layer normalization costs about ten passes over the activations forward and twice
//! that backward, each a separate parallel job. Fused, the forward reads the input twice (the row statistics,
//! then the output) and the backward three times. The forward's arithmetic is the composition's, operation for
//! operation, so its output has the same bits: the row mean and variance are [`kernels::sum_by`] sums divided by
//! the count (as `mean` over the last axis), `inv = gamma * (1 / sqrt(variance + epsilon))`,
//! `res = -mean * inv + beta`, `y = x * inv + res`. Every row is computed by one task and the column sums of the
//! backward are fixed-tree ([`kernels::sum_columns_by`]), so the result is the same at any thread count.

use super::trace;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kernels;
use crate::tensor::{Shape, Tensor};

const OP: &str = "layer_norm";

/// Layer normalization of `x` over its last axis: each row is centred by its mean and scaled by
/// `1 / sqrt(variance + epsilon)` (the biased variance), then multiplied by `gamma` and shifted by `beta`, both
/// optional and of shape `(features,)` (`scale=False`, `center=False`).
///
/// The forward is Keras's formula with the same bits as the composed operators (`moments`, then
/// `x * inv + (-mean * inv + beta)`, `inv = gamma * rsqrt(variance + epsilon)`). The output is differentiable
/// with respect to `x`, `gamma` and `beta`, through the statistics too; the backward is the closed form
/// `dx = inv_std * (g' - mean(g') - x_hat * mean(g' * x_hat))` with `g' = g * gamma` per row, and `gamma`'s and
/// `beta`'s cotangents are fixed-tree column sums. The bits do not depend on the thread count.
///
/// # Errors
/// [`Error::UnsupportedDType`] unless `x` is float32 or float64 (widen 16-bit floats first, as Keras computes the
/// statistics in float32); [`Error::ShapeMismatch`] when `gamma` or `beta` is not `(features,)` of `x`'s dtype;
/// [`Error::InvalidShape`] for a 0-d `x` or one with no feature.
///
/// # Examples
/// ```
/// use purestate::{ops::layer_norm, Tensor};
/// let x = Tensor::from([[1.0f32, 3.0], [10.0, 30.0]]);
/// let y = layer_norm(&x, None, Some(&Tensor::from([0.5f32, 0.5])), 1e-3)?.to_vec::<f32>()?;
/// assert!((y[0] + 0.5).abs() < 1e-3 && (y[1] - 1.5).abs() < 1e-3 && (y[3] - 1.5).abs() < 1e-5);
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn layer_norm(x: &Tensor, gamma: Option<&Tensor>, beta: Option<&Tensor>, epsilon: f64) -> Result<Tensor> {
    let c = match x.dims().last() {
        Some(&c) if c > 0 => c,
        _ => {
            return Err(Error::InvalidShape {
                op: OP,
                shape: x.shape(),
                reason: "expected a last axis of at least one feature".into(),
            })
        }
    };
    let n = x.size() / c;
    for p in [gamma, beta].into_iter().flatten() {
        if p.dims() != [c] || p.dtype() != x.dtype() {
            return Err(Error::ShapeMismatch { path: OP.into(), expected: Shape::from([c]), got: p.shape() });
        }
    }
    let dims = x.dims().to_vec();
    macro_rules! run {
        ($t:ty) => {{
            let xs = x.detached().to_standard_layout();
            let xv = xs.as_slice::<$t>().expect("standard layout");
            let gv = gamma.map(|g| g.to_vec::<$t>()).transpose()?;
            let bv = beta.map(|b| b.to_vec::<$t>()).transpose()?;
            let rows = Rows::<$t>::of(xv, n, c, epsilon as $t);
            let y = Tensor::from_shape_vec(dims.as_slice(), rows.normalize(xv, gv.as_deref(), bv.as_deref()))?;
            let mut inputs = vec![x];
            inputs.extend(gamma);
            inputs.extend(beta);
            if !trace::any_traced(&inputs) {
                return Ok(y);
            }
            let (has_gamma, has_beta, dtype) = (gamma.is_some(), beta.is_some(), x.dtype());
            Ok(trace::custom(&inputs, y, move |g, need| {
                let g = g.cast(dtype).to_standard_layout();
                let gs = g.as_slice::<$t>().expect("standard layout");
                let xv = xs.as_slice::<$t>().expect("standard layout");
                let need_params = need.iter().skip(1).any(|&b| b);
                let (dx, dgamma, dbeta) = rows.backward(xv, gs, gv.as_deref(), need[0], need_params);
                let mut grads = vec![dx.map(|dx| Tensor::from_shape_vec(dims.as_slice(), dx)).transpose()?];
                if has_gamma {
                    grads.push(dgamma.map(|d| Tensor::from_shape_vec([c].as_slice(), d)).transpose()?);
                }
                if has_beta {
                    grads.push(dbeta.map(|d| Tensor::from_shape_vec([c].as_slice(), d)).transpose()?);
                }
                Ok(grads)
            }))
        }};
    }
    match x.dtype() {
        DType::Float32 => run!(f32),
        DType::Float64 => run!(f64),
        dtype => Err(Error::UnsupportedDType { op: OP, dtype }),
    }
}

/// The statistics of each row of an `n x c` matrix, and what the backward needs of them.
struct Rows<T> {
    c: usize,
    /// Each row's mean.
    mean: Vec<T>,
    /// Each row's `1 / sqrt(variance + epsilon)`.
    inv_std: Vec<T>,
}

/// How many times each pass of the statistics, the output or the backward touches an element: `n * c * PASSES`
/// is the work that decides when rows are split over the pool ([`kernels::for_rows`]).
const PASSES: usize = 4;

macro_rules! rows_impl {
    ($t:ty) => {
        impl Rows<$t> {
            /// The mean (`sum / c`) and `1 / sqrt(variance + epsilon)` of every row, the variance in two passes
            /// (`sum((x - mean)^2) / c`), as `mean` and `moments` over the last axis compute them.
            fn of(x: &[$t], n: usize, c: usize, epsilon: $t) -> Self {
                let count = c as $t;
                let mut stats = vec![0.0 as $t; 2 * n];
                kernels::for_rows(&mut stats, 2, PASSES * n * c, |i, s| {
                    let row = &x[i * c..(i + 1) * c];
                    let mean = kernels::sum_by(row, |v: $t| v) / count;
                    let variance = kernels::sum_by(row, |v: $t| (v - mean) * (v - mean)) / count;
                    s[0] = mean;
                    s[1] = 1.0 / (variance + epsilon).sqrt();
                });
                let (mean, inv_std) = stats.chunks(2).map(|s| (s[0], s[1])).unzip();
                Rows { c, mean, inv_std }
            }

            /// `x * inv + res` with `inv = gamma * inv_std` and `res = -mean * inv + beta` per element, in
            /// Keras's order of operations.
            fn normalize(&self, x: &[$t], gamma: Option<&[$t]>, beta: Option<&[$t]>) -> Vec<$t> {
                let c = self.c;
                // Without gamma, `inv = inv_std * 1` (exact); without beta no zero is added (`-0 + 0` is `+0`).
                let ones = if gamma.is_none() { vec![1.0 as $t; c] } else { Vec::new() };
                let gamma = gamma.unwrap_or(&ones);
                let mut y = vec![0.0 as $t; x.len()];
                kernels::for_rows(&mut y, c, PASSES * x.len(), |i, row| {
                    let (m, s) = (self.mean[i], self.inv_std[i]);
                    let lanes = row.iter_mut().zip(&x[i * c..(i + 1) * c]).zip(gamma);
                    match beta {
                        Some(beta) => {
                            for (((o, &v), &g), &b) in lanes.zip(beta) {
                                let inv = s * g;
                                *o = v * inv + (-m * inv + b);
                            }
                        }
                        None => {
                            for ((o, &v), &g) in lanes {
                                let inv = s * g;
                                *o = v * inv + -m * inv;
                            }
                        }
                    }
                });
                y
            }

            /// `(dx, dgamma, dbeta)` from the output's cotangent `g`: `dx` when `need_x`, the two column sums
            /// when `need_params`.
            #[allow(clippy::type_complexity)]
            fn backward(
                &self,
                x: &[$t],
                g: &[$t],
                gamma: Option<&[$t]>,
                need_x: bool,
                need_params: bool,
            ) -> (Option<Vec<$t>>, Option<Vec<$t>>, Option<Vec<$t>>) {
                let c = self.c;
                let n = self.mean.len();
                let count = c as $t;
                let ones = if gamma.is_none() { vec![1.0 as $t; c] } else { Vec::new() };
                let gamma = gamma.unwrap_or(&ones);
                // g * x_hat, the summand of gamma's cotangent; the rows of dx are then written over it.
                let mut gx = vec![0.0 as $t; n * c];
                kernels::for_rows(&mut gx, c, PASSES * n * c, |i, row| {
                    let (m, s) = (self.mean[i], self.inv_std[i]);
                    let (xr, gr) = (&x[i * c..(i + 1) * c], &g[i * c..(i + 1) * c]);
                    for j in 0..c {
                        row[j] = gr[j] * ((xr[j] - m) * s);
                    }
                });
                let (dgamma, dbeta) = if need_params {
                    let dgamma = kernels::sum_columns_by(&gx, n, c, |v: $t| v);
                    (Some(dgamma), Some(kernels::sum_columns_by(g, n, c, |v: $t| v)))
                } else {
                    (None, None)
                };
                if !need_x {
                    return (None, dgamma, dbeta);
                }
                kernels::for_rows(&mut gx, c, PASSES * n * c, |i, row| {
                    let (m, s) = (self.mean[i], self.inv_std[i]);
                    let (xr, gr) = (&x[i * c..(i + 1) * c], &g[i * c..(i + 1) * c]);
                    // sum(g') and sum(g' * x_hat) over the row, in eight fixed lanes.
                    let (mut s1, mut s2) = ([0.0 as $t; 8], [0.0 as $t; 8]);
                    for j in 0..c {
                        s1[j % 8] += gr[j] * gamma[j];
                        s2[j % 8] += row[j] * gamma[j];
                    }
                    let lanes = |a: [$t; 8]| ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
                    let (mean_g, mean_gx) = (lanes(s1) / count, lanes(s2) / count);
                    for j in 0..c {
                        let x_hat = (xr[j] - m) * s;
                        row[j] = s * (gr[j] * gamma[j] - mean_g - x_hat * mean_gx);
                    }
                });
                (Some(gx), dgamma, dbeta)
            }
        }
    };
}

rows_impl!(f32);
rows_impl!(f64);
