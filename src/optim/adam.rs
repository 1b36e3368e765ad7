//! [`Adam`] and [`AdamW`] (keras/src/optimizers/adam.py and adamw.py, Keras 3).

use super::{common_options, fused, Core, Rule, UpdateConsts, VarLane};
use crate::error::Result;
use crate::ops::num::{Float, Real};
use crate::optim::apply::OptReal;

/// Adam (Keras: `keras.optimizers.Adam(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
/// amsgrad=False)`).
///
/// With `t` the 1-based step, `alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)`, `m += (g - m) * (1 - beta_1)`,
/// `v += (g^2 - v) * (1 - beta_2)`, with amsgrad `v_hat = max(v_hat, v)` used in place of `v`, and
/// `p -= m * alpha / (sqrt(v) + epsilon)`, all in the variable's dtype. Slots: `adam/<path>_momentum`,
/// `adam/<path>_velocity` (and `_velocity_hat` with amsgrad).
#[derive(Clone, Debug)]
pub struct Adam {
    core: Core,
    rule: AdamRule,
}

/// AdamW: Adam with decoupled weight decay (Keras: `keras.optimizers.AdamW(learning_rate=0.001,
/// weight_decay=0.004, ...)`): `p -= p * weight_decay * lr` before each Adam update. Slots under `adam_w/`.
#[derive(Clone, Debug)]
pub struct AdamW {
    core: Core,
    rule: AdamRule,
}

#[derive(Clone, Copy, Debug)]
struct AdamRule {
    beta_1: f64,
    beta_2: f64,
    epsilon: f64,
    amsgrad: bool,
}

impl Default for AdamRule {
    fn default() -> Self {
        AdamRule { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-7, amsgrad: false }
    }
}

macro_rules! adam_options {
    ($t:ty) => {
        impl $t {
            /// Decay rate of the first moment (default 0.9).
            pub fn beta_1(mut self, beta_1: f64) -> Self {
                self.rule.beta_1 = beta_1;
                self
            }
            /// Decay rate of the second moment (default 0.999).
            pub fn beta_2(mut self, beta_2: f64) -> Self {
                self.rule.beta_2 = beta_2;
                self
            }
            /// Added to the denominator (default 1e-7).
            pub fn epsilon(mut self, epsilon: f64) -> Self {
                self.rule.epsilon = epsilon;
                self
            }
            /// Use the maximum of past second moments (default false).
            pub fn amsgrad(mut self, amsgrad: bool) -> Self {
                self.rule.amsgrad = amsgrad;
                self
            }
        }
    };
}

impl Adam {
    /// Adam with this learning rate (Keras's default is 0.001).
    pub fn new(learning_rate: f64) -> Self {
        Adam { core: Core::new("adam", learning_rate.into()), rule: AdamRule::default() }
    }
}

impl Default for Adam {
    fn default() -> Self {
        Adam::new(0.001)
    }
}

impl AdamW {
    /// AdamW with this learning rate and Keras's default weight decay 0.004.
    pub fn new(learning_rate: f64) -> Self {
        let mut core = Core::new("adam_w", learning_rate.into());
        core.options.weight_decay = Some(0.004);
        AdamW { core, rule: AdamRule::default() }
    }
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW::new(0.001)
    }
}

adam_options!(Adam);
adam_options!(AdamW);
common_options!(Adam);
common_options!(AdamW);

impl Rule for AdamRule {
    fn slots(&self) -> Vec<(&'static str, f64)> {
        let mut slots = vec![("momentum", 0.0), ("velocity", 0.0)];
        if self.amsgrad {
            slots.push(("velocity_hat", 0.0));
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
        let one = T::C::ONE;
        let beta_1_power = of(self.beta_1).powf(k.local_step);
        let beta_2_power = of(self.beta_2).powf(k.local_step);
        let alpha = k.lr * (one - beta_2_power).sqrt() / (one - beta_1_power);
        let (c1, c2, eps) = (of(1.0 - self.beta_1), of(1.0 - self.beta_2), of(self.epsilon));
        match slots {
            [m, v] => fused!(g; p, m, v; |p: &mut T, m: &mut T, v: &mut T, g: T| {
                let w = decay(p.up());
                let g = gmap(g.up());
                let m_new = m.up() + (g - m.up()) * c1;
                let v_new = v.up() + (g * g - v.up()) * c2;
                *m = T::down(m_new);
                *v = T::down(v_new);
                let (m_new, v_new) = (m.up(), v.up());
                *p = T::down(w - m_new * alpha / (v_new.sqrt() + eps));
            }),
            [m, v, v_hat] => fused!(g; p, m, v, v_hat; |p: &mut T, m: &mut T, v: &mut T, v_hat: &mut T, g: T| {
                let w = decay(p.up());
                let g = gmap(g.up());
                let m_new = m.up() + (g - m.up()) * c1;
                let v_new = v.up() + (g * g - v.up()) * c2;
                *m = T::down(m_new);
                *v = T::down(v_new);
                *v_hat = T::down(v_hat.up().max(v.up()));
                let (m_new, v_used) = (m.up(), v_hat.up());
                *p = T::down(w - m_new * alpha / (v_used.sqrt() + eps));
            }),
            _ => unreachable!("Adam has two or three slots"),
        }
    }
}
