//! Image layers, channels last (NHWC): [`Conv2D`], [`MaxPooling2D`], [`AveragePooling2D`],
//! [`GlobalAveragePooling2D`], [`Flatten`].

use super::{bad_input, built, check_input, handle, ActivationFn, Layer};
use crate::error::Result;
use crate::init;
use crate::ops::{Axes, Padding};
use crate::scope::Scope;
use crate::store::StateStore;
use crate::tensor::Tensor;
use crate::variable::{Variable, VariableSpec};

/// The output length of a window of `k` (dilated `d`) sliding by `s` over `n` positions, Keras's arithmetic
/// for `valid` and `same`; `None` when the window does not fit.
fn out_len(n: usize, k: usize, s: usize, d: usize, padding: Padding) -> Option<usize> {
    let span = (k - 1) * d + 1;
    match padding {
        Padding::Valid => (n >= span).then(|| (n - span) / s + 1),
        Padding::Same => Some(n.div_ceil(s)),
    }
}

/// The per-example output shape `(oh, ow, channels)` of a window over `(h, w, _)`, or the layer's error.
fn window_output(
    path: &str,
    input: &[usize],
    window: [usize; 2],
    strides: [usize; 2],
    dilation: [usize; 2],
    padding: Padding,
    channels: usize,
) -> Result<Vec<usize>> {
    if input.len() != 3 {
        return Err(bad_input(path, input, "expected examples of rank 3 (height, width, channels)"));
    }
    if window.contains(&0) || strides.contains(&0) || dilation.contains(&0) {
        return Err(bad_input(path, input, "window sizes, strides and dilation rates must be positive"));
    }
    let oh = out_len(input[0], window[0], strides[0], dilation[0], padding);
    let ow = out_len(input[1], window[1], strides[1], dilation[1], padding);
    match (oh, ow) {
        (Some(oh), Some(ow)) => Ok(vec![oh, ow, channels]),
        _ => Err(bad_input(
            path,
            input,
            format!(
                "the window {}x{} (dilation {}x{}) is larger than the input",
                window[0], window[1], dilation[0], dilation[1]
            ),
        )),
    }
}

/// A 2-D convolution, channels last (Keras's `Conv2D`): `activation(conv(x, kernel) + bias)`.
///
/// Variables: `kernel` of shape `(kh, kw, in_channels, filters)` (HWIO), Glorot-uniform; `bias` of shape
/// `(filters,)`, zeros. Defaults as Keras: strides 1, padding `valid`, dilation 1, a bias, no activation.
///
/// # Examples
/// ```
/// use purestate::layers::{self, Conv2D, Layer};
/// use purestate::{ops::Padding, StateStore};
/// let mut state = StateStore::new();
/// let mut conv = Conv2D::new(16, [3, 3]).padding(Padding::Same).strides([2, 2]);
/// assert_eq!(layers::build(&mut conv, &mut state, &[8, 8, 3])?, [4, 4, 16]);
/// assert_eq!(conv.variables()[0].shape().dims(), [3, 3, 3, 16]);
/// # Ok::<(), purestate::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Conv2D {
    filters: usize,
    kernel_size: [usize; 2],
    strides: [usize; 2],
    padding: Padding,
    dilation: [usize; 2],
    use_bias: bool,
    activation: String,
    name: Option<String>,
    path: Option<String>,
    act: ActivationFn,
    in_channels: usize,
    kernel: Option<Variable>,
    bias: Option<Variable>,
}

impl Conv2D {
    /// `filters` output channels from a `kernel_size` window.
    pub fn new(filters: usize, kernel_size: [usize; 2]) -> Conv2D {
        Conv2D {
            filters,
            kernel_size,
            strides: [1, 1],
            padding: Padding::Valid,
            dilation: [1, 1],
            use_bias: true,
            activation: "linear".into(),
            name: None,
            path: None,
            act: ActivationFn::Linear,
            in_channels: 0,
            kernel: None,
            bias: None,
        }
    }

    /// The strides (default `[1, 1]`).
    pub fn strides(mut self, strides: [usize; 2]) -> Conv2D {
        self.strides = strides;
        self
    }

    /// `valid` (default) or `same`.
    pub fn padding(mut self, padding: Padding) -> Conv2D {
        self.padding = padding;
        self
    }

    /// The dilation rate (default `[1, 1]`).
    pub fn dilation_rate(mut self, dilation: [usize; 2]) -> Conv2D {
        self.dilation = dilation;
        self
    }

    /// Whether to add a bias (default true).
    pub fn use_bias(mut self, use_bias: bool) -> Conv2D {
        self.use_bias = use_bias;
        self
    }

    /// The activation by Keras name (default `linear`), checked at build.
    pub fn activation(mut self, name: &str) -> Conv2D {
        self.activation = name.to_string();
        self
    }

    /// The layer's name (default `conv2d`, `conv2d_1`, ...).
    pub fn name(mut self, name: impl Into<String>) -> Conv2D {
        self.name = Some(name.into());
        self
    }
}

impl Layer for Conv2D {
    fn default_name(&self) -> &'static str {
        "conv2d"
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn build(&mut self, state: &mut StateStore, path: &str, input_shape: &[usize]) -> Result<Vec<usize>> {
        if self.filters == 0 {
            return Err(bad_input(path, input_shape, "`filters` must be positive"));
        }
        let out = window_output(
            path,
            input_shape,
            self.kernel_size,
            self.strides,
            self.dilation,
            self.padding,
            self.filters,
        )?;
        let act = ActivationFn::parse(&self.activation)?;
        let [kh, kw] = self.kernel_size;
        let in_channels = input_shape[2];
        let mut staged = state.clone();
        let kernel = staged.create(
            VariableSpec::new(init::GlorotUniform)
                .shape([kh, kw, in_channels, self.filters])
                .name("kernel")
                .name_scope(path),
        )?;
        let bias = if self.use_bias {
            Some(staged.create(VariableSpec::new(init::Zeros).shape([self.filters]).name("bias").name_scope(path))?)
        } else {
            None
        };
        *state = staged;
        (self.kernel, self.bias, self.act, self.in_channels) = (Some(kernel), bias, act, in_channels);
        self.path = Some(path.to_string());
        Ok(out)
    }

    fn call(&self, scope: &mut Scope, x: &Tensor, _training: bool) -> Result<Tensor> {
        let path = built(&self.path, "Conv2D")?;
        check_input(path, x, 3, Some(self.in_channels))?;
        window_output(path, &x.dims()[1..], self.kernel_size, self.strides, self.dilation, self.padding, self.filters)?;
        let kernel = scope.get(handle(&self.kernel, "Conv2D")?)?;
        let opts = crate::ops::Conv2d::default().strides(self.strides).padding(self.padding).dilation(self.dilation);
        let mut y = x.conv2d(&kernel, opts)?;
        if let Some(bias) = &self.bias {
            y = y.add(&scope.get(bias)?)?;
        }
        self.act.apply(&y)
    }

    fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    fn variables(&self) -> Vec<Variable> {
        self.kernel.iter().chain(self.bias.iter()).cloned().collect()
    }
}

/// Max or average.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PoolKind {
    Max,
    Average,
}

/// The options and built state shared by the two pooling layers.
#[derive(Clone, Debug)]
struct Pool {
    kind: PoolKind,
    pool_size: [usize; 2],
    strides: Option<[usize; 2]>,
    padding: Padding,
    name: Option<String>,
    path: Option<String>,
}

impl Pool {
    fn strides(&self) -> [usize; 2] {
        self.strides.unwrap_or(self.pool_size)
    }

    fn class(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "MaxPooling2D",
            PoolKind::Average => "AveragePooling2D",
        }
    }

    fn build(&mut self, path: &str, input_shape: &[usize]) -> Result<Vec<usize>> {
        let channels = input_shape.get(2).copied().unwrap_or(0);
        let out = window_output(path, input_shape, self.pool_size, self.strides(), [1, 1], self.padding, channels)?;
        self.path = Some(path.to_string());
        Ok(out)
    }

    fn call(&self, x: &Tensor) -> Result<Tensor> {
        let path = built(&self.path, self.class())?;
        check_input(path, x, 3, None)?;
        window_output(path, &x.dims()[1..], self.pool_size, self.strides(), [1, 1], self.padding, x.dims()[3])?;
        let opts = crate::ops::Pool2d::new(self.pool_size).strides(self.strides()).padding(self.padding);
        match self.kind {
            PoolKind::Max => x.max_pool2d(opts),
            PoolKind::Average => x.avg_pool2d(opts),
        }
    }
}

macro_rules! pooling_layer {
    ($(#[$doc:meta])* $name:ident, $kind:expr, $default:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $name(Pool);

        impl $name {
            /// A `pool_size` window, strides equal to the window (Keras's default), `valid` padding.
            pub fn new(pool_size: [usize; 2]) -> $name {
                $name(Pool { kind: $kind, pool_size, strides: None, padding: Padding::Valid, name: None, path: None })
            }

            /// The strides (default: the pool size).
            pub fn strides(mut self, strides: [usize; 2]) -> $name {
                self.0.strides = Some(strides);
                self
            }

            /// `valid` (default) or `same`.
            pub fn padding(mut self, padding: Padding) -> $name {
                self.0.padding = padding;
                self
            }

            /// The layer's name.
            pub fn name(mut self, name: impl Into<String>) -> $name {
                self.0.name = Some(name.into());
                self
            }
        }

        impl Layer for $name {
            fn default_name(&self) -> &'static str {
                $default
            }

            fn name(&self) -> Option<&str> {
                self.0.name.as_deref()
            }

            fn build(&mut self, _state: &mut StateStore, path: &str, input_shape: &[usize]) -> Result<Vec<usize>> {
                self.0.build(path, input_shape)
            }

            fn call(&self, _scope: &mut Scope, x: &Tensor, _training: bool) -> Result<Tensor> {
                self.0.call(x)
            }

            fn path(&self) -> Option<&str> {
                self.0.path.as_deref()
            }

            fn variables(&self) -> Vec<Variable> {
                Vec::new()
            }
        }
    };
}

pooling_layer!(
    /// The maximum over each window (Keras's `MaxPooling2D`); its gradient goes to the first maximum of a
    /// window in row-major order, as JAX's.
    ///
    /// # Examples
    /// ```
    /// use purestate::layers::{self, Layer, MaxPooling2D};
    /// use purestate::StateStore;
    /// let mut pool = MaxPooling2D::new([2, 2]);
    /// assert_eq!(layers::build(&mut pool, &mut StateStore::new(), &[8, 8, 16])?, [4, 4, 16]);
    /// assert!(layers::build(&mut MaxPooling2D::new([3, 3]), &mut StateStore::new(), &[2, 2, 1]).is_err());
    /// # Ok::<(), purestate::Error>(())
    /// ```
    MaxPooling2D,
    PoolKind::Max,
    "max_pooling2d"
);

pooling_layer!(
    /// The mean over each window (Keras's `AveragePooling2D`); with `same` padding the padded positions are
    /// not counted, as Keras.
    AveragePooling2D,
    PoolKind::Average,
    "average_pooling2d"
);

/// The mean over height and width (Keras's `GlobalAveragePooling2D`, `keepdims` false): `(n, h, w, c)` to
/// `(n, c)`.
#[derive(Clone, Debug, Default)]
pub struct GlobalAveragePooling2D {
    name: Option<String>,
    path: Option<String>,
}

impl GlobalAveragePooling2D {
    /// The layer.
    pub fn new() -> GlobalAveragePooling2D {
        GlobalAveragePooling2D::default()
    }

    /// The layer's name.
    pub fn name(mut self, name: impl Into<String>) -> GlobalAveragePooling2D {
        self.name = Some(name.into());
        self
    }
}

impl Layer for GlobalAveragePooling2D {
    fn default_name(&self) -> &'static str {
        "global_average_pooling2d"
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn build(&mut self, _state: &mut StateStore, path: &str, input_shape: &[usize]) -> Result<Vec<usize>> {
        if input_shape.len() != 3 {
            return Err(bad_input(path, input_shape, "expected examples of rank 3 (height, width, channels)"));
        }
        self.path = Some(path.to_string());
        Ok(vec![input_shape[2]])
    }

    fn call(&self, _scope: &mut Scope, x: &Tensor, _training: bool) -> Result<Tensor> {
        let path = built(&self.path, "GlobalAveragePooling2D")?;
        check_input(path, x, 3, None)?;
        x.mean(Axes::These(vec![1, 2]), false)
    }

    fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    fn variables(&self) -> Vec<Variable> {
        Vec::new()
    }
}

/// Flattens each example to a vector (Keras's `Flatten`): `(n, d1, d2, ...)` to `(n, d1 * d2 * ...)`.
#[derive(Clone, Debug, Default)]
pub struct Flatten {
    name: Option<String>,
    path: Option<String>,
}

impl Flatten {
    /// The layer.
    pub fn new() -> Flatten {
        Flatten::default()
    }

    /// The layer's name.
    pub fn name(mut self, name: impl Into<String>) -> Flatten {
        self.name = Some(name.into());
        self
    }
}

impl Layer for Flatten {
    fn default_name(&self) -> &'static str {
        "flatten"
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn build(&mut self, _state: &mut StateStore, path: &str, input_shape: &[usize]) -> Result<Vec<usize>> {
        self.path = Some(path.to_string());
        Ok(vec![input_shape.iter().product()])
    }

    fn call(&self, _scope: &mut Scope, x: &Tensor, _training: bool) -> Result<Tensor> {
        let path = built(&self.path, "Flatten")?;
        if x.ndim() == 0 {
            return Err(bad_input(path, x.dims(), "expected a batch (rank 1 or more)"));
        }
        let rest: usize = x.dims()[1..].iter().product();
        x.reshape(&[x.dims()[0] as isize, rest as isize])
    }

    fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    fn variables(&self) -> Vec<Variable> {
        Vec::new()
    }
}
