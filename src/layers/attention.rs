//! [`MultiHeadAttention`]: Keras's `keras.layers.MultiHeadAttention` over sequences (batch, length, features).

use super::dropout::default_seed;
use super::{bad_input, built, free_name, in_scope, Layer};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::init;
use crate::ops::{self, softmax_masked, DEFAULT_FLOATX};
use crate::random::{self, SeedGenerator};
use crate::scope::Scope;
use crate::store::StateStore;
use crate::tensor::Tensor;
use crate::variable::{Variable, VariableSpec};

/// Multi-head scaled dot-product attention (Keras's `MultiHeadAttention`), for inputs of shape
/// `(batch, length, features)`.
///
/// Variables, in Keras's order and with Keras's paths (its `EinsumDense` sublayers): `query/kernel`
/// `(query_features, num_heads, key_dim)`, `query/bias` `(num_heads, key_dim)`, the same for `key` (from the
/// key's features) and `value` (with `value_dim`), then, with `dropout > 0`, the seed state
/// `seed_generator/seed_generator_state`, and `attention_output/kernel` `(num_heads, value_dim, *output_shape)`
/// and `attention_output/bias` `output_shape`. Kernels are Glorot-uniform with Keras's fans for their shape,
/// biases zeros; `use_bias(false)` drops every bias.
///
/// The computation is Keras's: project, scale the query by `1 / sqrt(key_dim)`, scores `q · k` per head,
/// softmax over the key axis with the mask ([`softmax_masked`]: masked keys get probability 0), dropout of
/// the probabilities in training, the weighted sum of the values, and the output projection. Keras's einsums
/// are reshapes, transposes and batched [`matmul`](crate::ops::matmul)s here.
///
/// Masks (as Keras's `call`): `attention_mask` is a mask of shape `(batch, query_length, key_length)`, or
/// one that broadcasts to it (each dimension 1 or equal, at most three), true where a query may attend to a
/// key; a non-bool mask counts nonzero as true. `use_causal_mask` adds Keras's causal mask (query `i` sees
/// keys `j <= i`) and is combined with an explicit mask by logical and. A query row whose keys are all
/// masked gets zero probabilities (Keras's `Softmax`), so its output is the output bias.
///
/// Only rank-3 inputs (one attention axis) are taken; Keras's `attention_axes`, `use_gate`,
/// `sliding_window`, `return_attention_scores` and Keras masks carried by the inputs are not implemented.
///
/// # Examples
/// ```
/// use purestate::layers::{self, Layer, MultiHeadAttention};
/// use purestate::{Scope, StateStore, Tensor};
/// let mut state = StateStore::new();
/// let mut mha = MultiHeadAttention::new(2, 4).name("attn");
/// assert_eq!(layers::build(&mut mha, &mut state, &[3, 8])?, [3, 8]);      // per example: (length, features)
/// assert_eq!(mha.variables()[0].path(), "attn/query/kernel");
/// assert_eq!(mha.variables()[0].shape().dims(), [8, 2, 4]);
/// let x = Tensor::ones([1, 3, 8], purestate::DType::Float32);
/// let mut scope = Scope::new(&state);
/// let y = mha.call(&mut scope, &x, false)?;                                  // self-attention
/// assert_eq!(y.dims(), [1, 3, 8]);
/// let causal = mha.call_attention(&mut scope, &x, &x, None, None, true, false)?;
/// assert_eq!(causal.dims(), [1, 3, 8]);
/// let bad_mask = Tensor::ones([1, 2, 3], purestate::DType::Bool);
/// assert!(mha.call_attention(&mut scope, &x, &x, None, Some(&bad_mask), false, false).is_err());
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct MultiHeadAttention {
    num_heads: usize,
    key_dim: usize,
    value_dim: Option<usize>,
    dropout: f64,
    use_bias: bool,
    output_shape: Option<Vec<usize>>,
    seed: Option<u32>,
    name: Option<String>,
    path: Option<String>,
    weights: Option<Weights>,
}

/// A built layer's variables and input features.
#[derive(Clone, Debug)]
struct Weights {
    query: Projection,
    key: Projection,
    value: Projection,
    output: Projection,
    seeds: Option<SeedGenerator>,
    /// Features of the query, value and key inputs.
    features: [usize; 3],
    /// Per-position output shape.
    out: Vec<usize>,
}

/// One `EinsumDense` projection: its kernel and optional bias.
#[derive(Clone, Debug)]
struct Projection {
    kernel: Variable,
    bias: Option<Variable>,
}

impl MultiHeadAttention {
    /// Attention with `num_heads` heads of size `key_dim` for queries and keys (and values, unless
    /// [`value_dim`](Self::value_dim)), no dropout, biases, and an output as wide as the query (Keras's
    /// defaults). Both must be positive (checked at build).
    pub fn new(num_heads: usize, key_dim: usize) -> MultiHeadAttention {
        MultiHeadAttention {
            num_heads,
            key_dim,
            value_dim: None,
            dropout: 0.0,
            use_bias: true,
            output_shape: None,
            seed: None,
            name: None,
            path: None,
            weights: None,
        }
    }

    /// The size of each head for the values (default `key_dim`).
    pub fn value_dim(mut self, value_dim: usize) -> MultiHeadAttention {
        self.value_dim = Some(value_dim);
        self
    }

    /// The dropout rate in `[0, 1)` of the attention probabilities in training (default 0).
    pub fn dropout(mut self, rate: f64) -> MultiHeadAttention {
        self.dropout = rate;
        self
    }

    /// Whether the projections have biases (default true).
    pub fn use_bias(mut self, use_bias: bool) -> MultiHeadAttention {
        self.use_bias = use_bias;
        self
    }

    /// The per-position output shape (default: the query's feature count), as Keras's `output_shape`.
    pub fn output_shape(mut self, shape: &[usize]) -> MultiHeadAttention {
        self.output_shape = Some(shape.to_vec());
        self
    }

    /// The seed of the dropout's generator (Keras's `seed`); without it, one derived from the store's seed and
    /// the layer's path.
    pub fn seed(mut self, seed: u32) -> MultiHeadAttention {
        self.seed = Some(seed);
        self
    }

    /// The layer's name (default `multi_head_attention`, ...).
    pub fn name(mut self, name: impl Into<String>) -> MultiHeadAttention {
        self.name = Some(name.into());
        self
    }

    /// The seed generator of the attention dropout (`None` without dropout or before build).
    pub fn seed_generator(&self) -> Option<&SeedGenerator> {
        self.weights.as_ref().and_then(|w| w.seeds.as_ref())
    }

    /// Builds the layer for cross-attention (Keras's `build(query_shape, value_shape, key_shape)`), with
    /// per-example shapes `(length, features)`: `key_shape` defaults to `value_shape`. Under `path`, or when
    /// `None` the layer's name or the first free default name. Returns the per-example output shape.
    ///
    /// # Errors
    /// As [`Layer::build`]; [`Error::LayerInput`] also when the value and key lengths differ.
    pub fn build_attention(
        &mut self,
        state: &mut StateStore,
        path: Option<&str>,
        query_shape: &[usize],
        value_shape: &[usize],
        key_shape: Option<&[usize]>,
    ) -> Result<Vec<usize>> {
        let path = match (path, &self.name) {
            (Some(p), _) => p.to_string(),
            (None, Some(n)) => n.clone(),
            (None, None) => free_name(self.default_name(), |n| state.variables().iter().any(|v| in_scope(v.path(), n))),
        };
        self.build_shapes(state, &path, query_shape, value_shape, key_shape.unwrap_or(value_shape))
    }

    /// The attention of `query` `(batch, T, features)` over `value` `(batch, S, features)` with `key`
    /// (default `value`), as Keras's `call(query, value, key, attention_mask=..., use_causal_mask=...,
    /// training=...)`. Returns `(batch, T, *output_shape)`.
    ///
    /// # Errors
    /// [`Error::LayerInput`] naming the layer's path for an input of the wrong rank or features, inputs whose
    /// batch or lengths disagree, or an `attention_mask` that does not broadcast to `(batch, T, S)`;
    /// [`Error::InvalidArgument`] when the layer is not built.
    #[allow(clippy::too_many_arguments)]
    pub fn call_attention(
        &self,
        scope: &mut Scope,
        query: &Tensor,
        value: &Tensor,
        key: Option<&Tensor>,
        attention_mask: Option<&Tensor>,
        use_causal_mask: bool,
        training: bool,
    ) -> Result<Tensor> {
        let path = built(&self.path, "MultiHeadAttention")?;
        let w = self.weights.as_ref().ok_or_else(unbuilt)?;
        let key = key.unwrap_or(value);
        for (what, x, features) in
            [("query", query, w.features[0]), ("value", value, w.features[1]), ("key", key, w.features[2])]
        {
            if x.ndim() != 3 || x.dims()[2] != features {
                return Err(bad_input(path, x.dims(), format!("expected the {what} as (batch, length, {features})")));
            }
        }
        if key.dims()[..2] != value.dims()[..2] || query.dims()[0] != value.dims()[0] {
            return Err(bad_input(
                path,
                key.dims(),
                format!(
                    "the key must match the value {:?} and the query {:?} in batch and length",
                    value.dims(),
                    query.dims()
                ),
            ));
        }
        let (b, t, s) = (query.dims()[0], query.dims()[1], value.dims()[1]);
        let mask = self.mask(path, attention_mask, use_causal_mask, [b, t, s])?;
        let (h, kd, vd) = (self.num_heads, self.key_dim, self.value_dim.unwrap_or(self.key_dim));

        // (b, len, features) @ (features, h * d) + bias -> (b, h, len, d)
        let project = |scope: &mut Scope, x: &Tensor, p: &Projection, d: usize| -> Result<Tensor> {
            let kernel = scope.get(&p.kernel)?;
            let f = kernel.dims()[0] as isize;
            let mut y = x.matmul(&kernel.reshape(&[f, (h * d) as isize])?)?;
            if let Some(bias) = &p.bias {
                y = y.add(&scope.get(bias)?.reshape(&[(h * d) as isize])?)?;
            }
            y.reshape(&[x.dims()[0] as isize, x.dims()[1] as isize, h as isize, d as isize])?.swapaxes(1, 2)
        };
        let q = project(scope, query, &w.query, kd)?;
        let k = project(scope, key, &w.key, kd)?;
        let v = project(scope, value, &w.value, vd)?;
        let q = q.mul(1.0 / (kd as f64).sqrt())?;
        let scores = q.matmul(&k.swapaxes(2, 3)?)?; // (b, h, t, s)
        let mut probs = match &mask {
            Some(m) => softmax_masked(&scores, &m.expand_dims(1)?, -1)?,
            None => scores.softmax(-1)?,
        };
        if let Some(seeds) = w.seeds.as_ref().filter(|_| training) {
            let keep = 1.0 - self.dropout;
            let drop = random::bernoulli(seeds.next_key_in(scope)?, keep, probs.shape())?;
            probs = ops::where_(&drop, probs.div(keep)?, Tensor::zeros([], probs.dtype()), DEFAULT_FLOATX)?;
        }
        let heads = probs.matmul(&v)?.swapaxes(1, 2)?; // (b, t, h, vd)
        let kernel = scope.get(&w.output.kernel)?;
        let width: usize = w.out.iter().product();
        let mut y = heads
            .reshape(&[b as isize, t as isize, (h * vd) as isize])?
            .matmul(&kernel.reshape(&[(h * vd) as isize, width as isize])?)?;
        if let Some(bias) = &w.output.bias {
            y = y.add(&scope.get(bias)?.reshape(&[width as isize])?)?;
        }
        let dims: Vec<isize> = [b, t].iter().chain(&w.out).map(|&d| d as isize).collect();
        y.reshape(&dims)
    }

    /// The combined `(batch, T, S)` bool mask, or `None` when nothing is masked.
    fn mask(
        &self,
        path: &str,
        attention_mask: Option<&Tensor>,
        causal: bool,
        bts: [usize; 3],
    ) -> Result<Option<Tensor>> {
        let explicit = match attention_mask {
            None => None,
            Some(m) => {
                let md = m.dims();
                let fits = md.len() <= 3 && md.iter().rev().zip(bts.iter().rev()).all(|(&a, &d)| a == 1 || a == d);
                if !fits {
                    return Err(bad_input(
                        path,
                        md,
                        format!("the attention mask must broadcast to (batch, query length, key length) = {:?}", bts),
                    ));
                }
                let m = if m.dtype() == DType::Bool { m.detached() } else { m.detached().not_equal(0)? };
                Some(m.broadcast_to(bts.to_vec())?)
            }
        };
        if !causal {
            return Ok(explicit);
        }
        let lower = Tensor::full([bts[1], bts[2]], DType::Bool, true).tril(0)?;
        Ok(Some(match explicit {
            Some(m) => m.logical_and(&lower)?,
            None => lower.expand_dims(0)?,
        }))
    }

    fn build_shapes(
        &mut self,
        state: &mut StateStore,
        path: &str,
        query: &[usize],
        value: &[usize],
        key: &[usize],
    ) -> Result<Vec<usize>> {
        if self.num_heads == 0 || self.key_dim == 0 || self.value_dim == Some(0) {
            return Err(bad_input(path, query, "`num_heads`, `key_dim` and `value_dim` must be positive"));
        }
        if self.output_shape.as_ref().is_some_and(|s| s.is_empty() || s.contains(&0)) {
            return Err(bad_input(path, query, "`output_shape` must be non-empty and positive"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::InvalidArgument {
                op: "MultiHeadAttention",
                arg: "dropout",
                reason: format!("`{path}`: {} is not in [0, 1)", self.dropout),
            });
        }
        for shape in [query, value, key] {
            if shape.len() != 2 || shape[1] == 0 {
                return Err(bad_input(path, shape, "expected examples of shape (length, features)"));
            }
        }
        if value[0] != key[0] {
            return Err(bad_input(path, key, format!("the key's length must be the value's, {}", value[0])));
        }
        let (h, kd, vd) = (self.num_heads, self.key_dim, self.value_dim.unwrap_or(self.key_dim));
        let out = self.output_shape.clone().unwrap_or_else(|| vec![query[1]]);
        let mut staged = state.clone();
        let bias = self.use_bias;
        let query_p = projection(&mut staged, path, "query", vec![query[1], h, kd], vec![h, kd], bias)?;
        let key_p = projection(&mut staged, path, "key", vec![key[1], h, kd], vec![h, kd], bias)?;
        let value_p = projection(&mut staged, path, "value", vec![value[1], h, vd], vec![h, vd], bias)?;
        let seeds = if self.dropout > 0.0 {
            let seed = self.seed.unwrap_or_else(|| default_seed(&staged, path));
            Some(SeedGenerator::with_name(&mut staged, u64::from(seed), &format!("{path}/seed_generator"))?)
        } else {
            None
        };
        let kernel = [h, vd].iter().chain(&out).copied().collect();
        let output = projection(&mut staged, path, "attention_output", kernel, out.clone(), bias)?;
        *state = staged;
        self.weights = Some(Weights {
            query: query_p,
            key: key_p,
            value: value_p,
            output,
            seeds,
            features: [query[1], value[1], key[1]],
            out: out.clone(),
        });
        self.path = Some(path.to_string());
        Ok([query[0]].into_iter().chain(out).collect())
    }
}

/// Creates the `kernel` (Glorot-uniform) and, with `use_bias`, the `bias` (zeros) of the `EinsumDense`
/// sublayer `path/name`.
fn projection(
    state: &mut StateStore,
    path: &str,
    name: &str,
    kernel: Vec<usize>,
    bias: Vec<usize>,
    use_bias: bool,
) -> Result<Projection> {
    let scope = format!("{path}/{name}");
    let kernel =
        state.create(VariableSpec::new(init::GlorotUniform).shape(kernel).name("kernel").name_scope(&scope))?;
    let bias = if use_bias {
        Some(state.create(VariableSpec::new(init::Zeros).shape(bias).name("bias").name_scope(&scope))?)
    } else {
        None
    };
    Ok(Projection { kernel, bias })
}

fn unbuilt() -> Error {
    Error::InvalidArgument {
        op: "MultiHeadAttention",
        arg: "layer",
        reason: "the layer is not built: call `build` (or build its model) first".into(),
    }
}

impl Layer for MultiHeadAttention {
    fn default_name(&self) -> &'static str {
        "multi_head_attention"
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Builds for self-attention: query, value and key all of the per-example shape `input_shape`,
    /// `(length, features)`.
    fn build(&mut self, state: &mut StateStore, path: &str, input_shape: &[usize]) -> Result<Vec<usize>> {
        self.build_shapes(state, path, input_shape, input_shape, input_shape)
    }

    /// Self-attention of `x` `(batch, length, features)`, without a mask.
    fn call(&self, scope: &mut Scope, x: &Tensor, training: bool) -> Result<Tensor> {
        self.call_attention(scope, x, x, None, None, false, training)
    }

    fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    fn variables(&self) -> Vec<Variable> {
        let Some(w) = &self.weights else { return Vec::new() };
        let mut vars = Vec::new();
        for p in [&w.query, &w.key, &w.value] {
            vars.push(p.kernel.clone());
            vars.extend(p.bias.clone());
        }
        vars.extend(w.seeds.as_ref().map(|s| s.variable().clone()));
        vars.push(w.output.kernel.clone());
        vars.extend(w.output.bias.clone());
        vars
    }

    fn trainable_weights(&self) -> Vec<Variable> {
        let seed = self.seed_generator().map(|s| s.variable().clone());
        self.variables().into_iter().filter(|v| Some(v) != seed.as_ref()).collect()
    }
}
