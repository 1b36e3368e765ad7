//! [`Embedding`] (Keras's `keras.layers.Embedding`) and [`PositionEmbedding`] (KerasHub's
//! `keras_hub.layers.PositionEmbedding`): the token and position tables of a transformer.

use super::{bad_input, built, handle, Layer};
use crate::error::{Error, Result};
use crate::init;
use crate::scope::Scope;
use crate::store::StateStore;
use crate::tensor::Tensor;
use crate::variable::{Variable, VariableSpec};

/// A lookup table from integer ids to vectors (Keras's `Embedding`): `embeddings[ids]`.
///
/// Variable: `embeddings` of shape `(input_dim, output_dim)`, uniform in `[-0.05, 0.05)` (Keras's
/// `"uniform"`). An input of integer ids of any shape gives that shape plus `output_dim`; an id outside
/// `[0, input_dim)` is an error (Keras on JAX clamps it silently). The gradient of the table is a
/// deterministic scatter-add: repeated ids add their rows in a fixed order.
///
/// # Examples
/// ```
/// use purestate::layers::{self, Embedding, Layer};
/// use purestate::{Scope, StateStore, Tensor};
/// let mut state = StateStore::new();
/// let mut emb = Embedding::new(10, 4);
/// layers::build(&mut emb, &mut state, &[3])?;
/// let y = emb.call(&mut Scope::new(&state), &Tensor::from([[1i32, 2, 9]]), false)?;
/// assert_eq!(y.dims(), [1, 3, 4]);
/// assert!(emb.call(&mut Scope::new(&state), &Tensor::from([[10i32]]), false).is_err());
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Embedding {
    input_dim: usize,
    output_dim: usize,
    name: Option<String>,
    path: Option<String>,
    embeddings: Option<Variable>,
}

impl Embedding {
    /// A table of `input_dim` vectors of `output_dim` values.
    pub fn new(input_dim: usize, output_dim: usize) -> Embedding {
        Embedding { input_dim, output_dim, name: None, path: None, embeddings: None }
    }

    /// The layer's name (default `embedding`, ...).
    pub fn name(mut self, name: impl Into<String>) -> Embedding {
        self.name = Some(name.into());
        self
    }

    /// The table, once built.
    pub fn embeddings(&self) -> Option<&Variable> {
        self.embeddings.as_ref()
    }
}

impl Layer for Embedding {
    fn default_name(&self) -> &'static str {
        "embedding"
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn build(&mut self, state: &mut StateStore, path: &str, input_shape: &[usize]) -> Result<Vec<usize>> {
        if self.input_dim == 0 || self.output_dim == 0 {
            return Err(bad_input(path, input_shape, "`input_dim` and `output_dim` must be positive"));
        }
        let table = state.create(
            VariableSpec::new(init::RandomUniform::new(-0.05, 0.05))
                .shape([self.input_dim, self.output_dim])
                .name("embeddings")
                .name_scope(path),
        )?;
        (self.embeddings, self.path) = (Some(table), Some(path.to_string()));
        Ok(input_shape.iter().copied().chain([self.output_dim]).collect())
    }

    fn call(&self, scope: &mut Scope, x: &Tensor, _training: bool) -> Result<Tensor> {
        let path = built(&self.path, "Embedding")?;
        if !x.dtype().is_integer() {
            return Err(bad_input(path, x.dims(), format!("expected integer ids, got {}", x.dtype())));
        }
        let table = scope.get(handle(&self.embeddings, "Embedding")?)?;
        table.take(x, Some(0)).map_err(|e| match e {
            Error::IndexOutOfRange { index, size, .. } => {
                bad_input(path, x.dims(), format!("id {index} is outside the vocabulary of {size}"))
            }
            other => other,
        })
    }

    fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    fn variables(&self) -> Vec<Variable> {
        self.embeddings.iter().cloned().collect()
    }
}

/// Learned position embeddings (KerasHub's `PositionEmbedding`): a table of `sequence_length` vectors, one per
/// position, whose first `T` rows are returned broadcast to the input's shape `(batch, T, features)`, for the
/// caller to add to the token embeddings.
///
/// Variable: `embeddings` of shape `(sequence_length, features)`, Glorot-uniform (KerasHub's default), where
/// `features` is the input's last axis at build time. A sequence longer than the table is an
/// [`Error::LayerInput`] naming the layer, the input's shape and the table's length (KerasHub would fail in
/// its slice).
///
/// # Examples
/// ```
/// use purestate::layers::{self, Embedding, Layer, PositionEmbedding};
/// use purestate::{Scope, StateStore, Tensor};
/// let mut state = StateStore::new();
/// let (mut tokens, mut positions) = (Embedding::new(10, 4), PositionEmbedding::new(8));
/// layers::build(&mut tokens, &mut state, &[8])?;
/// assert_eq!(layers::build(&mut positions, &mut state, &[8, 4])?, [8, 4]);
/// let mut scope = Scope::new(&state);
/// let x = tokens.call(&mut scope, &Tensor::from([[1i32, 2, 3], [4, 5, 6]]), false)?;   // (2, 3, 4)
/// let h = x.add(&positions.call(&mut scope, &x, false)?)?;                              // rows 0..3 added
/// assert_eq!(h.dims(), [2, 3, 4]);
/// let long = Tensor::zeros([1, 9, 4], purestate::DType::Float32);
/// let err = positions.call(&mut scope, &long, false).unwrap_err();
/// assert!(err.to_string().contains("position_embedding") && err.to_string().contains("(1, 9, 4)"));
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct PositionEmbedding {
    sequence_length: usize,
    name: Option<String>,
    path: Option<String>,
    embeddings: Option<Variable>,
}

impl PositionEmbedding {
    /// A table for sequences of up to `sequence_length` positions.
    pub fn new(sequence_length: usize) -> PositionEmbedding {
        PositionEmbedding { sequence_length, name: None, path: None, embeddings: None }
    }

    /// The layer's name (default `position_embedding`, ...).
    pub fn name(mut self, name: impl Into<String>) -> PositionEmbedding {
        self.name = Some(name.into());
        self
    }

    /// The longest sequence the table covers.
    pub fn sequence_length(&self) -> usize {
        self.sequence_length
    }

    /// The table, once built.
    pub fn embeddings(&self) -> Option<&Variable> {
        self.embeddings.as_ref()
    }
}

impl Layer for PositionEmbedding {
    fn default_name(&self) -> &'static str {
        "position_embedding"
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// `input_shape` is the per-example `(T, features)` (or `(features,)` alone); the output has the same shape.
    fn build(&mut self, state: &mut StateStore, path: &str, input_shape: &[usize]) -> Result<Vec<usize>> {
        let Some(&features) = input_shape.last() else {
            return Err(bad_input(path, input_shape, "expected examples of shape (sequence, features)"));
        };
        if self.sequence_length == 0 || features == 0 {
            return Err(bad_input(path, input_shape, "`sequence_length` and the features must be positive"));
        }
        if input_shape.len() >= 2 && input_shape[input_shape.len() - 2] > self.sequence_length {
            return Err(self.too_long(path, input_shape));
        }
        let table = state.create(
            VariableSpec::new(init::GlorotUniform)
                .shape([self.sequence_length, features])
                .name("embeddings")
                .name_scope(path),
        )?;
        (self.embeddings, self.path) = (Some(table), Some(path.to_string()));
        Ok(input_shape.to_vec())
    }

    /// The table's first `T` rows broadcast to `x`'s shape `(..., T, features)`; `x`'s values are not read.
    fn call(&self, scope: &mut Scope, x: &Tensor, _training: bool) -> Result<Tensor> {
        let path = built(&self.path, "PositionEmbedding")?;
        let table = scope.get(handle(&self.embeddings, "PositionEmbedding")?)?;
        let features = table.dims()[1];
        if x.ndim() < 2 || x.dims()[x.ndim() - 1] != features {
            return Err(bad_input(
                path,
                x.dims(),
                format!("expected inputs of shape (..., sequence, {features}), sequence first"),
            ));
        }
        let length = x.dims()[x.ndim() - 2];
        if length > self.sequence_length {
            return Err(self.too_long(path, x.dims()));
        }
        let rows = if length == self.sequence_length { table } else { table.slice(&[0, 0], &[length as isize, -1])? };
        rows.broadcast_to(x.shape())
    }

    fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    fn variables(&self) -> Vec<Variable> {
        self.embeddings.iter().cloned().collect()
    }
}

impl PositionEmbedding {
    fn too_long(&self, path: &str, got: &[usize]) -> Error {
        bad_input(
            path,
            got,
            format!(
                "a sequence of {} positions is longer than the position table of {}",
                got[got.len() - 2],
                self.sequence_length
            ),
        )
    }
}
