//! [`VarianceScaling`] and the named initializers built on it ([`GlorotUniform`], [`GlorotNormal`],
//! [`HeUniform`], [`HeNormal`], [`LecunUniform`], [`LecunNormal`]), with Keras's fan rule [`compute_fans`]
//! (keras/src/initializers/random_initializers.py, Keras 3).

use std::fmt;
use std::str::FromStr;

use super::{check_float, Initializer};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::random::{self, Key};
use crate::tensor::{Shape, Tensor};

/// Keras's divisor of the truncated normal's standard deviation (`0.8796256610342398`): the standard
/// deviation of a unit normal truncated to two standard deviations, so truncated draws have variance
/// `scale / n`.
pub const TRUNCATED_NORMAL_STDDEV: f64 = 0.879_625_661_034_239_8;

/// Which fan divides the scale. Keras's `mode`: `"fan_in"`, `"fan_out"`, `"fan_avg"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FanMode {
    /// The number of input units.
    FanIn,
    /// The number of output units.
    FanOut,
    /// Their average.
    FanAvg,
}

/// The distribution drawn from. Keras's `distribution`: `"truncated_normal"` (alias `"normal"`),
/// `"untruncated_normal"`, `"uniform"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Distribution {
    /// A normal truncated to two standard deviations, with standard deviation
    /// `sqrt(scale / n) / 0.87962566103423978`.
    TruncatedNormal,
    /// A normal with standard deviation `sqrt(scale / n)`.
    UntruncatedNormal,
    /// A uniform in `[-limit, limit)` with `limit = sqrt(3 scale / n)`.
    Uniform,
}

/// Draws whose variance is `scale / n`, with `n` the fan-in, the fan-out or their average. Keras:
/// `keras.initializers.VarianceScaling(scale=1.0, mode="fan_in", distribution="truncated_normal")`.
///
/// `n` is `max(1, fan)` with the fans of [`compute_fans`]; the draws are [`random::truncated_normal`],
/// [`random::normal`] or [`random::uniform`] with the moments of [`Distribution`], as Keras's JAX backend
/// draws them.
///
/// # Examples
/// ```
/// use purestate::init::{Distribution, FanMode, VarianceScaling};
/// use purestate::{random::Key, StateStore, VariableSpec};
/// let he = VarianceScaling::new(2.0, FanMode::FanIn, Distribution::UntruncatedNormal);
/// let kernel = VariableSpec::new(he).shape([3, 3, 16, 32]).seed(Key::new(0));
/// let mut state = StateStore::new();
/// let w = state.create(kernel)?;
/// let std = {
///     let v = state.get(&w)?.to_f64_vec();
///     (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt()
/// };
/// assert!((std - (2.0f64 / 144.0).sqrt()).abs() < 0.01); // fan_in = 3 * 3 * 16
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VarianceScaling {
    /// Scaling factor, positive (default 1).
    pub scale: f64,
    /// Which fan divides the scale (default fan-in).
    pub mode: FanMode,
    /// The distribution (default truncated normal).
    pub distribution: Distribution,
}

impl VarianceScaling {
    /// Draws of variance `scale / n` from `distribution`, `n` chosen by `mode`. A non-positive `scale` is an
    /// error when the initializer runs.
    pub fn new(scale: f64, mode: FanMode, distribution: Distribution) -> Self {
        VarianceScaling { scale, mode, distribution }
    }

    /// The draws' parameter for `shape`: the standard deviation of the normal (before truncation) or the
    /// uniform's limit.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `scale` is not a positive finite number.
    pub fn parameter(&self, shape: &Shape) -> Result<f64> {
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(Error::InvalidArgument {
                op: "VarianceScaling",
                arg: "scale",
                reason: format!("{} is not a positive number", self.scale),
            });
        }
        let (fan_in, fan_out) = compute_fans(shape);
        let n = match self.mode {
            FanMode::FanIn => fan_in as f64,
            FanMode::FanOut => fan_out as f64,
            FanMode::FanAvg => (fan_in as f64 + fan_out as f64) / 2.0,
        };
        let scale = self.scale / n.max(1.0);
        Ok(match self.distribution {
            Distribution::TruncatedNormal => scale.sqrt() / TRUNCATED_NORMAL_STDDEV,
            Distribution::UntruncatedNormal => scale.sqrt(),
            Distribution::Uniform => (3.0 * scale).sqrt(),
        })
    }
}

impl Default for VarianceScaling {
    fn default() -> Self {
        VarianceScaling::new(1.0, FanMode::FanIn, Distribution::TruncatedNormal)
    }
}

/// # Errors
/// [`Error::UnsupportedDType`] for a non-float dtype; [`Error::InvalidArgument`] for a non-positive scale;
/// [`Error::InvalidShape`] when the shape's size overflows.
impl Initializer for VarianceScaling {
    fn initialize(&self, shape: &Shape, dtype: DType, key: Key) -> Result<Tensor> {
        check_float(self.name(), dtype)?;
        let parameter = self.parameter(shape)?;
        match self.distribution {
            Distribution::TruncatedNormal => random::truncated_normal(key, shape, dtype, 0.0, parameter),
            Distribution::UntruncatedNormal => random::normal(key, shape, dtype, 0.0, parameter),
            Distribution::Uniform => random::uniform(key, shape, dtype, -parameter, parameter),
        }
    }
    fn name(&self) -> &'static str {
        "VarianceScaling"
    }
}

/// Keras's fans of a weight shape (`compute_fans`): `()` gives (1, 1); `(n,)` gives (n, n); `(a, b)` gives
/// (a, b); a rank above 2 multiplies both by the receptive field `prod(shape[..-2])`, so a convolution kernel
/// `(kh, kw, in, out)` gives `(kh * kw * in, kh * kw * out)`. Products saturate at `usize::MAX`.
///
/// # Examples
/// ```
/// use purestate::{init::compute_fans, Shape};
/// assert_eq!(compute_fans(&Shape::from([3, 3, 16, 32])), (144, 288));
/// assert_eq!(compute_fans(&Shape::from([64, 128])), (64, 128));
/// assert_eq!(compute_fans(&Shape::scalar()), (1, 1));
/// ```
pub fn compute_fans(shape: &Shape) -> (usize, usize) {
    match shape.dims() {
        [] => (1, 1),
        &[n] => (n, n),
        &[fan_in, fan_out] => (fan_in, fan_out),
        dims => {
            let (receptive, last) = dims.split_at(dims.len() - 2);
            let field = receptive.iter().fold(1usize, |acc, &d| acc.saturating_mul(d));
            (last[0].saturating_mul(field), last[1].saturating_mul(field))
        }
    }
}

macro_rules! named_variance_scaling {
    ($(#[$doc:meta])* $name:ident, $scale:expr, $mode:ident, $distribution:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name;

        impl $name {
            /// The [`VarianceScaling`] this initializer is.
            pub fn variance_scaling(&self) -> VarianceScaling {
                VarianceScaling::new($scale, FanMode::$mode, Distribution::$distribution)
            }
        }

        /// # Errors
        /// [`Error::UnsupportedDType`] for a non-float dtype; [`Error::InvalidShape`] when the shape's size
        /// overflows.
        impl Initializer for $name {
            fn initialize(&self, shape: &Shape, dtype: DType, key: Key) -> Result<Tensor> {
                check_float(self.name(), dtype)?;
                self.variance_scaling().initialize(shape, dtype, key)
            }
            fn name(&self) -> &'static str {
                stringify!($name)
            }
        }
    };
}

named_variance_scaling!(
    /// Glorot (Xavier) uniform: uniform in `[-limit, limit)`, `limit = sqrt(6 / (fan_in + fan_out))`. Keras:
    /// `keras.initializers.GlorotUniform`, `VarianceScaling(1.0, "fan_avg", "uniform")`, Keras's default kernel
    /// initializer.
    ///
    /// ```
    /// use purestate::{init, StateStore, VariableSpec};
    /// let mut state = StateStore::new();
    /// let w = state.create(VariableSpec::new(init::GlorotUniform::default()).shape([64, 128]).name("kernel"))?;
    /// let limit = (6.0f64 / 192.0).sqrt();
    /// assert!(state.get(&w)?.to_f64_vec().iter().all(|v| v.abs() <= limit));
    /// # Ok::<(), purestate::Error>(())
    /// ```
    GlorotUniform,
    1.0,
    FanAvg,
    Uniform
);
named_variance_scaling!(
    /// Glorot (Xavier) normal: truncated normal with standard deviation
    /// `sqrt(2 / (fan_in + fan_out)) / 0.8796...`. Keras: `keras.initializers.GlorotNormal`,
    /// `VarianceScaling(1.0, "fan_avg", "truncated_normal")`.
    GlorotNormal,
    1.0,
    FanAvg,
    TruncatedNormal
);
named_variance_scaling!(
    /// He uniform: uniform in `[-limit, limit)`, `limit = sqrt(6 / fan_in)`. Keras: `keras.initializers.HeUniform`,
    /// `VarianceScaling(2.0, "fan_in", "uniform")`.
    HeUniform,
    2.0,
    FanIn,
    Uniform
);
named_variance_scaling!(
    /// He normal: truncated normal with standard deviation `sqrt(2 / fan_in) / 0.8796...`. Keras:
    /// `keras.initializers.HeNormal`, `VarianceScaling(2.0, "fan_in", "truncated_normal")`.
    HeNormal,
    2.0,
    FanIn,
    TruncatedNormal
);
named_variance_scaling!(
    /// LeCun uniform: uniform in `[-limit, limit)`, `limit = sqrt(3 / fan_in)`. Keras:
    /// `keras.initializers.LecunUniform`, `VarianceScaling(1.0, "fan_in", "uniform")`.
    LecunUniform,
    1.0,
    FanIn,
    Uniform
);
named_variance_scaling!(
    /// LeCun normal: truncated normal with standard deviation `sqrt(1 / fan_in) / 0.8796...`. Keras:
    /// `keras.initializers.LecunNormal`, `VarianceScaling(1.0, "fan_in", "truncated_normal")`.
    LecunNormal,
    1.0,
    FanIn,
    TruncatedNormal
);

impl FromStr for FanMode {
    type Err = Error;

    /// Parses Keras's mode names.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fan_in" => Ok(FanMode::FanIn),
            "fan_out" => Ok(FanMode::FanOut),
            "fan_avg" => Ok(FanMode::FanAvg),
            _ => Err(Error::InvalidOption { option: "mode", got: s.into(), allowed: "fan_in, fan_out, fan_avg" }),
        }
    }
}

impl FromStr for Distribution {
    type Err = Error;

    /// Parses Keras's distribution names, case-insensitively; `"normal"` is `"truncated_normal"`, as in Keras.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "truncated_normal" | "normal" => Ok(Distribution::TruncatedNormal),
            "untruncated_normal" => Ok(Distribution::UntruncatedNormal),
            "uniform" => Ok(Distribution::Uniform),
            _ => Err(Error::InvalidOption {
                option: "distribution",
                got: s.into(),
                allowed: "truncated_normal, normal, untruncated_normal, uniform",
            }),
        }
    }
}

impl fmt::Display for FanMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FanMode::FanIn => "fan_in",
            FanMode::FanOut => "fan_out",
            FanMode::FanAvg => "fan_avg",
        })
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Distribution::TruncatedNormal => "truncated_normal",
            Distribution::UntruncatedNormal => "untruncated_normal",
            Distribution::Uniform => "uniform",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fans_follow_keras() {
        assert_eq!(compute_fans(&Shape::scalar()), (1, 1));
        assert_eq!(compute_fans(&Shape::from([7])), (7, 7));
        assert_eq!(compute_fans(&Shape::from([64, 128])), (64, 128));
        assert_eq!(compute_fans(&Shape::from([3, 3, 16, 32])), (144, 288));
        assert_eq!(compute_fans(&Shape::from([5, 4, 8])), (20, 40));
        assert_eq!(compute_fans(&Shape::from([usize::MAX, 2, 3, 4])).0, usize::MAX);
    }

    #[test]
    fn parameters_follow_keras_formulas() {
        let shape = Shape::from([3, 3, 16, 32]);
        let limit = GlorotUniform.variance_scaling().parameter(&shape).unwrap();
        assert!((limit - (6.0f64 / (144.0 + 288.0)).sqrt()).abs() < 1e-15);
        let std = HeNormal.variance_scaling().parameter(&shape).unwrap();
        assert!((std - (2.0f64 / 144.0).sqrt() / 0.879_625_661_034_239_8).abs() < 1e-15);
        let std =
            VarianceScaling::new(1.0, FanMode::FanOut, Distribution::UntruncatedNormal).parameter(&shape).unwrap();
        assert!((std - (1.0f64 / 288.0).sqrt()).abs() < 1e-15);
        // max(1, fan): a zero fan does not divide by zero
        let limit = LecunUniform.variance_scaling().parameter(&Shape::from([0, 3])).unwrap();
        assert_eq!(limit, 3.0f64.sqrt());
    }

    #[test]
    fn refuses_bad_scale_and_dtype() {
        let key = Key::new(0);
        let vs = VarianceScaling::new(0.0, FanMode::FanIn, Distribution::Uniform);
        let err = vs.initialize(&Shape::from([2, 2]), DType::Float32, key).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { arg: "scale", .. }));
        let err = HeUniform.initialize(&Shape::from([2, 2]), DType::Uint8, key).unwrap_err();
        assert!(matches!(err, Error::UnsupportedDType { op: "HeUniform", dtype: DType::Uint8 }));
    }

    #[test]
    fn keras_names_parse() {
        assert_eq!("fan_avg".parse::<FanMode>().unwrap(), FanMode::FanAvg);
        assert_eq!("Normal".parse::<Distribution>().unwrap(), Distribution::TruncatedNormal);
        assert_eq!("untruncated_normal".parse::<Distribution>().unwrap().to_string(), "untruncated_normal");
        assert!(matches!("fan".parse::<FanMode>(), Err(Error::InvalidOption { option: "mode", .. })));
        assert_eq!(
            VarianceScaling::default(),
            VarianceScaling::new(1.0, FanMode::FanIn, Distribution::TruncatedNormal)
        );
    }
}
