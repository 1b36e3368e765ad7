//! [`Adagrad`] (keras/src/optimizers/adagrad.py, Keras 3).

use super::{common_options, fused, Core, Rule, UpdateConsts, VarLane};
use crate::error::Result;
use crate::ops::num::{Float, Real};
use crate::optim::apply::OptReal;

/// Adagrad (Keras: `keras.optimizers.Adagrad(learning_rate=0.001, initial_accumulator_value=0.1,
/// epsilon=1e-7)`): `acc += g^2`, `p -= lr * g / sqrt(acc + epsilon)`. Slot: `adagrad/<path>_accumulator`.
#[derive(Clone, Debug)]
pub struct Adagrad {
    core: Core,
    rule: AdagradRule,
}

#[derive(Clone, Copy, Debug)]
struct AdagradRule {
    initial_accumulator_value: f64,
    epsilon: f64,
}

impl Adagrad {
    /// Adagrad with this learning rate (Keras's default is 0.001).
    pub fn new(learning_rate: f64) -> Self {
        Adagrad {
            core: Core::new("adagrad", learning_rate.into()),
            rule: AdagradRule { initial_accumulator_value: 0.1, epsilon: 1e-7 },
        }
    }

    /// Starting value of the accumulators (default 0.1).
    pub fn initial_accumulator_value(mut self, value: f64) -> Self {
        self.rule.initial_accumulator_value = value;
        self
    }

    /// Added inside the square root (default 1e-7).
    pub fn epsilon(mut self, epsilon: f64) -> Self {
        self.rule.epsilon = epsilon;
        self
    }
}

impl Default for Adagrad {
    fn default() -> Self {
        Adagrad::new(0.001)
    }
}

common_options!(Adagrad);

impl Rule for AdagradRule {
    fn slots(&self) -> Vec<(&'static str, f64)> {
        vec![("accumulator", self.initial_accumulator_value)]
    }

    fn update<T, G, D>(
        &self,
        p: &mut VarLane<'_, T>,
        slots: &mut [VarLane<'_, T>],
        g: &[T],
        k: &UpdateConsts<T::C>,
        gmap: G,
        decay: D,
    ) -> Result<()>
    where
        T: Float,
        T::C: OptReal,
        G: Fn(T::C) -> T::C + Sync + Send + Copy,
        D: Fn(T::C) -> T::C + Sync + Send + Copy,
    {
        let eps = <T::C as OptReal>::of(self.epsilon);
        let k = *k;
        let [acc] = slots else { unreachable!("Adagrad has one slot") };
        fused!(g; p, acc; |p: &mut T, acc: &mut T, g: T| {
            let w = decay(p.up());
            let g = gmap(g.up());
            *acc = T::down(acc.up() + g * g);
            *p = T::down(w - k.lr * g / (acc.up() + eps).sqrt());
        })
    }
}
