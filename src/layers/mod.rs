//! Keras layers whose state lives in the store: [`Dense`], [`Conv2D`], [`MaxPooling2D`],
//! [`AveragePooling2D`], [`GlobalAveragePooling2D`], [`Flatten`], [`BatchNormalization`],
//! [`LayerNormalization`], [`Dropout`], [`Embedding`], [`PositionEmbedding`], [`Activation`], [`MultiHeadAttention`], chained by
//! [`Sequential`].
//!
//! A layer is options plus, once built, variable handles; never values. [`Layer::build`] creates its variables
//! in a [`StateStore`] with Keras's paths (`model/layer/kernel`), shapes, initializers, dtypes and trainable
//! flags, and returns the per-example output shape. [`Layer::call`] is pure: it reads its variables through a
//! [`Scope`] and assigns whatever state it changes through the same scope (BatchNormalization's moving
//! statistics, Dropout's seed state), so the state a training step returns carries it:
//!
//! ```
//! use purestate::layers::{BatchNormalization, Dense, Dropout, Layer, Sequential};
//! use purestate::{grad, losses, optim::{Adam, Optimizer}, StateStore, Tensor};
//! let mut state = StateStore::new();
//! let mut model = Sequential::new("mlp")
//!     .add(Dense::new(16).activation("relu"))
//!     .add(BatchNormalization::new())
//!     .add(Dropout::new(0.2).seed(1))
//!     .add(Dense::new(3));
//! model.build(&mut state, &[4])?;                                    // per-example input shape
//! let mut opt = Adam::new(1e-2);
//! let weights = model.trainable_weights();
//! opt.build(&mut state, &weights)?;
//!
//! let x = Tensor::from([[0.5f32, -1.0, 2.0, 0.0], [1.0, 1.0, -1.0, 3.0]]);
//! let y = Tensor::from([0i32, 2]);
//! let out = grad::value_and_grad_aux(state, |scope| {
//!     let logits = model.call(scope, &x, true)?;                     // training: batch statistics, a mask
//!     Ok((losses::sparse_categorical_crossentropy(&y, &logits, true)?, logits))
//! })?;
//! let next = opt.apply(out.state, &out.grads)?;                      // moving statistics and seed state kept
//! let moving = next.find("mlp/batch_normalization/moving_mean")?;
//! assert!(next.get(&moving)?.to_f64_vec().iter().any(|&m| m != 0.0));
//! # Ok::<(), purestate::Error>(())
//! ```
//!
//! Names: a layer built by a [`Sequential`] gets the name it was given ([`Dense::name`], ...) or Keras's
//! default (`dense`, `dense_1`, ... unique within the model) and the path `model/name`; a layer built alone
//! with [`build`] gets the first free default name at the top level. Dropout's seed generator is
//! created, as Keras creates it, outside the model's scope: `seed_generator/seed_generator_state`,
//! `seed_generator_1/...`.
//!
//! Errors name the layer's path and the shapes: an input of the wrong rank or channel count
//! ([`Error::LayerInput`]), a state that lacks the layer's variables ([`Error::ForeignVariable`],
//! [`Error::StaleVariable`]), a layer called before it was built, or an option outside its domain.

mod attention;
mod conv;
mod dense;
mod dropout;
mod embedding;
mod norm;
mod sequential;

use std::fmt;

pub use attention::MultiHeadAttention;
pub use conv::{AveragePooling2D, Conv2D, Flatten, GlobalAveragePooling2D, MaxPooling2D};
pub use dense::Dense;
pub use dropout::{Activation, Dropout};
pub use embedding::{Embedding, PositionEmbedding};
pub use norm::{BatchNormalization, LayerNormalization};
pub use sequential::Sequential;

use crate::error::{Error, Result};
use crate::scope::Scope;
use crate::store::StateStore;
use crate::tensor::{Shape, Tensor};
use crate::variable::Variable;

/// A Keras layer: options, then variables in a store, then pure calls.
pub trait Layer: fmt::Debug + Send + Sync {
    /// Keras's default name of the layer's class (`dense`, `conv2d`, `batch_normalization`, ...).
    fn default_name(&self) -> &'static str;

    /// The name given to the layer, if any.
    fn name(&self) -> Option<&str>;

    /// Creates the layer's variables in `state` under the name scope `path`, for inputs whose per-example
    /// shape (without the batch axis) is `input_shape`, and returns the per-example output shape.
    ///
    /// # Errors
    /// [`Error::LayerInput`] when the layer cannot take inputs of that shape or an option is outside its
    /// domain; [`Error::DuplicatePath`] when the store already holds a variable at one of its paths; the
    /// state is then unchanged.
    fn build(&mut self, state: &mut StateStore, path: &str, input_shape: &[usize]) -> Result<Vec<usize>>;

    /// The layer's output for the batch `x` (batch axis first), reading its variables through `scope` and
    /// assigning the state it changes there. `training` selects Keras's training behaviour (batch statistics,
    /// dropout).
    ///
    /// # Errors
    /// [`Error::LayerInput`] for an input the layer cannot take; [`Error::InvalidArgument`] when the layer
    /// was not built; the scope's errors for a state that lacks the layer's variables.
    fn call(&self, scope: &mut Scope, x: &Tensor, training: bool) -> Result<Tensor>;

    /// The path the layer was built under (`None` before [`build`](Self::build)).
    fn path(&self) -> Option<&str>;

    /// The layer's variables, in creation order (empty before [`build`](Self::build)).
    fn variables(&self) -> Vec<Variable>;

    /// The variables the layer creates trainable (Keras's `trainable_weights` of an unfrozen layer): all but
    /// moving statistics and seed states.
    fn trainable_weights(&self) -> Vec<Variable> {
        self.variables()
    }
}

/// Builds `layer` alone (not in a [`Sequential`]) under its name or the first free default name at the top
/// level of `state` (`dense`, `dense_1`, ...), for per-example inputs of `input_shape`; returns the output
/// shape.
///
/// # Errors
/// As [`Layer::build`].
///
/// # Examples
/// ```
/// use purestate::layers::{self, Dense, Layer};
/// use purestate::StateStore;
/// let mut state = StateStore::new();
/// let mut a = Dense::new(3);
/// let mut b = Dense::new(2);
/// assert_eq!(layers::build(&mut a, &mut state, &[4])?, [3]);
/// assert_eq!(layers::build(&mut b, &mut state, &[3])?, [2]);
/// assert_eq!(b.variables()[0].path(), "dense_1/kernel");
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn build(layer: &mut dyn Layer, state: &mut StateStore, input_shape: &[usize]) -> Result<Vec<usize>> {
    let name = match layer.name() {
        Some(name) => name.to_string(),
        None => free_name(layer.default_name(), |n| state.variables().iter().any(|v| in_scope(v.path(), n))),
    };
    layer.build(state, &name, input_shape)
}

/// Freezes (`false`) or unfreezes (`true`) `layer`, as Keras's `layer.trainable = ...`: sets the `trainable`
/// flag of its [`trainable_weights`](Layer::trainable_weights) in `state` (moving statistics and seed states
/// stay non-trainable). Freezing is a new version of the state, committed and rolled back like any other
/// change; a frozen [`BatchNormalization`] runs in inference mode, as in Keras.
///
/// # Errors
/// The store's errors for a variable it does not hold.
pub fn set_trainable(state: &mut StateStore, layer: &dyn Layer, trainable: bool) -> Result<()> {
    for var in layer.trainable_weights() {
        state.set_trainable(&var, trainable)?;
    }
    Ok(())
}

/// `base`, or `base_1`, `base_2`, ...: the first for which `taken` is false (Keras's automatic names).
pub(crate) fn free_name(base: &str, taken: impl Fn(&str) -> bool) -> String {
    (0..)
        .map(|n| if n == 0 { base.to_string() } else { format!("{base}_{n}") })
        .find(|name| !taken(name))
        .expect("an unbounded range of names has a free one")
}

/// True when `path` is `scope` or lies under it.
fn in_scope(path: &str, scope: &str) -> bool {
    path.strip_prefix(scope).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The built path of a layer, or the error for calling it unbuilt.
pub(crate) fn built<'a>(path: &'a Option<String>, class: &'static str) -> Result<&'a str> {
    path.as_deref().ok_or_else(|| Error::InvalidArgument {
        op: class,
        arg: "layer",
        reason: "the layer is not built: call `build` (or build its model) first".into(),
    })
}

/// The handle of a built layer's variable.
pub(crate) fn handle<'a>(var: &'a Option<Variable>, class: &'static str) -> Result<&'a Variable> {
    var.as_ref().ok_or_else(|| Error::InvalidArgument {
        op: class,
        arg: "layer",
        reason: "the layer is not built: call `build` (or build its model) first".into(),
    })
}

/// [`Error::LayerInput`] for the layer at `path`.
pub(crate) fn bad_input(path: &str, got: &[usize], reason: impl Into<String>) -> Error {
    Error::LayerInput { layer: path.to_string(), got: Shape::from(got.to_vec()), reason: reason.into() }
}

/// Checks that the batch `x` has rank `1 + rank` and, when given, `channels` on its last axis.
pub(crate) fn check_input(path: &str, x: &Tensor, rank: usize, channels: Option<usize>) -> Result<()> {
    if x.ndim() != rank + 1 {
        return Err(bad_input(path, x.dims(), format!("expected rank {} (a batch of rank-{rank} examples)", rank + 1)));
    }
    if let Some(c) = channels {
        if x.dims()[rank] != c {
            return Err(bad_input(path, x.dims(), format!("expected {c} channels on the last axis")));
        }
    }
    Ok(())
}

/// Keras's activation functions by name (`keras.activations.get`): the ones a layer's `activation` option
/// and the [`Activation`] layer take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ActivationFn {
    /// `linear` (none): the identity. The default.
    #[default]
    Linear,
    /// `relu`.
    Relu,
    /// `sigmoid`.
    Sigmoid,
    /// `tanh`.
    Tanh,
    /// `softmax` over the last axis.
    Softmax,
    /// `gelu`: the exact (erf) form, Keras's default (`approximate=False`).
    Gelu,
    /// `silu` (also `swish`): `x * sigmoid(x)`.
    Silu,
}

impl ActivationFn {
    /// The activation named `name` (Keras's names).
    ///
    /// # Errors
    /// [`Error::InvalidOption`] for a name this crate does not know.
    pub fn parse(name: &str) -> Result<ActivationFn> {
        Ok(match name {
            "linear" | "" => ActivationFn::Linear,
            "relu" => ActivationFn::Relu,
            "sigmoid" => ActivationFn::Sigmoid,
            "tanh" => ActivationFn::Tanh,
            "softmax" => ActivationFn::Softmax,
            "gelu" => ActivationFn::Gelu,
            "silu" | "swish" => ActivationFn::Silu,
            other => {
                return Err(Error::InvalidOption {
                    option: "activation",
                    got: other.to_string(),
                    allowed: "linear, relu, sigmoid, tanh, softmax, gelu, silu, swish",
                })
            }
        })
    }

    /// Applies the activation (traced when `x` is).
    ///
    /// # Errors
    /// The op's errors (a non-float input).
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            ActivationFn::Linear => Ok(x.clone()),
            ActivationFn::Relu => x.relu(),
            ActivationFn::Sigmoid => x.sigmoid(),
            ActivationFn::Tanh => x.tanh(),
            ActivationFn::Softmax => x.softmax(-1),
            ActivationFn::Gelu => x.gelu(false),
            ActivationFn::Silu => x.silu(),
        }
    }
}
