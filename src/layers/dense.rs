//! [`Dense`]: Keras's `keras.layers.Dense`.

use super::{bad_input, built, handle, ActivationFn, Layer};
use crate::error::Result;
use crate::init;
use crate::scope::Scope;
use crate::store::StateStore;
use crate::tensor::Tensor;
use crate::variable::{Variable, VariableSpec};

/// A densely connected layer: `activation(x @ kernel + bias)` over the last axis (Keras's `Dense`).
///
/// Variables: `kernel` of shape `(in, units)`, Glorot-uniform; `bias` of shape `(units,)`, zeros (unless
/// `use_bias(false)`). Inputs of any rank from 2 (a batch of vectors) are multiplied on their last axis.
///
/// # Examples
/// ```
/// use purestate::layers::{self, Dense, Layer};
/// use purestate::{Scope, StateStore, Tensor};
/// let mut state = StateStore::new();
/// let mut dense = Dense::new(2).name("head");
/// layers::build(&mut dense, &mut state, &[3])?;
/// let paths: Vec<_> = dense.variables().iter().map(|v| v.path().to_string()).collect();
/// assert_eq!(paths, ["head/kernel", "head/bias"]);
/// let y = dense.call(&mut Scope::new(&state), &Tensor::from([[1.0f32, 0.0, 0.0]]), false)?;
/// assert_eq!(y.dims(), [1, 2]);
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Dense {
    units: usize,
    use_bias: bool,
    activation: String,
    name: Option<String>,
    path: Option<String>,
    act: ActivationFn,
    kernel: Option<Variable>,
    bias: Option<Variable>,
}

impl Dense {
    /// A dense layer with `units` outputs, a bias and no activation (Keras's defaults).
    pub fn new(units: usize) -> Dense {
        Dense {
            units,
            use_bias: true,
            activation: "linear".into(),
            name: None,
            path: None,
            act: ActivationFn::Linear,
            kernel: None,
            bias: None,
        }
    }

    /// Whether to add a bias (default true).
    pub fn use_bias(mut self, use_bias: bool) -> Dense {
        self.use_bias = use_bias;
        self
    }

    /// The activation by Keras name (`relu`, `softmax`, ...; default `linear`), checked at build.
    pub fn activation(mut self, name: &str) -> Dense {
        self.activation = name.to_string();
        self
    }

    /// The layer's name (default `dense`, `dense_1`, ...).
    pub fn name(mut self, name: impl Into<String>) -> Dense {
        self.name = Some(name.into());
        self
    }

    /// The kernel, once built.
    pub fn kernel(&self) -> Option<&Variable> {
        self.kernel.as_ref()
    }

    /// The bias, once built (`None` without one).
    pub fn bias(&self) -> Option<&Variable> {
        self.bias.as_ref()
    }
}

impl Layer for Dense {
    fn default_name(&self) -> &'static str {
        "dense"
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn build(&mut self, state: &mut StateStore, path: &str, input_shape: &[usize]) -> Result<Vec<usize>> {
        let Some((&last, lead)) = input_shape.split_last() else {
            return Err(bad_input(path, input_shape, "expected examples of rank 1 or more"));
        };
        if self.units == 0 {
            return Err(bad_input(path, input_shape, "`units` must be positive"));
        }
        let act = ActivationFn::parse(&self.activation)?;
        let mut staged = state.clone();
        let kernel = staged
            .create(VariableSpec::new(init::GlorotUniform).shape([last, self.units]).name("kernel").name_scope(path))?;
        let bias = if self.use_bias {
            Some(staged.create(VariableSpec::new(init::Zeros).shape([self.units]).name("bias").name_scope(path))?)
        } else {
            None
        };
        *state = staged;
        (self.kernel, self.bias, self.act, self.path) = (Some(kernel), bias, act, Some(path.to_string()));
        Ok(lead.iter().copied().chain([self.units]).collect())
    }

    fn call(&self, scope: &mut Scope, x: &Tensor, _training: bool) -> Result<Tensor> {
        let path = built(&self.path, "Dense")?;
        let kernel = scope.get(handle(&self.kernel, "Dense")?)?;
        let fan_in = kernel.dims()[0];
        if x.ndim() < 2 || x.dims()[x.ndim() - 1] != fan_in {
            return Err(bad_input(path, x.dims(), format!("expected a batch with {fan_in} features on the last axis")));
        }
        let mut y = x.matmul(&kernel)?;
        if let Some(bias) = &self.bias {
            y = y.add(&scope.get(bias)?)?;
        }
        self.act.apply(&y)
    }

    fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    fn variables(&self) -> Vec<Variable> {
        self.kernel.iter().chain(self.bias.iter()).cloned().collect()
    }
}
