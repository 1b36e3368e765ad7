//! The example model: a 64-128-10 multilayer perceptron (ReLU, softmax cross-entropy) over the digits, and
//! its pure training step.

#![allow(dead_code, unreachable_pub, missing_docs)]

use purestate::optim::{Adam, Optimizer};
use purestate::random::Key;
use purestate::{grad, init, losses, Error, Scope, StateStore, Tensor, Variable, VariableSpec};
use serde::{Deserialize, Serialize};

use super::digits::Digits;

/// What one step consumed: enough to recompute it exactly.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRecord {
    pub epoch: u32,
    pub step: u32,
    pub ids: Vec<u32>,
    pub learning_rate: f32,
}

/// The model's variables.
pub struct Mlp {
    pub w1: Variable,
    pub b1: Variable,
    pub w2: Variable,
    pub b2: Variable,
}

impl Mlp {
    pub fn create(state: &mut StateStore, key: Key) -> purestate::Result<Mlp> {
        let [k1, k2] = [key.fold_in(1), key.fold_in(2)];
        let dense = |state: &mut StateStore, scope: &str, fan_in: usize, units: usize, key: Key| {
            let w = state.create(
                VariableSpec::new(init::GlorotUniform)
                    .shape([fan_in, units])
                    .name("kernel")
                    .name_scope(scope)
                    .seed(key),
            )?;
            let b = state.create(VariableSpec::new(init::Zeros).shape([units]).name("bias").name_scope(scope))?;
            Ok::<_, Error>((w, b))
        };
        let (w1, b1) = dense(state, "dense", Digits::FEATURES, 128, k1)?;
        let (w2, b2) = dense(state, "dense_1", 128, Digits::CLASSES, k2)?;
        Ok(Mlp { w1, b1, w2, b2 })
    }

    pub fn variables(&self) -> Vec<Variable> {
        vec![self.w1.clone(), self.b1.clone(), self.w2.clone(), self.b2.clone()]
    }

    /// relu(x @ w1 + b1) @ w2 + b2, reading the weights through `read`.
    pub fn logits(
        &self,
        read: impl Fn(&Variable) -> purestate::Result<Tensor>,
        x: &Tensor,
    ) -> purestate::Result<Tensor> {
        let h = x.matmul(&read(&self.w1)?)?.add(&read(&self.b1)?)?.relu()?;
        h.matmul(&read(&self.w2)?)?.add(&read(&self.b2)?)
    }

    pub fn accuracy(&self, state: &StateStore, data: &Digits, ids: &[usize]) -> purestate::Result<f64> {
        let (x, y) = data.batch(ids)?;
        let predicted = self.logits(|v| state.get(v), &x)?.argmax(Some(-1), false)?;
        let correct = predicted.equal(&y)?.to_vec::<bool>()?.iter().filter(|&&c| c).count();
        Ok(correct as f64 / ids.len() as f64)
    }
}

/// One pure training step: the state in, the next state and the batch loss out. Everything it depends on is
/// in `state` and `record`, so replaying the record gives the same bits.
pub fn train_step(
    mut state: StateStore,
    model: &Mlp,
    opt: &Adam,
    data: &Digits,
    record: &StepRecord,
) -> purestate::Result<(StateStore, f32)> {
    let ids: Vec<usize> = record.ids.iter().map(|&i| i as usize).collect();
    let (x, y) = data.batch(&ids)?;
    // The learning rate is a variable of the state (Keras's `optimizer.learning_rate`): set it from the record.
    let lr = state.find("adam/learning_rate")?;
    state.assign(&lr, Tensor::from(record.learning_rate))?;
    let (loss, grads) = grad::value_and_grad(&state, |scope: &mut Scope| {
        let logits = model.logits(|v| scope.get(v), &x)?;
        losses::sparse_categorical_crossentropy(&y, &logits, true)
    })?;
    let next = opt.apply(state, &grads)?;
    Ok((next, loss.to_f64()? as f32))
}

/// A fresh model and Adam optimizer in a new store seeded with `key`.
pub fn build(key: Key, learning_rate: f32) -> purestate::Result<(StateStore, Mlp, Adam)> {
    let mut state = StateStore::new().with_seed(key);
    let model = Mlp::create(&mut state, key.fold_in(1))?;
    let mut opt = Adam::new(f64::from(learning_rate));
    opt.build(&mut state, &model.variables())?;
    Ok((state, model, opt))
}
