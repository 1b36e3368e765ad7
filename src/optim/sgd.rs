//! [`Sgd`]: stochastic gradient descent with optional momentum and Nesterov momentum
//! (keras/src/optimizers/sgd.py, Keras 3).

use super::{common_options, fused, Core, Rule, UpdateConsts, VarLane};
use crate::error::Result;
use crate::ops::num::Float;
use crate::optim::apply::OptReal;

/// SGD (Keras: `keras.optimizers.SGD(learning_rate=0.01, momentum=0.0, nesterov=False)`).
///
/// Without momentum `p -= lr * g`. With momentum `m = m * momentum - g * lr`, then `p += m`, or with Nesterov
/// `p += m * momentum - g * lr`. Slot: `sgd/<path>_momentum` (only with momentum).
#[derive(Clone, Debug)]
pub struct Sgd {
    core: Core,
    rule: SgdRule,
}

#[derive(Clone, Copy, Debug)]
struct SgdRule {
    momentum: f64,
    nesterov: bool,
}

impl Sgd {
    /// SGD with this learning rate (Keras's default is 0.01).
    pub fn new(learning_rate: f64) -> Self {
        Sgd { core: Core::new("sgd", learning_rate.into()), rule: SgdRule { momentum: 0.0, nesterov: false } }
    }

    /// Momentum in `[0, 1)` (default 0).
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.rule.momentum = momentum;
        self
    }

    /// Nesterov momentum (default false).
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.rule.nesterov = nesterov;
        self
    }
}

impl Default for Sgd {
    fn default() -> Self {
        Sgd::new(0.01)
    }
}

common_options!(Sgd);

impl Rule for SgdRule {
    fn slots(&self) -> Vec<(&'static str, f64)> {
        if self.momentum != 0.0 {
            vec![("momentum", 0.0)]
        } else {
            Vec::new()
        }
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
        let lr = k.lr;
        match slots {
            [] => fused!(g; p; |p: &mut T, g: T| {
                let w = decay(p.up());
                *p = T::down(w - gmap(g.up()) * lr);
            }),
            // The nesterov choice is made once, outside the loop, so that each loop vectorizes.
            [m] if self.nesterov => {
                let momentum = T::C::of(self.momentum);
                fused!(g; p, m; |p: &mut T, m: &mut T, g: T| {
                    let w = decay(p.up());
                    let g = gmap(g.up());
                    *m = T::down(m.up() * momentum - g * lr);
                    *p = T::down(w + (m.up() * momentum - g * lr));
                })
            }
            [m] => {
                let momentum = T::C::of(self.momentum);
                fused!(g; p, m; |p: &mut T, m: &mut T, g: T| {
                    let w = decay(p.up());
                    let g = gmap(g.up());
                    *m = T::down(m.up() * momentum - g * lr);
                    *p = T::down(w + m.up());
                })
            }
            _ => unreachable!("SGD has at most one slot"),
        }
    }
}
