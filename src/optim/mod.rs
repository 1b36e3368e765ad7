//! Optimizers as pure functions of the state: `build` creates slot variables in the store, and
//! `apply(state, &grads)` returns the next state (Keras's `stateless_apply`).
//!
//! [`Optimizer`] is the trait; [`Sgd`], [`Adam`], [`AdamW`], [`RmsProp`] and [`Adagrad`] implement Keras 3's
//! exact update rules and defaults. Every optimizer shares the options of Keras's base optimizer
//! ([`Options`]): a constant or scheduled learning rate, weight decay, and one of clipnorm, clipvalue or
//! global_clipnorm.
//!
//! Each variable's update is one fused kernel pass over the parameter, its slots and its gradient, with
//! clipping and weight decay folded in. The state is taken by value: a buffer nothing else holds is updated
//! in place; one that a snapshot or the history still holds is copied first (donation by ownership).
//!
//! Order of one `apply`, as Keras's `BaseOptimizer.apply`: variables with `overwrite_with_gradient` take their
//! gradient as their value; the other gradients are clipped; weight decay `p -= p * wd * lr`; the update rule
//! (with the rate of the current iteration, so step 1 uses `schedule(0)`); the iteration counter advances; each
//! updated variable's constraint is applied.

mod adagrad;
mod adam;
mod apply;
mod rmsprop;
pub mod schedule;
mod sgd;

use std::fmt;
use std::sync::Arc;

pub use adagrad::Adagrad;
pub use adam::{Adam, AdamW};
pub use rmsprop::RmsProp;
pub use schedule::{CosineDecay, ExponentialDecay, PiecewiseConstantDecay, Schedule};
pub use sgd::Sgd;

use crate::error::Result;
use crate::grad::Grads;
use crate::store::StateStore;
use crate::variable::Variable;

/// A pure optimizer (Keras 3's `Optimizer` with `stateless_apply`).
///
/// # Examples
/// ```
/// use purestate::{init, grad::Grads, optim::{Optimizer, Sgd}, StateStore, Tensor, VariableSpec};
/// let mut state = StateStore::new();
/// let w = state.create(VariableSpec::new(init::Ones).shape([2]).name("w"))?;
/// let mut opt = Sgd::new(0.1);
/// opt.build(&mut state, &[w.clone()])?;
/// let grads = Grads::from_pairs([(w.clone(), Tensor::from([1.0f32, -2.0]))])?;
/// let next = opt.apply(state, &grads)?;       // `state` is moved: its buffers may be reused
/// assert_eq!(next.get(&w)?.to_vec::<f32>()?, [0.9, 1.2]);
/// assert_eq!(opt.iterations(&next)?, 1);
/// # Ok::<(), purestate::Error>(())
/// ```
///
/// A store moved into `apply` cannot be read again, so no one can observe a buffer updated in place:
/// ```compile_fail,E0382
/// use purestate::{init, grad::Grads, optim::{Optimizer, Sgd}, StateStore, VariableSpec};
/// let mut state = StateStore::new();
/// let w = state.create(VariableSpec::new(init::Ones).shape([2]).name("w")).unwrap();
/// let mut opt = Sgd::new(0.1);
/// opt.build(&mut state, &[w.clone()]).unwrap();
/// let next = opt.apply(state, &Grads::new()).unwrap();
/// let _ = state.get(&w); // error[E0382]: borrow of moved value: `state`
/// ```
pub trait Optimizer: fmt::Debug + Send + Sync {
    /// Keras's name of the optimizer, the name scope of its variables (`"adam"`, `"rm_sprop"`).
    fn name(&self) -> &str;

    /// Creates the slot variables of `vars` (and, once, the iteration counter and learning-rate variable) as
    /// non-trainable variables under the optimizer's name scope, with Keras's paths
    /// (`adam/dense_kernel_momentum`). Variables built before are skipped, so `build` may be called again for
    /// new variables.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for conflicting options (more than one of
    /// clipnorm, clipvalue, global_clipnorm) or a non-float variable; store errors for foreign or stale
    /// variables and clashing paths.
    fn build(&mut self, state: &mut StateStore, vars: &[Variable]) -> Result<()>;

    /// The next state: parameters, slots and iteration counter advanced by one step of `grads`.
    ///
    /// # Errors
    /// [`Error::NotBuilt`](crate::Error::NotBuilt) before `build`;
    /// [`Error::UnknownGradient`](crate::Error::UnknownGradient) for a variable the optimizer was not built
    /// for; [`Error::FrozenGradient`](crate::Error::FrozenGradient) for a non-trainable one;
    /// [`Error::ShapeMismatch`](crate::Error::ShapeMismatch) for a gradient of the wrong shape;
    /// [`Error::MissingGradient`](crate::Error::MissingGradient) for a trainable built variable without a
    /// gradient, unless missing gradients are allowed. Every check runs before anything is updated.
    fn apply(&self, state: StateStore, grads: &Grads) -> Result<StateStore>;

    /// The variables the optimizer built for, in build order.
    fn built_variables(&self) -> Vec<Variable>;

    /// The optimizer's own variables (iteration counter, learning rate, slots), in creation order.
    fn variables(&self) -> Vec<Variable>;

    /// The number of steps applied in `state` (Keras: `optimizer.iterations`).
    ///
    /// # Errors
    /// [`Error::NotBuilt`](crate::Error::NotBuilt); store errors.
    fn iterations(&self, state: &StateStore) -> Result<i64>;

    /// The learning rate the next step of `state` will use.
    ///
    /// # Errors
    /// [`Error::NotBuilt`](crate::Error::NotBuilt); store errors.
    fn learning_rate(&self, state: &StateStore) -> Result<f32>;
}

/// The learning rate: a constant (kept in the store as the variable `<name>/learning_rate`, as Keras does, so
/// it can be changed by a new version of the state) or a schedule of the iteration count.
#[derive(Clone, Debug)]
pub enum LearningRate {
    /// A constant rate.
    Constant(f64),
    /// A rate computed from the iteration count.
    Schedule(Arc<dyn Schedule>),
}

impl From<f64> for LearningRate {
    fn from(rate: f64) -> Self {
        LearningRate::Constant(rate)
    }
}

impl From<f32> for LearningRate {
    fn from(rate: f32) -> Self {
        LearningRate::Constant(f64::from(rate))
    }
}

impl<S: Schedule + 'static> From<S> for LearningRate {
    fn from(schedule: S) -> Self {
        LearningRate::Schedule(Arc::new(schedule))
    }
}

/// Options every optimizer has (Keras's `BaseOptimizer` arguments), set with the optimizers' builder methods.
#[derive(Clone, Debug)]
pub struct Options {
    /// The learning rate.
    pub learning_rate: LearningRate,
    /// Decoupled weight decay `p -= p * weight_decay * lr` before the update.
    pub weight_decay: Option<f64>,
    /// Clip each gradient to this L2 norm.
    pub clipnorm: Option<f64>,
    /// Clip each gradient element to `[-clipvalue, clipvalue]`.
    pub clipvalue: Option<f64>,
    /// Scale all gradients so their global L2 norm is at most this.
    pub global_clipnorm: Option<f64>,
    /// Skip built variables without a gradient instead of refusing (Keras skips `None` gradients).
    pub allow_missing_gradients: bool,
}

impl Options {
    fn new(learning_rate: LearningRate) -> Self {
        Options {
            learning_rate,
            weight_decay: None,
            clipnorm: None,
            clipvalue: None,
            global_clipnorm: None,
            allow_missing_gradients: false,
        }
    }
}

/// The builder methods of [`Options`], for each optimizer type.
macro_rules! common_options {
    ($t:ty) => {
        impl $t {
            /// Sets a scheduled (or constant) learning rate.
            pub fn learning_rate(mut self, rate: impl Into<$crate::optim::LearningRate>) -> Self {
                self.core.options.learning_rate = rate.into();
                self
            }
            /// Decoupled weight decay: `p -= p * weight_decay * lr` before each update.
            pub fn weight_decay(mut self, weight_decay: f64) -> Self {
                self.core.options.weight_decay = Some(weight_decay);
                self
            }
            /// Clips each gradient to this L2 norm (Keras: `clipnorm`).
            pub fn clipnorm(mut self, clipnorm: f64) -> Self {
                self.core.options.clipnorm = Some(clipnorm);
                self
            }
            /// Clips each gradient element to `[-clipvalue, clipvalue]` (Keras: `clipvalue`).
            pub fn clipvalue(mut self, clipvalue: f64) -> Self {
                self.core.options.clipvalue = Some(clipvalue);
                self
            }
            /// Scales all gradients so that their global L2 norm is at most this (Keras: `global_clipnorm`).
            pub fn global_clipnorm(mut self, global_clipnorm: f64) -> Self {
                self.core.options.global_clipnorm = Some(global_clipnorm);
                self
            }
            /// Skips built variables that have no gradient instead of refusing the step.
            pub fn allow_missing_gradients(mut self, allow: bool) -> Self {
                self.core.options.allow_missing_gradients = allow;
                self
            }
            /// The options shared by every optimizer.
            pub fn options(&self) -> &$crate::optim::Options {
                &self.core.options
            }
        }

        impl $crate::optim::Optimizer for $t {
            fn name(&self) -> &str {
                self.core.name
            }
            fn build(&mut self, state: &mut $crate::StateStore, vars: &[$crate::Variable]) -> $crate::Result<()> {
                let slots = self.rule.slots();
                self.core.build(state, vars, &slots)
            }
            fn apply(
                &self,
                state: $crate::StateStore,
                grads: &$crate::grad::Grads,
            ) -> $crate::Result<$crate::StateStore> {
                self.core.apply(&self.rule, state, grads)
            }
            fn built_variables(&self) -> Vec<$crate::Variable> {
                self.core.built_variables()
            }
            fn variables(&self) -> Vec<$crate::Variable> {
                self.core.variables()
            }
            fn iterations(&self, state: &$crate::StateStore) -> $crate::Result<i64> {
                self.core.iterations(state)
            }
            fn learning_rate(&self, state: &$crate::StateStore) -> $crate::Result<f32> {
                let step = self.core.iterations(state)?;
                self.core.rate(state, step)
            }
        }
    };
}
pub(crate) use common_options;

pub(crate) use apply::{fused, Core, Rule, UpdateConsts, VarLane};
