//! Learning-rate schedules: Keras's `ExponentialDecay`, `PiecewiseConstantDecay`, `CosineDecay`, and a constant.
//!
//! Each computes in float32, as Keras does (keras/src/optimizers/schedules/learning_rate_schedule.py,
//! Keras 3), so rates agree bit for bit with Keras's for the same step.

use std::fmt;

use crate::error::{Error, Result};

/// A learning rate as a function of the optimizer's iteration count (Keras: `LearningRateSchedule`). The
/// update of iteration `t` (counting from 0) uses `rate(t)`.
pub trait Schedule: Send + Sync + fmt::Debug {
    /// The learning rate at `step`.
    fn rate(&self, step: i64) -> f32;
}

/// `initial * decay_rate ^ (step / decay_steps)`, with the exponent floored when `staircase` (Keras:
/// `ExponentialDecay`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExponentialDecay {
    /// The rate at step 0.
    pub initial_learning_rate: f32,
    /// Steps per decay period.
    pub decay_steps: f32,
    /// Factor per period.
    pub decay_rate: f32,
    /// Decay in whole periods.
    pub staircase: bool,
}

impl ExponentialDecay {
    /// A smooth exponential decay.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `decay_steps` is not positive.
    pub fn new(initial_learning_rate: f64, decay_steps: u64, decay_rate: f64) -> Result<Self> {
        if decay_steps == 0 {
            return Err(Error::InvalidArgument {
                op: "ExponentialDecay",
                arg: "decay_steps",
                reason: "must be positive".into(),
            });
        }
        Ok(ExponentialDecay {
            initial_learning_rate: initial_learning_rate as f32,
            decay_steps: decay_steps as f32,
            decay_rate: decay_rate as f32,
            staircase: false,
        })
    }

    /// The same schedule, decaying in whole periods.
    pub fn staircase(mut self, staircase: bool) -> Self {
        self.staircase = staircase;
        self
    }
}

impl Schedule for ExponentialDecay {
    fn rate(&self, step: i64) -> f32 {
        let mut p = step as f32 / self.decay_steps;
        if self.staircase {
            p = p.floor();
        }
        self.initial_learning_rate * self.decay_rate.powf(p)
    }
}

/// `values[i]` for `boundaries[i-1] < step <= boundaries[i]` (Keras: `PiecewiseConstantDecay`).
#[derive(Clone, Debug, PartialEq)]
pub struct PiecewiseConstantDecay {
    boundaries: Vec<i64>,
    values: Vec<f32>,
}

impl PiecewiseConstantDecay {
    /// A piecewise constant rate.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] unless `values` has one more element than `boundaries` and the boundaries
    /// increase.
    pub fn new(boundaries: Vec<i64>, values: Vec<f64>) -> Result<Self> {
        if values.len() != boundaries.len() + 1 {
            return Err(Error::InvalidArgument {
                op: "PiecewiseConstantDecay",
                arg: "values",
                reason: format!(
                    "needs {} values for {} boundaries, got {}",
                    boundaries.len() + 1,
                    boundaries.len(),
                    values.len()
                ),
            });
        }
        if boundaries.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::InvalidArgument {
                op: "PiecewiseConstantDecay",
                arg: "boundaries",
                reason: format!("must increase, got {boundaries:?}"),
            });
        }
        Ok(PiecewiseConstantDecay { boundaries, values: values.into_iter().map(|v| v as f32).collect() })
    }
}

impl Schedule for PiecewiseConstantDecay {
    fn rate(&self, step: i64) -> f32 {
        let i = self.boundaries.iter().take_while(|&&b| step > b).count();
        self.values[i]
    }
}

/// `initial * ((1 - alpha) * 0.5 * (1 + cos(pi * min(step, decay_steps) / decay_steps)) + alpha)` (Keras:
/// `CosineDecay` without warmup).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineDecay {
    /// The rate at step 0.
    pub initial_learning_rate: f32,
    /// Steps to decay over.
    pub decay_steps: f32,
    /// The final rate as a fraction of the initial one.
    pub alpha: f32,
}

impl CosineDecay {
    /// A cosine decay to `alpha * initial_learning_rate` over `decay_steps`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `decay_steps` is not positive.
    pub fn new(initial_learning_rate: f64, decay_steps: u64, alpha: f64) -> Result<Self> {
        if decay_steps == 0 {
            return Err(Error::InvalidArgument {
                op: "CosineDecay",
                arg: "decay_steps",
                reason: "must be positive".into(),
            });
        }
        Ok(CosineDecay {
            initial_learning_rate: initial_learning_rate as f32,
            decay_steps: decay_steps as f32,
            alpha: alpha as f32,
        })
    }
}

impl Schedule for CosineDecay {
    fn rate(&self, step: i64) -> f32 {
        let fraction = (step as f32).min(self.decay_steps) / self.decay_steps;
        let cosine = 0.5 * (1.0 + (std::f32::consts::PI * fraction).cos());
        let decayed = (1.0 - self.alpha) * cosine + self.alpha;
        self.initial_learning_rate * decayed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_follow_keras_formulas() {
        let e = ExponentialDecay::new(0.1, 2, 0.5).unwrap();
        assert_eq!(e.rate(0), 0.1);
        assert!((e.rate(1) - 0.1 * 0.5f32.sqrt()).abs() < 1e-8);
        assert_eq!(e.staircase(true).rate(3), 0.05);
        let p = PiecewiseConstantDecay::new(vec![2, 4], vec![0.1, 0.05, 0.01]).unwrap();
        assert_eq!([p.rate(0), p.rate(2), p.rate(3), p.rate(4), p.rate(5)], [0.1, 0.1, 0.05, 0.05, 0.01]);
        let c = CosineDecay::new(0.1, 5, 0.0).unwrap();
        assert_eq!(c.rate(0), 0.1);
        assert!(c.rate(5).abs() < 1e-9 && c.rate(7).abs() < 1e-9);
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(PiecewiseConstantDecay::new(vec![2], vec![0.1]).is_err());
        assert!(PiecewiseConstantDecay::new(vec![3, 2], vec![0.1, 0.2, 0.3]).is_err());
        assert!(ExponentialDecay::new(0.1, 0, 0.5).is_err());
    }
}
