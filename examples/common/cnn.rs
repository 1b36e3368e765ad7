//! The example CNN over the 8x8 digits, built from Keras layers: two Conv2D + BatchNormalization + ReLU blocks
//! (the first followed by 2x2 max pooling), global average pooling, Dropout and a Dense head; and its pure
//! training step, whose differentiated function returns the moving statistics and the dropout seed state.

#![allow(dead_code, unreachable_pub, missing_docs)]

use purestate::layers::{
    Activation, BatchNormalization, Conv2D, Dense, Dropout, GlobalAveragePooling2D, Layer, MaxPooling2D, Sequential,
};
use purestate::ops::Padding;
use purestate::optim::{Adam, Optimizer};
use purestate::random::Key;
use purestate::{grad, losses, StateStore, Tensor};

use super::digits::Digits;
use super::mlp::StepRecord;

/// The model: layers and handles, no values.
pub struct Cnn {
    pub model: Sequential,
}

impl Cnn {
    /// The layers (Keras's defaults unless said): conv 3x3 to `c1` channels, same padding; BatchNorm; ReLU;
    /// 2x2 max pool; conv 3x3 to `c2`; BatchNorm; ReLU; global average pool; Dropout 0.25; Dense 10.
    pub fn create(state: &mut StateStore, c1: usize, c2: usize) -> purestate::Result<Cnn> {
        let mut model = Sequential::new("cnn")
            .add(Conv2D::new(c1, [3, 3]).padding(Padding::Same))
            .add(BatchNormalization::new().momentum(0.9))
            .add(Activation::new("relu"))
            .add(MaxPooling2D::new([2, 2]))
            .add(Conv2D::new(c2, [3, 3]).padding(Padding::Same))
            .add(BatchNormalization::new().momentum(0.9))
            .add(Activation::new("relu"))
            .add(GlobalAveragePooling2D::new())
            .add(Dropout::new(0.25))
            .add(Dense::new(Digits::CLASSES));
        model.build(state, &[8, 8, 1])?;
        Ok(Cnn { model })
    }

    /// A batch of flat 64-pixel rows as NHWC images.
    pub fn images(x: &Tensor) -> purestate::Result<Tensor> {
        x.reshape(&[-1, 8, 8, 1])
    }

    /// Held-out accuracy in inference mode (moving statistics, no dropout).
    pub fn accuracy(&self, state: &StateStore, data: &Digits, ids: &[usize]) -> purestate::Result<f64> {
        let (x, y) = data.batch(ids)?;
        let logits = self.model.call(&mut purestate::Scope::new(state), &Self::images(&x)?, false)?;
        let predicted = logits.argmax(Some(-1), false)?;
        let correct = predicted.equal(&y)?.to_vec::<bool>()?.iter().filter(|&&c| c).count();
        Ok(correct as f64 / ids.len() as f64)
    }
}

/// One pure training step: the state in, the next state (weights, Adam's slots, BatchNorm's moving statistics,
/// the dropout seed) and the batch loss out.
pub fn train_step(
    mut state: StateStore,
    cnn: &Cnn,
    opt: &Adam,
    data: &Digits,
    record: &StepRecord,
) -> purestate::Result<(StateStore, f32)> {
    let ids: Vec<usize> = record.ids.iter().map(|&i| i as usize).collect();
    let (x, y) = data.batch(&ids)?;
    let x = Cnn::images(&x)?;
    let lr = state.find("adam/learning_rate")?;
    state.assign(&lr, Tensor::from(record.learning_rate))?;
    let out = grad::value_and_grad_aux(state, |scope| {
        let logits = cnn.model.call(scope, &x, true)?;
        Ok((losses::sparse_categorical_crossentropy(&y, &logits, true)?, ()))
    })?;
    let loss = out.loss.to_f64()? as f32;
    Ok((opt.apply(out.state, &out.grads)?, loss))
}

/// A fresh CNN (32 and 64 channels) and Adam optimizer in a new store seeded with `key`.
pub fn build(key: Key, learning_rate: f32) -> purestate::Result<(StateStore, Cnn, Adam)> {
    let mut state = StateStore::new().with_seed(key);
    let cnn = Cnn::create(&mut state, 32, 64)?;
    let mut opt = Adam::new(f64::from(learning_rate));
    opt.build(&mut state, &cnn.model.trainable_weights())?;
    Ok((state, cnn, opt))
}
