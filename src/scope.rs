//! [`Scope`]: Keras's `StatelessScope` — reads through overriding values, read-your-writes assignment,
//! autocast on read, collected losses — over a store that it never changes.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::store::StateStore;
use crate::tensor::trace::TapeHook;
use crate::tensor::Tensor;
use crate::variable::Variable;

/// A functional view of a store for the length of one step.
///
/// Reads return, in order: the value the scope assigned, the overriding value given at construction
/// (Keras's `state_mapping`), the store's value; float variables whose spec has `autocast` are then cast to
/// the scope's compute dtype, if it has one (Keras's `AutocastScope`). Assignments go into the scope's own
/// copy of the store (an O(1) snapshot), so the store the scope was built from never changes.
///
/// In the scope a [`crate::grad`] call passes to the loss closure, reads of the variables being
/// differentiated return traced values (before autocast, so the cast is recorded and the gradient comes back
/// in the variable's dtype), and [`Scope::watch`] marks input tensors.
///
/// # Examples
/// ```
/// use purestate::{init, Scope, StateStore, Tensor, VariableSpec, DType};
/// let mut state = StateStore::new();
/// let w = state.create(VariableSpec::new(init::Ones).shape([2]).name("w"))?;
/// let mut scope = Scope::new(&state).with_autocast(DType::Float16)?;
/// assert_eq!(scope.get(&w)?.dtype(), DType::Float16); // read in the compute dtype
/// scope.assign(&w, Tensor::from([3.0f32, 4.0]))?;
/// assert_eq!(scope.get(&w)?.to_f64_vec(), [3.0, 4.0]); // read-your-writes
/// let (next, losses) = scope.finish();
/// assert_eq!(next.get(&w)?.to_vec::<f32>()?, [3.0, 4.0]);
/// assert_eq!(state.get(&w)?.to_vec::<f32>()?, [1.0, 1.0]); // the base store is unchanged
/// assert!(losses.is_empty());
/// # Ok::<(), purestate::Error>(())
/// ```
pub struct Scope {
    current: StateStore,
    overrides: HashMap<Variable, Tensor>,
    autocast: Option<DType>,
    losses: Vec<Tensor>,
    assigned: Vec<Variable>,
    tape: Option<TapeScope>,
}

/// What a scope built by [`crate::grad`] adds: the call's tape and the inputs watched on it.
#[derive(Debug)]
pub(crate) struct TapeScope {
    pub(crate) tape: Arc<dyn TapeHook>,
    pub(crate) watched: Vec<Tensor>,
    /// The variables being differentiated: assigning one is [`Error::AssignDifferentiated`].
    pub(crate) differentiated: HashSet<Variable>,
}

impl Scope {
    /// A scope over a snapshot of `state` (O(1)). Over a mixed-precision store (see
    /// [`StateStore::with_policy`]) it reads float variables in the policy's compute dtype.
    pub fn new(state: &StateStore) -> Scope {
        Scope {
            current: state.clone(),
            overrides: HashMap::new(),
            autocast: state.compute_dtype(),
            losses: Vec::new(),
            assigned: Vec::new(),
            tape: None,
        }
    }

    /// A scope over `state` whose reads of the variables in `leaves` return those traced values, recording
    /// on `tape` (the scope of a [`crate::grad`] call).
    // `Variable` hashes and compares by its key alone; its lineage's mutex never takes part.
    #[allow(clippy::mutable_key_type)]
    pub(crate) fn traced(state: StateStore, leaves: HashMap<Variable, Tensor>, tape: Arc<dyn TapeHook>) -> Scope {
        let differentiated = leaves.keys().cloned().collect();
        let autocast = state.compute_dtype();
        Scope {
            current: state,
            overrides: leaves,
            autocast,
            losses: Vec::new(),
            assigned: Vec::new(),
            tape: Some(TapeScope { tape, watched: Vec::new(), differentiated }),
        }
    }

    /// Marks `x` as an input to differentiate with respect to, and returns it traced: inside a
    /// [`crate::grad`] call, the gradient of the loss with respect to the value returned here is reported
    /// in [`GradOutput::inputs`](crate::grad::GradOutput::inputs), in the order of the `watch` calls (JAX's
    /// `argnums`; TensorFlow's `GradientTape.watch`). Use the returned tensor, not `x`, in the loss.
    /// Outside such a call this returns `x` unchanged.
    ///
    /// # Errors
    /// [`Error::UnsupportedDType`] when `x` is not a float tensor (only floats have gradients).
    ///
    /// # Examples
    /// ```
    /// use purestate::{grad::ValueAndGrad, StateStore, Tensor};
    /// let state = StateStore::new();
    /// let x = Tensor::from([1.0f32, -2.0]);
    /// let out = ValueAndGrad::new().call(&state, |scope| {
    ///     let x = scope.watch(&x)?;
    ///     x.square()?.sum(None, false)
    /// })?;
    /// assert_eq!(out.inputs[0].to_vec::<f32>()?, [2.0, -4.0]);
    /// # Ok::<(), purestate::Error>(())
    /// ```
    pub fn watch(&mut self, x: &Tensor) -> Result<Tensor> {
        if !x.dtype().is_float() {
            return Err(Error::UnsupportedDType { op: "watch", dtype: x.dtype() });
        }
        Ok(match &mut self.tape {
            Some(t) => {
                let leaf = Arc::clone(&t.tape).new_leaf(x);
                t.watched.push(leaf.clone());
                leaf
            }
            None => x.clone(),
        })
    }

    /// The tape part of a scope built by [`crate::grad`].
    pub(crate) fn take_tape(&mut self) -> Option<TapeScope> {
        self.tape.take()
    }

    /// The variable's value in this scope before autocast.
    pub(crate) fn value(&self, var: &Variable) -> Result<Tensor> {
        match self.overrides.get(var) {
            Some(value) => {
                self.current.get(var)?;
                Ok(value.clone())
            }
            None => self.current.get(var),
        }
    }

    /// A scope whose reads of the given variables return the given values instead of the store's (Keras:
    /// `StatelessScope(state_mapping=...)`). Each value is cast to its variable's dtype.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when a value's shape is not its variable's; [`Error::ForeignVariable`],
    /// [`Error::StaleVariable`] for a variable the store does not hold.
    pub fn with_values(state: &StateStore, values: impl IntoIterator<Item = (Variable, Tensor)>) -> Result<Scope> {
        let mut scope = Scope::new(state);
        for (var, value) in values {
            state.get(&var)?;
            if value.dims() != var.shape().dims() {
                return Err(Error::ShapeMismatch {
                    path: var.path().into(),
                    expected: var.shape().clone(),
                    got: value.shape(),
                });
            }
            let value = value.cast(var.dtype());
            scope.overrides.insert(var, value);
        }
        Ok(scope)
    }

    /// The same scope, reading float variables that have `autocast` in `dtype` (Keras's `AutocastScope`).
    /// Non-float variables and variables created with `autocast(false)` are never cast.
    ///
    /// # Errors
    /// [`Error::UnsupportedDType`] when `dtype` is not a float dtype, as Keras's `AutocastScope("int32")`
    /// raises: an autocast target is a compute dtype, and an integer one would silently mean no autocast.
    pub fn with_autocast(mut self, dtype: DType) -> Result<Scope> {
        if !dtype.is_float() {
            return Err(Error::UnsupportedDType { op: "autocast", dtype });
        }
        self.autocast = Some(dtype);
        Ok(self)
    }

    /// The compute dtype float variables are read in, if any.
    pub fn autocast(&self) -> Option<DType> {
        self.autocast
    }

    /// The store as the scope sees it, without overrides or autocast.
    pub fn state(&self) -> &StateStore {
        &self.current
    }

    /// The random stream of the store this scope reads (see [`StateStore::with_random_stream`]).
    pub fn random_stream(&self) -> Option<u32> {
        self.current.random_stream()
    }

    /// The variable's current value in this scope (see the type's docs for the order of lookup).
    ///
    /// # Errors
    /// [`Error::ForeignVariable`], [`Error::StaleVariable`].
    pub fn get(&self, var: &Variable) -> Result<Tensor> {
        let value = self.value(var)?;
        Ok(self.autocast_value(var, value))
    }

    /// Assigns a value in this scope (cast to the variable's dtype). Later reads in the scope see it, and
    /// [`finish`](Self::finish) returns a store holding it.
    ///
    /// # Errors
    /// As [`StateStore::assign`]; [`Error::AssignDifferentiated`] in the scope of a [`crate::grad`] call, for a
    /// variable being differentiated. On error the scope is unchanged.
    pub fn assign(&mut self, var: &Variable, value: impl Into<Tensor>) -> Result<()> {
        self.check_assignable(var)?;
        self.current.assign(var, value.into().detach())?;
        self.overrides.remove(var);
        self.note_assigned(var);
        Ok(())
    }

    /// Adds to the variable's value in this scope, as [`StateStore::assign_add`].
    ///
    /// # Errors
    /// As [`StateStore::assign_add`]; [`Error::AssignDifferentiated`] in the scope of a [`crate::grad`] call, for a
    /// variable being differentiated. On error the scope is unchanged.
    pub fn assign_add(&mut self, var: &Variable, value: impl Into<Tensor>) -> Result<()> {
        self.check_assignable(var)?;
        self.materialize_override(var)?;
        self.current.assign_add(var, value.into().detach())?;
        self.note_assigned(var);
        Ok(())
    }

    /// Subtracts from the variable's value in this scope, as [`StateStore::assign_sub`].
    ///
    /// # Errors
    /// As [`StateStore::assign_sub`]; [`Error::AssignDifferentiated`] in the scope of a [`crate::grad`] call, for a
    /// variable being differentiated. On error the scope is unchanged.
    pub fn assign_sub(&mut self, var: &Variable, value: impl Into<Tensor>) -> Result<()> {
        self.check_assignable(var)?;
        self.materialize_override(var)?;
        self.current.assign_sub(var, value.into().detach())?;
        self.note_assigned(var);
        Ok(())
    }

    /// The variables assigned in this scope so far (by [`assign`](Self::assign), [`assign_add`](Self::assign_add)
    /// or [`assign_sub`](Self::assign_sub)), each once, in the order of their first assignment.
    pub fn assigned(&self) -> &[Variable] {
        &self.assigned
    }

    /// Records a loss (Keras: `Layer.add_loss`); [`finish`](Self::finish) returns the losses in the order they
    /// were added.
    pub fn add_loss(&mut self, loss: Tensor) {
        self.losses.push(loss);
    }

    /// The losses recorded so far.
    pub fn losses(&self) -> &[Tensor] {
        &self.losses
    }

    /// The store with the scope's assignments applied (overriding values are inputs, not assignments, and are
    /// not written), and the collected losses.
    pub fn finish(self) -> (StateStore, Vec<Tensor>) {
        (self.current, self.losses)
    }

    /// [`Error::AssignDifferentiated`] when `var` is being differentiated in this scope.
    fn check_assignable(&self, var: &Variable) -> Result<()> {
        match &self.tape {
            Some(t) if t.differentiated.contains(var) => {
                Err(Error::AssignDifferentiated { path: var.path().to_string() })
            }
            _ => Ok(()),
        }
    }

    fn note_assigned(&mut self, var: &Variable) {
        if !self.assigned.contains(var) {
            self.assigned.push(var.clone());
        }
    }

    fn materialize_override(&mut self, var: &Variable) -> Result<()> {
        if let Some(value) = self.overrides.remove(var) {
            self.current.assign(var, value)?;
        }
        Ok(())
    }

    fn autocast_value(&self, var: &Variable, value: Tensor) -> Tensor {
        match self.autocast {
            Some(dtype) if var.autocast() && var.dtype().is_float() && var.dtype() != dtype => value.cast(dtype),
            _ => value,
        }
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("variables", &self.current.len())
            .field("overrides", &self.overrides.len())
            .field("autocast", &self.autocast)
            .field("losses", &self.losses.len())
            .field("assigned", &self.assigned.len())
            .field("traced", &self.tape.is_some())
            .finish()
    }
}
