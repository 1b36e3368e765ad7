//! [`RmsProp`] (keras/src/optimizers/rmsprop.py, Keras 3).

use super::{common_options, fused, Core, Rule, UpdateConsts, VarLane};
use crate::error::Result;
use crate::ops::num::{Float, Real};
use crate::optim::apply::OptReal;

/// RMSprop (Keras: `keras.optimizers.RMSprop(learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
/// centered=False)`).
///
/// `v = rho * v + (1 - rho) * g^2`; centered: `a = rho * a + (1 - rho) * g` and the denominator is
/// `v - a^2 + epsilon`, otherwise `v + epsilon` (epsilon inside the square root); `inc = lr * g / sqrt(den)`;
/// with momentum `m = momentum * m + inc`, `p -= m`, otherwise `p -= inc`. Slots under `rm_sprop/`:
/// `_velocity`, `_momentum` (with momentum), `_average_gradient` (centered).
#[derive(Clone, Debug)]
pub struct RmsProp {
    core: Core,
    rule: RmsRule,
}

#[derive(Clone, Copy, Debug)]
struct RmsRule {
    rho: f64,
    momentum: f64,
    epsilon: f64,
    centered: bool,
}

impl RmsProp {
    /// RMSprop with this learning rate (Keras's default is 0.001).
    pub fn new(learning_rate: f64) -> Self {
        RmsProp {
            core: Core::new("rm_sprop", learning_rate.into()),
            rule: RmsRule { rho: 0.9, momentum: 0.0, epsilon: 1e-7, centered: false },
        }
    }

    /// Discount of the squared-gradient average (default 0.9).
    pub fn rho(mut self, rho: f64) -> Self {
        self.rule.rho = rho;
        self
    }

    /// Momentum (default 0).
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.rule.momentum = momentum;
        self
    }

    /// Added inside the square root (default 1e-7).
    pub fn epsilon(mut self, epsilon: f64) -> Self {
        self.rule.epsilon = epsilon;
        self
    }

    /// Normalize by the estimated variance of the gradient (default false).
    pub fn centered(mut self, centered: bool) -> Self {
        self.rule.centered = centered;
        self
    }
}

impl Default for RmsProp {
    fn default() -> Self {
        RmsProp::new(0.001)
    }
}

common_options!(RmsProp);

impl Rule for RmsRule {
    fn slots(&self) -> Vec<(&'static str, f64)> {
        let mut slots = vec![("velocity", 0.0)];
        if self.momentum > 0.0 {
            slots.push(("momentum", 0.0));
        }
        if self.centered {
            slots.push(("average_gradient", 0.0));
        }
        slots
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
        let of = <T::C as OptReal>::of;
        let (rho, one_minus_rho, eps, momentum) =
            (of(self.rho), of(1.0 - self.rho), of(self.epsilon), of(self.momentum));
        let k = *k;
        let lr = k.lr;
        let velocity = move |v: T::C, g: T::C| rho * v + one_minus_rho * (g * g);
        match slots {
            [v] => fused!(g; p, v; |p: &mut T, v: &mut T, g: T| {
                let w = decay(p.up());
                let g = gmap(g.up());
                *v = T::down(velocity(v.up(), g));
                *p = T::down(w - lr * g / (v.up() + eps).sqrt());
            }),
            [v, m] if self.momentum > 0.0 => fused!(g; p, v, m; |p: &mut T, v: &mut T, m: &mut T, g: T| {
                let w = decay(p.up());
                let g = gmap(g.up());
                *v = T::down(velocity(v.up(), g));
                let inc = lr * g / (v.up() + eps).sqrt();
                *m = T::down(momentum * m.up() + inc);
                *p = T::down(w - m.up());
            }),
            [v, a] => fused!(g; p, v, a; |p: &mut T, v: &mut T, a: &mut T, g: T| {
                let w = decay(p.up());
                let g = gmap(g.up());
                *v = T::down(velocity(v.up(), g));
                *a = T::down(rho * a.up() + one_minus_rho * g);
                let den = v.up() - a.up() * a.up() + eps;
                *p = T::down(w - lr * g / den.sqrt());
            }),
            [v, m, a] => fused!(g; p, v, m, a; |p: &mut T, v: &mut T, m: &mut T, a: &mut T, g: T| {
                let w = decay(p.up());
                let g = gmap(g.up());
                *v = T::down(velocity(v.up(), g));
                *a = T::down(rho * a.up() + one_minus_rho * g);
                let den = v.up() - a.up() * a.up() + eps;
                let inc = lr * g / den.sqrt();
                *m = T::down(momentum * m.up() + inc);
                *p = T::down(w - m.up());
            }),
            _ => unreachable!("RMSprop has one to three slots"),
        }
    }
}
