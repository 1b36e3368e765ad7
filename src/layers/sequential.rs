//! [`Sequential`]: layers chained in order, Keras's `keras.Sequential`.

use super::{bad_input, built, free_name, Layer};
use crate::error::Result;
use crate::scope::Scope;
use crate::store::StateStore;
use crate::tensor::Tensor;
use crate::variable::Variable;

/// Layers applied one after another (Keras's `Sequential`). Building it builds each layer under
/// `model/layer` (each layer's own name, or Keras's default made unique within the model: `conv2d`,
/// `conv2d_1`, ...) for the per-example shape the previous layer produces; calling it calls each in turn
/// with the same `training` flag, through the same scope.
///
/// # Examples
/// ```
/// use purestate::layers::{BatchNormalization, Conv2D, Dense, Flatten, Layer, MaxPooling2D, Sequential};
/// use purestate::{ops::Padding, StateStore};
/// let mut state = StateStore::new();
/// let mut model = Sequential::new("cnn")
///     .add(Conv2D::new(8, [3, 3]).padding(Padding::Same))
///     .add(BatchNormalization::new())
///     .add(MaxPooling2D::new([2, 2]))
///     .add(Flatten::new())
///     .add(Dense::new(10));
/// assert_eq!(model.build(&mut state, &[8, 8, 1])?, [10]);
/// let paths: Vec<String> = state.variables().iter().map(|v| v.path().to_string()).collect();
/// assert_eq!(&paths[..3], ["cnn/conv2d/kernel", "cnn/conv2d/bias", "cnn/batch_normalization/gamma"]);
/// assert_eq!(model.output_shape(), Some(&[10][..]));
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Debug)]
pub struct Sequential {
    name: String,
    layers: Vec<Box<dyn Layer>>,
    path: Option<String>,
    input_shape: Vec<usize>,
    output_shape: Option<Vec<usize>>,
}

impl Sequential {
    /// An empty model named `name` (the first part of its variables' paths).
    pub fn new(name: impl Into<String>) -> Sequential {
        Sequential { name: name.into(), layers: Vec::new(), path: None, input_shape: Vec::new(), output_shape: None }
    }

    /// The model with `layer` appended (Keras's `Sequential.add`).
    #[allow(clippy::should_implement_trait)] // Keras's name; a builder, not `std::ops::Add`
    pub fn add(mut self, layer: impl Layer + 'static) -> Sequential {
        self.layers.push(Box::new(layer));
        self
    }

    /// The model with a boxed layer appended.
    pub fn push(&mut self, layer: Box<dyn Layer>) {
        self.layers.push(layer);
    }

    /// Builds every layer for per-example inputs of `input_shape`, under the model's name, and returns the
    /// per-example output shape. All or nothing: on error the state is unchanged.
    ///
    /// # Errors
    /// The first layer's error, naming its path and the shape it was given.
    pub fn build(&mut self, state: &mut StateStore, input_shape: &[usize]) -> Result<Vec<usize>> {
        let name = self.name.clone();
        Layer::build(self, state, &name, input_shape)
    }

    /// The model's layers, in order.
    pub fn layers(&self) -> &[Box<dyn Layer>] {
        &self.layers
    }

    /// The per-example input shape the model was built for.
    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// The per-example output shape, once built.
    pub fn output_shape(&self) -> Option<&[usize]> {
        self.output_shape.as_deref()
    }
}

impl Layer for Sequential {
    fn default_name(&self) -> &'static str {
        "sequential"
    }

    fn name(&self) -> Option<&str> {
        Some(&self.name)
    }

    fn build(&mut self, state: &mut StateStore, path: &str, input_shape: &[usize]) -> Result<Vec<usize>> {
        let mut staged = state.clone();
        let mut shape = input_shape.to_vec();
        let mut names: Vec<String> = Vec::with_capacity(self.layers.len());
        for layer in &mut self.layers {
            let name = match layer.name() {
                Some(name) => name.to_string(),
                None => free_name(layer.default_name(), |n| names.iter().any(|m| m == n)),
            };
            if names.contains(&name) {
                return Err(bad_input(&format!("{path}/{name}"), &shape, "two layers of the model have this name"));
            }
            shape = layer.build(&mut staged, &format!("{path}/{name}"), &shape)?;
            names.push(name);
        }
        *state = staged;
        self.path = Some(path.to_string());
        self.input_shape = input_shape.to_vec();
        self.output_shape = Some(shape.clone());
        Ok(shape)
    }

    fn call(&self, scope: &mut Scope, x: &Tensor, training: bool) -> Result<Tensor> {
        built(&self.path, "Sequential")?;
        let mut h = x.clone();
        for layer in &self.layers {
            h = layer.call(scope, &h, training)?;
        }
        Ok(h)
    }

    fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    fn variables(&self) -> Vec<Variable> {
        self.layers.iter().flat_map(|l| l.variables()).collect()
    }

    fn trainable_weights(&self) -> Vec<Variable> {
        self.layers.iter().flat_map(|l| l.trainable_weights()).collect()
    }
}
