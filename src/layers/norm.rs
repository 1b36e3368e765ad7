//! [`BatchNormalization`] and [`LayerNormalization`], Keras's formulas (`keras.ops.batch_normalization`:
//! `x * inv + (beta - mean * inv)` with `inv = gamma / sqrt(variance + epsilon)`).

use super::{bad_input, built, handle, Layer};
use crate::dtype::DType;
use crate::error::Result;
use crate::init;
use crate::ops;
use crate::scope::Scope;
use crate::store::StateStore;
use crate::tensor::Tensor;
use crate::variable::{Aggregation, Variable, VariableSpec};

/// The variables both normalizations share: an optional scale and offset of the normalized axis.
#[derive(Clone, Debug, Default)]
struct Affine {
    gamma: Option<Variable>,
    beta: Option<Variable>,
}

impl Affine {
    fn create(state: &mut StateStore, path: &str, dim: usize, scale: bool, center: bool) -> Result<Affine> {
        let gamma = scale
            .then(|| state.create(VariableSpec::new(init::Ones).shape([dim]).name("gamma").name_scope(path)))
            .transpose()?;
        let beta = center
            .then(|| state.create(VariableSpec::new(init::Zeros).shape([dim]).name("beta").name_scope(path)))
            .transpose()?;
        Ok(Affine { gamma, beta })
    }

    /// `x * inv + (beta - mean * inv)`, `inv = gamma * rsqrt(variance + epsilon)`, in `x`'s dtype; `mean` and
    /// `variance` broadcast against `x`.
    fn normalize(&self, scope: &Scope, x: &Tensor, mean: &Tensor, variance: &Tensor, epsilon: f64) -> Result<Tensor> {
        let mut inv = variance.add(epsilon)?.rsqrt()?;
        if let Some(gamma) = &self.gamma {
            inv = inv.mul(scope.get(gamma)?.cast(x.dtype()))?;
        }
        let mut res = mean.neg()?.mul(&inv)?;
        if let Some(beta) = &self.beta {
            res = res.add(scope.get(beta)?.cast(x.dtype()))?;
        }
        x.mul(&inv)?.add(&res)
    }

    fn variables(&self) -> impl Iterator<Item = &Variable> {
        self.gamma.iter().chain(self.beta.iter())
    }
}

/// `x` in float32 when it is a 16-bit float (Keras computes normalization statistics in float32).
fn widened(x: &Tensor) -> Tensor {
    match x.dtype() {
        DType::Float16 | DType::Bfloat16 => x.cast(DType::Float32),
        _ => x.clone(),
    }
}

/// Normalizes each channel (the last axis) by the batch's statistics in training and by moving averages in
/// inference (Keras's `BatchNormalization`, `axis=-1`).
///
/// Variables, in Keras's order: `gamma` (ones) and `beta` (zeros), trainable; `moving_mean` (zeros) and
/// `moving_variance` (ones), non-trainable; each of shape `(channels,)`. In training each call assigns
/// `moving = moving * momentum + batch * (1 - momentum)` through the scope, with the batch's mean and biased
/// variance over every axis but the last, computed in float32. Defaults: momentum 0.99, epsilon 1e-3, center
/// and scale. A layer whose `gamma`/`beta` are frozen ([`super::set_trainable`]) runs in inference mode, as
/// Keras's `trainable = False`.
///
/// Data-parallel replicas: the moving statistics have aggregation `mean` (Keras leaves them `none`, which
/// in our replicas would make two replicas' assignments an error): each replica updates them from its own
/// shard, and the combined state holds the mean of the replicas' values, which for equal shards is the
/// moving mean of the whole batch's mean (the variance is the mean of the shards' variances, as
/// unsynchronized BatchNorm under TensorFlow's `MirroredStrategy`).
///
/// # Examples
/// ```
/// use purestate::layers::{self, BatchNormalization, Layer};
/// use purestate::{Scope, StateStore, Tensor};
/// let mut state = StateStore::new();
/// let mut bn = BatchNormalization::new().momentum(0.5);
/// layers::build(&mut bn, &mut state, &[2])?;
/// let mut scope = Scope::new(&state);
/// let y = bn.call(&mut scope, &Tensor::from([[1.0f32, 10.0], [3.0, 30.0]]), true)?;
/// let (next, _) = scope.finish();
/// assert_eq!(next.get(bn.moving_mean().unwrap())?.to_vec::<f32>()?, [1.0, 10.0]); // 0.5 * 0 + 0.5 * mean
/// assert!(y.to_vec::<f32>()?[0] < 0.0);
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct BatchNormalization {
    momentum: f64,
    epsilon: f64,
    center: bool,
    scale: bool,
    name: Option<String>,
    path: Option<String>,
    affine: Affine,
    moving_mean: Option<Variable>,
    moving_variance: Option<Variable>,
}

impl Default for BatchNormalization {
    fn default() -> Self {
        BatchNormalization::new()
    }
}

impl BatchNormalization {
    /// Keras's defaults: momentum 0.99, epsilon 1e-3, center and scale.
    pub fn new() -> BatchNormalization {
        BatchNormalization {
            momentum: 0.99,
            epsilon: 1e-3,
            center: true,
            scale: true,
            name: None,
            path: None,
            affine: Affine::default(),
            moving_mean: None,
            moving_variance: None,
        }
    }

    /// The weight of the old value in the moving averages (default 0.99).
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Added to the variance (default 1e-3).
    pub fn epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = epsilon;
        self
    }

    /// Whether to add `beta` (default true).
    pub fn center(mut self, center: bool) -> Self {
        self.center = center;
        self
    }

    /// Whether to multiply by `gamma` (default true).
    pub fn scale(mut self, scale: bool) -> Self {
        self.scale = scale;
        self
    }

    /// The layer's name (default `batch_normalization`, ...).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The moving mean, once built.
    pub fn moving_mean(&self) -> Option<&Variable> {
        self.moving_mean.as_ref()
    }

    /// The moving variance, once built.
    pub fn moving_variance(&self) -> Option<&Variable> {
        self.moving_variance.as_ref()
    }

    /// True when the layer trains (Keras's `layer.trainable`): its `gamma` or `beta` is trainable in the
    /// state (a layer with neither always trains its statistics).
    fn trains(&self, scope: &Scope) -> Result<bool> {
        let mut flags = self.affine.variables().map(|v| scope.state().trainable(v));
        match flags.next() {
            None => Ok(true),
            Some(first) => flags.try_fold(first?, |acc, f| Ok(acc || f?)),
        }
    }
}

impl Layer for BatchNormalization {
    fn default_name(&self) -> &'static str {
        "batch_normalization"
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn build(&mut self, state: &mut StateStore, path: &str, input_shape: &[usize]) -> Result<Vec<usize>> {
        let Some(&channels) = input_shape.last() else {
            return Err(bad_input(path, input_shape, "expected examples of rank 1 or more"));
        };
        if !(0.0..=1.0).contains(&self.momentum) || self.epsilon.is_nan() || self.epsilon <= 0.0 {
            return Err(bad_input(path, input_shape, "`momentum` must be in [0, 1] and `epsilon` positive"));
        }
        let mut staged = state.clone();
        let affine = Affine::create(&mut staged, path, channels, self.scale, self.center)?;
        let stat = |name: &str, initial: bool| {
            let spec = if initial { VariableSpec::new(init::Ones) } else { VariableSpec::new(init::Zeros) };
            spec.shape([channels])
                .name(name)
                .name_scope(path)
                .trainable(false)
                .autocast(false)
                .aggregation(Aggregation::Mean)
        };
        let mean = staged.create(stat("moving_mean", false))?;
        let variance = staged.create(stat("moving_variance", true))?;
        *state = staged;
        (self.affine, self.moving_mean, self.moving_variance) = (affine, Some(mean), Some(variance));
        self.path = Some(path.to_string());
        Ok(input_shape.to_vec())
    }

    fn call(&self, scope: &mut Scope, x: &Tensor, training: bool) -> Result<Tensor> {
        let path = built(&self.path, "BatchNormalization")?;
        let (mm, mv) =
            (handle(&self.moving_mean, "BatchNormalization")?, handle(&self.moving_variance, "BatchNormalization")?);
        let channels = mm.shape().dims()[0];
        if x.ndim() < 2 || x.dims()[x.ndim() - 1] != channels {
            return Err(bad_input(
                path,
                x.dims(),
                format!("expected a batch with {channels} channels on the last axis"),
            ));
        }
        let input_dtype = x.dtype();
        let x = widened(x);
        let moving_mean = scope.get(mm)?.cast(x.dtype());
        let moving_variance = scope.get(mv)?.cast(x.dtype());
        let y = if training && self.trains(scope)? {
            // One fused op: the batch statistics, the output and its backward (`ops::batch_norm_train`).
            let gamma = self.affine.gamma.as_ref().map(|g| scope.get(g).map(|g| g.cast(x.dtype()))).transpose()?;
            let beta = self.affine.beta.as_ref().map(|b| scope.get(b).map(|b| b.cast(x.dtype()))).transpose()?;
            let (y, mean, variance) = ops::batch_norm_train(&x, gamma.as_ref(), beta.as_ref(), self.epsilon)?;
            let m = self.momentum;
            scope.assign(mm, moving_mean.mul(m)?.add(&mean.mul(1.0 - m)?)?)?;
            scope.assign(mv, moving_variance.mul(m)?.add(&variance.mul(1.0 - m)?)?)?;
            y
        } else {
            self.affine.normalize(scope, &x, &moving_mean, &moving_variance, self.epsilon)?
        };
        Ok(if y.dtype() == input_dtype { y } else { y.cast(input_dtype) })
    }

    fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    fn variables(&self) -> Vec<Variable> {
        self.affine.variables().chain(self.moving_mean.iter()).chain(self.moving_variance.iter()).cloned().collect()
    }

    fn trainable_weights(&self) -> Vec<Variable> {
        self.affine.variables().cloned().collect()
    }
}

/// Normalizes each example over its last axis (Keras's `LayerNormalization`, `axis=-1`): the same formula
/// as [`BatchNormalization`] with the example's own mean and biased variance, in training and inference
/// alike. Variables `gamma` (ones) and `beta` (zeros) of shape `(features,)`; epsilon 1e-3 by default. It runs
/// as one fused operation with its own backward ([`ops::layer_norm`]), whose output has the bits of Keras's
/// composed formula.
///
/// # Examples
/// ```
/// use purestate::layers::{self, Layer, LayerNormalization};
/// use purestate::{Scope, StateStore, Tensor};
/// let mut state = StateStore::new();
/// let mut ln = LayerNormalization::new();
/// layers::build(&mut ln, &mut state, &[3])?;
/// let y = ln.call(&mut Scope::new(&state), &Tensor::from([[1.0f32, 2.0, 3.0]]), false)?;
/// assert!(y.to_vec::<f32>()?[1].abs() < 1e-6);
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct LayerNormalization {
    epsilon: f64,
    center: bool,
    scale: bool,
    name: Option<String>,
    path: Option<String>,
    features: usize,
    affine: Affine,
}

impl Default for LayerNormalization {
    fn default() -> Self {
        LayerNormalization::new()
    }
}

impl LayerNormalization {
    /// Keras's defaults: epsilon 1e-3, center and scale.
    pub fn new() -> LayerNormalization {
        LayerNormalization {
            epsilon: 1e-3,
            center: true,
            scale: true,
            name: None,
            path: None,
            features: 0,
            affine: Affine::default(),
        }
    }

    /// Added to the variance (default 1e-3).
    pub fn epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = epsilon;
        self
    }

    /// Whether to add `beta` (default true).
    pub fn center(mut self, center: bool) -> Self {
        self.center = center;
        self
    }

    /// Whether to multiply by `gamma` (default true).
    pub fn scale(mut self, scale: bool) -> Self {
        self.scale = scale;
        self
    }

    /// The layer's name (default `layer_normalization`, ...).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

impl Layer for LayerNormalization {
    fn default_name(&self) -> &'static str {
        "layer_normalization"
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn build(&mut self, state: &mut StateStore, path: &str, input_shape: &[usize]) -> Result<Vec<usize>> {
        let Some(&features) = input_shape.last() else {
            return Err(bad_input(path, input_shape, "expected examples of rank 1 or more"));
        };
        if self.epsilon.is_nan() || self.epsilon <= 0.0 {
            return Err(bad_input(path, input_shape, "`epsilon` must be positive"));
        }
        let mut staged = state.clone();
        let affine = Affine::create(&mut staged, path, features, self.scale, self.center)?;
        *state = staged;
        (self.affine, self.features, self.path) = (affine, features, Some(path.to_string()));
        Ok(input_shape.to_vec())
    }

    fn call(&self, scope: &mut Scope, x: &Tensor, _training: bool) -> Result<Tensor> {
        let path = built(&self.path, "LayerNormalization")?;
        if x.ndim() < 2 || x.dims()[x.ndim() - 1] != self.features {
            let reason = format!("expected a batch with {} features on the last axis", self.features);
            return Err(bad_input(path, x.dims(), reason));
        }
        let input_dtype = x.dtype();
        let x = widened(x);
        let gamma = self.affine.gamma.as_ref().map(|v| scope.get(v).map(|t| t.cast(x.dtype()))).transpose()?;
        let beta = self.affine.beta.as_ref().map(|v| scope.get(v).map(|t| t.cast(x.dtype()))).transpose()?;
        let y = ops::layer_norm(&x, gamma.as_ref(), beta.as_ref(), self.epsilon)?;
        Ok(if y.dtype() == input_dtype { y } else { y.cast(input_dtype) })
    }

    fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    fn variables(&self) -> Vec<Variable> {
        self.affine.variables().cloned().collect()
    }
}
