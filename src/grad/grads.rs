//! [`Grads`]: a gradient per variable, in the variables' creation order; what optimizers take.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use crate::variable::Variable;

/// A map from variables to gradients, iterated in the order the variables were created (so updates and
/// reductions over it are deterministic). Built by `grad::value_and_grad`, or by hand from pairs.
///
/// # Examples
/// ```
/// use purestate::{grad::Grads, init, StateStore, Tensor, VariableSpec};
/// let mut state = StateStore::new();
/// let w = state.create(VariableSpec::new(init::Zeros).shape([2]).name("w"))?;
/// let grads = Grads::from_pairs([(w.clone(), Tensor::from([0.5f32, -1.0]))])?;
/// assert_eq!(grads.get(&w).unwrap().to_vec::<f32>()?, [0.5, -1.0]);
/// assert_eq!(grads.len(), 1);
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Grads {
    entries: Vec<(Variable, Tensor)>,
    index: HashMap<Variable, usize>,
}

impl Grads {
    /// No gradients.
    pub fn new() -> Self {
        Grads::default()
    }

    /// Gradients from `(variable, gradient)` pairs, sorted into creation order.
    ///
    /// # Errors
    /// [`Error::DuplicatePath`] when a variable appears twice.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (Variable, Tensor)>) -> Result<Self> {
        let mut grads = Grads::new();
        for (var, grad) in pairs {
            if grads.index.contains_key(&var) {
                return Err(Error::DuplicatePath { path: var.path().to_string() });
            }
            grads.insert(var, grad);
        }
        Ok(grads)
    }

    /// Sets the gradient of `var`, replacing any earlier one. Keeps creation order.
    pub fn insert(&mut self, var: Variable, grad: Tensor) {
        if let Some(&i) = self.index.get(&var) {
            self.entries[i].1 = grad;
            return;
        }
        let pos = self.entries.partition_point(|(v, _)| v.key < var.key);
        self.entries.insert(pos, (var, grad));
        self.index = self.entries.iter().enumerate().map(|(i, (v, _))| (v.clone(), i)).collect();
    }

    /// The gradient of `var`, if present.
    pub fn get(&self, var: &Variable) -> Option<&Tensor> {
        self.index.get(var).map(|&i| &self.entries[i].1)
    }

    /// True when `var` has a gradient.
    pub fn contains(&self, var: &Variable) -> bool {
        self.index.contains_key(var)
    }

    /// Number of gradients.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `(variable, gradient)` in the variables' creation order.
    pub fn iter(&self) -> impl Iterator<Item = (&Variable, &Tensor)> + '_ {
        self.entries.iter().map(|(v, g)| (v, g))
    }

    /// The variables, in creation order.
    pub fn variables(&self) -> impl Iterator<Item = &Variable> + '_ {
        self.entries.iter().map(|(v, _)| v)
    }

    /// Consumes the map into its pairs, in creation order.
    pub fn into_pairs(self) -> Vec<(Variable, Tensor)> {
        self.entries
    }

    /// The gradients, mutably, in creation order (to scale or clip them in place).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Variable, &mut Tensor)> + '_ {
        self.entries.iter_mut().map(|(v, g)| (&*v, g))
    }
}

impl<'a> IntoIterator for &'a Grads {
    type Item = (&'a Variable, &'a Tensor);
    type IntoIter = Box<dyn Iterator<Item = (&'a Variable, &'a Tensor)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}
