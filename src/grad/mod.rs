//! Reverse-mode automatic differentiation of pure steps: [`value_and_grad`] (JAX's `jax.value_and_grad`, run
//! the way Keras's JAX trainer runs `stateless_call`), [`grad`], [`wrt`], [`stop_gradient`], and [`Grads`],
//! the map from variables to gradients that optimizers take.
//!
//! # How it works
//! A call makes a tape that lives only as long as the call. The loss closure reads variables through a
//! [`Scope`]; each read of a variable being differentiated returns its value as a *traced* leaf, and every
//! operation on a traced tensor (the ordinary [`Tensor`] methods, operators and [`crate::losses`]) computes its
//! result as usual and appends one node to the tape: its inputs and a backward rule that saved what it needs
//! (`src/grad/rules.rs` lists them all). Operations on untraced tensors pay one branch. When the closure
//! returns, the collected losses and regularizer penalties are added, the tape is swept once in reverse and
//! dropped with everything it saved: by the time the call returns, no tensor of the state is shared with the
//! tape, so `Optimizer::apply` on an unshared state still updates its buffers in place.
//!
//! Gradients are computed with the same kernels as the forward pass, so they are bit-identical for any
//! thread count, and follow JAX's rules at kinks and ties (see `rules.rs`). First-order only: a tape does not
//! record its own backward pass.

mod grads;
mod hooks;
pub(crate) mod rules;
mod tape;

use std::collections::{HashMap, HashSet};

pub use grads::Grads;
use tape::Tape;

use crate::tensor::trace::Trace;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ops::Axes;
use crate::scope::Scope;
use crate::store::StateStore;
use crate::tensor::{Shape, Tensor};
use crate::variable::Variable;

/// What a call reports for a differentiated variable the loss does not depend on (it was not read, or its
/// value did not reach the loss).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Missing {
    /// A zero gradient of the variable's shape and dtype (JAX's answer). The default.
    #[default]
    Zero,
    /// No entry in [`Grads`] (Keras's `None` gradient; pair it with the optimizer's
    /// `allow_missing_gradients(true)`).
    Skip,
}

/// Everything a call computed: the loss, the variables' gradients, the watched inputs' gradients, the state the
/// function's scope ended with, and the function's auxiliary value.
///
/// `state` is the store the call was given with every assignment the function made through its [`Scope`]
/// (BatchNorm moving statistics, a Dropout layer's seed state, metrics), as Keras's `stateless_call` returns
/// `non_trainable_variables` and JAX's `has_aux` returns auxiliaries; it derives from the same committed
/// version, so an optimizer step on it commits: `trainer.commit(opt.apply(out.state, &out.grads)?)`.
#[derive(Clone, Debug)]
pub struct GradOutput<A = ()> {
    /// The total loss (the closure's loss plus collected losses and regularizer penalties), untraced.
    pub loss: Tensor,
    /// The gradient of every differentiated variable, in its own shape and dtype, in creation order.
    pub grads: Grads,
    /// The gradient with respect to each tensor passed to [`Scope::watch`], in the order of the calls, in its
    /// shape and dtype (zeros when the loss does not depend on it).
    pub inputs: Vec<Tensor>,
    /// The state the function's scope ended with: the given state plus the function's assignments.
    pub state: StateStore,
    /// The function's auxiliary value (`()` for [`ValueAndGrad::call`]). Tensors in it are plain values: their
    /// trace ended with the call.
    pub aux: A,
}

/// A state a differentiation starts from: a `StateStore` by value (its buffers can then be donated to the
/// optimizer step that follows, as `jax.jit`'s `donate_argnums`) or by reference (an O(1) snapshot is taken).
pub trait IntoState {
    /// The store.
    fn into_state(self) -> StateStore;
}

impl IntoState for StateStore {
    fn into_state(self) -> StateStore {
        self
    }
}

impl IntoState for &StateStore {
    fn into_state(self) -> StateStore {
        self.clone()
    }
}

/// The options of a differentiation: which variables, what to do with those the loss does not reach, and the
/// compute dtype of reads. [`value_and_grad`], [`grad`] and [`wrt`] are shortcuts for the common cases.
///
/// # Examples
/// ```
/// use purestate::{grad::{Missing, ValueAndGrad}, init, StateStore, VariableSpec};
/// let mut state = StateStore::new();
/// let w = state.create(VariableSpec::new(init::Ones).shape([2]).name("w"))?;
/// let unused = state.create(VariableSpec::new(init::Ones).shape([3]).name("unused"))?;
/// let (loss, grads) = ValueAndGrad::new()
///     .missing(Missing::Skip)
///     .value_and_grad(&state, |scope| scope.get(&w)?.mul(3.0)?.sum(None, false))?;
/// assert_eq!(loss.to_f64()?, 6.0);
/// assert_eq!(grads.get(&w).unwrap().to_vec::<f32>()?, [3.0, 3.0]);
/// assert!(!grads.contains(&unused));
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct ValueAndGrad {
    wrt: Option<Vec<Variable>>,
    missing: Missing,
    autocast: Option<DType>,
}

impl ValueAndGrad {
    /// Differentiate with respect to every trainable float variable (as `state.trainable(&w)` says when the
    /// call runs), missing gradients as zeros, no autocast.
    pub fn new() -> Self {
        ValueAndGrad::default()
    }

    /// Differentiate with respect to these variables only (JAX's `argnums`; they need not be trainable).
    pub fn wrt(mut self, vars: &[Variable]) -> Self {
        self.wrt = Some(vars.to_vec());
        self
    }

    /// What to report for a variable the loss does not depend on.
    pub fn missing(mut self, missing: Missing) -> Self {
        self.missing = missing;
        self
    }

    /// Read float variables in `dtype` (mixed precision, as [`Scope::with_autocast`]): the loss is computed
    /// in the compute dtype and the gradients come back in each variable's own dtype. A non-float `dtype`
    /// makes the call an [`Error::UnsupportedDType`], as [`Scope::with_autocast`].
    pub fn autocast(mut self, dtype: DType) -> Self {
        self.autocast = Some(dtype);
        self
    }

    /// Runs `loss_fn` on a scope over `state`, differentiates the total loss and returns everything, the
    /// state the scope ended with included.
    ///
    /// The total loss is the closure's loss, plus each loss the scope collected ([`Scope::add_loss`]) summed
    /// to a scalar, plus the penalty of every trainable variable that has a regularizer (read or not; frozen
    /// variables add nothing), as Keras's `Trainer.compute_loss`; collected losses and penalties of an integer
    /// dtype are cast to the store's floatx. Costs one pass of the closure plus one backward pass (about twice
    /// the forward's arithmetic); the tape and every tensor it saved are dropped before this returns, so a
    /// state passed by value comes back holding its buffers alone (an optimizer step then updates in place).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] (path `value_and_grad`) when the loss is not 0-d; [`Error::UnsupportedDType`]
    /// when it is not a float; [`Error::ForeignVariable`] / [`Error::StaleVariable`] for a `wrt` variable the
    /// store does not hold; [`Error::UnsupportedDType`] for a non-float `wrt` variable;
    /// [`Error::DuplicatePath`] for a variable listed twice; [`Error::AssignDifferentiated`] when the closure
    /// assigns a variable being differentiated; any error of the closure or of a penalty.
    ///
    /// # Examples
    /// A step whose function advances a counter (as a BatchNorm layer its moving statistics):
    /// ```
    /// use purestate::{grad::ValueAndGrad, init, optim::{Optimizer, Sgd}, StateStore, VariableSpec};
    /// let mut state = StateStore::new();
    /// let w = state.create(VariableSpec::new(init::Ones).shape([2]).name("w"))?;
    /// let calls = state.create(VariableSpec::new(init::Zeros).shape([]).name("calls").trainable(false))?;
    /// let mut opt = Sgd::new(0.5);
    /// opt.build(&mut state, &[w.clone()])?;
    ///
    /// let out = ValueAndGrad::new().call(state, |scope| {
    ///     scope.assign_add(&calls, 1.0f32)?;
    ///     scope.get(&w)?.square()?.sum(None, false)
    /// })?;
    /// let next = opt.apply(out.state, &out.grads)?;      // one line per stage
    /// assert_eq!(next.get(&calls)?.to_f64()?, 1.0);      // the function's assignment is kept
    /// assert_eq!(next.get(&w)?.to_vec::<f32>()?, [0.0, 0.0]);
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn call<S, F>(&self, state: S, loss_fn: F) -> Result<GradOutput>
    where
        S: IntoState,
        F: FnOnce(&mut Scope) -> Result<Tensor>,
    {
        self.call_with_aux(state, |scope| Ok((loss_fn(scope)?, ())))
    }

    /// As [`call`](Self::call), for a function that also returns an auxiliary value (JAX's `has_aux=True`):
    /// predictions for metrics, per-example losses, anything. The value comes back in [`GradOutput::aux`].
    ///
    /// # Errors
    /// As [`call`](Self::call).
    ///
    /// # Examples
    /// ```
    /// use purestate::{grad::ValueAndGrad, init, StateStore, Tensor, VariableSpec};
    /// let mut state = StateStore::new();
    /// let w = state.create(VariableSpec::new(init::Constant::new(2.0)).shape([2]).name("w"))?;
    /// let x = Tensor::from([1.0f32, 3.0]);
    /// let out = ValueAndGrad::new().call_with_aux(&state, |scope| {
    ///     let pred = scope.get(&w)?.mul(&x)?;
    ///     Ok((pred.sum(None, false)?, pred))               // the loss, and the predictions as aux
    /// })?;
    /// assert_eq!(out.aux.to_vec::<f32>()?, [2.0, 6.0]);
    /// assert_eq!(out.grads.get(&w).unwrap().to_vec::<f32>()?, [1.0, 3.0]);
    /// # Ok::<(), purestate::Error>(())
    /// ```
    // `Variable` hashes and compares by its key alone; its lineage's mutex never takes part.
    #[allow(clippy::mutable_key_type)]
    pub fn call_with_aux<S, A, F>(&self, state: S, loss_fn: F) -> Result<GradOutput<A>>
    where
        S: IntoState,
        F: FnOnce(&mut Scope) -> Result<(Tensor, A)>,
    {
        const OP: &str = "value_and_grad";
        // A forward and backward pass is a burst of parallel ops with serial work between them.
        crate::kernels::par::keep_awake();
        let state = state.into_state();
        let vars = match &self.wrt {
            Some(vars) => {
                let mut seen = HashSet::new();
                for var in vars {
                    state.get(var)?;
                    if !var.dtype().is_float() {
                        return Err(Error::UnsupportedDType { op: OP, dtype: var.dtype() });
                    }
                    if !seen.insert(var.clone()) {
                        return Err(Error::DuplicatePath { path: var.path().to_string() });
                    }
                }
                vars.clone()
            }
            None => state.trainable_variables().into_iter().filter(|v| v.dtype().is_float()).collect(),
        };
        let tape = Tape::new();
        let mut leaves = HashMap::with_capacity(vars.len());
        let mut ids = Vec::with_capacity(vars.len());
        for var in &vars {
            let leaf = tape.leaf(&state.get(var)?);
            ids.push(leaf.trace().map(Trace::id));
            leaves.insert(var.clone(), leaf);
        }
        let floatx = state.floatx();
        let mut scope = Scope::traced(state, leaves, tape.clone());
        if let Some(dtype) = self.autocast {
            scope = scope.with_autocast(dtype)?;
        }
        let (loss, aux) = loss_fn(&mut scope)?;
        if loss.ndim() != 0 {
            return Err(Error::ShapeMismatch { path: OP.into(), expected: Shape::from(Vec::new()), got: loss.shape() });
        }
        if !loss.dtype().is_float() {
            return Err(Error::UnsupportedDType { op: OP, dtype: loss.dtype() });
        }
        let mut total = loss;
        for extra in scope.losses().to_vec() {
            total = total.add(&aggregate(extra, floatx)?)?;
        }
        let current = scope.state().clone();
        for var in current.variables() {
            if !current.trainable(&var)? {
                continue;
            }
            if let Some(regularizer) = current.regularizer(&var)? {
                let penalty = regularizer.penalty(&scope.value(&var)?)?;
                total = total.add(&aggregate(penalty, floatx)?)?;
            }
        }
        drop(current);
        let cotangents = tape.backward(&total)?;
        let watched = scope.take_tape().map(|t| t.watched).unwrap_or_default();
        let (state, _) = scope.finish();
        let mut pairs = Vec::with_capacity(vars.len());
        for (var, id) in vars.into_iter().zip(ids) {
            match (id.and_then(|id| cotangents.get(id).cloned().flatten()), self.missing) {
                (Some(g), _) => pairs.push((var, g)),
                (None, Missing::Zero) => {
                    let zero = Tensor::zeros(var.shape().clone(), var.dtype());
                    pairs.push((var, zero));
                }
                (None, Missing::Skip) => {}
            }
        }
        let inputs = watched
            .iter()
            .map(|x| {
                let g = x.trace().and_then(|t| cotangents.get(t.id()).cloned().flatten());
                g.unwrap_or_else(|| Tensor::zeros(x.shape(), x.dtype()))
            })
            .collect();
        let loss = total.detach();
        drop(watched);
        drop(cotangents);
        drop(tape);
        Ok(GradOutput { loss, grads: Grads::from_pairs(pairs)?, inputs, state, aux })
    }

    /// The total loss and the variables' gradients, for a function that assigns nothing; see
    /// [`ValueAndGrad::call`], which also returns the state.
    ///
    /// # Errors
    /// As [`ValueAndGrad::call`]; [`Error::StateDropped`] when the function assigned a variable (its
    /// assignment would be lost: use [`ValueAndGrad::call`]).
    pub fn value_and_grad<F>(&self, state: &StateStore, loss_fn: F) -> Result<(Tensor, Grads)>
    where
        F: FnOnce(&mut Scope) -> Result<Tensor>,
    {
        let out = self.stateless("value_and_grad", state, loss_fn)?;
        Ok((out.loss, out.grads))
    }

    /// [`call`](Self::call) for the forms that return no state: [`Error::StateDropped`] when the function
    /// assigned anything, which those forms would lose.
    fn stateless<F>(&self, op: &'static str, state: &StateStore, loss_fn: F) -> Result<GradOutput<()>>
    where
        F: FnOnce(&mut Scope) -> Result<Tensor>,
    {
        let out = self.call_with_aux(state, |scope| {
            let loss = loss_fn(scope)?;
            Ok((loss, scope.assigned().iter().map(|v| v.path().to_string()).collect::<Vec<_>>()))
        })?;
        if !out.aux.is_empty() {
            return Err(Error::StateDropped { op, paths: out.aux });
        }
        Ok(GradOutput { loss: out.loss, grads: out.grads, inputs: out.inputs, state: out.state, aux: () })
    }

    /// The variables' gradients only, for a function that assigns nothing; see [`ValueAndGrad::call`].
    ///
    /// # Errors
    /// As [`ValueAndGrad::value_and_grad`].
    pub fn grad<F>(&self, state: &StateStore, loss_fn: F) -> Result<Grads>
    where
        F: FnOnce(&mut Scope) -> Result<Tensor>,
    {
        Ok(self.stateless("grad", state, loss_fn)?.grads)
    }
}

/// A collected loss or penalty as Keras's `_aggregate_additional_loss` takes it: cast to floatx when it is
/// not a float, then summed to a scalar.
fn aggregate(loss: Tensor, floatx: DType) -> Result<Tensor> {
    let loss = if loss.dtype().is_float() { loss } else { loss.cast(floatx) };
    if loss.ndim() == 0 {
        return Ok(loss);
    }
    loss.sum(Axes::All, false)
}

/// The loss `loss_fn` computes from `state`, and its gradient with respect to every trainable float variable
/// (JAX's `jax.value_and_grad`).
///
/// `loss_fn` reads variables through the [`Scope`] it is given and returns a 0-d float tensor. Collected
/// losses and regularizer penalties are added to it (see [`ValueAndGrad::call`]). Variables the loss does not
/// depend on get a zero gradient; use [`ValueAndGrad`] for other options. The [`Grads`] are what
/// [`Optimizer::apply`](crate::optim::Optimizer::apply) takes.
///
/// # Errors
/// As [`ValueAndGrad::call`]: a loss that is not a 0-d float tensor, or an error of the closure;
/// [`Error::StateDropped`] when the closure assigned a variable (use [`value_and_grad_aux`], which returns the
/// state).
///
/// # Examples
/// A linear model with a mean squared error, one Adam step:
/// ```
/// use purestate::{grad, init, losses, optim::{Adam, Optimizer}, StateStore, Tensor, VariableSpec};
/// let mut state = StateStore::new();
/// let w = state.create(VariableSpec::new(init::Zeros).shape([2, 1]).name("w"))?;
/// let b = state.create(VariableSpec::new(init::Zeros).shape([1]).name("b"))?;
/// let mut opt = Adam::new(1e-2);
/// opt.build(&mut state, &[w.clone(), b.clone()])?;
///
/// let x = Tensor::from([[1.0f32, 2.0], [3.0, 4.0]]);
/// let y = Tensor::from([[1.0f32], [2.0]]);
/// let (loss, grads) = grad::value_and_grad(&state, |scope| {
///     let pred = x.matmul(&scope.get(&w)?)?.add(&scope.get(&b)?)?;
///     losses::mean_squared_error(&y, &pred)
/// })?;
/// assert_eq!(loss.to_f64()?, 2.5);                                   // mean of 1 and 4
/// assert_eq!(grads.get(&w).unwrap().to_vec::<f32>()?, [-7.0, -10.0]); // x^T (pred - y) * 2 / 2
/// assert_eq!(grads.get(&b).unwrap().to_vec::<f32>()?, [-3.0]);
/// let state = opt.apply(state, &grads)?;
/// assert!(state.get(&w)?.to_vec::<f32>()?[0] > 0.0);
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn value_and_grad<F>(state: &StateStore, loss_fn: F) -> Result<(Tensor, Grads)>
where
    F: FnOnce(&mut Scope) -> Result<Tensor>,
{
    ValueAndGrad::new().value_and_grad(state, loss_fn)
}

/// The loss, gradients, state and auxiliary value of `loss_fn` (JAX's `jax.value_and_grad(f, has_aux=True)`,
/// as Keras's JAX trainer calls it): the closure returns `(loss, aux)`, and whatever it assigned through its
/// [`Scope`] (BatchNorm statistics, seed states, metrics) comes back in [`GradOutput::state`]. Pass the state by
/// value to let the optimizer step that follows update its buffers in place. Shortcut for
/// `ValueAndGrad::new().call_with_aux(state, loss_fn)`.
///
/// # Errors
/// As [`ValueAndGrad::call`].
///
/// # Examples
/// A step whose function draws a dropout-style mask from a seed generator kept in the state:
/// ```
/// use purestate::{grad, init, optim::{Adam, Optimizer}, random::{self, SeedGenerator}};
/// use purestate::{StateStore, VariableSpec};
/// let mut state = StateStore::new();
/// let w = state.create(VariableSpec::new(init::Ones).shape([4]).name("w"))?;
/// let seeds = SeedGenerator::new(&mut state, 42)?;
/// let mut opt = Adam::new(1e-3);
/// opt.build(&mut state, &[w.clone()])?;
///
/// let step = |state: StateStore| -> purestate::Result<StateStore> {
///     let out = grad::value_and_grad_aux(state, |scope| {
///         let keep = random::bernoulli(seeds.next_key_in(scope)?, 0.5, [4])?;
///         let loss = scope.get(&w)?.mul(&keep.cast(purestate::DType::Float32))?.sum(None, false)?;
///         Ok((loss, keep))
///     })?;
///     opt.apply(out.state, &out.grads)
/// };
/// let first = step(state.clone())?;
/// assert_ne!(first.get(seeds.variable())?.to_vec::<u32>()?, state.get(seeds.variable())?.to_vec::<u32>()?);
/// assert!(step(state.clone())?.fingerprint() == first.fingerprint()); // same snapshot, same bits
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn value_and_grad_aux<S, A, F>(state: S, loss_fn: F) -> Result<GradOutput<A>>
where
    S: IntoState,
    F: FnOnce(&mut Scope) -> Result<(Tensor, A)>,
{
    ValueAndGrad::new().call_with_aux(state, loss_fn)
}

/// The gradient of the loss `loss_fn` computes with respect to every trainable float variable (JAX's
/// `jax.grad`); see [`value_and_grad`].
///
/// # Errors
/// As [`ValueAndGrad::call`].
pub fn grad<F>(state: &StateStore, loss_fn: F) -> Result<Grads>
where
    F: FnOnce(&mut Scope) -> Result<Tensor>,
{
    ValueAndGrad::new().grad(state, loss_fn)
}

/// Options that differentiate with respect to `vars` only: `grad::wrt(&[w.clone()]).value_and_grad(&state,
/// f)`. Shortcut for `ValueAndGrad::new().wrt(vars)`.
pub fn wrt(vars: &[Variable]) -> ValueAndGrad {
    ValueAndGrad::new().wrt(vars)
}

/// `t` with the same values and no trace: the loss is not differentiated through it (`jax.lax.stop_gradient`,
/// `keras.ops.stop_gradient`). O(1): the buffer is shared.
///
/// # Examples
/// ```
/// use purestate::{grad, init, StateStore, VariableSpec};
/// let mut state = StateStore::new();
/// let w = state.create(VariableSpec::new(init::Constant::new(3.0)).shape([]).name("w"))?;
/// let g = grad::grad(&state, |scope| {
///     let w = scope.get(&w)?;
///     w.mul(&grad::stop_gradient(&w)) // d/dw (w * const) = const
/// })?;
/// assert_eq!(g.get(&w).unwrap().to_f64()?, 3.0);
/// # Ok::<(), purestate::Error>(())
/// ```
pub fn stop_gradient(t: &Tensor) -> Tensor {
    t.detached()
}
