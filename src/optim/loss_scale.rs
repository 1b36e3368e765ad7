//! [`LossScaleOptimizer`]: Keras's dynamic loss scaling around another optimizer
//! (keras/src/optimizers/loss_scale_optimizer.py, Keras 3.15).

use super::Optimizer;
use crate::error::{Error, Result};
use crate::grad::Grads;
use crate::store::StateStore;
use crate::tensor::Tensor;
use crate::variable::{Variable, VariableSpec};

/// Dynamic loss scaling around an inner optimizer (Keras: `keras.optimizers.LossScaleOptimizer(inner_optimizer,
/// initial_scale=2.0**15, dynamic_growth_steps=2000)`), for training in float16 without gradient underflow.
///
/// Multiply the loss by the current scale before differentiating ([`scale_loss`](Self::scale_loss)); `apply`
/// then divides the gradients by the scale and:
/// - when every gradient is finite, applies them with the inner optimizer; after `dynamic_growth_steps` such
///   steps in a row the scale doubles (the counter goes 0, 1, ..., `dynamic_growth_steps - 1`, then the scale
///   doubles and the counter returns to 0);
/// - when a gradient holds an infinity or a NaN, skips the inner update (weights, slots and the inner
///   iteration counter stay as they are), halves the scale and resets the counter. The step still returns a
///   new state, the one with the new scale, to commit as the next version.
///
/// Gradients of variables with `overwrite_with_gradient` are not unscaled (they are values, not derivatives
/// of the loss). The scale and counter are optimizer variables, `loss_scale_optimizer/dynamic_scale` (float32)
/// and `loss_scale_optimizer/step_counter` (int32), beside `loss_scale_optimizer/iteration` and
/// `loss_scale_optimizer/learning_rate`, which Keras's base class creates and never changes (kept so that the
/// optimizer variables are Keras's, path for path). [`iterations`](Optimizer::iterations), the learning rate,
/// the moving averages and [`finalize_variable_values`](Optimizer::finalize_variable_values) are the inner
/// optimizer's.
///
/// # Examples
/// ```
/// use purestate::{grad, optim::{LossScaleOptimizer, Optimizer, Sgd}, StateStore, Tensor, Trainer};
/// use purestate::VariableSpec;
/// let mut state = StateStore::new();
/// let w = state.create(VariableSpec::new(Tensor::from([1.0f32, -2.0])).name("w"))?;
/// let mut opt = LossScaleOptimizer::new(Sgd::new(0.1)).dynamic_growth_steps(2);
/// opt.build(&mut state, &[w.clone()])?;
/// assert_eq!(opt.dynamic_scale(&state)?, 32768.0);
/// let mut trainer: Trainer = Trainer::new(state);
///
/// let head = trainer.state().clone();
/// let (_, grads) = grad::value_and_grad(&head, |scope| {
///     let w = scope.get(&w)?;
///     let loss = w.mul(&w)?.sum(None, false)?;   // d/dw = 2w
///     opt.scale_loss(&head, &loss)                // the gradients come out 32768 times larger
/// })?;
/// let next = opt.apply(head, &grads)?;            // unscaled before SGD sees them
/// assert_eq!(next.get(&w)?.to_vec::<f32>()?, [0.8, -1.6]);
/// trainer.commit(next)?;
///
/// // A non-finite gradient: the weights stay, the scale halves, and the step is still a version.
/// let mut bad = grad::Grads::new();
/// bad.insert(w.clone(), Tensor::from([f32::INFINITY, 0.0]));
/// let next = opt.apply(trainer.state().clone(), &bad)?;
/// assert_eq!(next.get(&w)?.to_vec::<f32>()?, [0.8, -1.6]);
/// assert_eq!(opt.dynamic_scale(&next)?, 16384.0);
/// assert_eq!(trainer.commit(next)?, 2);
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct LossScaleOptimizer<O> {
    inner: O,
    initial_scale: f64,
    dynamic_growth_steps: u32,
    built: Option<Built>,
}

/// The variables `build` created (Keras's order).
#[derive(Clone, Debug)]
struct Built {
    iteration: Variable,
    learning_rate: Variable,
    step_counter: Variable,
    dynamic_scale: Variable,
}

/// Keras's name, the name scope of the wrapper's own variables.
const NAME: &str = "loss_scale_optimizer";

impl<O: Optimizer> LossScaleOptimizer<O> {
    /// Dynamic loss scaling around `inner`, with Keras's defaults: initial scale 2^15, doubled after 2000
    /// finite steps in a row.
    pub fn new(inner: O) -> Self {
        LossScaleOptimizer { inner, initial_scale: 32768.0, dynamic_growth_steps: 2000, built: None }
    }

    /// The scale before the first step (default 2^15). `build` refuses one that is not positive and finite.
    pub fn initial_scale(mut self, scale: f64) -> Self {
        self.initial_scale = scale;
        self
    }

    /// How many finite steps in a row double the scale (default 2000). `build` refuses 0 (which Keras takes
    /// for "never") and values beyond `i32::MAX`.
    pub fn dynamic_growth_steps(mut self, steps: u32) -> Self {
        self.dynamic_growth_steps = steps;
        self
    }

    /// The wrapped optimizer.
    pub fn inner(&self) -> &O {
        &self.inner
    }

    /// The wrapped optimizer, unwrapped. Its variables stay in the store; the wrapper's stay too.
    pub fn into_inner(self) -> O {
        self.inner
    }

    fn built(&self) -> Result<&Built> {
        self.built.as_ref().ok_or_else(|| Error::NotBuilt { optimizer: NAME.to_string() })
    }

    /// The current loss scale in `state` (Keras: `optimizer.dynamic_scale`).
    ///
    /// # Errors
    /// [`Error::NotBuilt`]; store errors.
    pub fn dynamic_scale(&self, state: &StateStore) -> Result<f32> {
        Ok(state.get(&self.built()?.dynamic_scale)?.to_vec::<f32>()?[0])
    }

    /// The number of finite steps since the scale last changed (Keras: `optimizer.step_counter`).
    ///
    /// # Errors
    /// [`Error::NotBuilt`]; store errors.
    pub fn step_counter(&self, state: &StateStore) -> Result<i64> {
        Ok(i64::from(state.get(&self.built()?.step_counter)?.to_vec::<i32>()?[0]))
    }

    /// `loss` times the current scale of `state` (Keras: `scale_loss`); call it inside the differentiated
    /// function, on the loss it returns. Before `build`, the initial scale (a weak Python-style scalar, so the
    /// loss keeps its dtype); after, the float32 scale variable (a float16 loss is promoted to float32, as in
    /// Keras).
    ///
    /// # Errors
    /// Store errors; the errors of [`Tensor::mul`].
    pub fn scale_loss(&self, state: &StateStore, loss: &Tensor) -> Result<Tensor> {
        match &self.built {
            Some(b) => loss.mul(&state.get(&b.dynamic_scale)?),
            None => loss.mul(self.initial_scale),
        }
    }

    fn check_options(&self, op: &'static str) -> Result<()> {
        let invalid = |arg: &'static str, reason: String| Error::InvalidArgument {
            op,
            arg,
            reason: format!("optimizer `{NAME}`: {reason}"),
        };
        if !(self.initial_scale.is_finite() && self.initial_scale > 0.0) {
            return Err(invalid("initial_scale", format!("must be positive and finite, got {}", self.initial_scale)));
        }
        if self.dynamic_growth_steps == 0 || i32::try_from(self.dynamic_growth_steps).is_err() {
            return Err(invalid(
                "dynamic_growth_steps",
                format!("must be in [1, {}], got {}", i32::MAX, self.dynamic_growth_steps),
            ));
        }
        Ok(())
    }
}

impl<O: Optimizer> Optimizer for LossScaleOptimizer<O> {
    fn name(&self) -> &str {
        NAME
    }

    /// Creates the wrapper's variables once (`loss_scale_optimizer/iteration`, `learning_rate`,
    /// `step_counter`, `dynamic_scale`), then builds the inner optimizer for `vars`. On error `state` and
    /// the optimizer are unchanged.
    fn build(&mut self, state: &mut StateStore, vars: &[Variable]) -> Result<()> {
        self.check_options("Optimizer::build")?;
        let mut next = state.clone();
        let built = match &self.built {
            Some(b) => b.clone(),
            None => {
                let mut own = |name: &str, value: Tensor| {
                    next.create(VariableSpec::new(value).name(name).name_scope(NAME).trainable(false))
                };
                Built {
                    iteration: own("iteration", Tensor::scalar(0i32))?,
                    learning_rate: own("learning_rate", Tensor::scalar(0.0f32))?,
                    step_counter: own("step_counter", Tensor::scalar(0i32))?,
                    dynamic_scale: own("dynamic_scale", Tensor::scalar(self.initial_scale as f32))?,
                }
            }
        };
        self.inner.build(&mut next, vars)?;
        *state = next;
        self.built = Some(built);
        Ok(())
    }

    /// One step of dynamic loss scaling; see the type's documentation.
    fn apply(&self, mut state: StateStore, grads: &Grads) -> Result<StateStore> {
        self.check_gradients(&state, grads)?;
        let b = self.built()?;
        let scale = state.get(&b.dynamic_scale)?;
        let counter = self.step_counter(&state)?;
        if !grads.iter().all(|(_, g)| g.is_all_finite()) {
            state.assign(&b.step_counter, Tensor::scalar(0i32))?;
            state.assign(&b.dynamic_scale, scale.mul(0.5)?)?;
            return Ok(state);
        }
        let mut unscaled = grads.clone();
        for (var, grad) in unscaled.iter_mut() {
            if !state.overwrite_with_gradient(var)? {
                *grad = grad.div(&scale)?;
            }
        }
        let mut state = self.inner.apply(state, &unscaled)?;
        if counter == i64::from(self.dynamic_growth_steps) - 1 {
            state.assign(&b.step_counter, Tensor::scalar(0i32))?;
            state.assign(&b.dynamic_scale, scale.mul(2.0)?)?;
        } else {
            // `counter < dynamic_growth_steps - 1 <= i32::MAX - 1`, checked by `check_options`.
            state.assign(&b.step_counter, Tensor::scalar(counter as i32 + 1))?;
        }
        Ok(state)
    }

    fn built_variables(&self) -> Vec<Variable> {
        self.inner.built_variables()
    }

    /// The wrapper's four variables, then the inner optimizer's (Keras's order).
    fn variables(&self) -> Vec<Variable> {
        let mut vars = match &self.built {
            Some(b) => {
                vec![b.iteration.clone(), b.learning_rate.clone(), b.step_counter.clone(), b.dynamic_scale.clone()]
            }
            None => Vec::new(),
        };
        vars.extend(self.inner.variables());
        vars
    }

    /// The inner optimizer's iterations: a skipped step does not count.
    fn iterations(&self, state: &StateStore) -> Result<i64> {
        self.inner.iterations(state)
    }

    fn learning_rate(&self, state: &StateStore) -> Result<f32> {
        self.inner.learning_rate(state)
    }

    fn check_gradients(&self, state: &StateStore, grads: &Grads) -> Result<()> {
        self.built()?;
        self.check_options("Optimizer::apply")?;
        self.inner.check_gradients(state, grads)
    }

    fn average(&self, var: &Variable) -> Option<Variable> {
        self.inner.average(var)
    }

    fn ema_state(&self, state: &StateStore) -> Result<StateStore> {
        self.inner.ema_state(state)
    }

    fn finalize_variable_values(&self, state: StateStore) -> Result<StateStore> {
        self.inner.finalize_variable_values(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::Sgd;

    fn setup(growth: u32) -> (StateStore, Variable, LossScaleOptimizer<Sgd>) {
        let mut state = StateStore::new();
        let w = state.create(VariableSpec::new(Tensor::from([1.0f32, 2.0])).name("w")).unwrap();
        let mut opt = LossScaleOptimizer::new(Sgd::new(1.0)).initial_scale(4.0).dynamic_growth_steps(growth);
        opt.build(&mut state, std::slice::from_ref(&w)).unwrap();
        (state, w, opt)
    }

    fn grads(w: &Variable, g: [f32; 2]) -> Grads {
        Grads::from_pairs([(w.clone(), Tensor::from(g))]).unwrap()
    }

    #[test]
    fn finite_steps_unscale_count_and_grow() {
        let (state, w, opt) = setup(2);
        let state = opt.apply(state, &grads(&w, [4.0, 8.0])).unwrap();
        assert_eq!(state.get(&w).unwrap().to_vec::<f32>().unwrap(), [0.0, 0.0]);
        assert_eq!((opt.step_counter(&state).unwrap(), opt.dynamic_scale(&state).unwrap()), (1, 4.0));
        let state = opt.apply(state, &grads(&w, [4.0, 4.0])).unwrap();
        assert_eq!(state.get(&w).unwrap().to_vec::<f32>().unwrap(), [-1.0, -1.0], "unscaled by the old scale");
        assert_eq!((opt.step_counter(&state).unwrap(), opt.dynamic_scale(&state).unwrap()), (0, 8.0));
        assert_eq!(opt.iterations(&state).unwrap(), 2);
    }

    #[test]
    fn a_non_finite_step_skips_the_update_and_halves_the_scale() {
        let (state, w, opt) = setup(3);
        let state = opt.apply(state, &grads(&w, [4.0, 4.0])).unwrap();
        let next = opt.apply(state.clone(), &grads(&w, [f32::NAN, 0.0])).unwrap();
        assert_eq!(next.get(&w).unwrap().to_vec::<f32>().unwrap(), [0.0, 1.0]);
        assert_eq!((opt.step_counter(&next).unwrap(), opt.dynamic_scale(&next).unwrap()), (0, 2.0));
        assert_eq!(opt.iterations(&next).unwrap(), 1, "a skipped step is not an iteration");
        assert_ne!(next.fingerprint(), state.fingerprint());
    }

    #[test]
    fn wrong_gradients_are_errors_even_when_not_finite() {
        let (mut state, w, opt) = setup(3);
        let other = state.create(VariableSpec::new(Tensor::from([0.0f32])).name("other")).unwrap();
        let bad = Grads::from_pairs([(w.clone(), Tensor::from([f32::INFINITY, 0.0])), (other, Tensor::from([1.0f32]))])
            .unwrap();
        assert!(matches!(opt.apply(state.clone(), &bad), Err(Error::UnknownGradient { .. })));
        let unbuilt = LossScaleOptimizer::new(Sgd::new(1.0));
        assert!(matches!(unbuilt.apply(state, &grads(&w, [1.0, 1.0])), Err(Error::NotBuilt { .. })));
    }

    #[test]
    fn options_outside_their_domain_are_refused_at_build() {
        let mut state = StateStore::new();
        let w = state.create(VariableSpec::new(Tensor::from([1.0f32])).name("w")).unwrap();
        for opt in [
            LossScaleOptimizer::new(Sgd::new(1.0)).dynamic_growth_steps(0),
            LossScaleOptimizer::new(Sgd::new(1.0)).initial_scale(0.0),
            LossScaleOptimizer::new(Sgd::new(1.0)).initial_scale(f64::INFINITY),
        ] {
            let mut opt = opt;
            let err = opt.build(&mut state, std::slice::from_ref(&w)).unwrap_err();
            assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        }
        assert_eq!(state.len(), 1);
    }

    #[test]
    fn scale_loss_multiplies_by_the_current_scale() {
        let (state, _, opt) = setup(2);
        let loss = Tensor::scalar(1.5f32);
        assert_eq!(opt.scale_loss(&state, &loss).unwrap().to_vec::<f32>().unwrap(), [6.0]);
        let unbuilt = LossScaleOptimizer::new(Sgd::new(1.0));
        assert_eq!(unbuilt.scale_loss(&state, &loss).unwrap().to_vec::<f32>().unwrap(), [49152.0]);
    }
}
