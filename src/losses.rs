//! Keras's losses, each with a fused, numerically stable forward and backward: [`sparse_categorical_crossentropy`],
//! [`categorical_crossentropy`], [`binary_crossentropy`], [`mean_squared_error`], and the [`softmax`] and
//! [`log_softmax`] activations.
//!
//! Conventions are Keras 3's (keras/src/losses/losses.py and keras/src/backend/jax/nn.py, Keras 3.15):
//! arguments `(y_true, y_pred)`, a `from_logits` flag where Keras has one, the class axis last, and the default
//! reduction `"sum_over_batch_size"`: the per-sample losses are averaged to one 0-d tensor. The loss is
//! computed in float32 for float16 and bfloat16 predictions (Keras computes losses in floatx) and in the
//! prediction's dtype otherwise (float64 stays float64); the gradient flows back through that cast to the
//! prediction's dtype. Targets get no gradient.
//!
//! From logits, the cross-entropies are one fused operation each, stable at any logit magnitude (a shifted
//! log-sum-exp; `log_sigmoid` as `-(max(-z, 0) + log1p(exp(-|z|)))`), with a fused backward:
//! `softmax(z) * sum(t) - t` for (soft) categorical targets, `softmax(z) - onehot(t)` for sparse labels,
//! `sigmoid(z) - t` for binary targets, each divided by the number of samples. From probabilities they follow
//! Keras exactly, op by op (normalize over the class axis for the categorical losses, clip to
//! `[epsilon, 1 - epsilon]` with Keras's `epsilon()` of `1e-7`, then the logarithm), and are differentiated
//! through those ops, so a probability clipped at a bound gets JAX's gradient there.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::grad::rules::loss_node;
use crate::kernels;
use crate::ops::num::Real;
use crate::ops::Axes;
use crate::tensor::{Element, Shape, Tensor};

/// Keras's `backend.epsilon()`, the clipping bound of probability inputs.
pub const EPSILON: f64 = 1e-7;

/// Softmax along `axis` (`keras.activations.softmax`, `keras.ops.softmax`); see [`Tensor::softmax`]. Its
/// backward is fused: `z * g - z * sum(z * g)`.
///
/// # Errors
/// [`Error::InvalidShape`] when `axis` is out of range.
pub fn softmax(x: &Tensor, axis: isize) -> Result<Tensor> {
    x.softmax(axis)
}

/// Log-softmax along `axis` (`keras.activations.log_softmax`, `keras.ops.log_softmax`); see
/// [`Tensor::log_softmax`]. Its backward is fused: `g - exp(z) * sum(g)`.
///
/// # Errors
/// [`Error::InvalidShape`] when `axis` is out of range.
pub fn log_softmax(x: &Tensor, axis: isize) -> Result<Tensor> {
    x.log_softmax(axis)
}

/// Cross-entropy between integer labels and predicted classes, averaged over the samples
/// (`keras.losses.SparseCategoricalCrossentropy(from_logits)`).
///
/// `y_pred` has the classes on its last axis; `y_true` holds one label per sample, with `y_pred`'s shape
/// without its last axis (or with a last axis of 1). Labels of a float dtype are truncated to integers, as
/// Keras's cast to int32. From logits the gradient is `(softmax(z) - onehot(label)) / n_samples`.
///
/// # Errors
/// [`Error::ShapeMismatch`] when the shapes do not fit; [`Error::LabelOutOfRange`] for a label outside
/// `0..classes`, in the forward pass and so in `value_and_grad` (a departure: Keras's one-hot silently gives a zero loss); [`Error::UnsupportedDType`] when
/// `y_pred` is not a float tensor; [`Error::InvalidShape`] for a 0-d `y_pred` or zero classes.
///
/// # Examples
/// ```
/// use purestate::{losses, Tensor};
/// let logits = Tensor::from([[100.0f32, 0.0, -100.0], [0.0, 0.0, 0.0]]);
/// let loss = losses::sparse_categorical_crossentropy(&Tensor::from([0i32, 2]), &logits, true)?;
/// assert!((loss.to_f64()? - 3f64.ln() / 2.0).abs() < 1e-6); // (0 + ln 3) / 2, no overflow
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn sparse_categorical_crossentropy(y_true: &Tensor, y_pred: &Tensor, from_logits: bool) -> Result<Tensor> {
    const OP: &str = "sparse_categorical_crossentropy";
    let pred = compute_dtype(OP, y_pred)?;
    let classes = classes(OP, &pred)?;
    let mut label_dims = y_true.dims().to_vec();
    if label_dims.len() == pred.ndim() && label_dims.last() == Some(&1) {
        label_dims.pop();
    }
    if label_dims != pred.dims()[..pred.ndim() - 1] {
        return Err(Error::ShapeMismatch {
            path: OP.into(),
            expected: Shape::from(&pred.dims()[..pred.ndim() - 1]),
            got: y_true.shape(),
        });
    }
    let labels = y_true.cast(DType::Int64).to_vec::<i64>()?;
    let mut index = Vec::with_capacity(labels.len());
    for (i, &l) in labels.iter().enumerate() {
        if l < 0 || l >= classes as i64 {
            return Err(Error::LabelOutOfRange { op: OP, label: l, classes, sample: i });
        }
        index.push(l as usize);
    }
    if !from_logits {
        let mut onehot = vec![0.0f64; pred.size()];
        for (row, &l) in index.iter().enumerate() {
            onehot[row * classes + l] = 1.0;
        }
        let t = Tensor::from_shape_vec(pred.shape(), onehot)?.cast(pred.dtype());
        return probabilities_crossentropy(&t, &pred);
    }
    with_compute!(pred.dtype(), T => crossentropy_from_logits::<T>(&pred, Targets::Sparse(index)))
}

/// Cross-entropy between target distributions and predicted classes, averaged over the samples
/// (`keras.losses.CategoricalCrossentropy(from_logits)`). Targets may be soft (any non-negative weights);
/// from logits the gradient is `(softmax(z) * sum(t) - t) / n_samples`.
///
/// # Errors
/// [`Error::ShapeMismatch`] when `y_true` and `y_pred` differ in shape; [`Error::UnsupportedDType`] when
/// `y_pred` is not a float tensor; [`Error::InvalidShape`] for a 0-d `y_pred` or zero classes.
pub fn categorical_crossentropy(y_true: &Tensor, y_pred: &Tensor, from_logits: bool) -> Result<Tensor> {
    const OP: &str = "categorical_crossentropy";
    let pred = compute_dtype(OP, y_pred)?;
    classes(OP, &pred)?;
    let t = same_shape(OP, y_true, &pred)?;
    if !from_logits {
        return probabilities_crossentropy(&t, &pred);
    }
    with_compute!(pred.dtype(), T => {
        let t = t.to_standard_layout().to_vec::<T>()?;
        crossentropy_from_logits::<T>(&pred, Targets::Dense(t))
    })
}

/// Binary cross-entropy, averaged over the last axis and then over the samples
/// (`keras.losses.BinaryCrossentropy(from_logits)`). From logits it is `-t log σ(z) - (1 - t) log σ(-z)` with
/// a stable `log σ`, and the gradient is `(σ(z) - t) / size`, exact at `z = 0` too.
///
/// # Errors
/// [`Error::ShapeMismatch`] when `y_true` and `y_pred` differ in shape; [`Error::UnsupportedDType`] when
/// `y_pred` is not a float tensor; [`Error::InvalidShape`] for a 0-d `y_pred`.
///
/// # Examples
/// ```
/// use purestate::{grad::ValueAndGrad, losses, StateStore, Tensor};
/// let z = Tensor::from([[0.0f32, 100.0, -100.0]]);
/// let t = Tensor::from([[1.0f32, 1.0, 1.0]]);
/// let out = ValueAndGrad::new().call(&StateStore::new(), |scope| {
///     losses::binary_crossentropy(&t, &scope.watch(&z)?, true)
/// })?;
/// assert!((out.loss.to_f64()? - (2f64.ln() + 100.0) / 3.0).abs() < 1e-5);
/// assert_eq!(out.inputs[0].to_vec::<f32>()?, [-0.5 / 3.0, 0.0, -1.0 / 3.0]);
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn binary_crossentropy(y_true: &Tensor, y_pred: &Tensor, from_logits: bool) -> Result<Tensor> {
    const OP: &str = "binary_crossentropy";
    let pred = compute_dtype(OP, y_pred)?;
    classes(OP, &pred)?;
    let t = same_shape(OP, y_true, &pred)?;
    if !from_logits {
        let p = pred.clip(EPSILON, 1.0 - EPSILON)?;
        let one_minus_t = t.neg()?.add(1.0)?;
        let bce = t.mul(&p.log()?)?.add(&one_minus_t.mul(&p.neg()?.add(1.0)?.log()?)?)?;
        return bce.neg()?.mean(-1, false)?.mean(Axes::All, false);
    }
    with_compute!(pred.dtype(), T => {
        let t = t.to_standard_layout().to_vec::<T>()?;
        elementwise_mean::<T>(&pred, t, bce_logits::<T>)
    })
}

/// Mean squared error, averaged over the last axis and then over the samples
/// (`keras.losses.MeanSquaredError()`); the gradient is `2 (y_pred - y_true) / size`.
///
/// # Errors
/// [`Error::ShapeMismatch`] when `y_true` and `y_pred` differ in shape; [`Error::UnsupportedDType`] when
/// `y_pred` is not a float tensor; [`Error::InvalidShape`] for a 0-d `y_pred`.
pub fn mean_squared_error(y_true: &Tensor, y_pred: &Tensor) -> Result<Tensor> {
    const OP: &str = "mean_squared_error";
    let pred = compute_dtype(OP, y_pred)?;
    classes(OP, &pred)?;
    let t = same_shape(OP, y_true, &pred)?;
    with_compute!(pred.dtype(), T => {
        let t = t.to_standard_layout().to_vec::<T>()?;
        elementwise_mean::<T>(&pred, t, |p: T, t: T| {
            let d = t - p;
            (d * d, -(d + d))
        })
    })
}

/// Runs `$body` with `$t` the compute type of a loss (`f32` or `f64`).
macro_rules! with_compute {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            DType::Float64 => {
                type $t = f64;
                $body
            }
            _ => {
                type $t = f32;
                $body
            }
        }
    };
}
use with_compute;

/// `y_pred` in the dtype the loss computes in: float32 for 16-bit floats, its own dtype otherwise.
fn compute_dtype(op: &'static str, y_pred: &Tensor) -> Result<Tensor> {
    match y_pred.dtype() {
        DType::Float16 | DType::Bfloat16 => Ok(y_pred.cast(DType::Float32)),
        DType::Float32 | DType::Float64 => Ok(y_pred.clone()),
        dtype => Err(Error::UnsupportedDType { op, dtype }),
    }
}

/// The length of the class (last) axis; an error for a 0-d prediction.
fn classes(op: &'static str, pred: &Tensor) -> Result<usize> {
    match pred.dims().last() {
        Some(&c) => Ok(c),
        None => Err(Error::InvalidShape { op, shape: pred.shape(), reason: "predictions need a class axis".into() }),
    }
}

/// `y_true`, untraced, in `pred`'s dtype, after checking it has `pred`'s shape.
fn same_shape(op: &'static str, y_true: &Tensor, pred: &Tensor) -> Result<Tensor> {
    if y_true.dims() != pred.dims() {
        return Err(Error::ShapeMismatch { path: op.into(), expected: pred.shape(), got: y_true.shape() });
    }
    Ok(crate::grad::stop_gradient(y_true).cast(pred.dtype()))
}

/// Keras's cross-entropy from probabilities, op by op: normalize over the class axis, clip, log, weigh by the
/// targets, sum over the classes, average over the samples.
fn probabilities_crossentropy(t: &Tensor, pred: &Tensor) -> Result<Tensor> {
    let p = pred.div(&pred.sum(-1, true)?)?;
    let logp = p.clip(EPSILON, 1.0 - EPSILON)?.log()?;
    t.mul(&logp)?.sum(-1, false)?.neg()?.mean(Axes::All, false)
}

/// A loss compute type.
trait LossFloat: Real + Element {
    fn of(x: f64) -> Self;
    /// The larger, NaN-propagating.
    fn max(self, o: Self) -> Self;
}

impl LossFloat for f32 {
    fn of(x: f64) -> Self {
        x as f32
    }
    fn max(self, o: Self) -> Self {
        if self >= o || self.is_nan() {
            self
        } else {
            o
        }
    }
}

impl LossFloat for f64 {
    fn of(x: f64) -> Self {
        x
    }
    fn max(self, o: Self) -> Self {
        if self >= o || self.is_nan() {
            self
        } else {
            o
        }
    }
}

enum Targets<T> {
    /// One class index per row.
    Sparse(Vec<usize>),
    /// One weight per element.
    Dense(Vec<T>),
}

/// The mean over rows of `-sum(t * log_softmax(z))`, recorded with its fused backward.
fn crossentropy_from_logits<T: LossFloat>(pred: &Tensor, targets: Targets<T>) -> Result<Tensor> {
    let z = crate::grad::stop_gradient(pred).to_standard_layout();
    let classes = *z.dims().last().expect("checked by `classes`");
    if classes == 0 {
        return Err(Error::InvalidShape { op: "crossentropy", shape: z.shape(), reason: "zero classes".into() });
    }
    let zs = z.as_slice::<T>().expect("standard layout, compute dtype");
    let n_rows = zs.len() / classes;
    // Per row: the shift `m` (the maximum, as jax.nn.log_softmax) and `ln(sum(exp(z - m)))`.
    let shift = |r: &[T]| {
        let m = r.iter().copied().fold(T::of(f64::NEG_INFINITY), LossFloat::max);
        (m, kernels::sum_by(r, |v: T| (v - m).exp()).ln())
    };
    // Per row: (m, lse, loss, total target weight).
    let rows: Vec<(T, T, T, T)> = match &targets {
        Targets::Sparse(index) => kernels::map_rows(zs, n_rows, classes, shift)
            .into_iter()
            .zip(index)
            .enumerate()
            .map(|(row, ((m, lse), &l))| (m, lse, -((zs[row * classes + l] - m) - lse), T::ONE))
            .collect(),
        Targets::Dense(t) => {
            let pairs: Vec<(T, T)> = zs.iter().copied().zip(t.iter().copied()).collect();
            kernels::map_rows(&pairs, n_rows, classes, |r| {
                let m = r.iter().fold(T::of(f64::NEG_INFINITY), |m, &(z, _)| m.max(z));
                let lse = kernels::sum_by(r, |(v, _): (T, T)| (v - m).exp()).ln();
                let loss = -kernels::sum_by(r, |(v, t): (T, T)| t * ((v - m) - lse));
                (m, lse, loss, kernels::sum_by(r, |(_, t): (T, T)| t))
            })
        }
    };
    let losses: Vec<T> = rows.iter().map(|r| r.2).collect();
    let loss = Tensor::scalar(mean(&losses));
    let dims = z.dims().to_vec();
    let rule = move |g: &Tensor| -> Result<Tensor> {
        let scale = g.cast(T::DTYPE).to_vec::<T>()?[0] / T::of(n_rows as f64);
        let zs = z.as_slice::<T>().expect("standard layout, compute dtype");
        let mut out = vec![T::ZERO; zs.len()];
        // Row by row (an exp and a few flops per element: parallel from a quarter of the usual size), each
        // element `scale * (softmax * weight - target)`.
        kernels::for_rows(&mut out, classes, 4 * zs.len(), |row, o| {
            let (m, lse, _, weight) = rows[row];
            let (zr, at) = (&zs[row * classes..(row + 1) * classes], row * classes);
            let grad = |v: T, target: T| scale * (((v - m) - lse).exp() * weight - target);
            match &targets {
                Targets::Sparse(index) => {
                    kernels::simd::dispatch(|| o.iter_mut().zip(zr).for_each(|(o, &v)| *o = grad(v, T::ZERO)));
                    o[index[row]] = grad(zr[index[row]], T::ONE);
                }
                Targets::Dense(t) => kernels::simd::dispatch(|| {
                    o.iter_mut().zip(zr).zip(&t[at..at + classes]).for_each(|((o, &v), &t)| *o = grad(v, t))
                }),
            }
        });
        Tensor::from_shape_vec(dims.as_slice(), out)
    };
    Ok(loss_node(pred, loss, rule))
}

/// The mean over rows of the mean over the last axis of `f(p, t).0`, recorded with the backward
/// `g / size * f(p, t).1`.
fn elementwise_mean<T: LossFloat>(
    pred: &Tensor,
    t: Vec<T>,
    f: impl Fn(T, T) -> (T, T) + Send + Sync + Copy + 'static,
) -> Result<Tensor> {
    let p = crate::grad::stop_gradient(pred).to_standard_layout();
    let classes = *p.dims().last().expect("checked by `classes`");
    let ps = p.as_slice::<T>().expect("standard layout, compute dtype");
    let n_rows: usize = p.dims()[..p.ndim() - 1].iter().product();
    let pairs: Vec<(T, T)> = ps.iter().copied().zip(t).collect();
    let row_means = kernels::map_rows(&pairs, n_rows, classes, |r| {
        kernels::sum_by(r, |(p, t): (T, T)| f(p, t).0) / T::of(classes as f64)
    });
    let loss = Tensor::scalar(mean(&row_means));
    let dims = p.dims().to_vec();
    let rule = move |g: &Tensor| -> Result<Tensor> {
        let scale = g.cast(T::DTYPE).to_vec::<T>()?[0] / T::of(n_rows as f64) / T::of(classes as f64);
        let mut out = vec![T::ZERO; pairs.len()];
        kernels::fill_indexed(&mut out, |i| scale * f(pairs[i].0, pairs[i].1).1);
        Tensor::from_shape_vec(dims.as_slice(), out)
    };
    Ok(loss_node(pred, loss, rule))
}

/// Binary cross-entropy from a logit `z` and its derivative `σ(z) - t`.
fn bce_logits<T: LossFloat>(z: T, t: T) -> (T, T) {
    // log σ(z) = -(max(-z, 0) + log1p(exp(-|z|))), and log σ(-z) = -(max(z, 0) + log1p(exp(-|z|))).
    let abs = if z < T::ZERO { -z } else { z };
    let tail = (-abs).exp().ln_1p();
    let log_sig = -((-z).max(T::ZERO) + tail);
    let log_sig_neg = -(z.max(T::ZERO) + tail);
    let loss = -t * log_sig - (T::ONE - t) * log_sig_neg;
    let e = (-abs).exp();
    let sigmoid = if z >= T::ZERO { T::ONE / (T::ONE + e) } else { e / (T::ONE + e) };
    (loss, sigmoid - t)
}

/// `sum(v) / len(v)` with the kernels' fixed-order sum (Keras: `sum(values) / size`).
fn mean<T: LossFloat>(v: &[T]) -> T {
    kernels::sum_by(v, |x: T| x) / T::of(v.len() as f64)
}
