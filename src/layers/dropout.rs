//! [`Dropout`], whose seed state is a variable of the store, and [`Activation`].

use super::{bad_input, built, ActivationFn, Layer};
use crate::error::{Error, Result};
use crate::random::{self, SeedGenerator};
use crate::scope::Scope;
use crate::store::StateStore;
use crate::tensor::Tensor;
use crate::variable::Variable;

/// Sets a random fraction `rate` of the inputs to zero in training and scales the rest by `1 / (1 - rate)`
/// (Keras's `Dropout`); the identity in inference.
///
/// With `rate > 0` the layer owns a [`SeedGenerator`], created at build as Keras creates it, outside the
/// model's name scope (`seed_generator/seed_generator_state`, then `seed_generator_1/...`): a non-trainable
/// `uint32` variable `[seed, counter]`. Each training call draws its mask with the current key
/// (`bernoulli(key, 1 - rate)`, JAX's bits, as Keras's JAX backend) and advances the counter through the
/// scope. The seed state is part of every version, saved in checkpoints and runs, restored by rollback: a
/// resumed or replayed run draws the masks it drew the first time (unlike Keras, whose reloaded `Dropout`
/// starts its generator over: keras-team/keras#19796).
///
/// Without [`seed`](Self::seed), the seed is derived from the store's seed and the layer's path, so a model
/// built twice the same way draws the same masks.
///
/// # Examples
/// ```
/// use purestate::layers::{self, Dropout, Layer};
/// use purestate::{Scope, StateStore, Tensor};
/// let mut state = StateStore::new();
/// let mut drop = Dropout::new(0.5).seed(3);
/// layers::build(&mut drop, &mut state, &[6])?;
/// let x = Tensor::from([[1.0f32; 6]]);
/// let mut scope = Scope::new(&state);
/// let a = drop.call(&mut scope, &x, true)?;                    // zeros and 2.0s
/// let b = drop.call(&mut scope, &x, true)?;                    // the seed advanced: another mask
/// assert!(a.to_vec::<f32>()?.iter().all(|&v| v == 0.0 || v == 2.0));
/// assert!(!a.bit_eq(&b));
/// assert!(drop.call(&mut scope, &x, false)?.bit_eq(&x));       // inference: the identity
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Dropout {
    rate: f64,
    seed: Option<u32>,
    name: Option<String>,
    path: Option<String>,
    seeds: Option<SeedGenerator>,
}

impl Dropout {
    /// Drops a fraction `rate` in `[0, 1)` of the inputs in training (checked at build).
    pub fn new(rate: f64) -> Dropout {
        Dropout { rate, seed: None, name: None, path: None, seeds: None }
    }

    /// The seed of the layer's generator (Keras's `seed`).
    pub fn seed(mut self, seed: u32) -> Dropout {
        self.seed = Some(seed);
        self
    }

    /// The layer's name (default `dropout`, ...).
    pub fn name(mut self, name: impl Into<String>) -> Dropout {
        self.name = Some(name.into());
        self
    }

    /// The layer's seed generator (`None` for rate 0 or before build).
    pub fn seed_generator(&self) -> Option<&SeedGenerator> {
        self.seeds.as_ref()
    }
}

impl Layer for Dropout {
    fn default_name(&self) -> &'static str {
        "dropout"
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn build(&mut self, state: &mut StateStore, path: &str, input_shape: &[usize]) -> Result<Vec<usize>> {
        if !(0.0..1.0).contains(&self.rate) {
            return Err(Error::InvalidArgument {
                op: "Dropout",
                arg: "rate",
                reason: format!("`{path}`: {} is not in [0, 1)", self.rate),
            });
        }
        if self.rate > 0.0 {
            let seed = self.seed.unwrap_or_else(|| default_seed(state, path));
            self.seeds = Some(SeedGenerator::new(state, u64::from(seed))?);
        }
        self.path = Some(path.to_string());
        Ok(input_shape.to_vec())
    }

    fn call(&self, scope: &mut Scope, x: &Tensor, training: bool) -> Result<Tensor> {
        built(&self.path, "Dropout")?;
        let Some(seeds) = self.seeds.as_ref().filter(|_| training) else {
            return Ok(x.clone());
        };
        if !x.dtype().is_float() {
            return Err(bad_input(
                self.path.as_deref().unwrap_or(""),
                x.dims(),
                format!("expected floats, got {}", x.dtype()),
            ));
        }
        let keep_prob = 1.0 - self.rate;
        let mask = random::bernoulli(seeds.next_key_in(scope)?, keep_prob, x.shape())?;
        crate::ops::where_(&mask, x.div(keep_prob)?, 0.0, crate::ops::DEFAULT_FLOATX)
    }

    fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    fn variables(&self) -> Vec<Variable> {
        self.seeds.iter().map(|s| s.variable().clone()).collect()
    }

    fn trainable_weights(&self) -> Vec<Variable> {
        Vec::new()
    }
}

/// The seed of an unseeded Dropout: the store's seed folded with the layer's path (FNV-1a).
pub(super) fn default_seed(state: &StateStore, path: &str) -> u32 {
    let hash = path.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    state.seed().fold_in(hash).words()[0]
}

/// Applies an activation function (Keras's `Activation` layer; `ReLU` is `Activation::new("relu")`).
///
/// # Examples
/// ```
/// use purestate::layers::{self, Activation, Layer};
/// use purestate::{Scope, StateStore, Tensor};
/// let mut relu = Activation::new("relu");
/// layers::build(&mut relu, &mut StateStore::new(), &[2])?;
/// let y = relu.call(&mut Scope::new(&StateStore::new()), &Tensor::from([[-1.0f32, 2.0]]), false)?;
/// assert_eq!(y.to_vec::<f32>()?, [0.0, 2.0]);
/// assert!(layers::build(&mut Activation::new("swishy"), &mut StateStore::new(), &[2]).is_err());
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Activation {
    activation: String,
    act: ActivationFn,
    name: Option<String>,
    path: Option<String>,
}

impl Activation {
    /// The activation named `name` (Keras's names: `relu`, `sigmoid`, `tanh`, `softmax`, `linear`), checked
    /// at build.
    pub fn new(name: &str) -> Activation {
        Activation { activation: name.to_string(), act: ActivationFn::Linear, name: None, path: None }
    }

    /// The layer's name (default `activation`, ...).
    pub fn name(mut self, name: impl Into<String>) -> Activation {
        self.name = Some(name.into());
        self
    }
}

impl Layer for Activation {
    fn default_name(&self) -> &'static str {
        "activation"
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn build(&mut self, _state: &mut StateStore, path: &str, input_shape: &[usize]) -> Result<Vec<usize>> {
        self.act = ActivationFn::parse(&self.activation)?;
        self.path = Some(path.to_string());
        Ok(input_shape.to_vec())
    }

    fn call(&self, _scope: &mut Scope, x: &Tensor, _training: bool) -> Result<Tensor> {
        built(&self.path, "Activation")?;
        self.act.apply(x)
    }

    fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    fn variables(&self) -> Vec<Variable> {
        Vec::new()
    }
}
