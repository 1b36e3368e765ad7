//! The MLP the step benchmarks share (`benches/grad.rs`, `benches/replica.rs`): relu hidden layers, logits out,
//! Adam, on a fixed digits-like batch (values 0..16 scaled by 1/16, labels cycling over the classes).

#![allow(dead_code, unreachable_pub)]

use purestate::optim::{Adam, Optimizer};
use purestate::{init, DType, Result, Scope, StateStore, Tensor, Variable, VariableSpec};

pub struct Mlp {
    pub layers: Vec<(Variable, Variable)>,
    pub opt: Adam,
    pub x: Tensor,
    pub labels: Tensor,
    pub onehot: Tensor,
}

/// An MLP of `sizes` (inputs, hidden..., classes) with Adam built, and a batch of `batch` examples.
pub fn build(sizes: &[usize], batch: usize) -> (StateStore, Mlp) {
    let mut state = StateStore::new();
    let mut layers = Vec::new();
    for (i, pair) in sizes.windows(2).enumerate() {
        let w = VariableSpec::new(init::GlorotUniform).shape([pair[0], pair[1]]).name(format!("w{i}"));
        let b = VariableSpec::new(init::Zeros).shape([pair[1]]).name(format!("b{i}"));
        layers.push((state.create(w).unwrap(), state.create(b).unwrap()));
    }
    let mut opt = Adam::new(1e-3);
    let vars: Vec<Variable> = layers.iter().flat_map(|(w, b)| [w.clone(), b.clone()]).collect();
    opt.build(&mut state, &vars).unwrap();
    let n_in = sizes[0];
    let x = Tensor::from_fn([batch, n_in], DType::Float32, |i| ((i * 7 + i / n_in) % 17) as f64 / 16.0);
    let classes = *sizes.last().unwrap();
    let labels: Vec<i32> = (0..batch).map(|i| (i * 3 % classes) as i32).collect();
    let onehot =
        Tensor::from_fn([batch, classes], DType::Float32, |i| f64::from(labels[i / classes] as usize == i % classes));
    (state, Mlp { layers, opt, x, labels: Tensor::from(labels), onehot })
}

impl Mlp {
    /// The logits of `x`, reading the weights through `s`.
    pub fn logits(&self, s: &mut Scope, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h.matmul(&s.get(w)?)?.add(&s.get(b)?)?;
            if i + 1 < self.layers.len() {
                h = h.relu()?;
            }
        }
        Ok(h)
    }
}
