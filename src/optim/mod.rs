//! Optimizers as pure functions of the state: `build` creates slot variables in the store, and
//! `apply(state, &grads)` returns the next state (Keras's `stateless_apply`).
//!
//! [`Optimizer`] is the trait; [`Sgd`], [`Adam`], [`AdamW`], [`RmsProp`] and [`Adagrad`] implement Keras 3's
//! exact update rules and defaults. Every optimizer shares the options of Keras's base optimizer
//! ([`Options`]): a constant or scheduled learning rate, weight decay, one of clipnorm, clipvalue or
//! global_clipnorm, an exponential moving average of the weights (`use_ema`, `ema_overwrite_frequency`) and
//! gradient accumulation (`gradient_accumulation_steps`). [`LossScaleOptimizer`] wraps any of them with
//! Keras's dynamic loss scaling. All of this state (moving averages, gradient accumulators, the loss scale and
//! its counter) is optimizer variables in the store, so it is committed, checkpointed, fingerprinted and rolled
//! back with the weights.
//!
//! Each variable's update is one fused kernel pass over the parameter, its slots and its gradient, with
//! clipping and weight decay folded in. The state is taken by value: a buffer nothing else holds is updated
//! in place; one that a snapshot or the history still holds is copied first (donation by ownership).
//!
//! Order of one `apply`, as Keras's `BaseOptimizer.apply`: variables with `overwrite_with_gradient` take their
//! gradient as their value; the other gradients are clipped; weight decay `p -= p * wd * lr`; the update rule
//! (with the rate of the current iteration, so step 1 uses `schedule(0)`); the moving averages (`use_ema`) and
//! their overwrite of the weights; each updated variable's constraint; the iteration counter advances. With
//! `gradient_accumulation_steps(n)` only every n-th call runs the clipping, weight decay and update, with the
//! mean of the n gradients; the other calls add their gradients to the accumulators (keras/src/optimizers/
//! base_optimizer.py and keras/src/backend/jax/optimizer.py, Keras 3.15).
//!
//! ## Moving averages of the weights
//!
//! `use_ema(momentum)` keeps `<optimizer>/<path>_average` beside each built variable. Evaluate the averaged
//! model through [`Optimizer::ema_state`], a snapshot that shares the averages' buffers and leaves the
//! training state as it is; end training with [`Optimizer::finalize_variable_values`].
//!
//! ```
//! use purestate::{grad::Grads, optim::{Adam, Optimizer}, StateStore, Tensor, Trainer, VariableSpec};
//! let mut state = StateStore::new();
//! let w = state.create(VariableSpec::new(Tensor::from([1.0f32, 2.0])).name("kernel").name_scope("dense"))?;
//! let mut opt = Adam::new(0.01).use_ema(0.9).ema_overwrite_frequency(100);
//! opt.build(&mut state, &[w.clone()])?;
//! let average = opt.average(&w).unwrap();
//! assert_eq!(average.path(), "adam/dense_kernel_average");
//!
//! let mut trainer: Trainer = Trainer::new(state);
//! for g in [0.5f32, -0.25, 1.0] {
//!     let grads = Grads::from_pairs([(w.clone(), Tensor::from([g, g]))])?;
//!     let next = opt.apply(trainer.state().clone(), &grads)?;
//!     trainer.commit(next)?; // the averages are versioned with the weights
//! }
//! let eval = opt.ema_state(trainer.state())?; // O(1) per variable, nothing copied
//! assert_eq!(eval.get(&w)?.to_vec::<f32>()?, trainer.state().get(&average)?.to_vec::<f32>()?);
//! assert_ne!(trainer.state().get(&w)?.to_vec::<f32>()?, eval.get(&w)?.to_vec::<f32>()?);
//! let done = opt.finalize_variable_values(trainer.state().clone())?; // Keras's end of `fit`
//! assert_eq!(done.fingerprint(), eval.fingerprint());
//! # Ok::<(), purestate::Error>(())
//! ```

mod accumulate;
mod adagrad;
mod adam;
mod apply;
mod ema;
mod loss_scale;
mod rmsprop;
pub mod schedule;
mod sgd;

use std::fmt;
use std::sync::Arc;

pub use adagrad::Adagrad;
pub use adam::{Adam, AdamW};
pub use loss_scale::LossScaleOptimizer;
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
    /// (`adam/dense_kernel_momentum`), in Keras's order: with `use_ema` the moving averages
    /// (`adam/dense_kernel_average`) and with `gradient_accumulation_steps` the accumulators
    /// (`adam/dense_kernel_gradient_accumulator`) come before the slots. Variables built before get only what
    /// they lack, so `build` may be called again for new variables, or after a change of options.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument), naming the optimizer and the argument, for
    /// options outside their domain (more than one of clipnorm, clipvalue, global_clipnorm; a momentum outside
    /// `[0, 1]`; `ema_overwrite_frequency` 0 or without `use_ema`; `gradient_accumulation_steps` below 2) or a
    /// non-float variable; store errors for foreign or stale variables and clashing paths. On error `state`
    /// and the optimizer are unchanged.
    fn build(&mut self, state: &mut StateStore, vars: &[Variable]) -> Result<()>;

    /// The next state: parameters, slots, moving averages, accumulators and iteration counter advanced by one
    /// step of `grads`.
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

    /// The optimizer's own variables (iteration counter, learning rate, moving averages, gradient accumulators,
    /// slots; a [`LossScaleOptimizer`]'s scale and counter first), in creation order.
    fn variables(&self) -> Vec<Variable>;

    /// The number of steps applied in `state` (Keras: `optimizer.iterations`): the calls to `apply`, or under
    /// gradient accumulation the weight updates (`calls // steps`, while the `iteration` variable counts the
    /// calls). A step a [`LossScaleOptimizer`] skips does not count.
    ///
    /// # Errors
    /// [`Error::NotBuilt`](crate::Error::NotBuilt); store errors.
    fn iterations(&self, state: &StateStore) -> Result<i64>;

    /// The learning rate the next step of `state` will use.
    ///
    /// # Errors
    /// [`Error::NotBuilt`](crate::Error::NotBuilt); store errors.
    fn learning_rate(&self, state: &StateStore) -> Result<f32>;

    /// Runs every check [`apply`](Self::apply) runs on `grads` (built, known, trainable variables, shapes,
    /// missing gradients, options), without applying anything. O(number of gradients).
    ///
    /// [`LossScaleOptimizer`] calls it before it skips a step with non-finite gradients, so that a wrong
    /// gradient is an error whether or not it is finite.
    ///
    /// # Errors
    /// The errors of [`apply`](Self::apply) that concern its arguments.
    fn check_gradients(&self, state: &StateStore, grads: &Grads) -> Result<()> {
        let _ = (state, grads);
        Ok(())
    }

    /// The moving-average variable of `var` (Keras: `<optimizer>/<path>_average`), when the optimizer was
    /// built with [`use_ema`](Sgd::use_ema) for `var`. Variables with `overwrite_with_gradient` have none, as
    /// in Keras.
    fn average(&self, var: &Variable) -> Option<Variable> {
        let _ = var;
        None
    }

    /// A state in which every built variable that has a moving average holds that average, to evaluate the
    /// averaged model without changing `state` (the training state keeps its weights).
    ///
    /// O(number of built variables): the result is a snapshot of `state` whose variables share the averages'
    /// buffers; nothing is copied. It derives from the same committed version as `state`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) when the optimizer keeps no averages (built
    /// without `use_ema`); [`Error::NotBuilt`](crate::Error::NotBuilt); store errors.
    ///
    /// # Examples
    /// ```
    /// use purestate::{grad::Grads, optim::{Optimizer, Sgd}, StateStore, Tensor, VariableSpec};
    /// let mut state = StateStore::new();
    /// let w = state.create(VariableSpec::new(Tensor::from([1.0f32])).name("w"))?;
    /// let mut opt = Sgd::new(0.25).use_ema(0.5);
    /// opt.build(&mut state, &[w.clone()])?;
    /// let g = Grads::from_pairs([(w.clone(), Tensor::from([1.0f32]))])?;
    /// let state = opt.apply(state, &g)?; // w = 0.75, average = w (the first step copies)
    /// let state = opt.apply(state, &g)?; // w = 0.5, average = 0.5 * 0.75 + 0.5 * 0.5
    /// let eval = opt.ema_state(&state)?;
    /// assert_eq!(eval.get(&w)?.to_vec::<f32>()?, [0.625]);
    /// assert_eq!(state.get(&w)?.to_vec::<f32>()?, [0.5]); // the training state is unchanged
    /// # Ok::<(), purestate::Error>(())
    /// ```
    fn ema_state(&self, state: &StateStore) -> Result<StateStore> {
        let _ = state;
        Err(crate::error::Error::InvalidArgument {
            op: "Optimizer::ema_state",
            arg: "use_ema",
            reason: format!("optimizer `{}` keeps no moving averages (build it with `use_ema`)", self.name()),
        })
    }

    /// The state at the end of training (Keras: `finalize_variable_values`): with `use_ema`, every built
    /// variable that has a moving average takes it as its value; otherwise `state` unchanged.
    ///
    /// O(number of built variables); buffers are shared, not copied.
    ///
    /// # Errors
    /// [`Error::NotBuilt`](crate::Error::NotBuilt); store errors.
    fn finalize_variable_values(&self, state: StateStore) -> Result<StateStore> {
        Ok(state)
    }
}

/// A boxed optimizer is an optimizer, so that one chosen at run time can be wrapped (in a
/// [`LossScaleOptimizer`], say).
impl<O: Optimizer + ?Sized> Optimizer for Box<O> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn build(&mut self, state: &mut StateStore, vars: &[Variable]) -> Result<()> {
        (**self).build(state, vars)
    }
    fn apply(&self, state: StateStore, grads: &Grads) -> Result<StateStore> {
        (**self).apply(state, grads)
    }
    fn built_variables(&self) -> Vec<Variable> {
        (**self).built_variables()
    }
    fn variables(&self) -> Vec<Variable> {
        (**self).variables()
    }
    fn iterations(&self, state: &StateStore) -> Result<i64> {
        (**self).iterations(state)
    }
    fn learning_rate(&self, state: &StateStore) -> Result<f32> {
        (**self).learning_rate(state)
    }
    fn check_gradients(&self, state: &StateStore, grads: &Grads) -> Result<()> {
        (**self).check_gradients(state, grads)
    }
    fn average(&self, var: &Variable) -> Option<Variable> {
        (**self).average(var)
    }
    fn ema_state(&self, state: &StateStore) -> Result<StateStore> {
        (**self).ema_state(state)
    }
    fn finalize_variable_values(&self, state: StateStore) -> Result<StateStore> {
        (**self).finalize_variable_values(state)
    }
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
    /// Keep an exponential moving average of every built variable, with this momentum (Keras: `use_ema=True`
    /// and `ema_momentum`).
    pub ema_momentum: Option<f64>,
    /// With `ema_momentum`, overwrite the built variables with their averages every this many iterations
    /// (Keras: `ema_overwrite_frequency`).
    pub ema_overwrite_frequency: Option<u32>,
    /// Update the weights once every this many calls, with the mean of their gradients (Keras:
    /// `gradient_accumulation_steps`).
    pub gradient_accumulation_steps: Option<u32>,
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
            ema_momentum: None,
            ema_overwrite_frequency: None,
            gradient_accumulation_steps: None,
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
            /// Keeps an exponential moving average of every built variable (Keras: `use_ema=True,
            /// ema_momentum=momentum`; Keras's default momentum is 0.99).
            ///
            /// After each update, `average = m * average + (1 - m) * variable`, with `m = momentum`, except
            /// on the first iteration, where `m = 0` and the average takes the variable's value. The averages
            /// are the optimizer variables `<optimizer>/<path>_average` (none for a variable with
            /// `overwrite_with_gradient`). Evaluate with them through
            /// [`ema_state`](crate::optim::Optimizer::ema_state); copy them into the weights at the end with
            /// [`finalize_variable_values`](crate::optim::Optimizer::finalize_variable_values), or every few
            /// iterations with [`ema_overwrite_frequency`](Self::ema_overwrite_frequency).
            ///
            /// `build` refuses a momentum outside `[0, 1]` ([`Error::InvalidArgument`](crate::Error::InvalidArgument)).
            ///
            /// See the [module documentation](crate::optim#moving-averages-of-the-weights) for an example.
            pub fn use_ema(mut self, momentum: f64) -> Self {
                self.core.options.ema_momentum = Some(momentum);
                self
            }
            /// With [`use_ema`](Self::use_ema), overwrites the built variables with their moving averages
            /// every `every` iterations (Keras: `ema_overwrite_frequency`): after the update and the averages'
            /// step of the calls where `(iterations + 1) % every == 0`, `iterations` being the value before the
            /// call (Keras's `optimizer.iterations`, which counts updates under gradient accumulation).
            ///
            /// `build` refuses 0 and a frequency without `use_ema`
            /// ([`Error::InvalidArgument`](crate::Error::InvalidArgument)); Keras ignores both.
            pub fn ema_overwrite_frequency(mut self, every: u32) -> Self {
                self.core.options.ema_overwrite_frequency = Some(every);
                self
            }
            /// Accumulates gradients over `steps` calls and updates the weights on every `steps`-th call with
            /// their mean (Keras: `gradient_accumulation_steps`).
            ///
            /// Every call adds its gradients to the accumulators `<optimizer>/<path>_gradient_accumulator`
            /// and advances the `iteration` variable; on the calls where `(iteration + 1) % steps == 0` the
            /// mean `(g + accumulated) / steps` is clipped and applied (weight decay included) and the
            /// accumulators are reset. The other calls leave the weights and slots unchanged. As in Keras,
            /// [`iterations`](crate::optim::Optimizer::iterations) (and so Adam's bias correction and the
            /// moving averages) counts updates, `iteration // steps`, while learning-rate schedules see the
            /// number of calls. A variable with `overwrite_with_gradient` keeps the largest gradient of the
            /// calls and takes it on the update call.
            ///
            /// `build` refuses `steps < 2` ([`Error::InvalidArgument`](crate::Error::InvalidArgument), as Keras
            /// refuses 1; Keras takes 0 for "off").
            pub fn gradient_accumulation_steps(mut self, steps: u32) -> Self {
                self.core.options.gradient_accumulation_steps = Some(steps);
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
                let calls = self.core.calls(state)?;
                self.core.rate(state, calls)
            }
            fn check_gradients(&self, state: &$crate::StateStore, grads: &$crate::grad::Grads) -> $crate::Result<()> {
                self.core.check(&self.rule, state, grads)
            }
            fn average(&self, var: &$crate::Variable) -> Option<$crate::Variable> {
                self.core.average(var)
            }
            fn ema_state(&self, state: &$crate::StateStore) -> $crate::Result<$crate::StateStore> {
                self.core.ema_state(state)
            }
            fn finalize_variable_values(&self, state: $crate::StateStore) -> $crate::Result<$crate::StateStore> {
                self.core.finalize_variable_values(state)
            }
        }
    };
}
pub(crate) use common_options;

pub(crate) use apply::{fused, Core, Rule, UpdateConsts, VarLane};
